//! The error of FHIR interactions, shared by the repository, search, Bundles, bulk data
//! and the HTTP layer, which maps it to a status code and an OperationOutcome.

use super::outcome::Issue;
use crate::store::StoreError;

/// Errors of FHIR interactions; each maps to one HTTP status and an OperationOutcome.
#[derive(Debug, thiserror::Error)]
pub enum FhirError {
    #[error("{}", super::outcome::summary(.0))]
    BadRequest(Vec<Issue>),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("{}", super::outcome::summary(.0))]
    Unprocessable(Vec<Issue>),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    NotAcceptable(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// An error passed on with its status (a failing entry of a transaction).
    #[error("{}", super::outcome::summary(.1))]
    WithStatus(u16, Vec<Issue>),
}

impl FhirError {
    pub fn invalid(diagnostics: impl Into<String>) -> Self {
        FhirError::BadRequest(vec![Issue::error("invalid", diagnostics)])
    }

    /// The HTTP status code of this error.
    pub fn status(&self) -> u16 {
        match self {
            FhirError::BadRequest(_) => 400,
            FhirError::Forbidden(_) => 403,
            FhirError::NotFound(_) => 404,
            FhirError::MethodNotAllowed(_) => 405,
            FhirError::NotAcceptable(_) => 406,
            FhirError::Conflict(_) => 409,
            FhirError::Gone(_) => 410,
            FhirError::PreconditionFailed(_) => 412,
            FhirError::PayloadTooLarge(_) => 413,
            FhirError::UnsupportedMediaType(_) => 415,
            FhirError::Unprocessable(_) => 422,
            FhirError::Internal(_) => 500,
            FhirError::WithStatus(status, _) => *status,
        }
    }

    /// The issues to put in the OperationOutcome.
    pub fn issues(&self) -> Vec<Issue> {
        match self {
            FhirError::BadRequest(issues)
            | FhirError::Unprocessable(issues)
            | FhirError::WithStatus(_, issues) => issues.clone(),
            FhirError::NotFound(m) => vec![Issue::error("not-found", m)],
            FhirError::Gone(m) => vec![Issue::error("deleted", m)],
            FhirError::Conflict(m) => vec![Issue::error("conflict", m)],
            FhirError::PreconditionFailed(m) => vec![Issue::error("conflict", m)],
            FhirError::MethodNotAllowed(m) => vec![Issue::error("not-supported", m)],
            FhirError::UnsupportedMediaType(m) | FhirError::NotAcceptable(m) => {
                vec![Issue::error("not-supported", m)]
            }
            FhirError::PayloadTooLarge(m) => vec![Issue::error("too-costly", m)],
            FhirError::Forbidden(m) => vec![Issue::error("forbidden", m)],
            // The cause is logged by the HTTP layer with the request id; clients get no internals.
            FhirError::Internal(_) => vec![Issue::error(
                "exception",
                "internal server error; the server log has the details under this request's x-request-id",
            )],
        }
    }
}

impl From<StoreError> for FhirError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict(what) => FhirError::Conflict(format!("{what} already exists")),
            other => FhirError::Internal(other.to_string()),
        }
    }
}
