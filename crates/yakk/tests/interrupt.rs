//! Ctrl-C (SIGINT) on real processes: every command stops with the same exit code (130) and a
//! `stopped` event; a transfer stops at any point, keeps its partial files for a resume, and
//! the peer says that the other side stopped (not that the network failed).

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const STOPPED: i32 = 130;
const PEER_GONE: i32 = 4;

fn sigint(pid: u32) {
    let ok = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "kill -INT {pid}");
}

fn write_big(path: &Path, mib: usize) {
    use std::io::Write;
    let block = pattern(1 << 20, 11);
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for i in 0..mib {
        let mut b = block.clone();
        b[..8].copy_from_slice(&(i as u64).to_le_bytes());
        f.write_all(&b).unwrap();
    }
}

async fn sender(args: &[&str]) -> (Yakk, String) {
    let mut all = vec!["filesend", "--json", "--ice-ip", "127.0.0.1"];
    all.extend_from_slice(args);
    let mut s = Yakk::start(&all);
    let code = s.event("code", 30).await["code"]
        .as_str()
        .unwrap()
        .to_string();
    (s, code)
}

fn receiver(code: &str, out: &Path) -> Yakk {
    Yakk::start(&[
        "filereceive",
        "--json",
        "--yes",
        "--ice-ip",
        "127.0.0.1",
        "-o",
        out.to_str().unwrap(),
        code,
    ])
}

/// Partial files in `dir`: (name, length).
fn partials(dir: &Path) -> Vec<(String, u64)> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
                .map(|e| {
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        e.metadata().unwrap().len(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The receiver's user presses Ctrl-C mid-transfer: it stops at once with 130, keeps the
/// partial file, and the sender says the receiver stopped. A new code resumes the file.
#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_stops_the_receiver_and_the_transfer_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("big.bin");
    write_big(&src, 300);
    let out = dir.path().join("out");
    let (mut s, code) = sender(&[src.to_str().unwrap()]).await;
    let mut r = receiver(&code, &out);
    let p = r.event("progress", 60).await;
    assert!(p["bytes"].as_u64().unwrap() < 300 << 20, "still running");
    sigint(r.child.id().unwrap());
    let stopped = r.event("stopped", 15).await;
    let msg = stopped["message"].as_str().unwrap();
    let folder = std::fs::canonicalize(&out).unwrap();
    assert!(
        msg.starts_with("Stopped at ")
            && msg.contains(" MiB of 300.00 MiB; ")
            && msg.ends_with(&format!(
                "; the partial files are kept in {}: ask the sender for a new code and receive \
                 again, the transfer continues where it stopped.",
                folder.display()
            )),
        "{msg}"
    );
    assert_eq!(r.exit_code(15).await, STOPPED, "{}", r.stderr_text());
    let err = s.event("error", 15).await;
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .starts_with("the receiver stopped the transfer"),
        "{err}"
    );
    assert_eq!(err["exit_code"], PEER_GONE);
    assert_eq!(s.exit_code(15).await, PEER_GONE);
    assert!(!out.join("big.bin").exists());
    let held = partials(&out);
    assert_eq!(held.len(), 1, "{held:?}");
    assert!(held[0].1 > 0, "{held:?}");

    let (mut s2, code2) = sender(&[src.to_str().unwrap()]).await;
    let mut r2 = receiver(&code2, &out);
    let done = r2.event("done", 120).await;
    assert_eq!(r2.exit_code(20).await, 0, "{}", r2.stderr_text());
    assert_eq!(s2.exit_code(20).await, 0);
    assert!(done["resumed_bytes"].as_u64().unwrap() >= held[0].1);
    assert_eq!(
        std::fs::read(out.join("big.bin")).unwrap(),
        std::fs::read(&src).unwrap()
    );
}

/// The sender's user presses Ctrl-C mid-transfer: the sender stops with 130, the receiver says
/// the sender stopped (exit 4) and keeps its partial file.
#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_stops_the_sender_and_the_receiver_keeps_its_part() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("big.bin");
    write_big(&src, 300);
    let out = dir.path().join("out");
    let (mut s, code) = sender(&[src.to_str().unwrap()]).await;
    let mut r = receiver(&code, &out);
    s.event("progress", 60).await;
    sigint(s.child.id().unwrap());
    let stopped = s.event("stopped", 15).await;
    let msg = stopped["message"].as_str().unwrap();
    assert!(
        msg.starts_with("Stopped at ")
            && msg.ends_with(
                "; the receiver keeps what it received: run yakk filesend again and give it \
                 the new code, the transfer continues where it stopped."
            ),
        "{msg}"
    );
    assert_eq!(s.exit_code(15).await, STOPPED, "{}", s.stderr_text());
    let err = r.event("error", 15).await;
    let msg = err["message"].as_str().unwrap();
    assert!(
        msg.starts_with("the sender stopped the transfer at ")
            && msg.contains("partial files are kept"),
        "{msg}"
    );
    assert_eq!(r.exit_code(15).await, PEER_GONE);
    let held = partials(&out);
    assert_eq!(held.len(), 1, "{held:?}");
    assert!(held[0].1 > 0);
}

/// Ctrl-C while a command waits: filesend (for a receiver), server (for joiners) and client
/// (connected) all stop the same way.
#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_gives_every_command_the_same_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("f.txt");
    std::fs::write(&src, b"x").unwrap();
    let (mut s, _) = sender(&[src.to_str().unwrap()]).await;
    sigint(s.child.id().unwrap());
    s.event("stopped", 10).await;
    assert_eq!(s.exit_code(10).await, STOPPED, "{}", s.stderr_text());

    let (port, _echo) = echo_server().await;
    let (mut owner, mut joiner, addr) = tunnel(port, &[], &[]).await;
    // Used, as people do before they stop it (a close in the first milliseconds after
    // connecting, before the offerer's channel has opened, goes untold).
    assert_eq!(round_trip(&addr, b"used\n").await, b"used\n");
    sigint(joiner.child.id().unwrap());
    joiner.event("stopped", 10).await;
    assert_eq!(joiner.exit_code(10).await, STOPPED);
    // The owner hears at once that the joiner closed the session (not that the network failed).
    let gone = owner.event("disconnected", 3).await;
    assert_eq!(gone["reason"], "the peer closed the session", "{gone}");
    sigint(owner.child.id().unwrap());
    owner.event("stopped", 10).await;
    assert_eq!(owner.exit_code(10).await, STOPPED);
}

/// Ctrl-C on a sharing owner: its joiner says the owner closed the session, within a moment,
/// rather than "the peer stopped answering" once ICE gives up seconds later.
#[tokio::test(flavor = "multi_thread")]
async fn the_joiner_hears_that_the_owner_stopped() {
    let (port, _echo) = echo_server().await;
    let (mut owner, mut joiner, _) = tunnel(port, &[], &[]).await;
    let t0 = std::time::Instant::now();
    sigint(owner.child.id().unwrap());
    let err = joiner.event("error", 3).await;
    assert_eq!(
        err["message"], "the owner went away: the peer closed the session",
        "{err}"
    );
    assert!(t0.elapsed() < Duration::from_secs(3));
    assert_eq!(joiner.exit_code(10).await, PEER_GONE);
    assert_eq!(owner.exit_code(10).await, STOPPED);
}

/// `yakk filereceive` on a pseudo-terminal (util-linux `script`), up to its question; the
/// terminal's output so far.
struct Asked {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::process::ChildStdout,
    shown: String,
}

async fn asked_on_a_terminal(code: &str, out: &Path) -> Asked {
    let line = format!(
        "'{}' filereceive --ice-ip 127.0.0.1 -o '{}' '{code}'",
        BIN,
        out.display()
    );
    let mut child = on_a_terminal(&line);
    let stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut shown = Vec::new();
    let asked = tokio::time::timeout(Duration::from_secs(60), async {
        let mut buf = [0u8; 4096];
        loop {
            let n = stdout.read(&mut buf).await.unwrap();
            assert!(n > 0, "receiver ended before asking");
            shown.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&shown).contains("Accept? [y/N]") {
                break;
            }
        }
    })
    .await;
    let shown = String::from_utf8_lossy(&shown).to_string();
    assert!(asked.is_ok(), "no question within 60 s: {shown:?}");
    Asked {
        child,
        stdin,
        stdout,
        shown,
    }
}

impl Asked {
    /// What the terminal shows until the receiver exits, and its exit code.
    async fn rest(mut self) -> (String, Option<i32>) {
        let mut rest = Vec::new();
        let _ =
            tokio::time::timeout(Duration::from_secs(20), self.stdout.read_to_end(&mut rest)).await;
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("receiver exits")
            .unwrap();
        (String::from_utf8_lossy(&rest).to_string(), status.code())
    }
}

/// Ctrl-C typed at the question (the terminal sends it to the receiver): it stops with 130
/// without waiting for an answer, and the sender says the receiver stopped.
#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_at_the_question_stops_the_receiver() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("offered.txt");
    std::fs::write(&src, b"hello").unwrap();
    let out = dir.path().join("out");
    let (mut s, code) = sender(&[src.to_str().unwrap()]).await;
    let mut a = asked_on_a_terminal(&code, &out).await;
    assert!(a.shown.contains("offered.txt"), "{:?}", a.shown);
    a.stdin.write_all(b"\x03").await.unwrap();
    let (after, status) = a.rest().await;
    assert_eq!(status, Some(STOPPED), "{after:?}");
    assert!(
        after.contains("Stopped: nothing was received."),
        "{after:?}"
    );
    let err = s.event("error", 15).await;
    assert_eq!(
        err["message"], "the receiver stopped the transfer: nothing was sent",
        "{err}"
    );
    assert_eq!(s.exit_code(10).await, PEER_GONE);
    assert!(!out.exists() || std::fs::read_dir(&out).unwrap().next().is_none());
}

/// The sender stops while the receiver's person is still asked: the receiver does not wait for
/// the answer to say so.
#[tokio::test(flavor = "multi_thread")]
async fn the_receiver_hears_the_sender_stop_during_its_question() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("offered.txt");
    std::fs::write(&src, b"hello").unwrap();
    let out = dir.path().join("out");
    let (mut s, code) = sender(&[src.to_str().unwrap()]).await;
    let a = asked_on_a_terminal(&code, &out).await;
    sigint(s.child.id().unwrap());
    let stopped = s.event("stopped", 15).await;
    assert_eq!(stopped["message"], "Stopped: nothing was sent.");
    assert_eq!(s.exit_code(10).await, STOPPED);
    let (after, status) = a.rest().await;
    assert_eq!(status, Some(PEER_GONE), "{after:?}");
    assert!(
        after.contains("yakk: the sender stopped the transfer: nothing was received"),
        "{after:?}"
    );
}

/// `sh -c "PRODUCER | yakk filesend --json -"` in its own process group, as a terminal runs a
/// pipeline; its events, and the group's id. The whole group is killed when dropped.
struct Pipeline {
    group: tokio::process::Child,
    pgid: u32,
    events: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Pipeline {
    fn start(producer: &str) -> Pipeline {
        let line = format!("{producer} | exec '{BIN}' filesend --json --ice-ip 127.0.0.1 -");
        let mut group = tokio::process::Command::new("sh")
            .args(["-c", &line])
            .env_remove("YAKK_SIGNAL")
            .env_remove("YAKK_PASSWORD")
            .env_remove("YAKK_CODE")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let pgid = group.id().unwrap();
        let events = BufReader::new(group.stdout.take().unwrap()).lines();
        Pipeline {
            group,
            pgid,
            events,
        }
    }

    async fn event(&mut self, name: &str) -> Value {
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let line = self
                    .events
                    .next_line()
                    .await
                    .unwrap()
                    .expect("sender output");
                let v: Value = serde_json::from_str(&line).unwrap();
                if v["event"] == name {
                    return v;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {name} event from the sender"))
    }

    /// Signals the whole group, as Ctrl-C on a terminal does.
    fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([sig, "--", &format!("-{}", self.pgid)])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} -{}", self.pgid);
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        if self.group.try_wait().ok().flatten().is_none() {
            self.signal("-KILL");
        }
    }
}

/// `producer | yakk filesend -`, and Ctrl-C on that pipeline: the producer dies of it too,
/// which closes the pipe. That end is not the end of the data: the sender stops, the receiver
/// hears that it stopped and keeps nothing (a stream cannot be resumed).
#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_on_a_pipeline_does_not_deliver_a_cut_stream() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut p = Pipeline::start("yes yakk-line");
    let code = p.event("code").await["code"].as_str().unwrap().to_string();
    let mut r = receiver(&code, &out);
    r.event("progress", 60).await;
    p.signal("-INT");
    let stopped = p.event("stopped").await;
    let msg = stopped["message"].as_str().unwrap();
    assert!(
        msg.starts_with("Stopped at ") && msg.ends_with("; this transfer cannot be resumed."),
        "{msg}"
    );
    let err = r.event("error", 15).await;
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .starts_with("the sender stopped the transfer"),
        "{err}"
    );
    assert_eq!(r.exit_code(15).await, PEER_GONE);
    let left: Vec<_> = std::fs::read_dir(&out)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "nothing of a cut stream stays: {left:?}");
}

/// Ctrl-C on a receiver of standard input: a stream cannot be resumed, so its partial file
/// goes (it stayed behind as `.yakk-stream-….part`), and the receiver says so.
#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_on_a_stream_receiver_leaves_no_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut p = Pipeline::start("yes yakk-line");
    let code = p.event("code").await["code"].as_str().unwrap().to_string();
    let mut r = receiver(&code, &out);
    r.event("progress", 60).await;
    sigint(r.child.id().unwrap());
    let stopped = r.event("stopped", 15).await;
    let msg = stopped["message"].as_str().unwrap();
    assert!(
        msg.starts_with("Stopped at ")
            && msg.ends_with("; this transfer cannot be resumed, nothing of it was kept."),
        "{msg}"
    );
    assert_eq!(r.exit_code(15).await, STOPPED);
    let err = p.event("error").await;
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .starts_with("the receiver stopped the transfer"),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(&out)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}
