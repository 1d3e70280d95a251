//! Built against `hestia:plugin@0.2.0`: refuses expired tokens by the host's clock
//! (`host.now()`, new in 0.2.0), which needs no WASI permission. Grants every scope.

wit_bindgen::generate!({ path: "../../../wit/v0.2.0", world: "scope-policy" });

use hestia::plugin::host::{LogLevel, log, now};

struct HostClock;

impl Guest for HostClock {
    fn grant(request: TokenRequest) -> Grant {
        Grant {
            granted: request.requested,
            refused: Vec::new(),
        }
    }

    fn authorize(_request: FhirRequest, claims: Claims) -> Decision {
        let now = now();
        if claims.expires_at > now {
            Decision::Allow
        } else {
            log(LogLevel::Info, "refusing an expired token");
            Decision::Deny(format!(
                "token expired at {} (host clock {now})",
                claims.expires_at
            ))
        }
    }
}

export!(HostClock);
