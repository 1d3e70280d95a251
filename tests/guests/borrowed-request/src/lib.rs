//! Built against `hestia:plugin@0.4.0`, whose `authorize` borrows the request and the claims
//! as resources. It reads only what each rule needs: a read is allowed after asking for the
//! interaction alone; a delete is denied naming the client; any other interaction is denied
//! with every method's answer rendered, so that a test sees what the host serves.

wit_bindgen::generate!({ path: "../../../wit/v0.4.0", world: "scope-policy" });

use hestia::plugin::types::Interaction;

struct BorrowedRequest;

fn opt(v: Option<String>) -> String {
    v.unwrap_or_else(|| "-".to_string())
}

/// Every field, one `name=value` per method, `;`-separated.
fn render(request: &FhirRequest, claims: &Claims) -> String {
    let parameters: Vec<String> = request
        .parameters()
        .into_iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect();
    let user = claims.user().map_or("-".to_string(), |u| {
        let grants: Vec<String> = u.grants.into_iter().map(|g| g.scope).collect();
        format!("{}|{}", u.roles.join(","), grants.join(","))
    });
    [
        format!("interaction={:?}", request.interaction()),
        format!("type={}", opt(request.resource_type())),
        format!("id={}", opt(request.id())),
        format!("operation={}", opt(request.operation())),
        format!("parameters={}", parameters.join(",")),
        format!("body={}", opt(request.body_json())),
        format!("base={}", request.base_url()),
        format!("issuer={}", claims.issuer()),
        format!("subject={}", claims.subject()),
        format!("client={}", claims.client_id()),
        format!("audiences={}", claims.audiences().join(",")),
        format!("scopes={}", claims.scopes().join(",")),
        format!("fhir-user={}", opt(claims.fhir_user())),
        format!("patient={}", opt(claims.patient())),
        format!("expires={}", claims.expires_at()),
        format!("raw={}", claims.raw_json()),
        format!("user={user}"),
    ]
    .join(";")
}

impl Guest for BorrowedRequest {
    fn grant(request: TokenRequest) -> Grant {
        Grant {
            granted: request.requested,
            refused: Vec::new(),
        }
    }

    fn authorize(request: &FhirRequest, claims: &Claims) -> Decision {
        match request.interaction() {
            Interaction::Read => Decision::Allow,
            Interaction::Delete => Decision::Deny(format!("no deletes by {}", claims.client_id())),
            _ => Decision::Deny(render(request, claims)),
        }
    }
}

export!(BorrowedRequest);
