//! What the file commands say of a transfer: the reporter that keeps the figures, the failure
//! messages (what stays, what to do next) and the last words of both sides.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;
use yakk_transfer::{
    DoneInfo, HumanBytes, JsonReporter, Reporter, StartInfo, TerminalReporter, TransferError,
};

use crate::exit::{ExitCode, Failure};
use crate::output::Out;

/// Which side we are, for the words of a message.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Sender,
    Receiver,
}

/// What a failure message says of the transfer it ended.
pub struct Ended<'a> {
    pub side: Side,
    pub rep: &'a Recording,
    /// Partial files can be resumed (yakk/2, files rather than standard input, not --stdout).
    pub resumable: bool,
    /// The receiver's folder, as the person can find it.
    pub folder: Option<String>,
}

impl Ended<'_> {
    /// What stays after a transfer that ended early, and what to do next; None before the data
    /// phase (nothing moved).
    fn what_stays(&self) -> Option<String> {
        self.rep.started()?;
        Some(match (self.side, self.resumable) {
            (Side::Receiver, true) => format!(
                "the partial files are kept{}: ask the sender for a new code and receive again, the transfer continues where it stopped",
                self.folder
                    .as_deref()
                    .map(|f| format!(" in {f}"))
                    .unwrap_or_default()
            ),
            (Side::Sender, true) => "the receiver keeps what it received: run yakk filesend again and give it the new code, the transfer continues where it stopped"
                .into(),
            (Side::Receiver, false) => "this transfer cannot be resumed, nothing of it was kept".into(),
            (Side::Sender, false) => "this transfer cannot be resumed".into(),
        })
    }

    /// " at 12.00 MiB of 40.00 MiB" once data moved, else "".
    fn at(&self) -> String {
        self.rep
            .how_far()
            .map(|f| format!(" at {f}"))
            .unwrap_or_default()
    }

    pub fn failure(&self, e: TransferError) -> Failure {
        let peer = match self.side {
            Side::Sender => "receiver",
            Side::Receiver => "sender",
        };
        let nothing = match self.side {
            Side::Sender => "nothing was sent",
            Side::Receiver => "nothing was received",
        };
        match e {
            TransferError::Stopped => Failure::stopped(match self.what_stays() {
                Some(stays) => format!("Stopped{}; {stays}.", self.at()),
                None => format!("Stopped: {nothing}."),
            }),
            TransferError::PeerStopped => Failure::new(
                ExitCode::PeerGone,
                match self.what_stays() {
                    Some(stays) => format!("the {peer} stopped the transfer{}; {stays}", self.at()),
                    None => format!("the {peer} stopped the transfer: {nothing}"),
                },
            ),
            TransferError::Connection(_) | TransferError::PeerClosed => Failure::new(
                ExitCode::PeerGone,
                match self.what_stays() {
                    Some(stays) => format!("{e}{}; {stays}", self.at()),
                    None => format!("{e}: {nothing}"),
                },
            ),
            // Refusing an offer (asked, or because of what is on disk) exits as the sender
            // does when it hears of it.
            TransferError::Declined
            | TransferError::PeerRefused(_)
            | TransferError::FileExists(_)
            | TransferError::ExistsAsFolder(_)
            | TransferError::NotAFolder(_)
            | TransferError::Symlink(_)
            | TransferError::UnsafeName { .. } => Failure::new(ExitCode::Refused, e.to_string()),
            e => Failure::new(ExitCode::Error, e.to_string()),
        }
    }
}

/// Passes everything to the chosen reporter and keeps the figures for the last words.
pub struct Recording {
    inner: Box<dyn Reporter + Send + Sync>,
    /// Where a failed yakk/1 request is said.
    out: Out,
    /// Set while the accept question waits: an end then starts a new line.
    asking: Option<Arc<AtomicBool>>,
    start: std::sync::Mutex<Option<StartInfo>>,
    /// Bytes of the whole transfer done (resumed ones included) at the last progress.
    bytes: std::sync::Mutex<Option<u64>>,
    done: std::sync::Mutex<Option<DoneInfo>>,
}

impl Recording {
    pub fn new(inner: Box<dyn Reporter + Send + Sync>, out: Out) -> Self {
        Recording {
            inner,
            out,
            asking: None,
            start: std::sync::Mutex::new(None),
            bytes: std::sync::Mutex::new(None),
            done: std::sync::Mutex::new(None),
        }
    }

    /// With the flag the accept question sets while it waits.
    pub fn asking(mut self, asking: Arc<AtomicBool>) -> Self {
        self.asking = Some(asking);
        self
    }

    /// The start of the data phase, if it came.
    pub fn started(&self) -> Option<StartInfo> {
        self.start
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// "12.00 MiB of 40.00 MiB" (or "12.00 MiB" when the size is unknown) once data moved.
    fn how_far(&self) -> Option<String> {
        let start = self.started()?;
        let bytes = self
            .bytes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .unwrap_or(start.resumed_bytes);
        Some(match start.total_bytes {
            Some(t) => format!("{} of {}", HumanBytes(bytes), HumanBytes(t)),
            None => format!("{}", HumanBytes(bytes)),
        })
    }

    /// " in 4.2 s, 244.14 MiB/s" once the transfer finished, else nothing.
    pub fn took(&self) -> String {
        let Some(d) = self
            .done
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
        else {
            return String::new();
        };
        let secs = d.elapsed.as_secs_f64();
        let rate = (d.bytes_transferred as f64 / secs.max(1e-3)) as u64;
        format!(" in {secs:.1} s, {}/s", HumanBytes(rate))
    }
}

impl Reporter for Recording {
    fn start(&self, i: &StartInfo) {
        *self
            .start
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(i.clone());
        self.inner.start(i)
    }
    fn file_start(&self, name: &str, size: Option<u64>, offset: u64) {
        self.inner.file_start(name, size, offset)
    }
    fn progress(&self, p: &yakk_transfer::Progress<'_>) {
        *self
            .bytes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(p.bytes);
        self.inner.progress(p)
    }
    fn abandon(&self) {
        self.inner.abandon();
        if self
            .asking
            .as_ref()
            .is_some_and(|a| a.load(Ordering::SeqCst))
        {
            eprintln!();
        }
    }
    fn request_failed(&self, why: &str) {
        self.out.event(
            "warning",
            json!({"message": why}),
            Some(&format!("A request of the receiver failed: {why}")),
        );
    }
    fn file_done(&self, name: &str, size: u64) {
        self.inner.file_done(name, size)
    }
    fn done(&self, d: &DoneInfo) {
        *self
            .done
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(d.clone());
        self.inner.done(d)
    }
}

/// The summary of a finished transfer, in the same words and units on both sides: every file
/// of the offer is counted (empty ones, and ones that were already there, included).
pub fn last_words(side: Side, files: u64, moved: u64, already: u64, took: &str) -> String {
    let (verb, there) = match side {
        Side::Sender => ("Sent", "there"),
        Side::Receiver => ("Received", "here"),
    };
    if moved == 0 && already > 0 {
        return match side {
            Side::Sender => format!(
                "Nothing to send: the receiver already had all {files} file(s) ({}).",
                HumanBytes(already)
            ),
            Side::Receiver => format!(
                "Nothing to receive: all {files} file(s) ({}) were already here.",
                HumanBytes(already)
            ),
        };
    }
    let mut s = format!("{verb} {files} file(s), {}{took}", HumanBytes(moved));
    if already > 0 {
        s.push_str(&format!(" ({} were already {there})", HumanBytes(already)));
    }
    s.push('.');
    s
}

/// " Saved in /abs/out: a.txt, tree/." (a few names), or nothing with `--stdout`.
pub fn saved(paths: &[std::path::PathBuf], output: &std::path::Path) -> String {
    if paths.is_empty() {
        return String::new();
    }
    const NAMED: usize = 3;
    let mut names: Vec<String> = paths
        .iter()
        .take(NAMED)
        .filter_map(|p| {
            let name = p.file_name()?.to_string_lossy();
            let slash = if p.is_dir() { "/" } else { "" };
            Some(format!("{}{slash}", yakk_transfer::names::escape(&name)))
        })
        .collect();
    if paths.len() > NAMED {
        names.push(format!("and {} more", paths.len() - NAMED));
    }
    format!(" Saved in {}: {}.", shown_folder(output), names.join(", "))
}

/// The receiving folder as the person can find it: absolute, escaped.
pub fn shown_folder(dir: &std::path::Path) -> String {
    let abs = std::fs::canonicalize(dir)
        .or_else(|_| std::path::absolute(dir))
        .unwrap_or_else(|_| dir.to_path_buf());
    yakk_transfer::names::escape(&abs.display().to_string())
}

pub fn reporter(out: Out, data_on_stdout: bool) -> Box<dyn Reporter + Send + Sync> {
    if out.json && !data_on_stdout {
        Box::new(JsonReporter::stdout())
    } else if out.json {
        Box::new(JsonReporter::new(
            std::io::stderr(),
            std::time::Duration::from_millis(500),
        ))
    } else {
        Box::new(TerminalReporter::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both sides count every file of the offer and say the same figures.
    #[test]
    fn both_sides_say_the_same_words() {
        // A folder of 6 files, one of them empty: 5 carried data.
        assert_eq!(
            last_words(Side::Sender, 6, 2048, 0, " in 0.1 s, 20.00 KiB/s"),
            "Sent 6 file(s), 2.00 KiB in 0.1 s, 20.00 KiB/s."
        );
        assert_eq!(
            last_words(Side::Receiver, 6, 2048, 0, " in 0.1 s, 20.00 KiB/s"),
            "Received 6 file(s), 2.00 KiB in 0.1 s, 20.00 KiB/s."
        );
        assert_eq!(
            last_words(Side::Receiver, 2, 1 << 20, 3 << 20, ""),
            "Received 2 file(s), 1.00 MiB (3.00 MiB were already here)."
        );
        assert_eq!(
            last_words(Side::Sender, 2, 1 << 20, 3 << 20, ""),
            "Sent 2 file(s), 1.00 MiB (3.00 MiB were already there)."
        );
        // Nothing moved because everything was there: said plainly, not "0 file(s), 0 B".
        assert_eq!(
            last_words(Side::Receiver, 1, 0, 300_000_000, " in 0.0 s, 0 B/s"),
            "Nothing to receive: all 1 file(s) (286.10 MiB) were already here."
        );
        assert_eq!(
            last_words(Side::Sender, 1, 0, 300_000_000, " in 0.0 s, 0 B/s"),
            "Nothing to send: the receiver already had all 1 file(s) (286.10 MiB)."
        );
    }
}
