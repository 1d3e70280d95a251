//! Host bindings generated from the WIT contract, one module per supported package version,
//! so that a plugin built against an older version keeps working beside newer ones. The
//! conversions between these generated types and the plain types of [`super::types`] live
//! here too: nothing outside `plugins/` ever sees a generated type.

pub(crate) mod v0_1_0 {
    //! `hestia:plugin@0.1.0`.

    /// The scope-policy world; it also generates the shared `types` and `host` interfaces,
    /// which the other two worlds reuse so that there is one `Host` trait to implement.
    pub(crate) mod scope_policy {
        wasmtime::component::bindgen!({
            path: "../wit/v0.1.0",
            world: "hestia:plugin/scope-policy@0.1.0",
        });
    }

    pub(crate) mod audience_rule {
        wasmtime::component::bindgen!({
            path: "../wit/v0.1.0",
            world: "hestia:plugin/audience-rule@0.1.0",
            with: {
                "hestia:plugin/types": super::scope_policy::hestia::plugin::types,
                "hestia:plugin/host": super::scope_policy::hestia::plugin::host,
            },
        });
    }

    pub(crate) mod resource_validator {
        wasmtime::component::bindgen!({
            path: "../wit/v0.1.0",
            world: "hestia:plugin/resource-validator@0.1.0",
            with: {
                "hestia:plugin/types": super::scope_policy::hestia::plugin::types,
                "hestia:plugin/host": super::scope_policy::hestia::plugin::host,
            },
        });
    }

    pub(crate) use audience_rule::{AudienceRule, AudienceRulePre};
    pub(crate) use resource_validator::{ResourceValidator, ResourceValidatorPre};
    pub(crate) use scope_policy::hestia::plugin::{host, types as wit};
    pub(crate) use scope_policy::{ScopePolicy, ScopePolicyPre};
}

/// Conversions between the plain types and the `0.1.0` records.
mod v0_1_0_convert {
    use super::super::types as plain;
    use super::v0_1_0::wit;

    impl From<&plain::Claims> for wit::Claims {
        fn from(c: &plain::Claims) -> Self {
            wit::Claims {
                issuer: c.issuer.clone(),
                subject: c.subject.clone(),
                client_id: c.client_id.clone(),
                audiences: c.audiences.clone(),
                scopes: c.scopes.clone(),
                fhir_user: c.fhir_user.clone(),
                patient: c.patient.clone(),
                expires_at: c.expires_at,
                raw_json: c.raw_json.clone(),
            }
        }
    }

    impl From<plain::Interaction> for wit::Interaction {
        fn from(i: plain::Interaction) -> Self {
            use plain::Interaction as P;
            match i {
                P::Read => wit::Interaction::Read,
                P::Vread => wit::Interaction::Vread,
                P::Update => wit::Interaction::Update,
                P::Patch => wit::Interaction::Patch,
                P::Delete => wit::Interaction::Delete,
                P::Create => wit::Interaction::Create,
                P::HistoryInstance => wit::Interaction::HistoryInstance,
                P::HistoryType => wit::Interaction::HistoryType,
                P::HistorySystem => wit::Interaction::HistorySystem,
                P::SearchType => wit::Interaction::SearchType,
                P::SearchSystem => wit::Interaction::SearchSystem,
                P::Capabilities => wit::Interaction::Capabilities,
                P::Batch => wit::Interaction::Batch,
                P::Transaction => wit::Interaction::Transaction,
                P::Operation => wit::Interaction::Operation,
            }
        }
    }

    impl From<&plain::FhirRequest> for wit::FhirRequest {
        fn from(r: &plain::FhirRequest) -> Self {
            wit::FhirRequest {
                interaction: r.interaction.into(),
                resource_type: r.resource_type.clone(),
                id: r.id.clone(),
                operation: r.operation.clone(),
                parameters: r.parameters.clone(),
                body_json: r.body_json.clone(),
                base_url: r.base_url.clone(),
            }
        }
    }

    impl From<&plain::TokenRequest> for wit::TokenRequest {
        fn from(r: &plain::TokenRequest) -> Self {
            wit::TokenRequest {
                client_id: r.client_id.clone(),
                grant_type: r.grant_type.clone(),
                requested: r.requested.clone(),
                registered: r.registered.clone(),
                subject: r.subject.clone(),
                fhir_user: r.fhir_user.clone(),
                patient: r.patient.clone(),
                audiences: r.audiences.clone(),
            }
        }
    }

    impl From<&plain::AudienceRequest> for wit::AudienceRequest {
        fn from(r: &plain::AudienceRequest) -> Self {
            wit::AudienceRequest {
                client_id: r.client_id.clone(),
                requested: r.requested.clone(),
                known: r.known.clone(),
            }
        }
    }

    impl From<wit::Constraint> for plain::Constraint {
        fn from(c: wit::Constraint) -> Self {
            match c {
                wit::Constraint::PatientCompartment(p) => plain::Constraint::PatientCompartment(p),
                wit::Constraint::Search(s) => plain::Constraint::Search(plain::SearchConstraint {
                    resource_type: s.resource_type,
                    parameters: s.parameters,
                }),
            }
        }
    }

    impl From<wit::Grant> for plain::Grant {
        fn from(g: wit::Grant) -> Self {
            plain::Grant {
                granted: g.granted,
                refused: g.refused,
            }
        }
    }

    impl From<wit::Severity> for plain::Severity {
        fn from(s: wit::Severity) -> Self {
            match s {
                wit::Severity::Fatal => plain::Severity::Fatal,
                wit::Severity::Error => plain::Severity::Error,
                wit::Severity::Warning => plain::Severity::Warning,
                wit::Severity::Information => plain::Severity::Information,
            }
        }
    }

    impl From<wit::Issue> for plain::Issue {
        fn from(i: wit::Issue) -> Self {
            plain::Issue {
                severity: i.severity.into(),
                code: i.code,
                expression: i.expression,
                diagnostics: i.diagnostics,
            }
        }
    }

    /// A plugin's verdict before the chain turns it into a [`plain::Decision`]: a denial
    /// needs the plugin's name, which only the chain knows.
    pub(crate) enum Verdict {
        Allow,
        AllowWithin(Vec<plain::Constraint>),
        Deny(String),
    }

    impl From<wit::Decision> for Verdict {
        fn from(d: wit::Decision) -> Self {
            match d {
                wit::Decision::Allow => Verdict::Allow,
                wit::Decision::AllowWithin(c) => {
                    Verdict::AllowWithin(c.into_iter().map(Into::into).collect())
                }
                wit::Decision::Deny(reason) => Verdict::Deny(reason),
            }
        }
    }
}

pub(crate) use v0_1_0_convert::Verdict;
