//! Client authentication at the token, introspection and revocation endpoints:
//! `client_secret_basic`, `client_secret_post`, `private_key_jwt` (SMART Backend
//! Services: RS384/ES384 assertions) and `none` for public clients.

use base64::Engine;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};

use super::directory::Registered;
use super::{AuthServer, OAuthError, Params, TOKEN_PATH};
use crate::store::Client;
use std::sync::Arc;

pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Methods listed in discovery.
pub const METHODS: &[&str] = &[
    "client_secret_basic",
    "client_secret_post",
    "private_key_jwt",
    "none",
];
/// Methods of the introspection endpoint: every method but `none`. A public client proves
/// nothing but a client id anyone can read, so it may not learn about tokens (RFC 7662 §4:
/// the endpoint must be protected); revocation (RFC 7009) allows it, for its own tokens.
pub const INTROSPECTION_METHODS: &[&str] = &[
    "client_secret_basic",
    "client_secret_post",
    "private_key_jwt",
];
/// Algorithms accepted for client assertions (SMART Backend Services).
pub const ASSERTION_ALGS: &[&str] = &["RS384", "ES384"];
/// The longest an assertion may live (`exp` at most five minutes ahead).
pub const MAX_ASSERTION_LIFETIME: i64 = 300;

/// How long keys fetched from a client's `jwks_uri` are used before they are fetched again.
pub const JWKS_URI_CACHE_SECS: i64 = 300;
/// At most one fetch per client within this time for a `kid` the cached keys lack (so that
/// assertions with made-up `kid`s cannot make this server hammer the client's host).
pub const JWKS_URI_REFETCH_SECS: i64 = 10;
/// The longest a `jwks_uri` fetch may take (connecting, and in all).
pub const JWKS_FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Keys fetched from a client's `jwks_uri`.
#[derive(Debug, Clone)]
pub struct FetchedJwks {
    uri: String,
    set: JwkSet,
    fetched_at: i64,
}

/// The credentials of an HTTP `Authorization: Basic` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicCredentials {
    pub client_id: String,
    pub secret: String,
}

/// Parses `Basic base64(urlencode(id):urlencode(secret))` (RFC 6749 §2.3.1).
pub fn parse_basic(header: &str) -> Result<BasicCredentials, OAuthError> {
    let bad = |why: &str| {
        OAuthError::invalid_client(format!(
            "the Authorization: Basic header is malformed: {why}"
        ))
    };
    let encoded = header
        .strip_prefix("Basic ")
        .or_else(|| header.strip_prefix("basic "))
        .ok_or_else(|| bad("expected the Basic scheme"))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| bad("not base64"))?;
    let text = String::from_utf8(decoded).map_err(|_| bad("not UTF-8"))?;
    let (id, secret) = text
        .split_once(':')
        .ok_or_else(|| bad("no ':' between client id and secret"))?;
    let unescape = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Ok(BasicCredentials {
        client_id: unescape(id),
        secret: unescape(secret),
    })
}

impl AuthServer {
    async fn client_or_unknown(&self, id: &str) -> Result<Arc<Registered>, OAuthError> {
        self.registered_client(id).await?.ok_or_else(|| {
            OAuthError::invalid_client(format!(
                "unknown client: no client with id {id:?} is registered"
            ))
        })
    }

    /// Authenticates the calling client by exactly one method.
    pub async fn authenticate_client(
        &self,
        params: &Params,
        basic: Option<&BasicCredentials>,
    ) -> Result<Client, OAuthError> {
        let form_id = params.get("client_id")?;
        let form_secret = params.get("client_secret")?;
        let assertion = params.get("client_assertion")?;
        let used = [basic.is_some(), form_secret.is_some(), assertion.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        if used > 1 {
            return Err(OAuthError::invalid_request(
                "more than one client authentication method was used; use exactly one of HTTP Basic, client_secret in the form, or client_assertion",
            ));
        }
        if let Some(basic) = basic {
            if form_id.is_some_and(|id| id != basic.client_id) {
                return Err(OAuthError::invalid_request(
                    "client_id in the form differs from the one in the Authorization header",
                ));
            }
            return self
                .check_secret(&basic.client_id, &basic.secret, "client_secret_basic")
                .await;
        }
        if let Some(secret) = form_secret {
            let id = form_id.ok_or_else(|| {
                OAuthError::invalid_request("client_secret was sent without client_id")
            })?;
            return self.check_secret(id, secret, "client_secret_post").await;
        }
        if let Some(assertion) = assertion {
            let kind = params.get("client_assertion_type")?.unwrap_or_default();
            if kind != ASSERTION_TYPE {
                return Err(OAuthError::invalid_request(format!(
                    "client_assertion_type must be {ASSERTION_TYPE}, not {kind:?}"
                )));
            }
            return self.check_assertion(assertion, form_id).await;
        }
        let Some(id) = form_id else {
            return Err(OAuthError::invalid_client(
                "no client authentication: send client_id and client_secret with HTTP Basic (client_secret_basic) or in the form (client_secret_post), a client_assertion (private_key_jwt), or client_id alone for a public client",
            ));
        };
        let client = self.client_or_unknown(id).await?.client.clone();
        if !client.is_public() {
            return Err(OAuthError::invalid_client(format!(
                "client {id} is confidential and must authenticate ({}); only client_id was sent",
                client.token_endpoint_auth_method
            )));
        }
        Ok(client)
    }

    async fn check_secret(
        &self,
        id: &str,
        secret: &str,
        method: &str,
    ) -> Result<Client, OAuthError> {
        let registered = self.client_or_unknown(id).await?;
        let client = &registered.client;
        if !matches!(
            client.token_endpoint_auth_method.as_str(),
            "client_secret_basic" | "client_secret_post"
        ) {
            return Err(OAuthError::invalid_client(format!(
                "client {id} is registered for {}, not {method}",
                client.token_endpoint_auth_method
            )));
        }
        if !registered.secret_matches(secret) {
            return Err(OAuthError::invalid_client(format!(
                "wrong client secret for client {id}"
            )));
        }
        Ok(client.clone())
    }

    /// The client's public keys: its registered `jwks`, or those at its `jwks_uri` (cached
    /// for [`JWKS_URI_CACHE_SECS`]; fetched again at once for a `kid` the cached copy lacks,
    /// at most once per [`JWKS_URI_REFETCH_SECS`]). Whether the keys came from the cache
    /// is part of the answer, for the error that names a missing `kid`.
    async fn client_jwks(
        &self,
        client: &Client,
        kid: Option<&str>,
    ) -> Result<(JwkSet, String), OAuthError> {
        if let Some(jwks) = client.metadata.get("jwks") {
            let set = serde_json::from_value(jwks.clone()).map_err(|e| {
                OAuthError::invalid_client(format!(
                    "the registered jwks of client {} cannot be read: {e}",
                    client.client_id
                ))
            })?;
            return Ok((set, "the client's registered JWKS".into()));
        }
        let Some(uri) = client.metadata.get("jwks_uri").and_then(|v| v.as_str()) else {
            return Err(OAuthError::invalid_client(format!(
                "client {} has neither jwks nor jwks_uri registered",
                client.client_id
            )));
        };
        let now = self.now();
        let cached = self
            .client_jwks_cache
            .lock()
            .ok()
            .and_then(|cache| cache.get(&client.client_id).cloned())
            .filter(|c| c.uri == uri && now < c.fetched_at + JWKS_URI_CACHE_SECS);
        if let Some(c) = &cached {
            let knows_kid = kid.is_none_or(|k| c.set.find(k).is_some());
            if knows_kid || now < c.fetched_at + JWKS_URI_REFETCH_SECS {
                return Ok((
                    c.set.clone(),
                    format!(
                        "the client's JWKS from {uri} (fetched at {})",
                        super::tokens::utc(c.fetched_at)
                    ),
                ));
            }
        }
        let fetched = async {
            let resp = self.http.get(uri).send().await?.error_for_status()?;
            resp.json::<JwkSet>().await
        }
        .await
        .map_err(|e| {
            OAuthError::invalid_client(format!(
                "cannot fetch the jwks_uri {uri} of client {}: {e}",
                client.client_id
            ))
        })?;
        if let Ok(mut cache) = self.client_jwks_cache.lock() {
            cache.insert(
                client.client_id.clone(),
                FetchedJwks {
                    uri: uri.to_string(),
                    set: fetched.clone(),
                    fetched_at: now,
                },
            );
        }
        Ok((
            fetched,
            format!("the client's JWKS from {uri} (fetched just now)"),
        ))
    }

    /// Verifies a `private_key_jwt` client assertion (RFC 7523, SMART Backend Services):
    /// its algorithm, the client it names, its signature by that client's keys, then its
    /// audience, expiry and `jti` (recorded, so that it cannot be replayed).
    async fn check_assertion(
        &self,
        assertion: &str,
        form_id: Option<&str>,
    ) -> Result<Client, OAuthError> {
        let header = jsonwebtoken::decode_header(assertion)
            .map_err(|e| bad_assertion(format!("not a JWT: {e}")))?;
        let alg_name = format!("{:?}", header.alg);
        if !ASSERTION_ALGS.contains(&alg_name.as_str()) {
            return Err(bad_assertion(format!(
                "alg {alg_name} is not accepted; use {}",
                ASSERTION_ALGS.join(" or ")
            )));
        }
        // Who claims to be speaking, before the signature can be checked with their key.
        let payload = super::tokens::unverified_part(assertion, 1)
            .ok_or_else(|| bad_assertion("the payload is not base64url JSON"))?;
        let client = self.assertion_client(&payload, form_id).await?;
        self.check_assertion_signature(assertion, &header, &client)
            .await?;
        self.check_assertion_audience(&payload)?;
        let now = self.now();
        let exp = assertion_expiry(&payload, now)?;
        let jti = payload["jti"]
            .as_str()
            .filter(|j| !j.is_empty())
            .ok_or_else(|| bad_assertion("jti is missing"))?;
        if !self
            .store()
            .record_assertion_jti(&client.client_id, jti, exp, now)
            .await?
        {
            return Err(bad_assertion(format!(
                "jti {jti:?} was already used (replay)"
            )));
        }
        Ok(client)
    }

    /// The client an assertion's (unverified) payload speaks for: `iss` and `sub` both its
    /// id, the form's `client_id` if any the same, registered for `private_key_jwt`.
    async fn assertion_client(
        &self,
        payload: &serde_json::Value,
        form_id: Option<&str>,
    ) -> Result<Client, OAuthError> {
        let iss = payload["iss"].as_str().unwrap_or_default();
        let sub = payload["sub"].as_str().unwrap_or_default();
        if iss.is_empty() || iss != sub {
            return Err(bad_assertion(format!(
                "iss ({iss:?}) and sub ({sub:?}) must both be the client id"
            )));
        }
        if form_id.is_some_and(|id| id != iss) {
            return Err(bad_assertion(format!("iss {iss:?} differs from client_id")));
        }
        let client = self.client_or_unknown(iss).await?.client.clone();
        if client.token_endpoint_auth_method != "private_key_jwt" {
            return Err(OAuthError::invalid_client(format!(
                "client {iss} is registered for {}, not private_key_jwt",
                client.token_endpoint_auth_method
            )));
        }
        Ok(client)
    }

    /// Checks the assertion's signature against the client's key of the header's `kid`,
    /// or any of its keys when there is none.
    async fn check_assertion_signature(
        &self,
        assertion: &str,
        header: &jsonwebtoken::Header,
        client: &Client,
    ) -> Result<(), OAuthError> {
        let (jwks, source) = self.client_jwks(client, header.kid.as_deref()).await?;
        let candidates: Vec<_> = match &header.kid {
            Some(kid) => jwks.find(kid).into_iter().collect(),
            None => jwks.keys.iter().collect(),
        };
        if candidates.is_empty() {
            return Err(bad_assertion(format!(
                "no key {} in {source}",
                header.kid.as_deref().unwrap_or("(no kid)")
            )));
        }
        // The claims are checked on their own, with messages that name them.
        let mut validation = Validation::new(header.alg);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let verified = candidates.iter().any(|jwk| {
            DecodingKey::from_jwk(jwk).is_ok_and(|key| {
                jsonwebtoken::decode::<serde_json::Value>(assertion, &key, &validation).is_ok()
            })
        });
        if !verified {
            return Err(bad_assertion(format!(
                "signature invalid for the keys of {source} ({} with {:?})",
                header.kid.as_deref().unwrap_or("no kid"),
                header.alg
            )));
        }
        Ok(())
    }

    /// The assertion's `aud` must be (or list) this server's token endpoint.
    fn check_assertion_audience(&self, payload: &serde_json::Value) -> Result<(), OAuthError> {
        let token_endpoint = self.url(TOKEN_PATH);
        let aud_ok = match &payload["aud"] {
            serde_json::Value::String(a) => *a == token_endpoint,
            serde_json::Value::Array(list) => list.iter().any(|a| a == &token_endpoint),
            _ => false,
        };
        if !aud_ok {
            return Err(bad_assertion(format!(
                "aud is {}, expected the token endpoint {token_endpoint}",
                payload["aud"]
            )));
        }
        Ok(())
    }
}

/// The assertion's `exp`: in the future, by at most [`MAX_ASSERTION_LIFETIME`].
fn assertion_expiry(payload: &serde_json::Value, now: i64) -> Result<i64, OAuthError> {
    let exp = payload["exp"]
        .as_i64()
        .ok_or_else(|| bad_assertion("exp is missing"))?;
    if exp <= now {
        return Err(bad_assertion(format!(
            "expired at {}",
            super::tokens::utc(exp)
        )));
    }
    if exp > now + MAX_ASSERTION_LIFETIME {
        return Err(bad_assertion(format!(
            "exp is {} s in the future; at most {MAX_ASSERTION_LIFETIME} s is accepted",
            exp - now
        )));
    }
    Ok(exp)
}

fn bad_assertion(why: impl std::fmt::Display) -> OAuthError {
    OAuthError::invalid_client(format!("client assertion: {why}"))
}
