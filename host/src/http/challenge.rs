//! The `WWW-Authenticate` challenges: `Bearer` for the FHIR and admin realms (the
//! resource server's refusals, FHIR errors that are refusals, the authorization server's
//! token errors) and `Basic` for client authentication at the authorization server.

use axum::http::HeaderValue;

/// The realm of the FHIR API and the authorization server.
pub(crate) const REALM: &str = "hestia";

/// The `WWW-Authenticate` challenge of the FHIR realm.
pub(crate) fn challenge(error: Option<&str>, description: &str) -> HeaderValue {
    challenge_in(REALM, error, description, None)
}

/// A `Bearer` challenge (RFC 6750 §3).
pub(crate) fn challenge_in(
    realm: &str,
    error: Option<&str>,
    description: &str,
    scope: Option<&str>,
) -> HeaderValue {
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

/// A `Basic` challenge (RFC 7617), for a client that must authenticate.
pub(crate) fn basic(realm: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("Basic realm=\"{}\"", quote(realm)))
        .unwrap_or_else(|_| HeaderValue::from_static("Basic realm=\"hestia\""))
}

/// `s` as the inside of RFC 7235's quoted-string: quotes and backslashes escaped, what a
/// header cannot carry (non-ASCII, controls) as `?`.
fn quote(s: &str) -> String {
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
}
