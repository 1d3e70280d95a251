//! Answers with its own configuration, so a test can see what the host passed in.

wit_bindgen::generate!({ path: "../../../wit/v0.1.0", world: "scope-policy" });

use hestia::plugin::host::config;

struct ConfigEcho;

impl Guest for ConfigEcho {
    fn grant(request: TokenRequest) -> Grant {
        let refused = request
            .requested
            .into_iter()
            .map(|scope| (scope, config()))
            .collect();
        Grant {
            granted: Vec::new(),
            refused,
        }
    }

    fn authorize(_request: FhirRequest, _claims: Claims) -> Decision {
        Decision::Deny(config())
    }
}

export!(ConfigEcho);
