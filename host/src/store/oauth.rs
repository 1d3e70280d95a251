//! Authorization-server state: signing keys, grants, access-token records, authorization
//! requests, codes, refresh tokens, client-assertion `jti`s, initial access tokens and
//! sign-in attempts. Secrets (codes, refresh tokens, registration tokens) are stored as
//! SHA-256 hashes only.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Client, Store, StoreError, User, WriteTx, conflict_or, placeholders};

#[derive(Debug, Clone)]
pub struct KeyRow {
    pub kid: String,
    pub alg: String,
    pub private_pem: String,
    pub public_jwk: String,
    pub created_at: i64,
    pub sign_from: i64,
    pub retire_after: Option<i64>,
}

/// The record of an issued access token, and the grant it opens when it is the grant's
/// first (`client_credentials`: a grant per token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub jti: String,
    pub grant_id: String,
    pub client_id: String,
    pub expires_at: i64,
    /// The grant to create with the record: its account and creation time.
    pub new_grant: Option<(Option<String>, i64)>,
}

/// Records per statement of [`Store::write_issued`]: four parameters each, under
/// SQLite's historical limit of 999 per statement.
const ISSUED_PER_STATEMENT: usize = 200;

/// An authorization request between a successful sign-in and the code.
#[derive(Debug, Clone)]
pub struct AuthRequestRow {
    pub id: String,
    pub browser_hash: String,
    pub csrf: String,
    pub client_id: String,
    /// The validated request, as JSON.
    pub params: String,
    pub user_id: Option<String>,
    pub auth_time: Option<i64>,
    pub created_at: i64,
    pub expires_at: i64,
}

#[derive(Debug, Clone)]
pub struct CodeRow {
    pub code_hash: String,
    pub grant_id: String,
    pub client_id: String,
    pub user_id: String,
    pub redirect_uri: String,
    pub redirect_uri_given: bool,
    pub scope: String,
    pub audiences: Vec<String>,
    pub patient: Option<String>,
    pub fhir_user: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub auth_time: i64,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct RefreshRow {
    pub token_hash: String,
    pub grant_id: String,
    pub client_id: String,
    pub user_id: Option<String>,
    pub scope: String,
    pub audiences: Vec<String>,
    pub patient: Option<String>,
    pub fhir_user: Option<String>,
    pub auth_time: Option<i64>,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
}

/// Why a grant (and so its tokens) is no longer valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub at: i64,
    pub reason: String,
}

/// What the store knows about an access token by its `jti`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessTokenRecord {
    pub client_id: String,
    pub grant_id: String,
    pub revoked: Option<Revocation>,
}

fn json_list(row: &AnyRow, column: &str) -> Result<Vec<String>, StoreError> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text)
        .map_err(|e| StoreError::Invalid(format!("column {column} holds invalid JSON: {e}")))
}

fn to_json(list: &[String]) -> String {
    serde_json::to_string(list).unwrap_or_else(|_| "[]".into())
}

fn key_from_row(row: &AnyRow) -> Result<KeyRow, StoreError> {
    Ok(KeyRow {
        kid: row.try_get("kid")?,
        alg: row.try_get("alg")?,
        private_pem: row.try_get("private_pem")?,
        public_jwk: row.try_get("public_jwk")?,
        created_at: row.try_get("created_at")?,
        sign_from: row.try_get("sign_from")?,
        retire_after: row.try_get("retire_after")?,
    })
}

fn code_from_row(row: &AnyRow) -> Result<CodeRow, StoreError> {
    Ok(CodeRow {
        code_hash: row.try_get("code_hash")?,
        grant_id: row.try_get("grant_id")?,
        client_id: row.try_get("client_id")?,
        user_id: row.try_get("user_id")?,
        redirect_uri: row.try_get("redirect_uri")?,
        redirect_uri_given: row.try_get::<i64, _>("redirect_uri_given")? != 0,
        scope: row.try_get("scope")?,
        audiences: json_list(row, "audiences")?,
        patient: row.try_get("patient")?,
        fhir_user: row.try_get("fhir_user")?,
        nonce: row.try_get("nonce")?,
        code_challenge: row.try_get("code_challenge")?,
        code_challenge_method: row.try_get("code_challenge_method")?,
        auth_time: row.try_get("auth_time")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        used_at: row.try_get("used_at")?,
    })
}

fn refresh_from_row(row: &AnyRow) -> Result<RefreshRow, StoreError> {
    Ok(RefreshRow {
        token_hash: row.try_get("token_hash")?,
        grant_id: row.try_get("grant_id")?,
        client_id: row.try_get("client_id")?,
        user_id: row.try_get("user_id")?,
        scope: row.try_get("scope")?,
        audiences: json_list(row, "audiences")?,
        patient: row.try_get("patient")?,
        fhir_user: row.try_get("fhir_user")?,
        auth_time: row.try_get("auth_time")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        used_at: row.try_get("used_at")?,
    })
}

fn auth_request_from_row(row: &AnyRow) -> Result<AuthRequestRow, StoreError> {
    Ok(AuthRequestRow {
        id: row.try_get("id")?,
        browser_hash: row.try_get("browser_hash")?,
        csrf: row.try_get("csrf")?,
        client_id: row.try_get("client_id")?,
        params: row.try_get("params")?,
        user_id: row.try_get("user_id")?,
        auth_time: row.try_get("auth_time")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
    })
}

impl Store {
    // ---- signing keys ----

    pub async fn insert_signing_key(&self, key: &KeyRow) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO signing_keys (kid, alg, private_pem, public_jwk, created_at, sign_from, retire_after) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(&key.kid)
            .bind(&key.alg)
            .bind(&key.private_pem)
            .bind(&key.public_jwk)
            .bind(key.created_at)
            .bind(key.sign_from)
            .bind(key.retire_after)
            .execute(self.autocommit().await?.sql())
            .await
            .map_err(|e| conflict_or(e, || format!("signing key {}", key.kid)))?;
        self.changed();
        Ok(())
    }

    /// Every key row, oldest first.
    pub async fn signing_keys(&self) -> Result<Vec<KeyRow>, StoreError> {
        let rows = sqlx::query("SELECT kid, alg, private_pem, public_jwk, created_at, sign_from, retire_after FROM signing_keys ORDER BY sign_from, created_at, kid")
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(key_from_row).collect()
    }

    /// Sets the retirement time of every not-yet-retiring key of `alg` except `keep`.
    pub async fn schedule_key_retirement(
        &self,
        alg: &str,
        keep: &str,
        retire_after: i64,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query("UPDATE signing_keys SET retire_after = $1 WHERE alg = $2 AND kid <> $3 AND retire_after IS NULL")
            .bind(retire_after)
            .bind(alg)
            .bind(keep)
            .execute(self.autocommit().await?.sql())
            .await?;
        self.changed();
        Ok(done.rows_affected())
    }

    pub async fn delete_retired_keys(&self, now: i64) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM signing_keys WHERE retire_after IS NOT NULL AND retire_after < $1",
        )
        .bind(now)
        .execute(self.autocommit().await?.sql())
        .await?;
        self.changed();
        Ok(done.rows_affected())
    }

    // ---- grants and access tokens ----

    pub async fn create_grant(
        &self,
        grant_id: &str,
        client_id: &str,
        user_id: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO oauth_grants (grant_id, client_id, user_id, created_at) VALUES ($1, $2, $3, $4)")
            .bind(grant_id)
            .bind(client_id)
            .bind(user_id)
            .bind(now)
            .execute(self.autocommit().await?.sql())
            .await?;
        Ok(())
    }

    /// Revokes a grant (first reason wins); every token of it stops being valid.
    pub async fn revoke_grant(
        &self,
        grant_id: &str,
        now: i64,
        reason: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE oauth_grants SET revoked_at = $1, revoked_reason = $2 WHERE grant_id = $3 AND revoked_at IS NULL")
            .bind(now)
            .bind(reason)
            .bind(grant_id)
            .execute(self.autocommit().await?.sql())
            .await?;
        self.changed();
        Ok(())
    }

    pub async fn grant_revocation(&self, grant_id: &str) -> Result<Option<Revocation>, StoreError> {
        let row =
            sqlx::query("SELECT revoked_at, revoked_reason FROM oauth_grants WHERE grant_id = $1")
                .bind(grant_id)
                .fetch_optional(self.pool())
                .await?;
        let Some(row) = row else {
            return Ok(Some(Revocation {
                at: 0,
                reason: "its grant is unknown".into(),
            }));
        };
        let at: Option<i64> = row.try_get("revoked_at")?;
        let reason: Option<String> = row.try_get("revoked_reason")?;
        Ok(at.map(|at| Revocation {
            at,
            reason: reason.unwrap_or_default(),
        }))
    }

    pub async fn record_access_token(
        &self,
        jti: &str,
        grant_id: &str,
        client_id: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO oauth_access_tokens (jti, grant_id, client_id, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(jti)
            .bind(grant_id)
            .bind(client_id)
            .bind(expires_at)
            .execute(self.autocommit().await?.sql())
            .await?;
        Ok(())
    }

    /// Writes issued access tokens and the grants they open in `tx` (a statement per
    /// table per [`ISSUED_PER_STATEMENT`] records): part of a group of
    /// [`Store::record_issued`].
    pub(super) async fn write_issued(
        tx: &mut WriteTx,
        issued: &[&IssuedToken],
    ) -> Result<(), StoreError> {
        let conn = tx.sql();
        for chunk in issued.chunks(ISSUED_PER_STATEMENT) {
            let grants: Vec<(&IssuedToken, &(Option<String>, i64))> = chunk
                .iter()
                .filter_map(|i| i.new_grant.as_ref().map(|g| (*i, g)))
                .collect();
            if !grants.is_empty() {
                let sql = format!(
                    "INSERT INTO oauth_grants (grant_id, client_id, user_id, created_at) VALUES {}",
                    placeholders(grants.len(), 4)
                );
                let mut q = super::rows_query(&sql, grants.len());
                for (i, (user, at)) in grants {
                    q = q
                        .bind(&i.grant_id)
                        .bind(&i.client_id)
                        .bind(user.as_deref())
                        .bind(*at);
                }
                q.execute(&mut *conn).await?;
            }
            let sql = format!(
                "INSERT INTO oauth_access_tokens (jti, grant_id, client_id, expires_at) VALUES {}",
                placeholders(chunk.len(), 4)
            );
            let mut q = super::rows_query(&sql, chunk.len());
            for i in chunk {
                q = q
                    .bind(&i.jti)
                    .bind(&i.grant_id)
                    .bind(&i.client_id)
                    .bind(i.expires_at);
            }
            q.execute(&mut *conn).await?;
        }
        Ok(())
    }

    pub async fn access_token_record(
        &self,
        jti: &str,
    ) -> Result<Option<AccessTokenRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT a.client_id, a.grant_id, a.revoked_at, g.revoked_at AS grant_revoked_at, g.revoked_reason \
             FROM oauth_access_tokens a LEFT JOIN oauth_grants g ON g.grant_id = a.grant_id WHERE a.jti = $1",
        )
        .bind(jti)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let own: Option<i64> = row.try_get("revoked_at")?;
        let grant: Option<i64> = row.try_get("grant_revoked_at")?;
        let reason: Option<String> = row.try_get("revoked_reason")?;
        // The grant's reason says more (code reuse, refresh reuse, client removed).
        let revoked = match (own, grant) {
            (_, Some(at)) => Some(Revocation {
                at,
                reason: reason.unwrap_or_default(),
            }),
            (Some(at), None) => Some(Revocation {
                at,
                reason: "the token was revoked".into(),
            }),
            (None, None) => None,
        };
        Ok(Some(AccessTokenRecord {
            client_id: row.try_get("client_id")?,
            grant_id: row.try_get("grant_id")?,
            revoked,
        }))
    }

    pub async fn revoke_access_token(&self, jti: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE oauth_access_tokens SET revoked_at = $1 WHERE jti = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(jti)
        .execute(self.autocommit().await?.sql())
        .await?;
        self.changed();
        Ok(())
    }

    // ---- purge ----

    /// Deletes what expired before `cutoff` (Unix seconds): access-token records, codes and
    /// refresh tokens, then the grants left with none of them that were created before
    /// `cutoff`. Without it these tables grow by a row or two per token for ever. Runs in
    /// batches of [`PURGE_BATCH`] rows, each its own statement, so that a large backlog
    /// never holds SQLite's write lock for long.
    pub async fn purge_expired_oauth(&self, cutoff: i64) -> Result<Purged, StoreError> {
        let batch = |table: &str, key: &str| {
            format!(
                "DELETE FROM {table} WHERE {key} IN \
                 (SELECT {key} FROM {table} WHERE expires_at < $1 LIMIT {PURGE_BATCH})"
            )
        };
        let access_tokens = self
            .delete_in_batches(&batch("oauth_access_tokens", "jti"), cutoff)
            .await?;
        let codes = self
            .delete_in_batches(&batch("oauth_codes", "code_hash"), cutoff)
            .await?;
        let refresh_tokens = self
            .delete_in_batches(&batch("oauth_refresh_tokens", "token_hash"), cutoff)
            .await?;
        let grants = self
            .delete_in_batches(
                &format!(
                    "DELETE FROM oauth_grants WHERE grant_id IN \
                     (SELECT g.grant_id FROM oauth_grants g WHERE g.created_at < $1 \
                      AND NOT EXISTS (SELECT 1 FROM oauth_access_tokens a WHERE a.grant_id = g.grant_id) \
                      AND NOT EXISTS (SELECT 1 FROM oauth_refresh_tokens r WHERE r.grant_id = g.grant_id) \
                      AND NOT EXISTS (SELECT 1 FROM oauth_codes c WHERE c.grant_id = g.grant_id) \
                      LIMIT {PURGE_BATCH})"
                ),
                cutoff,
            )
            .await?;
        Ok(Purged {
            access_tokens,
            codes,
            refresh_tokens,
            grants,
        })
    }

    pub(super) async fn delete_in_batches(
        &self,
        sql: &str,
        cutoff: i64,
    ) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let done = sqlx::query(sql)
                .bind(cutoff)
                .execute(self.autocommit().await?.sql())
                .await?
                .rows_affected();
            total += done;
            if done < PURGE_BATCH {
                return Ok(total);
            }
        }
    }

    // ---- authorization requests ----

    pub async fn create_auth_request(&self, r: &AuthRequestRow) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM oauth_auth_requests WHERE expires_at < $1")
            .bind(r.created_at)
            .execute(self.autocommit().await?.sql())
            .await?;
        sqlx::query("INSERT INTO oauth_auth_requests (id, browser_hash, csrf, client_id, params, user_id, auth_time, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
            .bind(&r.id)
            .bind(&r.browser_hash)
            .bind(&r.csrf)
            .bind(&r.client_id)
            .bind(&r.params)
            .bind(&r.user_id)
            .bind(r.auth_time)
            .bind(r.created_at)
            .bind(r.expires_at)
            .execute(self.autocommit().await?.sql())
            .await?;
        Ok(())
    }

    pub async fn get_auth_request(&self, id: &str) -> Result<Option<AuthRequestRow>, StoreError> {
        let row = sqlx::query("SELECT id, browser_hash, csrf, client_id, params, user_id, auth_time, created_at, expires_at FROM oauth_auth_requests WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(auth_request_from_row).transpose()
    }

    /// Deletes a request; true for the one caller that deleted it (single use).
    pub async fn take_auth_request(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM oauth_auth_requests WHERE id = $1")
            .bind(id)
            .execute(self.autocommit().await?.sql())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    // ---- authorization codes ----

    pub async fn insert_code(&self, c: &CodeRow) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO oauth_codes (code_hash, grant_id, client_id, user_id, redirect_uri, redirect_uri_given, scope, audiences, patient, fhir_user, nonce, code_challenge, code_challenge_method, auth_time, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)")
            .bind(&c.code_hash)
            .bind(&c.grant_id)
            .bind(&c.client_id)
            .bind(&c.user_id)
            .bind(&c.redirect_uri)
            .bind(i64::from(c.redirect_uri_given))
            .bind(&c.scope)
            .bind(to_json(&c.audiences))
            .bind(&c.patient)
            .bind(&c.fhir_user)
            .bind(&c.nonce)
            .bind(&c.code_challenge)
            .bind(&c.code_challenge_method)
            .bind(c.auth_time)
            .bind(c.created_at)
            .bind(c.expires_at)
            .execute(self.autocommit().await?.sql())
            .await?;
        Ok(())
    }

    pub async fn get_code(&self, code_hash: &str) -> Result<Option<CodeRow>, StoreError> {
        let row = sqlx::query("SELECT code_hash, grant_id, client_id, user_id, redirect_uri, redirect_uri_given, scope, audiences, patient, fhir_user, nonce, code_challenge, code_challenge_method, auth_time, created_at, expires_at, used_at FROM oauth_codes WHERE code_hash = $1")
            .bind(code_hash)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(code_from_row).transpose()
    }

    /// Marks a code used; true for the one caller that did it.
    pub async fn use_code(&self, code_hash: &str, now: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE oauth_codes SET used_at = $1 WHERE code_hash = $2 AND used_at IS NULL",
        )
        .bind(now)
        .bind(code_hash)
        .execute(self.autocommit().await?.sql())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    // ---- refresh tokens ----

    pub async fn insert_refresh_token(&self, r: &RefreshRow) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO oauth_refresh_tokens (token_hash, grant_id, client_id, user_id, scope, audiences, patient, fhir_user, auth_time, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)")
            .bind(&r.token_hash)
            .bind(&r.grant_id)
            .bind(&r.client_id)
            .bind(&r.user_id)
            .bind(&r.scope)
            .bind(to_json(&r.audiences))
            .bind(&r.patient)
            .bind(&r.fhir_user)
            .bind(r.auth_time)
            .bind(r.created_at)
            .bind(r.expires_at)
            .execute(self.autocommit().await?.sql())
            .await?;
        Ok(())
    }

    pub async fn get_refresh_token(&self, hash: &str) -> Result<Option<RefreshRow>, StoreError> {
        let row = sqlx::query("SELECT token_hash, grant_id, client_id, user_id, scope, audiences, patient, fhir_user, auth_time, created_at, expires_at, used_at FROM oauth_refresh_tokens WHERE token_hash = $1")
            .bind(hash)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(refresh_from_row).transpose()
    }

    /// Marks a refresh token used; true for the one caller that did it.
    pub async fn use_refresh_token(&self, hash: &str, now: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE oauth_refresh_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL",
        )
        .bind(now)
        .bind(hash)
        .execute(self.autocommit().await?.sql())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    // ---- client assertions ----

    /// Records a client assertion's `jti`; false when it was seen before (a replay).
    pub async fn record_assertion_jti(
        &self,
        client_id: &str,
        jti: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        sqlx::query("DELETE FROM oauth_used_assertions WHERE expires_at < $1")
            .bind(now)
            .execute(self.autocommit().await?.sql())
            .await?;
        let res = sqlx::query(
            "INSERT INTO oauth_used_assertions (client_id, jti, expires_at) VALUES ($1, $2, $3)",
        )
        .bind(client_id)
        .bind(jti)
        .bind(expires_at)
        .execute(self.autocommit().await?.sql())
        .await;
        match res {
            Ok(_) => Ok(true),
            Err(e) => match conflict_or(e, String::new) {
                StoreError::Conflict(_) => Ok(false),
                other => Err(other),
            },
        }
    }

    // ---- dynamic registration ----

    pub async fn insert_registration_token(
        &self,
        hash: &str,
        now: i64,
        expires_at: i64,
        uses: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO oauth_registration_tokens (token_hash, created_at, expires_at, uses_left) VALUES ($1, $2, $3, $4)")
            .bind(hash)
            .bind(now)
            .bind(expires_at)
            .bind(uses)
            .execute(self.autocommit().await?.sql())
            .await?;
        Ok(())
    }

    /// Whether an initial access token is known, unexpired and has a use left (reads only).
    pub async fn registration_token_usable(
        &self,
        hash: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 AS one FROM oauth_registration_tokens WHERE token_hash = $1 AND uses_left > 0 AND expires_at > $2")
            .bind(hash)
            .bind(now)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.is_some())
    }

    /// Uses an initial access token once; false when unknown, expired or used up.
    pub async fn consume_registration_token(
        &self,
        hash: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE oauth_registration_tokens SET uses_left = uses_left - 1 WHERE token_hash = $1 AND uses_left > 0 AND expires_at > $2")
            .bind(hash)
            .bind(now)
            .execute(self.autocommit().await?.sql())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Sets what registration decided beyond `create_client`: the authentication method,
    /// the RFC 7592 registration access token, and no secret for secret-less methods.
    pub async fn set_client_registration(
        &self,
        client_id: &str,
        auth_method: &str,
        registration_token_hash: Option<&str>,
        keep_secret: bool,
    ) -> Result<(), StoreError> {
        let sql = if keep_secret {
            "UPDATE clients SET token_endpoint_auth_method = $1, registration_token_hash = $2 WHERE client_id = $3"
        } else {
            "UPDATE clients SET token_endpoint_auth_method = $1, registration_token_hash = $2, secret_hash = NULL WHERE client_id = $3"
        };
        sqlx::query(sql)
            .bind(auth_method)
            .bind(registration_token_hash)
            .bind(client_id)
            .execute(self.autocommit().await?.sql())
            .await?;
        self.changed();
        Ok(())
    }

    pub async fn client_registration_token_hash(
        &self,
        client_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT registration_token_hash FROM clients WHERE client_id = $1")
            .bind(client_id)
            .fetch_optional(self.pool())
            .await?;
        Ok(match row {
            Some(row) => row.try_get("registration_token_hash")?,
            None => None,
        })
    }

    /// Replaces a client's metadata (RFC 7592 PUT); the id, secret and creation time stay.
    pub async fn update_client(&self, c: &Client, keep_secret: bool) -> Result<(), StoreError> {
        let sql = if keep_secret {
            "UPDATE clients SET client_name = $1, kind = $2, token_endpoint_auth_method = $3, redirect_uris = $4, grant_types = $5, scope = $6, audiences = $7, metadata = $8 WHERE client_id = $9"
        } else {
            "UPDATE clients SET client_name = $1, kind = $2, token_endpoint_auth_method = $3, redirect_uris = $4, grant_types = $5, scope = $6, audiences = $7, metadata = $8, secret_hash = NULL WHERE client_id = $9"
        };
        let done = sqlx::query(sql)
            .bind(&c.client_name)
            .bind(c.kind.as_str())
            .bind(&c.token_endpoint_auth_method)
            .bind(to_json(&c.redirect_uris))
            .bind(to_json(&c.grant_types))
            .bind(&c.scope)
            .bind(to_json(&c.audiences))
            .bind(c.metadata.to_string())
            .bind(&c.client_id)
            .execute(self.autocommit().await?.sql())
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("client {:?}", c.client_id)));
        }
        self.changed();
        Ok(())
    }

    /// Whether the client has a stored secret (a confidential secret-based client).
    pub async fn client_has_secret(&self, client_id: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT secret_hash FROM clients WHERE client_id = $1")
            .bind(client_id)
            .fetch_optional(self.pool())
            .await?;
        Ok(match row {
            Some(row) => row.try_get::<Option<String>, _>("secret_hash")?.is_some(),
            None => false,
        })
    }

    // ---- users and sign-in attempts ----

    pub async fn get_user(&self, id: &str) -> Result<Option<User>, StoreError> {
        let row =
            sqlx::query("SELECT id, username, fhir_user, created_at FROM users WHERE id = $1")
                .bind(id)
                .fetch_optional(self.pool())
                .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(User {
            id: row.try_get("id")?,
            username: row.try_get("username")?,
            fhir_user: row.try_get("fhir_user")?,
            created_at: row.try_get("created_at")?,
        }))
    }

    /// Records a sign-in attempt before its password is checked, so that parallel guesses
    /// count against each other: each one sees at least every attempt recorded before it.
    /// Attempts older than `since` are deleted on the way. The row's `success` column holds
    /// `marker` (a random number above 1) until [`Self::finish_login_attempt`] sets 0 or 1;
    /// an attempt in progress counts as a failure. Returns the failures since `since`,
    /// this one included: (for this username, its oldest, from this address, its oldest).
    pub async fn begin_login_attempt(
        &self,
        username: &str,
        address: &str,
        now: i64,
        since: i64,
        marker: i64,
    ) -> Result<(i64, i64, i64, i64), StoreError> {
        sqlx::query("DELETE FROM oauth_login_attempts WHERE at < $1")
            .bind(since)
            .execute(self.autocommit().await?.sql())
            .await?;
        sqlx::query(
            "INSERT INTO oauth_login_attempts (username, address, at, success) VALUES ($1, $2, $3, $4)",
        )
        .bind(username)
        .bind(address)
        .bind(now)
        .bind(marker)
        .execute(self.autocommit().await?.sql())
        .await?;
        let user = sqlx::query("SELECT COUNT(*) AS n, MIN(at) AS first FROM oauth_login_attempts WHERE username = $1 AND at >= $2 AND success <> 1")
            .bind(username)
            .bind(since)
            .fetch_one(self.pool())
            .await?;
        let addr = sqlx::query("SELECT COUNT(*) AS n, MIN(at) AS first FROM oauth_login_attempts WHERE address = $1 AND at >= $2 AND success <> 1")
            .bind(address)
            .bind(since)
            .fetch_one(self.pool())
            .await?;
        Ok((
            user.try_get("n")?,
            user.try_get::<Option<i64>, _>("first")?.unwrap_or(since),
            addr.try_get("n")?,
            addr.try_get::<Option<i64>, _>("first")?.unwrap_or(since),
        ))
    }

    /// Settles an attempt of [`Self::begin_login_attempt`]: `Some(success)` records the
    /// outcome of the password check, `None` forgets an attempt refused by the rate limit
    /// before its password was checked (so waiting is not prolonged by trying).
    pub async fn finish_login_attempt(
        &self,
        marker: i64,
        outcome: Option<bool>,
    ) -> Result<(), StoreError> {
        let query = match outcome {
            Some(success) => {
                sqlx::query("UPDATE oauth_login_attempts SET success = $1 WHERE success = $2")
                    .bind(i64::from(success))
                    .bind(marker)
            }
            None => sqlx::query("DELETE FROM oauth_login_attempts WHERE success = $1").bind(marker),
        };
        query.execute(self.autocommit().await?.sql()).await?;
        Ok(())
    }

    // ---- the consent page's patient picker (this server's FHIR data) ----

    /// Current (not deleted) Patients for the picker, ordered by family name then id:
    /// at most `limit` of them, and how many match in all. `name_prefix` (already
    /// normalized as string search normalizes) keeps those with a name part starting with
    /// it, as FHIR `Patient?name=` does. Returns (id, resource JSON) pairs.
    pub async fn picker_patients(
        &self,
        name_prefix: Option<&str>,
        limit: i64,
    ) -> Result<(Vec<(String, String)>, i64), StoreError> {
        let filter = if name_prefix.is_some() {
            " AND EXISTS (SELECT 1 FROM fhir_idx_string s WHERE s.rk = r.rk \
               AND s.param = 'name' AND s.normalized LIKE $1 ESCAPE '\\')"
        } else {
            ""
        };
        let pattern = name_prefix.map(|p| {
            let escaped: String = p
                .chars()
                .flat_map(|c| match c {
                    '%' | '_' | '\\' => vec!['\\', c],
                    c => vec![c],
                })
                .collect();
            format!("{escaped}%")
        });
        let from = format!(
            "FROM fhir_resources r WHERE r.resource_type = 'Patient' AND r.deleted = 0{filter}"
        );
        let limit_param = if pattern.is_some() { "$2" } else { "$1" };
        let family = "(SELECT MIN(f.normalized) FROM fhir_idx_string f \
               WHERE f.rk = r.rk AND f.param = 'name' AND f.part = 'family')";
        // Patients without a family name last, on both backends (their NULL order differs).
        let list_sql = format!(
            "SELECT r.id, r.content, {family} AS family {from} \
             ORDER BY CASE WHEN {family} IS NULL THEN 1 ELSE 0 END, family, r.id LIMIT {limit_param}"
        );
        let count_sql = format!("SELECT COUNT(*) AS n {from}");
        let mut list = sqlx::query(&list_sql);
        let mut count = sqlx::query(&count_sql);
        if let Some(p) = &pattern {
            list = list.bind(p.clone());
            count = count.bind(p.clone());
        }
        let rows = list.bind(limit).fetch_all(self.pool()).await?;
        let total: i64 = count.fetch_one(self.pool()).await?.try_get("n")?;
        let patients = rows
            .iter()
            .map(|row| Ok((row.try_get("id")?, row.try_get("content")?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok((patients, total))
    }

    /// Whether a current (not deleted) Patient with this id exists in this server's FHIR data.
    pub async fn patient_exists(&self, id: &str) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT 1 AS one FROM fhir_resources WHERE resource_type = 'Patient' AND id = $1 AND deleted = 0",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.is_some())
    }
}

/// Rows deleted by one statement of [`Store::purge_expired_oauth`].
pub const PURGE_BATCH: u64 = 1000;

/// What [`Store::purge_expired_oauth`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Purged {
    pub access_tokens: u64,
    pub codes: u64,
    pub refresh_tokens: u64,
    pub grants: u64,
}
