//! No byte lost when a connection closes (issue 18): a forwarded connection whose one end writes
//! its last bytes and closes at once must deliver every byte to the other end, whichever side
//! closes, in both protocol versions, one connection at a time and many at once; and the same
//! for an HTTP download whose server closes right after the body (`Connection: close`), fetched
//! by yakk's yakk/1 HTTP fetcher through the tunnel.
//!
//! Each test runs `CONNECTIONS` connections through one tunnel (`yakk server` and `yakk client`
//! as real processes over 127.0.0.1): `ALONE` of them one after the other, the rest `AT_ONCE` at
//! a time. Their sizes run from 1 byte to 8 MiB: every size around the message limits (4096
//! toward yakk/1 peers, 64 KiB between yakk/2 peers) and a few MiB-sized ones, and the rest
//! spread from 1 byte to 256 KiB, so that a thousand connections move about 40 MB. Every third
//! connection has a slow reader, so that the receiving side holds data back when the close
//! comes.
//!
//! The yakk/1 tests found two ways the tail was lost. The first (the `webrtc` crate handing
//! out a channel's close ahead of its last messages) is fixed in the transport and pinned by
//! `streams::a_peer_close_does_not_overtake_the_last_messages`. The second is in rtc 0.21.1:
//! when a reader that waits stops the stack's delivery and a peer's stream reset has to wait
//! for it, the stack can discard the messages it read in the pass that completes the reset
//! (logged as "failed to resume parked SCTP streams: Stream closed"); about 2 of these 1000
//! connections lost their tail. The transport now lets a yakk/1 reader fall up to 16 MiB behind
//! before its pump waits (`streams::without_flow_control_a_stalled_reader_still_bounds_the_sender`),
//! which keeps the stack from parking in these tests (6 runs of all three, 18,000 connections,
//! none lost; before, each run lost 1 to 2 tails in each test). A
//! reader more than 16 MiB behind when its peer closes can still meet the stack's fault.
//! yakk/2 is not exposed to either: with stream flow control its readers never hold the stack
//! back, and a channel is closed only after both end-of-stream markers were read.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use yakk_transfer::{Destination, ReceiveOptions, Reporter};

const CONNECTIONS: usize = 1000;
/// Connections run one after the other before the rest go `AT_ONCE` at a time.
const ALONE: usize = 200;
const AT_ONCE: usize = 50;
/// The largest connection.
const MAX_SIZE: usize = 8 << 20;
/// Bound on one connection, and on a whole test.
const PER_CONNECTION: Duration = Duration::from_secs(60);
const PER_TEST: Duration = Duration::from_secs(240);

/// yakk/2, the default.
const YAKK2: (&[&str], &[&str]) = (&[], &[]);
/// yakk/1, as the reference program speaks it.
const YAKK1: (&[&str], &[&str]) = (&["--legacy-only"], &["--legacy"]);

/// The sizes of the connections, in the order they run: the edge cases first (alone), then
/// the rest; deterministic.
fn sizes() -> Vec<usize> {
    let mut v = vec![
        1,
        2,
        3,
        100,
        1000,
        1023,
        4095,
        4096,
        4097,
        8191,
        8192,
        8193,
        12_288,
        65_535,
        65_536,
        65_537,
        131_072,
        262_144,
        1 << 20,
        (1 << 20) + 1,
        (4 << 20) - 1,
        MAX_SIZE - 1,
        MAX_SIZE,
    ];
    // The rest: log-uniform from 1 byte to 256 KiB.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while v.len() < CONNECTIONS {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let exp = (x % 1_800) as f64 / 100.0; // 0 ..= 17.99
        v.push(2f64.powf(exp) as usize);
    }
    // A few large ones among the concurrent connections too.
    v[ALONE + 10] = MAX_SIZE;
    v[ALONE + 400] = 4 << 20;
    v[ALONE + 401] = 2 << 20;
    v
}

/// The bytes connection `id` carries: a window into one shared pseudo-random buffer.
struct Data(Vec<u8>);

impl Data {
    fn new() -> Arc<Data> {
        Arc::new(Data(pattern(MAX_SIZE + 4096, 18)))
    }
    fn of(&self, id: u32, len: usize) -> &[u8] {
        let at = (id as usize * 7) % 4096;
        &self.0[at..at + len]
    }
}

/// Connection `id` of `len` bytes: the header a client sends first (so that the target knows
/// what to send or expect).
fn header(id: u32, len: usize) -> [u8; 12] {
    let mut h = [0u8; 12];
    h[..4].copy_from_slice(&id.to_be_bytes());
    h[4..].copy_from_slice(&(len as u64).to_be_bytes());
    h
}

async fn read_header(s: &mut TcpStream) -> std::io::Result<(u32, usize)> {
    let mut h = [0u8; 12];
    s.read_exact(&mut h).await?;
    let id = u32::from_be_bytes(h[..4].try_into().unwrap());
    let len = u64::from_be_bytes(h[4..].try_into().unwrap()) as usize;
    Ok((id, len))
}

/// Where the data flows.
#[derive(Clone, Copy, Debug)]
enum Flow {
    /// The owner's target writes the bytes and closes at once; the joiner's client reads.
    TargetWrites,
    /// The joiner's client writes the bytes and closes at once; the owner's target reads.
    ClientWrites,
}

/// What the target found on each connection it read, by connection: the client waits for it.
type Verdicts = Arc<Mutex<HashMap<u32, oneshot::Sender<String>>>>;

/// The owner's target: for each connection, read the header, then either write the bytes and
/// close at once (no half-close, no linger: the socket is dropped), or read until EOF and
/// report what arrived.
async fn target(flow: Flow, data: Arc<Data>) -> (u16, Verdicts) {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(RECV_BUFFER).unwrap();
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let l = sock.listen(1024).unwrap();
    let port = l.local_addr().unwrap().port();
    let verdicts = Verdicts::default();
    let v = verdicts.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let data = data.clone();
            let v = v.clone();
            tokio::spawn(async move {
                let Ok((id, len)) = read_header(&mut s).await else {
                    return;
                };
                match flow {
                    Flow::TargetWrites => {
                        let _ = s.write_all(data.of(id, len)).await;
                        drop(s);
                    }
                    Flow::ClientWrites => {
                        let mut got = Vec::with_capacity(len);
                        let r =
                            tokio::time::timeout(PER_CONNECTION, read_all(&mut s, id, &mut got))
                                .await;
                        let verdict = match r {
                            Err(_) => format!("the target saw no EOF within {PER_CONNECTION:?}"),
                            Ok(Err(e)) => format!("the target's read failed: {e}"),
                            Ok(Ok(_)) => compare(&got, data.of(id, len)),
                        };
                        drop(s);
                        if let Some(tx) = v.lock().unwrap().remove(&id) {
                            let _ = tx.send(verdict);
                        }
                    }
                }
            });
        }
    });
    (port, verdicts)
}

/// Every third connection has a slow reader, like a download written to a slow disk or read
/// by a rate-limited client: it waits a little before it starts, then takes at most
/// `SLOW_CHUNK` bytes per `SLOW_PAUSE`. The tunnel's side of the connection then holds data back
/// (the stack stops reading the channel) when the close comes.
fn is_slow(id: u32) -> bool {
    id.is_multiple_of(3)
}
const SLOW_CHUNK: usize = 32 << 10;
const SLOW_PAUSE: Duration = Duration::from_millis(1);

async fn slow_reader(id: u32) {
    if is_slow(id) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads to EOF, slowly for the connections `is_slow` picks.
async fn read_all(s: &mut TcpStream, id: u32, got: &mut Vec<u8>) -> std::io::Result<()> {
    slow_reader(id).await;
    if !is_slow(id) {
        s.read_to_end(got).await?;
        return Ok(());
    }
    let mut buf = vec![0u8; SLOW_CHUNK];
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        got.extend_from_slice(&buf[..n]);
        tokio::time::sleep(SLOW_PAUSE).await;
    }
}

/// Readers with a small receive buffer: the kernel holds little of what the tunnel delivers.
const RECV_BUFFER: u32 = 16 << 10;

async fn connect(addr: &str) -> std::io::Result<TcpStream> {
    let addr: std::net::SocketAddr = addr.parse().map_err(std::io::Error::other)?;
    let s = tokio::net::TcpSocket::new_v4()?;
    s.set_recv_buffer_size(RECV_BUFFER)?;
    s.connect(addr).await
}

/// "" when equal, else what differs.
fn compare(got: &[u8], want: &[u8]) -> String {
    if got == want {
        return String::new();
    }
    if got.len() != want.len() {
        let same = got.iter().zip(want).take_while(|(a, b)| a == b).count();
        return format!(
            "{} of {} bytes arrived ({} missing; first {} intact)",
            got.len(),
            want.len(),
            want.len() as i64 - got.len() as i64,
            same
        );
    }
    let at = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
    format!("{} bytes, corrupted from byte {at}", got.len())
}

/// One connection through the tunnel at `addr`: "" when every byte arrived.
async fn one(
    addr: &str,
    flow: Flow,
    id: u32,
    len: usize,
    data: &Data,
    verdicts: &Verdicts,
) -> String {
    let run = async {
        let mut s = connect(addr).await.map_err(|e| format!("connect: {e}"))?;
        s.write_all(&header(id, len))
            .await
            .map_err(|e| format!("write: {e}"))?;
        match flow {
            Flow::TargetWrites => {
                let mut got = Vec::with_capacity(len);
                read_all(&mut s, id, &mut got)
                    .await
                    .map_err(|e| format!("read: {e}"))?;
                Ok::<_, String>(compare(&got, data.of(id, len)))
            }
            Flow::ClientWrites => {
                let (tx, rx) = oneshot::channel();
                verdicts.lock().unwrap().insert(id, tx);
                s.write_all(data.of(id, len))
                    .await
                    .map_err(|e| format!("write: {e}"))?;
                drop(s);
                rx.await
                    .map_err(|_| "the target dropped the connection".to_string())
            }
        }
    };
    match tokio::time::timeout(PER_CONNECTION, run).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => e,
        Err(_) => format!("not done within {PER_CONNECTION:?}"),
    }
}

/// Runs every connection of `sizes()` with `job`, `ALONE` one after the other and the rest
/// `AT_ONCE` at a time; returns the failures (connection, size, what went wrong).
async fn run_all<F, Fut>(job: F) -> Vec<(u32, usize, String)>
where
    F: Fn(u32, usize) -> Fut,
    Fut: std::future::Future<Output = String> + Send + 'static,
{
    let sizes = sizes();
    let mut failures = Vec::new();
    for (i, &len) in sizes.iter().enumerate().take(ALONE) {
        let v = job(i as u32, len).await;
        if !v.is_empty() {
            failures.push((i as u32, len, v));
        }
    }
    let rest: Vec<(u32, usize)> = (ALONE..sizes.len()).map(|i| (i as u32, sizes[i])).collect();
    for batch in rest.chunks(AT_ONCE) {
        let tasks: Vec<_> = batch
            .iter()
            .map(|&(id, len)| (id, len, tokio::spawn(job(id, len))))
            .collect();
        for (id, len, t) in tasks {
            let v = t.await.unwrap_or_else(|e| format!("task failed: {e}"));
            if !v.is_empty() {
                failures.push((id, len, v));
            }
        }
    }
    failures
}

/// The last log lines of both sides, for a failure's report.
fn dump_logs(sides: &[&Yakk]) {
    for (side, y) in ["owner", "joiner"].iter().zip(sides) {
        let text = y.stderr_text();
        let lines: Vec<&str> = text.lines().collect();
        eprintln!("--- {side}'s last log lines:");
        for l in &lines[lines.len().saturating_sub(30)..] {
            eprintln!("{l}");
        }
    }
}

fn report(what: &str, failures: &[(u32, usize, String)], took: Duration, sides: &[&Yakk]) {
    if !failures.is_empty() {
        dump_logs(sides);
    }
    eprintln!(
        "{what}: {} of {CONNECTIONS} connections lost bytes, in {:.1} s",
        failures.len(),
        took.as_secs_f64()
    );
    let shown: Vec<String> = failures
        .iter()
        .take(10)
        .map(|(id, len, why)| format!("  connection {id} ({len} bytes): {why}"))
        .collect();
    assert!(
        failures.is_empty(),
        "{what}: {} of {CONNECTIONS} connections lost bytes:\n{}",
        failures.len(),
        shown.join("\n")
    );
}

/// The connections under way: id → (size, when it started).
type Pending = Arc<Mutex<BTreeMap<u32, (usize, Instant)>>>;

async fn forwarding(mode: (&[&str], &[&str]), flow: Flow, what: &str) {
    let data = Data::new();
    let (port, verdicts) = target(flow, data.clone()).await;
    let (owner, joiner, addr) = tunnel(port, mode.0, mode.1).await;
    let started = Instant::now();
    let pending = Pending::default();
    let under_way = pending.clone();
    let failed = Arc::new(Mutex::new(Vec::new()));
    let failed_so_far = failed.clone();
    let test = run_all(move |id, len| {
        let addr = addr.clone();
        let data = data.clone();
        let verdicts = verdicts.clone();
        let pending = pending.clone();
        let failed = failed.clone();
        async move {
            pending.lock().unwrap().insert(id, (len, Instant::now()));
            let v = one(&addr, flow, id, len, &data, &verdicts).await;
            pending.lock().unwrap().remove(&id);
            if !v.is_empty() {
                failed.lock().unwrap().push(format!("{id} ({len} B): {v}"));
            }
            v
        }
    });
    let Ok(failures) = tokio::time::timeout(PER_TEST, test).await else {
        // A connection that never ended: what the peers said last is the lead, and which
        // connections were still under way (one stuck, or the whole tunnel).
        dump_logs(&[&owner, &joiner]);
        let stuck: Vec<String> = under_way
            .lock()
            .unwrap()
            .iter()
            .map(|(id, (len, t))| format!("{id} ({len} B, {:.1} s)", t.elapsed().as_secs_f64()))
            .collect();
        panic!(
            "{what}: not done within {PER_TEST:?}; under way: {}; failed so far: {:?}",
            stuck.join(", "),
            failed_so_far.lock().unwrap()
        );
    };
    report(what, &failures, started.elapsed(), &[&owner, &joiner]);
}

#[tokio::test(flavor = "multi_thread")]
async fn yakk2_target_writes_and_closes() {
    forwarding(
        YAKK2,
        Flow::TargetWrites,
        "yakk/2, target writes and closes",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn yakk2_client_writes_and_closes() {
    forwarding(
        YAKK2,
        Flow::ClientWrites,
        "yakk/2, client writes and closes",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn yakk1_target_writes_and_closes() {
    forwarding(
        YAKK1,
        Flow::TargetWrites,
        "yakk/1, target writes and closes",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn yakk1_client_writes_and_closes() {
    forwarding(
        YAKK1,
        Flow::ClientWrites,
        "yakk/1, client writes and closes",
    )
    .await;
}

/// An HTTP server that answers each request with a file and closes right after the body, as a
/// server does when the request says `Connection: close`. Connection number `i` (in the order
/// they arrive) gets `sizes()[i]` bytes, named so that the fetcher can tell which it got.
async fn http_server(data: Arc<Data>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let sizes = sizes();
    tokio::spawn(async move {
        let mut next = 0usize;
        while let Ok((mut s, _)) = l.accept().await {
            let len = sizes[next % sizes.len()];
            let id = next as u32;
            next += 1;
            let data = data.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.ends_with(b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Disposition: attachment; filename=f-{id}-{len}\r\n\
                     Content-Length: {len}\r\nContent-Type: application/octet-stream\r\n\
                     Connection: close\r\n\r\n"
                );
                let _ = s.write_all(reply.as_bytes()).await;
                let _ = s.write_all(data.of(id, len)).await;
                drop(s);
            });
        }
    });
    port
}

/// Collects what the fetcher writes.
#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<u8>>>);

impl tokio::io::AsyncWrite for Collect {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        b: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.0.lock().unwrap().extend_from_slice(b);
        std::task::Poll::Ready(Ok(b.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// A slow reader for the HTTP fetcher (see `is_slow`): waits before its first read, then
/// takes at most `SLOW_CHUNK` bytes per `SLOW_PAUSE`.
struct SlowStart {
    inner: TcpStream,
    slow: bool,
    wait: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl SlowStart {
    fn new(inner: TcpStream, id: u32) -> Self {
        let slow = is_slow(id);
        SlowStart {
            inner,
            slow,
            wait: slow.then(|| Box::pin(tokio::time::sleep(Duration::from_millis(20)))),
        }
    }
}

impl tokio::io::AsyncRead for SlowStart {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if let Some(w) = self.wait.as_mut() {
            std::task::ready!(w.as_mut().poll(cx));
            self.wait = None;
        }
        if !self.slow {
            return std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let mut chunk = vec![0u8; SLOW_CHUNK.min(buf.remaining())];
        let mut part = tokio::io::ReadBuf::new(&mut chunk);
        std::task::ready!(std::pin::Pin::new(&mut self.inner).poll_read(cx, &mut part))?;
        buf.put_slice(part.filled());
        self.wait = Some(Box::pin(tokio::time::sleep(SLOW_PAUSE)));
        std::task::Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for SlowStart {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        b: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, b)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Remembers the name of the file the fetcher got.
#[derive(Default)]
struct Name(Mutex<String>);

impl Reporter for Name {
    fn file_start(&self, name: &str, _size: Option<u64>, _offset: u64) {
        *self.0.lock().unwrap() = name.to_string();
    }
}

/// One download with yakk's yakk/1 HTTP fetcher through the tunnel: "" when the whole body
/// arrived. Returns the connection the server answered with, from the file's name.
async fn fetch(addr: &str, id: u32, data: &Data) -> (Option<u32>, String) {
    let run = async {
        let s = connect(addr).await.map_err(|e| format!("connect: {e}"))?;
        let s = SlowStart::new(s, id);
        let out = Collect::default();
        let name = Name::default();
        let opts = ReceiveOptions {
            destination: Destination::Writer(Box::new(out.clone())),
            overwrite: false,
            skip_identical: false,
            confirm: None,
        };
        let r = yakk_transfer::fetch_http_v1(s, opts, &name).await;
        let name = name.0.lock().unwrap().clone();
        let mut parts = name.strip_prefix("f-").unwrap_or("").split('-');
        let (Some(Ok(id)), Some(Ok(len))) = (
            parts.next().map(str::parse::<u32>),
            parts.next().map(str::parse::<usize>),
        ) else {
            return Err(format!("no file name in the answer ({r:?})"));
        };
        if let Err(e) = r {
            return Ok((Some(id), format!("fetch failed: {e}")));
        }
        let got = out.0.lock().unwrap();
        Ok((Some(id), compare(&got, data.of(id, len))))
    };
    match tokio::time::timeout(PER_CONNECTION, run).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => (None, e),
        Err(_) => (None, format!("not done within {PER_CONNECTION:?}")),
    }
}

async fn http_downloads(mode: (&[&str], &[&str]), what: &str) {
    let data = Data::new();
    let port = http_server(data.clone()).await;
    let (owner, joiner, addr) = tunnel(port, mode.0, mode.1).await;
    let started = Instant::now();
    let served = Arc::new(Mutex::new(BTreeSet::new()));
    let s2 = served.clone();
    let test = run_all(move |i, _| {
        let addr = addr.clone();
        let d = data.clone();
        let served = s2.clone();
        async move {
            let (id, v) = fetch(&addr, i, &d).await;
            if let Some(id) = id
                && !served.lock().unwrap().insert(id)
            {
                return format!("answer {id} came twice");
            }
            v
        }
    });
    let Ok(failures) = tokio::time::timeout(PER_TEST, test).await else {
        // A connection that never ended: what the peers said last is the lead.
        dump_logs(&[&owner, &joiner]);
        panic!("{what}: not done within {PER_TEST:?}");
    };
    report(what, &failures, started.elapsed(), &[&owner, &joiner]);
    assert_eq!(served.lock().unwrap().len(), CONNECTIONS);
}

#[tokio::test(flavor = "multi_thread")]
async fn yakk1_http_fetcher_against_connection_close() {
    http_downloads(YAKK1, "yakk/1, HTTP fetcher, Connection: close").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn yakk2_http_fetcher_against_connection_close() {
    http_downloads(YAKK2, "yakk/2, HTTP fetcher, Connection: close").await;
}
