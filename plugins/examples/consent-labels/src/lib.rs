//! Consent by security labels: a resource whose `meta.security` carries a configured label
//! is reachable only with the scope that grants that label.
//!
//! Configuration: `{"labels": {"<system>|<code>": "<scope>", ...}}`, by default the HL7
//! confidentiality codes `R` (restricted) and `V` (very restricted), granted by the scopes
//! `security/R` and `security/V`. For every label the token is not granted, reads and
//! searches are narrowed with `_security:not=<system>|<code>`; writes of a resource carrying
//! such a label are refused. Chain it after `smart-scopes`.

use std::collections::BTreeMap;

use hestia_sdk::{
    Claims, Constraint, Decision, FhirRequest, Grant, Interaction, ScopePolicy, TokenRequest,
};
use serde::Deserialize;

const CONFIDENTIALITY: &str = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality";

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// `system|code` of a label → the scope that grants it.
    labels: BTreeMap<String, String>,
}

impl Default for Config {
    fn default() -> Self {
        let labels = [("R", "security/R"), ("V", "security/V")]
            .into_iter()
            .map(|(code, scope)| (format!("{CONFIDENTIALITY}|{code}"), scope.to_string()))
            .collect();
        Config { labels }
    }
}

pub struct ConsentLabels;

impl ScopePolicy for ConsentLabels {
    /// Label scopes are granted when registered; the rest is left to the scope policy
    /// before this one.
    fn grant(request: &TokenRequest) -> Grant {
        request
            .requested()
            .iter()
            .fold(Grant::new(), |grant, scope| {
                if !scope.starts_with("security/") || request.registered().contains(scope) {
                    grant.grant(scope)
                } else {
                    grant.refuse(
                        scope,
                        format!("client {} may not see {scope} data", request.client_id()),
                    )
                }
            })
    }

    fn authorize(request: &FhirRequest, claims: &Claims) -> Decision {
        let config: Config = match hestia_sdk::config() {
            Ok(config) => config,
            Err(e) => return Decision::deny(e.to_string()),
        };
        let withheld: Vec<&String> = config
            .labels
            .iter()
            .filter(|(_, scope)| !claims.has_scope(scope))
            .map(|(label, _)| label)
            .collect();
        if withheld.is_empty() {
            return Decision::allow();
        }
        if request.interaction().is_write()
            && let Some(body) = request.body()
        {
            let carried = body["meta"]["security"]
                .as_array()
                .into_iter()
                .flatten()
                .find_map(|l| {
                    let label = format!("{}|{}", l["system"].as_str()?, l["code"].as_str()?);
                    withheld.iter().any(|w| **w == label).then_some(label)
                });
            if let Some(label) = carried {
                return Decision::deny(format!(
                    "the resource is labelled {label}, which needs scope {}",
                    config.labels[&label]
                ));
            }
        }
        match (request.interaction(), request.resource_type()) {
            (Interaction::Capabilities | Interaction::Batch | Interaction::Transaction, _) => {
                Decision::allow()
            }
            (_, Some(t)) => Decision::allow_within(
                withheld
                    .into_iter()
                    .map(|label| Constraint::search(t, [("_security:not", label.as_str())])),
            ),
            (_, None) => Decision::deny(
                "system-wide requests are not available while some security labels are withheld",
            ),
        }
    }
}

hestia_sdk::export_scope_policy!(ConsentLabels);

#[cfg(test)]
mod tests {
    use hestia_sdk::testing::{claims, create, read, token_request};
    use hestia_sdk::{Constraint, Decision, ScopePolicy, json};

    use super::{CONFIDENTIALITY, ConsentLabels};

    fn not(code: &str) -> Constraint {
        Constraint::search(
            "Condition",
            [("_security:not", format!("{CONFIDENTIALITY}|{code}"))],
        )
    }

    #[test]
    fn withheld_labels_narrow_reads() {
        let none = claims().scopes("patient/*.rs").build();
        assert_eq!(
            ConsentLabels::authorize(&read("Condition", "c1"), &none),
            Decision::allow_within([not("R"), not("V")])
        );
        let restricted = claims().scopes("patient/*.rs security/R").build();
        assert_eq!(
            ConsentLabels::authorize(&read("Condition", "c1"), &restricted),
            Decision::allow_within([not("V")])
        );
        let all = claims().scopes("security/R security/V").build();
        assert_eq!(
            ConsentLabels::authorize(&read("Condition", "c1"), &all),
            Decision::Allow
        );
    }

    #[test]
    fn labelled_writes_need_the_scope() {
        let labelled = json!({"resourceType": "Condition", "meta": {"security": [{"system": CONFIDENTIALITY, "code": "V"}]}});
        let token = claims().scopes("security/R").build();
        assert_eq!(
            ConsentLabels::authorize(&create(labelled.clone()), &token),
            Decision::deny(format!(
                "the resource is labelled {CONFIDENTIALITY}|V, which needs scope security/V"
            ))
        );
        let token = claims().scopes("security/V").build();
        assert!(ConsentLabels::authorize(&create(labelled), &token).is_allowed());
    }

    #[test]
    fn label_scopes_are_granted_only_when_registered() {
        let grant = ConsentLabels::grant(
            &token_request()
                .requested("openid security/R security/V")
                .registered("openid security/R")
                .build(),
        );
        assert_eq!(grant.granted, ["openid", "security/R"]);
        assert_eq!(
            grant.refusal("security/V"),
            Some("client test-client may not see security/V data")
        );
    }
}
