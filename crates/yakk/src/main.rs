//! `yakk`: anything over WebRTC. The binary only parses the command line, sets up logging and
//! hands over to the layer that does the work; errors become one line and a documented exit code.
#![forbid(unsafe_code)]
// No panics outside tests; a local `allow` says why it cannot fire.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![cfg_attr(not(test), deny(clippy::unreachable))]

mod cli;
mod code;
mod config;
mod exit;
mod file_commands;
mod interrupt;
mod output;
mod owner_setup;
mod port_commands;
mod session_setup;
mod transfer_report;

use clap::{CommandFactory, Parser};
use serde_json::json;

use cli::{Cli, Command};
use exit::ExitCode;
use output::Out;

fn init_logging(verbose: u8) {
    // The WebRTC stack logs routine events of connection setup as warnings (checks that
    // arrive before the answer, "pingAllCandidates called with no candidate pairs"): users
    // see only its errors, and everything it says with -vv.
    const STACK: &[&str] = &[
        "webrtc",
        "rtc",
        "rtc_ice",
        "rtc_dtls",
        "rtc_sctp",
        "rtc_datachannel",
        "rtc_turn",
        "rtc_stun",
        "rtc_mdns",
    ];
    let (ours, stack) = match verbose {
        0 => ("warn", "error"),
        1 => ("info", "error"),
        _ => ("debug", "debug"),
    };
    let mut default = ours.to_string();
    for krate in STACK {
        default.push_str(&format!(",{krate}={stack}"));
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: never escape codes in a log file or a pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(verbose > 1)
        .try_init();
}

fn json_mode(cmd: &Command) -> bool {
    match cmd {
        Command::Server(a) => a.common.json,
        Command::Client(a) => a.common.json,
        Command::Filesend(a) => a.common.json,
        Command::Filereceive(a) => a.common.json,
        _ => false,
    }
}

async fn run(cmd: Command, out: Out) -> anyhow::Result<()> {
    match cmd {
        Command::Server(a) => port_commands::server(a, out).await,
        Command::Client(a) => port_commands::client(a, out).await,
        Command::Filesend(a) => file_commands::send(a, out).await,
        Command::Filereceive(a) => file_commands::receive(a, out).await,
        Command::Signal(a) => yakk_signal::run(*a).await,
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "yakk", &mut std::io::stdout());
            Ok(())
        }
    }
}

fn main() {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let out = Out {
        json: json_mode(&cli.command),
    };
    // A peer runs on one thread: its work is one pipeline (socket, stack, crypto, socket) whose
    // stages hand data to each other, and spreading them over worker threads costs more in
    // wake-ups and cache traffic than it gains (bench/PROFILE.md). Blocking work (disk, the
    // accept prompt) goes to the blocking pool either way. The signalling server serves many
    // rooms at once and keeps a worker per core.
    let mut builder = match &cli.command {
        Command::Signal(_) => tokio::runtime::Builder::new_multi_thread(),
        _ => tokio::runtime::Builder::new_current_thread(),
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("yakk: cannot start the async runtime: {e}");
            std::process::exit(ExitCode::Error as i32);
        }
    };
    let result = rt.block_on(run(cli.command, out));
    // Do not wait for background tasks (peer connections, pumps) to wind down.
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    if let Err(e) = result {
        let (code, message) = exit::classify(&e);
        if code == ExitCode::Interrupted {
            out.event("stopped", json!({"message": message}), Some(&message));
        } else {
            out.event(
                "error",
                json!({"message": message, "exit_code": code as i32}),
                Some(&format!("yakk: {message}")),
            );
        }
        std::process::exit(code as i32);
    }
}
