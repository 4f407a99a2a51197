//! Smoke run of the performance lab (bench/run.py): small sizes, loopback only, a few seconds.
//! It proves the harness still drives this build of yakk end to end (forwarding: setup, round
//! trips, 1 and 16 connections, 100 concurrent ones; a file transfer) and that every yakk cell
//! produced its figures (`--check`). The figures of a debug build on a busy CI machine mean
//! nothing; the full run is `python3 bench/run.py`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn bench_harness_smoke_run() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut child = Command::new("python3")
        .current_dir(&repo)
        .args([
            "bench/run.py",
            "--quick",
            "--no-wan",
            "--only",
            "forward,files",
        ])
        .args(["--tools", "direct,yakk", "--many", "100", "--check"])
        .arg("--yakk")
        .arg(env!("CARGO_BIN_EXE_yakk"))
        .arg("--out")
        .arg(out.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 is needed for the bench smoke run (.ci/run installs it)");
    // The harness bounds itself (5 minutes for a quick run); this is the backstop.
    let limit = Duration::from_secs(360);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("bench/run.py --quick did not finish in {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "bench smoke run failed ({}):\n{stderr}\n{stdout}",
        output.status
    );
    // The report names the yakk cells with figures, not failures.
    assert!(stdout.contains("| yakk (yakk/2) |"), "{stdout}");
    assert!(
        stdout.contains("100 of 100 concurrent connections"),
        "{stdout}"
    );
    assert!(
        out.path().join("results.json").exists(),
        "no results.json in {:?}",
        out.path()
    );
}
