use hestia_sdk::testing::{claims, create, delete, read, request, search, token_request, user};
use hestia_sdk::{Constraint, Decision, FhirRequest, Interaction, ScopePolicy, UserRights, json};

use super::SmartScopes;

/// Renders a decision compactly: `allow`, `deny: <reason>`, or
/// `within: compartment(p1); search(Observation?category=laboratory)`.
fn render(decision: &Decision) -> String {
    match decision {
        Decision::Allow => "allow".into(),
        Decision::Deny(reason) => format!("deny: {reason}"),
        Decision::AllowWithin(constraints) => {
            let parts: Vec<String> = constraints
                .iter()
                .map(|c| match c {
                    Constraint::PatientCompartment(p) => format!("compartment({p})"),
                    Constraint::Search {
                        resource_type,
                        parameters,
                    } => {
                        let q: Vec<String> =
                            parameters.iter().map(|(n, v)| format!("{n}={v}")).collect();
                        format!("search({resource_type}?{})", q.join("&"))
                    }
                })
                .collect();
            format!("within: {}", parts.join("; "))
        }
    }
}

/// `scopes` as in the token, `patient` the launch context, then the request and the
/// expected rendering.
fn check(scopes: &str, patient: Option<&str>, request: &FhirRequest, expected: &str) {
    let mut token = claims().scopes(scopes);
    if let Some(p) = patient {
        token = token.patient(p);
    }
    let decision = SmartScopes::authorize(request, &token.build());
    assert_eq!(
        render(&decision),
        expected,
        "{} {:?} with [{scopes}] patient={patient:?}",
        request.interaction(),
        request.resource_type()
    );
}

fn obs() -> FhirRequest {
    read("Observation", "o1")
}

fn obs_search() -> FhirRequest {
    search("Observation", [("code", "1234-5")])
}

fn obs_create() -> FhirRequest {
    create(json!({"resourceType": "Observation", "status": "final"}))
}

fn interaction(i: Interaction, resource_type: Option<&str>) -> FhirRequest {
    let b = request(i);
    match resource_type {
        Some(t) => b.resource_type(t).build(),
        None => b.build(),
    }
}

#[test]
fn v1_patient_scopes() {
    let s = "launch/patient patient/*.read";
    check(s, Some("p1"), &obs(), "within: compartment(p1)");
    check(s, Some("p1"), &obs_search(), "within: compartment(p1)");
    check(
        s,
        Some("p1"),
        &read("Patient", "p1"),
        "within: compartment(p1)",
    );
    check(
        s,
        Some("p1"),
        &obs_create(),
        "deny: no granted scope permits create of Observation (such as patient/Observation.c, user/Observation.c or system/Observation.c)",
    );
    check(
        s,
        None,
        &obs(),
        "deny: patient/ scope without a patient context: patient/*.read would permit read of Observation, but the token has no patient",
    );
    check(
        "patient/Observation.write",
        Some("p1"),
        &obs_create(),
        "within: compartment(p1)",
    );
    check(
        "patient/Observation.write",
        Some("p1"),
        &delete("Observation", "o1"),
        "within: compartment(p1)",
    );
    check(
        "patient/Observation.write",
        Some("p1"),
        &obs(),
        "deny: no granted scope permits read of Observation (such as patient/Observation.r, user/Observation.r or system/Observation.r)",
    );
    check(
        "patient/*.*",
        Some("p1"),
        &delete("Condition", "c1"),
        "within: compartment(p1)",
    );
}

#[test]
fn v1_user_and_system_scopes() {
    check("user/*.read", None, &obs(), "allow");
    check("user/Observation.read", None, &obs_search(), "allow");
    check(
        "user/Observation.read",
        None,
        &read("Patient", "p1"),
        "deny: no granted scope permits read of Patient (such as patient/Patient.r, user/Patient.r or system/Patient.r)",
    );
    check("user/Observation.write", None, &obs_create(), "allow");
    check("system/*.*", None, &delete("Patient", "p1"), "allow");
    check("system/*.read", None, &obs_search(), "allow");
    check(
        "system/*.read",
        None,
        &obs_create(),
        "deny: no granted scope permits create of Observation (such as patient/Observation.c, user/Observation.c or system/Observation.c)",
    );
}

#[test]
fn v2_scopes() {
    check(
        "patient/Observation.rs",
        Some("p1"),
        &obs(),
        "within: compartment(p1)",
    );
    check(
        "patient/Observation.rs",
        Some("p1"),
        &obs_search(),
        "within: compartment(p1)",
    );
    check(
        "patient/Observation.r",
        Some("p1"),
        &obs_search(),
        "deny: no granted scope permits search of Observation (such as patient/Observation.s, user/Observation.s or system/Observation.s)",
    );
    check(
        "patient/Observation.s",
        Some("p1"),
        &obs(),
        "deny: no granted scope permits read of Observation (such as patient/Observation.r, user/Observation.r or system/Observation.r)",
    );
    check("user/Observation.cruds", None, &obs_create(), "allow");
    check("user/Observation.c", None, &obs_create(), "allow");
    check(
        "user/Observation.c",
        None,
        &interaction(Interaction::Update, Some("Observation")),
        "deny: no granted scope permits update of Observation (such as patient/Observation.u, user/Observation.u or system/Observation.u)",
    );
    check(
        "user/Observation.u",
        None,
        &interaction(Interaction::Patch, Some("Observation")),
        "allow",
    );
    check(
        "system/Observation.d",
        None,
        &delete("Observation", "o1"),
        "allow",
    );
    check(
        "system/*.rs",
        None,
        &interaction(Interaction::HistoryInstance, Some("Observation")),
        "allow",
    );
    check(
        "system/*.s",
        None,
        &interaction(Interaction::HistoryType, Some("Observation")),
        "allow",
    );
    check(
        "system/*.s",
        None,
        &interaction(Interaction::Vread, Some("Observation")),
        "deny: no granted scope permits read of Observation (such as patient/Observation.r, user/Observation.r or system/Observation.r)",
    );
}

#[test]
fn v2_query_scopes() {
    check(
        "patient/Observation.rs?category=laboratory",
        Some("p1"),
        &obs_search(),
        "within: compartment(p1); search(Observation?category=laboratory)",
    );
    check(
        "user/Observation.rs?category=laboratory",
        None,
        &obs(),
        "within: search(Observation?category=laboratory)",
    );
    // Two queries on the same parameter merge into one OR-ed search.
    check(
        "patient/Observation.rs?category=laboratory patient/Observation.rs?category=vital-signs",
        Some("p1"),
        &obs_search(),
        "within: compartment(p1); search(Observation?category=laboratory,vital-signs)",
    );
    // An unrestricted match wins over a query.
    check(
        "patient/Observation.rs?category=laboratory patient/Observation.rs",
        Some("p1"),
        &obs_search(),
        "within: compartment(p1)",
    );
    // Queries on different parameters cannot be OR-ed: the least restricted one applies.
    check(
        "user/Observation.rs?category=laboratory&status=final user/Observation.rs?code=1234-5",
        None,
        &obs_search(),
        "within: search(Observation?code=1234-5)",
    );
    // A query on `*` restricts the requested type.
    check(
        "user/*.rs?_security=N",
        None,
        &read("Condition", "c1"),
        "within: search(Condition?_security=N)",
    );
}

#[test]
fn least_restrictive_scope_wins() {
    check("patient/*.rs system/*.rs", Some("p1"), &obs(), "allow");
    check(
        "patient/*.rs user/Observation.rs",
        Some("p1"),
        &obs(),
        "allow",
    );
    check(
        "patient/*.rs user/Condition.rs",
        Some("p1"),
        &obs(),
        "within: compartment(p1)",
    );
    // A patient scope that cannot be used does not hide a usable one.
    check("patient/*.rs user/Observation.rs", None, &obs(), "allow");
}

#[test]
fn interactions_without_a_type() {
    check(
        "",
        None,
        &interaction(Interaction::Capabilities, None),
        "allow",
    );
    check("", None, &interaction(Interaction::Batch, None), "allow");
    check(
        "",
        None,
        &interaction(Interaction::Transaction, None),
        "allow",
    );
    check(
        "system/*.s",
        None,
        &interaction(Interaction::SearchSystem, None),
        "allow",
    );
    check(
        "patient/*.rs",
        Some("p1"),
        &interaction(Interaction::HistorySystem, None),
        "within: compartment(p1)",
    );
    check(
        "user/Observation.rs user/Patient.rs",
        None,
        &interaction(Interaction::SearchSystem, None),
        "deny: no granted scope permits search of all resource types (needs a scope on *, such as user/*.s)",
    );
    check(
        "user/*.rs?category=laboratory",
        None,
        &interaction(Interaction::SearchSystem, None),
        "deny: no granted scope permits search of all resource types (needs a scope on *, such as user/*.s)",
    );
    check(
        "user/*.rs",
        None,
        &interaction(Interaction::Read, None),
        "deny: a read request must name a resource type",
    );
}

#[test]
fn operations() {
    let everything = request(Interaction::Operation)
        .resource_type("Patient")
        .id("p1")
        .operation("everything")
        .build();
    check(
        "patient/*.rs",
        Some("p1"),
        &everything,
        "within: compartment(p1)",
    );
    check(
        "patient/Observation.rs",
        Some("p1"),
        &everything,
        "deny: no granted scope permits read of Patient (such as patient/Patient.r, user/Patient.r or system/Patient.r)",
    );
    let system_op = request(Interaction::Operation).operation("convert").build();
    check("system/*.r", None, &system_op, "allow");
    check(
        "system/Patient.r",
        None,
        &system_op,
        "deny: no granted scope permits read of all resource types (needs a scope on *, such as user/*.r)",
    );
}

#[test]
fn no_scopes_and_unparsed_scopes() {
    check(
        "",
        Some("p1"),
        &obs(),
        "deny: no granted scope permits read of Observation (such as patient/Observation.r, user/Observation.r or system/Observation.r)",
    );
    check(
        "openid fhirUser tenant:acme",
        Some("p1"),
        &obs(),
        "deny: no granted scope permits read of Observation (such as patient/Observation.r, user/Observation.r or system/Observation.r)",
    );
}

#[test]
fn grant_uses_registered_scopes() {
    let grant = SmartScopes::grant(
        &token_request()
            .requested("openid fhirUser launch/patient patient/Observation.rs user/*.cruds bogus")
            .registered("openid fhirUser launch/patient patient/*.read")
            .patient("p1")
            .build(),
    );
    assert_eq!(
        grant.granted,
        [
            "openid",
            "fhirUser",
            "launch/patient",
            "patient/Observation.rs"
        ]
    );
    assert_eq!(
        grant.refusal("user/*.cruds"),
        Some(
            "client test-client is not registered for it (registered: openid fhirUser launch/patient patient/*.read)"
        )
    );
    assert!(
        grant
            .refusal("bogus")
            .is_some_and(|r| r.starts_with("not a SMART scope"))
    );
}

/// The accounts of the user-rights matrix: roles and grants.
fn account(name: &str) -> UserRights {
    match name {
        "patient" => user("patient", [("*.rs", Some("amy"))]),
        "practitioner" => user("practitioner", [("*.cruds", None)]),
        "restricted" => user(
            "practitioner",
            [
                ("Patient.rs?organization=Organization/a", None),
                (
                    "Observation.rs?subject:Patient.organization=Organization/a",
                    None,
                ),
            ],
        ),
        "auditor" => user("auditor", [("*.rs", None)]),
        _ => user("", []),
    }
}

const REGISTERED: &str = "openid fhirUser launch/patient user/*.cruds patient/*.cruds system/*.rs";
const ORG_A: &str = "search(Patient?organization=Organization/a)";
const OBS_ORG_A: &str = "search(Observation?subject:Patient.organization=Organization/a)";

fn no_scope(verb: &str, t: &str, l: char) -> String {
    format!(
        "deny: no granted scope permits {verb} of {t} (such as patient/{t}.{l}, user/{t}.{l} or system/{t}.{l})"
    )
}

/// One cell: an account asks for `requested` (with `openid`) with the launch patient
/// `launch`; the grant is `granted` (space-separated, `openid` left out) and `refused`
/// (`scope: reason`); then a token with the granted scopes, whose `patient` is the launch
/// patient or else the compartment a narrowed scope holds in (as the host sets it), gets
/// these decisions for a read of Observation, a search of Patient and a create of
/// Observation.
struct Cell {
    account: &'static str,
    requested: &'static str,
    launch: Option<&'static str>,
    granted: &'static str,
    refused: String,
    read: String,
    search: String,
    create: String,
}

fn cells() -> Vec<Cell> {
    let cell =
        |account, requested, launch, granted, refused: &str, read: &str, search: &str| Cell {
            account,
            requested,
            launch,
            granted,
            refused: refused.to_string(),
            read: read.to_string(),
            search: search.to_string(),
            create: no_scope("create", "Observation", 'c'),
        };
    let deny_read = no_scope("read", "Observation", 'r');
    let deny_search = no_scope("search", "Patient", 's');
    let amy = "within: compartment(amy)";
    let bob = "within: compartment(bob)";
    let nobody = |what: &str| format!("the account's access (roles: none) does not include {what}");
    vec![
        // A patient's account: its own records whatever it asks.
        cell("patient", "user/*.rs", None, "patient/*.rs", "", amy, amy),
        cell(
            "patient",
            "user/Patient.r",
            None,
            "patient/Patient.r",
            "",
            &deny_read,
            &deny_search,
        ),
        cell(
            "patient",
            "patient/*.rs",
            Some("amy"),
            "patient/*.rs",
            "",
            amy,
            amy,
        ),
        cell(
            "patient",
            "patient/*.rs",
            Some("bob"),
            "",
            "patient/*.rs: the account's access (roles: patient) is limited to the records of \
             patient amy, not those of the launch patient bob",
            &deny_read,
            &deny_search,
        ),
        cell(
            "patient",
            "user/*.read",
            None,
            "patient/*.read",
            "",
            amy,
            amy,
        ),
        // A practitioner: everything it asks, in the context it asks.
        Cell {
            create: "allow".into(),
            ..cell(
                "practitioner",
                "user/*.cruds",
                None,
                "user/*.cruds",
                "",
                "allow",
                "allow",
            )
        },
        cell(
            "practitioner",
            "user/*.rs",
            None,
            "user/*.rs",
            "",
            "allow",
            "allow",
        ),
        cell(
            "practitioner",
            "user/Patient.r",
            None,
            "user/Patient.r",
            "",
            &deny_read,
            &deny_search,
        ),
        cell(
            "practitioner",
            "patient/*.rs",
            Some("amy"),
            "patient/*.rs",
            "",
            amy,
            amy,
        ),
        cell(
            "practitioner",
            "patient/*.rs",
            Some("bob"),
            "patient/*.rs",
            "",
            bob,
            bob,
        ),
        cell(
            "practitioner",
            "user/*.read",
            None,
            "user/*.read",
            "",
            "allow",
            "allow",
        ),
        // A practitioner limited to organization a's patients.
        cell(
            "restricted",
            "user/*.rs",
            None,
            "user/Patient.rs?organization=Organization/a \
             user/Observation.rs?subject:Patient.organization=Organization/a",
            "",
            &format!("within: {OBS_ORG_A}"),
            &format!("within: {ORG_A}"),
        ),
        cell(
            "restricted",
            "user/Patient.r",
            None,
            "user/Patient.r?organization=Organization/a",
            "",
            &deny_read,
            &deny_search,
        ),
        cell(
            "restricted",
            "patient/*.rs",
            Some("amy"),
            "patient/Patient.rs?organization=Organization/a \
             patient/Observation.rs?subject:Patient.organization=Organization/a",
            "",
            &format!("within: compartment(amy); {OBS_ORG_A}"),
            &format!("within: compartment(amy); {ORG_A}"),
        ),
        cell(
            "restricted",
            "user/*.read",
            None,
            "user/Patient.rs?organization=Organization/a \
             user/Observation.rs?subject:Patient.organization=Organization/a",
            "",
            &format!("within: {OBS_ORG_A}"),
            &format!("within: {ORG_A}"),
        ),
        // An auditor: read and search anything, write nothing.
        cell(
            "auditor",
            "user/*.rs",
            None,
            "user/*.rs",
            "",
            "allow",
            "allow",
        ),
        cell(
            "auditor",
            "user/*.cruds",
            None,
            "user/*.rs",
            "",
            "allow",
            "allow",
        ),
        cell(
            "auditor",
            "user/Patient.r",
            None,
            "user/Patient.r",
            "",
            &deny_read,
            &deny_search,
        ),
        cell(
            "auditor",
            "patient/*.rs",
            Some("bob"),
            "patient/*.rs",
            "",
            bob,
            bob,
        ),
        cell(
            "auditor",
            "user/*.read",
            None,
            "user/*.read",
            "",
            "allow",
            "allow",
        ),
        // No role, no grant: no FHIR access through user/ or patient/ scopes.
        cell(
            "none",
            "user/*.rs",
            None,
            "",
            &format!("user/*.rs: {}", nobody("*.rs")),
            &deny_read,
            &deny_search,
        ),
        cell(
            "none",
            "user/Patient.r",
            None,
            "",
            &format!("user/Patient.r: {}", nobody("Patient.r")),
            &deny_read,
            &deny_search,
        ),
        cell(
            "none",
            "patient/*.rs",
            Some("amy"),
            "",
            &format!("patient/*.rs: {}", nobody("*.rs")),
            &deny_read,
            &deny_search,
        ),
        cell(
            "none",
            "user/*.read",
            None,
            "",
            &format!("user/*.read: {}", nobody("*.read")),
            &deny_read,
            &deny_search,
        ),
    ]
}

#[test]
fn user_rights_bound_grants_and_decisions() {
    for c in cells() {
        let rights = account(c.account);
        let mut request = token_request()
            .requested(&format!("openid {}", c.requested))
            .registered(REGISTERED)
            .user(rights.clone());
        if let Some(p) = c.launch {
            request = request.patient(p);
        }
        let grant = SmartScopes::grant(&request.build());
        let what = format!("{} asking {} launch={:?}", c.account, c.requested, c.launch);
        assert_eq!(grant.granted[0], "openid", "{what}");
        assert_eq!(grant.granted[1..].join(" "), c.granted, "{what}");
        let refused: Vec<String> = grant
            .refused
            .iter()
            .map(|(s, why)| format!("{s}: {why}"))
            .collect();
        assert_eq!(refused.join(" | "), c.refused, "{what}");

        let own = rights.grants().iter().find_map(|g| g.patient_compartment());
        let patient = c.launch.or(own.filter(|_| c.granted.contains("patient/")));
        let mut token = claims()
            .scopes(&grant.granted.join(" "))
            .user(rights.clone());
        if let Some(p) = patient {
            token = token.patient(p);
        }
        let token = token.build();
        for (request, expected) in [
            (obs(), &c.read),
            (search("Patient", []), &c.search),
            (obs_create(), &c.create),
        ] {
            assert_eq!(
                render(&SmartScopes::authorize(&request, &token)),
                *expected,
                "{what}: {} {:?}",
                request.interaction(),
                request.resource_type()
            );
        }
    }
}

/// Rights are read again on every request: a token keeps its scopes, but what the account
/// may do now bounds them, and system/ scopes in an account's token count for nothing.
#[test]
fn current_rights_bound_an_issued_token() {
    let decide =
        |scopes: &str, patient: Option<&str>, rights: UserRights, request: &FhirRequest| {
            let mut token = claims().scopes(scopes).user(rights);
            if let Some(p) = patient {
                token = token.patient(p);
            }
            render(&SmartScopes::authorize(request, &token.build()))
        };
    let search_patient = search("Patient", []);
    // The practitioner role removed after the token was issued.
    assert_eq!(
        decide("user/*.cruds", None, account("none"), &search_patient),
        "deny: the account's current access (roles: none) does not permit search of Patient"
    );
    // Narrowed to a policy changed since: organization a only.
    assert_eq!(
        decide("user/*.cruds", None, account("restricted"), &search_patient),
        format!("within: {ORG_A}")
    );
    assert_eq!(
        decide("user/*.cruds", None, account("restricted"), &obs_create()),
        "deny: the account's current access (roles: practitioner) does not permit create of Observation"
    );
    // A patient's account confined since: its own compartment, whatever the token says.
    assert_eq!(
        decide("user/*.rs", None, account("patient"), &obs()),
        "within: compartment(amy)"
    );
    assert_eq!(
        decide("patient/*.rs", Some("bob"), account("patient"), &obs()),
        "deny: the account's current access (roles: patient) does not permit read of Observation"
    );
    // System scopes do not reach an account's data.
    assert_eq!(
        decide("system/*.rs", None, account("practitioner"), &obs()),
        no_scope("read", "Observation", 'r')
    );
    // Without an account (client_credentials) system scopes work as before.
    let backend = claims().scopes("system/*.rs").build();
    assert_eq!(render(&SmartScopes::authorize(&obs(), &backend)), "allow");
}

#[test]
fn an_account_gets_no_system_scopes() {
    let grant = SmartScopes::grant(
        &token_request()
            .requested("openid system/*.rs user/Patient.rs")
            .registered(REGISTERED)
            .user(account("practitioner"))
            .build(),
    );
    assert_eq!(grant.granted, ["openid", "user/Patient.rs"]);
    assert_eq!(
        grant.refusal("system/*.rs"),
        Some(
            "system/ scopes are for backend services (client_credentials), not for a token of an account"
        )
    );
    // A client_credentials request (no account) still gets them.
    let backend = SmartScopes::grant(
        &token_request()
            .grant_type("client_credentials")
            .subject(None)
            .requested("system/*.rs")
            .registered(REGISTERED)
            .build(),
    );
    assert_eq!(backend.granted, ["system/*.rs"]);
}
