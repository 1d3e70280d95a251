//! The FHIR base's discovery documents, readable without a token: the CapabilityStatement
//! (`metadata`) and SMART's `.well-known/smart-configuration`.

use std::sync::OnceLock;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::AppState;
use super::fhir::{FhirResponseError, fhir_json, negotiate};
use crate::fhir::capabilities::{CapabilityOptions, OauthUris, capability_statement};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/metadata", get(metadata))
        .route("/.well-known/smart-configuration", get(smart_configuration))
}

async fn metadata(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Response, FhirResponseError> {
    let format = negotiate(&headers, &query)?;
    // The statement depends only on the settings, the compiled-in definitions and the
    // issuer's metadata (fetched before the server is ready).
    static STATEMENT: OnceLock<(String, Value)> = OnceLock::new();
    let settings = state.settings();
    let base = settings.fhir_base_url();
    let build = || {
        let meta = state.verifier().metadata();
        let uri = |field: &str| meta[field].as_str().unwrap_or_default().to_string();
        capability_statement(&CapabilityOptions {
            base_url: base.clone(),
            create_on_update: settings.fhir.create_on_update,
            oauth: OauthUris {
                authorize: uri("authorization_endpoint"),
                token: uri("token_endpoint"),
                register: uri("registration_endpoint"),
                introspect: uri("introspection_endpoint"),
                revoke: uri("revocation_endpoint"),
            },
        })
    };
    let (cached_base, statement) = STATEMENT.get_or_init(|| (base.clone(), build()));
    if *cached_base == base {
        return Ok(fhir_json(StatusCode::OK, statement, format.pretty));
    }
    // Another server in the same process (tests): build its own.
    Ok(fhir_json(StatusCode::OK, &build(), format.pretty))
}

/// The SMART capabilities this deployment has: the authorization server's, read from its
/// metadata (this server's own, or the remote issuer's), and the resource server's.
fn capabilities(meta: &Value) -> Vec<&'static str> {
    let has = |field: &str, value: &str| {
        meta[field]
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v == value))
    };
    let mut out = Vec::new();
    if meta["authorization_endpoint"].is_string() {
        out.push("launch-standalone");
    }
    if has("token_endpoint_auth_methods_supported", "none") {
        out.push("client-public");
    }
    if has(
        "token_endpoint_auth_methods_supported",
        "client_secret_basic",
    ) || has(
        "token_endpoint_auth_methods_supported",
        "client_secret_post",
    ) {
        out.push("client-confidential-symmetric");
    }
    if has("token_endpoint_auth_methods_supported", "private_key_jwt") {
        out.push("client-confidential-asymmetric");
    }
    if has("scopes_supported", "launch/patient") {
        out.push("context-standalone-patient");
    }
    if has("scopes_supported", "openid") && has("scopes_supported", "fhirUser") {
        out.push("sso-openid-connect");
    }
    if has("scopes_supported", "offline_access") {
        out.push("permission-offline");
    }
    if has("scopes_supported", "online_access") {
        out.push("permission-online");
    }
    // Enforced here, by the scope-policy plugins, whoever issued the token.
    out.extend([
        "permission-patient",
        "permission-user",
        "permission-v1",
        "permission-v2",
    ]);
    out
}

/// SMART App Launch 2 discovery, truthful about what the authorization server does: this
/// server's own, or in remote mode the issuer's endpoints from its discovery document.
async fn smart_configuration(State(state): State<AppState>) -> Response {
    let meta = state.verifier().metadata();
    let mut body = json!({"capabilities": capabilities(&meta)});
    for field in [
        "issuer",
        "jwks_uri",
        "authorization_endpoint",
        "grant_types_supported",
        "token_endpoint",
        "token_endpoint_auth_methods_supported",
        "token_endpoint_auth_signing_alg_values_supported",
        "registration_endpoint",
        "userinfo_endpoint",
        "introspection_endpoint",
        "revocation_endpoint",
        "scopes_supported",
        "response_types_supported",
        "code_challenge_methods_supported",
    ] {
        if let Some(value) = meta.get(field).filter(|v| !v.is_null()) {
            body[field] = value.clone();
        }
    }
    // Not SMART fields: where a backend service (client_credentials, system/ scopes)
    // starts a Bulk Data export or import here.
    let base = state.settings().fhir_base_url();
    body["bulk_data_export"] = json!([
        format!("{base}/$export"),
        format!("{base}/Patient/$export"),
        format!("{base}/Group/[id]/$export"),
    ]);
    body["bulk_data_import"] = json!([format!("{base}/$import")]);
    (
        [(header::CONTENT_TYPE, "application/json")],
        axum::Json(body),
    )
        .into_response()
}
