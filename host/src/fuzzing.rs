//! Entry points for the fuzz targets (`fuzz/`) into parsers that are not otherwise public.
//! Each calls the function the server calls, unchanged; nothing else uses this module.

use serde_json::Value;

use crate::oauth::errors::OAuthError;

/// The checks of an RFC 7591 registration request (or an RFC 7592 update) before any
/// write: what `AuthServer::register` refuses with `invalid_client_metadata`.
pub fn registration_request(body: &Value) -> Result<(), OAuthError> {
    crate::oauth::registration::plan(body).map(|_| ())
}
