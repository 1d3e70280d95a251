//! Host bindings generated from the WIT contract, one module per supported package version
//! (`v0_1_0` to `v0_4_0`), so that a plugin built against an older version keeps working beside
//! newer ones. A component's version is read from its `hestia:plugin/*@X` imports
//! ([`Version::of_component`]); [`Pre`] and [`Bound`] dispatch each call to that version's
//! bindings, which convert the plain types of [`super::types`] to their records and back.
//! Nothing outside `plugins/` ever sees a generated type.
//!
//! Adding a version: its folder in `wit/`, a module here (the [`contract!`] macro when its
//! records are those of 0.1.0, or of 0.1.0 plus the `user` field of 0.3.0; [`contract_common!`]
//! and its own `authorize` module when `authorize` takes other arguments, as 0.4.0's
//! resources; hand-written conversions otherwise), a variant of [`Version`], [`Pre`] and [`Bound`], and the `host`
//! functions it adds (the macro's `{ … }` argument).

use std::fmt;

use wasmtime::Store;
use wasmtime::component::{InstancePre, Linker};

use super::info::PluginKind;
use super::state::HostState;
use super::types as plain;
use crate::fhir::outcome::Issue;

/// A contract version this host binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    V0_1_0,
    V0_2_0,
    V0_3_0,
    V0_4_0,
}

impl Version {
    /// Every version the host binds, oldest first.
    pub const ALL: [Version; 4] = [
        Version::V0_1_0,
        Version::V0_2_0,
        Version::V0_3_0,
        Version::V0_4_0,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Version::V0_1_0 => "0.1.0",
            Version::V0_2_0 => "0.2.0",
            Version::V0_3_0 => "0.3.0",
            Version::V0_4_0 => "0.4.0",
        }
    }

    /// `0.1.0, 0.2.0, 0.3.0, 0.4.0`, for messages.
    pub fn supported() -> String {
        Version::ALL.map(Version::as_str).join(", ")
    }

    /// The contract version a component was built against, from the versions of the
    /// `hestia:plugin/…@X` interfaces it imports (every world imports `types`; a component
    /// that imports none of them yields `Ok(None)`, and each supported version is tried).
    /// An unknown version or a mix of versions is an error that names them.
    pub(crate) fn of_component(imports: &[String]) -> Result<Option<Version>, String> {
        let mut found: Vec<&str> = imports
            .iter()
            .filter_map(|i| i.strip_prefix("hestia:plugin/"))
            .filter_map(|i| i.split_once('@').map(|(_, v)| v))
            .collect();
        found.sort_unstable();
        found.dedup();
        match found[..] {
            [] => Ok(None),
            [one] => Version::ALL
                .into_iter()
                .find(|v| v.as_str() == one)
                .map(Some)
                .ok_or_else(|| {
                    format!(
                        "built against hestia:plugin@{one}, which this host does not support \
                         (supported: {})",
                        Version::supported()
                    )
                }),
            _ => Err(format!(
                "imports several versions of hestia:plugin ({}); a plugin is built against one",
                found.join(", ")
            )),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "hestia:plugin@{}", self.as_str())
    }
}

/// A plugin's verdict before the chain turns it into a [`plain::Decision`]: a denial
/// needs the plugin's name, which only the chain knows.
pub(crate) enum Verdict {
    Allow,
    AllowWithin(Vec<plain::Constraint>),
    Deny(String),
}

/// The bindings of one contract version whose records are those of 0.1.0: the common part
/// ([`contract_common!`]) and an `authorize` that lowers the request and the claims as
/// records ([`record_authorize!`]). With a trailing `user: user`, `claims` and
/// `token-request` also have 0.3.0's last field `user`, converted by `user_rights_ref` and
/// `user_rights`, which the calling module defines. The first argument is the name of that
/// module (paths in bindgen's `with` are absolute).
macro_rules! contract {
    ($module:ident, $path:literal, $scope_policy:literal, $audience_rule:literal, $resource_validator:literal,
     { $($host_since_0_1_0:tt)* } $(, user: $user:ident)?) => {
        contract_common!($module, $path, $scope_policy, $audience_rule, $resource_validator, {},
            { $($host_since_0_1_0)* } $(, user: $user)?);
        record_authorize!($($user)?);
    };
}

/// What every contract version's bindings share: the three worlds (sharing one `types` and
/// one `host` interface; the `{ … }` argument after the worlds is more options for the
/// scope-policy world's `bindgen!`, which generates them), the conversions, the per-world
/// pre-instantiated and instantiated exports, and the `host` interface: 0.1.0's `log` and
/// `config`, plus the functions in the last `{ … }` argument (what later versions add).
/// How `authorize` passes its arguments is the calling module's: it defines
/// `AuthorizeFunc` (what an instance keeps to call it), `authorize_func` and
/// `call_authorize`.
macro_rules! contract_common {
    ($module:ident, $path:literal, $scope_policy:literal, $audience_rule:literal, $resource_validator:literal,
     { $($scope_policy_options:tt)* }, { $($host_since_0_1_0:tt)* } $(, user: $user:ident)?) => {
        use wasmtime::Store;
        use wasmtime::component::{HasSelf, InstancePre, Linker};

        use $crate::plugins::bindings::Verdict;
        use $crate::plugins::info::PluginKind;
        use $crate::plugins::state::HostState;
        use $crate::plugins::types as plain;
        use $crate::fhir::outcome::{Issue, Severity};

        /// The scope-policy world; it also generates the shared `types` and `host`
        /// interfaces, which the other two worlds reuse so that there is one `Host` trait.
        pub(crate) mod scope_policy {
            wasmtime::component::bindgen!({
                path: $path,
                world: $scope_policy,
                $($scope_policy_options)*
            });
        }

        pub(crate) mod audience_rule {
            wasmtime::component::bindgen!({
                path: $path,
                world: $audience_rule,
                with: {
                    "hestia:plugin/types": crate::plugins::bindings::$module::scope_policy::hestia::plugin::types,
                    "hestia:plugin/host": crate::plugins::bindings::$module::scope_policy::hestia::plugin::host,
                },
            });
        }

        pub(crate) mod resource_validator {
            wasmtime::component::bindgen!({
                path: $path,
                world: $resource_validator,
                with: {
                    "hestia:plugin/types": crate::plugins::bindings::$module::scope_policy::hestia::plugin::types,
                    "hestia:plugin/host": crate::plugins::bindings::$module::scope_policy::hestia::plugin::host,
                },
            });
        }

        pub(crate) use scope_policy::hestia::plugin::{host, types as wit};

        impl wit::Host for HostState {}

        // What `authorize` passes, and how.
        use self::authorize::{AuthorizeFunc, authorize_func, call_authorize};

        /// `log` and `config`, which every version has, and what later versions add.
        impl host::Host for HostState {
            fn log(&mut self, l: wit::LogLevel, message: String) {
                self.log_line(level(l), &message);
            }

            fn config(&mut self) -> String {
                self.config_json()
            }

            $($host_since_0_1_0)*
        }

        fn level(l: wit::LogLevel) -> tracing::Level {
            match l {
                wit::LogLevel::Trace => tracing::Level::TRACE,
                wit::LogLevel::Debug => tracing::Level::DEBUG,
                wit::LogLevel::Info => tracing::Level::INFO,
                wit::LogLevel::Warn => tracing::Level::WARN,
                wit::LogLevel::Error => tracing::Level::ERROR,
            }
        }

        pub(crate) fn add_to_linker(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
            host::add_to_linker::<_, HasSelf<HostState>>(l, |s| s)?;
            wit::add_to_linker::<_, HasSelf<HostState>>(l, |s| s)
        }

        pub(crate) enum Pre {
            ScopePolicy(scope_policy::ScopePolicyPre<HostState>),
            AudienceRule(audience_rule::AudienceRulePre<HostState>),
            ResourceValidator(resource_validator::ResourceValidatorPre<HostState>),
        }

        impl Pre {
            /// Checks the exports' types against the world of `kind` in this version.
            pub(crate) fn new(
                kind: PluginKind,
                pre: InstancePre<HostState>,
            ) -> wasmtime::Result<Pre> {
                Ok(match kind {
                    PluginKind::ScopePolicy => {
                        Pre::ScopePolicy(scope_policy::ScopePolicyPre::new(pre)?)
                    }
                    PluginKind::AudienceRule => {
                        Pre::AudienceRule(audience_rule::AudienceRulePre::new(pre)?)
                    }
                    PluginKind::ResourceValidator => Pre::ResourceValidator(
                        resource_validator::ResourceValidatorPre::new(pre)?,
                    ),
                })
            }

            pub(crate) fn instantiate(
                &self,
                store: &mut Store<HostState>,
            ) -> wasmtime::Result<Bound> {
                Ok(match self {
                    Pre::ScopePolicy(pre) => {
                        let instance = pre.instance_pre().instantiate(&mut *store)?;
                        let bound = scope_policy::ScopePolicy::new(&mut *store, &instance)?;
                        let authorize = authorize_func(&instance, store)?;
                        Bound::ScopePolicy(bound, authorize)
                    }
                    Pre::AudienceRule(pre) => Bound::AudienceRule(pre.instantiate(store)?),
                    Pre::ResourceValidator(pre) => {
                        Bound::ResourceValidator(pre.instantiate(store)?)
                    }
                })
            }
        }

        /// One instance's exports. Each call answers `Ok(None)` when the instance is of
        /// another world.
        pub(crate) enum Bound {
            /// With what `call_authorize` needs besides the generated exports.
            ScopePolicy(scope_policy::ScopePolicy, AuthorizeFunc),
            AudienceRule(audience_rule::AudienceRule),
            ResourceValidator(resource_validator::ResourceValidator),
        }

        impl Bound {
            pub(crate) fn grant(
                &self,
                store: &mut Store<HostState>,
                req: &plain::TokenRequest,
            ) -> wasmtime::Result<Option<plain::Grant>> {
                let Bound::ScopePolicy(p, _) = self else {
                    return Ok(None);
                };
                let g = p.call_grant(store, &token_request(req))?;
                Ok(Some(plain::Grant {
                    granted: g.granted,
                    refused: g.refused,
                }))
            }

            pub(crate) fn authorize(
                &self,
                store: &mut Store<HostState>,
                req: &plain::FhirRequest,
                claims: &plain::Claims,
            ) -> wasmtime::Result<Option<Verdict>> {
                let Bound::ScopePolicy(p, authorize) = self else {
                    return Ok(None);
                };
                let d = call_authorize(p, authorize, store, req, claims)?;
                Ok(Some(match d {
                    wit::Decision::Allow => Verdict::Allow,
                    wit::Decision::AllowWithin(c) => {
                        Verdict::AllowWithin(c.into_iter().map(constraint).collect())
                    }
                    wit::Decision::Deny(reason) => Verdict::Deny(reason),
                }))
            }

            pub(crate) fn resolve(
                &self,
                store: &mut Store<HostState>,
                req: &plain::AudienceRequest,
            ) -> wasmtime::Result<Option<Result<Vec<String>, String>>> {
                let Bound::AudienceRule(p) = self else {
                    return Ok(None);
                };
                let req = wit::AudienceRequest {
                    client_id: req.client_id.clone(),
                    requested: req.requested.clone(),
                    known: req.known.clone(),
                };
                p.call_resolve(store, &req).map(Some)
            }

            pub(crate) fn accept(
                &self,
                store: &mut Store<HostState>,
                audiences: &[String],
                base_url: &str,
            ) -> wasmtime::Result<Option<Result<(), String>>> {
                let Bound::AudienceRule(p) = self else {
                    return Ok(None);
                };
                p.call_accept(store, audiences, base_url).map(Some)
            }

            pub(crate) fn validate(
                &self,
                store: &mut Store<HostState>,
                resource_type: &str,
                resource_json: &str,
            ) -> wasmtime::Result<Option<Vec<Issue>>> {
                let Bound::ResourceValidator(p) = self else {
                    return Ok(None);
                };
                let issues = p.call_validate(store, resource_type, resource_json)?;
                Ok(Some(issues.into_iter().map(issue).collect()))
            }
        }

        fn interaction(i: plain::Interaction) -> wit::Interaction {
            use plain::Interaction as P;
            match i {
                P::Read => wit::Interaction::Read,
                P::Vread => wit::Interaction::Vread,
                P::Update => wit::Interaction::Update,
                P::Patch => wit::Interaction::Patch,
                P::Delete => wit::Interaction::Delete,
                P::Create => wit::Interaction::Create,
                P::HistoryInstance => wit::Interaction::HistoryInstance,
                P::HistoryType => wit::Interaction::HistoryType,
                P::HistorySystem => wit::Interaction::HistorySystem,
                P::SearchType => wit::Interaction::SearchType,
                P::SearchSystem => wit::Interaction::SearchSystem,
                P::Capabilities => wit::Interaction::Capabilities,
                P::Batch => wit::Interaction::Batch,
                P::Transaction => wit::Interaction::Transaction,
                P::Operation => wit::Interaction::Operation,
            }
        }

        fn token_request(r: &plain::TokenRequest) -> wit::TokenRequest {
            wit::TokenRequest {
                client_id: r.client_id.clone(),
                grant_type: r.grant_type.clone(),
                requested: r.requested.clone(),
                registered: r.registered.clone(),
                subject: r.subject.clone(),
                fhir_user: r.fhir_user.clone(),
                patient: r.patient.clone(),
                audiences: r.audiences.clone(),
                $($user: r.user.as_ref().map(user_rights),)?
            }
        }

        fn constraint(c: wit::Constraint) -> plain::Constraint {
            match c {
                wit::Constraint::PatientCompartment(p) => plain::Constraint::PatientCompartment(p),
                wit::Constraint::Search(s) => plain::Constraint::Search(plain::SearchConstraint {
                    resource_type: s.resource_type,
                    parameters: s.parameters,
                }),
            }
        }

        fn issue(i: wit::Issue) -> Issue {
            Issue {
                severity: match i.severity {
                    wit::Severity::Fatal => Severity::Fatal,
                    wit::Severity::Error => Severity::Error,
                    wit::Severity::Warning => Severity::Warning,
                    wit::Severity::Information => Severity::Information,
                },
                code: i.code,
                diagnostics: i.diagnostics,
                expression: i.expression.into_iter().collect(),
            }
        }
    };
}

/// `authorize` for versions whose `fhir-request` and `claims` are records (0.1.0 to 0.3.0):
/// typed once per instance for records borrowed from the plain types, so that a call lowers
/// them straight into the guest's memory. With `user`, `claims` has 0.3.0's `user` field.
macro_rules! record_authorize {
    ($($user:ident)?) => {
        mod authorize {
            use wasmtime::component::{ComponentType, Instance, Lower, TypedFunc};

            // The contract's generated types, conversions and `user` helpers.
            use super::*;

            /// `authorize` typed for borrowed records. `TypedFunc` is covariant in its
            /// parameters (wasmtime copies them into the guest during the call and keeps
            /// nothing), so the `'static` one takes records borrowed for any lifetime.
            pub(crate) type AuthorizeFunc = TypedFunc<Authorize<'static>, (wit::Decision,)>;

            /// Type-checked once per instance: the check walks both records' field names,
            /// which would cost more than a warm call's lowering.
            pub(crate) fn authorize_func(
                instance: &Instance,
                store: &mut Store<HostState>,
            ) -> wasmtime::Result<AuthorizeFunc> {
                instance
                    .get_func(&mut *store, "authorize")
                    .ok_or_else(|| wasmtime::Error::msg("no `authorize` export"))?
                    .typed::<Authorize<'static>, (wit::Decision,)>(&*store)
            }

            pub(crate) fn call_authorize(
                _: &scope_policy::ScopePolicy,
                authorize: &AuthorizeFunc,
                store: &mut Store<HostState>,
                req: &plain::FhirRequest,
                claims: &plain::Claims,
            ) -> wasmtime::Result<wit::Decision> {
                let (d,) = authorize.call(&mut *store, (fhir_request(req), self::claims(claims)))?;
                Ok(d)
            }

            /// The parameters of `authorize`, borrowed from the plain types.
            pub(crate) type Authorize<'a> = (FhirRequestRef<'a>, ClaimsRef<'a>);

            /// `claims` borrowed from the plain type: wasmtime lowers it straight into the
            /// guest's memory, where the generated record (which owns its strings) would first
            /// copy every string of it. `authorize` runs on every FHIR request.
            #[derive(ComponentType, Lower)]
            #[component(record)]
            pub(crate) struct ClaimsRef<'a> {
                issuer: &'a str,
                subject: &'a str,
                #[component(name = "client-id")]
                client_id: &'a str,
                audiences: &'a [String],
                scopes: &'a [String],
                #[component(name = "fhir-user")]
                fhir_user: Option<&'a str>,
                patient: Option<&'a str>,
                #[component(name = "expires-at")]
                expires_at: u64,
                #[component(name = "raw-json")]
                raw_json: &'a str,
                $($user: Option<UserRightsRef<'a>>,)?
            }

            /// `fhir-request` borrowed from the plain type, as [`ClaimsRef`].
            #[derive(ComponentType, Lower)]
            #[component(record)]
            pub(crate) struct FhirRequestRef<'a> {
                interaction: wit::Interaction,
                #[component(name = "resource-type")]
                resource_type: Option<&'a str>,
                id: Option<&'a str>,
                operation: Option<&'a str>,
                parameters: &'a [(String, String)],
                #[component(name = "body-json")]
                body_json: Option<&'a str>,
                #[component(name = "base-url")]
                base_url: &'a str,
            }

            fn claims(c: &plain::Claims) -> ClaimsRef<'_> {
                ClaimsRef {
                    issuer: &c.issuer,
                    subject: &c.subject,
                    client_id: &c.client_id,
                    audiences: &c.audiences,
                    scopes: &c.scopes,
                    fhir_user: c.fhir_user.as_deref(),
                    patient: c.patient.as_deref(),
                    expires_at: c.expires_at,
                    raw_json: &c.raw_json,
                    $($user: c.user.as_ref().map(user_rights_ref),)?
                }
            }

            fn fhir_request(r: &plain::FhirRequest) -> FhirRequestRef<'_> {
                FhirRequestRef {
                    interaction: interaction(r.interaction),
                    resource_type: r.resource_type.as_deref(),
                    id: r.id.as_deref(),
                    operation: r.operation.as_deref(),
                    parameters: &r.parameters,
                    body_json: r.body_json.as_deref(),
                    base_url: &r.base_url,
                }
            }
        }
    };
}

/// `user_rights`: the owned `user-rights` record of a contract version (0.3.0 and later).
macro_rules! user_rights {
    () => {
        fn user_rights(u: &plain::UserRights) -> wit::UserRights {
            wit::UserRights {
                roles: u.roles.clone(),
                grants: u
                    .grants
                    .iter()
                    .map(|g| wit::UserGrant {
                        scope: g.scope.clone(),
                        patient_compartment: g.patient_compartment.clone(),
                    })
                    .collect(),
            }
        }
    };
}

pub(crate) mod v0_1_0 {
    //! `hestia:plugin@0.1.0`: `host` has `log` and `config`.
    contract!(
        v0_1_0,
        "../wit/v0.1.0",
        "hestia:plugin/scope-policy@0.1.0",
        "hestia:plugin/audience-rule@0.1.0",
        "hestia:plugin/resource-validator@0.1.0",
        {}
    );
}

pub(crate) mod v0_2_0 {
    //! `hestia:plugin@0.2.0`: 0.1.0 plus `host.now()`.
    contract!(
        v0_2_0,
        "../wit/v0.2.0",
        "hestia:plugin/scope-policy@0.2.0",
        "hestia:plugin/audience-rule@0.2.0",
        "hestia:plugin/resource-validator@0.2.0",
        {
            fn now(&mut self) -> u64 {
                HostState::now()
            }
        }
    );
}

pub(crate) mod v0_3_0 {
    //! `hestia:plugin@0.3.0`: 0.2.0 plus `user` (the account's roles and grants) in `claims`
    //! and `token-request`.
    contract!(
        v0_3_0,
        "../wit/v0.3.0",
        "hestia:plugin/scope-policy@0.3.0",
        "hestia:plugin/audience-rule@0.3.0",
        "hestia:plugin/resource-validator@0.3.0",
        {
            fn now(&mut self) -> u64 {
                HostState::now()
            }
        },
        user: user
    );

    use wasmtime::component::{ComponentType, Lower};

    /// `user-rights` borrowed from the plain type, lowered as [`ClaimsRef`] is.
    #[derive(ComponentType, Lower)]
    #[component(record)]
    pub(crate) struct UserRightsRef<'a> {
        roles: &'a [String],
        grants: Vec<UserGrantRef<'a>>,
    }

    #[derive(ComponentType, Lower)]
    #[component(record)]
    pub(crate) struct UserGrantRef<'a> {
        scope: &'a str,
        #[component(name = "patient-compartment")]
        patient_compartment: Option<&'a str>,
    }

    fn user_rights_ref(u: &plain::UserRights) -> UserRightsRef<'_> {
        UserRightsRef {
            roles: &u.roles,
            grants: u
                .grants
                .iter()
                .map(|g| UserGrantRef {
                    scope: &g.scope,
                    patient_compartment: g.patient_compartment.as_deref(),
                })
                .collect(),
        }
    }

    user_rights!();
}

pub(crate) mod v0_4_0 {
    //! `hestia:plugin@0.4.0`: 0.3.0 with `fhir-request` and `claims` as resources that
    //! `authorize` borrows. The host keeps the call's request and claims in the store
    //! (`HostState::authorizing`) and answers each method from them, so a guest lifts only
    //! the fields it asks for.
    contract_common!(
        v0_4_0,
        "../wit/v0.4.0",
        "hestia:plugin/scope-policy@0.4.0",
        "hestia:plugin/audience-rule@0.4.0",
        "hestia:plugin/resource-validator@0.4.0",
        { imports: { "hestia:plugin/types": trappable }, },
        {
            fn now(&mut self) -> u64 {
                HostState::now()
            }
        },
        user: user
    );
    user_rights!();

    use wasmtime::component::Resource;

    mod authorize {
        use wasmtime::component::{Instance, Resource};

        use super::*;

        /// Nothing besides the generated export: it takes two handles.
        pub(crate) type AuthorizeFunc = ();

        pub(crate) fn authorize_func(
            _: &Instance,
            _: &mut Store<HostState>,
        ) -> wasmtime::Result<AuthorizeFunc> {
            Ok(())
        }

        /// Calls `authorize` with borrowed handles to the request and claims, which the
        /// store holds for the length of the call. Both handles have the representation 0:
        /// there is one of each per call.
        pub(crate) fn call_authorize(
            p: &scope_policy::ScopePolicy,
            _: &AuthorizeFunc,
            store: &mut Store<HostState>,
            req: &plain::FhirRequest,
            claims: &plain::Claims,
        ) -> wasmtime::Result<wit::Decision> {
            store
                .data_mut()
                .set_authorizing(Some((req.clone(), claims.clone())));
            let decision = p.call_authorize(
                &mut *store,
                Resource::new_borrow(0),
                Resource::new_borrow(0),
            );
            store.data_mut().set_authorizing(None);
            decision
        }
    }

    impl wit::HostFhirRequest for HostState {
        fn interaction(
            &mut self,
            _: Resource<wit::FhirRequest>,
        ) -> wasmtime::Result<wit::Interaction> {
            Ok(interaction(self.authorizing()?.0.interaction))
        }

        fn resource_type(
            &mut self,
            _: Resource<wit::FhirRequest>,
        ) -> wasmtime::Result<Option<String>> {
            Ok(self.authorizing()?.0.resource_type.clone())
        }

        fn id(&mut self, _: Resource<wit::FhirRequest>) -> wasmtime::Result<Option<String>> {
            Ok(self.authorizing()?.0.id.clone())
        }

        fn operation(&mut self, _: Resource<wit::FhirRequest>) -> wasmtime::Result<Option<String>> {
            Ok(self.authorizing()?.0.operation.clone())
        }

        fn parameters(
            &mut self,
            _: Resource<wit::FhirRequest>,
        ) -> wasmtime::Result<Vec<(String, String)>> {
            Ok(self.authorizing()?.0.parameters.clone())
        }

        fn body_json(&mut self, _: Resource<wit::FhirRequest>) -> wasmtime::Result<Option<String>> {
            Ok(self.authorizing()?.0.body_json.clone())
        }

        fn base_url(&mut self, _: Resource<wit::FhirRequest>) -> wasmtime::Result<String> {
            Ok(self.authorizing()?.0.base_url.clone())
        }

        /// The host owns the request; a borrow's end frees nothing.
        fn drop(&mut self, _: Resource<wit::FhirRequest>) -> wasmtime::Result<()> {
            Ok(())
        }
    }

    impl wit::HostClaims for HostState {
        fn issuer(&mut self, _: Resource<wit::Claims>) -> wasmtime::Result<String> {
            Ok(self.authorizing()?.1.issuer.clone())
        }

        fn subject(&mut self, _: Resource<wit::Claims>) -> wasmtime::Result<String> {
            Ok(self.authorizing()?.1.subject.clone())
        }

        fn client_id(&mut self, _: Resource<wit::Claims>) -> wasmtime::Result<String> {
            Ok(self.authorizing()?.1.client_id.clone())
        }

        fn audiences(&mut self, _: Resource<wit::Claims>) -> wasmtime::Result<Vec<String>> {
            Ok(self.authorizing()?.1.audiences.clone())
        }

        fn scopes(&mut self, _: Resource<wit::Claims>) -> wasmtime::Result<Vec<String>> {
            Ok(self.authorizing()?.1.scopes.clone())
        }

        fn fhir_user(&mut self, _: Resource<wit::Claims>) -> wasmtime::Result<Option<String>> {
            Ok(self.authorizing()?.1.fhir_user.clone())
        }

        fn patient(&mut self, _: Resource<wit::Claims>) -> wasmtime::Result<Option<String>> {
            Ok(self.authorizing()?.1.patient.clone())
        }

        fn expires_at(&mut self, _: Resource<wit::Claims>) -> wasmtime::Result<u64> {
            Ok(self.authorizing()?.1.expires_at)
        }

        fn raw_json(&mut self, _: Resource<wit::Claims>) -> wasmtime::Result<String> {
            Ok(self.authorizing()?.1.raw_json.clone())
        }

        fn user(&mut self, _: Resource<wit::Claims>) -> wasmtime::Result<Option<wit::UserRights>> {
            Ok(self.authorizing()?.1.user.as_ref().map(user_rights))
        }

        /// The host owns the claims; a borrow's end frees nothing.
        fn drop(&mut self, _: Resource<wit::Claims>) -> wasmtime::Result<()> {
            Ok(())
        }
    }
}

/// Every supported version's `host` and `types`: each plugin imports the ones of its version.
pub(crate) fn add_to_linker(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    v0_1_0::add_to_linker(l)?;
    v0_2_0::add_to_linker(l)?;
    v0_3_0::add_to_linker(l)?;
    v0_4_0::add_to_linker(l)
}

/// The pre-instantiated exports of one plugin version, in its contract version's bindings.
pub(crate) enum Pre {
    V0_1_0(v0_1_0::Pre),
    V0_2_0(v0_2_0::Pre),
    V0_3_0(v0_3_0::Pre),
    V0_4_0(v0_4_0::Pre),
}

/// One instance's exports; each call converts to and from that version's records.
pub(crate) enum Bound {
    V0_1_0(v0_1_0::Bound),
    V0_2_0(v0_2_0::Bound),
    V0_3_0(v0_3_0::Bound),
    V0_4_0(v0_4_0::Bound),
}

impl Pre {
    pub(crate) fn new(
        version: Version,
        kind: PluginKind,
        pre: InstancePre<HostState>,
    ) -> wasmtime::Result<Pre> {
        Ok(match version {
            Version::V0_1_0 => Pre::V0_1_0(v0_1_0::Pre::new(kind, pre)?),
            Version::V0_2_0 => Pre::V0_2_0(v0_2_0::Pre::new(kind, pre)?),
            Version::V0_3_0 => Pre::V0_3_0(v0_3_0::Pre::new(kind, pre)?),
            Version::V0_4_0 => Pre::V0_4_0(v0_4_0::Pre::new(kind, pre)?),
        })
    }

    pub(crate) fn instantiate(&self, store: &mut Store<HostState>) -> wasmtime::Result<Bound> {
        Ok(match self {
            Pre::V0_1_0(pre) => Bound::V0_1_0(pre.instantiate(store)?),
            Pre::V0_2_0(pre) => Bound::V0_2_0(pre.instantiate(store)?),
            Pre::V0_3_0(pre) => Bound::V0_3_0(pre.instantiate(store)?),
            Pre::V0_4_0(pre) => Bound::V0_4_0(pre.instantiate(store)?),
        })
    }
}

impl Bound {
    pub(crate) fn grant(
        &self,
        store: &mut Store<HostState>,
        req: &plain::TokenRequest,
    ) -> wasmtime::Result<Option<plain::Grant>> {
        match self {
            Bound::V0_1_0(b) => b.grant(store, req),
            Bound::V0_2_0(b) => b.grant(store, req),
            Bound::V0_3_0(b) => b.grant(store, req),
            Bound::V0_4_0(b) => b.grant(store, req),
        }
    }

    pub(crate) fn authorize(
        &self,
        store: &mut Store<HostState>,
        req: &plain::FhirRequest,
        claims: &plain::Claims,
    ) -> wasmtime::Result<Option<Verdict>> {
        match self {
            Bound::V0_1_0(b) => b.authorize(store, req, claims),
            Bound::V0_2_0(b) => b.authorize(store, req, claims),
            Bound::V0_3_0(b) => b.authorize(store, req, claims),
            Bound::V0_4_0(b) => b.authorize(store, req, claims),
        }
    }

    pub(crate) fn resolve(
        &self,
        store: &mut Store<HostState>,
        req: &plain::AudienceRequest,
    ) -> wasmtime::Result<Option<Result<Vec<String>, String>>> {
        match self {
            Bound::V0_1_0(b) => b.resolve(store, req),
            Bound::V0_2_0(b) => b.resolve(store, req),
            Bound::V0_3_0(b) => b.resolve(store, req),
            Bound::V0_4_0(b) => b.resolve(store, req),
        }
    }

    pub(crate) fn accept(
        &self,
        store: &mut Store<HostState>,
        audiences: &[String],
        base_url: &str,
    ) -> wasmtime::Result<Option<Result<(), String>>> {
        match self {
            Bound::V0_1_0(b) => b.accept(store, audiences, base_url),
            Bound::V0_2_0(b) => b.accept(store, audiences, base_url),
            Bound::V0_3_0(b) => b.accept(store, audiences, base_url),
            Bound::V0_4_0(b) => b.accept(store, audiences, base_url),
        }
    }

    pub(crate) fn validate(
        &self,
        store: &mut Store<HostState>,
        resource_type: &str,
        resource_json: &str,
    ) -> wasmtime::Result<Option<Vec<Issue>>> {
        match self {
            Bound::V0_1_0(b) => b.validate(store, resource_type, resource_json),
            Bound::V0_2_0(b) => b.validate(store, resource_type, resource_json),
            Bound::V0_3_0(b) => b.validate(store, resource_type, resource_json),
            Bound::V0_4_0(b) => b.validate(store, resource_type, resource_json),
        }
    }
}
