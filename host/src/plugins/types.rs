//! The plain types that the rest of the host uses to talk to plugins. They mirror the
//! records of the WIT contract but belong to no contract version: `oauth/` and `fhir/` use
//! these, and the generated bindings of each version convert from and to them. A
//! validator's findings are the FHIR layer's own `fhir::outcome::Issue`s.

use std::fmt;

/// What the host knows about a verified access token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims {
    pub issuer: String,
    pub subject: String,
    pub client_id: String,
    pub audiences: Vec<String>,
    /// Granted scopes, one per entry, exactly as in the token.
    pub scopes: Vec<String>,
    pub fhir_user: Option<String>,
    /// SMART launch context: the patient id, when the token carries one.
    pub patient: Option<String>,
    /// Seconds since the Unix epoch.
    pub expires_at: u64,
    /// Every claim of the token as a JSON object.
    pub raw_json: String,
    /// The rights of the account behind the token, as they are at this request; `None`
    /// for a backend service's token (client_credentials). A remote issuer's user has the
    /// rights of this server's account of the same user name, or, without one, those of an
    /// account without role (of the role `patient` for a Patient fhirUser). Plugins of
    /// contract 0.3.0 and later see it.
    pub user: Option<UserRights>,
}

/// What the account behind a token may access: its roles and the grants of its access
/// policies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserRights {
    /// Roles of the account: `patient`, `practitioner`, `admin`, or the operator's own.
    pub roles: Vec<String>,
    /// Each grant of the account's access policies, resolved for this account.
    pub grants: Vec<UserGrant>,
}

/// One grant of an access policy, resolved for an account.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserGrant {
    /// SMART v2 scope syntax without the context prefix: `Patient.rs?organization=Organization/a`,
    /// `*.cruds`.
    pub scope: String,
    /// When set, the grant holds only within this patient's compartment (the account's own
    /// records): the patient id.
    pub patient_compartment: Option<String>,
}

/// The FHIR REST interactions a request can be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Interaction {
    Read,
    Vread,
    Update,
    Patch,
    Delete,
    Create,
    HistoryInstance,
    HistoryType,
    HistorySystem,
    SearchType,
    SearchSystem,
    Capabilities,
    Batch,
    Transaction,
    Operation,
}

/// One FHIR REST request, as the host parsed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FhirRequest {
    pub interaction: Interaction,
    pub resource_type: Option<String>,
    pub id: Option<String>,
    /// Operation name without the `$`.
    pub operation: Option<String>,
    /// Search or operation parameters in request order, names with their modifiers.
    pub parameters: Vec<(String, String)>,
    /// The resource sent with create, update or patch, as JSON.
    pub body_json: Option<String>,
    /// This server's FHIR base URL.
    pub base_url: String,
}

/// Narrows what an allowed request may see or change; applied inside the store query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Constraint {
    /// Only resources in the compartment of this patient id.
    PatientCompartment(String),
    /// Only resources of this type that also match these search parameters.
    Search(SearchConstraint),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchConstraint {
    pub resource_type: String,
    pub parameters: Vec<(String, String)>,
}

/// A refusal, naming the plugin that refused and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub plugin: String,
    pub reason: String,
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "plugin {} denied: {}", self.plugin, self.reason)
    }
}

impl std::error::Error for Denial {}

/// The outcome of the scope-policy chain for one FHIR request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Allowed, but only within every one of these constraints.
    AllowWithin(Vec<Constraint>),
    Deny(Denial),
}

/// A token about to be issued.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenRequest {
    pub client_id: String,
    /// `authorization_code`, `client_credentials`, `refresh_token`, …
    pub grant_type: String,
    /// Scopes asked for, after the user's consent where there was one.
    pub requested: Vec<String>,
    /// Scopes the client is registered for.
    pub registered: Vec<String>,
    pub subject: Option<String>,
    pub fhir_user: Option<String>,
    /// SMART launch context (patient id), when there is one.
    pub patient: Option<String>,
    pub audiences: Vec<String>,
    /// The rights of the account the token is for; `None` when no account is behind it.
    /// Plugins of contract 0.3.0 and later see it.
    pub user: Option<UserRights>,
}

/// Which requested scopes a token gets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    pub granted: Vec<String>,
    /// Each requested scope that was not granted, with the reason.
    pub refused: Vec<(String, String)>,
}

/// Which audiences a token asks for, and what is known to be a valid one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AudienceRequest {
    pub client_id: String,
    /// From the `aud` and `resource` parameters.
    pub requested: Vec<String>,
    /// FHIR base URLs of the registered resource servers, this server's own included.
    pub known: Vec<String>,
}
