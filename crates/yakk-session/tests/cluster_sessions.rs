//! Whole sessions through a signalling cluster: the owner on one `yakk signal --redis` instance,
//! the joiner on another (a real `redis-server` started by the test; CI installs it), in both
//! protocols: yakk/2, and yakk/1 as the original program speaks it (`v1_only`: no reclaim,
//! no sealed extras), which must keep working against the cluster.

#[path = "../../yakk-signal/tests/common/cluster.rs"]
mod cluster;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use cluster::{RedisServer, cluster_config, start_killable};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use yakk_session::{Owner, OwnerEvent, SessionConfig, Version};

fn config(signal: &str, v1_only: bool) -> SessionConfig {
    let mut c = SessionConfig::new(signal, "cluster-test-pw");
    c.ice_ips = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    c.v1_only = v1_only;
    c.allow_v1 = v1_only;
    c
}

async fn session_across_instances(v1_only: bool) {
    let redis = RedisServer::start();
    let a = start_killable(cluster_config(&redis));
    let b = start_killable(cluster_config(&redis));
    let mut owner = Owner::create(config(&a.addr.to_string(), v1_only))
        .await
        .unwrap();
    let room = owner.room.clone();
    let (joined, ev) = tokio::join!(
        yakk_session::join(config(&b.addr.to_string(), v1_only), &room),
        tokio::time::timeout(Duration::from_secs(30), owner.next())
    );
    let Ok(Some(OwnerEvent::Connected(o))) = ev else {
        panic!("the owner (instance A) did not connect to the joiner (instance B)");
    };
    let joiner = joined.expect("the joiner connects through another instance");
    let want = if v1_only { Version::V1 } else { Version::V2 };
    assert_eq!((o.version(), joiner.version()), (want, want));

    // 1 MiB each way over one stream: the owner echoes what it reads.
    let data: Vec<u8> = (0..1u32 << 20).map(|i| (i * 31 % 251) as u8).collect();
    let len = data.len();
    let echo = tokio::spawn(async move {
        let (_, s) = o.accept_stream().await.expect("a stream from the joiner");
        let (mut r, mut w) = tokio::io::split(s);
        let mut buf = vec![0u8; len];
        r.read_exact(&mut buf).await.unwrap();
        w.write_all(&buf).await.unwrap();
        w.flush().await.unwrap();
        // Keep the connection up until the joiner has read everything.
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(o);
    });
    let s = joiner.open_stream("DataConn1").await.unwrap();
    let (mut r, mut w) = tokio::io::split(s);
    w.write_all(&data).await.unwrap();
    let mut back = vec![0u8; len];
    tokio::time::timeout(Duration::from_secs(30), r.read_exact(&mut back))
        .await
        .expect("the echo in time")
        .unwrap();
    assert!(back == data, "the echo differs from what was sent");
    echo.await.unwrap();
    a.kill();
    b.kill();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_yakk2_session_spans_two_instances() {
    session_across_instances(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_yakk1_session_spans_two_instances() {
    session_across_instances(true).await;
}
