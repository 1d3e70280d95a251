//! Console pages about the server: registration tokens, signing keys, plugins, Explain
//! and Activity.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use minijinja::context;
use serde::Deserialize;

use super::render::{page, ser};
use super::{PageError, SignedIn};
use crate::console::{ExplainReport, GrantQuery};
use crate::oauth::tokens::utc;
use crate::store::AuditFilter;

type AppState = crate::http::AppState;
type PageResult = Result<Response, PageError>;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/admin/registration-tokens",
            get(registration_tokens).post(create_registration_token),
        )
        .route(
            "/admin/registration-tokens/{id}/revoke",
            post(revoke_registration_token),
        )
        .route("/admin/keys", get(keys))
        .route("/admin/keys/rotate", post(rotate_keys))
        .route("/admin/explain", get(explain).post(explain_token))
        .route("/admin/activity", get(activity))
}

#[derive(Deserialize)]
struct Empty {}

async fn registration_tokens(State(state): State<AppState>, admin: SignedIn) -> PageResult {
    tokens_page(&state, &admin, None, None).await
}

async fn tokens_page(
    state: &AppState,
    admin: &SignedIn,
    token: Option<String>,
    notice: Option<&str>,
) -> PageResult {
    let rows: Vec<_> = admin
        .console(state)
        .registration_tokens()
        .await?
        .into_iter()
        .map(|t| context! { id => t.id, created => utc(t.created_at), expires => utc(t.expires_at), uses_left => t.uses_left })
        .collect();
    let ctx = context! {
        tokens => rows,
        token => token,
        notice => notice,
        endpoint => state.oauth().url(crate::oauth::REGISTER_PATH),
        ..admin.context("Registration tokens", "Registration tokens")
    };
    Ok(page(StatusCode::OK, "registration_tokens.html", ctx))
}

#[derive(Deserialize)]
struct TokenForm {
    expires_in: i64,
    max_uses: i64,
}

async fn create_registration_token(
    State(state): State<AppState>,
    admin: SignedIn,
    headers: HeaderMap,
    body: Bytes,
) -> PageResult {
    let form: TokenForm = admin.form(&headers, &body)?;
    let token = admin
        .console(&state)
        .create_registration_token(form.expires_in, form.max_uses)
        .await?;
    tokens_page(&state, &admin, Some(token), None).await
}

async fn revoke_registration_token(
    State(state): State<AppState>,
    admin: SignedIn,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> PageResult {
    let _: Empty = admin.form(&headers, &body)?;
    admin.console(&state).revoke_registration_token(&id).await?;
    tokens_page(&state, &admin, None, Some("The token is revoked.")).await
}

async fn keys(State(state): State<AppState>, admin: SignedIn) -> PageResult {
    keys_page(&state, &admin, None).await
}

async fn keys_page(state: &AppState, admin: &SignedIn, notice: Option<String>) -> PageResult {
    let rows: Vec<_> = admin
        .console(state)
        .keys()
        .await?
        .iter()
        .map(|k| {
            let time = |f: &str| k[f].as_i64().map(utc);
            context! { kid => k["kid"].as_str(), alg => k["alg"].as_str(), state => k["state"].as_str(), created => time("created_at"), signs_from => time("sign_from"), retires => time("retire_after") }
        })
        .collect();
    let ctx = context! {
        keys => rows,
        overlap => state.settings().oauth.key_rotation_overlap.as_secs(),
        notice => notice,
        ..admin.context("Signing keys", "Signing keys")
    };
    Ok(page(StatusCode::OK, "keys.html", ctx))
}

async fn rotate_keys(
    State(state): State<AppState>,
    admin: SignedIn,
    headers: HeaderMap,
    body: Bytes,
) -> PageResult {
    let _: Empty = admin.form(&headers, &body)?;
    let rotations = admin.console(&state).rotate_keys().await?;
    let kids: Vec<&str> = rotations.iter().filter_map(|r| r["kid"].as_str()).collect();
    let notice = format!(
        "New keys {} published; they sign from {}, and the old keys retire at {}.",
        kids.join(", "),
        rotations
            .first()
            .and_then(|r| r["signs_from"].as_i64())
            .map(utc)
            .unwrap_or_default(),
        rotations
            .first()
            .and_then(|r| r["previous_keys_retire_at"].as_i64())
            .map(utc)
            .unwrap_or_default(),
    );
    keys_page(&state, &admin, Some(notice)).await
}

pub async fn plugins(State(state): State<AppState>, admin: SignedIn) -> Response {
    let list = admin.console(&state).plugins();
    let ctx = context! { plugins => ser(&list), ..admin.context("Plugins", "Plugins") };
    page(StatusCode::OK, "plugins.html", ctx)
}

async fn explain_page(
    state: &AppState,
    admin: &SignedIn,
    token: &str,
    grant: &GrantQuery,
    report: Option<ExplainReport>,
) -> PageResult {
    let console = admin.console(state);
    let clients: Vec<_> = console
        .clients("")
        .await?
        .into_iter()
        .map(|c| c["client_id"].as_str().unwrap_or_default().to_string())
        .collect();
    let users: Vec<_> = console
        .users()
        .await?
        .into_iter()
        .map(|u| u.username)
        .collect();
    let ctx = context! {
        token => token, report => ser(&report), grant => ser(grant),
        clients => clients, users => users,
        ..admin.context("Explain", "Explain")
    };
    Ok(page(StatusCode::OK, "explain.html", ctx))
}

/// With a client in the query (the picking form, a link from Activity), the explanation
/// of what a token of that client, account and scopes would reach; a read, so a GET.
async fn explain(
    State(state): State<AppState>,
    admin: SignedIn,
    Query(grant): Query<GrantQuery>,
) -> PageResult {
    let report = if grant.client_id.trim().is_empty() {
        None
    } else {
        Some(admin.console(&state).explain_grant(&grant).await)
    };
    explain_page(&state, &admin, "", &grant, report).await
}

#[derive(Deserialize)]
struct ExplainForm {
    token: String,
}

/// POST, so that the token travels in the body, never in a URL or a log line.
async fn explain_token(
    State(state): State<AppState>,
    admin: SignedIn,
    headers: HeaderMap,
    body: Bytes,
) -> PageResult {
    let form: ExplainForm = admin.form(&headers, &body)?;
    let report = admin.console(&state).explain(&form.token).await;
    explain_page(
        &state,
        &admin,
        &form.token,
        &GrantQuery::default(),
        Some(report),
    )
    .await
}

#[derive(Deserialize, Default)]
pub(super) struct ActivityQuery {
    #[serde(default)]
    pub action: String,
    #[serde(default)]
    pub q: String,
    #[serde(default)]
    pub outcome: String,
    #[serde(default)]
    pub limit: Option<i64>,
}

impl ActivityQuery {
    pub(super) fn filter(&self) -> AuditFilter {
        let some = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
        AuditFilter {
            action: some(&self.action),
            text: some(&self.q),
            outcome: some(&self.outcome),
            limit: self.limit.unwrap_or(200),
        }
    }
}

async fn activity(
    State(state): State<AppState>,
    admin: SignedIn,
    Query(query): Query<ActivityQuery>,
) -> PageResult {
    let events: Vec<_> = admin
        .console(&state)
        .activity(&query.filter())
        .await?
        .into_iter()
        .map(|e| {
            let explain = GrantQuery::of_refusal(&e)
                .and_then(|q| serde_urlencoded::to_string(&q).ok())
                .map(|q| format!("/admin/explain?{q}"));
            context! { when => utc(e.at), actor => e.actor, action => e.action, target => e.target, outcome => e.outcome, detail => e.detail, address => e.address, explain => explain }
        })
        .collect();
    let ctx = context! { events => events, action => query.action, q => query.q, ..admin.context("Activity", "Activity") };
    Ok(page(StatusCode::OK, "activity.html", ctx))
}
