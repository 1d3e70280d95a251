//! The resource server: every FHIR request (but the public discovery documents) needs a
//! verified access token whose audiences the audience-rule plugins accept, and a decision
//! of the scope-policy plugins. A denial is a 401 or 403 that names its cause in
//! `WWW-Authenticate` and in an OperationOutcome; an allowed request continues with its
//! [`Access`] (and the token's claims, for Bundle entries) in the request's extensions.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;

use super::AppState;
use super::fhir::{FhirResponseError, fhir_json};
use crate::fhir::access::{Access, AccessConstraint};
use crate::fhir::definitions::ResourceType;
use crate::fhir::outcome::{Issue, operation_outcome};
use crate::fhir::repository::FhirError;
use crate::fhir::searchset::Via;
use crate::oauth::tokens::{AccessClaims, TokenError};
use crate::plugins::{Claims, Constraint, Decision, FhirRequest, Interaction, PluginHost};

/// The caller of an authorized request: what Bundle entries are authorized against.
#[derive(Clone)]
pub struct Caller {
    pub claims: Claims,
    pub plugins: Arc<PluginHost>,
    pub base_url: String,
}

impl Caller {
    /// The plugins' decision on one request of this caller, as an [`Access`] or a 403.
    pub fn decide(&self, request: &FhirRequest) -> Result<Access, FhirError> {
        match self.plugins.authorize(request, &self.claims) {
            Decision::Allow => Ok(Access::Unrestricted),
            Decision::AllowWithin(constraints) => constraints
                .into_iter()
                .map(|c| match c {
                    Constraint::PatientCompartment(id) => Ok(AccessConstraint::PatientCompartment(id)),
                    Constraint::Search(s) => ResourceType::parse(&s.resource_type)
                        .map(|resource_type| AccessConstraint::Search {
                            resource_type,
                            params: s.parameters,
                        })
                        .ok_or_else(|| {
                            FhirError::Forbidden(format!(
                                "a plugin constrained access to the unknown resource type {:?}; refusing",
                                s.resource_type
                            ))
                        }),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Access::Within),
            Decision::Deny(denial) => Err(FhirError::Forbidden(denial.to_string())),
        }
    }

    /// What a search of `resource_type` would be allowed.
    pub fn search_access(&self, resource_type: ResourceType) -> Result<Access, FhirError> {
        self.decide(&classify(
            &Method::GET,
            &format!("/{resource_type}"),
            &[],
            &self.base_url,
        ))
    }

    /// What a read of a resource of `resource_type` (any id) would be allowed.
    pub fn read_access(&self, resource_type: ResourceType) -> Result<Access, FhirError> {
        let mut request = classify(
            &Method::GET,
            &format!("/{resource_type}"),
            &[],
            &self.base_url,
        );
        request.interaction = Interaction::Read;
        self.decide(&request)
    }

    /// How far a request of this caller may reach into resources of `resource_type`
    /// besides the ones it names: a search of the type for chain targets, `_has` sources
    /// and `_revinclude`; for `_include` (following a reference) a read, or else a search
    /// (`Type?_id=` would show the resource just the same).
    pub fn type_access(&self, resource_type: ResourceType, via: Via) -> Result<Access, FhirError> {
        match via {
            Via::Search => self.search_access(resource_type),
            Via::Reference => match self.read_access(resource_type) {
                Err(FhirError::Forbidden(_)) => self.search_access(resource_type),
                read => read,
            },
        }
    }
}

/// Why a request was not authenticated: 401 with `WWW-Authenticate`, or 400 for a
/// malformed request (RFC 6750 §3.1).
struct AuthFailure {
    status: StatusCode,
    error: Option<&'static str>,
    description: String,
}

impl AuthFailure {
    fn unauthorized(error: Option<&'static str>, description: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            error,
            description: description.into(),
        }
    }

    fn forbidden(description: impl Into<String>) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            error: Some("insufficient_scope"),
            description: description.into(),
        }
    }
}

/// The `WWW-Authenticate` challenge; quotes and backslashes are escaped (RFC 7235 quoted-string).
pub(crate) fn challenge(error: Option<&str>, description: &str) -> HeaderValue {
    let quote = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let mut value = String::from("Bearer realm=\"hestia\"");
    if let Some(error) = error {
        value.push_str(&format!(", error=\"{error}\""));
    }
    let ascii: String = description
        .chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() {
                c
            } else {
                '?'
            }
        })
        .collect();
    value.push_str(&format!(", error_description=\"{}\"", quote(&ascii)));
    HeaderValue::from_str(&value)
        .unwrap_or_else(|_| HeaderValue::from_static("Bearer realm=\"hestia\""))
}

impl IntoResponse for AuthFailure {
    fn into_response(self) -> Response {
        let code = if self.status == StatusCode::FORBIDDEN {
            "forbidden"
        } else {
            "login"
        };
        let mut response = fhir_json(
            self.status,
            &operation_outcome(&[Issue::error(code, self.description.clone())]),
            false,
        );
        if self.status != StatusCode::BAD_REQUEST {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                challenge(self.error, &self.description),
            );
        }
        response
    }
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

/// The interaction a request is, from its method and path below the FHIR base.
pub fn classify(
    method: &Method,
    path: &str,
    query: &[(String, String)],
    base_url: &str,
) -> FhirRequest {
    let segments: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let op = |s: &str| s.strip_prefix('$').map(str::to_string);
    let (interaction, resource_type, id, operation) = match (method.as_str(), segments.as_slice()) {
        (_, [o]) if o.starts_with('$') => (Interaction::Operation, None, None, op(o)),
        (_, [t, o]) if o.starts_with('$') => (Interaction::Operation, Some(*t), None, op(o)),
        (_, [t, i, o]) if o.starts_with('$') => (Interaction::Operation, Some(*t), Some(*i), op(o)),
        ("GET", []) => (Interaction::SearchSystem, None, None, None),
        ("POST", []) => (Interaction::Batch, None, None, None),
        ("GET", ["metadata"]) => (Interaction::Capabilities, None, None, None),
        ("GET", ["_history"]) => (Interaction::HistorySystem, None, None, None),
        ("POST", ["_search"]) => (Interaction::SearchSystem, None, None, None),
        ("GET", [t]) => (Interaction::SearchType, Some(*t), None, None),
        ("POST", [t]) => (Interaction::Create, Some(*t), None, None),
        ("PUT", [t]) => (Interaction::Update, Some(*t), None, None),
        ("PATCH", [t]) => (Interaction::Patch, Some(*t), None, None),
        ("DELETE", [t]) => (Interaction::Delete, Some(*t), None, None),
        ("POST", [t, "_search"]) => (Interaction::SearchType, Some(*t), None, None),
        ("GET", [t, "_history"]) => (Interaction::HistoryType, Some(*t), None, None),
        ("GET", [t, i]) => (Interaction::Read, Some(*t), Some(*i), None),
        ("PUT", [t, i]) => (Interaction::Update, Some(*t), Some(*i), None),
        ("PATCH", [t, i]) => (Interaction::Patch, Some(*t), Some(*i), None),
        ("DELETE", [t, i]) => (Interaction::Delete, Some(*t), Some(*i), None),
        ("GET", [t, i, "_history"]) => (Interaction::HistoryInstance, Some(*t), Some(*i), None),
        ("GET", [t, i, "_history", _]) => (Interaction::Vread, Some(*t), Some(*i), None),
        // Anything else is refused by the router; authorize it as the most general read.
        (_, [t, ..]) => (Interaction::SearchType, Some(*t), None, None),
        (_, []) => (Interaction::SearchSystem, None, None, None),
    };
    FhirRequest {
        interaction,
        resource_type: resource_type.map(str::to_string),
        id: id.map(str::to_string),
        operation,
        parameters: query.to_vec(),
        body_json: None,
        base_url: base_url.to_string(),
    }
}

fn plugin_claims(c: &AccessClaims, raw: &str) -> Claims {
    Claims {
        issuer: c.iss.clone(),
        subject: c.sub.clone(),
        client_id: c.client_id.clone(),
        audiences: c.aud.0.clone(),
        scopes: c.scopes(),
        fhir_user: c.fhir_user.clone(),
        patient: c.patient.clone(),
        expires_at: c.exp.max(0) as u64,
        raw_json: raw.to_string(),
        user: None,
    }
}

/// Paths under the FHIR base that answer without a token: discovery documents.
fn is_public(method: &Method, path: &str) -> bool {
    method == Method::GET
        && matches!(
            path.trim_end_matches('/'),
            "/metadata" | "/.well-known/smart-configuration"
        )
}

/// The middleware in front of every FHIR route.
pub async fn authorize(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match authorize_inner(&state, request).await {
        Ok(request) => next.run(request).await,
        Err(Rejection::Auth(failure)) => failure.into_response(),
        Err(Rejection::Fhir(err)) => FhirResponseError(err).into_response(),
    }
}

enum Rejection {
    Auth(AuthFailure),
    Fhir(FhirError),
}

impl From<AuthFailure> for Rejection {
    fn from(f: AuthFailure) -> Self {
        Rejection::Auth(f)
    }
}

async fn authorize_inner(state: &AppState, request: Request) -> Result<Request, Rejection> {
    let path = request.uri().path().to_string();
    if is_public(request.method(), &path) {
        return Ok(request);
    }
    let settings = state.settings();
    let (mut parts, body) = request.into_parts();

    // 1. Find the token: header, query (when allowed) or form body — exactly one of them.
    let mut found: Vec<(Source, String)> = Vec::new();
    let mut basic: Option<(String, String)> = None;
    if let Some(auth) = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let (scheme, rest) = auth.split_once(' ').unwrap_or((auth, ""));
        if scheme.eq_ignore_ascii_case("bearer") {
            found.push((Source::Header, rest.trim().to_string()));
        } else if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| {
                    s.split_once(':')
                        .map(|(u, p)| (u.to_string(), p.to_string()))
                });
            match decoded {
                Some(pair) => basic = Some(pair),
                None => {
                    return Err(AuthFailure::unauthorized(
                        Some("invalid_request"),
                        "the Basic credentials are not base64 of user:password",
                    )
                    .into());
                }
            }
        } else {
            return Err(AuthFailure::unauthorized(
                Some("invalid_request"),
                format!("the Authorization scheme {scheme:?} is not supported; send Authorization: Bearer <access token>"),
            )
            .into());
        }
    }
    if let Some(query) = parts.uri.query().map(str::to_string) {
        let (token, rest) = strip_access_token(&query);
        if let Some(token) = token {
            if !settings.fhir.access_token_in_query {
                return Err(AuthFailure::unauthorized(
                    Some("invalid_request"),
                    "this server does not accept access_token in the query (fhir.access_token_in_query = false); send Authorization: Bearer",
                )
                .into());
            }
            found.push((Source::Query, token));
            let path_and_query = if rest.is_empty() {
                path.clone()
            } else {
                format!("{path}?{rest}")
            };
            parts.uri = Uri::builder()
                .path_and_query(path_and_query)
                .build()
                .map_err(|e| {
                    AuthFailure::unauthorized(
                        Some("invalid_request"),
                        format!("bad request URI: {e}"),
                    )
                })?;
        }
    }
    let is_form = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    let body = if is_form && parts.method == Method::POST {
        let bytes = axum::body::to_bytes(body, settings.fhir.max_body_bytes)
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
        Body::from(rest)
    } else {
        body
    };
    let token = match found.as_slice() {
        [] => {
            return Err(AuthFailure::unauthorized(
                None,
                if basic.is_some() {
                    "HTTP Basic credentials alone are not enough: an access token is required (Authorization: Bearer, or the access_token query parameter)".to_string()
                } else {
                    "no access token: send Authorization: Bearer <token> (or the access_token query parameter)".to_string()
                },
            )
            .into());
        }
        [(_, token)] => token.clone(),
        _ => {
            return Err(AuthFailure {
                status: StatusCode::BAD_REQUEST,
                error: Some("invalid_request"),
                description: "the access token was sent in more than one way (RFC 6750 §2): use exactly one of the Authorization header, the query or the form body".into(),
            }
            .into());
        }
    };

    // 2. Verify it: signature, kid, issuer, expiry (with leeway), revocation — against
    //    this server's own keys, or the remote issuer's (JWKS, introspection).
    //    When the check itself cannot run (the issuer or the database does not answer),
    //    the token may well be good: 503, so that a client retries instead of dropping it.
    let verified = match state
        .verifier()
        .verify(&token, settings.fhir.clock_skew_secs)
        .await
    {
        Ok(verified) => verified,
        Err(e @ TokenError::Unavailable(_)) => {
            return Err(Rejection::Fhir(FhirError::WithStatus(
                503,
                vec![Issue::error("transient", e.to_string())],
            )));
        }
        Err(e) => {
            return Err(AuthFailure::unauthorized(Some("invalid_token"), e.to_string()).into());
        }
    };
    let claims = verified.claims;

    // 3. Compatibility mode: Basic credentials must be valid and name the token's subject.
    if settings.fhir.require_basic_auth {
        check_basic(state, basic, &claims, &token).await?;
    }

    // 4. Audience: the audience-rule plugins decide whether this server is addressed.
    let base_url = settings.fhir_base_url();
    state
        .plugins()
        .accept_audience(&claims.aud.0, &base_url)
        .map_err(|denial| AuthFailure::unauthorized(Some("invalid_token"), denial.to_string()))?;

    // 5. The scope-policy plugins decide what this request may do.
    let query: Vec<(String, String)> = parts
        .uri
        .query()
        .map(|q| serde_urlencoded::from_str(q).unwrap_or_default())
        .unwrap_or_default();
    let request = classify(&parts.method, &path, &query, &base_url);
    let caller = Caller {
        claims: plugin_claims(&claims, &verified.raw_json),
        plugins: state.plugins().clone(),
        base_url,
    };
    let access = match caller.decide(&request) {
        Ok(access) => access,
        Err(FhirError::Forbidden(reason)) => return Err(AuthFailure::forbidden(reason).into()),
        Err(other) => return Err(Rejection::Fhir(other)),
    };
    // Writes must keep within the constraints: the new content, and the current version.
    let mut body = body;
    if !access.is_unrestricted()
        && matches!(
            request.interaction,
            Interaction::Create | Interaction::Update | Interaction::Patch | Interaction::Delete
        )
    {
        let resource_type = request
            .resource_type
            .as_deref()
            .and_then(ResourceType::parse)
            .ok_or_else(|| {
                AuthFailure::forbidden("a restricted token may write only to a known resource type")
            })?;
        let content = if matches!(
            request.interaction,
            Interaction::Create | Interaction::Update
        ) {
            let bytes = axum::body::to_bytes(body, settings.fhir.max_body_bytes)
                .await
                .map_err(|e| {
                    Rejection::Fhir(FhirError::PayloadTooLarge(format!(
                        "the body cannot be read: {e}"
                    )))
                })?;
            let parsed = serde_json::from_slice::<serde_json::Value>(&bytes).ok();
            body = Body::from(bytes);
            parsed
        } else {
            None
        };
        write_allowed(
            request.interaction,
            resource_type,
            request.id.as_deref(),
            content.as_ref(),
            &access,
        )
        .map_err(AuthFailure::forbidden)?;
        if let (Some(id), true) = (&request.id, request.interaction != Interaction::Create) {
            // Not read_with: under `fhir.hidden_as = "not-found"` that answers NotFound for
            // a hidden resource, which must not let the write through.
            match state.fhir().read_visible(resource_type, id, &access).await {
                Ok(Ok(_)) | Err(FhirError::NotFound(_)) | Err(FhirError::Gone(_)) => {}
                Ok(Err(hidden)) => return Err(AuthFailure::forbidden(hidden.0).into()),
                Err(FhirError::Forbidden(why)) => return Err(AuthFailure::forbidden(why).into()),
                Err(other) => return Err(Rejection::Fhir(other)),
            }
        }
    }
    // An Access already present (set by an embedding program's own layer) still holds.
    let access = match parts.extensions.remove::<Access>() {
        Some(outer) => outer.and(access),
        None => access,
    };
    parts.extensions.insert(access);
    parts.extensions.insert(caller);
    Ok(Request::from_parts(parts, body))
}

/// Compatibility mode (`fhir.require_basic_auth`): the Basic credentials are those of an
/// account of this server (`hestia user add`, also on a FHIR server whose issuer is
/// remote: it has no other users), and that account is the token's user: its id or
/// username is the token's `sub`, or, with a remote issuer, its username is the one the
/// issuer's introspection answer names for the token (RFC 7662 `username`; cached).
async fn check_basic(
    state: &AppState,
    basic: Option<(String, String)>,
    claims: &AccessClaims,
    token: &str,
) -> Result<(), Rejection> {
    let Some((user, password)) = basic else {
        return Err(AuthFailure::unauthorized(
            Some("invalid_request"),
            "this server also requires HTTP Basic credentials of the token's user (fhir.require_basic_auth = true); send the token as access_token in the query",
        )
        .into());
    };
    let account = state
        .store()
        .verify_user(&user, &password)
        .await
        .map_err(|e| Rejection::Fhir(FhirError::Internal(e.to_string())))?;
    let remote = match state.verifier() {
        crate::verifier::TokenVerifier::Remote(remote) => Some(remote),
        crate::verifier::TokenVerifier::Local(_) => None,
    };
    let Some(account) = account else {
        let whose = if remote.is_some() {
            " (Basic users are this FHIR server's own accounts, made with `hestia user add` on it, not the issuer's)"
        } else {
            ""
        };
        return Err(AuthFailure::unauthorized(
            Some("invalid_token"),
            format!("Basic user {user} is unknown or the password is wrong{whose}"),
        )
        .into());
    };
    if account.id == claims.sub || account.username == claims.sub {
        return Ok(());
    }
    let named = match remote {
        None => String::new(),
        Some(remote) => match remote.introspected_username(token).await {
            Ok(Some(username)) if username == account.username => return Ok(()),
            Ok(Some(username)) => format!(
                " (issuer {} names the token's user {username})",
                remote.issuer()
            ),
            Ok(None) => format!(
                " (issuer {} names no username for the token)",
                remote.issuer()
            ),
            Err(e) => format!(" (the issuer's introspection cannot name its user: {e})"),
        },
    };
    Err(AuthFailure::unauthorized(
        Some("invalid_token"),
        format!(
            "Basic user {user} is not the token's sub {}{named}",
            claims.sub
        ),
    )
    .into())
}

/// Whether a write may happen under `access`, judged on what is known before it runs:
/// the target type and id and, for create and update, the new content. Constraints a
/// write cannot be shown to satisfy refuse it (fail closed). Updates and deletes also
/// need the current version visible; the caller checks that against the store.
pub fn write_allowed(
    interaction: Interaction,
    resource_type: ResourceType,
    id: Option<&str>,
    resource: Option<&serde_json::Value>,
    access: &Access,
) -> Result<(), String> {
    let Access::Within(constraints) = access else {
        return Ok(());
    };
    let ty = resource_type.as_str();
    for constraint in constraints {
        match constraint {
            AccessConstraint::Search {
                resource_type: t,
                params,
            } if *t == resource_type => {
                let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
                return Err(format!(
                    "writing {ty} under a scope restricted to {ty}?{} is not supported; such scopes are read-only here",
                    query.join("&")
                ));
            }
            AccessConstraint::Search { .. } => {}
            AccessConstraint::PatientCompartment(patient) => {
                if interaction == Interaction::Patch && resource_type.as_str() != "Patient" {
                    return Err(format!(
                        "PATCH of {ty} under a patient-restricted scope is not supported (it could move the resource out of Patient/{patient}'s compartment); use PUT"
                    ));
                }
                if ty == "Patient" {
                    if id != Some(patient.as_str()) {
                        return Err(format!(
                            "the token is restricted to Patient/{patient}; it cannot write other Patient resources"
                        ));
                    }
                    continue;
                }
                let compartment: Vec<&str> = resource_type
                    .patient_compartment_params()
                    .map(|p| p.code.as_str())
                    .collect();
                if compartment.is_empty() {
                    return Err(format!(
                        "{ty} is outside the patient compartment of Patient/{patient}"
                    ));
                }
                if let Some(resource) = resource {
                    let rows = crate::fhir::search::extract(resource).map_err(|e| e.to_string())?;
                    let inside = rows.references.iter().any(|r| {
                        compartment.contains(&r.param)
                            && r.target_type.map(|t| t.as_str()) == Some("Patient")
                            && r.target_id.as_deref() == Some(patient.as_str())
                    });
                    if !inside {
                        return Err(format!(
                            "the {ty} does not refer to Patient/{patient} through any of {}: it would be outside the token's patient compartment",
                            compartment.join(", ")
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// The authorization of one Bundle entry, from the caller's token (see [`Caller`]).
pub fn entry_check(
    caller: &Caller,
    entry: &crate::fhir::bundle::EntryRequest,
) -> Result<Access, FhirError> {
    let method = Method::from_bytes(entry.method.as_str().as_bytes()).unwrap_or(Method::GET);
    let path = entry.url.split('?').next().unwrap_or("");
    let mut request = classify(
        &method,
        &format!("/{}", path.trim_start_matches('/')),
        &entry.query,
        &caller.base_url,
    );
    if request.interaction == Interaction::Batch {
        request.interaction = Interaction::Transaction;
    }
    let access = caller
        .decide(&request)
        .map_err(|e| FhirError::Forbidden(format!("entry {}: {e}", entry.index)))?;
    if access.is_unrestricted() {
        return Ok(access);
    }
    let refuse = |why: String| {
        FhirError::Forbidden(format!(
            "entry {} ({} {}): {why}",
            entry.index,
            entry.method.as_str(),
            entry.url
        ))
    };
    match request.interaction {
        Interaction::Create | Interaction::Update | Interaction::Patch | Interaction::Delete => {
            let Some(ty) = entry.resource_type else {
                return Err(refuse("no resource type".into()));
            };
            // The new content is checked here; the current version of an update, patch or
            // delete inside the Bundle's transaction (`Repository::check_write_target_in`).
            let resource = entry.resource.clone().map(serde_json::Value::Object);
            write_allowed(
                request.interaction,
                ty,
                entry.id.as_deref(),
                resource.as_ref(),
                &access,
            )
            .map_err(refuse)?;
            Ok(access)
        }
        // Reads, vreads and searches run under the access inside the store query, as on
        // their own (`Repository::run_entry`).
        _ => Ok(access),
    }
}
