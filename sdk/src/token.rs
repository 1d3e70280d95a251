use crate::UserRights;
use crate::smart::Scope;

/// A token about to be issued, as the scope policy sees it at grant time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    pub(crate) client_id: String,
    pub(crate) grant_type: String,
    pub(crate) requested: Vec<String>,
    pub(crate) registered: Vec<String>,
    pub(crate) subject: Option<String>,
    pub(crate) fhir_user: Option<String>,
    pub(crate) patient: Option<String>,
    pub(crate) audiences: Vec<String>,
    pub(crate) user: Option<UserRights>,
}

impl TokenRequest {
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// `authorization_code`, `client_credentials`, `refresh_token`, …
    pub fn grant_type(&self) -> &str {
        &self.grant_type
    }

    /// The scopes asked for (after the user's consent where there was one), as written.
    pub fn requested(&self) -> &[String] {
        &self.requested
    }

    /// The scopes the client is registered for, as written.
    pub fn registered(&self) -> &[String] {
        &self.registered
    }

    /// The registered scopes that parse as SMART scopes.
    pub fn registered_scopes(&self) -> Vec<Scope> {
        self.registered
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect()
    }

    pub fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }

    pub fn fhir_user(&self) -> Option<&str> {
        self.fhir_user.as_deref()
    }

    /// The launch patient chosen at authorization time.
    pub fn patient(&self) -> Option<&str> {
        self.patient.as_deref()
    }

    pub fn audiences(&self) -> &[String] {
        &self.audiences
    }

    /// The rights of the account the token is for. `None` when no account is behind it
    /// (client_credentials).
    pub fn user(&self) -> Option<&UserRights> {
        self.user.as_ref()
    }
}

/// Which requested scopes a token gets, and why not the others.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    pub granted: Vec<String>,
    /// Each refused scope with the reason, shown to the client.
    pub refused: Vec<(String, String)>,
}

impl Grant {
    pub fn new() -> Grant {
        Grant::default()
    }

    /// Grants every requested scope.
    pub fn all(request: &TokenRequest) -> Grant {
        Grant {
            granted: request.requested.clone(),
            refused: Vec::new(),
        }
    }

    #[must_use]
    pub fn grant(mut self, scope: impl Into<String>) -> Grant {
        self.granted.push(scope.into());
        self
    }

    #[must_use]
    pub fn refuse(mut self, scope: impl Into<String>, reason: impl Into<String>) -> Grant {
        self.refused.push((scope.into(), reason.into()));
        self
    }

    pub fn is_granted(&self, scope: &str) -> bool {
        self.granted.iter().any(|s| s == scope)
    }

    /// The reason a scope was refused.
    pub fn refusal(&self, scope: &str) -> Option<&str> {
        self.refused
            .iter()
            .find(|(s, _)| s == scope)
            .map(|(_, r)| r.as_str())
    }
}
