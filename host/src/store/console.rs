//! What the admin console keeps (migration 0011): its sessions, the audit trail, locked
//! accounts; and the queries its pages need beyond the command line's (password reset,
//! registration tokens listed and revoked, an account's grants).

use sqlx::Row;

use super::clients::{IssuedTo, revoke_issued};
use super::{Store, StoreError, WriteTx, placeholders};

/// Events per statement of [`Store::write_audit`]: eight parameters each, under SQLite's
/// historical limit of 999 per statement.
const AUDIT_PER_STATEMENT: usize = 120;

/// A console session as its row holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSession {
    pub user_id: String,
    pub username: String,
    /// The token every form of this session carries.
    pub csrf: String,
    pub created_at: i64,
    pub last_seen: i64,
}

/// One audited event (see the migration for what each field holds).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditEvent {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub detail: String,
    pub address: String,
    /// For a FHIR request refused with a valid token, JSON of what explains it again
    /// (client, account, scopes, the request's type and interaction); otherwise empty.
    pub context: String,
}

/// An event to record; `id` and `at` come from the database and the clock.
#[derive(Debug, Clone, Default)]
pub struct NewAuditEvent {
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub detail: String,
    pub address: String,
    pub context: String,
}

/// An audit event and when it happened: what [`Store::record_audit`] commits in groups.
#[derive(Debug)]
pub(super) struct Audit {
    pub at: i64,
    pub event: NewAuditEvent,
}

/// Which events the Activity page asks for: each field, when set, narrows the list.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Actions starting with this text (`signin` matches `signin.ok` and `signin.failed`).
    pub action: Option<String>,
    /// Actor, target or detail containing this text.
    pub text: Option<String>,
    pub outcome: Option<String>,
    pub limit: i64,
}

/// An initial access token for dynamic registration, as listed (the token itself is
/// never kept; `id` is the start of its hash, enough to name it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RegistrationTokenRow {
    pub id: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub uses_left: i64,
}

/// A grant of an account to a client.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GrantRow {
    pub grant_id: String,
    pub client_id: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    pub revoked_reason: Option<String>,
}

/// A console session of an account, as its page lists it (`id` is the start of the
/// hash of its cookie's token, enough to name it; the token itself is never kept).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SessionRow {
    pub id: String,
    pub created_at: i64,
    pub last_seen: i64,
}

/// How many characters of a registration token's hash name it.
const REGISTRATION_ID_LEN: usize = 16;

/// `text` as a literal inside a LIKE pattern with `ESCAPE '\'`.
fn escape_like(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

fn audit_from_row(row: &sqlx::any::AnyRow) -> Result<AuditEvent, sqlx::Error> {
    Ok(AuditEvent {
        id: row.try_get("id")?,
        at: row.try_get("at")?,
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        target: row.try_get("target")?,
        outcome: row.try_get("outcome")?,
        detail: row.try_get("detail")?,
        address: row.try_get("address")?,
        context: row.try_get("context")?,
    })
}

impl Store {
    /// Starts a session for an account; `token_hash` is the SHA-256 of the cookie's value.
    pub async fn create_admin_session(
        &self,
        token_hash: &str,
        user_id: &str,
        username: &str,
        csrf: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO admin_sessions (token_hash, user_id, username, csrf, created_at, last_seen) VALUES ($1, $2, $3, $4, $5, $5)")
            .bind(token_hash)
            .bind(user_id)
            .bind(username)
            .bind(csrf)
            .bind(now)
            .execute(self.autocommit().await?.sql())
            .await?;
        Ok(())
    }

    /// The session of `token_hash` if it was seen after `idle_since`, marked as seen `now`;
    /// an idle session is deleted and answers `None`.
    pub async fn touch_admin_session(
        &self,
        token_hash: &str,
        idle_since: i64,
        now: i64,
    ) -> Result<Option<AdminSession>, StoreError> {
        let row = sqlx::query("SELECT user_id, username, csrf, created_at, last_seen FROM admin_sessions WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(self.pool())
            .await?;
        let Some(row) = row else { return Ok(None) };
        let last_seen: i64 = row.try_get("last_seen")?;
        if last_seen <= idle_since {
            self.delete_admin_session(token_hash).await?;
            return Ok(None);
        }
        sqlx::query("UPDATE admin_sessions SET last_seen = $1 WHERE token_hash = $2")
            .bind(now)
            .bind(token_hash)
            .execute(self.autocommit().await?.sql())
            .await?;
        Ok(Some(AdminSession {
            user_id: row.try_get("user_id")?,
            username: row.try_get("username")?,
            csrf: row.try_get("csrf")?,
            created_at: row.try_get("created_at")?,
            last_seen: now,
        }))
    }

    /// The console sessions of an account, the most recently seen first.
    pub async fn user_admin_sessions(&self, user_id: &str) -> Result<Vec<SessionRow>, StoreError> {
        let rows = sqlx::query("SELECT token_hash, created_at, last_seen FROM admin_sessions WHERE user_id = $1 ORDER BY last_seen DESC LIMIT 200")
            .bind(user_id)
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|row| {
                let hash: String = row.try_get("token_hash")?;
                Ok(SessionRow {
                    id: hash.chars().take(REGISTRATION_ID_LEN).collect(),
                    created_at: row.try_get("created_at")?,
                    last_seen: row.try_get("last_seen")?,
                })
            })
            .collect()
    }

    /// Ends the console session of an account named by `id` (see [`SessionRow`]), or all
    /// of them when `id` is `None`; how many ended.
    pub async fn end_user_admin_sessions(
        &self,
        user_id: &str,
        id: Option<&str>,
    ) -> Result<u64, StoreError> {
        let pattern = match id {
            Some(id)
                if id.len() == REGISTRATION_ID_LEN && id.chars().all(|c| c.is_ascii_hexdigit()) =>
            {
                format!("{id}%")
            }
            Some(id) => {
                return Err(StoreError::Invalid(format!(
                    "{id:?} is not a session id ({REGISTRATION_ID_LEN} hex digits)"
                )));
            }
            None => "%".into(),
        };
        let done =
            sqlx::query("DELETE FROM admin_sessions WHERE user_id = $1 AND token_hash LIKE $2")
                .bind(user_id)
                .bind(pattern)
                .execute(self.autocommit().await?.sql())
                .await?;
        if id.is_some() && done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!(
                "session {}",
                id.unwrap_or_default()
            )));
        }
        Ok(done.rows_affected())
    }

    pub async fn delete_admin_session(&self, token_hash: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM admin_sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(self.autocommit().await?.sql())
            .await?;
        Ok(())
    }

    /// Deletes sessions idle since `idle_since` (run with the purge of OAuth records).
    pub async fn purge_admin_sessions(&self, idle_since: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM admin_sessions WHERE last_seen <= $1")
            .bind(idle_since)
            .execute(self.autocommit().await?.sql())
            .await?;
        Ok(done.rows_affected())
    }

    /// An account by its id.
    pub async fn user_by_id(&self, id: &str) -> Result<Option<super::User>, StoreError> {
        let row = sqlx::query("SELECT username FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        match row {
            Some(row) => self.find_user(&row.try_get::<String, _>("username")?).await,
            None => Ok(None),
        }
    }

    /// Deletes the events recorded before `before` (Unix seconds), in batches of
    /// [`super::PURGE_BATCH`] rows so that a long trail never holds SQLite's write lock for
    /// long.
    pub async fn purge_audit_events(&self, before: i64) -> Result<u64, StoreError> {
        self.delete_in_batches(
            &format!(
                "DELETE FROM audit_events WHERE id IN \
                 (SELECT id FROM audit_events WHERE at < $1 LIMIT {})",
                super::PURGE_BATCH
            ),
            before,
        )
        .await
    }

    /// Writes `events` in `tx` (a statement per [`AUDIT_PER_STATEMENT`] events): part of
    /// a group of [`Store::record_audit`].
    pub(super) async fn write_audit(tx: &mut WriteTx, events: &[&Audit]) -> Result<(), StoreError> {
        let conn = tx.sql();
        for chunk in events.chunks(AUDIT_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO audit_events (at, actor, action, target, outcome, detail, address, context) VALUES {}",
                placeholders(chunk.len(), 8)
            );
            let mut q = super::rows_query(&sql, chunk.len());
            for Audit { at, event } in chunk {
                q = q
                    .bind(*at)
                    .bind(&event.actor)
                    .bind(&event.action)
                    .bind(&event.target)
                    .bind(&event.outcome)
                    .bind(&event.detail)
                    .bind(&event.address)
                    .bind(&event.context);
            }
            q.execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// The newest events first, narrowed by `filter`.
    pub async fn audit_events(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at, actor, action, target, outcome, detail, address, context FROM audit_events \
             WHERE ($1 = '' OR action LIKE $2 ESCAPE '\\') \
             AND ($3 = '' OR actor LIKE $4 ESCAPE '\\' OR target LIKE $4 ESCAPE '\\' OR detail LIKE $4 ESCAPE '\\') \
             AND ($5 = '' OR outcome = $5) \
             ORDER BY id DESC LIMIT $6",
        )
        .bind(filter.action.clone().unwrap_or_default())
        .bind(format!(
            "{}%",
            escape_like(filter.action.as_deref().unwrap_or_default())
        ))
        .bind(filter.text.clone().unwrap_or_default())
        .bind(format!(
            "%{}%",
            escape_like(filter.text.as_deref().unwrap_or_default())
        ))
        .bind(filter.outcome.clone().unwrap_or_default())
        .bind(filter.limit.clamp(1, 1000))
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(audit_from_row).collect::<Result<_, _>>()?)
    }

    /// The last time a token was issued to each client, from the audit trail.
    pub async fn last_token_issued(&self, client_id: &str) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query(
            "SELECT MAX(at) AS at FROM audit_events WHERE action = 'token.issued' AND actor = $1",
        )
        .bind(client_id)
        .fetch_one(self.pool())
        .await?;
        Ok(row.try_get::<Option<i64>, _>("at")?)
    }

    /// How many grants of a client are not revoked.
    pub async fn active_grants_of_client(&self, client_id: &str) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM oauth_grants WHERE client_id = $1 AND revoked_at IS NULL",
        )
        .bind(client_id)
        .fetch_one(self.pool())
        .await?;
        Ok(row.try_get("n")?)
    }

    /// Replaces a client's secret; its grants and tokens are revoked in the same
    /// transaction (whoever held the old secret holds nothing more).
    pub async fn set_client_secret(
        &self,
        client_id: &str,
        secret_hash: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE clients SET secret_hash = $1 WHERE client_id = $2 AND secret_hash IS NOT NULL",
        )
        .bind(secret_hash)
        .bind(client_id)
        .execute(tx.sql())
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!(
                "a client {client_id:?} with a secret"
            )));
        }
        revoke_issued(
            tx.sql(),
            IssuedTo::Client(client_id),
            &format!("the secret of client {client_id} was rotated"),
            now,
        )
        .await?;
        tx.commit_uncounted().await?;
        self.changed();
        Ok(())
    }

    /// Sets a new password (stored as argon2id, checked as at creation).
    pub async fn set_password(&self, username: &str, password: &str) -> Result<(), StoreError> {
        let hash = super::users::checked_password_hash(password)?;
        let done = sqlx::query("UPDATE users SET password_hash = $1 WHERE username = $2")
            .bind(hash)
            .bind(username)
            .execute(self.autocommit().await?.sql())
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("user {username:?}")));
        }
        Ok(())
    }

    /// Locks (no sign-in, grants and tokens revoked) or unlocks an account.
    pub async fn set_user_locked(
        &self,
        user_id: &str,
        locked: bool,
        by: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM user_locks WHERE user_id = $1")
            .bind(user_id)
            .execute(tx.sql())
            .await?;
        if locked {
            sqlx::query(
                "INSERT INTO user_locks (user_id, locked_at, locked_by) VALUES ($1, $2, $3)",
            )
            .bind(user_id)
            .bind(now)
            .bind(by)
            .execute(tx.sql())
            .await?;
            revoke_issued(
                tx.sql(),
                IssuedTo::User(user_id),
                &format!("the account was locked by {by}"),
                now,
            )
            .await?;
        }
        tx.commit_uncounted().await?;
        self.changed();
        Ok(())
    }

    pub async fn user_locked(&self, user_id: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 AS one FROM user_locks WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.is_some())
    }

    /// An account's grants, newest first.
    pub async fn user_grants(&self, user_id: &str) -> Result<Vec<GrantRow>, StoreError> {
        let rows = sqlx::query("SELECT grant_id, client_id, created_at, revoked_at, revoked_reason FROM oauth_grants WHERE user_id = $1 ORDER BY created_at DESC LIMIT 200")
            .bind(user_id)
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|row| {
                Ok(GrantRow {
                    grant_id: row.try_get("grant_id")?,
                    client_id: row.try_get("client_id")?,
                    created_at: row.try_get("created_at")?,
                    revoked_at: row.try_get("revoked_at")?,
                    revoked_reason: row.try_get("revoked_reason")?,
                })
            })
            .collect()
    }

    /// Revokes one grant of an account and the access tokens issued under it.
    pub async fn revoke_user_grant(
        &self,
        user_id: &str,
        grant_id: &str,
        reason: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let done = sqlx::query("UPDATE oauth_grants SET revoked_at = $1, revoked_reason = $2 WHERE grant_id = $3 AND user_id = $4 AND revoked_at IS NULL")
            .bind(now)
            .bind(reason)
            .bind(grant_id)
            .bind(user_id)
            .execute(tx.sql())
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!(
                "an active grant {grant_id:?}"
            )));
        }
        sqlx::query("UPDATE oauth_access_tokens SET revoked_at = $1 WHERE grant_id = $2 AND revoked_at IS NULL")
            .bind(now)
            .bind(grant_id)
            .execute(tx.sql())
            .await?;
        tx.commit_uncounted().await?;
        self.changed();
        Ok(())
    }

    /// Initial access tokens, newest first.
    pub async fn registration_tokens(&self) -> Result<Vec<RegistrationTokenRow>, StoreError> {
        let rows = sqlx::query("SELECT token_hash, created_at, expires_at, uses_left FROM oauth_registration_tokens ORDER BY created_at DESC LIMIT 500")
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|row| {
                let hash: String = row.try_get("token_hash")?;
                Ok(RegistrationTokenRow {
                    id: hash.chars().take(REGISTRATION_ID_LEN).collect(),
                    created_at: row.try_get("created_at")?,
                    expires_at: row.try_get("expires_at")?,
                    uses_left: row.try_get("uses_left")?,
                })
            })
            .collect()
    }

    /// Deletes the initial access token whose hash starts with `id`.
    pub async fn revoke_registration_token(&self, id: &str) -> Result<(), StoreError> {
        if id.len() != REGISTRATION_ID_LEN || !id.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(StoreError::Invalid(format!(
                "{id:?} is not a registration token id ({REGISTRATION_ID_LEN} hex digits)"
            )));
        }
        let done = sqlx::query("DELETE FROM oauth_registration_tokens WHERE token_hash LIKE $1")
            .bind(format!("{id}%"))
            .execute(self.autocommit().await?.sql())
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("registration token {id}")));
        }
        Ok(())
    }
}
