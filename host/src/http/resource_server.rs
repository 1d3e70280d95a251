//! The resource server's HTTP side: finds the credentials (a token in the header, the
//! query or a form body; Basic in the compatibility mode) and the route a request matched,
//! asks the [`Gate`](crate::gate::Gate), and turns a [`Refusal`] into a 401/403 that names
//! its cause in `WWW-Authenticate` and an OperationOutcome. An admitted request continues
//! with its [`Access`] (and its [`Caller`], for Bundle entries) in the request's extensions.

use axum::body::Body;
use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header, request::Parts};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;

use super::AppState;
use super::challenge::challenge;
use super::fhir::{FhirResponseError, fhir_json};
use super::statuses::refusal_status;
use crate::fhir::access::Access;
use crate::fhir::error::FhirError;
use crate::fhir::outcome::{Issue, operation_outcome};
use crate::gate::{Basic, Refusal, Route, classify_route};

/// A refusal of the gate as the FHIR client sees it: an OperationOutcome, and for 401 and
/// 403 a `Bearer` challenge with the same words.
pub(crate) fn refusal_response(refusal: Refusal) -> Response {
    let (status, error) = refusal_status(&refusal);
    let code = match &refusal {
        Refusal::Malformed(_) | Refusal::Unauthenticated { .. } => "login",
        Refusal::Forbidden(_) => "forbidden",
        Refusal::Throttled(_) => "throttled",
        Refusal::Unavailable(_) => "transient",
    };
    let description = refusal.description();
    let mut response = fhir_json(
        status,
        &operation_outcome(&[Issue::error(code, description.to_string())]),
        false,
    );
    if !matches!(
        status,
        StatusCode::BAD_REQUEST | StatusCode::SERVICE_UNAVAILABLE
    ) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, challenge(error, description));
    }
    response
}

/// Where the token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Header,
    Query,
    Form,
}

/// Removes `access_token` from a query string, keeping everything else as sent.
fn strip_access_token(query: &str) -> (Option<String>, String) {
    let mut token = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            if let Some(value) = pair.strip_prefix("access_token=") {
                token = Some(percent_decode(value));
                false
            } else {
                !pair.is_empty()
            }
        })
        .collect();
    (token, kept.join("&"))
}

fn percent_decode(text: &str) -> String {
    serde_urlencoded::from_str::<Vec<(String, String)>>(&format!("v={text}"))
        .ok()
        .and_then(|v| v.into_iter().next())
        .map(|(_, v)| v)
        .unwrap_or_default()
}

/// The middleware in front of every FHIR route (a route layer: it runs once the router
/// has matched, and classifies the request by the route it matched).
pub async fn authorize(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let target = format!("{} {}", request.method(), request.uri().path());
    let address = super::oauth::sign_in_address(
        request.extensions(),
        request.headers(),
        &state.settings().oauth.trusted_proxies,
    );
    match authorize_inner(&state, request).await {
        Ok(request) => next.run(request).await,
        Err(Rejection::Refused(refusal, context)) => {
            audit_refusal(&state, (target, address), &refusal, context);
            refusal_response(refusal)
        }
        Err(Rejection::Fhir(err)) => FhirResponseError(err).into_response(),
    }
}

/// A 401 or 403 of the gate, in the audit trail with its cause and the caller's address
/// (one insert, off the request's path and bounded; a refusal for a busy database or a
/// sign-in limit is not recorded). A 403's actor is the verified token's account and
/// client; a 401 has none ("-"): its token, if any, was not accepted.
fn audit_refusal(
    state: &AppState,
    (target, address): (String, String),
    refusal: &Refusal,
    context: String,
) {
    if !matches!(
        refusal,
        Refusal::Unauthenticated { .. } | Refusal::Forbidden(_)
    ) {
        return;
    }
    let status = refusal_status(refusal).0;
    let event = crate::store::NewAuditEvent {
        actor: refusal_actor(&context),
        action: "fhir.refused".into(),
        target,
        outcome: "refused".into(),
        detail: format!("{}: {}", status.as_str(), refusal.description()),
        address,
        context,
    };
    crate::console::record_detached(state.store(), event);
}

/// Who a refused request came from, from its [`refusal_context`]: "amy (client app)",
/// "client svc" for a token without an account, "-" without a verified token.
fn refusal_actor(context: &str) -> String {
    let Ok(context) = serde_json::from_str::<serde_json::Value>(context) else {
        return "-".into();
    };
    let text = |key: &str| context[key].as_str().unwrap_or_default().to_string();
    match (text("user"), text("client_id")) {
        (_, client) if client.is_empty() => "-".into(),
        (user, client) if user.is_empty() => format!("client {client}"),
        (user, client) => format!("{user} (client {client})"),
    }
}

/// What the console's Explain needs to explain a 403 again: the token's client, account
/// and scopes (the token was verified before the refusal, so its payload is its own) and
/// the request's type and interaction, as JSON.
fn refusal_context(
    token: &str,
    (resource_type, interaction): (Option<String>, crate::plugins::Interaction),
) -> String {
    let Some(claims) = crate::oauth::tokens::unverified_part(token, 1) else {
        return String::new();
    };
    let text = |key: &str| claims[key].as_str().unwrap_or_default().to_string();
    let (client_id, sub) = (text("client_id"), text("sub"));
    serde_json::json!({
        "client_id": client_id,
        "user": if sub == client_id { String::new() } else { sub },
        "scope": text("scope"),
        "type": resource_type.unwrap_or_default(),
        "interaction": format!("{interaction:?}"),
    })
    .to_string()
}

enum Rejection {
    /// A refusal, with the context of a 403 (see [`refusal_context`]; empty otherwise).
    Refused(Refusal, String),
    Fhir(FhirError),
}

impl From<Refusal> for Rejection {
    fn from(refusal: Refusal) -> Self {
        Rejection::Refused(refusal, String::new())
    }
}

async fn authorize_inner(state: &AppState, request: Request) -> Result<Request, Rejection> {
    let (mut parts, body) = request.into_parts();
    let params = matched_params(&mut parts).await;
    let matched = parts
        .extensions
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    let route = route_of(&matched, &state.settings().fhir.base_path, &params);
    if route.is_public(parts.method.as_str()) {
        return Ok(Request::from_parts(parts, body));
    }
    let (token, basic, body) = credentials(state, &mut parts, body).await?;
    let query: Vec<(String, String)> = parts
        .uri
        .query()
        .map(|q| serde_urlencoded::from_str(q).unwrap_or_default())
        .unwrap_or_default();
    let gate = state.gate();
    if route.decided_by_handler() {
        let caller = gate.admit_caller(&token, basic).await?;
        parts.extensions.insert(caller);
        return Ok(Request::from_parts(parts, body));
    }
    let request = classify_route(parts.method.as_str(), &route, &query, gate.base_url());
    // The request moves into the gate; what a refusal's context names of it is kept.
    let asked = (request.resource_type.clone(), request.interaction);
    let admitted = match gate.admit(&token, basic, request).await {
        Ok(admitted) => admitted,
        Err(refusal @ Refusal::Forbidden(_)) => {
            let context = refusal_context(&token, asked);
            return Err(Rejection::Refused(refusal, context));
        }
        Err(refusal) => return Err(refusal.into()),
    };
    // A write under a restricted access keeps within it: its content is read here.
    let (content, body) = if admitted.access.is_unrestricted() {
        (None, body)
    } else {
        write_content(state, &admitted.request, body).await?
    };
    gate.check_write(&admitted, content.as_ref(), state.fhir())
        .await?;
    // An Access already present (set by an embedding program's own layer) still holds.
    let access = match parts.extensions.remove::<Access>() {
        Some(outer) => outer.and(admitted.access),
        None => admitted.access,
    };
    parts.extensions.insert(access);
    parts.extensions.insert(admitted.caller);
    Ok(Request::from_parts(parts, body))
}

/// The values of the matched route's parameters (`{type}`, `{id}`, …), decoded.
async fn matched_params(parts: &mut Parts) -> Vec<(String, String)> {
    use axum::extract::FromRequestParts;
    match RawPathParams::from_request_parts(parts, &()).await {
        Ok(params) => params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The route the router matched, below the FHIR base.
fn route_of<'a>(matched: &'a str, base_path: &str, params: &'a [(String, String)]) -> Route<'a> {
    let template = matched.strip_prefix(base_path).unwrap_or(matched);
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    Route {
        template: if template.is_empty() { "/" } else { template },
        resource_type: param("type"),
        id: param("id"),
        operation: param("operation"),
    }
}

/// The body of a create or update, parsed, for the gate's write check; the body is kept.
async fn write_content(
    state: &AppState,
    request: &crate::plugins::FhirRequest,
    body: Body,
) -> Result<(Option<serde_json::Value>, Body), Rejection> {
    use crate::plugins::Interaction;
    if !matches!(
        request.interaction,
        Interaction::Create | Interaction::Update
    ) {
        return Ok((None, body));
    }
    let bytes = axum::body::to_bytes(body, state.settings().fhir.max_body_bytes)
        .await
        .map_err(|e| {
            Rejection::Fhir(FhirError::PayloadTooLarge(format!(
                "the body cannot be read: {e}"
            )))
        })?;
    let parsed = serde_json::from_slice::<serde_json::Value>(&bytes).ok();
    Ok((parsed, Body::from(bytes)))
}

/// The credentials of a request: the access token, sent exactly one way (header, query
/// when allowed, or form body; RFC 6750 §2), which is removed from the query or body the
/// handlers see; and Basic credentials, when sent.
async fn credentials(
    state: &AppState,
    parts: &mut Parts,
    body: Body,
) -> Result<(String, Option<Basic>, Body), Rejection> {
    let settings = state.settings();
    let mut found: Vec<(Source, String)> = Vec::new();
    let mut basic = None;
    if let Some(auth) = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let (scheme, rest) = auth.split_once(' ').unwrap_or((auth, ""));
        if scheme.eq_ignore_ascii_case("bearer") {
            found.push((Source::Header, rest.trim().to_string()));
        } else if scheme.eq_ignore_ascii_case("basic") {
            let address = super::oauth::sign_in_address(
                &parts.extensions,
                &parts.headers,
                &settings.oauth.trusted_proxies,
            );
            basic = Some(decode_basic(rest, address)?);
        } else {
            return Err(Refusal::invalid_request(format!(
                "the Authorization scheme {scheme:?} is not supported; send Authorization: Bearer <access token>"
            ))
            .into());
        }
    }
    if let Some(query) = parts.uri.query().map(str::to_string) {
        let (token, rest) = strip_access_token(&query);
        if let Some(token) = token {
            if !settings.fhir.access_token_in_query {
                return Err(Refusal::invalid_request(
                    "this server does not accept access_token in the query (fhir.access_token_in_query = false); send Authorization: Bearer",
                )
                .into());
            }
            found.push((Source::Query, token));
            let path = parts.uri.path();
            let path_and_query = if rest.is_empty() {
                path.to_string()
            } else {
                format!("{path}?{rest}")
            };
            parts.uri = Uri::builder()
                .path_and_query(path_and_query)
                .build()
                .map_err(|e| Refusal::invalid_request(format!("bad request URI: {e}")))?;
        }
    }
    let body = form_token(state, parts, body, &mut found).await?;
    let token = match found.as_slice() {
        [] => {
            return Err(Refusal::Unauthenticated {
                error: None,
                description: if basic.is_some() {
                    "HTTP Basic credentials alone are not enough: an access token is required (Authorization: Bearer, or the access_token query parameter)".to_string()
                } else {
                    "no access token: send Authorization: Bearer <token> (or the access_token query parameter)".to_string()
                },
            }
            .into());
        }
        [(_, token)] => token.clone(),
        _ => {
            return Err(Refusal::Malformed(
                "the access token was sent in more than one way (RFC 6750 §2): use exactly one of the Authorization header, the query or the form body".into(),
            )
            .into());
        }
    };
    Ok((token, basic, body))
}

fn decode_basic(encoded: &str, address: String) -> Result<Basic, Refusal> {
    base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            s.split_once(':').map(|(u, p)| Basic {
                user: u.to_string(),
                password: p.to_string(),
                address,
            })
        })
        .ok_or_else(|| {
            Refusal::invalid_request("the Basic credentials are not base64 of user:password")
        })
}

/// A token in a POSTed form body (RFC 6750 §2.2), taken out of the body.
async fn form_token(
    state: &AppState,
    parts: &mut Parts,
    body: Body,
    found: &mut Vec<(Source, String)>,
) -> Result<Body, Rejection> {
    let is_form = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    if !(is_form && parts.method == Method::POST) {
        return Ok(body);
    }
    let bytes = axum::body::to_bytes(body, state.settings().fhir.max_body_bytes)
        .await
        .map_err(|e| {
            Rejection::Fhir(FhirError::PayloadTooLarge(format!(
                "the form body cannot be read: {e}"
            )))
        })?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (token, rest) = strip_access_token(&text);
    if let Some(token) = token {
        found.push((Source::Form, token));
    }
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(rest.len()));
    Ok(Body::from(rest))
}
