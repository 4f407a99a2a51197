//! The WebSocket to the signalling server: creating or joining a room, then sending and receiving
//! envelopes. Knows the server's replies (PROTOCOL.md §1) but nothing of what peers say.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use yakk_wire::{Envelope, IceServer, msg};

use crate::SessionError;

/// Largest envelope we accept from the server (the server's own limit is 64 KiB).
const MAX_FRAME: usize = 64 * 1024;

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
/// whose own round trips precede the upgrade, the TCP handshake alone.
async fn connect(url: &str) -> Result<(Ws, Duration), SessionError> {
    let unreachable = |e: &dyn std::fmt::Display| {
        SessionError::SignalUnreachable(format!("{}: {e}", redact_query(url)))
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
                let tls = uri.scheme_str() == Some("wss");
                let started = tokio::time::Instant::now();
                let (ws, _) = tokio_tungstenite::client_async_tls(request, tcp)
                    .await
                    .map_err(|e| unreachable(&e))?;
                let upgrade = if tls {
                    Duration::ZERO
                } else {
                    started.elapsed()
                };
                return Ok((ws, handshake.max(upgrade)));
            }
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) => unreachable(&e),
        None => unreachable(&"the name resolves to no address"),
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
            .map_err(|e| SessionError::SignalClosed(e.to_string()))?;
        let bytes: Vec<u8> = match frame {
            Message::Text(t) => t.as_bytes().to_vec(),
            Message::Binary(b) => b.to_vec(),
            Message::Close(c) => {
                let why = c.map(|c| c.reason.to_string()).unwrap_or_default();
                return Err(SessionError::SignalClosed(why));
            }
            _ => continue,
        };
        return Envelope::parse(&bytes, MAX_FRAME)
            .map_err(|e| SessionError::SignalProtocol(e.to_string()));
    }
}

/// Creates a room. `max_peers` asks the server to admit at most that many joiners.
pub async fn create_room(
    signal: &str,
    keep_alive: bool,
    max_peers: Option<u32>,
) -> Result<Membership, SessionError> {
    let mut url = format!("{}?keepAlive={keep_alive}", ws_base_url(signal)?);
    if let Some(n) = max_peers {
        url.push_str(&format!("&maxPeers={n}"));
    }
    let (mut ws, server_rtt) = connect(&url).await?;
    let reply = next_envelope(&mut ws).await?;
    if reply.msg_type != msg::ROOM_CREATED {
        return Err(server_refusal(&reply));
    }
    Ok(spawn_pumps(
        ws,
        server_rtt,
        reply.payload.clone(),
        reply.recipient,
        reply.recipient,
        reply.ice_servers.unwrap_or_default(),
    ))
}

/// Joins room `room`.
pub async fn join_room(signal: &str, room: &str) -> Result<Membership, SessionError> {
    if room.is_empty() || !room.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(SessionError::NoSuchRoom(room.to_string()));
    }
    let url = format!("{}?roomID={room}", ws_base_url(signal)?);
    let (mut ws, server_rtt) = connect(&url).await?;
    let reply = next_envelope(&mut ws).await?;
    if reply.msg_type == msg::ERROR && reply.payload == "No such room" {
        return Err(SessionError::NoSuchRoom(room.to_string()));
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

fn server_refusal(reply: &Envelope) -> SessionError {
    if reply.msg_type == msg::ERROR {
        SessionError::SignalRefused(reply.payload.chars().take(200).collect())
    } else {
        SessionError::SignalProtocol(format!("unexpected first reply {}", reply.msg_type))
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
        while let Some(frame) = stream.next().await {
            let bytes: Vec<u8> = match frame {
                Ok(Message::Text(t)) => t.as_bytes().to_vec(),
                Ok(Message::Binary(b)) => b.to_vec(),
                Ok(Message::Close(c)) => {
                    let why = c.map(|c| c.reason.to_string()).unwrap_or_default();
                    tracing::debug!(reason = %why, "signalling server closed the connection");
                    break;
                }
                Ok(_) => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "signalling connection ended");
                    break;
                }
            };
            match Envelope::parse(&bytes, MAX_FRAME) {
                Ok(env) => {
                    if in_tx.send(env).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!("ignoring a malformed message from the signalling server: {e}")
                }
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

#[cfg(test)]
mod tests {
    use super::*;

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
