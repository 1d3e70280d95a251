//! The token endpoint: `authorization_code` (with PKCE), `client_credentials` and
//! `refresh_token` (rotation; reuse revokes the family), and what a token response holds.

use std::sync::Arc;

use serde::Serialize;

use super::client_auth::BasicCredentials;
use super::errors::ErrorCode;
use super::policy::{AudienceQuery, GrantRequest};
use super::tokens::{self, ACCESS_TOKEN_TYP, AccessClaims, Audience, IdClaims, utc};
use super::{AuthServer, OAuthError, Params, hash_token, keys, pkce, random_token, scopes};
use crate::store::{Client, CodeRow, RefreshRow, User};

/// Grant types of the token endpoint.
pub const GRANT_TYPES: &[&str] = &["authorization_code", "client_credentials", "refresh_token"];

/// A successful token response (RFC 6749 §5.1, plus the SMART context).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    pub scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    #[serde(rename = "fhirUser", skip_serializing_if = "Option::is_none")]
    pub fhir_user: Option<String>,
}

/// Everything a token is made from.
pub(crate) struct Issue<'a> {
    /// `client_credentials`, `authorization_code` or `refresh_token`: the audit event's
    /// target.
    pub grant_type: &'static str,
    pub client: &'a Client,
    pub grant_id: &'a str,
    pub user: Option<&'a User>,
    pub scopes: Vec<String>,
    pub audiences: Vec<String>,
    pub patient: Option<String>,
    pub auth_time: Option<i64>,
    pub nonce: Option<String>,
    pub refresh: bool,
    /// The token opens its grant, which is recorded with it.
    pub new_grant: bool,
}

/// The scopes a token gets, and the patient in its launch context.
pub(crate) struct ScopeDecision {
    pub scopes: Vec<String>,
    pub patient: Option<String>,
}

impl AuthServer {
    /// The token endpoint.
    pub async fn token(
        &self,
        params: &Params,
        basic: Option<&BasicCredentials>,
    ) -> Result<TokenResponse, OAuthError> {
        let grant_type = params.require("grant_type")?;
        if !GRANT_TYPES.contains(&grant_type) {
            return Err(OAuthError::new(
                ErrorCode::UnsupportedGrantType,
                format!(
                    "grant type {grant_type:?} is not supported; supported: {}",
                    GRANT_TYPES.join(", ")
                ),
            ));
        }
        let client = self.authenticate_client(params, basic).await?;
        match grant_type {
            "client_credentials" => self.client_credentials(params, &client).await,
            "authorization_code" => self.authorization_code(params, &client).await,
            _ => self.refresh(params, &client).await,
        }
    }

    fn require_grant_type(client: &Client, grant: &str) -> Result<(), OAuthError> {
        if client.grant_types.iter().any(|g| g == grant) {
            Ok(())
        } else {
            Err(OAuthError::new(
                ErrorCode::UnauthorizedClient,
                format!(
                    "client {} is not registered for the {grant} grant (its grant types: {})",
                    client.client_id,
                    if client.grant_types.is_empty() {
                        "none".into()
                    } else {
                        client.grant_types.join(", ")
                    }
                ),
            ))
        }
    }

    /// Runs the scope policy. Without an account, any refused scope is an `invalid_scope`
    /// naming it. For an account the policy also bounds the scopes by what the account may
    /// access (its roles and access policies): a scope its rights exclude is left out, as
    /// SMART lets a server grant less than asked, and only a request left with nothing is
    /// refused. The patient in context is the one given or, when an account's rights made
    /// a `patient/` scope of its own records, the account's patient.
    pub(crate) async fn decide_scopes(
        &self,
        client: &Client,
        grant_type: &str,
        requested: Vec<String>,
        user: Option<&User>,
        patient: Option<&str>,
    ) -> Result<ScopeDecision, OAuthError> {
        let registered = scopes::split(&client.scope);
        let requested = if requested.is_empty() {
            registered.clone()
        } else {
            requested
        };
        let rights = match user {
            Some(user) => Some(self.store().rights_of(&user.id).await?),
            None => None,
        };
        let own_patient = rights
            .as_ref()
            .and_then(|r| r.fhir_user_compartment.clone());
        let outcome = self.policy.grant(&GrantRequest {
            client_id: client.client_id.clone(),
            grant_type: grant_type.to_string(),
            requested_scopes: requested,
            registered_scopes: registered,
            subject: Some(user.map_or(client.client_id.clone(), |u| u.id.clone())),
            fhir_user: user.and_then(|u| u.fhir_user.clone()),
            patient: patient.map(str::to_string),
            user: rights,
        });
        match outcome.refused.first() {
            Some((scope, why)) if user.is_none() || outcome.granted.is_empty() => {
                Err(OAuthError::invalid_scope(format!("scope {scope}: {why}")))
            }
            _ => {
                for (scope, why) in &outcome.refused {
                    tracing::debug!(client = %client.client_id, "scope {scope} left out: {why}");
                }
                let patient = match patient {
                    Some(p) => Some(p.to_string()),
                    None if outcome.granted.iter().any(|s| s.starts_with("patient/")) => {
                        own_patient
                    }
                    None => None,
                };
                Ok(ScopeDecision {
                    scopes: outcome.granted,
                    patient,
                })
            }
        }
    }

    /// Audiences from `aud` (SMART/IRIS) and `resource` (RFC 8707), through the policy.
    pub(crate) async fn decide_audiences(
        &self,
        client: &Client,
        params: &Params,
    ) -> Result<Vec<String>, OAuthError> {
        let mut requested: Vec<String> = params
            .all("resource")
            .iter()
            .map(|s| s.to_string())
            .collect();
        if let Some(aud) = params.get("aud")? {
            requested.push(aud.to_string());
        }
        for r in &requested {
            if !(r.starts_with("https://") || r.starts_with("http://")) || r.contains('#') {
                return Err(OAuthError::new(
                    ErrorCode::InvalidTarget,
                    format!("audience {r:?} must be an absolute http(s) URI without a fragment"),
                ));
            }
        }
        let query = AudienceQuery {
            client_id: client.client_id.clone(),
            requested,
            client_audiences: client.audiences.clone(),
            known: self.known_audiences().await?,
        };
        self.policy
            .resolve_audience(&query)
            .map_err(|why| OAuthError::new(ErrorCode::InvalidTarget, why))
    }

    async fn client_credentials(
        &self,
        params: &Params,
        client: &Client,
    ) -> Result<TokenResponse, OAuthError> {
        Self::require_grant_type(client, "client_credentials")?;
        let requested = scopes::split(params.get("scope")?.unwrap_or_default());
        let granted = self
            .decide_scopes(client, "client_credentials", requested, None, None)
            .await?
            .scopes;
        let audiences = self.decide_audiences(client, params).await?;
        let grant_id = super::record_id();
        self.issue(Issue {
            grant_type: "client_credentials",
            client,
            grant_id: &grant_id,
            user: None,
            scopes: granted,
            audiences,
            patient: None,
            auth_time: None,
            nonce: None,
            refresh: false,
            new_grant: true,
        })
        .await
    }

    async fn authorization_code(
        &self,
        params: &Params,
        client: &Client,
    ) -> Result<TokenResponse, OAuthError> {
        let code = params.require("code")?;
        let now = self.now();
        let hash = hash_token(code);
        // Every check reads; the code is spent (or its reuse revoked) only once the request
        // is known to be this client's and well-formed.
        let Some(row) = self.store().get_code(&hash).await? else {
            return Err(OAuthError::invalid_grant(
                "the authorization code is unknown (never issued, or mistyped)",
            ));
        };
        if row.client_id != client.client_id {
            return Err(OAuthError::invalid_grant(format!(
                "the authorization code was issued to another client, not {}",
                client.client_id
            )));
        }
        if now >= row.expires_at {
            return Err(OAuthError::invalid_grant(format!(
                "the authorization code expired at {} (codes live {} s)",
                utc(row.expires_at),
                row.expires_at - row.created_at
            )));
        }
        Self::check_code_request(params, &row)?;
        if !self.store().use_code(&hash, now).await? {
            let used_at = self
                .store()
                .get_code(&hash)
                .await?
                .and_then(|r| r.used_at)
                .unwrap_or(now);
            self.store()
                .revoke_grant(&row.grant_id, now, "its authorization code was used twice")
                .await?;
            return Err(OAuthError::invalid_grant(format!(
                "the authorization code was already used at {}; the tokens issued from it are now revoked",
                utc(used_at)
            )));
        }
        let user = self.store().get_user(&row.user_id).await?.ok_or_else(|| {
            OAuthError::invalid_grant("the user who approved this code no longer exists")
        })?;
        let granted = scopes::split(&row.scope);
        let refresh = Self::wants_refresh(client, &granted);
        self.issue(Issue {
            grant_type: "authorization_code",
            client,
            grant_id: &row.grant_id,
            user: Some(&user),
            scopes: granted,
            audiences: row.audiences.clone(),
            patient: row.patient.clone(),
            auth_time: Some(row.auth_time),
            nonce: row.nonce.clone(),
            refresh,
            new_grant: false,
        })
        .await
    }

    /// The token request's `redirect_uri` and PKCE `code_verifier` against the code's.
    fn check_code_request(params: &Params, row: &CodeRow) -> Result<(), OAuthError> {
        match params.get("redirect_uri")? {
            Some(uri) if uri != row.redirect_uri => {
                return Err(OAuthError::invalid_grant(format!(
                    "redirect_uri {uri} differs from the one of the authorization request ({})",
                    row.redirect_uri
                )));
            }
            None if row.redirect_uri_given => {
                return Err(OAuthError::invalid_request(
                    "redirect_uri is missing; the authorization request had one, so the token request must repeat it",
                ));
            }
            _ => {}
        }
        match (&row.code_challenge, params.get("code_verifier")?) {
            (Some(challenge), Some(verifier)) => {
                pkce::verify(challenge, verifier).map_err(OAuthError::invalid_grant)?
            }
            (Some(_), None) => {
                return Err(OAuthError::invalid_grant(
                    "code_verifier is missing; the authorization request had a code_challenge (PKCE)",
                ));
            }
            (None, Some(_)) => {
                return Err(OAuthError::invalid_grant(
                    "code_verifier was sent but the authorization request had no code_challenge",
                ));
            }
            (None, None) => {}
        }
        Ok(())
    }

    fn wants_refresh(client: &Client, granted: &[String]) -> bool {
        granted
            .iter()
            .any(|s| s == "offline_access" || s == "online_access")
            || client.grant_types.iter().any(|g| g == "refresh_token")
    }

    async fn refresh(&self, params: &Params, client: &Client) -> Result<TokenResponse, OAuthError> {
        let hash = hash_token(params.require("refresh_token")?);
        let now = self.now();
        let row = self.current_refresh_token(&hash, client, now).await?;
        // Reuse of a token spent longer ago than the grace window is detected first, even
        // when the request is wrong in other ways (it costs the thief nothing to fix those).
        if let Some(used_at) = row.used_at
            && now - used_at > self.refresh_grace()
        {
            return Err(self.refresh_reuse(&row, used_at, now).await?);
        }
        let requested = Self::refresh_scopes(params, &row)?;
        let user = match &row.user_id {
            Some(id) => Some(self.store().get_user(id).await?.ok_or_else(|| {
                OAuthError::invalid_grant("the user of this refresh token no longer exists")
            })?),
            None => None,
        };
        let granted = self
            .decide_scopes(
                client,
                "refresh_token",
                requested,
                user.as_ref(),
                row.patient.as_deref(),
            )
            .await?
            .scopes;
        // Spent only once every check passed: a refused request leaves the token as it was.
        self.spend_refresh_token(&row, now).await?;
        self.issue(Issue {
            grant_type: "refresh_token",
            client,
            grant_id: &row.grant_id,
            user: user.as_ref(),
            scopes: granted,
            audiences: row.audiences.clone(),
            patient: row.patient.clone(),
            auth_time: row.auth_time,
            nonce: None,
            refresh: true,
            new_grant: false,
        })
        .await
    }

    /// The refresh token of hash `hash` when it was issued to `client` and is neither
    /// revoked nor expired (it may have been spent).
    async fn current_refresh_token(
        &self,
        hash: &str,
        client: &Client,
        now: i64,
    ) -> Result<RefreshRow, OAuthError> {
        let Some(row) = self.store().get_refresh_token(hash).await? else {
            return Err(OAuthError::invalid_grant("the refresh token is unknown"));
        };
        if row.client_id != client.client_id {
            return Err(OAuthError::invalid_grant(format!(
                "the refresh token was issued to another client, not {}",
                client.client_id
            )));
        }
        if let Some(r) = self.store().grant_revocation(&row.grant_id).await? {
            return Err(OAuthError::invalid_grant(format!(
                "the refresh token was revoked at {}: {}",
                utc(r.at),
                r.reason
            )));
        }
        if now >= row.expires_at {
            return Err(OAuthError::invalid_grant(format!(
                "the refresh token expired at {}",
                utc(row.expires_at)
            )));
        }
        Ok(row)
    }

    /// The scopes a refresh asks for: those of its `scope` parameter, each one granted
    /// originally, or else all the original ones.
    fn refresh_scopes(params: &Params, row: &RefreshRow) -> Result<Vec<String>, OAuthError> {
        let original = scopes::split(&row.scope);
        let Some(asked) = params.get("scope")? else {
            return Ok(original);
        };
        let asked = scopes::split(asked);
        if let Some(extra) = asked.iter().find(|a| !original.contains(a)) {
            return Err(OAuthError::invalid_scope(format!(
                "scope {extra} was not granted originally (granted: {})",
                row.scope
            )));
        }
        Ok(asked)
    }

    /// Marks the refresh token spent. One a concurrent request spent since it was read
    /// passes within the grace window; beyond it, it is a reuse.
    async fn spend_refresh_token(&self, row: &RefreshRow, now: i64) -> Result<(), OAuthError> {
        if self.store().use_refresh_token(&row.token_hash, now).await? {
            return Ok(());
        }
        let used_at = self
            .store()
            .get_refresh_token(&row.token_hash)
            .await?
            .and_then(|r| r.used_at)
            .unwrap_or(now);
        if now - used_at > self.refresh_grace() {
            return Err(self.refresh_reuse(row, used_at, now).await?);
        }
        Ok(())
    }

    /// How long after a refresh token was spent a second use of it is a retry, not a reuse.
    fn refresh_grace(&self) -> i64 {
        self.config().refresh_grace.as_secs() as i64
    }

    /// Revokes the family of a refresh token spent at `used_at` and used again; the error to answer.
    async fn refresh_reuse(
        &self,
        row: &RefreshRow,
        used_at: i64,
        now: i64,
    ) -> Result<OAuthError, OAuthError> {
        let grace = self.refresh_grace();
        self.store()
            .revoke_grant(&row.grant_id, now, "a spent refresh token was used again")
            .await?;
        Ok(OAuthError::invalid_grant(format!(
            "refresh token reuse detected: it was already exchanged at {} (more than {grace} s ago); every token of this grant is now revoked",
            utc(used_at)
        )))
    }

    /// Signs the id_token, mints a refresh token, and records the access token last, with
    /// its `token.issued` audit event in the same commit (a failure before leaves at most
    /// a refresh token no one was given). The access token is signed while its record
    /// commits, its claims fixed before either: an RSA signature takes about as long as
    /// the wait for the records group, and the two in turn would make each token wait for
    /// both. A signature with a key that loaded fails only when its library does (memory,
    /// random source): the answer is then a `server_error`, and the record, of a token no
    /// one holds, expires unused.
    pub(crate) async fn issue(&self, i: Issue<'_>) -> Result<TokenResponse, OAuthError> {
        let now = self.now();
        let life = self.lifetimes(i.client);
        let alg = self.config().signing_alg.clone();
        let key = self
            .signing_key(&alg, now)
            .await
            .map_err(OAuthError::server)?;
        let claims = self.access_claims(&i, now, now + life.access);
        let id_token = match i.user {
            Some(user) if i.has_scope("openid") => Some(
                self.id_token(&i, user, (&alg, &key), now, claims.exp)
                    .await?,
            ),
            _ => None,
        };
        let refresh_token = if i.refresh {
            Some(
                self.mint_refresh_token(&i, &claims.scope, now, now + life.refresh)
                    .await?,
            )
        } else {
            None
        };
        let issued = crate::store::IssuedToken {
            jti: claims.jti.clone(),
            grant_id: i.grant_id.to_string(),
            client_id: i.client.client_id.clone(),
            expires_at: claims.exp,
            new_grant: i.new_grant.then_some((None, now)),
        };
        let event = crate::store::NewAuditEvent {
            actor: i.client.client_id.clone(),
            action: "token.issued".into(),
            target: i.grant_type.into(),
            outcome: "ok".into(),
            detail: format!("scope {:?}", claims.scope),
            ..Default::default()
        };
        let sign = async { tokens::sign(&key, ACCESS_TOKEN_TYP, &claims) };
        let (recorded, access_token) = tokio::join!(self.record_issued(issued, event, now), sign);
        recorded?;
        let access_token = access_token.map_err(|e| {
            tracing::error!(jti = %claims.jti, error = %e, "signing a recorded access token failed");
            OAuthError::server(e)
        })?;
        Ok(TokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in: life.access,
            scope: claims.scope,
            refresh_token,
            id_token,
            fhir_user: claims.fhir_user.filter(|_| i.has_scope("fhirUser")),
            patient: i.patient,
        })
    }

    /// The claims of the access token `i` describes, valid from `now` until `exp`.
    fn access_claims(&self, i: &Issue<'_>, now: i64, exp: i64) -> AccessClaims {
        AccessClaims {
            iss: self.issuer().to_string(),
            sub: i
                .user
                .map_or_else(|| i.client.client_id.clone(), |u| u.id.clone()),
            aud: Audience(i.audiences.clone()),
            client_id: i.client.client_id.clone(),
            scope: scopes::join(&i.scopes),
            exp,
            iat: now,
            nbf: now,
            jti: super::record_id(),
            auth_time: i.auth_time,
            patient: i.patient.clone(),
            fhir_user: i.fhir_user(),
        }
    }

    /// The signed id_token for `user`, in the algorithm the client registered
    /// (`id_token_signed_response_alg`) when this server signs with it, else with the
    /// access token's `(alg, key)`.
    async fn id_token(
        &self,
        i: &Issue<'_>,
        user: &User,
        (alg, key): (&str, &Arc<keys::SigningKey>),
        now: i64,
        exp: i64,
    ) -> Result<String, OAuthError> {
        let id_alg = i
            .client
            .metadata
            .get("id_token_signed_response_alg")
            .and_then(|v| v.as_str())
            .filter(|a| keys::SIGNING_ALGS.contains(a))
            .unwrap_or(alg);
        let id_key = if id_alg == alg {
            key.clone()
        } else {
            self.signing_key(id_alg, now)
                .await
                .map_err(OAuthError::server)?
        };
        let claims = IdClaims {
            iss: self.issuer().to_string(),
            sub: user.id.clone(),
            aud: i.client.client_id.clone(),
            exp,
            iat: now,
            auth_time: i.auth_time.unwrap_or(now),
            nonce: i.nonce.clone(),
            fhir_user: i.fhir_user().filter(|_| i.has_scope("fhirUser")),
            preferred_username: Some(user.username.clone()),
        };
        tokens::sign(&id_key, "JWT", &claims).map_err(OAuthError::server)
    }

    /// A new refresh token of the grant `i` names, for `scope`, stored (as its hash) until
    /// `expires_at`.
    async fn mint_refresh_token(
        &self,
        i: &Issue<'_>,
        scope: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<String, OAuthError> {
        let token = random_token();
        self.store()
            .insert_refresh_token(&RefreshRow {
                token_hash: hash_token(&token),
                grant_id: i.grant_id.to_string(),
                client_id: i.client.client_id.clone(),
                user_id: i.user.map(|u| u.id.clone()),
                scope: scope.to_string(),
                audiences: i.audiences.clone(),
                patient: i.patient.clone(),
                fhir_user: i.fhir_user(),
                auth_time: i.auth_time,
                created_at: now,
                expires_at,
                used_at: None,
            })
            .await?;
        Ok(token)
    }
}

impl Issue<'_> {
    fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// The account's FHIR user, which every token of the grant carries.
    fn fhir_user(&self) -> Option<String> {
        self.user.and_then(|u| u.fhir_user.clone())
    }
}

impl AuthServer {
    /// The claims a token of `client_id` for account `username` (or account id; none: the client's own,
    /// `client_credentials`) asking for `scope` would carry, decided by the same scope and
    /// audience policy as the token endpoint; nothing is signed or recorded (the `jti` is
    /// `unissued`), so nothing usable exists. The console's Explain runs the FHIR gate on it.
    pub async fn unissued_claims(
        &self,
        client_id: &str,
        username: Option<&str>,
        scope: &str,
    ) -> Result<AccessClaims, OAuthError> {
        let client = self
            .store()
            .get_client(client_id)
            .await?
            .ok_or_else(|| OAuthError::invalid_client(format!("no client {client_id:?}")))?;
        let user = match username {
            Some(name) => Some(match self.store().find_user(name).await? {
                Some(user) => user,
                None => self
                    .store()
                    .user_by_id(name)
                    .await?
                    .ok_or_else(|| OAuthError::invalid_grant(format!("no account {name:?}")))?,
            }),
            None => None,
        };
        let grant_type = if user.is_some() {
            "authorization_code"
        } else {
            "client_credentials"
        };
        Self::require_grant_type(&client, grant_type)?;
        let decision = self
            .decide_scopes(
                &client,
                grant_type,
                scopes::split(scope),
                user.as_ref(),
                None,
            )
            .await?;
        let audiences = self.decide_audiences(&client, &Params(Vec::new())).await?;
        let now = self.now();
        Ok(AccessClaims {
            iss: self.issuer().to_string(),
            sub: user
                .as_ref()
                .map_or_else(|| client.client_id.clone(), |u| u.id.clone()),
            aud: Audience(audiences),
            client_id: client.client_id.clone(),
            scope: scopes::join(&decision.scopes),
            exp: now + self.lifetimes(&client).access,
            iat: now,
            nbf: now,
            jti: "unissued".into(),
            auth_time: user.as_ref().map(|_| now),
            patient: decision.patient,
            fhir_user: user.and_then(|u| u.fhir_user),
        })
    }
}
