//! The command line: every role (embedded run, leader, worker, client commands) is a
//! subcommand of the one `rainstorm` binary. This file is the process's entry point: parse the
//! arguments (`args`), set up logging and the runtime, run the subcommand (`commands`) and turn
//! its outcome into an exit code.

mod args;
pub mod client;
mod commands;
pub mod embedded;
mod leader_url;
pub mod limits;
pub mod output;
mod print;
pub mod progress;
mod scratch;
mod signals;

use args::{Cli, Cmd};
use clap::Parser;
use std::process::ExitCode;

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RAINSTORM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Parses the command line, runs the chosen role and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // TLS for the HTTP clients (S3 store, leader over https) uses ring.
    crate::runtime::store::install_crypto();
    let default_log = match cli.cmd {
        Cmd::Leader { .. } | Cmd::Worker { .. } => "info",
        _ => "warn",
    };
    init_tracing(default_log);
    if matches!(
        cli.cmd,
        Cmd::Leader { .. } | Cmd::Worker { .. } | Cmd::Run { .. }
    ) {
        // Before any thread or socket: what a process may hold is known from here on.
        limits::raise_nofile();
    }
    if matches!(
        cli.cmd,
        Cmd::Jobs { .. }
            | Cmd::Job { .. }
            | Cmd::Tasks { .. }
            | Cmd::Workers { .. }
            | Cmd::Ls { .. }
    ) {
        // Listings behave like Unix tools when piped into `head`: die quietly on a closed pipe.
        // (Never for processes that host operators: a dead operator's pipe must be an error.)
        // SAFETY: called before any thread is spawned.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rainstorm: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let embedded = matches!(cli.cmd, Cmd::Run { .. });
    match rt.block_on(commands::run(cli)) {
        Ok(code) if embedded && code == ExitCode::SUCCESS => {
            // A `run` that succeeded has stopped its embedded cluster (every task joined, every operator
            // process reaped, its temporary store removed) and flushed the output: what the
            // runtime's teardown would still do is join idle threads and hand their memory
            // back one segment at a time, some 10 ms for a 1M-line job. The kernel does that
            // at exit at once.
            use std::io::Write;
            if let Err(e) = std::io::stdout().flush() {
                eprintln!("rainstorm: error: writing the output: {e}");
                std::process::exit(2);
            }
            let _ = std::io::stderr().flush();
            std::process::exit(0)
        }
        Ok(code) => code,
        Err(e) => {
            if !print::print_problems(&e) {
                eprintln!("rainstorm: error: {e:#}");
            }
            ExitCode::from(2)
        }
    }
}
