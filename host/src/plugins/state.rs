//! The state of one plugin instance's store (`HostState`): what the contract's `host`
//! interface and the WASI interfaces a plugin is given work on, and its memory cap. The
//! runtime creates one per instance; the bindings of every contract version implement
//! `host` on it. It names neither, so that both can name it.

use std::sync::Arc;

use wasmtime::component::{HasData, Linker, ResourceTable};
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::cli::{WasiCli, WasiCliCtx, WasiCliCtxView};
use wasmtime_wasi::clocks::{WasiClocks, WasiClocksCtx, WasiClocksCtxView};
use wasmtime_wasi::p2::bindings::sync as wasi;
use wasmtime_wasi::random::{WasiRandom, WasiRandomCtx};

use super::allowances::WasiAllowances;
use super::deadline::Overrun;
use super::fixed_random::{Fixed, FixedRandom};
use super::guest_io::{GuestIo, GuestIoView, GuestOutput};
use super::types::{Claims, FhirRequest};

/// The state of one store: as narrow as the contract allows. WASI context beyond logged
/// stdio exists only when the manifest asked for it and the settings allowed it.
pub(crate) struct HostState {
    name: Arc<str>,
    config: Arc<str>,
    limiter: MemoryCap,
    table: ResourceTable,
    /// Where the guest's stdout and stderr go: the host's log, under the plugin's name and
    /// within its budget (`guest_io`). Rust's `std` writes to stderr when it panics.
    output: Arc<GuestOutput>,
    /// Empty stdin, no environment variables, no arguments: Rust's `std` reads the
    /// environment. None of it carries host data.
    cli: WasiCliCtx,
    clocks: Option<WasiClocksCtx>,
    random: Option<WasiRandomCtx>,
    /// `wasi:random` when the plugin is given no randomness (`fixed_random`).
    fixed_random: FixedRandom,
    /// The running call's progress past its deadline (`deadline`).
    overrun: Overrun,
    /// What the running `authorize` call of a plugin of contract 0.4.0 or later reads
    /// through the `fhir-request` and `claims` resources it borrows.
    authorizing: Option<(FhirRequest, Claims)>,
}

/// Store limits that remember whether the memory cap was hit, so that the trap that follows
/// (Rust aborts on allocation failure) can be reported as what it is.
struct MemoryCap {
    limits: StoreLimits,
    exceeded: bool,
    /// Bytes of linear memory the instance holds: what the cap is checked against.
    bytes: usize,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        if !allowed {
            self.exceeded = true;
        } else if maximum.is_none_or(|max| desired <= max) {
            // Also called for each memory's initial size, with `current` 0.
            self.bytes += desired.saturating_sub(current);
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

impl HostState {
    /// The state of a fresh instance of plugin `name`: its configuration, a memory cap of
    /// `memory` bytes, its output to `output`, and no WASI context yet.
    pub(crate) fn new(
        name: Arc<str>,
        config: Arc<str>,
        memory: usize,
        output: Arc<GuestOutput>,
    ) -> HostState {
        HostState {
            name,
            config,
            limiter: MemoryCap {
                limits: StoreLimitsBuilder::new().memory_size(memory).build(),
                exceeded: false,
                bytes: 0,
            },
            table: ResourceTable::new(),
            output,
            cli: WasiCliCtx::default(),
            clocks: None,
            random: None,
            fixed_random: FixedRandom::default(),
            overrun: Overrun::default(),
            authorizing: None,
        }
    }

    /// The store's limiter (`Store::limiter`).
    pub(crate) fn limiter(&mut self) -> &mut dyn ResourceLimiter {
        &mut self.limiter
    }

    /// Bytes of linear memory the instance holds.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.limiter.bytes
    }

    /// Whether the instance hit its memory cap: the trap that follows is that.
    pub(crate) fn memory_exceeded(&self) -> bool {
        self.limiter.exceeded
    }

    /// The running call's progress past its deadline.
    pub(crate) fn overrun_mut(&mut self) -> &mut Overrun {
        &mut self.overrun
    }

    /// Sets what the `fhir-request` and `claims` resources answer during an `authorize`
    /// call (`None` once it returns).
    pub(crate) fn set_authorizing(&mut self, call: Option<(FhirRequest, Claims)>) {
        self.authorizing = call;
    }

    /// The request and claims of the running `authorize` call. A guest holds a borrowed
    /// handle only during that call (the component model traps one that outlives it) and
    /// cannot make one, so this is an error only for a host that calls out of turn.
    pub(crate) fn authorizing(&self) -> wasmtime::Result<&(FhirRequest, Claims)> {
        self.authorizing
            .as_ref()
            .ok_or_else(|| wasmtime::Error::msg("no authorize call is running"))
    }
}

/// What the `host` interface of every contract version does (`bindings` calls these).
impl HostState {
    /// A guest's log line, in the host's log with the plugin's name.
    pub(crate) fn log_line(&self, level: tracing::Level, message: &str) {
        let plugin = &*self.name;
        match level {
            tracing::Level::TRACE => tracing::trace!(plugin, "{message}"),
            tracing::Level::DEBUG => tracing::debug!(plugin, "{message}"),
            tracing::Level::INFO => tracing::info!(plugin, "{message}"),
            tracing::Level::WARN => tracing::warn!(plugin, "{message}"),
            tracing::Level::ERROR => tracing::error!(plugin, "{message}"),
        }
    }

    pub(crate) fn config_json(&self) -> String {
        self.config.to_string()
    }

    /// Seconds since the Unix epoch (0.2.0's `host.now()`).
    pub(crate) fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

struct Table;

impl HasData for Table {
    type Data<'a> = &'a mut ResourceTable;
}

fn io_view(s: &mut HostState) -> GuestIoView<'_> {
    GuestIoView {
        table: &mut s.table,
        output: &s.output,
    }
}

fn cli_view(s: &mut HostState) -> WasiCliCtxView<'_> {
    WasiCliCtxView {
        ctx: &mut s.cli,
        table: &mut s.table,
    }
}

fn clocks_view(s: &mut HostState) -> WasiClocksCtxView<'_> {
    WasiClocksCtxView {
        ctx: s.clocks.get_or_insert_with(WasiClocksCtx::default),
        table: &mut s.table,
    }
}

fn random_view(s: &mut HostState) -> &mut WasiRandomCtx {
    s.random.get_or_insert_with(WasiRandomCtx::default)
}

/// The WASI interfaces a plugin is given (`runtime::Provision`): inert stdio, environment
/// and `insecure-seed` always, clocks and the host's randomness when `granted`, else the
/// fixed random sequence.
pub(crate) fn add_wasi_to_linker(
    l: &mut Linker<HostState>,
    granted: WasiAllowances,
) -> wasmtime::Result<()> {
    wasi::io::error::add_to_linker::<_, Table>(l, |s| &mut s.table)?;
    wasi::io::poll::add_to_linker::<_, GuestIo>(l, io_view)?;
    wasi::io::streams::add_to_linker::<_, GuestIo>(l, io_view)?;
    wasi::cli::stdin::add_to_linker::<_, WasiCli>(l, cli_view)?;
    wasi::cli::stdout::add_to_linker::<_, GuestIo>(l, io_view)?;
    wasi::cli::stderr::add_to_linker::<_, GuestIo>(l, io_view)?;
    wasi::cli::environment::add_to_linker::<_, WasiCli>(l, cli_view)?;
    wasi::random::insecure_seed::add_to_linker::<_, WasiRandom>(l, random_view)?;
    if granted.clock {
        wasi::clocks::wall_clock::add_to_linker::<_, WasiClocks>(l, clocks_view)?;
        wasi::clocks::monotonic_clock::add_to_linker::<_, WasiClocks>(l, clocks_view)?;
    }
    if granted.random {
        wasi::random::random::add_to_linker::<_, WasiRandom>(l, random_view)?;
        wasi::random::insecure::add_to_linker::<_, WasiRandom>(l, random_view)?;
    } else {
        wasi::random::random::add_to_linker::<_, Fixed>(l, |s| &mut s.fixed_random)?;
        wasi::random::insecure::add_to_linker::<_, Fixed>(l, |s| &mut s.fixed_random)?;
    }
    Ok(())
}
