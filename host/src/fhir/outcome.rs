//! OperationOutcome: how every FHIR error (and warning) is told to the client.

use serde_json::{Value, json};

/// Severity of an issue, as in `OperationOutcome.issue.severity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Fatal,
    Error,
    Warning,
    Information,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Fatal => "fatal",
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Information => "information",
        }
    }

    /// Fatal and error issues make a request fail.
    pub fn is_failure(self) -> bool {
        matches!(self, Severity::Fatal | Severity::Error)
    }
}

/// One issue. `code` is from the IssueType value set (`invalid`, `required`, `not-found`,
/// `conflict`, `forbidden`, `processing`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub severity: Severity,
    pub code: String,
    pub diagnostics: String,
    /// FHIRPath locations, e.g. `Patient.birthDate`.
    pub expression: Vec<String>,
}

impl Issue {
    pub fn error(code: &str, diagnostics: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            code: code.to_string(),
            diagnostics: diagnostics.into(),
            expression: Vec::new(),
        }
    }

    pub fn warning(code: &str, diagnostics: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(code, diagnostics)
        }
    }

    pub fn information(code: &str, diagnostics: impl Into<String>) -> Self {
        Self {
            severity: Severity::Information,
            ..Self::error(code, diagnostics)
        }
    }

    pub fn at(mut self, expression: impl Into<String>) -> Self {
        self.expression.push(expression.into());
        self
    }

    pub fn to_json(&self) -> Value {
        let mut issue = json!({
            "severity": self.severity.as_str(),
            "code": self.code,
            "diagnostics": self.diagnostics,
        });
        if !self.expression.is_empty() {
            issue["expression"] = json!(self.expression);
        }
        issue
    }
}

/// An OperationOutcome resource.
pub fn operation_outcome(issues: &[Issue]) -> Value {
    json!({
        "resourceType": "OperationOutcome",
        "issue": issues.iter().map(Issue::to_json).collect::<Vec<_>>(),
    })
}

/// The first failure's text, for logs and `WWW-Authenticate` descriptions.
pub fn summary(issues: &[Issue]) -> String {
    issues
        .iter()
        .find(|i| i.severity.is_failure())
        .or_else(|| issues.first())
        .map(|i| i.diagnostics.clone())
        .unwrap_or_default()
}
