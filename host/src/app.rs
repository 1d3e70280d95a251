//! `hestia serve`: the application assembled from its parts and started in order. Signal
//! handlers first, then the listeners (and the demo's data), TLS, the remote issuer's
//! discovery, the database, the plugin host, the authorization server and the token
//! verifier; serving starts (every route but health and metrics answering 503 until
//! ready), the migrations run, then the background tasks (the purge of expired records,
//! Bulk Data's purge, the planner's statistics), this server's keys or its registration
//! at the issuer, and ready. `http::server` only serves.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::pin::Pin;
use std::sync::Arc;

use anyhow::Context;

use crate::config::{AdminSettings, OauthSettings, Settings, TlsMode, url_host};
use crate::http::AppState;
use crate::http::server::Serving;
use crate::oauth::{AuthServer, Clock};
use crate::plugins::{PluginHost, PluginSettings};
use crate::policy::PluginTokenPolicy;
use crate::store::{Purged, Store, now_secs, redact};
use crate::tls;
use crate::verifier::{RemoteIssuer, TokenVerifier};

/// The first SIGTERM or SIGINT, with the signal's name.
type Shutdown = Pin<Box<dyn Future<Output = &'static str> + Send>>;

/// Runs the server until SIGTERM or SIGINT, then lets requests in flight finish. With
/// `demo`, first creates (once) the demo data and prints its credentials, once the public
/// URL is known (with `--listen …:0` only after the port is bound).
pub async fn serve(settings: Settings, demo: bool) -> anyhow::Result<()> {
    // Listen for signals before anything can be announced, so that a SIGTERM that follows
    // the "listening" line is always a graceful shutdown and never the default kill.
    // Start-up steps that wait on the network or the database (discovery, connection,
    // migrations, registration) give way to the signal at once: a stop asked for during
    // start-up must not wait for their timeouts.
    let mut shutdown: Shutdown = Box::pin(shutdown_signal()?);
    match start(settings, demo, &mut shutdown).await {
        Ok(running) => running.until(shutdown).await,
        Err(e) => match e.downcast::<Stopped>() {
            Ok(stopped) => {
                stopped.report();
                Ok(())
            }
            Err(e) => Err(e),
        },
    }
}

/// The application once ready: what it serves and what it closes when it stops.
struct Running {
    store: Store,
    servers: Vec<Serving>,
    grace: std::time::Duration,
}

/// Everything up to ready: listeners, TLS, the parts, serving, migrations, background
/// tasks, keys or registration.
async fn start(
    mut settings: Settings,
    demo: bool,
    shutdown: &mut Shutdown,
) -> anyhow::Result<Running> {
    let (listener, basic_listener) = bind(&mut settings, demo).await?;
    let bound = listener.local_addr()?;
    let rustls = tls_config(&settings)?;
    let remote = discover_issuer(&settings, shutdown).await?;
    let connect = Store::connect_with(
        &settings.database_url,
        Some(settings.limits.statement_timeout),
    );
    let step = format!(
        "the connection to the database {}",
        redact(&settings.database_url)
    );
    let store = unless_stopped(shutdown, step, async { Ok(connect.await?) }).await?;
    crate::telemetry::metrics_handle();
    let state = assemble(&settings, &store, remote.as_ref())?;
    let mut servers = vec![Serving::start(listener, state.clone(), rustls.clone())];
    // The same public URL (so the same token audience), database, plugins and keys.
    let basic = basic_listener.map(|listener| {
        let basic = basic_state(&settings, &state);
        servers.push(Serving::start(listener, basic.clone(), rustls));
        basic
    });

    let migrated = async {
        store.migrate().await.with_context(|| {
            format!(
                "cannot prepare the database {}",
                redact(&settings.database_url)
            )
        })
    };
    unless_stopped(shutdown, "the database migrations".to_owned(), migrated).await?;
    // The background tasks read the tables the migrations create, so they start once
    // these exist; readiness does not wait for them.
    spawn_background(&store, &settings, &state);
    let role = match &remote {
        Some(remote) => register(remote, &store, &settings, shutdown).await?,
        None => {
            let auth = state.oauth();
            auth.ensure_keys()
                .await
                .context("cannot prepare the signing keys")?;
            format!("issuer {} (this server)", auth.issuer())
        }
    };
    state.set_ready();
    if let Some(basic) = &basic {
        basic.set_ready();
    }
    announce(bound, &settings, &role);
    Ok(Running {
        store,
        servers,
        grace: settings.limits.shutdown_grace,
    })
}

impl Running {
    /// Serves until `shutdown`, then stops accepting connections and gives the requests
    /// in flight `server.shutdown_grace_secs` to finish.
    async fn until(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let grace = self.grace;
        let stops: Vec<_> = self.servers.iter().map(Serving::stopper).collect();
        tokio::spawn(async move {
            let signal = shutdown.await;
            tracing::info!(%signal, grace_secs = grace.as_secs(), "shutting down: no new connections; finishing requests in flight");
            for stop in stops {
                stop.stop(grace);
            }
        });
        for server in self.servers {
            server.finished().await?;
        }
        self.store.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The listener of `settings.listen` (the default public URL then names the port the
/// system chose for port 0) and, for the demo, the listener of the compatibility FHIR
/// base (`fhir.require_basic_auth`) on a second port of the same address, for the
/// Postman collection's Basic folder; the demo's data is ensured once that base is known.
async fn bind(
    settings: &mut Settings,
    demo: bool,
) -> anyhow::Result<(TcpListener, Option<TcpListener>)> {
    let listener = TcpListener::bind(settings.listen).with_context(|| {
        format!(
            "cannot listen on {} (is another server using the port?)",
            settings.listen
        )
    })?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    if settings.public_url_is_default && settings.listen.port() == 0 {
        // Port 0 asks the system for a free port; the default public URL must name the real one.
        let (scheme, host) = scheme_and_host(&settings.public_url);
        settings.public_url = format!("{scheme}://{host}:{}", bound.port());
    }
    if !demo {
        return Ok((listener, None));
    }
    let basic = TcpListener::bind((settings.listen.ip(), 0))
        .context("cannot listen for the demo's Basic-compatibility FHIR base")?;
    basic.set_nonblocking(true)?;
    let port = basic.local_addr()?.port();
    let (scheme, host) = scheme_and_host(&settings.public_url);
    let base = format!("{scheme}://{host}:{port}{}", settings.fhir.base_path);
    let demo = crate::demo::ensure(settings, &base).await?;
    sayln!("{}", demo.describe(settings));
    Ok((listener, Some(basic)))
}

/// The scheme and host of a URL, without its port.
fn scheme_and_host(url: &str) -> (&str, &str) {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", ""));
    let host = rest.rsplit_once(':').map_or(rest, |(h, _)| h);
    (scheme, host)
}

/// The TLS configuration `settings.tls` asks for: none, the given files, or the
/// development certificate (issued again only when it lacks a name this start needs).
fn tls_config(settings: &Settings) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
    let (dir, mut names) = match &settings.tls {
        TlsMode::Insecure => return Ok(None),
        TlsMode::Files { cert, key } => return Ok(Some(tls::server_config(cert, key)?)),
        TlsMode::DevCert => (
            settings.data_dir.join("tls"),
            tls::default_dev_names(url_host(&settings.public_url).as_deref()),
        ),
    };
    let listen_ip = settings.listen.ip().to_string();
    if !settings.listen.ip().is_unspecified() && !names.contains(&listen_ip) {
        names.push(listen_ip);
    }
    // Keep the names `hestia dev-cert --hostname …` put there: the certificate is
    // reissued only when it lacks a name this start needs.
    for name in tls::existing_dev_names(&dir) {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    let (files, outcome) = tls::ensure_dev_cert(&dir, &names)?;
    tracing::info!(?outcome, cert = %files.cert.display(), "development TLS certificate for {}", names.join(", "));
    sayln!(
        "hestia: development certificate {} (names: {}); trust its CA: curl --cacert {} {}/health/ready",
        files.cert.display(),
        names.join(", "),
        files.ca_cert.display(),
        settings.public_url
    );
    Ok(Some(tls::server_config(&files.cert, &files.key)?))
}

/// Remote mode: the issuer's discovery and keys before anything else, so that a wrong
/// URL, an untrusted CA or a certificate for other names stops the start with a
/// message that says what to do.
async fn discover_issuer(
    settings: &Settings,
    shutdown: &mut Shutdown,
) -> anyhow::Result<Option<Arc<RemoteIssuer>>> {
    let Some(issuer) = &settings.issuer else {
        return Ok(None);
    };
    let remote = RemoteIssuer::new(settings, Clock::system())?;
    let found = async {
        remote
            .discover()
            .await
            .with_context(|| format!("cannot use the issuer {}", issuer.url))?;
        Ok(())
    };
    let step = format!("discovery of the issuer {}", issuer.url);
    unless_stopped(shutdown, step, found).await?;
    Ok(Some(Arc::new(remote)))
}

/// The plugin host, the authorization server (with the plugins' token policy), the token
/// verifier (this server's, or the remote issuer's) and the state the routes share.
fn assemble(
    settings: &Settings,
    store: &Store,
    remote: Option<&Arc<RemoteIssuer>>,
) -> anyhow::Result<AppState> {
    let plugins = PluginHost::start(PluginSettings::configured(settings)?)
        .context("cannot start the plugin host")?;
    let auth = Arc::new(
        AuthServer::new(store.clone(), settings)
            .with_policy(Arc::new(PluginTokenPolicy(plugins.clone()))),
    );
    let verifier = match remote {
        Some(remote) => TokenVerifier::Remote(remote.clone()),
        None => TokenVerifier::Local(auth.clone()),
    };
    Ok(AppState::with_verifier(
        settings.clone(),
        store.clone(),
        plugins,
        auth,
        verifier,
    ))
}

/// The state of the demo's compatibility FHIR base: `state`'s parts, with
/// `fhir.require_basic_auth`.
fn basic_state(settings: &Settings, state: &AppState) -> AppState {
    let mut compat = settings.clone();
    compat.fhir.require_basic_auth = true;
    AppState::with_verifier(
        compat,
        state.store().clone(),
        state.plugins().clone(),
        state.oauth().clone(),
        state.verifier().clone(),
    )
}

/// The tasks that run beside serving: the purge of expired authorization records (and
/// console sessions), Bulk Data's purge, and the planner's statistics for the data
/// there already (see `Store::analyze`), and the metrics' upkeep.
fn spawn_background(store: &Store, settings: &Settings, state: &AppState) {
    crate::telemetry::spawn_metrics_upkeep();
    spawn_oauth_purge(store.clone(), &settings.oauth, &settings.admin);
    state.bulk().spawn_purge();
    let analyzing = store.clone();
    tokio::spawn(async move {
        if let Err(e) = analyzing.analyze().await {
            tracing::warn!(error = %e, "cannot refresh the planner's statistics");
        }
    });
}

/// This FHIR server's registration at the remote issuer (made or checked), as the
/// "listening" line names it.
async fn register(
    remote: &RemoteIssuer,
    store: &Store,
    settings: &Settings,
    shutdown: &mut Shutdown,
) -> anyhow::Result<String> {
    let registered = async {
        remote.ensure_registration(store).await.with_context(|| {
            format!(
                "cannot register this FHIR server at the issuer {}",
                remote.issuer()
            )
        })
    };
    let step = format!("the registration at the issuer {}", remote.issuer());
    let outcome = unless_stopped(shutdown, step, registered).await?;
    if settings.fhir.require_basic_auth && store.count_users().await.unwrap_or(0) == 0 {
        tracing::warn!(
            "fhir.require_basic_auth = true, and this FHIR server has no accounts: Basic credentials are checked against its own users (not the issuer's), so every request is refused until `hestia user add NAME --password-stdin` runs against this server's database"
        );
    }
    let client = remote
        .credentials()
        .map(|c| c.client_id)
        .unwrap_or_default();
    Ok(format!(
        "issuer {} (client {client}, {})",
        remote.issuer(),
        format!("{outcome:?}").to_lowercase()
    ))
}

/// The "listening" line, printed once the server is ready.
fn announce(bound: SocketAddr, settings: &Settings, role: &str) {
    let fhir = if settings.fhir.enabled {
        format!("FHIR base {}", settings.fhir_base_url())
    } else {
        "FHIR disabled (authorization server only)".to_string()
    };
    sayln!(
        "hestia: listening on {bound}; public URL {}; {fhir}; database {}; {role}",
        settings.public_url,
        redact(&settings.database_url)
    );
    tracing::info!(%bound, public_url = %settings.public_url, "ready");
}

/// Deletes expired authorization-server records at start and then every
/// `oauth.purge_interval_secs`, keeping them `oauth.purge_after_secs` past their expiry.
/// A failed purge is logged and tried again at the next tick; serving goes on. The same
/// tick deletes idle console sessions and audit events past `admin.audit_retain_days`.
fn spawn_oauth_purge(store: Store, oauth: &OauthSettings, admin: &AdminSettings) {
    let (interval, keep) = (oauth.purge_interval, oauth.purge_after.as_secs() as i64);
    let admin = admin.clone();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match crate::console::purge(&store, &admin, now_secs()).await {
                Ok(purged) if purged != Default::default() => {
                    tracing::info!(
                        ?purged,
                        "deleted idle console sessions and old audit events"
                    )
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot purge console sessions and audit events")
                }
            }
            match store.purge_expired_oauth(now_secs() - keep).await {
                Ok(purged) => {
                    for (record, n) in [
                        ("access_token", purged.access_tokens),
                        ("code", purged.codes),
                        ("refresh_token", purged.refresh_tokens),
                        ("grant", purged.grants),
                    ] {
                        metrics::counter!("hestia_oauth_purged_total", "record" => record)
                            .increment(n);
                    }
                    if purged != Purged::default() {
                        tracing::info!(?purged, "deleted expired authorization records");
                    }
                }
                Err(e) => tracing::warn!(
                    error = %e,
                    "cannot delete expired authorization records; trying again in {} s",
                    interval.as_secs()
                ),
            }
        }
    });
}

/// A stop asked for during start-up, before the server was ready: `step` is what it
/// interrupted.
#[derive(Debug, thiserror::Error)]
#[error("stopped by {signal} during {step}")]
struct Stopped {
    signal: &'static str,
    step: String,
}

impl Stopped {
    /// Said on standard error; stopping is what was asked, so `serve` succeeds.
    fn report(&self) {
        let Self { signal, step } = self;
        tracing::info!(%signal, %step, "stopped during start-up");
        eprintln!("hestia: stopped by {signal} during {step}; the server did not start");
    }
}

/// Runs a start-up `step` unless the shutdown signal comes first ([`Stopped`]).
async fn unless_stopped<T>(
    shutdown: &mut Shutdown,
    step: String,
    work: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::select! {
        done = work => done,
        signal = shutdown => Err(Stopped { signal, step }.into()),
    }
}

/// Resolves on the first SIGTERM or SIGINT (Ctrl-C), with the signal's name.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = &'static str> + Send> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        })
    }
}
