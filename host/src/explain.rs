//! `hestia token explain`: the diagnosis the resource server would give a token, offline
//! (against the same database and plugin directory, without a running server).

use std::sync::Arc;

use anyhow::Context;

use crate::config::{IntrospectMode, Settings};
use crate::gate::{Gate, GateSettings, Refusal, classify};
use crate::oauth::AuthServer;
use crate::plugins::{PluginHost, PluginSettings};
use crate::store::Store;
use crate::verifier::{RemoteIssuer, TokenVerifier};

/// What the server would answer, and why.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// True when a request with this token would be let through.
    pub accepted: bool,
    /// One line per finding, in the order the server checks.
    pub lines: Vec<String>,
}

/// Explains `token` for the FHIR base `resource` (default: this server's), and, when
/// `request` is given (`"GET Patient/123"`), the scope-policy decision on it.
pub async fn explain(
    settings: &Settings,
    token: &str,
    resource: Option<&str>,
    request: Option<&str>,
) -> anyhow::Result<Explanation> {
    let mut lines = Vec::new();
    let jwt = crate::oauth::tokens::unverified_part(token, 0)
        .zip(crate::oauth::tokens::unverified_part(token, 1));
    match (&jwt, &settings.issuer) {
        (Some((header, payload)), _) => lines.push(format!(
            "token: kid {} alg {} typ {}; iss {}; sub {}; client_id {}; aud {}; scope {:?}; exp {}",
            header["kid"],
            header["alg"],
            header["typ"],
            payload["iss"],
            payload["sub"],
            payload["client_id"],
            payload["aud"],
            payload["scope"].as_str().unwrap_or(""),
            payload["exp"]
                .as_i64()
                .map(crate::oauth::tokens::utc)
                .unwrap_or_else(|| "missing".into()),
        )),
        // A remote issuer may issue opaque tokens: the server asks its introspection
        // endpoint, and so does this.
        (None, Some(issuer)) => lines.push(format!(
            "token: opaque (not a JWT): asking the introspection endpoint of issuer {} with this server's registration, as the server does",
            issuer.url
        )),
        (None, None) => {
            lines.push(
                "refused: 401 invalid_token: the token is not a JWT (three base64url parts of JSON), and this server issues only JWT access tokens"
                    .into(),
            );
            return Ok(Explanation {
                accepted: false,
                lines,
            });
        }
    }

    let store = Store::open(&settings.database_url).await?;
    // The same verifier as the server: this server's own keys, or the remote issuer's
    // (discovery and JWKS fetched now; introspection with the stored registration).
    let verifier = match &settings.issuer {
        Some(issuer) => {
            let remote = RemoteIssuer::new(settings, crate::oauth::Clock::system())?;
            remote
                .discover()
                .await
                .with_context(|| format!("cannot use the issuer {}", issuer.url))?;
            remote.load_credentials(&store).await?;
            TokenVerifier::Remote(Arc::new(remote))
        }
        None => TokenVerifier::Local(Arc::new(AuthServer::new(store.clone(), settings))),
    };
    let plugins: Arc<PluginHost> = PluginHost::start(PluginSettings {
        watch: false,
        ..PluginSettings::configured(settings)?
    })?;
    let base = resource
        .map(|r| r.trim_end_matches('/').to_string())
        .unwrap_or_else(|| settings.fhir_base_url());
    // The server's own gate, step by step (Basic is a property of each request, not of the
    // token: not checked here).
    let gate = Gate::new(
        verifier,
        plugins,
        store,
        GateSettings {
            base_url: base.clone(),
            clock_skew_secs: settings.fhir.clock_skew_secs,
            require_basic: false,
        },
    );
    let refused = |mut lines: Vec<String>, line: String| {
        lines.push(line);
        Ok(Explanation {
            accepted: false,
            lines,
        })
    };
    let verified = match gate.verify(token).await {
        Ok(verified) => verified,
        Err(Refusal::Unavailable(why)) => {
            return refused(
                lines,
                format!("not checked: 503 (the server would answer the same): {why}"),
            );
        }
        Err(refusal) => {
            return refused(
                lines,
                format!("refused: 401 invalid_token: {}", refusal.description()),
            );
        }
    };
    let claims = &verified.claims;
    if jwt.is_some() {
        lines.push(match &settings.issuer {
            None => "signature, kid, issuer, expiry and revocation: valid".into(),
            Some(issuer) if issuer.introspect == IntrospectMode::Always => {
                "signature, kid, issuer and expiry: valid; active at the issuer's introspection endpoint".into()
            }
            Some(_) => "signature, kid, issuer and expiry: valid (a revocation at the issuer is not seen: issuer.introspect = \"opaque-only\")".into(),
        });
    } else {
        lines.push(format!(
            "introspection: active; iss {}; sub {}; client_id {}; aud {:?}; scope {:?}; exp {}",
            claims.iss,
            claims.sub,
            claims.client_id,
            claims.aud.0,
            claims.scope,
            crate::oauth::tokens::utc(claims.exp),
        ));
    }

    if let Err(refusal) = gate.accept_audience(claims) {
        return refused(
            lines,
            format!("refused: 401 invalid_token: {}", refusal.description()),
        );
    }
    lines.push(format!("audience: accepted for {base}"));

    if let Some(request) = request {
        let (method, target) = request.split_once(' ').unwrap_or(("GET", request));
        let method = method.trim().to_ascii_uppercase();
        let (path, query) = target.trim().split_once('?').unwrap_or((target.trim(), ""));
        let query: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
        let fhir_request = classify(&method, path, &query, gate.base_url());
        let caller = match gate.caller(&verified).await {
            Ok(caller) => caller,
            Err(refusal) => {
                return refused(lines, format!("not checked: {}", refusal.description()));
            }
        };
        match caller.decide(&fhir_request) {
            Ok(access) if access.is_unrestricted() => lines.push(format!("{request}: allowed")),
            Ok(access) => lines.push(format!("{request}: allowed within {access:?}")),
            Err(e) => {
                lines.push(format!("{request}: refused: 403 insufficient_scope: {e}"));
                return Ok(Explanation {
                    accepted: false,
                    lines,
                });
            }
        }
    }
    Ok(Explanation {
        accepted: true,
        lines,
    })
}
