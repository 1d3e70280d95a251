//! Rights of accounts in the database (migration 0008): roles, access policies, what the
//! policies are attached to, and the rights revision; with the account changes that touch
//! rights (roles, fhirUser, removal). The policy format and the adding-up of rights are
//! plain code in [`crate::rights`]; this module only loads and stores rows.

use std::time::Instant;

use serde::Serialize;
use sqlx::{AnyConnection, Row};

use super::clients::{IssuedTo, revoke_issued};
use super::users::{check_fhir_user, user_from_row};
use super::{Store, StoreError, User, now_secs};
use crate::rights::{Policy, Rights, check_name, is_built_in};

const ROLE: &str = "role";
const USER: &str = "user";

/// Roles and accounts (by username) a policy is attached to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Bindings {
    pub roles: Vec<String>,
    pub users: Vec<String>,
}

impl Bindings {
    pub fn is_empty(&self) -> bool {
        self.roles.is_empty() && self.users.is_empty()
    }
}

/// A policy as `hestia policy list | show` presents it: stored, or built in (code).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredPolicy {
    pub name: String,
    pub description: Option<String>,
    /// The TOML document as added (for a built-in policy, its rendering).
    pub source: String,
    pub built_in: bool,
    pub bindings: Bindings,
    /// When it was last added or replaced (none for a built-in policy).
    pub updated_at: Option<i64>,
}

/// What [`Store::put_policy`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyChange {
    pub name: String,
    /// A policy of this name existed and its document was replaced.
    pub replaced: bool,
    /// The bindings were set from the call (else kept as they were).
    pub bindings_set: bool,
    /// The bindings after the change.
    pub bindings: Bindings,
}

/// An account with its roles (sorted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserWithRoles {
    pub user: User,
    pub roles: Vec<String>,
}

/// Changes to an account (`hestia user set`): `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct UserUpdate {
    /// The new role list (replaces the old one; empty removes every role).
    pub roles: Option<Vec<String>>,
    /// The new fhirUser (`Some(None)` removes it).
    pub fhir_user: Option<Option<String>>,
}

/// Checks role names and removes repeats, keeping them sorted.
pub fn checked_roles(roles: &[String]) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::with_capacity(roles.len());
    for role in roles {
        check_name("role", role).map_err(StoreError::Invalid)?;
        out.push(role.clone());
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Increments the rights revision. Run first in every transaction that changes rights: the
/// UPDATE also takes SQLite's write lock before the transaction reads anything, so another
/// process's write makes it wait (busy timeout) instead of failing on a stale snapshot.
async fn bump_revision(conn: &mut AnyConnection) -> Result<(), StoreError> {
    sqlx::query("UPDATE rights_revision SET revision = revision + 1 WHERE id = 1")
        .execute(conn)
        .await?;
    Ok(())
}

/// The id of the account `username`, or `NotFound`.
async fn user_id(conn: &mut AnyConnection, username: &str) -> Result<String, StoreError> {
    let row = sqlx::query("SELECT id FROM users WHERE username = $1")
        .bind(username)
        .fetch_optional(conn)
        .await?;
    match row {
        Some(row) => Ok(row.try_get("id")?),
        None => Err(StoreError::NotFound(format!("user {username:?}"))),
    }
}

async fn roles_in(conn: &mut AnyConnection, user_id: &str) -> Result<Vec<String>, StoreError> {
    let rows = sqlx::query("SELECT role FROM user_roles WHERE user_id = $1 ORDER BY role")
        .bind(user_id)
        .fetch_all(conn)
        .await?;
    Ok(rows
        .iter()
        .map(|r| r.try_get("role"))
        .collect::<Result<_, _>>()?)
}

/// The bindings of one policy (`policy = ""`: of every policy), as (policy, kind, role
/// name or username).
async fn all_bindings(
    conn: &mut AnyConnection,
    policy: &str,
) -> Result<Vec<(String, String, String)>, StoreError> {
    let rows = sqlx::query(
        "SELECT b.policy, b.kind, COALESCE(u.username, b.subject) AS subject \
         FROM access_policy_bindings b LEFT JOIN users u ON b.kind = 'user' AND u.id = b.subject \
         WHERE $1 = '' OR b.policy = $1 ORDER BY b.policy, b.kind, subject",
    )
    .bind(policy)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("policy")?,
                r.try_get("kind")?,
                r.try_get("subject")?,
            ))
        })
        .collect()
}

fn bindings_of(all: &[(String, String, String)], policy: &str) -> Bindings {
    let mut b = Bindings::default();
    for (_, kind, subject) in all.iter().filter(|(p, ..)| p == policy) {
        match kind.as_str() {
            ROLE => b.roles.push(subject.clone()),
            _ => b.users.push(subject.clone()),
        }
    }
    b
}

/// Inserts bindings; `detach` deletes them instead and refuses one that does not exist.
async fn change_bindings(
    conn: &mut AnyConnection,
    policy: &str,
    bindings: &Bindings,
    detach: bool,
) -> Result<(), StoreError> {
    let roles = checked_roles(&bindings.roles)?;
    let mut subjects: Vec<(&str, String, String)> =
        roles.into_iter().map(|r| (ROLE, r.clone(), r)).collect();
    for username in &bindings.users {
        subjects.push((USER, user_id(conn, username).await?, username.clone()));
    }
    for (kind, subject, shown) in subjects {
        let sql = if detach {
            "DELETE FROM access_policy_bindings WHERE policy = $1 AND kind = $2 AND subject = $3"
        } else {
            "INSERT INTO access_policy_bindings (policy, kind, subject) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
        };
        let done = sqlx::query(sql)
            .bind(policy)
            .bind(kind)
            .bind(&subject)
            .execute(&mut *conn)
            .await?;
        if detach && done.rows_affected() == 0 {
            return Err(StoreError::Invalid(format!(
                "policy {policy} is not attached to {kind} {shown}"
            )));
        }
    }
    Ok(())
}

fn built_in_error(name: &str) -> StoreError {
    StoreError::Invalid(format!(
        "{name} is a built-in policy, attached to the role {name}; give accounts other roles or policies instead"
    ))
}

/// The statement of [`Store::revisions`]: its five columns in [`Revisions`]' order.
pub(super) const REVISIONS: &str = "SELECT r.revision AS rights, v.revision AS revocations, \
     k.revision AS keys, c.revision AS clients, \
     (SELECT CAST(COALESCE(SUM(revision), 0) AS BIGINT) FROM fhir_revision) AS resources \
     FROM rights_revision r, revocation_revision v, signing_keys_revision k, clients_revision c \
     WHERE r.id = 1 AND v.id = 1 AND k.id = 1 AND c.id = 1";

/// What [`Store::revisions`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Revisions {
    pub rights: i64,
    pub revocations: i64,
    /// Migration 0017: every change of the signing keys increments it.
    pub keys: i64,
    /// Migration 0018: every change of the registered clients increments it.
    pub clients: i64,
    /// Migration 0021: every update, deletion or expunge of a stored resource increments
    /// it (the sum of its shards).
    pub resources: i64,
}

impl Store {
    /// The rights revision: a number that every change of rights increments. A cache of
    /// rights reads it before the rights, and reloads when it differs.
    pub async fn rights_revision(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT revision FROM rights_revision WHERE id = 1")
            .fetch_one(self.pool())
            .await?;
        Ok(row.try_get("revision")?)
    }

    /// The rights revision, the revocation revision (migration 0012: every revocation
    /// of an access token or a grant increments it), the signing keys' revision
    /// (migration 0017), the clients' (migration 0018) and the resources' (migration
    /// 0021), in one read; the resources' is noted for the versions kept between reads
    /// ([`super::resource_cache`]).
    pub async fn revisions(&self) -> Result<Revisions, StoreError> {
        let (began, writes) = (Instant::now(), self.resources.writes());
        let revisions = match self.inline.as_ref().and_then(|inline| inline.revisions()) {
            Some(revisions) => revisions,
            None => {
                let row = self
                    .kept
                    .revisions
                    .with(self.pool(), async |conn| {
                        sqlx::query(REVISIONS).fetch_one(conn).await
                    })
                    .await?;
                Revisions {
                    rights: row.try_get("rights")?,
                    revocations: row.try_get("revocations")?,
                    keys: row.try_get("keys")?,
                    clients: row.try_get("clients")?,
                    resources: row.try_get("resources")?,
                }
            }
        };
        self.resources.saw(began, writes, revisions.resources);
        Ok(revisions)
    }

    /// The roles of an account, sorted.
    pub async fn user_roles(&self, user_id: &str) -> Result<Vec<String>, StoreError> {
        let mut conn = self.pool().acquire().await?;
        roles_in(&mut conn, user_id).await
    }

    /// Every account with its roles, by username.
    pub async fn list_users(&self) -> Result<Vec<UserWithRoles>, StoreError> {
        let users =
            sqlx::query("SELECT id, username, fhir_user, created_at FROM users ORDER BY username")
                .fetch_all(self.pool())
                .await?;
        let roles = sqlx::query("SELECT user_id, role FROM user_roles ORDER BY user_id, role")
            .fetch_all(self.pool())
            .await?;
        let roles: Vec<(String, String)> = roles
            .iter()
            .map(|r| Ok((r.try_get("user_id")?, r.try_get("role")?)))
            .collect::<Result<_, sqlx::Error>>()?;
        users
            .iter()
            .map(|row| {
                let user = user_from_row(row)?;
                let roles = roles
                    .iter()
                    .filter(|(id, _)| *id == user.id)
                    .map(|(_, r)| r.clone())
                    .collect();
                Ok(UserWithRoles { user, roles })
            })
            .collect()
    }

    /// Changes an account's roles and fhirUser in one transaction; returns it as changed.
    pub async fn update_user(
        &self,
        username: &str,
        update: UserUpdate,
    ) -> Result<UserWithRoles, StoreError> {
        let roles = update.roles.as_deref().map(checked_roles).transpose()?;
        if let Some(Some(fhir_user)) = &update.fhir_user {
            check_fhir_user(fhir_user)?;
        }
        let mut tx = self.begin().await?;
        let conn = tx.sql();
        bump_revision(&mut *conn).await?;
        let id = user_id(&mut *conn, username).await?;
        if let Some(roles) = roles {
            sqlx::query("DELETE FROM user_roles WHERE user_id = $1")
                .bind(&id)
                .execute(&mut *conn)
                .await?;
            for role in roles {
                sqlx::query("INSERT INTO user_roles (user_id, role) VALUES ($1, $2)")
                    .bind(&id)
                    .bind(role)
                    .execute(&mut *conn)
                    .await?;
            }
        }
        if let Some(fhir_user) = update.fhir_user {
            sqlx::query("UPDATE users SET fhir_user = $1 WHERE id = $2")
                .bind(fhir_user)
                .bind(&id)
                .execute(&mut *conn)
                .await?;
        }
        let row =
            sqlx::query("SELECT id, username, fhir_user, created_at FROM users WHERE id = $1")
                .bind(&id)
                .fetch_one(&mut *conn)
                .await?;
        let user = user_from_row(&row)?;
        let roles = roles_in(&mut *conn, &id).await?;
        tx.commit().await?;
        self.changed();
        Ok(UserWithRoles { user, roles })
    }

    /// Removes an account: its roles, the policies attached to it, and everything issued
    /// for it (grants, so refresh tokens, and access tokens are revoked), in one transaction.
    pub async fn remove_user(&self, username: &str) -> Result<User, StoreError> {
        let now = now_secs();
        let mut tx = self.begin().await?;
        let conn = tx.sql();
        bump_revision(&mut *conn).await?;
        let id = user_id(&mut *conn, username).await?;
        let row =
            sqlx::query("SELECT id, username, fhir_user, created_at FROM users WHERE id = $1")
                .bind(&id)
                .fetch_one(&mut *conn)
                .await?;
        let user = user_from_row(&row)?;
        for sql in [
            "DELETE FROM user_roles WHERE user_id = $1",
            "DELETE FROM access_policy_bindings WHERE kind = 'user' AND subject = $1",
            "DELETE FROM users WHERE id = $1",
        ] {
            sqlx::query(sql).bind(&id).execute(&mut *conn).await?;
        }
        let reason = format!("its user {username} was removed");
        revoke_issued(&mut *conn, IssuedTo::User(&id), &reason, now).await?;
        tx.commit().await?;
        self.changed();
        Ok(user)
    }

    /// Adds a policy from its TOML document (`file` names it in errors), or replaces the
    /// document of the policy of that name. `bindings` replace its bindings when given;
    /// otherwise a replaced policy keeps them. Nothing is stored when the document or a
    /// binding is invalid.
    pub async fn put_policy(
        &self,
        file: &str,
        source: &str,
        bindings: Option<&Bindings>,
    ) -> Result<PolicyChange, StoreError> {
        let policy = Policy::parse(file, source).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let now = now_secs();
        let mut tx = self.begin().await?;
        let conn = tx.sql();
        bump_revision(&mut *conn).await?;
        let replaced = sqlx::query(
            "UPDATE access_policies SET description = $1, source = $2, updated_at = $3 WHERE name = $4",
        )
        .bind(&policy.description)
        .bind(source)
        .bind(now)
        .bind(&policy.name)
        .execute(&mut *conn)
        .await?
        .rows_affected()
            > 0;
        if !replaced {
            sqlx::query(
                "INSERT INTO access_policies (name, description, source, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)",
            )
            .bind(&policy.name)
            .bind(&policy.description)
            .bind(source)
            .bind(now)
            .execute(&mut *conn)
            .await?;
        }
        if let Some(bindings) = bindings {
            sqlx::query("DELETE FROM access_policy_bindings WHERE policy = $1")
                .bind(&policy.name)
                .execute(&mut *conn)
                .await?;
            change_bindings(&mut *conn, &policy.name, bindings, false).await?;
        }
        let all = all_bindings(&mut *conn, &policy.name).await?;
        tx.commit().await?;
        self.changed();
        Ok(PolicyChange {
            bindings: bindings_of(&all, &policy.name),
            name: policy.name,
            replaced,
            bindings_set: bindings.is_some(),
        })
    }

    /// Attaches a stored policy to more roles and accounts (`detach`: removes those
    /// bindings; each must exist). Returns the bindings after the change.
    pub async fn bind_policy(
        &self,
        name: &str,
        bindings: &Bindings,
        detach: bool,
    ) -> Result<Bindings, StoreError> {
        if is_built_in(name) {
            return Err(built_in_error(name));
        }
        let mut tx = self.begin().await?;
        let conn = tx.sql();
        bump_revision(&mut *conn).await?;
        let exists = sqlx::query("SELECT name FROM access_policies WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *conn)
            .await?
            .is_some();
        if !exists {
            return Err(StoreError::NotFound(format!("policy {name:?}")));
        }
        change_bindings(&mut *conn, name, bindings, detach).await?;
        let all = all_bindings(&mut *conn, name).await?;
        tx.commit().await?;
        self.changed();
        Ok(bindings_of(&all, name))
    }

    /// Removes a stored policy and its bindings.
    pub async fn remove_policy(&self, name: &str) -> Result<(), StoreError> {
        if is_built_in(name) {
            return Err(built_in_error(name));
        }
        let mut tx = self.begin().await?;
        let conn = tx.sql();
        bump_revision(&mut *conn).await?;
        sqlx::query("DELETE FROM access_policy_bindings WHERE policy = $1")
            .bind(name)
            .execute(&mut *conn)
            .await?;
        let done = sqlx::query("DELETE FROM access_policies WHERE name = $1")
            .bind(name)
            .execute(&mut *conn)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("policy {name:?}")));
        }
        tx.commit().await?;
        self.changed();
        Ok(())
    }

    /// Every policy: the built-in ones first, then the stored ones by name.
    pub async fn list_policies(&self) -> Result<Vec<StoredPolicy>, StoreError> {
        let mut conn = self.pool().acquire().await?;
        let all = all_bindings(&mut conn, "").await?;
        let rows = sqlx::query(
            "SELECT name, description, source, updated_at FROM access_policies ORDER BY name",
        )
        .fetch_all(&mut *conn)
        .await?;
        let mut out: Vec<StoredPolicy> = Policy::built_ins()
            .into_iter()
            .map(|p| StoredPolicy {
                source: toml::to_string(&p).unwrap_or_default(),
                bindings: Bindings {
                    roles: vec![p.name.clone()],
                    users: Vec::new(),
                },
                name: p.name,
                description: p.description,
                built_in: true,
                updated_at: None,
            })
            .collect();
        for row in &rows {
            let name: String = row.try_get("name")?;
            out.push(StoredPolicy {
                bindings: bindings_of(&all, &name),
                description: row.try_get("description")?,
                source: row.try_get("source")?,
                built_in: false,
                updated_at: Some(row.try_get("updated_at")?),
                name,
            });
        }
        Ok(out)
    }

    /// One policy, built in or stored.
    pub async fn get_policy(&self, name: &str) -> Result<Option<StoredPolicy>, StoreError> {
        Ok(self
            .list_policies()
            .await?
            .into_iter()
            .find(|p| p.name == name))
    }

    /// The effective rights of an account: its roles, the built-in policies of those, and
    /// the stored policies attached to its roles or to it ([`Rights::compute`]). A stored
    /// policy that no longer parses adds nothing and is named in the notes.
    pub async fn rights_of(&self, user_id: &str) -> Result<Rights, StoreError> {
        let mut conn = self.pool().acquire().await?;
        let row = sqlx::query("SELECT fhir_user FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("user {user_id}")))?;
        let fhir_user: Option<String> = row.try_get("fhir_user")?;
        let roles = roles_in(&mut conn, user_id).await?;
        let rows = sqlx::query(
            "SELECT DISTINCT p.name, p.source FROM access_policies p \
             JOIN access_policy_bindings b ON b.policy = p.name \
             WHERE (b.kind = 'user' AND b.subject = $1) \
                OR (b.kind = 'role' AND b.subject IN (SELECT role FROM user_roles WHERE user_id = $1)) \
             ORDER BY p.name",
        )
        .bind(user_id)
        .fetch_all(&mut *conn)
        .await?;
        let mut policies = Vec::with_capacity(rows.len());
        let mut notes = Vec::new();
        for row in &rows {
            let name: String = row.try_get("name")?;
            let source: String = row.try_get("source")?;
            match Policy::parse(&format!("stored policy {name}"), &source) {
                Ok(p) => policies.push(p),
                Err(e) => notes.push(format!("{e}; it adds nothing")),
            }
        }
        let mut rights = Rights::compute(&roles, fhir_user.as_deref(), &policies);
        rights.notes.extend(notes);
        Ok(rights)
    }
}
