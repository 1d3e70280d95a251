//! Bulk Data export over HTTP (FHIR Bulk Data Access IG 2.0.0): the kick-offs
//! (`[base]/$export`, `[base]/Patient/$export`, `[base]/Group/[id]/$export`, GET or POST
//! with a Parameters body), the job's status URL (`[base]/bulkstatus/[job]`: 202 while
//! it runs, the manifest when done, DELETE cancels) and its files
//! (`[base]/bulkfiles/[job]/[file]`, gzip on `Accept-Encoding`), which serve the import
//! jobs of `http/bulk_import.rs` too. The gate admits these
//! routes with a verified caller only (`gate::BULK_ROUTES`); the kick-off asks the scope
//! policy for a search of each type, and a job belongs to the client and subject whose
//! token started it.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, OriginalUri, Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;
use super::fhir::{FhirResponseError, fhir_json};
use crate::fhir::bulk::{self, ExportKind, ExportRequest};
use crate::fhir::bulk_worker::{StartError, failure_outcome};
use crate::fhir::error::{ErrorKind, FhirError};
use crate::fhir::outcome::{Issue, operation_outcome};
use crate::gate::Caller;
use crate::store::bulk::{BulkJob, JobState};

/// Seconds a client is told to wait before it polls again, or retries a kick-off.
const RETRY_AFTER: &str = "2";

pub(super) type BulkResult = Result<Response, FhirResponseError>;

/// Routes relative to the FHIR base (see `gate::BULK_ROUTES`).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/$export", get(system_export).post(system_export))
        .route("/Patient/$export", get(patient_export).post(patient_export))
        .route("/Group/{id}/$export", get(group_export).post(group_export))
        .route("/bulkstatus/{job}", get(status).delete(cancel))
        .route(
            "/bulkfiles/{job}/{file}",
            get(file).layer(tower_http::compression::CompressionLayer::new().gzip(true)),
        )
}

/// The caller the gate admitted; without one the route ran outside the gate: 500.
pub(super) fn caller_of(
    caller: Option<axum::Extension<Caller>>,
) -> Result<Caller, FhirResponseError> {
    caller.map(|c| c.0).ok_or_else(|| {
        let why = "this bulk route has no verified caller (the authorization layer did not run for it); the request is refused";
        tracing::error!("{why}");
        FhirResponseError(FhirError::WithKind(ErrorKind::Internal, vec![Issue::error("security", why)]))
    })
}

pub(super) fn bad_request(why: impl Into<String>) -> FhirResponseError {
    FhirResponseError(FhirError::BadRequest(vec![Issue::error(
        "invalid",
        why.into(),
    )]))
}

/// The kick-off's required headers: `Accept: application/fhir+json` (the format of an
/// error) and `Prefer: respond-async`; `operation` names the kick-off (`$export`).
pub(super) fn check_kickoff_headers(
    headers: &HeaderMap,
    operation: &str,
) -> Result<(), FhirResponseError> {
    let has = |name: header::HeaderName, want: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .eq_ignore_ascii_case(want)
            })
    };
    if !has(header::ACCEPT, "application/fhir+json") {
        return Err(bad_request(format!(
            "a {operation} kick-off needs Accept: application/fhir+json (the format of its errors)"
        )));
    }
    if !has(HeaderName::from_static("prefer"), "respond-async") {
        return Err(bad_request(format!(
            "a {operation} kick-off needs Prefer: respond-async: the job runs in the background"
        )));
    }
    Ok(())
}

/// What a kick-off handler reads of its request.
struct Kickoff {
    method: Method,
    uri: String,
    headers: HeaderMap,
    query: Vec<(String, String)>,
    body: Bytes,
    caller: Option<Caller>,
}

/// The largest Parameters body a kick-off reads.
pub(super) const MAX_KICKOFF_BODY: usize = 1 << 20;

impl<S: Send + Sync> FromRequest<S> for Kickoff {
    type Rejection = FhirResponseError;

    async fn from_request(req: Request, _: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let uri = parts
            .extensions
            .get::<OriginalUri>()
            .map_or_else(|| parts.uri.to_string(), |o| o.0.to_string());
        let query = parts
            .uri
            .query()
            .map(|q| serde_urlencoded::from_str(q).unwrap_or_default())
            .unwrap_or_default();
        let body = axum::body::to_bytes(body, MAX_KICKOFF_BODY)
            .await
            .map_err(|e| FhirError::PayloadTooLarge(format!("the body cannot be read: {e}")))?;
        Ok(Kickoff {
            method: parts.method,
            uri,
            headers: parts.headers,
            query,
            body,
            caller: parts.extensions.get::<Caller>().cloned(),
        })
    }
}

async fn system_export(State(state): State<AppState>, kickoff: Kickoff) -> BulkResult {
    kick_off(&state, ExportKind::System, kickoff).await
}

async fn patient_export(State(state): State<AppState>, kickoff: Kickoff) -> BulkResult {
    kick_off(&state, ExportKind::Patient, kickoff).await
}

async fn group_export(
    State(state): State<AppState>,
    Path(id): Path<String>,
    kickoff: Kickoff,
) -> BulkResult {
    kick_off(&state, ExportKind::Group(id), kickoff).await
}

/// A kick-off: checks the headers and parameters, decides each type with the scope
/// policy, records the job and starts it; 202 with the status URL in `Content-Location`.
async fn kick_off(state: &AppState, kind: ExportKind, k: Kickoff) -> BulkResult {
    let caller = caller_of(k.caller.map(axum::Extension))?;
    check_kickoff_headers(&k.headers, "$export")?;
    let (params, patients) = if k.method == Method::POST {
        let body: serde_json::Value = serde_json::from_slice(&k.body)
            .map_err(|e| bad_request(format!("the body is not JSON: {e}")))?;
        bulk::parameters_body(&body)?
    } else {
        (k.query, None)
    };
    if patients.is_some() && kind == ExportKind::System {
        return Err(bad_request(
            "the patient parameter applies to Patient and Group exports, not [base]/$export",
        ));
    }
    let request = ExportRequest::parse(&params, patients)?;
    let members = match &kind {
        ExportKind::Group(id) => Some(bulk::group_members(state.fhir(), &caller, id).await?),
        _ => None,
    };
    let patients = bulk::patients_of(members, request.patients.as_deref());
    let plan = bulk::plan(
        &caller,
        &kind,
        &request,
        patients.as_deref(),
        &state.settings().fhir.search_limits,
    )?;
    let public = format!("{}{}", state.settings().public_url, k.uri);
    let started = state
        .bulk()
        .start(
            &caller.claims.client_id,
            &caller.claims.subject,
            &public,
            plan,
        )
        .await;
    match started {
        Ok(id) => Ok(accepted(state, &id)),
        Err(e) => not_started(e),
    }
}

/// A kick-off's answer: 202 with the job's status URL in `Content-Location`.
pub(super) fn accepted(state: &AppState, id: &str) -> Response {
    let location = format!("{}/bulkstatus/{id}", state.settings().fhir_base_url());
    let mut response = StatusCode::ACCEPTED.into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response
            .headers_mut()
            .insert(header::CONTENT_LOCATION, value);
    }
    response
}

/// The answer to a kick-off whose job did not start: 429 with `Retry-After` when too many
/// jobs are in progress.
pub(super) fn not_started(e: StartError) -> BulkResult {
    match e {
        StartError::Busy(_) => {
            let mut response = fhir_json(
                StatusCode::TOO_MANY_REQUESTS,
                &operation_outcome(&[Issue::error("throttled", e.to_string())]),
                false,
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER));
            Ok(response)
        }
        StartError::Store(e) => Err(FhirError::from(e).into()),
    }
}

/// The job named by the path, when it is the caller's: 404 when there is none, 403 when
/// it is another client's or another subject's.
async fn own_job(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<BulkJob, FhirResponseError> {
    let job = state
        .store()
        .bulk_job(id)
        .await
        .map_err(FhirError::from)?
        .ok_or_else(|| FhirError::NotFound(format!("there is no Bulk Data job {id}")))?;
    if job.client_id != caller.claims.client_id || job.subject != caller.claims.subject {
        return Err(FhirError::Forbidden(format!(
            "the {} job {id} was started by another client or user; only a token of client {} for the same subject may see it",
            job.kind.as_str(),
            job.client_id
        ))
        .into());
    }
    Ok(job)
}

async fn status(
    State(state): State<AppState>,
    Path(id): Path<String>,
    caller: Option<axum::Extension<Caller>>,
) -> BulkResult {
    let caller = caller_of(caller)?;
    let mut job = own_job(&state, &caller, &id).await?;
    let stale = crate::store::now_secs() - state.bulk().settings().stale_after.as_secs() as i64;
    if job.state == JobState::InProgress && job.updated_at < stale {
        state.bulk().fail_stale().await.map_err(FhirError::from)?;
        job = own_job(&state, &caller, &id).await?;
    }
    match job.state {
        JobState::InProgress => {
            let mut response = StatusCode::ACCEPTED.into_response();
            let headers = response.headers_mut();
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER));
            if let Ok(progress) = HeaderValue::from_str(&job.progress) {
                headers.insert("x-progress", progress);
            }
            Ok(response)
        }
        JobState::Completed => {
            let files = format!("{}/bulkfiles/{id}", state.settings().fhir_base_url());
            let manifest = state.bulk().manifest(&job, &files);
            let mut response = axum::Json(manifest).into_response();
            let expires = job.updated_at + state.bulk().settings().retain.as_secs() as i64;
            let when =
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(expires.max(0) as u64);
            if let Ok(value) = HeaderValue::from_str(&httpdate::fmt_http_date(when)) {
                response.headers_mut().insert(header::EXPIRES, value);
            }
            Ok(response)
        }
        JobState::Failed => Ok(fhir_json(
            StatusCode::INTERNAL_SERVER_ERROR,
            &failure_outcome(&job),
            false,
        )),
    }
}

async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    caller: Option<axum::Extension<Caller>>,
) -> BulkResult {
    let caller = caller_of(caller)?;
    own_job(&state, &caller, &id).await?;
    state.bulk().remove(&id).await.map_err(FhirError::from)?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// Whether `name` is a file the job's manifest lists (`Type-n.ndjson` of an export, the
/// error file of an import), and a name that cannot leave the job's directory.
fn is_output_name(job: &BulkJob, name: &str) -> bool {
    let listed = |text: &str| {
        serde_json::from_str::<Vec<serde_json::Value>>(text)
            .unwrap_or_default()
            .iter()
            .any(|f| f["file"] == name)
    };
    name.ends_with(".ndjson")
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        && (listed(&job.output) || listed(&job.errors))
}

async fn file(
    State(state): State<AppState>,
    Path((id, name)): Path<(String, String)>,
    caller: Option<axum::Extension<Caller>>,
) -> BulkResult {
    let caller = caller_of(caller)?;
    let job = own_job(&state, &caller, &id).await?;
    if job.state != JobState::Completed || !is_output_name(&job, &name) {
        return Err(FhirError::NotFound(format!(
            "the {} job {id} has no file {name:?}",
            job.kind.as_str()
        ))
        .into());
    }
    let path = state.bulk().job_dir(&id).join(&name);
    let opened = tokio::fs::File::open(&path)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => FhirError::NotFound(format!(
                "the {} job {id} has no file {name:?}",
                job.kind.as_str()
            )),
            _ => FhirError::Internal(format!("cannot open {}: {e}", path.display())),
        })?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(opened));
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/fhir+ndjson"),
        )],
        body,
    )
        .into_response())
}
