//! Refuses every scope and denies every request.

wit_bindgen::generate!({ path: "../../../wit/v0.1.0", world: "scope-policy" });

struct DenyAll;

impl Guest for DenyAll {
    fn grant(request: TokenRequest) -> Grant {
        let refused = request
            .requested
            .into_iter()
            .map(|scope| (scope, "deny-all refuses everything".to_string()))
            .collect();
        Grant {
            granted: Vec::new(),
            refused,
        }
    }

    fn authorize(_request: FhirRequest, _claims: Claims) -> Decision {
        Decision::Deny("deny-all denies everything".to_string())
    }
}

export!(DenyAll);
