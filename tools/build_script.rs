// Shared by the build scripts that build WebAssembly guests (`host/build.rs`,
// `tests/build.rs`, and `bench/build.rs` through it), each through `include!`.

/// Names below a watched directory that are build output or tool caches, never sources.
const SKIPPED: &[&str] = &["target", "node_modules", "__pycache__", "Cargo.lock"];

/// A short name for the checkout at `root`, stable across builds.
fn checkout_key(root: &std::path::Path) -> String {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    root.hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// Every source file below `dir` reruns the build script when it changes; the
/// [`SKIPPED`] names (a guest workspace's own `target/`, installed packages) do not.
fn rerun_if_changed(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path
            .file_name()
            .is_some_and(|n| SKIPPED.contains(&n.to_string_lossy().as_ref()))
        {
            continue;
        }
        if path.is_dir() {
            rerun_if_changed(&path);
        } else {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}

/// Runs the nested `cargo build --release --target wasm32-wasip2` of the guest workspace
/// at `manifest`, into `target_dir`, without the outer build's variables.
fn build_guests(
    manifest: &std::path::Path,
    target_dir: &std::path::Path,
) -> std::io::Result<std::process::ExitStatus> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.args([
        "build",
        "--release",
        "--target",
        "wasm32-wasip2",
        "--manifest-path",
    ])
    .arg(manifest)
    .arg("--target-dir")
    .arg(target_dir);
    without_host_build_vars(&mut cmd).status()
}
