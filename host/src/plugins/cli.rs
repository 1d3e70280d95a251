//! What `hestia plugin check | list | new | test` do and print. The subcommands themselves
//! are wired in the binary's CLI; these functions do the work and return printable reports.

use std::fmt;
use std::path::{Path, PathBuf};

pub use super::builder::{Built, COMPONENTIZE_JS, COMPONENTIZE_PY, WEVAL, build};
pub use super::cases::{BASE_URL, TestReport, run as test};
pub use super::scaffold::{Lang, NewPlugin, SdkSource, new};

use super::runtime::{self, Provision};
use super::{PluginError, PluginHost, PluginInfo, PluginKind, PluginSettings, content_hash};

/// What `hestia plugin check FILE.wasm` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    pub path: PathBuf,
    pub kind: PluginKind,
    /// The WIT package version whose world the component exports.
    pub package: String,
    pub sha256: String,
    /// Each import, with what the host gives it.
    pub imports: Vec<(String, Provision)>,
}

/// Compiles `path`, names its world and package version, and lists its imports. Fails with
/// a clear message on unreadable or garbage bytes, a core module, or an unknown world.
pub fn check(path: &Path) -> Result<CheckReport, PluginError> {
    let fail = |reason: String| PluginError::Check {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    let engine = runtime::engine(None).map_err(PluginError::Engine)?;
    let compiled = runtime::compile(&engine, &bytes).map_err(fail)?;
    // Linking checks the exports' types against the world, not just their names.
    let settings = runtime::RunSettings {
        limits: runtime::Limits {
            deadline: PluginSettings::default().deadline,
            memory: PluginSettings::default().memory_limit,
        },
        isolation: true,
        config_json: "{}".to_string(),
        wasi: super::WasiAllowances {
            clock: true,
            random: true,
        },
    };
    let plugin = runtime::Plugin::new(&engine, "check", &compiled, settings).map_err(fail)?;
    let imports = compiled
        .imports
        .iter()
        .map(|i| (i.clone(), Provision::of(i)))
        .collect();
    Ok(CheckReport {
        path: path.to_path_buf(),
        kind: compiled.kind,
        package: plugin.version().to_string(),
        sha256: content_hash(&bytes),
        imports,
    })
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}: ok", self.path.display())?;
        writeln!(f, "  world    {}", self.kind)?;
        writeln!(f, "  package  {}", self.package)?;
        writeln!(f, "  sha256   {}", self.sha256)?;
        writeln!(f, "  imports")?;
        let width = self
            .imports
            .iter()
            .map(|(name, _)| name.len())
            .max()
            .unwrap_or(0);
        for (name, provision) in &self.imports {
            writeln!(f, "    {name:width$}  {provision}")?;
        }
        Ok(())
    }
}

/// What `hestia plugin list` prints: one row per plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginTable(pub Vec<PluginInfo>);

/// Loads the built-ins and `settings.dir` (without watching) and lists them.
pub fn list(settings: PluginSettings) -> Result<PluginTable, PluginError> {
    let host = PluginHost::start(PluginSettings {
        watch: false,
        ..settings
    })?;
    Ok(PluginTable(host.list()))
}

impl fmt::Display for PluginTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows: Vec<[String; 6]> = self
            .0
            .iter()
            .map(|p| {
                [
                    p.name.clone(),
                    p.kind.map_or("unknown", PluginKind::as_str).to_string(),
                    p.order.to_string(),
                    p.version.clone(),
                    p.state.to_string(),
                    p.source.to_string(),
                ]
            })
            .collect();
        let header = ["NAME", "KIND", "ORDER", "VERSION", "STATE", "SOURCE"].map(String::from);
        let mut widths = header.clone().map(|h| h.len());
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.len());
            }
        }
        for row in std::iter::once(&header).chain(&rows) {
            let line: Vec<String> = row
                .iter()
                .zip(widths)
                .map(|(cell, w)| format!("{cell:w$}"))
                .collect();
            writeln!(f, "{}", line.join("  ").trim_end())?;
        }
        for p in &self.0 {
            if let Some(error) = &p.last_error {
                writeln!(f, "{}: {error}", p.name)?;
            }
        }
        Ok(())
    }
}
