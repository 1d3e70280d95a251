//! Grants every requested scope and allows every request.

wit_bindgen::generate!({ path: "../../../wit/v0.1.0", world: "scope-policy" });

use hestia::plugin::host::{LogLevel, log};

struct AllowAll;

impl Guest for AllowAll {
    fn grant(request: TokenRequest) -> Grant {
        log(
            LogLevel::Info,
            &format!("granting {} scopes", request.requested.len()),
        );
        Grant {
            granted: request.requested,
            refused: Vec::new(),
        }
    }

    fn authorize(_request: FhirRequest, _claims: Claims) -> Decision {
        Decision::Allow
    }
}

export!(AllowAll);
