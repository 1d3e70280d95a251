//! Adapters from the plugin host to the interfaces `fhir/` and `oauth/` define, so that
//! neither of them knows about WebAssembly and the plugin types stay in `plugins/`.

use std::sync::Arc;

use crate::fhir::outcome::{Issue, Severity};
use crate::fhir::repository::ResourceValidator;
use crate::plugins::{self, PluginHost};

/// The resource-validator plugins, as the FHIR repository's validator.
pub struct PluginValidator(pub Arc<PluginHost>);

impl ResourceValidator for PluginValidator {
    fn validate(&self, resource_type: &str, resource_json: &str) -> Vec<Issue> {
        self.0
            .validate(resource_type, resource_json)
            .into_iter()
            .map(|i| Issue {
                severity: match i.severity {
                    plugins::Severity::Fatal => Severity::Fatal,
                    plugins::Severity::Error => Severity::Error,
                    plugins::Severity::Warning => Severity::Warning,
                    plugins::Severity::Information => Severity::Information,
                },
                code: i.code,
                diagnostics: i.diagnostics,
                expression: i.expression.into_iter().collect(),
            })
            .collect()
    }
}
