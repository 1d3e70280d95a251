//! The `hestia` binary: parse, run, exit code. Everything else is in the library.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = hestia::cli::Cli::parse();
    match hestia::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("hestia: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
