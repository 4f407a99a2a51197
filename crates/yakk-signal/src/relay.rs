//! The embedded TURN relay of `yakk signal --turn-listen ADDR`: UDP and TCP on the same port,
//! UDP relayed addresses on `--turn-relay-ip` within `--turn-ports`, credentials of the TURN
//! REST scheme that [`crate::ice`] hands room members (username `"<unix expiry>[:<user>]"`,
//! password `base64(HMAC-SHA1(secret, username))`).
//!
//! The protocol work (allocations, permissions, channels, the relay sockets) is the
//! `medea-turn` crate's. What is ours sits in front of it, as a wrapper around each of its
//! transports ([`Guarded`]) that sees every request before the crate does and every packet it
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
//!   would. Relay-to-client traffic is measured on both transports; client-to-relay traffic
//!   on UDP only (the crate hands TCP ChannelData over already decoded, without its size).
//! - **Metrics** ([`RelayMetrics`]): live allocations, allocations made, refusals by reason,
//!   relayed bytes each way.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use medea_turn::attr::{
    Attribute, Data, ErrorCode, Lifetime, MessageIntegrity, Realm, Username, XorPeerAddress,
};
use medea_turn::transport::{self, Request, TcpServer, Transport};
use secrecy::SecretString;
use stun_codec::rfc5389::errors::Unauthorized;
use stun_codec::rfc5389::methods::BINDING;
use stun_codec::rfc5766::errors::{AllocationQuotaReached, Forbidden};
use stun_codec::rfc5766::methods::{ALLOCATE, DATA, REFRESH, SEND};
use stun_codec::{Message, MessageClass};
use tokio::net::{TcpListener, UdpSocket};

use crate::ice::rest_password;
use crate::ratelimit::{ClientKey, RateLimiter};

/// The realm the relay announces (any string works: REST credentials do not depend on it).
pub const REALM: &str = "yakk";
/// Requests without MESSAGE-INTEGRITY (each costs the crate a remembered nonce) allowed per
/// client address per minute, and in all per second.
const CHALLENGES_PER_MINUTE_PER_CLIENT: u32 = 120;
const CHALLENGES_PER_SECOND: f64 = 100.0;
const CHALLENGE_BURST: f64 = 400.0;
/// Client addresses the challenge limiter tracks at most.
const CHALLENGE_CLIENTS: usize = 10_000;
/// SO_RCVBUF/SO_SNDBUF of the listening UDP socket (Linux caps it at net.core.rmem_max /
/// wmem_max): every client's ChannelData arrives there, in bursts (SCTP does not pace).
const LISTEN_BUFFER: usize = 4 << 20;
/// An Allocate we let through and whose response we have not seen is forgotten after this.
const PENDING_TIMEOUT: Duration = Duration::from_secs(5);

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

/// The relay's counters.
#[derive(Debug, Default)]
pub struct RelayMetrics {
    allocations_total: AtomicU64,
    refused: [AtomicU64; Refusal::ALL.len()],
    bytes_to_clients: AtomicU64,
    bytes_from_clients: AtomicU64,
}

impl RelayMetrics {
    fn refuse(&self, why: Refusal) {
        self.refused[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// How often the relay refused for `why`.
    pub fn refused(&self, why: Refusal) -> u64 {
        self.refused[why as usize].load(Ordering::Relaxed)
    }

    /// Allocations made so far.
    pub fn allocations_total(&self) -> u64 {
        self.allocations_total.load(Ordering::Relaxed)
    }

    /// Relayed payload bytes: (relay to clients, clients to relay over UDP).
    pub fn relayed_bytes(&self) -> (u64, u64) {
        (
            self.bytes_to_clients.load(Ordering::Relaxed),
            self.bytes_from_clients.load(Ordering::Relaxed),
        )
    }
}

/// A token bucket of bytes (one second of burst).
#[derive(Debug, Clone, Copy)]
struct ByteBucket {
    tokens: f64,
    updated: Instant,
}

impl ByteBucket {
    fn new(rate: u64, now: Instant) -> Self {
        ByteBucket {
            tokens: rate as f64,
            updated: now,
        }
    }

    fn take(&mut self, rate: u64, n: usize, now: Instant) -> bool {
        let cap = rate as f64;
        let dt = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + dt * cap).min(cap);
        self.updated = now;
        if self.tokens >= n as f64 {
            self.tokens -= n as f64;
            true
        } else {
            false
        }
    }
}

/// One live allocation, as seen from the outside.
#[derive(Debug)]
struct Live {
    username: String,
    expires: Instant,
    to_client: ByteBucket,
    from_client: ByteBucket,
}

/// Allocations are keyed by transport protocol and client address (the 5-tuple, less the
/// server's address, which is one per transport).
type Key = (u8, SocketAddr);

struct State {
    live: HashMap<Key, Live>,
    pending: HashMap<Key, (String, Instant)>,
    per_client: RateLimiter,
    global_tokens: f64,
    global_updated: Instant,
}

/// What the wrappers of both transports share: configuration, allocation book-keeping, metrics.
pub struct Gate {
    secret: String,
    allow_private_peers: bool,
    max_allocations: usize,
    max_per_user: usize,
    max_rate: u64,
    state: Mutex<State>,
    metrics: RelayMetrics,
}

impl Gate {
    fn new(config: &RelayConfig) -> Gate {
        let now = Instant::now();
        Gate {
            secret: config.secret.clone(),
            allow_private_peers: config.allow_private_peers,
            max_allocations: config.max_allocations,
            max_per_user: config.max_allocations_per_user,
            max_rate: config.max_rate,
            state: Mutex::new(State {
                live: HashMap::new(),
                pending: HashMap::new(),
                per_client: RateLimiter::new(CHALLENGES_PER_MINUTE_PER_CLIENT, CHALLENGE_CLIENTS),
                global_tokens: CHALLENGE_BURST,
                global_updated: now,
            }),
            metrics: RelayMetrics::default(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while the lock was held leaves whole maps and counters: keep using them.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn metrics(&self) -> &RelayMetrics {
        &self.metrics
    }

    /// Live allocations (expired ones are forgotten on the way).
    pub fn live_allocations(&self) -> usize {
        let mut s = self.state();
        prune(&mut s, Instant::now());
        s.live.len()
    }

    /// The password of `username`, if it is a REST username (`"<expiry>"` or
    /// `"<expiry>:<user>"`), with its expiry.
    fn password(&self, username: &str) -> Option<(String, u64)> {
        let expiry = username.split_once(':').map_or(username, |(e, _)| e);
        let expiry: u64 = expiry.parse().ok()?;
        Some((rest_password(&self.secret, username), expiry))
    }

    /// May the relay send to `peer`?
    fn peer_allowed(&self, peer: SocketAddr) -> bool {
        self.allow_private_peers || is_global(peer.ip())
    }

    /// May a request without credentials from `from` reach the crate (it costs a nonce)?
    fn allow_challenge(&self, from: SocketAddr) -> bool {
        let now = Instant::now();
        let mut s = self.state();
        let dt = now
            .saturating_duration_since(s.global_updated)
            .as_secs_f64();
        s.global_tokens = (s.global_tokens + dt * CHALLENGES_PER_SECOND).min(CHALLENGE_BURST);
        s.global_updated = now;
        if s.global_tokens < 1.0 || !s.per_client.allow(ClientKey::from(from.ip()), now) {
            return false;
        }
        s.global_tokens -= 1.0;
        true
    }

    /// Reserves a place for an Allocate from `key` by `username`; false if over a quota.
    fn reserve(&self, key: Key, username: &str) -> Reserve {
        let now = Instant::now();
        let mut s = self.state();
        prune(&mut s, now);
        if s.live.contains_key(&key) {
            // The crate answers 437 (Allocation Mismatch) itself.
            return Reserve::Existing;
        }
        s.pending.remove(&key);
        let total = s.live.len() + s.pending.len();
        let mine = s.live.values().filter(|l| l.username == username).count()
            + s.pending.values().filter(|(u, _)| u == username).count();
        if total >= self.max_allocations || mine >= self.max_per_user {
            return Reserve::OverQuota;
        }
        s.pending.insert(key, (username.to_string(), now));
        Reserve::Ok
    }

    /// The crate answered an Allocate from `key`.
    fn allocated(&self, key: Key, lifetime: Option<Duration>) {
        let now = Instant::now();
        let mut s = self.state();
        let Some((username, _)) = s.pending.remove(&key) else {
            return;
        };
        if let Some(lifetime) = lifetime {
            self.metrics
                .allocations_total
                .fetch_add(1, Ordering::Relaxed);
            s.live.insert(
                key,
                Live {
                    username,
                    expires: now + lifetime,
                    to_client: ByteBucket::new(self.max_rate, now),
                    from_client: ByteBucket::new(self.max_rate, now),
                },
            );
        }
    }

    /// The crate refreshed (or, with a zero lifetime, deleted) the allocation of `key`.
    fn refreshed(&self, key: Key, lifetime: Duration) {
        let mut s = self.state();
        if lifetime.is_zero() {
            s.live.remove(&key);
        } else if let Some(l) = s.live.get_mut(&key) {
            l.expires = Instant::now() + lifetime;
        }
    }

    /// Counts `n` relayed bytes of the allocation of `key`; false if over its bandwidth.
    fn relayed(&self, key: Key, n: usize, to_client: bool) -> bool {
        if self.max_rate > 0 {
            let now = Instant::now();
            let mut s = self.state();
            if let Some(l) = s.live.get_mut(&key) {
                let bucket = if to_client {
                    &mut l.to_client
                } else {
                    &mut l.from_client
                };
                if !bucket.take(self.max_rate, n, now) {
                    drop(s);
                    self.metrics.refuse(Refusal::Bandwidth);
                    return false;
                }
            }
        }
        let counter = if to_client {
            &self.metrics.bytes_to_clients
        } else {
            &self.metrics.bytes_from_clients
        };
        counter.fetch_add(n as u64, Ordering::Relaxed);
        true
    }
}

enum Reserve {
    Ok,
    Existing,
    OverQuota,
}

fn prune(s: &mut State, now: Instant) {
    s.live.retain(|_, l| l.expires > now);
    s.pending
        .retain(|_, (_, since)| now.saturating_duration_since(*since) < PENDING_TIMEOUT);
}

/// Whether `ip` is an address on the Internet: not unspecified, loopback, private (RFC 1918,
/// unique local), shared (RFC 6598), link-local, multicast, broadcast or documentation.
pub fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_global(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x2001 && s[1] == 0x0db8))
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The crate's view of credentials: the password of a REST username. Requests reach it only
/// after [`Guarded`] checked them, so this is a second, identical check.
struct RestAuth {
    gate: Arc<Gate>,
}

impl medea_turn::AuthHandler for RestAuth {
    fn auth_handle(
        &self,
        username: &str,
        _realm: &str,
        _src: SocketAddr,
    ) -> Result<SecretString, medea_turn::Error> {
        self.gate
            .password(username)
            .map(|(p, _)| SecretString::from(p))
            .ok_or(medea_turn::Error::NoSuchUser)
    }
}

/// One of the crate's transports, behind our checks (see the module's documentation).
struct Guarded {
    inner: Arc<dyn Transport + Send + Sync>,
    /// The UDP socket itself, to peek at a datagram's size before the crate reads it.
    udp: Option<Arc<UdpSocket>>,
    proto: u8,
    gate: Arc<Gate>,
}

impl fmt::Debug for Guarded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guarded")
            .field("local_addr", &self.inner.local_addr())
            .field("proto", &self.proto)
            .finish_non_exhaustive()
    }
}

/// What to do with a request.
enum Verdict {
    Pass,
    Drop,
    Refuse(ErrorCode, Refusal),
}

impl Guarded {
    async fn refuse(&self, msg: &Message<Attribute>, code: ErrorCode, to: SocketAddr) {
        let mut reply = Message::new(
            MessageClass::ErrorResponse,
            msg.method(),
            msg.transaction_id(),
        );
        reply.add_attribute(code);
        if let Err(e) = self.inner.send_msg_to(reply, to).await {
            tracing::debug!("turn: cannot answer {to}: {e}");
        }
    }

    fn judge(&self, msg: &Message<Attribute>, from: SocketAddr) -> Verdict {
        let (method, class) = (msg.method(), msg.class());
        if class != MessageClass::Request {
            // Send indications are checked by the crate against the allocation; anything else
            // (responses, other indications) it ignores.
            return Verdict::Pass;
        }
        if method == BINDING {
            return Verdict::Pass;
        }
        let Some(integrity) = msg.get_attribute::<MessageIntegrity>() else {
            // The first request of a client: the crate answers 401 with a nonce it remembers.
            return if self.gate.allow_challenge(from) {
                Verdict::Pass
            } else {
                self.gate.metrics.refuse(Refusal::RateLimited);
                Verdict::Drop
            };
        };
        let (Some(username), Some(realm)) = (
            msg.get_attribute::<Username>(),
            msg.get_attribute::<Realm>(),
        ) else {
            return Verdict::Refuse(Unauthorized.into(), Refusal::Auth);
        };
        let Some((password, expiry)) = self.gate.password(username.name()) else {
            return Verdict::Refuse(Unauthorized.into(), Refusal::Auth);
        };
        if integrity
            .check_long_term_credential(username, realm, &password)
            .is_err()
        {
            return Verdict::Refuse(Unauthorized.into(), Refusal::Auth);
        }
        if let Some(peer) = msg.get_attribute::<XorPeerAddress>()
            && !self.gate.peer_allowed(peer.address())
        {
            return Verdict::Refuse(Forbidden.into(), Refusal::ForbiddenPeer);
        }
        if method == ALLOCATE {
            if expiry <= unix_now() {
                return Verdict::Refuse(Unauthorized.into(), Refusal::Expired);
            }
            match self.gate.reserve((self.proto, from), username.name()) {
                Reserve::Ok | Reserve::Existing => {}
                Reserve::OverQuota => {
                    return Verdict::Refuse(AllocationQuotaReached.into(), Refusal::Quota);
                }
            }
        }
        Verdict::Pass
    }
}

#[async_trait::async_trait]
impl Transport for Guarded {
    async fn recv_from(&self) -> Result<(Request, SocketAddr), transport::Error> {
        loop {
            // The size of a ChannelData datagram, read before the crate decodes it.
            let mut channel_len = None;
            if let Some(udp) = &self.udp {
                let mut head = [0u8; 4];
                if let Ok((n, _)) = udp.peek_from(&mut head).await
                    && n == 4
                    && (0x40..=0x7f).contains(&head[0])
                {
                    channel_len = Some(usize::from(u16::from_be_bytes([head[2], head[3]])));
                }
            }
            let (req, from) = self.inner.recv_from().await?;
            match &req {
                Request::ChannelData(_) => {
                    if let Some(n) = channel_len
                        && !self.gate.relayed((self.proto, from), n, false)
                    {
                        continue;
                    }
                    return Ok((req, from));
                }
                Request::Message(msg) => {
                    if msg.method() == SEND && msg.class() == MessageClass::Indication {
                        if let Some(peer) = msg.get_attribute::<XorPeerAddress>()
                            && !self.gate.peer_allowed(peer.address())
                        {
                            self.gate.metrics.refuse(Refusal::ForbiddenPeer);
                            continue;
                        }
                        let n = msg.get_attribute::<Data>().map_or(0, |d| d.data().len());
                        if self.udp.is_some() && !self.gate.relayed((self.proto, from), n, false) {
                            continue;
                        }
                        return Ok((req, from));
                    }
                    match self.judge(msg, from) {
                        Verdict::Pass => return Ok((req, from)),
                        Verdict::Drop => continue,
                        Verdict::Refuse(code, why) => {
                            self.gate.metrics.refuse(why);
                            self.refuse(msg, code, from).await;
                            continue;
                        }
                    }
                }
            }
        }
    }

    async fn send_to(
        &self,
        data: Cow<'_, [u8]>,
        target: SocketAddr,
    ) -> Result<(), transport::Error> {
        // What the crate sends through here is ChannelData from a peer (its STUN messages go
        // through `send_msg_to`).
        if data.len() >= 4 && (0x40..=0x7f).contains(&data[0]) {
            let n = usize::from(u16::from_be_bytes([data[2], data[3]]));
            if !self.gate.relayed((self.proto, target), n, true) {
                return Ok(());
            }
        }
        self.inner.send_to(data, target).await
    }

    async fn send_msg_to(
        &self,
        msg: Message<Attribute>,
        dst: SocketAddr,
    ) -> Result<(), transport::Error> {
        let key = (self.proto, dst);
        let (method, class) = (msg.method(), msg.class());
        if method == ALLOCATE {
            match class {
                MessageClass::SuccessResponse => self.gate.allocated(
                    key,
                    Some(
                        msg.get_attribute::<Lifetime>()
                            .map_or(Duration::from_secs(600), Lifetime::lifetime),
                    ),
                ),
                MessageClass::ErrorResponse => self.gate.allocated(key, None),
                _ => {}
            }
        } else if method == REFRESH && class == MessageClass::SuccessResponse {
            if let Some(l) = msg.get_attribute::<Lifetime>() {
                self.gate.refreshed(key, l.lifetime());
            }
        } else if method == DATA && class == MessageClass::Indication {
            let n = msg.get_attribute::<Data>().map_or(0, |d| d.data().len());
            if !self.gate.relayed(key, n, true) {
                return Ok(());
            }
        }
        self.inner.send_msg_to(msg, dst).await
    }

    fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr()
    }

    fn proto(&self) -> u8 {
        self.proto
    }
}

/// A running relay; dropping it (or [`EmbeddedRelay::stop`]) stops it.
pub struct EmbeddedRelay {
    server: medea_turn::Server,
    udp_addr: SocketAddr,
    tcp_addr: Option<SocketAddr>,
    gate: Arc<Gate>,
}

impl fmt::Debug for EmbeddedRelay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedRelay")
            .field("udp_addr", &self.udp_addr)
            .field("tcp_addr", &self.tcp_addr)
            .finish_non_exhaustive()
    }
}

impl EmbeddedRelay {
    /// Binds UDP (and TCP on the same port) and starts relaying.
    pub async fn start(config: &RelayConfig) -> std::io::Result<EmbeddedRelay> {
        let udp = Arc::new(UdpSocket::bind(config.listen).await?);
        {
            let sock = socket2::SockRef::from(&*udp);
            // Best effort: a smaller buffer only means more drops under bursts.
            let _ = sock.set_recv_buffer_size(LISTEN_BUFFER);
            let _ = sock.set_send_buffer_size(LISTEN_BUFFER);
        }
        let udp_addr = udp.local_addr()?;
        let gate = Arc::new(Gate::new(config));
        let mut connections: Vec<Arc<dyn Transport + Send + Sync>> = vec![Arc::new(Guarded {
            inner: udp.clone(),
            udp: Some(udp),
            proto: 17,
            gate: gate.clone(),
        })];
        let mut tcp_addr = None;
        if config.tcp {
            let listener = TcpListener::bind(udp_addr).await?;
            tcp_addr = Some(listener.local_addr()?);
            let tcp = TcpServer::new(listener)
                .map_err(|e| std::io::Error::other(format!("TURN over TCP: {e}")))?;
            connections.push(Arc::new(Guarded {
                inner: Arc::new(tcp),
                udp: None,
                proto: 6,
                gate: gate.clone(),
            }));
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
                channel_bind_lifetime: Duration::from_secs(600),
                alloc_close_notify: None,
            }),
        });
        Ok(EmbeddedRelay {
            server,
            udp_addr,
            tcp_addr,
            gate,
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

    /// Its book-keeping and counters (shared with `/metrics`).
    pub fn gate(&self) -> Arc<Gate> {
        self.gate.clone()
    }

    /// Whether the crate's tasks are all still running.
    pub fn healthy(&self) -> bool {
        self.server.healthz()
    }

    /// Stops listening and drops every allocation.
    pub fn stop(self) {
        drop(self.server);
    }
}

/// The relay's lines of `/metrics`.
pub fn render_metrics(gate: &Gate, out: &mut String) {
    let m = gate.metrics();
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {value}");
    };
    metric(
        "yakk_signal_turn_allocations",
        "gauge",
        "Live allocations on the embedded TURN relay.",
        gate.live_allocations() as u64,
    );
    metric(
        "yakk_signal_turn_allocations_total",
        "counter",
        "Allocations made by the embedded TURN relay.",
        m.allocations_total(),
    );
    let _ = writeln!(
        out,
        "# HELP yakk_signal_turn_refused_total Requests and packets the embedded TURN relay refused or dropped, by reason."
    );
    let _ = writeln!(out, "# TYPE yakk_signal_turn_refused_total counter");
    for why in Refusal::ALL {
        let _ = writeln!(
            out,
            "yakk_signal_turn_refused_total{{reason=\"{}\"}} {}",
            why.label(),
            m.refused(why)
        );
    }
    let (to, from) = m.relayed_bytes();
    let _ = writeln!(
        out,
        "# HELP yakk_signal_turn_relayed_bytes_total Payload bytes relayed by the embedded TURN relay (from_clients: over UDP only)."
    );
    let _ = writeln!(out, "# TYPE yakk_signal_turn_relayed_bytes_total counter");
    let _ = writeln!(
        out,
        "yakk_signal_turn_relayed_bytes_total{{direction=\"to_clients\"}} {to}"
    );
    let _ = writeln!(
        out,
        "yakk_signal_turn_relayed_bytes_total{{direction=\"from_clients\"}} {from}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ice::turn_rest_credentials;

    fn gate() -> Gate {
        Gate::new(&RelayConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            relay_ip: [127, 0, 0, 1].into(),
            ports: (50000, 50010),
            secret: "north".into(),
            tcp: false,
            max_allocations: 2,
            max_allocations_per_user: 1,
            max_rate: 0,
            credential_ttl: Duration::from_secs(600),
            allow_private_peers: false,
        })
    }

    #[test]
    fn passwords_are_those_handed_out() {
        let g = gate();
        let (u, p) = turn_rest_credentials("north", 1_700_000_000, "123");
        assert_eq!(g.password(&u), Some((p, 1_700_000_000)));
        assert_eq!(
            g.password("1700000000"),
            Some((rest_password("north", "1700000000"), 1_700_000_000))
        );
        assert_eq!(g.password("soon:123"), None);
        assert_eq!(g.password(""), None);
    }

    #[test]
    fn quotas_count_live_and_pending_allocations() {
        let g = gate();
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let c: SocketAddr = "127.0.0.1:3".parse().unwrap();
        assert!(matches!(g.reserve((17, a), "1:x"), Reserve::Ok));
        // Per user: one.
        assert!(matches!(g.reserve((17, b), "1:x"), Reserve::OverQuota));
        g.allocated((17, a), Some(Duration::from_secs(60)));
        assert_eq!(g.live_allocations(), 1);
        assert!(matches!(g.reserve((17, a), "1:x"), Reserve::Existing));
        assert!(matches!(g.reserve((17, b), "1:y"), Reserve::Ok));
        g.allocated((17, b), Some(Duration::from_secs(60)));
        // In all: two.
        assert!(matches!(g.reserve((17, c), "1:z"), Reserve::OverQuota));
        g.refreshed((17, a), Duration::ZERO);
        assert!(matches!(g.reserve((17, c), "1:z"), Reserve::Ok));
        g.allocated((17, c), None);
        assert_eq!(g.live_allocations(), 1);
        assert_eq!(g.metrics().allocations_total(), 2);
    }

    #[test]
    fn only_global_peers_by_default() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_global(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["203.0.114.1", "8.8.8.8", "2a00:1450::1", "::ffff:8.8.8.8"] {
            assert!(is_global(ip.parse().unwrap()), "{ip}");
        }
        let g = gate();
        assert!(!g.peer_allowed("127.0.0.1:9".parse().unwrap()));
        assert!(g.peer_allowed("8.8.8.8:9".parse().unwrap()));
    }

    #[test]
    fn bandwidth_is_capped_per_allocation() {
        let mut b = ByteBucket::new(1000, Instant::now());
        let t = Instant::now();
        assert!(b.take(1000, 600, t));
        assert!(!b.take(1000, 600, t));
        assert!(b.take(1000, 600, t + Duration::from_millis(300)));
    }
}
