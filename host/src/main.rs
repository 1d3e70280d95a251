//! The `hestia` binary: everything, the exit code included, is in the library.

fn main() -> std::process::ExitCode {
    hestia::cli::main()
}
