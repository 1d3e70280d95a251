//! The error of FHIR interactions, shared by the repository, search, Bundles, bulk data
//! and the HTTP layer. Each error has an [`ErrorKind`] and an OperationOutcome's issues;
//! the HTTP layer alone gives a kind its status code.

use super::outcome::Issue;
use crate::store::StoreError;

/// Errors of FHIR interactions: a kind (a status to the HTTP layer) and an OperationOutcome.
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
    /// An error of a kind with issues of its own (a failing entry of a transaction,
    /// named in its issues; a refusal of the HTTP layer).
    #[error("{}", super::outcome::summary(.1))]
    WithKind(ErrorKind, Vec<Issue>),
}

/// What went wrong, as the FHIR RESTful API tells failures apart (one HTTP status each,
/// which `http::statuses::status_of_kind` gives).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    BadRequest,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    NotAcceptable,
    Conflict,
    Gone,
    PreconditionFailed,
    PayloadTooLarge,
    UnsupportedMediaType,
    Unprocessable,
    Internal,
    /// The server cannot answer now (its database or the gate's checks are unavailable).
    Unavailable,
}

impl ErrorKind {
    /// Whether the server failed, rather than refused the request.
    pub fn is_server_failure(self) -> bool {
        matches!(self, ErrorKind::Internal | ErrorKind::Unavailable)
    }
}

impl FhirError {
    pub fn invalid(diagnostics: impl Into<String>) -> Self {
        FhirError::BadRequest(vec![Issue::error("invalid", diagnostics)])
    }

    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            FhirError::BadRequest(_) => ErrorKind::BadRequest,
            FhirError::Forbidden(_) => ErrorKind::Forbidden,
            FhirError::NotFound(_) => ErrorKind::NotFound,
            FhirError::MethodNotAllowed(_) => ErrorKind::MethodNotAllowed,
            FhirError::NotAcceptable(_) => ErrorKind::NotAcceptable,
            FhirError::Conflict(_) => ErrorKind::Conflict,
            FhirError::Gone(_) => ErrorKind::Gone,
            FhirError::PreconditionFailed(_) => ErrorKind::PreconditionFailed,
            FhirError::PayloadTooLarge(_) => ErrorKind::PayloadTooLarge,
            FhirError::UnsupportedMediaType(_) => ErrorKind::UnsupportedMediaType,
            FhirError::Unprocessable(_) => ErrorKind::Unprocessable,
            FhirError::Internal(_) => ErrorKind::Internal,
            FhirError::WithKind(kind, _) => *kind,
        }
    }

    /// The issues to put in the OperationOutcome.
    pub fn issues(&self) -> Vec<Issue> {
        match self {
            FhirError::BadRequest(issues)
            | FhirError::Unprocessable(issues)
            | FhirError::WithKind(_, issues) => issues.clone(),
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
