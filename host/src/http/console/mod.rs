//! The admin console at `/admin/`: server-rendered pages (`pages.rs`, `system_pages.rs`)
//! and the JSON API under `/admin/api/` (`api.rs`), both over `crate::console`.
//!
//! Pages take a console session: a random token in the `hestia_admin` cookie (HttpOnly,
//! SameSite=Strict, Secure on HTTPS, Path=/admin), its SHA-256 in `admin_sessions`, a new
//! one at every sign-in (a token planted before sign-in never becomes a session), over
//! after `admin.session_idle_secs` without a request. Every form carries the session's
//! CSRF token; the sign-in form carries the value of a cookie set with it. The API takes
//! a session (with the CSRF token in `X-CSRF-Token` for changes) or a `hestia:admin` token.

mod api;
mod pages;
mod render;
mod system_pages;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use minijinja::context;
use serde::de::DeserializeOwned;

use super::AppState;
use crate::console::{Actor, Console, ConsoleError};
use crate::store::{AdminSession, NewAuditEvent, constant_time_eq, hash_secret};

/// The session cookie.
const SESSION_COOKIE: &str = "hestia_admin";
/// The sign-in form's CSRF cookie (before there is a session).
const SIGNIN_COOKIE: &str = "hestia_admin_signin";
/// The header that carries a session's CSRF token to the API.
const CSRF_HEADER: &str = "x-csrf-token";
/// The role an account needs.
pub const ADMIN_ROLE: &str = "admin";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/admin/static/console.css",
            get(|| async { render::asset("text/css; charset=utf-8", render::STYLE) }),
        )
        .route(
            "/admin/static/console.js",
            get(|| async { render::asset("text/javascript; charset=utf-8", render::SCRIPT) }),
        )
        .merge(pages::routes())
        .merge(system_pages::routes())
        .merge(api::routes())
}

/// The plugins page, for `GET /admin/plugins` from a browser with a console session
/// (the same path answers JSON to a bearer token).
pub async fn plugins_page(state: AppState, parts: &mut Parts) -> Response {
    match SignedIn::from_request_parts(parts, &state).await {
        Ok(admin) => system_pages::plugins(State(state), admin).await,
        Err(resp) => resp,
    }
}

/// Whether a request carries a console session cookie.
pub fn has_session_cookie(headers: &HeaderMap) -> bool {
    cookie(headers, SESSION_COOKIE).is_some()
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// A `Set-Cookie` value for the console's path; an empty value expires the cookie.
fn set_cookie(state: &AppState, name: &str, value: &str) -> HeaderValue {
    let secure = if state.settings().public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let expiry = if value.is_empty() { "; Max-Age=0" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/admin; HttpOnly; SameSite=Strict{secure}{expiry}"
    ))
    .expect("cookie text is ASCII")
}

fn address_of(state: &AppState, parts: &Parts) -> String {
    super::oauth::sign_in_address(
        &parts.extensions,
        &parts.headers,
        &state.settings().oauth.trusted_proxies,
    )
}

fn console(state: &AppState, actor: Actor) -> Console<'_> {
    Console {
        store: state.store(),
        oauth: state.oauth(),
        plugins: state.plugins(),
        gate: state.gate(),
        actor,
    }
}

/// The live session named by the request's cookie, if the account still may use the
/// console (admin role, not locked); one that may not is ended.
async fn live_session(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<(AdminSession, String)>, ConsoleError> {
    let Some(token) = cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    let hash = hash_secret(&token);
    let now = state.oauth().now();
    let idle = state.settings().admin.session_idle.as_secs() as i64;
    let store = state.store();
    let Some(session) = store.touch_admin_session(&hash, now - idle, now).await? else {
        return Ok(None);
    };
    let roles = store.user_roles(&session.user_id).await?;
    if !roles.iter().any(|r| r == ADMIN_ROLE) || store.user_locked(&session.user_id).await? {
        store.delete_admin_session(&hash).await?;
        return Ok(None);
    }
    Ok(Some((session, hash)))
}

/// The address a request's sign-in attempts count against.
pub struct Address(pub String);

impl FromRequestParts<AppState> for Address {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Address(address_of(state, parts)))
    }
}

/// An administrator signed in to the console (pages): without a session, the request is
/// sent to the sign-in page.
pub struct SignedIn {
    pub session: AdminSession,
    pub token_hash: String,
    pub address: String,
}

impl SignedIn {
    fn console<'a>(&self, state: &'a AppState) -> Console<'a> {
        console(
            state,
            Actor {
                name: self.session.username.clone(),
                address: self.address.clone(),
            },
        )
    }

    /// What every page's template needs: the title, the nav section and the session.
    fn context(&self, title: &str, section: &str) -> minijinja::Value {
        context! {
            title => title,
            section => section,
            session => context! { username => self.session.username.clone(), csrf => self.session.csrf.clone() },
        }
    }

    /// The form of a POST, after its CSRF token is checked against the session's.
    fn form<T: DeserializeOwned>(&self, headers: &HeaderMap, body: &Bytes) -> Result<T, PageError> {
        let fields: Vec<(String, String)> = form_fields(headers, body)?;
        let given = fields
            .iter()
            .find(|(k, _)| k == "csrf")
            .map(|(_, v)| v.as_str())
            .unwrap_or_default();
        if !constant_time_eq(given.as_bytes(), self.session.csrf.as_bytes()) {
            return Err(PageError::Csrf);
        }
        serde_urlencoded::from_bytes(body).map_err(|e| {
            PageError::Console(ConsoleError::Invalid(format!(
                "the form is incomplete: {e}"
            )))
        })
    }
}

fn form_fields(headers: &HeaderMap, body: &Bytes) -> Result<Vec<(String, String)>, PageError> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Err(PageError::Console(ConsoleError::Invalid(
            "a console form is sent as application/x-www-form-urlencoded".into(),
        )));
    }
    serde_urlencoded::from_bytes(body).map_err(|e| {
        PageError::Console(ConsoleError::Invalid(format!(
            "the form cannot be read: {e}"
        )))
    })
}

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        match live_session(state, &parts.headers).await {
            Ok(Some((session, token_hash))) => Ok(SignedIn {
                session,
                token_hash,
                address: address_of(state, parts),
            }),
            Ok(None) => Err(super::oauth::redirect("/admin/")),
            Err(e) => Err(PageError::Console(e).into_response()),
        }
    }
}

/// Why a page refused or failed; rendered as a page that says so.
pub enum PageError {
    Console(ConsoleError),
    /// The form's CSRF token is not the session's (or the sign-in cookie's).
    Csrf,
}

impl From<ConsoleError> for PageError {
    fn from(e: ConsoleError) -> Self {
        PageError::Console(e)
    }
}

impl From<crate::store::StoreError> for PageError {
    fn from(e: crate::store::StoreError) -> Self {
        PageError::Console(e.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, heading, message) = match self {
            PageError::Csrf => (
                StatusCode::FORBIDDEN,
                "Form refused",
                "This form did not come from your console session (its CSRF token does not match): nothing was changed. Reload the page and try again.".to_string(),
            ),
            PageError::Console(e) => {
                let (status, message) = console_status(&e);
                (status, "Not done", message)
            }
        };
        render::page(
            status,
            "message.html",
            context! { title => heading, heading => heading, message => message },
        )
    }
}

/// The status and the sentence of a console error; an internal cause is logged, not shown.
fn console_status(e: &ConsoleError) -> (StatusCode, String) {
    match e {
        ConsoleError::Invalid(m) => (StatusCode::BAD_REQUEST, m.clone()),
        ConsoleError::NotFound(_) => (StatusCode::NOT_FOUND, e.to_string()),
        ConsoleError::Conflict(_) => (StatusCode::CONFLICT, e.to_string()),
        ConsoleError::Internal(cause) => {
            tracing::error!(%cause, "an admin console request failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the server could not do this; its log has the cause under this request's x-request-id".into(),
            )
        }
    }
}

/// Records an event that has no console actor yet (sign-ins).
async fn audit(state: &AppState, event: NewAuditEvent) {
    crate::console::record(state.store(), event).await;
}
