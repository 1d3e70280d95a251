//! The `hestia` binary under another file name, built inside this crate so that its
//! end-to-end tests can run it (`CARGO_BIN_EXE_hestia-e2e`; cargo offers that only for a
//! package's own binaries). It is the same `hestia::cli::main` as `host/src/main.rs`.

fn main() -> std::process::ExitCode {
    hestia::cli::main()
}
