//! WebAssembly plugins: scope policies, audience rules and resource validators, typed by the
//! WIT package `hestia:plugin` and run by wasmtime.
//!
//! The rest of the host sees only [`PluginHost`] and the plain types of [`types`]: no
//! wasmtime or generated binding type leaves this module. Every call is synchronous and
//! short (it runs under a deadline), fails closed, and is safe from any thread.
//!
//! Map: [`bindings`] (generated, one module per contract version, plus conversions),
//! `runtime` (engine, compiled components, limits, warm pools), `state` (one instance's
//! store: the `host` interface and WASI it is given), `registry` (plugins by name,
//! snapshots), `manifest` (`NAME.toml`), `watcher` (hot reload), `metrics`, [`cli`]
//! (`hestia plugin …`, with `scaffold` for `new` and `cases` for `test`). `info`,
//! `settings`, `builtin` and [`allowances`] hold what the others share and name none of
//! them; this file (the [`PluginHost`]) names the runtime, registry, bindings, metrics and
//! watcher, which never name it back (`cli` and `cases` start a `PluginHost`).

pub mod allowances;
mod bindings;
mod builder;
mod builtin;
mod cases;
pub mod cli;
mod deadline;
mod fixed_random;
mod guest_io;
mod info;
pub mod manifest;
mod metrics;
mod registry;
mod runtime;
mod scaffold;
mod settings;
mod state;
pub mod types;
mod watcher;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use arc_swap::ArcSwap;

use crate::fhir::outcome::Issue;

use self::bindings::Verdict;
use self::metrics::Outcome;
use self::registry::{Loader, Member, Slot, Snapshot};
use self::runtime::{Fault, Plugin, Ticker};

pub use self::allowances::{MAX_MEMORY_MIB, WasiAllowances};
pub use self::builtin::{BuiltinPlugin, default_builtins};
pub use self::guest_io::recent_output;
pub use self::info::{OnError, PluginError, PluginInfo, PluginKind, PluginSource, PluginStatus};
pub use self::manifest::{Manifest, WasiAsk};
pub use self::registry::content_hash;
pub use self::runtime::Provision;
pub use self::settings::PluginSettings;
pub use self::types::{
    AudienceRequest, Claims, Constraint, Decision, Denial, FhirRequest, Grant, Interaction,
    SearchConstraint, TokenRequest, UserGrant, UserRights,
};

/// The plugin host: the built-in default plugins plus those of the plugin directory,
/// chained per kind in `(order, name)` order.
///
/// Chaining semantics:
/// - [`grant`](Self::grant): a pipeline; each scope-policy plugin gets the scopes the
///   previous ones granted as its `requested`, and what it grants replaces them. A plugin
///   may narrow: grant, in place of a requested scope, narrower scopes that were not
///   requested (the default policy narrows `user/` scopes to the account's rights). A
///   scope it refuses, or neither grants nor refuses while granting nothing new, is refused
///   with the reason of that plugin, as `"plugin P: reason"` (`"not granted"` when it gave
///   none).
/// - [`authorize`](Self::authorize): deny wins, naming the first plugin that denied (later
///   plugins are not called); otherwise the constraints of all plugins accumulate, and the
///   request is allowed within all of them.
/// - [`resolve_audience`](Self::resolve_audience): a pipeline; each audience rule gets the
///   audiences the previous one resolved as its `requested`. The first error is a denial.
/// - [`accept_audience`](Self::accept_audience): every audience rule must accept.
/// - [`validate`](Self::validate): the issues of all validators, concatenated.
/// - An empty chain decides nothing: everything requested is granted, allowed, resolved or
///   accepted, and there are no issues. The built-ins keep the chains non-empty.
///
/// A plugin that traps, times out, runs out of memory or never loaded fails closed (a
/// denial, a refused scope, an error issue) naming the plugin and the cause, unless its
/// manifest says `on_error = "allow"`, which skips it. Either way it is logged and counted.
pub struct PluginHost {
    snapshot: ArcSwap<Snapshot>,
    loader: Mutex<Loader>,
    watcher: Mutex<Option<watcher::Watcher>>,
    _ticker: Ticker,
}

/// What one chain member came to.
enum Step<R> {
    Answer(R),
    Skip,
    Fail(String),
}

impl Member {
    fn invoke<R>(
        &self,
        call: impl FnOnce(&Plugin) -> Result<R, Fault>,
        denies: impl FnOnce(&R) -> bool,
    ) -> Step<R> {
        let start = Instant::now();
        let result = match &self.slot {
            Slot::Ready(plugin) => call(plugin),
            Slot::Broken(error) => Err(Fault::NotLoaded(error.clone())),
        };
        let seconds = start.elapsed().as_secs_f64();
        match result {
            Ok(answer) => {
                let denied = denies(&answer);
                let outcome = if denied { Outcome::Deny } else { Outcome::Ok };
                self.meters().record(outcome, denied, seconds);
                Step::Answer(answer)
            }
            Err(fault) => {
                let outcome = match fault {
                    Fault::Trap(_) => Outcome::Trap,
                    Fault::Timeout(_) => Outcome::Timeout,
                    Fault::OutOfMemory(_) => Outcome::OutOfMemory,
                    Fault::Instantiate(_) => Outcome::InstantiateError,
                    Fault::NotLoaded(_) => Outcome::NotLoaded,
                };
                let skip = self.on_error == OnError::Allow;
                self.meters().record(outcome, !skip, seconds);
                if skip {
                    tracing::warn!(
                        plugin = &*self.name,
                        "plugin skipped (on_error = allow): {fault}"
                    );
                    Step::Skip
                } else {
                    tracing::warn!(plugin = &*self.name, "plugin failed closed: {fault}");
                    Step::Fail(fault.to_string())
                }
            }
        }
    }

    fn denial(&self, reason: String) -> Denial {
        Denial {
            plugin: self.name.to_string(),
            reason,
        }
    }
}

impl PluginHost {
    /// Loads the built-ins, then the plugin directory (created if missing), and starts the
    /// watcher when `settings.watch`. Compilation happens here and in the watcher thread,
    /// never in a call.
    pub fn start(settings: PluginSettings) -> Result<Arc<PluginHost>, PluginError> {
        let engine = runtime::engine(settings.cache_dir.as_deref()).map_err(PluginError::Engine)?;
        let ticker = Ticker::start(&engine).map_err(PluginError::Engine)?;
        let mut loader = Loader::new(engine, &settings)?;
        if let Some(dir) = &settings.dir {
            std::fs::create_dir_all(dir).map_err(|e| PluginError::Dir {
                dir: dir.clone(),
                reason: e.to_string(),
            })?;
            loader.scan();
        }
        let host = Arc::new(PluginHost {
            snapshot: ArcSwap::from_pointee(loader.snapshot()),
            loader: Mutex::new(loader),
            watcher: Mutex::new(None),
            _ticker: ticker,
        });
        if let (Some(dir), true) = (&settings.dir, settings.watch) {
            let watcher = watcher::Watcher::start(dir, Arc::downgrade(&host), PluginHost::reload)
                .map_err(|reason| PluginError::Dir {
                dir: dir.clone(),
                reason,
            })?;
            *host.watcher.lock().unwrap_or_else(PoisonError::into_inner) = Some(watcher);
        }
        Ok(host)
    }

    /// Rescans the plugin directory now and swaps in what changed. The watcher calls this;
    /// calls in flight finish on the versions they started with.
    pub fn reload(&self) {
        let mut loader = self.loader.lock().unwrap_or_else(PoisonError::into_inner);
        loader.scan();
        self.snapshot.store(Arc::new(loader.snapshot()));
    }

    /// Which of `req.requested` the token gets (or narrower scopes in their place), and why
    /// not the others.
    pub fn grant(&self, req: &TokenRequest) -> Grant {
        let snapshot = self.snapshot.load();
        let mut current = req.clone();
        let mut refused = Vec::new();
        for member in &snapshot.scope_policies {
            if current.requested.is_empty() {
                break;
            }
            let step = member.invoke(|p| p.grant(&current), |g| !g.refused.is_empty());
            match step {
                Step::Answer(answer) => {
                    let narrowed = answer
                        .granted
                        .iter()
                        .any(|s| !current.requested.contains(s));
                    for scope in &current.requested {
                        if answer.granted.contains(scope) {
                            continue;
                        }
                        let reason = answer.refused.iter().find(|(s, _)| s == scope);
                        if reason.is_none() && narrowed {
                            continue;
                        }
                        let reason = reason.map_or("not granted", |(_, why)| why.as_str());
                        refused.push((scope.clone(), format!("plugin {}: {reason}", member.name)));
                    }
                    current.requested = dedup(answer.granted);
                }
                Step::Skip => {}
                Step::Fail(reason) => {
                    refused.extend(
                        current
                            .requested
                            .drain(..)
                            .map(|s| (s, format!("plugin {}: {reason}", member.name))),
                    );
                }
            }
        }
        Grant {
            granted: current.requested,
            refused,
        }
    }

    /// May this FHIR request go ahead, and within which constraints.
    pub fn authorize(&self, req: &FhirRequest, claims: &Claims) -> Decision {
        let snapshot = self.snapshot.load();
        let mut constraints = Vec::new();
        for member in &snapshot.scope_policies {
            let step = member.invoke(
                |p| p.authorize(req, claims),
                |v| matches!(v, Verdict::Deny(_)),
            );
            match step {
                Step::Answer(Verdict::Allow) | Step::Skip => {}
                Step::Answer(Verdict::AllowWithin(c)) => constraints.extend(c),
                Step::Answer(Verdict::Deny(reason)) | Step::Fail(reason) => {
                    return Decision::Deny(member.denial(reason));
                }
            }
        }
        if constraints.is_empty() {
            Decision::Allow
        } else {
            Decision::AllowWithin(constraints)
        }
    }

    /// The audiences a token about to be issued gets.
    pub fn resolve_audience(&self, req: &AudienceRequest) -> Result<Vec<String>, Denial> {
        let snapshot = self.snapshot.load();
        let mut current = req.clone();
        for member in &snapshot.audience_rules {
            match member.invoke(|p| p.resolve(&current), Result::is_err) {
                Step::Answer(Ok(audiences)) => current.requested = audiences,
                Step::Skip => {}
                Step::Answer(Err(reason)) | Step::Fail(reason) => return Err(member.denial(reason)),
            }
        }
        Ok(current.requested)
    }

    /// Whether a token with these audiences may be used at `server_base_url`.
    pub fn accept_audience(
        &self,
        token_audiences: &[String],
        server_base_url: &str,
    ) -> Result<(), Denial> {
        let snapshot = self.snapshot.load();
        for member in &snapshot.audience_rules {
            match member.invoke(
                |p| p.accept(token_audiences, server_base_url),
                Result::is_err,
            ) {
                Step::Answer(Ok(())) | Step::Skip => {}
                Step::Answer(Err(reason)) | Step::Fail(reason) => return Err(member.denial(reason)),
            }
        }
        Ok(())
    }

    /// The issues all validators find in a resource. A validator that fails adds one
    /// `error`/`exception` issue naming it.
    pub fn validate(&self, resource_type: &str, resource_json: &str) -> Vec<Issue> {
        let snapshot = self.snapshot.load();
        let mut issues = Vec::new();
        for member in &snapshot.validators {
            let step = member.invoke(
                |p| p.validate(resource_type, resource_json),
                |found| found.iter().any(|i| i.severity.is_failure()),
            );
            match step {
                Step::Answer(found) => issues.extend(found),
                Step::Skip => {}
                Step::Fail(reason) => {
                    issues.push(Issue::error("exception", member.denial(reason).to_string()))
                }
            }
        }
        issues
    }

    /// Every plugin, in chain order: name, kind, version, source, state, last error.
    pub fn list(&self) -> Vec<PluginInfo> {
        self.snapshot.load().infos.clone()
    }

    /// Bytes of linear memory one warm instance of the plugin `name` holds after its calls
    /// so far (what its memory cap is checked against); `None` when it has no idle
    /// instance (`isolation`, failed, or every instance busy). For benchmarks and
    /// diagnostics.
    pub fn instance_memory(&self, name: &str) -> Option<usize> {
        let snapshot = self.snapshot.load();
        let member = [
            &snapshot.scope_policies,
            &snapshot.audience_rules,
            &snapshot.validators,
        ]
        .into_iter()
        .flatten()
        .find(|member| &*member.name == name)?;
        match &member.slot {
            Slot::Ready(plugin) => plugin.memory_in_use(),
            Slot::Broken(_) => None,
        }
    }
}

/// `scopes` without repetitions, in their first order.
fn dedup(scopes: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    scopes
        .into_iter()
        .filter(|s| seen.insert(s.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{PluginHost, PluginSettings};

    #[test]
    fn a_warm_instance_reports_its_linear_memory() {
        let host = PluginHost::start(PluginSettings::default()).unwrap();
        let memory = host
            .instance_memory("smart-scopes")
            .expect("an idle instance");
        // At least one 64 KiB page, and within the host's default cap.
        assert!(memory >= 64 << 10, "{memory}");
        assert!(memory <= PluginSettings::default().memory_limit, "{memory}");
        assert_eq!(host.instance_memory("no-such-plugin"), None);
    }
}
