//! Self-registration: a FHIR server in remote mode registers itself at the issuer as a
//! resource-server client (RFC 7591) on first start, with its FHIR base URL as its
//! audience, stores the credentials it gets, and on later starts reads its registration
//! (RFC 7592 GET) and replaces it (PUT) when what it would register has changed (its
//! public URL, say). The credentials are used for introspection.

use serde_json::{Value, json};

use super::IssuerError;
use super::remote::{Credentials, RemoteIssuer};
use crate::store::{IssuerRegistration, Store, StoreError};

/// The metadata fields whose difference makes the server update its registration.
const COMPARED: &[&str] = &[
    "client_name",
    "hestia_client_kind",
    "hestia_audiences",
    "grant_types",
    "token_endpoint_auth_method",
];

/// What happened at start-up, for the log and for tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationOutcome {
    Registered,
    Reused,
    Updated,
}

fn store_err(e: StoreError) -> IssuerError {
    IssuerError(format!("cannot keep the registration in the database: {e}"))
}

impl RemoteIssuer {
    /// What this server registers: a resource server whose audience is its FHIR base.
    pub fn registration_metadata(&self) -> Value {
        json!({
            "client_name": format!("Hestia FHIR server {}", self.fhir_base),
            "hestia_client_kind": "resource-server",
            "hestia_audiences": [self.fhir_base],
            "grant_types": [],
            "token_endpoint_auth_method": "client_secret_basic",
            "software_id": "hestia",
        })
    }

    /// Registers this server at the issuer, or reuses and refreshes its stored
    /// registration; afterwards [`RemoteIssuer::credentials`] are set.
    pub async fn ensure_registration(
        &self,
        store: &Store,
    ) -> Result<RegistrationOutcome, IssuerError> {
        let issuer = self.issuer().to_string();
        let desired = self.registration_metadata();
        let stored = store
            .issuer_registration(&issuer)
            .await
            .map_err(store_err)?;
        let (registration, outcome) = match stored {
            Some(stored) => match self.refresh(stored, &desired).await? {
                Some((updated, RegistrationOutcome::Updated)) => {
                    store
                        .update_issuer_registration(&updated)
                        .await
                        .map_err(store_err)?;
                    (updated, RegistrationOutcome::Updated)
                }
                Some(done) => done,
                None => {
                    // The issuer no longer knows this client: register again.
                    store
                        .delete_issuer_registration(&issuer)
                        .await
                        .map_err(store_err)?;
                    (
                        self.register(store, &desired).await?,
                        RegistrationOutcome::Registered,
                    )
                }
            },
            None => (
                self.register(store, &desired).await?,
                RegistrationOutcome::Registered,
            ),
        };
        let secret = registration.client_secret.clone().ok_or_else(|| {
            IssuerError(format!(
                "issuer {issuer} gave client {} no client_secret, which this server needs for introspection",
                registration.client_id
            ))
        })?;
        if let Ok(mut credentials) = self.credentials.write() {
            *credentials = Some(Credentials {
                client_id: registration.client_id.clone(),
                client_secret: secret,
            });
        }
        tracing::info!(%issuer, client_id = %registration.client_id, ?outcome, "registered at the issuer");
        Ok(outcome)
    }

    /// Uses the registration stored in `store` without contacting the issuer (for
    /// `hestia token explain`); false when there is none.
    pub async fn load_credentials(&self, store: &Store) -> Result<bool, IssuerError> {
        let stored = store
            .issuer_registration(self.issuer())
            .await
            .map_err(store_err)?;
        let Some((client_id, Some(client_secret))) = stored.map(|r| (r.client_id, r.client_secret))
        else {
            return Ok(false);
        };
        if let Ok(mut credentials) = self.credentials.write() {
            *credentials = Some(Credentials {
                client_id,
                client_secret,
            });
        }
        Ok(true)
    }

    /// RFC 7591: a new registration, stored. When another host of a cluster stored one
    /// first, this one is withdrawn (RFC 7592 DELETE) and the stored one used.
    async fn register(
        &self,
        store: &Store,
        desired: &Value,
    ) -> Result<IssuerRegistration, IssuerError> {
        let issuer = self.issuer().to_string();
        let endpoint = self
            .discovery()
            .and_then(|d| d.registration_endpoint.clone())
            .ok_or_else(|| {
                IssuerError(format!(
                    "issuer {issuer} publishes no registration_endpoint: this server cannot register itself there (RFC 7591)"
                ))
            })?;
        let mut request = self.http.post(&endpoint).json(desired);
        if let Some(token) = &self.settings.registration_token {
            request = request.bearer_auth(token);
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return Err(IssuerError(super::diagnose::describe(&endpoint, &e).await)),
        };
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        if !(200..300).contains(&status) {
            let hint = match (status, &self.settings.registration_token) {
                (401 | 403, None) => {
                    "; the issuer wants an initial access token: pass --registration-token T (on a Hestia issuer: `hestia registration-token create`)"
                }
                (401 | 403, Some(_)) => {
                    "; the --registration-token was not accepted (unknown, expired or used up?): create a new one at the issuer (`hestia registration-token create`)"
                }
                _ => "",
            };
            return Err(IssuerError(format!(
                "issuer {issuer} refused the registration of this FHIR server at {endpoint} (HTTP {status}): {body}{hint}"
            )));
        }
        let answer: Value = serde_json::from_str(&body).map_err(|e| {
            IssuerError(format!(
                "the registration answer of {endpoint} is not JSON ({e}): {body}"
            ))
        })?;
        let client_id = answer
            .get("client_id")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                IssuerError(format!(
                    "the registration answer of {endpoint} has no client_id: {body}"
                ))
            })?;
        let field = |name: &str| answer.get(name).and_then(Value::as_str).map(str::to_string);
        let now = crate::store::now_secs();
        let registration = IssuerRegistration {
            issuer: issuer.clone(),
            client_id: client_id.to_string(),
            client_secret: field("client_secret"),
            registration_access_token: field("registration_access_token"),
            registration_client_uri: field("registration_client_uri"),
            metadata: desired.clone(),
            created_at: now,
            updated_at: now,
        };
        match store.insert_issuer_registration(&registration).await {
            Ok(()) => Ok(registration),
            Err(StoreError::Conflict(_)) => {
                self.withdraw(&registration).await;
                store
                    .issuer_registration(&issuer)
                    .await
                    .map_err(store_err)?
                    .ok_or_else(|| IssuerError("the stored registration vanished".into()))
            }
            Err(e) => Err(store_err(e)),
        }
    }

    /// RFC 7592 DELETE of a registration this server will not use.
    async fn withdraw(&self, r: &IssuerRegistration) {
        if let (Some(uri), Some(token)) = (&r.registration_client_uri, &r.registration_access_token)
        {
            let result = self.http.delete(uri).bearer_auth(token).send().await;
            tracing::info!(client_id = %r.client_id, ok = result.is_ok(), "withdrew a duplicate registration");
        }
    }

    /// RFC 7592: reads the stored registration at the issuer and replaces it when it
    /// differs from `desired`. `None` when the issuer no longer knows the client and a
    /// registration token allows registering again.
    async fn refresh(
        &self,
        mut stored: IssuerRegistration,
        desired: &Value,
    ) -> Result<Option<(IssuerRegistration, RegistrationOutcome)>, IssuerError> {
        let issuer = self.issuer().to_string();
        let (Some(uri), Some(token)) = (
            stored.registration_client_uri.clone(),
            stored.registration_access_token.clone(),
        ) else {
            // The issuer does not support RFC 7592: nothing to keep current.
            return Ok(Some((stored, RegistrationOutcome::Reused)));
        };
        let read = self.http.get(&uri).bearer_auth(&token).send().await;
        let read = match read {
            Ok(r) => r,
            Err(e) => return Err(IssuerError(super::diagnose::describe(&uri, &e).await)),
        };
        let status = read.status().as_u16();
        let body = read.text().await.unwrap_or_default();
        if status == 401 || status == 403 || status == 404 {
            if self.settings.registration_token.is_some() {
                tracing::warn!(%issuer, client_id = %stored.client_id, "the issuer no longer knows this server's registration ({status}: {body}); registering again");
                return Ok(None);
            }
            return Err(IssuerError(format!(
                "issuer {issuer} no longer accepts this server's registration (client {}) at {uri} (HTTP {status}): {body}; pass --registration-token T to register again",
                stored.client_id
            )));
        }
        if status != 200 {
            return Err(IssuerError(format!(
                "reading this server's registration at {uri} answered HTTP {status}: {body}"
            )));
        }
        let current: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let same = COMPARED.iter().all(|k| current.get(k) == desired.get(k));
        if same && stored.metadata == *desired {
            return Ok(Some((stored, RegistrationOutcome::Reused)));
        }
        let mut body = desired.clone();
        body["client_id"] = stored.client_id.clone().into();
        let put = self
            .http
            .put(&uri)
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await;
        let put = match put {
            Ok(r) => r,
            Err(e) => return Err(IssuerError(super::diagnose::describe(&uri, &e).await)),
        };
        let status = put.status().as_u16();
        let text = put.text().await.unwrap_or_default();
        if status != 200 {
            return Err(IssuerError(format!(
                "issuer {issuer} refused to update this server's registration (client {}) at {uri} (HTTP {status}): {text}",
                stored.client_id
            )));
        }
        let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        // RFC 7592 §2.2: the server may issue a new secret or registration token.
        let field = |name: &str| answer.get(name).and_then(Value::as_str).map(str::to_string);
        if let Some(secret) = field("client_secret") {
            stored.client_secret = Some(secret);
        }
        if let Some(rat) = field("registration_access_token") {
            stored.registration_access_token = Some(rat);
        }
        if let Some(uri) = field("registration_client_uri") {
            stored.registration_client_uri = Some(uri);
        }
        stored.metadata = desired.clone();
        stored.updated_at = crate::store::now_secs();
        Ok(Some((stored, RegistrationOutcome::Updated)))
    }
}
