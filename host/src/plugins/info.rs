//! What the host says about a plugin, in the words all of `plugins/` and the rest of the
//! host share: its kind (one per WIT world), what its failure means, where its code comes
//! from and its state (a [`PluginInfo`] per plugin), and the errors of loading plugins. It
//! names no other file of `plugins/`, so that each of them can name it.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The three plugin kinds, one per WIT world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginKind {
    ScopePolicy,
    AudienceRule,
    ResourceValidator,
}

impl PluginKind {
    pub const ALL: [PluginKind; 3] = [
        PluginKind::ScopePolicy,
        PluginKind::AudienceRule,
        PluginKind::ResourceValidator,
    ];

    /// The world's name in the WIT package.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::ScopePolicy => "scope-policy",
            PluginKind::AudienceRule => "audience-rule",
            PluginKind::ResourceValidator => "resource-validator",
        }
    }
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a plugin's failure (trap, timeout, out of memory, failed load) means.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    /// Fail closed: the failure is a denial naming the plugin.
    #[default]
    Deny,
    /// Skip the plugin (still counted and logged).
    Allow,
}

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("plugin engine: {0}")]
    Engine(String),
    #[error("built-in plugin {name} does not load: {reason}")]
    Builtin { name: String, reason: String },
    #[error("plugin directory {}: {reason}", dir.display())]
    Dir { dir: PathBuf, reason: String },
    #[error("{}: {reason}", path.display())]
    Check { path: PathBuf, reason: String },
}

/// Where a plugin's code comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginSource {
    Builtin,
    File(PathBuf),
}

impl fmt::Display for PluginSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PluginSource::Builtin => f.write_str("builtin"),
            PluginSource::File(path) => write!(f, "{}", path.display()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginStatus {
    /// The newest version serves.
    Active,
    /// An older version (or the built-in) serves: the newest file did not load (`last_error`).
    Stale,
    /// Nothing of it loaded: it fails closed (or is skipped with `on_error = "allow"`).
    Failed,
}

impl fmt::Display for PluginStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PluginStatus::Active => "active",
            PluginStatus::Stale => "stale",
            PluginStatus::Failed => "failed",
        })
    }
}

/// One row of `hestia plugin list` and `GET /admin/plugins`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    pub name: String,
    /// `None` only for a failed file whose kind is unknown.
    pub kind: Option<PluginKind>,
    pub order: i64,
    /// The first 12 hex digits of the SHA-256 of the serving (or failed) bytes.
    pub version: String,
    pub source: PluginSource,
    pub state: PluginStatus,
    pub last_error: Option<String>,
    pub on_error: OnError,
    pub isolation: bool,
    pub deadline: Duration,
    pub memory_limit: usize,
}
