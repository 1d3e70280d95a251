use crate::testing::{self, claims, read, request, search};
use crate::{
    Constraint, Decision, Interaction, Issue, Level, ResourceValidator, Severity, Value, json,
};

#[test]
fn claims_accessors() {
    let c = claims()
        .scopes("openid patient/*.rs tenant:acme")
        .patient("p1")
        .fhir_user("Patient/p1")
        .client_id("app")
        .claim("tenant", json!("acme"))
        .build();
    assert_eq!(c.client_id(), "app");
    assert_eq!(c.subject(), "test-user");
    assert_eq!(c.patient(), Some("p1"));
    assert_eq!(c.fhir_user(), Some("Patient/p1"));
    // Scopes that are not SMART scopes stay in the strings only.
    assert_eq!(c.scope_strings(), ["openid", "patient/*.rs", "tenant:acme"]);
    let parsed: Vec<String> = c.scopes().iter().map(ToString::to_string).collect();
    assert_eq!(parsed, ["openid", "patient/*.rs"]);
    assert!(c.has_scope("tenant:acme"));
    assert_eq!(c.claim_str("tenant"), Some("acme"));
    assert_eq!(c.claim_str("patient"), Some("p1"));
    assert_eq!(
        c.claim("scope"),
        Some(&json!("openid patient/*.rs tenant:acme"))
    );
    assert_eq!(c.claim("missing"), None);
}

#[test]
fn request_helpers() {
    assert_eq!(read("Patient", "p1").patient_id(), Some("p1"));
    assert_eq!(
        search("Observation", [("subject", "Patient/p2")]).patient_id(),
        Some("p2")
    );
    assert_eq!(
        search("Observation", [("patient", "p3")]).patient_id(),
        Some("p3")
    );
    assert_eq!(
        search("Observation", [("subject", "Group/g1")]).patient_id(),
        None
    );
    assert_eq!(search("Observation", [("code", "x")]).patient_id(), None);
    let r = request(Interaction::Create)
        .resource_type("Patient")
        .body(json!({"resourceType": "Patient"}))
        .build();
    assert_eq!(r.body(), Some(json!({"resourceType": "Patient"})));
    assert!(r.interaction().is_write());
    assert_eq!(r.base_url(), testing::BASE_URL);
    assert_eq!(
        search("Observation", [("a", "1"), ("a", "2")]).param("a"),
        Some("1")
    );
}

#[test]
fn decisions() {
    assert_eq!(Decision::allow_within([]), Decision::Allow);
    let d = Decision::allow_within([Constraint::patient_compartment("p1")]);
    assert!(d.is_allowed());
    assert_eq!(
        d.constraints(),
        [Constraint::PatientCompartment("p1".into())]
    );
    let d = Decision::deny("no");
    assert!(!d.is_allowed());
    assert_eq!(d.deny_reason(), Some("no"));
}

#[test]
fn config_and_log_are_per_test_thread() {
    #[derive(serde::Deserialize, Debug)]
    struct Config {
        limit: u32,
    }
    assert!(crate::config::<Config>().is_err());
    testing::set_config(json!({"limit": 3}));
    assert_eq!(crate::config::<Config>().unwrap().limit, 3);
    testing::set_config(json!({"limit": "x"}));
    let err = crate::config::<Config>().unwrap_err().to_string();
    assert!(
        err.starts_with("invalid plugin configuration: invalid type"),
        "{err}"
    );
    testing::clear_config();
    assert_eq!(crate::config_json(), "{}");

    crate::log::warn("one");
    crate::log::error(String::from("two"));
    assert_eq!(
        testing::take_logs(),
        [
            (Level::Warn, "one".to_string()),
            (Level::Error, "two".to_string())
        ]
    );
    assert!(testing::take_logs().is_empty());
}

struct NeedsId;

impl ResourceValidator for NeedsId {
    fn validate(resource_type: &str, resource: &Value) -> Vec<Issue> {
        if resource["id"].is_string() {
            Vec::new()
        } else {
            vec![Issue::required(format!("{resource_type}.id"))]
        }
    }
}

#[test]
fn validate_json_parses_before_the_validator() {
    assert_eq!(
        crate::validate_json::<NeedsId>("Patient", r#"{"id":"x"}"#),
        []
    );
    assert_eq!(
        crate::validate_json::<NeedsId>("Patient", "{}"),
        [Issue {
            severity: Severity::Error,
            code: "required".into(),
            expression: Some("Patient.id".into()),
            diagnostics: "Patient.id is required".into(),
        }]
    );
    let not_object = crate::validate_json::<NeedsId>("Patient", "[1]");
    assert_eq!(
        not_object[0].diagnostics,
        "a resource must be a JSON object"
    );
    let broken = crate::validate_json::<NeedsId>("Patient", "{");
    assert_eq!(broken[0].code, "structure");
    assert!(broken[0].is_error());
}

/// Each requested scope narrowed to an account's grants, as `scope@patient`, `;`-separated.
#[test]
fn user_rights_narrow_requested_scopes() {
    use crate::testing::user;
    let patient = user("patient", [("*.rs", Some("amy"))]);
    let practitioner = user("practitioner", [("*.cruds", None)]);
    let restricted = user(
        "practitioner",
        [
            ("Patient.rs?organization=Organization/a", None),
            (
                "Observation.rs?subject:Patient.organization=Organization/a",
                None,
            ),
            ("*.r", None),
            ("not a scope", None),
        ],
    );
    let nobody = user("", []);
    let cases: [(&crate::UserRights, &str, Option<&str>, &str); 13] = [
        (&patient, "user/*.rs", None, "patient/*.rs@amy"),
        (&patient, "user/*.read", None, "patient/*.read@amy"),
        (&patient, "user/Observation.c", None, ""),
        (&patient, "patient/*.rs", Some("amy"), "patient/*.rs@amy"),
        (&patient, "patient/*.rs", Some("bob"), ""),
        (&patient, "system/*.rs", None, ""),
        (&practitioner, "user/Patient.r", None, "user/Patient.r@-"),
        (
            &practitioner,
            "patient/*.cud",
            Some("bob"),
            "patient/*.cud@bob",
        ),
        (&practitioner, "patient/*.rs", None, "patient/*.rs@-"),
        // `*.r` covers the read half of each query grant; both stay, with their own query.
        (
            &restricted,
            "user/*.rs",
            None,
            "user/Patient.rs?organization=Organization/a@-;\
             user/Observation.rs?subject:Patient.organization=Organization/a@-;user/*.r@-",
        ),
        // A result another one covers is left out.
        (&restricted, "user/Patient.r", None, "user/Patient.r@-"),
        (&nobody, "user/*.rs", None, ""),
        (&nobody, "patient/*.rs", Some("amy"), ""),
    ];
    for (rights, requested, launch, expected) in cases {
        let narrowed: Vec<String> = rights
            .narrow(&requested.parse().unwrap(), launch)
            .into_iter()
            .map(|n| format!("{}@{}", n.scope, n.patient.as_deref().unwrap_or("-")))
            .collect();
        assert_eq!(
            narrowed.join(";"),
            expected,
            "{requested} launch={launch:?}"
        );
    }
    assert!(restricted.grants()[3].scope().is_err());
    assert_eq!(restricted.grants()[3].scope_str(), "not a scope");
    assert_eq!(patient.grants()[0].patient_compartment(), Some("amy"));
    assert!(patient.has_role("patient") && !patient.has_role("admin"));
}

#[test]
fn a_registered_user_scope_covers_the_patient_scope_of_an_account() {
    use crate::testing::{token_request, user};
    let request = |with_user: bool| {
        let mut r = token_request()
            .registered("user/*.read")
            .requested("patient/Observation.rs patient/Patient.c");
        if with_user {
            r = r.user(user("patient", [("*.rs", Some("amy"))]));
        }
        crate::smart::grant_registered(&r.build())
    };
    let for_account = request(true);
    assert_eq!(for_account.granted, ["patient/Observation.rs"]);
    assert_eq!(for_account.refused.len(), 1, "{:?}", for_account.refused);
    // Without an account, contexts stay apart.
    assert!(request(false).granted.is_empty());
}
