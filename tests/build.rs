// (Plain comments, not `//!`: `include!` does not take inner doc comments.)
// Builds the test guest plugins (`tests/guests/`, their own workspace) for wasm32-wasip2
// and writes `guests.rs` into OUT_DIR: one path constant per guest (`allow-all` →
// `ALLOW_ALL`), which the tests include. Like wasmtime's
// `crates/test-programs/artifacts/build.rs`. `bench/build.rs` is this file too (it
// `include!`s it), so paths are taken from the workspace root, not this crate.
//
// The nested cargo gets its own target directory (the outer one is locked by the running
// build), and none of the flags or wrappers meant for the host.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets it"));
    let root = manifest_dir
        .parent()
        .expect("the crate is in the workspace");
    let guests = root.join("tests").join("guests");
    println!("cargo:rerun-if-changed=build.rs");
    // Relative to the crate (where a build script runs, and where cargo resolves relative
    // paths), so that checkouts sharing a target directory each watch their own files.
    rerun_if_changed(Path::new("../tests/guests"));
    rerun_if_changed(Path::new("../wit"));

    // Beside the crate's own OUT_DIR, shared by every crate that builds the guests; one per
    // checkout, so that checkouts sharing a target directory never use each other's guests.
    let target_dir = out_dir
        .join("../../../test-guests-wasm")
        .join(checkout_key(root));
    let status = build_guests(&guests.join("Cargo.toml"), &target_dir)
        .expect("cannot run cargo for the test guests");
    assert!(
        status.success(),
        "building the test guests in {} failed",
        guests.display()
    );

    // Which checkout these guests are of, for scripts that look for one (tests/clients/run).
    let canonical = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    std::fs::write(target_dir.join("checkout"), canonical.display().to_string())
        .expect("write checkout");

    let wasm_dir = target_dir.join("wasm32-wasip2").join("release");
    let mut members: Vec<String> = std::fs::read_dir(&guests)
        .expect("read guests/")
        .flatten()
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    members.sort();
    let mut generated = String::new();
    for member in members {
        let path = wasm_dir.join(format!("{}.wasm", member.replace('-', "_")));
        assert!(
            path.is_file(),
            "the guests build did not produce {}",
            path.display()
        );
        let constant = member.replace('-', "_").to_uppercase();
        writeln!(
            generated,
            "pub const {constant}: &str = {:?};",
            path.display().to_string()
        )
        .expect("write to a String");
    }
    std::fs::write(out_dir.join("guests.rs"), generated).expect("write guests.rs");
}

include!("../tools/guest_cargo.rs");
include!("../tools/build_script.rs");
