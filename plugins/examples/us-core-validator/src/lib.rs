//! A US-Core-flavoured validator: a few of the US Core must-haves, on top of the default
//! structural checks (chain it after `structural-validator`).
//!
//! - Patient: at least one `identifier` with a `system` and a `value`; at least one `name`
//!   with a `family` or a `given`; `gender` present.
//! - Observation: `status`, `category`, `code` and a `subject` that references a Patient.
//!
//! Other resource types pass untouched.

use hestia_sdk::{Issue, ResourceValidator, Value};

pub struct UsCore;

impl ResourceValidator for UsCore {
    fn validate(resource_type: &str, resource: &Value) -> Vec<Issue> {
        match resource_type {
            "Patient" => patient(resource),
            "Observation" => observation(resource),
            _ => Vec::new(),
        }
    }
}

hestia_sdk::export_resource_validator!(UsCore);

fn patient(p: &Value) -> Vec<Issue> {
    let mut issues = Vec::new();
    let identifiers = items(&p["identifier"]);
    if identifiers.is_empty() {
        issues.push(Issue::required("Patient.identifier"));
    }
    for (i, id) in identifiers.iter().enumerate() {
        for field in ["system", "value"] {
            if id[field].as_str().is_none() {
                issues.push(Issue::required(format!("Patient.identifier[{i}].{field}")));
            }
        }
    }
    let names = items(&p["name"]);
    if !names
        .iter()
        .any(|n| n["family"].is_string() || n["given"].is_array())
    {
        issues.push(
            Issue::error("required", "Patient.name needs a family or a given name")
                .at("Patient.name"),
        );
    }
    if p["gender"].is_null() {
        issues.push(Issue::required("Patient.gender"));
    }
    issues
}

fn observation(o: &Value) -> Vec<Issue> {
    let mut issues: Vec<Issue> = ["status", "code", "subject"]
        .into_iter()
        .filter(|field| o[field].is_null())
        .map(|field| Issue::required(format!("Observation.{field}")))
        .collect();
    if items(&o["category"]).is_empty() {
        issues.push(Issue::required("Observation.category"));
    }
    if let Some(reference) = o["subject"]["reference"].as_str()
        && !reference.starts_with("Patient/")
        && !reference.contains("/Patient/")
    {
        issues.push(
            Issue::error(
                "value",
                format!("Observation.subject must reference a Patient, not {reference}"),
            )
            .at("Observation.subject"),
        );
    }
    issues
}

fn items(value: &Value) -> &[Value] {
    value.as_array().map(Vec::as_slice).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use hestia_sdk::{ResourceValidator, json};

    use super::UsCore;

    fn check(resource: hestia_sdk::Value, expected: &[&str]) {
        let resource_type = resource["resourceType"].as_str().unwrap().to_string();
        let issues: Vec<String> = UsCore::validate(&resource_type, &resource)
            .iter()
            .map(|i| {
                format!(
                    "{} {}: {}",
                    i.code,
                    i.expression.as_deref().unwrap_or("-"),
                    i.diagnostics
                )
            })
            .collect();
        assert_eq!(issues, expected, "{resource}");
    }

    #[test]
    fn patient() {
        check(
            json!({"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "1"}], "name": [{"family": "Chalmers"}], "gender": "male"}),
            &[],
        );
        check(
            json!({"resourceType": "Patient", "name": [{"text": "Peter"}]}),
            &[
                "required Patient.identifier: Patient.identifier is required",
                "required Patient.name: Patient.name needs a family or a given name",
                "required Patient.gender: Patient.gender is required",
            ],
        );
        check(
            json!({"resourceType": "Patient", "identifier": [{"value": "1"}], "name": [{"given": ["Peter"]}], "gender": "male"}),
            &["required Patient.identifier[0].system: Patient.identifier[0].system is required"],
        );
    }

    #[test]
    fn observation() {
        check(
            json!({"resourceType": "Observation", "status": "final", "category": [{"text": "lab"}], "code": {"text": "x"}, "subject": {"reference": "Patient/p1"}}),
            &[],
        );
        check(
            json!({"resourceType": "Observation", "code": {"text": "x"}}),
            &[
                "required Observation.status: Observation.status is required",
                "required Observation.subject: Observation.subject is required",
                "required Observation.category: Observation.category is required",
            ],
        );
        check(
            json!({"resourceType": "Observation", "status": "final", "category": [{}], "code": {}, "subject": {"reference": "Group/g1"}}),
            &[
                "value Observation.subject: Observation.subject must reference a Patient, not Group/g1",
            ],
        );
    }

    #[test]
    fn other_types_pass() {
        check(json!({"resourceType": "Organization"}), &[]);
    }
}
