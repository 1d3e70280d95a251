//! The plugins by name: built-ins, files of the plugin directory, and what each one's state
//! is. [`Loader`] owns the mutable side (what was seen on disk, what compiled) and is only
//! touched at start and by the watcher; it produces immutable [`Snapshot`]s that calls read
//! through an `ArcSwap`, so a reload never blocks or fails a call in flight.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::Engine;

use super::allowances::{MAX_MEMORY_MIB, WasiAllowances};
use super::builtin::BuiltinPlugin;
use super::info::{OnError, PluginError, PluginInfo, PluginKind, PluginSource, PluginStatus};
use super::manifest::Manifest;
use super::metrics::{self, Meters};
use super::runtime::{self, Compiled, Limits, Plugin, RunSettings};
use super::settings::PluginSettings;

/// Lowercase hex SHA-256 of `bytes`: a plugin's version, and what a manifest pins.
pub fn content_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Order of a file plugin whose manifest names none: after the built-ins.
const DEFAULT_ORDER: i64 = 100;
const MAX_DEADLINE_MS: u64 = 10_000;

/// One position in a chain.
pub(crate) struct Member {
    pub name: Arc<str>,
    pub on_error: OnError,
    pub slot: Slot,
    pub kind: PluginKind,
    /// Registered at the first call, so that a recorder installed after the start still
    /// gets them.
    pub meters: OnceLock<Meters>,
}

impl Member {
    pub(crate) fn meters(&self) -> &Meters {
        self.meters
            .get_or_init(|| Meters::new(&self.name, self.kind.as_str()))
    }
}

pub(crate) enum Slot {
    Ready(Arc<Plugin>),
    /// A file that never loaded, with no older version to serve instead: it fails closed
    /// (or is skipped, with `on_error = "allow"`).
    Broken(String),
}

/// What calls read: the chains, ordered, and the listing.
#[derive(Default)]
pub(crate) struct Snapshot {
    pub infos: Vec<PluginInfo>,
    pub scope_policies: Vec<Member>,
    pub audience_rules: Vec<Member>,
    pub validators: Vec<Member>,
}

/// A version that serves calls.
#[derive(Clone)]
struct Serving {
    plugin: Arc<Plugin>,
    compiled: Compiled,
    wasm_hash: String,
    order: i64,
    on_error: OnError,
    isolation: bool,
    source: PluginSource,
}

/// A file that did not load.
#[derive(Clone)]
struct Failure {
    error: String,
    kind: Option<PluginKind>,
    order: i64,
    on_error: OnError,
    wasm_hash: String,
    path: PathBuf,
}

/// What was on disk last time: a file is only reloaded when this changes.
#[derive(Clone, PartialEq, Eq)]
struct Fingerprint {
    wasm_hash: Option<String>,
    manifest: Option<String>,
}

struct FileSlot {
    seen: Fingerprint,
    serving: Option<Serving>,
    failure: Option<Failure>,
}

struct BuiltinSlot {
    builtin: BuiltinPlugin,
    serving: Serving,
    /// The manifest text (`NAME.toml` without `NAME.wasm`) the serving version was built with.
    manifest: Option<String>,
    failure: Option<String>,
}

pub(crate) struct Loader {
    engine: Engine,
    dir: Option<PathBuf>,
    deadline: Duration,
    memory: usize,
    allow_wasi: WasiAllowances,
    builtins: BTreeMap<String, BuiltinSlot>,
    files: BTreeMap<String, FileSlot>,
}

/// Memory of the built-in resource validator: it parses whole resources, and a valid one
/// may be as large as a request body (16 MiB by default; the R4 `ImplementationGuide/fhir`
/// example is 2.7 MB and its parse takes more than the 16 MiB every other plugin gets).
pub(crate) const BUILTIN_VALIDATOR_MEMORY_MIB: u64 = 256;

/// What the built-ins run with: the host's limits, except that a resource validator gets at
/// least [`BUILTIN_VALIDATOR_MEMORY_MIB`].
fn builtin_manifest(kind: PluginKind, host_memory: usize) -> Manifest {
    let mut manifest = Manifest::default();
    if kind == PluginKind::ResourceValidator {
        let host_mib = (host_memory >> 20) as u64;
        manifest.limits.memory_mib = Some(host_mib.max(BUILTIN_VALIDATOR_MEMORY_MIB));
    }
    manifest
}

impl Loader {
    /// Compiles the built-ins. They are part of the binary, so a failure here is a bug
    /// and stops the start.
    pub(crate) fn new(engine: Engine, settings: &PluginSettings) -> Result<Loader, PluginError> {
        let mut loader = Loader {
            engine,
            dir: settings.dir.clone(),
            deadline: settings.deadline,
            memory: settings.memory_limit,
            allow_wasi: settings.allow_wasi,
            builtins: BTreeMap::new(),
            files: BTreeMap::new(),
        };
        for builtin in &settings.builtins {
            let serving = loader
                .load_builtin(
                    builtin,
                    &builtin_manifest(builtin.kind, settings.memory_limit),
                )
                .map_err(|reason| PluginError::Builtin {
                    name: builtin.name.to_string(),
                    reason,
                })?;
            loader.builtins.insert(
                builtin.name.to_string(),
                BuiltinSlot {
                    builtin: builtin.clone(),
                    serving,
                    manifest: None,
                    failure: None,
                },
            );
        }
        Ok(loader)
    }

    fn load_builtin(
        &self,
        builtin: &BuiltinPlugin,
        manifest: &Manifest,
    ) -> Result<Serving, String> {
        let compiled = runtime::compile(&self.engine, &builtin.wasm)?;
        if compiled.kind != builtin.kind {
            return Err(format!(
                "exports the {} world, expected {}",
                compiled.kind, builtin.kind
            ));
        }
        self.serve(
            &builtin.name,
            compiled,
            content_hash(&builtin.wasm),
            manifest,
            PluginSource::Builtin,
            builtin.order,
        )
    }

    fn serve(
        &self,
        name: &str,
        compiled: Compiled,
        wasm_hash: String,
        manifest: &Manifest,
        source: PluginSource,
        default_order: i64,
    ) -> Result<Serving, String> {
        if let Some(kind) = manifest.kind
            && kind != compiled.kind
        {
            return Err(format!(
                "the manifest says kind = \"{kind}\", but the component exports the {} world",
                compiled.kind
            ));
        }
        let settings = self.run_settings(manifest)?;
        let isolation = settings.isolation;
        let plugin = Plugin::new(&self.engine, name, &compiled, settings)?;
        Ok(Serving {
            plugin: Arc::new(plugin),
            compiled,
            wasm_hash,
            order: manifest.order.unwrap_or(default_order),
            on_error: manifest.on_error.unwrap_or_default(),
            isolation,
            source,
        })
    }

    fn run_settings(&self, manifest: &Manifest) -> Result<RunSettings, String> {
        let deadline = match manifest.limits.deadline_ms {
            Some(ms) if ms == 0 || ms > MAX_DEADLINE_MS => {
                return Err(format!(
                    "limits.deadline_ms must be between 1 and {MAX_DEADLINE_MS}"
                ));
            }
            Some(ms) => Duration::from_millis(ms),
            None => self.deadline,
        };
        let memory = match manifest.limits.memory_mib {
            Some(mib) if mib == 0 || mib > MAX_MEMORY_MIB => {
                return Err(format!(
                    "limits.memory_mib must be between 1 and {}",
                    MAX_MEMORY_MIB
                ));
            }
            Some(mib) => {
                usize::try_from(mib << 20).map_err(|_| "limits.memory_mib is too large")?
            }
            None => self.memory,
        };
        let ask = manifest.wasi;
        for (asked, allowed, what) in [
            (ask.clock, self.allow_wasi.clock, "clock"),
            (ask.random, self.allow_wasi.random, "random"),
        ] {
            if asked && !allowed {
                return Err(format!(
                    "the manifest asks for WASI {what}, which the host's settings do not allow"
                ));
            }
        }
        Ok(RunSettings {
            limits: Limits { deadline, memory },
            isolation: manifest.isolation,
            config_json: manifest.config_json(),
            wasi: WasiAllowances {
                clock: ask.clock,
                random: ask.random,
            },
        })
    }

    /// Reads the plugin directory and (re)loads what changed since the last scan.
    pub(crate) fn scan(&mut self) {
        let Some(dir) = self.dir.clone() else { return };
        let names = stems(&dir);
        self.files.retain(|name, _| names.contains(name));
        for name in &names {
            let wasm_path = dir.join(format!("{name}.wasm"));
            let wasm = std::fs::read(&wasm_path).ok();
            let manifest = std::fs::read_to_string(dir.join(format!("{name}.toml"))).ok();
            match wasm {
                Some(bytes) => self.scan_file(name, wasm_path, bytes, manifest),
                None => {
                    self.files.remove(name);
                    self.scan_builtin_manifest(name, manifest);
                }
            }
        }
        // A built-in whose manifest went away goes back to its defaults.
        let configured: Vec<String> = self
            .builtins
            .iter()
            .filter(|(name, slot)| {
                (slot.manifest.is_some() || slot.failure.is_some()) && !names.contains(*name)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in configured {
            self.scan_builtin_manifest(&name, None);
        }
    }

    fn scan_file(&mut self, name: &str, path: PathBuf, bytes: Vec<u8>, manifest: Option<String>) {
        let wasm_hash = content_hash(&bytes);
        let seen = Fingerprint {
            wasm_hash: Some(wasm_hash.clone()),
            manifest: manifest.clone(),
        };
        if self.files.get(name).is_some_and(|slot| slot.seen == seen) {
            return;
        }
        let previous = self.files.get(name).and_then(|slot| slot.serving.clone());
        let result = self.load_file(
            name,
            &path,
            &bytes,
            wasm_hash.clone(),
            manifest.as_deref(),
            previous.as_ref(),
        );
        let slot = match result {
            Ok(serving) => {
                tracing::info!(plugin = name, version = short(&wasm_hash), path = %path.display(), "plugin loaded");
                FileSlot {
                    seen,
                    serving: Some(serving),
                    failure: None,
                }
            }
            Err(failure) => {
                if previous.is_some() || self.builtins.contains_key(name) {
                    tracing::error!(plugin = name, path = %path.display(), "plugin not reloaded, the previous version keeps serving: {}", failure.error);
                } else {
                    tracing::error!(plugin = name, path = %path.display(), "plugin failed to load: {}", failure.error);
                }
                metrics::load_failed(name, failure.kind);
                FileSlot {
                    seen,
                    serving: previous,
                    failure: Some(failure),
                }
            }
        };
        self.files.insert(name.to_string(), slot);
    }

    fn load_file(
        &self,
        name: &str,
        path: &Path,
        bytes: &[u8],
        wasm_hash: String,
        manifest_text: Option<&str>,
        previous: Option<&Serving>,
    ) -> Result<Serving, Failure> {
        let mut failure = Failure {
            error: String::new(),
            kind: None,
            order: DEFAULT_ORDER,
            on_error: OnError::Deny,
            wasm_hash: wasm_hash.clone(),
            path: path.to_path_buf(),
        };
        let fail = |mut failure: Failure, error: String| {
            failure.error = error;
            failure
        };
        let manifest = match manifest_text.map(Manifest::parse).transpose() {
            Ok(m) => m.unwrap_or_default(),
            Err(e) => return Err(fail(failure, format!("{name}.toml: {e}"))),
        };
        failure.kind = manifest.kind;
        failure.order = manifest.order.unwrap_or(DEFAULT_ORDER);
        failure.on_error = manifest.on_error.unwrap_or_default();
        if let Some(pin) = &manifest.sha256
            && !pin.trim().eq_ignore_ascii_case(&wasm_hash)
        {
            return Err(fail(
                failure,
                format!(
                    "sha256 of {name}.wasm is {wasm_hash}, but the manifest pins {}",
                    pin.trim()
                ),
            ));
        }
        let compiled = match previous.filter(|p| p.wasm_hash == wasm_hash) {
            Some(p) => p.compiled.clone(),
            None => runtime::compile(&self.engine, bytes).map_err(|e| fail(failure.clone(), e))?,
        };
        failure.kind = failure.kind.or(Some(compiled.kind));
        let source = PluginSource::File(path.to_path_buf());
        self.serve(name, compiled, wasm_hash, &manifest, source, DEFAULT_ORDER)
            .map_err(|e| fail(failure, e))
    }

    /// `NAME.toml` alone configures the built-in of that name.
    fn scan_builtin_manifest(&mut self, name: &str, manifest: Option<String>) {
        let Some(slot) = self.builtins.get(name) else {
            return;
        };
        if slot.manifest == manifest && slot.failure.is_none() {
            return;
        }
        let builtin = slot.builtin.clone();
        let result = match manifest.as_deref().map(Manifest::parse).transpose() {
            Ok(m) => self.load_builtin(&builtin, &m.unwrap_or_default()),
            Err(e) => Err(format!("{name}.toml: {e}")),
        };
        let Some(slot) = self.builtins.get_mut(name) else {
            return;
        };
        match result {
            Ok(serving) => {
                slot.serving = serving;
                slot.manifest = manifest;
                slot.failure = None;
            }
            Err(e) => {
                tracing::error!(plugin = name, "built-in plugin not reconfigured: {e}");
                metrics::load_failed(name, Some(builtin.kind));
                slot.failure = Some(e);
            }
        }
    }

    /// The plugins as calls see them: per name, the version that serves (a file's, else
    /// the built-in's of that name) or else the file that failed, in chains by order.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let mut snapshot = Snapshot::default();
        let names: BTreeSet<&String> = self.builtins.keys().chain(self.files.keys()).collect();
        for name in names {
            let file = self.files.get(name.as_str());
            let (serving, last_error) = self.serving(name);
            if let Some(serving) = serving {
                snapshot.add_serving(name, serving, last_error);
            } else if let Some(failure) = file.and_then(|f| f.failure.as_ref()) {
                snapshot.add_failed(name, failure, self.deadline, self.memory);
            }
        }
        snapshot.sort();
        snapshot
    }

    /// The version of `name` that serves, and the error of the last attempt to load or
    /// configure it if that failed.
    fn serving(&self, name: &str) -> (Option<Serving>, Option<String>) {
        let file = self.files.get(name);
        let file_error = file
            .and_then(|f| f.failure.as_ref())
            .map(|f| f.error.clone());
        match (file, self.builtins.get(name)) {
            (Some(f), _) if f.serving.is_some() => (f.serving.clone(), file_error),
            (Some(_), Some(b)) => (Some(b.serving.clone()), file_error),
            (None, Some(b)) => (Some(b.serving.clone()), b.failure.clone()),
            (Some(_), None) | (None, None) => (None, file_error),
        }
    }
}

impl Snapshot {
    fn chain_mut(&mut self, kind: PluginKind) -> &mut Vec<Member> {
        match kind {
            PluginKind::ScopePolicy => &mut self.scope_policies,
            PluginKind::AudienceRule => &mut self.audience_rules,
            PluginKind::ResourceValidator => &mut self.validators,
        }
    }

    /// A plugin with a version that serves: stale when its last load failed.
    fn add_serving(&mut self, name: &str, s: Serving, last_error: Option<String>) {
        let kind = s.compiled.kind;
        let limits = s.plugin.limits();
        let state = if last_error.is_some() {
            PluginStatus::Stale
        } else {
            PluginStatus::Active
        };
        self.infos.push(PluginInfo {
            name: name.to_string(),
            kind: Some(kind),
            order: s.order,
            version: short(&s.wasm_hash).to_string(),
            source: s.source.clone(),
            state,
            last_error,
            on_error: s.on_error,
            isolation: s.isolation,
            deadline: limits.deadline,
            memory_limit: limits.memory,
        });
        self.chain_mut(kind).push(Member {
            name: name.into(),
            on_error: s.on_error,
            slot: Slot::Ready(s.plugin),
            kind,
            meters: OnceLock::new(),
        });
    }

    /// A file that never loaded, listed with the host's limits.
    fn add_failed(&mut self, name: &str, failure: &Failure, deadline: Duration, memory: usize) {
        self.infos.push(PluginInfo {
            name: name.to_string(),
            kind: failure.kind,
            order: failure.order,
            version: short(&failure.wasm_hash).to_string(),
            source: PluginSource::File(failure.path.clone()),
            state: PluginStatus::Failed,
            last_error: Some(failure.error.clone()),
            on_error: failure.on_error,
            isolation: false,
            deadline,
            memory_limit: memory,
        });
        // Its kind unknown, a broken plugin stands in every chain: failing closed
        // everywhere is better than guessing where it meant to restrict.
        let kinds = match failure.kind {
            Some(kind) => vec![kind],
            None => PluginKind::ALL.to_vec(),
        };
        for kind in kinds {
            self.chain_mut(kind).push(Member {
                name: name.into(),
                on_error: failure.on_error,
                slot: Slot::Broken(failure.error.clone()),
                kind,
                meters: OnceLock::new(),
            });
        }
    }

    /// Chains and listing by order, then name.
    fn sort(&mut self) {
        let order: BTreeMap<String, i64> = self
            .infos
            .iter()
            .map(|i| (i.name.clone(), i.order))
            .collect();
        for chain in [
            &mut self.scope_policies,
            &mut self.audience_rules,
            &mut self.validators,
        ] {
            chain.sort_by(|a, b| {
                (order.get(&*a.name), &a.name).cmp(&(order.get(&*b.name), &b.name))
            });
        }
        self.infos
            .sort_by(|a, b| (a.order, &a.name).cmp(&(b.order, &b.name)));
    }
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

/// Names of the plugins in `dir`: stems of `*.wasm` and `*.toml`, hidden files ignored.
fn stems(dir: &Path) -> BTreeSet<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeSet::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let path = entry.path();
            let ext = path.extension()?.to_str()?;
            let stem = path.file_stem()?.to_str()?;
            ((ext == "wasm" || ext == "toml") && !stem.starts_with('.') && !stem.is_empty())
                .then(|| stem.to_string())
        })
        .collect()
}
