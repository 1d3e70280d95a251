//! `hestia-fuzz`: runs the fuzz targets on the stable toolchain. See the README's "Fuzzing".

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hestia_fuzz::driver::{self, RunOptions};
use hestia_fuzz::targets::{self, TARGETS, Target};

#[derive(Parser)]
#[command(
    name = "hestia-fuzz",
    about = "Fuzzes hestia's parsers of untrusted input"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The targets and what each one feeds.
    List,
    /// Fuzzes targets (`all`, or names) one after another; fails when something was found.
    Run {
        #[arg(required = true)]
        targets: Vec<String>,
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        time: u64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Where findings go: TARGET/{panic,crash,hang,slow}-HASH and a .txt beside each
        /// [default: fuzz/findings].
        #[arg(long)]
        findings: Option<PathBuf>,
        /// More starting inputs: DIR/TARGET/*.
        #[arg(long)]
        corpus: Option<PathBuf>,
        /// Worker deaths (stack overflow, abort, hang) after which a target stops.
        #[arg(long, default_value_t = 3)]
        max_deaths: u32,
    },
    /// Runs a target once on each file, on a 2 MiB stack, and says what happened.
    Replay { target: String, files: Vec<PathBuf> },
    /// One worker process (started by `run`).
    #[command(hide = true)]
    Worker {
        target: String,
        #[arg(long)]
        time: u64,
        #[arg(long)]
        seed: u64,
        #[arg(long)]
        flight: PathBuf,
        #[arg(long)]
        findings: PathBuf,
        #[arg(long)]
        corpus: Option<PathBuf>,
    },
}

fn default_findings() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("findings")
}

fn target(name: &str) -> Result<&'static Target, String> {
    targets::find(name).ok_or_else(|| {
        let names: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
        format!("no target {name:?}; the targets are {}", names.join(", "))
    })
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hestia-fuzz: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(command: Cmd) -> Result<ExitCode, String> {
    match command {
        Cmd::List => {
            for t in TARGETS {
                println!("{:22} {}", t.name, t.about);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Run {
            targets,
            time,
            seed,
            findings,
            corpus,
            max_deaths,
        } => {
            let chosen: Vec<&Target> = if targets.iter().any(|t| t == "all") {
                TARGETS.iter().collect()
            } else {
                targets
                    .iter()
                    .map(|t| target(t))
                    .collect::<Result<_, _>>()?
            };
            let findings = findings.unwrap_or_else(default_findings);
            let options = RunOptions {
                seconds: time,
                seed,
                findings: &findings,
                corpus: corpus.as_deref(),
                max_deaths,
            };
            let mut found = 0;
            for t in chosen {
                let summary = driver::supervise(t, &options);
                println!(
                    "{:22} {:>10} executions in {time} s, {} findings",
                    t.name,
                    summary.execs,
                    summary.findings.len()
                );
                for f in &summary.findings {
                    let why = std::fs::read_to_string(f.with_extension("txt")).unwrap_or_default();
                    println!(
                        "  {}: {}",
                        f.display(),
                        why.lines().next().unwrap_or_default()
                    );
                }
                found += summary.findings.len();
            }
            Ok(if found == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Cmd::Replay {
            target: name,
            files,
        } => {
            let t = target(&name)?;
            driver::quiet_panics();
            let mut failed = false;
            for file in files {
                let input = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
                let start = std::time::Instant::now();
                let outcome = driver::on_stack(driver::STACK, move || driver::execute(t, &input));
                match outcome {
                    Ok(()) => println!("{}: ok in {:?}", file.display(), start.elapsed()),
                    Err(message) => {
                        failed = true;
                        println!("{}: panicked: {message}", file.display());
                    }
                }
            }
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Cmd::Worker {
            target: name,
            time,
            seed,
            flight,
            findings,
            corpus,
        } => {
            let summary = driver::worker(
                target(&name)?,
                time,
                seed,
                &flight,
                &findings,
                corpus.as_deref(),
            );
            let found: Vec<String> = summary
                .findings
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            println!(
                "{}",
                serde_json::json!({"execs": summary.execs, "findings": found})
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
