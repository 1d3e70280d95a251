//! The wasmtime side: one engine per host, compiled components, stores with a deadline and
//! a memory cap, and a pool of warm instances per plugin version.
//!
//! Why it looks like this: a decision is on the path of every FHIR request, so a call must
//! cost well under a microsecond when warm (no async machinery, `concurrency_support(false)`;
//! pooling allocator; `InstancePre`), must never outlive its deadline (epoch interruption,
//! ticked by one background thread), and must never take the process down (every failure is
//! a [`Fault`], and the instance that failed is dropped instead of going back to the pool).
//!
//! The deadline counts time a call runs, not time its thread waits for a CPU on a busy
//! machine (`deadline.rs`); a call past it fails closed like any timeout and shows in
//! `hestia_plugin_timeouts_total`.

use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, InstancePre, Linker, LinkerInstance, ResourceType};
use wasmtime::{
    Cache, CacheConfig, Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
    Trap,
};

use super::allowances::{MAX_MEMORY_MIB, WasiAllowances};
use super::bindings::{self, Bound, Pre, Verdict, Version};
use super::guest_io::GuestOutput;
use super::info::PluginKind;
use super::state::{self, HostState};
use super::types::{AudienceRequest, Claims, FhirRequest, Grant, TokenRequest};
use crate::fhir::outcome::Issue;

/// How often the engine's epoch advances: the unit of every deadline.
const TICK: Duration = Duration::from_millis(1);
/// How long the instance made when a plugin loads may take to instantiate: a deadline
/// sized for decisions (a few milliseconds) would refuse a sound plugin whenever the
/// machine is busy at load time, while a start function that never returns is still
/// refused.
const LOAD_INSTANTIATION: Duration = Duration::from_secs(1);
/// Slots of the pooling allocator. Warm instances hold one each while idle.
const POOL_COMPONENT_INSTANCES: u32 = 512;
const POOL_CORE_INSTANCES: u32 = 2048;
const POOL_MEMORIES: u32 = 1024;
const POOL_TABLES: u32 = 2048;

/// Builds the engine every plugin of one host shares.
pub(crate) fn engine(cache_dir: Option<&std::path::Path>) -> Result<Engine, String> {
    let mut config = Config::new();
    // The async component model machinery costs about 0.4 µs per synchronous call.
    config.concurrency_support(false);
    config.epoch_interruption(true);
    // For plugin authors profiling with `perf`: `HESTIA_PLUGIN_PROFILER=perfmap` writes
    // /tmp/perf-PID.map, so that samples in guest code carry the guest's function names.
    if std::env::var_os("HESTIA_PLUGIN_PROFILER").is_some_and(|v| v == "perfmap") {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(POOL_COMPONENT_INSTANCES)
        .total_core_instances(POOL_CORE_INSTANCES)
        .total_memories(POOL_MEMORIES)
        .total_tables(POOL_TABLES)
        .max_memory_size((MAX_MEMORY_MIB as usize) << 20);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    if let Some(dir) = cache_dir {
        // wasmtime's own cache keys entries by the content, the compiler settings and the
        // wasmtime version, which is exactly the key we need, without `unsafe` deserialisation.
        let mut cache = CacheConfig::new();
        cache.with_directory(dir);
        let cache = Cache::new(cache)
            .map_err(|e| format!("compilation cache in {}: {e}", dir.display()))?;
        config.cache(Some(cache));
    }
    Engine::new(&config).map_err(|e| format!("{e:#}"))
}

/// Advances the engine's epoch every [`TICK`] until the engine is gone or the ticker is dropped.
pub(crate) struct Ticker {
    stop: Arc<AtomicBool>,
}

impl Ticker {
    pub(crate) fn start(engine: &Engine) -> Result<Ticker, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let weak = engine.weak();
        let flag = stop.clone();
        thread::Builder::new()
            .name("hestia-plugin-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    thread::sleep(TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(|e| format!("cannot start the epoch thread: {e}"))?;
        Ok(Ticker { stop })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Per-call limits of one plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub deadline: Duration,
    pub memory: usize,
}

/// What can go wrong in one call. Each one fails closed unless the plugin's manifest says
/// `on_error = "allow"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fault {
    Trap(String),
    Timeout(Duration),
    OutOfMemory(usize),
    Instantiate(String),
    /// The plugin's file never loaded; nothing of it can run.
    NotLoaded(String),
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Trap(msg) => write!(f, "trapped: {msg}"),
            Fault::Timeout(d) => write!(f, "timed out after {} ms", d.as_millis()),
            Fault::OutOfMemory(bytes) => write!(f, "exceeded memory limit {} MiB", bytes >> 20),
            Fault::Instantiate(msg) => write!(f, "could not be instantiated: {msg}"),
            Fault::NotLoaded(msg) => write!(f, "not loaded: {msg}"),
        }
    }
}

/// What a plugin's import is given, for linking and for `hestia plugin check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provision {
    /// The contract's own `host` interface.
    Host,
    /// Stand-ins that carry no host data: stdio (output to the host's log, within a budget), environment (no
    /// variables, no arguments), and `insecure-seed`, which Rust's `HashMap` asks for once
    /// per instance to seed its hasher (a plugin using a HashMap must not trap).
    Inert,
    /// Given only with `[wasi] clock = true` and the settings' permission.
    Clock,
    /// The host's randomness with `[wasi] random = true` and the settings' permission;
    /// otherwise a fixed sequence, the same in every instance (`fixed_random`).
    Random,
    /// Anything else: defined, but traps if the plugin calls it.
    Trap,
}

impl Provision {
    pub fn of(import: &str) -> Provision {
        let interface = import.split('@').next().unwrap_or(import);
        match interface {
            i if i.starts_with("hestia:plugin/") => Provision::Host,
            "wasi:io/error"
            | "wasi:io/poll"
            | "wasi:io/streams"
            | "wasi:cli/stdin"
            | "wasi:cli/stdout"
            | "wasi:cli/stderr"
            | "wasi:cli/environment"
            | "wasi:random/insecure-seed" => Provision::Inert,
            "wasi:clocks/wall-clock" | "wasi:clocks/monotonic-clock" => Provision::Clock,
            "wasi:random/random" | "wasi:random/insecure" => Provision::Random,
            _ => Provision::Trap,
        }
    }
}

impl fmt::Display for Provision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Provision::Host => "provided by the host",
            Provision::Inert => {
                "provided inert: no input, output to the log (bounded), no variables"
            }
            Provision::Clock => "needs [wasi] clock = true and the host's permission",
            Provision::Random => {
                "a fixed sequence (not secret); real randomness needs [wasi] random = true \
                 and the host's permission"
            }
            Provision::Trap => "not provided: traps if called",
        })
    }
}

fn linker(
    engine: &Engine,
    component: &Component,
    wasi_granted: WasiAllowances,
) -> wasmtime::Result<Linker<HostState>> {
    let mut l = Linker::new(engine);
    bindings::add_to_linker(&mut l)?;
    state::add_wasi_to_linker(&mut l, wasi_granted)?;
    stub_the_rest(&mut l, engine, component, wasi_granted)?;
    Ok(l)
}

/// Defines every import the plugin is not given as functions that trap when called:
/// toolchains pull in interfaces (environment, exit, filesystem, …) that a plugin may never
/// use, so it loads, and fails closed only if it really calls one. (`Linker::
/// define_unknown_imports_as_traps` would shadow the semver-compatible WASI versions the
/// linker does provide, since it matches names exactly.)
///
/// A stubbed interface may name a resource of one the host does provide (`wasi:filesystem/
/// types` uses `wasi:io/streams`' `input-stream`; interpreter toolchains import both): such
/// a resource is defined as the host's type, so that the two imports agree, as the
/// component says they must. Every other resource of a stubbed interface is a host type
/// nothing can create.
fn stub_the_rest(
    l: &mut Linker<HostState>,
    engine: &Engine,
    component: &Component,
    wasi_granted: WasiAllowances,
) -> wasmtime::Result<()> {
    let ty = component.component_type();
    let imports: Vec<(&str, ComponentItem)> = ty
        .imports(engine)
        .map(|(name, item)| (name, item.ty))
        .collect();
    let given = |import: &str| match Provision::of(import) {
        Provision::Host | Provision::Inert => true,
        Provision::Clock => wasi_granted.clock,
        Provision::Random => true,
        Provision::Trap => false,
    };
    // The resources of provided imports, as the component types them, with the host's type
    // where `host_resource` knows it.
    let mut provided = Vec::new();
    for (import, item) in &imports {
        if let (true, ComponentItem::ComponentInstance(instance)) = (given(import), item) {
            for (name, item) in instance.exports(engine) {
                if let ComponentItem::Resource(ty) = item.ty {
                    provided.push((ty, host_resource(import, name)));
                }
            }
        }
    }
    for (import, item) in &imports {
        if given(import) {
            continue;
        }
        // A world that `use`s a provided interface's resource imports it again at the root,
        // as the same type (`hestia:plugin@0.4.0`'s `fhir-request`): defined by that
        // interface, it must not be defined again.
        if let ComponentItem::Resource(ty) = item
            && provided.iter().any(|(provided, _)| provided == ty)
        {
            continue;
        }
        match item {
            ComponentItem::ComponentInstance(instance) => {
                let mut li = l.instance(import)?;
                for (name, item) in instance.exports(engine) {
                    let host = match &item.ty {
                        ComponentItem::Resource(ty) => provided
                            .iter()
                            .find(|(component_ty, _)| component_ty == ty)
                            .and_then(|(_, host)| *host),
                        _ => None,
                    };
                    match host {
                        Some(host) => li.resource(name, host, |_, _| Ok(()))?,
                        None => stub(&mut li, &format!("{import}#{name}"), name, &item.ty)?,
                    }
                }
            }
            ty => stub(&mut l.root(), import, import, ty)?,
        }
    }
    Ok(())
}

/// The host's type of each resource of the interfaces the linker provides (`guest_io` and
/// wasmtime-wasi's `wasi:io/error`), whatever 0.2.x patch version the import names.
fn host_resource(import: &str, name: &str) -> Option<ResourceType> {
    use wasmtime_wasi_io::poll::DynPollable;
    use wasmtime_wasi_io::streams::{DynInputStream, DynOutputStream, Error};
    let interface = import.split('@').next().unwrap_or(import);
    Some(match (interface, name) {
        ("wasi:io/error", "error") => ResourceType::host::<Error>(),
        ("wasi:io/poll", "pollable") => ResourceType::host::<DynPollable>(),
        ("wasi:io/streams", "input-stream") => ResourceType::host::<DynInputStream>(),
        ("wasi:io/streams", "output-stream") => ResourceType::host::<DynOutputStream>(),
        _ => return None,
    })
}

fn stub(
    li: &mut LinkerInstance<'_, HostState>,
    full_name: &str,
    name: &str,
    item: &ComponentItem,
) -> wasmtime::Result<()> {
    match item {
        ComponentItem::ComponentFunc(_) => {
            let message = format!("`{full_name}` is not available to plugins");
            li.func_new(name, move |_, _, _, _| {
                Err(wasmtime::Error::msg(message.clone()))
            })
        }
        ComponentItem::Resource(_) => li.resource(name, ResourceType::host::<()>(), |_, _| Ok(())),
        _ => Ok(()),
    }
}

/// A component that compiled, with the world it exports and the contract version it was
/// built against.
#[derive(Clone)]
pub(crate) struct Compiled {
    pub component: Component,
    pub kind: PluginKind,
    /// `None` when it imports no `hestia:plugin` interface to tell (each version is tried).
    pub version: Option<Version>,
    pub imports: Vec<String>,
}

/// Compiles `bytes`, reads the contract version from the component's `hestia:plugin`
/// imports and detects the world from its exports.
pub(crate) fn compile(engine: &Engine, bytes: &[u8]) -> Result<Compiled, String> {
    if is_core_module(bytes) {
        return Err("this is a core WebAssembly module, not a component \
                    (build for wasm32-wasip2, or wrap it with `wasm-tools component new`)"
            .to_string());
    }
    let component = Component::new(engine, bytes)
        .map_err(|e| format!("not a valid WebAssembly component: {}", e.root_cause()))?;
    let ty = component.component_type();
    let exports: Vec<String> = ty
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    // Instances and functions: a type a world imports again at its root (a resource it
    // `use`s from an interface) is that interface's, not an import of its own.
    let imports: Vec<String> = ty
        .imports(engine)
        .filter(|(_, item)| !matches!(item.ty, ComponentItem::Resource(_) | ComponentItem::Type(_)))
        .map(|(name, _)| name.to_string())
        .collect();
    let version = Version::of_component(&imports)?;
    let kind = detect_world(&exports)?;
    Ok(Compiled {
        component,
        kind,
        version,
        imports,
    })
}

/// Core modules start with version 1 in the preamble; components use a different layer byte.
fn is_core_module(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[0..4] == *b"\0asm" && bytes[4..8] == [1, 0, 0, 0]
}

fn detect_world(exports: &[String]) -> Result<PluginKind, String> {
    let has = |name: &str| exports.iter().any(|e| e == name);
    if has("grant") && has("authorize") {
        Ok(PluginKind::ScopePolicy)
    } else if has("resolve") && has("accept") {
        Ok(PluginKind::AudienceRule)
    } else if has("validate") {
        Ok(PluginKind::ResourceValidator)
    } else {
        Err(format!(
            "exports [{}] match no world of hestia:plugin ({}) \
             (scope-policy: grant, authorize; audience-rule: resolve, accept; \
             resource-validator: validate)",
            exports.join(", "),
            Version::supported()
        ))
    }
}

struct Warm {
    store: Store<HostState>,
    bound: Bound,
}

/// How one plugin version runs: its settings, which never change for this version.
#[derive(Debug, Clone)]
pub(crate) struct RunSettings {
    pub limits: Limits,
    pub isolation: bool,
    pub config_json: String,
    pub wasi: WasiAllowances,
}

/// One loaded plugin version: ready to call from any thread.
pub(crate) struct Plugin {
    name: Arc<str>,
    kind: PluginKind,
    version: Version,
    engine: Engine,
    config: Arc<str>,
    settings: RunSettings,
    pre: Pre,
    output: Arc<GuestOutput>,
    idle: Mutex<Vec<Warm>>,
    max_idle: usize,
}

/// Epoch ticks in `time`, at least one.
fn ticks_of(time: Duration) -> u64 {
    let ticks = time.as_micros() / TICK.as_micros();
    u64::try_from(ticks).unwrap_or(u64::MAX).max(1)
}

impl Plugin {
    /// Links and pre-instantiates `compiled`, checking its exports' types against the world.
    pub(crate) fn new(
        engine: &Engine,
        name: &str,
        compiled: &Compiled,
        settings: RunSettings,
    ) -> Result<Plugin, String> {
        let linker = linker(engine, &compiled.component, settings.wasi)
            .map_err(|e| format!("cannot link: {e:#}"))?;
        let instance_pre: InstancePre<HostState> = linker
            .instantiate_pre(&compiled.component)
            .map_err(|e| format!("cannot link: {e:#}"))?;
        // The version its imports name; without one, the newest whose world its exports match.
        let candidates = match compiled.version {
            Some(version) => vec![version],
            None => Version::ALL.into_iter().rev().collect(),
        };
        let mut bound = Err(String::new());
        for version in candidates {
            bound = Pre::new(version, compiled.kind, instance_pre.clone())
                .map(|pre| (version, pre))
                .map_err(|e| {
                    format!(
                        "exports do not match the {} world of {version}: {e:#}",
                        compiled.kind
                    )
                });
            if bound.is_ok() {
                break;
            }
        }
        let (version, pre) = bound?;
        let max_idle = thread::available_parallelism()
            .map_or(4, |n| n.get() * 2)
            .clamp(2, 16);
        let plugin = Plugin {
            name: name.into(),
            kind: compiled.kind,
            version,
            engine: engine.clone(),
            config: settings.config_json.as_str().into(),
            settings,
            pre,
            output: GuestOutput::new(name.into()),
            idle: Mutex::new(Vec::new()),
            max_idle,
        };
        // One instance up front: proves it instantiates, and warms the pool off the request path.
        let load_ticks = plugin.ticks().max(ticks_of(LOAD_INSTANTIATION));
        let warm = plugin
            .instantiate(load_ticks)
            .map_err(|fault| match fault {
                Fault::Timeout(_) => format!(
                    "instantiation timed out after {} ms",
                    LOAD_INSTANTIATION
                        .max(plugin.settings.limits.deadline)
                        .as_millis()
                ),
                other => other.to_string(),
            })?;
        if !plugin.settings.isolation {
            plugin
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(warm);
        }
        Ok(plugin)
    }

    /// The contract version whose bindings run this plugin.
    pub(crate) fn version(&self) -> Version {
        self.version
    }

    pub(crate) fn limits(&self) -> Limits {
        self.settings.limits
    }

    /// Linear memory of an idle warm instance (what its last call left), if one is idle.
    pub(crate) fn memory_in_use(&self) -> Option<usize> {
        let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.last().map(|warm| warm.store.data().memory_bytes())
    }

    fn ticks(&self) -> u64 {
        ticks_of(self.settings.limits.deadline)
    }

    /// A fresh instance, its instantiation (start functions included) bounded by `ticks`.
    fn instantiate(&self, ticks: u64) -> Result<Warm, Fault> {
        let state = HostState::new(
            self.name.clone(),
            self.config.clone(),
            self.settings.limits.memory,
            self.output.clone(),
        );
        let mut store = Store::new(&self.engine, state);
        store.limiter(HostState::limiter);
        store.epoch_deadline_callback(|mut s| {
            super::deadline::on_expiry(s.data_mut().overrun_mut())
        });
        store.data_mut().overrun_mut().start(ticks);
        store.set_epoch_deadline(ticks);
        match self.pre.instantiate(&mut store) {
            Ok(bound) => Ok(Warm { store, bound }),
            Err(e) => Err(match self.classify(e, &store) {
                Fault::Trap(msg) => Fault::Instantiate(msg),
                other => other,
            }),
        }
    }

    /// Runs `f` on a warm instance (or a fresh one), under the deadline. An instance that
    /// failed is dropped; one that succeeded goes back to the pool.
    fn run<R>(
        &self,
        f: impl FnOnce(&mut Store<HostState>, &Bound) -> wasmtime::Result<Option<R>>,
    ) -> Result<R, Fault> {
        let idle = if self.settings.isolation {
            None
        } else {
            self.idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop()
        };
        let mut warm = match idle {
            Some(warm) => warm,
            None => self.instantiate(self.ticks())?,
        };
        let ticks = self.ticks();
        warm.store.data_mut().overrun_mut().start(ticks);
        warm.store.set_epoch_deadline(ticks);
        // A panic of host code under the call (a WASI implementation, a binding) unwinds
        // through the guest's frames to here: it fails this call, and the instance goes.
        let called = panic::catch_unwind(AssertUnwindSafe(|| f(&mut warm.store, &warm.bound)));
        let Ok(called) = called else {
            let fault = Fault::Trap("the host failed while serving the plugin's call".into());
            tracing::error!(
                plugin = &*self.name,
                "instance discarded after a panic under its call"
            );
            return Err(fault);
        };
        match called {
            Ok(Some(value)) => {
                if !self.settings.isolation {
                    let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
                    if idle.len() < self.max_idle {
                        idle.push(warm);
                    }
                }
                Ok(value)
            }
            Ok(None) => Err(Fault::Trap(format!(
                "a {} plugin was called through another world",
                self.kind
            ))),
            Err(e) => {
                let fault = self.classify(e, &warm.store);
                tracing::debug!(plugin = &*self.name, "instance discarded after: {fault}");
                Err(fault)
            }
        }
    }

    fn classify(&self, err: wasmtime::Error, store: &Store<HostState>) -> Fault {
        if store.data().memory_exceeded() {
            return Fault::OutOfMemory(self.settings.limits.memory);
        }
        match err.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => Fault::Timeout(self.settings.limits.deadline),
            Some(trap) => Fault::Trap(trap.to_string()),
            None => Fault::Trap(err.root_cause().to_string()),
        }
    }

    pub(crate) fn grant(&self, req: &TokenRequest) -> Result<Grant, Fault> {
        self.run(|store, bound| bound.grant(store, req))
    }

    pub(crate) fn authorize(&self, req: &FhirRequest, claims: &Claims) -> Result<Verdict, Fault> {
        self.run(|store, bound| bound.authorize(store, req, claims))
    }

    pub(crate) fn resolve(
        &self,
        req: &AudienceRequest,
    ) -> Result<Result<Vec<String>, String>, Fault> {
        self.run(|store, bound| bound.resolve(store, req))
    }

    pub(crate) fn accept(
        &self,
        audiences: &[String],
        base_url: &str,
    ) -> Result<Result<(), String>, Fault> {
        self.run(|store, bound| bound.accept(store, audiences, base_url))
    }

    pub(crate) fn validate(
        &self,
        resource_type: &str,
        resource_json: &str,
    ) -> Result<Vec<Issue>, Fault> {
        self.run(|store, bound| bound.validate(store, resource_type, resource_json))
    }
}
