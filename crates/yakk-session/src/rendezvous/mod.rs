//! The WebSocket to the signalling server: joining a room (creating one, and an owner's way back
//! into it after losing the connection: `create.rs`), then sending and receiving envelopes.
//! Knows the server's replies (PROTOCOL.md §1) but nothing of what peers say.
//!
//! The server is not trusted with the terminal or with memory: every text of its own that can
//! reach the user (a refusal, a close reason, an unexpected message name, the room name it
//! hands out) is escaped ([`yakk_wire::escape`]) or checked, and the WebSocket refuses a
//! message or frame longer than an envelope ([`yakk_wire::MAX_ENVELOPE`]) from its header,
//! before reading it.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use yakk_wire::{Envelope, IceServer, escape, msg};

use crate::SessionError;

mod create;
pub use create::create_room;

/// Largest envelope we accept from the server (a yakk server's own default limit).
const MAX_FRAME: usize = yakk_wire::MAX_ENVELOPE;

/// Longest room name we take from a server (a yakk server's names are a few digits).
const MAX_ROOM_NAME: usize = 64;

/// The WebSocket's limits: no message or frame longer than an envelope. tungstenite checks a
/// frame's length from its header and a message's as its fragments arrive, so a longer one is
/// refused before it is read, not buffered first (its default allows 64 MiB).
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME))
        .max_frame_size(Some(MAX_FRAME))
}

/// What a broken WebSocket means to the user; the server's own words escaped.
fn ws_error(e: &WsError) -> SessionError {
    match e {
        WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
            SessionError::SignalProtocol(format!(
                "a message of {size} bytes, over the limit of {max_size}: refused unread"
            ))
        }
        other => SessionError::SignalClosed(escape(&other.to_string())),
    }
}

/// A close frame's reason, escaped.
fn close_reason(c: Option<tokio_tungstenite::tungstenite::protocol::CloseFrame>) -> String {
    c.map(|c| escape(&c.reason)).unwrap_or_default()
}

/// Turns what a user typed into the WebSocket URL of the server's `/ws/` endpoint:
/// `host:port` means `ws://host:port` (as in the reference), `http(s)://` maps to `ws(s)://`.
pub fn ws_base_url(signal: &str) -> Result<String, SessionError> {
    let s = signal.trim().trim_end_matches('/');
    let (scheme, rest) = match s.split_once("://") {
        Some(("ws" | "http", rest)) => ("ws", rest),
        Some(("wss" | "https", rest)) => ("wss", rest),
        Some((other, _)) => {
            return Err(SessionError::BadSignalUrl(format!(
                "{signal}: unsupported scheme {other}:// (use ws:// or wss://)"
            )));
        }
        None => ("ws", s),
    };
    let rest = rest.strip_suffix("/ws").unwrap_or(rest);
    if rest.is_empty() || rest.contains(char::is_whitespace) {
        return Err(SessionError::BadSignalUrl(format!(
            "{signal}: no host given"
        )));
    }
    Ok(format!("{scheme}://{rest}/ws/"))
}

/// A room membership: our mailbox id, and the channels to and from the server.
pub struct Membership {
    pub room: String,
    pub my_id: i64,
    /// The owner's mailbox id (for a joiner); the owner's own id for the owner.
    pub owner_id: i64,
    pub ice_servers: Vec<IceServer>,
    pub outgoing: mpsc::Sender<Envelope>,
    pub incoming: mpsc::Receiver<Envelope>,
    /// One round trip to the signalling server, as `connect` measures it.
    pub server_rtt: Duration,
    /// The task that writes `outgoing` to the socket; it ends once every sender is gone and
    /// the queue is written.
    writer: tokio::task::JoinHandle<()>,
}

impl Membership {
    /// Writes what is still queued, closes the WebSocket, and waits for that (at most
    /// `within`). A side that gives up and exits must not lose its last messages: its key
    /// confirmation, which the peer needs to learn that the password was wrong, or a notice
    /// of why it stopped. Other clones of `outgoing` must be gone, or this waits `within`.
    pub async fn finish(self, within: std::time::Duration) {
        let Membership {
            outgoing, writer, ..
        } = self;
        drop(outgoing);
        let _ = tokio::time::timeout(within, writer).await;
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects the WebSocket; also returns one round trip to the server, name resolution left
/// out: the longer of the TCP handshake and, without TLS, the WebSocket upgrade (request and
/// answer; a relay in between, such as a proxy, answers the TCP handshake itself). With TLS,
/// whose own round trips precede the upgrade, the TCP handshake alone. A server on this
/// machine (the connection's two ends on one address: loopback, or the machine's own address
/// as an owner's built-in server is reached) counts as zero: what the clock shows there is how
/// busy the machine is, and on a loaded one it passed the 20 ms that ask for lanes.
async fn connect(url: &str) -> Result<(Ws, Duration), SessionError> {
    let unreachable = |e: &dyn std::fmt::Display| {
        SessionError::SignalUnreachable(escape(&format!("{}: {e}", redact_query(url))))
    };
    let request = url.into_client_request().map_err(|e| unreachable(&e))?;
    let uri = request.uri();
    let host = uri.host().unwrap_or_default();
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("wss") {
            443
        } else {
            80
        });
    let addrs: Vec<_> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| unreachable(&e))?
        .collect();
    let mut last = None;
    for addr in addrs {
        let started = tokio::time::Instant::now();
        match tokio::net::TcpStream::connect(addr).await {
            Ok(tcp) => {
                let handshake = started.elapsed();
                let here = tcp.local_addr().is_ok_and(|local| local.ip() == addr.ip());
                // Each message of the handshake is small and answered: Nagle's algorithm would
                // hold the second of two back-to-back messages (REQUESTOFFER then round 1,
                // round 2 then the key confirmation) until the server acknowledges the first,
                // a round trip or a delayed acknowledgement later.
                let _ = tcp.set_nodelay(true);
                let tls = uri.scheme_str() == Some("wss");
                let started = tokio::time::Instant::now();
                // The Web PKI roots, plus a private authority's from SSL_CERT_FILE.
                let trust =
                    tokio_tungstenite::Connector::Rustls(yakk_transport::tls::client_config());
                let (ws, _) = tokio_tungstenite::client_async_tls_with_config(
                    request,
                    tcp,
                    Some(ws_config()),
                    Some(trust),
                )
                .await
                .map_err(|e| unreachable(&e))?;
                let upgrade = if tls {
                    Duration::ZERO
                } else {
                    started.elapsed()
                };
                let rtt = if here {
                    Duration::ZERO
                } else {
                    handshake.max(upgrade)
                };
                return Ok((ws, rtt));
            }
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) => unreachable(&e),
        None => unreachable(&"the name resolves to no address"),
    })
}

/// How long the signalling server has to accept the connection and send its first reply.
const SIGNAL_ANSWER: Duration = Duration::from_secs(10);

/// Connects (see [`connect`]) and reads the server's first reply, all within `bound`: a server
/// that accepts the TCP connection and then says nothing is reported, not waited for forever.
async fn open(url: &str, bound: Duration) -> Result<(Ws, Duration, Envelope), SessionError> {
    let opened = tokio::time::timeout(bound, async {
        let (mut ws, rtt) = connect(url).await?;
        let reply = next_envelope(&mut ws).await?;
        Ok((ws, rtt, reply))
    })
    .await;
    opened.unwrap_or_else(|_| {
        Err(SessionError::SignalUnreachable(escape(&format!(
            "{}: no answer within {bound:?}",
            redact_query(url)
        ))))
    })
}

fn redact_query(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

async fn next_envelope(ws: &mut Ws) -> Result<Envelope, SessionError> {
    loop {
        let frame = ws
            .next()
            .await
            .ok_or_else(|| SessionError::SignalClosed("before it answered".into()))?
            .map_err(|e| ws_error(&e))?;
        let bytes: Vec<u8> = match frame {
            Message::Text(t) => t.as_bytes().to_vec(),
            Message::Binary(b) => b.to_vec(),
            Message::Close(c) => return Err(SessionError::SignalClosed(close_reason(c))),
            _ => continue,
        };
        return Envelope::parse(&bytes, MAX_FRAME)
            .map_err(|e| SessionError::SignalProtocol(escape(&e.to_string())));
    }
}

/// Joins room `room`.
pub async fn join_room(signal: &str, room: &str) -> Result<Membership, SessionError> {
    if !is_room_name(room) {
        return Err(SessionError::NoSuchRoom(escape(room)));
    }
    let url = format!("{}?roomID={room}", ws_base_url(signal)?);
    let (ws, server_rtt, reply) = open(&url, SIGNAL_ANSWER).await?;
    if reply.msg_type == msg::ERROR && reply.payload == "No such room" {
        return Err(SessionError::NoSuchRoom(room.to_string()));
    }
    if reply.msg_type == msg::ERROR && reply.payload == "Room is full" {
        return Err(SessionError::RoomFull);
    }
    if reply.msg_type != msg::ROOM_JOINED {
        return Err(server_refusal(&reply));
    }
    Ok(spawn_pumps(
        ws,
        server_rtt,
        room.to_string(),
        reply.recipient,
        reply.sender,
        reply.ice_servers.unwrap_or_default(),
    ))
}

/// A room name as codes carry it: letters, digits and `-`, at most [`MAX_ROOM_NAME`].
fn is_room_name(room: &str) -> bool {
    !room.is_empty()
        && room.len() <= MAX_ROOM_NAME
        && room.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

fn server_refusal(reply: &Envelope) -> SessionError {
    let shown = |s: &str| escape(&s.chars().take(200).collect::<String>());
    if reply.msg_type == msg::ERROR {
        SessionError::SignalRefused(shown(&reply.payload))
    } else {
        SessionError::SignalProtocol(format!("unexpected first reply {}", shown(&reply.msg_type)))
    }
}

/// Moves the socket into two tasks: one writes queued envelopes, one reads and parses.
fn spawn_pumps(
    ws: Ws,
    server_rtt: Duration,
    room: String,
    my_id: i64,
    owner_id: i64,
    ice_servers: Vec<IceServer>,
) -> Membership {
    let (mut sink, mut stream) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Envelope>(64);
    let (in_tx, in_rx) = mpsc::channel::<Envelope>(64);
    let writer = tokio::spawn(async move {
        while let Some(env) = out_rx.recv().await {
            if sink.send(Message::text(env.to_json())).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    tokio::spawn(async move {
        loop {
            match read_frame(stream.next().await) {
                Frame::Envelope(env) => {
                    if in_tx.send(env).await.is_err() {
                        break;
                    }
                }
                Frame::Skip => {}
                Frame::End => break,
            }
        }
    });
    Membership {
        room,
        my_id,
        owner_id,
        ice_servers,
        outgoing: out_tx,
        incoming: in_rx,
        server_rtt,
        writer,
    }
}

/// What one read from the server's socket gave.
enum Frame {
    Envelope(Envelope),
    /// A control frame, or a malformed message (logged).
    Skip,
    /// The connection ended (logged).
    End,
}

fn read_frame(frame: Option<Result<Message, WsError>>) -> Frame {
    let bytes: Vec<u8> = match frame {
        None => return Frame::End,
        Some(Ok(Message::Text(t))) => t.as_bytes().to_vec(),
        Some(Ok(Message::Binary(b))) => b.to_vec(),
        Some(Ok(Message::Close(c))) => {
            let why = close_reason(c);
            tracing::debug!(reason = %why, "signalling server closed the connection");
            return Frame::End;
        }
        Some(Ok(_)) => return Frame::Skip,
        Some(Err(e)) => {
            match ws_error(&e) {
                e @ SessionError::SignalProtocol(_) => tracing::warn!("{e}"),
                e => tracing::debug!(error = %e, "signalling connection ended"),
            }
            return Frame::End;
        }
    };
    match Envelope::parse(&bytes, MAX_FRAME) {
        Ok(env) => Frame::Envelope(env),
        Err(e) => {
            tracing::warn!(
                "ignoring a malformed message from the signalling server: {}",
                escape(&e.to_string())
            );
            Frame::Skip
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that takes the TCP connection and never answers, or answers the WebSocket
    /// upgrade and then sends nothing: `open` gives up after its bound, saying why.
    #[tokio::test]
    async fn a_silent_server_is_reported_not_waited_for() {
        use tokio::net::TcpListener;
        let bound = Duration::from_millis(300);
        for upgrade in [false, true] {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            let server = tokio::spawn(async move {
                let (tcp, _) = l.accept().await.unwrap();
                // Keep the connection open, silent, for longer than the bound.
                let silence = tokio::time::sleep(Duration::from_secs(5));
                if upgrade {
                    let _ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
                    silence.await;
                } else {
                    let _tcp = tcp;
                    silence.await;
                }
            });
            let started = std::time::Instant::now();
            let got = open(&format!("ws://{addr}/ws?roomID=x"), bound).await;
            let took = started.elapsed();
            let Err(e) = got else {
                panic!("upgrade {upgrade}: a silent server was taken for an answer")
            };
            assert!(
                matches!(&e, SessionError::SignalUnreachable(m) if m.contains("no answer within 300ms") && !m.contains("roomID")),
                "upgrade {upgrade}: {e}"
            );
            assert!(took < Duration::from_secs(3), "upgrade {upgrade}: {took:?}");
            server.abort();
        }
    }

    /// The client's socket sends each message at once: with Nagle's algorithm on, a message
    /// written while the one before is unacknowledged waits for that acknowledgement (a round
    /// trip on a real path; measured at 50 ms RTT, the key exchange took 250 ms, not 100).
    #[tokio::test]
    async fn the_client_socket_sends_without_delay() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = l.accept().await.unwrap();
            let ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            tokio::time::sleep(Duration::from_secs(2)).await;
            drop(ws);
        });
        let (ws, _) = connect(&format!("ws://{addr}/ws?roomID=x")).await.unwrap();
        let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = ws.get_ref() else {
            panic!("a ws:// URL gave a TLS stream")
        };
        assert!(tcp.nodelay().unwrap(), "Nagle's algorithm is on");
        server.abort();
    }

    /// A one-room signalling server on a thread: answers the room creation, then collects
    /// every text message until the client closes.
    fn collecting_server() -> (String, std::thread::JoinHandle<Vec<String>>) {
        use tokio_tungstenite::tungstenite;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .unwrap();
            let mut ws = tungstenite::accept(tcp).unwrap();
            let created = Envelope::new(msg::ROOM_CREATED, "417", -1, 1);
            ws.send(Message::text(created.to_json())).unwrap();
            let mut got = Vec::new();
            while let Ok(m) = ws.read() {
                match m {
                    Message::Text(t) => got.push(t.to_string()),
                    Message::Close(_) => break,
                    _ => {}
                }
            }
            got
        });
        (addr, server)
    }

    #[test]
    fn finish_writes_what_is_queued_before_the_process_goes() {
        let (addr, server) = collecting_server();
        // A runtime that is dropped right after, as when yakk exits on an error: a spawned
        // writer that has not run by then never runs.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let m = create_room(&addr, false, None).await.unwrap();
            for i in 0..20 {
                let env = Envelope::new(msg::JPAKE_KEY_CONFIRMATION, format!("m{i}"), 1, 2);
                m.outgoing.send(env).await.unwrap();
            }
            m.finish(std::time::Duration::from_secs(5)).await;
        });
        drop(rt);
        let got = server.join().unwrap();
        assert_eq!(got.len(), 20, "{got:?}");
        assert!(got[19].contains("m19"), "in order: {got:?}");
    }

    type ServerWs = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

    /// A hostile signalling server for one connection on 127.0.0.1: `act` does what it likes
    /// with the WebSocket once the upgrade is done.
    async fn hostile_server<F, Fut>(act: F) -> String
    where
        F: FnOnce(ServerWs) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            // Bounded: the test's own timeouts are shorter.
            let _ = tokio::time::timeout(Duration::from_secs(20), act(ws)).await;
        });
        addr
    }

    /// A hostile server that answers with `e` and then says nothing.
    async fn server_answering(e: Envelope) -> String {
        hostile_server(|mut ws| async move {
            ws.send(Message::text(e.to_json())).await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        })
        .await
    }

    /// What a hostile server tried: clear the screen, home the cursor, print a fake prompt,
    /// retitle the terminal, and hide text behind a bidirectional override.
    const NASTY: &str = "\u{1b}[2J\u{1b}[H\u{1b}]0;owned\u{7}Password: \u{9b}31m\u{202e}txt.exe";

    fn assert_printable(e: &SessionError) {
        let text = e.to_string();
        assert!(
            !text
                .chars()
                .any(|c| c.is_control() || ('\u{2028}'..='\u{202e}').contains(&c)),
            "raw control characters reach the terminal: {text:?}"
        );
        assert!(
            text.contains("\\u{1b}[2J"),
            "escaped, not dropped: {text:?}"
        );
    }

    async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(10), f)
            .await
            .expect("the client did not give up in time")
    }

    #[tokio::test]
    async fn a_servers_refusal_is_escaped() {
        let addr = server_answering(Envelope::new(msg::ERROR, NASTY, 0, 0)).await;
        let err = within(create_room(&addr, false, None)).await.err().unwrap();
        assert!(matches!(err, SessionError::SignalRefused(_)), "{err:?}");
        assert_printable(&err);
    }

    #[tokio::test]
    async fn a_servers_close_reason_is_escaped() {
        let addr = hostile_server(|mut ws| async move {
            use tokio_tungstenite::tungstenite::protocol::CloseFrame;
            use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
            let frame = CloseFrame {
                code: CloseCode::Normal,
                reason: NASTY.into(),
            };
            let _ = ws.close(Some(frame)).await;
        })
        .await;
        let err = within(join_room(&addr, "417")).await.err().unwrap();
        assert!(matches!(err, SessionError::SignalClosed(_)), "{err:?}");
        assert_printable(&err);
    }

    #[tokio::test]
    async fn a_servers_unexpected_reply_is_escaped() {
        let addr = server_answering(Envelope::new(NASTY, "", 0, 1)).await;
        let err = within(join_room(&addr, "417")).await.err().unwrap();
        assert!(matches!(err, SessionError::SignalProtocol(_)), "{err:?}");
        assert_printable(&err);
    }

    /// The room name a server hands out ends up in the printed code: it is checked.
    #[tokio::test]
    async fn a_servers_room_name_is_checked() {
        let addr = server_answering(Envelope::new(msg::ROOM_CREATED, NASTY, -1, 0)).await;
        let err = within(create_room(&addr, false, None)).await.err().unwrap();
        assert!(matches!(err, SessionError::SignalProtocol(_)), "{err:?}");
        assert_printable(&err);
    }

    #[tokio::test]
    async fn a_one_mib_message_is_refused_with_a_clear_error() {
        let addr = hostile_server(|mut ws| async move {
            let big = "x".repeat(1 << 20);
            let _ = ws.send(Message::text(big)).await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        })
        .await;
        let err = within(create_room(&addr, false, None)).await.err().unwrap();
        assert!(matches!(err, SessionError::SignalProtocol(_)), "{err:?}");
        let text = err.to_string();
        // From the WebSocket's limit, not from parsing a message it had read whole.
        assert!(
            text.contains("over the limit of 65536") && text.contains("refused unread"),
            "{text}"
        );
    }

    /// The refusal comes from the frame's header: a server that announces 1 MiB and sends only
    /// its first bytes is refused at once, rather than waited for while the client buffers.
    #[tokio::test]
    async fn an_oversized_frame_is_refused_from_its_header_unread() {
        let addr = hostile_server(|mut ws| async move {
            use tokio::io::AsyncWriteExt;
            let tcp = ws.get_mut();
            // FIN + binary, 64-bit length 1 MiB, unmasked (server to client).
            let mut frame = vec![0x82, 127];
            frame.extend_from_slice(&(1u64 << 20).to_be_bytes());
            frame.extend_from_slice(&[b'x'; 1024]);
            tcp.write_all(&frame).await.unwrap();
            tcp.flush().await.unwrap();
            tokio::time::sleep(Duration::from_secs(15)).await;
        })
        .await;
        let started = tokio::time::Instant::now();
        let err = tokio::time::timeout(Duration::from_secs(5), join_room(&addr, "417"))
            .await
            .expect("the client waited for the rest of a 1 MiB frame")
            .err()
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        let text = err.to_string();
        assert!(
            matches!(err, SessionError::SignalProtocol(_)) && text.contains("1048576 bytes"),
            "{text}"
        );
    }

    /// A server whose upgrade answer comes 60 ms late: on this machine's address that is the
    /// machine's load, not distance (a round trip of zero, so `--lanes auto` asks for one lane);
    /// on another address (127.0.0.2, which the kernel reaches from 127.0.0.1) it is measured.
    #[tokio::test]
    async fn a_server_on_this_machine_is_no_distance_away() {
        async fn slow_upgrade(ip: &str) -> String {
            let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            tokio::spawn(async move {
                let (tcp, _) = listener.accept().await.unwrap();
                tokio::time::sleep(Duration::from_millis(60)).await;
                let _ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
                tokio::time::sleep(Duration::from_secs(2)).await;
            });
            addr
        }
        let here = slow_upgrade("127.0.0.1").await;
        let (_ws, rtt) = within(connect(&ws_base_url(&here).unwrap())).await.unwrap();
        assert_eq!(rtt, Duration::ZERO, "a server on this machine");
        assert_eq!(crate::auto_lanes(Some(rtt)), 1);
        let elsewhere = slow_upgrade("127.0.0.2").await;
        let (_ws, rtt) = within(connect(&ws_base_url(&elsewhere).unwrap()))
            .await
            .unwrap();
        assert!(rtt >= Duration::from_millis(60), "{rtt:?}");
    }

    #[test]
    fn signal_urls_normalise() {
        assert_eq!(
            ws_base_url("localhost:6006").unwrap(),
            "ws://localhost:6006/ws/"
        );
        assert_eq!(ws_base_url("ws://h:1/").unwrap(), "ws://h:1/ws/");
        assert_eq!(ws_base_url("https://h/ws").unwrap(), "wss://h/ws/");
        assert_eq!(ws_base_url("wss://h:443").unwrap(), "wss://h:443/ws/");
        assert!(ws_base_url("ftp://h").is_err());
        assert!(ws_base_url("").is_err());
    }
}
