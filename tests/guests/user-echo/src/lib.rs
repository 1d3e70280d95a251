//! Built against `hestia:plugin@0.3.0`: shows what the host passed as `user` (new in 0.3.0).
//! `authorize` denies with `claims.user` rendered. `grant` gives an account with grants its
//! first grant's scope under `user/` in place of the requested scopes (a narrowed scope
//! that was not requested), and refuses every requested scope otherwise, with
//! `request.user` rendered.

wit_bindgen::generate!({ path: "../../../wit/v0.3.0", world: "scope-policy" });

use hestia::plugin::types::UserRights;

struct UserEcho;

/// `none`, or `roles=[a,b] grants=[scope@compartment,…]` (`-` for no compartment).
fn render(user: &Option<UserRights>) -> String {
    let Some(user) = user else {
        return "none".to_string();
    };
    let grants: Vec<String> = user
        .grants
        .iter()
        .map(|g| format!("{}@{}", g.scope, g.patient_compartment.as_deref().unwrap_or("-")))
        .collect();
    format!("roles=[{}] grants=[{}]", user.roles.join(","), grants.join(","))
}

impl Guest for UserEcho {
    fn grant(request: TokenRequest) -> Grant {
        // An account with grants gets its first grant under `user/` in place of whatever
        // was requested (narrowing); otherwise every requested scope is refused, naming
        // what the host passed.
        if let Some(first) = request.user.as_ref().and_then(|u| u.grants.first()) {
            return Grant {
                granted: vec![format!("user/{}", first.scope)],
                refused: Vec::new(),
            };
        }
        let rendered = render(&request.user);
        Grant {
            granted: Vec::new(),
            refused: request
                .requested
                .into_iter()
                .map(|s| (s, rendered.clone()))
                .collect(),
        }
    }

    fn authorize(_request: FhirRequest, claims: Claims) -> Decision {
        Decision::Deny(format!("user: {}", render(&claims.user)))
    }
}

export!(UserEcho);
