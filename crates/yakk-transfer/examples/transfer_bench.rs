//! Throughput and peak memory of a yakk/2 transfer against a plain copy, both over loopback TCP.
//!
//! `cargo run --release -p yakk-transfer --example transfer_bench [SIZE_MIB] [RUNS]`
//! (defaults 1024 and 3).
//!
//! Modes: `plain-std` is blocking `std::io::copy` file → socket → file (zero-copy
//! sendfile/splice on Linux: the floor of any copy); `plain` is the same copy on tokio with 1 MiB
//! buffers (what an async application without a protocol does); `yakk` is [`send`]/[`receive`].
//! The parent makes a random file in a temporary folder, then runs each mode in a child process
//! of its own so that each peak RSS (VmHWM) is that mode's alone. Both modes read the file from
//! disk and write the received bytes to disk; yakk additionally hashes on both sides, frames the
//! data and renames the partial file. The scan (hashing the file once before the offer) is timed
//! apart: it happens when `yakk filesend` starts, before any receiver connects.

use std::path::{Path, PathBuf};
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use yakk_transfer::{Manifest, NullReporter, ReceiveOptions, receive, send};

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time (user + system) of this process so far, in seconds.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|u| u.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

async fn tcp_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (a, b) = tokio::join!(TcpStream::connect(addr), l.accept());
    (a.unwrap(), b.unwrap().0)
}

async fn plain(src: &Path, dst: &Path) -> u64 {
    let (mut a, mut b) = tcp_pair().await;
    let src = src.to_owned();
    let dst = dst.join("plain.bin");
    let sender = async move {
        let mut f = tokio::fs::File::open(&src).await.unwrap();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            a.write_all(&buf[..n]).await.unwrap();
        }
        a.shutdown().await.unwrap();
    };
    let receiver = async move {
        let mut f = tokio::fs::File::create(&dst).await.unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = b.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            f.write_all(&buf[..n]).await.unwrap();
            total += n as u64;
        }
        f.flush().await.unwrap();
        total
    };
    tokio::join!(sender, receiver).1
}

/// The floor: blocking std::io::copy on both sides (sendfile / splice on Linux, no user copy).
fn plain_std(src: &Path, dst: &Path) -> u64 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let src = src.to_owned();
    let sender = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let mut f = std::fs::File::open(src).unwrap();
        std::io::copy(&mut f, &mut s).unwrap();
    });
    let (mut s, _) = l.accept().unwrap();
    let mut f = std::fs::File::create(dst.join("plain.bin")).unwrap();
    let n = std::io::copy(&mut s, &mut f).unwrap();
    sender.join().unwrap();
    n
}

async fn yakk(m: &Manifest, dst: &Path) -> u64 {
    let (a, b) = tcp_pair().await;
    let (s, r) = tokio::join!(
        send(a, m, &NullReporter),
        receive(b, ReceiveOptions::into_dir(dst), &NullReporter)
    );
    s.unwrap();
    r.unwrap().bytes_received
}

fn child(mode: &str, src: PathBuf, dst: PathBuf) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (bytes, secs, cpu) = rt.block_on(async {
        // The scan is timed apart: `yakk filesend` does it before any receiver connects.
        let m = (mode == "yakk").then(|| {
            let t = Instant::now();
            let m = Manifest::scan(&[&src]).unwrap();
            eprintln!(
                "scan (BLAKE3 of the file): {:.2}s",
                t.elapsed().as_secs_f64()
            );
            m
        });
        let t = Instant::now();
        let cpu0 = cpu_secs();
        let n = match (mode, &m) {
            ("plain-std", _) => plain_std(&src, &dst),
            (_, None) => plain(&src, &dst).await,
            (_, Some(m)) => yakk(m, &dst).await,
        };
        (n, t.elapsed().as_secs_f64(), cpu_secs() - cpu0)
    });
    println!("{mode} {bytes} {secs:.3} {} {cpu:.2}", peak_rss_kib());
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 5 && args[1] == "--child" {
        child(&args[2], args[3].clone().into(), args[4].clone().into());
        return;
    }
    let mib: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1024);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("big.bin");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&src).unwrap();
        let mut xof = blake3::Hasher::new_keyed(&[7; 32]).finalize_xof();
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..mib {
            xof.fill(&mut buf);
            f.write_all(&buf).unwrap();
        }
    }
    let runs: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    let modes = ["plain-std", "plain", "yakk"];
    // Runs are interleaved (plain-std, plain, yakk, plain-std, …) so that the load of a shared
    // machine falls on every mode alike.
    let mut results: Vec<Vec<(f64, u64, f64)>> = vec![Vec::new(); modes.len()];
    for _ in 0..runs {
        for (i, mode) in modes.iter().enumerate() {
            let dst = tempfile::tempdir_in(dir.path()).unwrap();
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--child", mode])
                .arg(&src)
                .arg(dst.path())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
            let line = String::from_utf8(out.stdout).unwrap();
            let f: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(
                f[1].parse::<u64>().unwrap(),
                (mib as u64) << 20,
                "bytes moved"
            );
            results[i].push((
                f[2].parse().unwrap(),
                f[3].parse().unwrap(),
                f[4].parse().unwrap(),
            ));
        }
    }
    println!("file: {mib} MiB of random data, loopback TCP, {runs} interleaved runs per mode");
    println!(
        "{:<10} {:>8} {:>11} {:>13} {:>14} {:>13}",
        "mode", "best s", "best MiB/s", "median MiB/s", "median CPU s", "peak RSS MiB"
    );
    for (mode, mut all) in modes.iter().zip(results) {
        all.sort_by(|a, b| a.0.total_cmp(&b.0));
        let best = all[0].0;
        let median = all[all.len() / 2].0;
        let rss = all.iter().map(|r| r.1).max().unwrap_or(0);
        let mut cpu: Vec<f64> = all.iter().map(|r| r.2).collect();
        cpu.sort_by(f64::total_cmp);
        println!(
            "{mode:<10} {best:>8.2} {:>11.0} {:>13.0} {:>14.2} {:>13.1}",
            mib as f64 / best,
            mib as f64 / median,
            cpu[cpu.len() / 2],
            rss as f64 / 1024.0
        );
    }
}
