//! Standard output for the results of commands and the server's start-up lines. `println!`
//! panics when its write fails, as it does when the reader has gone (`hestia client list |
//! head -1`: Rust ignores SIGPIPE, so the write returns EPIPE). Through [`outln!`] a command
//! ends quietly when its reader has gone, as Unix tools do, and fails with a message on
//! another error; through [`sayln!`] the server goes on (its log has the same lines).

use std::fmt;
use std::io::{self, Write};

/// What a failed write to standard output does.
#[derive(Debug, Clone, Copy)]
pub enum OnFailure {
    /// Ends the process: with success when the reader has gone, with failure otherwise.
    Exit,
    /// Nothing: the output was for a person, and the log has it too.
    Ignore,
}

/// Writes `args` to standard output and flushes it.
pub fn write(args: fmt::Arguments<'_>, on_failure: OnFailure) {
    let mut out = io::stdout().lock();
    let written = out.write_fmt(args).and_then(|()| out.flush());
    match (written, on_failure) {
        (Ok(()), _) | (Err(_), OnFailure::Ignore) => {}
        (Err(e), OnFailure::Exit) if e.kind() == io::ErrorKind::BrokenPipe => std::process::exit(0),
        (Err(e), OnFailure::Exit) => {
            eprintln!("hestia: error: cannot write to standard output: {e}");
            std::process::exit(1)
        }
    }
}

/// `print!` for a command's results ([`write`] with [`OnFailure::Exit`]).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::stdout::write(format_args!($($arg)*), $crate::stdout::OnFailure::Exit)
    };
}

/// `println!` for a command's results ([`write`] with [`OnFailure::Exit`]).
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::stdout::write(
            format_args!("{}\n", format_args!($($arg)*)),
            $crate::stdout::OnFailure::Exit,
        )
    };
}

/// `println!` for the server's start-up lines ([`write`] with [`OnFailure::Ignore`]).
macro_rules! sayln {
    ($($arg:tt)*) => {
        $crate::stdout::write(
            format_args!("{}\n", format_args!($($arg)*)),
            $crate::stdout::OnFailure::Ignore,
        )
    };
}
