//! Sessions with several lanes, at library level: real signalling server, real WebRTC over
//! 127.0.0.1, and a lane lost in the middle.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use yakk_session::{Connection, Owner, OwnerEvent, SessionConfig, Stream};

mod common;
use common::signal_server;

fn config(signal: &str, lanes: u32) -> SessionConfig {
    let mut c = SessionConfig::new(signal, "lane-test-pw");
    c.ice_ips = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    c.lanes = lanes;
    c
}

/// An owner and a joiner connected through a fresh signalling server.
async fn pair(owner_lanes: u32, joiner_lanes: u32) -> (Connection, Connection) {
    pair_via(owner_lanes, joiner_lanes, None).await
}

/// Relays TCP connections to `to`, holding back every chunk `delay` in each direction: a
/// signalling server far from the joiner. Returns the address to connect to: on 127.0.0.2,
/// which the joiner reaches from 127.0.0.1, so that it does not count as this machine.
async fn delaying_proxy(to: std::net::SocketAddr, delay: Duration) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let Ok(outbound) = tokio::net::TcpStream::connect(to).await else {
                continue;
            };
            let (ir, iw) = inbound.into_split();
            let (or, ow) = outbound.into_split();
            for (mut r, mut w) in [(ir, ow), (or, iw)] {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = r.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        tokio::time::sleep(delay).await;
                        if w.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = w.shutdown().await;
                });
            }
        }
    });
    addr.to_string()
}

/// As `pair`, the joiner's signalling delayed `joiner_delay` each way when given.
async fn pair_via(
    owner_lanes: u32,
    joiner_lanes: u32,
    joiner_delay: Option<Duration>,
) -> (Connection, Connection) {
    let server_addr = signal_server().await;
    let signal = server_addr.to_string();
    let joiner_signal = match joiner_delay {
        Some(d) => delaying_proxy(server_addr, d).await,
        None => signal.clone(),
    };
    let mut owner = Owner::create(config(&signal, owner_lanes)).await.unwrap();
    next_joiner(&mut owner, config(&joiner_signal, joiner_lanes)).await
}

/// A joiner with `cfg` joins `owner`'s room: the owner's and the joiner's connections.
async fn next_joiner(owner: &mut Owner, cfg: SessionConfig) -> (Connection, Connection) {
    let room = owner.room.clone();
    // Both bounded: a side that never settles fails the test here instead of hanging it (the
    // joiner has its own 30 s handshake and connect timeouts; this is longer).
    let (joined, ev) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(60), yakk_session::join(cfg, &room)),
        async { tokio::time::timeout(Duration::from_secs(30), owner.next()).await }
    );
    let joined = joined.expect("the joiner neither connected nor failed within 60 s");
    let o = match ev {
        Ok(Some(OwnerEvent::Connected(o))) => o,
        Ok(Some(OwnerEvent::Failed { error, .. })) => panic!("the owner failed: {error}"),
        _ => panic!("the owner did not connect"),
    };
    (*o, joined.expect("the joiner connects"))
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0] ^ seed)
        .collect()
}

/// Echoes every stream the peer opens until the connection ends.
fn echo(conn: std::sync::Arc<Connection>) {
    tokio::spawn(async move {
        while let Some((_, s)) = conn.accept_stream().await {
            tokio::spawn(async move {
                let (mut r, mut w) = tokio::io::split(s);
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
}

/// Sends `data` over `s` and reads until the peer's end, within 90 s (a stalled stream fails
/// the test, it does not hang it).
async fn round_trip(s: Stream, data: &[u8]) -> std::io::Result<Vec<u8>> {
    tokio::time::timeout(Duration::from_secs(90), round_trip_unbounded(s, data))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "stalled for 90 s"))?
}

async fn round_trip_unbounded(s: Stream, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let (mut r, mut w) = tokio::io::split(s);
    let data = data.to_vec();
    let writer = tokio::spawn(async move {
        w.write_all(&data).await?;
        w.shutdown().await
    });
    let mut back = Vec::new();
    r.read_to_end(&mut back).await?;
    writer.await.unwrap()?;
    Ok(back)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_lane_breaks_its_streams_loudly_and_new_ones_use_the_rest() {
    let (owner, joiner) = pair(1, 3).await;
    assert_eq!((owner.lanes(), joiner.lanes()), (3, 3));
    let owner = std::sync::Arc::new(owner);
    echo(owner.clone());

    let data = pattern(3 << 20, 1);
    let s = joiner.open_stream("first").await.unwrap();
    assert!(
        round_trip(s, &data).await.unwrap() == data,
        "echo over 3 lanes"
    );

    // A stream in the middle of its life when a lane goes: it fails, it does not end cleanly.
    let s = joiner.open_stream("cut").await.unwrap();
    let (mut r, mut w) = tokio::io::split(s);
    w.write_all(&pattern(200_000, 2)).await.unwrap();
    let mut head = vec![0u8; 200_000];
    tokio::time::timeout(Duration::from_secs(20), r.read_exact(&mut head))
        .await
        .expect("echo in time")
        .unwrap();
    joiner.close_lane_for_test(1).await;
    assert_eq!(joiner.lanes(), 2);
    let more = async {
        for _ in 0..64 {
            w.write_all(&pattern(64 << 10, 3)).await?;
        }
        w.shutdown().await?;
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).await?;
        Ok::<_, std::io::Error>(rest)
    };
    let r = tokio::time::timeout(Duration::from_secs(30), more)
        .await
        .expect("the cut stream ends in time");
    assert!(r.is_err(), "a stream that lost a lane fails: {r:?}");

    // New streams go over the two lanes left, whole.
    for i in 0..3u8 {
        let data = pattern(1 << 20, 10 + i);
        let s = tokio::time::timeout(Duration::from_secs(30), joiner.open_stream("after"))
            .await
            .expect("open in time")
            .unwrap();
        let back = tokio::time::timeout(Duration::from_secs(30), round_trip(s, &data))
            .await
            .expect("echo in time")
            .unwrap();
        assert!(back == data, "stream {i} after the loss");
    }
}

/// One stream alone is striped over every lane; streams opened while others live share the
/// lanes out, so a thousand connections do not cost a thousand times every lane.
#[tokio::test(flavor = "multi_thread")]
async fn lanes_are_shared_out_among_live_streams() {
    let (owner, joiner) = pair(4, 1).await;
    assert_eq!(joiner.lanes(), 4);
    let owner = std::sync::Arc::new(owner);
    echo(owner.clone());
    let a = joiner.open_stream("a").await.unwrap();
    assert_eq!(a.parts(), 4, "alone: every lane");
    let b = joiner.open_stream("b").await.unwrap();
    assert_eq!(b.parts(), 2, "with one other alive: half");
    let c = joiner.open_stream("c").await.unwrap();
    assert_eq!(c.parts(), 1, "with two others alive: 4 / 3 rounded down");
    // Each still carries its bytes.
    let (da, db, dc) = (
        pattern(300_000, 21),
        pattern(300_000, 22),
        pattern(300_000, 23),
    );
    let (ra, rb, rc) = tokio::join!(round_trip(a, &da), round_trip(b, &db), round_trip(c, &dc));
    assert!(ra.unwrap() == da && rb.unwrap() == db && rc.unwrap() == dc);
    // All gone: the next one has every lane again.
    let d = joiner.open_stream("d").await.unwrap();
    assert_eq!(d.parts(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_lane_unless_asked() {
    let (owner, joiner) = pair(1, 1).await;
    assert_eq!((owner.lanes(), joiner.lanes()), (1, 1));
    let owner = std::sync::Arc::new(owner);
    echo(owner.clone());
    let data = pattern(1 << 20, 7);
    let s = joiner.open_stream("DataConn1").await.unwrap();
    assert!(round_trip(s, &data).await.unwrap() == data);
}

/// `auto` on both sides: one lane when the peer is near (loopback), all of `AUTO_LANES` when the
/// key exchange's round trip is long (here the joiner's signalling is 15 ms away each way), and
/// a stream striped over them carries data intact.
#[tokio::test(flavor = "multi_thread")]
async fn automatic_lanes_one_when_near_many_when_far() {
    use yakk_session::{AUTO_LANES, LANES_AUTO};
    let (owner, joiner) = pair(LANES_AUTO, LANES_AUTO).await;
    assert_eq!((owner.lanes(), joiner.lanes()), (1, 1), "near: one lane");
    drop((owner, joiner));

    let far = Some(Duration::from_millis(15));
    let (owner, joiner) = pair_via(LANES_AUTO, LANES_AUTO, far).await;
    let all = AUTO_LANES as usize;
    assert_eq!(
        (owner.lanes(), joiner.lanes()),
        (all, all),
        "far: every lane"
    );
    let owner = std::sync::Arc::new(owner);
    echo(owner.clone());
    let data = pattern(4 << 20, 7);
    let s = tokio::time::timeout(Duration::from_secs(30), joiner.open_stream("far"))
        .await
        .expect("the stream did not open within 30 s")
        .unwrap();
    assert_eq!(
        s.parts(),
        all,
        "one stream alone is striped over every lane"
    );
    let back = tokio::time::timeout(Duration::from_secs(60), round_trip(s, &data))
        .await
        .expect("4 MiB did not come back within 60 s");
    assert!(back.unwrap() == data, "echoed intact");
}

/// An owner keeps the lanes of all its joiners within its budget: a joiner that comes while
/// the others hold most of it gets what is left, and what a finished connection held is
/// free again.
#[tokio::test(flavor = "multi_thread")]
async fn an_owner_shares_its_lane_budget_among_joiners() {
    let signal = signal_server().await.to_string();
    let mut oc = config(&signal, 8);
    oc.owner_lane_budget = 12;
    let mut owner = Owner::create(oc).await.unwrap();
    let (o1, j1) = next_joiner(&mut owner, config(&signal, 1)).await;
    assert_eq!(
        (o1.lanes(), j1.lanes()),
        (8, 8),
        "the owner's wish, within budget"
    );
    let (o2, j2) = next_joiner(&mut owner, config(&signal, 1)).await;
    assert_eq!(
        (o2.lanes(), j2.lanes()),
        (4, 4),
        "what the first left of 12"
    );
    drop((o1, j1));
    let (o3, j3) = next_joiner(&mut owner, config(&signal, 1)).await;
    assert_eq!(
        (o3.lanes(), j3.lanes()),
        (8, 8),
        "the first's lanes are free again"
    );
    // Each still carries data.
    let o3 = std::sync::Arc::new(o3);
    echo(o3.clone());
    let data = pattern(1 << 20, 3);
    let s = j3.open_stream("third").await.unwrap();
    assert!(round_trip(s, &data).await.unwrap() == data);
    drop((o2, j2));
}

/// A joiner's signalling arrives at the owner in bursts (its path to the server holds every
/// chunk back 250 ms, so the server reads many messages at once): the owner takes the 31 extra
/// lanes' offers and candidates in one go, while it is busy building each lane's peer
/// connection. None of them may be lost (a lost sealed message breaks the counter sequence
/// and reads as tampering).
#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_lane_offers_is_taken_whole() {
    let server = signal_server().await;
    let joiner_signal = delaying_proxy(server, Duration::from_millis(250)).await;
    // Eight host candidates per lane: 31 offers and about 250 candidates in the burst.
    let ips: Vec<IpAddr> = (1..=8)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
        .collect();
    let mut oc = config(&server.to_string(), 1);
    oc.ice_ips = ips.clone();
    let mut jc = config(&joiner_signal, 32);
    jc.ice_ips = ips;
    let mut owner = Owner::create(oc).await.unwrap();
    let (owner, joiner) = next_joiner(&mut owner, jc).await;
    assert_eq!((owner.lanes(), joiner.lanes()), (32, 32), "every lane up");
}
