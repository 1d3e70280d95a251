//! Reads the wall clock, which needs WASI: allowed only when the manifest asks for the clock
//! and the host's settings allow it.

wit_bindgen::generate!({ path: "../../../wit/v0.1.0", world: "scope-policy" });

use std::time::{SystemTime, UNIX_EPOCH};

struct WasiClock;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Guest for WasiClock {
    fn grant(request: TokenRequest) -> Grant {
        let refused = request
            .requested
            .into_iter()
            .map(|s| (s, format!("now={}", now())))
            .collect();
        Grant {
            granted: Vec::new(),
            refused,
        }
    }

    fn authorize(_request: FhirRequest, claims: Claims) -> Decision {
        if claims.expires_at > now() {
            Decision::Allow
        } else {
            Decision::Deny("token expired".to_string())
        }
    }
}

export!(WasiClock);
