//! Faults of the signalling path, end to end: real `yakk` processes, a standalone `yakk signal`,
//! real sockets on 127.0.0.1 only.
//!
//! - the signalling server is unreachable, or dies before anyone joins;
//! - the signalling server dies after the tunnel is up (the tunnel must not care);
//! - a tampering signalling server (a WebSocket man in the middle written here) alters or
//!   replaces the sealed offer: both peers must refuse, and nothing may be forwarded;
//! - a slow consumer behind the owner: backpressure must reach the sender and memory stay bounded.
//!
//! Every wait is bounded; every process is killed when its handle drops (`kill_on_drop`).

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{echo_server, pattern, round_trip, unused_port};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Child;
use tokio::time::{Instant, sleep, timeout};

// ---------------------------------------------------------------------------------------------
// Processes

/// A running `yakk` process that records every `--json` event it prints; killed when dropped.
struct Proc {
    child: Child,
    events: Arc<Mutex<Vec<Value>>>,
    stdout_done: Arc<AtomicBool>,
    stderr: Arc<Mutex<String>>,
}

impl Proc {
    fn start(args: &[&str]) -> Proc {
        let (child, stdout, stderr) = common::spawn(args, &[]);
        let events = Arc::new(Mutex::new(Vec::new()));
        let stdout_done = Arc::new(AtomicBool::new(false));
        let (ev, done) = (events.clone(), stdout_done.clone());
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let v = serde_json::from_str(&line)
                    .unwrap_or_else(|_| Value::String(format!("NOT JSON: {line}")));
                ev.lock().unwrap().push(v);
            }
            done.store(true, Ordering::SeqCst);
        });
        Proc {
            child,
            events,
            stdout_done,
            stderr,
        }
    }

    fn events(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
    }

    fn find(&self, name: &str) -> Option<Value> {
        self.events().into_iter().find(|e| e["event"] == name)
    }

    fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("process still running")
    }

    /// The first event named `name` (seen now or within `secs`).
    async fn event(&self, name: &str, secs: u64) -> Value {
        self.first_of(&[name], secs).await
    }

    /// The first event named any of `names` (seen now or within `secs`).
    async fn first_of(&self, names: &[&str], secs: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let find = || {
            self.events()
                .into_iter()
                .find(|e| names.iter().any(|n| e["event"] == *n))
        };
        loop {
            if let Some(v) = find() {
                return v;
            }
            if Instant::now() > deadline || self.stdout_done.load(Ordering::SeqCst) {
                // One last look: the event may have landed together with end of output.
                if let Some(v) = find() {
                    return v;
                }
                panic!(
                    "no event {names:?} within {secs} s; events: {:?}\nstderr:\n{}",
                    self.events(),
                    self.stderr_text()
                );
            }
            sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the exit within `secs` and for the end of its output; returns the exit code.
    async fn exit_code(&mut self, secs: u64) -> i32 {
        let st = match timeout(Duration::from_secs(secs), self.child.wait()).await {
            Ok(Ok(st)) => st,
            _ => panic!(
                "yakk did not exit within {secs} s; events: {:?}\nstderr:\n{}",
                self.events(),
                self.stderr_text()
            ),
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.stdout_done.load(Ordering::SeqCst) && Instant::now() < deadline {
            sleep(Duration::from_millis(10)).await;
        }
        st.code().unwrap_or(-1)
    }

    fn still_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = timeout(Duration::from_secs(10), self.child.wait()).await;
    }

    /// Peak resident memory (VmHWM) in bytes.
    fn peak_rss(&self) -> u64 {
        self.status_kb("VmHWM:")
    }

    fn status_kb(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        let line = status
            .lines()
            .find(|l| l.starts_with(field))
            .expect("field in /proc/PID/status");
        let kb: u64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .expect("VmHWM value");
        kb * 1024
    }
}

/// A port nobody listens on right now (bound, then released).
async fn free_port() -> u16 {
    unused_port()
}

async fn wait_listening(port: u16, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on port {port} after {secs} s"
        );
        sleep(Duration::from_millis(25)).await;
    }
}

/// A standalone `yakk signal` on 127.0.0.1; returns it and its port once it accepts connections.
async fn start_signal() -> (Proc, u16) {
    let port = free_port().await;
    let listen = format!("127.0.0.1:{port}");
    let p = Proc::start(&["signal", "--listen", &listen]);
    wait_listening(port, 15).await;
    (p, port)
}

fn message(ev: &Value) -> String {
    ev["message"].as_str().unwrap_or_default().to_string()
}

/// Starts an owner sharing `target` through the signalling server at `signal` (a URL); returns
/// it and its code once the room exists.
async fn start_owner(target: u16, signal: &str) -> (Proc, String) {
    let t = target.to_string();
    let owner = Proc::start(&[
        "server",
        "-p",
        &t,
        "--json",
        "--ice-ip",
        "127.0.0.1",
        "-s",
        signal,
    ]);
    let code = owner.event("code", 20).await["code"]
        .as_str()
        .unwrap()
        .to_string();
    (owner, code)
}

fn start_joiner(port: u16, signal: &str, code: &str) -> Proc {
    let p = port.to_string();
    Proc::start(&[
        "client",
        "-p",
        &p,
        "--json",
        "--ice-ip",
        "127.0.0.1",
        "-s",
        signal,
        code,
    ])
}

// ---------------------------------------------------------------------------------------------
// 1. The signalling server is gone before anyone connects.

/// `yakk signal` says where it listens when it starts, without -v: the address clients use.
#[tokio::test(flavor = "multi_thread")]
async fn signal_says_where_it_listens() {
    let (p, port) = start_signal().await;
    let want = format!("listening on ws://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !p.stderr_text().contains(&want) {
        assert!(Instant::now() < deadline, "{:?}", p.stderr_text());
        sleep(Duration::from_millis(25)).await;
    }
    assert!(p.stderr_text().contains("/metrics"), "{}", p.stderr_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_signal_server_exits_6() {
    let dead = format!("ws://127.0.0.1:{}", free_port().await);
    let mut joiner = start_joiner(0, &dead, "417-crossbow-nimble");
    let err = joiner.event("error", 20).await;
    assert_eq!(joiner.exit_code(10).await, 6, "{err}");
    assert_eq!(err["exit_code"], 6, "{err}");
    let msg = message(&err);
    assert!(
        msg.contains("cannot reach the signalling server") && msg.contains("127.0.0.1"),
        "{err}"
    );
    assert!(joiner.find("connected").is_none() && joiner.find("listening").is_none());
    assert!(
        !msg.contains("crossbow") && !joiner.stderr_text().contains("crossbow"),
        "the password leaked: {err}"
    );
    assert!(!joiner.stderr_text().contains("panicked"));

    // The owner cannot open a room there either.
    let mut owner = Proc::start(&[
        "server",
        "-p",
        "9",
        "--json",
        "--ice-ip",
        "127.0.0.1",
        "-s",
        &dead,
    ]);
    let err = owner.event("error", 20).await;
    assert_eq!(owner.exit_code(10).await, 6, "{err}");
    assert!(
        message(&err).contains("cannot reach the signalling server"),
        "{err}"
    );
    assert!(owner.find("code").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn signal_server_killed_before_any_joiner() {
    let (mut signal, sport) = start_signal().await;
    let url = format!("ws://127.0.0.1:{sport}");
    let (mut owner, _code) = start_owner(9, &url).await;
    signal.kill().await;
    let t0 = Instant::now();
    let err = owner.event("error", 20).await;
    let code = owner.exit_code(10).await;
    eprintln!(
        "owner after the signal server died: exit {code} in {:?}: {err}",
        t0.elapsed()
    );
    assert_eq!(code, 6, "{err}");
    assert_eq!(err["exit_code"], 6, "{err}");
    assert!(
        message(&err).contains("lost the connection to the signalling server"),
        "{err}"
    );
    assert!(!owner.stderr_text().contains("panicked"));
}

// ---------------------------------------------------------------------------------------------
// 2. The signalling server dies after the tunnel is up.

/// Writes `data` on `s` and reads back as many bytes, checking they are the same.
async fn echo_on(s: &mut TcpStream, data: &[u8], secs: u64) {
    let (mut r, mut w) = s.split();
    let write = async {
        w.write_all(data).await.unwrap();
    };
    let mut back = vec![0u8; data.len()];
    let read = async {
        r.read_exact(&mut back).await.unwrap();
    };
    timeout(
        Duration::from_secs(secs),
        futures::future::join(write, read),
    )
    .await
    .expect("echo on the open connection in time");
    assert!(back == data, "echoed data differs");
}

/// A standalone signalling server, an owner forwarding to an echo server, and a connected
/// joiner listening on `addr`.
struct Tunnel {
    signal: Proc,
    owner: Proc,
    joiner: Proc,
    addr: String,
    _echo: tokio::task::JoinHandle<()>,
}

/// A standalone signalling server, an owner forwarding to `target`, and a joiner listening on
/// `jport` (0: any port) once connected; returns them and the joiner's address.
async fn tunnel_to(target: u16, jport: u16) -> (Proc, Proc, Proc, String) {
    let (signal, sport) = start_signal().await;
    let url = format!("ws://127.0.0.1:{sport}");
    let (owner, code) = start_owner(target, &url).await;
    let joiner = start_joiner(jport, &url, &code);
    joiner.event("connected", 30).await;
    let addr = joiner.event("listening", 10).await["address"]
        .as_str()
        .unwrap()
        .to_string();
    (signal, owner, joiner, addr)
}

/// Echoes one accepted connection until EOF, then shuts down its side.
fn spawn_echo(mut s: TcpStream) {
    tokio::spawn(async move {
        let (mut r, mut w) = s.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
        let _ = w.shutdown().await;
    });
}

async fn tunnel_through_standalone_signal() -> Tunnel {
    let (echo, _echo) = echo_server().await;
    let (signal, owner, joiner, addr) = tunnel_to(echo, free_port().await).await;
    Tunnel {
        signal,
        owner,
        joiner,
        addr,
        _echo,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tunnel_survives_the_signal_server() {
    let Tunnel {
        mut signal,
        mut owner,
        mut joiner,
        addr,
        _echo,
    } = tunnel_through_standalone_signal().await;
    owner.event("connected", 10).await;

    let mut open = TcpStream::connect(&addr).await.unwrap();
    echo_on(&mut open, &pattern(1 << 20, 1), 30).await;

    signal.kill().await;
    // Give both peers time to notice that the signalling connection is gone.
    sleep(Duration::from_secs(2)).await;

    // The connection opened before keeps working...
    echo_on(&mut open, &pattern(3 << 20, 2), 30).await;
    // ... and new connections through the joiner's port do too.
    for i in 0..3u64 {
        let data = pattern(2 << 20, 10 + i);
        let back = timeout(Duration::from_secs(30), round_trip(&addr, &data))
            .await
            .expect("new connection echoed in time");
        assert!(back == data, "new connection {i}: echoed data differs");
    }
    echo_on(&mut open, b"still open", 10).await;
    assert!(
        owner.still_running(),
        "owner exited: {:?}\n{}",
        owner.events(),
        owner.stderr_text()
    );
    assert!(
        joiner.still_running(),
        "joiner exited: {:?}\n{}",
        joiner.events(),
        joiner.stderr_text()
    );
    assert!(owner.find("error").is_none() && joiner.find("error").is_none());
}

/// With the signalling server gone, the owner warns that no new joiners can come, keeps its
/// tunnel, and exits with code 6 once the last joiner has left.
#[tokio::test(flavor = "multi_thread")]
async fn owner_without_signalling_exits_6_after_its_last_tunnel() {
    let Tunnel {
        mut signal,
        mut owner,
        mut joiner,
        addr,
        _echo,
    } = tunnel_through_standalone_signal().await;
    let data = pattern(1 << 20, 3);
    assert!(round_trip(&addr, &data).await == data);

    signal.kill().await;
    let warn = owner.event("warning", 20).await;
    assert!(message(&warn).contains("signalling server"), "{warn}");
    assert!(owner.still_running(), "{}", owner.stderr_text());
    assert!(round_trip(&addr, &data).await == data);

    joiner.kill().await;
    let oc = owner.exit_code(30).await;
    let err = owner.event("error", 1).await;
    assert_eq!(oc, 6, "{err}");
    assert!(message(&err).contains("signalling server"), "{err}");
    assert!(!owner.stderr_text().contains("panicked"));
}

// ---------------------------------------------------------------------------------------------
// 3. A tampering signalling server: a WebSocket man in the middle.

/// Standard padded base64 (RFC 4648), as the sealed payloads use.
mod b64 {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(data: &[u8]) -> String {
        let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
        for chunk in data.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    pub fn decode(s: &str) -> Option<Vec<u8>> {
        let s = s.trim().as_bytes();
        if !s.len().is_multiple_of(4) {
            return None;
        }
        let mut out = Vec::with_capacity(s.len() / 4 * 3);
        for quad in s.chunks(4) {
            let mut n = 0u32;
            let mut pad = 0;
            for &c in quad {
                let v = match c {
                    b'=' => {
                        pad += 1;
                        0
                    }
                    _ if pad > 0 => return None,
                    _ => ALPHABET.iter().position(|&a| a == c)? as u32,
                };
                n = (n << 6) | v;
            }
            let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            out.extend_from_slice(&bytes[..3 - pad.min(2)]);
        }
        Some(out)
    }
}

#[test]
fn base64_helper_round_trips() {
    for len in 0..40 {
        let data = pattern(len, len as u64);
        let e = b64::encode(&data);
        assert_eq!(b64::decode(&e).unwrap(), data, "len {len}");
    }
    assert_eq!(b64::encode(b"yakk"), "eWFraw==");
}

/// One WebSocket frame (RFC 6455 §5.2); the payload is kept unmasked.
struct Frame {
    /// FIN, RSV1-3 and the opcode.
    head: u8,
    mask: Option<[u8; 4]>,
    payload: Vec<u8>,
}

impl Frame {
    fn is_whole_text(&self) -> bool {
        // FIN set, no extension bits, opcode 1 (text).
        self.head == 0x81
    }
}

/// Reads one frame; `None` at a clean end of the stream between frames.
async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<Frame>> {
    let mut h = [0u8; 2];
    match r.read_exact(&mut h).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = match h[1] & 0x7f {
        126 => u64::from(r.read_u16().await?),
        127 => r.read_u64().await?,
        n => u64::from(n),
    };
    if len > 16 << 20 {
        return Err(std::io::Error::other("frame too large for the test proxy"));
    }
    let mask = if h[1] & 0x80 != 0 {
        let mut m = [0u8; 4];
        r.read_exact(&mut m).await?;
        Some(m)
    } else {
        None
    };
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload).await?;
    if let Some(m) = mask {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= m[i % 4];
        }
    }
    Ok(Some(Frame {
        head: h[0],
        mask,
        payload,
    }))
}

fn encode_frame(f: &Frame) -> Vec<u8> {
    let mut out = vec![f.head];
    let mbit = if f.mask.is_some() { 0x80 } else { 0 };
    let len = f.payload.len();
    if len < 126 {
        out.push(mbit | len as u8);
    } else if len <= 0xffff {
        out.push(mbit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mbit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    match f.mask {
        Some(m) => {
            out.extend_from_slice(&m);
            out.extend(f.payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
        }
        None => out.extend_from_slice(&f.payload),
    }
    out
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tamper {
    /// Relay everything untouched (the control experiment).
    Nothing,
    /// Flip one bit of the ciphertext of the first sealed message (the joiner's offer).
    FlipByte,
    /// Replace the first sealed message (the joiner's offer) by an offer sealed under a key of
    /// our own, with the right header (room, sender, recipient, counter 0).
    Substitute,
}

/// The man in the middle: a WebSocket relay in front of a real `yakk signal`.
struct Mitm {
    port: u16,
    /// How many `YAKK2_SEALED` messages clients sent through it, and how many it altered.
    sealed_seen: Arc<AtomicUsize>,
    tampered: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Mitm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct MitmState {
    mode: Tamper,
    sealed_seen: Arc<AtomicUsize>,
    tampered: Arc<AtomicUsize>,
}

impl MitmState {
    /// Possibly rewrites one text message from a client to the server. `room` is the room the
    /// client asked to join (joiners only).
    fn on_client_text(&self, text: &[u8], room: Option<&str>) -> Option<Vec<u8>> {
        let mut env: Value = serde_json::from_slice(text).ok()?;
        if env["Msg_type"] != "YAKK2_SEALED" {
            return None;
        }
        let first = self.sealed_seen.fetch_add(1, Ordering::SeqCst) == 0;
        // Only the first sealed message, and only the joiner's: that is its offer.
        if !first || room.is_none() || self.mode == Tamper::Nothing {
            return None;
        }
        let payload = env["Payload"].as_str()?.to_string();
        let new_payload = match self.mode {
            Tamper::FlipByte => {
                let mut raw = b64::decode(&payload).expect("sealed payload is base64");
                // counter (8 bytes) ‖ ciphertext ‖ tag (16 bytes): flip inside the ciphertext.
                assert!(raw.len() > 8 + 16 + 1, "sealed payload too short");
                let i = 8 + (raw.len() - 8 - 16) / 2;
                raw[i] ^= 0x01;
                b64::encode(&raw)
            }
            Tamper::Substitute => {
                use yakk_session::handshake::msg2;
                use yakk_session::sealed::{Header, SealedChannel};
                let key: [u8; 32] = rand::random();
                let mut ch = SealedChannel::new(&key, &key);
                let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";
                let plain = serde_json::json!({"type": "offer", "sdp": sdp}).to_string();
                ch.seal(
                    Header {
                        msg_type: msg2::SEALED,
                        room: room?,
                        sender: env["Sender"].as_i64()?,
                        recipient: env["Recipient"].as_i64()?,
                    },
                    plain.as_bytes(),
                )
                .ok()?
            }
            Tamper::Nothing => unreachable!(),
        };
        assert_ne!(new_payload, payload);
        env["Payload"] = Value::String(new_payload);
        self.tampered.fetch_add(1, Ordering::SeqCst);
        Some(serde_json::to_vec(&env).unwrap())
    }
}

/// Starts the relay on 127.0.0.1 in front of the signalling server on `upstream`.
async fn start_mitm(upstream: u16, mode: Tamper) -> Mitm {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let state = Arc::new(MitmState {
        mode,
        sealed_seen: Arc::new(AtomicUsize::new(0)),
        tampered: Arc::new(AtomicUsize::new(0)),
    });
    let (sealed_seen, tampered) = (state.sealed_seen.clone(), state.tampered.clone());
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((client, _)) = l.accept().await {
            let state = state.clone();
            conns.spawn(async move {
                if let Err(e) = relay_connection(client, upstream, state).await {
                    eprintln!("mitm: connection ended: {e}");
                }
            });
        }
    });
    Mitm {
        port,
        sealed_seen,
        tampered,
        task,
    }
}

/// Reads an HTTP head (up to the empty line) from `r`.
async fn read_http_head<R: AsyncBufReadExt + Unpin>(r: &mut R) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::new();
    loop {
        let n = r.read_until(b'\n', &mut head).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if head.ends_with(b"\r\n\r\n") {
            return Ok(head);
        }
        if head.len() > 64 * 1024 {
            return Err(std::io::Error::other("HTTP head too long"));
        }
    }
}

/// One client: pass the upgrade through, then relay frame by frame both ways.
async fn relay_connection(
    client: TcpStream,
    upstream: u16,
    state: Arc<MitmState>,
) -> std::io::Result<()> {
    let server = TcpStream::connect(("127.0.0.1", upstream)).await?;
    let (cr, mut cw) = client.into_split();
    let (sr, mut sw) = server.into_split();
    let (mut cr, mut sr) = (BufReader::new(cr), BufReader::new(sr));
    let request = read_http_head(&mut cr).await?;
    let request_line = String::from_utf8_lossy(&request)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    // "GET /ws/?roomID=417 HTTP/1.1": the joiner's connection names its room.
    let room = request_line
        .split_whitespace()
        .nth(1)
        .and_then(|target| target.split_once('?'))
        .and_then(|(_, q)| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("roomID=").map(str::to_string))
        });
    sw.write_all(&request).await?;
    let response = read_http_head(&mut sr).await?;
    cw.write_all(&response).await?;

    let up = async {
        while let Some(mut f) = read_frame(&mut cr).await? {
            if f.is_whole_text()
                && let Some(new) = state.on_client_text(&f.payload, room.as_deref())
            {
                f.payload = new;
            }
            sw.write_all(&encode_frame(&f)).await?;
        }
        sw.shutdown().await
    };
    let down = async {
        while let Some(f) = read_frame(&mut sr).await? {
            cw.write_all(&encode_frame(&f)).await?;
        }
        cw.shutdown().await
    };
    // Either side ending ends the relay of this connection (both sockets close on return).
    tokio::select! {
        r = up => r,
        r = down => r,
    }
}

/// A target that must never be reached: counts connections and bytes.
async fn tripwire() -> (u16, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let conns = Arc::new(AtomicUsize::new(0));
    let bytes = Arc::new(AtomicUsize::new(0));
    let (c, b) = (conns.clone(), bytes.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            let b = b.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    b.fetch_add(n, Ordering::SeqCst);
                    let _ = s.write_all(&buf[..n]).await;
                }
            });
        }
    });
    (port, conns, bytes)
}

/// Runs owner and joiner through a man in the middle doing `mode`. Returns both processes (the
/// joiner exited or not) and what the tripwire target saw.
struct MitmRun {
    owner: Proc,
    joiner: Proc,
    mitm: Mitm,
    target_conns: Arc<AtomicUsize>,
    target_bytes: Arc<AtomicUsize>,
    /// A connection made to the joiner's port while it was negotiating, with data written.
    early: Option<TcpStream>,
    _signal: Proc,
}

async fn run_through_mitm(mode: Tamper) -> MitmRun {
    let (signal, sport) = start_signal().await;
    let mitm = start_mitm(sport, mode).await;
    let url = format!("ws://127.0.0.1:{}", mitm.port);
    let (target, target_conns, target_bytes) = tripwire().await;
    let (owner, code) = start_owner(target, &url).await;
    let jport = free_port().await;
    let joiner = start_joiner(jport, &url, &code);
    // The joiner binds its port before it negotiates: knock and talk while it does.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut early = None;
    while Instant::now() < deadline {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", jport)).await {
            let _ = s.write_all(b"this must never reach the target\n").await;
            early = Some(s);
            break;
        }
        sleep(Duration::from_millis(10)).await;
    }
    MitmRun {
        owner,
        joiner,
        mitm,
        target_conns,
        target_bytes,
        early,
        _signal: signal,
    }
}

/// The assertions common to both tampering tests.
async fn assert_refused(mut r: MitmRun, what: &str) {
    // The owner opens the sealed offer, fails, and says who is to blame.
    let warn = r.owner.first_of(&["warning", "connected"], 30).await;
    assert_eq!(
        warn["event"], "warning",
        "the owner accepted the offer: {warn}"
    );
    let w = message(&warn);
    eprintln!("{what}: owner warning: {warn}");
    assert!(
        w.contains("sealed signalling message was refused") && w.contains("tampered"),
        "{warn}"
    );
    assert_eq!(
        r.mitm.tampered.load(Ordering::SeqCst),
        1,
        "the proxy tampered once"
    );
    // The joiner never connects and stops with an error.
    let t0 = Instant::now();
    let jc = r.joiner.exit_code(40).await;
    let jerr = r.joiner.event("error", 1).await;
    eprintln!(
        "{what}: joiner exit {jc} after a further {:?}: {jerr}",
        t0.elapsed()
    );
    assert_ne!(jc, 0, "{jerr}");
    assert_eq!(jerr["exit_code"], jc, "{jerr}");
    // The owner tells the joiner why, instead of leaving it to time out and blame the network.
    assert_joiner_blames_signalling(&r);
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "the joiner waited {:?} for a handshake the owner had dropped",
        t0.elapsed()
    );
    assert!(
        r.joiner.find("connected").is_none(),
        "{:?}",
        r.joiner.events()
    );
    assert!(
        r.joiner.find("listening").is_none(),
        "{:?}",
        r.joiner.events()
    );
    assert!(
        r.owner.find("connected").is_none(),
        "{:?}",
        r.owner.events()
    );
    // Nothing was forwarded: the target saw no connection, no byte.
    assert_eq!(r.target_conns.load(Ordering::SeqCst), 0);
    assert_eq!(r.target_bytes.load(Ordering::SeqCst), 0);
    // The early connection to the joiner's port got nothing back and is closed.
    let mut s = r
        .early
        .take()
        .expect("the joiner's port accepted a connection");
    let mut buf = [0u8; 64];
    let got = timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("the connection to a dead joiner closes");
    assert!(matches!(got, Ok(0) | Err(_)), "{got:?}");
    // The owner, a server for possibly many joiners, keeps its room open for the next one,
    // and did not burn the code (the joiner proved it knows the password).
    assert!(r.owner.find("burned").is_none(), "{:?}", r.owner.events());
    for p in [&r.owner, &r.joiner] {
        assert!(!p.stderr_text().contains("panicked"), "{}", p.stderr_text());
    }
    r.owner.kill().await;
}

/// The joiner's error must name the real cause. Today the owner drops the handshake silently
/// and the joiner only times out with "no network path ... configure a TURN server" (exit 7),
/// which sends the user after the wrong problem.
fn assert_joiner_blames_signalling(r: &MitmRun) {
    let jerr = r.joiner.find("error").expect("joiner error event");
    let m = message(&jerr);
    assert!(
        m.contains("tamper") || m.contains("refused") || m.contains("handshake failed"),
        "the joiner's error does not say the handshake was refused: {jerr}"
    );
    assert_ne!(jerr["exit_code"], 7, "not a missing relay: {jerr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn mitm_relaying_faithfully_connects() {
    // The control experiment: the same proxy, tampering with nothing, is transparent.
    let mut r = run_through_mitm(Tamper::Nothing).await;
    r.joiner.event("connected", 30).await;
    r.owner.event("connected", 10).await;
    let addr = r.joiner.event("listening", 10).await["address"]
        .as_str()
        .unwrap()
        .to_string();
    let data = pattern(100_000, 5);
    let back = timeout(Duration::from_secs(30), round_trip(&addr, &data))
        .await
        .expect("echo in time");
    assert!(back == data);
    assert!(
        r.mitm.sealed_seen.load(Ordering::SeqCst) >= 2,
        "offer and answer went through"
    );
    assert_eq!(r.mitm.tampered.load(Ordering::SeqCst), 0);
    // The connection made while negotiating is carried too, once the tunnel is up.
    let mut early = r.early.take().unwrap();
    let mut buf = vec![0u8; 33];
    timeout(Duration::from_secs(10), early.read_exact(&mut buf))
        .await
        .expect("early connection echoed")
        .unwrap();
    assert_eq!(&buf, b"this must never reach the target\n");
    r.joiner.kill().await;
    r.owner.kill().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mitm_flipping_a_sealed_byte_is_refused() {
    let r = run_through_mitm(Tamper::FlipByte).await;
    assert_refused(r, "flipped byte").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mitm_substituting_the_offer_is_refused() {
    let r = run_through_mitm(Tamper::Substitute).await;
    assert_refused(r, "substituted offer").await;
}

// ---------------------------------------------------------------------------------------------
// 4. A slow consumer behind the owner: bounded memory, backpressure to the sender.
//
// Memory bound: an idle debug-build peer is ~17 MiB resident. The transport's designed buffers
// are a 3 MiB data-channel send buffer (joiner), a 3 MiB SCTP receive window and 16 × 64 KiB of
// queued messages per stream (owner), a 4 MiB UDP buffer, and 64 KiB copy buffers; socket
// buffers live in the kernel, not in RSS. 100 MiB per process leaves room for allocator slack,
// and is far below what buffering even a fifth of the 512 MiB offered would take.

/// Peak RSS allowed per peer process (debug build).
const RSS_BOUND: u64 = 100 << 20;

fn mib(b: u64) -> f64 {
    b as f64 / (1u64 << 20) as f64
}

/// The byte at `offset` of an endless deterministic stream, for `buf.len()` bytes.
fn stream_fill(offset: u64, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        let pos = offset + i as u64;
        let mut x = (pos / 8).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x ^= x >> 29;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x ^= x >> 32;
        *b = (x >> ((pos % 8) * 8)) as u8;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_consumer_backpressure_and_bounded_memory() {
    const OFFER: u64 = 512 << 20;
    const CHUNK: usize = 64 << 10;
    const STALL_SECS: usize = 15;
    /// The final window over which the sender must have stopped advancing (beyond the reader).
    const WINDOW_SECS: usize = 5;

    // The target: the first connection is read slowly (at most 64 KiB every 100 ms) until
    // `drain` is set, then at full speed, checking every byte against the stream; later
    // connections are echoed.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = l.local_addr().unwrap().port();
    let drain = Arc::new(AtomicBool::new(false));
    let consumed = Arc::new(AtomicU64::new(0));
    let (d, c) = (drain.clone(), consumed.clone());
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<(u64, Option<u64>)>();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; CHUNK];
            let mut want = vec![0u8; CHUNK];
            let mut total = 0u64;
            let mut mismatch = None;
            loop {
                let slow = !d.load(Ordering::SeqCst);
                let n = match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                stream_fill(total, &mut want[..n]);
                if mismatch.is_none() && buf[..n] != want[..n] {
                    mismatch = Some(total);
                }
                total += n as u64;
                c.store(total, Ordering::SeqCst);
                if slow {
                    sleep(Duration::from_millis(100)).await;
                }
            }
            let _ = first_tx.send((total, mismatch));
        });
        while let Ok((s, _)) = l.accept().await {
            spawn_echo(s);
        }
    });

    let (_signal, mut owner, mut joiner, addr) = tunnel_to(target, 0).await;
    owner.event("connected", 10).await;
    let base = (owner.peak_rss(), joiner.peak_rss());

    // The writer offers up to OFFER bytes as fast as the joiner's port accepts them.
    let accepted = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (acc, st) = (accepted.clone(), stop.clone());
    let sock = TcpStream::connect(&addr).await.unwrap();
    let writer = tokio::spawn(async move {
        let (_r, mut w) = sock.into_split();
        let mut buf = vec![0u8; CHUNK];
        let mut sent = 0u64;
        while sent < OFFER && !st.load(Ordering::SeqCst) {
            stream_fill(sent, &mut buf);
            w.write_all(&buf).await.unwrap();
            sent += CHUNK as u64;
            acc.store(sent, Ordering::SeqCst);
        }
        w.shutdown().await.unwrap();
        sent
    });

    // Once a second: bytes accepted, bytes the target read, both peers' peak RSS.
    let mut samples = vec![(0u64, 0u64)];
    for sec in 1..=STALL_SECS {
        sleep(Duration::from_secs(1)).await;
        let (a, r) = (
            accepted.load(Ordering::SeqCst),
            consumed.load(Ordering::SeqCst),
        );
        let (o, j) = (owner.peak_rss(), joiner.peak_rss());
        eprintln!(
            "t={sec:2}s accepted {:5.1} MiB, target read {:4.1} MiB, peak RSS owner {:5.1} MiB, \
             joiner {:5.1} MiB",
            mib(a),
            mib(r),
            mib(o),
            mib(j)
        );
        assert!(o < RSS_BOUND, "owner peak RSS {:.1} MiB", mib(o));
        assert!(j < RSS_BOUND, "joiner peak RSS {:.1} MiB", mib(j));
        samples.push((a, r));
    }
    let (full, read_full) = samples[STALL_SECS];
    let (before, read_before) = samples[STALL_SECS - WINDOW_SECS];
    eprintln!(
        "slow consumer: idle peak RSS owner {:.1} MiB, joiner {:.1} MiB",
        mib(base.0),
        mib(base.1)
    );
    assert!(!writer.is_finished(), "the writer is blocked, not done");
    assert!(
        full < OFFER / 4,
        "backpressure: {:.1} MiB of the {:.0} MiB offered were accepted while the target read \
         {:.1} MiB",
        mib(full),
        mib(OFFER),
        mib(read_full)
    );
    assert!(
        full - before <= (read_full - read_before) + (16 << 20),
        "the sender kept going: {:.1} MiB accepted in the last {WINDOW_SECS} s while the target \
         read {:.1} MiB",
        mib(full - before),
        mib(read_full - read_before)
    );

    // Drain: the reader goes full speed, the writer stops at a chunk boundary and half-closes;
    // everything accepted arrives, intact, and the tunnel still carries new connections.
    stop.store(true, Ordering::SeqCst);
    drain.store(true, Ordering::SeqCst);
    let sent = timeout(Duration::from_secs(30), writer)
        .await
        .expect("the writer unblocks once the target reads")
        .unwrap();
    let (total, mismatch) = timeout(Duration::from_secs(30), first_rx)
        .await
        .expect("the target receives everything and the end of stream")
        .unwrap();
    assert_eq!(total, sent, "every accepted byte arrived");
    assert_eq!(mismatch, None, "first corrupted byte at this offset");
    let data = pattern(1 << 20, 77);
    let back = timeout(Duration::from_secs(30), round_trip(&addr, &data))
        .await
        .expect("a new connection works after the stall");
    assert!(back == data);
    let end = (owner.peak_rss(), joiner.peak_rss());
    eprintln!(
        "slow consumer: drained {:.1} MiB intact; peak RSS owner {:.1} MiB, joiner {:.1} MiB",
        mib(total),
        mib(end.0),
        mib(end.1)
    );
    assert!(end.0 < RSS_BOUND && end.1 < RSS_BOUND);
    joiner.kill().await;
    owner.kill().await;
}

/// Sixty-four connections whose target never reads: the owner's memory must stay within the
/// same bound. Each stalled stream holds at most its flow-control window (64 KiB while it has
/// never been read), and a live connection opened meanwhile still echoes.
#[tokio::test(flavor = "multi_thread")]
async fn many_stalled_connections_bounded_memory() {
    const CONNS: usize = 64;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        // The first CONNS connections are held unread; later ones are echoed.
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            if held.len() < CONNS {
                held.push(s);
            } else {
                spawn_echo(s);
            }
        }
    });
    let (_signal, mut owner, mut joiner, addr) = tunnel_to(target, 0).await;
    let accepted = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for _ in 0..CONNS {
        let acc = accepted.clone();
        let s = TcpStream::connect(&addr).await.unwrap();
        writers.push(tokio::spawn(async move {
            let (_r, mut w) = s.into_split();
            let buf = vec![7u8; 64 << 10];
            while w.write_all(&buf).await.is_ok() {
                acc.fetch_add(buf.len() as u64, Ordering::SeqCst);
            }
        }));
    }
    for sec in 1..=10 {
        sleep(Duration::from_secs(1)).await;
        let (o, j) = (owner.peak_rss(), joiner.peak_rss());
        eprintln!(
            "t={sec:2}s {CONNS} stalled connections: accepted {:.1} MiB, peak RSS owner {:.1} \
             MiB, joiner {:.1} MiB",
            mib(accepted.load(Ordering::SeqCst)),
            mib(o),
            mib(j)
        );
        assert!(o < RSS_BOUND, "owner peak RSS {:.1} MiB", mib(o));
        assert!(j < RSS_BOUND, "joiner peak RSS {:.1} MiB", mib(j));
    }
    let data = pattern(256 << 10, 5);
    let back = timeout(Duration::from_secs(10), round_trip(&addr, &data))
        .await
        .expect("a new connection echoes beside the stalled ones");
    assert!(back == data);
    for w in writers {
        w.abort();
    }
    joiner.kill().await;
    owner.kill().await;
}
