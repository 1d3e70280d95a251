use hestia_sdk::testing::{claims, create, delete, read, request, search, token_request};
use hestia_sdk::{Constraint, Decision, FhirRequest, Interaction, ScopePolicy, json};

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
