//! Builds the default plugins (the `plugins/` guest workspace) for wasm32-wasip2 and embeds
//! them: `src/plugins/builtin.rs` includes the generated `builtin_plugins.rs`. Also lists
//! the WIT package and the SDKs in `embedded_files.rs`, which `hestia plugin new` writes
//! into new projects (`src/plugins/scaffold.rs`).
//!
//! The nested cargo gets its own target directory: sharing the outer one would deadlock on
//! its lock. Flags meant for the host (RUSTFLAGS, wrappers such as clippy's) are removed.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The built-in plugins: (name, kind variant, order, cargo artifact in `plugins/`).
/// An empty list builds nothing and needs no `plugins/` directory.
const BUILTINS: &[(&str, &str, i64, &str)] = &[
    ("smart-scopes", "ScopePolicy", 0, "smart_scopes"),
    ("audience", "AudienceRule", 0, "audience"),
    (
        "structural-validator",
        "ResourceValidator",
        0,
        "structural_validator",
    ),
];

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .parent()
        .expect("host/ is inside the workspace")
        .to_path_buf();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-changed=build.rs");
    // `sqlx::migrate!` embeds the migrations: a new or changed one rebuilds the crate.
    println!("cargo:rerun-if-changed=migrations");

    let mut generated = String::from("&[\n");
    if !BUILTINS.is_empty() {
        let wasm_dir = build_plugins(&root, &out_dir);
        for (name, kind, order, artifact) in BUILTINS {
            let path = wasm_dir.join(format!("{artifact}.wasm"));
            if !path.is_file() {
                panic!("the plugins build did not produce {}", path.display());
            }
            writeln!(
                generated,
                "    ({name:?}, PluginKind::{kind}, {order}, include_bytes!({path:?})),",
                path = path.display().to_string(),
            )
            .expect("writing to a String");
        }
    }
    generated.push_str("]\n");
    std::fs::write(out_dir.join("builtin_plugins.rs"), generated)
        .expect("write builtin_plugins.rs");
    embed_files(&root, &out_dir);
}

/// The trees `hestia plugin new` writes into a project, as (path from the repository root,
/// `include_str!` of the file), sorted. Build output and installed packages are left out.
const EMBEDDED_TREES: &[&str] = &["wit", "sdk", "sdk-python", "sdk-js"];

fn embed_files(root: &Path, out_dir: &Path) {
    let mut files = Vec::new();
    for tree in EMBEDDED_TREES {
        rerun_if_changed(&Path::new("..").join(tree));
        collect(root, &root.join(tree), &mut files);
    }
    files.sort();
    let mut generated = String::from("&[\n");
    for relative in files {
        let path = root.join(&relative);
        writeln!(
            generated,
            "    ({relative:?}, include_str!({path:?})),",
            path = path.display().to_string()
        )
        .expect("writing to a String");
    }
    generated.push_str("]\n");
    std::fs::write(out_dir.join("embedded_files.rs"), generated).expect("write embedded_files.rs");
}

fn collect(root: &Path, dir: &Path, files: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if SKIPPED.contains(&name.as_str()) || name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect(root, &path, files);
        } else if let Ok(relative) = path.strip_prefix(root) {
            files.push(relative.to_string_lossy().replace('\\', "/"));
        }
    }
}

/// Runs `cargo build --release --target wasm32-wasip2` on `plugins/`; returns where the
/// components are.
fn build_plugins(root: &Path, out_dir: &Path) -> PathBuf {
    let plugins = root.join("plugins");
    let manifest = plugins.join("Cargo.toml");
    if !manifest.is_file() {
        panic!(
            "{} is missing: the default plugins are built from the `plugins/` workspace \
             (members smart-scopes, audience, structural-validator)",
            manifest.display()
        );
    }
    // Relative to host/ (a build script runs there, and cargo reads relative paths from
    // there): checkouts sharing one target directory then share this script's fingerprint,
    // and with absolute paths one checkout's build would watch another checkout's files,
    // never rerun and embed stale plugins.
    for watched in ["../plugins", "../sdk", "../wit"] {
        rerun_if_changed(Path::new(watched));
    }
    // Beside the profile directory, so that it survives `cargo clean -p hestia`; one per
    // checkout, or checkouts sharing a target directory would embed each other's plugins.
    let target_dir = out_dir
        .join("../../../plugins-wasm")
        .join(checkout_key(root));
    let status = build_guests(&manifest, &target_dir).expect("cannot run cargo for the plugins");
    if !status.success() {
        panic!(
            "building the default plugins in {} failed ({status})",
            plugins.display()
        );
    }
    target_dir.join("wasm32-wasip2").join("release")
}

include!("../tools/guest_cargo.rs");
include!("../tools/build_script.rs");
