//! What the admin console does, in plain types: the same functions serve its pages and its
//! JSON API (`http/console/`). Every change is recorded as an audit event naming who made
//! it, from where, and what changed; reads record nothing.

mod system;

pub use system::{ExplainCell, ExplainReport, GrantQuery, PluginView};

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::gate::Gate;
use crate::oauth::AuthServer;
use crate::plugins::PluginHost;
use crate::store::{
    Client, ClientKind, GrantRow, NewAuditEvent, NewClient, NewUser, SessionRow, Store, StoreError,
    UserUpdate, checked_roles,
};

/// Why a console operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    Conflict(String),
    /// A failure of the database or the key store; logged, not shown.
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for ConsoleError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Invalid(m) => ConsoleError::Invalid(m),
            StoreError::NotFound(m) => ConsoleError::NotFound(m),
            StoreError::Conflict(m) => ConsoleError::Conflict(m),
            other => ConsoleError::Internal(other.to_string()),
        }
    }
}

/// Who acts: the signed-in administrator or the client of an admin token, and the
/// address the request came from.
#[derive(Debug, Clone)]
pub struct Actor {
    pub name: String,
    pub address: String,
}

/// The console's view of the server: the same store, authorization server, plugins and
/// gate the server's routes use.
pub struct Console<'a> {
    pub store: &'a Store,
    pub oauth: &'a Arc<AuthServer>,
    pub plugins: &'a Arc<PluginHost>,
    pub gate: &'a Gate,
    pub actor: Actor,
}

/// A client as the create and edit forms give it. `profile` decides the grant types and
/// whether the client has a secret: `confidential` (code flow with a secret), `public`
/// (code flow with PKCE, no secret), `backend` (client_credentials with a secret).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ClientInput {
    pub client_name: String,
    #[serde(default)]
    pub profile: String,
    /// Redirect URIs, separated by white space or new lines.
    #[serde(default)]
    pub redirect_uris: String,
    #[serde(default)]
    pub scope: String,
    /// Audiences (resource servers' base URLs), separated by white space.
    #[serde(default)]
    pub audiences: String,
}

/// An account as the create form gives it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct UserInput {
    pub username: String,
    pub password: String,
    /// Roles separated by white space or commas.
    #[serde(default)]
    pub roles: String,
    #[serde(default)]
    pub fhir_user: String,
}

/// A client with what the detail page adds to it.
#[derive(Debug, Clone, Serialize)]
pub struct ClientDetail {
    pub client: Value,
    /// `registration` (RFC 7591) or `console/CLI`.
    pub created_by: &'static str,
    pub has_secret: bool,
    pub last_token_issued: Option<i64>,
    /// Grants (of accounts, or client_credentials) not revoked.
    pub active_grants: i64,
}

/// An account with its roles, lock and grants.
#[derive(Debug, Clone, Serialize)]
pub struct UserDetail {
    pub id: String,
    pub username: String,
    pub fhir_user: Option<String>,
    pub roles: Vec<String>,
    pub locked: bool,
    pub created_at: i64,
    pub grants: Vec<GrantRow>,
    /// Its console sessions (the OAuth pages keep no session: each authorization signs
    /// in anew).
    pub sessions: Vec<SessionRow>,
}

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

fn profile_of(input: &ClientInput) -> Result<(bool, Vec<String>), ConsoleError> {
    let code = || vec!["authorization_code".to_string(), "refresh_token".into()];
    match input.profile.as_str() {
        "" | "confidential" => Ok((false, code())),
        "public" => Ok((true, code())),
        "backend" => Ok((false, vec!["client_credentials".into()])),
        other => Err(ConsoleError::Invalid(format!(
            "profile {other:?} must be confidential, public or backend"
        ))),
    }
}

impl Console<'_> {
    /// Records one event; a failure to record is logged, the change stands.
    pub async fn audit(&self, action: &str, target: &str, detail: impl Into<String>) {
        record(
            self.store,
            NewAuditEvent {
                actor: self.actor.name.clone(),
                action: action.into(),
                target: target.into(),
                outcome: "ok".into(),
                detail: detail.into(),
                address: self.actor.address.clone(),
                ..Default::default()
            },
        )
        .await;
    }

    /// Clients whose id, name or scope contains `search` (all when empty).
    pub async fn clients(&self, search: &str) -> Result<Vec<Value>, ConsoleError> {
        let needle = search.trim().to_lowercase();
        Ok(self
            .store
            .list_clients()
            .await?
            .iter()
            .filter(|c| {
                needle.is_empty()
                    || [&c.client_id, &c.client_name, &c.scope]
                        .iter()
                        .any(|f| f.to_lowercase().contains(&needle))
            })
            .map(Client::to_json)
            .collect())
    }

    async fn get_client(&self, client_id: &str) -> Result<Client, ConsoleError> {
        self.store
            .get_client(client_id)
            .await?
            .ok_or_else(|| ConsoleError::NotFound(format!("client {client_id:?}")))
    }

    pub async fn client(&self, client_id: &str) -> Result<ClientDetail, ConsoleError> {
        let client = self.get_client(client_id).await?;
        let registered = self
            .store
            .client_registration_token_hash(client_id)
            .await?
            .is_some();
        Ok(ClientDetail {
            client: client.to_json(),
            created_by: if registered {
                "registration"
            } else {
                "console/CLI"
            },
            has_secret: self.store.client_has_secret(client_id).await?,
            last_token_issued: self.store.last_token_issued(client_id).await?,
            active_grants: self.store.active_grants_of_client(client_id).await?,
        })
    }

    /// Creates an application client; its secret (none for a public one) is returned once.
    pub async fn create_client(
        &self,
        input: &ClientInput,
    ) -> Result<(Value, Option<String>), ConsoleError> {
        let (public, grant_types) = profile_of(input)?;
        if input.client_name.trim().is_empty() {
            return Err(ConsoleError::Invalid("a client needs a name".into()));
        }
        let (client, secret) = self
            .store
            .create_client(NewClient {
                client_name: input.client_name.trim().into(),
                kind: ClientKind::App,
                public,
                redirect_uris: words(&input.redirect_uris),
                grant_types,
                scope: words(&input.scope).join(" "),
                audiences: words(&input.audiences),
                metadata: json!({}),
            })
            .await?;
        self.audit(
            "client.create",
            &client.client_id,
            format!("{} ({})", client.client_name, client.grant_types.join(", ")),
        )
        .await;
        Ok((client.to_json(), secret.map(|s| s.0)))
    }

    /// Changes a client's name, redirect URIs, scope and audiences (its id, kind,
    /// authentication and secret stay).
    pub async fn update_client(
        &self,
        client_id: &str,
        input: &ClientInput,
    ) -> Result<Value, ConsoleError> {
        let mut client = self.get_client(client_id).await?;
        if input.client_name.trim().is_empty() {
            return Err(ConsoleError::Invalid("a client needs a name".into()));
        }
        client.client_name = input.client_name.trim().into();
        client.redirect_uris = words(&input.redirect_uris);
        client.scope = words(&input.scope).join(" ");
        client.audiences = words(&input.audiences);
        if client.grant_types.iter().any(|g| g == "authorization_code")
            && client.redirect_uris.is_empty()
        {
            return Err(ConsoleError::Invalid(
                "a client of the code flow needs at least one redirect URI".into(),
            ));
        }
        self.store.update_client(&client, true).await?;
        self.audit(
            "client.update",
            client_id,
            format!(
                "name {:?}; redirect URIs {}; scope {:?}; audiences {}",
                client.client_name,
                client.redirect_uris.join(" "),
                client.scope,
                client.audiences.join(" ")
            ),
        )
        .await;
        Ok(client.to_json())
    }

    /// A new secret for a confidential client; what was issued under the old one is revoked.
    pub async fn rotate_client_secret(&self, client_id: &str) -> Result<String, ConsoleError> {
        let secret = crate::oauth::random_token();
        self.store
            .set_client_secret(
                client_id,
                &crate::store::hash_secret(&secret),
                self.oauth.now(),
            )
            .await?;
        self.audit(
            "client.rotate_secret",
            client_id,
            "new secret; grants and tokens revoked",
        )
        .await;
        Ok(secret)
    }

    /// Removes a client; its grants and tokens are revoked with it.
    pub async fn remove_client(&self, client_id: &str) -> Result<(), ConsoleError> {
        self.get_client(client_id).await?;
        self.store.remove_client(client_id).await?;
        self.audit("client.remove", client_id, "grants and tokens revoked")
            .await;
        Ok(())
    }

    /// A Postman environment for a client and this server (the format `--demo` writes).
    pub fn postman_environment(&self, client_id: &str, secret: &str, fhir_base: &str) -> Value {
        crate::demo::postman_environment(&[
            ("baseUrl", self.oauth.issuer()),
            ("fhirBase", fhir_base),
            ("client_id", client_id),
            ("client_secret", secret),
        ])
    }

    pub async fn users(&self) -> Result<Vec<UserDetail>, ConsoleError> {
        let mut out = Vec::new();
        for u in self.store.list_users().await? {
            out.push(UserDetail {
                locked: self.store.user_locked(&u.user.id).await?,
                id: u.user.id,
                username: u.user.username,
                fhir_user: u.user.fhir_user,
                roles: u.roles,
                created_at: u.user.created_at,
                grants: Vec::new(),
                sessions: Vec::new(),
            });
        }
        Ok(out)
    }

    pub async fn user(&self, username: &str) -> Result<UserDetail, ConsoleError> {
        let user = self
            .store
            .find_user(username)
            .await?
            .ok_or_else(|| ConsoleError::NotFound(format!("user {username:?}")))?;
        Ok(UserDetail {
            roles: self.store.user_roles(&user.id).await?,
            locked: self.store.user_locked(&user.id).await?,
            grants: self.store.user_grants(&user.id).await?,
            sessions: self.store.user_admin_sessions(&user.id).await?,
            id: user.id,
            username: user.username,
            fhir_user: user.fhir_user,
            created_at: user.created_at,
        })
    }

    pub async fn create_user(&self, input: &UserInput) -> Result<UserDetail, ConsoleError> {
        let roles = checked_roles(&words(&input.roles))?;
        let fhir_user = Some(input.fhir_user.trim().to_string()).filter(|f| !f.is_empty());
        // Checked before the account exists, so that a bad role leaves nothing behind.
        let user = self
            .store
            .create_user(NewUser {
                username: input.username.trim().into(),
                password: input.password.clone(),
                fhir_user,
            })
            .await?;
        if !roles.is_empty() {
            self.store
                .update_user(
                    &user.username,
                    UserUpdate {
                        roles: Some(roles.clone()),
                        fhir_user: None,
                    },
                )
                .await?;
        }
        self.audit(
            "user.create",
            &user.username,
            format!("roles {}", roles.join(", ")),
        )
        .await;
        self.user(&user.username).await
    }

    /// Replaces an account's roles and fhirUser (empty text removes it).
    pub async fn set_user(
        &self,
        username: &str,
        roles: &str,
        fhir_user: &str,
    ) -> Result<UserDetail, ConsoleError> {
        let roles = checked_roles(&words(roles))?;
        let fhir_user = Some(fhir_user.trim().to_string()).filter(|f| !f.is_empty());
        self.store
            .update_user(
                username,
                UserUpdate {
                    roles: Some(roles.clone()),
                    fhir_user: Some(fhir_user.clone()),
                },
            )
            .await?;
        self.audit(
            "user.update",
            username,
            format!(
                "roles {}; fhirUser {}",
                roles.join(", "),
                fhir_user.as_deref().unwrap_or("-")
            ),
        )
        .await;
        self.user(username).await
    }

    pub async fn reset_password(&self, username: &str, password: &str) -> Result<(), ConsoleError> {
        self.store.set_password(username, password).await?;
        self.audit("user.reset_password", username, "new password")
            .await;
        Ok(())
    }

    /// Locks (no sign-in; grants and tokens revoked) or unlocks an account.
    pub async fn set_locked(&self, username: &str, locked: bool) -> Result<(), ConsoleError> {
        let user = self.user(username).await?;
        if locked && user.username == self.actor.name {
            return Err(ConsoleError::Invalid(
                "you cannot lock the account you are signed in with".into(),
            ));
        }
        self.store
            .set_user_locked(&user.id, locked, &self.actor.name, self.oauth.now())
            .await?;
        let (action, detail) = if locked {
            ("user.lock", "sign-in refused; grants and tokens revoked")
        } else {
            ("user.unlock", "sign-in allowed")
        };
        self.audit(action, username, detail).await;
        Ok(())
    }

    /// Ends one console session of an account.
    pub async fn end_session(&self, username: &str, id: &str) -> Result<(), ConsoleError> {
        let user = self.user(username).await?;
        self.store
            .end_user_admin_sessions(&user.id, Some(id))
            .await?;
        self.audit("session.revoke", username, format!("session {id}"))
            .await;
        Ok(())
    }

    /// Removes an account as `hestia user remove` does (roles, policy bindings, grants
    /// and tokens revoked), with its console sessions and lock; not one's own.
    pub async fn remove_user(&self, username: &str) -> Result<(), ConsoleError> {
        let user = self.user(username).await?;
        if user.username == self.actor.name {
            return Err(ConsoleError::Invalid(
                "you cannot remove the account you are signed in with".into(),
            ));
        }
        self.store.remove_user(username).await?;
        let sessions = self.store.end_user_admin_sessions(&user.id, None).await?;
        self.store
            .set_user_locked(&user.id, false, &self.actor.name, self.oauth.now())
            .await?;
        let detail = format!("grants and tokens revoked; {sessions} console session(s) ended");
        self.audit("user.remove", username, detail).await;
        Ok(())
    }

    pub async fn revoke_grant(&self, username: &str, grant_id: &str) -> Result<(), ConsoleError> {
        let user = self.user(username).await?;
        let reason = format!("revoked by {} in the admin console", self.actor.name);
        self.store
            .revoke_user_grant(&user.id, grant_id, &reason, self.oauth.now())
            .await?;
        self.audit("grant.revoke", username, format!("grant {grant_id}"))
            .await;
        Ok(())
    }
}

/// Records `event` now; a failure is logged (an audit row never fails the request).
pub async fn record(store: &Store, event: NewAuditEvent) {
    let action = event.action.clone();
    if let Err(e) = store.record_audit(event, crate::store::now_secs()).await {
        tracing::warn!(%action, error = %e, "cannot record an audit event");
    }
}

/// At most this many detached records are in flight; more are dropped and counted, so that
/// a flood of refused requests cannot queue unbounded database work.
const MAX_DETACHED: usize = 64;

/// Records `event` in a task of its own, off the request's path (the FHIR gate's
/// refusals); beyond [`MAX_DETACHED`] waiting records the event is dropped and counted in
/// `hestia_audit_dropped_total`.
pub fn record_detached(store: &Store, event: NewAuditEvent) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
    if IN_FLIGHT.fetch_add(1, Ordering::AcqRel) >= MAX_DETACHED {
        IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
        metrics::counter!("hestia_audit_dropped_total").increment(1);
        return;
    }
    let store = store.clone();
    tokio::spawn(async move {
        record(&store, event).await;
        IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
    });
}

/// What [`purge`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsolePurged {
    pub sessions: u64,
    pub audit_events: u64,
}

/// Deletes console sessions idle past `admin.session_idle_secs` and audit events older
/// than `admin.audit_retain_days`; `serve` runs it with the purge of OAuth records.
pub async fn purge(
    store: &Store,
    admin: &crate::config::AdminSettings,
    now: i64,
) -> Result<ConsolePurged, StoreError> {
    Ok(ConsolePurged {
        sessions: store
            .purge_admin_sessions(now - admin.session_idle.as_secs() as i64)
            .await?,
        audit_events: store
            .purge_audit_events(now - admin.audit_retain.as_secs() as i64)
            .await?,
    })
}
