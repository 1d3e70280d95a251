//! A remote authorization server, as the FHIR server trusts it: discovery (OpenID Connect
//! Discovery, then RFC 8414), its JWKS cached in memory and refetched for an unknown `kid`
//! (at most once per `issuer.jwks_refetch_secs`), and RFC 7662 introspection with this
//! server's own client credentials, cached for `issuer.introspection_cache_secs` (never
//! beyond the token's `exp`). RFC 9068 JWTs (`typ: at+jwt`) are verified locally; other
//! tokens, opaque or JWTs of other profiles, go to introspection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use serde_json::{Value, json};

use super::{IssuerError, Verified, diagnose};
use crate::config::{IntrospectMode, IssuerSettings, Settings};
use crate::oauth::Clock;
use crate::oauth::tokens::{self, AccessClaims, TokenError};

/// The JWKS is fetched again after this long even when every `kid` is known, so that
/// keys the issuer retired stop verifying.
pub const JWKS_MAX_AGE_SECS: i64 = 300;
/// Introspection answers kept at most (expired ones are dropped first).
const INTROSPECTION_CACHE_ENTRIES: usize = 10_000;

/// What discovery found.
#[derive(Debug, Clone)]
pub struct Discovery {
    /// The issuer as its metadata names it (tokens' `iss` must be exactly this).
    pub issuer: String,
    /// The issuer's metadata document, as served.
    pub metadata: Value,
    pub jwks_uri: String,
    pub introspection_endpoint: Option<String>,
    pub registration_endpoint: Option<String>,
}

/// This server's client credentials at the issuer (from its registration).
#[derive(Debug, Clone)]
pub struct Credentials {
    pub client_id: String,
    pub client_secret: String,
}

struct Keys {
    set: Arc<JwkSet>,
    fetched_at: i64,
}

struct Introspected {
    until: i64,
    outcome: Result<(AccessClaims, String), TokenError>,
}

pub struct RemoteIssuer {
    pub(super) settings: IssuerSettings,
    pub(super) fhir_base: String,
    pub(super) http: reqwest::Client,
    clock: Arc<Clock>,
    discovery: OnceLock<Discovery>,
    pub(super) credentials: RwLock<Option<Credentials>>,
    keys: RwLock<Option<Keys>>,
    last_fetch: AtomicI64,
    fetch_lock: tokio::sync::Mutex<()>,
    introspected: Mutex<HashMap<String, Introspected>>,
    jwks_fetches: AtomicU64,
    introspections: AtomicU64,
}

fn text(v: &Value, field: &str) -> Option<String> {
    v.get(field).and_then(Value::as_str).map(str::to_string)
}

impl RemoteIssuer {
    /// The HTTP client toward the issuer (with `--issuer-ca` trusted besides the system's
    /// roots); nothing is fetched yet: see [`Self::discover`].
    pub fn new(settings: &Settings, clock: Arc<Clock>) -> Result<Self, IssuerError> {
        let issuer = settings
            .issuer
            .clone()
            .ok_or_else(|| IssuerError("no issuer is configured".into()))?;
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("hestia/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &issuer.ca {
            let pem = std::fs::read(ca).map_err(|e| {
                IssuerError(format!(
                    "cannot read the issuer's CA certificate {}: {e}",
                    ca.display()
                ))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                IssuerError(format!("{} is not a PEM certificate: {e}", ca.display()))
            })?;
            if certs.is_empty() {
                return Err(IssuerError(format!(
                    "{} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)",
                    ca.display()
                )));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| IssuerError(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            settings: issuer,
            fhir_base: settings.fhir_base_url(),
            http,
            clock,
            discovery: OnceLock::new(),
            credentials: RwLock::new(None),
            keys: RwLock::new(None),
            last_fetch: AtomicI64::new(i64::MIN),
            fetch_lock: tokio::sync::Mutex::new(()),
            introspected: Mutex::new(HashMap::new()),
            jwks_fetches: AtomicU64::new(0),
            introspections: AtomicU64::new(0),
        })
    }

    pub fn issuer(&self) -> &str {
        &self.settings.url
    }

    /// What discovery found (`None` before [`Self::discover`] succeeded).
    pub fn discovery(&self) -> Option<&Discovery> {
        self.discovery.get()
    }

    /// JWKS documents fetched so far (start-up included).
    pub fn jwks_fetches(&self) -> u64 {
        self.jwks_fetches.load(Ordering::Relaxed)
    }

    /// Introspection requests sent so far (cache hits not counted).
    pub fn introspections(&self) -> u64 {
        self.introspections.load(Ordering::Relaxed)
    }

    /// This server's client credentials at the issuer, once registered.
    pub fn credentials(&self) -> Option<Credentials> {
        self.credentials.read().ok().and_then(|c| c.clone())
    }

    /// GETs `url` as JSON; a failure to connect is explained (TLS, DNS, refusal).
    pub(super) async fn get_json(&self, url: &str) -> Result<(u16, Value), IssuerError> {
        let response = self
            .http
            .get(url)
            .header("accept", "application/json")
            .send()
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => return Err(IssuerError(diagnose::describe(url, &e).await)),
        };
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        let json = serde_json::from_str(&body).unwrap_or(Value::String(body));
        Ok((status, json))
    }

    /// Fetches the issuer's metadata and JWKS. With an error that says what to do
    /// (serve reports it at start-up, before it is ready).
    pub async fn discover(&self) -> Result<&Discovery, IssuerError> {
        if let Some(d) = self.discovery.get() {
            return Ok(d);
        }
        let issuer = self.issuer().to_string();
        let parsed = url::Url::parse(&issuer)
            .map_err(|e| IssuerError(format!("the issuer URL {issuer} is not a URL: {e}")))?;
        // OpenID Connect Discovery appends to the issuer; RFC 8414 inserts before its path.
        let path = parsed.path().trim_end_matches('/');
        let origin = parsed.origin().ascii_serialization();
        let candidates = [
            format!("{issuer}/.well-known/openid-configuration"),
            format!("{origin}/.well-known/oauth-authorization-server{path}"),
        ];
        let mut tried = Vec::new();
        let mut metadata = None;
        for url in &candidates {
            let (status, body) = self.get_json(url).await?;
            match status {
                200 if body.is_object() => {
                    metadata = Some(body);
                    break;
                }
                200 => {
                    return Err(IssuerError(format!(
                        "the issuer's metadata at {url} is not a JSON object: {body}"
                    )));
                }
                _ => tried.push(format!("{url} answered HTTP {status}")),
            }
        }
        let Some(metadata) = metadata else {
            return Err(IssuerError(format!(
                "{issuer} does not publish OAuth 2.0 authorization server metadata ({}); is --issuer the authorization server's issuer URL?",
                tried.join("; ")
            )));
        };
        let named = text(&metadata, "issuer").unwrap_or_default();
        if named.trim_end_matches('/') != issuer {
            return Err(IssuerError(format!(
                "the metadata of {issuer} names the issuer {named:?}: tokens it issues would not match; use --issuer {named}"
            )));
        }
        let jwks_uri = text(&metadata, "jwks_uri").ok_or_else(|| {
            IssuerError(format!(
                "the metadata of {issuer} has no jwks_uri: its tokens cannot be verified"
            ))
        })?;
        let discovery = Discovery {
            issuer: named,
            jwks_uri,
            introspection_endpoint: text(&metadata, "introspection_endpoint"),
            registration_endpoint: text(&metadata, "registration_endpoint"),
            metadata,
        };
        let set = self.fetch_jwks(&discovery.jwks_uri).await?;
        self.store_keys(set, self.clock.now());
        Ok(self.discovery.get_or_init(|| discovery))
    }

    async fn fetch_jwks(&self, jwks_uri: &str) -> Result<JwkSet, IssuerError> {
        self.jwks_fetches.fetch_add(1, Ordering::Relaxed);
        self.last_fetch.store(self.clock.now(), Ordering::Relaxed);
        let (status, body) = self.get_json(jwks_uri).await?;
        if status != 200 {
            return Err(IssuerError(format!(
                "the issuer's JWKS at {jwks_uri} answered HTTP {status}: {body}"
            )));
        }
        serde_json::from_value(body).map_err(|e| {
            IssuerError(format!(
                "the issuer's JWKS at {jwks_uri} is not a JWK Set: {e}"
            ))
        })
    }

    fn store_keys(&self, set: JwkSet, now: i64) {
        if let Ok(mut keys) = self.keys.write() {
            *keys = Some(Keys {
                set: Arc::new(set),
                fetched_at: now,
            });
        }
    }

    fn cached_keys(&self) -> Option<(Arc<JwkSet>, i64)> {
        self.keys
            .read()
            .ok()
            .and_then(|k| k.as_ref().map(|k| (k.set.clone(), k.fetched_at)))
    }

    /// The keys to verify a token of `kid` with: the cached set while it knows `kid` and
    /// is younger than [`JWKS_MAX_AGE_SECS`]; otherwise fetched again, at most once per
    /// refetch interval (a stream of tokens with made-up `kid`s costs the issuer nothing).
    async fn keys_for(&self, kid: &str) -> Result<Arc<JwkSet>, TokenError> {
        let now = self.clock.now();
        let usable = |cached: &Option<(Arc<JwkSet>, i64)>| {
            cached
                .as_ref()
                .filter(|(set, at)| set.find(kid).is_some() && now - at < JWKS_MAX_AGE_SECS)
                .map(|(set, _)| set.clone())
        };
        let cached = self.cached_keys();
        if let Some(set) = usable(&cached) {
            return Ok(set);
        }
        let interval = self.settings.jwks_refetch_interval.as_secs() as i64;
        let due = |last: i64| last == i64::MIN || now.saturating_sub(last) >= interval;
        if due(self.last_fetch.load(Ordering::Relaxed)) {
            let _guard = self.fetch_lock.lock().await;
            let cached = self.cached_keys();
            if let Some(set) = usable(&cached) {
                return Ok(set);
            }
            if due(self.last_fetch.load(Ordering::Relaxed))
                && let Some(discovery) = self.discovery.get()
            {
                match self.fetch_jwks(&discovery.jwks_uri).await {
                    Ok(set) => {
                        self.store_keys(set, now);
                        tracing::info!(issuer = %self.issuer(), %kid, "fetched the issuer's JWKS again");
                    }
                    Err(e) => {
                        tracing::warn!(issuer = %self.issuer(), "cannot refetch the JWKS: {e}")
                    }
                }
            }
        }
        self.cached_keys().map(|(set, _)| set).ok_or_else(|| {
            TokenError::Unavailable(format!(
                "the keys of issuer {} have not been fetched",
                self.issuer()
            ))
        })
    }

    /// Verifies a token issued by the remote issuer: a JWT against its JWKS (`typ`,
    /// signature, `iss`, `exp`/`nbf` with `leeway`), then, with `introspect = "always"`,
    /// through introspection; an opaque token through introspection only.
    pub async fn verify(&self, token: &str, leeway: i64) -> Result<Verified, TokenError> {
        let Some(discovery) = self.discovery.get() else {
            return Err(TokenError::Unavailable(format!(
                "the issuer {} has not been reached yet (the server is starting)",
                self.issuer()
            )));
        };
        let now = self.clock.now();
        // An RFC 9068 JWT is verified here; anything else (opaque, or a JWT of another
        // profile this server cannot judge alone) is the issuer's to say.
        let header = (token.split('.').count() == 3)
            .then(|| jsonwebtoken::decode_header(token))
            .transpose()
            .map_err(|e| TokenError::Malformed(e.to_string()))?;
        let rfc9068 = header.as_ref().is_some_and(|h| {
            h.typ.as_deref().is_some_and(|t| {
                t.eq_ignore_ascii_case(tokens::ACCESS_TOKEN_TYP)
                    || t.eq_ignore_ascii_case("application/at+jwt")
            })
        });
        if let Some(header) = header.filter(|_| rfc9068) {
            let kid = header.kid.clone().ok_or(TokenError::MissingKid)?;
            tokens::check_claimed_issuer(token, &discovery.issuer)?;
            let keys = self.keys_for(&kid).await?;
            let (claims, raw) = tokens::verify_with_header(
                token,
                &header,
                &keys,
                &discovery.issuer,
                Some(now),
                leeway,
            )?;
            if self.settings.introspect == IntrospectMode::Always {
                self.introspect(token, now).await?;
            }
            return Ok(Verified {
                claims,
                raw_json: raw.to_string(),
                username: None,
            });
        }
        let (claims, raw_json) = self.introspect(token, now).await?;
        if now >= claims.exp + leeway {
            return Err(TokenError::Expired {
                exp: claims.exp,
                now,
            });
        }
        if claims.nbf > now + leeway {
            return Err(TokenError::NotYetValid {
                nbf: claims.nbf,
                now,
            });
        }
        Ok(Verified {
            claims,
            raw_json,
            username: None,
        })
    }

    /// The user name of a verified token's account: its `username` or `preferred_username`
    /// claim, else the `username` of the issuer's introspection answer (cached); `None` for
    /// a backend service's token (`sub` is its client) and when the issuer names none or
    /// cannot be asked (the account then gets the rights of an unknown user).
    pub async fn username_of(&self, token: &str, verified: &Verified) -> Option<String> {
        if verified.claims.sub == verified.claims.client_id {
            return None;
        }
        let claims: Value = serde_json::from_str(&verified.raw_json).ok()?;
        if let Some(name) =
            text(&claims, "username").or_else(|| text(&claims, "preferred_username"))
        {
            return Some(name);
        }
        match self.introspected_username(token).await {
            Ok(name) => name,
            Err(e) => {
                tracing::debug!(issuer = %self.issuer(), "no user name for the token: {e}");
                None
            }
        }
    }

    /// The user name the issuer's introspection answer gives for `token` (RFC 7662
    /// `username`): the Basic compatibility mode's link between the issuer's `sub` and
    /// this server's accounts. Cached like every introspection answer.
    pub async fn introspected_username(&self, token: &str) -> Result<Option<String>, TokenError> {
        let (_, raw) = self.introspect(token, self.clock.now()).await?;
        Ok(serde_json::from_str::<Value>(&raw)
            .ok()
            .and_then(|answer| text(&answer, "username")))
    }

    /// The issuer's answer on `token` (cached), as access-token claims.
    async fn introspect(
        &self,
        token: &str,
        now: i64,
    ) -> Result<(AccessClaims, String), TokenError> {
        let key = crate::store::hash_secret(token);
        let hit = self.introspected.lock().ok().and_then(|cache| {
            cache
                .get(&key)
                .filter(|hit| now < hit.until)
                .map(|hit| hit.outcome.clone())
        });
        if let Some(outcome) = hit {
            return outcome;
        }
        let issuer = self.issuer().to_string();
        let answer = self.ask_issuer(token, &issuer).await?;
        let ttl = self.settings.introspection_cache.as_secs() as i64;
        let outcome = interpret(&answer, &issuer, now + ttl).map(|c| (c, answer.to_string()));
        let until = match &outcome {
            Ok((claims, _)) => (now + ttl).min(claims.exp),
            Err(_) => now + ttl,
        };
        if ttl > 0 {
            self.remember(key, until, &outcome, now);
        }
        outcome
    }

    /// The issuer's introspection answer on `token`, asked with this server's registration.
    async fn ask_issuer(&self, token: &str, issuer: &str) -> Result<Value, TokenError> {
        let endpoint = self
            .discovery
            .get()
            .and_then(|d| d.introspection_endpoint.clone())
            .ok_or_else(|| {
                TokenError::Unavailable(format!(
                    "issuer {issuer} publishes no introspection_endpoint, so this server cannot check the token"
                ))
            })?;
        let credentials = self.credentials().ok_or_else(|| {
            TokenError::Unavailable(format!(
                "this server has no client credentials at issuer {issuer} (it is not registered there), so it cannot introspect the token"
            ))
        })?;
        self.introspections.fetch_add(1, Ordering::Relaxed);
        let response = self
            .http
            .post(&endpoint)
            .basic_auth(&credentials.client_id, Some(&credentials.client_secret))
            .form(&[("token", token), ("token_type_hint", "access_token")])
            .send()
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                return Err(TokenError::Unavailable(format!(
                    "introspection at issuer {issuer}: {}",
                    diagnose::describe(&endpoint, &e).await
                )));
            }
        };
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        if status != 200 {
            return Err(TokenError::Unavailable(format!(
                "the introspection endpoint {endpoint} answered HTTP {status}: {body}"
            )));
        }
        serde_json::from_str(&body).map_err(|e| {
            TokenError::Unavailable(format!(
                "the introspection endpoint {endpoint} answered no JSON ({e}): {body}"
            ))
        })
    }

    /// Caches an introspection outcome until `until`; a full cache first drops what has
    /// expired, and everything when nothing has.
    fn remember(
        &self,
        key: String,
        until: i64,
        outcome: &Result<(AccessClaims, String), TokenError>,
        now: i64,
    ) {
        if let Ok(mut cache) = self.introspected.lock() {
            if cache.len() >= INTROSPECTION_CACHE_ENTRIES {
                cache.retain(|_, v| v.until > now);
                if cache.len() >= INTROSPECTION_CACHE_ENTRIES {
                    cache.clear();
                }
            }
            cache.insert(
                key,
                Introspected {
                    until,
                    outcome: outcome.clone(),
                },
            );
        }
    }
}

/// An RFC 7662 answer as access-token claims; `default_exp` when it names no `exp`.
fn interpret(answer: &Value, issuer: &str, default_exp: i64) -> Result<AccessClaims, TokenError> {
    if answer.get("active").and_then(Value::as_bool) != Some(true) {
        return Err(TokenError::Inactive {
            issuer: issuer.to_string(),
        });
    }
    if let Some(token_type) = text(answer, "token_type")
        && !token_type.eq_ignore_ascii_case("bearer")
        && !token_type.eq_ignore_ascii_case("access_token")
        && !token_type.eq_ignore_ascii_case("dpop")
    {
        return Err(TokenError::NotAccessToken {
            issuer: issuer.to_string(),
            token_type,
        });
    }
    let iss = text(answer, "iss").unwrap_or_else(|| issuer.to_string());
    if iss.trim_end_matches('/') != issuer {
        return Err(TokenError::WrongIssuer {
            found: iss,
            expected: issuer.to_string(),
        });
    }
    let client_id = text(answer, "client_id").unwrap_or_default();
    let mut claims = json!({
        "iss": issuer,
        "sub": text(answer, "sub").unwrap_or_else(|| client_id.clone()),
        "aud": answer.get("aud").cloned().unwrap_or(json!([])),
        "client_id": client_id,
        "scope": text(answer, "scope").unwrap_or_default(),
        "exp": answer.get("exp").and_then(Value::as_i64).unwrap_or(default_exp),
        "iat": answer.get("iat").and_then(Value::as_i64).unwrap_or(0),
        "nbf": answer.get("nbf").and_then(Value::as_i64).unwrap_or(0),
        "jti": text(answer, "jti").unwrap_or_default(),
    });
    for field in ["patient", "fhirUser"] {
        if let Some(v) = text(answer, field) {
            claims[field] = v.into();
        }
    }
    serde_json::from_value(claims)
        .map_err(|e| TokenError::Malformed(format!("the introspection answer: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISS: &str = "https://as.example";

    #[test]
    fn introspection_answers_become_claims_or_reasons() {
        let c = interpret(
            &json!({"active": true, "scope": "system/*.read", "client_id": "c", "aud": "https://fhir.example/r4", "exp": 100, "token_type": "Bearer"}),
            ISS,
            50,
        )
        .unwrap();
        assert_eq!(c.sub, "c");
        assert_eq!(c.aud.0, vec!["https://fhir.example/r4"]);
        assert_eq!(c.exp, 100);
        assert_eq!(c.iss, ISS);
        let c = interpret(&json!({"active": true, "sub": "u"}), ISS, 50).unwrap();
        assert_eq!(c.exp, 50, "no exp: valid for the cache time");
        let e = interpret(&json!({"active": false}), ISS, 50).unwrap_err();
        assert!(
            e.to_string()
                .contains("not active at issuer https://as.example"),
            "{e}"
        );
        let e = interpret(
            &json!({"active": true, "token_type": "refresh_token"}),
            ISS,
            50,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("refresh_token, not an access token"),
            "{e}"
        );
        let e = interpret(
            &json!({"active": true, "iss": "https://evil.example"}),
            ISS,
            50,
        )
        .unwrap_err();
        assert!(matches!(e, TokenError::WrongIssuer { .. }), "{e}");
    }
}
