//! HTTP routes of the authorization server. Handlers turn requests into the plain types of
//! `crate::oauth` and its results into responses; [`OAuthError`] renders as RFC 6749 JSON
//! with `Cache-Control: no-store`, the status of its code and, on 401 and 403,
//! `WWW-Authenticate`.

mod pages;

use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::AppState;
use super::challenge;
use crate::oauth::authorize::{AuthorizeError, ConsentOutcome, LoginOutcome};
use crate::oauth::client_auth::{BasicCredentials, parse_basic};
use crate::oauth::errors::ErrorCode;
use crate::oauth::{self, OAuthError, Params};

/// The cookie that binds an authorization request to the browser that started it.
const BROWSER_COOKIE: &str = "hestia_browser";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/.well-known/openid-configuration", get(metadata))
        .route("/.well-known/oauth-authorization-server", get(metadata))
        .route(oauth::JWKS_PATH, get(jwks))
        .route(
            oauth::AUTHORIZE_PATH,
            get(authorize_get).post(authorize_post),
        )
        .route(oauth::LOGIN_PATH, post(login))
        .route(oauth::CONSENT_PATH, get(consent_get).post(consent_post))
        .route(oauth::TOKEN_PATH, post(token))
        .route(oauth::USERINFO_PATH, get(userinfo).post(userinfo))
        .route(oauth::INTROSPECT_PATH, post(introspect))
        .route(oauth::REVOKE_PATH, post(revoke))
        .route(oauth::REGISTER_PATH, post(register))
        .route(
            &format!("{}/{{client_id}}", oauth::REGISTER_PATH),
            get(registration_read)
                .put(registration_update)
                .delete(registration_delete),
        )
}

pub(super) fn no_store(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// The status of an OAuth error: 401 for a client or token that must authenticate again,
/// 403 for a token without the scope, 500 for the server's own failure, else 400.
fn status_of_code(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidClient | ErrorCode::InvalidToken => StatusCode::UNAUTHORIZED,
        ErrorCode::InsufficientScope => StatusCode::FORBIDDEN,
        ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// The `WWW-Authenticate` challenge of an OAuth error: `Basic` when client authentication
/// failed (token, introspection and revocation endpoints), `Bearer` when a bearer token
/// did (userinfo, registration management).
fn challenge_of(error: &OAuthError) -> Option<HeaderValue> {
    match error.code {
        ErrorCode::InvalidClient => Some(challenge::basic(challenge::REALM)),
        ErrorCode::InvalidToken | ErrorCode::InsufficientScope => Some(challenge::challenge(
            Some(error.code.as_str()),
            &error.description,
        )),
        _ => None,
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let mut resp = (status_of_code(self.code), axum::Json(self.to_json())).into_response();
        no_store(&mut resp);
        if let Some(challenge) = challenge_of(&self) {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        resp
    }
}

fn json_no_store(status: StatusCode, value: serde_json::Value) -> Response {
    let mut resp = (status, axum::Json(value)).into_response();
    no_store(&mut resp);
    resp
}

fn basic_of(headers: &HeaderMap) -> Result<Option<BasicCredentials>, OAuthError> {
    match headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        Some(v) if v.len() > 6 && v[..6].eq_ignore_ascii_case("basic ") => {
            parse_basic(&format!("Basic {}", &v[6..])).map(Some)
        }
        _ => Ok(None),
    }
}

fn bearer_of(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() > 7 && v[..7].eq_ignore_ascii_case("bearer "))
        .map(|v| v[7..].trim())
}

/// The form body of a POST; anything but `application/x-www-form-urlencoded` is refused.
fn form_of(headers: &HeaderMap, body: &Bytes) -> Result<Params, OAuthError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !ct
        .to_ascii_lowercase()
        .starts_with("application/x-www-form-urlencoded")
    {
        return Err(OAuthError::invalid_request(format!(
            "the body must be application/x-www-form-urlencoded, not {:?}",
            if ct.is_empty() {
                "(no Content-Type)"
            } else {
                ct
            }
        )));
    }
    Ok(Params::parse(body))
}

fn browser_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == BROWSER_COOKIE)
        .map(|(_, v)| v.to_string())
}

fn html(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    no_store(&mut resp);
    resp
}

pub(super) fn redirect(location: &str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    no_store(&mut resp);
    resp
}

fn authorize_error(e: AuthorizeError) -> Response {
    match e {
        AuthorizeError::Page(message) => html(StatusCode::BAD_REQUEST, pages::error(&message)),
        AuthorizeError::Redirect(url) => redirect(&url),
    }
}

async fn metadata(State(state): State<AppState>) -> Response {
    axum::Json(state.oauth().metadata()).into_response()
}

async fn jwks(State(state): State<AppState>) -> Response {
    match state.oauth().jwks().await {
        Ok(set) => {
            let mut resp = axum::Json(set).into_response();
            resp.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            );
            resp
        }
        Err(e) => e.into_response(),
    }
}

async fn start_authorize(state: &AppState, params: Params, headers: &HeaderMap) -> Response {
    let browser = browser_cookie(headers);
    match state.oauth().authorize(&params, browser.as_deref()).await {
        Ok(page) => {
            let mut resp = html(StatusCode::OK, pages::login(&page));
            if let Some(value) = &page.set_browser {
                let secure = if state.oauth().issuer().starts_with("https://") {
                    "; Secure"
                } else {
                    ""
                };
                let cookie = format!(
                    "{BROWSER_COOKIE}={value}; Path=/oauth2; HttpOnly; SameSite=Lax; Max-Age=31536000{secure}"
                );
                if let Ok(v) = HeaderValue::from_str(&cookie) {
                    resp.headers_mut().append(header::SET_COOKIE, v);
                }
            }
            resp
        }
        Err(e) => authorize_error(e),
    }
}

async fn authorize_get(State(state): State<AppState>, req: Request) -> Response {
    let params = Params::parse(req.uri().query().unwrap_or_default().as_bytes());
    start_authorize(&state, params, req.headers()).await
}

async fn authorize_post(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match form_of(&headers, &body) {
        Ok(params) => start_authorize(&state, params, &headers).await,
        Err(e) => html(StatusCode::BAD_REQUEST, pages::error(&e.description)),
    }
}

/// The address sign-in limits count: the TCP peer's, unless the peer is a trusted proxy;
/// then `X-Forwarded-For` is read from the right (each proxy appends the address it saw),
/// skipping trusted proxies, and the first address that is not one is the client. An
/// entry that is not an IP address stops the walk at the last address known to be real.
fn client_address(
    peer: std::net::IpAddr,
    headers: &HeaderMap,
    trusted: &[ipnet::IpNet],
) -> std::net::IpAddr {
    let is_trusted = |ip: &std::net::IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let forwarded: Vec<String> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_string())
        .collect();
    let mut client = peer;
    for entry in forwarded.iter().rev() {
        match entry.parse::<std::net::IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(&ip) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
}

/// The address a request's sign-in attempts count against ([`client_address`]).
pub(crate) fn sign_in_address(
    extensions: &axum::http::Extensions,
    headers: &HeaderMap,
    trusted: &[ipnet::IpNet],
) -> String {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| client_address(c.0.ip(), headers, trusted).to_string())
        .unwrap_or_else(|| "unknown".into())
}

async fn login(State(state): State<AppState>, req: Request) -> Response {
    let address = sign_in_address(
        req.extensions(),
        req.headers(),
        &state.settings().oauth.trusted_proxies,
    );
    let headers = req.headers().clone();
    let body = match axum::body::to_bytes(req.into_body(), 64 * 1024).await {
        Ok(b) => b,
        Err(_) => {
            return html(
                StatusCode::BAD_REQUEST,
                pages::error("the form is too large"),
            );
        }
    };
    let form = match form_of(&headers, &body) {
        Ok(f) => f,
        Err(e) => return html(StatusCode::BAD_REQUEST, pages::error(&e.description)),
    };
    let browser = browser_cookie(&headers);
    let outcome = state
        .oauth()
        .login(&form, browser.as_deref(), &address)
        .await;
    audit_login(&state, &form, &address, &outcome).await;
    match outcome {
        Ok(LoginOutcome::Consent(id)) => redirect(&format!(
            "{}?request_id={}",
            oauth::CONSENT_PATH,
            url::form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()
        )),
        Ok(LoginOutcome::Retry(page)) => html(StatusCode::UNAUTHORIZED, pages::login(&page)),
        Err(e) => authorize_error(e),
    }
}

/// A sign-in of the login page, in the audit trail (signin.ok or signin.failed).
async fn audit_login(
    state: &AppState,
    form: &Params,
    address: &str,
    outcome: &Result<LoginOutcome, AuthorizeError>,
) {
    let (action, outcome, detail) = match outcome {
        Ok(LoginOutcome::Consent(_)) => ("signin.ok", "ok", String::new()),
        Ok(LoginOutcome::Retry(page)) => (
            "signin.failed",
            "refused",
            page.error.clone().unwrap_or_default(),
        ),
        Err(_) => return,
    };
    let field = |name| {
        form.get(name)
            .ok()
            .flatten()
            .unwrap_or_default()
            .to_string()
    };
    let event = crate::store::NewAuditEvent {
        actor: field("username"),
        action: action.into(),
        target: format!("authorization of client {}", field("client_id")),
        outcome: outcome.into(),
        detail,
        address: address.into(),
        ..Default::default()
    };
    crate::console::record(state.store(), event).await;
}

/// A refused token request, in the audit trail (token.refused with its cause); an issued
/// token's `token.issued` event is committed with its record (`AuthServer::issue`).
async fn audit_refused_token(
    state: &AppState,
    params: &Params,
    basic: Option<&BasicCredentials>,
    error: &OAuthError,
) {
    let field = |name| {
        params
            .get(name)
            .ok()
            .flatten()
            .unwrap_or_default()
            .to_string()
    };
    let client = basic
        .map(|b| b.client_id.clone())
        .unwrap_or_else(|| field("client_id"));
    let event = crate::store::NewAuditEvent {
        actor: client,
        action: "token.refused".into(),
        target: field("grant_type"),
        outcome: "refused".into(),
        detail: format!("{}: {}", error.code.as_str(), error.description),
        address: String::new(),
        ..Default::default()
    };
    crate::console::record(state.store(), event).await;
}

async fn consent_get(State(state): State<AppState>, req: Request) -> Response {
    let params = Params::parse(req.uri().query().unwrap_or_default().as_bytes());
    let id = match params.require("request_id") {
        Ok(id) => id.to_string(),
        Err(e) => return html(StatusCode::BAD_REQUEST, pages::error(&e.description)),
    };
    let browser = browser_cookie(req.headers());
    let search = params.get("patient_search").ok().flatten();
    match state
        .oauth()
        .consent_page(&id, browser.as_deref(), search)
        .await
    {
        Ok(page) => html(StatusCode::OK, pages::consent(&page)),
        Err(e) => authorize_error(e),
    }
}

async fn consent_post(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let form = match form_of(&headers, &body) {
        Ok(f) => f,
        Err(e) => return html(StatusCode::BAD_REQUEST, pages::error(&e.description)),
    };
    let browser = browser_cookie(&headers);
    match state.oauth().consent(&form, browser.as_deref()).await {
        Ok(ConsentOutcome::Redirect(url)) => redirect(&url),
        Ok(ConsentOutcome::Retry(page)) => html(StatusCode::BAD_REQUEST, pages::consent(&page)),
        Err(e) => authorize_error(e),
    }
}

async fn token(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let params = form_of(&headers, &body)?;
    let basic = basic_of(&headers)?;
    let result = state.oauth().token(&params, basic.as_ref()).await;
    if let Err(error) = &result {
        audit_refused_token(&state, &params, basic.as_ref(), error).await;
    }
    let resp = result?;
    Ok(json_no_store(
        StatusCode::OK,
        serde_json::to_value(resp).map_err(OAuthError::server)?,
    ))
}

async fn userinfo(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, OAuthError> {
    let info = state.oauth().userinfo(bearer_of(&headers)).await?;
    Ok(json_no_store(StatusCode::OK, info))
}

async fn introspect(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let params = form_of(&headers, &body)?;
    let basic = basic_of(&headers)?;
    let out = state.oauth().introspect(&params, basic.as_ref()).await?;
    Ok(json_no_store(StatusCode::OK, out))
}

async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let params = form_of(&headers, &body)?;
    let basic = basic_of(&headers)?;
    state.oauth().revoke(&params, basic.as_ref()).await?;
    let mut resp = StatusCode::OK.into_response();
    no_store(&mut resp);
    Ok(resp)
}

fn json_body(body: &Bytes) -> Result<serde_json::Value, OAuthError> {
    serde_json::from_slice(body).map_err(|e| {
        OAuthError::new(
            oauth::ErrorCode::InvalidClientMetadata,
            format!("the body is not JSON: {e}"),
        )
    })
}

async fn register(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let value = json_body(&body)?;
    let out = state.oauth().register(bearer_of(&headers), &value).await?;
    Ok(json_no_store(StatusCode::CREATED, out))
}

async fn registration_read(
    State(state): State<AppState>,
    Path(client_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, OAuthError> {
    let out = state
        .oauth()
        .registration_read(&client_id, bearer_of(&headers))
        .await?;
    Ok(json_no_store(StatusCode::OK, out))
}

async fn registration_update(
    State(state): State<AppState>,
    Path(client_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let value = json_body(&body)?;
    let out = state
        .oauth()
        .registration_update(&client_id, bearer_of(&headers), &value)
        .await?;
    Ok(json_no_store(StatusCode::OK, out))
}

async fn registration_delete(
    State(state): State<AppState>,
    Path(client_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, OAuthError> {
    state
        .oauth()
        .registration_delete(&client_id, bearer_of(&headers))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        // Not a trusted proxy: its header is ignored.
        assert_eq!(
            client_address(ip("203.0.113.9"), &xff(&["198.51.100.1"]), &trusted),
            ip("203.0.113.9")
        );
        // A trusted proxy: the rightmost address that is not a trusted proxy.
        assert_eq!(
            client_address(
                ip("10.0.0.2"),
                &xff(&["6.6.6.6, 198.51.100.1", "10.0.0.7"]),
                &trusted
            ),
            ip("198.51.100.1")
        );
        // Garbage stops the walk at the last real address.
        assert_eq!(
            client_address(ip("10.0.0.2"), &xff(&["nonsense, 10.0.0.3"]), &trusted),
            ip("10.0.0.3")
        );
        // No header: the proxy itself.
        assert_eq!(
            client_address(ip("10.0.0.2"), &HeaderMap::new(), &trusted),
            ip("10.0.0.2")
        );
    }
}
