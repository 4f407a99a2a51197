//! yakk's own driver over the sans-IO `rtc` peer connection (host and peer-reflexive paths).
//!
//! One task owns the `RTCPeerConnection` and its UDP sockets. After every input (datagrams,
//! commands from the application, a timer) it drains *every* output before sleeping again:
//! events, received messages and datagrams to send, calling `handle_timeout(now)` between
//! rounds so output a handler queued without a timer (the DTLS ClientHello after ICE selects a
//! pair, the SCTP INIT after DTLS, the DCEP OPEN after SCTP) leaves at once rather than at the
//! next timer tick. That is what brings channel open from ~600 ms down to a few ms.
//!
//! Datagrams are read and handled in batches, and sockets get large buffers, for throughput.
//!
//! Streams: each [`Stream`] has a writer task that moves its writes into the driver, paced by a
//! per-channel byte credit (returned as SCTP releases the bytes), and the driver delivers
//! received messages straight into the stream's bounded queue. When a stream's queue is full,
//! the driver stops taking messages out of the SCTP stack; its bounded backlog then closes the
//! SCTP receive window toward the sender.

use std::collections::HashMap;
use std::future::poll_fn;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rtc::data_channel::{RTCDataChannelId, RTCDataChannelInit, RTCDataChannelState};
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::setting_engine::{
    SctpMaxMessageSize, SettingEngineBuilder,
};
use rtc::peer_connection::event::{RTCDataChannelEvent, RTCPeerConnectionEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::RTCSctpTransportState;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use rtc::statistics::StatsSelector;
use tokio::io::ReadBuf;
use tokio::net::UdpSocket;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::stats::selected_path;
use crate::stream::{Outbound, Stream, StreamEnds, coalesce};
use crate::{IceCandidate, PathInfo, PeerEvent, TransportConfig, TransportError};

/// The label of the channel the offerer opens first (as the reference program does).
pub(crate) const COMMAND_LABEL: &str = "command";
/// Bytes a channel may have handed to SCTP and not yet had released (send backpressure).
/// It caps what one connection has in flight: 3 MiB per round trip is 63 MB/s at 50 ms RTT
/// (1 MiB gave 17 MB/s on bench/'s emulated 50 ms link, 3 MiB 31 MB/s; see bench/WAN.md).
const SEND_CREDIT: usize = 3 * 1024 * 1024;
/// The SCTP receive window advertised to the peer (rtc's default is 1 MiB, which caps any
/// connection at 1 MiB per round trip). Keep it below what the UDP receive buffer holds
/// (SO_RCVBUF 4 MiB ≈ 3.5 MiB of 1.2 KB datagrams): SCTP does not pace, a larger window
/// arrives as a burst that overflows the socket, and throughput collapses (8 MiB: 3.7 MB/s
/// at 50 ms RTT, bench/WAN.md).
pub(crate) const SCTP_RECEIVE_WINDOW: u32 = 3 * 1024 * 1024;
/// Channels the peer opened that the application has not accepted yet; beyond this, new
/// ones are refused (closed), against a peer opening channels without end.
const ACCEPT_QUEUE: usize = 1024;
const EVENT_QUEUE: usize = 64;
const ICE_DISCONNECTED: Duration = Duration::from_secs(4);
const ICE_FAILED: Duration = Duration::from_secs(6);
const ICE_KEEPALIVE: Duration = Duration::from_secs(1);
/// Datagrams or commands taken in one go before the outputs are drained.
const BATCH: usize = 64;
/// Rounds of "drain everything" per wake-up; each round only repeats if the last made
/// progress, so this bounds a pathological loop, not normal work.
const MAX_ROUNDS: usize = 64;
const MAX_EARLY_CANDIDATES: usize = 256;
const MAX_DATAGRAM: usize = 2048;

type Reply<T> = oneshot::Sender<Result<T, TransportError>>;

enum Cmd {
    CreateOffer(Reply<String>),
    AcceptOffer(String, Reply<String>),
    AcceptAnswer(String, Reply<()>),
    Candidate(RTCIceCandidateInit, Reply<()>),
    Open(String, Reply<Stream>),
    Data(RTCDataChannelId, BytesMut),
    Finish(RTCDataChannelId),
    Dropped(RTCDataChannelId),
    Close(oneshot::Sender<()>),
}

/// The application's handle on a driver task.
pub(crate) struct DriverPeer {
    cmd: mpsc::UnboundedSender<Cmd>,
    accepted: tokio::sync::Mutex<mpsc::UnboundedReceiver<(String, Stream)>>,
    unaccepted: Arc<AtomicUsize>,
    dead: CancellationToken,
}

impl Drop for DriverPeer {
    fn drop(&mut self) {
        let (tx, _rx) = oneshot::channel();
        let _ = self.cmd.send(Cmd::Close(tx));
    }
}

fn closed() -> TransportError {
    TransportError::Closed("the connection has ended".into())
}

impl DriverPeer {
    pub(crate) async fn new(
        cfg: &TransportConfig,
    ) -> Result<(DriverPeer, mpsc::Receiver<PeerEvent>), TransportError> {
        let settings = SettingEngineBuilder::new()
            .with_sctp_max_message_size(SctpMaxMessageSize::Bounded(
                cfg.max_message.max(crate::YAKK2_MAX_MESSAGE) as u32,
            ))
            .with_sctp_max_receive_buffer_size(SCTP_RECEIVE_WINDOW)
            .with_include_loopback_candidate(true)
            // A pair whose remote side was learnt from the peer's own check (its candidate
            // had not arrived through signalling yet) is a direct path like any other: do
            // not hold its nomination back (the default waits 1 s from the start, which
            // made every other setup take 1.1 s instead of 0.1 s on loopback).
            .with_prflx_acceptance_min_wait(Some(Duration::ZERO))
            .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
            .with_ice_timeouts(
                Some(ICE_DISCONNECTED),
                Some(ICE_FAILED),
                Some(ICE_KEEPALIVE),
            )
            .build();
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_setting_engine(settings)
            .build(Instant::now())
            .map_err(|e| TransportError::Setup(e.to_string()))?;
        let sockets = bind_sockets(cfg)?;
        for s in &sockets {
            let addr = s
                .local_addr()
                .map_err(|e| TransportError::Setup(e.to_string()))?;
            let cand = CandidateHostConfig {
                base_config: CandidateConfig {
                    network: "udp".to_owned(),
                    address: addr.ip().to_string(),
                    port: addr.port(),
                    component: 1,
                    ..Default::default()
                },
                ..Default::default()
            }
            .new_candidate_host()
            .map_err(|e| TransportError::Setup(e.to_string()))?;
            let init = RTCIceCandidate::from(&cand)
                .to_json()
                .map_err(|e| TransportError::Setup(e.to_string()))?;
            pc.add_local_candidate(init)
                .map_err(|e| TransportError::Setup(e.to_string()))?;
        }
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (accept_tx, accept_rx) = mpsc::unbounded_channel();
        let (event_tx, event_rx) = mpsc::channel(EVENT_QUEUE);
        let (internal_tx, internal_rx) = mpsc::unbounded_channel();
        tokio::spawn(forward_events(internal_rx, event_tx));
        let dead = CancellationToken::new();
        let unaccepted = Arc::new(AtomicUsize::new(0));
        let local_addrs = sockets
            .iter()
            .map(|s| s.local_addr())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TransportError::Setup(e.to_string()))?;
        let driver = Driver {
            unaccepted: unaccepted.clone(),
            pc,
            sockets,
            local_addrs,
            cmd_rx,
            cmd_tx: cmd_tx.downgrade(),
            events: internal_tx,
            accept: accept_tx,
            dead: dead.clone(),
            chans: HashMap::new(),
            opening: HashMap::new(),
            waiting_opens: Vec::new(),
            early: Some(Vec::new()),
            blocked: None,
            closed_by_peer: Vec::new(),
            max_message: cfg.max_message,
            half_close: cfg.half_close,
            connected: false,
            finished: None,
            last_from: None,
            sctp_was_up: false,
        };
        tokio::spawn(driver.run());
        Ok((
            DriverPeer {
                cmd: cmd_tx,
                accepted: tokio::sync::Mutex::new(accept_rx),
                unaccepted,
                dead,
            },
            event_rx,
        ))
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Cmd) -> Result<T, TransportError> {
        let (tx, rx) = oneshot::channel();
        self.cmd.send(make(tx)).map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    pub(crate) async fn create_offer(&self) -> Result<String, TransportError> {
        self.call(Cmd::CreateOffer).await
    }

    pub(crate) async fn accept_offer(&self, sdp: &str) -> Result<String, TransportError> {
        self.call(|r| Cmd::AcceptOffer(sdp.to_string(), r)).await
    }

    pub(crate) async fn accept_answer(&self, sdp: &str) -> Result<(), TransportError> {
        self.call(|r| Cmd::AcceptAnswer(sdp.to_string(), r)).await
    }

    pub(crate) async fn add_remote_candidate(&self, c: IceCandidate) -> Result<(), TransportError> {
        let init = RTCIceCandidateInit {
            candidate: c.candidate,
            sdp_mid: c.sdp_mid,
            sdp_mline_index: c.sdp_mline_index,
            username_fragment: c.username_fragment,
            ..Default::default()
        };
        self.call(|r| Cmd::Candidate(init, r)).await
    }

    pub(crate) async fn open_stream(&self, label: &str) -> Result<Stream, TransportError> {
        self.call(|r| Cmd::Open(label.to_string(), r)).await
    }

    pub(crate) async fn accept_stream(&self) -> Option<(String, Stream)> {
        let mut rx = self.accepted.lock().await;
        let got = tokio::select! {
            s = rx.recv() => s,
            _ = self.dead.cancelled() => None,
        };
        if got.is_some() {
            self.unaccepted.fetch_sub(1, Ordering::Relaxed);
        }
        got
    }

    pub(crate) async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Cmd::Close(tx)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), rx).await;
        }
        self.dead.cancel();
    }
}

/// Bind one UDP socket per configured address, or per usable interface address.
fn bind_sockets(cfg: &TransportConfig) -> Result<Vec<UdpSocket>, TransportError> {
    let ips: Vec<IpAddr> = if cfg.ice_ips.is_empty() {
        let ifs = rtc::shared::ifaces::ifaces()
            .map_err(|e| TransportError::Setup(format!("cannot list network interfaces: {e}")))?;
        let mut ips: Vec<IpAddr> = ifs
            .iter()
            .filter_map(|i| i.addr.map(|a| a.ip()))
            .filter(|ip| !ip.is_loopback() && !ip.is_unspecified() && !is_link_local(ip))
            .collect();
        ips.sort();
        ips.dedup();
        ips
    } else {
        cfg.ice_ips.clone()
    };
    if ips.is_empty() {
        return Err(TransportError::Setup(
            "no usable network interface address for ICE".into(),
        ));
    }
    let mut out = Vec::new();
    for ip in ips {
        let std_sock = match std::net::UdpSocket::bind(SocketAddr::new(ip, 0)) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot bind UDP on {ip}: {e}");
                continue;
            }
        };
        crate::netbuf::set_udp_buffers(&std_sock, cfg.udp_buffer);
        std_sock
            .set_nonblocking(true)
            .map_err(|e| TransportError::Setup(e.to_string()))?;
        out.push(UdpSocket::from_std(std_sock).map_err(|e| TransportError::Setup(e.to_string()))?);
    }
    if out.is_empty() {
        return Err(TransportError::Setup(
            "could not bind a UDP socket on any address".into(),
        ));
    }
    Ok(out)
}

fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// Driver → application events, through an unbounded hop so the driver never waits on an
/// application that is slow to drain its events.
async fn forward_events(mut rx: mpsc::UnboundedReceiver<PeerEvent>, tx: mpsc::Sender<PeerEvent>) {
    while let Some(ev) = rx.recv().await {
        if tx.send(ev).await.is_err() {
            break;
        }
    }
}

struct Chan {
    label: String,
    to_app: Option<mpsc::Sender<Bytes>>,
    credit: Arc<Semaphore>,
    /// Bytes handed to SCTP whose credit has not been returned yet.
    held: usize,
    local_done: bool,
    remote_done: bool,
    /// Cancelled when the channel ends: stops its writer task.
    ended: CancellationToken,
    /// The "command" channel: kept, never handed out, its messages ignored.
    ignored: bool,
    /// Close once SCTP has delivered everything sent (closing at once would reset the
    /// stream and lose data still in flight).
    closing: bool,
}

struct Driver {
    pc: RTCPeerConnection,
    sockets: Vec<UdpSocket>,
    /// `sockets[i].local_addr()`, cached: asking the kernel per datagram costs a syscall.
    local_addrs: Vec<SocketAddr>,
    cmd_rx: mpsc::UnboundedReceiver<Cmd>,
    cmd_tx: mpsc::WeakUnboundedSender<Cmd>,
    events: mpsc::UnboundedSender<PeerEvent>,
    accept: mpsc::UnboundedSender<(String, Stream)>,
    /// Streams sent on `accept` and not yet taken by `accept_stream`.
    unaccepted: Arc<AtomicUsize>,
    dead: CancellationToken,
    chans: HashMap<RTCDataChannelId, Chan>,
    opening: HashMap<RTCDataChannelId, (String, Reply<Stream>)>,
    /// Opens asked for before SCTP is up: a channel dialled while the association is still
    /// handshaking can lose its DCEP OPEN, so they wait.
    waiting_opens: Vec<(String, Reply<Stream>)>,
    early: Option<Vec<RTCIceCandidateInit>>,
    /// A received message the application's queue had no room for; reading from SCTP stops
    /// until it is delivered.
    blocked: Option<(RTCDataChannelId, Bytes)>,
    /// Channels the peer closed; ended only once every message before the close has been
    /// delivered (the close event can overtake messages still waiting to be read).
    closed_by_peer: Vec<RTCDataChannelId>,
    max_message: usize,
    half_close: bool,
    connected: bool,
    /// Why the driver is stopping.
    finished: Option<String>,
    /// Source of the last datagram: the peer's address when its candidate is not in the
    /// stats (learnt from its checks, peer-reflexive).
    last_from: Option<SocketAddr>,
    sctp_was_up: bool,
}

impl Driver {
    async fn run(mut self) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        self.flush().await;
        let debug = std::env::var_os("YAKK_DRIVER_DEBUG").is_some();
        let mut wakes = 0u64;
        let mut last_report = Instant::now();
        while self.finished.is_none() {
            wakes += 1;
            if debug && last_report.elapsed() > Duration::from_secs(2) {
                last_report = Instant::now();
                eprintln!(
                    "driver {:p}: wakes={wakes} chans={} opening={} blocked={} timeout_in={:?} connected={}",
                    &self.dead,
                    self.chans.len(),
                    self.opening.len(),
                    self.blocked.is_some(),
                    self.pc
                        .poll_timeout()
                        .map(|t| t.saturating_duration_since(Instant::now())),
                    self.connected,
                );
            }
            let deadline = self
                .pc
                .poll_timeout()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            let blocked_tx = self
                .blocked
                .as_ref()
                .and_then(|(id, _)| self.chans.get(id))
                .and_then(|c| c.to_app.clone());
            enum Wake {
                Cmd(Option<Cmd>),
                Datagram(usize, SocketAddr, SocketAddr),
                SocketError(std::io::Error),
                Room,
                Timer,
            }
            let sockets = &self.sockets;
            let local_addrs = &self.local_addrs;
            let wake = tokio::select! {
                c = self.cmd_rx.recv() => Wake::Cmd(c),
                r = recv_any(sockets, local_addrs, &mut buf) => match r {
                    Ok((n, from, local)) => Wake::Datagram(n, from, local),
                    Err(e) => Wake::SocketError(e),
                },
                _ = async {
                    match &blocked_tx {
                        Some(tx) => { let _ = tx.reserve().await; }
                        None => std::future::pending::<()>().await,
                    }
                } => Wake::Room,
                _ = tokio::time::sleep_until(deadline.into()) => Wake::Timer,
            };
            match wake {
                Wake::Cmd(None) => self.finish("the connection was closed"),
                Wake::Cmd(Some(c)) => {
                    self.command(c);
                    for _ in 0..BATCH {
                        match self.cmd_rx.try_recv() {
                            Ok(c) => self.command(c),
                            Err(_) => break,
                        }
                    }
                }
                Wake::Datagram(n, from, local) => {
                    self.datagram(&buf[..n], from, local);
                    self.drain_sockets(&mut buf);
                }
                Wake::SocketError(e) => tracing::debug!("UDP receive error: {e}"),
                Wake::Room => self.unblock(),
                Wake::Timer => {}
            }
            if let Err(e) = self.pc.handle_timeout(Instant::now()) {
                tracing::debug!("handle_timeout: {e}");
            }
            self.flush().await;
        }
        // Say goodbye (SCTP ABORT / DTLS close) so the peer notices at once.
        let _ = self.pc.close();
        self.send_datagrams().await;
        self.dead.cancel();
        for (_, chan) in self.chans.drain() {
            chan.ended.cancel();
        }
        for (_, (_, reply)) in self.opening.drain() {
            let _ = reply.send(Err(closed()));
        }
        for (_, reply) in self.waiting_opens.drain(..) {
            let _ = reply.send(Err(closed()));
        }
        let why = self.finished.take().unwrap_or_default();
        let _ = self.events.send(PeerEvent::Disconnected(why));
        // Answer whatever is still asked, then drop the commands.
        self.cmd_rx.close();
        while let Ok(c) = self.cmd_rx.try_recv() {
            reject(c);
        }
    }

    fn finish(&mut self, why: &str) {
        if self.finished.is_none() {
            self.finished = Some(why.to_string());
        }
    }

    /// Take more datagrams that are already waiting, without blocking.
    fn drain_sockets(&mut self, buf: &mut [u8]) {
        for _ in 0..BATCH {
            let mut got = false;
            for i in 0..self.sockets.len() {
                if let Ok((n, from)) = self.sockets[i].try_recv_from(buf) {
                    got = true;
                    let local = self.local_addrs[i];
                    self.datagram(&buf[..n], from, local);
                }
            }
            if !got {
                break;
            }
        }
    }

    fn datagram(&mut self, data: &[u8], from: SocketAddr, local: SocketAddr) {
        self.last_from = Some(from);
        let msg = TaggedBytesMut {
            now: Instant::now(),
            transport: TransportContext {
                local_addr: local,
                peer_addr: from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: BytesMut::from(data),
        };
        if let Err(e) = self.pc.handle_read(msg) {
            tracing::debug!("dropped a datagram from {from}: {e}");
        }
    }

    /// Drain every output until a round makes no progress.
    async fn flush(&mut self) {
        for _ in 0..MAX_ROUNDS {
            let mut progress = false;
            while let Some(ev) = self.pc.poll_event() {
                progress = true;
                self.event(ev);
            }
            let sctp_state = self.pc.sctp().map(|t| t.state());
            if sctp_state == Some(RTCSctpTransportState::Connected) {
                self.sctp_was_up = true;
            } else if self.sctp_was_up && sctp_state == Some(RTCSctpTransportState::Closed) {
                // The peer aborted the association (it closed or dropped its connection).
                self.finish("the peer closed the connection");
            }
            if !self.waiting_opens.is_empty() && self.sctp_up() {
                progress = true;
                for (label, reply) in std::mem::take(&mut self.waiting_opens) {
                    self.open(label, reply);
                }
            }
            while self.blocked.is_none() {
                let Some(msg) = self.pc.poll_read() else {
                    break;
                };
                progress = true;
                if let RTCMessage::DataChannelMessage(id, m) = msg.message {
                    self.message(id, m.is_string, m.data);
                }
            }
            if self.blocked.is_none() {
                for id in std::mem::take(&mut self.closed_by_peer) {
                    // Handles are reused: only end it if that channel is really gone.
                    let gone = self
                        .pc
                        .data_channel(id)
                        .is_none_or(|dc| dc.ready_state() == RTCDataChannelState::Closed);
                    if gone {
                        self.end_chan(id);
                    }
                }
            }
            if self.send_datagrams().await {
                progress = true;
            }
            if !progress {
                break;
            }
            if let Err(e) = self.pc.handle_timeout(Instant::now()) {
                tracing::debug!("handle_timeout: {e}");
            }
        }
        self.return_credit();
    }

    async fn send_datagrams(&mut self) -> bool {
        let mut any = false;
        while let Some(out) = self.pc.poll_write() {
            any = true;
            let to = out.transport.peer_addr;
            if !crate::netbuf::is_unicast(to.ip()) {
                tracing::debug!(%to, "not sending to a non-unicast address");
                continue;
            }
            let local = out.transport.local_addr;
            let index = self
                .local_addrs
                .iter()
                .position(|a| *a == local)
                .unwrap_or(0);
            let sock = self.sockets.get(index);
            let Some(sock) = sock else { break };
            match sock.try_send_to(&out.message, to) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let _ = tokio::time::timeout(
                        Duration::from_millis(200),
                        sock.send_to(&out.message, to),
                    )
                    .await;
                }
                Err(e) => tracing::debug!("UDP send to {to}: {e}"),
            }
        }
        any
    }

    /// Give back send credit for bytes SCTP has released, and close channels whose last
    /// bytes have been delivered.
    fn return_credit(&mut self) {
        let mut to_close = Vec::new();
        for (id, chan) in self.chans.iter_mut() {
            if chan.held == 0 && !chan.closing {
                continue;
            }
            let outstanding = self
                .pc
                .data_channel(*id)
                .map(|dc| dc.outstanding_bytes())
                .unwrap_or(0);
            if outstanding < chan.held {
                chan.credit.add_permits(chan.held - outstanding);
                chan.held = outstanding;
            }
            if chan.closing && outstanding == 0 {
                to_close.push(*id);
            }
        }
        for id in to_close {
            if let Some(mut dc) = self.pc.data_channel(id) {
                let _ = dc.close();
            }
            self.end_chan(id);
        }
    }

    fn event(&mut self, ev: RTCPeerConnectionEvent) {
        match ev {
            RTCPeerConnectionEvent::OnIceCandidateEvent(e) => match e.candidate.to_json() {
                Ok(init) => {
                    let _ = self.events.send(PeerEvent::LocalCandidate(IceCandidate {
                        candidate: init.candidate,
                        sdp_mid: init.sdp_mid,
                        sdp_mline_index: init.sdp_mline_index,
                        username_fragment: init.username_fragment,
                    }));
                }
                Err(e) => tracing::warn!("local candidate not serialisable: {e}"),
            },
            RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => match state {
                RTCPeerConnectionState::Connected if !self.connected => {
                    self.connected = true;
                    let path = self.path_info();
                    let _ = self.events.send(PeerEvent::Connected(path));
                }
                RTCPeerConnectionState::Disconnected => {
                    self.finish("the peer stopped answering (ICE disconnected)")
                }
                RTCPeerConnectionState::Failed => self.finish("the connection to the peer failed"),
                RTCPeerConnectionState::Closed => self.finish("the connection was closed"),
                _ => {}
            },
            RTCPeerConnectionEvent::OnDataChannel(dc) => match dc {
                RTCDataChannelEvent::OnOpen(id) => self.opened(id),
                RTCDataChannelEvent::OnClose(id) => {
                    // Handles are reused: a late close of an old channel may name a new one.
                    let gone = self
                        .pc
                        .data_channel(id)
                        .is_none_or(|dc| dc.ready_state() == RTCDataChannelState::Closed);
                    if !gone {
                        return;
                    }
                    if let Some((label, reply)) = self.opening.remove(&id) {
                        let _ = reply.send(Err(TransportError::OpenChannel {
                            label,
                            reason: "the peer refused or closed the channel".into(),
                        }));
                    } else {
                        self.closed_by_peer.push(id);
                    }
                }
                _ => {}
            },
            _ => {}
        }
    }

    /// A channel is open: hand its stream to whoever opened it, or to `accept_stream`.
    fn opened(&mut self, id: RTCDataChannelId) {
        if self.chans.contains_key(&id) {
            return;
        }
        if let Some((label, reply)) = self.opening.remove(&id) {
            let stream = self.attach(id, label);
            let _ = reply.send(Ok(stream));
            return;
        }
        let label = self
            .pc
            .data_channel(id)
            .map(|dc| dc.label().to_string())
            .unwrap_or_default();
        if label == COMMAND_LABEL {
            self.chans.insert(id, self.chan(label, None, true));
            return;
        }
        if self.unaccepted.load(Ordering::Relaxed) >= ACCEPT_QUEUE {
            tracing::warn!(
                "{ACCEPT_QUEUE} channels from the peer wait to be accepted; refusing {label:?}"
            );
            if let Some(mut dc) = self.pc.data_channel(id) {
                let _ = dc.close();
            }
            return;
        }
        let stream = self.attach(id, label.clone());
        if self.accept.send((label, stream)).is_ok() {
            self.unaccepted.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn chan(&self, label: String, to_app: Option<mpsc::Sender<Bytes>>, ignored: bool) -> Chan {
        Chan {
            label,
            to_app,
            credit: Arc::new(Semaphore::new(SEND_CREDIT)),
            held: 0,
            local_done: false,
            remote_done: false,
            ended: self.dead.child_token(),
            ignored,
            closing: false,
        }
    }

    fn attach(&mut self, id: RTCDataChannelId, label: String) -> Stream {
        let (stream, StreamEnds { to_app, from_app }) = Stream::pair(self.max_message, None);
        let chan = self.chan(label, Some(to_app), false);
        if let Some(cmd) = self.cmd_tx.upgrade() {
            tokio::spawn(write_task(
                id,
                from_app,
                cmd,
                chan.credit.clone(),
                chan.ended.clone(),
                self.max_message,
            ));
        }
        self.chans.insert(id, chan);
        stream
    }

    fn message(&mut self, id: RTCDataChannelId, is_string: bool, data: BytesMut) {
        if !self.chans.contains_key(&id) {
            // Data can come before the open event is seen: register the channel first.
            let open = self
                .pc
                .data_channel(id)
                .is_some_and(|dc| dc.ready_state() == RTCDataChannelState::Open);
            if !open {
                return;
            }
            self.opened(id);
        }
        let half_close = self.half_close;
        let Some(chan) = self.chans.get_mut(&id) else {
            return;
        };
        if chan.ignored {
            return;
        }
        if is_string && half_close {
            chan.to_app = None; // EOF for the reader
            chan.remote_done = true;
            if chan.local_done {
                self.close_chan(id);
            }
            return;
        }
        if data.is_empty() {
            return;
        }
        let Some(tx) = &chan.to_app else { return };
        match tx.try_send(data.freeze()) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(b)) => self.blocked = Some((id, b)),
            Err(mpsc::error::TrySendError::Closed(_)) => chan.to_app = None,
        }
    }

    /// The blocked stream has room again: deliver its message and resume reading.
    fn unblock(&mut self) {
        let Some((id, data)) = self.blocked.take() else {
            return;
        };
        let Some(chan) = self.chans.get_mut(&id) else {
            return;
        };
        let Some(tx) = &chan.to_app else { return };
        match tx.try_send(data) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(b)) => self.blocked = Some((id, b)),
            Err(mpsc::error::TrySendError::Closed(_)) => chan.to_app = None,
        }
    }

    /// Close a channel once what was sent on it has been delivered (see `return_credit`).
    fn close_chan(&mut self, id: RTCDataChannelId) {
        match self.chans.get_mut(&id) {
            Some(chan) => chan.closing = true,
            None => {
                if let Some(mut dc) = self.pc.data_channel(id) {
                    let _ = dc.close();
                }
            }
        }
    }

    fn end_chan(&mut self, id: RTCDataChannelId) {
        if let Some(chan) = self.chans.remove(&id) {
            chan.ended.cancel();
            tracing::trace!("channel {:?} ended", chan.label);
        }
        if matches!(&self.blocked, Some((b, _)) if *b == id) {
            self.blocked = None;
        }
    }

    fn command(&mut self, c: Cmd) {
        let now = Instant::now();
        match c {
            Cmd::CreateOffer(reply) => {
                let r = self.create_offer();
                let _ = reply.send(r);
            }
            Cmd::AcceptOffer(sdp, reply) => {
                let r = self.accept_offer(sdp);
                let _ = reply.send(r);
            }
            Cmd::AcceptAnswer(sdp, reply) => {
                let r = RTCSessionDescription::answer(sdp)
                    .and_then(|d| self.pc.set_remote_description(now, d))
                    .map_err(|e| TransportError::BadDescription(e.to_string()));
                if r.is_ok() {
                    self.flush_early();
                }
                let _ = reply.send(r);
            }
            Cmd::Candidate(init, reply) => {
                let r = match self.early.as_mut() {
                    Some(q) if q.len() >= MAX_EARLY_CANDIDATES => {
                        Err(TransportError::BadCandidate(format!(
                            "more than {MAX_EARLY_CANDIDATES} candidates before the description"
                        )))
                    }
                    Some(q) => {
                        q.push(init);
                        Ok(())
                    }
                    None => add_candidate(&mut self.pc, init),
                };
                let _ = reply.send(r);
            }
            Cmd::Open(label, reply) => {
                if self.finished.is_some() {
                    let _ = reply.send(Err(closed()));
                    return;
                }
                if !self.sctp_up() {
                    self.waiting_opens.push((label, reply));
                    return;
                }
                self.open(label, reply);
            }
            Cmd::Data(id, data) => {
                let len = data.len();
                let sent = self.pc.data_channel(id).map(|mut dc| dc.send(now, data));
                match sent {
                    Some(Ok(())) => {
                        if let Some(chan) = self.chans.get_mut(&id) {
                            chan.held += len;
                        }
                    }
                    _ => self.end_chan(id),
                }
            }
            Cmd::Finish(id) => {
                if !self.half_close {
                    self.close_chan(id);
                    return;
                }
                let sent = self
                    .pc
                    .data_channel(id)
                    .map(|mut dc| dc.send_text(now, String::new()));
                if !matches!(sent, Some(Ok(()))) {
                    self.end_chan(id);
                    return;
                }
                if let Some(chan) = self.chans.get_mut(&id) {
                    chan.local_done = true;
                    if chan.remote_done {
                        self.close_chan(id);
                    }
                }
            }
            Cmd::Dropped(id) => self.close_chan(id),
            Cmd::Close(done) => {
                self.finish("the connection was closed");
                let _ = done.send(());
            }
        }
    }

    fn sctp_up(&self) -> bool {
        self.pc
            .sctp()
            .is_some_and(|t| t.state() == RTCSctpTransportState::Connected)
    }

    fn open(&mut self, label: String, reply: Reply<Stream>) {
        match self.pc.create_data_channel(&label, Some(reliable())) {
            Ok(dc) => {
                let id = dc.id();
                self.opening.insert(id, (label, reply));
            }
            Err(e) => {
                let _ = reply.send(Err(TransportError::OpenChannel {
                    label,
                    reason: e.to_string(),
                }));
            }
        }
    }

    fn create_offer(&mut self) -> Result<String, TransportError> {
        let dc = self
            .pc
            .create_data_channel(COMMAND_LABEL, Some(reliable()))
            .map_err(|e| TransportError::OpenChannel {
                label: COMMAND_LABEL.into(),
                reason: e.to_string(),
            })?;
        let id = dc.id();
        let ignored = self.chan(COMMAND_LABEL.into(), None, true);
        self.chans.insert(id, ignored);
        let offer = self
            .pc
            .create_offer(None)
            .map_err(|e| TransportError::Setup(e.to_string()))?;
        let sdp = offer.sdp.clone();
        self.pc
            .set_local_description(Instant::now(), offer)
            .map_err(|e| TransportError::Signalling(format!("local offer rejected: {e}")))?;
        Ok(sdp)
    }

    fn accept_offer(&mut self, sdp: String) -> Result<String, TransportError> {
        let offer = RTCSessionDescription::offer(sdp)
            .map_err(|e| TransportError::BadDescription(e.to_string()))?;
        self.pc
            .set_remote_description(Instant::now(), offer)
            .map_err(|e| TransportError::BadDescription(e.to_string()))?;
        self.flush_early();
        let answer = self
            .pc
            .create_answer(None)
            .map_err(|e| TransportError::Setup(e.to_string()))?;
        let sdp = answer.sdp.clone();
        self.pc
            .set_local_description(Instant::now(), answer)
            .map_err(|e| TransportError::Signalling(format!("local answer rejected: {e}")))?;
        Ok(sdp)
    }

    fn flush_early(&mut self) {
        for init in self.early.take().unwrap_or_default() {
            if let Err(e) = add_candidate(&mut self.pc, init) {
                tracing::warn!("{e}");
            }
        }
    }

    fn path_info(&mut self) -> PathInfo {
        let report = self.pc.get_stats(Instant::now(), StatsSelector::None);
        let mut info = selected_path(&report);
        if info.remote.is_empty()
            && let Some(from) = self.last_from
        {
            info.remote = from.to_string();
        }
        info
    }
}

fn reject(c: Cmd) {
    match c {
        Cmd::CreateOffer(r) | Cmd::AcceptOffer(_, r) => {
            let _ = r.send(Err(closed()));
        }
        Cmd::AcceptAnswer(_, r) | Cmd::Candidate(_, r) => {
            let _ = r.send(Err(closed()));
        }
        Cmd::Open(_, r) => {
            let _ = r.send(Err(closed()));
        }
        Cmd::Close(done) => {
            let _ = done.send(());
        }
        Cmd::Data(..) | Cmd::Finish(_) | Cmd::Dropped(_) => {}
    }
}

fn add_candidate(
    pc: &mut RTCPeerConnection,
    init: RTCIceCandidateInit,
) -> Result<(), TransportError> {
    let text = init.candidate.clone();
    pc.add_remote_candidate(init)
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

/// Wait for a datagram on any socket: (length, from, local address).
async fn recv_any(
    sockets: &[UdpSocket],
    local_addrs: &[SocketAddr],
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr, SocketAddr)> {
    poll_fn(|cx| {
        for (s, local) in sockets.iter().zip(local_addrs) {
            let mut rb = ReadBuf::new(buf);
            match s.poll_recv_from(cx, &mut rb) {
                Poll::Ready(Ok(from)) => {
                    return Poll::Ready(Ok((rb.filled().len(), from, *local)));
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {}
            }
        }
        Poll::Pending
    })
    .await
}

/// Application → driver for one stream: coalesces small queued writes up to `max`, and waits
/// for send credit so a channel never has more than `SEND_CREDIT` bytes in SCTP.
async fn write_task(
    id: RTCDataChannelId,
    mut from_app: mpsc::Receiver<Outbound>,
    cmd: mpsc::UnboundedSender<Cmd>,
    credit: Arc<Semaphore>,
    ended: CancellationToken,
    max: usize,
) {
    let mut carry: Option<Outbound> = None;
    loop {
        let item = match carry.take() {
            Some(item) => Some(item),
            None => tokio::select! {
                item = from_app.recv() => item,
                _ = ended.cancelled() => return,
            },
        };
        match item {
            None => {
                let _ = cmd.send(Cmd::Dropped(id));
                return;
            }
            Some(Outbound::Data(mut msg)) => {
                carry = coalesce(&mut msg, &mut from_app, max);
                let n = msg.len().min(SEND_CREDIT) as u32;
                tokio::select! {
                    p = credit.acquire_many(n) => match p {
                        Ok(p) => p.forget(),
                        Err(_) => return,
                    },
                    _ = ended.cancelled() => return,
                }
                if cmd.send(Cmd::Data(id, msg)).is_err() {
                    return;
                }
            }
            Some(Outbound::Finish) => {
                if cmd.send(Cmd::Finish(id)).is_err() {
                    return;
                }
            }
        }
    }
}
