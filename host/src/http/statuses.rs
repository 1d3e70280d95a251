//! The HTTP status of each refusal of the gate and each kind of FHIR error: the one
//! mapping, used by the answers of `http/` and by the texts of `token explain` and the
//! console that say what the server answers. It imports nothing else of `http/`, so that
//! those may use it without an import circle.

use axum::http::StatusCode;

use crate::fhir::error::ErrorKind;
use crate::gate::Refusal;

/// The HTTP status of each kind of FHIR error.
pub fn status_of_kind(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorKind::NotAcceptable => StatusCode::NOT_ACCEPTABLE,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Gone => StatusCode::GONE,
        ErrorKind::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
        ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorKind::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The status of the answer to a refusal, and the RFC 6750 error code of its `Bearer`
/// challenge: none for a 400 or a 503, which carry no challenge, nor for a 401 without
/// credentials (a bare challenge, RFC 6750 §3.1).
pub fn refusal_status(refusal: &Refusal) -> (StatusCode, Option<&'static str>) {
    match refusal {
        Refusal::Malformed(_) => (StatusCode::BAD_REQUEST, None),
        Refusal::Unauthenticated { error, .. } => (StatusCode::UNAUTHORIZED, *error),
        Refusal::Forbidden(_) => (StatusCode::FORBIDDEN, Some("insufficient_scope")),
        Refusal::Throttled(_) => (StatusCode::TOO_MANY_REQUESTS, Some("invalid_token")),
        Refusal::Unavailable(_) => (status_of_kind(ErrorKind::Unavailable), None),
    }
}

/// The answer to a refusal as texts name it: its status and its challenge's error code
/// (`401 invalid_token`, `403 insufficient_scope`, `503`).
pub fn refusal_answer(refusal: &Refusal) -> String {
    match refusal_status(refusal) {
        (status, Some(error)) => format!("{} {error}", status.as_str()),
        (status, None) => status.as_str().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_is_named_by_the_status_it_is_answered_with() {
        let table = [
            (Refusal::Malformed("m".into()), "400"),
            (
                Refusal::Unauthenticated {
                    error: None,
                    description: "no token".into(),
                },
                "401",
            ),
            (Refusal::invalid_token("expired"), "401 invalid_token"),
            (Refusal::Forbidden("f".into()), "403 insufficient_scope"),
            (Refusal::Throttled("t".into()), "429 invalid_token"),
            (Refusal::Unavailable("u".into()), "503"),
        ];
        for (refusal, words) in table {
            assert_eq!(refusal_answer(&refusal), words, "{refusal:?}");
        }
    }
}
