//! The console's pages about the server itself: signing keys, registration tokens,
//! plugins, the explanation of a token, and the audit trail.

use serde::Serialize;
use serde_json::{Value, json};

use super::{Console, ConsoleError};
use crate::fhir::ResourceType;
use crate::gate::{Refusal, classify};
use crate::http::statuses::refusal_answer;
use crate::oauth::keys;
use crate::plugins::PluginInfo;
use crate::store::{AuditEvent, AuditFilter, RegistrationTokenRow};

/// A plugin with its counters from the metrics (`hestia_plugin_*` lines naming it).
#[derive(Debug, Clone, Serialize)]
pub struct PluginView {
    pub name: String,
    pub kind: Option<&'static str>,
    pub order: i64,
    pub version: String,
    pub source: String,
    pub state: String,
    pub last_error: Option<String>,
    pub metrics: Vec<String>,
    /// The last lines the plugin wrote to stdout and stderr, oldest first.
    pub output: Vec<String>,
}

/// What one interaction with one resource type would get.
#[derive(Debug, Clone, Serialize)]
pub struct ExplainCell {
    pub interaction: &'static str,
    pub allowed: bool,
    /// `unrestricted`, the constraints of the access, or the refusal naming the plugin.
    pub reason: String,
}

/// The gate's verdict on a token: each step, then a row per resource type.
#[derive(Debug, Clone, Serialize)]
pub struct ExplainReport {
    /// The steps the gate took, in its order, each with its finding.
    pub steps: Vec<String>,
    /// Where the gate stopped, when it refused the token as a whole.
    pub refused: Option<String>,
    pub rows: Vec<(String, Vec<ExplainCell>)>,
}

/// A token to explain without one: its client, account (none: the client's own) and
/// requested scopes (none: the client's registered ones).
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct GrantQuery {
    #[serde(default)]
    pub client_id: String,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub scope: String,
    /// The resource type of a refused request: its row comes first.
    #[serde(default, rename = "type", skip_serializing_if = "String::is_empty")]
    pub resource_type: String,
    /// The refused request's interaction, as the audit trail names it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub interaction: String,
}

impl GrantQuery {
    /// The query of a `fhir.refused` event's context, if it has one.
    pub fn of_refusal(event: &AuditEvent) -> Option<GrantQuery> {
        serde_json::from_str::<GrantQuery>(&event.context)
            .ok()
            .filter(|q| !q.client_id.is_empty())
    }
}

/// The interactions the Explain page tries, as requests below the FHIR base.
const INTERACTIONS: [(&str, &str, &str); 5] = [
    ("read", "GET", "{type}/example"),
    ("search", "GET", "{type}"),
    ("create", "POST", "{type}"),
    ("update", "PUT", "{type}/example"),
    ("delete", "DELETE", "{type}/example"),
];

/// The types shown when a token's scopes name every type (`*`).
const COMMON_TYPES: [&str; 8] = [
    "Patient",
    "Observation",
    "Encounter",
    "Condition",
    "MedicationRequest",
    "AllergyIntolerance",
    "Practitioner",
    "DocumentReference",
];

/// The resource types a scope text names, or the common ones for `*`.
fn types_of(scope: &str) -> Vec<String> {
    let mut types: Vec<String> = Vec::new();
    for s in scope.split_whitespace() {
        let Some((_, rest)) = s.split_once('/') else {
            continue;
        };
        let ty = rest.split(['.', '?']).next().unwrap_or_default();
        let names: Vec<String> = if ty == "*" {
            COMMON_TYPES.iter().map(|t| t.to_string()).collect()
        } else if ResourceType::parse(ty).is_some() {
            vec![ty.to_string()]
        } else {
            Vec::new()
        };
        for name in names {
            if !types.contains(&name) {
                types.push(name);
            }
        }
    }
    if types.is_empty() {
        types = COMMON_TYPES.iter().map(|t| t.to_string()).collect();
    }
    types
}

/// A refusal as the answer the server gives it (`401 invalid_token`, ...) and why; a check
/// that could not run is no refusal of the token.
fn refusal_line(refusal: &Refusal) -> String {
    let answer = refusal_answer(refusal);
    match refusal {
        Refusal::Unavailable(why) => format!("not checked ({answer}): {why}"),
        other => format!("{answer}: {}", other.description()),
    }
}

impl Console<'_> {
    /// Published keys, newest first, each with its state: `signing`, `next (signs from …)`,
    /// `retiring (until …)` or `published`.
    pub async fn keys(&self) -> Result<Vec<Value>, ConsoleError> {
        let now = self.oauth.now();
        let mut rows = self.store.signing_keys().await?;
        rows.retain(|r| keys::is_published(r, now));
        rows.sort_by_key(|r| std::cmp::Reverse((r.created_at, r.sign_from)));
        Ok(rows
            .iter()
            .map(|r| {
                let signing =
                    keys::current_signer(&rows, &r.alg, now).map(|s| &s.kid) == Some(&r.kid);
                let state = if signing {
                    "signing"
                } else if r.sign_from > now {
                    "next"
                } else if r.retire_after.is_some() {
                    "retiring"
                } else {
                    "published"
                };
                json!({
                    "kid": r.kid,
                    "alg": r.alg,
                    "state": state,
                    "created_at": r.created_at,
                    "sign_from": r.sign_from,
                    "retire_after": r.retire_after,
                })
            })
            .collect())
    }

    /// A new key per algorithm: published now, signing after the overlap, the old keys
    /// published until their last token has expired.
    pub async fn rotate_keys(&self) -> Result<Vec<Value>, ConsoleError> {
        self.oauth
            .ensure_keys()
            .await
            .map_err(|e| ConsoleError::Internal(e.to_string()))?;
        let rotations = self
            .oauth
            .rotate_keys()
            .await
            .map_err(|e| ConsoleError::Internal(e.to_string()))?;
        let out: Vec<Value> = rotations
            .iter()
            .map(|r| serde_json::to_value(r).unwrap_or_default())
            .collect();
        let kids: Vec<&str> = rotations.iter().map(|r| r.kid.as_str()).collect();
        self.audit("keys.rotate", &kids.join(" "), format!("{out:?}"))
            .await;
        Ok(out)
    }

    pub async fn registration_tokens(&self) -> Result<Vec<RegistrationTokenRow>, ConsoleError> {
        Ok(self.store.registration_tokens().await?)
    }

    /// A new initial access token (shown once).
    pub async fn create_registration_token(
        &self,
        expires_in: i64,
        max_uses: i64,
    ) -> Result<String, ConsoleError> {
        if !(60..=366 * 86_400).contains(&expires_in) || !(1..=10_000).contains(&max_uses) {
            return Err(ConsoleError::Invalid(
                "expires_in must be from 60 seconds to a year, max_uses from 1 to 10000".into(),
            ));
        }
        let token = self
            .oauth
            .create_registration_token(expires_in, max_uses)
            .await
            .map_err(|e| ConsoleError::Internal(e.description))?;
        let id: String = crate::oauth::hash_token(&token).chars().take(16).collect();
        self.audit(
            "registration_token.create",
            &id,
            format!("expires in {expires_in} s, {max_uses} uses"),
        )
        .await;
        Ok(token)
    }

    pub async fn revoke_registration_token(&self, id: &str) -> Result<(), ConsoleError> {
        self.store.revoke_registration_token(id).await?;
        self.audit("registration_token.revoke", id, "deleted").await;
        Ok(())
    }

    /// Every plugin in chain order, with its metric lines.
    pub fn plugins(&self) -> Vec<PluginView> {
        let metrics = crate::telemetry::metrics_handle().render();
        self.plugins
            .list()
            .iter()
            .map(|p: &PluginInfo| {
                let label = format!("plugin=\"{}\"", p.name);
                PluginView {
                    name: p.name.clone(),
                    kind: p.kind.map(|k| k.as_str()),
                    order: p.order,
                    version: p.version.clone(),
                    source: p.source.to_string(),
                    state: p.state.to_string(),
                    last_error: p.last_error.clone(),
                    metrics: metrics
                        .lines()
                        .filter(|l| {
                            l.starts_with("hestia_plugin_")
                                && !l.contains("_bucket{")
                                && l.contains(&label)
                        })
                        .map(str::to_string)
                        .collect(),
                    output: crate::plugins::recent_output(&p.name),
                }
            })
            .collect()
    }

    /// What the FHIR server's gate and plugins would answer requests with `token`: the
    /// token's checks, then per resource type and interaction, allowed or refused and why.
    pub async fn explain(&self, token: &str) -> ExplainReport {
        let mut report = ExplainReport {
            steps: Vec::new(),
            refused: None,
            rows: Vec::new(),
        };
        let verified = match self.gate.verify(token.trim()).await {
            Ok(v) => v,
            Err(refusal) => {
                report.refused = Some(format!("token: {}", refusal_line(&refusal)));
                return report;
            }
        };
        let claims = &verified.claims;
        report.steps.push(format!(
            "token: valid (signature, issuer, expiry, revocation); client {}; subject {}; scope {:?}",
            claims.client_id, claims.sub, claims.scope
        ));
        self.explain_verified(&verified, "", report).await
    }

    /// What a token of `query`'s client, account and scopes would reach: the claims the
    /// token endpoint's policy would decide, through the same gate steps as a pasted token
    /// (no token is signed or recorded).
    pub async fn explain_grant(&self, query: &GrantQuery) -> ExplainReport {
        let mut report = ExplainReport {
            steps: Vec::new(),
            refused: None,
            rows: Vec::new(),
        };
        let user = Some(query.user.trim()).filter(|u| !u.is_empty());
        let claims = match self
            .oauth
            .unissued_claims(query.client_id.trim(), user, &query.scope)
            .await
        {
            Ok(claims) => claims,
            Err(e) => {
                report.refused = Some(format!("token endpoint: {e}"));
                return report;
            }
        };
        if let Some(name) = user
            && let Ok(Some(account)) = self.store.find_user(name).await
            && self.store.user_locked(&account.id).await.unwrap_or(false)
        {
            report.refused = Some(format!(
                "sign-in: the account {name} is locked; it gets no token"
            ));
            return report;
        }
        report.steps.push(format!(
            "token endpoint: would grant client {}; subject {}; scope {:?}; audiences {:?}",
            claims.client_id, claims.sub, claims.scope, claims.aud.0
        ));
        if !query.resource_type.is_empty() {
            report.steps.push(format!(
                "refused request: {} {}",
                query.interaction, query.resource_type
            ));
        }
        let raw_json = serde_json::to_string(&claims).unwrap_or_default();
        let verified = crate::verifier::Verified {
            claims,
            raw_json,
            username: None,
        };
        self.explain_verified(&verified, &query.resource_type, report)
            .await
    }

    /// The gate's steps after the token's own checks: audience, rights, and a decision
    /// per resource type and interaction.
    /// `first_type`, when set, is the first row.
    async fn explain_verified(
        &self,
        verified: &crate::verifier::Verified,
        first_type: &str,
        mut report: ExplainReport,
    ) -> ExplainReport {
        let claims = &verified.claims;
        if let Err(refusal) = self.gate.accept_audience(claims) {
            report.refused = Some(format!("audience: {}", refusal_line(&refusal)));
            return report;
        }
        report
            .steps
            .push(format!("audience: accepted for {}", self.gate.base_url()));
        let caller = match self.gate.caller(verified).await {
            Ok(c) => c,
            Err(refusal) => {
                report.refused = Some(format!("rights: {}", refusal_line(&refusal)));
                return report;
            }
        };
        let mut types = types_of(&claims.scope);
        if ResourceType::parse(first_type).is_some() {
            types.retain(|t| t != first_type);
            types.insert(0, first_type.to_string());
        }
        for ty in types {
            let cells = INTERACTIONS
                .iter()
                .map(|(interaction, method, path)| {
                    let request = classify(
                        method,
                        &path.replace("{type}", &ty),
                        &[],
                        self.gate.base_url(),
                    );
                    match caller.decide(&request) {
                        Ok(access) if access.is_unrestricted() => ExplainCell {
                            interaction,
                            allowed: true,
                            reason: "allowed".into(),
                        },
                        Ok(access) => ExplainCell {
                            interaction,
                            allowed: true,
                            reason: format!("allowed within {access:?}"),
                        },
                        Err(e) => ExplainCell {
                            interaction,
                            allowed: false,
                            reason: refusal_line(&Refusal::from(e)),
                        },
                    }
                })
                .collect();
            report.rows.push((ty, cells));
        }
        report
    }

    pub async fn activity(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, ConsoleError> {
        Ok(self.store.audit_events(filter).await?)
    }
}
