//! {name}: a scope policy. Deletes are refused; everything else is left to the other
//! scope policies (the built-in `smart-scopes` still checks the token's SMART scopes).

use hestia_sdk::{Claims, Decision, FhirRequest, Interaction, ScopePolicy};

pub struct Policy;

impl ScopePolicy for Policy {
    fn authorize(request: &FhirRequest, claims: &Claims) -> Decision {
        if request.interaction() == Interaction::Delete {
            hestia_sdk::log::info(format!("refused a delete by {}", claims.client_id()));
            return Decision::deny("deletes are disabled on this server");
        }
        Decision::allow()
    }
}

hestia_sdk::export_scope_policy!(Policy);

#[cfg(test)]
mod tests {
    use hestia_sdk::testing::{claims, delete, read};
    use hestia_sdk::{Decision, ScopePolicy};

    use super::Policy;

    #[test]
    fn deletes_are_refused_reads_are_not() {
        let app = claims().scopes("user/*.cruds").build();
        assert_eq!(Policy::authorize(&read("Patient", "p1"), &app), Decision::allow());
        assert_eq!(
            Policy::authorize(&delete("Patient", "p1"), &app),
            Decision::deny("deletes are disabled on this server")
        );
    }
}
