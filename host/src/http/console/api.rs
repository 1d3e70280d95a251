//! The console's JSON API under `/admin/api/`: the operations of the pages, for scripts.
//! A request is authenticated by a `hestia:admin` bearer token (the actor is its client)
//! or by a console session (changes then carry the session's CSRF token in
//! `X-CSRF-Token`). Errors are `{"error", "error_description"}`.

use axum::Router;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, extract::rejection::JsonRejection};
use serde::Deserialize;
use serde_json::{Value, json};

use super::system_pages::ActivityQuery;
use super::{CSRF_HEADER, address_of, console, console_status, live_session};
use crate::console::{Actor, ClientInput, Console, ConsoleError, UserInput};
use crate::gate::Refusal;
use crate::http::admin::{AdminError, authenticate, plugins_json};
use crate::store::constant_time_eq;

type AppState = crate::http::AppState;
type ApiResult = Result<Response, ApiError>;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/api/clients", get(clients).post(create_client))
        .route(
            "/admin/api/clients/{id}",
            get(client).put(update_client).delete(remove_client),
        )
        .route("/admin/api/clients/{id}/secret", post(rotate_secret))
        .route("/admin/api/users", get(users).post(create_user))
        .route(
            "/admin/api/users/{name}",
            get(user).put(update_user).delete(remove_user),
        )
        .route("/admin/api/users/{name}/password", post(reset_password))
        .route("/admin/api/users/{name}/lock", post(lock))
        .route("/admin/api/users/{name}/unlock", post(unlock))
        .route(
            "/admin/api/users/{name}/grants/{grant}",
            delete(revoke_grant),
        )
        .route("/admin/api/users/{name}/sessions/{id}", delete(end_session))
        .route(
            "/admin/api/registration-tokens",
            get(registration_tokens).post(create_registration_token),
        )
        .route(
            "/admin/api/registration-tokens/{id}",
            delete(revoke_registration_token),
        )
        .route("/admin/api/keys", get(keys))
        .route("/admin/api/keys/rotate", post(rotate_keys))
        .route("/admin/api/plugins", get(plugins))
        .route("/admin/api/explain", post(explain))
        .route("/admin/api/activity", get(activity))
}

/// Who calls the API: the client of an admin token or a console session's account.
pub struct Api {
    actor: Actor,
}

impl Api {
    fn console<'a>(&self, state: &'a AppState) -> Console<'a> {
        console(state, self.actor.clone())
    }
}

impl FromRequestParts<AppState> for Api {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let address = address_of(state, parts);
        if parts.headers.contains_key(header::AUTHORIZATION) {
            let claims = authenticate(state, &parts.headers)
                .await
                .map_err(IntoResponse::into_response)?;
            return Ok(Api {
                actor: Actor {
                    name: format!("client {}", claims.client_id),
                    address,
                },
            });
        }
        let session = live_session(state, &parts.headers)
            .await
            .map_err(|e| ApiError(e).into_response())?;
        let Some((session, _)) = session else {
            return Err(AdminError(Refusal::Unauthenticated {
                error: None,
                description: "an admin API request needs an Authorization: Bearer token with the scope hestia:admin, or a console session".into(),
            })
            .into_response());
        };
        if parts.method != Method::GET {
            let given = parts
                .headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if !constant_time_eq(given.as_bytes(), session.csrf.as_bytes()) {
                return Err(AdminError(Refusal::Forbidden(
                    "a change through a console session needs the session's CSRF token in X-CSRF-Token".into(),
                ))
                .into_response());
            }
        }
        Ok(Api {
            actor: Actor {
                name: session.username,
                address,
            },
        })
    }
}

/// A console error as JSON with its status.
pub struct ApiError(ConsoleError);

impl From<ConsoleError> for ApiError {
    fn from(e: ConsoleError) -> Self {
        ApiError(e)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        ApiError(ConsoleError::Invalid(format!(
            "the body is not the JSON expected: {}",
            e.body_text()
        )))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, description) = console_status(&self.0);
        let error = match status {
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::CONFLICT => "conflict",
            StatusCode::INTERNAL_SERVER_ERROR => "server_error",
            _ => "invalid_request",
        };
        let mut resp = (
            status,
            Json(json!({ "error": error, "error_description": description })),
        )
            .into_response();
        crate::http::oauth::no_store(&mut resp);
        resp
    }
}

fn ok(value: impl serde::Serialize) -> ApiResult {
    let mut resp = Json(value).into_response();
    crate::http::oauth::no_store(&mut resp);
    Ok(resp)
}

#[derive(Deserialize, Default)]
struct Search {
    #[serde(default)]
    q: String,
}

async fn clients(State(state): State<AppState>, api: Api, Query(s): Query<Search>) -> ApiResult {
    ok(json!({ "clients": api.console(&state).clients(&s.q).await? }))
}

async fn client(State(state): State<AppState>, api: Api, Path(id): Path<String>) -> ApiResult {
    ok(api.console(&state).client(&id).await?)
}

async fn create_client(
    State(state): State<AppState>,
    api: Api,
    body: Result<Json<ClientInput>, JsonRejection>,
) -> ApiResult {
    let Json(input) = body?;
    let (mut client, secret) = api.console(&state).create_client(&input).await?;
    client["client_secret"] = secret.map_or(Value::Null, Value::from);
    let mut resp = ok(client)?;
    *resp.status_mut() = StatusCode::CREATED;
    Ok(resp)
}

async fn update_client(
    State(state): State<AppState>,
    api: Api,
    Path(id): Path<String>,
    body: Result<Json<ClientInput>, JsonRejection>,
) -> ApiResult {
    let Json(input) = body?;
    ok(api.console(&state).update_client(&id, &input).await?)
}

async fn rotate_secret(
    State(state): State<AppState>,
    api: Api,
    Path(id): Path<String>,
) -> ApiResult {
    ok(
        json!({ "client_id": id, "client_secret": api.console(&state).rotate_client_secret(&id).await? }),
    )
}

async fn remove_client(
    State(state): State<AppState>,
    api: Api,
    Path(id): Path<String>,
) -> ApiResult {
    api.console(&state).remove_client(&id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn users(State(state): State<AppState>, api: Api) -> ApiResult {
    ok(json!({ "users": api.console(&state).users().await? }))
}

async fn user(State(state): State<AppState>, api: Api, Path(name): Path<String>) -> ApiResult {
    ok(api.console(&state).user(&name).await?)
}

async fn create_user(
    State(state): State<AppState>,
    api: Api,
    body: Result<Json<UserInput>, JsonRejection>,
) -> ApiResult {
    let Json(input) = body?;
    let mut resp = ok(api.console(&state).create_user(&input).await?)?;
    *resp.status_mut() = StatusCode::CREATED;
    Ok(resp)
}

#[derive(Deserialize)]
struct UserChange {
    #[serde(default)]
    roles: String,
    #[serde(default)]
    fhir_user: String,
}

async fn update_user(
    State(state): State<AppState>,
    api: Api,
    Path(name): Path<String>,
    body: Result<Json<UserChange>, JsonRejection>,
) -> ApiResult {
    let Json(change) = body?;
    ok(api
        .console(&state)
        .set_user(&name, &change.roles, &change.fhir_user)
        .await?)
}

#[derive(Deserialize)]
struct Password {
    password: String,
}

async fn reset_password(
    State(state): State<AppState>,
    api: Api,
    Path(name): Path<String>,
    body: Result<Json<Password>, JsonRejection>,
) -> ApiResult {
    let Json(p) = body?;
    api.console(&state)
        .reset_password(&name, &p.password)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn lock(State(state): State<AppState>, api: Api, Path(name): Path<String>) -> ApiResult {
    api.console(&state).set_locked(&name, true).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn unlock(State(state): State<AppState>, api: Api, Path(name): Path<String>) -> ApiResult {
    api.console(&state).set_locked(&name, false).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Removes an account as the Users page does (`hestia user remove`, its sessions ended).
async fn remove_user(
    State(state): State<AppState>,
    api: Api,
    Path(name): Path<String>,
) -> ApiResult {
    api.console(&state).remove_user(&name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Ends one console session of an account (its id as `user.sessions[].id` shows it).
async fn end_session(
    State(state): State<AppState>,
    api: Api,
    Path((name, id)): Path<(String, String)>,
) -> ApiResult {
    api.console(&state).end_session(&name, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn revoke_grant(
    State(state): State<AppState>,
    api: Api,
    Path((name, grant)): Path<(String, String)>,
) -> ApiResult {
    api.console(&state).revoke_grant(&name, &grant).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn registration_tokens(State(state): State<AppState>, api: Api) -> ApiResult {
    ok(json!({ "registration_tokens": api.console(&state).registration_tokens().await? }))
}

#[derive(Deserialize)]
struct NewToken {
    expires_in: i64,
    max_uses: i64,
}

async fn create_registration_token(
    State(state): State<AppState>,
    api: Api,
    body: Result<Json<NewToken>, JsonRejection>,
) -> ApiResult {
    let Json(t) = body?;
    let token = api
        .console(&state)
        .create_registration_token(t.expires_in, t.max_uses)
        .await?;
    let mut resp = ok(json!({
        "initial_access_token": token,
        "expires_in": t.expires_in,
        "max_uses": t.max_uses,
        "registration_endpoint": state.oauth().url(crate::oauth::REGISTER_PATH),
    }))?;
    *resp.status_mut() = StatusCode::CREATED;
    Ok(resp)
}

async fn revoke_registration_token(
    State(state): State<AppState>,
    api: Api,
    Path(id): Path<String>,
) -> ApiResult {
    api.console(&state).revoke_registration_token(&id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn keys(State(state): State<AppState>, api: Api) -> ApiResult {
    ok(json!({ "keys": api.console(&state).keys().await? }))
}

async fn rotate_keys(State(state): State<AppState>, api: Api) -> ApiResult {
    ok(json!({ "rotations": api.console(&state).rotate_keys().await? }))
}

async fn plugins(State(state): State<AppState>, api: Api) -> ApiResult {
    let mut out = plugins_json(&state);
    let views = api.console(&state).plugins();
    if let Some(list) = out["plugins"].as_array_mut() {
        for (p, view) in list.iter_mut().zip(views) {
            p["metrics"] = json!(view.metrics);
            p["output"] = json!(view.output);
        }
    }
    ok(out)
}

/// A token to explain, or (without one) a client, account and scopes.
#[derive(Deserialize)]
struct ExplainBody {
    #[serde(default)]
    token: Option<String>,
    #[serde(flatten)]
    grant: crate::console::GrantQuery,
}

async fn explain(
    State(state): State<AppState>,
    api: Api,
    body: Result<Json<ExplainBody>, JsonRejection>,
) -> ApiResult {
    let Json(b) = body?;
    let console = api.console(&state);
    match b.token {
        Some(token) => ok(console.explain(&token).await),
        None => ok(console.explain_grant(&b.grant).await),
    }
}

async fn activity(
    State(state): State<AppState>,
    api: Api,
    Query(q): Query<ActivityQuery>,
) -> ApiResult {
    ok(json!({ "events": api.console(&state).activity(&q.filter()).await? }))
}
