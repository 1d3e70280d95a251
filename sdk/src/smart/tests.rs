use super::*;
use crate::testing::token_request;

/// `expected` is the scope's canonical form followed by its context, type, permissions,
/// syntax and query, or `err: <message>` for a scope that does not parse.
fn check(input: &str, expected: &str) {
    let actual = match input.parse::<Scope>() {
        Err(e) => format!("err: {e}"),
        Ok(Scope::Resource(r)) => {
            let query: Vec<String> = r.query().iter().map(|(n, v)| format!("{n}={v}")).collect();
            format!(
                "{r} | {} {} {} {:?} [{}]",
                r.context(),
                r.resource_type().unwrap_or("*"),
                r.permissions(),
                r.syntax(),
                query.join(", ")
            )
        }
        Ok(other) => format!("{other} | {other:?}"),
    };
    assert_eq!(actual, expected, "parsing {input:?}");
}

/// The table every SDK's parser passes (`sdk/smart-scope-cases.json`; the Python and
/// JavaScript SDKs' tests read the same file).
#[test]
fn the_shared_table_of_scopes() {
    #[derive(serde::Deserialize)]
    struct Case {
        scope: String,
        expect: String,
    }
    let cases: Vec<Case> = serde_json::from_str(include_str!("../../smart-scope-cases.json"))
        .expect("smart-scope-cases.json");
    assert!(cases.len() >= 50);
    for case in cases {
        check(&case.scope, &case.expect);
    }
}
#[test]
fn permits() {
    let cases = [
        ("patient/*.read", "Observation", Permission::Read, true),
        ("patient/*.read", "Observation", Permission::Search, true),
        ("patient/*.read", "Observation", Permission::Create, false),
        (
            "user/Observation.write",
            "Observation",
            Permission::Create,
            true,
        ),
        (
            "user/Observation.write",
            "Observation",
            Permission::Update,
            true,
        ),
        (
            "user/Observation.write",
            "Observation",
            Permission::Delete,
            true,
        ),
        (
            "user/Observation.write",
            "Observation",
            Permission::Read,
            false,
        ),
        (
            "user/Observation.write",
            "Patient",
            Permission::Update,
            false,
        ),
        ("system/*.*", "Anything", Permission::Delete, true),
        (
            "patient/Observation.rs",
            "Observation",
            Permission::Search,
            true,
        ),
        (
            "patient/Observation.rs",
            "Condition",
            Permission::Read,
            false,
        ),
        (
            "patient/Observation.s",
            "Observation",
            Permission::Read,
            false,
        ),
        (
            "patient/Observation.rs?category=x",
            "Observation",
            Permission::Read,
            true,
        ),
        ("openid", "Observation", Permission::Read, false),
    ];
    for (scope, resource_type, permission, expected) in cases {
        let s: Scope = scope.parse().unwrap();
        assert_eq!(
            s.permits(resource_type, permission),
            expected,
            "{scope} permits {permission:?} on {resource_type}"
        );
    }
    let s: Scope = "patient/*.read".parse().unwrap();
    assert!(s.permits_in(Context::Patient, "Observation", Permission::Read));
    assert!(!s.permits_in(Context::User, "Observation", Permission::Read));
}

#[test]
fn covers() {
    let cases = [
        ("patient/*.read", "patient/Observation.rs", true),
        ("patient/*.read", "patient/Observation.read", true),
        ("patient/*.read", "patient/Observation.r", true),
        ("patient/*.read", "patient/*.rs", true),
        (
            "patient/*.read",
            "patient/Observation.rs?category=laboratory",
            true,
        ),
        ("patient/*.read", "patient/Observation.cruds", false),
        ("patient/*.read", "user/Observation.rs", false),
        ("patient/Observation.rs", "patient/*.rs", false),
        ("patient/Observation.rs", "patient/Condition.rs", false),
        ("patient/*.*", "patient/Observation.cruds", true),
        ("user/*.cruds", "user/Patient.write", true),
        ("system/*.write", "system/Patient.r", false),
        (
            "patient/Observation.rs?category=laboratory",
            "patient/Observation.rs",
            false,
        ),
        (
            "patient/Observation.rs?category=laboratory",
            "patient/Observation.rs?category=laboratory",
            true,
        ),
        (
            "patient/Observation.rs?category=laboratory",
            "patient/Observation.r?category=laboratory&code=x",
            true,
        ),
        (
            "patient/Observation.rs?category=laboratory",
            "patient/Observation.rs?category=vital-signs",
            false,
        ),
        ("openid", "openid", true),
        ("launch/patient", "launch/patient", true),
        ("launch", "launch/patient", false),
        ("patient/*.*", "launch/patient", false),
    ];
    for (registered, requested, expected) in cases {
        let registered: Scope = registered.parse().unwrap();
        let requested: Scope = requested.parse().unwrap();
        assert_eq!(
            registered.covers(&requested),
            expected,
            "{registered} covers {requested}"
        );
    }
}

#[test]
fn parse_list_keeps_good_and_reports_bad() {
    let (scopes, errors) = Scope::parse_list("openid  patient/*.read bogus\tlaunch/patient");
    let scopes: Vec<String> = scopes.iter().map(ToString::to_string).collect();
    assert_eq!(scopes, ["openid", "patient/*.read", "launch/patient"]);
    assert_eq!(errors, [("bogus".to_string(), ScopeError::Unknown)]);
}

#[test]
fn display_round_trips() {
    for s in [
        "patient/*.read",
        "user/Observation.write",
        "system/*.*",
        "patient/Observation.rs?category=laboratory&code=http://loinc.org|1234-5",
        "user/Patient.cruds",
        "launch/patient",
        "offline_access",
    ] {
        let scope: Scope = s.parse().unwrap();
        assert_eq!(scope.to_string(), s);
        assert_eq!(scope.to_string().parse::<Scope>().unwrap(), scope);
    }
}

/// Scope strings built from pieces that are each sometimes wrong: parsing never panics, and
/// whatever parses prints back to a string that parses to the same scope.
#[test]
fn does_not_panic_and_round_trips() {
    let contexts = ["patient", "user", "system", "", "Patient", "launch"];
    let types = ["*", "Observation", "observation", "", "A", "Ob.s"];
    let permissions = [
        "read", "write", "*", "cruds", "rs", "sr", "", "c", "crudsx", "r?",
    ];
    let queries = [
        "", "?a=b", "?a=b&c=d", "?", "?a", "?a=%41", "?a=%", "?=&=", "?a=b?c=d",
    ];
    for c in contexts {
        for t in types {
            for p in permissions {
                for q in queries {
                    let s = format!("{c}/{t}.{p}{q}");
                    if let Ok(scope) = s.parse::<Scope>() {
                        let again: Scope = scope
                            .to_string()
                            .parse()
                            .unwrap_or_else(|e| panic!("{s} -> {scope}: {e}"));
                        assert_eq!(again, scope, "{s}");
                    }
                }
            }
        }
    }
}

fn check_grant(requested: &str, registered: &str, granted: &[&str], refused: &[(&str, &str)]) {
    let request = token_request()
        .requested(requested)
        .registered(registered)
        .build();
    let grant = grant_registered(&request);
    assert_eq!(
        grant.granted, granted,
        "granted for {requested:?} / {registered:?}"
    );
    let refused: Vec<(String, String)> = refused
        .iter()
        .map(|(s, r)| (s.to_string(), r.to_string()))
        .collect();
    assert_eq!(
        grant.refused, refused,
        "refused for {requested:?} / {registered:?}"
    );
}

#[test]
fn grant_registered_cases() {
    check_grant(
        "openid fhirUser launch/patient patient/Observation.rs offline_access",
        "openid fhirUser launch/patient patient/*.read offline_access",
        &[
            "openid",
            "fhirUser",
            "launch/patient",
            "patient/Observation.rs",
            "offline_access",
        ],
        &[],
    );
    check_grant(
        "patient/*.cruds user/Patient.read",
        "patient/*.read",
        &[],
        &[
            (
                "patient/*.cruds",
                "client test-client is not registered for it (registered: patient/*.read)",
            ),
            (
                "user/Patient.read",
                "client test-client is not registered for it (registered: patient/*.read)",
            ),
        ],
    );
    check_grant(
        "patient/Observation.rs patient/Observation.rs bogus",
        "patient/Observation.rs",
        &["patient/Observation.rs"],
        &[(
            "bogus",
            "not a SMART scope: not a SMART scope (context/Type.permissions) nor one of openid, profile, fhirUser, launch, launch/<context>, offline_access, online_access",
        )],
    );
    check_grant(
        "openid",
        "",
        &[],
        &[(
            "openid",
            "client test-client is not registered for it (registered: none)",
        )],
    );
    check_grant(
        "patient/Observation.rs?category=laboratory patient/Observation.rs",
        "patient/Observation.rs?category=laboratory",
        &["patient/Observation.rs?category=laboratory"],
        &[(
            "patient/Observation.rs",
            "client test-client is not registered for it (registered: patient/Observation.rs?category=laboratory)",
        )],
    );
}

/// `a ∩ b`, rendered, or `none`.
fn check_intersect(a: &str, b: &str, expected: &str) {
    let (a, b): (ResourceAccess, ResourceAccess) = (a.parse().unwrap(), b.parse().unwrap());
    let actual = a
        .intersect(&b)
        .map_or("none".to_string(), |r| r.to_string());
    assert_eq!(actual, expected, "{a} ∩ {b}");
}

#[test]
fn intersections() {
    let cases = [
        // Types: the same, or `*` on either side, which gives the named type.
        ("*.rs", "*.cruds", "*.rs"),
        ("Patient.r", "*.rs", "Patient.r"),
        ("*.rs", "Patient.cruds", "Patient.rs"),
        ("Patient.rs", "Observation.rs", "none"),
        // Permissions: those of both; none in common is nothing.
        ("Observation.c", "*.rs", "none"),
        ("*.cud", "*.cruds", "*.cud"),
        // v1 normalised, and kept where v1 can say the result.
        ("*.read", "*.rs", "*.read"),
        ("*.read", "*.cruds", "*.read"),
        ("*.*", "*.cud", "*.write"),
        ("*.read", "*.r", "*.r"),
        ("*.read", "*.write", "none"),
        ("*.rs", "*.read", "*.rs"),
        (
            "*.read",
            "Patient.rs?organization=Organization/a",
            "Patient.rs?organization=Organization/a",
        ),
        // Queries: ANDed; the same pair once, different values both kept.
        (
            "Observation.rs?category=laboratory",
            "Observation.rs",
            "Observation.rs?category=laboratory",
        ),
        (
            "Observation.rs?category=laboratory",
            "*.rs?subject:Patient.organization=Organization/a",
            "Observation.rs?category=laboratory&subject:Patient.organization=Organization/a",
        ),
        (
            "Patient.rs?organization=Organization/a",
            "Patient.rs?organization=Organization/a",
            "Patient.rs?organization=Organization/a",
        ),
        (
            "Patient.rs?organization=Organization/a",
            "Patient.rs?organization=Organization/b",
            "Patient.rs?organization=Organization/a&organization=Organization/b",
        ),
    ];
    for (a, b, expected) in cases {
        check_intersect(a, b, expected);
    }
}

#[test]
fn resource_access_parses_scopes_without_context() {
    let access: ResourceAccess = "Observation.rs?category=laboratory".parse().unwrap();
    assert_eq!(access.resource_type(), Some("Observation"));
    assert_eq!(access.permissions().to_string(), "rs");
    assert_eq!(access.query(), [("category".into(), "laboratory".into())]);
    assert_eq!(
        "*.read".parse::<ResourceAccess>().unwrap().syntax(),
        Syntax::V1
    );
    for (bad, error) in [
        (
            "patient/*.rs",
            "`patient/*` is neither `*` nor a FHIR resource type name",
        ),
        ("Patient", "missing `.permissions` after the resource type"),
        (
            "Patient.x",
            "bad permissions `x` (expected read, write, *, or letters of cruds in that order)",
        ),
        (
            "*.read?a=b",
            "query parameters need SMART v2 permissions (such as .rs)",
        ),
    ] {
        assert_eq!(
            bad.parse::<ResourceAccess>().unwrap_err().to_string(),
            error
        );
    }
    let scope: ResourceScope = "user/Patient.rs".parse().unwrap();
    assert_eq!(scope.access().to_string(), "Patient.rs");
    assert_eq!(
        "openid".parse::<ResourceScope>().unwrap_err().to_string(),
        "`openid` is not a resource scope (context/Type.permissions)"
    );
}
