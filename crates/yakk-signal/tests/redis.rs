//! Several signalling instances sharing their rooms through a real Redis (`redis-server`, which
//! each test starts on a free loopback port with no persistence, in a directory of its own, and
//! stops). Without `redis-server` on the PATH these tests fail: CI installs it (`.ci/run`).
//!
//! The first part runs one suite of room semantics against both stores (in-process and Redis);
//! the rest runs instances over WebSockets: create on one, join on another, relay both ways,
//! unique names under concurrent creation, limits across instances, an instance killed under
//! its owner (who reclaims the room elsewhere), draining, Redis restarted, Redis unreachable.

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cluster::{RedisServer, cluster_config, free_port, start_killable};
use common::*;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use yakk_signal::Config;
use yakk_signal::ratelimit::{ClientKey, RateLimiter};
use yakk_signal::redis_store::{RedisConfig, RedisStore};
use yakk_signal::registry::{CreateError, CreateOptions, JoinError, Registry, RegistryLimits};
use yakk_signal::store::{CloseReason, LocalStore, Mailbox, Relayed, RoomStore};
use yakk_wire::Envelope;

/// A mailbox handle for the store tests: frames go to a channel, closes are recorded.
#[derive(Clone)]
struct TestBox {
    tx: mpsc::UnboundedSender<Bytes>,
    closed: Arc<Mutex<Option<CloseReason>>>,
}

impl TestBox {
    fn new() -> (TestBox, mpsc::UnboundedReceiver<Bytes>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            TestBox {
                tx,
                closed: Arc::default(),
            },
            rx,
        )
    }

    fn handle() -> TestBox {
        Self::new().0
    }
}

impl Mailbox for TestBox {
    fn deliver(&self, frame: Bytes) -> bool {
        self.tx.send(frame).is_ok()
    }

    fn close(&self, why: CloseReason) {
        *self.closed.lock().unwrap() = Some(why);
    }
}

fn limits() -> RegistryLimits {
    RegistryLimits {
        max_mailboxes_per_room: 3,
        ..RegistryLimits::default()
    }
}

const CREATES_PER_MINUTE: u32 = 40;

fn client() -> ClientKey {
    ClientKey::from(std::net::IpAddr::from([127, 0, 0, 1]))
}

fn redis_config(url: String) -> RedisConfig {
    RedisConfig {
        url,
        limits: limits(),
        creates_per_minute: CREATES_PER_MINUTE,
        joins_per_minute: 0,
        reclaim_grace: Duration::from_secs(60),
        heartbeat: Duration::from_millis(200),
        ca_pem: None,
    }
}

/// The semantics both stores share.
async fn room_semantics<S: RoomStore<Handle = TestBox>>(store: &S) {
    let now = Instant::now();
    let one = CreateOptions::default();
    // Names: short numbers, unique among live rooms; the owner is mailbox 0.
    let mut names = std::collections::HashSet::new();
    let mut rooms = Vec::new();
    for _ in 0..20 {
        let created = store.create(TestBox::handle(), one, client(), now).await;
        let room = created.unwrap().room;
        let n: u64 = room.name.parse().unwrap();
        assert!((1..=999).contains(&n), "{n}");
        assert!(names.insert(room.name.clone()));
        rooms.push(room);
    }
    // Ids count up and are never reused; a departed id reaches nobody.
    let room = rooms[0].clone();
    let (j1, mut rx1) = TestBox::new();
    assert_eq!(
        store.join(&room.name, j1, client(), now).await.unwrap().1,
        1
    );
    let (j2_room, j2) = store
        .join(&room.name, TestBox::handle(), client(), now)
        .await
        .unwrap();
    assert_eq!(j2, 2);
    // A membership leaves through the reference it got.
    assert!(store.leave(&j2_room, j2, now).await);
    assert!(!store.leave(&j2_room, j2, now).await);
    assert_eq!(
        store
            .join(&room.name, TestBox::handle(), client(), now)
            .await
            .unwrap()
            .1,
        3
    );
    let hi = Bytes::from_static(b"hello");
    assert_eq!(
        store.relay(&room, 0, 2, hi.clone(), now).await,
        Relayed::UnknownRecipient
    );
    assert_eq!(
        store.relay(&room, 0, 0, hi.clone(), now).await,
        Relayed::SelfAddressed
    );
    assert_eq!(
        store.relay(&room, 9, 0, hi.clone(), now).await,
        Relayed::SenderGone
    );
    assert_eq!(
        store.relay(&room, 0, 1, hi.clone(), now).await,
        Relayed::Delivered
    );
    let got = tokio::time::timeout(WAIT, rx1.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, hi);
    // The mailbox cap (3, the owner's included) counts mailboxes present.
    assert_eq!(
        store
            .join(&room.name, TestBox::handle(), client(), now)
            .await
            .unwrap_err(),
        JoinError::RoomFull
    );
    // maxPeers counts admissions over the room's life.
    let opts = CreateOptions {
        keep_alive: false,
        max_joiners: Some(1),
    };
    let single = store
        .create(TestBox::handle(), opts, client(), now)
        .await
        .unwrap()
        .room;
    let (j_room, j) = store
        .join(&single.name, TestBox::handle(), client(), now)
        .await
        .unwrap();
    assert!(store.leave(&j_room, j, now).await);
    assert_eq!(
        store
            .join(&single.name, TestBox::handle(), client(), now)
            .await
            .unwrap_err(),
        JoinError::RoomFull
    );
    // Unknown rooms, and rooms whose owner left, admit nobody.
    assert_eq!(
        store
            .join("nosuchroom", TestBox::handle(), client(), now)
            .await
            .unwrap_err(),
        JoinError::NoSuchRoom
    );
    let lonely = rooms[1].clone();
    assert!(store.leave(&lonely, 0, now).await);
    assert_eq!(
        store
            .join(&lonely.name, TestBox::handle(), client(), now)
            .await
            .unwrap_err(),
        JoinError::NoSuchRoom
    );
    // Creations per client per minute: 21 so far, the limit is 40.
    for _ in 21..CREATES_PER_MINUTE {
        store
            .create(TestBox::handle(), one, client(), now)
            .await
            .unwrap();
    }
    assert_eq!(
        store
            .create(TestBox::handle(), one, client(), now)
            .await
            .unwrap_err(),
        CreateError::RateLimited
    );
}

#[tokio::test]
async fn room_semantics_of_the_local_store() {
    let store = LocalStore::new(
        Registry::new(limits()),
        RateLimiter::new(CREATES_PER_MINUTE, 100),
        RateLimiter::new(0, 100),
    );
    room_semantics(&store).await;
}

#[tokio::test]
async fn room_semantics_of_the_redis_store() {
    let redis = RedisServer::start();
    let store = RedisStore::<TestBox>::connect(redis_config(redis.url()))
        .await
        .unwrap();
    room_semantics(&store).await;
    store.stop();
}

/// Only a store shared by instances hands out reclaim secrets, and only the right one works.
#[tokio::test]
async fn reclaim_needs_the_secret_of_the_room() {
    let redis = RedisServer::start();
    let a = RedisStore::<TestBox>::connect(redis_config(redis.url()))
        .await
        .unwrap();
    let b = RedisStore::<TestBox>::connect(redis_config(redis.url()))
        .await
        .unwrap();
    let now = Instant::now();
    let old_owner = TestBox::handle();
    let created = a
        .create(old_owner.clone(), CreateOptions::default(), client(), now)
        .await
        .unwrap();
    let secret = created.reclaim.clone().expect("a reclaim secret");
    assert_eq!(secret.len(), 32);
    let name = &created.room.name;
    assert_eq!(
        b.reclaim(name, "wrong", TestBox::handle(), client(), now)
            .await
            .unwrap_err(),
        JoinError::NoSuchRoom
    );
    let (owner, mut owner_rx) = TestBox::new();
    let back = b
        .reclaim(name, &secret, owner, client(), now)
        .await
        .unwrap();
    assert_eq!(back.room.name, created.room.name);
    // The old owner connection is told it lost the room.
    eventually("old owner closed", || {
        *old_owner.closed.lock().unwrap() == Some(CloseReason::Reclaimed)
    })
    .await;
    // A joiner through A reaches the owner on B, across instances.
    let (j, mut j_rx) = TestBox::new();
    let (room, id) = a.join(name, j, client(), now).await.unwrap();
    let frame = Bytes::from_static(b"offer");
    assert_eq!(
        a.relay(&room, id, 0, frame.clone(), now).await,
        Relayed::Delivered
    );
    let got = tokio::time::timeout(WAIT, owner_rx.recv()).await.unwrap();
    assert_eq!(got.unwrap(), frame);
    assert_eq!(
        b.relay(&room, 0, id, frame.clone(), now).await,
        Relayed::Delivered
    );
    assert_eq!(
        tokio::time::timeout(WAIT, j_rx.recv()).await.unwrap(),
        Some(frame.clone())
    );
    // Reclaimed again on B itself: the replaced connection's departure leaves the new one in.
    let (again, mut again_rx) = TestBox::new();
    let third = b
        .reclaim(name, &secret, again, client(), now)
        .await
        .unwrap();
    assert!(
        !b.leave(&back.room, 0, now).await,
        "a replaced membership is gone"
    );
    assert_eq!(
        a.relay(&room, id, 0, frame.clone(), now).await,
        Relayed::Delivered
    );
    assert_eq!(
        tokio::time::timeout(WAIT, again_rx.recv()).await.unwrap(),
        Some(frame)
    );
    assert!(b.leave(&third.room, 0, now).await);
    // The in-process store has no secrets to reclaim with.
    let local = LocalStore::new(
        Registry::new(limits()),
        RateLimiter::new(0, 1),
        RateLimiter::new(0, 1),
    );
    let c = local
        .create(TestBox::handle(), CreateOptions::default(), client(), now)
        .await
        .unwrap();
    assert_eq!(c.reclaim, None);
    a.stop();
    b.stop();
}

/// Reads the `YAKKMSG_ROOMCREATED` reply; returns room name and reclaim secret.
async fn created(owner: &mut Plain) -> (String, Option<String>) {
    let e = owner.recv().await;
    assert_eq!(e.msg_type, "YAKKMSG_ROOMCREATED", "{e:?}");
    assert_eq!((e.sender, e.recipient), (-1, 0));
    (e.payload, e.reclaim)
}

#[tokio::test]
async fn create_on_one_instance_join_on_another_and_relay_both_ways() {
    let redis = RedisServer::start();
    let a = start(cluster_config(&redis)).await;
    let b = start(cluster_config(&redis)).await;
    let mut owner = connect(a.local_addr(), "").await;
    let (room, secret) = created(&mut owner).await;
    assert!(
        secret.is_some(),
        "a clustered server hands out a reclaim secret"
    );
    let (mut joiner, id) = join(b.local_addr(), &room).await;
    assert_eq!(id, 1);
    joiner.send(&env("YAKKMSG_REQUESTOFFER", "v2", 1, 0)).await;
    assert_eq!(owner.recv().await, env("YAKKMSG_REQUESTOFFER", "v2", 1, 0));
    // The server sets Sender: the owner cannot speak as someone else.
    owner.send(&env("YAKKMSG_OFFER", "sdp", 7, 1)).await;
    assert_eq!(joiner.recv().await, env("YAKKMSG_OFFER", "sdp", 0, 1));
    // Each instance counts its own sockets.
    for server in [&a, &b] {
        let m = metrics(server.local_addr()).await;
        assert_eq!(metric(&m, "yakk_signal_mailboxes"), 1, "{m}");
        assert_eq!(metric(&m, "yakk_signal_messages_relayed_total"), 1, "{m}");
    }
    // A second joiner on A talks with the first one on B through the owner's room.
    let (mut second, id2) = join(a.local_addr(), &room).await;
    assert_eq!(id2, 2);
    second.send(&env("HELLO", "x", 2, 1)).await;
    assert_eq!(joiner.recv().await, env("HELLO", "x", 2, 1));
    a.shutdown().await;
    b.shutdown().await;
}

/// A CA, and a certificate for 127.0.0.1 that it signed; written as PEM into `dir`.
fn write_tls_files(dir: &std::path::Path) -> [std::path::PathBuf; 3] {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let paths = [
        dir.join("cert.pem"),
        dir.join("key.pem"),
        dir.join("ca.pem"),
    ];
    std::fs::write(&paths[0], cert.pem()).unwrap();
    std::fs::write(&paths[1], key.serialize_pem()).unwrap();
    std::fs::write(&paths[2], ca.pem()).unwrap();
    paths
}

#[tokio::test]
async fn rooms_are_shared_through_redis_over_tls() {
    let mut ca = None;
    let redis = RedisServer::start_with(|dir| {
        let files = write_tls_files(dir);
        ca = Some(std::fs::read(&files[2]).unwrap());
        Some(files)
    });
    assert!(redis.url().starts_with("rediss://"));
    // Without the CA, the server's certificate is not trusted: a clear error at start.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    match yakk_signal::spawn(cluster_config(&redis), listener).await {
        Ok(_) => panic!("trusted a certificate no root vouches for"),
        Err(e) => assert!(e.to_string().contains("cannot reach Redis"), "{e}"),
    }
    let config = Config {
        redis_ca_pem: ca,
        ..cluster_config(&redis)
    };
    let a = start(config.clone()).await;
    let b = start(config).await;
    let mut owner = connect(a.local_addr(), "").await;
    let (room, _) = created(&mut owner).await;
    let (mut joiner, id) = join(b.local_addr(), &room).await;
    joiner.send(&env("YAKKMSG_REQUESTOFFER", "", id, 0)).await;
    assert_eq!(owner.recv().await, env("YAKKMSG_REQUESTOFFER", "", id, 0));
    a.shutdown().await;
    b.shutdown().await;
}

/// Instances sharing rooms each advertise their own relay, and their own `turns:` URL with the
/// host the client reached that instance at: the owner's reply names A as the owner reached
/// it, the joiner's names B as the joiner reached it.
#[tokio::test]
async fn each_instance_advertises_its_own_relay_and_turns_url() {
    let redis = RedisServer::start();
    let (cert, key) = tls_certificate(&["localhost", "127.0.0.1"]);
    let tls = yakk_signal::tls_config(vec![cert.clone()], key).unwrap();
    let instance = || Config {
        tls: Some(tls.clone()),
        relay: Some(yakk_signal::turn::RelayConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            relay_ip: [127, 0, 0, 1].into(),
            ports: (50000, 59999),
            secret: "shared-secret".into(),
            tcp: true,
            max_allocations: 10,
            max_allocations_per_user: 10,
            max_rate: 0,
            credential_ttl: Duration::from_secs(600),
            allow_private_peers: true,
        }),
        ..cluster_config(&redis)
    };
    let a = start(instance()).await;
    let b = start(instance()).await;
    let relay_urls = |reply: &Envelope| {
        let servers = reply.ice_servers.as_ref().expect("IceServers");
        assert_eq!(servers.len(), 1, "{servers:?}");
        servers[0].urls.clone()
    };
    let urls = |server: &yakk_signal::ServerHandle, host: &str| {
        let relay = server.relay_addr().unwrap().port();
        vec![
            format!("turn:127.0.0.1:{relay}?transport=udp"),
            format!("turn:127.0.0.1:{relay}?transport=tcp"),
            format!("turns:{host}:{}?transport=tcp", server.local_addr().port()),
        ]
    };
    let mut owner = wss_connect(a.local_addr(), &cert, "localhost", "").await;
    let created = owner.recv().await;
    assert_eq!(created.msg_type, "YAKKMSG_ROOMCREATED", "{created:?}");
    assert_eq!(relay_urls(&created), urls(&a, "localhost"));
    let query = format!("roomID={}", created.payload);
    let mut joiner = wss_connect(b.local_addr(), &cert, "127.0.0.1", &query).await;
    let joined = joiner.recv().await;
    assert_eq!(joined.msg_type, "YAKKMSG_ROOMJOINED", "{joined:?}");
    assert_eq!(relay_urls(&joined), urls(&b, "127.0.0.1"));
    joiner.send(&env("YAKKMSG_REQUESTOFFER", "", 1, 0)).await;
    assert_eq!(owner.recv().await, env("YAKKMSG_REQUESTOFFER", "", 1, 0));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn names_stay_unique_under_concurrent_creation_on_three_instances() {
    let redis = RedisServer::start();
    let servers = [
        start(cluster_config(&redis)).await,
        start(cluster_config(&redis)).await,
        start(cluster_config(&redis)).await,
    ];
    const PER_INSTANCE: usize = 70;
    let mut tasks = Vec::new();
    for s in &servers {
        for _ in 0..PER_INSTANCE {
            let addr = s.local_addr();
            tasks.push(tokio::spawn(async move {
                let mut owner = connect(addr, "").await;
                let (name, _) = created(&mut owner).await;
                (name, owner)
            }));
        }
    }
    let mut names = std::collections::HashSet::new();
    let mut owners = Vec::new();
    for t in tasks {
        let (name, owner) = t.await.unwrap();
        assert!(names.insert(name.clone()), "room {name} handed out twice");
        owners.push(owner);
    }
    assert_eq!(names.len(), 3 * PER_INSTANCE);
    for s in servers {
        s.shutdown().await;
    }
}

#[tokio::test]
async fn limits_hold_across_instances() {
    let redis = RedisServer::start();
    let config = Config {
        creates_per_minute: 2,
        limits: RegistryLimits {
            max_mailboxes_per_room: 3,
            ..RegistryLimits::default()
        },
        ..cluster_config(&redis)
    };
    let a = start(config.clone()).await;
    let b = start(config.clone()).await;
    let c = start(config).await;
    // maxPeers=1: the joiner through B is admitted, the one through C is not.
    let mut owner = connect(a.local_addr(), "maxPeers=1").await;
    let (room, _) = created(&mut owner).await;
    let (_j, _) = join(b.local_addr(), &room).await;
    let mut late = connect(c.local_addr(), &format!("roomID={room}")).await;
    assert_eq!(late.recv().await, error("Room is full"));
    // The per-address creation limit (2 a minute) counts creations on every instance.
    let mut second = connect(b.local_addr(), "").await;
    let (big, _) = created(&mut second).await;
    let mut third = connect(c.local_addr(), "").await;
    assert_eq!(
        third.recv().await,
        error("Too many requests, try again in a minute")
    );
    // The mailbox cap (3) counts mailboxes on every instance.
    let (_j1, _) = join(a.local_addr(), &big).await;
    let (_j2, _) = join(c.local_addr(), &big).await;
    let mut j3 = connect(b.local_addr(), &format!("roomID={big}")).await;
    assert_eq!(j3.recv().await, error("Room is full"));
    a.shutdown().await;
    b.shutdown().await;
    c.shutdown().await;
}

#[tokio::test]
async fn room_count_and_lifetime_hold_across_instances() {
    let redis = RedisServer::start();
    let config = Config {
        sweep_interval: Duration::from_millis(50),
        limits: RegistryLimits {
            max_rooms: 2,
            room_lifetime: Duration::from_millis(1500),
            ..RegistryLimits::default()
        },
        ..cluster_config(&redis)
    };
    let a = start(config.clone()).await;
    let b = start(config).await;
    let mut first = connect(a.local_addr(), "").await;
    let (room, _) = created(&mut first).await;
    let mut second = connect(b.local_addr(), "").await;
    created(&mut second).await;
    let mut third = connect(a.local_addr(), "").await;
    assert_eq!(
        third.recv().await,
        error("Too many rooms are open, try again later")
    );
    // The lifetime counts from the room's creation on A, for its joiner on B too.
    let (mut joiner, _) = join(b.local_addr(), &room).await;
    for c in [&mut first, &mut joiner] {
        let close = c.expect_close().await;
        assert_eq!(close.reason, "room lifetime exceeded", "{close:?}");
    }
    a.shutdown().await;
    b.shutdown().await;
}

/// Reads until the socket ends (close frame, reset or EOF).
async fn expect_end(c: &mut Plain) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, c.ws.next()).await {
            Err(_) => panic!("the socket did not end"),
            Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return,
            Ok(Some(Ok(_))) => continue,
        }
    }
}

#[tokio::test]
async fn owner_reclaims_its_room_on_another_instance_after_its_instance_is_killed() {
    let redis = RedisServer::start();
    let a = start_killable(cluster_config(&redis));
    let b = start(cluster_config(&redis)).await;
    let mut owner = connect(a.addr, "").await;
    let (room, secret) = created(&mut owner).await;
    let secret = secret.expect("a reclaim secret");
    // The owner waits for a joiner; its instance dies.
    a.kill();
    expect_end(&mut owner).await;
    // Once the instance counts as gone (three missed heartbeats), nobody can join: the owner
    // is not there to let them in.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut early = connect(b.local_addr(), &format!("roomID={room}")).await;
    assert_eq!(early.recv().await, error("No such room"));
    // A wrong secret takes nothing.
    let mut thief = connect(b.local_addr(), &format!("roomID={room}&reclaim=0123")).await;
    assert_eq!(thief.recv().await, error("No such room"));
    // The owner reconnects to B with its secret and gets the same room back.
    let mut owner = connect(b.local_addr(), &format!("roomID={room}&reclaim={secret}")).await;
    let (again, secret_again) = created(&mut owner).await;
    assert_eq!(again, room);
    assert_eq!(secret_again.as_deref(), Some(secret.as_str()));
    // A joiner with the original code now gets in and reaches the owner.
    let (mut joiner, id) = join(b.local_addr(), &room).await;
    assert_eq!(id, 1);
    joiner.send(&env("YAKKMSG_REQUESTOFFER", "", 1, 0)).await;
    assert_eq!(owner.recv().await, env("YAKKMSG_REQUESTOFFER", "", 1, 0));
    b.shutdown().await;
}

/// Nobody comes back for a room whose instance was killed: the janitor forgets its dead
/// mailboxes and Redis deletes it after its grace period, freeing its place under the cap.
#[tokio::test]
async fn rooms_of_a_killed_instance_that_nobody_reclaims_go_away() {
    let redis = RedisServer::start();
    let config = Config {
        reclaim_grace: Duration::from_millis(300),
        limits: RegistryLimits {
            max_rooms: 1,
            empty_room_grace: Duration::from_millis(300),
            ..RegistryLimits::default()
        },
        ..cluster_config(&redis)
    };
    let a = start_killable(config.clone());
    let b = start(config).await;
    let mut owner = connect(a.addr, "").await;
    created(&mut owner).await;
    a.kill();
    let mut refused = connect(b.local_addr(), "").await;
    assert_eq!(
        refused.recv().await,
        error("Too many rooms are open, try again later")
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "the dead instance's room stayed");
        let mut owner = connect(b.local_addr(), "").await;
        if owner.recv().await.msg_type == "YAKKMSG_ROOMCREATED" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    b.shutdown().await;
}

#[tokio::test]
async fn draining_tells_clients_to_reconnect_and_the_owner_reclaims_elsewhere() {
    let redis = RedisServer::start();
    let a = start(cluster_config(&redis)).await;
    let b = start(cluster_config(&redis)).await;
    let mut owner = connect(a.local_addr(), "").await;
    let (room, secret) = created(&mut owner).await;
    let (mut joiner, _) = join(b.local_addr(), &room).await;
    let started = Instant::now();
    let drained = tokio::spawn(a.shutdown());
    let close = owner.expect_close().await;
    assert_eq!(close.code, CloseCode::Restart, "{close:?}");
    tokio::time::timeout(Duration::from_secs(10), drained)
        .await
        .expect("the instance exits within its shutdown grace")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(6));
    let mut owner = connect(
        b.local_addr(),
        &format!("roomID={room}&reclaim={}", secret.unwrap()),
    )
    .await;
    assert_eq!(created(&mut owner).await.0, room);
    // The joiner that stayed on B reaches the owner again.
    joiner.send(&env("YAKKMSG_REQUESTOFFER", "", 1, 0)).await;
    assert_eq!(owner.recv().await, env("YAKKMSG_REQUESTOFFER", "", 1, 0));
    b.shutdown().await;
}

#[tokio::test]
async fn instances_survive_a_redis_restart_and_tell_clients_what_happened() {
    let mut redis = RedisServer::start();
    let a = start(cluster_config(&redis)).await;
    let b = start(cluster_config(&redis)).await;
    let mut owner = connect(a.local_addr(), "").await;
    let (room, _) = created(&mut owner).await;
    let (mut joiner, _) = join(b.local_addr(), &room).await;
    redis.kill();
    // While Redis is down: a creation is refused with a clear error.
    let mut refused = connect(a.local_addr(), "").await;
    assert_eq!(
        refused.recv().await,
        error("The signalling service is unavailable, try again shortly")
    );
    assert_eq!(refused.expect_close().await.code, CloseCode::Again);
    // A message relayed meanwhile closes its sender with a reason to retry.
    joiner.send(&env("HELLO", "", 1, 0)).await;
    assert_eq!(joiner.expect_close().await.code, CloseCode::Again);
    redis.launch();
    // Redis came back empty: the owner of a room that no longer exists is told so.
    let close = owner.expect_close().await;
    assert_eq!(close.code, CloseCode::Again);
    assert!(close.reason.contains("room lost"), "{close:?}");
    // The instances work again: create on A, join on B, relay (bounded retries while they
    // reconnect and resubscribe).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        assert!(Instant::now() < deadline, "the cluster did not recover");
        let mut owner = connect(a.local_addr(), "").await;
        let first = owner.recv().await;
        if first.msg_type != "YAKKMSG_ROOMCREATED" {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let (mut joiner, id) = join(b.local_addr(), &first.payload).await;
        joiner.send(&env("PING", "", id, 0)).await;
        match tokio::time::timeout(Duration::from_secs(1), owner.ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => {
                let e = Envelope::parse(&b, 1 << 16).unwrap();
                assert_eq!(e, env("PING", "", id, 0));
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let m = metrics(a.local_addr()).await;
    assert!(metric(&m, "yakk_signal_redis_errors_total") >= 1, "{m}");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn unreachable_redis_at_start_is_a_clear_error() {
    let port = free_port();
    let config = Config {
        redis_url: Some(format!("redis://:hunter2@127.0.0.1:{port}/0")),
        ..Config::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let started = Instant::now();
    let err = match yakk_signal::spawn(config, listener).await {
        Ok(_) => panic!("started without Redis"),
        Err(e) => e.to_string(),
    };
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(err.contains("cannot reach Redis at redis://"), "{err}");
    assert!(err.contains(&port.to_string()), "{err}");
    assert!(!err.contains("hunter2"), "the password is not shown: {err}");
    let bad = Config {
        redis_url: Some("http://nope".into()),
        ..Config::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    match yakk_signal::spawn(bad, listener).await {
        Ok(_) => panic!("started with a bad URL"),
        Err(e) => assert!(e.to_string().contains("invalid Redis URL"), "{e}"),
    }
}

/// `yakk signal --redis URL` with nothing listening there: `run` fails at once with the reason
/// (the CLI turns it into one line and exit code 1).
#[tokio::test]
async fn yakk_signal_with_an_unreachable_redis_fails_with_a_reason() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: yakk_signal::SignalArgs,
    }
    let url = format!("redis://127.0.0.1:{}/0", free_port());
    let cli = Cli::try_parse_from(["signal", "--listen", "127.0.0.1:0", "--redis", &url]).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(15), yakk_signal::run(cli.args))
        .await
        .expect("gave up within its connection timeouts");
    let err = format!("{:#}", result.expect_err("ran without Redis"));
    assert!(
        err.contains("cannot reach Redis at redis://127.0.0.1"),
        "{err}"
    );
}
