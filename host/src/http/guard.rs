//! Bounds every request but health and metrics: at most `server.max_concurrent_requests`
//! in flight, the others answered 503 with `Retry-After` at once (shed, not queued, so that
//! latency does not pile up behind a slow backlog), and each one given at most
//! `server.request_timeout_secs` before it is dropped and answered 503.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use super::AppState;
use crate::fhir::outcome::{Issue, operation_outcome};

/// Requests that count towards the concurrency limit and the timeout.
#[derive(Debug, Clone)]
pub struct InFlight(Arc<Semaphore>);

impl InFlight {
    pub fn new(max: usize) -> Self {
        Self(Arc::new(Semaphore::new(max)))
    }
}

/// Whether `path` is exempt: health and metrics stay observable under any load.
fn exempt(path: &str) -> bool {
    path.starts_with("/health/") || path == "/metrics"
}

/// The middleware: load shedding, then the timeout.
pub async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if exempt(req.uri().path()) {
        return next.run(req).await;
    }
    let limits = &state.settings().limits;
    let Ok(_permit) = state.in_flight().0.clone().try_acquire_owned() else {
        metrics::counter!("hestia_http_requests_shed_total").increment(1);
        let why = format!(
            "the server is at its limit of {} requests in flight (server.max_concurrent_requests); retry in a moment",
            limits.max_concurrent_requests
        );
        return unavailable(&state, req.uri().path(), &why);
    };
    let path = req.uri().path().to_owned();
    match tokio::time::timeout(limits.request_timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            metrics::counter!("hestia_http_requests_timed_out_total").increment(1);
            let why = format!(
                "the request did not finish within {} s (server.request_timeout_secs) and was stopped; nothing it had begun to write was kept",
                limits.request_timeout.as_secs()
            );
            tracing::warn!(%path, "{why}");
            unavailable(&state, &path, &why)
        }
    }
}

/// 503 with `Retry-After`, in the error shape of the protocol the client speaks: an
/// OperationOutcome under the FHIR base, RFC 6749 JSON elsewhere.
pub fn unavailable(state: &AppState, path: &str, why: &str) -> Response {
    let base = &state.settings().fhir.base_path;
    let fhir = state.settings().fhir.enabled
        && (path == base
            || path
                .strip_prefix(base.as_str())
                .is_some_and(|r| r.starts_with('/')));
    let (content_type, body) = if fhir {
        let outcome = operation_outcome(&[Issue::error("transient", why)]);
        (super::fhir::FHIR_JSON, outcome)
    } else {
        (
            "application/json",
            serde_json::json!({"error": "temporarily_unavailable", "error_description": why}),
        )
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [
            (header::CONTENT_TYPE, content_type),
            (header::RETRY_AFTER, "1"),
        ],
        body.to_string(),
    )
        .into_response()
}
