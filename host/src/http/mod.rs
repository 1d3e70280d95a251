//! The HTTP layer: the only module that knows axum. Each area exposes `fn routes()`;
//! [`app`] merges them and wraps them in the cross-cutting layers (request id, tracing,
//! metrics, body limit).

mod admin;
pub mod bulk;
mod bulk_import;
mod challenge;
mod console;
pub mod fhir;
mod fhir_meta;
mod guard;
mod health;
pub mod oauth;
pub mod resource_server;
pub mod server;
pub mod statuses;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::HeaderName;
use axum::middleware::{self, Next};
use axum::response::Response;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::config::Settings;
use crate::fhir::repository::{Repository, RepositoryOptions};
use crate::gate::{Gate, GateSettings};
use crate::oauth::AuthServer;
use crate::plugins::PluginHost;
use crate::policy::PluginValidator;
use crate::store::Store;
use crate::verifier::TokenVerifier;

/// The header that carries the request id, set when the client did not send one.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Settings,
    store: Store,
    fhir: Repository,
    plugins: Arc<PluginHost>,
    oauth: Arc<AuthServer>,
    verifier: TokenVerifier,
    gate: Gate,
    ready: AtomicBool,
    in_flight: guard::InFlight,
    bulk: crate::fhir::bulk_worker::Exports,
    imports: crate::fhir::bulk_import::Imports,
}

impl AppState {
    /// The state of a server that verifies tokens with its own authorization server.
    pub fn new(
        settings: Settings,
        store: Store,
        plugins: Arc<PluginHost>,
        oauth: Arc<AuthServer>,
    ) -> Self {
        let verifier = TokenVerifier::Local(oauth.clone());
        Self::with_verifier(settings, store, plugins, oauth, verifier)
    }

    /// The state of a server whose FHIR routes accept the tokens `verifier` accepts.
    pub fn with_verifier(
        settings: Settings,
        store: Store,
        plugins: Arc<PluginHost>,
        oauth: Arc<AuthServer>,
        verifier: TokenVerifier,
    ) -> Self {
        let fhir = Repository::new(
            store.clone(),
            Arc::new(PluginValidator(plugins.clone())),
            RepositoryOptions {
                base_url: settings.fhir_base_url(),
                create_on_update: settings.fhir.create_on_update,
                hidden_as_not_found: settings.fhir.hidden_as_not_found,
                search_limits: settings.fhir.search_limits,
            },
        )
        .with_limits(crate::fhir::limits::Limits {
            max_json_depth: settings.limits.max_json_depth,
            max_bundle_entries: settings.limits.max_bundle_entries,
            max_resource_bytes: settings.fhir.max_body_bytes,
        });
        let gate = Gate::new(
            verifier.clone(),
            plugins.clone(),
            store.clone(),
            GateSettings {
                base_url: settings.fhir_base_url(),
                clock_skew_secs: settings.fhir.clock_skew_secs,
                require_basic: settings.fhir.require_basic_auth,
            },
        );
        let in_flight = guard::InFlight::new(settings.limits.max_concurrent_requests);
        let bulk = crate::fhir::bulk_worker::Exports::new(
            store.clone(),
            settings.bulk.clone(),
            settings.fhir_base_url(),
        );
        let imports = crate::fhir::bulk_import::Imports::new(bulk.clone(), fhir.clone());
        Self {
            inner: Arc::new(Inner {
                in_flight,
                bulk,
                imports,
                settings,
                store,
                fhir,
                plugins,
                oauth,
                verifier,
                gate,
                ready: AtomicBool::new(false),
            }),
        }
    }

    fn in_flight(&self) -> &guard::InFlight {
        &self.inner.in_flight
    }

    pub fn plugins(&self) -> &Arc<PluginHost> {
        &self.inner.plugins
    }

    pub fn fhir(&self) -> &Repository {
        &self.inner.fhir
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The authorization server (also what resource servers verify tokens with).
    pub fn oauth(&self) -> &Arc<AuthServer> {
        &self.inner.oauth
    }

    /// What the FHIR routes (and `/admin`) verify access tokens with.
    pub fn verifier(&self) -> &TokenVerifier {
        &self.inner.verifier
    }

    /// Whether a request with a token may touch FHIR data (and the admin API), and within what.
    pub fn gate(&self) -> &Gate {
        &self.inner.gate
    }

    /// The Bulk Data export jobs.
    pub fn bulk(&self) -> &crate::fhir::bulk_worker::Exports {
        &self.inner.bulk
    }

    /// The Bulk Data import jobs.
    pub fn imports(&self) -> &crate::fhir::bulk_import::Imports {
        &self.inner.imports
    }

    /// Marks the server ready: the database answered and the schema is migrated.
    pub fn set_ready(&self) {
        self.inner.ready.store(true, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
    }
}

/// The whole application as a tower service, for the server and for in-process tests.
pub fn app(state: AppState) -> Router {
    let max_body = state.settings().fhir.max_body_bytes;
    let fhir_base = state.settings().fhir.base_path.clone();
    // Install the recorder before the first request is counted.
    crate::telemetry::metrics_handle();
    let mut router = Router::new().merge(health::routes());
    // Two deployment shapes besides the co-located one: an authorization server without
    // FHIR routes (`fhir.enabled = false`), and a FHIR server that trusts a remote issuer
    // (`--issuer`), which serves no authorization-server endpoints of its own.
    if state.settings().fhir.enabled {
        router = router.nest(
            &fhir_base,
            fhir::routes(max_body)
                .merge(fhir_meta::routes())
                .merge(bulk::routes())
                .merge(bulk_import::routes())
                .route_layer(middleware::from_fn_with_state(
                    state.clone(),
                    resource_server::authorize,
                )),
        );
    }
    if !state.verifier().is_remote() {
        router = router.merge(oauth::routes());
    }
    router
        .merge(admin::routes())
        .merge(console::routes())
        .layer(middleware::from_fn_with_state(state.clone(), until_ready))
        .layer(middleware::from_fn_with_state(state.clone(), guard::guard))
        .with_state(state)
        .layer(middleware::from_fn(record_metrics))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    let id = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
                    tracing::info_span!("request", id = %id, method = %req.method(), path = %req.uri().path())
                })
                .on_failure(log_failure),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// Until start-up has finished (migrations, keys, registration at a remote issuer), every
/// route but the health and metrics ones answers 503 with `Retry-After`, in the error shape
/// of the protocol the client speaks: it would otherwise meet a schema that is not there yet.
async fn until_ready(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path();
    if state.is_ready() || path.starts_with("/health/") || path == "/metrics" {
        return next.run(req).await;
    }
    guard::unavailable(
        &state,
        path,
        "Hestia is starting: the database migrations and signing keys are not ready yet; retry in a moment",
    )
}

/// 5xx answers are logged at ERROR, except 503, which says "not now" (starting up, the
/// database gone away, a plugin host that refuses) and is logged at WARN.
fn log_failure(
    class: tower_http::classify::ServerErrorsFailureClass,
    latency: std::time::Duration,
    _span: &tracing::Span,
) {
    use tower_http::classify::ServerErrorsFailureClass;
    let ms = latency.as_millis();
    match class {
        ServerErrorsFailureClass::StatusCode(status)
            if status == axum::http::StatusCode::SERVICE_UNAVAILABLE =>
        {
            tracing::warn!(%status, latency_ms = %ms, "service unavailable");
        }
        other => tracing::error!(classification = %other, latency_ms = %ms, "response failed"),
    }
}

/// Counts requests and records their latency per route template (never per raw path,
/// which would make one time series per resource id).
async fn record_metrics(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().to_string();
    let start = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("hestia_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("hestia_http_request_duration_seconds", "method" => method, "route" => route)
        .record(start.elapsed().as_secs_f64());
    response
}
