//! The `hestia` binary: everything, the exit code included, is in the library.

/// mimalloc serves every allocation of the process (its `override` feature also takes
/// over the C libraries' `malloc`: SQLite's page cache, zstd). Under a long mixed load,
/// glibc's per-thread arenas keep freed memory fragmented and RSS climbs minute after
/// minute; mimalloc returns it (`bench/soak.py`, figures in `bench/README.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    hestia::cli::main()
}
