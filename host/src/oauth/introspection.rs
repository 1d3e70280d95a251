//! Introspection (RFC 7662), revocation (RFC 7009) and userinfo (OpenID Connect).

use serde_json::{Value, json};

use super::client_auth::BasicCredentials;
use super::tokens::TokenError;
use super::{AuthServer, OAuthError, Params, hash_token, keys, tokens};

impl AuthServer {
    /// `active: false` for anything expired, revoked, unknown or malformed.
    pub async fn introspect(
        &self,
        params: &Params,
        basic: Option<&BasicCredentials>,
    ) -> Result<Value, OAuthError> {
        let caller = self.authenticate_client(params, basic).await?;
        if caller.is_public() {
            return Err(OAuthError::invalid_client(format!(
                "client {} is a public client (no credentials, only its client_id), and public clients may not introspect tokens; introspect as a confidential client or a resource server ({})",
                caller.client_id,
                super::client_auth::INTROSPECTION_METHODS.join(", ")
            )));
        }
        let token = params.require("token")?;
        let hint = params.get("token_type_hint")?;
        let looks_like_jwt = token.split('.').count() == 3;
        let _ = hint;
        if looks_like_jwt {
            return self.introspect_access_token(token).await;
        }
        self.introspect_refresh_token(token).await
    }

    /// RFC 7662's answer on an access token (a JWT of this server).
    async fn introspect_access_token(&self, token: &str) -> Result<Value, OAuthError> {
        let c = match self.verify_access_token(token).await {
            Ok(c) => c,
            Err(TokenError::Unavailable(e)) => return Err(OAuthError::server(e)),
            Err(_) => return Ok(json!({"active": false})),
        };
        let mut out = json!({
            "active": true,
            "token_type": "Bearer",
            "scope": c.scope,
            "client_id": c.client_id,
            "sub": c.sub,
            "aud": c.aud.0,
            "iss": c.iss,
            "exp": c.exp,
            "iat": c.iat,
            "nbf": c.nbf,
            "jti": c.jti,
        });
        if let Some(p) = c.patient {
            out["patient"] = p.into();
        }
        if let Some(f) = c.fhir_user {
            out["fhirUser"] = f.into();
        }
        if let Some(u) = self.username_of(&c.sub).await? {
            out["username"] = u.into();
        }
        Ok(out)
    }

    /// RFC 7662's answer on a refresh token: inactive once revoked, spent (past the grace
    /// of its rotation) or expired.
    async fn introspect_refresh_token(&self, token: &str) -> Result<Value, OAuthError> {
        let inactive = json!({"active": false});
        let now = self.now();
        let Some(row) = self.store().get_refresh_token(&hash_token(token)).await? else {
            return Ok(inactive);
        };
        let revoked = self
            .store()
            .grant_revocation(&row.grant_id)
            .await?
            .is_some();
        let grace = self.config().refresh_grace.as_secs() as i64;
        let spent = row.used_at.is_some_and(|u| now - u > grace);
        if revoked || spent || now >= row.expires_at {
            return Ok(inactive);
        }
        let mut out = json!({
            "active": true,
            "token_type": "refresh_token",
            "scope": row.scope,
            "client_id": row.client_id,
            "exp": row.expires_at,
            "iat": row.created_at,
            "iss": self.issuer(),
            "aud": row.audiences,
        });
        if let Some(u) = &row.user_id {
            out["sub"] = u.clone().into();
            if let Some(name) = self.username_of(u).await? {
                out["username"] = name.into();
            }
        }
        if let Some(p) = row.patient {
            out["patient"] = p.into();
        }
        Ok(out)
    }

    async fn username_of(&self, sub: &str) -> Result<Option<String>, OAuthError> {
        Ok(self.store().get_user(sub).await?.map(|u| u.username))
    }

    /// Revokes an access token (by its `jti`) or a refresh token (its whole family).
    /// Unknown tokens are not an error (RFC 7009 §2.2).
    pub async fn revoke(
        &self,
        params: &Params,
        basic: Option<&BasicCredentials>,
    ) -> Result<(), OAuthError> {
        let caller = self.authenticate_client(params, basic).await?;
        let token = params.require("token")?;
        let now = self.now();
        let not_yours = |owner: &str| {
            OAuthError::new(
                super::ErrorCode::UnauthorizedClient,
                format!(
                    "the token was issued to client {owner}, not to {}; only its client may revoke it",
                    caller.client_id
                ),
            )
        };
        if let Some(row) = self.store().get_refresh_token(&hash_token(token)).await? {
            if row.client_id != caller.client_id {
                return Err(not_yours(&row.client_id));
            }
            self.store()
                .revoke_grant(
                    &row.grant_id,
                    now,
                    "its refresh token was revoked by the client",
                )
                .await?;
            return Ok(());
        }
        if token.split('.').count() == 3 {
            // Expired tokens may be revoked too: verify the signature, ignore the times.
            let jwks = self.jwks().await?;
            let claims = match tokens::verify_access_token(token, &jwks, self.issuer(), None, 0) {
                Ok(c) => c,
                Err(_) => return Ok(()),
            };
            if claims.client_id != caller.client_id {
                return Err(not_yours(&claims.client_id));
            }
            self.store().revoke_access_token(&claims.jti, now).await?;
        }
        Ok(())
    }

    /// The OpenID Connect userinfo of a bearer access token with the `openid` scope.
    pub async fn userinfo(&self, bearer: Option<&str>) -> Result<Value, OAuthError> {
        let token = bearer.ok_or_else(|| {
            OAuthError::invalid_token("no access token: send it as Authorization: Bearer <token>")
        })?;
        let claims = self
            .verify_access_token(token)
            .await
            .map_err(|e| OAuthError::invalid_token(e.to_string()))?;
        if !claims.has_scope("openid") {
            return Err(OAuthError::new(
                super::ErrorCode::InsufficientScope,
                "the access token lacks the openid scope that userinfo requires",
            ));
        }
        let user = self.store().get_user(&claims.sub).await?.ok_or_else(|| {
            OAuthError::invalid_token("the token's subject is not a user of this server")
        })?;
        let mut out = json!({"sub": user.id, "preferred_username": user.username});
        if claims.has_scope("fhirUser")
            && let Some(f) = user.fhir_user
        {
            out["fhirUser"] = f.into();
        }
        Ok(out)
    }

    /// `hestia keys rotate`.
    pub async fn rotate_keys(&self) -> Result<Vec<keys::Rotation>, keys::KeyError> {
        let rotations = keys::rotate(
            self.store(),
            self.now(),
            self.config().key_rotation_overlap.as_secs() as i64,
            self.config().access_token_lifetime.as_secs() as i64,
        )
        .await;
        self.forget_cached_keys();
        rotations
    }
}
