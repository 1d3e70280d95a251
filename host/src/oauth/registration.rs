//! Dynamic client registration (RFC 7591) and its management (RFC 7592).
//!
//! Beyond the standard metadata, Hestia reads:
//! - `hestia_client_kind`: `"app"` (default) or `"resource-server"` (a FHIR server or other
//!   API that accepts tokens and introspects them);
//! - `hestia_audiences`: for a resource server, its base URL(s) — they become known
//!   audiences that apps may ask tokens for; for an app, the audiences it may ask for;
//! - `hestia_access_token_lifetime`, `hestia_refresh_token_lifetime`, `hestia_code_lifetime`:
//!   per-client lifetimes in seconds, at most the server's (a longer one is refused with
//!   `invalid_client_metadata` naming the field and the maximum).

use serde_json::{Value, json};

use super::errors::ErrorCode;
use super::{
    AuthServer, OAuthError, REGISTER_PATH, client_auth, grants, hash_token, keys, random_token,
};
use crate::store::{Client, ClientKind, NewClient, StoreError, constant_time_eq};

/// Scopes a registration gets when it names none.
pub const DEFAULT_SCOPE: &str =
    "openid fhirUser launch/patient offline_access patient/*.read user/*.read";

/// Metadata the server interprets; everything else is kept as given.
const INTERPRETED: &[&str] = &[
    "client_id",
    "client_secret",
    "client_name",
    "redirect_uris",
    "grant_types",
    "response_types",
    "token_endpoint_auth_method",
    "scope",
    "hestia_client_kind",
    "hestia_audiences",
    "registration_access_token",
    "registration_client_uri",
    "client_id_issued_at",
    "client_secret_expires_at",
];

fn meta_err(d: impl Into<String>) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidClientMetadata, d)
}

fn string_list(body: &Value, field: &str) -> Result<Option<Vec<String>>, OAuthError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| meta_err(format!("{field} must be an array of strings")))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(meta_err(format!("{field} must be an array of strings"))),
    }
}

/// What a registration asks for, checked.
pub(crate) struct Plan {
    new: NewClient,
    auth_method: String,
}

pub(crate) fn plan(body: &Value) -> Result<Plan, OAuthError> {
    if !body.is_object() {
        return Err(meta_err("the registration request must be a JSON object"));
    }
    let kind = client_kind(body)?;
    let auth_method = auth_method(body)?;
    let redirect_uris = redirect_uris(body)?;
    let grant_types = grant_types(body, kind)?;
    if let Some(rt) = string_list(body, "response_types")?
        && rt.iter().any(|r| r != "code")
    {
        return Err(meta_err("only the response type \"code\" is supported"));
    }
    if grant_types.iter().any(|g| g == "authorization_code") && redirect_uris.is_empty() {
        return Err(OAuthError::new(
            ErrorCode::InvalidRedirectUri,
            "redirect_uris is required for the authorization_code grant",
        ));
    }
    check_keys(body, &auth_method)?;
    check_id_token_alg(body)?;
    let audiences = audiences(body, kind)?;
    let mut metadata = serde_json::Map::new();
    for (k, v) in body.as_object().into_iter().flatten() {
        if !INTERPRETED.contains(&k.as_str()) {
            metadata.insert(k.clone(), v.clone());
        }
    }
    let client_name = body
        .get("client_name")
        .and_then(Value::as_str)
        .filter(|n| !n.trim().is_empty())
        .unwrap_or("Dynamically registered client")
        .to_string();
    let scope = body
        .get("scope")
        .and_then(Value::as_str)
        .unwrap_or(if kind == ClientKind::ResourceServer {
            ""
        } else {
            DEFAULT_SCOPE
        })
        .to_string();
    Ok(Plan {
        new: NewClient {
            client_name,
            kind,
            public: auth_method == "none",
            redirect_uris,
            grant_types,
            scope,
            audiences: audiences
                .iter()
                .map(|a| a.trim_end_matches('/').to_string())
                .collect(),
            metadata: Value::Object(metadata),
        },
        auth_method,
    })
}

/// `hestia_client_kind`: `app` (default) or `resource-server`.
fn client_kind(body: &Value) -> Result<ClientKind, OAuthError> {
    match body.get("hestia_client_kind").and_then(Value::as_str) {
        None | Some("app") => Ok(ClientKind::App),
        Some("resource-server") => Ok(ClientKind::ResourceServer),
        Some(other) => Err(meta_err(format!(
            "hestia_client_kind {other:?} is not known; use \"app\" or \"resource-server\""
        ))),
    }
}

/// `token_endpoint_auth_method`, by default `client_secret_basic`.
fn auth_method(body: &Value) -> Result<String, OAuthError> {
    let auth_method = body
        .get("token_endpoint_auth_method")
        .and_then(Value::as_str)
        .unwrap_or("client_secret_basic")
        .to_string();
    if !client_auth::METHODS.contains(&auth_method.as_str()) {
        return Err(meta_err(format!(
            "token_endpoint_auth_method {auth_method:?} is not supported; supported: {}",
            client_auth::METHODS.join(", ")
        )));
    }
    Ok(auth_method)
}

/// `redirect_uris`: absolute URIs without a fragment.
fn redirect_uris(body: &Value) -> Result<Vec<String>, OAuthError> {
    let redirect_uris = string_list(body, "redirect_uris")?.unwrap_or_default();
    for uri in &redirect_uris {
        let ok = url::Url::parse(uri).is_ok_and(|u| u.fragment().is_none());
        if !ok {
            return Err(OAuthError::new(
                ErrorCode::InvalidRedirectUri,
                format!("redirect URI {uri:?} must be an absolute URI without a fragment"),
            ));
        }
    }
    Ok(redirect_uris)
}

/// `grant_types`, supported ones only; by default `authorization_code` for an app and
/// none for a resource server.
fn grant_types(body: &Value, kind: ClientKind) -> Result<Vec<String>, OAuthError> {
    let grant_types = match string_list(body, "grant_types")? {
        Some(g) => g,
        None if kind == ClientKind::ResourceServer => Vec::new(),
        None => vec!["authorization_code".to_string()],
    };
    for g in &grant_types {
        if !grants::GRANT_TYPES.contains(&g.as_str()) {
            return Err(meta_err(format!(
                "grant type {g:?} is not supported; supported: {}",
                grants::GRANT_TYPES.join(", ")
            )));
        }
    }
    Ok(grant_types)
}

/// The client's public keys: `jwks` or `jwks_uri` (not both), one of them for
/// `private_key_jwt`; a JWK Set, an http(s) URL.
fn check_keys(body: &Value, auth_method: &str) -> Result<(), OAuthError> {
    let has_jwks = body.get("jwks").is_some_and(|v| !v.is_null());
    let has_jwks_uri = body.get("jwks_uri").is_some_and(|v| !v.is_null());
    if has_jwks && has_jwks_uri {
        return Err(meta_err("give jwks or jwks_uri, not both"));
    }
    if auth_method == "private_key_jwt" && !has_jwks && !has_jwks_uri {
        return Err(meta_err(
            "private_key_jwt needs the client's public keys: jwks or jwks_uri",
        ));
    }
    if has_jwks {
        serde_json::from_value::<jsonwebtoken::jwk::JwkSet>(body["jwks"].clone())
            .map_err(|e| meta_err(format!("jwks is not a JWK Set: {e}")))?;
    }
    if has_jwks_uri {
        let uri = body["jwks_uri"].as_str().unwrap_or_default();
        if !uri.starts_with("https://") && !uri.starts_with("http://") {
            return Err(meta_err("jwks_uri must be an http(s) URL"));
        }
    }
    Ok(())
}

/// `id_token_signed_response_alg`, when given: one this server signs with.
fn check_id_token_alg(body: &Value) -> Result<(), OAuthError> {
    if let Some(alg) = body.get("id_token_signed_response_alg") {
        let ok = alg
            .as_str()
            .is_some_and(|a| keys::SIGNING_ALGS.contains(&a));
        if !ok {
            return Err(meta_err(format!(
                "id_token_signed_response_alg must be one of {}",
                keys::SIGNING_ALGS.join(", ")
            )));
        }
    }
    Ok(())
}

/// `hestia_audiences`: http(s) URLs, at least one for a resource server.
fn audiences(body: &Value, kind: ClientKind) -> Result<Vec<String>, OAuthError> {
    let audiences = string_list(body, "hestia_audiences")?.unwrap_or_default();
    if kind == ClientKind::ResourceServer && audiences.is_empty() {
        return Err(meta_err(
            "a resource server must name its base URL (the audience of its tokens) in hestia_audiences",
        ));
    }
    for a in &audiences {
        if !a.starts_with("https://") && !a.starts_with("http://") {
            return Err(meta_err(format!("audience {a:?} must be an http(s) URL")));
        }
    }
    Ok(audiences)
}

fn store_err(e: StoreError) -> OAuthError {
    match e {
        StoreError::Invalid(msg) if msg.contains("redirect") => {
            OAuthError::new(ErrorCode::InvalidRedirectUri, msg)
        }
        StoreError::Invalid(msg) => meta_err(msg),
        other => OAuthError::from(other),
    }
}

impl AuthServer {
    /// The client's registration as RFC 7591 metadata (never its secret).
    fn registration_json(&self, client: &Client) -> Value {
        let mut out = match &client.metadata {
            Value::Object(m) => Value::Object(m.clone()),
            _ => json!({}),
        };
        out["client_id"] = client.client_id.clone().into();
        out["client_id_issued_at"] = client.created_at.into();
        out["client_name"] = client.client_name.clone().into();
        out["redirect_uris"] = json!(client.redirect_uris);
        out["grant_types"] = json!(client.grant_types);
        out["response_types"] = if client.grant_types.iter().any(|g| g == "authorization_code") {
            json!(["code"])
        } else {
            json!([])
        };
        out["token_endpoint_auth_method"] = client.token_endpoint_auth_method.clone().into();
        out["scope"] = client.scope.clone().into();
        out["hestia_client_kind"] = client.kind.as_str().into();
        out["hestia_audiences"] = json!(client.audiences);
        out["registration_client_uri"] =
            format!("{}/{}", self.url(REGISTER_PATH), client.client_id).into();
        out
    }

    /// Creates an initial access token for registration; only its hash is stored.
    pub async fn create_registration_token(
        &self,
        lifetime_secs: i64,
        uses: i64,
    ) -> Result<String, OAuthError> {
        let token = random_token();
        let now = self.now();
        self.store()
            .insert_registration_token(&hash_token(&token), now, now + lifetime_secs, uses)
            .await?;
        Ok(token)
    }

    /// RFC 7591 registration. `initial_token` is the bearer token of the request, if any.
    pub async fn register(
        &self,
        initial_token: Option<&str>,
        body: &Value,
    ) -> Result<Value, OAuthError> {
        let token = match initial_token {
            _ if self.config().open_registration => None,
            Some(token) => Some(hash_token(token)),
            None => {
                return Err(OAuthError::invalid_token(
                    "registration needs an initial access token (an administrator creates one with `hestia registration-token create`), sent as Authorization: Bearer",
                ));
            }
        };
        let used_up =
            || OAuthError::invalid_token("the initial access token is unknown, expired or used up");
        // The token is checked first and spent last: a refused registration leaves its
        // uses as they were.
        if let Some(hash) = &token
            && !self
                .store()
                .registration_token_usable(hash, self.now())
                .await?
        {
            return Err(used_up());
        }
        let plan = plan(body)?;
        self.check_client_lifetimes(&plan.new.metadata)?;
        if let Some(hash) = &token
            && !self
                .store()
                .consume_registration_token(hash, self.now())
                .await?
        {
            return Err(used_up());
        }
        let (client, secret) = self
            .store()
            .create_client(plan.new)
            .await
            .map_err(store_err)?;
        let registration_token = random_token();
        let keeps_secret = plan.auth_method.starts_with("client_secret");
        self.store()
            .set_client_registration(
                &client.client_id,
                &plan.auth_method,
                Some(&hash_token(&registration_token)),
                keeps_secret,
            )
            .await?;
        let client = self
            .store()
            .get_client(&client.client_id)
            .await?
            .ok_or_else(|| OAuthError::server("a client vanished right after registration"))?;
        let mut out = self.registration_json(&client);
        if keeps_secret && let Some(secret) = secret {
            out["client_secret"] = secret.0.into();
            out["client_secret_expires_at"] = 0.into();
        }
        out["registration_access_token"] = registration_token.into();
        tracing::info!(client_id = %client.client_id, kind = client.kind.as_str(), "client registered");
        Ok(out)
    }

    async fn managed_client(
        &self,
        client_id: &str,
        token: Option<&str>,
    ) -> Result<Client, OAuthError> {
        let token = token.ok_or_else(|| {
            OAuthError::invalid_token("send the registration access token as Authorization: Bearer")
        })?;
        let stored = self
            .store()
            .client_registration_token_hash(client_id)
            .await?;
        let ok =
            stored.is_some_and(|h| constant_time_eq(h.as_bytes(), hash_token(token).as_bytes()));
        if !ok {
            return Err(OAuthError::invalid_token(format!(
                "the registration access token is not valid for client {client_id} (or no such client is registered)"
            )));
        }
        self.store().get_client(client_id).await?.ok_or_else(|| {
            OAuthError::invalid_token(format!("client {client_id} is not registered"))
        })
    }

    /// RFC 7592 read.
    pub async fn registration_read(
        &self,
        client_id: &str,
        token: Option<&str>,
    ) -> Result<Value, OAuthError> {
        let client = self.managed_client(client_id, token).await?;
        Ok(self.registration_json(&client))
    }

    /// RFC 7592 update: the body replaces the registration (omitted fields are dropped).
    pub async fn registration_update(
        &self,
        client_id: &str,
        token: Option<&str>,
        body: &Value,
    ) -> Result<Value, OAuthError> {
        let current = self.managed_client(client_id, token).await?;
        if body.get("client_id").and_then(Value::as_str) != Some(client_id) {
            return Err(OAuthError::invalid_request(format!(
                "the body's client_id must be {client_id}"
            )));
        }
        if let Some(secret) = body.get("client_secret").and_then(Value::as_str)
            && !self.store().verify_client_secret(client_id, secret).await?
        {
            return Err(OAuthError::invalid_request(
                "client_secret in the body does not match the client's secret",
            ));
        }
        let plan = plan(body)?;
        self.check_client_lifetimes(&plan.new.metadata)?;
        let secret_based = plan.auth_method.starts_with("client_secret");
        if secret_based && !self.store().client_has_secret(client_id).await? {
            return Err(meta_err(format!(
                "cannot switch client {client_id} from {} to {}: it has no secret; register a new client",
                current.token_endpoint_auth_method, plan.auth_method
            )));
        }
        let updated = Client {
            client_id: current.client_id.clone(),
            client_name: plan.new.client_name,
            kind: plan.new.kind,
            token_endpoint_auth_method: plan.auth_method,
            redirect_uris: plan.new.redirect_uris,
            grant_types: plan.new.grant_types,
            scope: plan.new.scope,
            audiences: plan.new.audiences,
            metadata: plan.new.metadata,
            created_at: current.created_at,
        };
        self.store()
            .update_client(&updated, secret_based)
            .await
            .map_err(store_err)?;
        Ok(self.registration_json(&updated))
    }

    /// RFC 7592 delete.
    pub async fn registration_delete(
        &self,
        client_id: &str,
        token: Option<&str>,
    ) -> Result<(), OAuthError> {
        self.managed_client(client_id, token).await?;
        self.store().remove_client(client_id).await?;
        tracing::info!(%client_id, "client deregistered");
        Ok(())
    }
}
