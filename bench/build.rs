//! Builds the test guest plugins (`tests/guests/`) for the benchmarks, exactly as
//! `tests/build.rs` does, and writes their paths to OUT_DIR/guests.rs.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets it"));
    let root = manifest_dir.parent().expect("bench/ is in the workspace");
    let guests = root.join("tests").join("guests");
    println!("cargo:rerun-if-changed=build.rs");
    rerun_if_changed(&guests);
    rerun_if_changed(&root.join("wit"));

    // The same directory as the tests' build: one nested build serves both.
    let target_dir = out_dir.join("../../../test-guests-wasm");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--release",
        "--target",
        "wasm32-wasip2",
        "--manifest-path",
    ])
    .arg(guests.join("Cargo.toml"))
    .arg("--target-dir")
    .arg(&target_dir);
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("cannot run cargo for the test guests");
    assert!(
        status.success(),
        "building the test guests in {} failed",
        guests.display()
    );

    let wasm_dir = target_dir.join("wasm32-wasip2").join("release");
    let mut generated = String::new();
    for guest in ["allow-all", "validator", "audience-rule"] {
        let file = guest.replace('-', "_");
        let path = wasm_dir.join(format!("{file}.wasm"));
        assert!(
            path.is_file(),
            "the guests build did not produce {}",
            path.display()
        );
        writeln!(
            generated,
            "pub const {}: &str = {:?};",
            file.to_uppercase(),
            path.display().to_string()
        )
        .expect("write to a String");
    }
    std::fs::write(out_dir.join("guests.rs"), generated).expect("write guests.rs");
}

fn rerun_if_changed(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.file_name().is_some_and(|n| n == "target") {
            continue;
        }
        if path.is_dir() {
            rerun_if_changed(&path);
        } else {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}
