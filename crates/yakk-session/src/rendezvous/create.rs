//! Creating a room, and an owner's membership that outlives the loss of its signalling
//! connection when the server handed out a reclaim secret (`yakk signal --redis`).

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use yakk_wire::{Envelope, IceServer, escape, msg};

use super::{
    Frame, MAX_ROOM_NAME, Membership, SIGNAL_ANSWER, Ws, connect, is_room_name, next_envelope,
    open, read_frame, server_refusal, spawn_pumps, ws_base_url,
};
use crate::SessionError;

/// Longest reclaim secret we take from a server (a yakk server's are 32 hex digits).
const MAX_RECLAIM_SECRET: usize = 128;

/// Waits before each attempt to take a room back after the signalling connection dropped:
/// about 8 s in all, then the room is given up as without a secret.
const RECLAIM_DELAYS: [Duration; 6] = [
    Duration::from_millis(100),
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_millis(1000),
    Duration::from_millis(2000),
    Duration::from_millis(4000),
];

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
    let (ws, server_rtt, reply) = open(&url, SIGNAL_ANSWER).await?;
    if reply.msg_type != msg::ROOM_CREATED {
        return Err(server_refusal(&reply));
    }
    let reclaim = reply.reclaim.clone().filter(|s| {
        !s.is_empty()
            && s.len() <= MAX_RECLAIM_SECRET
            && s.chars().all(|c| c.is_ascii_alphanumeric())
    });
    // The name ends up in the code the user passes on, and on the terminal.
    if !is_room_name(&reply.payload) {
        return Err(SessionError::SignalProtocol(format!(
            "an unusable room name {:?}",
            escape(
                &reply
                    .payload
                    .chars()
                    .take(MAX_ROOM_NAME)
                    .collect::<String>()
            )
        )));
    }
    let ice_servers = reply.ice_servers.unwrap_or_default();
    if let Some(secret) = reclaim {
        let again = format!(
            "{}?roomID={}&reclaim={secret}",
            ws_base_url(signal)?,
            reply.payload
        );
        let room = reply.payload;
        return Ok(spawn_reclaiming_pumps(
            ws,
            server_rtt,
            room,
            reply.recipient,
            ice_servers,
            again,
        ));
    }
    Ok(spawn_pumps(
        ws,
        server_rtt,
        reply.payload.clone(),
        reply.recipient,
        reply.recipient,
        ice_servers,
    ))
}
/// How one connection of a reclaiming owner ended.
enum PumpEnd {
    /// We are done: every sender of `outgoing` is gone, or nobody reads `incoming`.
    Finished,
    /// The connection dropped under us.
    Lost,
}

/// Relays between one connection and the membership's channels until either ends.
async fn pump(
    ws: Ws,
    out_rx: &mut mpsc::Receiver<Envelope>,
    in_tx: &mpsc::Sender<Envelope>,
) -> PumpEnd {
    let (mut sink, mut stream) = ws.split();
    loop {
        tokio::select! {
            env = out_rx.recv() => match env {
                Some(env) => {
                    if sink.send(Message::text(env.to_json())).await.is_err() {
                        return PumpEnd::Lost;
                    }
                }
                None => {
                    let _ = sink.close().await;
                    return PumpEnd::Finished;
                }
            },
            frame = stream.next() => match read_frame(frame) {
                Frame::Envelope(env) => {
                    if in_tx.send(env).await.is_err() {
                        let _ = sink.close().await;
                        return PumpEnd::Finished;
                    }
                }
                Frame::Skip => {}
                Frame::End => return PumpEnd::Lost,
            },
        }
    }
}

/// Takes room `room` back through `url` (which carries the secret), a few times spaced out;
/// `None` once the attempts are spent or the server says the room is gone.
async fn take_back(url: &str, room: &str) -> Option<Ws> {
    for delay in RECLAIM_DELAYS {
        tokio::time::sleep(delay).await;
        let Ok((mut ws, _)) = connect(url).await else {
            continue;
        };
        match tokio::time::timeout(Duration::from_secs(5), next_envelope(&mut ws)).await {
            Ok(Ok(reply)) if reply.msg_type == msg::ROOM_CREATED && reply.payload == room => {
                tracing::info!(room = %escape(room), "took the room back after losing the signalling connection");
                return Some(ws);
            }
            Ok(Ok(reply)) if reply.msg_type == msg::ERROR && reply.payload == "No such room" => {
                tracing::info!(room = %escape(room), "the signalling server no longer has the room");
                return None;
            }
            Ok(Ok(reply)) => {
                tracing::debug!("room not taken back: {}", server_refusal(&reply));
            }
            Ok(Err(e)) => tracing::debug!("room not taken back: {e}"),
            Err(_) => tracing::debug!("room not taken back: no answer"),
        }
    }
    None
}

/// The owner's pumps when the server handed out a reclaim secret (a cluster of signalling
/// instances sharing rooms, `yakk signal --redis`): when the connection drops (its instance
/// stopped, restarted or drained), it reconnects to the same address, which may now lead to
/// another instance, and takes the room back with the secret, keeping the same channels, so
/// the room's code keeps working for new joiners. Messages in flight during the gap are lost
/// (a handshake under way fails, and its joiner may retry). After [`RECLAIM_DELAYS`] the room
/// is given up as without a secret: `incoming` ends.
fn spawn_reclaiming_pumps(
    ws: Ws,
    server_rtt: Duration,
    room: String,
    my_id: i64,
    ice_servers: Vec<IceServer>,
    reclaim_url: String,
) -> Membership {
    let (out_tx, mut out_rx) = mpsc::channel::<Envelope>(64);
    let (in_tx, in_rx) = mpsc::channel::<Envelope>(64);
    let (written_tx, written_rx) = tokio::sync::oneshot::channel::<()>();
    let name = room.clone();
    tokio::spawn(async move {
        let mut ws = ws;
        loop {
            match pump(ws, &mut out_rx, &in_tx).await {
                PumpEnd::Finished => {
                    let _ = written_tx.send(());
                    return;
                }
                PumpEnd::Lost => {}
            }
            match take_back(&reclaim_url, &name).await {
                Some(again) => ws = again,
                None => return,
            }
        }
    });
    // `finish` waits for this: the queue written (or the room given up).
    let writer = tokio::spawn(async move {
        let _ = written_rx.await;
    });
    Membership {
        room,
        my_id,
        owner_id: my_id,
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

    type ServerWs = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

    /// A signalling "cluster" on one address: the first connection creates room 417 with a
    /// reclaim secret and is then dropped (its instance died); `second` handles the next
    /// connection and returns the query it was opened with.
    // The upgrade callback's error type is tungstenite's, large as it is.
    #[allow(clippy::result_large_err)]
    async fn dying_instance_then<F, Fut>(second: F) -> (String, tokio::task::JoinHandle<String>)
    where
        F: FnOnce(ServerWs) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            let mut created = Envelope::new(msg::ROOM_CREATED, "417", -1, 0);
            created.reclaim = Some("c0ffee".into());
            ws.send(Message::text(created.to_json())).await.unwrap();
            drop(ws);
            let (tcp, _) = listener.accept().await.unwrap();
            let mut query = String::new();
            let ws = tokio_tungstenite::accept_hdr_async(tcp, |req: &Request, resp: Response| {
                query = req.uri().query().unwrap_or_default().to_string();
                Ok(resp)
            })
            .await
            .unwrap();
            let _ = tokio::time::timeout(Duration::from_secs(20), second(ws)).await;
            query
        });
        (addr, task)
    }

    #[tokio::test]
    async fn an_owner_takes_its_room_back_after_losing_the_signalling_connection() {
        let (addr, server) = dying_instance_then(|mut ws| async move {
            let back = Envelope::new(msg::ROOM_CREATED, "417", -1, 0);
            ws.send(Message::text(back.to_json())).await.unwrap();
            let joiner = Envelope::new(msg::REQUEST_OFFER, "", 1, 0);
            ws.send(Message::text(joiner.to_json())).await.unwrap();
            // The owner's answer comes over the new connection.
            while let Some(Ok(m)) = ws.next().await {
                if let Message::Text(t) = m {
                    assert!(t.contains("YAKKMSG_OFFER"), "{t}");
                    break;
                }
            }
        })
        .await;
        let mut m = create_room(&addr, false, None).await.unwrap();
        assert_eq!(m.room, "417");
        let got = tokio::time::timeout(Duration::from_secs(10), m.incoming.recv())
            .await
            .expect("the room came back")
            .expect("the membership goes on");
        assert_eq!(got.msg_type, msg::REQUEST_OFFER);
        m.outgoing
            .send(Envelope::new(msg::OFFER, "sdp", 0, 1))
            .await
            .unwrap();
        let query = tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(query, "roomID=417&reclaim=c0ffee");
    }

    #[tokio::test]
    async fn an_owner_gives_its_room_up_when_the_server_no_longer_has_it() {
        let (addr, _server) = dying_instance_then(|mut ws| async move {
            let gone = Envelope::new(msg::ERROR, "No such room", 0, 0);
            ws.send(Message::text(gone.to_json())).await.unwrap();
            let _ = ws.next().await;
        })
        .await;
        let mut m = create_room(&addr, false, None).await.unwrap();
        let end = tokio::time::timeout(Duration::from_secs(10), m.incoming.recv()).await;
        assert!(matches!(end, Ok(None)), "the membership ends: {end:?}");
    }
}
