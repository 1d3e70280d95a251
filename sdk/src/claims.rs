use std::cell::OnceCell;

use serde_json::Value;

use crate::UserRights;
use crate::smart::Scope;

/// What the host verified about the access token of a request.
///
/// The common claims are plain accessors; anything else is one [`Claims::claim`] away.
#[derive(Debug, Clone)]
pub struct Claims {
    pub(crate) issuer: String,
    pub(crate) subject: String,
    pub(crate) client_id: String,
    pub(crate) audiences: Vec<String>,
    pub(crate) scope_strings: Vec<String>,
    /// Parsed from `scope_strings` when first asked for: most policies never look.
    pub(crate) scopes: OnceCell<Vec<Scope>>,
    pub(crate) fhir_user: Option<String>,
    pub(crate) patient: Option<String>,
    pub(crate) expires_at: u64,
    pub(crate) raw_json: String,
    pub(crate) raw: OnceCell<Value>,
    pub(crate) user: Option<UserRights>,
}

impl Claims {
    pub(crate) fn new(fields: ClaimFields, scope_strings: Vec<String>, raw_json: String) -> Claims {
        Claims {
            issuer: fields.issuer,
            subject: fields.subject,
            client_id: fields.client_id,
            audiences: fields.audiences,
            scope_strings,
            scopes: OnceCell::new(),
            fhir_user: fields.fhir_user,
            patient: fields.patient,
            expires_at: fields.expires_at,
            raw_json,
            raw: OnceCell::new(),
            user: fields.user,
        }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn subject(&self) -> &str {
        &self.subject
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    pub fn audiences(&self) -> &[String] {
        &self.audiences
    }

    /// The granted scopes that parse as SMART scopes (see [`crate::smart`]); others, such
    /// as a deployment's own scopes, are only in [`Claims::scope_strings`].
    pub fn scopes(&self) -> &[Scope] {
        self.scopes.get_or_init(|| {
            self.scope_strings
                .iter()
                .filter_map(|s| s.parse().ok())
                .collect()
        })
    }

    /// Every granted scope exactly as in the token.
    pub fn scope_strings(&self) -> &[String] {
        &self.scope_strings
    }

    /// Whether the token carries this scope, compared as written.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scope_strings.iter().any(|s| s == scope)
    }

    /// `fhirUser`, e.g. `Practitioner/123`.
    pub fn fhir_user(&self) -> Option<&str> {
        self.fhir_user.as_deref()
    }

    /// The SMART launch patient's id.
    pub fn patient(&self) -> Option<&str> {
        self.patient.as_deref()
    }

    /// Seconds since the Unix epoch.
    pub fn expires_at(&self) -> u64 {
        self.expires_at
    }

    /// The rights of the account behind the token as they are at this request (the host
    /// reads them for every request, so a role removed after the token was issued is
    /// already gone here). `None` for a backend service's token (client_credentials). A
    /// remote issuer's user has the rights of the server's account of the same user name,
    /// or, without one, those of an account without role (its own records for a Patient
    /// fhirUser).
    pub fn user(&self) -> Option<&UserRights> {
        self.user.as_ref()
    }

    /// Any claim of the token by name, e.g. a deployment's own `tenant` claim.
    pub fn claim(&self, name: &str) -> Option<&Value> {
        self.raw
            .get_or_init(|| serde_json::from_str(&self.raw_json).unwrap_or(Value::Null))
            .get(name)
    }

    /// A claim that is a JSON string.
    pub fn claim_str(&self, name: &str) -> Option<&str> {
        self.claim(name).and_then(Value::as_str)
    }

    /// Every claim as the JSON text the host passed.
    pub fn raw_json(&self) -> &str {
        &self.raw_json
    }
}

/// The single-valued claims, grouped so that constructors stay readable.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClaimFields {
    pub issuer: String,
    pub subject: String,
    pub client_id: String,
    pub audiences: Vec<String>,
    pub fhir_user: Option<String>,
    pub patient: Option<String>,
    pub expires_at: u64,
    pub user: Option<UserRights>,
}
