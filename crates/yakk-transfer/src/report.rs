//! Progress reporting: the [`Reporter`] trait the transfer drives, a terminal reporter
//! (indicatif bars on stderr) and a JSON-lines reporter (`--json`, one object per line on stdout).
//!
//! Drivers call [`Reporter::progress`] for every chunk; reporters throttle themselves. Names
//! handed to a reporter are the checked names of the offer; the terminal reporter escapes them
//! before drawing, the JSON reporter leaves the quoting to JSON.

use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use crate::names;

/// Which way the bytes go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// We send.
    Send,
    /// We receive.
    Receive,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Self::Send => "send",
            Self::Receive => "receive",
        }
    }
}

/// The transfer begins.
#[derive(Clone, Debug)]
pub struct StartInfo {
    /// Which way.
    pub direction: Direction,
    /// Number of files (folders not counted).
    pub files: u64,
    /// Total bytes of all files, when known up front.
    pub total_bytes: Option<u64>,
    /// Bytes the receiver already held (resume) and that will not travel again.
    pub resumed_bytes: u64,
}

/// Bytes moved so far.
#[derive(Clone, Debug)]
pub struct Progress<'a> {
    /// The file being moved.
    pub name: &'a str,
    /// Bytes of it done (resumed bytes included).
    pub file_bytes: u64,
    /// Its size, when known.
    pub file_size: Option<u64>,
    /// Bytes of the whole transfer done (resumed bytes included).
    pub bytes: u64,
    /// Total of the whole transfer, when known.
    pub total_bytes: Option<u64>,
}

/// The transfer finished.
#[derive(Clone, Debug)]
pub struct DoneInfo {
    /// Which way.
    pub direction: Direction,
    /// Number of files.
    pub files: u64,
    /// Bytes that travelled in this run.
    pub bytes_transferred: u64,
    /// Bytes the receiver already held.
    pub resumed_bytes: u64,
    /// Time from start to end.
    pub elapsed: Duration,
}

/// Receives progress events from [`crate::send`], [`crate::receive`] and the yakk/1 exchange.
pub trait Reporter: Send + Sync {
    /// The data phase starts.
    fn start(&self, _info: &StartInfo) {}
    /// A file starts (`offset` bytes were already held).
    fn file_start(&self, _name: &str, _size: Option<u64>, _offset: u64) {}
    /// Some bytes moved.
    fn progress(&self, _p: &Progress<'_>) {}
    /// A file is complete.
    fn file_done(&self, _name: &str, _size: u64) {}
    /// Everything is complete.
    fn done(&self, _info: &DoneInfo) {}
    /// The transfer ended without completing (an error, a stop): leave the screen clean.
    fn abandon(&self) {}
    /// yakk/1: one request of the receiver failed (`why`); serving goes on.
    fn request_failed(&self, _why: &str) {}
}

/// Reports nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NullReporter;

impl Reporter for NullReporter {}

fn rate_and_eta(start: Instant, moved: u64, left: Option<u64>) -> (f64, Option<f64>) {
    let secs = start.elapsed().as_secs_f64();
    let rate = if secs > 0.0 { moved as f64 / secs } else { 0.0 };
    let eta = match left {
        Some(l) if rate > 0.0 => Some(l as f64 / rate),
        _ => None,
    };
    (rate, eta)
}

struct JsonState<W> {
    out: W,
    start: Instant,
    resumed: u64,
    last: Option<Instant>,
}

/// `--json`: one JSON object per line, `progress` events at most every `interval`.
///
/// Events: `start`, `file`, `progress`, `file_done`, `done` (field `"event"`). The CLI prints its
/// own `error` event on failure.
pub struct JsonReporter<W: Write + Send = std::io::Stdout> {
    state: Mutex<JsonState<W>>,
    interval: Duration,
}

impl JsonReporter<std::io::Stdout> {
    /// Lines on standard output, progress at most 4 times a second.
    pub fn stdout() -> Self {
        Self::new(std::io::stdout(), Duration::from_millis(250))
    }
}

impl<W: Write + Send> JsonReporter<W> {
    /// Lines on `out`, progress at most every `interval`.
    pub fn new(out: W, interval: Duration) -> Self {
        Self {
            state: Mutex::new(JsonState {
                out,
                start: Instant::now(),
                resumed: 0,
                last: None,
            }),
            interval,
        }
    }

    /// The writer back (tests).
    pub fn into_inner(self) -> W {
        self.state
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
            .out
    }

    fn emit(&self, f: impl FnOnce(&mut JsonState<W>) -> Option<serde_json::Value>) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = f(&mut s) {
            // A closed stdout must not stop the transfer: the bytes matter more than the log.
            let _ = writeln!(s.out, "{v}");
            let _ = s.out.flush();
        }
    }
}

impl<W: Write + Send> Reporter for JsonReporter<W> {
    fn start(&self, i: &StartInfo) {
        self.emit(|s| {
            s.start = Instant::now();
            s.resumed = i.resumed_bytes;
            Some(
                json!({"event": "start", "direction": i.direction.as_str(), "files": i.files,
                "total_bytes": i.total_bytes, "resumed_bytes": i.resumed_bytes}),
            )
        });
    }

    fn file_start(&self, name: &str, size: Option<u64>, offset: u64) {
        self.emit(|_| Some(json!({"event": "file", "name": name, "size": size, "offset": offset})));
    }

    fn progress(&self, p: &Progress<'_>) {
        let interval = self.interval;
        self.emit(|s| {
            let now = Instant::now();
            if s.last.is_some_and(|l| now.duration_since(l) < interval) {
                return None;
            }
            s.last = Some(now);
            let (rate, eta) = rate_and_eta(
                s.start,
                p.bytes.saturating_sub(s.resumed),
                p.total_bytes.map(|t| t.saturating_sub(p.bytes)),
            );
            Some(
                json!({"event": "progress", "name": p.name, "file_bytes": p.file_bytes,
                "file_size": p.file_size, "bytes": p.bytes, "total_bytes": p.total_bytes,
                "rate_bytes_per_sec": rate.round(), "eta_secs": eta.map(f64::ceil)}),
            )
        });
    }

    fn file_done(&self, name: &str, size: u64) {
        self.emit(|_| Some(json!({"event": "file_done", "name": name, "size": size})));
    }

    fn done(&self, d: &DoneInfo) {
        self.emit(|_| {
            let secs = d.elapsed.as_secs_f64();
            let rate = if secs > 0.0 {
                d.bytes_transferred as f64 / secs
            } else {
                0.0
            };
            Some(
                json!({"event": "done", "direction": d.direction.as_str(), "files": d.files,
                "bytes": d.bytes_transferred, "resumed_bytes": d.resumed_bytes,
                "elapsed_secs": secs, "rate_bytes_per_sec": rate.round()}),
            )
        });
    }
}

/// Bars on standard error: one for the current file, one for the total. Nothing is drawn
/// before the transfer starts, so the offer and its question stay alone on the terminal.
pub struct TerminalReporter {
    multi: MultiProgress,
    file: ProgressBar,
    total: ProgressBar,
    shown: std::sync::Once,
    /// For a size not known up front (standard input): bytes and rate, no total, no eta.
    unknown: ProgressStyle,
}

impl Default for TerminalReporter {
    fn default() -> Self {
        Self::new()
    }
}

impl TerminalReporter {
    /// Draw on standard error (hidden when it is not a terminal).
    pub fn new() -> Self {
        Self::with_target(ProgressDrawTarget::stderr())
    }

    /// Draw on a chosen target.
    pub fn with_target(target: ProgressDrawTarget) -> Self {
        let style = ProgressStyle::with_template(
            "{msg:24!} {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12} eta {eta:<4} {wide_bar}",
        )
        // A constant template: should it ever fail to parse, a plain bar rather than a panic.
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        let unknown = ProgressStyle::with_template(
            "{msg:24!} {bytes:>10} {binary_bytes_per_sec:>12} (unknown size)",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        // Detached (hidden) until `start` adds them to the drawing.
        let file = ProgressBar::hidden().with_style(style.clone());
        let total = ProgressBar::hidden().with_style(style);
        total.set_message("total");
        Self {
            multi: MultiProgress::with_draw_target(target),
            file,
            total,
            shown: std::sync::Once::new(),
            unknown,
        }
    }
}

impl Reporter for TerminalReporter {
    fn start(&self, i: &StartInfo) {
        match i.total_bytes {
            Some(t) => self.total.set_length(t),
            None => {
                // A stream is the only entry of its offer: its bar too, before it is drawn.
                for bar in [&self.total, &self.file] {
                    bar.unset_length();
                    bar.set_style(self.unknown.clone());
                }
            }
        }
        self.total.set_position(i.resumed_bytes);
        self.total.reset_eta();
        let verb = match i.direction {
            Direction::Send => "sending",
            Direction::Receive => "receiving",
        };
        self.total
            .set_message(format!("{verb} {} file(s)", i.files));
        if i.resumed_bytes > 0 {
            let _ = self.multi.println(match i.direction {
                Direction::Send => format!(
                    "Resuming: the receiver already has {}, not sent again.",
                    indicatif::HumanBytes(i.resumed_bytes)
                ),
                Direction::Receive => format!(
                    "Resuming: {} already here, not received again.",
                    indicatif::HumanBytes(i.resumed_bytes)
                ),
            });
        }
        self.shown.call_once(|| {
            self.multi.add(self.file.clone());
            self.multi.add(self.total.clone());
        });
    }

    fn file_start(&self, name: &str, size: Option<u64>, offset: u64) {
        // Length and position first: the message redraws, and must not show the new name
        // with the previous file's figures.
        match size {
            Some(s) => self.file.set_length(s),
            None => {
                self.file.unset_length();
                self.file.set_style(self.unknown.clone());
            }
        }
        self.file.set_position(offset);
        self.file.reset_eta();
        self.file.set_message(names::escape(name));
    }

    fn progress(&self, p: &Progress<'_>) {
        self.file.set_position(p.file_bytes);
        self.total.set_position(p.bytes);
    }

    fn file_done(&self, _name: &str, size: u64) {
        if self.file.length().is_some() {
            self.file.set_length(size);
        }
        self.file.set_position(size);
    }

    fn done(&self, _d: &DoneInfo) {
        // The caller prints the summary line (on a terminal or not).
        self.file.finish_and_clear();
        self.total.finish_and_clear();
    }

    fn abandon(&self) {
        // The caller says how far it went.
        self.file.finish_and_clear();
        self.total.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_are_objects_and_progress_is_throttled() {
        let r = JsonReporter::new(Vec::new(), Duration::from_secs(3600));
        r.start(&StartInfo {
            direction: Direction::Receive,
            files: 1,
            total_bytes: Some(10),
            resumed_bytes: 0,
        });
        r.file_start("a\nb", Some(10), 0);
        for i in 0..10 {
            r.progress(&Progress {
                name: "a\nb",
                file_bytes: i,
                file_size: Some(10),
                bytes: i,
                total_bytes: Some(10),
            });
        }
        r.file_done("a\nb", 10);
        r.done(&DoneInfo {
            direction: Direction::Receive,
            files: 1,
            bytes_transferred: 10,
            resumed_bytes: 0,
            elapsed: Duration::from_secs(1),
        });
        let out = String::from_utf8(r.into_inner()).unwrap();
        let events: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let kinds: Vec<&str> = events
            .iter()
            .map(|e| e["event"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["start", "file", "progress", "file_done", "done"]);
        assert_eq!(events[4]["bytes"], 10);
        assert_eq!(events[1]["name"], "a\nb");
    }

    /// A terminal that keeps what is written to it.
    #[derive(Debug, Clone, Default)]
    struct Screen(std::sync::Arc<Mutex<String>>);

    impl indicatif::TermLike for Screen {
        fn width(&self) -> u16 {
            100
        }
        fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.write_str(&format!("{s}\n"))
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            self.0.lock().unwrap().push_str(s);
            Ok(())
        }
        fn clear_line(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn terminal_bars_appear_only_once_the_transfer_starts() {
        let screen = Screen::default();
        let r =
            TerminalReporter::with_target(ProgressDrawTarget::term_like(Box::new(screen.clone())));
        // Before the start (while the receiver is asked about the offer): nothing drawn,
        // even on a redraw of the whole drawing.
        r.multi.println("offer").unwrap();
        assert_eq!(screen.0.lock().unwrap().trim(), "offer");
        r.start(&StartInfo {
            direction: Direction::Receive,
            files: 2,
            total_bytes: Some(10),
            resumed_bytes: 0,
        });
        r.progress(&Progress {
            name: "a",
            file_bytes: 4,
            file_size: Some(10),
            bytes: 4,
            total_bytes: Some(10),
        });
        r.done(&DoneInfo {
            direction: Direction::Receive,
            files: 2,
            bytes_transferred: 10,
            resumed_bytes: 0,
            elapsed: Duration::from_secs(1),
        });
        let drawn = screen.0.lock().unwrap().clone();
        assert!(drawn.contains("receiving 2 file(s)"), "{drawn:?}");
    }

    /// Standard input has no size up front: the bars say so and show no total and no eta
    /// (they showed "18.17 MiB/18.11 MiB, eta 0s", the total chasing the position).
    #[test]
    fn unknown_sizes_are_said_not_guessed() {
        let screen = Screen::default();
        let r =
            TerminalReporter::with_target(ProgressDrawTarget::term_like(Box::new(screen.clone())));
        r.start(&StartInfo {
            direction: Direction::Receive,
            files: 1,
            total_bytes: None,
            resumed_bytes: 0,
        });
        r.file_start("notes.txt", None, 0);
        for i in 1..=5u64 {
            std::thread::sleep(Duration::from_millis(60));
            r.progress(&Progress {
                name: "notes.txt",
                file_bytes: i << 20,
                file_size: None,
                bytes: i << 20,
                total_bytes: None,
            });
        }
        let drawn = screen.0.lock().unwrap().clone();
        assert!(drawn.contains("(unknown size)"), "{drawn:?}");
        assert!(drawn.contains("MiB"), "{drawn:?}");
        assert!(!drawn.contains("eta"), "{drawn:?}");
        // No "done/total": the only slash is the rate's ("MiB/s").
        assert!(
            drawn
                .match_indices('/')
                .all(|(i, _)| drawn[i..].starts_with("/s")),
            "{drawn:?}"
        );
    }

    #[test]
    fn terminal_reporter_runs_hidden() {
        let r = TerminalReporter::with_target(ProgressDrawTarget::hidden());
        r.start(&StartInfo {
            direction: Direction::Send,
            files: 1,
            total_bytes: None,
            resumed_bytes: 0,
        });
        r.file_start("x\u{1b}", None, 0);
        r.progress(&Progress {
            name: "x",
            file_bytes: 5,
            file_size: None,
            bytes: 5,
            total_bytes: None,
        });
        r.file_done("x", 5);
        r.done(&DoneInfo {
            direction: Direction::Send,
            files: 1,
            bytes_transferred: 5,
            resumed_bytes: 0,
            elapsed: Duration::from_millis(1),
        });
    }
}
