//! The default plugins, compiled from `plugins/` by `host/build.rs` and embedded in the
//! binary. The list itself is data, in `host/build.rs`.

use super::registry::Builtin;

include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));
