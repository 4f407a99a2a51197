//! Ctrl-C, listened to for the whole run of a command.
//!
//! Once `tokio::signal::ctrl_c()` has been called, SIGINT no longer ends the process: whoever
//! waits on it decides. So one task listens from the moment a command starts its work to its
//! end, and everything that can stop (waiting for a peer, a transfer, the accept question)
//! watches its flag. A second Ctrl-C ends the process at once.

use tokio::sync::watch;
use yakk_transfer::Stop;

use crate::exit::ExitCode;

/// The flag set by the first Ctrl-C.
#[derive(Clone)]
pub struct Interrupt(watch::Receiver<bool>);

impl Interrupt {
    /// Start listening. Call it after any blocking prompt (a code typed on the terminal), so
    /// that Ctrl-C there still ends the process.
    pub fn listen() -> Self {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_err() {
                // No handler could be installed: Ctrl-C keeps its default (the process ends).
                return;
            }
            tx.send_replace(true);
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("yakk: stopped at once");
                std::process::exit(ExitCode::Interrupted as i32);
            }
        });
        Interrupt(rx)
    }

    /// Resolves on the first Ctrl-C (at once if it came already).
    pub async fn wait(&self) {
        self.stop().requested().await
    }

    /// The same flag, for a transfer.
    pub fn stop(&self) -> Stop {
        Stop::from_watch(self.0.clone())
    }
}
