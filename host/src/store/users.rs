//! User accounts: username, argon2id password hash, optional FHIR user reference.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use sqlx::Row;

use super::{Store, StoreError, conflict_or, now_secs};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub username: String,
    /// `Patient/123`, `Practitioner/abc`: the SMART `fhirUser` of this account.
    pub fhir_user: Option<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: String,
    pub password: String,
    pub fhir_user: Option<String>,
}

const FHIR_USER_TYPES: &[&str] = &[
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "RelatedPerson",
    "Person",
];

impl NewUser {
    fn check(&self) -> Result<(), StoreError> {
        let name_ok = !self.username.is_empty()
            && self.username.len() <= 128
            && self
                .username
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-@+".contains(c));
        if !name_ok {
            return Err(StoreError::Invalid(format!(
                "username {:?} must be 1 to 128 characters of letters, digits and . _ - @ +",
                self.username
            )));
        }
        check_password(&self.password)?;
        if let Some(fhir_user) = &self.fhir_user {
            check_fhir_user(fhir_user)?;
        }
        Ok(())
    }
}

/// Checks a SMART fhirUser reference: `TYPE/ID` with one of [`FHIR_USER_TYPES`].
pub(super) fn check_fhir_user(fhir_user: &str) -> Result<(), StoreError> {
    let valid = fhir_user.split_once('/').is_some_and(|(ty, id)| {
        FHIR_USER_TYPES.contains(&ty)
            && !id.is_empty()
            && id.len() <= 64
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    });
    if valid {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "fhir user {fhir_user:?} must be TYPE/ID with TYPE one of {}",
            FHIR_USER_TYPES.join(", ")
        )))
    }
}

fn check_password(password: &str) -> Result<(), StoreError> {
    if password.chars().count() < 8 {
        return Err(StoreError::Invalid(
            "the password must have at least 8 characters".into(),
        ));
    }
    Ok(())
}

/// The argon2id hash of a new password, after the same check as at account creation.
pub(super) fn checked_password_hash(password: &str) -> Result<String, StoreError> {
    check_password(password)?;
    hash_password(password)
}

fn hash_password(password: &str) -> Result<String, StoreError> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| StoreError::Invalid(format!("cannot hash the password: {e}")))
}

pub(super) fn user_from_row(row: &sqlx::any::AnyRow) -> Result<User, sqlx::Error> {
    Ok(User {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        fhir_user: row.try_get("fhir_user")?,
        created_at: row.try_get("created_at")?,
    })
}

impl Store {
    /// Creates an account; the password is stored only as an argon2id hash.
    pub async fn create_user(&self, new: NewUser) -> Result<User, StoreError> {
        new.check()?;
        let user = User {
            id: uuid::Uuid::new_v4().to_string(),
            username: new.username.clone(),
            fhir_user: new.fhir_user.clone(),
            created_at: now_secs(),
        };
        // Hashing takes tens of milliseconds on purpose; keep it off the async workers.
        let password = new.password;
        let hash = tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|e| StoreError::Invalid(format!("password hashing failed: {e}")))??;
        sqlx::query("INSERT INTO users (id, username, password_hash, fhir_user, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&user.id)
            .bind(&user.username)
            .bind(&hash)
            .bind(&user.fhir_user)
            .bind(user.created_at)
            .execute(self.autocommit().await?.sql())
            .await
            .map_err(|e| conflict_or(e, || format!("user {:?}", user.username)))?;
        Ok(user)
    }

    /// How many accounts there are.
    pub async fn count_users(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM users")
            .fetch_one(self.pool())
            .await?;
        Ok(row.try_get("n")?)
    }

    pub async fn find_user(&self, username: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(
            "SELECT id, username, fhir_user, created_at FROM users WHERE username = $1",
        )
        .bind(username)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(user_from_row).transpose()?)
    }

    /// Checks a username and password; `None` for an unknown user or a wrong password alike.
    /// Both cost one argon2id verification (an unknown user's against [`dummy_hash`]), so
    /// that neither the answer nor its time tells whether the account exists.
    pub async fn verify_user(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Option<User>, StoreError> {
        // A locked account is looked up as if it did not exist: same answer, same work.
        let row = sqlx::query("SELECT id, username, fhir_user, created_at, password_hash FROM users WHERE username = $1 AND id NOT IN (SELECT user_id FROM user_locks)")
            .bind(username)
            .fetch_optional(self.pool())
            .await?;
        let hash = match &row {
            Some(row) => Some(row.try_get::<String, _>("password_hash")?),
            None => None,
        };
        let ok = verify_password(hash, password).await;
        Ok(match row {
            Some(row) if ok => Some(user_from_row(&row)?),
            _ => None,
        })
    }

    /// The work of [`Self::verify_user`] without an account: for a check whose answer is
    /// already known to be no, so that its time does not say so.
    pub async fn verify_no_user(&self, password: &str) {
        verify_password(None, password).await;
    }
}

/// A hash of a random password, made once with the parameters of real ones, for checks
/// that have no account to check against.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        let password = format!("{:032x}", rand::random::<u128>());
        hash_password(&password).unwrap_or_default()
    })
}

/// One argon2id verification of `password` against `hash`, or against [`dummy_hash`]
/// when there is none (then the answer is false, after the same work); counted in
/// `hestia_password_checks_total`. Hashing takes tens of milliseconds on purpose; it runs
/// off the async workers.
async fn verify_password(hash: Option<String>, password: &str) -> bool {
    let password = password.to_string();
    let real = hash.is_some();
    let ok = tokio::task::spawn_blocking(move || {
        let hash = hash.unwrap_or_else(|| dummy_hash().to_string());
        metrics::counter!("hestia_password_checks_total").increment(1);
        PasswordHash::new(&hash).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
    })
    .await
    .unwrap_or(false);
    ok && real
}
