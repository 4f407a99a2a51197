//! One WebRTC peer connection driven by the `webrtc` crate's async layer.
//!
//! Owns the translation between yakk's types and WebRTC's: SDP and candidates in and out,
//! connection state to [`PeerEvent`]s, and opening and accepting data channels, each wired to
//! a [`Stream`] by `channel.rs`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use webrtc::data_channel::{DataChannel, DataChannelEvent, RTCDataChannelInit};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceCandidateInit, RTCIceServer, RTCIceTransportPolicy, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, RTCSessionDescription, SettingEngineBuilder, StatsSelector,
};

use crate::channel;
use crate::flow::Pool;
use crate::netbuf::{BufferedRuntime, SetupClock};
use crate::stats::selected_path;
use crate::stream::Stream;
use crate::{IceCandidate, PathInfo, PeerEvent, TransportConfig, TransportError};

/// The label of the channel the offerer opens first (as the reference program does).
const COMMAND_LABEL: &str = "command";
/// The SCTP receive window advertised to the peer (rtc's default is 1 MiB, which caps any
/// connection at 1 MiB per round trip). Keep it below what the UDP receive buffer holds
/// (SO_RCVBUF 4 MiB ≈ 3.5 MiB of 1.2 KB datagrams): SCTP does not pace, a larger window
/// arrives as a burst that overflows the socket, and throughput collapses (bench/WAN.md).
const SCTP_RECEIVE_WINDOW: u32 = 3 * 1024 * 1024;
/// Bytes a channel may have queued in the stack before `send` waits (backpressure); it caps
/// one connection's data in flight per round trip.
const SEND_BUFFER_LIMIT: usize = 3 * 1024 * 1024;
/// Bytes all channels of one connection together may have in the stack unacknowledged. The
/// association has one receive window (`SCTP_RECEIVE_WINDOW`), so more in flight buys
/// nothing; without this cap, memory grew with the number of busy connections (16 pushing
/// at once: 3 MiB each queued in the sender).
const PEER_SEND_BUDGET: usize = SEND_BUFFER_LIMIT + 1024 * 1024;
/// Opening a channel: attempts, and the pause before the second one (doubling up to the
/// maximum): about 1.5 s in all.
const OPEN_ATTEMPTS: u32 = 8;
const OPEN_RETRY_FIRST: Duration = Duration::from_millis(10);
const OPEN_RETRY_MAX: Duration = Duration::from_millis(400);
/// Pause before opening a channel right after the peer closed one of ours: the stream id just
/// freed is the one the stack hands out next, and the last steps of its reset may still be
/// on their way.
const OPEN_SETTLE: Duration = Duration::from_millis(25);
/// A channel that opened around the time the peer closed one of ours may sit on the stream
/// id just freed, and the last reset of the old stream (the peer's answer to ours, about a
/// round trip after the first) can still arrive and close it. That reset leaves the peer
/// right next to its acknowledgement of our open, so a new channel is held back this long
/// before the application gets it, when a peer close came this recently before the open
/// (`OPEN_RISK`): if it is closed in the meantime, nothing was sent on it and the open is
/// retried.
const OPEN_PROBATION: Duration = Duration::from_millis(20);
/// How long one attempt waits for the peer to acknowledge an open: `OPEN_WAIT` while the
/// connection has nothing queued (many round trips), up to `OPEN_WAIT_MAX` while data is
/// queued ahead of the open (up to the send budget, seconds on a slow link). Checked every
/// `OPEN_WAIT_CHECK`.
const OPEN_WAIT: Duration = Duration::from_secs(3);
const OPEN_WAIT_MAX: Duration = Duration::from_secs(15);
const OPEN_WAIT_CHECK: Duration = Duration::from_millis(500);
const OPEN_RISK: Duration = Duration::from_millis(50);
/// Data channels opened by the peer, waiting for `accept_stream`.
const ACCEPT_QUEUE: usize = 64;
/// Events waiting for the application.
const EVENT_QUEUE: usize = 64;
/// ICE consent: silence after which the connection counts as disconnected, then failed.
const ICE_DISCONNECTED: Duration = Duration::from_secs(4);
const ICE_FAILED: Duration = Duration::from_secs(6);
const ICE_KEEPALIVE: Duration = Duration::from_secs(1);
/// How long the stack's timer stays capped for a quick setup: from creation (it covers
/// the rendezvous too, which can be slow), and after the connection is up (the first
/// channels open then).
const SETUP_QUICK: Duration = Duration::from_secs(60);
const SETUP_QUICK_AFTER_CONNECTED: Duration = Duration::from_secs(2);

pub(crate) struct AsyncPeer {
    inner: Arc<Inner>,
}

struct Inner {
    pc: Arc<dyn PeerConnection>,
    max_message: usize,
    half_close: bool,
    /// Remote candidates received before the remote description; `None` once it is set.
    early_candidates: tokio::sync::Mutex<Option<Vec<RTCIceCandidateInit>>>,
    accepted: tokio::sync::Mutex<mpsc::Receiver<(String, Stream)>>,
    /// Cancelled when the connection is gone: every pump stops.
    dead: CancellationToken,
    /// The "command" channel, kept open for the connection's lifetime.
    command: Mutex<Option<Arc<dyn DataChannel>>>,
    /// Caps the stack's timer while the connection is being set up.
    clock: Arc<SetupClock>,
    /// The connection's send budget (`PEER_SEND_BUDGET`), shared by its channels.
    budget: Arc<Semaphore>,
    /// The size of `budget` (lower for the lanes of a striped session).
    budget_size: AtomicUsize,
    /// Becomes true once the SCTP association is up: the "command" channel opened (offerer)
    /// or the peer opened a channel. A channel created before that can lose its DCEP OPEN
    /// ("sending payload data in non-Established state"), and its open never completes.
    sctp_up: tokio::sync::watch::Sender<bool>,
    /// Per-stream flow control with the peer (both sides announced it); read when a
    /// channel is attached.
    flow: AtomicBool,
    /// Window growth shared by this connection's streams.
    pool: Arc<Pool>,
    /// When the peer last closed a channel we opened (see `OPEN_SETTLE`).
    last_peer_close: Arc<Mutex<Option<Instant>>>,
    /// To the connection's own task (`run_events`), for what the stack's callbacks do not say.
    internal: mpsc::UnboundedSender<Internal>,
    /// Set once we close the connection ourselves (see `AsyncPeer::close`).
    closing: AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.dead.cancel();
        // The stack's driver outlives its handle unless told to stop: close explicitly, so
        // dropping the last `Peer` really ends the connection (and the peer learns of it).
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let pc = self.pc.clone();
            rt.spawn(async move {
                let _ = pc.close().await;
            });
        }
    }
}

/// What the stack's callbacks report to the peer's own task.
enum Internal {
    Candidate(RTCIceCandidateInit),
    State(RTCPeerConnectionState),
    Channel(Arc<dyn DataChannel>),
    /// The peer closed the "command" channel: it is closing the connection on purpose.
    PeerClosed,
}

/// Callbacks must return at once: they run on the stack's driver.
struct Handler {
    tx: mpsc::UnboundedSender<Internal>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        match event.candidate.to_json() {
            Ok(init) => {
                let _ = self.tx.send(Internal::Candidate(init));
            }
            Err(e) => tracing::warn!("local ICE candidate not serialisable: {e}"),
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.tx.send(Internal::State(state));
    }

    async fn on_data_channel(&self, dc: Arc<dyn DataChannel>) {
        let _ = self.tx.send(Internal::Channel(dc));
    }
}

fn setup_err(e: impl std::fmt::Display) -> TransportError {
    TransportError::Setup(e.to_string())
}

impl AsyncPeer {
    /// Create a peer connection; gathering starts with the first description. Returns the
    /// peer and its event stream (drain it: it carries the local candidates).
    pub(crate) async fn new(
        cfg: &TransportConfig,
    ) -> Result<(AsyncPeer, mpsc::Receiver<PeerEvent>), TransportError> {
        let ice_servers = cfg
            .ice_servers
            .iter()
            .map(|s| RTCIceServer {
                urls: s.urls.clone(),
                username: s.username.clone().unwrap_or_default(),
                credential: s.credential.clone().unwrap_or_default(),
            })
            .collect::<Vec<_>>();
        let udp_addrs: Vec<String> = if cfg.ice_ips.is_empty() {
            vec!["0.0.0.0:0".to_string()]
        } else {
            cfg.ice_ips
                .iter()
                .map(|ip| std::net::SocketAddr::new(*ip, 0).to_string())
                .collect()
        };
        let allow_loopback = cfg.ice_ips.iter().any(|ip| ip.is_loopback());
        let settings = SettingEngineBuilder::new()
            .with_sctp_max_message_size(
                rtc::peer_connection::configuration::setting_engine::SctpMaxMessageSize::Bounded(
                    (cfg.max_message.max(crate::YAKK2_MAX_MESSAGE)) as u32,
                ),
            )
            .with_sctp_max_receive_buffer_size(SCTP_RECEIVE_WINDOW)
            .with_include_loopback_candidate(allow_loopback)
            // A pair whose remote side was learnt from the peer's own check (its candidate
            // had not arrived through signalling yet) is a direct path like any other: do
            // not hold its nomination back (the default waits 1 s from the start, which
            // made every other setup take 1.1 s instead of 0.1 s on loopback).
            .with_prflx_acceptance_min_wait(Some(Duration::ZERO))
            // Nor a pair whose remote side is the peer's server-reflexive candidate, signalled
            // before its first check arrived: it is as direct as the same address learnt from
            // a check. Held back (the default waits 500 ms), it lost to a check that the peer
            // sent from its TURN allocation: that one is learnt as peer-reflexive, with the
            // peer-reflexive priority the check carries (RFC 8445, 7.1.1), above any
            // server-reflexive pair, and was nominated while the direct pair waited (the NAT
            // lab's endpoint-independent pairing went through the relay in 1 run of 5). A
            // relay check that succeeds before every direct pair can still win that way: the
            // stack cannot tell it from a direct one.
            .with_srflx_acceptance_min_wait(Some(Duration::ZERO))
            // No multicast DNS: it binds 224.0.0.251:5353 for every peer connection (even
            // with --ice-ip 127.0.0.1) and answers or queries the local network; yakk's
            // candidates carry plain addresses, and a peer's `.local` names are dropped.
            .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
            .with_ice_timeouts(
                Some(ICE_DISCONNECTED),
                Some(ICE_FAILED),
                Some(ICE_KEEPALIVE),
            )
            .build();
        let (itx, irx) = mpsc::unbounded_channel();
        let clock = SetupClock::new(SETUP_QUICK);
        // Relay only: the stack applies the policy itself (webrtc 0.21.1): its gatherers
        // skip host and server-reflexive candidates (`RTCStunGatherer::gather`) and TCP host
        // candidates (the driver's gathering), leaving only TURN allocations, and building the
        // connection fails when no `turn:`/`turns:` server is configured. So no candidate of
        // ours is filtered here; doing it at signalling would not be enough anyway, since the
        // agent checks its own local candidates against the peer's whatever we send. The NAT
        // lab checks that a pairing that would connect directly is relayed with it. The
        // stack allocates over UDP only: it skips `turns:` and `?transport=tcp` servers
        // (with a warning), so with only those, relay-only gathers nothing and ICE times out.
        let policy = if cfg.relay_only {
            RTCIceTransportPolicy::Relay
        } else {
            RTCIceTransportPolicy::All
        };
        let pc = PeerConnectionBuilder::new()
            .with_configuration(
                RTCConfigurationBuilder::new()
                    .with_ice_servers(ice_servers)
                    .with_ice_transport_policy(policy)
                    .build(),
            )
            .with_setting_engine(settings)
            .with_runtime(Arc::new(BufferedRuntime::new(
                cfg.udp_buffer,
                clock.clone(),
            )))
            .with_handler(Arc::new(Handler { tx: itx.clone() }))
            .with_udp_addrs(udp_addrs)
            .with_data_channel_send_buffer_limit(SEND_BUFFER_LIMIT)
            .build()
            .await
            .map_err(setup_err)?;
        let (accept_tx, accept_rx) = mpsc::channel(ACCEPT_QUEUE);
        let (event_tx, event_rx) = mpsc::channel(EVENT_QUEUE);
        let inner = Arc::new(Inner {
            pc: Arc::new(pc),
            max_message: cfg.max_message,
            half_close: cfg.half_close,
            early_candidates: tokio::sync::Mutex::new(Some(Vec::new())),
            accepted: tokio::sync::Mutex::new(accept_rx),
            dead: CancellationToken::new(),
            command: Mutex::new(None),
            clock,
            budget: Arc::new(Semaphore::new(PEER_SEND_BUDGET)),
            budget_size: AtomicUsize::new(PEER_SEND_BUDGET),
            sctp_up: tokio::sync::watch::Sender::new(false),
            flow: AtomicBool::new(false),
            pool: Arc::new(Pool::default()),
            last_peer_close: Arc::new(Mutex::new(None)),
            internal: itx,
            closing: AtomicBool::new(false),
        });
        tokio::spawn(run_events(
            Arc::downgrade(&inner),
            inner.dead.clone(),
            irx,
            event_tx,
            accept_tx,
        ));
        Ok((AsyncPeer { inner }, event_rx))
    }

    /// Offerer: open the "command" channel and return the offer SDP. Candidates follow as
    /// events.
    pub(crate) async fn create_offer(&self) -> Result<String, TransportError> {
        let pc = &self.inner.pc;
        let dc = pc
            .create_data_channel(COMMAND_LABEL, Some(reliable()))
            .await
            .map_err(|e| TransportError::OpenChannel {
                label: COMMAND_LABEL.into(),
                reason: e.to_string(),
            })?;
        spawn_drain(dc.clone(), &self.inner);
        *self.inner.command.lock().unwrap_or_else(|p| p.into_inner()) = Some(dc);
        let offer = pc.create_offer(None).await.map_err(setup_err)?;
        let sdp = offer.sdp.clone();
        pc.set_local_description(offer)
            .await
            .map_err(|e| TransportError::Signalling(format!("local offer rejected: {e}")))?;
        Ok(sdp)
    }

    /// Answerer: apply the peer's offer and return the answer SDP.
    pub(crate) async fn accept_offer(&self, sdp: &str) -> Result<String, TransportError> {
        let pc = &self.inner.pc;
        let offer = RTCSessionDescription::offer(sdp.to_string())
            .map_err(|e| TransportError::BadDescription(e.to_string()))?;
        pc.set_remote_description(offer)
            .await
            .map_err(|e| TransportError::BadDescription(e.to_string()))?;
        self.flush_early_candidates().await?;
        let answer = pc.create_answer(None).await.map_err(setup_err)?;
        let sdp = answer.sdp.clone();
        pc.set_local_description(answer)
            .await
            .map_err(|e| TransportError::Signalling(format!("local answer rejected: {e}")))?;
        Ok(sdp)
    }

    /// Offerer: apply the peer's answer.
    pub(crate) async fn accept_answer(&self, sdp: &str) -> Result<(), TransportError> {
        let answer = RTCSessionDescription::answer(sdp.to_string())
            .map_err(|e| TransportError::BadDescription(e.to_string()))?;
        self.inner
            .pc
            .set_remote_description(answer)
            .await
            .map_err(|e| TransportError::BadDescription(e.to_string()))?;
        self.flush_early_candidates().await
    }

    /// Add a candidate from the peer; queued until the remote description is set.
    pub(crate) async fn add_remote_candidate(&self, c: IceCandidate) -> Result<(), TransportError> {
        let init = RTCIceCandidateInit {
            candidate: c.candidate,
            sdp_mid: c.sdp_mid,
            sdp_mline_index: c.sdp_mline_index,
            username_fragment: c.username_fragment,
            ..Default::default()
        };
        let mut early = self.inner.early_candidates.lock().await;
        if let Some(queue) = early.as_mut() {
            if queue.len() >= MAX_EARLY_CANDIDATES {
                return Err(TransportError::BadCandidate(format!(
                    "more than {MAX_EARLY_CANDIDATES} candidates before the description"
                )));
            }
            queue.push(init);
            return Ok(());
        }
        drop(early);
        add_candidate(&*self.inner.pc, init).await
    }

    async fn flush_early_candidates(&self) -> Result<(), TransportError> {
        let queued = self.inner.early_candidates.lock().await.take();
        for init in queued.unwrap_or_default() {
            // One bad candidate must not stop the good ones.
            if let Err(e) = add_candidate(&*self.inner.pc, init).await {
                tracing::warn!("{e}");
            }
        }
        Ok(())
    }

    /// Open a reliable, ordered channel with this label; resolves once it is open.
    pub(crate) async fn open_stream(&self, label: &str) -> Result<Stream, TransportError> {
        let err = |reason: String| TransportError::OpenChannel {
            label: label.to_string(),
            reason,
        };
        if self.inner.dead.is_cancelled() {
            return Err(TransportError::Closed("the connection has ended".into()));
        }
        let mut up = self.inner.sctp_up.subscribe();
        tokio::select! {
            r = up.wait_for(|up| *up) => if r.is_err() {
                return Err(TransportError::Closed("the connection has ended".into()));
            },
            _ = self.inner.dead.cancelled() => {
                return Err(TransportError::Closed("the connection ended while opening a channel".into()));
            }
        }
        // The stack frees a closed channel's stream id before its SCTP stream is reset, and
        // hands out the lowest free id: a channel opened right after another one closed can
        // get an id whose stream still exists, and fails at once ("there already exists a
        // stream with identifier"). Once the reset completes (a round trip) the id is usable,
        // so a failed open is retried a few times, a little later each time.
        // A poisoned lock still holds a whole `Option<Instant>`: nothing to repair.
        let since_close = self
            .inner
            .last_peer_close
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map(|t| t.elapsed());
        if let Some(since) = since_close
            && since < OPEN_SETTLE
        {
            tokio::time::sleep(OPEN_SETTLE - since).await;
        }
        let mut delay = OPEN_RETRY_FIRST;
        for attempt in 1..=OPEN_ATTEMPTS {
            if self.inner.dead.is_cancelled() {
                return Err(TransportError::Closed(
                    "the connection ended while opening a channel".into(),
                ));
            }
            let started = Instant::now();
            let dc = self
                .inner
                .pc
                .create_data_channel(label, Some(reliable()))
                .await
                .map_err(|e| err(e.to_string()))?;
            // Messages taken off the channel while waiting for it to open (none are expected:
            // the peer sends only once it has acknowledged the open). Counted, so that the
            // channel's reader knows what the stack has delivered (see `read_pump`).
            let mut early: u32 = 0;
            let outcome = async {
                let mut check = tokio::time::interval_at(
                    tokio::time::Instant::now() + OPEN_WAIT_CHECK,
                    OPEN_WAIT_CHECK,
                );
                loop {
                    let ev = tokio::select! {
                        ev = dc.poll() => ev,
                        _ = self.inner.dead.cancelled() => return Ok(None),
                        _ = check.tick() => {
                            // Data queued in the stack delays the open: wait longer then.
                            let waited = started.elapsed();
                            let idle = self.inner.budget.available_permits()
                                >= self.inner.budget_size.load(Ordering::Relaxed);
                            if waited >= OPEN_WAIT_MAX || (waited >= OPEN_WAIT && idle) {
                                return Err(waited);
                            }
                            continue;
                        }
                    };
                    match ev {
                        Some(DataChannelEvent::OnOpen) => return Ok(Some(true)),
                        Some(DataChannelEvent::OnClose) | None => return Ok(Some(false)),
                        Some(DataChannelEvent::OnMessage(_)) => {
                            early = early.wrapping_add(1);
                            tracing::warn!(
                                "channel {label:?}: a message before it opened, dropped"
                            );
                        }
                        Some(_) => {}
                    }
                }
            }
            .await;
            let opened = match outcome {
                Ok(Some(opened)) => opened,
                Ok(None) => {
                    return Err(TransportError::Closed(
                        "the connection ended while opening a channel".into(),
                    ));
                }
                Err(_) => {
                    // The stack lost track of the open (its acknowledgement went astray):
                    // give it up, so the peer's side of it ends too, and try again.
                    tracing::debug!(
                        "channel {label:?} did not open in {OPEN_WAIT:?}; giving it up"
                    );
                    let _ = dc.close().await;
                    false
                }
            };
            if opened {
                let (stream, ended) = attach(&self.inner, dc, true, early);
                if !self.peer_closed_since(started.checked_sub(OPEN_RISK).unwrap_or(started)) {
                    return Ok(stream);
                }
                tokio::select! {
                    _ = tokio::time::sleep(OPEN_PROBATION) => return Ok(stream),
                    _ = ended.cancelled() => {}
                }
                // Closed before the application saw it: nothing was sent on it.
                tracing::debug!(
                    "channel {label:?} closed right after opening (attempt {attempt}); retrying"
                );
                drop(stream);
            } else {
                // Not closed: the failed attempt never got a stream of its own, and closing
                // it would reset the stream id the next attempt may be given.
                tracing::debug!("channel {label:?} did not open (attempt {attempt}); retrying");
                drop(dc);
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(OPEN_RETRY_MAX);
        }
        Err(err("the peer refused or closed the channel".into()))
    }

    /// Whether the peer closed one of our channels at or after `t`.
    fn peer_closed_since(&self, t: Instant) -> bool {
        // A poisoned lock still holds a whole `Option<Instant>`: nothing to repair.
        self.inner
            .last_peer_close
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|closed| closed >= t)
    }

    /// The next channel the peer opened (other than "command"), with its label. `None` once
    /// the connection has ended.
    pub(crate) async fn accept_stream(&self) -> Option<(String, Stream)> {
        let mut rx = self.inner.accepted.lock().await;
        tokio::select! {
            s = rx.recv() => s,
            _ = self.inner.dead.cancelled() => None,
        }
    }

    /// Use per-stream flow control (the peer announced it). Set before the first stream.
    pub(crate) fn set_flow_control(&self, on: bool) {
        self.inner.flow.store(on, Ordering::SeqCst);
    }

    /// Limit the window growth all streams of this connection share (see `flow::Pool`).
    pub(crate) fn set_window_pool(&self, bytes: u64) {
        self.inner.pool.set_limit(bytes);
    }

    /// Lower the connection's send budget to `bytes` (at least one message). Call before the
    /// first stream.
    pub(crate) fn set_send_budget(&self, bytes: usize) {
        let bytes = bytes.clamp(self.inner.max_message, PEER_SEND_BUDGET);
        let before = self.inner.budget_size.swap(bytes, Ordering::SeqCst);
        if bytes < before {
            self.inner.budget.forget_permits(before - bytes);
        } else {
            self.inner.budget.add_permits(bytes - before);
        }
    }

    /// Close the connection; every stream ends. The peer hears of it at once: the "command"
    /// channel is closed first, and a peer that sees it close knows we are leaving (closing
    /// the connection alone, it would find out only when ICE consent fails, seconds later,
    /// and could not tell a deliberate close from a lost network). Every yakk and the
    /// original program keep that channel open for the connection's lifetime.
    pub(crate) async fn close(&self) {
        self.inner.closing.store(true, Ordering::SeqCst);
        let take = || {
            self.inner
                .command
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
        };
        let mut command = take();
        // Right after connecting, the peer's "command" channel may not have reached us yet.
        let until = Instant::now() + COMMAND_CLOSE_GRACE * 3;
        while command.is_none() && *self.inner.sctp_up.borrow() && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(5)).await;
            command = take();
        }
        tracing::debug!(
            command = command.is_some(),
            "closing the connection: telling the peer"
        );
        if let Some(dc) = command {
            let _ = dc.close().await;
            // The stream reset goes out with the stack's next pass.
            tokio::time::sleep(COMMAND_CLOSE_GRACE).await;
        }
        let _ = self.inner.pc.close().await;
        self.inner.dead.cancel();
    }
}

/// How long `close` lets the "command" channel's reset leave before the connection closes.
const COMMAND_CLOSE_GRACE: Duration = Duration::from_millis(100);

/// Candidates accepted before the remote description, against a flooding peer.
const MAX_EARLY_CANDIDATES: usize = 256;

async fn add_candidate(
    pc: &dyn PeerConnection,
    init: RTCIceCandidateInit,
) -> Result<(), TransportError> {
    let text = init.candidate.clone();
    pc.add_ice_candidate(init)
        .await
        .map_err(|e| TransportError::BadCandidate(format!("{text:?}: {e}")))
}

fn reliable() -> RTCDataChannelInit {
    RTCDataChannelInit {
        ordered: true,
        max_packet_life_time: None,
        max_retransmits: None,
        ..Default::default()
    }
}

/// Drain a channel nobody reads (the "command" channel) so the stack never blocks on it;
/// its opening says the association is up, and its closing by the peer that the peer is
/// leaving (see `AsyncPeer::close`).
fn spawn_drain(dc: Arc<dyn DataChannel>, inner: &Arc<Inner>) {
    let (dead, sctp_up) = (inner.dead.clone(), inner.sctp_up.clone());
    let inner = Arc::downgrade(inner);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                ev = dc.poll() => match ev {
                    None => break,
                    Some(DataChannelEvent::OnOpen) => {
                        sctp_up.send_replace(true);
                    }
                    Some(DataChannelEvent::OnClose) => {
                        if let Some(inner) = inner.upgrade()
                            && !inner.closing.load(Ordering::SeqCst)
                        {
                            let _ = inner.internal.send(Internal::PeerClosed);
                        }
                        break;
                    }
                    Some(_) => {}
                },
                _ = dead.cancelled() => break,
            }
        }
    });
}

/// The peer's own task: turns the stack's callbacks into events, streams and shutdown.
async fn run_events(
    inner: Weak<Inner>,
    dead: CancellationToken,
    mut rx: mpsc::UnboundedReceiver<Internal>,
    events: mpsc::Sender<PeerEvent>,
    accept: mpsc::Sender<(String, Stream)>,
) {
    let mut connected = false;
    let mut reason: Option<String> = None;
    loop {
        let msg = tokio::select! {
            m = rx.recv() => m,
            _ = dead.cancelled() => None,
        };
        let Some(msg) = msg else { break };
        match msg {
            Internal::Candidate(init) => {
                let c = IceCandidate {
                    candidate: init.candidate,
                    sdp_mid: init.sdp_mid,
                    sdp_mline_index: init.sdp_mline_index,
                    username_fragment: init.username_fragment,
                };
                let _ = events.send(PeerEvent::LocalCandidate(c)).await;
            }
            Internal::State(state) => match state {
                RTCPeerConnectionState::Connected if !connected => {
                    connected = true;
                    let Some(inner) = inner.upgrade() else { break };
                    inner.clock.quick_for(SETUP_QUICK_AFTER_CONNECTED);
                    let path = path_info(&*inner.pc).await;
                    drop(inner);
                    let _ = events.send(PeerEvent::Connected(path)).await;
                }
                RTCPeerConnectionState::Disconnected => {
                    reason = Some("the peer stopped answering (ICE disconnected)".into());
                    break;
                }
                RTCPeerConnectionState::Failed => {
                    reason = Some("the connection to the peer failed".into());
                    break;
                }
                RTCPeerConnectionState::Closed => {
                    reason = Some("the connection was closed".into());
                    break;
                }
                _ => {}
            },
            Internal::PeerClosed => {
                reason = Some("the peer closed the session".into());
                break;
            }
            Internal::Channel(dc) => {
                let Some(strong) = inner.upgrade() else { break };
                // The peer opened a channel: the association is up.
                strong.sctp_up.send_replace(true);
                let accept = accept.clone();
                tokio::spawn(async move {
                    let label = dc.label().await.unwrap_or_default();
                    if label == COMMAND_LABEL {
                        spawn_drain(dc.clone(), &strong);
                        *strong.command.lock().unwrap_or_else(|p| p.into_inner()) = Some(dc);
                        return;
                    }
                    let (stream, _) = attach(&strong, dc, false, 0);
                    let dead = strong.dead.clone();
                    drop(strong);
                    tokio::select! {
                        _ = accept.send((label, stream)) => {}
                        _ = dead.cancelled() => {}
                    }
                });
            }
        }
    }
    dead.cancel();
    let why = reason.unwrap_or_else(|| "the connection was closed".into());
    let _ = events.try_send(PeerEvent::Disconnected(why));
}

/// The selected candidate pair, from the stats report.
async fn path_info(pc: &dyn PeerConnection) -> PathInfo {
    selected_path(&pc.get_stats(Instant::now(), StatsSelector::None).await)
}

/// Wire an open data channel of this connection to a new `Stream` (see [`channel::attach`]).
fn attach(
    inner: &Inner,
    dc: Arc<dyn DataChannel>,
    opener: bool,
    seen: u32,
) -> (Stream, CancellationToken) {
    let cx = channel::ChannelContext {
        max_message: inner.max_message,
        half_close: inner.half_close,
        flow: inner.flow.load(Ordering::SeqCst),
        pool: inner.pool.clone(),
        dead: inner.dead.clone(),
        last_peer_close: inner.last_peer_close.clone(),
        pc: Arc::downgrade(&inner.pc),
        budget: inner.budget.clone(),
        budget_cap: inner.budget_size.load(Ordering::SeqCst),
    };
    channel::attach(cx, dc, opener, seen)
}
