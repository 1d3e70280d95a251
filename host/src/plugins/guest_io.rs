//! `wasi:io` streams and polls, and `wasi:cli` stdout/stderr, for plugins: without tokio,
//! and with the guest's output in the host's log.
//!
//! Why not wasmtime-wasi's synchronous bindings: they run every call that may block (a
//! `blocking-write-and-flush`, even the drop of a stream) through `in_tokio`, which calls
//! `Handle::block_on` and panics on a tokio worker ("Cannot start a runtime from within a
//! runtime"). Plugin calls run on those workers, and Rust's `std` writes a panic message to
//! stderr, so any guest that printed or panicked took its request down with it.
//!
//! Everything a plugin is given here is ready at once: output is accepted whole (and logged,
//! within a budget), stdin is empty, clocks' pollables are the only ones that could wait.
//! So a call that may block polls its future exactly once. If it is not ready, the plugin
//! asked to wait inside a bounded decision, which is a trap, not a hang.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use wasmtime::component::{HasData, Resource, ResourceTable};
use wasmtime_wasi::p2::bindings::sync::cli::{stderr, stdout};
use wasmtime_wasi::p2::bindings::sync::io::{poll, streams};
use wasmtime_wasi_io::bindings::wasi::io::poll as async_poll;
use wasmtime_wasi_io::bindings::wasi::io::streams::{
    Host as AsyncStreams, HostInputStream as AsyncInput, HostOutputStream as AsyncOutput,
};
use wasmtime_wasi_io::bytes::Bytes;
use wasmtime_wasi_io::poll::{DynPollable, Pollable};
use wasmtime_wasi_io::streams::{
    DynInputStream, DynOutputStream, OutputStream, StreamError, StreamResult,
};

/// Longest line of guest output that reaches the log; the rest of the line is cut.
const MAX_LINE_BYTES: usize = 1024;
/// Lines a plugin may log in a burst, and per second after that (all its instances together).
const BURST_LINES: f64 = 100.0;
const LINES_PER_SEC: f64 = 20.0;

/// The `HasData` of these interfaces: the store's table and its plugin's output budget.
pub(crate) struct GuestIo;

impl HasData for GuestIo {
    type Data<'a> = GuestIoView<'a>;
}

pub(crate) struct GuestIoView<'a> {
    pub table: &'a mut ResourceTable,
    pub output: &'a Arc<GuestOutput>,
}

/// Polls `f` once. Ready: its value. Pending: the plugin waits for something that is not
/// there, which a decision under a deadline must not do.
fn at_once<F: Future>(what: &str, f: F) -> wasmtime::Result<F::Output> {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(value) => Ok(value),
        Poll::Pending => Err(wasmtime::format_err!(
            "{what} would wait for something that is not ready; plugins may not block"
        )),
    }
}

/// [`at_once`] for calls whose errors are stream errors.
fn stream_at_once<T, F: Future<Output = StreamResult<T>>>(what: &str, f: F) -> StreamResult<T> {
    at_once(what, f).map_err(StreamError::Trap)?
}

impl streams::Host for GuestIoView<'_> {
    fn convert_stream_error(&mut self, err: StreamError) -> wasmtime::Result<streams::StreamError> {
        Ok(AsyncStreams::convert_stream_error(self.table, err)?.into())
    }
}

impl streams::HostOutputStream for GuestIoView<'_> {
    fn drop(&mut self, stream: Resource<DynOutputStream>) -> wasmtime::Result<()> {
        at_once("dropping a stream", AsyncOutput::drop(self.table, stream))?
    }

    fn check_write(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<u64> {
        AsyncOutput::check_write(self.table, stream)
    }

    fn write(&mut self, stream: Resource<DynOutputStream>, bytes: Vec<u8>) -> StreamResult<()> {
        AsyncOutput::write(self.table, stream, bytes)
    }

    fn blocking_write_and_flush(
        &mut self,
        stream: Resource<DynOutputStream>,
        bytes: Vec<u8>,
    ) -> StreamResult<()> {
        stream_at_once(
            "blocking-write-and-flush",
            AsyncOutput::blocking_write_and_flush(self.table, stream, bytes),
        )
    }

    fn blocking_write_zeroes_and_flush(
        &mut self,
        stream: Resource<DynOutputStream>,
        len: u64,
    ) -> StreamResult<()> {
        stream_at_once(
            "blocking-write-zeroes-and-flush",
            AsyncOutput::blocking_write_zeroes_and_flush(self.table, stream, len),
        )
    }

    fn subscribe(
        &mut self,
        stream: Resource<DynOutputStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        AsyncOutput::subscribe(self.table, stream)
    }

    fn write_zeroes(&mut self, stream: Resource<DynOutputStream>, len: u64) -> StreamResult<()> {
        AsyncOutput::write_zeroes(self.table, stream, len)
    }

    fn flush(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<()> {
        AsyncOutput::flush(self.table, stream)
    }

    fn blocking_flush(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<()> {
        stream_at_once(
            "blocking-flush",
            AsyncOutput::blocking_flush(self.table, stream),
        )
    }

    fn splice(
        &mut self,
        dst: Resource<DynOutputStream>,
        src: Resource<DynInputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        AsyncOutput::splice(self.table, dst, src, len)
    }

    fn blocking_splice(
        &mut self,
        dst: Resource<DynOutputStream>,
        src: Resource<DynInputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        stream_at_once(
            "blocking-splice",
            AsyncOutput::blocking_splice(self.table, dst, src, len),
        )
    }
}

impl streams::HostInputStream for GuestIoView<'_> {
    fn drop(&mut self, stream: Resource<DynInputStream>) -> wasmtime::Result<()> {
        at_once("dropping a stream", AsyncInput::drop(self.table, stream))?
    }

    fn read(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<Vec<u8>> {
        AsyncInput::read(self.table, stream, len)
    }

    fn blocking_read(
        &mut self,
        stream: Resource<DynInputStream>,
        len: u64,
    ) -> StreamResult<Vec<u8>> {
        stream_at_once(
            "blocking-read",
            AsyncInput::blocking_read(self.table, stream, len),
        )
    }

    fn skip(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        AsyncInput::skip(self.table, stream, len)
    }

    fn blocking_skip(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        stream_at_once(
            "blocking-skip",
            AsyncInput::blocking_skip(self.table, stream, len),
        )
    }

    fn subscribe(
        &mut self,
        stream: Resource<DynInputStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        AsyncInput::subscribe(self.table, stream)
    }
}

impl poll::Host for GuestIoView<'_> {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> wasmtime::Result<Vec<u32>> {
        at_once("poll", async_poll::Host::poll(self.table, pollables))?
    }
}

impl poll::HostPollable for GuestIoView<'_> {
    fn ready(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<bool> {
        at_once(
            "pollable.ready",
            async_poll::HostPollable::ready(self.table, pollable),
        )?
    }

    fn block(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        at_once(
            "pollable.block",
            async_poll::HostPollable::block(self.table, pollable),
        )?
    }

    fn drop(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        async_poll::HostPollable::drop(self.table, pollable)
    }
}

impl stdout::Host for GuestIoView<'_> {
    fn get_stdout(&mut self) -> wasmtime::Result<Resource<DynOutputStream>> {
        let stream: DynOutputStream = Box::new(Captured::new(Stream::Stdout, self.output));
        Ok(self.table.push(stream)?)
    }
}

impl stderr::Host for GuestIoView<'_> {
    fn get_stderr(&mut self) -> wasmtime::Result<Resource<DynOutputStream>> {
        let stream: DynOutputStream = Box::new(Captured::new(Stream::Stderr, self.output));
        Ok(self.table.push(stream)?)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Lines of each plugin's output kept for the admin console's Plugins page.
const RECENT_LINES: usize = 50;

/// The last [`RECENT_LINES`] lines of each plugin's output that reached the log, by plugin
/// name (a reloaded plugin keeps its earlier lines, those of a crash included).
static RECENT: LazyLock<Mutex<HashMap<Arc<str>, VecDeque<String>>>> =
    LazyLock::new(Default::default);

/// The last lines (at most [`RECENT_LINES`], oldest first) plugin `plugin` wrote, each as
/// `stream: text`.
pub fn recent_output(plugin: &str) -> Vec<String> {
    let recent = RECENT.lock().unwrap_or_else(PoisonError::into_inner);
    recent
        .get(plugin)
        .map(|lines| lines.iter().cloned().collect())
        .unwrap_or_default()
}

fn remember(plugin: &Arc<str>, line: String) {
    let mut recent = RECENT.lock().unwrap_or_else(PoisonError::into_inner);
    let lines = recent.entry(plugin.clone()).or_default();
    if lines.len() == RECENT_LINES {
        lines.pop_front();
    }
    lines.push_back(line);
}

/// What one plugin writes to stdout and stderr, as lines of the host's log under its name:
/// at most [`BURST_LINES`] at once and [`LINES_PER_SEC`] after that, each cut at
/// [`MAX_LINE_BYTES`]. Lines over the budget are counted, and the count is logged when the
/// budget allows a line again, so that a chatty plugin costs neither disk nor request time.
pub(crate) struct GuestOutput {
    plugin: Arc<str>,
    budget: Mutex<Budget>,
}

struct Budget {
    lines: f64,
    at: Instant,
    dropped: u64,
}

impl GuestOutput {
    pub(crate) fn new(plugin: Arc<str>) -> Arc<GuestOutput> {
        Arc::new(GuestOutput {
            plugin,
            budget: Mutex::new(Budget {
                lines: BURST_LINES,
                at: Instant::now(),
                dropped: 0,
            }),
        })
    }

    fn line(&self, stream: Stream, line: &[u8], cut: bool) {
        let earlier_drops = {
            let mut budget = self.budget.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            let refill = now.duration_since(budget.at).as_secs_f64() * LINES_PER_SEC;
            budget.lines = (budget.lines + refill).min(BURST_LINES);
            budget.at = now;
            if budget.lines < 1.0 {
                budget.dropped += 1;
                metrics::counter!(
                    "hestia_plugin_output_lines_dropped_total",
                    "plugin" => self.plugin.to_string()
                )
                .increment(1);
                return;
            }
            budget.lines -= 1.0;
            std::mem::take(&mut budget.dropped)
        };
        let plugin = &*self.plugin;
        if earlier_drops > 0 {
            tracing::warn!(
                plugin,
                "{earlier_drops} lines of the plugin's output were dropped \
                 (at most {LINES_PER_SEC} lines per second reach the log)"
            );
        }
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r');
        let cut = if cut { " [line cut]" } else { "" };
        let stream = stream.name();
        remember(&self.plugin, format!("{stream}: {text}{cut}"));
        match stream {
            "stderr" => tracing::warn!(plugin, stream, "{text}{cut}"),
            _ => tracing::info!(plugin, stream, "{text}{cut}"),
        }
    }
}

/// One stdout or stderr stream of one instance: splits what the guest writes into lines.
struct Captured {
    stream: Stream,
    output: Arc<GuestOutput>,
    partial: Vec<u8>,
    cut: bool,
}

impl Captured {
    fn new(stream: Stream, output: &Arc<GuestOutput>) -> Captured {
        Captured {
            stream,
            output: output.clone(),
            partial: Vec::new(),
            cut: false,
        }
    }

    fn take(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let (part, rest, ended) = match bytes.iter().position(|&b| b == b'\n') {
                Some(i) => (&bytes[..i], &bytes[i + 1..], true),
                None => (bytes, &[][..], false),
            };
            let room = MAX_LINE_BYTES - self.partial.len();
            if part.len() > room {
                self.cut = true;
            }
            self.partial
                .extend_from_slice(&part[..part.len().min(room)]);
            if ended {
                self.emit();
            }
            bytes = rest;
        }
    }

    fn emit(&mut self) {
        self.output.line(self.stream, &self.partial, self.cut);
        self.partial.clear();
        self.cut = false;
    }
}

impl Drop for Captured {
    fn drop(&mut self) {
        if !self.partial.is_empty() {
            self.emit();
        }
    }
}

#[wasmtime_wasi_io::async_trait]
impl Pollable for Captured {
    async fn ready(&mut self) {}
}

impl OutputStream for Captured {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.take(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        if !self.partial.is_empty() {
            self.emit();
        }
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_cut_and_bounded() {
        let output = GuestOutput::new("chatty".into());
        let mut captured = Captured::new(Stream::Stdout, &output);
        captured.take(b"one\ntw");
        assert_eq!(captured.partial, b"tw");
        captured.take(b"o\n");
        assert!(captured.partial.is_empty());
        captured.take(&vec![b'x'; 3 * MAX_LINE_BYTES]);
        assert_eq!(captured.partial.len(), MAX_LINE_BYTES);
        assert!(captured.cut);
        captured.take(b"\n");
        assert!(!captured.cut);
        // Two lines and the cut one took three of the burst; the rest of the burst goes,
        // then lines are dropped and counted.
        for _ in 0..200 {
            captured.take(b"spam\n");
        }
        let dropped = output.budget.lock().unwrap().dropped;
        assert!((100..=103).contains(&dropped), "{dropped}");
        // The lines that reached the log: the last of them are kept, the oldest dropped.
        let recent = recent_output("chatty");
        assert_eq!(recent.len(), RECENT_LINES);
        assert_eq!(recent.last().map(String::as_str), Some("stdout: spam"));
        assert!(!recent.iter().any(|l| l.starts_with("stdout: one")));
    }
}
