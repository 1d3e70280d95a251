//! Property tests inside `cargo test`: every target on its seeds and a bounded number of
//! generated and mutated inputs (fixed seeds, so a failure repeats), and the saved
//! regressions. They run on a large stack: stack depth is the driver's business (it runs
//! targets on a tokio worker's 2 MiB in a child process), these check panics and properties.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::driver::{self, Budget};
use crate::targets::{TARGETS, Target};

/// Inputs per target, and the time after which a target stops short of them (a debug
/// build runs the deep inputs slowly); the sequence is fixed by the seed either way.
const CASES: u64 = 300;
const TIME: Duration = Duration::from_secs(1);
const STACK: usize = 256 * 1024 * 1024;

fn run(target: &'static Target) -> Vec<PathBuf> {
    let findings = std::env::temp_dir().join(format!("hestia-fuzz-test-{}", std::process::id()));
    driver::on_stack(STACK, move || {
        let budget = Budget {
            until: Instant::now() + TIME,
            max_execs: CASES,
            seed: 7,
            report_slow: false,
        };
        driver::fuzz_loop(
            target,
            &budget,
            driver::corpus(target, None),
            None,
            &findings,
        )
        .findings
    })
}

#[test]
fn every_target_keeps_its_properties_on_seeds_and_generated_inputs() {
    driver::quiet_panics();
    for target in TARGETS {
        let found = run(target);
        let reports: Vec<String> = found
            .iter()
            .map(|f| std::fs::read_to_string(f.with_extension("txt")).unwrap_or_default())
            .collect();
        assert!(
            found.is_empty(),
            "{}: {found:?}\n{}",
            target.name,
            reports.join("\n")
        );
    }
}

/// `fuzz/regressions/TARGET/*`: inputs that once failed, replayed on a tokio worker's stack.
#[test]
fn regressions_stay_fixed() {
    driver::quiet_panics();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
    for target in TARGETS {
        let Ok(dir) = std::fs::read_dir(root.join(target.name)) else {
            continue;
        };
        for file in dir.flatten().map(|e| e.path()) {
            let input = std::fs::read(&file).expect("a regression input");
            let outcome = driver::on_stack(driver::STACK, move || driver::execute(target, &input));
            assert!(outcome.is_ok(), "{}: {outcome:?}", file.display());
        }
    }
}
