//! The embedded TURN relay of `yakk signal --turn-listen ADDR`: UDP and TCP on the same port,
//! and with `--tls-cert`/`--tls-key` TURN over TLS on the signalling server's own port
//! (`turns:`; TCP and TLS both in `stream.rs`), UDP relayed addresses on `--turn-relay-ip`
//! within `--turn-ports`, credentials of the TURN REST scheme that [`crate::ice`] hands room
//! members (username `"<unix expiry>[:<user>]"`, password
//! `base64(HMAC-SHA1(secret, username))`).
//!
//! The protocol work (allocations, permissions, channels, the relay sockets) is the
//! `medea-turn` crate's. What is ours sits in front of it, as a wrapper around each of its
//! transports (`Guarded`) that sees every request before the crate does and every packet it
//! sends:
//! - **Credentials.** A request carrying MESSAGE-INTEGRITY is checked here: a malformed
//!   username, a bad integrity and, for an Allocate, an expired username get a 401 from us and
//!   never reach the crate. As with coturn's `use-auth-secret`, the expiry is checked when an
//!   allocation is made; its refreshes, permissions and channels only need the integrity, so a
//!   relay started in time outlives its credentials.
//! - **Quotas.** An Allocate with good credentials beyond `max_allocations` live allocations in
//!   all, or `max_allocations_per_user` for its username, gets 486 (Allocation Quota Reached).
//!   Live allocations are those whose success response we saw and that were not deleted
//!   (Refresh with lifetime 0) nor left to expire.
//! - **Bounded state.** The crate remembers a nonce for an hour for every request without
//!   MESSAGE-INTEGRITY it challenges. Those requests are therefore rate-limited (per client
//!   address and in all) before they reach it, which bounds that memory; a request with
//!   integrity reaches it only once its credentials were checked.
//! - **Bandwidth.** With `max_rate`, each allocation may relay that many bytes per second each
//!   way (token bucket, one second of burst); what exceeds it is dropped, as a congested link
//!   would. Both ways are measured on every transport.
//! - **Metrics** ([`RelayMetrics`]): live allocations, allocations made, refusals by reason,
//!   relayed bytes each way; live allocations and relayed bytes by transport ([`Via`]); TCP
//!   and TLS connections open, accepted, refused and closed by reason ([`StreamMetrics`]).
//!
//! - **Buffers.** The socket of each allocation gets 4 MiB buffers once it exists
//!   (`buffers.rs`): the crate binds it with the kernel's defaults, on which relayed paths ran
//!   at a tenth of their speed. A client over TCP or TLS also has up to 4 MiB queued towards
//!   it (`stream.rs`): a peer's burst must fit between the two while the stream drains.
//!
//! - **Shortcut** (`shortcut.rs`). When both peers of a session allocate on this relay over
//!   UDP, ChannelData from one to the other is sent on from the listening socket as ChannelData
//!   on the receiver's channel, as the crate would have sent it through the two relayed sockets
//!   (and the kernel between them), but without them. It applies only when the sender's channel
//!   is bound to the relayed address of the receiver's allocation and the receiver holds a
//!   permission for the sender's relayed address and a channel bound to it. These are mirrored
//!   from the requests the crate was handed and its success responses only (entries expire
//!   2 s before the crate's, maps are bounded, deleted allocations are dropped), so the mirror
//!   is never more permissive than the crate; anything else (Send/Data indications, TCP and TLS
//!   clients, what the mirror lacks) goes the long way. Bandwidth caps and byte counters apply
//!   to both legs as on the long way.
//!
//! Allocations are keyed by transport and client address, the real one on every transport
//! (TLS included): credentials, quotas and rate limits apply alike.
//!
//! Files: `gate.rs` (credentials, quotas, bandwidth: the book-keeping the transports share),
//! `guard.rs` (the wrapper that applies it to each request and packet), `shortcut.rs` (the
//! mirror the shortcut consults), `stream.rs` (the transport of TURN over TCP and over TLS:
//! framing and bounds), `buffers.rs` (the allocations' socket buffers).

mod buffers;
#[cfg(not(feature = "fuzzing"))]
mod framing;
/// Fuzzing only (feature `fuzzing`, not a stable API): see `framing::fuzz`.
#[cfg(feature = "fuzzing")]
pub mod framing;
mod gate;
mod guard;
mod shortcut;
mod stream;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use medea_turn::transport::Transport;
use tokio::net::{TcpListener, UdpSocket};

pub use gate::{Gate, is_global};

use crate::metrics::Exposition;
use guard::{Guarded, Inner, RestAuth};
pub(crate) use stream::{ALPN as TURNS_ALPN, StreamOptions, StreamTransport};
pub use stream::{StreamClose, StreamMetrics};

/// The realm the relay announces (any string works: REST credentials do not depend on it).
pub const REALM: &str = "yakk";
/// SO_RCVBUF/SO_SNDBUF of the listening UDP socket (Linux caps it at net.core.rmem_max /
/// wmem_max): every client's ChannelData arrives there, in bursts (SCTP does not pace).
const LISTEN_BUFFER: usize = 4 << 20;
/// How long accepting TCP connections pauses after an error (out of descriptors, say).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How the embedded relay is set up.
#[derive(Clone)]
pub struct RelayConfig {
    /// UDP and TCP address to listen on.
    pub listen: SocketAddr,
    /// The address written into allocations (what peers send to).
    pub relay_ip: IpAddr,
    /// Inclusive range of UDP ports for relayed addresses.
    pub ports: (u16, u16),
    /// Secret of the REST credentials.
    pub secret: String,
    /// Also listen on TCP (same port).
    pub tcp: bool,
    /// Live allocations in all, at most.
    pub max_allocations: usize,
    /// Live allocations per username, at most.
    pub max_allocations_per_user: usize,
    /// Bytes per second each allocation may relay each way (0: no limit).
    pub max_rate: u64,
    /// How long the credentials handed to room members can start an allocation.
    pub credential_ttl: Duration,
    /// Relay to loopback, private, link-local and other non-global peer addresses too (a
    /// relay on a LAN, tests). Off, such peers get 403 (Forbidden): the relay cannot be used
    /// to reach the host itself or the network behind it.
    pub allow_private_peers: bool,
}

impl fmt::Debug for RelayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayConfig")
            .field("listen", &self.listen)
            .field("relay_ip", &self.relay_ip)
            .field("ports", &self.ports)
            .field("secret", &"<redacted>")
            .field("tcp", &self.tcp)
            .field("max_allocations", &self.max_allocations)
            .field("max_allocations_per_user", &self.max_allocations_per_user)
            .field("max_rate", &self.max_rate)
            .field("credential_ttl", &self.credential_ttl)
            .field("allow_private_peers", &self.allow_private_peers)
            .finish()
    }
}

/// Why the relay refused something; one label value of `yakk_signal_turn_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Bad integrity, malformed username.
    Auth,
    /// An Allocate with an expired username.
    Expired,
    /// Allocation quota (in all or per username).
    Quota,
    /// A request without credentials over the challenge rate.
    RateLimited,
    /// Relayed bytes over an allocation's bandwidth.
    Bandwidth,
    /// A peer address the relay does not relay to (loopback, private…).
    ForbiddenPeer,
}

impl Refusal {
    const ALL: [Refusal; 6] = [
        Refusal::Auth,
        Refusal::Expired,
        Refusal::Quota,
        Refusal::RateLimited,
        Refusal::Bandwidth,
        Refusal::ForbiddenPeer,
    ];

    fn label(self) -> &'static str {
        match self {
            Refusal::Auth => "auth",
            Refusal::Expired => "expired",
            Refusal::Quota => "quota",
            Refusal::RateLimited => "rate_limited",
            Refusal::Bandwidth => "bandwidth",
            Refusal::ForbiddenPeer => "forbidden_peer",
        }
    }
}

/// How a client reaches the relay; one label value of the `transport` label in `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Via {
    /// UDP on `--turn-listen`.
    Udp,
    /// TCP on `--turn-listen`.
    Tcp,
    /// TLS on the signalling server's own listener (`turns:`).
    Tls,
}

impl Via {
    /// Every transport, in the order of their counters.
    pub const ALL: [Via; 3] = [Via::Udp, Via::Tcp, Via::Tls];

    /// The value of the `transport` label.
    pub fn label(self) -> &'static str {
        match self {
            Via::Udp => "udp",
            Via::Tcp => "tcp",
            Via::Tls => "tls",
        }
    }
}

/// The relay's counters.
#[derive(Debug, Default)]
pub struct RelayMetrics {
    allocations_total: AtomicU64,
    refused: [AtomicU64; Refusal::ALL.len()],
    /// Relayed payload bytes by [`Via`].
    bytes_to_clients: [AtomicU64; Via::ALL.len()],
    bytes_from_clients: [AtomicU64; Via::ALL.len()],
    shortcut_packets: AtomicU64,
    tls: StreamMetrics,
    tcp: StreamMetrics,
}

impl RelayMetrics {
    fn refuse(&self, why: Refusal) {
        self.refused[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn shortcut(&self) {
        self.shortcut_packets.fetch_add(1, Ordering::Relaxed);
    }

    /// ChannelData passed straight from one UDP client of the relay to another.
    pub fn shortcut_packets(&self) -> u64 {
        self.shortcut_packets.load(Ordering::Relaxed)
    }

    /// How often the relay refused for `why`.
    pub fn refused(&self, why: Refusal) -> u64 {
        self.refused[why as usize].load(Ordering::Relaxed)
    }

    /// Allocations made so far.
    pub fn allocations_total(&self) -> u64 {
        self.allocations_total.load(Ordering::Relaxed)
    }

    /// Relayed payload bytes: (relay to clients, clients to relay), over every transport.
    pub fn relayed_bytes(&self) -> (u64, u64) {
        Via::ALL.iter().fold((0, 0), |(to, from), &via| {
            let (t, f) = self.relayed_bytes_via(via);
            (to + t, from + f)
        })
    }

    /// TURN over TLS: connections open, accepted, refused and closed.
    pub fn tls(&self) -> &StreamMetrics {
        &self.tls
    }

    /// TURN over TCP: connections open, accepted, refused and closed.
    pub fn tcp(&self) -> &StreamMetrics {
        &self.tcp
    }

    /// Relayed payload bytes over one transport: (relay to clients, clients to relay).
    pub fn relayed_bytes_via(&self, via: Via) -> (u64, u64) {
        (
            self.bytes_to_clients[via as usize].load(Ordering::Relaxed),
            self.bytes_from_clients[via as usize].load(Ordering::Relaxed),
        )
    }
}

/// A running relay; dropping it (or [`EmbeddedRelay::stop`]) stops it.
pub struct EmbeddedRelay {
    server: medea_turn::Server,
    udp_addr: SocketAddr,
    tcp_addr: Option<SocketAddr>,
    gate: Arc<Gate>,
    tcp: Option<Arc<StreamTransport>>,
    tls: Option<Arc<StreamTransport>>,
}

impl Drop for EmbeddedRelay {
    fn drop(&mut self) {
        for transport in self.tcp.iter().chain(&self.tls) {
            transport.stop();
        }
    }
}

/// Hands each TCP connection to `transport`, until it stops.
async fn accept_tcp(listener: TcpListener, transport: Arc<StreamTransport>) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = transport.stopped() => return,
        };
        match accepted {
            Ok((stream, peer)) => transport.accept(stream, peer),
            Err(e) => {
                // Out of descriptors, or a connection reset before it was accepted.
                tracing::debug!("TURN over TCP: accept: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

impl fmt::Debug for EmbeddedRelay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedRelay")
            .field("udp_addr", &self.udp_addr)
            .field("tcp_addr", &self.tcp_addr)
            .finish_non_exhaustive()
    }
}

/// The relay's UDP socket and, with `config.tcp`, its TCP listener on the same port. With port 0
/// the port is the one the system gives the UDP socket, which TCP may already use elsewhere:
/// then another is tried (a few times).
async fn bind_pair(config: &RelayConfig) -> std::io::Result<(UdpSocket, Option<TcpListener>)> {
    let mut attempts = if config.listen.port() == 0 { 20 } else { 1 };
    loop {
        let udp = UdpSocket::bind(config.listen).await?;
        if !config.tcp {
            return Ok((udp, None));
        }
        match TcpListener::bind(udp.local_addr()?).await {
            Ok(listener) => return Ok((udp, Some(listener))),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && attempts > 1 => attempts -= 1,
            Err(e) => return Err(e),
        }
    }
}

/// Bounds on the connections of TURN over TCP, and of TURN over TLS: each kind at most
/// `max_connections` at once, and `max_per_address` from one client address (0: no limit).
#[derive(Debug, Clone, Copy)]
pub(crate) struct StreamLimits {
    pub max_connections: usize,
    pub max_per_address: usize,
}

impl EmbeddedRelay {
    /// Binds UDP (and with `config.tcp`, TCP on the same port) and starts relaying. With
    /// `tls_addr` (the signalling server's TLS listener) it also serves TURN over TLS there:
    /// the server hands those connections over ([`EmbeddedRelay::turns`]).
    pub(crate) async fn start(
        config: &RelayConfig,
        limits: StreamLimits,
        tls_addr: Option<SocketAddr>,
    ) -> std::io::Result<EmbeddedRelay> {
        let (udp, listener) = bind_pair(config).await?;
        let udp = Arc::new(udp);
        {
            let sock = socket2::SockRef::from(&*udp);
            // Best effort: a smaller buffer only means more drops under bursts.
            let _ = sock.set_recv_buffer_size(LISTEN_BUFFER);
            let _ = sock.set_send_buffer_size(LISTEN_BUFFER);
        }
        buffers::warn_if_capped(buffers::RELAY_BUFFER);
        let udp_addr = udp.local_addr()?;
        let gate = Arc::new(Gate::new(config));
        let mut connections: Vec<Arc<dyn Transport + Send + Sync>> = vec![Arc::new(Guarded {
            inner: Inner::udp(udp),
            gate: gate.clone(),
        })];
        let options = |local_addr| StreamOptions {
            local_addr,
            max_connections: limits.max_connections,
            max_per_address: limits.max_per_address,
        };
        let mut tcp_addr = None;
        let mut tcp = None;
        if let Some(listener) = listener {
            // Accepted connections inherit it: a batch of frames leaves at once.
            if let Err(e) = socket2::SockRef::from(&listener).set_tcp_nodelay(true) {
                tracing::warn!("TURN over TCP: TCP_NODELAY: {e}");
            }
            let addr = listener.local_addr()?;
            tcp_addr = Some(addr);
            let transport =
                Arc::new(StreamTransport::new(options(addr), gate.clone(), Via::Tcp).await?);
            tokio::spawn(accept_tcp(listener, transport.clone()));
            connections.push(Arc::new(Guarded {
                inner: Inner::Stream(transport.clone()),
                gate: gate.clone(),
            }));
            tcp = Some(transport);
        }
        let mut tls = None;
        if let Some(addr) = tls_addr {
            let transport =
                Arc::new(StreamTransport::new(options(addr), gate.clone(), Via::Tls).await?);
            connections.push(Arc::new(Guarded {
                inner: Inner::Stream(transport.clone()),
                gate: gate.clone(),
            }));
            tls = Some(transport);
        }
        let (low, high) = config.ports;
        let server = medea_turn::Server::new(medea_turn::ServerConfig {
            connections,
            turn: Some(medea_turn::TurnConfig {
                relay_addr_generator: medea_turn::relay::Allocator {
                    relay_address: config.relay_ip,
                    min_port: low,
                    max_port: high,
                    max_retries: 50,
                    address: match config.listen.ip() {
                        IpAddr::V6(v6) => format!("[{v6}]"),
                        v4 => v4.to_string(),
                    },
                },
                realm: REALM.to_string(),
                auth_handler: Arc::new(RestAuth { gate: gate.clone() }),
                channel_bind_lifetime: shortcut::CHANNEL_LIFETIME,
                alloc_close_notify: None,
            }),
        });
        Ok(EmbeddedRelay {
            server,
            udp_addr,
            tcp_addr,
            gate,
            tcp,
            tls,
        })
    }

    /// The UDP address it listens on.
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp_addr
    }

    /// The TCP address it listens on, if any.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// The transport TURN-over-TLS connections are handed to, if it was started with one.
    pub(crate) fn turns(&self) -> Option<Arc<StreamTransport>> {
        self.tls.clone()
    }

    /// Its book-keeping and counters (shared with `/metrics`).
    pub fn gate(&self) -> Arc<Gate> {
        self.gate.clone()
    }

    /// Whether the crate's tasks are all still running.
    pub fn healthy(&self) -> bool {
        self.server.healthz()
    }

    /// Stops listening, closes its TCP and TLS connections and drops every allocation.
    pub fn stop(self) {
        drop(self);
    }
}

/// The relay's families of `/metrics`.
pub fn expose_metrics(gate: &Gate, out: &mut Exposition) {
    let m = gate.metrics();
    out.gauge(
        "yakk_signal_turn_allocations",
        "Live allocations on the embedded TURN relay.",
        gate.live_allocations() as u64,
    );
    out.counter(
        "yakk_signal_turn_allocations_total",
        "Allocations made by the embedded TURN relay.",
        m.allocations_total(),
    );
    out.counters(
        "yakk_signal_turn_refused_total",
        "Requests and packets the embedded TURN relay refused or dropped, by reason.",
        Refusal::ALL
            .iter()
            .map(|&why| (vec![("reason", why.label().to_string())], m.refused(why))),
    );
    out.gauges(
        "yakk_signal_turn_transport_allocations",
        "Live allocations on the embedded TURN relay, by how clients reach it.",
        Via::ALL
            .iter()
            .zip(gate.live_allocations_via())
            .map(|(via, n)| (vec![("transport", via.label().to_string())], n as u64)),
    );
    out.counters(
        "yakk_signal_turn_transport_relayed_bytes_total",
        "Payload bytes relayed by the embedded TURN relay, by how clients reach it.",
        Via::ALL.iter().flat_map(|&via| {
            let (to, from) = m.relayed_bytes_via(via);
            let labels = |direction: &str| {
                vec![
                    ("transport", via.label().to_string()),
                    ("direction", direction.to_string()),
                ]
            };
            [(labels("to_clients"), to), (labels("from_clients"), from)]
        }),
    );
    out.counter(
        "yakk_signal_turn_shortcut_packets_total",
        "ChannelData the embedded TURN relay passed straight between two of its UDP allocations.",
        m.shortcut_packets(),
    );
    for (via, what, stream) in [
        ("tls", "TURN-over-TLS", m.tls()),
        ("tcp", "TURN-over-TCP", m.tcp()),
    ] {
        out.gauge(
            &format!("yakk_signal_turn_{via}_connections"),
            &format!("Open {what} connections."),
            stream.open(),
        );
        out.counter(
            &format!("yakk_signal_turn_{via}_connections_total"),
            &format!("{what} connections accepted."),
            stream.accepted(),
        );
        out.counter(
            &format!("yakk_signal_turn_{via}_dropped_frames_total"),
            &format!("Frames for {what} clients dropped because the client's queue was full."),
            stream.dropped_frames(),
        );
        out.counters(
            &format!("yakk_signal_turn_{via}_closed_total"),
            &format!("{what} connections the relay refused or closed, by reason."),
            StreamClose::ALL.iter().map(|&why| {
                (
                    vec![("reason", why.label().to_string())],
                    stream.closed(why),
                )
            }),
        );
    }
    let (to, from) = m.relayed_bytes();
    out.counters(
        "yakk_signal_turn_relayed_bytes_total",
        "Payload bytes relayed by the embedded TURN relay.",
        [
            (vec![("direction", "to_clients".to_string())], to),
            (vec![("direction", "from_clients".to_string())], from),
        ],
    );
}
