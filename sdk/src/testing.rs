//! Native test harness: build requests and claims, set the plugin's configuration and read
//! its log lines, then call the trait methods directly with `cargo test` on the host
//! target, without wasm.
//!
//! ```
//! use hestia_sdk::testing::{self, claims, search};
//! use hestia_sdk::{Claims, Decision, FhirRequest, ScopePolicy};
//!
//! struct Logged;
//! impl ScopePolicy for Logged {
//!     fn authorize(request: &FhirRequest, claims: &Claims) -> Decision {
//!         hestia_sdk::log::info(format!("{} by {}", request.interaction(), claims.client_id()));
//!         Decision::allow()
//!     }
//! }
//!
//! let decision = Logged::authorize(&search("Observation", [("code", "1234-5")]), &claims().client_id("app").build());
//! assert_eq!(decision, Decision::Allow);
//! assert_eq!(testing::take_logs(), [(hestia_sdk::Level::Info, "search-type by app".to_string())]);
//! ```
//!
//! The configuration and the log are per thread, so tests running in parallel do not see
//! each other's.

use serde_json::{Map, Value};

use crate::claims::ClaimFields;
use crate::host::backend::HOST;
use crate::{
    AudienceRequest, Claims, FhirRequest, Interaction, Level, TokenRequest, UserGrant, UserRights,
};

/// The base URL requests and claims get unless a test says otherwise.
pub const BASE_URL: &str = "https://hestia.test/fhir/r4";

/// Sets what [`crate::config`] returns on this thread (as the manifest's configuration
/// table would).
pub fn set_config(config: Value) {
    HOST.with_borrow_mut(|h| h.config = Some(config.to_string()));
}

/// Back to no configuration (`{}`).
pub fn clear_config() {
    HOST.with_borrow_mut(|h| h.config = None);
}

/// Removes and returns the log lines written on this thread so far.
pub fn take_logs() -> Vec<(Level, String)> {
    HOST.with_borrow_mut(|h| std::mem::take(&mut h.logs))
}

/// Claims of a token; by default issuer and audience are [`BASE_URL`]'s server, the
/// client is `test-client`, the subject `test-user`, with no scopes.
pub fn claims() -> ClaimsBuilder {
    ClaimsBuilder {
        fields: ClaimFields {
            issuer: "https://hestia.test".into(),
            subject: "test-user".into(),
            client_id: "test-client".into(),
            audiences: vec![BASE_URL.into()],
            fhir_user: None,
            patient: None,
            expires_at: 4_102_444_800,
            user: None,
        },
        scopes: Vec::new(),
        extra: Map::new(),
    }
}

#[derive(Debug, Clone)]
pub struct ClaimsBuilder {
    fields: ClaimFields,
    scopes: Vec<String>,
    extra: Map<String, Value>,
}

impl ClaimsBuilder {
    /// Adds space-separated scopes, as in a token's `scope` claim.
    pub fn scopes(mut self, scopes: &str) -> Self {
        self.scopes
            .extend(scopes.split_ascii_whitespace().map(String::from));
        self
    }

    pub fn patient(mut self, id: &str) -> Self {
        self.fields.patient = Some(id.into());
        self
    }

    pub fn fhir_user(mut self, reference: &str) -> Self {
        self.fields.fhir_user = Some(reference.into());
        self
    }

    /// The rights of the account behind the token ([`Claims::user`]); none by default, as
    /// for a client_credentials token.
    pub fn user(mut self, rights: UserRights) -> Self {
        self.fields.user = Some(rights);
        self
    }

    pub fn subject(mut self, subject: &str) -> Self {
        self.fields.subject = subject.into();
        self
    }

    pub fn client_id(mut self, client_id: &str) -> Self {
        self.fields.client_id = client_id.into();
        self
    }

    pub fn issuer(mut self, issuer: &str) -> Self {
        self.fields.issuer = issuer.into();
        self
    }

    /// Replaces the audiences.
    pub fn audiences<S: Into<String>>(mut self, audiences: impl IntoIterator<Item = S>) -> Self {
        self.fields.audiences = audiences.into_iter().map(Into::into).collect();
        self
    }

    pub fn expires_at(mut self, seconds: u64) -> Self {
        self.fields.expires_at = seconds;
        self
    }

    /// Any other claim, found by [`Claims::claim`].
    pub fn claim(mut self, name: &str, value: Value) -> Self {
        self.extra.insert(name.into(), value);
        self
    }

    /// The claims, with a raw JSON object holding the standard claims and the extra ones.
    pub fn build(self) -> Claims {
        let f = &self.fields;
        let mut raw = Map::new();
        raw.insert("iss".into(), f.issuer.clone().into());
        raw.insert("sub".into(), f.subject.clone().into());
        raw.insert("client_id".into(), f.client_id.clone().into());
        raw.insert("aud".into(), f.audiences.clone().into());
        raw.insert("scope".into(), self.scopes.join(" ").into());
        raw.insert("exp".into(), f.expires_at.into());
        if let Some(u) = &f.fhir_user {
            raw.insert("fhirUser".into(), u.clone().into());
        }
        if let Some(p) = &f.patient {
            raw.insert("patient".into(), p.clone().into());
        }
        raw.extend(self.extra);
        Claims::new(self.fields, self.scopes, Value::Object(raw).to_string())
    }
}

/// A request of any interaction; see the shorthands ([`read`], [`search`], …) below.
pub fn request(interaction: Interaction) -> RequestBuilder {
    RequestBuilder(FhirRequest {
        interaction,
        resource_type: None,
        id: None,
        operation: None,
        parameters: Vec::new(),
        body_json: None,
        base_url: BASE_URL.into(),
    })
}

#[derive(Debug, Clone)]
pub struct RequestBuilder(FhirRequest);

impl RequestBuilder {
    pub fn resource_type(mut self, resource_type: &str) -> Self {
        self.0.resource_type = Some(resource_type.into());
        self
    }

    pub fn id(mut self, id: &str) -> Self {
        self.0.id = Some(id.into());
        self
    }

    pub fn operation(mut self, name: &str) -> Self {
        self.0.operation = Some(name.into());
        self
    }

    pub fn param(mut self, name: &str, value: &str) -> Self {
        self.0.parameters.push((name.into(), value.into()));
        self
    }

    pub fn body(mut self, resource: Value) -> Self {
        self.0.body_json = Some(resource.to_string());
        self
    }

    pub fn base_url(mut self, base_url: &str) -> Self {
        self.0.base_url = base_url.into();
        self
    }

    pub fn build(self) -> FhirRequest {
        self.0
    }
}

pub fn read(resource_type: &str, id: &str) -> FhirRequest {
    request(Interaction::Read)
        .resource_type(resource_type)
        .id(id)
        .build()
}

pub fn search<'a>(
    resource_type: &str,
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> FhirRequest {
    params
        .into_iter()
        .fold(
            request(Interaction::SearchType).resource_type(resource_type),
            |b, (n, v)| b.param(n, v),
        )
        .build()
}

/// A create of `resource`, typed by its `resourceType`.
pub fn create(resource: Value) -> FhirRequest {
    let resource_type = resource["resourceType"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    request(Interaction::Create)
        .resource_type(&resource_type)
        .body(resource)
        .build()
}

/// An update of `resource`, typed and identified by its `resourceType` and `id`.
pub fn update(resource: Value) -> FhirRequest {
    let resource_type = resource["resourceType"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let id = resource["id"].as_str().unwrap_or_default().to_string();
    request(Interaction::Update)
        .resource_type(&resource_type)
        .id(&id)
        .body(resource)
        .build()
}

pub fn delete(resource_type: &str, id: &str) -> FhirRequest {
    request(Interaction::Delete)
        .resource_type(resource_type)
        .id(id)
        .build()
}

/// A token request from `test-client` with the `authorization_code` grant.
pub fn token_request() -> TokenRequestBuilder {
    TokenRequestBuilder(TokenRequest {
        client_id: "test-client".into(),
        grant_type: "authorization_code".into(),
        requested: Vec::new(),
        registered: Vec::new(),
        subject: Some("test-user".into()),
        fhir_user: None,
        patient: None,
        audiences: vec![BASE_URL.into()],
        user: None,
    })
}

#[derive(Debug, Clone)]
pub struct TokenRequestBuilder(TokenRequest);

impl TokenRequestBuilder {
    /// Adds space-separated requested scopes.
    pub fn requested(mut self, scopes: &str) -> Self {
        self.0
            .requested
            .extend(scopes.split_ascii_whitespace().map(String::from));
        self
    }

    /// Adds space-separated registered scopes.
    pub fn registered(mut self, scopes: &str) -> Self {
        self.0
            .registered
            .extend(scopes.split_ascii_whitespace().map(String::from));
        self
    }

    pub fn client_id(mut self, client_id: &str) -> Self {
        self.0.client_id = client_id.into();
        self
    }

    pub fn grant_type(mut self, grant_type: &str) -> Self {
        self.0.grant_type = grant_type.into();
        self
    }

    pub fn subject(mut self, subject: Option<&str>) -> Self {
        self.0.subject = subject.map(Into::into);
        self
    }

    pub fn fhir_user(mut self, reference: &str) -> Self {
        self.0.fhir_user = Some(reference.into());
        self
    }

    pub fn patient(mut self, id: &str) -> Self {
        self.0.patient = Some(id.into());
        self
    }

    /// The rights of the account the token is for ([`TokenRequest::user`]); none by
    /// default.
    pub fn user(mut self, rights: UserRights) -> Self {
        self.0.user = Some(rights);
        self
    }

    pub fn audiences<S: Into<String>>(mut self, audiences: impl IntoIterator<Item = S>) -> Self {
        self.0.audiences = audiences.into_iter().map(Into::into).collect();
        self
    }

    pub fn build(self) -> TokenRequest {
        self.0
    }
}

/// The rights of an account: `roles` (space-separated) and `grants`, each a scope without
/// context and the patient whose compartment confines it.
///
/// ```
/// use hestia_sdk::testing::{claims, user};
///
/// let amy = claims().scopes("patient/*.rs").patient("amy").user(user("patient", [("*.rs", Some("amy"))])).build();
/// assert_eq!(amy.user().unwrap().roles(), ["patient"]);
/// ```
pub fn user<'a>(
    roles: &str,
    grants: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
) -> UserRights {
    UserRights::new(
        roles.split_ascii_whitespace(),
        grants
            .into_iter()
            .map(|(scope, compartment)| UserGrant::new(scope, compartment)),
    )
}

/// An audience request from `test-client`.
pub fn audience_request<R, K>(
    requested: impl IntoIterator<Item = R>,
    known: impl IntoIterator<Item = K>,
) -> AudienceRequest
where
    R: Into<String>,
    K: Into<String>,
{
    AudienceRequest {
        client_id: "test-client".into(),
        requested: requested.into_iter().map(Into::into).collect(),
        known: known.into_iter().map(Into::into).collect(),
    }
}
