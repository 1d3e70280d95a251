//! One integration-test binary, with a module per area.

mod foundation;
mod store;
mod support;
