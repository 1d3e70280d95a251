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
use crate::oauth::{
    AUTHORIZE_PATH, INTROSPECT_PATH, JWKS_PATH, REGISTER_PATH, REVOKE_PATH, TOKEN_PATH,
    USERINFO_PATH,
};

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
    // The statement depends only on the settings and the compiled-in definitions.
    static STATEMENT: OnceLock<(String, Value)> = OnceLock::new();
    let settings = state.settings();
    let base = settings.fhir_base_url();
    let url = |path: &str| format!("{}{path}", settings.public_url);
    let (cached_base, statement) = STATEMENT.get_or_init(|| {
        let statement = capability_statement(&CapabilityOptions {
            base_url: base.clone(),
            create_on_update: settings.fhir.create_on_update,
            oauth: OauthUris {
                authorize: url(AUTHORIZE_PATH),
                token: url(TOKEN_PATH),
                register: url(REGISTER_PATH),
                introspect: url(INTROSPECT_PATH),
                revoke: url(REVOKE_PATH),
            },
        });
        (base.clone(), statement)
    });
    if *cached_base == base {
        return Ok(fhir_json(StatusCode::OK, statement, format.pretty));
    }
    // Another server in the same process (tests): build its own.
    let statement = capability_statement(&CapabilityOptions {
        base_url: base,
        create_on_update: settings.fhir.create_on_update,
        oauth: OauthUris {
            authorize: url(AUTHORIZE_PATH),
            token: url(TOKEN_PATH),
            register: url(REGISTER_PATH),
            introspect: url(INTROSPECT_PATH),
            revoke: url(REVOKE_PATH),
        },
    });
    Ok(fhir_json(StatusCode::OK, &statement, format.pretty))
}

/// SMART App Launch 2 discovery, truthful about what the authorization server does.
async fn smart_configuration(State(state): State<AppState>) -> Response {
    let meta = state.oauth().metadata();
    let url = |path: &str| format!("{}{path}", state.settings().public_url);
    let body = json!({
        "issuer": meta["issuer"],
        "jwks_uri": url(JWKS_PATH),
        "authorization_endpoint": url(AUTHORIZE_PATH),
        "grant_types_supported": meta["grant_types_supported"],
        "token_endpoint": url(TOKEN_PATH),
        "token_endpoint_auth_methods_supported": meta["token_endpoint_auth_methods_supported"],
        "token_endpoint_auth_signing_alg_values_supported": meta["token_endpoint_auth_signing_alg_values_supported"],
        "registration_endpoint": url(REGISTER_PATH),
        "userinfo_endpoint": url(USERINFO_PATH),
        "introspection_endpoint": url(INTROSPECT_PATH),
        "revocation_endpoint": url(REVOKE_PATH),
        "scopes_supported": meta["scopes_supported"],
        "response_types_supported": meta["response_types_supported"],
        "code_challenge_methods_supported": meta["code_challenge_methods_supported"],
        "capabilities": [
            "launch-standalone",
            "client-public",
            "client-confidential-symmetric",
            "client-confidential-asymmetric",
            "context-standalone-patient",
            "sso-openid-connect",
            "permission-offline",
            "permission-online",
            "permission-patient",
            "permission-user",
            "permission-v1",
            "permission-v2",
        ],
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        axum::Json(body),
    )
        .into_response()
}
