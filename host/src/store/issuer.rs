//! This server's registrations at remote authorization servers (migration 0005): what a
//! FHIR server in remote mode needs to introspect tokens and to keep its registration
//! current (RFC 7591/7592).

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, conflict_or};

/// The registration of this server at one issuer.
#[derive(Debug, Clone, PartialEq)]
pub struct IssuerRegistration {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    pub registration_access_token: Option<String>,
    pub registration_client_uri: Option<String>,
    /// The metadata this server last registered (RFC 7591 JSON).
    pub metadata: serde_json::Value,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str = "issuer, client_id, client_secret, registration_access_token, registration_client_uri, metadata, created_at, updated_at";

fn from_row(row: &AnyRow) -> Result<IssuerRegistration, StoreError> {
    let metadata: String = row.try_get("metadata")?;
    Ok(IssuerRegistration {
        issuer: row.try_get("issuer")?,
        client_id: row.try_get("client_id")?,
        client_secret: row.try_get("client_secret")?,
        registration_access_token: row.try_get("registration_access_token")?,
        registration_client_uri: row.try_get("registration_client_uri")?,
        metadata: serde_json::from_str(&metadata)
            .map_err(|e| StoreError::Invalid(format!("stored registration metadata: {e}")))?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

impl Store {
    pub async fn issuer_registration(
        &self,
        issuer: &str,
    ) -> Result<Option<IssuerRegistration>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM issuer_registrations WHERE issuer = $1"
        ))
        .bind(issuer)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Stores a new registration; `Conflict` when another host of a cluster stored one
    /// for this issuer first.
    pub async fn insert_issuer_registration(
        &self,
        r: &IssuerRegistration,
    ) -> Result<(), StoreError> {
        sqlx::query(&format!(
            "INSERT INTO issuer_registrations ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ))
        .bind(&r.issuer)
        .bind(&r.client_id)
        .bind(&r.client_secret)
        .bind(&r.registration_access_token)
        .bind(&r.registration_client_uri)
        .bind(r.metadata.to_string())
        .bind(r.created_at)
        .bind(r.updated_at)
        .execute(self.autocommit().await?.sql())
        .await
        .map_err(|e| conflict_or(e, || format!("a registration at issuer {}", r.issuer)))?;
        Ok(())
    }

    /// Replaces the stored registration of `r.issuer`.
    pub async fn update_issuer_registration(
        &self,
        r: &IssuerRegistration,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE issuer_registrations SET client_id = $2, client_secret = $3, registration_access_token = $4, registration_client_uri = $5, metadata = $6, updated_at = $7 WHERE issuer = $1",
        )
        .bind(&r.issuer)
        .bind(&r.client_id)
        .bind(&r.client_secret)
        .bind(&r.registration_access_token)
        .bind(&r.registration_client_uri)
        .bind(r.metadata.to_string())
        .bind(r.updated_at)
        .execute(self.autocommit().await?.sql())
        .await?;
        Ok(())
    }

    /// Forgets the registration at `issuer` (it was removed there).
    pub async fn delete_issuer_registration(&self, issuer: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM issuer_registrations WHERE issuer = $1")
            .bind(issuer)
            .execute(self.autocommit().await?.sql())
            .await?;
        Ok(())
    }
}
