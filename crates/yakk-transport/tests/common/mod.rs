//! Two peers in one process over real UDP on 127.0.0.1; SDP and candidates travel through
//! in-memory channels the way trickle ICE would carry them.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use yakk_transport::{PathInfo, Peer, PeerEvent, TransportConfig};

/// Logs to the test's captured output (shown when it fails) when `RUST_LOG` asks for them.
pub fn logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

pub fn loopback(mut cfg: TransportConfig) -> TransportConfig {
    logs();
    cfg.ice_ips = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    cfg
}

pub struct Pair {
    pub a: Peer,
    pub b: Peer,
    /// Events after connection (candidates already forwarded).
    pub a_events: mpsc::Receiver<PeerEvent>,
    pub b_events: mpsc::Receiver<PeerEvent>,
    pub a_path: PathInfo,
    pub b_path: PathInfo,
    /// From `create_offer` to both sides connected.
    pub setup: Duration,
}

/// Forward one side's candidates to the other until `stop`; report `Connected`.
fn forward(
    mut events: mpsc::Receiver<PeerEvent>,
    to: Peer,
    stop: CancellationToken,
    connected: oneshot::Sender<PathInfo>,
) -> JoinHandle<mpsc::Receiver<PeerEvent>> {
    tokio::spawn(async move {
        let mut connected = Some(connected);
        loop {
            tokio::select! {
                ev = events.recv() => match ev {
                    Some(PeerEvent::LocalCandidate(c)) => {
                        // Through JSON, as the signalling channel would carry it.
                        let json = serde_json::to_string(&c).unwrap();
                        let c = serde_json::from_str(&json).unwrap();
                        to.add_remote_candidate(c).await.expect("remote candidate");
                    }
                    Some(PeerEvent::Connected(p)) => {
                        if let Some(tx) = connected.take() { let _ = tx.send(p); }
                    }
                    Some(PeerEvent::Disconnected(why)) => panic!("disconnected during setup: {why}"),
                    None => panic!("event stream ended during setup"),
                },
                _ = stop.cancelled() => break,
            }
        }
        events
    })
}

pub async fn connect(cfg_a: TransportConfig, cfg_b: TransportConfig) -> Pair {
    tokio::time::timeout(Duration::from_secs(20), connect_inner(cfg_a, cfg_b, true))
        .await
        .expect("connection setup timed out")
}

/// As [`connect`], with per-stream flow control off (as toward a yakk/2 peer that does not
/// announce it).
pub async fn connect_without_flow(cfg_a: TransportConfig, cfg_b: TransportConfig) -> Pair {
    tokio::time::timeout(Duration::from_secs(20), connect_inner(cfg_a, cfg_b, false))
        .await
        .expect("connection setup timed out")
}

/// Flow control is on between yakk/2 configurations (half-close), as the session layer
/// negotiates it between two yakk peers.
async fn connect_inner(cfg_a: TransportConfig, cfg_b: TransportConfig, flow: bool) -> Pair {
    let flow = flow && cfg_a.half_close && cfg_b.half_close;
    let (a, a_ev) = Peer::new(cfg_a).await.expect("peer a");
    let (b, b_ev) = Peer::new(cfg_b).await.expect("peer b");
    a.set_flow_control(flow);
    b.set_flow_control(flow);
    a.set_opener_closes(flow);
    b.set_opener_closes(flow);
    let stop = CancellationToken::new();
    let (a_ok, a_conn) = oneshot::channel();
    let (b_ok, b_conn) = oneshot::channel();
    let fa = forward(a_ev, b.clone(), stop.clone(), a_ok);
    let fb = forward(b_ev, a.clone(), stop.clone(), b_ok);
    let t0 = Instant::now();
    let offer = a.create_offer().await.expect("offer");
    let answer = b.accept_offer(&offer).await.expect("answer");
    a.accept_answer(&answer).await.expect("apply answer");
    let a_path = a_conn.await.expect("a connected");
    let b_path = b_conn.await.expect("b connected");
    let setup = t0.elapsed();
    stop.cancel();
    let a_events = fa.await.expect("forwarder a");
    let b_events = fb.await.expect("forwarder b");
    Pair {
        a,
        b,
        a_events,
        b_events,
        a_path,
        b_path,
        setup,
    }
}

/// Deterministic test data: byte i of stream `seed`.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
