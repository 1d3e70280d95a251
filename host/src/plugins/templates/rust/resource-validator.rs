//! {name}: a resource validator. A Patient needs a name and a birth date; other resource
//! types pass (the built-in `structural-validator` still checks every resource).

use hestia_sdk::{Issue, ResourceValidator, Value};

pub struct Validator;

impl ResourceValidator for Validator {
    fn validate(resource_type: &str, resource: &Value) -> Vec<Issue> {
        if resource_type != "Patient" {
            return Vec::new();
        }
        ["name", "birthDate"]
            .into_iter()
            .filter(|field| resource[field].is_null())
            .map(|field| Issue::required(format!("Patient.{field}")))
            .collect()
    }
}

hestia_sdk::export_resource_validator!(Validator);

#[cfg(test)]
mod tests {
    use hestia_sdk::{ResourceValidator, json};

    use super::Validator;

    #[test]
    fn patients_need_a_name_and_a_birth_date() {
        let complete = json!({"resourceType": "Patient", "name": [{"family": "Chalmers"}], "birthDate": "1974-12-25"});
        assert!(Validator::validate("Patient", &complete).is_empty());
        let issues = Validator::validate("Patient", &json!({"resourceType": "Patient"}));
        let expressions: Vec<_> = issues.iter().map(|i| i.expression.as_deref()).collect();
        assert_eq!(expressions, [Some("Patient.name"), Some("Patient.birthDate")]);
        assert!(Validator::validate("Observation", &json!({})).is_empty());
    }
}
