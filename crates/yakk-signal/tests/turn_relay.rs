//! The embedded TURN relay (`yakk signal --turn-listen`) over real sockets on 127.0.0.1, driven
//! by a small TURN client written here on `stun_codec` (so that every request, good or bad, is
//! ours to shape): credentials from a room allocate and relay both ways (Send/Data indications
//! and ChannelData); missing, wrong and expired credentials allocate nothing and relay nothing;
//! allocations beyond the quotas get 486; a bounded flood leaves the relay responsive and its
//! memory bounded.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytecodec::{DecodeExt as _, EncodeExt as _};
use common::*;
use medea_turn::attr::{
    Attribute, ChannelNumber, Data, ErrorCode, Lifetime, MessageIntegrity, Nonce, Realm,
    RequestedTransport, Username, XorPeerAddress, XorRelayAddress,
};
use stun_codec::rfc5766::methods::{
    ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, DATA, REFRESH, SEND,
};
use stun_codec::{Message, MessageClass, MessageDecoder, MessageEncoder, Method, TransactionId};
use tokio::net::UdpSocket;
use yakk_signal::turn::{Refusal, RelayConfig};
use yakk_signal::{Config, ServerHandle};

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

/// A TURN client over UDP, one request at a time.
struct Client {
    sock: UdpSocket,
    server: SocketAddr,
    username: String,
    password: String,
    realm: Option<Realm>,
    nonce: Option<Nonce>,
}

impl Client {
    async fn new(server: SocketAddr, username: &str, password: &str) -> Client {
        Client {
            sock: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            server,
            username: username.into(),
            password: password.into(),
            realm: None,
            nonce: None,
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

    /// A request of `method` with `attrs`, signed with the client's credentials (when it has a
    /// realm and nonce from a first challenge).
    fn request(&self, method: Method, attrs: Vec<Attribute>) -> Message<Attribute> {
        let mut msg = Message::new(MessageClass::Request, method, tid());
        for a in attrs {
            msg.add_attribute(a);
        }
        if let (Some(realm), Some(nonce)) = (&self.realm, &self.nonce) {
            let username = Username::new(self.username.clone()).unwrap();
            msg.add_attribute(username.clone());
            msg.add_attribute(realm.clone());
            msg.add_attribute(nonce.clone());
            let mi =
                MessageIntegrity::new_long_term_credential(&msg, &username, realm, &self.password)
                    .unwrap();
            msg.add_attribute(mi);
        }
        msg
    }

    /// Allocate: the unauthenticated attempt (answered 401 with realm and nonce), then the
    /// signed one. The final response, or None if nothing came back.
    async fn allocate(&mut self) -> Option<Message<Attribute>> {
        let udp = || vec![Attribute::from(RequestedTransport::new(17))];
        let first = self.transact(self.request(ALLOCATE, udp())).await?;
        if self.realm.is_none() {
            assert_eq!(error_code(&first), Some(401), "challenge: {first:?}");
            self.realm = first.get_attribute::<Realm>().cloned();
            self.nonce = first.get_attribute::<Nonce>().cloned();
            assert!(self.realm.is_some() && self.nonce.is_some(), "{first:?}");
            return self.transact(self.request(ALLOCATE, udp())).await;
        }
        Some(first)
    }

    async fn allocate_ok(&mut self) -> SocketAddr {
        let r = self.allocate().await.expect("an Allocate response");
        assert_eq!(r.class(), MessageClass::SuccessResponse, "{r:?}");
        r.get_attribute::<XorRelayAddress>()
            .expect("XOR-RELAYED-ADDRESS")
            .address()
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
        let mut buf = vec![0u8; 2048];
        let deadline = Instant::now() + WAIT;
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
