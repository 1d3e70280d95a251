//! Imports WASI at a newer 0.2.x patch version than the host's, as interpreter-built plugins
//! do: `wasi:filesystem` (whose types name `wasi:io`'s streams) and `wasi:random`. Every
//! decision reports a random number; the operation `touch-files` reaches for the
//! filesystem, which plugins are not given.

wit_bindgen::generate!({ path: "wit", world: "plugin", generate_all });

use wasi::filesystem::preopens;

struct NewerWasi;

impl Guest for NewerWasi {
    fn grant(request: TokenRequest) -> Grant {
        Grant {
            granted: request.requested,
            refused: Vec::new(),
        }
    }

    fn authorize(request: FhirRequest, _claims: Claims) -> Decision {
        if request.operation.as_deref() == Some("touch-files") {
            for (dir, _) in preopens::get_directories() {
                if let Ok(out) = dir.write_via_stream(0) {
                    let _ = out.blocking_write_and_flush(b"x");
                }
            }
        }
        Decision::Deny(format!("random={}", wasi::random::random::get_random_u64()))
    }
}

export!(NewerWasi);
