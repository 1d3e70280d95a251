//! The HTTP layer: the only module that knows axum. Each area exposes `fn routes()`;
//! [`app`] merges them and wraps them in the cross-cutting layers (request id, tracing,
//! metrics, body limit).

mod admin;
pub mod fhir;
mod fhir_meta;
mod health;
pub mod oauth;
pub mod resource_server;
pub mod server;

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
    ready: AtomicBool,
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
            },
        );
        Self {
            inner: Arc::new(Inner {
                settings,
                store,
                fhir,
                plugins,
                oauth,
                verifier,
                ready: AtomicBool::new(false),
            }),
        }
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
            fhir::routes(max_body).merge(fhir_meta::routes()).layer(
                middleware::from_fn_with_state(state.clone(), resource_server::authorize),
            ),
        );
    }
    if !state.verifier().is_remote() {
        router = router.merge(oauth::routes());
    }
    router
        .merge(admin::routes())
        .with_state(state)
        .layer(middleware::from_fn(record_metrics))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request| {
                let id = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
                tracing::info_span!("request", id = %id, method = %req.method(), path = %req.uri().path())
            }),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
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
