//! Limits and expiry over real WebSockets: rate limits per client address, room and
//! connection caps (in all and per client address), idle and lobby timeouts, empty-room grace,
//! room lifetime, ping liveness, and the bounded queue of a slow consumer.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::*;
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use yakk_signal::Config;

fn ip(last: u8) -> IpAddr {
    [127, 0, 0, last].into()
}

fn fast() -> Config {
    Config {
        sweep_interval: Duration::from_millis(20),
        ..Config::default()
    }
}

#[tokio::test]
async fn creation_rate_limit_is_per_client_address() {
    let config = Config {
        creates_per_minute: 3,
        ..Config::default()
    };
    let server = start(config).await;
    let addr = server.local_addr();
    let mut owners = Vec::new();
    for _ in 0..3 {
        let mut c = connect_from(ip(1), addr, "").await;
        assert_eq!(c.recv().await.msg_type, "YAKKMSG_ROOMCREATED");
        owners.push(c);
    }
    let mut refused = connect_from(ip(1), addr, "").await;
    assert_eq!(
        refused.recv().await,
        error("Too many requests, try again in a minute")
    );
    let close = refused.expect_close().await;
    assert_eq!(close.code, CloseCode::Policy);
    // Another address is not affected.
    let mut other = connect_from(ip(2), addr, "").await;
    assert_eq!(other.recv().await.msg_type, "YAKKMSG_ROOMCREATED");
    assert_eq!(server.counts().0, 4);
    let m = metrics(addr).await;
    assert_eq!(
        metric(&m, r#"yakk_signal_rejections_total{reason="rate_limited"}"#),
        1
    );
    server.shutdown().await;
}

#[tokio::test]
async fn join_attempts_are_rate_limited_including_retries_on_one_socket() {
    let config = Config {
        joins_per_minute: 4,
        ..Config::default()
    };
    let server = start(config).await;
    let addr = server.local_addr();
    let (_owner, room) = create(addr, "").await;
    // Guessing room names: each attempt counts, on one socket or several.
    let mut guesser = connect_from(ip(3), addr, "roomID=1000000").await;
    assert_eq!(guesser.recv().await, error("No such room"));
    for _ in 0..3 {
        guesser
            .send(&env("YAKKMSG_JOINROOM", "1000001", 0, 0))
            .await;
        assert_eq!(guesser.recv().await, error("No such room"));
    }
    guesser.send(&env("YAKKMSG_JOINROOM", &room, 0, 0)).await;
    assert_eq!(
        guesser.recv().await,
        error("Too many requests, try again in a minute")
    );
    assert_eq!(guesser.expect_close().await.code, CloseCode::Policy);
    let mut again = connect_from(ip(3), addr, &format!("roomID={room}")).await;
    assert_eq!(
        again.recv().await,
        error("Too many requests, try again in a minute")
    );
    // The real joiner, elsewhere, gets in.
    let mut joiner = connect_from(ip(4), addr, &format!("roomID={room}")).await;
    assert_eq!(joiner.recv().await, env("YAKKMSG_ROOMJOINED", "1", 0, 1));
    server.shutdown().await;
}

#[tokio::test]
async fn room_and_connection_caps() {
    let mut config = Config {
        max_connections: 3,
        ..Config::default()
    };
    config.limits.max_rooms = 1;
    let server = start(config).await;
    let addr = server.local_addr();
    let (_owner, room) = create(addr, "").await;
    let mut second = connect(addr, "").await;
    assert_eq!(
        second.recv().await,
        error("Too many rooms are open, try again later")
    );
    assert_eq!(second.expect_close().await.code, CloseCode::Again);
    eventually("second closed", || {
        server
            .metrics_text()
            .contains("yakk_signal_connections 1\n")
    })
    .await;
    let (_j1, _) = join(addr, &room).await;
    let (_j2, _) = join(addr, &room).await;
    let tcp = tcp_from(ip(1), addr).await;
    let err = tokio_tungstenite::client_async(format!("ws://{addr}/ws/?roomID={room}"), tcp)
        .await
        .unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), 503),
        other => panic!("expected HTTP 503, got {other}"),
    }
    // HTTP without upgrade still works at the cap.
    let (status, _, _) = http_get(
        tokio::net::TcpStream::connect(addr).await.unwrap(),
        "/hello",
    )
    .await;
    assert_eq!(status, 200);
    let m = metrics(addr).await;
    assert_eq!(
        metric(
            &m,
            r#"yakk_signal_rejections_total{reason="too_many_connections"}"#
        ),
        1
    );
    assert_eq!(
        metric(
            &m,
            r#"yakk_signal_rejections_total{reason="too_many_rooms"}"#
        ),
        1
    );
    server.shutdown().await;
}

#[tokio::test]
async fn empty_room_grace_and_keep_alive() {
    let mut config = fast();
    config.limits.empty_room_grace = Duration::from_millis(300);
    config.limits.keep_alive_grace = Duration::from_millis(1500);
    let server = start(config).await;
    let addr = server.local_addr();

    let (owner, short) = create(addr, "").await;
    let (long_owner, long) = create(addr, "keepAlive=true").await;
    drop(owner);
    drop(long_owner);
    eventually("both owners gone", || server.counts().1 == 0).await;
    // Within the grace period both rooms are still there, but nobody can join a room whose
    // owner has left: there is no one to let them in.
    assert_eq!(server.counts().0, 2);
    let mut late = connect(addr, &format!("roomID={short}")).await;
    assert_eq!(late.recv().await, error("No such room"));
    late.send(&env("YAKKMSG_JOINROOM", &long, 0, 0)).await;
    assert_eq!(late.recv().await, error("No such room"));
    drop(late);
    // The short room goes after its grace; the keepAlive room outlives it, then goes too.
    eventually("the short room deleted", || server.counts().0 == 1).await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(server.counts(), (0, 0));
    server.shutdown().await;
}

#[tokio::test]
async fn idle_timeout_closes_with_a_reason() {
    let mut config = fast();
    config.limits.idle_timeout = Duration::from_millis(600);
    let server = start(config).await;
    let addr = server.local_addr();
    let (mut owner, room) = create(addr, "").await;
    let (mut chatty, _) = join(addr, &room).await;
    let (mut quiet, _) = join(addr, &room).await;
    // The owner and one joiner keep talking; the other joiner says nothing.
    for _ in 0..5 {
        chatty.send(&env("X", "", 1, 0)).await;
        owner.recv().await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let close = quiet.expect_close().await;
    assert_eq!(close.code, CloseCode::Normal);
    assert!(close.reason.contains("idle"), "{close:?}");
    chatty.send(&env("X", "still here", 1, 0)).await;
    assert_eq!(owner.recv().await.payload, "still here");
    let m = metrics(addr).await;
    assert!(metric(&m, r#"yakk_signal_rejections_total{reason="idle_timeout"}"#) >= 1);
    server.shutdown().await;
}

/// A socket whose join was refused sits in no room: it is closed after the lobby timeout (not
/// the hour-long idle timeout), while a socket that got into a room, by retrying in time, stays.
#[tokio::test]
async fn a_socket_in_no_room_is_closed_after_the_lobby_timeout() {
    let config = Config {
        lobby_timeout: Duration::from_millis(400),
        ..fast()
    };
    assert_eq!(config.limits.idle_timeout, Duration::from_secs(3600));
    let server = start(config).await;
    let addr = server.local_addr();
    let (_owner, room) = create(addr, "").await;
    let started = tokio::time::Instant::now();
    let mut lobby = connect(addr, "roomID=nosuchroom").await;
    assert_eq!(lobby.recv().await, error("No such room"));
    let mut retried = connect(addr, "roomID=nosuchroom").await;
    assert_eq!(retried.recv().await, error("No such room"));
    retried.send(&env("YAKKMSG_JOINROOM", &room, 0, 0)).await;
    assert_eq!(retried.recv().await.msg_type, "YAKKMSG_ROOMJOINED");
    let close = lobby.expect_close().await;
    assert!(close.reason.contains("no room"), "{close:?}");
    assert!(started.elapsed() >= Duration::from_millis(400));
    // The owner and the joiner that got in are not affected.
    retried.expect_silence(Duration::from_millis(600)).await;
    assert_eq!(server.counts(), (1, 2));
    let m = metrics(addr).await;
    assert_eq!(
        metric(
            &m,
            r#"yakk_signal_rejections_total{reason="lobby_timeout"}"#
        ),
        1
    );
    server.shutdown().await;
}

#[test]
fn the_lobby_timeout_is_short_by_default() {
    assert_eq!(Config::default().lobby_timeout, Duration::from_secs(10));
}

/// At most `max_connections_per_ip` WebSockets per client address (64 by default); more get
/// HTTP 429, other addresses are not affected, and a closed one frees its place.
#[tokio::test]
async fn concurrent_sockets_per_address_are_capped() {
    let config = Config {
        // Room creations are rate-limited per address too; lift that to reach the cap.
        creates_per_minute: 0,
        ..Config::default()
    };
    assert_eq!(config.max_connections_per_ip, 64);
    let server = start(config).await;
    let addr = server.local_addr();
    let mut held = Vec::new();
    for _ in 0..64 {
        let mut c = connect_from(ip(1), addr, "").await;
        assert_eq!(c.recv().await.msg_type, "YAKKMSG_ROOMCREATED");
        held.push(c);
    }
    let refused = |what: &'static str| async move {
        let tcp = tcp_from(ip(1), addr).await;
        match tokio_tungstenite::client_async(format!("ws://{addr}/ws/"), tcp).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 429, "{what}")
            }
            Err(other) => panic!("{what}: expected HTTP 429, got {other}"),
            Ok(_) => panic!("{what}: a WebSocket over the per-address cap was accepted"),
        }
    };
    refused("65th").await;
    // Another address (another /32) is not affected.
    let mut other = connect_from(ip(2), addr, "").await;
    assert_eq!(other.recv().await.msg_type, "YAKKMSG_ROOMCREATED");
    // Closing one frees its place.
    drop(held.pop());
    eventually("a place freed", || server.counts().1 == 64).await;
    let mut again = connect_from(ip(1), addr, "").await;
    assert_eq!(again.recv().await.msg_type, "YAKKMSG_ROOMCREATED");
    refused("65th again").await;
    let m = metrics(addr).await;
    assert_eq!(
        metric(
            &m,
            r#"yakk_signal_rejections_total{reason="too_many_from_address"}"#
        ),
        2
    );
    server.shutdown().await;
}

/// A lone owner that sends messages to itself (or to nobody) keeps neither its socket nor its
/// room alive: it is closed after the idle timeout while it is still talking, and never
/// receives its own messages.
#[tokio::test]
async fn talking_to_itself_is_not_activity() {
    let mut config = fast();
    config.limits.idle_timeout = Duration::from_millis(600);
    config.limits.empty_room_grace = Duration::from_millis(200);
    let server = start(config).await;
    let addr = server.local_addr();
    let (mut owner, _room) = create(addr, "").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let close = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a socket talking to itself was kept open"
        );
        let _ = owner
            .ws
            .send(Message::text(env("X", "me", 0, 0).to_json()))
            .await;
        let _ = owner
            .ws
            .send(Message::text(env("X", "nobody", 0, 5).to_json()))
            .await;
        match tokio::time::timeout(Duration::from_millis(50), owner.ws.next()).await {
            Err(_) | Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(Some(Ok(Message::Close(Some(f))))) => break f,
            other => panic!("expected nothing but a close frame, got {other:?}"),
        }
    };
    assert!(close.reason.contains("idle"), "{close:?}");
    eventually("room gone", || server.counts() == (0, 0)).await;
    let m = metrics(addr).await;
    assert!(
        metric(
            &m,
            r#"yakk_signal_rejections_total{reason="self_addressed"}"#
        ) >= 5
    );
    server.shutdown().await;
}

#[tokio::test]
async fn hard_room_lifetime() {
    let mut config = fast();
    config.limits.room_lifetime = Duration::from_millis(700);
    let server = start(config).await;
    let addr = server.local_addr();
    let (mut owner, room) = create(addr, "").await;
    let (mut joiner, _) = join(addr, &room).await;
    let talk = async {
        loop {
            joiner.send(&env("X", "", 1, 0)).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::select! {
        close = owner.expect_close() => {
            assert!(close.reason.contains("lifetime"), "{close:?}");
        }
        _ = talk => unreachable!(),
        _ = tokio::time::sleep(WAIT) => panic!("room outlived its lifetime"),
    }
    eventually("room deleted", || server.counts() == (0, 0)).await;
    server.shutdown().await;
}

#[tokio::test]
async fn ping_pong_liveness_and_half_open_sockets() {
    let mut config = fast();
    config.ping_interval = Duration::from_millis(100);
    config.ping_timeout = Duration::from_millis(400);
    let server = start(config).await;
    let addr = server.local_addr();
    // A client that reads answers pings (tungstenite does it) and stays.
    let (mut alive, room) = create(addr, "").await;
    // A client that never reads nor answers: as good as a half-open TCP connection.
    let (dead, _) = join(addr, &room).await;
    alive.expect_silence(Duration::from_millis(1200)).await;
    assert_eq!(
        server.counts(),
        (1, 1),
        "the silent socket is dropped, the live one kept"
    );
    let m = metrics(addr).await;
    assert_eq!(
        metric(&m, r#"yakk_signal_rejections_total{reason="ping_timeout"}"#),
        1
    );
    drop(dead);
    // Pings do reach the client.
    let mut pinged = false;
    while let Ok(Some(Ok(m))) =
        tokio::time::timeout(Duration::from_millis(500), alive.ws.next()).await
    {
        if matches!(m, Message::Ping(_)) {
            pinged = true;
            break;
        }
    }
    assert!(pinged);
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

/// A recipient that never reads while another mailbox floods it: the server keeps at most
/// the mailbox queue budget for it, disconnects it, and keeps serving everyone else.
#[tokio::test]
async fn slow_consumer_is_disconnected_and_memory_stays_bounded() {
    let server = start(Config::default()).await;
    let addr = server.local_addr();
    let (mut owner, room) = create(addr, "").await;
    let (mut sink, _) = join(addr, &room).await; // never reads during the flood
    let (mut other_owner, other_room) = create(addr, "").await;
    let (mut other_joiner, _) = join(addr, &other_room).await;

    let before = rss_kib();
    let payload = "A".repeat(60_000);
    let flood = env("X", &payload, 0, 1).to_json();
    let mut sent = 0usize;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    // 3000 × 60 kB = 180 MB aimed at a socket nobody reads.
    for i in 0..3000 {
        owner.ws.feed(Message::text(flood.clone())).await.unwrap();
        sent += 1;
        if i % 100 == 0 {
            owner.ws.flush().await.unwrap();
            // The other room is served throughout.
            other_joiner.send(&env("Y", &i.to_string(), 1, 0)).await;
            assert_eq!(other_owner.recv().await.payload, i.to_string());
        }
        assert!(tokio::time::Instant::now() < deadline, "flood too slow");
    }
    owner.ws.flush().await.unwrap();
    let m = metrics(addr).await;
    assert_eq!(
        metric(
            &m,
            r#"yakk_signal_rejections_total{reason="slow_consumer"}"#
        ),
        1
    );
    eventually("slow mailbox removed", || server.counts() == (2, 3)).await;
    let grown_mib = rss_kib().saturating_sub(before) / 1024;
    assert!(
        grown_mib < 64,
        "RSS grew by {grown_mib} MiB while {sent} frames were flooded"
    );
    // The sender was never blocked and is still served.
    let (mut fresh, id) = join(addr, &room).await;
    fresh.send(&env("Z", "", id, 0)).await;
    loop {
        let e = owner.recv().await;
        if e.msg_type == "Z" {
            break;
        }
    }
    // The slow client finds a close frame with a reason after what was already in flight.
    let reason = loop {
        match tokio::time::timeout(WAIT, sink.ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(f))))) => break Some(f),
            Ok(Some(Ok(_))) => continue,
            _ => break None,
        }
    };
    if let Some(f) = reason {
        assert_eq!(f.code, CloseCode::Policy);
    }
    server.shutdown().await;
}
