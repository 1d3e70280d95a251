//! The authorization server: OAuth 2.0, OpenID Connect and SMART App Launch, as plain
//! types in and out. Only `http::oauth` knows HTTP; this module knows the protocol and the
//! store. Scope and audience decisions go through a [`policy::TokenPolicy`].

pub mod authorize;
pub mod client_auth;
pub mod directory;
pub mod discovery;
pub mod errors;
pub mod grants;
pub mod introspection;
pub mod keys;
pub mod picker;
pub mod pkce;
pub mod policy;
pub mod registration;
pub mod scopes;
pub mod sealed;
pub mod signin;
pub mod tokens;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use base64::Engine;
use rand::RngCore;

pub use errors::{ErrorCode, OAuthError};
pub use policy::{NoPolicy, TokenPolicy};
pub use tokens::{AccessClaims, TokenError};

use crate::config::{OauthSettings, Settings};
use crate::store::{Client, Store, StoreError};

/// Paths of the endpoints, relative to the issuer.
pub const AUTHORIZE_PATH: &str = "/oauth2/authorize";
pub const LOGIN_PATH: &str = "/oauth2/login";
pub const CONSENT_PATH: &str = "/oauth2/consent";
pub const TOKEN_PATH: &str = "/oauth2/token";
pub const JWKS_PATH: &str = "/oauth2/jwks";
pub const USERINFO_PATH: &str = "/oauth2/userinfo";
pub const INTROSPECT_PATH: &str = "/oauth2/introspect";
pub const REVOKE_PATH: &str = "/oauth2/revoke";
pub const REGISTER_PATH: &str = "/oauth2/register";

/// The server's notion of now, in Unix seconds. Tests move it forward instead of sleeping.
#[derive(Debug, Default)]
pub struct Clock {
    offset: AtomicI64,
}

impl Clock {
    pub fn system() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn now(&self) -> i64 {
        crate::store::now_secs() + self.offset.load(Ordering::Relaxed)
    }

    /// Moves this clock forward by `secs` seconds.
    pub fn advance(&self, secs: i64) {
        self.offset.fetch_add(secs, Ordering::Relaxed);
    }
}

/// Form or query parameters. Empty values count as absent (RFC 6749 §3.1); a parameter
/// given twice is an error where one value is expected.
#[derive(Debug, Clone, Default)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    /// Parses `application/x-www-form-urlencoded` text (a body or a query string).
    pub fn parse(text: &[u8]) -> Self {
        Self(
            url::form_urlencoded::parse(text)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Result<Option<&str>, OAuthError> {
        let mut values = self
            .0
            .iter()
            .filter(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str());
        let first = values.next();
        if values.next().is_some() {
            return Err(OAuthError::invalid_request(format!(
                "parameter {name} was given more than once"
            )));
        }
        Ok(first)
    }

    pub fn require(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name)?
            .ok_or_else(|| OAuthError::invalid_request(format!("parameter {name} is missing")))
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// An identifier of a record that is not a secret (a grant, an access token's `jti`): a
/// UUIDv7, whose leading timestamp makes new rows land at the end of the B-tree indexes
/// that key on it, where a random key would write each token's rows into pages all over
/// them (74 random bits still make it unguessable).
pub fn record_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// 256 random bits, base64url.
pub fn random_token() -> String {
    let mut buf = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// How secrets handed out once (codes, refresh tokens, registration tokens) are stored.
pub fn hash_token(token: &str) -> String {
    crate::store::hash_secret(token)
}

/// Lifetimes that apply to one client: the server's, overridden by registration metadata
/// (`hestia_access_token_lifetime`, `hestia_refresh_token_lifetime`, `hestia_code_lifetime`,
/// in seconds), which may only shorten them. An access token never outlives the server's
/// access-token lifetime, which is what key rotation counts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    pub access: i64,
    pub refresh: i64,
    pub code: i64,
}

/// The registration metadata names of per-client lifetimes.
pub const LIFETIME_FIELDS: [&str; 3] = [
    "hestia_access_token_lifetime",
    "hestia_refresh_token_lifetime",
    "hestia_code_lifetime",
];

/// How long the verifier's copy of the published keys is used before it is read again
/// from the database (it is also read at once for an unknown `kid`, after a rotation by
/// this process, and when one of its keys retires): a `hestia keys rotate` of another
/// process is seen within this time.
pub const LOCAL_JWKS_MAX_AGE_SECS: i64 = 60;

/// The published keys as the verifier last read them.
struct CachedJwks {
    set: Arc<jsonwebtoken::jwk::JwkSet>,
    /// Read again from this time on.
    valid_until: i64,
}

pub struct AuthServer {
    store: Store,
    issuer: String,
    /// This server's FHIR base; `None` when it serves no FHIR (authorization server only).
    fhir_base: Option<String>,
    /// The FHIR search limits, for the searches of the patient picker.
    search_limits: crate::fhir::search::SearchLimits,
    config: OauthSettings,
    policy: Arc<dyn TokenPolicy>,
    clock: Arc<Clock>,
    http: reqwest::Client,
    jwks_cache: std::sync::RwLock<Option<CachedJwks>>,
    /// The revisions of the signing keys and of the clients ([`crate::freshness`]), which
    /// `signers` and `directory` follow.
    freshness: crate::freshness::Freshness,
    /// The registered clients, as the token endpoint reads them.
    directory: directory::Directory,
    /// The signing keys, parsed.
    signers: keys::Signers,
    /// Client JWKS fetched from their `jwks_uri`, by client id (see `client_auth`).
    client_jwks_cache:
        std::sync::Mutex<std::collections::HashMap<String, client_auth::FetchedJwks>>,
}

impl AuthServer {
    /// The authorization server of these settings, with the built-in policy and the system clock.
    pub fn new(store: Store, settings: &Settings) -> Self {
        crate::jwt_crypto::install();
        Self {
            issuer: settings.public_url.clone(),
            fhir_base: settings.fhir.enabled.then(|| settings.fhir_base_url()),
            search_limits: settings.fhir.search_limits,
            config: settings.oauth.clone(),
            policy: Arc::new(NoPolicy),
            clock: Clock::system(),
            http: reqwest::Client::builder()
                .connect_timeout(client_auth::JWKS_FETCH_TIMEOUT)
                .timeout(client_auth::JWKS_FETCH_TIMEOUT)
                .build()
                .unwrap_or_default(),
            jwks_cache: std::sync::RwLock::new(None),
            freshness: crate::freshness::Freshness::new(store.clone()),
            signers: keys::Signers::default(),
            directory: directory::Directory::default(),
            client_jwks_cache: Default::default(),
            store,
        }
    }

    /// Replaces the scope and audience policy (the plugin host plugs in here).
    pub fn with_policy(mut self, policy: Arc<dyn TokenPolicy>) -> Self {
        self.policy = policy;
        self
    }

    pub fn with_clock(mut self, clock: Arc<Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn config(&self) -> &OauthSettings {
        &self.config
    }

    /// Creates the signing keys on first start.
    pub async fn ensure_keys(&self) -> Result<(), keys::KeyError> {
        let result = keys::ensure(&self.store, self.now()).await;
        self.forget_cached_keys();
        result
    }

    /// Makes the next verification, and the next token, read the keys from the database.
    pub fn forget_cached_keys(&self) {
        if let Ok(mut cache) = self.jwks_cache.write() {
            *cache = None;
        }
        self.signers.forget();
    }

    /// The registered client `id` (with what checks its secret), as of the clients' revision
    /// ([`crate::freshness::Freshness`]); `None` when no such client is registered.
    pub async fn registered_client(
        &self,
        id: &str,
    ) -> Result<Option<Arc<directory::Registered>>, StoreError> {
        let revision = self.freshness.current().await?.clients;
        self.directory.client(&self.store, revision, id).await
    }

    /// The key that signs `alg` tokens at `now`: parsed once per change of the keys, which
    /// every token learns of through the keys' revision ([`crate::freshness::Freshness`]:
    /// at once for a change of this process, within `CHECKED_WITHIN` for another's).
    pub async fn signing_key(
        &self,
        alg: &str,
        now: i64,
    ) -> Result<Arc<keys::SigningKey>, keys::KeyError> {
        let revision = self.freshness.current().await?.keys;
        if let Some(key) = self.signers.get(revision, alg, now) {
            return Ok(key);
        }
        self.signers
            .load(revision, self.store.signing_keys().await?);
        if let Some(key) = self.signers.get(revision, alg, now) {
            return Ok(key);
        }
        // No key signs `alg` (a database no `serve` prepared): made, or refused by name.
        keys::signing_key(&self.store, alg, now).await.map(Arc::new)
    }

    /// Records an issued access token (and the grant it opens) before it is answered,
    /// committed together with the other token requests of the moment
    /// ([`crate::store::Store::record_issued`]).
    pub async fn record_issued(
        &self,
        record: crate::store::IssuedToken,
        event: crate::store::NewAuditEvent,
        at: i64,
    ) -> Result<(), OAuthError> {
        Ok(self.store.record_issued(record, Some((event, at))).await?)
    }

    /// The published keys for verifying a token signed by `kid`: the cached copy while it
    /// is fresh and knows `kid`, otherwise read from the database (which is as cheap as
    /// the per-request read this cache replaces, so an unknown `kid` needs no rate limit).
    async fn verification_keys(
        &self,
        kid: Option<&str>,
    ) -> Result<Arc<jsonwebtoken::jwk::JwkSet>, keys::KeyError> {
        let now = self.now();
        let fresh = self.jwks_cache.read().ok().and_then(|cache| {
            cache
                .as_ref()
                .filter(|c| now < c.valid_until && kid.is_none_or(|k| c.set.find(k).is_some()))
                .map(|c| c.set.clone())
        });
        if let Some(set) = fresh {
            return Ok(set);
        }
        let (set, retires) = keys::jwks_until(&self.store, now).await?;
        let set = Arc::new(set);
        let valid_until = retires.map_or(now + LOCAL_JWKS_MAX_AGE_SECS, |r| {
            r.min(now + LOCAL_JWKS_MAX_AGE_SECS)
        });
        if let Ok(mut cache) = self.jwks_cache.write() {
            *cache = Some(CachedJwks {
                set: set.clone(),
                valid_until,
            });
        }
        Ok(set)
    }

    /// The published keys (JWKS).
    pub async fn jwks(&self) -> Result<jsonwebtoken::jwk::JwkSet, OAuthError> {
        keys::jwks(&self.store, self.now())
            .await
            .map_err(OAuthError::server)
    }

    /// Verifies an access token issued here: signature against the published keys, `typ`,
    /// issuer, `exp`/`nbf` (with `leeway` seconds), and revocation. The audience is the
    /// caller's decision (audience-rule plugins).
    pub async fn verify_access_token_with_leeway(
        &self,
        token: &str,
        leeway: i64,
    ) -> Result<AccessClaims, TokenError> {
        self.verify_access_token_json(token, leeway)
            .await
            .map(|(claims, _)| claims)
    }

    /// [`Self::verify_access_token_with_leeway`], also answering the verified claims as
    /// JSON. The token's header and payload are each decoded once.
    pub async fn verify_access_token_json(
        &self,
        token: &str,
        leeway: i64,
    ) -> Result<(AccessClaims, serde_json::Value), TokenError> {
        tokens::check_claimed_issuer(token, &self.issuer)?;
        let header = tokens::unverified_header(token)?;
        let jwks = self
            .verification_keys(header.kid.as_deref())
            .await
            .map_err(store_unavailable)?;
        let (claims, raw) = tokens::verify_with_header(
            token,
            &header,
            &jwks,
            &self.issuer,
            Some(self.now()),
            leeway,
        )?;
        match self.store.access_token_record(&claims.jti).await {
            Ok(Some(record)) => match record.revoked {
                Some(r) => Err(TokenError::Revoked {
                    reason: format!("{} (at {})", r.reason, tokens::utc(r.at)),
                }),
                None => Ok((claims, raw)),
            },
            Ok(None) => Err(TokenError::Revoked {
                reason: format!("this server has no record of token {}", claims.jti),
            }),
            Err(e) => Err(store_unavailable(e)),
        }
    }

    /// [`Self::verify_access_token_with_leeway`] without leeway.
    pub async fn verify_access_token(&self, token: &str) -> Result<AccessClaims, TokenError> {
        self.verify_access_token_with_leeway(token, 0).await
    }

    /// This server's FHIR base (when it serves FHIR), then the audiences of registered
    /// resource servers.
    pub async fn known_audiences(&self) -> Result<Vec<String>, OAuthError> {
        let mut known: Vec<String> = self.fhir_base.iter().cloned().collect();
        let revision = self.freshness.current().await?.clients;
        let servers = self
            .directory
            .resource_servers(&self.store, revision)
            .await?;
        for aud in servers.iter().flat_map(|c| &c.audiences) {
            if !known.contains(aud) {
                known.push(aud.clone());
            }
        }
        Ok(known)
    }

    /// The server's lifetimes: the defaults, and the most a client may be given.
    pub fn server_lifetimes(&self) -> Lifetimes {
        Lifetimes {
            access: self.config.access_token_lifetime.as_secs() as i64,
            refresh: self.config.refresh_token_lifetime.as_secs() as i64,
            code: self.config.code_lifetime.as_secs() as i64,
        }
    }

    /// Checks per-client lifetimes in client metadata: positive whole seconds, at most the
    /// server's (refused rather than capped, so what a client registers is what it gets).
    pub fn check_client_lifetimes(&self, metadata: &serde_json::Value) -> Result<(), OAuthError> {
        let server = self.server_lifetimes();
        for (field, max) in LIFETIME_FIELDS
            .iter()
            .zip([server.access, server.refresh, server.code])
        {
            let Some(v) = metadata.get(field).filter(|v| !v.is_null()) else {
                continue;
            };
            let n = v.as_i64().filter(|n| *n > 0).ok_or_else(|| {
                OAuthError::new(
                    ErrorCode::InvalidClientMetadata,
                    format!("{field} must be a positive whole number of seconds, not {v}"),
                )
            })?;
            if n > max {
                return Err(OAuthError::new(
                    ErrorCode::InvalidClientMetadata,
                    format!(
                        "{field} is {n} s, above this server's maximum of {max} s (its oauth.{} setting)",
                        match *field {
                            "hestia_access_token_lifetime" => "access_token_lifetime_secs",
                            "hestia_refresh_token_lifetime" => "refresh_token_lifetime_secs",
                            _ => "code_lifetime_secs",
                        }
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The lifetimes of one client: its own where registered, else the server's. They are
    /// checked against the server's at registration; should the server's be lowered later,
    /// the server's still bound them (key rotation counts on the access-token one).
    pub fn lifetimes(&self, client: &Client) -> Lifetimes {
        let server = self.server_lifetimes();
        let get = |name: &str, default: i64| {
            client
                .metadata
                .get(name)
                .and_then(|v| v.as_i64())
                .filter(|v| *v > 0)
                .unwrap_or(default)
        };
        Lifetimes {
            access: get(LIFETIME_FIELDS[0], server.access).min(server.access),
            refresh: get(LIFETIME_FIELDS[1], server.refresh).min(server.refresh),
            code: get(LIFETIME_FIELDS[2], server.code).min(server.code),
        }
    }
}

/// A token that cannot be checked because the database failed: the cause goes to the log
/// (within the request's span, so under its request id), the client learns only that the
/// check could not run.
fn store_unavailable(cause: impl std::fmt::Display) -> TokenError {
    tracing::error!(%cause, "the token cannot be checked: the database failed");
    TokenError::Unavailable(
        "the database does not answer; retry later (the server log has the cause under this request's x-request-id)".into(),
    )
}
