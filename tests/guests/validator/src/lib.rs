//! A tiny resource validator: the resource must name its type, and `"bad"` anywhere is an error.

wit_bindgen::generate!({ path: "../../../wit/v0.1.0", world: "resource-validator" });

use hestia::plugin::types::Severity;

struct Validator;

impl Guest for Validator {
    fn validate(resource_type: String, resource_json: String) -> Vec<Issue> {
        let mut issues = Vec::new();
        if !resource_json.contains(&format!("\"resourceType\":\"{resource_type}\"")) {
            issues.push(Issue {
                severity: Severity::Error,
                code: "required".to_string(),
                expression: Some(format!("{resource_type}.resourceType")),
                diagnostics: format!("resourceType must be {resource_type}"),
            });
        }
        if resource_json.contains("bad") {
            issues.push(Issue {
                severity: Severity::Warning,
                code: "value".to_string(),
                expression: None,
                diagnostics: "contains \"bad\"".to_string(),
            });
        }
        issues
    }
}

export!(Validator);
