//! One integration-test binary, with a module per area.

mod fhir;
mod foundation;
mod plugins;
mod store;
mod support;
