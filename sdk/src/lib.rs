//! Write Hestia plugins in plain Rust.
//!
//! A Hestia plugin is a WebAssembly component that exports one world of the
//! `hestia:plugin@0.3.0` contract: a **scope policy** ([`ScopePolicy`]), an **audience
//! rule** ([`AudienceRule`]) or a **resource validator** ([`ResourceValidator`]). Implement
//! the trait on a type, export it with the world's macro, and build with
//! `cargo build --release --target wasm32-wasip2`. Plugin code only sees the types of this
//! crate; the generated component glue stays inside it, but for [`Interaction`],
//! [`Severity`] and [`Issue`], which are the contract's own types.
//!
//! A complete scope policy (read-only; a patient app sees only its patient's data):
//!
//! ```
//! use hestia_sdk::{Claims, Constraint, Decision, FhirRequest, ScopePolicy};
//!
//! struct ReadOnly;
//!
//! impl ScopePolicy for ReadOnly {
//!     fn authorize(request: &FhirRequest, claims: &Claims) -> Decision {
//!         if request.interaction().is_write() {
//!             return Decision::deny("this server is read-only");
//!         }
//!         match claims.patient() {
//!             Some(patient) => Decision::allow_within([Constraint::patient_compartment(patient)]),
//!             None => Decision::allow(),
//!         }
//!     }
//! }
//!
//! hestia_sdk::export_scope_policy!(ReadOnly);
//! ```
//!
//! Its `grant` is the trait's default, [`smart::grant_registered`]. The same code is tested
//! natively with `cargo test`, through [`testing`]:
//!
//! ```
//! # use hestia_sdk::{Claims, Constraint, Decision, FhirRequest, ScopePolicy};
//! # struct ReadOnly;
//! # impl ScopePolicy for ReadOnly {
//! #     fn authorize(request: &FhirRequest, claims: &Claims) -> Decision {
//! #         if request.interaction().is_write() { return Decision::deny("this server is read-only"); }
//! #         match claims.patient() {
//! #             Some(patient) => Decision::allow_within([Constraint::patient_compartment(patient)]),
//! #             None => Decision::allow(),
//! #         }
//! #     }
//! # }
//! use hestia_sdk::testing::{claims, read};
//!
//! let app = claims().scopes("patient/*.rs").patient("p1").build();
//! assert_eq!(
//!     ReadOnly::authorize(&read("Observation", "o1"), &app),
//!     Decision::allow_within([Constraint::patient_compartment("p1")]),
//! );
//! ```
//!
//! Plugins must not keep state between calls: the host may call any warm instance, or a
//! fresh one.

extern crate self as hestia_sdk;

mod audience;
#[doc(hidden)]
pub mod bindings;
mod claims;
mod decision;
#[doc(hidden)]
pub mod glue;
mod host;
mod issue;
mod request;
pub mod smart;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
mod token;
mod user;

pub use audience::{AudienceRequest, same_url};
pub use claims::Claims;
pub use decision::{Constraint, Decision};
pub use host::{ConfigError, Level, config, config_json, log};
pub use issue::{Issue, Severity};
pub use request::{FhirRequest, Interaction};
pub use token::{Grant, TokenRequest};
pub use user::{Narrowed, UserGrant, UserRights};

/// Re-exported so that plugins need no JSON dependency of their own.
pub use serde_json::{self, Value, json};

/// The `scope-policy` world: which scopes a token gets, and what each FHIR request may do.
pub trait ScopePolicy {
    /// At token time: which of the requested scopes are granted, and why not the others.
    /// The default grants the ones the client is registered for
    /// ([`smart::grant_registered`]).
    fn grant(request: &TokenRequest) -> Grant {
        smart::grant_registered(request)
    }

    /// For each FHIR request (batch and transaction entries one by one).
    fn authorize(request: &FhirRequest, claims: &Claims) -> Decision;
}

/// The `audience-rule` world: which audiences a token gets, and which audiences this
/// server accepts.
pub trait AudienceRule {
    /// At token time: the audiences the token gets, or why the request is refused.
    fn resolve(request: &AudienceRequest) -> Result<Vec<String>, String>;

    /// At request time: `Ok` when the token's audiences admit this server.
    fn accept(token_audiences: &[String], server_base_url: &str) -> Result<(), String>;
}

/// The `resource-validator` world: findings about a resource before it is stored.
pub trait ResourceValidator {
    /// `resource` is the parsed resource JSON; a body that is not a JSON object never
    /// reaches here (the SDK answers with a `structure` error itself).
    fn validate(resource_type: &str, resource: &Value) -> Vec<Issue>;

    /// What the component calls, with the body as the host sends it. The default parses
    /// it into a [`Value`] and calls [`ResourceValidator::validate`]. Override it to read
    /// the text your own way, e.g. without copying every string of it (the built-in
    /// `structural-validator` does), answering [`Issue::not_json`] and
    /// [`Issue::not_an_object`] as the default does.
    fn validate_json(resource_type: &str, resource_json: &str) -> Vec<Issue> {
        match serde_json::from_str::<Value>(resource_json) {
            Ok(resource @ Value::Object(_)) => Self::validate(resource_type, &resource),
            Ok(_) => vec![Issue::not_an_object()],
            Err(e) => vec![Issue::not_json(&e)],
        }
    }
}

/// Runs the validator on the JSON text, the way the component does.
pub fn validate_json<T: ResourceValidator>(resource_type: &str, resource_json: &str) -> Vec<Issue> {
    T::validate_json(resource_type, resource_json)
}

#[doc(hidden)]
pub mod __private {
    pub use crate::bindings::{audience_rule, resource_validator, scope_policy};
    pub use crate::glue::{AudienceRuleExport, ResourceValidatorExport, ScopePolicyExport};
    pub use wit_bindgen;
}

/// Exports a [`ScopePolicy`] as the component's `scope-policy` world. Use once per crate.
/// In a native build it only checks that the type implements the trait.
#[macro_export]
macro_rules! export_scope_policy {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type __HestiaExport = $crate::__private::ScopePolicyExport<$ty>;
            $crate::__private::scope_policy::__hestia_export_scope_policy!(
                __HestiaExport with_types_in $crate::__private::scope_policy
            );
        };
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            fn __hestia_check<T: $crate::ScopePolicy>() {}
            let _ = __hestia_check::<$ty>;
        };
    };
}

/// Exports an [`AudienceRule`] as the component's `audience-rule` world. Use once per crate.
#[macro_export]
macro_rules! export_audience_rule {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type __HestiaExport = $crate::__private::AudienceRuleExport<$ty>;
            $crate::__private::audience_rule::__hestia_export_audience_rule!(
                __HestiaExport with_types_in $crate::__private::audience_rule
            );
        };
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            fn __hestia_check<T: $crate::AudienceRule>() {}
            let _ = __hestia_check::<$ty>;
        };
    };
}

/// Exports a [`ResourceValidator`] as the component's `resource-validator` world. Use once
/// per crate.
#[macro_export]
macro_rules! export_resource_validator {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type __HestiaExport = $crate::__private::ResourceValidatorExport<$ty>;
            $crate::__private::resource_validator::__hestia_export_resource_validator!(
                __HestiaExport with_types_in $crate::__private::resource_validator
            );
        };
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            fn __hestia_check<T: $crate::ResourceValidator>() {}
            let _ = __hestia_check::<$ty>;
        };
    };
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests;
