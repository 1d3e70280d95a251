//! The `WWW-Authenticate` challenges of the FHIR and admin realms, for the resource
//! server's refusals and for FHIR errors that are refusals (403).

use axum::http::HeaderValue;

/// The `WWW-Authenticate` challenge of the FHIR realm.
pub(crate) fn challenge(error: Option<&str>, description: &str) -> HeaderValue {
    challenge_in("hestia", error, description, None)
}

/// A `Bearer` challenge (RFC 6750 §3): quotes and backslashes escaped as RFC 7235's
/// quoted-string wants, and what a header cannot carry (non-ASCII, controls) as `?`.
pub(crate) fn challenge_in(
    realm: &str,
    error: Option<&str>,
    description: &str,
    scope: Option<&str>,
) -> HeaderValue {
    let quote = |s: &str| {
        s.chars()
            .map(|c| {
                if c.is_ascii() && !c.is_ascii_control() {
                    c
                } else {
                    '?'
                }
            })
            .collect::<String>()
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
    };
    let mut value = format!("Bearer realm=\"{}\"", quote(realm));
    if let Some(error) = error {
        value.push_str(&format!(", error=\"{}\"", quote(error)));
    }
    if let Some(scope) = scope {
        value.push_str(&format!(", scope=\"{}\"", quote(scope)));
    }
    value.push_str(&format!(", error_description=\"{}\"", quote(description)));
    HeaderValue::from_str(&value)
        .unwrap_or_else(|_| HeaderValue::from_static("Bearer realm=\"hestia\""))
}
