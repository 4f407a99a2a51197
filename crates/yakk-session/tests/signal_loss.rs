//! A joiner whose signalling connection drops in the middle of the handshake (an instance of a
//! clustered `yakk signal` restarting or draining, a network blip) joins once more and
//! connects: nothing was judged yet, so the second attempt costs the code nothing. Real
//! signalling server and WebRTC on loopback; between the joiner and the server, a relay that
//! cuts the first WebSocket right after the joiner's first message of the exchange.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Relay, signal_server, ws_relay};
use yakk_session::{Owner, OwnerEvent, SessionConfig, SessionError};

mod common;

const PASSWORD: &str = "crossbow-nimble";

fn config(signal: &str) -> SessionConfig {
    let mut c = SessionConfig::new(signal, PASSWORD);
    c.ice_ips = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    c
}

/// A relay that cuts each of the first `cut` connections right after the client's first
/// message of the exchange.
async fn cutting_relay(upstream: SocketAddr, cut: usize) -> (SocketAddr, Arc<AtomicUsize>) {
    ws_relay(upstream, move |n, m| {
        if n < cut && (m.is_text() || m.is_binary()) {
            Relay::PassThenCut(m)
        } else {
            Relay::Pass(m)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_that_loses_signalling_mid_handshake_joins_once_more() {
    let server = signal_server().await;
    let (relay, seen) = cutting_relay(server, 1).await;
    let mut owner = Owner::create(config(&server.to_string())).await.unwrap();
    let joined = tokio::time::timeout(
        Duration::from_secs(40),
        yakk_session::join(config(&relay.to_string()), &owner.room),
    )
    .await
    .expect("the joiner stops in time");
    let conn = joined.unwrap_or_else(|e| panic!("the second attempt did not connect: {e}"));
    assert_eq!(seen.load(Ordering::SeqCst), 2, "one cut attempt, one more");
    // The owner admitted the second attempt; the first one burned nothing.
    let admitted = tokio::time::timeout(Duration::from_secs(40), async {
        loop {
            match owner.next().await {
                Some(OwnerEvent::Connected(_)) => break true,
                Some(OwnerEvent::Burned) | None => break false,
                Some(_) => {}
            }
        }
    })
    .await
    .expect("the owner reports the joiner");
    assert!(admitted);
    drop(conn);
}

/// Only once: a signalling connection that keeps being cut ends the join with the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_joins_at_most_twice() {
    let server = signal_server().await;
    let (relay, seen) = cutting_relay(server, usize::MAX).await;
    let owner = Owner::create(config(&server.to_string())).await.unwrap();
    let joined = tokio::time::timeout(
        Duration::from_secs(40),
        yakk_session::join(config(&relay.to_string()), &owner.room),
    )
    .await
    .expect("the joiner stops in time");
    assert!(
        matches!(joined, Err(SessionError::SignalClosed(_))),
        "{:?}",
        joined.err()
    );
    assert_eq!(seen.load(Ordering::SeqCst), 2);
}
