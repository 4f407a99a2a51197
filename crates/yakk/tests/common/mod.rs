//! Helpers for the end-to-end tests: run the real `yakk` binary, read its `--json` events, and
//! small TCP servers to forward to. Everything listens on 127.0.0.1 only.
#![allow(dead_code)]

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::mpsc;

pub const BIN: &str = env!("CARGO_BIN_EXE_yakk");

/// Starts `yakk ARGS...` with a clean environment (no signalling server, password or code from
/// the caller's), `env` added, and logging at `warn`; killed when dropped. Returns the child, its
/// stdout to read, and its stderr as it is collected.
pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> (Child, ChildStdout, Arc<Mutex<String>>) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("YAKK_SIGNAL")
        .env_remove("YAKK_PASSWORD")
        .env_remove("YAKK_CODE")
        // No configuration file of the person running the tests.
        .env_remove("YAKK_CONFIG")
        .env("XDG_CONFIG_HOME", "/nonexistent/yakk-tests")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn yakk");
    let stdout = child.stdout.take().unwrap();
    let stderr = Arc::new(Mutex::new(String::new()));
    let buf = stderr.clone();
    let err = child.stderr.take().unwrap();
    tokio::spawn(async move {
        let mut lines = BufReader::new(err).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut b = buf.lock().unwrap();
            b.push_str(&line);
            b.push('\n');
        }
    });
    (child, stdout, stderr)
}

/// A running `yakk` process; killed when dropped.
pub struct Yakk {
    pub child: Child,
    events: mpsc::UnboundedReceiver<Value>,
    pub stderr: Arc<Mutex<String>>,
}

impl Yakk {
    /// Starts `yakk ARGS...` with `--json` expected among the args for event parsing.
    pub fn start(args: &[&str]) -> Yakk {
        Self::start_env(args, &[])
    }

    pub fn start_env(args: &[&str], env: &[(&str, &str)]) -> Yakk {
        let (child, stdout, stderr) = spawn(args, env);
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|_| panic!("stdout line is not JSON: {line:?}"));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        Yakk {
            child,
            events: rx,
            stderr,
        }
    }

    /// The next event named `name` (earlier ones are skipped), within `secs`.
    pub async fn event(&mut self, name: &str, secs: u64) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(v)) if v["event"] == name => return v,
                Ok(Some(_)) => continue,
                Ok(None) => panic!(
                    "yakk exited before event {name:?}; stderr:\n{}",
                    self.stderr.lock().unwrap()
                ),
                Err(_) => panic!(
                    "no event {name:?} within {secs} s; stderr:\n{}",
                    self.stderr.lock().unwrap()
                ),
            }
        }
    }

    /// Waits for the process to exit within `secs`; returns its exit code.
    pub async fn exit_code(&mut self, secs: u64) -> i32 {
        match tokio::time::timeout(Duration::from_secs(secs), self.child.wait()).await {
            Ok(Ok(st)) => st.code().unwrap_or(-1),
            _ => panic!(
                "yakk did not exit within {secs} s; stderr:\n{}",
                self.stderr.lock().unwrap()
            ),
        }
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

/// An echo server on 127.0.0.1: echoes each connection until EOF, then shuts down its side.
pub async fn echo_server() -> (u16, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let h = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    (port, h)
}

/// Starts `yakk server --json` sharing `port`, on loopback, with these extra arguments.
pub fn start_owner(port: u16, extra: &[&str]) -> Yakk {
    let p = port.to_string();
    let mut args = vec!["server", "-p", &p, "--json", "--ice-ip", "127.0.0.1"];
    args.extend_from_slice(extra);
    Yakk::start(&args)
}

/// [`start_owner`], and its code once it has one.
pub async fn owner_with_code(port: u16, extra: &[&str]) -> (Yakk, String) {
    let mut owner = start_owner(port, extra);
    let code = owner.event("code", 20).await["code"]
        .as_str()
        .expect("the code event has a code")
        .to_string();
    (owner, code)
}

/// A port on 127.0.0.1 that nothing uses now, for TCP and UDP alike, for a server a test starts
/// next. Taken below the kernel's ephemeral range (32768 and up): a port the kernel handed out
/// with `bind(0)` may go to another process's outgoing connection before the server binds it
/// ("Address already in use" failed a CI run).
pub fn unused_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let base = std::process::id() % 4000;
    loop {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = 20_000 + ((base + n * 7) % 12_000) as u16;
        let tcp = std::net::TcpListener::bind(("127.0.0.1", port));
        if tcp.is_ok() && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Starts `yakk client` on a free local port with this code (its `listening` event says where).
pub fn start_joiner(code: &str, extra: &[&str]) -> Yakk {
    let mut args = vec!["client", "-p", "0", "--json", "--ice-ip", "127.0.0.1"];
    args.extend_from_slice(extra);
    args.push(code);
    Yakk::start(&args)
}

/// Starts an owner sharing `port` and a joiner listening on a free local port; returns both and
/// the joiner's local address once the tunnel is up.
pub async fn tunnel(
    port: u16,
    owner_extra: &[&str],
    joiner_extra: &[&str],
) -> (Yakk, Yakk, String) {
    let (owner, joiner, addr, _, _) = tunnel_with_events(port, owner_extra, joiner_extra).await;
    (owner, joiner, addr)
}

/// Starts a tunnel with these extra arguments and returns both sides' `connected` events with
/// the owner, the joiner and the joiner's address.
pub async fn tunnel_with_events(
    port: u16,
    owner_extra: &[&str],
    joiner_extra: &[&str],
) -> (Yakk, Yakk, String, serde_json::Value, serde_json::Value) {
    let (mut owner, code) = owner_with_code(port, owner_extra).await;
    let mut joiner = start_joiner(&code, joiner_extra);
    let j = joiner.event("connected", 30).await;
    let o = owner.event("connected", 30).await;
    let addr = joiner.event("listening", 10).await["address"]
        .as_str()
        .unwrap()
        .to_string();
    (owner, joiner, addr, o, j)
}

/// Deterministic pseudo-random bytes.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Writes `data` to a new connection to `addr`, shuts down writing, and returns all bytes read
/// back until EOF.
pub async fn round_trip(addr: &str, data: &[u8]) -> Vec<u8> {
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut r, mut w) = s.into_split();
    let data = data.to_vec();
    let writer = tokio::spawn(async move {
        w.write_all(&data).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut back = Vec::new();
    r.read_to_end(&mut back).await.unwrap();
    writer.await.unwrap();
    back
}

/// The same code with another password: what a guesser types.
pub fn with_wrong_password(code: &str, password: &str) -> String {
    let (room_pw, server) = code.split_once('@').expect("a code with its server");
    let room = room_pw.split_once('-').expect("a code with a password").0;
    format!("{room}-{password}@{server}")
}

/// Runs the shell command `line` on a pseudo-terminal (util-linux `script`), with none of the
/// caller's signalling server, password or code; its stdin and stdout are piped (what the
/// terminal shows comes on stdout); killed when dropped.
pub fn on_a_terminal(line: &str) -> Child {
    Command::new("script")
        .args(["-qec", line, "/dev/null"])
        .env_remove("YAKK_SIGNAL")
        .env_remove("YAKK_PASSWORD")
        .env_remove("YAKK_CODE")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("script (util-linux) runs yakk on a pseudo-terminal")
}
