//! End-to-end behaviour of rooms and the relay over real WebSockets on 127.0.0.1.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use yakk_signal::Config;
use yakk_wire::Envelope;

const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn hello() {
    let server = start(Config::default()).await;
    let (status, headers, body) = http_get(
        TcpStream::connect(server.local_addr()).await.unwrap(),
        "/hello",
    )
    .await;
    assert_eq!(status, 200);
    assert!(headers.contains(&("content-type".into(), "application/json".into())));
    assert_eq!(body, r#"{"Hello":"World"}"#);
    let (status, _, _) = http_get(
        TcpStream::connect(server.local_addr()).await.unwrap(),
        "/nope",
    )
    .await;
    assert_eq!(status, 404);
    // A plain GET on /ws/ without the upgrade headers is refused, not served.
    let (status, _, _) = http_get(
        TcpStream::connect(server.local_addr()).await.unwrap(),
        "/ws/",
    )
    .await;
    assert_eq!(status, 400);
    server.shutdown().await;
}

#[tokio::test]
async fn create_join_relay_with_exact_bytes() {
    let server = start(Config::default()).await;
    let addr = server.local_addr();
    let mut owner = connect(addr, "").await;
    // The reply is byte for byte the reference's (binary frame, compact JSON, no extra field).
    let Some(Ok(Message::Binary(raw))) = futures::StreamExt::next(&mut owner.ws).await else {
        panic!("expected a binary frame");
    };
    let created = Envelope::parse(&raw, 1024).unwrap();
    let room = created.payload.clone();
    assert_eq!(
        std::str::from_utf8(&raw).unwrap(),
        format!(
            r#"{{"Msg_type":"YAKKMSG_ROOMCREATED","Payload":"{room}","Sender":-1,"Recipient":0}}"#
        )
    );
    let n: u32 = room.parse().expect("numeric room name");
    assert!((1..=999).contains(&n) && !room.starts_with('0'));

    let (mut joiner, id) = join(addr, &room).await;
    assert_eq!(id, 1);
    joiner.send(&env("YAKKMSG_REQUESTOFFER", "", 1, 0)).await;
    assert_eq!(owner.recv().await, env("YAKKMSG_REQUESTOFFER", "", 1, 0));
    owner.send(&env("YAKKMSG_ANSWER", "xyz", 0, 1)).await;
    assert_eq!(joiner.recv().await, env("YAKKMSG_ANSWER", "xyz", 0, 1));
    // Binary frames with trailing whitespace are accepted too.
    joiner
        .send_raw(Message::binary(format!(
            "{} \r\n\t",
            env("T", "b", 1, 0).to_json()
        )))
        .await;
    assert_eq!(owner.recv().await, env("T", "b", 1, 0));
    // No notices: neither side hears anything it did not ask for.
    owner.expect_silence(QUIET).await;
    joiner.expect_silence(Duration::ZERO).await;
    assert_eq!(server.counts(), (1, 2));
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_room_then_joinroom_on_the_same_socket() {
    let server = start(Config::default()).await;
    let addr = server.local_addr();
    let (mut owner, room) = create(addr, "keepAlive=false").await;
    let mut joiner = connect(addr, "roomID=nosuchroom").await;
    assert_eq!(joiner.recv().await, error("No such room"));
    // Not in a room yet: other messages are refused, not relayed.
    joiner.send(&env("YAKKMSG_REQUESTOFFER", "", 0, 0)).await;
    assert_eq!(joiner.recv().await, error("Not in a room: join one first"));
    joiner.send(&env("YAKKMSG_JOINROOM", &room, 0, 0)).await;
    assert_eq!(joiner.recv().await, env("YAKKMSG_ROOMJOINED", "1", 0, 1));
    joiner.send(&env("YAKKMSG_JOINROOM", &room, 1, 0)).await;
    assert_eq!(joiner.recv().await, error("Already in a room"));
    owner.expect_silence(QUIET).await;
    server.shutdown().await;
}

/// Drives an owner and a joiner through the captured reference session and checks that each
/// side receives exactly what the reference server delivered to it.
#[tokio::test]
async fn replays_the_captured_reference_session() {
    let vector: Value = serde_json::from_str(include_str!("vectors/yakk1-session.json")).unwrap();
    let list = |k: &str| -> Vec<Envelope> { serde_json::from_value(vector[k].clone()).unwrap() };
    let (owner_sent, joiner_sent, replies) = (
        list("owner_sent"),
        list("joiner_sent"),
        list("server_replies"),
    );
    let urls: Vec<String> = serde_json::from_value(vector["handshake_urls"].clone()).unwrap();
    let query = |i: usize| {
        urls[i]
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.split_once('?'))
            .map(|(_, q)| q.to_string())
            .unwrap()
    };
    let captured_room = &replies[0].payload;

    let server = start(Config::default()).await;
    let addr = server.local_addr();
    let mut owner = connect(addr, &query(0)).await;
    let created = owner.recv().await;
    let room = created.payload.clone();
    assert_eq!(created, replies[0].clone().with_payload(&room));
    let mut joiner = connect(addr, &query(1)).await;
    assert_eq!(joiner.recv().await, replies[1]);

    // The joiner's messages, the room name swapped for ours.
    for e in &joiner_sent {
        let mut e = e.clone();
        if e.payload == *captured_room {
            e.payload = room.clone();
        }
        joiner.send(&e).await;
    }
    for e in &owner_sent {
        owner.send(e).await;
    }
    assert_eq!(joiner.recv().await, replies[2]);
    for expected in joiner_sent
        .iter()
        .filter(|e| e.msg_type != "YAKKMSG_JOINROOM")
    {
        assert_eq!(owner.recv().await, *expected);
    }
    for expected in &owner_sent {
        assert_eq!(joiner.recv().await, *expected);
    }
    owner.expect_silence(QUIET).await;
    joiner.expect_silence(Duration::ZERO).await;
    server.shutdown().await;
}

trait WithPayload {
    fn with_payload(self, p: &str) -> Self;
}
impl WithPayload for Envelope {
    fn with_payload(mut self, p: &str) -> Self {
        self.payload = p.to_string();
        self
    }
}

#[tokio::test]
async fn sender_cannot_be_spoofed() {
    let server = start(Config::default()).await;
    let addr = server.local_addr();
    let (mut owner, room) = create(addr, "").await;
    let (mut a, _) = join(addr, &room).await;
    let (mut b, b_id) = join(addr, &room).await;
    assert_eq!(b_id, 2);
    a.send(&env("X", "I am the owner", 0, 2)).await;
    assert_eq!(b.recv().await, env("X", "I am the owner", 1, 2));
    b.send(&env("X", "I am a", 1, 0)).await;
    assert_eq!(owner.recv().await, env("X", "I am a", 2, 0));
    // A server-only field from a client is not passed on.
    b.send_raw(Message::text(
        r#"{"Msg_type":"X","Payload":"p","Sender":-1,"Recipient":0,"IceServers":[{"urls":["turn:evil"]}]}"#,
    ))
    .await;
    assert_eq!(owner.recv().await, env("X", "p", 2, 0));
    server.shutdown().await;
}

#[tokio::test]
async fn ids_are_never_reused_and_unknown_recipients_are_dropped() {
    let server = start(Config::default()).await;
    let addr = server.local_addr();
    let (mut owner, room) = create(addr, "").await;
    let (joiner, id) = join(addr, &room).await;
    assert_eq!(id, 1);
    // Abrupt disconnect: no close handshake.
    drop(joiner);
    eventually("mailbox 1 removed", || server.counts() == (1, 1)).await;
    let (mut second, id) = join(addr, &room).await;
    assert_eq!(id, 2);
    owner.send(&env("X", "for 1", 0, 1)).await;
    owner.send(&env("X", "for 7", 0, 7)).await;
    owner.send(&env("X", "for 2", 0, 2)).await;
    assert_eq!(second.recv().await, env("X", "for 2", 0, 2));
    second.expect_silence(QUIET).await;
    // The owner learns nothing of the leave or the drops.
    owner.expect_silence(Duration::ZERO).await;
    let m = metrics(addr).await;
    assert_eq!(metric(&m, "yakk_signal_messages_dropped_total"), 2);
    assert_eq!(metric(&m, "yakk_signal_messages_relayed_total"), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn garbage_gets_malformed_and_the_socket_stays() {
    let server = start(Config::default()).await;
    let addr = server.local_addr();
    let (mut owner, room) = create(addr, "").await;
    let (mut joiner, _) = join(addr, &room).await;
    let garbage: Vec<Message> = vec![
        Message::text("not json"),
        Message::text(r#"{"Msg_type":1,"Payload":"","Sender":0,"Recipient":0}"#),
        Message::text(r#"{"Msg_type":"X","Payload":"","Sender":0}"#),
        Message::text(r#"{"Msg_type":"X","Payload":"","Sender":"0","Recipient":0}"#),
        Message::text(r#"{"Msg_type":"X","Payload":"","Sender":0,"Recipient":1e99}"#),
        Message::text("[]"),
        Message::text(""),
        Message::binary(vec![0xff, 0xfe, 0x00, 0x01]),
        Message::binary(vec![0u8; 1000]),
    ];
    for g in garbage {
        joiner.send_raw(g).await;
        assert_eq!(joiner.recv().await, error("Malformed message"));
    }
    owner.expect_silence(QUIET).await;
    // Still in the room and relaying.
    joiner.send(&env("X", "ok", 1, 0)).await;
    assert_eq!(owner.recv().await, env("X", "ok", 1, 0));
    assert_eq!(
        metric(
            &metrics(addr).await,
            r#"yakk_signal_rejections_total{reason="malformed"}"#
        ),
        9
    );
    // A text frame that is not UTF-8 breaks the WebSocket protocol: close 1007.
    let mut frame = Frame::message(vec![0xc3, 0x28], OpCode::Data(Data::Text), true);
    frame.header_mut().is_final = true;
    joiner.send_raw(Message::Frame(frame)).await;
    assert_eq!(joiner.expect_close().await.code, CloseCode::Invalid);
    // The owner is untouched.
    let (mut third, id) = join(addr, &room).await;
    assert_eq!(id, 2);
    third.send(&env("X", "hi", 2, 0)).await;
    assert_eq!(owner.recv().await, env("X", "hi", 2, 0));
    server.shutdown().await;
}

#[tokio::test]
async fn oversized_frame_is_closed_with_1009() {
    let server = start(Config::default()).await;
    let addr = server.local_addr();
    let (mut owner, room) = create(addr, "").await;
    let (mut joiner, _) = join(addr, &room).await;
    // Exactly at the limit is fine.
    let prefix = r#"{"Msg_type":"X","Payload":""#;
    let suffix = r#"","Sender":1,"Recipient":0}"#;
    let fill = 65536 - prefix.len() - suffix.len();
    let max = format!("{prefix}{}{suffix}", "a".repeat(fill));
    assert_eq!(max.len(), 65536);
    joiner.send_raw(Message::text(max)).await;
    assert_eq!(owner.recv().await.payload.len(), fill);
    // One byte more is not.
    joiner.send_raw(Message::binary(vec![b' '; 65537])).await;
    let close = joiner.expect_close().await;
    assert_eq!(close.code, CloseCode::Size);
    assert!(!close.reason.is_empty());
    eventually("joiner removed", || server.counts() == (1, 1)).await;
    // A much larger one too, and the owner keeps being served.
    let (mut big, _) = join(addr, &room).await;
    big.send_raw(Message::binary(vec![b'x'; 1 << 20])).await;
    assert_eq!(big.expect_close().await.code, CloseCode::Size);
    let (mut j3, id) = join(addr, &room).await;
    j3.send(&env("X", "", id, 0)).await;
    assert_eq!(owner.recv().await.sender, id);
    let m = metrics(addr).await;
    assert_eq!(
        metric(
            &m,
            r#"yakk_signal_rejections_total{reason="message_too_large"}"#
        ),
        2
    );
    server.shutdown().await;
}

#[tokio::test]
async fn room_full_by_mailbox_cap_and_by_max_peers() {
    let config = Config {
        limits: yakk_signal::registry::RegistryLimits {
            max_mailboxes_per_room: 3,
            ..Default::default()
        },
        ..Config::default()
    };
    let server = start(config).await;
    let addr = server.local_addr();
    let (_owner, room) = create(addr, "").await;
    let (_a, _) = join(addr, &room).await;
    let (b, _) = join(addr, &room).await;
    let mut c = connect(addr, &format!("roomID={room}")).await;
    assert_eq!(c.recv().await, error("Room is full"));
    drop(b);
    eventually("b left", || server.counts() == (1, 2)).await;
    c.send(&env("YAKKMSG_JOINROOM", &room, 0, 0)).await;
    assert_eq!(c.recv().await, env("YAKKMSG_ROOMJOINED", "3", 0, 3));

    // maxPeers=1: one joiner over the room's life.
    let (_owner2, room2) = create(addr, "maxPeers=1").await;
    let (first, _) = join(addr, &room2).await;
    let mut second = connect(addr, &format!("roomID={room2}")).await;
    assert_eq!(second.recv().await, error("Room is full"));
    drop(first);
    eventually("first left", || server.counts().1 == 4).await;
    second.send(&env("YAKKMSG_JOINROOM", &room2, 0, 0)).await;
    assert_eq!(second.recv().await, error("Room is full"));

    let mut bad = connect(addr, "maxPeers=zero").await;
    let e = bad.recv().await;
    assert_eq!(e.msg_type, "YAKKMSG_ERROR");
    assert!(e.payload.starts_with("Invalid maxPeers"), "{e:?}");
    assert_eq!(bad.expect_close().await.code, CloseCode::Policy);
    let m = metrics(addr).await;
    assert_eq!(
        metric(&m, r#"yakk_signal_rejections_total{reason="room_full"}"#),
        3
    );
    server.shutdown().await;
}

#[tokio::test]
async fn metrics_page() {
    let server = start(Config::default()).await;
    let addr = server.local_addr();
    let (mut owner, room) = create(addr, "").await;
    let (mut joiner, _) = join(addr, &room).await;
    let _lost = connect(addr, "roomID=0").await;
    joiner.send(&env("X", "12345", 1, 0)).await;
    owner.recv().await;
    let (status, headers, m) = http_get(TcpStream::connect(addr).await.unwrap(), "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "content-type" && v.starts_with("text/plain"))
    );
    assert_eq!(metric(&m, "yakk_signal_rooms"), 1);
    assert_eq!(metric(&m, "yakk_signal_mailboxes"), 2);
    assert_eq!(metric(&m, "yakk_signal_connections"), 3);
    assert_eq!(metric(&m, "yakk_signal_rooms_created_total"), 1);
    assert_eq!(metric(&m, "yakk_signal_joins_total"), 1);
    assert_eq!(metric(&m, "yakk_signal_messages_relayed_total"), 1);
    let relayed = env("X", "12345", 1, 0).to_json().len() as u64;
    assert_eq!(metric(&m, "yakk_signal_bytes_relayed_total"), relayed);
    assert_eq!(
        metric(&m, r#"yakk_signal_rejections_total{reason="no_such_room"}"#),
        1
    );
    assert!(m.contains("# TYPE yakk_signal_rejections_total counter"));
    assert_eq!(server.metrics_text().lines().count(), m.lines().count());
    server.shutdown().await;
}

#[tokio::test]
async fn ice_servers_in_room_replies_only() {
    use yakk_signal::ice::{IceConfig, TurnAuth};
    let config = Config {
        ice: IceConfig {
            stun: vec!["stun:127.0.0.1:3478".into()],
            turn: vec!["turn:127.0.0.1:3478".into()],
            turn_auth: TurnAuth::Secret {
                secret: "shh".into(),
                ttl: Duration::from_secs(600),
            },
            relay: None,
        },
        ..Config::default()
    };
    let server = start(config).await;
    let addr = server.local_addr();
    let mut owner = connect(addr, "").await;
    let created = owner.recv().await;
    let ice = created.ice_servers.clone().expect("IceServers field");
    assert_eq!(ice[0].urls, vec!["stun:127.0.0.1:3478"]);
    let user = ice[1].username.clone().unwrap();
    let (expiry, room) = user.split_once(':').unwrap();
    assert_eq!(room, created.payload);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expiry: u64 = expiry.parse().unwrap();
    assert!((now + 590..=now + 610).contains(&expiry));
    assert_eq!(
        ice[1].credential.as_deref(),
        Some(
            yakk_signal::ice::turn_rest_credentials("shh", expiry, room)
                .1
                .as_str()
        )
    );
    let mut joiner = connect(addr, &format!("roomID={}", created.payload)).await;
    assert!(joiner.recv().await.ice_servers.is_some());
    joiner.send(&env("X", "", 1, 0)).await;
    assert_eq!(owner.recv().await.ice_servers, None);
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_sockets_with_1001() {
    let server = start(Config::default()).await;
    let addr = server.local_addr();
    let (mut owner, _) = create(addr, "").await;
    let stop = tokio::spawn(server.shutdown());
    let close = owner.expect_close().await;
    assert_eq!(close.code, CloseCode::Away);
    tokio::time::timeout(WAIT, stop).await.unwrap().unwrap();
    assert!(TcpStream::connect(addr).await.is_err());
}
