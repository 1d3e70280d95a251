//! Token verification for the resource server, in one of two modes: `Local`, against this
//! process's own authorization server (its keys in the database, cached; revocation by
//! `jti`), or `Remote`, against an issuer elsewhere (`--issuer URL`): discovery, its JWKS
//! cached, introspection with this server's own registration. The audience is not
//! checked here: that is the audience-rule plugins' decision.

pub mod cache;
pub mod diagnose;
mod register;
pub mod remote;

use std::sync::Arc;

use serde_json::Value;

pub use register::RegistrationOutcome;
pub use remote::{Credentials, Discovery, RemoteIssuer};

use crate::oauth::{AccessClaims, AuthServer, TokenError};

/// A failure toward the remote issuer, as a sentence that says what to do.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct IssuerError(pub String);

/// A token accepted by the verifier: its claims, and their JSON for plugins that read
/// other claims (the JWT payload, or the introspection answer).
#[derive(Debug, Clone)]
pub struct Verified {
    pub claims: AccessClaims,
    pub raw_json: String,
    /// The user name a remote issuer gives the token's account ([`RemoteIssuer::username_of`]),
    /// which names this server's account of that name; `None` for this server's own tokens
    /// (their `sub` is the account's id) and when the issuer names none.
    pub username: Option<String>,
}

/// Whose tokens the FHIR server accepts.
#[derive(Clone)]
pub enum TokenVerifier {
    Local(Arc<AuthServer>),
    Remote(Arc<RemoteIssuer>),
}

impl TokenVerifier {
    /// Verifies `token` with `leeway` seconds for `exp` and `nbf`.
    pub async fn verify(&self, token: &str, leeway: i64) -> Result<Verified, TokenError> {
        match self {
            TokenVerifier::Local(auth) => {
                let (claims, raw) = auth.verify_access_token_json(token, leeway).await?;
                Ok(Verified {
                    claims,
                    raw_json: raw.to_string(),
                    username: None,
                })
            }
            TokenVerifier::Remote(remote) => {
                let mut verified = remote.verify(token, leeway).await?;
                verified.username = remote.username_of(token, &verified).await;
                Ok(verified)
            }
        }
    }

    /// The issuer's metadata (RFC 8414): this server's own, or the remote issuer's from
    /// discovery (`Null` before discovery).
    pub fn metadata(&self) -> Value {
        match self {
            TokenVerifier::Local(auth) => auth.metadata(),
            TokenVerifier::Remote(remote) => remote
                .discovery()
                .map(|d| d.metadata.clone())
                .unwrap_or(Value::Null),
        }
    }

    pub fn is_remote(&self) -> bool {
        matches!(self, TokenVerifier::Remote(_))
    }
}
