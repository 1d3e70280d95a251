//! OAuth clients: applications and resource servers, with hashed secrets.

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::{Store, StoreError, conflict_or, now_secs};

/// What a client is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    /// An application that asks for tokens.
    App,
    /// A FHIR server (or other API) that accepts tokens and introspects them.
    ResourceServer,
}

impl ClientKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientKind::App => "app",
            ClientKind::ResourceServer => "resource-server",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "app" => Ok(ClientKind::App),
            "resource-server" => Ok(ClientKind::ResourceServer),
            other => Err(StoreError::Invalid(format!(
                "unknown client kind {other:?} in the database"
            ))),
        }
    }
}

/// Grant types a client may be registered for.
pub const GRANT_TYPES: &[&str] = &["authorization_code", "client_credentials", "refresh_token"];

#[derive(Debug, Clone, PartialEq)]
pub struct Client {
    pub client_id: String,
    pub client_name: String,
    pub kind: ClientKind,
    /// `client_secret_basic`, `client_secret_post`, `private_key_jwt` or `none`.
    pub token_endpoint_auth_method: String,
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<String>,
    /// Space-separated scopes the client may ask for.
    pub scope: String,
    /// Audiences (resource servers' base URLs) the client may name; for a resource server, its own.
    pub audiences: Vec<String>,
    /// Other registration metadata (RFC 7591), kept as given.
    pub metadata: serde_json::Value,
    pub created_at: i64,
}

impl Client {
    pub fn is_public(&self) -> bool {
        self.token_endpoint_auth_method == "none"
    }

    /// The JSON an administrator sees (`hestia client show`); never contains a secret.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "client_id": self.client_id,
            "client_name": self.client_name,
            "kind": self.kind.as_str(),
            "token_endpoint_auth_method": self.token_endpoint_auth_method,
            "redirect_uris": self.redirect_uris,
            "grant_types": self.grant_types,
            "scope": self.scope,
            "audiences": self.audiences,
            "metadata": self.metadata,
            "created_at": self.created_at,
        })
    }
}

#[derive(Debug, Clone)]
pub struct NewClient {
    pub client_name: String,
    pub kind: ClientKind,
    /// A public client has no secret (`token_endpoint_auth_method = none`).
    pub public: bool,
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<String>,
    pub scope: String,
    pub audiences: Vec<String>,
    pub metadata: serde_json::Value,
}

/// The secret of a new client, returned once and never stored in clear.
#[derive(Debug, Clone)]
pub struct NewClientSecret(pub String);

fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// Client secrets are 256 random bits, so a plain SHA-256 is as strong as a slow password hash
/// here and keeps `client_secret_basic` cheap on every token request (passwords use argon2id).
/// Whether `secret` is the one whose hash was stored, compared in constant time.
pub fn secret_matches(stored_hash: &str, secret: &str) -> bool {
    constant_time_eq(stored_hash.as_bytes(), hash_secret(secret).as_bytes())
}

pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn check_redirect_uri(uri: &str) -> Result<(), StoreError> {
    let scheme_ok = uri.split_once("://").is_some_and(|(scheme, rest)| {
        !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
            && !rest.is_empty()
    });
    if !scheme_ok || uri.contains('#') || uri.contains(char::is_whitespace) {
        return Err(StoreError::Invalid(format!(
            "redirect URI {uri:?} must be an absolute URI without a fragment"
        )));
    }
    Ok(())
}

impl NewClient {
    fn check(&self) -> Result<(), StoreError> {
        if self.client_name.trim().is_empty() {
            return Err(StoreError::Invalid(
                "the client name must not be empty".into(),
            ));
        }
        for uri in &self.redirect_uris {
            check_redirect_uri(uri)?;
        }
        for grant in &self.grant_types {
            if !GRANT_TYPES.contains(&grant.as_str()) {
                return Err(StoreError::Invalid(format!(
                    "grant type {grant:?} is not supported; supported: {}",
                    GRANT_TYPES.join(", ")
                )));
            }
        }
        if self.grant_types.iter().any(|g| g == "authorization_code")
            && self.redirect_uris.is_empty()
        {
            return Err(StoreError::Invalid(
                "a client with the authorization_code grant needs at least one redirect URI".into(),
            ));
        }
        if self.public && self.grant_types.iter().any(|g| g == "client_credentials") {
            return Err(StoreError::Invalid(
                "a public client cannot use client_credentials: it has no secret to authenticate with".into(),
            ));
        }
        if self.public && self.kind == ClientKind::ResourceServer {
            return Err(StoreError::Invalid(
                "a resource server must be a confidential client".into(),
            ));
        }
        Ok(())
    }
}

fn json_list(row: &sqlx::any::AnyRow, column: &str) -> Result<Vec<String>, StoreError> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text)
        .map_err(|e| StoreError::Invalid(format!("column {column} holds invalid JSON: {e}")))
}

fn client_from_row(row: &sqlx::any::AnyRow) -> Result<Client, StoreError> {
    let metadata: String = row.try_get("metadata")?;
    Ok(Client {
        client_id: row.try_get("client_id")?,
        client_name: row.try_get("client_name")?,
        kind: ClientKind::parse(&row.try_get::<String, _>("kind")?)?,
        token_endpoint_auth_method: row.try_get("token_endpoint_auth_method")?,
        redirect_uris: json_list(row, "redirect_uris")?,
        grant_types: json_list(row, "grant_types")?,
        scope: row.try_get("scope")?,
        audiences: json_list(row, "audiences")?,
        metadata: serde_json::from_str(&metadata)
            .map_err(|e| StoreError::Invalid(format!("column metadata holds invalid JSON: {e}")))?,
        created_at: row.try_get("created_at")?,
    })
}

const CLIENT_COLUMNS: &str = "client_id, client_name, kind, token_endpoint_auth_method, redirect_uris, grant_types, scope, audiences, metadata, created_at";

impl Store {
    /// Registers a client. A confidential client's secret is returned here, once.
    pub async fn create_client(
        &self,
        new: NewClient,
    ) -> Result<(Client, Option<NewClientSecret>), StoreError> {
        new.check()?;
        let secret = (!new.public).then(|| NewClientSecret(random_token(32)));
        let client = Client {
            client_id: uuid::Uuid::new_v4().to_string(),
            client_name: new.client_name,
            kind: new.kind,
            token_endpoint_auth_method: if new.public {
                "none"
            } else {
                "client_secret_basic"
            }
            .to_string(),
            redirect_uris: new.redirect_uris,
            grant_types: new.grant_types,
            scope: new.scope,
            audiences: new.audiences,
            metadata: new.metadata,
            created_at: now_secs(),
        };
        let to_json = |v: &Vec<String>| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
        sqlx::query(
            "INSERT INTO clients (client_id, client_name, secret_hash, kind, token_endpoint_auth_method, redirect_uris, grant_types, scope, audiences, metadata, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&client.client_id)
        .bind(&client.client_name)
        .bind(secret.as_ref().map(|s| hash_secret(&s.0)))
        .bind(client.kind.as_str())
        .bind(&client.token_endpoint_auth_method)
        .bind(to_json(&client.redirect_uris))
        .bind(to_json(&client.grant_types))
        .bind(&client.scope)
        .bind(to_json(&client.audiences))
        .bind(client.metadata.to_string())
        .bind(client.created_at)
        .execute(self.autocommit().await?.sql())
        .await
        .map_err(|e| conflict_or(e, || format!("client {}", client.client_id)))?;
        self.changed();
        Ok((client, secret))
    }

    pub async fn get_client(&self, client_id: &str) -> Result<Option<Client>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {CLIENT_COLUMNS} FROM clients WHERE client_id = $1"
        ))
        .bind(client_id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(client_from_row).transpose()
    }

    /// A client with its secret's hash (`None` for a client without a secret), in one read:
    /// what the token endpoint keeps of a client (see `oauth::directory`).
    pub async fn get_client_and_secret(
        &self,
        client_id: &str,
    ) -> Result<Option<(Client, Option<String>)>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {CLIENT_COLUMNS}, secret_hash FROM clients WHERE client_id = $1"
        ))
        .bind(client_id)
        .fetch_optional(self.pool())
        .await?;
        match row {
            Some(row) => Ok(Some((client_from_row(&row)?, row.try_get("secret_hash")?))),
            None => Ok(None),
        }
    }

    pub async fn list_clients(&self) -> Result<Vec<Client>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {CLIENT_COLUMNS} FROM clients ORDER BY created_at, client_id"
        ))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(client_from_row).collect()
    }

    /// The clients of one kind, by the `clients_kind` index: what every token request
    /// reads to learn the registered resource servers, so it must not grow with the number
    /// of apps (read through `list_clients`, 5,000 registered apps took the token endpoint
    /// from 1,550 to 18 tokens/s).
    pub async fn list_clients_of_kind(&self, kind: ClientKind) -> Result<Vec<Client>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {CLIENT_COLUMNS} FROM clients WHERE kind = $1 ORDER BY created_at, client_id"
        ))
        .bind(kind.as_str())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(client_from_row).collect()
    }

    /// Removes a client and revokes everything issued to it (its grants, so its refresh
    /// tokens, and its access tokens), in one transaction; `NotFound` when there was none.
    pub async fn remove_client(&self, client_id: &str) -> Result<(), StoreError> {
        let now = super::now_secs();
        let mut tx = self.begin().await?;
        let done = sqlx::query("DELETE FROM clients WHERE client_id = $1")
            .bind(client_id)
            .execute(tx.sql())
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("client {client_id:?}")));
        }
        revoke_issued(
            tx.sql(),
            IssuedTo::Client(client_id),
            &format!("its client {client_id} was removed"),
            now,
        )
        .await?;
        tx.commit_uncounted().await?;
        self.changed();
        Ok(())
    }

    /// Checks a confidential client's secret in constant time.
    pub async fn verify_client_secret(
        &self,
        client_id: &str,
        secret: &str,
    ) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT secret_hash FROM clients WHERE client_id = $1")
            .bind(client_id)
            .fetch_optional(self.pool())
            .await?;
        let Some(row) = row else { return Ok(false) };
        let Some(stored): Option<String> = row.try_get("secret_hash")? else {
            return Ok(false);
        };
        Ok(secret_matches(&stored, secret))
    }
}

/// Whose grants and tokens [`revoke_issued`] revokes.
#[derive(Debug, Clone, Copy)]
pub(super) enum IssuedTo<'a> {
    /// Everything issued to a client (by client id).
    Client(&'a str),
    /// Everything issued for an account (by user id), to any client.
    User(&'a str),
}

/// Revokes the grants (so their refresh tokens) and the access tokens issued to a client
/// or for an account, inside the caller's transaction; `reason` is what a refused token
/// later says.
pub(super) async fn revoke_issued(
    conn: &mut sqlx::AnyConnection,
    to: IssuedTo<'_>,
    reason: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    let (grants, tokens, who) = match to {
        IssuedTo::Client(id) => (
            "UPDATE oauth_grants SET revoked_at = $1, revoked_reason = $2 WHERE client_id = $3 AND revoked_at IS NULL",
            "UPDATE oauth_access_tokens SET revoked_at = $1 WHERE client_id = $2 AND revoked_at IS NULL",
            id,
        ),
        IssuedTo::User(id) => (
            "UPDATE oauth_grants SET revoked_at = $1, revoked_reason = $2 WHERE user_id = $3 AND revoked_at IS NULL",
            "UPDATE oauth_access_tokens SET revoked_at = $1 WHERE revoked_at IS NULL \
             AND grant_id IN (SELECT grant_id FROM oauth_grants WHERE user_id = $2)",
            id,
        ),
    };
    sqlx::query(grants)
        .bind(now)
        .bind(reason)
        .bind(who)
        .execute(&mut *conn)
        .await?;
    sqlx::query(tokens)
        .bind(now)
        .bind(who)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Compares without an early exit, so timing does not reveal how much of a secret matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
