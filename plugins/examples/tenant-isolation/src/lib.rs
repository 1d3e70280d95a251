//! Tenant isolation: a token claim names the tenant, and a request only reaches resources
//! tagged with it (`meta.tag` with the configured system and the tenant as code).
//!
//! Configuration (the manifest's table): `claim` (default `tenant`) and `tag_system`
//! (default `https://hestia.dev/tenant`). Reads and searches get a `_tag` search
//! constraint; writes must carry the tag in the resource they send. System-wide searches
//! and history cannot be narrowed to one type, so they are refused. Chain it after
//! `smart-scopes`: scopes still decide what a token may do at all.

use hestia_sdk::{
    Claims, Constraint, Decision, FhirRequest, Grant, Interaction, ScopePolicy, TokenRequest,
};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    claim: String,
    tag_system: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            claim: "tenant".into(),
            tag_system: "https://hestia.dev/tenant".into(),
        }
    }
}

pub struct TenantIsolation;

impl ScopePolicy for TenantIsolation {
    /// Scopes are not this policy's business.
    fn grant(request: &TokenRequest) -> Grant {
        Grant::all(request)
    }

    fn authorize(request: &FhirRequest, claims: &Claims) -> Decision {
        let config: Config = match hestia_sdk::config() {
            Ok(config) => config,
            Err(e) => return Decision::deny(e.to_string()),
        };
        let Some(tenant) = claims.claim_str(&config.claim) else {
            return Decision::deny(format!("the token has no `{}` claim", config.claim));
        };
        match request.interaction() {
            Interaction::Capabilities | Interaction::Batch | Interaction::Transaction => {
                Decision::allow()
            }
            Interaction::SearchSystem | Interaction::HistorySystem => Decision::deny(
                "system-wide search and history are not available with tenant isolation",
            ),
            Interaction::Create | Interaction::Update => {
                let tagged = request
                    .body()
                    .is_some_and(|body| has_tag(&body, &config.tag_system, tenant));
                if tagged {
                    tenant_only(request, &config, tenant)
                } else {
                    Decision::deny(format!(
                        "the resource must carry meta.tag {}|{tenant}",
                        config.tag_system
                    ))
                }
            }
            _ => tenant_only(request, &config, tenant),
        }
    }
}

hestia_sdk::export_scope_policy!(TenantIsolation);

fn tenant_only(request: &FhirRequest, config: &Config, tenant: &str) -> Decision {
    match request.resource_type() {
        Some(t) => Decision::allow_within([Constraint::search(
            t,
            [("_tag", format!("{}|{tenant}", config.tag_system))],
        )]),
        None => Decision::deny("the request names no resource type"),
    }
}

fn has_tag(resource: &hestia_sdk::Value, system: &str, code: &str) -> bool {
    resource["meta"]["tag"].as_array().is_some_and(|tags| {
        tags.iter()
            .any(|t| t["system"].as_str() == Some(system) && t["code"].as_str() == Some(code))
    })
}

#[cfg(test)]
mod tests {
    use hestia_sdk::testing::{self, claims, create, read, request, search};
    use hestia_sdk::{Constraint, Decision, Interaction, ScopePolicy, json};

    use super::TenantIsolation;

    const TAG: &str = "https://hestia.dev/tenant";

    #[test]
    fn reads_and_searches_are_narrowed_to_the_tenant() {
        let token = claims().claim("tenant", json!("acme")).build();
        assert_eq!(
            TenantIsolation::authorize(&read("Patient", "p1"), &token),
            Decision::allow_within([Constraint::search(
                "Patient",
                [("_tag", format!("{TAG}|acme"))]
            )])
        );
        assert_eq!(
            TenantIsolation::authorize(&search("Observation", [("code", "x")]), &token),
            Decision::allow_within([Constraint::search(
                "Observation",
                [("_tag", format!("{TAG}|acme"))]
            )])
        );
        assert_eq!(
            TenantIsolation::authorize(&request(Interaction::Capabilities).build(), &token),
            Decision::Allow
        );
        assert!(
            !TenantIsolation::authorize(&request(Interaction::SearchSystem).build(), &token)
                .is_allowed()
        );
    }

    #[test]
    fn writes_must_carry_the_tag() {
        let token = claims().claim("tenant", json!("acme")).build();
        let tagged =
            json!({"resourceType": "Patient", "meta": {"tag": [{"system": TAG, "code": "acme"}]}});
        let other = json!({"resourceType": "Patient", "meta": {"tag": [{"system": TAG, "code": "globex"}]}});
        assert!(TenantIsolation::authorize(&create(tagged), &token).is_allowed());
        assert_eq!(
            TenantIsolation::authorize(&create(other), &token),
            Decision::deny(format!("the resource must carry meta.tag {TAG}|acme"))
        );
    }

    #[test]
    fn configuration_and_missing_claim() {
        let token = claims().claim("org", json!("acme")).build();
        assert_eq!(
            TenantIsolation::authorize(&read("Patient", "p1"), &token),
            Decision::deny("the token has no `tenant` claim")
        );
        testing::set_config(json!({"claim": "org", "tag_system": "urn:orgs"}));
        assert_eq!(
            TenantIsolation::authorize(&read("Patient", "p1"), &token),
            Decision::allow_within([Constraint::search("Patient", [("_tag", "urn:orgs|acme")])])
        );
        testing::set_config(json!({"claims": "org"}));
        let decision = TenantIsolation::authorize(&read("Patient", "p1"), &token);
        assert!(
            decision.deny_reason().is_some_and(
                |r| r.starts_with("invalid plugin configuration: unknown field `claims`")
            ),
            "{decision:?}"
        );
        testing::clear_config();
    }
}
