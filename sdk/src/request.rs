use serde_json::Value;

/// The FHIR REST interaction of a request: the contract's `interaction`.
pub use crate::bindings::scope_policy::hestia::plugin::types::Interaction;

impl Interaction {
    /// The FHIR name (`search-type`, `history-instance`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Interaction::Read => "read",
            Interaction::Vread => "vread",
            Interaction::Update => "update",
            Interaction::Patch => "patch",
            Interaction::Delete => "delete",
            Interaction::Create => "create",
            Interaction::HistoryInstance => "history-instance",
            Interaction::HistoryType => "history-type",
            Interaction::HistorySystem => "history-system",
            Interaction::SearchType => "search-type",
            Interaction::SearchSystem => "search-system",
            Interaction::Capabilities => "capabilities",
            Interaction::Batch => "batch",
            Interaction::Transaction => "transaction",
            Interaction::Operation => "operation",
        }
    }

    /// Create, update, patch and delete.
    pub fn is_write(self) -> bool {
        matches!(
            self,
            Interaction::Create | Interaction::Update | Interaction::Patch | Interaction::Delete
        )
    }
}

impl std::fmt::Display for Interaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One FHIR REST request as the host parsed it. Batch and transaction entries arrive as
/// requests of their own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FhirRequest {
    pub(crate) interaction: Interaction,
    pub(crate) resource_type: Option<String>,
    pub(crate) id: Option<String>,
    pub(crate) operation: Option<String>,
    pub(crate) parameters: Vec<(String, String)>,
    pub(crate) body_json: Option<String>,
    pub(crate) base_url: String,
}

impl FhirRequest {
    pub fn interaction(&self) -> Interaction {
        self.interaction
    }

    pub fn resource_type(&self) -> Option<&str> {
        self.resource_type.as_deref()
    }

    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// The operation's name without `$`, for [`Interaction::Operation`].
    pub fn operation(&self) -> Option<&str> {
        self.operation.as_deref()
    }

    /// Search or operation parameters in request order; names keep their modifiers
    /// (`name:exact`).
    pub fn params(&self) -> &[(String, String)] {
        &self.parameters
    }

    /// The first value of a parameter, by exact name.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.parameters
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The resource sent with a create, update or patch, parsed. `None` when there is no
    /// body (the host only passes bodies that are JSON).
    pub fn body(&self) -> Option<Value> {
        self.body_json
            .as_deref()
            .and_then(|b| serde_json::from_str(b).ok())
    }

    /// The body as the JSON text the host passed.
    pub fn body_json(&self) -> Option<&str> {
        self.body_json.as_deref()
    }

    /// This server's FHIR base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The patient a request is about when that is plain from the request itself: the id
    /// of a `Patient` read/update/delete, or a `patient`/`subject` search parameter naming a
    /// patient (`123` or `Patient/123`).
    pub fn patient_id(&self) -> Option<&str> {
        if self.resource_type() == Some("Patient") {
            if let Some(id) = self.id() {
                return Some(id);
            }
            return self.param("_id");
        }
        ["patient", "subject", "subject:Patient", "patient:Patient"]
            .into_iter()
            .find_map(|name| self.param(name))
            .and_then(|value| match value.split_once('/') {
                Some(("Patient", id)) => Some(id),
                Some(_) => None,
                None => Some(value),
            })
    }
}
