//! One WebRTC peer connection driven by the `webrtc` crate's async layer.
//!
//! Owns the translation between yakk's types and WebRTC's: SDP and candidates in and out,
//! connection state to [`PeerEvent`]s, and each data channel to a [`Stream`] through two pump
//! tasks (one per direction, so a blocked send never stops the channel from being drained,
//! which would deadlock two peers sending to each other at once).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use webrtc::data_channel::{DataChannel, DataChannelEvent, RTCDataChannelInit};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceCandidateInit, RTCIceServer, RTCIceTransportPolicy, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, RTCSessionDescription, RTCStatsReportEntry, SettingEngineBuilder,
    StatsSelector,
};

use crate::flow::{self, Admit, Flow, Pool};
use crate::netbuf::{BufferedRuntime, SetupClock};
use crate::stats::selected_path;
use crate::stream::{Outbound, Stream, StreamEnds, coalesce};
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
/// How often a channel holding budget checks what the stack has released.
const BUDGET_POLL: Duration = Duration::from_millis(2);
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
        let since_close = self
            .inner
            .last_peer_close
            .lock()
            .expect("not poisoned")
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
        self.inner
            .last_peer_close
            .lock()
            .expect("not poisoned")
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

/// How long a side waits for the peer's part of the close handshake once both directions
/// have ended (see `ChannelState::both_done`).
const CLOSE_HANDSHAKE_WAIT: Duration = Duration::from_secs(10);
const CLOSE_WAIT_STEP: Duration = Duration::from_millis(5);
/// How long a closing channel waits for the peer to acknowledge more of what was sent before
/// it closes anyway (a peer that stops reading for good does not keep the channel forever).
const CLOSE_STALL: Duration = Duration::from_secs(60);
/// After the peer closed a channel, how long its reader waits for the next of the messages
/// the stack still owes it (they come as soon as every reader on the connection keeps up).
const PEER_CLOSE_STALL: Duration = Duration::from_secs(60);

/// Per-channel state shared by its two pumps.
struct ChannelState {
    dc: Arc<dyn DataChannel>,
    half_close: bool,
    /// We sent the end-of-stream marker.
    local_done: AtomicBool,
    /// The peer sent the end-of-stream marker.
    remote_done: AtomicBool,
    /// Cancelled when the channel is finished (closed by either side or the connection died).
    ended: CancellationToken,
    /// Per-stream flow control, when both sides speak it.
    flow: Option<Arc<Flow>>,
    /// Set once the channel is closed; held while a grant is sent, so none follows the close.
    closed: tokio::sync::Mutex<bool>,
    /// We opened the channel (rather than accepted it from the peer).
    opener: bool,
    /// The peer sent its closing marker: it sends nothing more (flow control only).
    peer_closing: AtomicBool,
    /// `both_done` ran.
    finishing: AtomicBool,
    /// The connection's `last_peer_close`.
    last_peer_close: Arc<Mutex<Option<Instant>>>,
    /// The peer connection, for the stack's count of the channel's messages.
    pc: Weak<dyn PeerConnection>,
}

impl ChannelState {
    /// Close once what was sent has been delivered: closing resets the SCTP stream, which
    /// would drop data still in flight. A slow reader is waited for as long as it makes
    /// progress; one that stops acknowledging for `CLOSE_STALL` does not keep the channel.
    async fn close(&self) {
        let mut least = usize::MAX;
        let mut progress = Instant::now();
        while !self.ended.is_cancelled() {
            let outstanding = self.dc.outstanding_bytes().await.unwrap_or(0);
            if outstanding == 0 {
                break;
            }
            if outstanding < least {
                least = outstanding;
                progress = Instant::now();
            } else if progress.elapsed() >= CLOSE_STALL {
                tracing::warn!(
                    "closing a channel whose peer acknowledged nothing for {CLOSE_STALL:?}: \
                     {outstanding} bytes not delivered"
                );
                break;
            }
            tokio::time::sleep(CLOSE_WAIT_STEP).await;
        }
        self.reset().await;
    }

    /// Both directions have ended: decide who closes. Returns `true` if the channel was
    /// closed here, `false` if the reader must keep draining until the close comes.
    ///
    /// Without flow control both sides close, as before. With it, the side that opened the
    /// channel sends the closing marker `"c"` (nothing follows it) and waits; the side that
    /// accepted it closes once it has that marker. Each side closes by itself after
    /// `CLOSE_HANDSHAKE_WAIT` if the other does not play along.
    ///
    /// Why: a message that reaches a channel after it was closed is never collected, and the
    /// stack then never completes that SCTP stream's reset, so the stream id stays taken.
    /// Grants can follow an end-of-stream marker (for the direction still open), so "both
    /// markers seen" is not enough; the closing marker says the sender is silent from then
    /// on. And the stack frees the id of a channel it closes itself before the SCTP reset
    /// has completed, while a channel the peer closes frees its id only once its stream is
    /// gone: so the opener, which picks the ids, never closes, and a channel opened right
    /// after another one ended does not land on a stream id still being reset.
    async fn both_done(self: &Arc<Self>) -> bool {
        if self.finishing.swap(true, Ordering::SeqCst) {
            return false;
        }
        if self.flow.is_none() {
            self.close().await;
            return true;
        }
        if !self.opener && self.peer_closing.load(Ordering::SeqCst) {
            self.close().await;
            return true;
        }
        if self.opener {
            let closed = self.closed.lock().await;
            if !*closed {
                let _ = self.dc.send_text("c").await;
            }
        }
        let st = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(CLOSE_HANDSHAKE_WAIT) => st.close().await,
                _ = st.ended.cancelled() => {}
            }
        });
        false
    }

    /// Close now. Nothing is sent on the channel afterwards: a message sent on a closed
    /// channel can leave its SCTP stream behind, and the next channel given that stream id
    /// then fails to open.
    async fn reset(&self) {
        let mut closed = self.closed.lock().await;
        if !*closed {
            *closed = true;
            let _ = self.dc.close().await;
        }
        self.ended.cancel();
    }
}

/// Wire an open data channel to a new `Stream`; the token is cancelled when the channel is
/// finished. `seen`: messages already taken off the channel (while it was opening).
fn attach(
    inner: &Inner,
    dc: Arc<dyn DataChannel>,
    opener: bool,
    seen: u32,
) -> (Stream, CancellationToken) {
    let flow = (inner.half_close
        && inner.flow.load(Ordering::SeqCst)
        && inner.max_message as u64 <= flow::INITIAL_WINDOW)
        .then(|| Flow::new(inner.pool.clone()));
    let (stream, ends) = Stream::pair(inner.max_message, flow.clone());
    let StreamEnds { to_app, from_app } = ends;
    let state = Arc::new(ChannelState {
        dc,
        half_close: inner.half_close,
        local_done: AtomicBool::new(false),
        remote_done: AtomicBool::new(false),
        ended: inner.dead.child_token(),
        flow,
        closed: tokio::sync::Mutex::new(false),
        opener,
        peer_closing: AtomicBool::new(false),
        finishing: AtomicBool::new(false),
        last_peer_close: inner.last_peer_close.clone(),
        pc: Arc::downgrade(&inner.pc),
    });
    let ended = state.ended.clone();
    tokio::spawn(read_pump(state.clone(), to_app, seen));
    tokio::spawn(write_pump(
        state,
        from_app,
        inner.max_message,
        Held {
            budget: inner.budget.clone(),
            cap: inner.budget_size.load(Ordering::SeqCst),
            bytes: 0,
        },
    ));
    (stream, ended)
}

/// Channel → application. Ends on close, on the peer's marker (EOF) or with the connection.
///
/// The peer's close does not end the stream at once: the stack can hand us the close before
/// the channel's last messages (see `messages_delivered`), so after the close the pump reads on
/// until it has taken every message the stack received for the channel. `seen` counts the
/// messages taken off the channel (wrapping, as the stack's count does).
async fn read_pump(st: Arc<ChannelState>, to_app: mpsc::Sender<bytes::Bytes>, mut seen: u32) {
    let mut to_app = Some(to_app);
    // After the peer's close: how many messages the stack received for the channel in all.
    let mut closed_at: Option<u32> = None;
    loop {
        if let Some(total) = closed_at
            && !more_to_come(total, seen)
        {
            break;
        }
        let ev = tokio::select! {
            ev = st.dc.poll() => ev,
            _ = st.ended.cancelled() => break,
            _ = tokio::time::sleep(PEER_CLOSE_STALL), if closed_at.is_some() => {
                tracing::warn!(
                    "a closed channel's last messages did not arrive within {PEER_CLOSE_STALL:?}"
                );
                break;
            }
        };
        match ev {
            None => break,
            Some(DataChannelEvent::OnClose) => {
                if st.opener {
                    *st.last_peer_close.lock().expect("not poisoned") = Some(Instant::now());
                }
                // With the peer's end-of-stream marker taken, nothing the application wants
                // can follow; and after our own close we want nothing more.
                if st.remote_done.load(Ordering::SeqCst) || *st.closed.lock().await {
                    break;
                }
                match messages_delivered(&st).await {
                    Some(total) if more_to_come(total, seen) => {
                        tracing::debug!(
                            "the peer closed a channel with {} message(s) still on their way",
                            total.wrapping_sub(seen)
                        );
                        closed_at = Some(total);
                    }
                    _ => break,
                }
            }
            Some(DataChannelEvent::OnMessage(m)) => {
                seen = seen.wrapping_add(1);
                if m.is_string && st.half_close && !m.data.is_empty() {
                    // A control message: a window grant, the closing marker, or something
                    // newer we ignore.
                    match (&st.flow, flow::parse_grant(&m.data)) {
                        (Some(f), Some(limit)) => f.on_grant(limit),
                        (Some(_), None) if &m.data[..] == b"c" => {
                            st.peer_closing.store(true, Ordering::SeqCst);
                            // `finishing`: both directions have ended (`both_done` ran).
                            if !st.opener && st.finishing.load(Ordering::SeqCst) {
                                st.close().await;
                                break;
                            }
                        }
                        _ => tracing::debug!("ignoring a control message on a channel"),
                    }
                    continue;
                }
                if m.is_string && st.half_close {
                    to_app = None; // EOF for the reader
                    st.remote_done.store(true, Ordering::SeqCst);
                    if st.local_done.load(Ordering::SeqCst) && st.both_done().await {
                        break;
                    }
                    continue;
                }
                if let Some(f) = &st.flow
                    && let Admit::Overrun { received, granted } = f.admit(m.data.len())
                {
                    tracing::warn!(
                        "the peer sent {received} bytes on a stream where it was allowed \
                         {granted}: resetting the stream"
                    );
                    st.reset().await;
                    break;
                }
                let Some(tx) = &to_app else { continue };
                if m.data.is_empty() {
                    continue;
                }
                if st.flow.is_some() {
                    // Within the window the queue has room for every message: never wait
                    // here, or the stack would stop draining the other channels too.
                    match tx.try_send(m.data.freeze()) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Closed(_)) => to_app = None,
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            tracing::warn!("a stream's inbound queue overflowed: resetting it");
                            st.reset().await;
                            break;
                        }
                    }
                    continue;
                }
                tokio::select! {
                    r = tx.send(m.data.freeze()) => if r.is_err() {
                        // The application dropped the stream: keep draining until closed.
                        to_app = None;
                    },
                    _ = st.ended.cancelled() => break,
                }
            }
            Some(_) => {}
        }
    }
    st.ended.cancel();
}

/// Whether a stack that received `total` messages for a channel has more to hand over to a
/// reader that took `seen` (both counts wrap).
fn more_to_come(total: u32, seen: u32) -> bool {
    (total.wrapping_sub(seen) as i32) > 0
}

/// How many messages the stack received for this channel in all, from its statistics; `None`
/// when they do not say (the connection is gone).
///
/// Why this is needed: the `webrtc` crate's driver hands out the stack's events (a channel's
/// close among them) before the messages the stack has read, and while any reader on the
/// connection is behind it leaves those messages in the stack and hands out events all the
/// same. So when the peer closes a channel right after its last bytes (yakk/1 closes a
/// channel as its end of stream; a yakk/2 peer that aborts closes without a marker), the
/// close can reach us ahead of the last messages. The stack counts every message it delivers
/// to the channel before it learns of the close, so this count, read after the close, is final.
async fn messages_delivered(st: &ChannelState) -> Option<u32> {
    let pc = st.pc.upgrade()?;
    let report = pc.get_stats(Instant::now(), StatsSelector::None).await;
    let key = format!("RTCDataChannel_{}", st.dc.id());
    match report.get(&key) {
        Some(RTCStatsReportEntry::DataChannel(s)) => Some(s.messages_received),
        _ => {
            tracing::warn!("no statistics for a closed channel: its last messages may be lost");
            None
        }
    }
}

/// A channel's share of the connection's send budget: bytes it handed to the stack that
/// the stack has not released yet.
struct Held {
    budget: Arc<Semaphore>,
    /// The budget's size: no take asks for more.
    cap: usize,
    bytes: usize,
}

impl Held {
    /// Give back what the stack no longer holds for this channel.
    async fn release(&mut self, st: &ChannelState) {
        if self.bytes == 0 {
            return;
        }
        let outstanding = st.dc.outstanding_bytes().await.unwrap_or(0);
        if outstanding < self.bytes {
            self.budget.add_permits(self.bytes - outstanding);
            self.bytes = outstanding;
        }
    }

    /// Take `n` bytes of budget, giving back our own released bytes while waiting.
    /// `false` if the channel ended first.
    async fn take(&mut self, st: &ChannelState, n: usize) -> bool {
        let n = n.min(self.cap);
        loop {
            self.release(st).await;
            tokio::select! {
                p = self.budget.acquire_many(n as u32) => {
                    let Ok(p) = p else { return false };
                    p.forget();
                    self.bytes += n;
                    return true;
                }
                _ = tokio::time::sleep(BUDGET_POLL), if self.bytes > 0 => {}
                _ = st.ended.cancelled() => return false,
            }
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // The channel is gone: what it still held is discarded with it.
        self.budget.add_permits(self.bytes);
    }
}

/// Resolves when this stream owes the peer a grant (never without flow control).
async fn grant_due(st: &ChannelState) {
    match &st.flow {
        Some(f) => f.grant_due.notified().await,
        None => std::future::pending().await,
    }
}

/// Sends the grant that is due, if any: none once the peer has finished sending or the
/// channel is closed. `false` if the channel is gone.
async fn send_grant(st: &ChannelState) -> bool {
    let closed = st.closed.lock().await;
    if *closed || st.remote_done.load(Ordering::SeqCst) {
        return !*closed;
    }
    let Some(limit) = st.flow.as_ref().and_then(|f| f.next_grant()) else {
        return true;
    };
    let text = flow::grant_text(limit);
    tokio::select! {
        r = st.dc.send_text(&text) => r.is_ok(),
        _ = st.ended.cancelled() => false,
    }
}

/// Waits until the peer's window has room, sending our own grants meanwhile (both sides
/// may be waiting on each other) and giving back the send budget the stack has released
/// (a stream waiting here must not keep the others' budget). Returns how many of `len`
/// bytes may go now (at least one), or `None` if the channel ended.
async fn wait_credit(st: &ChannelState, held: &mut Held, len: usize) -> Option<usize> {
    let Some(f) = &st.flow else { return Some(len) };
    loop {
        let n = f.room(len);
        if n > 0 {
            return Some(n);
        }
        tokio::select! {
            _ = f.credit.notified() => {}
            _ = f.grant_due.notified() => if !send_grant(st).await {
                return None;
            },
            _ = tokio::time::sleep(BUDGET_POLL), if held.bytes > 0 => {
                held.release(st).await;
            }
            _ = st.ended.cancelled() => return None,
        }
    }
}

/// Application → channel. Coalesces small queued writes up to `max_message`, within the
/// connection's send budget and the peer's window.
async fn write_pump(
    st: Arc<ChannelState>,
    mut from_app: mpsc::Receiver<Outbound>,
    max: usize,
    mut held: Held,
) {
    let mut carry: Option<Outbound> = None;
    loop {
        let item = match carry.take() {
            Some(item) => Some(item),
            None => loop {
                tokio::select! {
                    item = from_app.recv() => break item,
                    _ = grant_due(&st) => if !send_grant(&st).await {
                        return;
                    },
                    _ = tokio::time::sleep(BUDGET_POLL), if held.bytes > 0 => {
                        held.release(&st).await;
                    }
                    _ = st.ended.cancelled() => return,
                }
            },
        };
        match item {
            None => {
                // The stream was dropped: everything it wrote is queued. Once both
                // directions ended, closing is `both_done`'s business; else close now.
                if !st.finishing.load(Ordering::SeqCst) {
                    st.close().await;
                }
                break;
            }
            Some(Outbound::Data(mut msg)) => {
                carry = coalesce(&mut msg, &mut from_app, max);
                while !msg.is_empty() {
                    let Some(n) = wait_credit(&st, &mut held, msg.len()).await else {
                        return;
                    };
                    let part = msg.split_to(n);
                    if !held.take(&st, n).await {
                        return;
                    }
                    let sent = tokio::select! {
                        r = st.dc.send(part) => r.is_ok(),
                        _ = st.ended.cancelled() => false,
                    };
                    if !sent {
                        return;
                    }
                    if let Some(f) = &st.flow {
                        f.on_sent(n);
                    }
                }
            }
            Some(Outbound::Finish) => {
                if !st.half_close {
                    st.close().await;
                    break;
                }
                let sent = tokio::select! {
                    r = st.dc.send_text("") => r.is_ok(),
                    _ = st.ended.cancelled() => false,
                };
                if !sent {
                    break;
                }
                st.local_done.store(true, Ordering::SeqCst);
                if st.remote_done.load(Ordering::SeqCst) {
                    st.both_done().await;
                    break;
                }
            }
        }
    }
    // Dropping `from_app` makes further writes fail with BrokenPipe.
}
