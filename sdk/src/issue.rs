use crate::bindings::resource_validator::hestia::plugin::types as wit;

/// How bad a validation finding is; `Fatal` and `Error` reject the resource. The
/// contract's `severity`.
pub use wit::Severity;

/// One finding of a resource validator; the host turns it into an OperationOutcome issue.
/// The contract's `issue`: `code` is an OperationOutcome issue-type code (`required`,
/// `value`, `structure`, `invalid`, …), `expression` a FHIRPath location
/// (`Patient.birthDate`).
pub use wit::Issue;

impl Issue {
    pub fn new(
        severity: Severity,
        code: impl Into<String>,
        diagnostics: impl Into<String>,
    ) -> Issue {
        Issue {
            severity,
            code: code.into(),
            expression: None,
            diagnostics: diagnostics.into(),
        }
    }

    pub fn error(code: impl Into<String>, diagnostics: impl Into<String>) -> Issue {
        Issue::new(Severity::Error, code, diagnostics)
    }

    pub fn warning(code: impl Into<String>, diagnostics: impl Into<String>) -> Issue {
        Issue::new(Severity::Warning, code, diagnostics)
    }

    pub fn information(code: impl Into<String>, diagnostics: impl Into<String>) -> Issue {
        Issue::new(Severity::Information, code, diagnostics)
    }

    /// A required element is missing: code `required`.
    pub fn required(expression: impl Into<String>) -> Issue {
        let expression = expression.into();
        Issue::error("required", format!("{expression} is required")).at(expression)
    }

    /// The body is not JSON: code `structure`, with the parser's message.
    pub fn not_json(error: &serde_json::Error) -> Issue {
        Issue::error(
            "structure",
            format!("the resource is not valid JSON: {error}"),
        )
    }

    /// The body is JSON, but not an object: code `structure`.
    pub fn not_an_object() -> Issue {
        Issue::error("structure", "a resource must be a JSON object")
    }

    /// Where the finding is, as FHIRPath (`Patient.birthDate`).
    #[must_use]
    pub fn at(mut self, expression: impl Into<String>) -> Issue {
        self.expression = Some(expression.into());
        self
    }

    /// Fatal and error findings reject the resource.
    pub fn is_error(&self) -> bool {
        self.severity <= Severity::Error
    }
}
