//! A connected, authenticated peer and its streams, over one lane or striped over several.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, watch};
use yakk_transport::{PathInfo, Peer, PeerEvent, TransportError};

use crate::parts::Parts;
use crate::stripe::Striped;
use crate::{SessionError, Version};

/// How long one lane's part of a striped stream may take to open.
const LANE_OPEN_TIMEOUT: Duration = Duration::from_secs(20);
/// Flow-control window growth all lanes of a striped session share: what one peer connection
/// has on its own, cut in equal parts.
const STRIPE_POOL: u64 = 32 << 20;
/// How far ahead of the reader one striped stream may be, all its parts together. A part
/// waits unread while the next frame is on another lane that lost a packet (a round trip, or
/// a second when the stack's retransmission timer has to fire), so the others need room to
/// keep going meanwhile. With 32 lanes at 50 ms and 0.5 % loss, 32 MiB moved 11.0 MB/s on
/// average over 3 runs, 16 MiB 10.4 over 6 (bench/WAN.md).
const STRIPE_WINDOW: u64 = 32 << 20;

/// Bytes one lane may have in its stack not yet acknowledged, at most. A lane that is slow at
/// the moment (halving its window after a loss) then holds only a little of the stream, which
/// the reader would otherwise wait for while the other lanes fill their windows. One peer
/// connection alone has 4 MiB.
const LANE_SEND_BUDGET: usize = 256 << 10;

/// Settings of each peer connection of a session, before its first stream: per-stream flow
/// control and who closes a stream, when both sides agreed on them; a small send budget when
/// the peer asked for small bursts; and, when the session runs several lanes (a striped
/// session), a share of what one connection alone has.
pub(crate) fn tune_lane(p: &Peer, flow: bool, opener_closes: bool, small_bursts: bool, lanes: u32) {
    p.set_flow_control(flow);
    p.set_opener_closes(opener_closes);
    if lanes > 1 {
        p.set_window_pool(STRIPE_POOL / u64::from(lanes));
        p.set_send_budget(LANE_SEND_BUDGET);
    }
    if small_bursts {
        p.set_small_bursts(true);
    }
}

/// One peer connection of a session, and whether it is still up.
struct Lane {
    id: u32,
    peer: Peer,
    up: Arc<AtomicBool>,
    /// False once a part of a stream could not be opened on it: new streams avoid it (it
    /// may never have come up for data; or it is only slow, and keeps its streams).
    usable: AtomicBool,
}

/// What accepting streams needs when the session has several lanes.
struct Incoming {
    /// Channels the peer opened, with the lane of each.
    streams: mpsc::Receiver<(u32, String, yakk_transport::Channel)>,
    parts: Parts<yakk_transport::Channel>,
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A connected, authenticated peer.
///
/// With one lane (yakk/1, or yakk/2 on a short path) every stream is one data channel of
/// one peer connection. With several lanes (docs/yakk2.md, "Lanes") every stream is striped
/// over one data channel on each lane that is up ([`stripe`](crate::stripe)).
pub struct Connection {
    lanes: Vec<Lane>,
    striped: bool,
    next_stripe: AtomicU64,
    /// Striped streams of this connection alive now (opened or accepted).
    live: Arc<AtomicUsize>,
    /// Where the next striped stream's parts start among the lanes that are up.
    next_lane: AtomicUsize,
    incoming: tokio::sync::Mutex<Incoming>,
    version: Version,
    path: PathInfo,
    closed: watch::Receiver<Option<String>>,
    held: Mutex<Vec<Box<dyn Send>>>,
}

impl Connection {
    pub(crate) fn new(
        lanes: Vec<(u32, Peer)>,
        mut events: mpsc::Receiver<(u32, PeerEvent)>,
        version: Version,
        path: PathInfo,
        striped: bool,
    ) -> Self {
        let lanes: Vec<Lane> = lanes
            .into_iter()
            .map(|(id, peer)| Lane {
                id,
                peer,
                up: Arc::new(AtomicBool::new(true)),
                usable: AtomicBool::new(true),
            })
            .collect();
        let count = lanes.len();
        let (tx, rx) = watch::channel(None);
        let watched: Vec<(u32, Arc<AtomicBool>)> =
            lanes.iter().map(|l| (l.id, l.up.clone())).collect();
        tokio::spawn(async move {
            // The connection is gone once every lane is.
            let why = loop {
                match events.recv().await {
                    Some((lane, PeerEvent::Disconnected(why))) => {
                        let Some((_, up)) = watched.iter().find(|(id, _)| *id == lane) else {
                            continue;
                        };
                        up.store(false, Ordering::Relaxed);
                        if watched.iter().all(|(_, up)| !up.load(Ordering::Relaxed)) {
                            break why.to_string();
                        }
                        tracing::info!(lane, "lost a lane: {why}");
                    }
                    Some(_) => continue,
                    None => break "the peer connection ended".to_string(),
                }
            };
            let _ = tx.send(Some(why));
        });
        let (streams_tx, streams) = mpsc::channel(64);
        let mut held: Vec<Box<dyn Send>> = Vec::new();
        if striped {
            for lane in &lanes {
                let (id, peer, tx) = (lane.id, lane.peer.clone(), streams_tx.clone());
                let task = tokio::spawn(async move {
                    while let Some((name, s)) = peer.accept_channel().await {
                        if tx.send((id, name, s)).await.is_err() {
                            break;
                        }
                    }
                });
                held.push(Box::new(AbortOnDrop(task.abort_handle())));
            }
        }
        Connection {
            lanes,
            striped,
            next_stripe: AtomicU64::new(0),
            live: Arc::new(AtomicUsize::new(0)),
            next_lane: AtomicUsize::new(0),
            incoming: tokio::sync::Mutex::new(Incoming {
                streams,
                parts: Parts::new(count),
            }),
            version,
            path,
            closed: rx,
            held: Mutex::new(held),
        }
    }

    /// Keeps `thing` alive as long as this connection.
    pub(crate) fn hold(&self, thing: Box<dyn Send>) {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(thing);
    }

    pub fn version(&self) -> Version {
        self.version
    }

    /// The path of the first lane.
    pub fn path(&self) -> &PathInfo {
        &self.path
    }

    /// How many lanes (peer connections) are up; streams are striped over them when the
    /// session agreed on more than one.
    pub fn lanes(&self) -> usize {
        self.lanes
            .iter()
            .filter(|l| l.up.load(Ordering::Relaxed))
            .count()
    }

    /// Opens a new stream to the peer.
    pub async fn open_stream(&self, label: &str) -> Result<Stream, SessionError> {
        if !self.striped {
            let s = self.lanes[0].peer.open_channel(label).await?;
            return Ok(Stream(StreamKind::One(s)));
        }
        // A lane that cannot open its part is left out of new streams (its association may
        // never have come up), and the stream is opened again over the others.
        let mut last = None;
        for _ in 0..2 {
            let up: Vec<&Lane> = self
                .lanes
                .iter()
                .filter(|l| l.up.load(Ordering::Relaxed))
                .collect();
            if up.is_empty() {
                break;
            }
            let mut alive: Vec<&Lane> = up
                .iter()
                .copied()
                .filter(|l| l.usable.load(Ordering::Relaxed))
                .collect();
            if alive.is_empty() {
                alive = up;
            }
            // The lanes are shared out among the streams alive, those being opened included:
            // one stream alone gets them all; with many (a thousand forwarded connections)
            // each gets one, in turn, and memory stays what it is with one lane.
            let (before, live) = Live::count(&self.live);
            let count = (alive.len() / (before + 1)).max(1);
            let first = self.next_lane.fetch_add(count, Ordering::Relaxed);
            let chosen: Vec<&Lane> = (0..count)
                .map(|i| alive[(first + i) % alive.len()])
                .collect();
            let k = self.next_stripe.fetch_add(1, Ordering::Relaxed);
            let name = format!("{k}/{}/{label}", chosen.len());
            let opens = chosen.iter().map(|l| async {
                match tokio::time::timeout(LANE_OPEN_TIMEOUT, l.peer.open_channel(&name)).await {
                    Ok(r) => r.map_err(SessionError::from),
                    Err(_) => Err(SessionError::Transport(TransportError::OpenChannel {
                        label: name.clone(),
                        reason: "the peer did not answer in time".into(),
                    })),
                }
            });
            let results = futures::future::join_all(opens).await;
            if results.iter().all(Result::is_ok) {
                let parts = results.into_iter().flatten().collect();
                return Ok(striped(parts, live));
            }
            for (lane, r) in chosen.iter().zip(results) {
                if let Err(e) = r {
                    tracing::info!(lane = lane.id, "new streams avoid a lane: {e}");
                    lane.usable.store(false, Ordering::Relaxed);
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            SessionError::Transport(TransportError::Closed("every lane is gone".into()))
        }))
    }

    /// The next stream the peer opened; `None` once the peer is gone.
    pub async fn accept_stream(&self) -> Option<(String, Stream)> {
        if !self.striped {
            let (label, s) = self.lanes[0].peer.accept_channel().await?;
            return Some((label, Stream(StreamKind::One(s))));
        }
        let mut inc = self.incoming.lock().await;
        loop {
            let (lane, name, s) = inc.streams.recv().await?;
            if let Some((label, parts)) = inc.parts.on_part(lane, &name, s, Instant::now()) {
                let (_, live) = Live::count(&self.live);
                return Some((label, striped(parts, live)));
            }
        }
    }

    /// Resolves when the peer connection is gone, with the reason.
    pub async fn closed(&self) -> String {
        let mut rx = self.closed.clone();
        loop {
            if let Some(why) = rx.borrow_and_update().clone() {
                return why;
            }
            if rx.changed().await.is_err() {
                return "the peer connection ended".into();
            }
        }
    }

    pub async fn close(&self) {
        futures::future::join_all(self.lanes.iter().map(|l| l.peer.close())).await;
    }

    /// Tests only: closes lane `index` (in the order of the lanes that came up), as a lost
    /// peer connection would end.
    #[doc(hidden)]
    pub async fn close_lane_for_test(&self, index: usize) {
        let lane = &self.lanes[index];
        lane.up.store(false, Ordering::Relaxed);
        lane.peer.close().await;
    }
}

/// A stream striped over `parts`, each with its share of the stripe window, counted among
/// the connection's live streams while it lives.
fn striped(parts: Vec<yakk_transport::Channel>, live: Live) -> Stream {
    let each = STRIPE_WINDOW / parts.len().max(1) as u64;
    for p in &parts {
        p.set_striped_window(each);
    }
    Stream(StreamKind::Striped(Box::new(Counted {
        stream: Striped::new(parts),
        _live: live,
    })))
}

/// Counts a striped stream (or one being opened) among the connection's live ones until
/// dropped.
struct Live(Arc<AtomicUsize>);

impl Live {
    /// Counts one more; returns how many there were before.
    fn count(live: &Arc<AtomicUsize>) -> (usize, Live) {
        (live.fetch_add(1, Ordering::Relaxed), Live(live.clone()))
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Counted {
    stream: Striped<yakk_transport::Channel>,
    _live: Live,
}

/// A reliable, ordered byte stream to the peer: one data channel, or one on each of several
/// lanes.
pub struct Stream(StreamKind);

impl Stream {
    /// The data channels the stream runs over: 1 without lanes.
    pub fn parts(&self) -> usize {
        match &self.0 {
            StreamKind::One(_) => 1,
            StreamKind::Striped(s) => s.stream.lanes(),
        }
    }
}

enum StreamKind {
    One(yakk_transport::Channel),
    Striped(Box<Counted>),
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match &mut self.0 {
            StreamKind::One(s) => Pin::new(s).poll_read(cx, buf),
            StreamKind::Striped(s) => Pin::new(&mut s.stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match &mut self.0 {
            StreamKind::One(s) => Pin::new(s).poll_write(cx, buf),
            StreamKind::Striped(s) => Pin::new(&mut s.stream).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.0 {
            StreamKind::One(s) => Pin::new(s).poll_flush(cx),
            StreamKind::Striped(s) => Pin::new(&mut s.stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.0 {
            StreamKind::One(s) => Pin::new(s).poll_shutdown(cx),
            StreamKind::Striped(s) => Pin::new(&mut s.stream).poll_shutdown(cx),
        }
    }
}
