//! FHIR REST over HTTP: routes under the configured base path, content negotiation,
//! ETag / If-Match / Prefer headers, and errors as OperationOutcomes. The interactions
//! themselves are `fhir::repository`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::AppState;
use super::statuses::status_of_kind;
use crate::fhir::access::Access;
use crate::fhir::bundle::EntryStatus;
use crate::fhir::clock::{now_ms, snapshot_now};
use crate::fhir::error::{ErrorKind, FhirError};
use crate::fhir::outcome::{Issue, operation_outcome};
use crate::fhir::repository::{Conditional, Written, new_id, parse_resource, resource_type};
use crate::fhir::search::value::{format_instant, parse_date};
use crate::fhir::searchset::{Allowed, Handling, SearchScope, Via, decode_query};
use crate::store::fhir::{HistoryFilter, HistoryScope, StoredVersion};

pub const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

/// Routes relative to the FHIR base; `http::app` nests them under `fhir.base_path`.
/// Bodies larger than `max_body` bytes get 413 with an OperationOutcome.
pub fn routes(max_body: usize) -> Router<AppState> {
    Router::new()
        .route("/", get(search_system).post(batch_or_transaction))
        .route("/_search", post(search_system_post))
        .route("/_history", get(history_system))
        .route(
            "/{type}",
            get(search_type)
                .post(create)
                .put(conditional_update)
                .delete(conditional_delete),
        )
        .route("/{type}/_search", post(search_type_post))
        .route("/{type}/_history", get(history_type))
        .route(
            "/{type}/{id}",
            get(read)
                .put(update)
                .patch(patch)
                .delete(delete)
                .post(type_operation),
        )
        .route("/{type}/{id}/_history", get(history_instance))
        .route("/{type}/{id}/_history/{vid}", get(vread))
        .route(
            "/{type}/{id}/{operation}",
            get(instance_operation_get).post(instance_operation_post),
        )
        .fallback(unknown_route)
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(max_body))
        .layer(axum::middleware::map_response(outcome_for_plain_errors))
}

/// Errors produced outside the handlers (body too large, method not allowed, a rejected
/// extractor) arrive as plain text; a FHIR client gets every error as an OperationOutcome.
async fn outcome_for_plain_errors(response: Response) -> Response {
    let status = response.status();
    let is_fhir = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/fhir+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_fhir {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let err = match status {
        StatusCode::PAYLOAD_TOO_LARGE => {
            FhirError::PayloadTooLarge(format!("the request body is too large: {text}"))
        }
        StatusCode::METHOD_NOT_ALLOWED => FhirError::MethodNotAllowed(format!(
            "this FHIR endpoint does not support that HTTP method{}",
            parts
                .headers
                .get(header::ALLOW)
                .and_then(|v| v.to_str().ok())
                .map(|a| format!(" (allowed: {a})"))
                .unwrap_or_default()
        )),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => FhirError::UnsupportedMediaType(text.into_owned()),
        s if s.is_server_error() => FhirError::Internal(text.into_owned()),
        _ => FhirError::invalid(text.into_owned()),
    };
    let mut out = FhirResponseError(err).into_response();
    *out.status_mut() = status;
    for (name, value) in parts
        .headers
        .iter()
        .filter(|(n, _)| *n == header::ALLOW || *n == header::WWW_AUTHENTICATE)
    {
        out.headers_mut().insert(name.clone(), value.clone());
    }
    out
}

/// A FHIR error as an HTTP response: status, OperationOutcome, and the cause logged for 5xx.
pub struct FhirResponseError(pub FhirError);

impl From<FhirError> for FhirResponseError {
    fn from(e: FhirError) -> Self {
        Self(e)
    }
}

pub fn status_of(err: &FhirError) -> StatusCode {
    status_of_kind(err.kind())
}

/// A Bundle entry's `response.status`: its status code, with the reason phrase for the
/// codes that have one here (406, 500 and 503 stand alone).
pub fn entry_status_line(status: EntryStatus) -> String {
    let code = match status {
        EntryStatus::Ok => StatusCode::OK,
        EntryStatus::Created => StatusCode::CREATED,
        EntryStatus::NoContent => StatusCode::NO_CONTENT,
        EntryStatus::Failed(kind) => status_of_kind(kind),
    };
    let reason = match code {
        StatusCode::OK => "OK",
        StatusCode::CREATED => "Created",
        StatusCode::NO_CONTENT => "No Content",
        StatusCode::BAD_REQUEST => "Bad Request",
        StatusCode::FORBIDDEN => "Forbidden",
        StatusCode::NOT_FOUND => "Not Found",
        StatusCode::METHOD_NOT_ALLOWED => "Method Not Allowed",
        StatusCode::CONFLICT => "Conflict",
        StatusCode::GONE => "Gone",
        StatusCode::PRECONDITION_FAILED => "Precondition Failed",
        StatusCode::PAYLOAD_TOO_LARGE => "Payload Too Large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "Unsupported Media Type",
        StatusCode::UNPROCESSABLE_ENTITY => "Unprocessable Entity",
        _ => return code.as_str().to_owned(),
    };
    format!("{} {reason}", code.as_str())
}

impl IntoResponse for FhirResponseError {
    fn into_response(self) -> Response {
        let status = status_of(&self.0);
        if let FhirError::Internal(cause) = &self.0 {
            tracing::error!(%cause, "FHIR request failed");
        }
        let issues = self.0.issues();
        let mut response = fhir_json(status, &operation_outcome(&issues), false);
        // Every 403 says why in WWW-Authenticate too, as the resource server's own do.
        if status == StatusCode::FORBIDDEN {
            let why: Vec<&str> = issues.iter().map(|i| i.diagnostics.as_str()).collect();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                super::challenge::challenge(Some("insufficient_scope"), &why.join("; ")),
            );
        }
        response
    }
}

type FhirResult = Result<Response, FhirResponseError>;

/// A FHIR JSON response.
pub fn fhir_json(status: StatusCode, body: &Value, pretty: bool) -> Response {
    let text = if pretty {
        serde_json::to_string_pretty(body)
    } else {
        serde_json::to_string(body)
    }
    .unwrap_or_default();
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON))],
        text,
    )
        .into_response()
}

/// What the client asked about the response format (`_format`, `_pretty`, `Accept`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Format {
    pub pretty: bool,
}

/// Checks `_format` and `Accept`: JSON is served; XML is refused with a clear message.
pub fn negotiate(headers: &HeaderMap, query: &[(String, String)]) -> Result<Format, FhirError> {
    let mut format = Format::default();
    for (k, v) in query {
        match k.as_str() {
            "_format" => {
                let v = v.to_ascii_lowercase();
                if v.contains("xml") {
                    return Err(FhirError::UnsupportedMediaType(
                        "XML is not supported yet; use _format=json or application/fhir+json"
                            .into(),
                    ));
                }
                if !(v == "json" || v.contains("json")) {
                    return Err(FhirError::invalid(format!(
                        "_format={v} is not supported; use json"
                    )));
                }
            }
            "_pretty" => format.pretty = v == "true",
            _ => {}
        }
    }
    if let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) {
        let accepts_json = accept.split(',').any(|part| {
            let media = part
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            media.is_empty() || media.contains("json") || media == "*/*" || media == "application/*"
        });
        if !accepts_json {
            return Err(FhirError::NotAcceptable(format!(
                "this server answers application/fhir+json only, not {accept}"
            )));
        }
    }
    Ok(format)
}

/// Checks a request body's Content-Type: JSON (or none) is read; XML gets 415.
fn check_content_type(headers: &HeaderMap, allowed: &[&str]) -> Result<(), FhirError> {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(());
    };
    let media = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if allowed.contains(&media.as_str()) {
        Ok(())
    } else {
        Err(FhirError::UnsupportedMediaType(format!(
            "Content-Type {media} is not supported here; send {}",
            allowed.join(" or ")
        )))
    }
}

const RESOURCE_TYPES_IN: &[&str] = &["application/fhir+json", "application/json"];

/// `If-Match: W/"3"` (or `"3"`) → 3.
fn if_match(headers: &HeaderMap) -> Result<Option<i64>, FhirError> {
    let Some(raw) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = raw.to_str().unwrap_or("").trim();
    let inner = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
    inner.parse::<i64>().map(Some).map_err(|_| {
        FhirError::invalid(format!(
            "If-Match {text:?} is not a version ETag such as W/\"3\""
        ))
    })
}

/// The `Prefer: return=…` choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Return {
    Minimal,
    Representation,
    OperationOutcome,
}

fn prefer_return(headers: &HeaderMap) -> Return {
    let prefer = headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_ascii_lowercase())
        .find_map(|p| p.strip_prefix("return=").map(str::to_string));
    match prefer.as_deref() {
        Some("minimal") => Return::Minimal,
        Some("operationoutcome") => Return::OperationOutcome,
        _ => Return::Representation,
    }
}

fn etag(version_id: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("W/\"{version_id}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("W/\"0\""))
}

fn last_modified(ms: i64) -> HeaderValue {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    HeaderValue::from_str(&httpdate::fmt_http_date(time))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn parse_content(v: &StoredVersion) -> Result<Value, FhirError> {
    serde_json::from_str(&v.content).map_err(not_json)
}

fn not_json(e: serde_json::Error) -> FhirError {
    FhirError::Internal(format!("stored resource is not JSON: {e}"))
}

/// A read-like response: the resource, with ETag and Last-Modified. Compact JSON is the
/// stored text itself (what the store keeps is `serde_json`'s compact text of the
/// resource, so parsing and serialising it again would give the same bytes), checked to
/// be JSON without building it.
fn resource_response(v: &StoredVersion, status: StatusCode, format: Format) -> FhirResult {
    let mut response = if format.pretty {
        fhir_json(status, &parse_content(v)?, true)
    } else {
        serde_json::from_str::<serde::de::IgnoredAny>(&v.content).map_err(not_json)?;
        (
            status,
            [(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON))],
            v.content.clone(),
        )
            .into_response()
    };
    let h = response.headers_mut();
    h.insert(header::ETAG, etag(v.version_id));
    h.insert(header::LAST_MODIFIED, last_modified(v.last_updated));
    Ok(response)
}

/// The answer to a write: status, Location, ETag, and the body the client preferred.
fn written_response(
    state: &AppState,
    written: &Written,
    headers: &HeaderMap,
    format: Format,
) -> FhirResult {
    let v = &written.version;
    let status = if written.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut response = match prefer_return(headers) {
        Return::Minimal => status.into_response(),
        Return::OperationOutcome => fhir_json(
            status,
            &operation_outcome(&[Issue::information(
                "informational",
                format!(
                    "{} {}/{} version {}",
                    if written.created {
                        "created"
                    } else {
                        "updated"
                    },
                    v.resource_type,
                    v.id,
                    v.version_id
                ),
            )]),
            format.pretty,
        ),
        Return::Representation => fhir_json(status, &parse_content(v)?, format.pretty),
    };
    let h = response.headers_mut();
    h.insert(header::ETAG, etag(v.version_id));
    h.insert(header::LAST_MODIFIED, last_modified(v.last_updated));
    let location = format!(
        "{}/{}/{}/_history/{}",
        state.settings().fhir_base_url(),
        v.resource_type,
        v.id,
        v.version_id
    );
    if let Ok(value) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, value.clone());
        if written.created {
            h.insert(header::CONTENT_LOCATION, value);
        }
    }
    Ok(response)
}

type QueryPairs = Query<Vec<(String, String)>>;

/// The authorization decision for this request, as the authorization layer left it in
/// the request's extensions (`request.extensions_mut().insert(access)`). Absent means the
/// route runs outside that layer: the request is refused, never served unrestricted.
pub struct Granted(pub Access);

/// A FHIR handler reached without the authorization layer's decision: 500 naming it.
fn no_decision() -> FhirResponseError {
    let why = "this FHIR route has no authorization decision (the authorization layer did not run for it); the request is refused";
    tracing::error!("{why}");
    FhirResponseError(FhirError::WithKind(
        ErrorKind::Internal,
        vec![Issue::error("security", why)],
    ))
}

impl<S: Send + Sync> FromRequestParts<S> for Granted {
    type Rejection = FhirResponseError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Access>()
            .cloned()
            .map(Granted)
            .ok_or_else(no_decision)
    }
}

/// The caller the authorization layer left in the request's extensions, if any.
type CallerExt = Option<axum::Extension<crate::gate::Caller>>;

/// What reaching into a type other than the request's is allowed for its caller
/// ([`crate::gate::Caller::type_access`]); nothing when no authorization
/// layer decided anything.
fn type_access_of(
    caller: CallerExt,
) -> impl Fn(crate::fhir::ResourceType, Via) -> Result<Access, FhirError> + Send + Sync {
    move |t, via| match &caller {
        Some(axum::Extension(caller)) => caller.type_access(t, via),
        None => Err(no_decision().0),
    }
}

/// `Prefer: handling=lenient` (anything else is strict).
fn prefer_handling(headers: &HeaderMap) -> Handling {
    let lenient = headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .any(|p| p.trim().eq_ignore_ascii_case("handling=lenient"));
    if lenient {
        Handling::Lenient
    } else {
        Handling::Strict
    }
}

async fn read(
    State(state): State<AppState>,
    Granted(access): Granted,
    Path((ty, id)): Path<(String, String)>,
    headers: HeaderMap,
    Query(query): QueryPairs,
) -> FhirResult {
    let format = negotiate(&headers, &query)?;
    let rt = resource_type(&ty)?;
    let v = state.fhir().read_with(None, rt, &id, &access).await?;
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|inm| inm.as_bytes() == etag(v.version_id).as_bytes())
    {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    resource_response(&v, StatusCode::OK, format)
}

async fn vread(
    State(state): State<AppState>,
    Granted(access): Granted,
    Path((ty, id, vid)): Path<(String, String, String)>,
    headers: HeaderMap,
    Query(query): QueryPairs,
) -> FhirResult {
    let format = negotiate(&headers, &query)?;
    let rt = resource_type(&ty)?;
    check_history_access(&state, rt, &id, &access).await?;
    let v = state.fhir().vread(None, rt, &id, &vid).await?;
    resource_response(&v, StatusCode::OK, format)
}

async fn create(
    State(state): State<AppState>,
    Granted(access): Granted,
    caller: CallerExt,
    Path(ty): Path<String>,
    headers: HeaderMap,
    Query(query): QueryPairs,
    body: Bytes,
) -> FhirResult {
    let format = negotiate(&headers, &query)?;
    check_content_type(&headers, RESOURCE_TYPES_IN)?;
    let rt = resource_type(&ty)?;
    let resource = parse_resource(&body, rt)?;
    let Some(criteria) = headers.get("if-none-exist") else {
        let written = state.fhir().create(None, rt, new_id(), resource).await?;
        return written_response(&state, &written, &headers, format);
    };
    let criteria = decode_query(criteria.to_str().map_err(|_| {
        FhirError::invalid("If-None-Exist must be a query string (ASCII, percent-encoded)")
    })?);
    match state
        .fhir()
        .conditional_create(
            None,
            rt,
            new_id(),
            resource,
            &criteria,
            Allowed {
                access: &access,
                type_access: &type_access_of(caller),
            },
        )
        .await?
    {
        Conditional::Written(written) => written_response(&state, &written, &headers, format),
        Conditional::Existing(existing) => resource_response(&existing, StatusCode::OK, format),
    }
}

/// `PUT [base]/[type]?criteria`.
async fn conditional_update(
    State(state): State<AppState>,
    Granted(access): Granted,
    caller: CallerExt,
    Path(ty): Path<String>,
    headers: HeaderMap,
    Query(query): QueryPairs,
    body: Bytes,
) -> FhirResult {
    let format = negotiate(&headers, &query)?;
    check_content_type(&headers, RESOURCE_TYPES_IN)?;
    let rt = resource_type(&ty)?;
    let resource = parse_resource(&body, rt)?;
    let written = state
        .fhir()
        .conditional_update(
            None,
            rt,
            resource,
            &query,
            if_match(&headers)?,
            Allowed {
                access: &access,
                type_access: &type_access_of(caller),
            },
        )
        .await?;
    written_response(&state, &written, &headers, format)
}

/// `DELETE [base]/[type]?criteria`.
async fn conditional_delete(
    State(state): State<AppState>,
    Granted(access): Granted,
    caller: CallerExt,
    Path(ty): Path<String>,
    headers: HeaderMap,
    Query(query): QueryPairs,
) -> FhirResult {
    negotiate(&headers, &query)?;
    let rt = resource_type(&ty)?;
    let deleted = state
        .fhir()
        .conditional_delete(
            None,
            rt,
            &query,
            if_match(&headers)?,
            Allowed {
                access: &access,
                type_access: &type_access_of(caller),
            },
        )
        .await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Some(v) = deleted {
        response
            .headers_mut()
            .insert(header::ETAG, etag(v.version_id));
    }
    Ok(response)
}

async fn update(
    State(state): State<AppState>,
    Granted(access): Granted,
    Path((ty, id)): Path<(String, String)>,
    headers: HeaderMap,
    Query(query): QueryPairs,
    body: Bytes,
) -> FhirResult {
    let format = negotiate(&headers, &query)?;
    check_content_type(&headers, RESOURCE_TYPES_IN)?;
    let rt = resource_type(&ty)?;
    let resource = parse_resource(&body, rt)?;
    let written = state
        .fhir()
        .update(None, rt, &id, resource, if_match(&headers)?, &access)
        .await?;
    written_response(&state, &written, &headers, format)
}

async fn patch(
    State(state): State<AppState>,
    Granted(access): Granted,
    Path((ty, id)): Path<(String, String)>,
    headers: HeaderMap,
    Query(query): QueryPairs,
    body: Bytes,
) -> FhirResult {
    let format = negotiate(&headers, &query)?;
    check_content_type(&headers, &["application/json-patch+json"])?;
    let rt = resource_type(&ty)?;
    let written = state
        .fhir()
        .patch(None, rt, &id, &body, if_match(&headers)?, &access)
        .await?;
    written_response(&state, &written, &headers, format)
}

async fn delete(
    State(state): State<AppState>,
    Granted(access): Granted,
    Path((ty, id)): Path<(String, String)>,
    headers: HeaderMap,
    Query(query): QueryPairs,
) -> FhirResult {
    let format = negotiate(&headers, &query)?;
    let rt = resource_type(&ty)?;
    let deleted = state
        .fhir()
        .delete(None, rt, &id, if_match(&headers)?, &access)
        .await?;
    let mut response = match prefer_return(&headers) {
        Return::OperationOutcome => fhir_json(
            StatusCode::OK,
            &operation_outcome(&[Issue::information(
                "informational",
                match &deleted {
                    Some(v) => format!("deleted {ty}/{id} (version {})", v.version_id),
                    None => {
                        format!("{ty}/{id} did not exist or was already deleted; nothing changed")
                    }
                },
            )]),
            format.pretty,
        ),
        _ => StatusCode::NO_CONTENT.into_response(),
    };
    if let Some(v) = deleted {
        response
            .headers_mut()
            .insert(header::ETAG, etag(v.version_id));
    }
    Ok(response)
}

/// `_count`, `_since`, `_at` and the page offset of a history request.
fn history_filter(query: &[(String, String)]) -> Result<HistoryFilter, FhirError> {
    let mut filter = HistoryFilter {
        count: 50,
        ..Default::default()
    };
    for (k, v) in query {
        match k.as_str() {
            "_count" => {
                filter.count = v
                    .parse::<i64>()
                    .ok()
                    .filter(|n| (0..=1000).contains(n))
                    .ok_or_else(|| {
                        FhirError::invalid(format!("_count={v} must be a number from 0 to 1000"))
                    })?;
            }
            "_since" => {
                filter.since = Some(
                    parse_date(v)
                        .map_err(|e| FhirError::invalid(format!("_since={v}: {e}")))?
                        .low,
                );
            }
            "_at" => {
                let range =
                    parse_date(v).map_err(|e| FhirError::invalid(format!("_at={v}: {e}")))?;
                filter.at = Some((range.low, range.high));
            }
            "_offset" => {
                filter.offset = v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                    FhirError::invalid(format!("_offset={v} must be a non-negative number"))
                })?;
            }
            "_snapshot" => {
                filter.until = Some(v.parse::<i64>().map_err(|_| {
                    FhirError::invalid(format!(
                        "_snapshot={v} is not a paging cursor of this server"
                    ))
                })?);
            }
            "_format" | "_pretty" => {}
            other => {
                return Err(FhirError::invalid(format!(
                    "history does not support the parameter {other:?} (supported: _count, _since, _at)"
                )));
            }
        }
    }
    Ok(filter)
}

/// A history page's link: the query, the snapshot (versions written after the first page
/// are left out, so that the offsets of later pages do not shift) and the offset.
fn page_url(self_url: &str, query: &[(String, String)], snapshot: i64, offset: i64) -> String {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .filter(|(k, _)| k != "_offset" && k != "_snapshot")
        .cloned()
        .collect();
    pairs.push(("_snapshot".into(), snapshot.to_string()));
    pairs.push(("_offset".into(), offset.to_string()));
    let qs: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
        .collect();
    format!("{self_url}?{}", qs.join("&"))
}

/// Percent-encodes a query component (RFC 3986 unreserved characters stay).
pub fn urlencode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A history Bundle: newest first; deletions without a resource; request and response per
/// entry. Type and system history keep to what `allowed` lets through
/// ([`crate::fhir::repository::Repository::history`]).
async fn history_bundle(
    state: &AppState,
    scope: HistoryScope<'_>,
    self_url: String,
    query: &[(String, String)],
    format: Format,
    allowed: Allowed<'_>,
) -> FhirResult {
    let mut filter = history_filter(query)?;
    let snapshot = *filter.until.get_or_insert_with(snapshot_now);
    let (versions, total) = state.fhir().history(scope, &filter, allowed).await?;
    let base = state.settings().fhir_base_url();
    let mut entries = Vec::with_capacity(versions.len());
    for v in &versions {
        let full_url = format!("{base}/{}/{}", v.resource_type, v.id);
        let mut entry = json!({
            "fullUrl": full_url,
            "request": {
                "method": v.method,
                "url": if v.method == "POST" { v.resource_type.clone() } else { format!("{}/{}", v.resource_type, v.id) },
            },
            "response": {
                "status": match v.method.as_str() { "POST" => "201 Created", "DELETE" => "204 No Content", _ => "200 OK" },
                "etag": format!("W/\"{}\"", v.version_id),
                "lastModified": format_instant(v.last_updated),
            },
        });
        if !v.deleted {
            entry["resource"] = parse_content(v)?;
        }
        entries.push(entry);
    }
    let mut links = vec![
        json!({"relation": "self", "url": page_url(&self_url, query, snapshot, filter.offset)}),
    ];
    if filter.offset + filter.count < total && filter.count > 0 {
        links.push(json!({"relation": "next", "url": page_url(&self_url, query, snapshot, filter.offset + filter.count)}));
    }
    if filter.offset > 0 {
        links.push(json!({"relation": "previous", "url": page_url(&self_url, query, snapshot, (filter.offset - filter.count).max(0))}));
    }
    let bundle = json!({
        "resourceType": "Bundle",
        "id": uuid::Uuid::new_v4().to_string(),
        "meta": {"lastUpdated": format_instant(now_ms())},
        "type": "history",
        "total": total,
        "link": links,
        "entry": entries,
    });
    Ok(fhir_json(StatusCode::OK, &bundle, format.pretty))
}

/// Under constraints, a vread or instance history needs the current version visible
/// ([`crate::fhir::repository::Repository::check_history_visible`]).
async fn check_history_access(
    state: &AppState,
    rt: crate::fhir::ResourceType,
    id: &str,
    access: &Access,
) -> Result<(), FhirError> {
    state
        .fhir()
        .check_history_visible(None, rt, id, access)
        .await
}

async fn history_instance(
    State(state): State<AppState>,
    Granted(access): Granted,
    Path((ty, id)): Path<(String, String)>,
    headers: HeaderMap,
    Query(query): QueryPairs,
) -> FhirResult {
    let format = negotiate(&headers, &query)?;
    let rt = resource_type(&ty)?;
    check_history_access(&state, rt, &id, &access).await?;
    // A resource that never existed has no history: 404, not an empty Bundle.
    if state
        .fhir()
        .store()
        .fhir_current(rt.as_str(), &id)
        .await
        .map_err(FhirError::from)?
        .is_none()
    {
        return Err(FhirError::NotFound(format!("{ty}/{id} is not known")).into());
    }
    let self_url = format!("{}/{ty}/{id}/_history", state.settings().fhir_base_url());
    history_bundle(
        &state,
        HistoryScope::Instance(rt.as_str(), &id),
        self_url,
        &query,
        format,
        Allowed {
            access: &access,
            type_access: &type_access_of(None),
        },
    )
    .await
}

async fn history_type(
    State(state): State<AppState>,
    Granted(access): Granted,
    caller: CallerExt,
    Path(ty): Path<String>,
    headers: HeaderMap,
    Query(query): QueryPairs,
) -> FhirResult {
    let format = negotiate(&headers, &query)?;
    let rt = resource_type(&ty)?;
    let self_url = format!("{}/{ty}/_history", state.settings().fhir_base_url());
    history_bundle(
        &state,
        HistoryScope::Type(rt.as_str()),
        self_url,
        &query,
        format,
        Allowed {
            access: &access,
            type_access: &type_access_of(caller),
        },
    )
    .await
}

async fn history_system(
    State(state): State<AppState>,
    Granted(access): Granted,
    caller: CallerExt,
    headers: HeaderMap,
    Query(query): QueryPairs,
) -> FhirResult {
    let format = negotiate(&headers, &query)?;
    let self_url = format!("{}/_history", state.settings().fhir_base_url());
    history_bundle(
        &state,
        HistoryScope::System,
        self_url,
        &query,
        format,
        Allowed {
            access: &access,
            type_access: &type_access_of(caller),
        },
    )
    .await
}

/// `POST [base]` with a batch or transaction Bundle.
async fn batch_or_transaction(
    State(state): State<AppState>,
    caller: CallerExt,
    headers: HeaderMap,
    Query(query): QueryPairs,
    body: Bytes,
) -> FhirResult {
    let format = negotiate(&headers, &query)?;
    check_content_type(&headers, RESOURCE_TYPES_IN)?;
    let bundle_type = crate::fhir::definitions::ResourceType::parse("Bundle")
        .ok_or_else(|| FhirError::Internal("the definitions table lacks Bundle".into()))?;
    let bundle = parse_resource(&body, bundle_type)?;
    // The resource-server layer always sets the caller; without one nothing is allowed.
    let Some(axum::Extension(caller)) = caller else {
        return Err(FhirError::Forbidden("no authorized caller for this Bundle".into()).into());
    };
    let type_access = type_access_of(Some(axum::Extension(caller.clone())));
    let check = move |entry: &crate::fhir::bundle::EntryRequest| caller.entry_access(entry);
    let return_resources = prefer_return(&headers) == Return::Representation;
    let response = state
        .fhir()
        .process_bundle(
            bundle,
            &check,
            &type_access,
            return_resources,
            entry_status_line,
        )
        .await?;
    Ok(fhir_json(StatusCode::OK, &response, format.pretty))
}

/// `GET [base]/[type]?params`.
async fn search_type(
    State(state): State<AppState>,
    Granted(access): Granted,
    caller: CallerExt,
    Path(ty): Path<String>,
    headers: HeaderMap,
    Query(query): QueryPairs,
) -> FhirResult {
    let rt = resource_type(&ty)?;
    search(
        &state,
        &access,
        caller,
        SearchScope::Type(rt),
        &headers,
        query,
    )
    .await
}

/// `POST [base]/[type]/_search` with a form body (merged after the query string).
async fn search_type_post(
    State(state): State<AppState>,
    Granted(access): Granted,
    caller: CallerExt,
    Path(ty): Path<String>,
    headers: HeaderMap,
    Query(query): QueryPairs,
    body: Bytes,
) -> FhirResult {
    let rt = resource_type(&ty)?;
    let params = with_form_body(&headers, query, &body)?;
    search(
        &state,
        &access,
        caller,
        SearchScope::Type(rt),
        &headers,
        params,
    )
    .await
}

/// `GET [base]?_type=...&params`.
async fn search_system(
    State(state): State<AppState>,
    Granted(access): Granted,
    caller: CallerExt,
    headers: HeaderMap,
    Query(query): QueryPairs,
) -> FhirResult {
    search(
        &state,
        &access,
        caller,
        SearchScope::System,
        &headers,
        query,
    )
    .await
}

/// `POST [base]/_search`.
async fn search_system_post(
    State(state): State<AppState>,
    Granted(access): Granted,
    caller: CallerExt,
    headers: HeaderMap,
    Query(query): QueryPairs,
    body: Bytes,
) -> FhirResult {
    let params = with_form_body(&headers, query, &body)?;
    search(
        &state,
        &access,
        caller,
        SearchScope::System,
        &headers,
        params,
    )
    .await
}

fn with_form_body(
    headers: &HeaderMap,
    mut query: Vec<(String, String)>,
    body: &[u8],
) -> Result<Vec<(String, String)>, FhirError> {
    if body.is_empty() {
        return Ok(query);
    }
    check_content_type(headers, &["application/x-www-form-urlencoded"])?;
    let text = std::str::from_utf8(body)
        .map_err(|_| FhirError::invalid("the _search body is not UTF-8 form data"))?;
    query.extend(decode_query(text));
    Ok(query)
}

async fn search(
    state: &AppState,
    access: &Access,
    caller: CallerExt,
    scope: SearchScope,
    headers: &HeaderMap,
    params: Vec<(String, String)>,
) -> FhirResult {
    let format = negotiate(headers, &params)?;
    // Chains, `_has` and included resources of each type only as far as reaching into
    // that type is allowed.
    let type_access = type_access_of(caller);
    let bundle = state
        .fhir()
        .search(
            scope,
            &params,
            prefer_handling(headers),
            access,
            &type_access,
        )
        .await?;
    Ok(fhir_json(StatusCode::OK, &bundle, format.pretty))
}

/// `POST [base]/[type]/$op` (the router sees `$op` where an id would be).
async fn type_operation(
    State(state): State<AppState>,
    Path((ty, operation)): Path<(String, String)>,
    headers: HeaderMap,
    Query(query): QueryPairs,
    body: Bytes,
) -> FhirResult {
    let format = negotiate(&headers, &query)?;
    let rt = resource_type(&ty)?;
    match operation.as_str() {
        "$validate" => validate(&state, rt, None, &headers, &body, format),
        op if op.starts_with('$') => Err(unknown_operation(&ty, op).into()),
        _ => {
            let mut response = FhirResponseError(FhirError::MethodNotAllowed(format!(
                "this FHIR endpoint does not support that HTTP method (allowed: GET, PUT, PATCH, DELETE): POST is not an interaction on {ty}/{operation}"
            )))
            .into_response();
            response.headers_mut().insert(
                header::ALLOW,
                HeaderValue::from_static("GET,PUT,PATCH,DELETE"),
            );
            Ok(response)
        }
    }
}

/// `POST [base]/[type]/[id]/$op`: `$validate`.
async fn instance_operation_post(
    State(state): State<AppState>,
    Path((ty, id, operation)): Path<(String, String, String)>,
    headers: HeaderMap,
    Query(query): QueryPairs,
    body: Bytes,
) -> FhirResult {
    let format = negotiate(&headers, &query)?;
    let rt = resource_type(&ty)?;
    match operation.as_str() {
        "$validate" => validate(&state, rt, Some(&id), &headers, &body, format),
        "$everything" if rt.as_str() == "Patient" => {
            Err(FhirError::MethodNotAllowed("Patient/[id]/$everything is GET here".into()).into())
        }
        op => Err(unknown_operation(&ty, op).into()),
    }
}

/// `GET [base]/[type]/[id]/$op`: `Patient/[id]/$everything`.
async fn instance_operation_get(
    State(state): State<AppState>,
    Granted(access): Granted,
    caller: CallerExt,
    Path((ty, id, operation)): Path<(String, String, String)>,
    headers: HeaderMap,
    Query(query): QueryPairs,
) -> FhirResult {
    let format = negotiate(&headers, &query)?;
    let rt = resource_type(&ty)?;
    match (rt.as_str(), operation.as_str()) {
        ("Patient", "$everything") => {}
        (_, "$validate") => {
            return Err(FhirError::MethodNotAllowed("$validate is POST here".into()).into());
        }
        (_, op) => return Err(unknown_operation(&ty, op).into()),
    }
    // Each compartment type is returned only as far as a search of it would be allowed,
    // the Patient itself as far as a read of it would be, and the resources they refer
    // to as far as an include of them would be.
    let patient_id = id.clone();
    let type_access = move |t: crate::fhir::ResourceType, via: Via| match &caller {
        Some(axum::Extension(caller)) if t.as_str() == "Patient" && via == Via::Search => caller
            .decide(&crate::gate::classify(
                "GET",
                &format!("/Patient/{patient_id}"),
                &[],
                &caller.base_url,
            )),
        Some(axum::Extension(caller)) => caller.type_access(t, via),
        None => Err(no_decision().0),
    };
    let bundle = state
        .fhir()
        .everything(&id, &query, &access, &type_access)
        .await?;
    Ok(fhir_json(StatusCode::OK, &bundle, format.pretty))
}

fn unknown_operation(ty: &str, op: &str) -> FhirError {
    FhirError::NotFound(format!(
        "the operation {op} on {ty} is not supported (this server has $validate and Patient/[id]/$everything)"
    ))
}

/// `$validate`: 200 with the OperationOutcome, valid or not (see
/// `Repository::validate_operation`).
fn validate(
    state: &AppState,
    rt: crate::fhir::ResourceType,
    id: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
    format: Format,
) -> FhirResult {
    check_content_type(headers, RESOURCE_TYPES_IN)?;
    let issues = state.fhir().validate_operation(rt, id, body)?;
    Ok(fhir_json(
        StatusCode::OK,
        &operation_outcome(&issues),
        format.pretty,
    ))
}

async fn unknown_route(uri: axum::http::Uri) -> FhirResult {
    Err(FhirError::NotFound(format!(
        "{} is not a FHIR interaction this server knows",
        uri.path()
    ))
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each outcome of a Bundle entry and the `response.status` it gets, and the same
    /// status on a response of its own.
    #[test]
    fn entry_status_lines_and_statuses_agree() {
        let table = [
            (EntryStatus::Ok, "200 OK"),
            (EntryStatus::Created, "201 Created"),
            (EntryStatus::NoContent, "204 No Content"),
            (
                EntryStatus::Failed(ErrorKind::BadRequest),
                "400 Bad Request",
            ),
            (EntryStatus::Failed(ErrorKind::Forbidden), "403 Forbidden"),
            (EntryStatus::Failed(ErrorKind::NotFound), "404 Not Found"),
            (
                EntryStatus::Failed(ErrorKind::MethodNotAllowed),
                "405 Method Not Allowed",
            ),
            (EntryStatus::Failed(ErrorKind::NotAcceptable), "406"),
            (EntryStatus::Failed(ErrorKind::Conflict), "409 Conflict"),
            (EntryStatus::Failed(ErrorKind::Gone), "410 Gone"),
            (
                EntryStatus::Failed(ErrorKind::PreconditionFailed),
                "412 Precondition Failed",
            ),
            (
                EntryStatus::Failed(ErrorKind::PayloadTooLarge),
                "413 Payload Too Large",
            ),
            (
                EntryStatus::Failed(ErrorKind::UnsupportedMediaType),
                "415 Unsupported Media Type",
            ),
            (
                EntryStatus::Failed(ErrorKind::Unprocessable),
                "422 Unprocessable Entity",
            ),
            (EntryStatus::Failed(ErrorKind::Internal), "500"),
            (EntryStatus::Failed(ErrorKind::Unavailable), "503"),
        ];
        for (status, line) in table {
            assert_eq!(entry_status_line(status), line, "{status:?}");
            if let EntryStatus::Failed(kind) = status {
                assert_eq!(status_of_kind(kind).as_str(), &line[..3], "{kind:?}");
            }
        }
        let gone = FhirError::Gone("Patient/1 was deleted".into());
        assert_eq!(status_of(&gone), StatusCode::GONE);
        let named = FhirError::WithKind(gone.kind(), gone.issues());
        assert_eq!(status_of(&named), StatusCode::GONE);
    }
}
