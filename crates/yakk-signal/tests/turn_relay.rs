//! The embedded TURN relay (`yakk signal --turn-listen`) over real sockets on 127.0.0.1, driven
//! by a small TURN client written here on `stun_codec` (so that every request, good or bad, is
//! ours to shape): credentials from a room allocate and relay both ways (Send/Data indications
//! and ChannelData); missing, wrong and expired credentials allocate nothing and relay nothing;
//! allocations beyond the quotas get 486; a bounded flood leaves the relay responsive and its
//! memory bounded. Over TLS on the signalling port (`turns:`), with a certificate made here:
//! the same relaying and refusals, the `turns:` URL with the client's host, garbage closed
//! without harm to others, connections bounded per address.

mod common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytecodec::{DecodeExt as _, EncodeExt as _};
use common::*;
use medea_turn::attr::{
    Attribute, ChannelNumber, Data, ErrorCode, Lifetime, MessageIntegrity, Nonce, Realm,
    RequestedTransport, Username, XorPeerAddress, XorRelayAddress,
};
use rustls::pki_types::CertificateDer;
use stun_codec::rfc5389::methods::BINDING;
use stun_codec::rfc5766::methods::{
    ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, DATA, REFRESH, SEND,
};
use stun_codec::{Message, MessageClass, MessageDecoder, MessageEncoder, Method, TransactionId};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpStream, UdpSocket};
use tokio_rustls::client::TlsStream;
use yakk_signal::turn::{Refusal, RelayConfig, StreamClose};
use yakk_signal::{Config, ServerHandle};
use yakk_wire::Envelope;

const SECRET: &str = "relay-test-secret";

fn relay_config(max_allocations: usize, per_user: usize) -> RelayConfig {
    RelayConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        relay_ip: [127, 0, 0, 1].into(),
        ports: (50000, 59999),
        secret: SECRET.into(),
        tcp: true,
        max_allocations,
        max_allocations_per_user: per_user,
        max_rate: 0,
        credential_ttl: Duration::from_secs(600),
        // The peers here are on 127.0.0.1.
        allow_private_peers: true,
    }
}

async fn start_relay(max_allocations: usize, per_user: usize) -> ServerHandle {
    start(Config {
        relay: Some(relay_config(max_allocations, per_user)),
        ..Config::default()
    })
    .await
}

/// Creates a room; returns the embedded relay's URLs and the credentials it came with.
async fn room_credentials(server: &ServerHandle) -> (Vec<String>, String, String) {
    let mut owner = connect(server.local_addr(), "").await;
    let created = owner.recv().await;
    let servers = created.ice_servers.expect("IceServers in the room reply");
    let relay = servers
        .iter()
        .find(|s| s.urls.iter().any(|u| u.starts_with("turn:")))
        .expect("a turn: server");
    (
        relay.urls.clone(),
        relay.username.clone().expect("username"),
        relay.credential.clone().expect("credential"),
    )
}

fn tid() -> TransactionId {
    TransactionId::new(rand_bytes())
}

fn rand_bytes() -> [u8; 12] {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let mut b = [0u8; 12];
    b[..8].copy_from_slice(&n.to_be_bytes());
    b[8..].copy_from_slice(&std::process::id().to_be_bytes());
    b
}

fn encode(msg: Message<Attribute>) -> Vec<u8> {
    MessageEncoder::<Attribute>::new()
        .encode_into_bytes(msg)
        .expect("encodable")
}

fn decode(buf: &[u8]) -> Option<Message<Attribute>> {
    MessageDecoder::<Attribute>::new()
        .decode_from_bytes(buf)
        .ok()?
        .ok()
}

fn error_code(msg: &Message<Attribute>) -> Option<u16> {
    msg.get_attribute::<ErrorCode>().map(ErrorCode::code)
}

fn channel_data(num: u16, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + data.len() + 3);
    v.extend_from_slice(&num.to_be_bytes());
    v.extend_from_slice(&(data.len() as u16).to_be_bytes());
    v.extend_from_slice(data);
    while v.len() % 4 != 0 {
        v.push(0);
    }
    v
}

/// A request of `method` with `attrs`, signed with `credentials` when there is a realm and a
/// nonce from a first challenge.
fn signed_request(
    method: Method,
    attrs: Vec<Attribute>,
    (username, password): (&str, &str),
    challenge: Option<(&Realm, &Nonce)>,
) -> Message<Attribute> {
    let mut msg = Message::new(MessageClass::Request, method, tid());
    for a in attrs {
        msg.add_attribute(a);
    }
    if let Some((realm, nonce)) = challenge {
        let username = Username::new(username.to_string()).unwrap();
        msg.add_attribute(username.clone());
        msg.add_attribute(realm.clone());
        msg.add_attribute(nonce.clone());
        let mi =
            MessageIntegrity::new_long_term_credential(&msg, &username, realm, password).unwrap();
        msg.add_attribute(mi);
    }
    msg
}

/// A test client's credentials, and the realm and nonce of the relay's first challenge.
struct Credentials {
    username: String,
    password: String,
    realm: Option<Realm>,
    nonce: Option<Nonce>,
}

impl Credentials {
    fn new(username: &str, password: &str) -> Credentials {
        Credentials {
            username: username.into(),
            password: password.into(),
            realm: None,
            nonce: None,
        }
    }

    /// A request of `method` with `attrs`, signed (once a first challenge gave a realm and a
    /// nonce).
    fn request(&self, method: Method, attrs: Vec<Attribute>) -> Message<Attribute> {
        signed_request(
            method,
            attrs,
            (&self.username, &self.password),
            self.realm.as_ref().zip(self.nonce.as_ref()),
        )
    }

    /// An Allocate over UDP (what every client here asks for).
    fn allocate(&self) -> Message<Attribute> {
        self.request(ALLOCATE, vec![RequestedTransport::new(17).into()])
    }

    /// Takes the realm and nonce of the first answer, a 401 challenge; true if it was one (the
    /// request is to be sent again, signed).
    fn challenged(&mut self, first: &Message<Attribute>) -> bool {
        if self.realm.is_some() {
            return false;
        }
        assert_eq!(error_code(first), Some(401), "challenge: {first:?}");
        self.realm = first.get_attribute::<Realm>().cloned();
        self.nonce = first.get_attribute::<Nonce>().cloned();
        assert!(self.realm.is_some() && self.nonce.is_some(), "{first:?}");
        true
    }
}

/// The relayed address of a successful Allocate response.
fn relayed_address(r: &Message<Attribute>) -> SocketAddr {
    assert_eq!(r.class(), MessageClass::SuccessResponse, "{r:?}");
    r.get_attribute::<XorRelayAddress>()
        .expect("XOR-RELAYED-ADDRESS")
        .address()
}

/// A TURN client over UDP, one request at a time.
struct Client {
    sock: UdpSocket,
    server: SocketAddr,
    auth: Credentials,
}

impl Client {
    async fn new(server: SocketAddr, username: &str, password: &str) -> Client {
        Client {
            sock: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            server,
            auth: Credentials::new(username, password),
        }
    }

    /// Sends `msg` and waits for the response with its transaction id (retransmitting).
    async fn transact(&self, msg: Message<Attribute>) -> Option<Message<Attribute>> {
        let id = msg.transaction_id();
        let bytes = encode(msg);
        let mut buf = vec![0u8; 2048];
        for _ in 0..3 {
            self.sock.send_to(&bytes, self.server).await.unwrap();
            let deadline = Instant::now() + Duration::from_millis(700);
            while let Ok(Ok((n, _))) =
                tokio::time::timeout_at(deadline.into(), self.sock.recv_from(&mut buf)).await
            {
                if let Some(m) = decode(&buf[..n])
                    && m.transaction_id() == id
                    && m.class() != MessageClass::Indication
                {
                    return Some(m);
                }
            }
        }
        None
    }

    fn request(&self, method: Method, attrs: Vec<Attribute>) -> Message<Attribute> {
        self.auth.request(method, attrs)
    }

    /// Allocate: the unauthenticated attempt (answered 401 with realm and nonce), then the
    /// signed one. The final response, or None if nothing came back.
    async fn allocate(&mut self) -> Option<Message<Attribute>> {
        let first = self.transact(self.auth.allocate()).await?;
        if self.auth.challenged(&first) {
            return self.transact(self.auth.allocate()).await;
        }
        Some(first)
    }

    async fn allocate_ok(&mut self) -> SocketAddr {
        relayed_address(&self.allocate().await.expect("an Allocate response"))
    }

    async fn expect_ok(&self, method: Method, attrs: Vec<Attribute>) {
        let r = self
            .transact(self.request(method, attrs))
            .await
            .expect("a response");
        assert_eq!(r.class(), MessageClass::SuccessResponse, "{r:?}");
    }

    async fn send_indication(&self, peer: SocketAddr, data: &[u8]) {
        let mut msg = Message::new(MessageClass::Indication, SEND, tid());
        msg.add_attribute(XorPeerAddress::new(peer));
        msg.add_attribute(Data::new(data.to_vec()).unwrap());
        self.sock.send_to(&encode(msg), self.server).await.unwrap();
    }

    /// The next relayed payload: a Data indication's or a ChannelData's.
    async fn relayed(&self) -> Option<Vec<u8>> {
        self.relayed_within(WAIT).await
    }

    /// What the relay passes on to this client within `within` (ChannelData or a Data
    /// indication); anything else, such as a late answer to a retransmitted request, is skipped.
    async fn relayed_within(&self, within: Duration) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 2048];
        let deadline = Instant::now() + within;
        loop {
            let (n, _) = tokio::time::timeout_at(deadline.into(), self.sock.recv_from(&mut buf))
                .await
                .ok()?
                .ok()?;
            if n >= 4 && (0x40..=0x7f).contains(&buf[0]) {
                let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
                return Some(buf[4..4 + len].to_vec());
            }
            if let Some(m) = decode(&buf[..n])
                && m.method() == DATA
                && m.class() == MessageClass::Indication
            {
                return m.get_attribute::<Data>().map(|d| d.data().to_vec());
            }
        }
    }
}

/// What arrives at `peer` within `within`: (payload, from).
async fn peer_recv(peer: &UdpSocket, within: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = vec![0u8; 2048];
    let (n, from) = tokio::time::timeout(within, peer.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    Some((buf[..n].to_vec(), from))
}

fn metric(text: &str, line_start: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
}

fn expired_credentials() -> (String, String) {
    let past = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 60;
    yakk_signal::ice::turn_rest_credentials(SECRET, past, "123")
}

/// A room member's credentials allocate a relayed address on the advertised relay, and data
/// goes both ways between the client and a UDP peer on 127.0.0.1: Send/Data indications once a
/// permission exists, ChannelData once a channel is bound. `/metrics` counts it.
#[tokio::test]
async fn room_credentials_allocate_and_relay_both_ways() {
    let server = start_relay(200, 64).await;
    let relay = server.relay_addr().expect("the relay runs");
    let (urls, username, password) = room_credentials(&server).await;
    assert_eq!(
        urls,
        vec![
            format!("turn:127.0.0.1:{}?transport=udp", relay.port()),
            format!("turn:127.0.0.1:{}?transport=tcp", relay.port()),
        ]
    );
    let mut c = Client::new(relay, &username, &password).await;
    let relayed = c.allocate_ok().await;
    assert_eq!(relayed.ip(), std::net::IpAddr::from([127, 0, 0, 1]));
    assert!((50000..=59999).contains(&relayed.port()), "{relayed}");

    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    // No permission yet: nothing reaches the peer.
    c.send_indication(peer_addr, b"too early").await;
    assert!(peer_recv(&peer, Duration::from_millis(300)).await.is_none());

    c.expect_ok(
        CREATE_PERMISSION,
        vec![XorPeerAddress::new(peer_addr).into()],
    )
    .await;
    c.send_indication(peer_addr, b"hello peer").await;
    let (got, from) = peer_recv(&peer, WAIT).await.expect("relayed to the peer");
    assert_eq!(got, b"hello peer");
    assert_eq!(from, relayed, "the peer sees the relayed address");
    peer.send_to(b"hello client", relayed).await.unwrap();
    assert_eq!(c.relayed().await.as_deref(), Some(&b"hello client"[..]));

    c.expect_ok(
        CHANNEL_BIND,
        vec![
            ChannelNumber::new(0x4001).unwrap().into(),
            XorPeerAddress::new(peer_addr).into(),
        ],
    )
    .await;
    c.sock
        .send_to(&channel_data(0x4001, b"over a channel"), relay)
        .await
        .unwrap();
    let (got, _) = peer_recv(&peer, WAIT).await.expect("channel data relayed");
    assert_eq!(got, b"over a channel");
    peer.send_to(b"channel back", relayed).await.unwrap();
    assert_eq!(c.relayed().await.as_deref(), Some(&b"channel back"[..]));

    let text = server.metrics_text();
    assert_eq!(metric(&text, "yakk_signal_turn_allocations "), 1);
    assert_eq!(metric(&text, "yakk_signal_turn_allocations_total "), 1);
    assert_eq!(
        metric(
            &text,
            "yakk_signal_turn_relayed_bytes_total{direction=\"to_clients\"} "
        ),
        (b"hello client".len() + b"channel back".len()) as u64
    );
    assert_eq!(
        metric(
            &text,
            "yakk_signal_turn_relayed_bytes_total{direction=\"from_clients\"} "
        ),
        // The Send indication before the permission counts: it reached the relay.
        (b"too early".len() + b"hello peer".len() + b"over a channel".len()) as u64
    );

    // Deleting the allocation (Refresh, lifetime 0) frees its place.
    c.expect_ok(REFRESH, vec![Lifetime::from_u32(0).into()])
        .await;
    assert_eq!(
        metric(&server.metrics_text(), "yakk_signal_turn_allocations "),
        0
    );
    server.shutdown().await;
}

/// Without credentials, with a wrong password, with an expired or a malformed username: 401,
/// no allocation, and nothing sent by such a client reaches a peer.
#[tokio::test]
async fn bad_credentials_allocate_nothing_and_relay_nothing() {
    let server = start_relay(200, 64).await;
    let relay = server.relay_addr().unwrap();
    let (_, username, password) = room_credentials(&server).await;
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();

    // No credentials at all: the challenge, and never an allocation.
    let anon = Client::new(relay, "", "").await;
    let r = anon
        .transact(anon.request(ALLOCATE, vec![RequestedTransport::new(17).into()]))
        .await
        .expect("a response");
    assert_eq!(r.class(), MessageClass::ErrorResponse);
    assert_eq!(error_code(&r), Some(401));

    let (expired_user, expired_pass) = expired_credentials();
    let wrong_password = format!("{password}x");
    let cases = [
        ("wrong password", username.as_str(), wrong_password.as_str()),
        ("expired", expired_user.as_str(), expired_pass.as_str()),
        ("not a REST username", "alice", "alice"),
    ];
    let mut clients = Vec::new();
    for (what, u, p) in cases {
        let mut c = Client::new(relay, u, p).await;
        let r = c.allocate().await.expect("a response");
        assert_eq!(r.class(), MessageClass::ErrorResponse, "{what}: {r:?}");
        assert_eq!(error_code(&r), Some(401), "{what}: {r:?}");
        assert!(r.get_attribute::<XorRelayAddress>().is_none());
        // Nor can it make a permission: refused (bad integrity), or ignored (an expired
        // username with a good integrity has no allocation to add one to).
        let r = c
            .transact(c.request(
                CREATE_PERMISSION,
                vec![XorPeerAddress::new(peer_addr).into()],
            ))
            .await;
        if let Some(r) = r {
            assert_eq!(r.class(), MessageClass::ErrorResponse, "{what}: {r:?}");
        }
        clients.push(c);
    }
    for c in clients.iter().chain([&anon]) {
        c.send_indication(peer_addr, b"let me through").await;
        c.sock
            .send_to(&channel_data(0x4000, b"or this way"), relay)
            .await
            .unwrap();
    }
    assert!(
        peer_recv(&peer, Duration::from_millis(500)).await.is_none(),
        "something was relayed without credentials"
    );
    let text = server.metrics_text();
    assert_eq!(metric(&text, "yakk_signal_turn_allocations "), 0);
    assert_eq!(metric(&text, "yakk_signal_turn_allocations_total "), 0);
    let gate = server.relay_gate().unwrap();
    assert!(gate.metrics().refused(Refusal::Auth) >= 4, "{text}");
    assert_eq!(gate.metrics().refused(Refusal::Expired), 1, "{text}");
    assert_eq!(gate.metrics().relayed_bytes().0, 0);

    // The same relay still serves good credentials.
    let mut good = Client::new(relay, &username, &password).await;
    good.allocate_ok().await;
    server.shutdown().await;
}

/// Allocations beyond the quota in all (3 here) or per username (2) get 486; deleting one
/// makes room again.
#[tokio::test]
async fn allocations_beyond_the_quotas_are_refused() {
    let server = start_relay(3, 2).await;
    let relay = server.relay_addr().unwrap();
    let (_, ua, pa) = room_credentials(&server).await;
    // Another room, other credentials (its name is in the username).
    let (_, ub, pb) = room_credentials(&server).await;
    assert_ne!(ua, ub);

    let mut a1 = Client::new(relay, &ua, &pa).await;
    let mut a2 = Client::new(relay, &ua, &pa).await;
    let mut a3 = Client::new(relay, &ua, &pa).await;
    a1.allocate_ok().await;
    a2.allocate_ok().await;
    let r = a3.allocate().await.expect("a response");
    assert_eq!(error_code(&r), Some(486), "per username: {r:?}");

    let mut b1 = Client::new(relay, &ub, &pb).await;
    let mut b2 = Client::new(relay, &ub, &pb).await;
    b1.allocate_ok().await;
    let r = b2.allocate().await.expect("a response");
    assert_eq!(error_code(&r), Some(486), "in all: {r:?}");
    let gate = server.relay_gate().unwrap();
    assert_eq!(gate.metrics().refused(Refusal::Quota), 2);
    assert_eq!(gate.live_allocations(), 3);

    a1.expect_ok(REFRESH, vec![Lifetime::from_u32(0).into()])
        .await;
    let r = b2
        .transact(b2.request(ALLOCATE, vec![RequestedTransport::new(17).into()]))
        .await
        .expect("a response");
    assert_eq!(r.class(), MessageClass::SuccessResponse, "{r:?}");
    assert_eq!(gate.live_allocations(), 3);
    server.shutdown().await;
}

/// By default the relay relays to Internet addresses only: a permission, a channel or a Send
/// indication for a loopback or private peer gets 403 (or is dropped), and nothing reaches it.
#[tokio::test]
async fn loopback_and_private_peers_are_forbidden_by_default() {
    let server = start(Config {
        relay: Some(RelayConfig {
            allow_private_peers: false,
            ..relay_config(200, 64)
        }),
        ..Config::default()
    })
    .await;
    let relay = server.relay_addr().unwrap();
    let (_, username, password) = room_credentials(&server).await;
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let mut c = Client::new(relay, &username, &password).await;
    c.allocate_ok().await;
    let private: SocketAddr = "192.168.1.10:5000".parse().unwrap();
    for target in [peer_addr, private] {
        let r = c
            .transact(c.request(CREATE_PERMISSION, vec![XorPeerAddress::new(target).into()]))
            .await
            .expect("a response");
        assert_eq!(error_code(&r), Some(403), "permission for {target}: {r:?}");
        let r = c
            .transact(c.request(
                CHANNEL_BIND,
                vec![
                    ChannelNumber::new(0x4002).unwrap().into(),
                    XorPeerAddress::new(target).into(),
                ],
            ))
            .await
            .expect("a response");
        assert_eq!(error_code(&r), Some(403), "channel to {target}: {r:?}");
    }
    c.send_indication(peer_addr, b"to the host itself").await;
    assert!(peer_recv(&peer, Duration::from_millis(400)).await.is_none());
    let m = server.relay_gate().unwrap();
    assert_eq!(m.metrics().refused(Refusal::ForbiddenPeer), 5);
    server.shutdown().await;
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A bounded flood within 10 s: 2,000 Allocates with bad credentials, 2,000 without any (each
/// would cost the crate a remembered nonce: they are rate-limited), and 20,000 ChannelData and
/// Send indications to peers nobody allocated for. Nothing is relayed, the relay's memory
/// stays bounded, and a good client allocates and relays right after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_leaves_the_relay_responsive_and_bounded() {
    let server = start_relay(200, 64).await;
    let relay = server.relay_addr().unwrap();
    let (_, username, password) = room_credentials(&server).await;
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let before = rss_kib();
    let started = Instant::now();

    // A realm and a nonce to sign the bad requests with, as a real client would have.
    let mut probe = Client::new(relay, &username, &format!("{password}-wrong")).await;
    let r = probe.allocate().await.expect("a response");
    assert_eq!(error_code(&r), Some(401));

    let mut senders = Vec::new();
    for _ in 0..8 {
        senders.push(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    }
    let bad = probe.request(ALLOCATE, vec![RequestedTransport::new(17).into()]);
    let bad = encode(bad);
    let mut sent = 0usize;
    for i in 0..2_000 {
        // Each with its own transaction id.
        let mut b = bad.clone();
        b[8..20].copy_from_slice(&rand_bytes());
        senders[i % 8].send_to(&b, relay).await.unwrap();
        let anon = Message::<Attribute>::new(MessageClass::Request, ALLOCATE, tid());
        senders[i % 8].send_to(&encode(anon), relay).await.unwrap();
        sent += 2;
        // Paced (about 10,000 datagrams a second): faster, the kernel drops most of them
        // before the relay sees them, and the test would measure the socket buffer.
        if i % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    for i in 0..10_000 {
        let s = &senders[i % 8];
        s.send_to(&channel_data(0x4000 + (i % 16) as u16, &[0u8; 200]), relay)
            .await
            .unwrap();
        let mut ind = Message::<Attribute>::new(MessageClass::Indication, SEND, tid());
        ind.add_attribute(XorPeerAddress::new(peer_addr));
        ind.add_attribute(Data::new(vec![1u8; 200]).unwrap());
        s.send_to(&encode(ind), relay).await.unwrap();
        sent += 2;
        if i % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let flood_secs = started.elapsed().as_secs_f64();
    assert!(flood_secs < 10.0, "the flood took {flood_secs:.1} s");
    eprintln!("flood: {sent} datagrams in {flood_secs:.2} s");

    // Responsive: a good client gets an allocation and relays, promptly.
    let t = Instant::now();
    let mut good = Client::new(relay, &username, &password).await;
    let relayed = good.allocate_ok().await;
    good.expect_ok(
        CREATE_PERMISSION,
        vec![XorPeerAddress::new(peer_addr).into()],
    )
    .await;
    good.send_indication(peer_addr, b"still here").await;
    // Only the good client's datagram reaches the peer.
    let (got, from) = peer_recv(&peer, WAIT)
        .await
        .expect("relayed after the flood");
    assert_eq!((got.as_slice(), from), (&b"still here"[..], relayed));
    let setup = t.elapsed();
    assert!(
        setup < Duration::from_secs(5),
        "took {setup:?} after the flood"
    );
    assert!(peer_recv(&peer, Duration::from_millis(300)).await.is_none());

    let after = rss_kib();
    let gate = server.relay_gate().unwrap();
    let m = gate.metrics();
    eprintln!(
        "flood: RSS {before} -> {after} KiB; refused auth {}, rate-limited {}; good client in {setup:?}",
        m.refused(Refusal::Auth),
        m.refused(Refusal::RateLimited)
    );
    assert!(
        m.refused(Refusal::Auth) >= 1_500,
        "bad credentials were refused: {}",
        m.refused(Refusal::Auth)
    );
    assert!(
        m.refused(Refusal::RateLimited) >= 1_500,
        "challenges were rate-limited: {}",
        m.refused(Refusal::RateLimited)
    );
    assert_eq!(gate.live_allocations(), 1);
    assert!(
        after.saturating_sub(before) < 64 * 1024,
        "RSS grew from {before} to {after} KiB"
    );
    server.shutdown().await;
}

/// Shutting the server down (what SIGTERM does) stops the relay: its port and its allocations'
/// relayed ports are released, and nothing answers there any more.
#[tokio::test]
async fn shutdown_stops_the_relay_and_its_allocations() {
    let server = start_relay(200, 64).await;
    let relay = server.relay_addr().unwrap();
    let (_, username, password) = room_credentials(&server).await;
    let mut c = Client::new(relay, &username, &password).await;
    let relayed = c.allocate_ok().await;
    server.shutdown().await;
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let listen = std::net::UdpSocket::bind(relay);
        let tcp = std::net::TcpListener::bind(relay);
        let alloc = std::net::UdpSocket::bind(relayed);
        if listen.is_ok() && tcp.is_ok() && alloc.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still bound after shutdown: udp {:?}, tcp {:?}, relayed {:?}",
            listen.err(),
            tcp.err(),
            alloc.err()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `max_rate`: an allocation relays at most that many bytes per second each way (one second of
/// burst); the rest is dropped and counted.
#[tokio::test]
async fn bandwidth_per_allocation_is_capped() {
    let server = start(Config {
        relay: Some(RelayConfig {
            max_rate: 2_000,
            ..relay_config(200, 64)
        }),
        ..Config::default()
    })
    .await;
    let relay = server.relay_addr().unwrap();
    let (_, username, password) = room_credentials(&server).await;
    let mut c = Client::new(relay, &username, &password).await;
    let relayed = c.allocate_ok().await;
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    c.expect_ok(
        CREATE_PERMISSION,
        vec![XorPeerAddress::new(peer_addr).into()],
    )
    .await;
    // 20 × 500 bytes at once, each way: about 4 fit in the burst.
    for _ in 0..20 {
        c.send_indication(peer_addr, &[7u8; 500]).await;
        peer.send_to(&[9u8; 500], relayed).await.unwrap();
    }
    let mut to_peer = 0;
    while peer_recv(&peer, Duration::from_millis(300)).await.is_some() {
        to_peer += 1;
    }
    let mut to_client = 0;
    let mut buf = vec![0u8; 2048];
    while let Ok(Ok(_)) =
        tokio::time::timeout(Duration::from_millis(300), c.sock.recv_from(&mut buf)).await
    {
        to_client += 1;
    }
    assert!(
        (3..=6).contains(&to_peer),
        "{to_peer} of 20 reached the peer"
    );
    assert!(
        (3..=6).contains(&to_client),
        "{to_client} of 20 reached the client"
    );
    let gate = server.relay_gate().unwrap();
    assert!(gate.metrics().refused(Refusal::Bandwidth) >= 28);
    server.shutdown().await;
}

// The shortcut: ChannelData between two UDP allocations of one relay skips their relayed sockets.

impl Client {
    async fn bind(&self, number: u16, peer: SocketAddr) {
        self.expect_ok(
            CHANNEL_BIND,
            vec![
                ChannelNumber::new(number).unwrap().into(),
                XorPeerAddress::new(peer).into(),
            ],
        )
        .await;
    }

    async fn send_channel(&self, number: u16, data: &[u8]) {
        self.sock
            .send_to(&channel_data(number, data), self.server)
            .await
            .unwrap();
    }
}

/// The next datagram `c` receives within `within`: ChannelData as (number, payload, datagram
/// size), anything else as (0, the whole datagram, its size).
async fn next_datagram(c: &Client, within: Duration) -> Option<(u16, Vec<u8>, usize)> {
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(within, c.sock.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    if n >= 4 && (0x40..=0x7f).contains(&buf[0]) {
        let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        return Some((
            u16::from_be_bytes([buf[0], buf[1]]),
            buf[4..4 + len].to_vec(),
            n,
        ));
    }
    Some((0, buf[..n].to_vec(), n))
}

/// Two clients of one relay, allocated: (relay, server, C, C's relayed address, D, D's).
async fn two_clients(
    config: RelayConfig,
) -> (
    SocketAddr,
    ServerHandle,
    Client,
    SocketAddr,
    Client,
    SocketAddr,
) {
    let server = start(Config {
        relay: Some(config),
        ..Config::default()
    })
    .await;
    let relay = server.relay_addr().unwrap();
    let (_, username, password) = room_credentials(&server).await;
    let mut c = Client::new(relay, &username, &password).await;
    let rc = c.allocate_ok().await;
    let mut d = Client::new(relay, &username, &password).await;
    let rd = d.allocate_ok().await;
    (relay, server, c, rc, d, rd)
}

fn shortcut_packets(server: &ServerHandle) -> u64 {
    metric(
        &server.metrics_text(),
        "yakk_signal_turn_shortcut_packets_total ",
    )
}

/// A burst each way between two clients whose channels are bound to each other's relayed
/// address arrives whole and in order, on the receiver's own channel, padded as the crate pads,
/// through the shortcut; the relayed bytes are counted as on the long way.
#[tokio::test]
async fn channel_data_between_two_allocations_takes_the_shortcut() {
    let (_, server, c, rc, d, rd) = two_clients(relay_config(200, 64)).await;
    c.bind(0x4001, rd).await;
    d.bind(0x4abc, rc).await;
    assert_eq!(shortcut_packets(&server), 0);

    // Sizes 1..=1496 (the most the crate reads of a datagram is 1500 bytes), one way then the
    // other; a tag in each payload gives its order.
    let sizes: Vec<usize> = (0..120)
        .map(|i| 1 + (i * 37) % 1496)
        .chain([1496])
        .collect();
    let payload = |tag: u8, i: usize, n: usize| -> Vec<u8> {
        (0..n)
            .map(|j| if j == 0 { i as u8 } else { tag ^ (j as u8) })
            .collect()
    };
    let mut bytes = 0;
    for (from, to, number, back, tag) in [
        (&c, &d, 0x4001, 0x4abc, 0xc5),
        (&d, &c, 0x4abc, 0x4001, 0xd7),
    ] {
        for (i, &n) in sizes.iter().enumerate() {
            from.send_channel(number, &payload(tag, i, n)).await;
            bytes += n;
        }
        for (i, &n) in sizes.iter().enumerate() {
            let (num, got, size) = next_datagram(to, WAIT)
                .await
                .unwrap_or_else(|| panic!("packet {i} of {} lost", sizes.len()));
            assert_eq!(num, back, "packet {i}");
            assert_eq!(got, payload(tag, i, n), "packet {i} of {n} bytes");
            assert_eq!(size, (4 + n).next_multiple_of(4), "padding of packet {i}");
        }
    }
    assert_eq!(shortcut_packets(&server), 2 * sizes.len() as u64);
    let text = server.metrics_text();
    for dir in ["to_clients", "from_clients"] {
        assert_eq!(
            metric(
                &text,
                &format!("yakk_signal_turn_relayed_bytes_total{{direction=\"{dir}\"}} ")
            ),
            bytes as u64,
            "{dir}"
        );
    }
    server.shutdown().await;
}

/// When only C binds a channel to D's relayed address, D holds no permission for C's: nothing
/// reaches D. With a permission and no channel, the crate sends D a Data indication itself.
#[tokio::test]
async fn no_shortcut_to_a_client_without_permission_or_channel() {
    let (_, server, c, rc, d, rd) = two_clients(relay_config(200, 64)).await;
    c.bind(0x4001, rd).await;
    for _ in 0..5 {
        c.send_channel(0x4001, b"unasked for").await;
    }
    assert!(
        d.relayed_within(Duration::from_millis(500)).await.is_none(),
        "D received without a permission"
    );
    assert_eq!(shortcut_packets(&server), 0);

    d.expect_ok(CREATE_PERMISSION, vec![XorPeerAddress::new(rc).into()])
        .await;
    c.send_channel(0x4001, b"as a Data indication").await;
    assert_eq!(
        d.relayed().await.as_deref(),
        Some(&b"as a Data indication"[..])
    );
    assert_eq!(
        shortcut_packets(&server),
        0,
        "no channel back: the long way"
    );
    server.shutdown().await;
}

/// Once D deletes its allocation (Refresh, lifetime 0), C's packets on the channel still bound
/// to D's old relayed address reach no one: not D, not C, not E who allocates that very address
/// next (the relay has two ports) without a permission for C.
#[tokio::test]
async fn no_shortcut_to_a_deleted_allocation() {
    let (relay, server, c, rc, d, rd) = two_clients(RelayConfig {
        ports: (61200, 61201),
        ..relay_config(200, 64)
    })
    .await;
    c.bind(0x4001, rd).await;
    d.bind(0x4002, rc).await;
    c.send_channel(0x4001, b"before").await;
    let (_, got, _) = next_datagram(&d, WAIT).await.expect("relayed before");
    assert_eq!(got, b"before");
    assert_eq!(shortcut_packets(&server), 1);

    d.expect_ok(REFRESH, vec![Lifetime::from_u32(0).into()])
        .await;
    for _ in 0..5 {
        c.send_channel(0x4001, b"after").await;
    }
    assert!(
        d.relayed_within(Duration::from_millis(500)).await.is_none(),
        "delivered to a deleted allocation"
    );
    assert!(c.relayed_within(Duration::from_millis(100)).await.is_none());
    assert_eq!(shortcut_packets(&server), 1);

    // E gets D's old relayed address once the relay has closed D's socket (it does so on its
    // own time: until then the only free port is taken, 508).
    let (_, username, password) = room_credentials(&server).await;
    let deadline = Instant::now() + WAIT;
    let e = loop {
        let mut e = Client::new(relay, &username, &password).await;
        let r = e.allocate().await.expect("an Allocate response");
        if r.class() == MessageClass::SuccessResponse {
            let at = r.get_attribute::<XorRelayAddress>().map(|a| a.address());
            assert_eq!(at, Some(rd), "{r:?}");
            break e;
        }
        assert!(Instant::now() < deadline, "D's port was not freed: {r:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for _ in 0..5 {
        c.send_channel(0x4001, b"after").await;
    }
    assert!(e.relayed_within(Duration::from_millis(500)).await.is_none());
    assert!(d.relayed_within(Duration::from_millis(100)).await.is_none());
    assert_eq!(shortcut_packets(&server), 1);
    server.shutdown().await;
}

/// `max_rate` holds on the shortcut as on the long way: of 20 × 500 bytes sent at once, about
/// 4 fit in one second of burst.
#[tokio::test]
async fn the_shortcut_keeps_the_bandwidth_cap() {
    let (_, server, c, rc, d, rd) = two_clients(RelayConfig {
        max_rate: 2_000,
        ..relay_config(200, 64)
    })
    .await;
    c.bind(0x4001, rd).await;
    d.bind(0x4002, rc).await;
    for _ in 0..20 {
        c.send_channel(0x4001, &[7u8; 500]).await;
    }
    let mut got = 0;
    while d.relayed_within(Duration::from_millis(300)).await.is_some() {
        got += 1;
    }
    assert!((3..=6).contains(&got), "{got} of 20 reached D");
    assert_eq!(shortcut_packets(&server), got);
    let gate = server.relay_gate().unwrap();
    assert!(gate.metrics().refused(Refusal::Bandwidth) >= 14);
    server.shutdown().await;
}

// TURN over TLS (`turns:`) on the signalling server's own TLS port.

/// A server with TLS (a certificate for `localhost` and `127.0.0.1`) and the relay; the
/// certificate, for clients to trust.
async fn start_tls_relay(config: Config) -> (ServerHandle, CertificateDer<'static>) {
    let (cert, key) = tls_certificate(&["localhost", "127.0.0.1"]);
    let server = start(Config {
        tls: Some(yakk_signal::tls_config(vec![cert.clone()], key).unwrap()),
        relay: Some(relay_config(200, 64)),
        ..config
    })
    .await;
    (server, cert)
}

/// The embedded relay's entry of a room reply: (URLs, username, credential).
fn relay_entry(reply: &Envelope) -> (Vec<String>, String, String) {
    let servers = reply.ice_servers.as_ref().expect("IceServers in the reply");
    let relay = servers
        .iter()
        .find(|s| s.urls.iter().any(|u| u.starts_with("turn:")))
        .expect("a turn: server");
    (
        relay.urls.clone(),
        relay.username.clone().expect("username"),
        relay.credential.clone().expect("credential"),
    )
}

/// Creates a room over wss, reaching the server as `host`; the owner and its reply.
async fn wss_room(
    addr: SocketAddr,
    cert: &CertificateDer<'static>,
    host: &str,
) -> (common::Client<TlsStream<TcpStream>>, Envelope) {
    let mut owner = wss_connect(addr, cert, host, "").await;
    let created = owner.recv().await;
    assert_eq!(created.msg_type, "YAKKMSG_ROOMCREATED", "{created:?}");
    (owner, created)
}

/// What a TURN client reads from a stream.
#[derive(Debug)]
enum Frame {
    Stun(Message<Attribute>),
    ChannelData(u16, Vec<u8>),
}

/// A TURN client over TLS, one request at a time.
struct TlsClient {
    io: TlsStream<TcpStream>,
    auth: Credentials,
    /// Frames read while waiting for a response.
    stash: VecDeque<Frame>,
}

impl TlsClient {
    async fn new(
        addr: SocketAddr,
        cert: &CertificateDer<'static>,
        alpn: &[&[u8]],
        username: &str,
        password: &str,
    ) -> TlsClient {
        TlsClient {
            io: tls_connect(addr, cert, "localhost", alpn).await,
            auth: Credentials::new(username, password),
            stash: VecDeque::new(),
        }
    }

    async fn write(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.unwrap();
        self.io.flush().await.unwrap();
    }

    /// The next frame, if one starts within `within` (None: nothing, or the stream ended).
    async fn read_frame(&mut self, within: Duration) -> Option<Frame> {
        let mut head = [0u8; 4];
        tokio::time::timeout(within, self.io.read_exact(&mut head))
            .await
            .ok()?
            .ok()?;
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let rest = if head[0] >> 6 == 0 {
            16 + len
        } else {
            (4 + len).next_multiple_of(4) - 4
        };
        let mut buf = vec![0u8; 4 + rest];
        buf[..4].copy_from_slice(&head);
        tokio::time::timeout(WAIT, self.io.read_exact(&mut buf[4..]))
            .await
            .expect("a frame cut short")
            .ok()?;
        Some(if head[0] >> 6 == 0 {
            Frame::Stun(decode(&buf).expect("a STUN message from the relay"))
        } else {
            Frame::ChannelData(
                u16::from_be_bytes([head[0], head[1]]),
                buf[4..4 + len].to_vec(),
            )
        })
    }

    /// Sends `msg` and waits for the response with its transaction id.
    async fn transact(&mut self, msg: Message<Attribute>) -> Option<Message<Attribute>> {
        let id = msg.transaction_id();
        self.write(&encode(msg)).await;
        let deadline = Instant::now() + WAIT;
        for _ in 0..1000 {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_frame(left).await? {
                Frame::Stun(m)
                    if m.transaction_id() == id && m.class() != MessageClass::Indication =>
                {
                    return Some(m);
                }
                other => self.stash.push_back(other),
            }
        }
        None
    }

    fn request(&self, method: Method, attrs: Vec<Attribute>) -> Message<Attribute> {
        self.auth.request(method, attrs)
    }

    /// Allocate: the challenge, then the signed request; the final response.
    async fn allocate(&mut self) -> Option<Message<Attribute>> {
        let first = self.transact(self.auth.allocate()).await?;
        if self.auth.challenged(&first) {
            return self.transact(self.auth.allocate()).await;
        }
        Some(first)
    }

    async fn allocate_ok(&mut self) -> SocketAddr {
        relayed_address(&self.allocate().await.expect("an Allocate response"))
    }

    async fn expect_ok(&mut self, method: Method, attrs: Vec<Attribute>) {
        let r = self
            .transact(self.request(method, attrs))
            .await
            .expect("a response");
        assert_eq!(r.class(), MessageClass::SuccessResponse, "{r:?}");
    }

    async fn send_indication(&mut self, peer: SocketAddr, data: &[u8]) {
        let mut msg = Message::new(MessageClass::Indication, SEND, tid());
        msg.add_attribute(XorPeerAddress::new(peer));
        msg.add_attribute(Data::new(data.to_vec()).unwrap());
        self.write(&encode(msg)).await;
    }

    /// The next relayed payload: a Data indication's or a ChannelData's.
    async fn relayed(&mut self) -> Option<Vec<u8>> {
        let deadline = Instant::now() + WAIT;
        for _ in 0..1000 {
            let frame = match self.stash.pop_front() {
                Some(f) => f,
                None => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    self.read_frame(left).await?
                }
            };
            match frame {
                Frame::ChannelData(_, data) => return Some(data),
                Frame::Stun(m) if m.method() == DATA && m.class() == MessageClass::Indication => {
                    return m.get_attribute::<Data>().map(|d| d.data().to_vec());
                }
                Frame::Stun(_) => {}
            }
        }
        None
    }
}

/// Whether the server closes `io` within five seconds (reading and discarding what comes).
async fn closed_by_server<S: tokio::io::AsyncRead + Unpin>(io: &mut S) -> bool {
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + WAIT;
    for _ in 0..1000 {
        match tokio::time::timeout_at(deadline.into(), io.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
    false
}

/// With TLS and the relay, the signalling port also serves TURN over TLS: a room over wss
/// (same port) lists `turns:localhost:<port>` with its credentials; they allocate over TLS, and
/// data goes both ways between the client and a UDP peer on 127.0.0.1 (Send/Data indications,
/// then ChannelData, padded, two in one write). HTTPS still answers on that port, and
/// `/metrics` counts the TLS allocation and bytes apart.
#[tokio::test]
async fn turns_on_the_signalling_port_allocates_and_relays_both_ways() {
    let (server, cert) = start_tls_relay(Config::default()).await;
    let addr = server.local_addr();
    let relay = server.relay_addr().unwrap();
    let (_owner, created) = wss_room(addr, &cert, "localhost").await;
    let (urls, username, password) = relay_entry(&created);
    assert_eq!(
        urls,
        vec![
            format!("turn:127.0.0.1:{}?transport=udp", relay.port()),
            format!("turn:127.0.0.1:{}?transport=tcp", relay.port()),
            format!("turns:localhost:{}?transport=tcp", addr.port()),
        ]
    );
    let io = tls_connect(addr, &cert, "localhost", &[]).await;
    let (status, _, body) = http_get(io, "/hello").await;
    assert_eq!((status, body.as_str()), (200, r#"{"Hello":"World"}"#));

    let mut c = TlsClient::new(addr, &cert, &[], &username, &password).await;
    let relayed = c.allocate_ok().await;
    assert_eq!(relayed.ip(), std::net::IpAddr::from([127, 0, 0, 1]));
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    c.expect_ok(
        CREATE_PERMISSION,
        vec![XorPeerAddress::new(peer_addr).into()],
    )
    .await;
    c.send_indication(peer_addr, b"hello peer").await;
    let (got, from) = peer_recv(&peer, WAIT).await.expect("relayed to the peer");
    assert_eq!((got.as_slice(), from), (&b"hello peer"[..], relayed));
    peer.send_to(b"hello client", relayed).await.unwrap();
    assert_eq!(c.relayed().await.as_deref(), Some(&b"hello client"[..]));

    c.expect_ok(
        CHANNEL_BIND,
        vec![
            ChannelNumber::new(0x4001).unwrap().into(),
            XorPeerAddress::new(peer_addr).into(),
        ],
    )
    .await;
    let mut two = channel_data(0x4001, b"odd");
    two.extend_from_slice(&channel_data(0x4001, b"over a channel"));
    c.write(&two).await;
    for want in [&b"odd"[..], b"over a channel"] {
        let (got, _) = peer_recv(&peer, WAIT).await.expect("channel data relayed");
        assert_eq!(got, want);
    }
    peer.send_to(b"channel back!", relayed).await.unwrap();
    match c.read_frame(WAIT).await {
        Some(Frame::ChannelData(0x4001, data)) => assert_eq!(data, b"channel back!"),
        other => panic!("expected ChannelData, got {other:?}"),
    }
    // Framing held: a request after the padded ChannelData is answered.
    c.expect_ok(REFRESH, vec![Lifetime::from_u32(600).into()])
        .await;

    let text = server.metrics_text();
    assert_eq!(
        metric(
            &text,
            "yakk_signal_turn_transport_allocations{transport=\"tls\"} "
        ),
        1
    );
    assert_eq!(
        metric(
            &text,
            "yakk_signal_turn_transport_allocations{transport=\"udp\"} "
        ),
        0
    );
    assert_eq!(metric(&text, "yakk_signal_turn_tls_connections "), 1);
    assert_eq!(
        metric(
            &text,
            "yakk_signal_turn_transport_relayed_bytes_total{transport=\"tls\",direction=\"to_clients\"} "
        ),
        (b"hello client".len() + b"channel back!".len()) as u64
    );
    assert_eq!(
        metric(
            &text,
            "yakk_signal_turn_transport_relayed_bytes_total{transport=\"tls\",direction=\"from_clients\"} "
        ),
        (b"hello peer".len() + b"odd".len() + b"over a channel".len()) as u64
    );

    // A client that asks for TURN's ALPN protocol (RFC 7443) gets it, and is served.
    let mut a = TlsClient::new(addr, &cert, &[b"stun.turn"], &username, &password).await;
    assert_eq!(
        a.io.get_ref().1.alpn_protocol(),
        Some(&b"stun.turn"[..]),
        "ALPN"
    );
    a.allocate_ok().await;
    // Browsers' ALPN still gets HTTP.
    let io = tls_connect(addr, &cert, "localhost", &[b"h2", b"http/1.1"]).await;
    assert_eq!(io.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (status, _, _) = http_get(io, "/hello").await;
    assert_eq!(status, 200);
    assert_eq!(server.relay_gate().unwrap().live_allocations(), 2);
    server.shutdown().await;
}

/// Over TLS as over UDP: without credentials, with a wrong password or an expired username,
/// 401 and no allocation, and nothing such a client sends reaches a peer. Requests without
/// credentials are rate-limited per client address.
#[tokio::test]
async fn turns_without_good_credentials_allocates_nothing() {
    let (server, cert) = start_tls_relay(Config::default()).await;
    let addr = server.local_addr();
    let (_owner, created) = wss_room(addr, &cert, "localhost").await;
    let (_, username, password) = relay_entry(&created);
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();

    let mut anon = TlsClient::new(addr, &cert, &[], "", "").await;
    let r = anon
        .transact(anon.request(ALLOCATE, vec![RequestedTransport::new(17).into()]))
        .await
        .expect("a response");
    assert_eq!(error_code(&r), Some(401), "{r:?}");

    let (expired_user, expired_pass) = expired_credentials();
    let wrong_password = format!("{password}x");
    let mut clients = vec![anon];
    for (what, u, p) in [
        ("wrong password", username.as_str(), wrong_password.as_str()),
        ("expired", expired_user.as_str(), expired_pass.as_str()),
    ] {
        let mut c = TlsClient::new(addr, &cert, &[], u, p).await;
        let r = c.allocate().await.expect("a response");
        assert_eq!(error_code(&r), Some(401), "{what}: {r:?}");
        assert!(r.get_attribute::<XorRelayAddress>().is_none(), "{what}");
        clients.push(c);
    }
    for c in &mut clients {
        c.send_indication(peer_addr, b"let me through").await;
        c.write(&channel_data(0x4000, b"or this way")).await;
    }
    assert!(
        peer_recv(&peer, Duration::from_millis(500)).await.is_none(),
        "something was relayed without credentials"
    );
    let gate = server.relay_gate().unwrap();
    assert_eq!(gate.live_allocations(), 0);
    assert_eq!(gate.metrics().allocations_total(), 0);
    assert!(gate.metrics().refused(Refusal::Auth) >= 1);
    assert_eq!(gate.metrics().refused(Refusal::Expired), 1);

    // 150 Allocates without credentials at once from one address: past its allowance (120 a
    // minute) they are dropped, not answered.
    let mut burst = Vec::new();
    for _ in 0..150 {
        let anon = Message::<Attribute>::new(MessageClass::Request, ALLOCATE, tid());
        burst.extend_from_slice(&encode(anon));
    }
    let c = &mut clients[0];
    c.write(&burst).await;
    let mut answers = 0;
    for _ in 0..200 {
        match c.read_frame(Duration::from_millis(500)).await {
            Some(Frame::Stun(m)) if m.method() == ALLOCATE => answers += 1,
            Some(_) => {}
            None => break,
        }
    }
    assert!(answers < 150, "{answers} answered");
    assert!(
        gate.metrics().refused(Refusal::RateLimited) >= 150 - answers,
        "rate-limited: {}",
        gate.metrics().refused(Refusal::RateLimited)
    );
    // The connections were not closed for it: a good client on one allocates.
    let mut good = TlsClient::new(addr, &cert, &[], &username, &password).await;
    good.allocate_ok().await;
    server.shutdown().await;
}

/// A TLS connection that sends garbage is closed, and nobody else notices: STUN-looking
/// garbage and garbage after a good request are closed by the relay (counted as malformed),
/// other garbage goes to HTTP (400). A TURN client with an allocation keeps relaying, and wss
/// still works.
#[tokio::test]
async fn garbage_after_tls_is_closed_without_harming_others() {
    let (server, cert) = start_tls_relay(Config::default()).await;
    let addr = server.local_addr();
    let (_owner, created) = wss_room(addr, &cert, "localhost").await;
    let (_, username, password) = relay_entry(&created);
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let mut good = TlsClient::new(addr, &cert, &[], &username, &password).await;
    let relayed = good.allocate_ok().await;
    good.expect_ok(
        CREATE_PERMISSION,
        vec![XorPeerAddress::new(peer_addr).into()],
    )
    .await;

    // A STUN start, then a length that is not a multiple of 4.
    let mut g1 = tls_connect(addr, &cert, "localhost", &[]).await;
    g1.write_all(&[0x00, 0x01, 0x00, 0x03, 0xde, 0xad, 0xbe, 0xef])
        .await
        .unwrap();
    g1.flush().await.unwrap();
    assert!(closed_by_server(&mut g1).await, "STUN-looking garbage");

    // A good Binding request, answered; then bytes that are no frame.
    let mut g2 = TlsClient::new(addr, &cert, &[], "", "").await;
    let binding = Message::<Attribute>::new(MessageClass::Request, BINDING, tid());
    let r = g2.transact(binding).await.expect("a Binding response");
    assert_eq!(r.class(), MessageClass::SuccessResponse, "{r:?}");
    g2.write(&[0xff; 8]).await;
    assert!(
        closed_by_server(&mut g2.io).await,
        "garbage after a request"
    );

    // Not STUN at all: HTTP's to refuse.
    let mut g3 = tls_connect(addr, &cert, "localhost", &[]).await;
    g3.write_all(b"\x80\x81garbage\r\n\r\n").await.unwrap();
    g3.flush().await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, g3.read_to_end(&mut answer)).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 400"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );

    let tls = server.relay_gate().unwrap();
    assert_eq!(tls.metrics().tls().closed(StreamClose::Malformed), 2);
    // The good client relays as before, both ways.
    good.send_indication(peer_addr, b"still here").await;
    let (got, from) = peer_recv(&peer, WAIT).await.expect("relayed");
    assert_eq!((got.as_slice(), from), (&b"still here"[..], relayed));
    peer.send_to(b"and back", relayed).await.unwrap();
    assert_eq!(good.relayed().await.as_deref(), Some(&b"and back"[..]));
    // And rooms are still made over wss.
    wss_room(addr, &cert, "localhost").await;
    server.shutdown().await;
}

/// TURN over TCP runs on the same stream transport as over TLS: a Binding request on a
/// connection gets its response on the stream, and the connections from one address are
/// bounded by `max_connections_per_ip` (one more is closed at once and counted).
#[tokio::test]
async fn turn_over_tcp_connections_are_bounded_per_address() {
    let server = start(Config {
        relay: Some(relay_config(4, 4)),
        max_connections_per_ip: 2,
        ..Config::default()
    })
    .await;
    let relay = server.relay_addr().expect("the relay runs");
    let binding = || Message::<Attribute>::new(MessageClass::Request, BINDING, tid());
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(relay).await.unwrap();
        s.write_all(&encode(binding())).await.unwrap();
        let mut head = [0u8; 20];
        tokio::time::timeout(WAIT, s.read_exact(&mut head))
            .await
            .expect("a Binding response within the wait")
            .unwrap();
        // Binding success response (RFC 5389: class 10, method 1).
        assert_eq!(head[..2], [0x01, 0x01]);
        open.push(s);
    }
    let mut third = TcpStream::connect(relay).await.unwrap();
    let _ = third.write_all(&encode(binding())).await;
    assert!(closed_by_server(&mut third).await, "a third connection");
    let gate = server.relay_gate().unwrap();
    let tcp = gate.metrics().tcp();
    assert_eq!(tcp.closed(StreamClose::TooManyFromAddress), 1);
    assert_eq!(tcp.open(), 2);
    assert_eq!(gate.metrics().tls().accepted(), 0);
}

/// TURN-over-TLS connections are bounded per client address (as WebSockets are, by
/// `max_connections_per_ip`): one more is closed at once, and counted; when one goes, another
/// may come.
#[tokio::test]
async fn turns_connections_are_bounded_per_address() {
    let (server, cert) = start_tls_relay(Config {
        max_connections_per_ip: 2,
        ..Config::default()
    })
    .await;
    let addr = server.local_addr();
    let binding = || Message::<Attribute>::new(MessageClass::Request, BINDING, tid());
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut c = TlsClient::new(addr, &cert, &[], "", "").await;
        let r = c.transact(binding()).await.expect("a Binding response");
        assert_eq!(r.class(), MessageClass::SuccessResponse);
        open.push(c);
    }
    let mut third = TlsClient::new(addr, &cert, &[], "", "").await;
    third.write(&encode(binding())).await;
    assert!(closed_by_server(&mut third.io).await, "a third connection");
    let gate = server.relay_gate().unwrap();
    let tls = gate.metrics().tls();
    assert_eq!(tls.closed(StreamClose::TooManyFromAddress), 1);
    assert_eq!(tls.open(), 2);

    // One goes; another comes (once the relay saw it go).
    drop(open.pop());
    let deadline = Instant::now() + WAIT;
    while tls.open() > 1 {
        assert!(
            Instant::now() < deadline,
            "the closed connection is still counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut again = TlsClient::new(addr, &cert, &[], "", "").await;
    let r = again.transact(binding()).await.expect("a Binding response");
    assert_eq!(r.class(), MessageClass::SuccessResponse);
    server.shutdown().await;
}

/// The `turns:` URL names the host the client reached the server at, so that it can verify
/// the certificate: `localhost` or `127.0.0.1` as its WebSocket's Host said, for the owner and
/// for a joiner; without a Host header, the server's own address on the connection. Without
/// TLS, no `turns:` URL.
#[tokio::test]
async fn the_turns_url_names_the_host_the_client_used() {
    let (server, cert) = start_tls_relay(Config::default()).await;
    let addr = server.local_addr();
    let port = addr.port();
    let turns = |reply: &Envelope| {
        let (urls, _, _) = relay_entry(reply);
        urls.into_iter()
            .filter(|u| u.starts_with("turns:"))
            .collect::<Vec<_>>()
    };
    let (_owner, created) = wss_room(addr, &cert, "localhost").await;
    assert_eq!(
        turns(&created),
        [format!("turns:localhost:{port}?transport=tcp")]
    );
    let mut joiner = wss_connect(
        addr,
        &cert,
        "127.0.0.1",
        &format!("roomID={}", created.payload),
    )
    .await;
    let joined = joiner.recv().await;
    assert_eq!(joined.msg_type, "YAKKMSG_ROOMJOINED", "{joined:?}");
    assert_eq!(
        turns(&joined),
        [format!("turns:127.0.0.1:{port}?transport=tcp")]
    );

    // No Host header at all.
    let mut io = tls_connect(addr, &cert, "localhost", &[]).await;
    io.write_all(
        b"GET /ws/ HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    for _ in 0..4096 {
        tokio::time::timeout(WAIT, io.read_exact(&mut byte))
            .await
            .expect("the upgrade's answer")
            .unwrap();
        head.push(byte[0]);
        if head.ends_with(b"\r\n\r\n") {
            break;
        }
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{:?}",
        String::from_utf8_lossy(&head)
    );
    let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        io,
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    let created = common::Client { ws }.recv().await;
    assert_eq!(
        turns(&created),
        [format!("turns:127.0.0.1:{port}?transport=tcp")]
    );
    server.shutdown().await;

    // The relay without TLS: turn: URLs only.
    let server = start_relay(200, 64).await;
    let (urls, _, _) = room_credentials(&server).await;
    assert!(urls.iter().all(|u| u.starts_with("turn:")), "{urls:?}");
    server.shutdown().await;
}
