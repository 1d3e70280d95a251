//! Adapters from the plugin host to the interfaces `fhir/` and `oauth/` define, so that
//! neither of them knows about WebAssembly and the plugin types stay in `plugins/`.

use std::sync::Arc;

use crate::fhir::outcome::Issue;
use crate::fhir::repository::ResourceValidator;
use crate::oauth::policy::{AudienceQuery, GrantOutcome, GrantRequest, TokenPolicy};
use crate::plugins::{self, PluginHost};
use crate::rights::Rights;

/// The resource-validator plugins, as the FHIR repository's validator.
pub struct PluginValidator(pub Arc<PluginHost>);

impl ResourceValidator for PluginValidator {
    fn validate(&self, resource_type: &str, resource_json: &str) -> Vec<Issue> {
        self.0.validate(resource_type, resource_json)
    }
}

/// An account's rights as plugins see them (`hestia:plugin@0.3.0` `user-rights`): each grant
/// as its SMART text, confined to the account's patient when the account is.
pub fn plugin_rights(rights: &Rights) -> plugins::UserRights {
    plugins::UserRights {
        roles: rights.roles.clone(),
        grants: rights
            .grants
            .iter()
            .map(|g| plugins::UserGrant {
                scope: g.to_string(),
                patient_compartment: rights.fhir_user_compartment.clone(),
            })
            .collect(),
    }
}

/// The scope of the operator endpoints (`/admin/…`). The host grants it itself, to clients
/// registered for it, and never passes it to the scope-policy plugins: it is not a SMART
/// scope, and no plugin can give it away or take it.
pub const ADMIN_SCOPE: &str = "hestia:admin";

/// The scope-policy and audience-rule plugins, as the authorization server's token policy.
pub struct PluginTokenPolicy(pub Arc<PluginHost>);

impl TokenPolicy for PluginTokenPolicy {
    fn grant(&self, req: &GrantRequest) -> GrantOutcome {
        let (admin, requested): (Vec<String>, Vec<String>) = req
            .requested_scopes
            .iter()
            .cloned()
            .partition(|s| s == ADMIN_SCOPE);
        let mut grant = self.0.grant(&plugins::TokenRequest {
            client_id: req.client_id.clone(),
            grant_type: req.grant_type.clone(),
            requested,
            registered: req.registered_scopes.clone(),
            subject: req.subject.clone(),
            fhir_user: req.fhir_user.clone(),
            patient: req.patient.clone(),
            audiences: Vec::new(),
            user: req.user.as_ref().map(plugin_rights),
        });
        // A plugin may narrow scopes into ones that were not requested, but never into this.
        grant.granted.retain(|s| s != ADMIN_SCOPE);
        if !admin.is_empty() {
            if req.registered_scopes.iter().any(|s| s == ADMIN_SCOPE) {
                grant.granted.push(ADMIN_SCOPE.to_string());
            } else {
                grant.refused.push((
                    ADMIN_SCOPE.to_string(),
                    format!("client {} is not registered for it", req.client_id),
                ));
            }
        }
        GrantOutcome {
            granted: grant.granted,
            refused: grant.refused,
        }
    }

    fn resolve_audience(&self, q: &AudienceQuery) -> Result<Vec<String>, String> {
        // A client registered for particular audiences that names none gets those.
        let requested = if q.requested.is_empty() {
            q.client_audiences.clone()
        } else {
            q.requested.clone()
        };
        let audiences = self
            .0
            .resolve_audience(&plugins::AudienceRequest {
                client_id: q.client_id.clone(),
                requested,
                known: q.known.clone(),
            })
            .map_err(|denial| denial.to_string())?;
        // A client registered for particular audiences may name only those, whatever the rules say.
        let trim = |s: &str| s.trim_end_matches('/').to_string();
        if !q.client_audiences.is_empty() {
            let allowed: Vec<String> = q.client_audiences.iter().map(|a| trim(a)).collect();
            if let Some(outside) = audiences.iter().find(|a| !allowed.contains(&trim(a))) {
                return Err(format!(
                    "client {} may ask only for the audiences [{}], not {outside}",
                    q.client_id,
                    q.client_audiences.join(", ")
                ));
            }
        }
        Ok(audiences)
    }
}
