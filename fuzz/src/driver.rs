//! The stable-toolchain driver. A supervisor process runs a worker process per target;
//! the worker mutates and generates inputs and runs the target on a thread with the stack
//! of a tokio worker (2 MiB), so that a recursion deep enough to abort `hestia serve`
//! aborts the worker too. Before each execution the worker writes the input to a file;
//! when the worker dies (stack overflow, abort) or stops answering (hang), the supervisor
//! saves that file as the finding and starts a new worker. Panics are caught in the worker
//! and saved there.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::random::Gen;
use crate::targets::Target;

/// The stack of a tokio worker thread, where `hestia serve` parses requests.
pub const STACK: usize = 2 * 1024 * 1024;
/// An input that takes longer than this is a finding ("slow"). A debug build runs the
/// hestia crate unoptimised, where one patch of the largest R4 example takes most of a
/// second on a loaded machine: there the bar is higher, so that `scripts/test` does not
/// fail on timing.
pub const SLOW: Duration = if cfg!(debug_assertions) {
    Duration::from_secs(5)
} else {
    Duration::from_secs(1)
};
/// A worker whose input runs longer than this is stopped, and the input saved ("hang").
pub const HANG: Duration = Duration::from_secs(20);
/// The worker's exit status when its watchdog stops it.
const HANG_EXIT: i32 = 86;
/// Inputs larger than this are not kept in the working corpus.
const MAX_KEPT: usize = 256 * 1024;

/// What a run did.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub execs: u64,
    pub findings: Vec<PathBuf>,
}

/// The message and place of the last panic on this thread, set by [`quiet_panics`].
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Replaces the panic hook by one that records the panic instead of printing it: a target
/// may panic thousands of times.
pub fn quiet_panics() {
    panic::set_hook(Box::new(|info| {
        let backtrace = std::backtrace::Backtrace::force_capture();
        *LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(format!("{info}\n{backtrace}"));
    }));
}

/// Runs `target` on `input`; `Err` holds the panic's message and backtrace.
pub fn execute(target: &Target, input: &[u8]) -> Result<(), String> {
    panic::catch_unwind(AssertUnwindSafe(|| (target.run)(input))).map_err(|_| {
        LAST_PANIC
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or_else(|| "a panic".into())
    })
}

/// Runs `f` on a thread with `stack` bytes of stack and waits for it.
pub fn on_stack<T: Send + 'static>(stack: usize, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .name("fuzz-target".into())
        .stack_size(stack)
        .spawn(f)
        .expect("a thread")
        .join()
        .unwrap_or_else(|e| {
            // Outside `execute` (a generator, the driver): the quiet hook kept the message.
            if let Some(message) = LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()).take() {
                eprintln!("{message}");
            }
            panic::resume_unwind(e)
        })
}

/// Saves an input and what happened under `dir/TARGET/KIND-HASH` (and `.txt`).
pub fn save(dir: &Path, target: &str, kind: &str, input: &[u8], what: &str) -> PathBuf {
    let hash = hex::encode(&Sha256::digest(input)[..8]);
    let dir = dir.join(target);
    std::fs::create_dir_all(&dir).expect("the findings directory can be created");
    let path = dir.join(format!("{kind}-{hash}"));
    std::fs::write(&path, input).expect("a finding can be written");
    std::fs::write(path.with_extension("txt"), what).expect("a finding can be written");
    path
}

/// The corpus a worker starts from: the target's seeds and the files of `extra`.
pub fn corpus(target: &Target, extra: Option<&Path>) -> Vec<Vec<u8>> {
    let mut corpus = (target.seeds)();
    if let Some(dir) = extra.and_then(|d| std::fs::read_dir(d.join(target.name)).ok()) {
        corpus.extend(dir.flatten().filter_map(|e| std::fs::read(e.path()).ok()));
    }
    if corpus.is_empty() {
        corpus.push(Vec::new());
    }
    corpus
}

/// The next input: a fresh one from the generator, or a mutation of the corpus.
fn next_input(target: &Target, g: &mut Gen, corpus: &[Vec<u8>]) -> Vec<u8> {
    if g.chance(3) {
        return (target.generate)(g);
    }
    let mut input = g.pick(corpus).clone();
    let other = g.pick(corpus).clone();
    g.mutate_bytes(&mut input, target.dictionary, &other);
    input
}

/// Where the worker reports progress: the input in flight and the executions so far.
pub struct Flight {
    file: File,
    started_ms: AtomicU64,
    origin: Instant,
}

impl Flight {
    pub fn create(path: &Path) -> std::io::Result<Self> {
        Ok(Self {
            file: File::create(path)?,
            started_ms: AtomicU64::new(0),
            origin: Instant::now(),
        })
    }

    /// Written before each execution: `[execs: u64 LE][len: u64 LE][input]`, one write.
    fn record(&self, execs: u64, input: &[u8]) {
        let mut buf = Vec::with_capacity(16 + input.len());
        buf.extend_from_slice(&execs.to_le_bytes());
        buf.extend_from_slice(&(input.len() as u64).to_le_bytes());
        buf.extend_from_slice(input);
        let _ = self.file.write_all_at(&buf, 0);
        let now = self.origin.elapsed().as_millis() as u64 + 1;
        self.started_ms.store(now, Ordering::Release);
    }

    fn done(&self) {
        self.started_ms.store(0, Ordering::Release);
    }

    /// How long the input in flight has run, if one is.
    pub fn running_for(&self) -> Option<Duration> {
        let started = self.started_ms.load(Ordering::Acquire);
        (started != 0).then(|| {
            let now = self.origin.elapsed().as_millis() as u64 + 1;
            Duration::from_millis(now.saturating_sub(started))
        })
    }

    /// Reads what a (dead) worker last recorded.
    pub fn read(path: &Path) -> Option<(u64, Vec<u8>)> {
        let mut bytes = Vec::new();
        File::open(path).ok()?.read_to_end(&mut bytes).ok()?;
        let execs = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
        let len = u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?) as usize;
        Some((execs, bytes.get(16..16 + len)?.to_vec()))
    }
}

/// What one fuzzing loop runs: until `until` or `max_execs`, from `seed`.
pub struct Budget {
    pub until: Instant,
    pub max_execs: u64,
    pub seed: u64,
    /// Whether an input slower than [`SLOW`] is a finding (not in tests: timing depends
    /// on the machine's load).
    pub report_slow: bool,
}

/// The fuzzing loop, in process. Panics and slow inputs are saved under `findings`.
pub fn fuzz_loop(
    target: &Target,
    budget: &Budget,
    corpus: Vec<Vec<u8>>,
    flight: Option<&Flight>,
    findings: &Path,
) -> Summary {
    let mut g = Gen::new(budget.seed);
    let mut corpus = corpus;
    let seeds = corpus.len();
    let mut summary = Summary::default();
    let mut seen_panics = std::collections::HashSet::new();
    while summary.execs < budget.max_execs && Instant::now() < budget.until {
        // The seeds as they are, one in four until all ran; then mutations and fresh inputs.
        let input = match corpus.get(summary.execs as usize / 4) {
            Some(seed) if summary.execs % 4 == 0 && (summary.execs as usize / 4) < seeds => {
                seed.clone()
            }
            _ => next_input(target, &mut g, &corpus),
        };
        if let Some(flight) = flight {
            flight.record(summary.execs, &input);
        }
        let start = Instant::now();
        let outcome = execute(target, &input);
        let took = start.elapsed();
        if let Some(flight) = flight {
            flight.done();
        }
        summary.execs += 1;
        if let Err(message) = outcome {
            // One file per panic location: the same bug is found again and again.
            let place = message.lines().next().unwrap_or_default().to_owned();
            if seen_panics.insert(place) {
                summary
                    .findings
                    .push(save(findings, target.name, "panic", &input, &message));
            }
        } else if budget.report_slow && took > SLOW {
            let what = format!("took {took:?} (more than {SLOW:?})");
            summary
                .findings
                .push(save(findings, target.name, "slow", &input, &what));
        }
        if input.len() <= MAX_KEPT && g.chance(64) {
            if corpus.len() < 4096 {
                corpus.push(input);
            } else {
                let i = seeds + g.below(corpus.len() - seeds);
                corpus[i] = input;
            }
        }
    }
    summary
}

/// The worker process: the loop on a small stack, and a watchdog for hangs.
pub fn worker(
    target: &'static Target,
    seconds: u64,
    seed: u64,
    flight_path: &Path,
    findings: &Path,
    extra: Option<&Path>,
) -> Summary {
    quiet_panics();
    let flight: &'static Flight = Box::leak(Box::new(
        Flight::create(flight_path).expect("the flight file can be created"),
    ));
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_millis(100));
            if flight.running_for().is_some_and(|t| t > HANG) {
                std::process::exit(HANG_EXIT);
            }
        }
    });
    let corpus = corpus(target, extra);
    let budget = Budget {
        until: Instant::now() + Duration::from_secs(seconds),
        max_execs: u64::MAX,
        seed,
        report_slow: true,
    };
    let findings = findings.to_path_buf();
    on_stack(STACK, move || {
        fuzz_loop(target, &budget, corpus, Some(flight), &findings)
    })
}

/// Options of a supervised run of one target.
pub struct RunOptions<'a> {
    pub seconds: u64,
    pub seed: u64,
    pub findings: &'a Path,
    pub corpus: Option<&'a Path>,
    /// Deaths (overflow, abort, hang) after which the target stops.
    pub max_deaths: u32,
}

/// Runs one target for `seconds` in worker processes, restarting a worker that dies.
pub fn supervise(target: &Target, options: &RunOptions) -> Summary {
    let until = Instant::now() + Duration::from_secs(options.seconds);
    let flight = std::env::temp_dir().join(format!(
        "hestia-fuzz-{}-{}",
        target.name,
        std::process::id()
    ));
    let mut total = Summary::default();
    let mut deaths = 0;
    let mut seed = options.seed;
    while Instant::now() < until && deaths < options.max_deaths {
        let left = until
            .saturating_duration_since(Instant::now())
            .as_secs()
            .max(1);
        let mut command = Command::new(std::env::current_exe().expect("own path"));
        command
            .args([
                "worker",
                target.name,
                "--time",
                &left.to_string(),
                "--seed",
                &seed.to_string(),
            ])
            .arg("--flight")
            .arg(&flight)
            .arg("--findings")
            .arg(options.findings)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(corpus) = options.corpus {
            command.arg("--corpus").arg(corpus);
        }
        let output = command.output().expect("the worker starts");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let report: Option<(u64, Vec<PathBuf>)> =
            serde_json::from_str::<serde_json::Value>(stdout.trim())
                .ok()
                .map(|v| {
                    let execs = v["execs"].as_u64().unwrap_or(0);
                    let found = v["findings"].as_array().into_iter().flatten();
                    (
                        execs,
                        found
                            .filter_map(|f| f.as_str().map(PathBuf::from))
                            .collect(),
                    )
                });
        if let (true, Some((execs, found))) = (output.status.success(), report) {
            total.execs += execs;
            total.findings.extend(found);
            break;
        }
        deaths += 1;
        seed = seed.wrapping_add(0x9e37_79b9);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: String = stderr
            .chars()
            .rev()
            .take(4000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let (kind, what) = match output.status.code() {
            Some(HANG_EXIT) => ("hang", format!("ran longer than {HANG:?}")),
            _ => {
                let first = stderr
                    .lines()
                    .find(|l| l.contains("panicked at") || l.contains("overflowed"))
                    .or_else(|| stderr.lines().find(|l| !l.trim().is_empty()))
                    .unwrap_or_default();
                (
                    "crash",
                    format!("the worker died ({}): {first}\n{tail}", output.status),
                )
            }
        };
        if let Some((execs, input)) = Flight::read(&flight) {
            total.execs += execs + 1;
            total
                .findings
                .push(save(options.findings, target.name, kind, &input, &what));
        }
        // Panics and slow inputs the dead worker saved are on disk already.
        total
            .findings
            .extend(saved_since(options.findings, target.name, &total.findings));
    }
    let _ = std::fs::remove_file(&flight);
    total.findings.sort();
    total.findings.dedup();
    total
}

/// Findings the worker saved that the summary does not list yet.
fn saved_since(dir: &Path, target: &str, known: &[PathBuf]) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir.join(target)) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_none() && !known.contains(p))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name.starts_with("panic-") || name.starts_with("slow-")
        })
        .collect();
    found.sort();
    found
}
