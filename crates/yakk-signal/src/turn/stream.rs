//! TURN over a stream: over TCP on the relay's own port (`--turn-listen`), and over TLS
//! (`turns:`) on the signalling server's TLS listener. After the TLS handshake, `server.rs`
//! hands a connection here instead of to HTTP when its first byte is that of a STUN message
//! (two top bits 00; HTTP starts with an ASCII letter) or when it negotiated the ALPN protocol
//! `stun.turn` (RFC 7443).
//!
//! A [`StreamTransport`] is the crate's [`Transport`] for all the connections of one kind (TCP,
//! or TLS) at once: the requests of every connection come out of one queue, tagged with the
//! client's address, and what the crate sends to an address goes to that connection's writer.
//! It runs behind the same checks as the other transports ([`super::guard::Guarded`]), keyed by
//! the real client address. (The crate's own TCP transport, used before, waited for each frame
//! to be written before it relayed the next datagram, and dropped requests when the crate was
//! busy: a joiner without UDP moved 6–11 MiB/s over it in the NAT lab, against 26–32 over TLS
//! here.)
//!
//! Frames are read and checked by `framing.rs` (RFC 8656 §12.5, RFC 6062); one that does not
//! parse closes the connection.
//!
//! Bounds, per connection: one frame read at a time, at most
//! [`MAX_STUN`](super::framing::MAX_STUN) bytes for a STUN message and
//! [`MAX_CHANNEL_DATA`](super::framing::MAX_CHANNEL_DATA) for ChannelData (the size of the
//! relay's own UDP datagrams); at most [`EGRESS_BYTES`] queued towards the client (more are
//! dropped, as a congested link would drop them); a client that stops reading is closed once a
//! write has waited [`WRITE_TIMEOUT`]; a connection without an allocation for
//! [`NO_ALLOCATION_TIMEOUT`] is closed. In all: at most [`StreamOptions::max_connections`]
//! connections, [`StreamOptions::max_per_address`] per client address, and
//! [`EGRESS_BYTES_TOTAL`] queued towards all clients.
//!
//! Why the queue towards a client is deep: a peer on the other side of the relay sends over UDP
//! in bursts of up to its whole window, and the stream drains at its own pace. Whatever of
//! a burst finds the queue full is lost, and SCTP recovers from a lost tail only by its
//! retransmission timer (a second at least). With 64 frames (80 KB) the relayed path over TLS
//! moved 4–19 MiB/s and sometimes under 1; with room for a yakk peer's whole SCTP window (3 MiB)
//! between the allocation's socket and this queue, 33–35 MiB/s (bench/RELAY.md, run 9).

use std::borrow::Cow;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use medea_turn::transport::{Error, Request, Transport};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::mpsc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::Via;
use super::framing::{ChannelDataDecoder, Frame, ReadError, read_frame};
use super::gate::Gate;
use crate::ratelimit::{ClientKey, ConnectionLimit};

/// The ALPN protocol of TURN over TLS (RFC 7443).
pub(crate) const ALPN: &[u8] = b"stun.turn";
/// Bytes that may wait for one client; more are dropped. More than a yakk peer's SCTP receive
/// window (3 MiB), which bounds what it has in flight.
pub const EGRESS_BYTES: usize = 4 << 20;
/// Bytes that may wait for all clients together; more are dropped.
pub const EGRESS_BYTES_TOTAL: usize = 128 << 20;
/// Queued frames are written to a client together up to about this many bytes.
const WRITE_BATCH: usize = 64 * 1024;
/// A write to a client that takes longer closes it.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection without an allocation (none yet, or no longer) for this long is closed.
pub const NO_ALLOCATION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the close of a connection may wait for the client to take its close_notify.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// How often a connection checks that it has an allocation.
const ALLOCATION_CHECK: Duration = Duration::from_secs(5);
/// Requests of all connections waiting for the crate.
const INGRESS_FRAMES: usize = 256;
/// The crate's number for TCP (the transport of a 5-tuple; TLS runs over TCP).
const PROTO_TCP: u8 = 6;
/// Why the relay refused or closed a TURN-over-TCP or TURN-over-TLS connection; one label value
/// of `yakk_signal_turn_tcp_closed_total` and `yakk_signal_turn_tls_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamClose {
    /// Refused: as many connections as allowed are open.
    TooMany,
    /// Refused: as many connections as allowed are open from the client's address.
    TooManyFromAddress,
    /// It sent something that is not a STUN message nor ChannelData, or too long a frame.
    Malformed,
    /// It had no allocation for `NO_ALLOCATION_TIMEOUT`.
    NoAllocation,
    /// It did not read what the relay wrote for `WRITE_TIMEOUT`.
    WriteTimeout,
}

impl StreamClose {
    pub(super) const ALL: [StreamClose; 5] = [
        StreamClose::TooMany,
        StreamClose::TooManyFromAddress,
        StreamClose::Malformed,
        StreamClose::NoAllocation,
        StreamClose::WriteTimeout,
    ];

    pub(super) fn label(self) -> &'static str {
        match self {
            StreamClose::TooMany => "too_many",
            StreamClose::TooManyFromAddress => "too_many_from_address",
            StreamClose::Malformed => "malformed",
            StreamClose::NoAllocation => "no_allocation",
            StreamClose::WriteTimeout => "write_timeout",
        }
    }
}

/// Counters of TURN over TCP, or of TURN over TLS.
#[derive(Debug, Default)]
pub struct StreamMetrics {
    pub(super) open: AtomicU64,
    pub(super) accepted: AtomicU64,
    pub(super) closed: [AtomicU64; StreamClose::ALL.len()],
    pub(super) dropped_frames: AtomicU64,
}

impl StreamMetrics {
    fn close(&self, why: StreamClose) {
        self.closed[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Connections open now.
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Connections refused or closed for `why`.
    pub fn closed(&self, why: StreamClose) -> u64 {
        self.closed[why as usize].load(Ordering::Relaxed)
    }

    /// Frames to clients dropped because their queue was full.
    pub fn dropped_frames(&self) -> u64 {
        self.dropped_frames.load(Ordering::Relaxed)
    }
}

/// How a stream transport is set up.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StreamOptions {
    /// The listening address (the server's side of every 5-tuple).
    pub local_addr: SocketAddr,
    /// Connections open at once, at most.
    pub max_connections: usize,
    /// Connections open at once from one client address (IPv6: per /64), at most; 0: no limit.
    pub max_per_address: usize,
}

struct Ingress {
    from: SocketAddr,
    frame: Frame,
}

/// The way to one connection's writer.
struct Writer {
    id: u64,
    tx: mpsc::UnboundedSender<Queued>,
    /// Bytes waiting in `tx`.
    queued: Arc<AtomicUsize>,
}

/// A frame waiting for a connection's writer, counted in its connection's queue and in all
/// until it is written or dropped.
struct Queued {
    frame: Vec<u8>,
    counts: [Arc<AtomicUsize>; 2],
}

impl Drop for Queued {
    fn drop(&mut self) {
        for c in &self.counts {
            c.fetch_sub(self.frame.len(), Ordering::Relaxed);
        }
    }
}

/// What only the crate's reading task uses.
struct Reader {
    rx: mpsc::Receiver<Ingress>,
    decoder: ChannelDataDecoder,
}

/// The crate's transport for every TURN-over-TCP, or every TURN-over-TLS, connection (see the
/// module's documentation).
pub(crate) struct StreamTransport {
    options: StreamOptions,
    gate: Arc<Gate>,
    /// TCP or TLS: which counters, and the transport part of an allocation's key.
    via: Via,
    ingress: mpsc::Sender<Ingress>,
    reader: tokio::sync::Mutex<Reader>,
    writers: Mutex<HashMap<SocketAddr, Writer>>,
    permits: Arc<Semaphore>,
    per_address: Mutex<ConnectionLimit>,
    next_id: AtomicU64,
    /// Bytes waiting for all writers.
    queued: Arc<AtomicUsize>,
    /// At most this many bytes wait for one writer ([`EGRESS_BYTES`]) and for all of them
    /// ([`EGRESS_BYTES_TOTAL`]).
    egress_limits: (usize, usize),
    /// Cancelled when the relay stops: every connection closes.
    stop: CancellationToken,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while the lock was held leaves a whole map: keep using it.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl StreamTransport {
    pub(super) async fn new(
        options: StreamOptions,
        gate: Arc<Gate>,
        via: Via,
    ) -> io::Result<StreamTransport> {
        let (ingress, rx) = mpsc::channel(INGRESS_FRAMES);
        Ok(StreamTransport {
            options,
            gate,
            via,
            ingress,
            reader: tokio::sync::Mutex::new(Reader {
                rx,
                decoder: ChannelDataDecoder::new().await?,
            }),
            writers: Mutex::new(HashMap::new()),
            permits: Arc::new(Semaphore::new(
                options.max_connections.min(Semaphore::MAX_PERMITS),
            )),
            per_address: Mutex::new(ConnectionLimit::new(options.max_per_address)),
            next_id: AtomicU64::new(0),
            queued: Arc::new(AtomicUsize::new(0)),
            egress_limits: (EGRESS_BYTES, EGRESS_BYTES_TOTAL),
            stop: CancellationToken::new(),
        })
    }

    /// Closes every connection and accepts no more.
    pub(super) fn stop(&self) {
        self.stop.cancel();
    }

    /// TCP or TLS.
    pub(super) fn via(&self) -> Via {
        self.via
    }

    /// Returns once [`StreamTransport::stop`] was called.
    pub(super) async fn stopped(&self) {
        self.stop.cancelled().await;
    }

    fn metrics(&self) -> &StreamMetrics {
        match self.via {
            Via::Tcp => &self.gate.metrics.tcp,
            Via::Tls | Via::Udp => &self.gate.metrics.tls,
        }
    }

    /// Serves `stream` (a TCP connection just accepted, or a TLS connection whose handshake is
    /// done and whose first plaintext bytes are still to be read) as a TURN client at `peer`,
    /// in a task of its own; or closes it at once when too many are open.
    pub(crate) fn accept<S>(self: &Arc<Self>, stream: S, peer: SocketAddr)
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        if self.stop.is_cancelled() {
            return;
        }
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            self.metrics().close(StreamClose::TooMany);
            let via = self.via.label();
            tracing::debug!(%peer, "turn: refused a {via} connection: too many open");
            return;
        };
        let client = ClientKey::from(peer.ip());
        if !lock(&self.per_address).acquire(client) {
            self.metrics().close(StreamClose::TooManyFromAddress);
            let via = self.via.label();
            tracing::debug!(%peer, "turn: refused a {via} connection: too many from its address");
            return;
        }
        let slot = Slot {
            transport: self.clone(),
            client,
            _permit: permit,
        };
        self.metrics().open.fetch_add(1, Ordering::Relaxed);
        self.metrics().accepted.fetch_add(1, Ordering::Relaxed);
        let this = self.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match this.run(stream, peer).await {
                Some(why) => {
                    this.metrics().close(why);
                    let (via, why) = (this.via.label(), why.label());
                    tracing::debug!(%peer, "turn: closed a {via} connection: {why}");
                }
                None => {
                    let via = this.via.label();
                    tracing::debug!(%peer, "turn: {via} connection ended");
                }
            }
        });
    }

    /// Reads, writes and watches one connection until one of them ends it; why the relay ended
    /// it (`None`: the client went, or the relay stopped).
    async fn run<S>(&self, stream: S, peer: SocketAddr) -> Option<StreamClose>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin,
    {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        // A connection from the same address that is still being torn down is replaced.
        lock(&self.writers).insert(peer, Writer { id, tx, queued });
        let (mut rd, mut wr) = tokio::io::split(stream);
        let end = tokio::select! {
            end = self.read_frames(&mut rd, peer) => end,
            end = write_frames(&mut wr, rx) => end,
            end = self.watch_allocation(peer) => Some(end),
            _ = self.stop.cancelled() => None,
        };
        {
            let mut writers = lock(&self.writers);
            if writers.get(&peer).is_some_and(|w| w.id == id) {
                writers.remove(&peer);
            }
        }
        // A TLS close_notify (or a TCP FIN), if the client still reads.
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, wr.shutdown()).await;
        end
    }

    /// Reads frames and queues them for the crate, until the client goes or sends something
    /// malformed.
    async fn read_frames<R>(&self, rd: &mut R, peer: SocketAddr) -> Option<StreamClose>
    where
        R: AsyncRead + Unpin,
    {
        loop {
            let frame = match read_frame(rd).await {
                Ok(frame) => frame,
                Err(ReadError::Gone) => return None,
                Err(ReadError::Malformed(why)) => {
                    let via = self.via.label();
                    tracing::debug!(%peer, "turn: malformed frame over {via}: {why}");
                    return Some(StreamClose::Malformed);
                }
            };
            // Waits while the crate is busy: the client's stream is held back, not dropped.
            if self
                .ingress
                .send(Ingress { from: peer, frame })
                .await
                .is_err()
            {
                return None;
            }
        }
    }

    /// Returns once `peer` had no allocation for [`NO_ALLOCATION_TIMEOUT`].
    async fn watch_allocation(&self, peer: SocketAddr) -> StreamClose {
        let mut last_seen = Instant::now();
        let mut tick = tokio::time::interval(ALLOCATION_CHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = Instant::now();
            if self.gate.has_allocation((self.via, peer)) {
                last_seen = now;
            } else if now.saturating_duration_since(last_seen) >= NO_ALLOCATION_TIMEOUT {
                return StreamClose::NoAllocation;
            }
        }
    }

    /// The next request of any connection, its client, and for ChannelData the size of its
    /// payload.
    pub(super) async fn recv_sized(&self) -> Result<(Request, SocketAddr, Option<usize>), Error> {
        let mut reader = self.reader.lock().await;
        loop {
            // `self.ingress` keeps the queue open: it ends only with the transport.
            let Some(Ingress { from, frame }) = reader.rx.recv().await else {
                return Err(Error::TransportIsDead);
            };
            match frame {
                Frame::Stun(msg) => return Ok((Request::Message(*msg), from, None)),
                Frame::ChannelData(raw) => {
                    let n = raw.len().saturating_sub(4);
                    match reader.decoder.decode(&raw).await {
                        Some(req) => return Ok((req, from, Some(n))),
                        None => {
                            let via = self.via.label();
                            tracing::warn!(%from, "turn: a ChannelData over {via} was lost");
                        }
                    }
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl Transport for StreamTransport {
    async fn recv_from(&self) -> Result<(Request, SocketAddr), Error> {
        let (req, from, _) = self.recv_sized().await?;
        Ok((req, from))
    }

    /// Queues `data` for the connection of `target` without waiting: a full queue drops it.
    /// A connection that is gone is [`Error::TransportIsDead`], which ends the allocation's
    /// relaying, as over TCP.
    async fn send_to(&self, data: Cow<'_, [u8]>, target: SocketAddr) -> Result<(), Error> {
        let mut writers = lock(&self.writers);
        let Some(writer) = writers.get(&target) else {
            return Err(Error::TransportIsDead);
        };
        let n = data.len();
        let (one, all) = self.egress_limits;
        // Counted first, then checked: a frame over either bound is dropped (and uncounted).
        let queued = Queued {
            frame: data.into_owned(),
            counts: [writer.queued.clone(), self.queued.clone()],
        };
        let [mine, every] = &queued.counts;
        let over_one = mine.fetch_add(n, Ordering::Relaxed) + n > one;
        let over_all = every.fetch_add(n, Ordering::Relaxed) + n > all;
        if over_one || over_all {
            drop((queued, writers));
            self.metrics()
                .dropped_frames
                .fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        if writer.tx.send(queued).is_err() {
            writers.remove(&target);
            return Err(Error::TransportIsDead);
        }
        Ok(())
    }

    fn local_addr(&self) -> SocketAddr {
        self.options.local_addr
    }

    fn proto(&self) -> u8 {
        PROTO_TCP
    }
}

/// One open connection, counted in all and against its client address until dropped.
struct Slot {
    transport: Arc<StreamTransport>,
    client: ClientKey,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.transport.per_address).release(self.client);
        self.transport
            .metrics()
            .open
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Writes what the crate queued for one client, until the connection goes (`None`) or a write
/// waits too long.
async fn write_frames<W>(wr: &mut W, mut rx: mpsc::UnboundedReceiver<Queued>) -> Option<StreamClose>
where
    W: AsyncWrite + Unpin,
{
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    while let Some(first) = rx.recv().await {
        // What else is queued goes in the same write: (over TLS) one record per 16 KiB and one
        // system call per batch, not one of each per frame.
        batch.clear();
        batch.extend_from_slice(&first.frame);
        drop(first);
        while batch.len() < WRITE_BATCH {
            let Ok(more) = rx.try_recv() else { break };
            batch.extend_from_slice(&more.frame);
        }
        let wrote = tokio::time::timeout(WRITE_TIMEOUT, async {
            wr.write_all(&batch).await?;
            wr.flush().await
        })
        .await;
        match wrote {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return None,
            Err(_) => return Some(StreamClose::WriteTimeout),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    /// What waits for clients that do not read is bounded in bytes, per client (`one`) and in
    /// all (`all`): the rest is dropped and counted, and the count falls as frames leave the
    /// queues, written or dropped with a connection.
    #[tokio::test]
    async fn what_waits_for_clients_is_bounded_in_bytes() {
        let gate = Arc::new(super::super::gate::tests::gate());
        let options = StreamOptions {
            local_addr: "127.0.0.1:443".parse().unwrap(),
            max_connections: 8,
            max_per_address: 0,
        };
        let mut transport = StreamTransport::new(options, gate, Via::Tls).await.unwrap();
        let (one, all) = (64 * 1024, 160 * 1024);
        transport.egress_limits = (one, all);
        let frame = [0x40u8; 1200];
        let peer = |i: u16| SocketAddr::from(([10, 0, 0, 1], 1000 + i));
        // Three connections whose writers take nothing.
        let mut queues = Vec::new();
        for i in 0..3u16 {
            let (tx, rx) = mpsc::unbounded_channel();
            let queued = Arc::new(AtomicUsize::new(0));
            let writer = Writer {
                id: u64::from(i),
                tx,
                queued,
            };
            lock(&transport.writers).insert(peer(i), writer);
            queues.push(rx);
        }
        for i in 0..3u16 {
            for _ in 0..200 {
                transport
                    .send_to(Cow::Borrowed(&frame[..]), peer(i))
                    .await
                    .unwrap();
                let waiting = lock(&transport.writers)[&peer(i)]
                    .queued
                    .load(Ordering::Relaxed);
                assert!(waiting <= one, "client {i}: {waiting} bytes wait");
                let total = transport.queued.load(Ordering::Relaxed);
                assert!(total <= all, "{total} bytes wait in all");
            }
        }
        // 54 frames fit in `one`; the third client gets what is left of `all`.
        let kept: Vec<usize> = queues.iter().map(|q| q.len()).collect();
        assert_eq!(kept, [54, 54, (all - 108 * 1200) / 1200]);
        let kept_all: usize = kept.iter().sum();
        assert_eq!(transport.queued.load(Ordering::Relaxed), kept_all * 1200);
        assert_eq!(
            transport.metrics().dropped_frames(),
            (600 - kept_all) as u64
        );
        // A frame written leaves the counts; a connection gone takes its frames with it.
        let written = queues[1].recv().await.unwrap();
        assert_eq!(written.frame.len(), 1200);
        drop(written);
        drop(queues.remove(0));
        assert_eq!(
            transport.queued.load(Ordering::Relaxed),
            (kept_all - 55) * 1200
        );
        assert!(matches!(
            transport.send_to(Cow::Borrowed(&frame[..]), peer(0)).await,
            Err(Error::TransportIsDead)
        ));
        drop(queues);
        assert_eq!(transport.queued.load(Ordering::Relaxed), 0);
    }
}
