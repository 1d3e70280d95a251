//! The plugin host's settings: which built-ins, which directory, the limits and WASI
//! permissions plugins run under.

use std::path::PathBuf;
use std::time::Duration;

use super::allowances::WasiAllowances;
use super::builtin::{BuiltinPlugin, default_builtins};

/// Resolved settings of the plugin host.
#[derive(Debug, Clone)]
pub struct PluginSettings {
    /// The plugins present without a file; [`default_builtins`] unless a test says otherwise.
    pub builtins: Vec<BuiltinPlugin>,
    /// The plugin directory; `None` runs the built-ins only.
    pub dir: Option<PathBuf>,
    /// Where compiled code is cached, so that a restart skips compilation.
    pub cache_dir: Option<PathBuf>,
    /// Per-call deadline, unless a manifest says otherwise.
    pub deadline: Duration,
    /// Per-instance memory cap in bytes, unless a manifest says otherwise.
    pub memory_limit: usize,
    /// What manifests may ask of WASI.
    pub allow_wasi: WasiAllowances,
    /// Watch `dir` and reload on change.
    pub watch: bool,
}

impl Default for PluginSettings {
    fn default() -> Self {
        PluginSettings {
            builtins: default_builtins(),
            dir: None,
            cache_dir: None,
            deadline: Duration::from_millis(20),
            memory_limit: 16 << 20,
            allow_wasi: WasiAllowances::default(),
            watch: false,
        }
    }
}

impl PluginSettings {
    /// The plugin host of a server with these settings: its plugin directory, limits, WASI
    /// permissions and compiled-code cache (`DATA_DIR/plugin-cache`). `hestia serve`, `plugin
    /// list`, `plugin test` and `token explain` all start from this, so that they load
    /// plugins alike and share the cache.
    pub fn configured(settings: &crate::config::Settings) -> std::io::Result<PluginSettings> {
        Ok(PluginSettings {
            dir: Some(settings.plugins_dir.clone()),
            // wasmtime's cache wants an absolute path; the data directory may be relative.
            cache_dir: Some(std::path::absolute(settings.data_dir.join("plugin-cache"))?),
            deadline: settings.plugins.deadline,
            memory_limit: settings.plugins.memory_bytes,
            allow_wasi: settings.plugins.allow_wasi,
            watch: settings.plugins.watch,
            ..PluginSettings::default()
        })
    }
}
