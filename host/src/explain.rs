//! `hestia token explain`: the diagnosis the resource server would give a token, offline
//! (against the same database and plugin directory, without a running server).

use std::sync::Arc;

use anyhow::Context;

use crate::config::{IntrospectMode, Settings};
use crate::gate::{Gate, GateSettings, Refusal, classify};
use crate::http::statuses::refusal_answer;
use crate::oauth::AuthServer;
use crate::oauth::tokens::AccessClaims;
use crate::plugins::{PluginHost, PluginSettings};
use crate::store::Store;
use crate::verifier::{RemoteIssuer, TokenVerifier, Verified};
use serde_json::Value;

/// What the server would answer, and why.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// True when a request with this token would be let through.
    pub accepted: bool,
    /// One line per finding, in the order the server checks.
    pub lines: Vec<String>,
}

/// A step's finding: `Err` is the line that says why the token would be refused.
type Step<T> = Result<T, String>;

/// Explains `token` for the FHIR base `resource` (default: this server's), and, when
/// `request` is given (`"GET Patient/123"`), the scope-policy decision on it.
pub async fn explain(
    settings: &Settings,
    token: &str,
    resource: Option<&str>,
    request: Option<&str>,
) -> anyhow::Result<Explanation> {
    let mut lines = Vec::new();
    let outcome = steps(settings, token, resource, request, &mut lines).await?;
    let accepted = outcome.is_ok();
    if let Err(line) = outcome {
        lines.push(line);
    }
    Ok(Explanation { accepted, lines })
}

/// The gate's steps in order, a line each into `lines`, up to the first refusal.
async fn steps(
    settings: &Settings,
    token: &str,
    resource: Option<&str>,
    request: Option<&str>,
    lines: &mut Vec<String>,
) -> anyhow::Result<Step<()>> {
    let jwt = crate::oauth::tokens::unverified_part(token, 0)
        .zip(crate::oauth::tokens::unverified_part(token, 1));
    match token_line(&jwt, settings) {
        Ok(line) => lines.push(line),
        Err(refusal) => return Ok(Err(refusal)),
    }
    let (gate, base) = offline_gate(settings, resource).await?;
    let verified = match gate.verify(token).await {
        Ok(verified) => verified,
        Err(refusal) => return Ok(Err(refused(&refusal))),
    };
    lines.push(verified_line(settings, jwt.is_some(), &verified.claims));

    if let Err(refusal) = gate.accept_audience(&verified.claims) {
        return Ok(Err(refused(&refusal)));
    }
    lines.push(format!("audience: accepted for {base}"));

    if let Some(request) = request {
        match decide(&gate, &verified, request).await {
            Ok(line) => lines.push(line),
            Err(refusal) => return Ok(Err(refusal)),
        }
    }
    Ok(Ok(()))
}

/// What the token says of itself before any check: a JWT's header and claims, or that an
/// opaque token goes to the issuer's introspection (refused without a remote issuer).
fn token_line(jwt: &Option<(Value, Value)>, settings: &Settings) -> Step<String> {
    match (jwt, &settings.issuer) {
        (Some((header, payload)), _) => Ok(format!(
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
        (None, Some(issuer)) => Ok(format!(
            "token: opaque (not a JWT): asking the introspection endpoint of issuer {} with this server's registration, as the server does",
            issuer.url
        )),
        (None, None) => Err(refused(&Refusal::invalid_token(
            "the token is not a JWT (three base64url parts of JSON), and this server issues only JWT access tokens",
        ))),
    }
}

/// The server's own gate over the same database and plugins, for the FHIR base `resource`
/// (default: this server's); with that base.
async fn offline_gate(
    settings: &Settings,
    resource: Option<&str>,
) -> anyhow::Result<(Gate, String)> {
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
    // Step by step (Basic is a property of each request, not of the token: not checked
    // here).
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
    Ok((gate, base))
}

/// What verification found: a JWT's checks (revocation seen or not, by mode), or an
/// opaque token's introspection answer.
fn verified_line(settings: &Settings, is_jwt: bool, claims: &AccessClaims) -> String {
    if is_jwt {
        match &settings.issuer {
            None => "signature, kid, issuer, expiry and revocation: valid".into(),
            Some(issuer) if issuer.introspect == IntrospectMode::Always => {
                "signature, kid, issuer and expiry: valid; active at the issuer's introspection endpoint".into()
            }
            Some(_) => "signature, kid, issuer and expiry: valid (a revocation at the issuer is not seen: issuer.introspect = \"opaque-only\")".into(),
        }
    } else {
        format!(
            "introspection: active; iss {}; sub {}; client_id {}; aud {:?}; scope {:?}; exp {}",
            claims.iss,
            claims.sub,
            claims.client_id,
            claims.aud.0,
            claims.scope,
            crate::oauth::tokens::utc(claims.exp),
        )
    }
}

/// The scope-policy decision on `request` (`"GET Patient/123"`).
async fn decide(gate: &Gate, verified: &Verified, request: &str) -> Step<String> {
    let (method, target) = request.split_once(' ').unwrap_or(("GET", request));
    let method = method.trim().to_ascii_uppercase();
    let (path, query) = target.trim().split_once('?').unwrap_or((target.trim(), ""));
    let query: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
    let fhir_request = classify(&method, path, &query, gate.base_url());
    let caller = gate
        .caller(verified)
        .await
        .map_err(|refusal| format!("not checked: {}", refusal.description()))?;
    match caller.decide(&fhir_request) {
        Ok(access) if access.is_unrestricted() => Ok(format!("{request}: allowed")),
        Ok(access) => Ok(format!("{request}: allowed within {access:?}")),
        Err(e) => Err(format!("{request}: {}", refused(&Refusal::from(e)))),
    }
}

/// The line of a refusal: the answer the server gives it (`401 invalid_token`, ...) and
/// why; a check that could not run is no refusal of the token.
fn refused(refusal: &Refusal) -> String {
    let answer = refusal_answer(refusal);
    let why = refusal.description();
    match refusal {
        Refusal::Unavailable(_) => {
            format!("not checked: {answer} (the server would answer the same): {why}")
        }
        _ => format!("refused: {answer}: {why}"),
    }
}
