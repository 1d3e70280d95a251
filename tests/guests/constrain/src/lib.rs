//! Allows within the token's patient compartment and a search constraint built from the
//! request, so a test can see every field travel both ways.

wit_bindgen::generate!({ path: "../../../wit/v0.1.0", world: "scope-policy" });

use hestia::plugin::types::{Constraint, SearchConstraint};

struct Constrain;

impl Guest for Constrain {
    fn grant(request: TokenRequest) -> Grant {
        // Grants only the scopes the client is registered for.
        let (granted, refused): (Vec<_>, Vec<_>) = request
            .requested
            .into_iter()
            .partition(|s| request.registered.contains(s));
        let refused = refused
            .into_iter()
            .map(|s| (s, "not registered".to_string()))
            .collect();
        Grant { granted, refused }
    }

    fn authorize(request: FhirRequest, claims: Claims) -> Decision {
        let Some(patient) = claims.patient else {
            return Decision::Deny(format!("no patient context for {}", claims.subject));
        };
        let search = SearchConstraint {
            resource_type: request.resource_type.unwrap_or_default(),
            parameters: request.parameters,
        };
        Decision::AllowWithin(vec![
            Constraint::PatientCompartment(patient),
            Constraint::Search(search),
        ])
    }
}

export!(Constrain);
