//! Operator endpoints under `/admin`. They take a bearer access token issued by this server
//! (in remote mode: by the issuer it trusts) that carries the scope [`ADMIN_SCOPE`]; only
//! a client registered for that scope gets it (the host grants it itself, the scope-policy
//! plugins never see it). 401 for a missing or invalid token, 403 for a token without the
//! scope; `WWW-Authenticate` names the cause.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::AppState;
use crate::plugins::PluginInfo;

pub use crate::policy::ADMIN_SCOPE;

pub fn routes() -> Router<AppState> {
    Router::new().route("/admin/plugins", get(plugins))
}

/// Every plugin, in chain order, as `hestia plugin list` shows them.
async fn plugins(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, AdminError> {
    authenticate(&state, &headers).await?;
    let plugins: Vec<Value> = state.plugins().list().iter().map(plugin_json).collect();
    Ok(Json(json!({ "plugins": plugins })))
}

fn plugin_json(p: &PluginInfo) -> Value {
    json!({
        "name": p.name,
        "kind": p.kind.map(|k| k.as_str()),
        "order": p.order,
        "version": p.version,
        "source": p.source.to_string(),
        "state": p.state.to_string(),
        "last_error": p.last_error,
        "on_error": format!("{:?}", p.on_error).to_lowercase(),
        "isolation": p.isolation,
        "deadline_ms": p.deadline.as_millis() as u64,
        "memory_limit_bytes": p.memory_limit,
    })
}

async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<(), AdminError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split_once(' ')
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        })
        .map(|(_, token)| token.trim())
        .ok_or(AdminError::Unauthorized {
            error: None,
            description: "an admin request needs an Authorization: Bearer access token".into(),
        })?;
    let claims = state
        .verifier()
        .verify(token, 30)
        .await
        .map_err(|e| AdminError::Unauthorized {
            error: Some("invalid_token"),
            description: e.to_string(),
        })?
        .claims;
    if claims.has_scope(ADMIN_SCOPE) {
        Ok(())
    } else {
        Err(AdminError::Forbidden(format!(
            "the token of client {} lacks the scope {ADMIN_SCOPE}",
            claims.client_id
        )))
    }
}

enum AdminError {
    Unauthorized {
        error: Option<&'static str>,
        description: String,
    },
    Forbidden(String),
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let (status, error, description) = match self {
            AdminError::Unauthorized { error, description } => {
                (StatusCode::UNAUTHORIZED, error, description)
            }
            AdminError::Forbidden(description) => (
                StatusCode::FORBIDDEN,
                Some("insufficient_scope"),
                description,
            ),
        };
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
        let mut challenge = String::from("Bearer realm=\"hestia-admin\"");
        if let Some(error) = error {
            challenge.push_str(&format!(", error=\"{error}\""));
            if error == "insufficient_scope" {
                challenge.push_str(&format!(", scope=\"{ADMIN_SCOPE}\""));
            }
        }
        challenge.push_str(&format!(", error_description=\"{}\"", quote(&description)));
        let body = json!({
            "error": error.unwrap_or("invalid_request"),
            "error_description": description,
        });
        let mut response = (status, Json(body)).into_response();
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}
