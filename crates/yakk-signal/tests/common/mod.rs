//! Helpers shared by the integration tests: a server on 127.0.0.1:0 and a WebSocket client that
//! talks like the reference client (text frames with a trailing newline).
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use yakk_signal::{Config, ServerHandle};
use yakk_wire::Envelope;

pub const WAIT: Duration = Duration::from_secs(5);

pub async fn start(config: Config) -> ServerHandle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    yakk_signal::spawn(config, listener).await.unwrap()
}

pub struct Client<S> {
    pub ws: WebSocketStream<S>,
}

pub type Plain = Client<TcpStream>;

/// Connects from 127.0.0.1 to `/ws/?query`.
pub async fn connect(addr: SocketAddr, query: &str) -> Plain {
    connect_from([127, 0, 0, 1].into(), addr, query).await
}

pub async fn tcp_from(src: IpAddr, addr: SocketAddr) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(src, 0)).unwrap();
    sock.connect(addr).await.unwrap()
}

/// Connects from a chosen loopback source address (per-IP limits).
pub async fn connect_from(src: IpAddr, addr: SocketAddr, query: &str) -> Plain {
    let tcp = tcp_from(src, addr).await;
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/ws/?{query}"), tcp)
        .await
        .unwrap();
    Client { ws }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// Sends like the reference client: a text frame, JSON plus a newline.
    pub async fn send(&mut self, e: &Envelope) {
        self.ws
            .send(Message::text(format!("{}\n", e.to_json())))
            .await
            .unwrap();
    }

    pub async fn send_raw(&mut self, m: Message) {
        self.ws.send(m).await.unwrap();
    }

    /// The next envelope; panics on anything else or after five seconds.
    pub async fn recv(&mut self) -> Envelope {
        loop {
            let m = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for a message")
                .expect("socket ended")
                .expect("socket failed");
            match m {
                Message::Binary(b) => return Envelope::parse(&b, 1 << 20).unwrap(),
                Message::Text(t) => return Envelope::parse(t.as_bytes(), 1 << 20).unwrap(),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected an envelope, got {other:?}"),
            }
        }
    }

    /// Nothing but pings arrives for `d` (the socket keeps answering pings meanwhile).
    pub async fn expect_silence(&mut self, d: Duration) {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(other) => panic!("expected silence, got {other:?}"),
            }
        }
    }

    /// Reads until the server's close frame and returns it.
    pub async fn expect_close(&mut self) -> CloseFrame {
        loop {
            let m = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for a close frame");
            match m {
                Some(Ok(Message::Close(Some(f)))) => return f,
                Some(Ok(Message::Close(None))) => panic!("close frame without a reason"),
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    }
}

/// Creates a room; returns the owner and the room name.
pub async fn create(addr: SocketAddr, query: &str) -> (Plain, String) {
    let mut owner = connect(addr, query).await;
    let created = owner.recv().await;
    assert_eq!(created.msg_type, "YAKKMSG_ROOMCREATED");
    assert_eq!((created.sender, created.recipient), (-1, 0));
    (owner, created.payload)
}

/// Joins a room; returns the joiner and its mailbox id.
pub async fn join(addr: SocketAddr, room: &str) -> (Plain, i64) {
    let mut joiner = connect(addr, &format!("roomID={room}")).await;
    let joined = joiner.recv().await;
    assert_eq!(joined.msg_type, "YAKKMSG_ROOMJOINED", "{joined:?}");
    let id: i64 = joined.payload.parse().unwrap();
    assert_eq!((joined.sender, joined.recipient), (0, id));
    (joiner, id)
}

pub fn env(kind: &str, payload: &str, sender: i64, recipient: i64) -> Envelope {
    Envelope::new(kind, payload, sender, recipient)
}

pub fn error(payload: &str) -> Envelope {
    Envelope::new("YAKKMSG_ERROR", payload, 0, 0)
}

/// A plain HTTP/1.1 GET; returns status, headers (lower-cased names) and body.
pub async fn http_get<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    path: &str,
) -> (u16, Vec<(String, String)>, String) {
    io.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, io.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

pub async fn metrics(addr: SocketAddr) -> String {
    let (status, _, body) = http_get(TcpStream::connect(addr).await.unwrap(), "/metrics").await;
    assert_eq!(status, 200);
    body
}

/// The value of one metric line, e.g. `yakk_signal_rooms` or
/// `yakk_signal_rejections_total{reason="room_full"}`.
pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
        .parse()
        .unwrap()
}

/// Polls `f` until it holds, for up to five seconds.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A self-signed certificate for `names` (DNS names, or IP addresses: IP SANs), and its key.
pub fn tls_certificate(names: &[&str]) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let ck = rcgen::generate_simple_self_signed(names).unwrap();
    let key = PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()).into();
    (ck.cert.der().clone(), key)
}

/// A TLS client that trusts `cert` only and offers the ALPN protocols `alpn`.
pub fn tls_connector(cert: &CertificateDer<'static>, alpn: &[&[u8]]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

/// A TLS connection to `addr`, verifying its certificate for `name` (a DNS name or an IP).
pub async fn tls_connect(
    addr: SocketAddr,
    cert: &CertificateDer<'static>,
    name: &str,
    alpn: &[&[u8]],
) -> TlsStream<TcpStream> {
    let name = ServerName::try_from(name.to_string()).unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio::time::timeout(WAIT, tls_connector(cert, alpn).connect(name, tcp))
        .await
        .expect("TLS handshake timed out")
        .unwrap()
}

/// A WebSocket to `wss://{host}:{port}/ws/?query`, connected to `addr` (so its Host header is
/// `{host}:{port}`).
pub async fn wss_connect(
    addr: SocketAddr,
    cert: &CertificateDer<'static>,
    host: &str,
    query: &str,
) -> Client<TlsStream<TcpStream>> {
    let io = tls_connect(addr, cert, host, &[]).await;
    let (ws, _) =
        tokio_tungstenite::client_async(format!("wss://{host}:{}/ws/?{query}", addr.port()), io)
            .await
            .unwrap();
    Client { ws }
}
