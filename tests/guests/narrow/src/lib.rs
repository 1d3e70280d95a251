//! Allows a request only within `family=ANSWER` (a search constraint on the request's
//! type), after spinning `SPINS` iterations, both from its configuration
//! (`{"answer": "...", "spins": N}`): the same component serves different, observable
//! versions through its manifest alone, and a version can be made slow (for swaps with a
//! call in flight). It logs `narrowing to ANSWER` before it spins.

wit_bindgen::generate!({ path: "../../../wit/v0.1.0", world: "scope-policy" });

use hestia::plugin::host::{LogLevel, config, log};
use hestia::plugin::types::{Constraint, SearchConstraint};

struct Narrow;

/// The value of `"key":` in the flat JSON object `json`: a string or a number. (The host
/// writes the configuration with serde_json, no spaces; a JSON parser would be this guest's
/// only dependency.)
fn field(json: &str, key: &str) -> Option<String> {
    let start = json.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = &json[start..];
    if let Some(rest) = rest.strip_prefix('"') {
        rest.split('"').next().map(String::from)
    } else {
        let end = rest.find([',', '}']).unwrap_or(rest.len());
        Some(rest[..end].to_string())
    }
}

impl Guest for Narrow {
    fn grant(request: TokenRequest) -> Grant {
        Grant {
            granted: request.requested,
            refused: Vec::new(),
        }
    }

    fn authorize(request: FhirRequest, _claims: Claims) -> Decision {
        let config = config();
        let answer = field(&config, "answer").unwrap_or_default();
        let spins: u64 = field(&config, "spins")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        log(LogLevel::Info, &format!("narrowing to {answer}"));
        let mut n: u64 = 0;
        while n < spins {
            n = std::hint::black_box(n + 1);
        }
        Decision::AllowWithin(vec![Constraint::Search(SearchConstraint {
            resource_type: request.resource_type.unwrap_or_default(),
            parameters: vec![("family".to_string(), answer)],
        })])
    }
}

export!(Narrow);
