//! The generated world traits, implemented once for any type that implements the SDK's
//! traits, with the conversions between generated and plain types. The export macros
//! name these adapters.

use std::marker::PhantomData;

use crate::bindings::{audience_rule as ar, resource_validator as rv, scope_policy as sp};
use crate::claims::ClaimFields;
use crate::{
    AudienceRequest, AudienceRule, Claims, Constraint, Decision, FhirRequest, ResourceValidator,
    ScopePolicy, TokenRequest, UserGrant, UserRights,
};

/// Implements the `scope-policy` world for `T`.
pub struct ScopePolicyExport<T>(PhantomData<T>);

impl<T: ScopePolicy> sp::Guest for ScopePolicyExport<T> {
    fn grant(request: sp::hestia::plugin::types::TokenRequest) -> sp::hestia::plugin::types::Grant {
        let request = TokenRequest {
            client_id: request.client_id,
            grant_type: request.grant_type,
            requested: request.requested,
            registered: request.registered,
            subject: request.subject,
            fhir_user: request.fhir_user,
            patient: request.patient,
            audiences: request.audiences,
            user: request.user.map(user_rights),
        };
        let grant = T::grant(&request);
        sp::hestia::plugin::types::Grant {
            granted: grant.granted,
            refused: grant.refused,
        }
    }

    fn authorize(
        request: sp::hestia::plugin::types::FhirRequest,
        claims: sp::hestia::plugin::types::Claims,
    ) -> sp::hestia::plugin::types::Decision {
        let request = FhirRequest {
            interaction: request.interaction,
            resource_type: request.resource_type,
            id: request.id,
            operation: request.operation,
            parameters: request.parameters,
            body_json: request.body_json,
            base_url: request.base_url,
        };
        let claims = Claims::new(
            ClaimFields {
                issuer: claims.issuer,
                subject: claims.subject,
                client_id: claims.client_id,
                audiences: claims.audiences,
                fhir_user: claims.fhir_user,
                patient: claims.patient,
                expires_at: claims.expires_at,
                user: claims.user.map(user_rights),
            },
            claims.scopes,
            claims.raw_json,
        );
        decision(T::authorize(&request, &claims))
    }
}

fn user_rights(u: sp::hestia::plugin::types::UserRights) -> UserRights {
    UserRights::new(
        u.roles,
        u.grants
            .iter()
            .map(|g| UserGrant::new(&g.scope, g.patient_compartment.as_deref())),
    )
}

fn decision(d: Decision) -> sp::hestia::plugin::types::Decision {
    use sp::hestia::plugin::types::{Constraint as C, Decision as D, SearchConstraint};
    match d {
        Decision::Allow => D::Allow,
        Decision::Deny(reason) => D::Deny(reason),
        Decision::AllowWithin(constraints) => D::AllowWithin(
            constraints
                .into_iter()
                .map(|c| match c {
                    Constraint::PatientCompartment(id) => C::PatientCompartment(id),
                    Constraint::Search {
                        resource_type,
                        parameters,
                    } => C::Search(SearchConstraint {
                        resource_type,
                        parameters,
                    }),
                })
                .collect(),
        ),
    }
}

/// Implements the `audience-rule` world for `T`.
pub struct AudienceRuleExport<T>(PhantomData<T>);

impl<T: AudienceRule> ar::Guest for AudienceRuleExport<T> {
    fn resolve(request: ar::hestia::plugin::types::AudienceRequest) -> Result<Vec<String>, String> {
        T::resolve(&AudienceRequest {
            client_id: request.client_id,
            requested: request.requested,
            known: request.known,
        })
    }

    fn accept(token_audiences: Vec<String>, server_base_url: String) -> Result<(), String> {
        T::accept(&token_audiences, &server_base_url)
    }
}

/// Implements the `resource-validator` world for `T`.
pub struct ResourceValidatorExport<T>(PhantomData<T>);

impl<T: ResourceValidator> rv::Guest for ResourceValidatorExport<T> {
    fn validate(
        resource_type: String,
        resource_json: String,
    ) -> Vec<rv::hestia::plugin::types::Issue> {
        crate::validate_json::<T>(&resource_type, &resource_json)
    }
}
