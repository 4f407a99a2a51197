//! Port forwarding: the joiner listens on a local TCP port and carries each accepted connection
//! over its own stream to the owner, who connects it to the shared port. Bytes are copied both
//! ways unframed, and a one-way shutdown (TCP half-close) is carried across.
//!
//! Knows nothing of WebRTC: it asks the session for streams.
#![forbid(unsafe_code)]
// No panics outside tests; a local `allow` says why it cannot fire.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![cfg_attr(not(test), deny(clippy::unreachable))]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinSet;
use yakk_session::Connection;

/// Bytes read and written at a time while data flows. Matches the largest message between
/// yakk/2 peers; the transport splits further for yakk/1 peers.
const CHUNK: usize = 64 * 1024;
/// The buffer a direction waits with while idle. Only a read that fills it brings out a
/// `CHUNK` buffer, for as long as more is ready at once: a thousand idle connections cost
/// a thousand small buffers, not 128 KiB each.
const IDLE_READ: usize = 2 * 1024;

/// Connections the kernel may hold for the joiner's listener before it accepts them (capped by
/// `net.core.somaxconn`). Tokio's default is 128: a burst of a few hundred connections then
/// overflows the queue, the kernel answers with SYN cookies, and a connection whose first
/// data segment is dropped while the queue is full can come up without that segment's bytes
/// (the cookie check takes the next segment for the first): a thousand connections at once
/// lost the first byte of about one in ten.
pub const LISTEN_BACKLOG: u32 = 4096;

/// A listener for the joiner's side of a forwarded port, with room for `LISTEN_BACKLOG`
/// connections not yet accepted.
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As for the usual bind: a port whose last connections linger in TIME_WAIT is reusable.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Something the person running a side should hear about one forwarded connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Owner: the shared port refused (or did not answer) a joiner's connection.
    TargetUnreachable { target: String, error: String },
    /// Joiner: the owner's side closed a connection at once without sending a byte, which is
    /// what happens when nothing listens on the owner's shared port.
    ClosedWithoutReply { from: std::net::SocketAddr },
}

impl std::fmt::Display for Notice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Notice::TargetUnreachable { target, error } => write!(
                f,
                "a joiner's connection could not be carried on: cannot connect to {target}: {error}"
            ),
            Notice::ClosedWithoutReply { from } => write!(
                f,
                "the connection from {from} was closed at once on the owner's side, with no reply: \
                 is the shared service running on the owner's machine?"
            ),
        }
    }
}

/// Where a side's [`Notice`]s go.
pub type Notify = Arc<dyn Fn(Notice) + Send + Sync>;

/// How soon after a joiner's connection is carried the owner's side must close it, without a
/// byte, for the joiner to hear [`Notice::ClosedWithoutReply`].
const AT_ONCE: std::time::Duration = std::time::Duration::from_secs(2);

/// Counters of a forwarding session.
#[derive(Debug, Default)]
pub struct Stats {
    pub connections: AtomicU64,
    pub bytes_to_peer: AtomicU64,
    pub bytes_from_peer: AtomicU64,
}

/// Copies both ways until both directions are done; each side's EOF becomes a shutdown of the
/// other's write half. Returns (bytes a→b, bytes b→a).
pub async fn splice<A, B>(a: &mut A, b: &mut B) -> std::io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let (mut a_read, mut a_write) = tokio::io::split(a);
    let (mut b_read, mut b_write) = tokio::io::split(b);
    tokio::try_join!(
        one_way(&mut a_read, &mut b_write),
        one_way(&mut b_read, &mut a_write)
    )
}

/// How one direction of a [`splice_timed`] went.
struct Direction {
    bytes: u64,
    error: Option<std::io::Error>,
}

/// As [`splice`], but each direction runs to its end, even when the other failed, and says how
/// many bytes it carried. `b_ended` hears of the direction b→a as soon as it ends, with whether
/// a→b was still running then.
async fn splice_timed<A, B>(
    a: &mut A,
    b: &mut B,
    b_ended: impl FnOnce(&Direction, bool),
) -> (Direction, Direction)
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let (mut a_read, mut a_write) = tokio::io::split(a);
    let (mut b_read, mut b_write) = tokio::io::split(b);
    let a_done = std::sync::atomic::AtomicBool::new(false);
    let up = async {
        let d = one_way_timed(&mut a_read, &mut b_write).await;
        a_done.store(true, Ordering::SeqCst);
        d
    };
    let down = async {
        let d = one_way_timed(&mut b_read, &mut a_write).await;
        b_ended(&d, !a_done.load(Ordering::SeqCst));
        d
    };
    tokio::join!(up, down)
}

async fn one_way_timed<R, W>(r: &mut R, w: &mut W) -> Direction
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut bytes = 0;
    let result = one_way_counted(r, w, &mut bytes).await;
    Direction {
        bytes,
        error: result.err(),
    }
}

/// Copies `r` to `w` until EOF, then shuts `w` down. Waits for data with a small buffer and
/// takes a large one only while a burst lasts.
async fn one_way<R, W>(r: &mut R, w: &mut W) -> std::io::Result<u64>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut total = 0u64;
    one_way_counted(r, w, &mut total).await?;
    Ok(total)
}

/// [`one_way`], counting into `total` as it goes (so that it is known after an error too).
async fn one_way_counted<R, W>(r: &mut R, w: &mut W, total: &mut u64) -> std::io::Result<()>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut small = [0u8; IDLE_READ];
    loop {
        let n = r.read(&mut small).await?;
        if n == 0 {
            w.shutdown().await?;
            return Ok(());
        }
        w.write_all(&small[..n]).await?;
        *total += n as u64;
        if n == IDLE_READ {
            let mut big = vec![0u8; CHUNK];
            // Whatever is ready now, without waiting: a pending read consumes nothing.
            while let Some(got) = r.read(&mut big).now_or_never() {
                let n = got?;
                if n == 0 {
                    w.shutdown().await?;
                    return Ok(());
                }
                w.write_all(&big[..n]).await?;
                *total += n as u64;
            }
        }
        w.flush().await?;
    }
}

/// Owner side: every stream the peer opens is connected to `target` until the peer goes away.
/// Returns the reason the peer connection ended.
pub async fn serve_owner(
    conn: Arc<Connection>,
    target: String,
    stats: Arc<Stats>,
    notify: Notify,
) -> String {
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            why = conn.closed() => {
                tasks.abort_all();
                return why;
            }
            s = conn.accept_stream() => {
                let Some((label, mut stream)) = s else {
                    tasks.abort_all();
                    return conn.closed().await;
                };
                let target = target.clone();
                let (stats, notify) = (stats.clone(), notify.clone());
                tasks.spawn(async move {
                    let mut tcp = match TcpStream::connect(&target).await {
                        Ok(t) => t,
                        Err(e) => {
                            tracing::debug!(%label, "cannot connect to {target}: {e}");
                            // Dropping the stream closes it at once: the joiner hears of it.
                            notify(Notice::TargetUnreachable { target, error: e.to_string() });
                            return;
                        }
                    };
                    let _ = tcp.set_nodelay(true);
                    stats.connections.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%label, "forwarding to {target}");
                    match splice(&mut stream, &mut tcp).await {
                        Ok((from_peer, to_peer)) => {
                            stats.bytes_from_peer.fetch_add(from_peer, Ordering::Relaxed);
                            stats.bytes_to_peer.fetch_add(to_peer, Ordering::Relaxed);
                        }
                        Err(e) => tracing::debug!(%label, "connection ended: {e}"),
                    }
                });
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
}

/// Joiner side: every connection accepted on `listener` is carried to the owner over a new
/// stream. Returns the reason the peer connection ended.
pub async fn serve_joiner(
    conn: Arc<Connection>,
    listener: TcpListener,
    stats: Arc<Stats>,
    notify: Notify,
) -> String {
    let mut tasks = JoinSet::new();
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            why = conn.closed() => {
                tasks.abort_all();
                return why;
            }
            accepted = listener.accept() => {
                let (mut tcp, from) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                n += 1;
                // The original program's owner expects DataConn<N>, N counting from 1.
                let label = format!("DataConn{n}");
                let conn = conn.clone();
                let (stats, notify) = (stats.clone(), notify.clone());
                tasks.spawn(async move {
                    let began = std::time::Instant::now();
                    let mut stream = match conn.open_stream(&label).await {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::warn!("cannot open a stream for {from}: {e}");
                            return;
                        }
                    };
                    stats.connections.fetch_add(1, Ordering::Relaxed);
                    // The owner's side ended first, at once and empty: its service is most
                    // likely not running (a client that hangs up first is not that).
                    let owner_ended = |down: &Direction, client_still_sending: bool| {
                        if down.bytes == 0 && client_still_sending && began.elapsed() < AT_ONCE {
                            notify(Notice::ClosedWithoutReply { from });
                        }
                    };
                    let (up, down) = splice_timed(&mut tcp, &mut stream, owner_ended).await;
                    stats.bytes_to_peer.fetch_add(up.bytes, Ordering::Relaxed);
                    stats.bytes_from_peer.fetch_add(down.bytes, Ordering::Relaxed);
                    if let Some(e) = up.error.as_ref().or(down.error.as_ref()) {
                        tracing::debug!(%label, "connection ended: {e}");
                    }
                });
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::time::Duration;
    use tokio::io::duplex;

    /// Data both ways, bursts larger and smaller than the idle buffer, and EOF on each side
    /// arriving as a shutdown on the other.
    #[tokio::test]
    async fn splice_carries_both_ways_and_half_closes() {
        let (mut a_user, mut a) = duplex(8 * 1024);
        let (mut b, mut b_user) = duplex(8 * 1024);
        let copier = tokio::spawn(async move { splice(&mut a, &mut b).await });
        let up: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let down: Vec<u8> = (0..5_000u32).map(|i| (i * 13) as u8).collect();
        let up2 = up.clone();
        let writer = tokio::spawn(async move {
            a_user.write_all(&up2[..100]).await.unwrap();
            a_user.write_all(&up2[100..]).await.unwrap();
            a_user.shutdown().await.unwrap();
            let mut back = Vec::new();
            a_user.read_to_end(&mut back).await.unwrap();
            back
        });
        let mut got = Vec::new();
        b_user.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, up, "a to b");
        // a's EOF reached b; b still answers, then closes.
        b_user.write_all(&down).await.unwrap();
        b_user.shutdown().await.unwrap();
        assert_eq!(writer.await.unwrap(), down, "b to a");
        let (ab, ba) = copier.await.unwrap().unwrap();
        assert_eq!((ab, ba), (up.len() as u64, down.len() as u64));
    }

    /// The kernel's count of connections it turned away because a listen queue was full
    /// (`TcpExtListenOverflows`), for this network namespace.
    fn listen_overflows() -> u64 {
        let text = std::fs::read_to_string("/proc/net/netstat").expect("/proc/net/netstat");
        let mut tcp_ext = text.lines().filter(|l| l.starts_with("TcpExt:"));
        let (names, values) = (
            tcp_ext.next().expect("names"),
            tcp_ext.next().expect("values"),
        );
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == "ListenOverflows")
            .and_then(|(_, v)| v.parse().ok())
            .expect("ListenOverflows counter")
    }

    /// Six hundred connections arriving at once, none accepted yet, all fit in the queue:
    /// none is turned away (with tokio's default of 128, most were), and each one's first
    /// bytes are there when it is accepted.
    #[tokio::test]
    async fn a_burst_of_connections_fits_the_listen_queue() {
        const N: u32 = 600;
        let listener = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let before = listen_overflows();
        let clients: Vec<_> = (0..N)
            .map(|i| {
                tokio::spawn(async move {
                    let mut c =
                        tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
                            .await
                            .expect("connected within 5 s")
                            .unwrap();
                    c.write_all(&i.to_be_bytes()).await.unwrap();
                    c
                })
            })
            .collect();
        let mut held = Vec::new();
        for c in clients {
            held.push(c.await.unwrap());
        }
        let overflows = listen_overflows() - before;
        assert_eq!(
            overflows, 0,
            "connections turned away by a full listen queue"
        );
        let mut seen = BTreeSet::new();
        for _ in 0..N {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut first = [0u8; 4];
            s.read_exact(&mut first).await.unwrap();
            seen.insert(u32::from_be_bytes(first));
        }
        assert_eq!(
            seen,
            (0..N).collect(),
            "every connection's first bytes arrived"
        );
        drop(held);
    }
}
