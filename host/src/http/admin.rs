//! Operator endpoints under `/admin`. They take a bearer access token issued by this server
//! (in remote mode: by the issuer it trusts) that carries the scope [`ADMIN_SCOPE`]; only
//! a client registered for that scope gets it (the host grants it itself, the scope-policy
//! plugins never see it). 401 for a missing or invalid token, 403 for a token without the
//! scope; `WWW-Authenticate` names the cause.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::AppState;
use super::statuses::refusal_status;
use crate::gate::Refusal;
use crate::plugins::PluginInfo;

pub use crate::policy::ADMIN_SCOPE;

pub fn routes() -> Router<AppState> {
    Router::new().route("/admin/plugins", get(plugins))
}

/// Every plugin, in chain order, as `hestia plugin list` shows them.
/// A browser with a console session and no token gets the console's plugins page.
async fn plugins(State(state): State<AppState>, request: axum::extract::Request) -> Response {
    let (mut parts, _) = request.into_parts();
    if !parts.headers.contains_key(header::AUTHORIZATION)
        && super::console::has_session_cookie(&parts.headers)
    {
        return super::console::plugins_page(state, &mut parts).await;
    }
    if let Err(e) = authenticate(&state, &parts.headers).await {
        return e.into_response();
    }
    Json(plugins_json(&state)).into_response()
}

/// Every plugin, as `GET /admin/plugins` and `GET /admin/api/plugins` answer.
pub(super) fn plugins_json(state: &AppState) -> Value {
    let plugins: Vec<Value> = state.plugins().list().iter().map(plugin_json).collect();
    json!({ "plugins": plugins })
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

/// The claims of the request's `hestia:admin` bearer token.
pub(super) async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<crate::oauth::tokens::AccessClaims, AdminError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split_once(' ')
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        })
        .map(|(_, token)| token.trim())
        .ok_or(AdminError(Refusal::Unauthenticated {
            error: None,
            description: "an admin request needs an Authorization: Bearer access token".into(),
        }))?;
    state
        .gate()
        .admin(token, ADMIN_SCOPE)
        .await
        .map_err(AdminError)
}

/// A refusal of the gate, as RFC 6750 JSON with a challenge of the admin realm.
pub(super) struct AdminError(pub(super) Refusal);

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let (status, code) = refusal_status(&self.0);
        let error = code.unwrap_or(match self.0 {
            Refusal::Unavailable(_) => "temporarily_unavailable",
            _ => "invalid_request",
        });
        let description = self.0.description();
        let body = json!({
            "error": error,
            "error_description": description,
        });
        let mut response = (status, Json(body)).into_response();
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            let scope = (status == StatusCode::FORBIDDEN).then_some(ADMIN_SCOPE);
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                super::challenge::challenge_in("hestia-admin", code, description, scope),
            );
        }
        response
    }
}
