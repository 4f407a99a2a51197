//! TURN over TCP and over TLS, for a WebRTC stack that allocates over UDP only.
//!
//! The stack's TURN client (webrtc 0.21.1) skips `turns:` URLs and `turn:` URLs with
//! `?transport=tcp`, so a peer whose network lets no UDP out (only TCP, often only to port 443)
//! had no candidate at all. Such a URL is therefore handed to the stack as a `turn:` URL over
//! UDP on loopback, where a [`Bridge`] listens: it carries every datagram the stack sends there
//! over one TCP (or TLS) connection per sending socket to the real server, and every message
//! the server sends back as one datagram. To the server this is an ordinary TURN client over
//! TCP or TLS (RFC 8656 §3.1: the relayed leg stays UDP); to the stack, an ordinary UDP one. The
//! TURN messages themselves, credentials included, pass through unchanged.
//!
//! Each bridge is one more allocation per peer connection (and a connection has one per lane),
//! for a path that is only needed when UDP to the relay is blocked. So when the same ICE
//! configuration also names a relay over UDP, it is asked first ([`udp_answers`], a STUN
//! Binding request, answered within [`PROBE_WAIT`] or not), and the stream URLs are bridged
//! only if it does not answer. The answer is remembered for a minute: a session's lanes and an
//! owner's joiners ask once.
//!
//! Framing over the stream (RFC 8656 §12.5): a STUN message is its 20-byte header plus the
//! length in it; ChannelData is its 4-byte header plus the length in it, padded to a multiple of
//! four bytes on the stream (not in the datagram).

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::RelayProtocol;

/// How long the TCP connection and the TLS handshake to the server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Datagrams waiting for one stream; more are dropped, as a full UDP path would.
const QUEUE: usize = 1024;
/// Streams one bridge opens (one per socket of the stack that sends to it).
const MAX_STREAMS: usize = 16;
/// How long a relay over UDP has to answer a Binding request (sent twice) before its stream URLs
/// are bridged.
pub(crate) const PROBE_WAIT: Duration = Duration::from_millis(400);
/// How long a probe's answer is remembered.
const PROBE_MEMORY: Duration = Duration::from_secs(60);
/// A STUN message's or ChannelData's header.
const STUN_HEADER: usize = 20;
const CHANNEL_HEADER: usize = 4;

/// Where a `turn:`/`turns:` URL over a stream leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StreamServer {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) tls: bool,
}

impl StreamServer {
    /// The server of a TURN URL the stack cannot use itself (`turns:`, or `turn:` with
    /// `?transport=tcp`); `None` for one it can (or for anything that is not a TURN URL).
    pub(crate) fn of_url(url: &str) -> Option<StreamServer> {
        use rtc::ice::url::{ProtoType, SchemeType, Url};
        let parsed = Url::parse_url(url).ok()?;
        let tls = match parsed.scheme {
            SchemeType::Turns => true,
            SchemeType::Turn if parsed.proto == ProtoType::Tcp => false,
            _ => return None,
        };
        Some(StreamServer {
            host: parsed.host,
            port: parsed.port,
            tls,
        })
    }

    pub(crate) fn protocol(&self) -> RelayProtocol {
        if self.tls {
            RelayProtocol::Tls
        } else {
            RelayProtocol::Tcp
        }
    }
}

/// The `host:port` of a `turn:` URL over UDP (the stack's own kind), if `url` is one.
pub(crate) fn udp_server_of(url: &str) -> Option<(String, u16)> {
    use rtc::ice::url::{ProtoType, SchemeType, Url};
    let parsed = Url::parse_url(url).ok()?;
    (parsed.scheme == SchemeType::Turn && parsed.proto == ProtoType::Udp)
        .then_some((parsed.host, parsed.port))
}

/// Whether the STUN/TURN server at `host:port` answers a Binding request over UDP from here
/// within [`PROBE_WAIT`] (remembered for [`PROBE_MEMORY`]; callers asking while a probe is under
/// way wait for its answer).
pub(crate) async fn udp_answers(host: &str, port: u16) -> bool {
    type Probes = HashMap<(String, u16), (Arc<tokio::sync::OnceCell<bool>>, Instant)>;
    static PROBES: Mutex<Option<Probes>> = Mutex::new(None);
    let cell = {
        let mut probes = PROBES.lock().unwrap_or_else(|p| p.into_inner());
        let probes = probes.get_or_insert_with(HashMap::new);
        probes.retain(|_, (_, at)| at.elapsed() < PROBE_MEMORY);
        probes
            .entry((host.to_string(), port))
            .or_insert_with(|| (Arc::default(), Instant::now()))
            .0
            .clone()
    };
    *cell
        .get_or_init(|| async {
            let ok = tokio::time::timeout(PROBE_WAIT, probe(host, port))
                .await
                .is_ok_and(|r| r.is_ok());
            tracing::debug!(host, port, ok, "TURN over UDP probed");
            ok
        })
        .await
}

/// The relay over UDP whose answer decides whether these URLs' TCP and TLS relays are bridged:
/// `None` when there is nothing to decide (no URL over a stream, or no relay over UDP).
pub(crate) fn relay_to_probe<'a>(
    urls: impl Iterator<Item = &'a String> + Clone,
) -> Option<(String, u16)> {
    urls.clone()
        .any(|u| StreamServer::of_url(u).is_some())
        .then_some(())?;
    urls.into_iter().find_map(|u| udp_server_of(u))
}

/// Starts the probe for these URLs in the background, if they need one: a peer connection made
/// a little later (after the key exchange) finds the answer ready.
pub(crate) fn warm_up<'a>(urls: impl Iterator<Item = &'a String> + Clone) {
    if let Some((host, port)) = relay_to_probe(urls) {
        tokio::spawn(async move {
            udp_answers(&host, port).await;
        });
    }
}

/// Sends a Binding request to the server (again after half the wait) and waits for its answer.
async fn probe(host: &str, port: u16) -> io::Result<()> {
    use rtc::stun::message::{BINDING_REQUEST, Message, TransactionId};
    let server = tokio::net::lookup_host((host, port))
        .await?
        .find(SocketAddr::is_ipv4)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no IPv4 address"))?;
    let udp = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await?;
    let mut request = Message::new();
    let tid = TransactionId::new();
    request
        .build(&[Box::new(BINDING_REQUEST), Box::new(tid)])
        .map_err(|e| io::Error::other(e.to_string()))?;
    let mut buf = [0u8; 1500];
    let mut resend = tokio::time::interval(PROBE_WAIT / 2);
    loop {
        tokio::select! {
            _ = resend.tick() => {
                udp.send_to(&request.raw, server).await?;
            }
            got = udp.recv_from(&mut buf) => {
                let (n, from) = got?;
                let mut answer = Message::new();
                answer.raw = buf[..n].to_vec();
                if from == server && answer.decode().is_ok() && answer.transaction_id == tid {
                    return Ok(());
                }
            }
        }
    }
}

/// A loopback UDP address that carries TURN to one server over TCP or TLS (see the module's
/// documentation). Dropping it closes its streams, and with them their allocations.
#[derive(Debug)]
pub(crate) struct Bridge {
    local: SocketAddr,
    server: StreamServer,
    task: JoinHandle<()>,
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Bridge {
    /// Listen on 127.0.0.1 for the stack's datagrams to `server`.
    pub(crate) async fn start(server: StreamServer) -> io::Result<Bridge> {
        let udp = Arc::new(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?);
        let sock = socket2::SockRef::from(&*udp);
        // Bursts of ChannelData from the stack arrive here; as for its own sockets.
        let _ = sock.set_recv_buffer_size(4 << 20);
        let _ = sock.set_send_buffer_size(4 << 20);
        let local = udp.local_addr()?;
        let task = tokio::spawn(run(udp, server.clone()));
        Ok(Bridge {
            local,
            server,
            task,
        })
    }

    /// The URL to give the stack instead of the server's.
    pub(crate) fn url(&self) -> String {
        format!("turn:{}?transport=udp", self.local)
    }

    /// Whether a candidate's server URL (as the stack writes it) is this bridge's.
    pub(crate) fn serves(&self, url: &str) -> bool {
        rtc::ice::url::Url::parse_url(url)
            .is_ok_and(|u| u.port == self.local.port() && u.host.parse() == Ok(self.local.ip()))
    }

    pub(crate) fn server(&self) -> &StreamServer {
        &self.server
    }
}

/// Reads the stack's datagrams and hands each to the stream of the socket that sent it,
/// opening that stream on its first datagram.
async fn run(udp: Arc<UdpSocket>, server: StreamServer) {
    let mut streams: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>> = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, from) = match udp.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
            Err(e) => {
                tracing::debug!("TURN bridge stopped: {e}");
                return;
            }
        };
        streams.retain(|_, tx| !tx.is_closed());
        let tx = match streams.get(&from) {
            Some(tx) => tx.clone(),
            None => {
                if streams.len() >= MAX_STREAMS {
                    tracing::debug!(%from, "TURN bridge: too many sockets, datagram dropped");
                    continue;
                }
                let (tx, rx) = mpsc::channel(QUEUE);
                tokio::spawn(carry(udp.clone(), from, server.clone(), rx));
                streams.insert(from, tx.clone());
                tx
            }
        };
        if tx.try_send(framed(&buf[..n])).is_err() {
            tracing::trace!(%from, "TURN bridge: stream busy, datagram dropped");
        }
    }
}

/// A datagram as it goes on the stream: ChannelData padded to a multiple of four bytes.
fn framed(datagram: &[u8]) -> Vec<u8> {
    let mut out = datagram.to_vec();
    if datagram.first().is_some_and(|b| b >> 6 == 1) {
        out.resize(datagram.len().next_multiple_of(4), 0);
    }
    out
}

/// Connects to the server and carries one socket's traffic both ways until either side ends.
async fn carry(
    udp: Arc<UdpSocket>,
    to: SocketAddr,
    server: StreamServer,
    rx: mpsc::Receiver<Vec<u8>>,
) {
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, connect(&server)).await;
    let stream = match connected {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::info!(server = %server.host, port = server.port, tls = server.tls, "cannot reach the TURN server over TCP: {e}");
            return;
        }
        Err(_) => {
            tracing::info!(server = %server.host, port = server.port, tls = server.tls, "cannot reach the TURN server over TCP: no connection within {CONNECT_TIMEOUT:?}");
            return;
        }
    };
    let (reader, writer) = tokio::io::split(stream);
    tokio::select! {
        r = upstream(writer, rx) => if let Err(e) = r {
            tracing::debug!("TURN stream to the server ended: {e}");
        },
        r = downstream(reader, &udp, to) => if let Err(e) = r {
            tracing::debug!("TURN stream from the server ended: {e}");
        },
    }
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

async fn connect(server: &StreamServer) -> io::Result<Box<dyn Stream>> {
    let tcp = TcpStream::connect((server.host.as_str(), server.port)).await?;
    let _ = tcp.set_nodelay(true);
    if !server.tls {
        return Ok(Box::new(tcp));
    }
    let name = rustls_pki_types::ServerName::try_from(server.host.clone())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let tls = tokio_rustls::TlsConnector::from(crate::tls::client_config())
        .connect(name, tcp)
        .await?;
    Ok(Box::new(tls))
}

/// The stack's datagrams onto the stream, several per write when they queue up.
async fn upstream(
    mut writer: impl AsyncWrite + Unpin,
    mut rx: mpsc::Receiver<Vec<u8>>,
) -> io::Result<()> {
    let mut batch = Vec::with_capacity(64 * 1024);
    while let Some(first) = rx.recv().await {
        batch.clear();
        batch.extend_from_slice(&first);
        while batch.len() < 64 * 1024 {
            match rx.try_recv() {
                Ok(more) => batch.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        writer.write_all(&batch).await?;
        writer.flush().await?;
    }
    Ok(())
}

/// The server's messages off the stream, one datagram each.
async fn downstream(
    mut reader: impl AsyncRead + Unpin,
    udp: &UdpSocket,
    to: SocketAddr,
) -> io::Result<()> {
    let mut buf = BytesMut::with_capacity(128 * 1024);
    loop {
        while let Some((on_stream, message)) = next_frame(&buf)? {
            if let Err(e) = udp.send_to(&buf[..message], to).await {
                tracing::trace!("TURN bridge: datagram to the stack lost: {e}");
            }
            buf.advance(on_stream);
        }
        if reader.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}

/// The next whole frame at the start of `buf`: its size on the stream and the size of the
/// message in it (ChannelData without its padding). `None` until it has all arrived; an error
/// for bytes that are neither STUN nor ChannelData.
fn next_frame(buf: &[u8]) -> io::Result<Option<(usize, usize)>> {
    if buf.len() < CHANNEL_HEADER {
        return Ok(None);
    }
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    let (on_stream, message) = match buf[0] >> 6 {
        0 => (STUN_HEADER + len, STUN_HEADER + len),
        1 => (
            (CHANNEL_HEADER + len).next_multiple_of(4),
            CHANNEL_HEADER + len,
        ),
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the TURN server sent something that is neither STUN nor ChannelData",
            ));
        }
    };
    Ok((buf.len() >= on_stream).then_some((on_stream, message)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_turn_over_a_stream_is_bridged() {
        let tcp = StreamServer::of_url("turn:relay.example.org:3479?transport=tcp").unwrap();
        assert_eq!(
            tcp,
            StreamServer {
                host: "relay.example.org".into(),
                port: 3479,
                tls: false
            }
        );
        assert_eq!(tcp.protocol(), RelayProtocol::Tcp);
        let tls = StreamServer::of_url("turns:relay.example.org:443?transport=tcp").unwrap();
        assert!(tls.tls && tls.port == 443 && tls.protocol() == RelayProtocol::Tls);
        assert_eq!(
            StreamServer::of_url("turns:relay.example.org")
                .unwrap()
                .port,
            5349
        );
        for direct in [
            "turn:relay.example.org:3478?transport=udp",
            "turn:relay.example.org:3478",
            "stun:relay.example.org:3478",
            "not a url",
        ] {
            assert_eq!(StreamServer::of_url(direct), None, "{direct}");
        }
    }

    /// A server that answers Binding requests over UDP is found to; a port where nothing answers
    /// is not, within the wait; both answers are remembered.
    #[tokio::test]
    async fn a_relay_over_udp_is_probed_once() {
        use rtc::stun::message::{BINDING_SUCCESS, Message};
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = server.local_addr().unwrap().port();
        let answering = tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            let mut answered = 0;
            while let Ok(Ok((n, from))) =
                tokio::time::timeout(Duration::from_secs(1), server.recv_from(&mut buf)).await
            {
                let mut req = Message::new();
                req.raw = buf[..n].to_vec();
                req.decode().unwrap();
                let mut resp = Message::new();
                resp.build(&[Box::new(BINDING_SUCCESS), Box::new(req.transaction_id)])
                    .unwrap();
                server.send_to(&resp.raw, from).await.unwrap();
                answered += 1;
            }
            answered
        });
        assert!(udp_answers("127.0.0.1", port).await);
        // Remembered: no second request.
        assert!(udp_answers("127.0.0.1", port).await);
        assert_eq!(answering.await.unwrap(), 1);
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let silent_port = silent.local_addr().unwrap().port();
        let started = Instant::now();
        assert!(!udp_answers("127.0.0.1", silent_port).await);
        assert!(started.elapsed() >= PROBE_WAIT);
        let started = Instant::now();
        assert!(!udp_answers("127.0.0.1", silent_port).await);
        assert!(started.elapsed() < PROBE_WAIT, "remembered");
        assert_eq!(
            udp_server_of("turn:relay.example.org:3479?transport=udp"),
            Some(("relay.example.org".into(), 3479))
        );
        assert_eq!(
            udp_server_of("turn:relay.example.org:3479?transport=tcp"),
            None
        );
        assert_eq!(udp_server_of("turns:relay.example.org:443"), None);
    }

    /// A warm-up probes in the background: a connection asking after it waits no more, and
    /// nothing is probed when there is nothing to decide.
    #[tokio::test]
    async fn a_warm_up_has_the_answer_ready() {
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = silent.local_addr().unwrap().port();
        let urls = [
            format!("turn:127.0.0.1:{port}?transport=udp"),
            format!("turn:127.0.0.1:{port}?transport=tcp"),
        ];
        assert_eq!(
            relay_to_probe(urls.iter()),
            Some(("127.0.0.1".to_string(), port))
        );
        assert_eq!(relay_to_probe(urls[..1].iter()), None, "nothing to bridge");
        assert_eq!(
            relay_to_probe(urls[1..].iter()),
            None,
            "no relay over UDP to ask"
        );
        warm_up(urls.iter());
        tokio::time::sleep(PROBE_WAIT + Duration::from_millis(100)).await;
        let asked = Instant::now();
        assert!(!udp_answers("127.0.0.1", port).await);
        assert!(asked.elapsed() < PROBE_WAIT / 2, "{:?}", asked.elapsed());
    }

    #[test]
    fn frames_are_cut_by_their_headers() {
        // STUN: 20-byte header + its length.
        let mut stun = vec![0x01, 0x01, 0x00, 0x08];
        stun.extend_from_slice(&[0u8; 16 + 8]);
        assert_eq!(next_frame(&stun).unwrap(), Some((28, 28)));
        assert_eq!(next_frame(&stun[..27]).unwrap(), None);
        // ChannelData of 5 bytes: 9 in the datagram, 12 on the stream.
        let chan = [0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0];
        assert_eq!(next_frame(&chan).unwrap(), Some((12, 9)));
        assert_eq!(next_frame(&chan[..11]).unwrap(), None);
        assert_eq!(framed(&chan[..9]), chan.to_vec());
        assert_eq!(framed(&stun), stun);
        assert!(next_frame(&[0x80, 0, 0, 0]).is_err());
        assert!(next_frame(&[0xc0, 0, 0, 0]).is_err());
        assert_eq!(next_frame(&[0x00, 0x01]).unwrap(), None);
    }

    /// A datagram to the bridge reaches a TCP server as a padded frame, and the server's frames
    /// come back one datagram each, ChannelData without its padding.
    #[tokio::test]
    async fn datagrams_cross_a_tcp_stream_both_ways() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let bridge = Bridge::start(StreamServer {
            host: "127.0.0.1".into(),
            port,
            tls: false,
        })
        .await
        .unwrap();
        assert_eq!(bridge.url(), format!("turn:{}?transport=udp", bridge.local));
        assert!(bridge.serves(&bridge.url()));
        assert!(!bridge.serves(&format!("turn:127.0.0.1:{port}?transport=udp")));
        let stack = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let chan = [0x40u8, 0x01, 0x00, 0x03, 7, 8, 9];
        stack.send_to(&chan, bridge.local).await.unwrap();
        let wait = Duration::from_secs(10);
        let (mut server, _) = tokio::time::timeout(wait, listener.accept())
            .await
            .unwrap()
            .unwrap();
        let mut got = [0u8; 8];
        tokio::time::timeout(wait, server.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, [0x40, 0x01, 0x00, 0x03, 7, 8, 9, 0]);
        // Two frames in one write, the second split across two.
        let mut stun = vec![0x01, 0x13, 0x00, 0x04];
        stun.extend_from_slice(&[0xaa; 20]);
        let mut wire = got.to_vec();
        wire.extend_from_slice(&stun[..10]);
        server.write_all(&wire).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        server.write_all(&stun[10..]).await.unwrap();
        let mut dgram = [0u8; 64];
        let (n, _) = tokio::time::timeout(wait, stack.recv_from(&mut dgram))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&dgram[..n], &chan);
        let (n, _) = tokio::time::timeout(wait, stack.recv_from(&mut dgram))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&dgram[..n], &stun[..]);
        // Garbage from the server ends that stream.
        server.write_all(&[0xff, 0, 0, 0]).await.unwrap();
        let mut rest = [0u8; 1];
        let closed = tokio::time::timeout(wait, server.read(&mut rest))
            .await
            .unwrap();
        assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    }
}
