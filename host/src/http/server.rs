//! `hestia serve`: TLS setup, listener, migrations, readiness, graceful shutdown.

use std::net::TcpListener;
use std::sync::Arc;

use anyhow::Context;
use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;

use super::{AppState, app};
use crate::config::{OauthSettings, Settings, TlsMode, url_host};
use crate::oauth::{AuthServer, Clock};
use crate::plugins::{PluginHost, PluginSettings};
use crate::policy::PluginTokenPolicy;
use crate::store::{Purged, Store, now_secs, redact};
use crate::tls;
use crate::verifier::{RemoteIssuer, TokenVerifier};

/// Runs the server until SIGTERM or SIGINT, then lets requests in flight finish. With
/// `demo`, first creates (once) the demo data and prints its credentials, once the public
/// URL is known (with `--listen …:0` only after the port is bound).
pub async fn serve(mut settings: Settings, demo: bool) -> anyhow::Result<()> {
    // Listen for signals before anything can be announced, so that a SIGTERM that follows
    // the "listening" line is always a graceful shutdown and never the default kill.
    // Start-up steps that wait on the network or the database (discovery, connection,
    // migrations, registration) give way to the signal at once: a stop asked for during
    // start-up must not wait for their timeouts.
    let mut shutdown = Box::pin(shutdown_signal()?);
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
        let (scheme, rest) = settings
            .public_url
            .split_once("://")
            .unwrap_or(("http", ""));
        let host = rest.rsplit_once(':').map_or(rest, |(h, _)| h);
        settings.public_url = format!("{scheme}://{host}:{}", bound.port());
    }
    // The demo also serves the compatibility FHIR base (`fhir.require_basic_auth`) on a
    // second port of the same address, for the Postman collection's Basic folder.
    let basic_listener = if demo {
        let listener = TcpListener::bind((settings.listen.ip(), 0))
            .context("cannot listen for the demo's Basic-compatibility FHIR base")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let (scheme, rest) = settings
            .public_url
            .split_once("://")
            .unwrap_or(("http", ""));
        let host = rest.rsplit_once(':').map_or(rest, |(h, _)| h);
        let base = format!("{scheme}://{host}:{port}{}", settings.fhir.base_path);
        let demo = crate::demo::ensure(&settings, &base).await?;
        println!("{}", demo.describe(&settings));
        Some(listener)
    } else {
        None
    };

    let rustls = match &settings.tls {
        TlsMode::Insecure => None,
        TlsMode::Files { cert, key } => Some(tls::server_config(cert, key)?),
        TlsMode::DevCert => {
            let dir = settings.data_dir.join("tls");
            let mut names = tls::default_dev_names(url_host(&settings.public_url).as_deref());
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
            println!(
                "hestia: development certificate {} (names: {}); trust its CA: curl --cacert {} {}/health/ready",
                files.cert.display(),
                names.join(", "),
                files.ca_cert.display(),
                settings.public_url
            );
            Some(tls::server_config(&files.cert, &files.key)?)
        }
    };

    // Remote mode: the issuer's discovery and keys before anything else, so that a wrong
    // URL, an untrusted CA or a certificate for other names stops the start with a
    // message that says what to do.
    let remote = match &settings.issuer {
        Some(issuer) => {
            let remote = RemoteIssuer::new(&settings, Clock::system())?;
            tokio::select! {
                found = remote.discover() => {
                    found.with_context(|| format!("cannot use the issuer {}", issuer.url))?;
                }
                signal = &mut shutdown => {
                    return stopped(signal, &format!("discovery of the issuer {}", issuer.url));
                }
            }
            Some(Arc::new(remote))
        }
        None => None,
    };

    let store = tokio::select! {
        store = Store::connect_with(&settings.database_url, Some(settings.limits.statement_timeout)) => store?,
        signal = &mut shutdown => {
            return stopped(signal, &format!("the connection to the database {}", redact(&settings.database_url)));
        }
    };
    crate::telemetry::metrics_handle();
    let plugins = PluginHost::start(PluginSettings::configured(&settings)?)
        .context("cannot start the plugin host")?;
    let auth = Arc::new(
        AuthServer::new(store.clone(), &settings)
            .with_policy(Arc::new(PluginTokenPolicy(plugins.clone()))),
    );
    let verifier = match &remote {
        Some(remote) => TokenVerifier::Remote(remote.clone()),
        None => TokenVerifier::Local(auth.clone()),
    };
    let state = AppState::with_verifier(
        settings.clone(),
        store.clone(),
        plugins,
        auth.clone(),
        verifier,
    );
    let handle = Handle::new();
    let server = spawn_server(listener, app(state.clone()), rustls.clone(), handle.clone());
    // The same public URL (so the same token audience), database, plugins and keys.
    let basic = basic_listener.map(|listener| {
        let mut compat = settings.clone();
        compat.fhir.require_basic_auth = true;
        let state = AppState::with_verifier(
            compat,
            store.clone(),
            state.plugins().clone(),
            auth.clone(),
            state.verifier().clone(),
        );
        let handle = Handle::new();
        let task = spawn_server(listener, app(state.clone()), rustls, handle.clone());
        (state, handle, task)
    });

    tokio::select! {
        migrated = store.migrate() => migrated.with_context(|| {
            format!(
                "cannot prepare the database {}",
                redact(&settings.database_url)
            )
        })?,
        signal = &mut shutdown => {
            return stopped(signal, "the database migrations");
        }
    }
    // The purge reads the tables the migrations create, so it starts once they exist; in
    // the background, as readiness does not wait for it.
    spawn_oauth_purge(store.clone(), &settings.oauth, &settings.admin);
    state.bulk().spawn_purge();
    // The planner's statistics for the data there already (see `Store::analyze`); in
    // the background, readiness does not wait for it.
    let analyzing = store.clone();
    tokio::spawn(async move {
        if let Err(e) = analyzing.analyze().await {
            tracing::warn!(error = %e, "cannot refresh the planner's statistics");
        }
    });
    let role = match &remote {
        Some(remote) => {
            let outcome = tokio::select! {
                outcome = remote.ensure_registration(&store) => outcome.with_context(|| {
                    format!(
                        "cannot register this FHIR server at the issuer {}",
                        remote.issuer()
                    )
                })?,
                signal = &mut shutdown => {
                    return stopped(signal, &format!("the registration at the issuer {}", remote.issuer()));
                }
            };
            if settings.fhir.require_basic_auth && store.count_users().await.unwrap_or(0) == 0 {
                tracing::warn!(
                    "fhir.require_basic_auth = true, and this FHIR server has no accounts: Basic credentials are checked against its own users (not the issuer's), so every request is refused until `hestia user add NAME --password-stdin` runs against this server's database"
                );
            }
            let client = remote
                .credentials()
                .map(|c| c.client_id)
                .unwrap_or_default();
            format!(
                "issuer {} (client {client}, {})",
                remote.issuer(),
                format!("{outcome:?}").to_lowercase()
            )
        }
        None => {
            auth.ensure_keys()
                .await
                .context("cannot prepare the signing keys")?;
            format!("issuer {} (this server)", auth.issuer())
        }
    };
    state.set_ready();
    if let Some((basic, _, _)) = &basic {
        basic.set_ready();
    }
    let fhir = if settings.fhir.enabled {
        format!("FHIR base {}", settings.fhir_base_url())
    } else {
        "FHIR disabled (authorization server only)".to_string()
    };
    println!(
        "hestia: listening on {bound}; public URL {}; {fhir}; database {}; {role}",
        settings.public_url,
        redact(&settings.database_url)
    );
    tracing::info!(%bound, public_url = %settings.public_url, "ready");

    let mut handles = vec![handle.clone()];
    handles.extend(basic.as_ref().map(|(_, h, _)| h.clone()));
    let grace = settings.limits.shutdown_grace;
    tokio::spawn(async move {
        let signal = shutdown.await;
        tracing::info!(%signal, grace_secs = grace.as_secs(), "shutting down: no new connections; finishing requests in flight");
        for h in handles {
            h.graceful_shutdown(Some(grace));
        }
    });
    server.await.context("the server task failed")??;
    if let Some((_, _, task)) = basic {
        task.await.context("the server task failed")??;
    }
    store.close().await;
    tracing::info!("stopped");
    Ok(())
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

/// Deletes expired authorization-server records at start and then every
/// `oauth.purge_interval_secs`, keeping them `oauth.purge_after_secs` past their expiry.
/// A failed purge is logged and tried again at the next tick; serving goes on. The same
/// tick deletes idle console sessions and audit events past `admin.audit_retain_days`.
fn spawn_oauth_purge(store: Store, oauth: &OauthSettings, admin: &crate::config::AdminSettings) {
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

/// A stop asked for during start-up (before the server was ready): said on standard
/// error, and a success, since stopping is what was asked.
fn stopped(signal: &str, step: &str) -> anyhow::Result<()> {
    tracing::info!(%signal, %step, "stopped during start-up");
    eprintln!("hestia: stopped by {signal} during {step}; the server did not start");
    Ok(())
}

/// Resolves on the first SIGTERM or SIGINT (Ctrl-C), with the signal's name.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = &'static str> + Send> {
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
