//! One integration-test binary, with a module per area.

mod admin_console;
mod bulk;
mod bulk_import;
mod fhir;
mod fhir_ops;
mod foundation;
mod hostile_requests;
mod hostile_search;
mod journey;
mod oauth;
mod operations;
mod plugin_cli;
mod plugin_langs;
mod plugins;
mod remote;
mod resource_server;
mod rights;
mod scope_matrix;
mod search;
mod store;
mod structure;
mod support;
mod user_access;
