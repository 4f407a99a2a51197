//! [`Peer`]: one WebRTC peer connection, driven by the `webrtc` crate's async layer.
//!
//! Owns the translation between yakk's types and WebRTC's: SDP and candidates in and out
//! (here), connection state to [`PeerEvent`]s (`events.rs`), and opening (`open.rs`) and
//! accepting data channels, each wired to a [`Channel`] by `pump/`. The send budget the
//! channels share, and small bursts toward the browser page, are in `budget.rs`.

mod budget;
mod events;
mod open;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use webrtc::data_channel::{DataChannel, RTCDataChannelInit};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, RTCConfigurationBuilder, RTCIceCandidateInit,
    RTCIceServer, RTCIceTransportPolicy, RTCSessionDescription, SettingEngineBuilder,
};

use crate::channel::Channel;
use crate::flow::Pool;
use crate::netbuf::{BufferedRuntime, SetupClock};
use crate::pump;
use crate::turn_stream::{self, Bridge, StreamServer};
use crate::{IceCandidate, PeerEvent, TransportConfig, TransportError};
use events::{Handler, Internal, run_events, spawn_drain};

/// The label of the channel the offerer opens first (as yakk/1 peers do).
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
/// Data channels opened by the peer, waiting for `accept_channel`.
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
/// How often ICE checks its candidate pairs while connecting (the stack's default is 200 ms),
/// and how many unanswered checks fail a pair: together the same 1.4 s as the defaults. A
/// check the peer drops costs one interval: its agent drops a check that arrives before our
/// description (it cannot tell whom it is from yet), which with lanes happens to a few of them
/// on every long path.
const ICE_CHECK_INTERVAL: Duration = Duration::from_millis(50);
const ICE_CHECKS: u16 = 28;
/// How long after its checks start ICE waits before it may choose a relayed pair.
const RELAY_ACCEPTANCE_WAIT: Duration = Duration::from_millis(600);

/// A WebRTC peer connection that hands out byte streams. Cheap to clone; all clones are the
/// same connection. The connection closes when the last clone is dropped or on [`Peer::close`].
#[derive(Clone)]
pub struct Peer {
    inner: Arc<Inner>,
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync + 'static>() {}
    const fn assert_send<T: Send + 'static>() {}
    assert_send_sync::<Peer>();
    assert_send::<Channel>();
};

/// Largest accepted `max_message`.
const MAX_MESSAGE_LIMIT: usize = 256 * 1024;

struct Inner {
    pc: Arc<dyn PeerConnection>,
    max_message: usize,
    half_close: bool,
    /// Remote candidates received before the remote description; `None` once it is set.
    early_candidates: tokio::sync::Mutex<Option<Vec<RTCIceCandidateInit>>>,
    accepted: tokio::sync::Mutex<mpsc::Receiver<(String, Channel)>>,
    /// Cancelled when the connection is gone: every pump stops.
    dead: CancellationToken,
    /// The "command" channel, kept open for the connection's lifetime.
    command: Mutex<Option<Arc<dyn DataChannel>>>,
    /// Becomes true once the "command" channel has closed both ways: after our `close`, the
    /// peer answered its reset, so it has heard that we are leaving.
    command_closed: tokio::sync::watch::Sender<bool>,
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
    /// With flow control, the opener of a channel closes it (`set_opener_closes`).
    opener_closes: AtomicBool,
    /// The peer asked for small bursts: the send budget follows the path's round trip.
    small_bursts: AtomicBool,
    /// Window growth shared by this connection's streams.
    pool: Arc<Pool>,
    /// When the peer last closed a channel we opened (see `open::REUSE_GUARD`).
    last_peer_close: Arc<Mutex<Option<Instant>>>,
    /// The selected path's round-trip time in microseconds, once known (0 before).
    rtt_us: AtomicU64,
    /// To the connection's own task (`run_events`), for what the stack's callbacks do not say.
    internal: mpsc::UnboundedSender<Internal>,
    /// Set once we close the connection ourselves (see `Peer::close`).
    closing: AtomicBool,
    /// The loopback bridges of TURN servers over TCP or TLS, open as long as the connection.
    bridges: Vec<Bridge>,
    /// Our channels, told apart from the peer's (see `OwnOpens`).
    own: open::OwnOpens,
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

fn setup_err(e: impl std::fmt::Display) -> TransportError {
    TransportError::Setup(e.to_string())
}

impl Peer {
    /// Create a peer connection; gathering starts with the first description. Returns the
    /// peer and its event stream; keep draining the events (they carry the local candidates,
    /// which must reach the other side).
    pub async fn new(
        cfg: TransportConfig,
    ) -> Result<(Peer, mpsc::Receiver<PeerEvent>), TransportError> {
        if cfg.max_message == 0 || cfg.max_message > MAX_MESSAGE_LIMIT {
            return Err(TransportError::Config(format!(
                "max_message must be between 1 and {MAX_MESSAGE_LIMIT} bytes, not {}",
                cfg.max_message
            )));
        }
        let cfg = &cfg;
        // TURN over TCP or TLS goes through a loopback bridge of ours (`turn_stream.rs`):
        // the stack allocates over UDP only. Only when UDP to the relay gets no answer.
        let mut bridges = Vec::new();
        let mut ice_servers = Vec::new();
        let urls = cfg.ice_servers.iter().flat_map(|s| s.urls.iter());
        // `udp_blocked`: the relay did not answer over UDP, so this side's network most likely
        // lets no UDP out, and only a relay over TCP or TLS can carry it.
        let (bridge, udp_blocked) = match turn_stream::relay_to_probe(urls.clone()) {
            Some((host, port)) => {
                let blocked = !turn_stream::udp_answers(&host, port).await;
                (blocked, blocked)
            }
            // Bridge when there is something to bridge (and no relay over UDP to ask).
            None => (
                urls.clone().any(|u| StreamServer::of_url(u).is_some()),
                false,
            ),
        };
        for s in &cfg.ice_servers {
            let mut urls = Vec::new();
            for url in &s.urls {
                match StreamServer::of_url(url) {
                    Some(_) if !bridge => {}
                    Some(server) => match Bridge::start(server).await {
                        Ok(bridge) => {
                            urls.push(bridge.url());
                            bridges.push(bridge);
                        }
                        Err(e) => tracing::warn!("TURN over TCP unavailable: {e}"),
                    },
                    None => urls.push(url.clone()),
                }
            }
            ice_servers.push(RTCIceServer {
                urls,
                username: s.username.clone().unwrap_or_default(),
                credential: s.credential.clone().unwrap_or_default(),
            });
        }
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
                    (cfg.max_message.max(crate::V2_MAX_MESSAGE)) as u32,
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
            // A relayed pair may be chosen this long after the checks start (the default,
            // 2 s, made every relayed setup take 2.1 s). Direct pairs that can work have
            // succeeded by then (in the NAT lab, 0.1-0.3 s after the joiner starts) and,
            // being of higher priority, win; a relay chosen sooner could have been
            // preferred over a direct path still being checked.
            // Without UDP there is no direct pair to wait for: a relayed one is taken as soon
            // as it works.
            .with_relay_acceptance_min_wait(Some(if udp_blocked {
                Duration::ZERO
            } else {
                RELAY_ACCEPTANCE_WAIT
            }))
            // No multicast DNS: it binds 224.0.0.251:5353 for every peer connection (even
            // with --ice-ip 127.0.0.1) and answers or queries the local network; yakk's
            // candidates carry plain addresses, and a peer's `.local` names are dropped.
            .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
            .with_ice_timeouts(
                Some(ICE_DISCONNECTED),
                Some(ICE_FAILED),
                Some(ICE_KEEPALIVE),
            )
            .with_ice_connection_attempts(Some(ICE_CHECK_INTERVAL), Some(ICE_CHECKS))
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
        // stack allocates over UDP only: `turns:` and `?transport=tcp` servers reach it as
        // our loopback bridges (above).
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
            command_closed: tokio::sync::watch::Sender::new(false),
            clock,
            budget: Arc::new(Semaphore::new(PEER_SEND_BUDGET)),
            budget_size: AtomicUsize::new(PEER_SEND_BUDGET),
            sctp_up: tokio::sync::watch::Sender::new(false),
            flow: AtomicBool::new(false),
            opener_closes: AtomicBool::new(false),
            small_bursts: AtomicBool::new(false),
            pool: Arc::new(Pool::default()),
            last_peer_close: Arc::new(Mutex::new(None)),
            rtt_us: AtomicU64::new(0),
            internal: itx,
            closing: AtomicBool::new(false),
            bridges,
            own: open::OwnOpens::default(),
        });
        tokio::spawn(run_events(
            Arc::downgrade(&inner),
            inner.dead.clone(),
            irx,
            event_tx,
            accept_tx,
        ));
        Ok((Peer { inner }, event_rx))
    }

    /// Offerer: open the "command" channel (as yakk/1 peers do; it starts SCTP negotiation and
    /// is never handed out) and return the offer SDP. Local candidates follow as
    /// [`PeerEvent::LocalCandidate`].
    pub async fn create_offer(&self) -> Result<String, TransportError> {
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

    /// Answerer: apply the peer's offer SDP and return the answer SDP.
    pub async fn accept_offer(&self, sdp: &str) -> Result<String, TransportError> {
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

    /// Offerer: apply the peer's answer SDP.
    pub async fn accept_answer(&self, sdp: &str) -> Result<(), TransportError> {
        let answer = RTCSessionDescription::answer(sdp.to_string())
            .map_err(|e| TransportError::BadDescription(e.to_string()))?;
        self.inner
            .pc
            .set_remote_description(answer)
            .await
            .map_err(|e| TransportError::BadDescription(e.to_string()))?;
        self.flush_early_candidates().await
    }

    /// Add a candidate from the peer. Candidates that arrive before the remote description
    /// are queued and applied with it. A candidate whose address is not one host's (multicast,
    /// broadcast, unspecified) is refused: connectivity checks never go there.
    pub async fn add_remote_candidate(&self, c: IceCandidate) -> Result<(), TransportError> {
        if let Some(ip) = candidate_ip(&c.candidate).filter(|ip| !crate::netbuf::is_unicast(*ip)) {
            return Err(TransportError::BadCandidate(format!(
                "{ip} is not a unicast address"
            )));
        }
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

    /// The next channel the peer opened (never "command"), with its label; `None` once the
    /// connection has ended.
    pub async fn accept_channel(&self) -> Option<(String, Channel)> {
        let mut rx = self.inner.accepted.lock().await;
        tokio::select! {
            s = rx.recv() => s,
            _ = self.inner.dead.cancelled() => None,
        }
    }

    /// Use per-stream flow control on this connection's streams: only when both sides
    /// announced it (a peer without it would take the grants for end-of-stream markers), and
    /// before the first stream is opened or accepted. Needs half-close (yakk/2).
    pub fn set_flow_control(&self, on: bool) {
        self.inner.flow.store(on, Ordering::SeqCst);
    }

    /// With flow control, let the side that opened a channel close it once both directions
    /// have ended, rather than the side that accepted it: only when both sides announced it,
    /// and before the first stream. Between two peers on this WebRTC stack it keeps a new
    /// channel off a stream id whose reset is still going back and forth (see the transport
    /// section of docs/yakk2.md).
    pub fn set_opener_closes(&self, on: bool) {
        self.inner.opener_closes.store(on, Ordering::SeqCst);
    }

    /// Limit the window growth all streams of this connection share together (32 MiB unless
    /// set): a session striped over several connections shares that amount among them.
    /// Call before the first stream.
    pub fn set_window_pool(&self, bytes: u64) {
        self.inner.pool.set_limit(bytes);
    }

    /// Limit the bytes all streams of this connection together may have handed to the stack
    /// and not yet had acknowledged (4 MiB unless set; at least one message). A striped
    /// session lowers it on each lane, so that a lane that is slow at the moment (after a
    /// loss) holds little of the stream. Call before the first stream.
    pub fn set_send_budget(&self, bytes: usize) {
        self.inner.set_send_budget(bytes);
    }

    /// The peer asked for small bursts (yakk/2 `small-bursts`, the browser page, whose socket
    /// drops a large flight): the send budget becomes `small_burst_budget` for a short path
    /// now, and follows the least round trip the path shows once it is up (checked every
    /// `SMALL_BURST_REFIT`). Call before the first stream.
    pub fn set_small_bursts(&self, on: bool) {
        self.inner.small_bursts.store(on, Ordering::SeqCst);
        if on {
            self.inner.fit_small_bursts(None);
        }
    }

    /// Close the connection; every stream ends and a [`PeerEvent::Disconnected`] follows. The
    /// peer hears of it at once: the "command"
    /// channel is closed first, and a peer that sees it close knows we are leaving (closing
    /// the connection alone, it would find out only when ICE consent fails, seconds later,
    /// and could not tell a deliberate close from a lost network). Every yakk/1 and yakk/2
    /// peer keeps that channel open for the connection's lifetime.
    pub async fn close(&self) {
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
        let until = Instant::now() + COMMAND_CLOSE_WAIT;
        while command.is_none() && *self.inner.sctp_up.borrow() && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(5)).await;
            command = take();
        }
        tracing::debug!(
            command = command.is_some(),
            "closing the connection: telling the peer"
        );
        if let Some(dc) = command {
            let mut closed = self.inner.command_closed.subscribe();
            let _ = dc.close().await;
            // The peer answers the reset with its own, and then it has heard. Closing the
            // connection sooner can lose the reset on a busy machine: the peer then finds out
            // only when ICE consent fails, seconds later (a fixed 100 ms did, once in a CI run).
            let _ = tokio::time::timeout(COMMAND_CLOSE_WAIT, closed.wait_for(|c| *c)).await;
        }
        let _ = self.inner.pc.close().await;
        self.inner.dead.cancel();
    }
}

/// How long `close` waits for the "command" channel to reach us, and then for the peer to
/// answer its reset, before the connection closes anyway.
const COMMAND_CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Candidates accepted before the remote description, against a flooding peer.
const MAX_EARLY_CANDIDATES: usize = 256;

/// The connection address of a candidate line (`candidate:foundation component transport
/// priority address port typ …`, RFC 8839), when it is an IP address.
fn candidate_ip(line: &str) -> Option<std::net::IpAddr> {
    let line = line.strip_prefix("a=").unwrap_or(line);
    let line = line.strip_prefix("candidate:").unwrap_or(line);
    line.split_ascii_whitespace().nth(4)?.parse().ok()
}

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

/// Wire an open data channel of this connection to a new `Channel` (see [`pump::attach`]).
fn attach(
    inner: &Inner,
    dc: Arc<dyn DataChannel>,
    opener: bool,
    early: Vec<webrtc::data_channel::DataChannelEvent>,
) -> (Channel, CancellationToken) {
    let cx = pump::ChannelContext {
        max_message: inner.max_message,
        max_part: inner.max_part(),
        small_budget: inner.small_bursts.load(Ordering::SeqCst),
        half_close: inner.half_close,
        flow: inner.flow.load(Ordering::SeqCst),
        opener_closes: inner.opener_closes.load(Ordering::SeqCst),
        pool: inner.pool.clone(),
        dead: inner.dead.clone(),
        last_peer_close: inner.last_peer_close.clone(),
        pc: Arc::downgrade(&inner.pc),
        budget: inner.budget.clone(),
        budget_cap: inner.budget_size.load(Ordering::SeqCst),
    };
    pump::attach(cx, dc, opener, early)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_addresses() {
        let ip = |s: &str| candidate_ip(s).map(|ip| ip.to_string());
        assert_eq!(
            ip("candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(
            ip("a=candidate:1 1 UDP 1 ff02::fb 5353 typ host").as_deref(),
            Some("ff02::fb")
        );
        assert_eq!(ip("candidate:1 1 udp 1 abc.local 5000 typ host"), None);
        assert_eq!(ip("candidate:1 1 udp"), None);
    }
}
