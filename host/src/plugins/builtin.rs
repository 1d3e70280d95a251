//! The default plugins, compiled from `plugins/` by `host/build.rs` and embedded in the
//! binary. The list itself is data, in `host/build.rs`.

use std::borrow::Cow;

use super::info::PluginKind;

/// (name, kind, order, component bytes).
static DEFAULTS: &[(&str, PluginKind, i64, &[u8])] =
    include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));

/// A plugin that is there without a file: the defaults embedded in the binary (see
/// [`default_builtins`]). A file of the same name in the plugin directory overrides it;
/// deleting that file brings it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltinPlugin {
    pub name: String,
    pub kind: PluginKind,
    pub order: i64,
    pub wasm: Cow<'static, [u8]>,
}

/// The default plugins embedded in this binary.
pub fn default_builtins() -> Vec<BuiltinPlugin> {
    DEFAULTS
        .iter()
        .map(|&(name, kind, order, wasm)| BuiltinPlugin {
            name: name.to_string(),
            kind,
            order,
            wasm: Cow::Borrowed(wasm),
        })
        .collect()
}
