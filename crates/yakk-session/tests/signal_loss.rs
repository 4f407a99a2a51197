//! A joiner whose signalling connection drops in the middle of the handshake (an instance of a
//! clustered `yakk signal` restarting or draining, a network blip) joins once more and
//! connects: nothing was judged yet, so the second attempt costs the code nothing. Real
//! signalling server and WebRTC on loopback; between the joiner and the server, a relay that
//! cuts the first WebSocket right after the joiner's first message of the exchange.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use yakk_session::{Owner, OwnerEvent, SessionConfig, SessionError};

const PASSWORD: &str = "crossbow-nimble";

fn config(signal: &str) -> SessionConfig {
    let mut c = SessionConfig::new(signal, PASSWORD);
    c.ice_ips = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    c
}

async fn signal_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = yakk_signal::spawn(yakk_signal::Config::default(), listener)
        .await
        .unwrap();
    std::mem::forget(server);
    addr
}

/// A WebSocket relay to `upstream` that cuts the first `cut` connections right after relaying
/// the client's first message; the others are relayed faithfully. Counts the connections.
async fn cutting_relay(upstream: SocketAddr, cut: usize) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let n = count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let path = Arc::new(std::sync::Mutex::new(String::new()));
                let p = path.clone();
                // The callback's signature is tungstenite's.
                #[allow(clippy::result_large_err)]
                let cb = move |req: &tokio_tungstenite::tungstenite::handshake::server::Request,
                               resp| {
                    *p.lock().unwrap() = req.uri().to_string();
                    Ok(resp)
                };
                let Ok(client) = tokio_tungstenite::accept_hdr_async(tcp, cb).await else {
                    return;
                };
                let url = format!("ws://{upstream}{}", path.lock().unwrap());
                let Ok((server, _)) = tokio_tungstenite::connect_async(url).await else {
                    return;
                };
                let (mut cs, mut cr) = client.split();
                let (mut ss, mut sr) = server.split();
                let up = async {
                    while let Some(Ok(m)) = cr.next().await {
                        let data = m.is_text() || m.is_binary();
                        if ss.send(m).await.is_err() || (data && n < cut) {
                            break;
                        }
                    }
                };
                let down = async {
                    while let Some(Ok(m)) = sr.next().await {
                        if cs.send(m).await.is_err() {
                            break;
                        }
                    }
                };
                tokio::select! { _ = up => {}, _ = down => {} }
                // Both sockets dropped here: the joiner sees its signalling connection end.
            });
        }
    });
    (addr, seen)
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
