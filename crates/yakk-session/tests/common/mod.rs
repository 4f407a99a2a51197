//! Helpers shared by the session's end-to-end tests: a signalling server on loopback, and a
//! WebSocket relay in front of it that a test can make misbehave.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

/// Logs to the test's captured output (shown when it fails) when `RUST_LOG` asks for them.
pub fn logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// A fresh signalling server on loopback, alive as long as the test process.
pub async fn signal_server() -> SocketAddr {
    logs();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = yakk_signal::spawn(yakk_signal::Config::default(), listener)
        .await
        .unwrap();
    std::mem::forget(server);
    addr
}

/// What the relay does with one message from a client.
pub enum Relay {
    /// Pass it on (perhaps changed).
    Pass(Message),
    /// Pass it on, then cut the connection on both sides.
    PassThenCut(Message),
}

/// A WebSocket relay to `upstream` (same path and query): every message from a client goes
/// through `f` with the connection's number (from 0); messages from the server pass unchanged.
/// Returns its address and the count of connections it accepted.
pub async fn ws_relay<F>(upstream: SocketAddr, f: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(usize, Message) -> Relay + Send + Sync + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    let f = Arc::new(f);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let n = count.fetch_add(1, Ordering::SeqCst);
            let f = f.clone();
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
                        let (m, cut) = match f(n, m) {
                            Relay::Pass(m) => (m, false),
                            Relay::PassThenCut(m) => (m, true),
                        };
                        if ss.send(m).await.is_err() || cut {
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
                // Ending either way drops both sockets.
                tokio::select! { _ = up => {}, _ = down => {} }
            });
        }
    });
    (addr, seen)
}
