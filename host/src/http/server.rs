//! Serving the application on a listener, over TLS or not, until asked to stop; the
//! application itself is assembled and started by `crate::app`.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;

use super::{AppState, app};

/// The application served on one listener, in the background.
pub struct Serving {
    handle: Handle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Stops a [`Serving`]: no new connections, and the requests in flight given a grace
/// period to finish.
#[derive(Clone)]
pub struct Stopper(Handle);

impl Serving {
    /// Serves `state`'s routes on `listener` (over TLS with `tls`).
    pub fn start(
        listener: TcpListener,
        state: AppState,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Self {
        let handle = Handle::new();
        let task = spawn_server(listener, app(state), tls, handle.clone());
        Self { handle, task }
    }

    pub fn stopper(&self) -> Stopper {
        Stopper(self.handle.clone())
    }

    /// Waits until the server has stopped.
    pub async fn finished(self) -> anyhow::Result<()> {
        self.task.await.context("the server task failed")??;
        Ok(())
    }
}

impl Stopper {
    pub fn stop(&self, grace: Duration) {
        self.0.graceful_shutdown(Some(grace));
    }
}

/// Serves `router` on `listener` (over TLS with `tls`) until `handle` shuts it down.
fn spawn_server(
    listener: TcpListener,
    router: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    handle: Handle,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    match tls {
        Some(config) => {
            let server = axum_server::from_tcp_rustls(listener, RustlsConfig::from_config(config))
                .handle(handle);
            tokio::spawn(async move { server.serve(service).await })
        }
        None => {
            let server = axum_server::from_tcp(listener).handle(handle);
            tokio::spawn(async move { server.serve(service).await })
        }
    }
}
