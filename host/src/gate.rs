//! The gate: whether a request with an access token may touch FHIR data, and within what.
//!
//! One path for every caller that asks: the FHIR middleware (`http/resource_server.rs`),
//! Bundle entries, the admin API (`http/admin.rs`) and `hestia token explain`. The steps,
//! in order, each a method so that `explain` can say which one refuses:
//!
//! 1. [`Gate::verify`]: signature, `kid`, issuer, expiry with the configured leeway,
//!    revocation; against this server's keys or the remote issuer's (a check that cannot
//!    run is [`Refusal::Unavailable`], not a bad token);
//! 2. [`Gate::check_basic`] in the compatibility mode (`fhir.require_basic_auth`);
//! 3. [`Gate::accept_audience`]: the audience-rule plugins;
//! 4. [`Caller::decide`]: the scope-policy plugins, on the request as [`classify_route`]
//!    names it, into an [`Access`];
//! 5. for writes under a restricted access, [`Gate::check_write`].
//!
//! No HTTP type appears here: the HTTP layer finds the credentials and the matched route,
//! and turns a [`Refusal`] into a status, `WWW-Authenticate` and an OperationOutcome.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::fhir::access::{Access, AccessConstraint};
use crate::fhir::definitions::ResourceType;
use crate::fhir::error::FhirError;
use crate::fhir::repository::Repository;
use crate::fhir::searchset::Via;
use crate::freshness::Freshness;
use crate::oauth::signin::{self, Attempt};
use crate::oauth::tokens::{AccessClaims, TokenError, check_times};
use crate::plugins::{
    Claims, Constraint, Decision, FhirRequest, Interaction, PluginHost, UserRights,
};
use crate::rights::Rights;
use crate::store::Store;
use crate::verifier::cache::{VerifiedTokens, token_key};
use crate::verifier::{TokenVerifier, Verified};

/// Why the gate refused, in the terms the HTTP layer maps onto statuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The request is malformed (RFC 6750 §3.1 `invalid_request`, 400, no challenge).
    Malformed(String),
    /// No usable credentials (401 with a `Bearer` challenge and this error code).
    Unauthenticated {
        error: Option<&'static str>,
        description: String,
    },
    /// Authenticated, but not allowed (403 `insufficient_scope`).
    Forbidden(String),
    /// The check itself could not run (the issuer or the database did not answer): 503, so
    /// that the client retries with the same token.
    Unavailable(String),
    /// Too many failed attempts (Basic credentials count as sign-ins): 429.
    Throttled(String),
}

impl Refusal {
    pub(crate) fn invalid_token(description: impl Into<String>) -> Refusal {
        Refusal::Unauthenticated {
            error: Some("invalid_token"),
            description: description.into(),
        }
    }

    pub(crate) fn invalid_request(description: impl Into<String>) -> Refusal {
        Refusal::Unauthenticated {
            error: Some("invalid_request"),
            description: description.into(),
        }
    }

    /// The sentence a client is shown.
    pub fn description(&self) -> &str {
        match self {
            Refusal::Malformed(d)
            | Refusal::Unauthenticated { description: d, .. }
            | Refusal::Forbidden(d)
            | Refusal::Unavailable(d)
            | Refusal::Throttled(d) => d,
        }
    }
}

impl From<FhirError> for Refusal {
    fn from(err: FhirError) -> Refusal {
        match err {
            FhirError::Forbidden(why) => Refusal::Forbidden(why),
            other => store_failed(other),
        }
    }
}

/// A check that could not run because the database failed: the cause goes to the log
/// (within the request's span, so under its request id), the client learns only that.
fn store_failed(cause: impl std::fmt::Display) -> Refusal {
    tracing::error!(%cause, "an authorization check cannot run: the database failed");
    Refusal::Unavailable(
        "the database does not answer; retry later (the server log has the cause under this request's x-request-id)".into(),
    )
}

/// HTTP Basic credentials (the compatibility mode), and the client address they came
/// from, which the sign-in limits count.
#[derive(Debug, Clone)]
pub struct Basic {
    pub user: String,
    pub password: String,
    pub address: String,
}

/// A request the gate let through: who asks, and within what.
pub struct Admitted {
    pub caller: Caller,
    pub request: FhirRequest,
    pub access: Access,
}

/// The gate of one server (or of `token explain`). Cheap to clone.
#[derive(Clone)]
pub struct Gate {
    verifier: TokenVerifier,
    plugins: Arc<PluginHost>,
    store: Store,
    base_url: String,
    clock_skew_secs: i64,
    require_basic: bool,
    rights: Arc<Mutex<RightsCache>>,
    /// The revisions of rights and revocations, as the caches below rely on them.
    freshness: Arc<Freshness>,
    /// This server's own tokens, verified (a remote issuer's have their own caches).
    verified: Arc<VerifiedTokens>,
}

/// The rights of the accounts behind tokens (or that there is no account), as of one
/// `rights_revision`: every change of roles, policies or accounts moves the revision, and
/// the next request reads the rights again.
#[derive(Default)]
struct RightsCache {
    revision: i64,
    of: HashMap<String, Option<Arc<UserRights>>>,
}

/// Accounts whose rights are kept between requests; past that the cache starts over.
const RIGHTS_CACHED: usize = 10_000;

/// What a [`Gate`] is built from.
pub struct GateSettings {
    /// The FHIR base URL: the audience the audience-rule plugins look for.
    pub base_url: String,
    /// Leeway for `exp` and `nbf`.
    pub clock_skew_secs: i64,
    /// `fhir.require_basic_auth`: Basic credentials of the token's user are also required.
    pub require_basic: bool,
}

impl Gate {
    pub fn new(
        verifier: TokenVerifier,
        plugins: Arc<PluginHost>,
        store: Store,
        settings: GateSettings,
    ) -> Gate {
        Gate {
            verifier,
            plugins,
            base_url: settings.base_url,
            clock_skew_secs: settings.clock_skew_secs,
            require_basic: settings.require_basic,
            rights: Arc::default(),
            freshness: Arc::new(Freshness::new(store.clone())),
            verified: Arc::default(),
            store,
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Steps 1 to 4 for one request: the token, Basic when required, the audience, the
    /// scope-policy decision.
    pub async fn admit(
        &self,
        token: &str,
        basic: Option<Basic>,
        request: FhirRequest,
    ) -> Result<Admitted, Refusal> {
        let caller = self.admit_caller(token, basic).await?;
        let access = caller.decide(&request)?;
        Ok(Admitted {
            caller,
            request,
            access,
        })
    }

    /// Steps 1 to 3: the caller a token makes, before any scope-policy decision. For the
    /// routes whose handler asks the scope policy itself ([`Route::decided_by_handler`]).
    pub async fn admit_caller(&self, token: &str, basic: Option<Basic>) -> Result<Caller, Refusal> {
        let verified = self.verify(token).await?;
        if self.require_basic {
            self.check_basic(basic, &verified.claims, token).await?;
        }
        self.accept_audience(&verified.claims)?;
        self.caller(&verified).await
    }

    /// Step 1: the token is genuine, current and not revoked. This server's own tokens are
    /// verified once and kept until they expire or a revocation anywhere moves the
    /// revocation revision ([`crate::freshness`]).
    pub async fn verify(&self, token: &str) -> Result<Verified, Refusal> {
        let TokenVerifier::Local(auth) = &self.verifier else {
            return self.verify_uncached(token).await;
        };
        let revocations = self
            .freshness
            .current()
            .await
            .map_err(store_failed)?
            .revocations;
        let key = token_key(token);
        if let Some(known) = self.verified.get(&key, revocations)
            && check_times(&known.claims, auth.now(), self.clock_skew_secs).is_ok()
        {
            return Ok((*known).clone());
        }
        let verified = self.verify_uncached(token).await?;
        self.verified
            .insert(key, revocations, Arc::new(verified.clone()), auth.now());
        Ok(verified)
    }

    async fn verify_uncached(&self, token: &str) -> Result<Verified, Refusal> {
        self.verifier
            .verify(token, self.clock_skew_secs)
            .await
            .map_err(|e| match e {
                TokenError::Unavailable(_) => Refusal::Unavailable(e.to_string()),
                other => Refusal::invalid_token(other.to_string()),
            })
    }

    /// Step 3: the audience-rule plugins accept the token's audiences for this server.
    pub fn accept_audience(&self, claims: &AccessClaims) -> Result<(), Refusal> {
        self.plugins
            .accept_audience(&claims.aud.0, &self.base_url)
            .map_err(|denial| Refusal::invalid_token(denial.to_string()))
    }

    /// The caller a verified token makes, for step 4 and for Bundle entries: its claims,
    /// with the current rights of the account behind it.
    pub async fn caller(&self, verified: &Verified) -> Result<Caller, Refusal> {
        let user = self.current_rights(verified).await?;
        let mut claims = plugin_claims(&verified.claims, &verified.raw_json);
        claims.user = user.map(|u| (*u).clone());
        Ok(Caller {
            claims,
            plugins: self.plugins.clone(),
            base_url: self.base_url.clone(),
        })
    }

    /// The rights of the token's account as they are now (the rights revision as
    /// [`Freshness`] knows it; the rights themselves when it moved). A backend service's
    /// token has none. A remote issuer's user is this server's account of the same user
    /// name ([`Verified::username`], else its `sub`); one this server does not know has
    /// the rights of an account without role or policy: nothing, or its own records for
    /// a Patient fhirUser.
    async fn current_rights(
        &self,
        verified: &Verified,
    ) -> Result<Option<Arc<UserRights>>, Refusal> {
        let claims = &verified.claims;
        if claims.sub == claims.client_id {
            return Ok(None);
        }
        let remote = self.verifier.is_remote();
        let (key, remote_name) = if remote {
            let name = verified.username.as_deref().unwrap_or(&claims.sub);
            let fhir_user = claims.fhir_user.as_deref().unwrap_or_default();
            (format!("{name}\n{fhir_user}"), Some(name))
        } else {
            (claims.sub.clone(), None)
        };
        let revision = self.freshness.current().await.map_err(store_failed)?.rights;
        {
            let cache = self.rights.lock().unwrap_or_else(PoisonError::into_inner);
            if cache.revision == revision
                && let Some(known) = cache.of.get(&key)
            {
                return Ok(known.clone());
            }
        }
        let rights = match remote_name {
            Some(name) => Some(
                self.remote_rights(name, claims.fhir_user.as_deref())
                    .await?,
            ),
            None => match self.store.rights_of(&claims.sub).await {
                Ok(rights) => Some(rights),
                Err(crate::store::StoreError::NotFound(_)) => None,
                Err(e) => return Err(store_failed(e)),
            },
        };
        let rights = rights.map(|r| Arc::new(crate::policy::plugin_rights(&r)));
        let mut cache = self.rights.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.revision != revision || cache.of.len() >= RIGHTS_CACHED {
            cache.of.clear();
            cache.revision = revision;
        }
        cache.of.insert(key, rights.clone());
        Ok(rights)
    }

    /// The rights of a remote issuer's user `name`: those of this server's account of that
    /// name, else those of an account with the role `patient` for a Patient `fhir_user`
    /// (`Patient/X`, or a URL ending so), and with no role otherwise.
    async fn remote_rights(&self, name: &str, fhir_user: Option<&str>) -> Result<Rights, Refusal> {
        if let Some(account) = self.store.find_user(name).await.map_err(store_failed)? {
            return self
                .store
                .rights_of(&account.id)
                .await
                .map_err(store_failed);
        }
        let patient = fhir_user
            .and_then(|f| f.rsplit_once("Patient/"))
            .map(|(before, id)| (before.is_empty() || before.ends_with('/'), id))
            .filter(|(whole, id)| *whole && !id.is_empty() && !id.contains('/'))
            .map(|(_, id)| format!("Patient/{id}"));
        let roles = match patient {
            Some(_) => vec![crate::rights::ROLE_PATIENT.to_string()],
            None => Vec::new(),
        };
        Ok(Rights::compute(&roles, patient.as_deref(), &[]))
    }

    /// For the admin API: a verified token that carries `scope`.
    pub async fn admin(&self, token: &str, scope: &str) -> Result<AccessClaims, Refusal> {
        let claims = self.verify(token).await?.claims;
        if claims.has_scope(scope) {
            Ok(claims)
        } else {
            Err(Refusal::Forbidden(format!(
                "the token of client {} lacks the scope {scope}",
                claims.client_id
            )))
        }
    }

    /// Step 5: a write under a restricted access keeps within it: the new content (create,
    /// update), and the current version (update, patch, delete), read under the access.
    pub async fn check_write(
        &self,
        admitted: &Admitted,
        content: Option<&serde_json::Value>,
        fhir: &Repository,
    ) -> Result<(), Refusal> {
        let request = &admitted.request;
        if admitted.access.is_unrestricted() || !is_write(request.interaction) {
            return Ok(());
        }
        let resource_type = request
            .resource_type
            .as_deref()
            .and_then(ResourceType::parse)
            .ok_or_else(|| {
                Refusal::Forbidden(
                    "a restricted token may write only to a known resource type".into(),
                )
            })?;
        write_allowed(
            request.interaction,
            resource_type,
            request.id.as_deref(),
            content,
            &admitted.access,
        )
        .map_err(Refusal::Forbidden)?;
        let Some(id) = request.id.as_deref() else {
            return Ok(());
        };
        if request.interaction == Interaction::Create {
            return Ok(());
        }
        // Not read_with: under `fhir.hidden_as = "not-found"` that answers NotFound for a
        // hidden resource, which must not let the write through.
        match fhir
            .read_visible(None, resource_type, id, &admitted.access)
            .await
        {
            Ok(Ok(_)) | Err(FhirError::NotFound(_)) | Err(FhirError::Gone(_)) => Ok(()),
            Ok(Err(hidden)) => Err(Refusal::Forbidden(hidden.0)),
            Err(other) => Err(other.into()),
        }
    }

    /// Step 2, the compatibility mode (`fhir.require_basic_auth`): the Basic credentials
    /// are those of an account of this server (`hestia user add`, also on a FHIR server
    /// whose issuer is remote: it has no other users), and that account is the token's
    /// user: its id or username is the token's `sub`, or, with a remote issuer, its
    /// username is the one the issuer's introspection answer names for the token (RFC 7662
    /// `username`; cached).
    ///
    /// The token's user is found first, without any password, and every check counts as a
    /// sign-in attempt of that account and of the client's address, under the login page's
    /// limits. Credentials of another account cost the same argon2id work and get the same
    /// answer as a wrong password, without that account's password being checked: the
    /// answer tells neither whether a password was right nor whether a username exists.
    pub async fn check_basic(
        &self,
        basic: Option<Basic>,
        claims: &AccessClaims,
        token: &str,
    ) -> Result<(), Refusal> {
        let Some(basic) = basic else {
            return Err(Refusal::invalid_request(
                "this server also requires HTTP Basic credentials of the token's user (fhir.require_basic_auth = true); send the token as access_token in the query",
            ));
        };
        let (account, whose) = self.token_user(claims, token).await?;
        let attempt = signin::attempt(
            &self.store,
            &account,
            &basic.password,
            &basic.address,
            basic.user == account,
            crate::store::now_secs(),
        )
        .await
        .map_err(store_failed)?;
        match attempt {
            Attempt::SignedIn(_) => Ok(()),
            Attempt::Paused(pause) => Err(Refusal::Throttled(format!(
                "{} (fhir.require_basic_auth = true: Basic credentials count as sign-ins)",
                pause.describe("the token's user", &basic.address)
            ))),
            Attempt::Wrong { left } => Err(Refusal::invalid_token(format!(
                "the Basic credentials are not the username and password of the token's user{whose} ({left} of {} attempts left before the token's user is paused for {} minutes)",
                signin::MAX_FAILURES_PER_USER,
                signin::LOGIN_WINDOW / 60
            ))),
        }
    }

    /// The username of the token's user, found without any password: this server's
    /// account whose id is `sub` (or `sub` itself), or the username the remote issuer's
    /// introspection names; and a note for the refusal on whose accounts Basic names.
    async fn token_user(
        &self,
        claims: &AccessClaims,
        token: &str,
    ) -> Result<(String, &'static str), Refusal> {
        match &self.verifier {
            TokenVerifier::Local(_) => {
                let by_id = self
                    .store
                    .get_user(&claims.sub)
                    .await
                    .map_err(store_failed)?;
                Ok((by_id.map_or_else(|| claims.sub.clone(), |u| u.username), ""))
            }
            TokenVerifier::Remote(remote) => match remote.introspected_username(token).await {
                Ok(Some(username)) => Ok((
                    username,
                    " (Basic users are this FHIR server's own accounts, made with `hestia user add` on it, not the issuer's)",
                )),
                Ok(None) => Err(Refusal::invalid_token(format!(
                    "no Basic user can match the token: issuer {} names no username for it",
                    remote.issuer()
                ))),
                Err(e) => Err(Refusal::invalid_token(format!(
                    "no Basic user can match the token: the issuer's introspection cannot name its user: {e}"
                ))),
            },
        }
    }
}

fn is_write(interaction: Interaction) -> bool {
    matches!(
        interaction,
        Interaction::Create | Interaction::Update | Interaction::Patch | Interaction::Delete
    )
}

/// The caller of an authorized request: what Bundle entries and reaches into other types
/// are authorized against.
#[derive(Clone)]
pub struct Caller {
    pub claims: Claims,
    pub plugins: Arc<PluginHost>,
    pub base_url: String,
}

impl Caller {
    /// The plugins' decision on one request of this caller, as an [`Access`] or a 403.
    pub fn decide(&self, request: &FhirRequest) -> Result<Access, FhirError> {
        match self.plugins.authorize(request, &self.claims) {
            Decision::Allow => Ok(Access::Unrestricted),
            Decision::AllowWithin(constraints) => constraints
                .into_iter()
                .map(access_constraint)
                .collect::<Result<Vec<_>, _>>()
                .map(Access::Within),
            Decision::Deny(denial) => Err(FhirError::Forbidden(denial.to_string())),
        }
    }

    /// What a search of `resource_type` would be allowed.
    pub fn search_access(&self, resource_type: ResourceType) -> Result<Access, FhirError> {
        self.decide(&self.request(Interaction::SearchType, resource_type))
    }

    /// What a read of a resource of `resource_type` (any id) would be allowed.
    pub fn read_access(&self, resource_type: ResourceType) -> Result<Access, FhirError> {
        self.decide(&self.request(Interaction::Read, resource_type))
    }

    /// What a create, or an update of any id, of a resource of `resource_type` would be
    /// allowed (`interaction`: [`Interaction::Create`] or [`Interaction::Update`]).
    pub fn write_access(
        &self,
        interaction: Interaction,
        resource_type: ResourceType,
    ) -> Result<Access, FhirError> {
        self.decide(&self.request(interaction, resource_type))
    }

    fn request(&self, interaction: Interaction, resource_type: ResourceType) -> FhirRequest {
        FhirRequest {
            interaction,
            resource_type: Some(resource_type.to_string()),
            id: None,
            operation: None,
            parameters: Vec::new(),
            body_json: None,
            base_url: self.base_url.clone(),
        }
    }

    /// How far a request of this caller may reach into resources of `resource_type`
    /// besides the ones it names: a search of the type for chain targets, `_has` sources
    /// and `_revinclude`; for `_include` (following a reference) a read, or else a search
    /// (`Type?_id=` would show the resource just the same).
    pub fn type_access(&self, resource_type: ResourceType, via: Via) -> Result<Access, FhirError> {
        match via {
            Via::Search => self.search_access(resource_type),
            Via::Reference => match self.read_access(resource_type) {
                Err(FhirError::Forbidden(_)) => self.search_access(resource_type),
                read => read,
            },
        }
    }

    /// The authorization of one Bundle entry, as the same request on its own would get it.
    pub fn entry_access(
        &self,
        entry: &crate::fhir::bundle::EntryRequest,
    ) -> Result<Access, FhirError> {
        let path = entry.url.split('?').next().unwrap_or("");
        let mut request = classify(entry.method.as_str(), path, &entry.query, &self.base_url);
        if request.interaction == Interaction::Batch {
            request.interaction = Interaction::Transaction;
        }
        let access = self
            .decide(&request)
            .map_err(|e| FhirError::Forbidden(format!("entry {}: {e}", entry.index)))?;
        if access.is_unrestricted() || !is_write(request.interaction) {
            // Reads, vreads and searches run under the access inside the store query, as
            // on their own (`Repository::run_entry`).
            return Ok(access);
        }
        let refuse = |why: String| {
            FhirError::Forbidden(format!(
                "entry {} ({} {}): {why}",
                entry.index,
                entry.method.as_str(),
                entry.url
            ))
        };
        let Some(ty) = entry.resource_type else {
            return Err(refuse("no resource type".into()));
        };
        // The new content is checked here; the current version of an update, patch or
        // delete inside the Bundle's transaction (`Repository::update`, `patch` and `delete` lock and check it).
        let resource = entry.resource.clone().map(serde_json::Value::Object);
        write_allowed(
            request.interaction,
            ty,
            entry.id.as_deref(),
            resource.as_ref(),
            &access,
        )
        .map_err(refuse)?;
        Ok(access)
    }
}

fn access_constraint(constraint: Constraint) -> Result<AccessConstraint, FhirError> {
    match constraint {
        Constraint::PatientCompartment(id) => Ok(AccessConstraint::PatientCompartment(id)),
        Constraint::Search(s) => ResourceType::parse(&s.resource_type)
            .map(|resource_type| AccessConstraint::Search {
                resource_type,
                params: s.parameters,
            })
            .ok_or_else(|| {
                FhirError::Forbidden(format!(
                    "a plugin constrained access to the unknown resource type {:?}; refusing",
                    s.resource_type
                ))
            }),
    }
}

fn plugin_claims(c: &AccessClaims, raw: &str) -> Claims {
    Claims {
        issuer: c.iss.clone(),
        subject: c.sub.clone(),
        client_id: c.client_id.clone(),
        audiences: c.aud.0.clone(),
        scopes: c.scopes(),
        fhir_user: c.fhir_user.clone(),
        patient: c.patient.clone(),
        expires_at: c.exp.max(0) as u64,
        raw_json: raw.to_string(),
        user: None,
    }
}

/// A route of the FHIR API: its template below the base, as the router declares it
/// (`/{type}/{id}`), and the values of its parameters.
#[derive(Debug, Clone, Copy, Default)]
pub struct Route<'a> {
    pub template: &'a str,
    pub resource_type: Option<&'a str>,
    pub id: Option<&'a str>,
    /// `{operation}` of `/{type}/{id}/{operation}`.
    pub operation: Option<&'a str>,
}

/// The routes of Bulk Data export and import (`http/bulk.rs`, `http/bulk_import.rs`).
/// Their handlers ask the scope policy themselves: an export kick-off is a search of every
/// type it exports (decided type by type, [`Caller::search_access`]), an import a create
/// and an update of every type it loads ([`Caller::write_access`]), and a job's status and
/// files belong to the client and subject whose token started it.
pub const BULK_ROUTES: &[&str] = &[
    "/$export",
    "/$import",
    "/Patient/$export",
    "/Group/{id}/$export",
    "/bulkstatus/{job}",
    "/bulkfiles/{job}/{file}",
];

impl Route<'_> {
    /// Routes admitted with a verified caller only (steps 1 to 3), whose handler takes
    /// the scope-policy decisions: [`BULK_ROUTES`].
    pub fn decided_by_handler(&self) -> bool {
        BULK_ROUTES.contains(&self.template)
    }

    /// Routes that answer without a token: the discovery documents.
    pub fn is_public(&self, method: &str) -> bool {
        method == "GET"
            && matches!(
                self.template,
                "/metadata" | "/.well-known/smart-configuration"
            )
    }
}

/// The interaction a request is, from its method and the route it matched.
pub fn classify_route(
    method: &str,
    route: &Route<'_>,
    query: &[(String, String)],
    base_url: &str,
) -> FhirRequest {
    use Interaction as I;
    let op = |s: &str| s.strip_prefix('$').map(str::to_string);
    let is_op = |s: Option<&str>| s.is_some_and(|s| s.starts_with('$'));
    let (t, i, o) = (route.resource_type, route.id, route.operation);
    let (interaction, resource_type, id, operation) = match (route.template, method) {
        ("/{type}", _) if is_op(t) => (I::Operation, None, None, t.and_then(op)),
        ("/{type}/{id}", _) if is_op(i) => (I::Operation, t, None, i.and_then(op)),
        ("/{type}/{id}/{operation}", _) if is_op(o) => (I::Operation, t, i, o.and_then(op)),
        ("/", "GET") | ("/_search", "POST") => (I::SearchSystem, None, None, None),
        ("/", "POST") => (I::Batch, None, None, None),
        ("/metadata", "GET") => (I::Capabilities, None, None, None),
        ("/_history", "GET") => (I::HistorySystem, None, None, None),
        ("/{type}", "GET") | ("/{type}/_search", "POST") => (I::SearchType, t, None, None),
        ("/{type}", "POST") => (I::Create, t, None, None),
        ("/{type}", "PUT") => (I::Update, t, None, None),
        ("/{type}", "PATCH") => (I::Patch, t, None, None),
        ("/{type}", "DELETE") => (I::Delete, t, None, None),
        ("/{type}/_history", "GET") => (I::HistoryType, t, None, None),
        ("/{type}/{id}", "GET") => (I::Read, t, i, None),
        ("/{type}/{id}", "PUT") => (I::Update, t, i, None),
        ("/{type}/{id}", "PATCH") => (I::Patch, t, i, None),
        ("/{type}/{id}", "DELETE") => (I::Delete, t, i, None),
        ("/{type}/{id}/_history", "GET") => (I::HistoryInstance, t, i, None),
        ("/{type}/{id}/_history/{vid}", "GET") => (I::Vread, t, i, None),
        // Anything else is refused by the handlers; authorize it as the most general read.
        (_, _) => match t {
            Some(t) => (I::SearchType, Some(t), None, None),
            None => (I::SearchSystem, None, None, None),
        },
    };
    FhirRequest {
        interaction,
        resource_type: resource_type.map(str::to_string),
        id: id.map(str::to_string),
        operation,
        parameters: query.to_vec(),
        body_json: None,
        base_url: base_url.to_string(),
    }
}

/// The interaction a request is, from its method and path below the FHIR base: the route
/// the path would match, classified by [`classify_route`]. For what no router matched
/// (Bundle entries, `token explain`).
pub fn classify(
    method: &str,
    path: &str,
    query: &[(String, String)],
    base_url: &str,
) -> FhirRequest {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let route = match segments.as_slice() {
        [] => Route {
            template: "/",
            ..Route::default()
        },
        [fixed @ ("metadata" | "_search" | "_history")] => Route {
            template: match *fixed {
                "metadata" => "/metadata",
                "_search" => "/_search",
                _ => "/_history",
            },
            ..Route::default()
        },
        [t] => Route {
            template: "/{type}",
            resource_type: Some(t),
            ..Route::default()
        },
        [t, fixed @ ("_search" | "_history")] => Route {
            template: if *fixed == "_search" {
                "/{type}/_search"
            } else {
                "/{type}/_history"
            },
            resource_type: Some(t),
            ..Route::default()
        },
        [t, i] => Route {
            template: "/{type}/{id}",
            resource_type: Some(t),
            id: Some(i),
            ..Route::default()
        },
        [t, i, "_history"] => Route {
            template: "/{type}/{id}/_history",
            resource_type: Some(t),
            id: Some(i),
            ..Route::default()
        },
        [t, i, "_history", _] => Route {
            template: "/{type}/{id}/_history/{vid}",
            resource_type: Some(t),
            id: Some(i),
            ..Route::default()
        },
        [t, i, o] => Route {
            template: "/{type}/{id}/{operation}",
            resource_type: Some(t),
            id: Some(i),
            operation: Some(o),
        },
        [t, ..] => Route {
            template: "",
            resource_type: Some(t),
            ..Route::default()
        },
    };
    classify_route(method, &route, query, base_url)
}

/// Whether a write may happen under `access`, judged on what is known before it runs:
/// the target type and id and, for create and update, the new content. Constraints a
/// write cannot be shown to satisfy refuse it (fail closed). Updates and deletes also
/// need the current version visible; [`Gate::check_write`] checks that against the store.
pub fn write_allowed(
    interaction: Interaction,
    resource_type: ResourceType,
    id: Option<&str>,
    resource: Option<&serde_json::Value>,
    access: &Access,
) -> Result<(), String> {
    let Access::Within(constraints) = access else {
        return Ok(());
    };
    for constraint in constraints {
        match constraint {
            AccessConstraint::Search {
                resource_type: t,
                params,
            } if *t == resource_type => {
                let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
                return Err(format!(
                    "writing {resource_type} under a scope restricted to {resource_type}?{} is not supported; such scopes are read-only here",
                    query.join("&")
                ));
            }
            AccessConstraint::Search { .. } => {}
            AccessConstraint::PatientCompartment(patient) => {
                within_compartment(interaction, resource_type, id, resource, patient)?;
            }
        }
    }
    Ok(())
}

/// A write that stays inside `patient`'s compartment.
fn within_compartment(
    interaction: Interaction,
    resource_type: ResourceType,
    id: Option<&str>,
    resource: Option<&serde_json::Value>,
    patient: &str,
) -> Result<(), String> {
    let ty = resource_type.as_str();
    if interaction == Interaction::Patch && ty != "Patient" {
        return Err(format!(
            "PATCH of {ty} under a patient-restricted scope is not supported (it could move the resource out of Patient/{patient}'s compartment); use PUT"
        ));
    }
    if ty == "Patient" {
        if id != Some(patient) {
            return Err(format!(
                "the token is restricted to Patient/{patient}; it cannot write other Patient resources"
            ));
        }
        return Ok(());
    }
    let compartment: Vec<&str> = resource_type
        .patient_compartment_params()
        .map(|p| p.rows_code())
        .collect();
    if compartment.is_empty() {
        return Err(format!(
            "{ty} is outside the patient compartment of Patient/{patient}"
        ));
    }
    let Some(resource) = resource else {
        return Ok(());
    };
    let rows = crate::fhir::search::extract(resource).map_err(|e| e.to_string())?;
    let inside = rows.references.iter().any(|r| {
        compartment.contains(&r.param)
            && r.target_type.map(|t| t.as_str()) == Some("Patient")
            && r.target_id.as_deref() == Some(patient)
    });
    if inside {
        Ok(())
    } else {
        Err(format!(
            "the {ty} does not refer to Patient/{patient} through any of {}: it would be outside the token's patient compartment",
            compartment.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(
        method: &str,
        path: &str,
        expected: (Interaction, Option<&str>, Option<&str>, Option<&str>),
    ) {
        let r = classify(method, path, &[], "https://x/fhir");
        let got = (
            r.interaction,
            r.resource_type.as_deref(),
            r.id.as_deref(),
            r.operation.as_deref(),
        );
        assert_eq!(got, expected, "{method} {path}");
    }

    #[test]
    fn paths_classify_as_their_routes() {
        use Interaction as I;
        check("GET", "/", (I::SearchSystem, None, None, None));
        check("POST", "/", (I::Batch, None, None, None));
        check("POST", "/_search", (I::SearchSystem, None, None, None));
        check("GET", "/metadata", (I::Capabilities, None, None, None));
        check("GET", "/_history", (I::HistorySystem, None, None, None));
        check(
            "GET",
            "/$export",
            (I::Operation, None, None, Some("export")),
        );
        check(
            "GET",
            "/Patient",
            (I::SearchType, Some("Patient"), None, None),
        );
        check("POST", "/Patient", (I::Create, Some("Patient"), None, None));
        check("PUT", "/Patient", (I::Update, Some("Patient"), None, None));
        check(
            "DELETE",
            "/Patient",
            (I::Delete, Some("Patient"), None, None),
        );
        check(
            "POST",
            "/Patient/_search",
            (I::SearchType, Some("Patient"), None, None),
        );
        check(
            "GET",
            "/Patient/_history",
            (I::HistoryType, Some("Patient"), None, None),
        );
        check(
            "GET",
            "/Patient/$export",
            (I::Operation, Some("Patient"), None, Some("export")),
        );
    }

    #[test]
    fn instance_paths_classify_as_their_routes() {
        use Interaction as I;
        check(
            "GET",
            "/Patient/p1",
            (I::Read, Some("Patient"), Some("p1"), None),
        );
        check(
            "PUT",
            "/Patient/p1",
            (I::Update, Some("Patient"), Some("p1"), None),
        );
        check(
            "PATCH",
            "/Patient/p1",
            (I::Patch, Some("Patient"), Some("p1"), None),
        );
        check(
            "DELETE",
            "/Patient/p1",
            (I::Delete, Some("Patient"), Some("p1"), None),
        );
        check(
            "GET",
            "/Patient/p1/_history",
            (I::HistoryInstance, Some("Patient"), Some("p1"), None),
        );
        check(
            "GET",
            "/Patient/p1/_history/2",
            (I::Vread, Some("Patient"), Some("p1"), None),
        );
        check(
            "GET",
            "/Patient/p1/$everything",
            (
                I::Operation,
                Some("Patient"),
                Some("p1"),
                Some("everything"),
            ),
        );
    }

    /// What no route serves is authorized as the most general read of its type.
    #[test]
    fn paths_no_route_serves_classify_as_a_search_of_their_type() {
        use Interaction as I;
        check(
            "GET",
            "/Patient/p1/nonsense",
            (I::SearchType, Some("Patient"), None, None),
        );
        check(
            "POST",
            "/Patient/p1",
            (I::SearchType, Some("Patient"), None, None),
        );
        check(
            "GET",
            "/Patient/p1/_history/2/x",
            (I::SearchType, Some("Patient"), None, None),
        );
    }
}
