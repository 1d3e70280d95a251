// Shared by the build scripts and tests that run a nested cargo to build WebAssembly guests
// (`host/build.rs`, `tests/build.rs`, `plugins/component-tests/build.rs`,
// `tests/tests/all/plugin_cli.rs`), each through `include!`.

/// The outer cargo's variables that must not reach a nested cargo building guests for
/// wasm32-wasip2: flags and wrappers meant for the native build (RUSTFLAGS, clippy's
/// wrapper), its target directory and target, and the primary-package marker (which would
/// make the nested build warn as if its packages were the outer one's).
const HOST_BUILD_VARS: &[&str] = &[
    "CARGO_ENCODED_RUSTFLAGS",
    "RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_PRIMARY_PACKAGE",
];

/// Removes [`HOST_BUILD_VARS`] from the environment `cmd` passes on.
fn without_host_build_vars(cmd: &mut std::process::Command) -> &mut std::process::Command {
    for var in HOST_BUILD_VARS {
        cmd.env_remove(var);
    }
    cmd
}
