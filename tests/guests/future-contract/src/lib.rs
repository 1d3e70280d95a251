//! Claims to be built against `hestia:plugin@0.9.0`, a version no host supports (its WIT is
//! 0.1.0's under that version, in `wit/` beside this crate): the host must refuse it, naming
//! the version and the ones it supports, rather than guess.

wit_bindgen::generate!({ path: "wit", world: "scope-policy" });

struct FutureContract;

impl Guest for FutureContract {
    fn grant(request: TokenRequest) -> Grant {
        Grant {
            granted: request.requested,
            refused: Vec::new(),
        }
    }

    fn authorize(_request: FhirRequest, _claims: Claims) -> Decision {
        Decision::Allow
    }
}

export!(FutureContract);
