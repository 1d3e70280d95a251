//! Scope and audience decisions at token time, behind a trait so that the WebAssembly
//! plugin host (scope-policy `grant`, audience-rule `resolve`) can take over through an
//! adapter. [`DefaultPolicy`] is the built-in behaviour of the default plugins.

use super::scopes;

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

/// Scopes granted when covered by the client's registration (SMART-aware); audience one
/// of the known resource servers, by default this server's FHIR base URL.
#[derive(Debug, Clone, Default)]
pub struct DefaultPolicy;

impl TokenPolicy for DefaultPolicy {
    fn grant(&self, req: &GrantRequest) -> GrantOutcome {
        let mut out = GrantOutcome::default();
        for scope in &req.requested_scopes {
            if !scopes::is_recognised(scope) {
                out.refused
                    .push((scope.clone(), "this server does not know the scope".into()));
            } else if req
                .registered_scopes
                .iter()
                .any(|r| scopes::covers(r, scope))
            {
                out.granted.push(scope.clone());
            } else {
                out.refused.push((
                    scope.clone(),
                    format!(
                        "not allowed for client {} (registered scopes: {})",
                        req.client_id,
                        if req.registered_scopes.is_empty() {
                            "none".to_string()
                        } else {
                            req.registered_scopes.join(" ")
                        }
                    ),
                ));
            }
        }
        out
    }

    fn resolve_audience(&self, q: &AudienceQuery) -> Result<Vec<String>, String> {
        if q.requested.is_empty() {
            return match q.client_audiences.first().or(q.known.first()) {
                Some(default) => Ok(vec![default.clone()]),
                None => Err("no audience was requested and there is no default".into()),
            };
        }
        for aud in &q.requested {
            let known = q.known.iter().any(|k| same_url(k, aud));
            if !known {
                return Err(format!(
                    "audience {aud} is not a resource server known to this authorization server; known: {}",
                    q.known.join(", ")
                ));
            }
            if !q.client_audiences.is_empty()
                && !q.client_audiences.iter().any(|k| same_url(k, aud))
            {
                return Err(format!(
                    "client {} may not ask for audience {aud}; its audiences: {}",
                    q.client_id,
                    q.client_audiences.join(", ")
                ));
            }
        }
        Ok(q.requested
            .iter()
            .map(|a| a.trim_end_matches('/').to_string())
            .collect())
    }
}

/// URLs compare without a trailing slash.
fn same_url(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(registered: &str, requested: &str) -> GrantRequest {
        GrantRequest {
            client_id: "c1".into(),
            grant_type: "authorization_code".into(),
            requested_scopes: scopes::split(requested),
            registered_scopes: scopes::split(registered),
            subject: None,
            fhir_user: None,
            patient: None,
        }
    }

    #[test]
    fn grants_what_the_registration_covers() {
        let out = DefaultPolicy.grant(&req(
            "openid patient/*.read",
            "openid patient/Observation.rs user/Patient.read bogus",
        ));
        assert_eq!(out.granted, vec!["openid", "patient/Observation.rs"]);
        assert_eq!(out.refused.len(), 2);
        assert!(
            out.refused[0]
                .1
                .contains("registered scopes: openid patient/*.read")
        );
        assert!(out.refused[1].1.contains("does not know"));
    }

    #[test]
    fn audiences() {
        let q = |requested: &[&str], client: &[&str]| AudienceQuery {
            client_id: "c1".into(),
            requested: requested.iter().map(|s| s.to_string()).collect(),
            client_audiences: client.iter().map(|s| s.to_string()).collect(),
            known: vec!["https://h/fhir/r4".into(), "https://other/fhir".into()],
        };
        assert_eq!(
            DefaultPolicy.resolve_audience(&q(&[], &[])).unwrap(),
            vec!["https://h/fhir/r4"]
        );
        assert_eq!(
            DefaultPolicy
                .resolve_audience(&q(&["https://other/fhir/"], &[]))
                .unwrap(),
            vec!["https://other/fhir"]
        );
        let err = DefaultPolicy
            .resolve_audience(&q(&["https://evil/"], &[]))
            .unwrap_err();
        assert!(err.contains("https://evil/") && err.contains("known: https://h/fhir/r4"));
        let err = DefaultPolicy
            .resolve_audience(&q(&["https://other/fhir"], &["https://h/fhir/r4"]))
            .unwrap_err();
        assert!(err.contains("may not ask"), "{err}");
    }
}
