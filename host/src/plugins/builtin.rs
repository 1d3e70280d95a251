//! The default plugins, compiled from `plugins/` by `host/build.rs` and embedded in the
//! binary. The list itself is data, in `host/build.rs`.

use super::PluginKind;

/// (name, kind, order, component bytes).
pub(crate) static DEFAULTS: &[(&str, PluginKind, i64, &[u8])] =
    include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));
