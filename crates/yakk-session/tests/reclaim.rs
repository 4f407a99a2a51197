//! An owner keeps its room when the signalling instance it is connected to dies: against a
//! cluster of `yakk signal --redis` instances sharing a real `redis-server` (started by the test;
//! CI installs it), the owner's rendezvous reconnects to the same address, where another instance
//! now answers (a restart, or a load balancer's next instance), takes the room back with its
//! reclaim secret, and a joiner then reaches it with the original room name.

#[path = "../../yakk-signal/tests/common/cluster.rs"]
mod cluster;

use std::time::{Duration, Instant};

use cluster::{RedisServer, cluster_config, start_killable};
use yakk_session::{SessionError, rendezvous};
use yakk_wire::{Envelope, msg};

#[tokio::test]
async fn an_owner_keeps_its_room_when_its_signalling_instance_is_killed() {
    let redis = RedisServer::start();
    let a = start_killable(cluster_config(&redis));
    let addr = a.addr;
    let signal = addr.to_string();
    let mut owner = rendezvous::create_room(&signal, false, None).await.unwrap();
    let room = owner.room.clone();
    a.kill();
    // Another instance answers at the same address.
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let b = yakk_signal::spawn(cluster_config(&redis), listener)
        .await
        .unwrap();
    // A joiner with the original room name reaches the owner once it is back (it retries, as
    // a joiner that arrived while the owner was away would: bounded).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(
            Instant::now() < deadline,
            "the owner never got its room back"
        );
        let joiner = match rendezvous::join_room(&signal, &room).await {
            Ok(j) => j,
            Err(SessionError::NoSuchRoom(_)) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(e) => panic!("join failed: {e}"),
        };
        let hello = Envelope::new(msg::REQUEST_OFFER, "", joiner.my_id, joiner.owner_id);
        joiner.outgoing.send(hello).await.unwrap();
        match tokio::time::timeout(Duration::from_secs(1), owner.incoming.recv()).await {
            Ok(Some(e)) => {
                assert_eq!(e.msg_type, msg::REQUEST_OFFER);
                assert_eq!(e.sender, joiner.my_id);
                break;
            }
            Ok(None) => panic!("the owner gave its room up"),
            // Joined before the server knew the owner was gone: try again.
            Err(_) => continue,
        }
    }
    b.shutdown().await;
}
