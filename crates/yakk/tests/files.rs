//! End to end: `yakk filesend` and `yakk filereceive` as real processes over real WebRTC on
//! 127.0.0.1, with the embedded signalling server.

mod common;

use std::path::Path;

use common::*;
use sha2::{Digest, Sha256};

fn write_big(path: &Path, mib: usize, seed: u64) {
    use std::io::Write;
    let block = pattern(1 << 20, seed);
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for i in 0..mib {
        let mut b = block.clone();
        b[..8].copy_from_slice(&(i as u64).to_le_bytes());
        f.write_all(&b).unwrap();
    }
}

fn sha(path: &Path) -> Vec<u8> {
    Sha256::digest(std::fs::read(path).unwrap()).to_vec()
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

fn receiver(code: &str, out: &Path, extra: &[&str]) -> Yakk {
    let o = out.to_str().unwrap();
    let mut all = vec![
        "filereceive",
        "--json",
        "--yes",
        "--ice-ip",
        "127.0.0.1",
        "-o",
        o,
    ];
    all.extend_from_slice(extra);
    all.push(code);
    Yakk::start(&all)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_100_mib_file_arrives_intact() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("big.bin");
    write_big(&src, 100, 1);
    let out = dir.path().join("out");
    let (mut s, code) = sender(&[src.to_str().unwrap()]).await;
    let mut r = receiver(&code, &out, &[]);
    let done = r.event("done", 120).await;
    assert_eq!(done["bytes"], 100u64 << 20);
    assert_eq!(r.exit_code(20).await, 0, "{}", r.stderr_text());
    assert_eq!(s.exit_code(20).await, 0, "{}", s.stderr_text());
    assert_eq!(sha(&out.join("big.bin")), sha(&src));
}

/// Files striped over lanes (the sender asks for them): intact, and both sides end cleanly.
#[tokio::test(flavor = "multi_thread")]
async fn a_file_over_lanes_arrives_intact() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("big.bin");
    write_big(&src, 40, 3);
    let out = dir.path().join("out");
    let (mut s, code) = sender(&["--lanes", "5", src.to_str().unwrap()]).await;
    // The receiver wishes for one, not for lanes by its round trip (32 on a loaded machine).
    let mut r = receiver(&code, &out, &["--lanes", "1"]);
    assert_eq!(r.event("connected", 30).await["lanes"], 5);
    let done = r.event("done", 120).await;
    assert_eq!(done["bytes"], 40u64 << 20);
    assert_eq!(r.exit_code(20).await, 0, "{}", r.stderr_text());
    assert_eq!(s.exit_code(20).await, 0, "{}", s.stderr_text());
    assert_eq!(sha(&out.join("big.bin")), sha(&src));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_folder_tree_keeps_its_shape() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("a/b/c")).unwrap();
    std::fs::create_dir_all(tree.join("empty/inner-empty")).unwrap();
    std::fs::create_dir_all(tree.join("日本語")).unwrap();
    std::fs::write(tree.join("a/b/c/deep.txt"), b"deep").unwrap();
    std::fs::write(tree.join("a/zero"), b"").unwrap();
    std::fs::write(tree.join("日本語/ファイル.txt"), "こんにちは".as_bytes()).unwrap();
    std::fs::write(tree.join("Ünïcödé ✓.md"), b"# hi").unwrap();
    let out = dir.path().join("out");
    let (mut s, code) = sender(&[tree.to_str().unwrap()]).await;
    let mut r = receiver(&code, &out, &[]);
    assert_eq!(r.exit_code(60).await, 0, "{}", r.stderr_text());
    assert_eq!(s.exit_code(20).await, 0);
    let got = out.join("tree");
    assert_eq!(std::fs::read(got.join("a/b/c/deep.txt")).unwrap(), b"deep");
    assert_eq!(std::fs::metadata(got.join("a/zero")).unwrap().len(), 0);
    assert!(got.join("empty/inner-empty").is_dir());
    assert_eq!(
        std::fs::read_to_string(got.join("日本語/ファイル.txt")).unwrap(),
        "こんにちは"
    );
    assert_eq!(std::fs::read(got.join("Ünïcödé ✓.md")).unwrap(), b"# hi");
}

#[tokio::test(flavor = "multi_thread")]
async fn resume_after_the_sender_is_killed() {
    const MIB: usize = 400;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("resume.bin");
    write_big(&src, MIB, 7);
    let out = dir.path().join("out");
    let (mut s, code) = sender(&[src.to_str().unwrap()]).await;
    let mut r = receiver(&code, &out, &[]);
    let p = r.event("progress", 60).await;
    let seen = p["bytes"].as_u64().unwrap();
    s.child.start_kill().unwrap();
    s.exit_code(10).await;
    // The code is dead: the advice is a new code, and the transfer continues by itself.
    let err = r.event("error", 30).await;
    let msg = err["message"].as_str().unwrap();
    assert!(
        msg.contains("the partial files are kept in ")
            && msg.contains("ask the sender for a new code and receive again")
            && !msg.contains("same command"),
        "{msg}"
    );
    assert_eq!(r.exit_code(30).await, 4, "the first receive must fail");
    assert!(
        !out.join("resume.bin").exists(),
        "no final file from a broken transfer"
    );

    let (mut s2, code2) = sender(&[src.to_str().unwrap()]).await;
    let mut r2 = receiver(&code2, &out, &[]);
    let done = r2.event("done", 120).await;
    assert_eq!(r2.exit_code(20).await, 0, "{}", r2.stderr_text());
    s2.exit_code(20).await;
    let resumed = done["resumed_bytes"].as_u64().unwrap();
    let sent_again = done["bytes"].as_u64().unwrap();
    assert!(
        resumed >= seen.min(1),
        "resumed {resumed} bytes, saw {seen} before the kill"
    );
    assert_eq!(
        resumed + sent_again,
        (MIB as u64) << 20,
        "nothing is sent twice"
    );
    assert_eq!(sha(&out.join("resume.bin")), sha(&src));
}

#[tokio::test(flavor = "multi_thread")]
async fn stdout_carries_only_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("note.txt");
    let body = pattern(3 << 20, 3);
    std::fs::write(&src, &body).unwrap();
    let (mut s, code) = sender(&[src.to_str().unwrap()]).await;
    let out = std::process::Command::new(BIN)
        .args([
            "filereceive",
            "--yes",
            "--stdout",
            "--ice-ip",
            "127.0.0.1",
            &code,
        ])
        .env_remove("YAKK_SIGNAL")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, body);
    assert_eq!(s.exit_code(20).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn legacy_transfer_both_directions() {
    for (send_flag, recv_flag) in [("--legacy-only", "--legacy"), ("--legacy", "--legacy-only")] {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("legacy.bin");
        std::fs::write(&src, pattern(2 << 20, 5)).unwrap();
        let out = dir.path().join("out");
        let (mut s, code) = sender(&[send_flag, src.to_str().unwrap()]).await;
        let mut r = receiver(&code, &out, &[recv_flag]);
        let ev = r.event("connected", 30).await;
        assert_eq!(ev["protocol"], "yakk/1", "{send_flag} {recv_flag}");
        assert_eq!(r.exit_code(60).await, 0, "{}", r.stderr_text());
        assert_eq!(s.exit_code(20).await, 0, "{}", s.stderr_text());
        assert_eq!(sha(&out.join("legacy.bin")), sha(&src));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn existing_file_is_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("same-name.txt");
    std::fs::write(&src, b"new content").unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("same-name.txt"), b"precious").unwrap();
    let (mut s, code) = sender(&[src.to_str().unwrap()]).await;
    let mut r = receiver(&code, &out, &[]);
    let err = r.event("error", 60).await;
    let msg = err["message"].as_str().unwrap();
    assert!(
        msg.contains("same-name.txt") && msg.contains("--overwrite"),
        "{err}"
    );
    assert_eq!(
        r.exit_code(10).await,
        9,
        "a refusal, as the sender's exit says"
    );
    assert_eq!(
        std::fs::read(out.join("same-name.txt")).unwrap(),
        b"precious"
    );
    // The sender learns that the receiver declined, not why.
    let err = s.event("error", 30).await;
    assert_eq!(
        err["message"], "the receiver declined the transfer",
        "{err}"
    );
    assert_eq!(s.exit_code(10).await, 9);
}

/// An identical file already in the folder is refused like any other unless the receiver
/// opts in with --skip-identical; then nothing travels and both sides say so.
#[tokio::test(flavor = "multi_thread")]
async fn identical_files_are_skipped_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("same.txt");
    std::fs::write(&src, b"same content").unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("same.txt"), b"same content").unwrap();
    let (mut s, code) = sender(&[src.to_str().unwrap()]).await;
    let mut r = receiver(&code, &out, &[]);
    let err = r.event("error", 60).await;
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("--skip-identical"),
        "{err}"
    );
    assert_eq!(
        r.exit_code(10).await,
        9,
        "a refusal, as the sender's exit says"
    );
    let err = s.event("error", 30).await;
    assert_eq!(
        err["message"], "the receiver declined the transfer",
        "{err}"
    );
    s.exit_code(10).await;

    let (mut s, code) = sender(&[src.to_str().unwrap()]).await;
    let mut r = receiver(&code, &out, &["--skip-identical"]);
    let done = r.event("done", 60).await;
    assert_eq!(done["bytes"], 0);
    assert_eq!(done["resumed_bytes"], 12);
    assert_eq!(r.exit_code(10).await, 0, "{}", r.stderr_text());
    assert_eq!(s.event("done", 30).await["bytes"], 0);
    assert_eq!(s.exit_code(10).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_burns_the_code() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("secret.txt");
    std::fs::write(&src, b"secret").unwrap();
    let (mut s, code) = sender(&[src.to_str().unwrap()]).await;
    let mut r = receiver(&with_wrong_password(&code, "guess-word"), dir.path(), &[]);
    assert_eq!(r.exit_code(30).await, 3, "{}", r.stderr_text());
    let err = s.event("error", 30).await;
    assert!(err["message"].as_str().unwrap().contains("burned"), "{err}");
    assert_eq!(s.exit_code(10).await, 3);
}

/// What people do to codes they pass on: the words given apart, in capitals, with a full stop
/// from the sentence they came in. The code still works: such a slip must not cost the one
/// guess a code allows.
#[tokio::test(flavor = "multi_thread")]
async fn a_code_typed_apart_in_capitals_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("note.txt");
    std::fs::write(&src, b"typed loosely").unwrap();
    let (mut s, code) = sender(&[src.to_str().unwrap()]).await;
    let loose = format!("{}.", code.to_uppercase());
    let out = dir.path().join("out");
    let o = out.to_str().unwrap();
    let mut args = vec![
        "filereceive",
        "--json",
        "--yes",
        "--ice-ip",
        "127.0.0.1",
        "-o",
        o,
    ];
    // `123` `CROSSBOW` `NIMBLE@127.0.0.1:PORT.`
    args.extend(loose.split('-'));
    assert!(args.len() >= 10, "{args:?}");
    let mut r = Yakk::start(&args);
    // With --json the offer is an event too, before anything is written.
    let offer = r.event("offer", 30).await;
    assert_eq!(offer["files"], 1, "{offer}");
    assert_eq!(offer["total_bytes"], 13, "{offer}");
    assert_eq!(offer["entries"][0]["name"], "note.txt", "{offer}");
    assert_eq!(r.exit_code(30).await, 0, "{}", r.stderr_text());
    assert_eq!(
        std::fs::read(out.join("note.txt")).unwrap(),
        b"typed loosely"
    );
    assert_eq!(s.exit_code(10).await, 0, "{}", s.stderr_text());
}

/// `--allow-retries` with filesend's one receiver: a wrong code does not use up the room, so the
/// right one still gets in (it used to get "Room is full" while the sender waited forever).
#[tokio::test(flavor = "multi_thread")]
async fn allow_retries_lets_the_right_receiver_in_after_a_wrong_one() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("retry.txt");
    std::fs::write(&src, b"second time lucky").unwrap();
    let (mut s, code) = sender(&["--allow-retries", "1", src.to_str().unwrap()]).await;
    let mut r = receiver(&with_wrong_password(&code, "guess-word"), dir.path(), &[]);
    assert_eq!(r.exit_code(30).await, 3, "{}", r.stderr_text());
    let out = dir.path().join("out");
    let mut r = receiver(&code, &out, &[]);
    assert_eq!(r.exit_code(30).await, 0, "{}", r.stderr_text());
    assert_eq!(
        std::fs::read(out.join("retry.txt")).unwrap(),
        b"second time lucky"
    );
    assert_eq!(s.exit_code(10).await, 0, "{}", s.stderr_text());
}

/// The code typed at the prompt on a terminal: shown as it is typed, and Tab completes a word
/// of the list. The receiver types the room, a space, the start of the first word in capitals
/// and Tab, then the rest of the code.
#[tokio::test(flavor = "multi_thread")]
async fn the_code_prompt_shows_the_code_and_completes_words() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("prompted.txt");
    std::fs::write(&src, b"asked for").unwrap();
    let (mut s, code) = sender(&["--code-length", "2", src.to_str().unwrap()]).await;
    let (room_pw, server) = code.split_once('@').unwrap();
    let (room, pw) = room_pw.split_once('-').unwrap();
    let (first, second) = pw.split_once('-').unwrap();
    // The shortest start of the first word that only it has in the list.
    let words: Vec<&str> = include_str!("../src/words.txt")
        .split_whitespace()
        .collect();
    let start = (1..=first.len())
        .map(|n| &first[..n])
        .find(|p| words.iter().filter(|w| w.starts_with(p)).count() == 1)
        .expect("every word has a start of its own");
    let out = dir.path().join("out");
    let line = format!(
        "'{BIN}' filereceive --yes --ice-ip 127.0.0.1 -s '{server}' -o '{}'",
        out.display()
    );
    let mut r = on_a_terminal(&line);
    let mut stdin = r.stdin.take().unwrap();
    let mut stdout = r.stdout.take().unwrap();
    let mut shown = Vec::new();
    let mut buf = [0u8; 4096];
    let prompt = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while !String::from_utf8_lossy(&shown).contains("Code: ") {
            let n = stdout.read(&mut buf).await.unwrap();
            assert!(n > 0, "receiver ended before asking for the code");
            shown.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(
        prompt.is_ok(),
        "no prompt: {:?}",
        String::from_utf8_lossy(&shown)
    );
    let typed = format!("{room} {}\t", start.to_uppercase());
    stdin.write_all(typed.as_bytes()).await.unwrap();
    // Tab completed the word: the terminal shows it whole.
    let completed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while !String::from_utf8_lossy(&shown).contains(first) {
            let n = stdout.read(&mut buf).await.unwrap();
            assert!(n > 0, "receiver ended at the prompt");
            shown.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    let text = String::from_utf8_lossy(&shown).to_string();
    assert!(
        completed.is_ok(),
        "Tab did not complete {first:?}: {text:?}"
    );
    assert!(text.contains(room), "the room is shown as typed: {text:?}");
    stdin
        .write_all(format!(" {second}\r").as_bytes())
        .await
        .unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        stdout.read_to_end(&mut rest),
    )
    .await;
    let status = tokio::time::timeout(std::time::Duration::from_secs(10), r.wait())
        .await
        .expect("receiver exits")
        .unwrap();
    let rest = String::from_utf8_lossy(&rest);
    assert_eq!(status.code(), Some(0), "{rest:?}");
    assert_eq!(
        std::fs::read(out.join("prompted.txt")).unwrap(),
        b"asked for"
    );
    assert_eq!(s.exit_code(10).await, 0);
}

/// What a receiver on a terminal showed before and after it answered the offer question.
struct Answered {
    before: String,
    after: String,
    status: Option<i32>,
}

/// Runs `yakk filereceive CODE -o OUT` on a pseudo-terminal (util-linux `script`), waits for
/// the question about the offer, answers `answer`, and collects what the terminal showed.
async fn answer_on_a_terminal(code: &str, out: &Path, answer: &str) -> Answered {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let line = format!(
        "'{BIN}' filereceive --ice-ip 127.0.0.1 -o '{}' '{code}'",
        out.display()
    );
    let mut r = on_a_terminal(&line);
    let mut stdin = r.stdin.take().unwrap();
    let mut stdout = r.stdout.take().unwrap();
    let mut shown = Vec::new();
    let asked = tokio::time::timeout(std::time::Duration::from_secs(60), async {
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
    let text = String::from_utf8_lossy(&shown).to_string();
    assert!(asked.is_ok(), "no question within 60 s; terminal: {text:?}");
    let before = text[..text.find("Accept? [y/N]").unwrap()].to_string();
    stdin
        .write_all(format!("{answer}\n").as_bytes())
        .await
        .unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        stdout.read_to_end(&mut rest),
    )
    .await;
    let status = tokio::time::timeout(std::time::Duration::from_secs(10), r.wait())
        .await
        .expect("receiver exits")
        .unwrap();
    Answered {
        before,
        after: String::from_utf8_lossy(&rest).to_string(),
        status: status.code(),
    }
}

/// The question on a terminal: the receiver sees the offer, answers "n", and nothing is
/// written.
#[tokio::test(flavor = "multi_thread")]
async fn declining_the_offer_at_the_prompt_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("offered.txt");
    std::fs::write(&src, b"not wanted").unwrap();
    let out = dir.path().join("out");
    let (mut s, code) = sender(&[src.to_str().unwrap()]).await;
    let a = answer_on_a_terminal(&code, &out, "n").await;
    assert!(a.before.contains("offered.txt"), "{:?}", a.before);
    assert!(a.before.contains("1 file(s)"), "{:?}", a.before);
    // No progress bar before the answer.
    assert!(
        !a.before.contains("total") && !a.before.contains("receiving"),
        "{:?}",
        a.before
    );
    assert_eq!(a.status, Some(9), "{:?}", a.after);
    assert!(a.after.contains("declined"), "{:?}", a.after);
    let err = s.event("error", 30).await;
    assert_eq!(
        err["message"], "the receiver declined the transfer",
        "{err}"
    );
    assert_eq!(s.exit_code(10).await, 9);
    let written: Vec<_> = std::fs::read_dir(&out)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(written.is_empty(), "{written:?}");
}

/// Accepting on a terminal: the file arrives, and the summary gives the time and the rate.
#[tokio::test(flavor = "multi_thread")]
async fn accepting_the_offer_at_the_prompt_receives_it() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("wanted.bin");
    write_big(&src, 2, 7);
    let out = dir.path().join("out");
    let (mut s, code) = sender(&[src.to_str().unwrap()]).await;
    let a = answer_on_a_terminal(&code, &out, "y").await;
    assert_eq!(a.status, Some(0), "{:?}", a.after);
    assert!(
        a.after.contains("Received 1 file(s), 2.00 MiB in "),
        "{:?}",
        a.after
    );
    assert!(a.after.contains("B/s."), "{:?}", a.after);
    assert_eq!(sha(&out.join("wanted.bin")), sha(&src));
    s.event("done", 30).await;
    assert_eq!(s.exit_code(10).await, 0);
}

/// `printf … | yakk filesend --name notes.txt -` in text mode: its stderr up to the line that
/// starts with `until`, and the process (killed when dropped).
async fn text_sender_of_stdin(
    data: &str,
    name: &str,
    until: &str,
) -> (tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt;
    let line =
        format!("printf '{data}' | exec '{BIN}' filesend --ice-ip 127.0.0.1 --name '{name}' -");
    let mut child = tokio::process::Command::new("sh")
        .args(["-c", &line])
        .env_remove("YAKK_SIGNAL")
        .env_remove("YAKK_PASSWORD")
        .env_remove("YAKK_CODE")
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut text = String::new();
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Some(l) = lines.next_line().await.unwrap() {
            text.push_str(&l);
            text.push('\n');
            if l.starts_with(until) {
                return;
            }
        }
        panic!("sender ended: {text:?}");
    })
    .await
    .unwrap_or_else(|_| panic!("no {until:?} line from the sender"));
    // Keep reading: a sender whose stderr is closed fails at its next line.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, text)
}

/// Standard input: named by the sender (--name), its size said to be unknown on both sides,
/// and received under that name with nothing left behind.
#[tokio::test(flavor = "multi_thread")]
async fn stdin_arrives_under_its_name_and_its_size_is_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (mut s, said) = text_sender_of_stdin("hello from stdin", "notes.txt", "Offering").await;
    assert!(
        said.contains("Offering 1 file(s), unknown size. Waiting for the receiver"),
        "{said:?}"
    );
    let code = said
        .lines()
        .find_map(|l| l.strip_prefix("Code: "))
        .expect("a code")
        .to_string();
    let a = answer_on_a_terminal(&code, &out, "y").await;
    assert!(
        a.before.contains("1 file(s), unknown size:"),
        "{:?}",
        a.before
    );
    assert!(
        a.before.contains("notes.txt (unknown size)"),
        "{:?}",
        a.before
    );
    assert_eq!(a.status, Some(0), "{:?}", a.after);
    assert_eq!(
        std::fs::read(out.join("notes.txt")).unwrap(),
        b"hello from stdin"
    );
    let names: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["notes.txt"]);
    let st = tokio::time::timeout(std::time::Duration::from_secs(20), s.wait())
        .await
        .expect("sender exits")
        .unwrap();
    assert!(st.success());
}

/// Polls `y`'s stderr until it holds `what` (text mode prints there).
async fn stderr_until(y: &Yakk, what: &str, secs: u64) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let text = y.stderr_text();
        if text.contains(what) {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {what:?} within {secs} s: {text:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A folder with an empty file: both sides count the same files with the same words (it was
/// "Sent 5 file(s)" / "Received 6 file(s)"), sizes in the same units, and the receiver says
/// where the files are.
#[tokio::test(flavor = "multi_thread")]
async fn both_sides_count_the_same_files() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("sub/deeper")).unwrap();
    std::fs::write(tree.join("empty"), b"").unwrap();
    for (i, name) in ["a", "b", "sub/c", "sub/d", "sub/deeper/e"]
        .iter()
        .enumerate()
    {
        std::fs::write(tree.join(name), pattern(1000 + i, i as u64)).unwrap();
    }
    let out = dir.path().join("out");
    let s = Yakk::start(&["filesend", "--ice-ip", "127.0.0.1", tree.to_str().unwrap()]);
    let said = stderr_until(&s, "Waiting for the receiver", 30).await;
    assert!(
        said.contains("Offering 6 file(s) in 3 folder(s), 4.89 KiB."),
        "{said:?}"
    );
    let code = said
        .lines()
        .find_map(|l| l.strip_prefix("Code: "))
        .expect("a code")
        .to_string();
    let mut r = Yakk::start(&[
        "filereceive",
        "--yes",
        "--ice-ip",
        "127.0.0.1",
        "-o",
        out.to_str().unwrap(),
        &code,
    ]);
    assert_eq!(r.exit_code(60).await, 0, "{}", r.stderr_text());
    let mut s = s;
    assert_eq!(s.exit_code(20).await, 0, "{}", s.stderr_text());
    let (sent, received) = (s.stderr_text(), r.stderr_text());
    assert!(sent.contains("Sent 6 file(s), 4.89 KiB in "), "{sent:?}");
    assert!(
        received.contains("Received 6 file(s), 4.89 KiB in "),
        "{received:?}"
    );
    let folder = std::fs::canonicalize(&out).unwrap();
    assert!(
        received.contains(&format!("Saved in {}: tree/.", folder.display())),
        "{received:?}"
    );
    assert_eq!(std::fs::metadata(out.join("tree/empty")).unwrap().len(), 0);
}

/// A code used with the wrong command: `yakk client` joins a `yakk filesend` room and a program
/// sends an HTTP request through it. The sender says that the other side does not speak the
/// file protocol and which command it expected, not only which byte was wrong.
#[tokio::test(flavor = "multi_thread")]
async fn a_code_given_to_the_wrong_command_is_said_so() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("a.txt");
    std::fs::write(&src, b"for a receiver").unwrap();
    let (mut s, code) = sender(&[src.to_str().unwrap()]).await;
    let mut c = start_joiner(&code, &[]);
    let addr = c.event("listening", 30).await["address"]
        .as_str()
        .unwrap()
        .to_string();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut tcp, b"GET / HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let err = s.event("error", 30).await;
    let msg = err["message"].as_str().unwrap();
    assert!(
        msg.contains("does not speak yakk's file protocol") && msg.contains("yakk filereceive"),
        "{err}"
    );
    assert_ne!(s.exit_code(10).await, 0);
    drop(c);
}

/// The other way round: `yakk filereceive` with the code of a `yakk server` room, whose shared
/// service answers as a web server would. The receiver says the sender is not a file command.
#[tokio::test(flavor = "multi_thread")]
async fn a_code_made_by_the_wrong_command_is_said_so() {
    let dir = tempfile::tempdir().unwrap();
    let service = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = service.local_addr().unwrap().port();
    tokio::spawn(async move {
        if let Ok((mut s, _)) = service.accept().await {
            let _ =
                tokio::io::AsyncWriteExt::write_all(&mut s, b"HTTP/1.0 400 Bad Request\r\n\r\n")
                    .await;
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        }
    });
    let (_owner, code) = owner_with_code(port, &[]).await;
    let mut r = receiver(&code, dir.path(), &[]);
    let err = r.event("error", 30).await;
    let msg = err["message"].as_str().unwrap();
    assert!(
        msg.contains("does not speak yakk's file protocol") && msg.contains("yakk filesend"),
        "{err}"
    );
    assert_ne!(r.exit_code(10).await, 0);
}
