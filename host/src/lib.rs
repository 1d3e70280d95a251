//! Hestia: an OAuth2/OpenID Connect + SMART authorization server, a FHIR R4 server and a
//! host for WebAssembly policy plugins, in one binary. See ARCHITECTURE.md for the map.

// First: the other modules use its macros (`outln!`, `sayln!`).
#[macro_use]
pub mod stdout;

pub mod accounts;
pub mod app;
pub mod backup;
pub mod cli;
pub mod config;
pub mod console;
pub mod demo;
pub mod explain;
pub mod fhir;
pub mod freshness;
#[doc(hidden)]
pub mod fuzzing;
pub mod gate;
pub mod http;
pub mod jwt_crypto;
pub mod oauth;
pub mod plugins;
pub mod policy;
pub mod rights;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod verifier;
