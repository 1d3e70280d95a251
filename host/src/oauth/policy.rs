//! Scope and audience decisions at token time, behind a trait so that the WebAssembly
//! plugin host (scope-policy `grant`, audience-rule `resolve`) can take over through an
//! adapter (`policy::PluginTokenPolicy`); [`NoPolicy`] fails closed when none is given.

/// What is asked at token time (authorize, client_credentials, refresh).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRequest {
    pub client_id: String,
    /// `authorization_code`, `client_credentials` or `refresh_token`.
    pub grant_type: String,
    pub requested_scopes: Vec<String>,
    /// The scopes the client is registered for.
    pub registered_scopes: Vec<String>,
    /// The user's id, or the client id for client_credentials.
    pub subject: Option<String>,
    /// `Patient/123`, `Practitioner/abc`.
    pub fhir_user: Option<String>,
    /// The patient in context, when known.
    pub patient: Option<String>,
    /// What the account behind the token may access (none for client_credentials).
    pub user: Option<crate::rights::Rights>,
}

/// Which requested scopes are granted, and why the others are not.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GrantOutcome {
    pub granted: Vec<String>,
    /// (scope, reason)
    pub refused: Vec<(String, String)>,
}

/// The audiences asked for with `aud` (SMART/IRIS) or `resource` (RFC 8707).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudienceQuery {
    pub client_id: String,
    pub requested: Vec<String>,
    /// Audiences the client is restricted to (empty: any known one).
    pub client_audiences: Vec<String>,
    /// Resource servers this authorization server knows: its own FHIR base first, then the
    /// audiences of registered resource-server clients.
    pub known: Vec<String>,
}

pub trait TokenPolicy: Send + Sync {
    fn grant(&self, req: &GrantRequest) -> GrantOutcome;
    /// The token's audiences, or why the request is refused.
    fn resolve_audience(&self, q: &AudienceQuery) -> Result<Vec<String>, String>;
}

/// The policy of an [`super::AuthServer`] that was given none: it grants nothing and names
/// why. Scope and audience decisions belong to the scope-policy and audience-rule plugins
/// (`policy::PluginTokenPolicy`, which `hestia serve` always installs); a server built
/// without them fails closed rather than deciding with a second, diverging copy of them.
#[derive(Debug, Clone, Default)]
pub struct NoPolicy;

const NO_POLICY: &str = "this authorization server has no token policy configured (no scope-policy or audience-rule plugins)";

impl TokenPolicy for NoPolicy {
    fn grant(&self, req: &GrantRequest) -> GrantOutcome {
        GrantOutcome {
            granted: Vec::new(),
            refused: req
                .requested_scopes
                .iter()
                .map(|s| (s.clone(), NO_POLICY.to_string()))
                .collect(),
        }
    }

    fn resolve_audience(&self, _: &AudienceQuery) -> Result<Vec<String>, String> {
        Err(NO_POLICY.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_policy_nothing_is_granted() {
        let out = NoPolicy.grant(&GrantRequest {
            client_id: "c1".into(),
            grant_type: "client_credentials".into(),
            requested_scopes: vec!["system/*.read".into()],
            registered_scopes: vec!["system/*.read".into()],
            subject: None,
            fhir_user: None,
            patient: None,
            user: None,
        });
        assert!(out.granted.is_empty());
        assert!(
            out.refused[0].1.contains("no token policy"),
            "{:?}",
            out.refused
        );
        let err = NoPolicy
            .resolve_audience(&AudienceQuery {
                client_id: "c1".into(),
                requested: vec![],
                client_audiences: vec![],
                known: vec!["https://h/fhir/r4".into()],
            })
            .unwrap_err();
        assert!(err.contains("no token policy"), "{err}");
    }
}
