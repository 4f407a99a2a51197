//! Relayed paths on loopback, through the relay inside a real `yakk signal --turn-listen`: the
//! relay leg over TCP, and over TLS on the signalling port, which the WebRTC stack cannot use by
//! itself (yakk bridges them); and a rendezvous whose certificate comes from a private
//! authority, trusted through `SSL_CERT_FILE`. Every address is on 127.0.0.1. (Reaching a relay when UDP is blocked is
//! proved in network namespaces by `nat_lab.rs`.)

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::Value;

const SECRET: &str = "relay-test-secret";

/// A free port on 127.0.0.1 for both TCP and UDP.
fn free_port() -> u16 {
    unused_port()
}

/// `yakk signal` on `listen` with its relay on `turn_port` (UDP and TCP), relaying between
/// loopback addresses, with `SECRET` for its credentials, and `extra` arguments.
async fn relay_server(listen: &str, turn_port: u16, extra: &[&str]) -> Yakk {
    let turn = format!("127.0.0.1:{turn_port}");
    let mut args = vec![
        "signal",
        "--listen",
        listen,
        "--turn-listen",
        &turn,
        "--turn-allow-private-peers",
        "--turn-ports",
        "40000-40999",
    ];
    args.extend_from_slice(extra);
    let signal = Yakk::start_env(&args, &[("YAKK_TURN_SECRET", SECRET)]);
    // It is up once its relay and its signalling take TCP connections.
    wait_for_listener(&turn, &signal).await;
    wait_for_listener(listen, &signal).await;
    signal
}

/// `--relay-only` through the TURN server at `url` only, with credentials of `SECRET`.
fn relay_only_args(url: &str) -> Vec<String> {
    let expiry = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let (user, pass) = yakk_signal::ice::turn_rest_credentials(SECRET, expiry, "test");
    [
        "--relay-only",
        "--turn",
        url,
        "--turn-user",
        &user,
        "--turn-pass",
        &pass,
    ]
    .map(String::from)
    .to_vec()
}

/// An owner sharing an echo server and a joiner, both with these extra arguments and `env`,
/// once both are connected: the owner, the joiner, and their `connected` events.
async fn connected_pair(extra: &[&str], env: &[(&str, &str)]) -> (Yakk, Yakk, Value, Value) {
    // Dropping its handle leaves the echo server running, for the rest of the test.
    let (port, _) = echo_server().await;
    let p = port.to_string();
    let mut args = vec!["server", "-p", &p, "--json", "--ice-ip", "127.0.0.1"];
    args.extend_from_slice(extra);
    let mut owner = Yakk::start_env(&args, env);
    let code = owner.event("code", 20).await["code"]
        .as_str()
        .unwrap()
        .to_string();
    let mut args = vec!["client", "-p", "0", "--json", "--ice-ip", "127.0.0.1"];
    args.extend_from_slice(extra);
    args.push(&code);
    let mut joiner = Yakk::start_env(&args, env);
    let j = joiner.event("connected", 30).await;
    let o = owner.event("connected", 30).await;
    (owner, joiner, o, j)
}

/// A relay-only tunnel with these extra arguments on both sides (the owner's own signalling
/// server) and `env`: both sides say the relay leg is `leg`, and 4 MiB come back intact.
async fn relay_only_tunnel(turn: &[String], env: &[(&str, &str)], leg: &str) {
    let turn: Vec<&str> = turn.iter().map(String::as_str).collect();
    let (_owner, mut joiner, o, j) = connected_pair(&turn, env).await;
    for (side, ev) in [("owner", &o), ("joiner", &j)] {
        assert_eq!(ev["path"], "relay", "{side}: {ev}");
        assert_eq!(ev["relay"], leg, "{side}: {ev}");
    }
    let addr = joiner.event("listening", 10).await["address"]
        .as_str()
        .unwrap()
        .to_string();
    let data = pattern(4 << 20, 21);
    let back = tokio::time::timeout(Duration::from_secs(120), round_trip(&addr, &data))
        .await
        .expect("4 MiB echoed through the relay within 120 s");
    assert!(back == data, "the echo differs ({} bytes back)", back.len());
}

/// Waits (20 s at most) until `addr` takes TCP connections: `server` has started.
async fn wait_for_listener(addr: &str, server: &Yakk) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{addr} is not listening: {}",
            server.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A TURN server named only by a `?transport=tcp` URL: both sides, relay-only, allocate over
/// TCP through yakk's bridge, say so (`"relay":"tcp"`), and carry data intact. Without the
/// bridge the stack skips such a URL, gathers no candidate, and the sides stop with exit 7.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_reached_over_tcp_carries_a_relay_only_tunnel() {
    let turn_port = free_port();
    let listen = format!("127.0.0.1:{}", free_port());
    let _relay = relay_server(&listen, turn_port, &[]).await;
    let url = format!("turn:127.0.0.1:{turn_port}?transport=tcp");
    relay_only_tunnel(&relay_only_args(&url), &[], "tcp").await;
}

/// The same through the relay served over TLS on the signalling server's own port (`turns:`),
/// its certificate trusted through `SSL_CERT_FILE`: the leg is `tls`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_reached_over_tls_on_the_signalling_port_carries_a_relay_only_tunnel() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = localhost_certificate(dir.path());
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let tls = ["--tls-cert", cert.as_str(), "--tls-key", key.as_str()];
    let _relay = relay_server(&listen, free_port(), &tls).await;
    let url = format!("turns:localhost:{port}?transport=tcp");
    relay_only_tunnel(&relay_only_args(&url), &[("SSL_CERT_FILE", &cert)], "tls").await;
}

/// The relay's live allocations over `transport`, from its signalling server's `/metrics`.
async fn live_allocations(listen: &str, transport: &str) -> u64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(listen).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut page = String::new();
    s.read_to_string(&mut page).await.unwrap();
    let key = format!("yakk_signal_turn_transport_allocations{{transport=\"{transport}\"}} ");
    page.lines()
        .find_map(|l| l.strip_prefix(key.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /metrics:\n{page}"))
}

/// A signalling server that advertises its relay over UDP and TCP: the peers (relay-only)
/// find that UDP reaches it, so they allocate over UDP only, not over TCP as well (each bridged
/// URL would cost one more allocation per lane).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_answers_over_udp_is_not_also_used_over_tcp() {
    let listen = format!("127.0.0.1:{}", free_port());
    let _relay = relay_server(&listen, free_port(), &[]).await;
    let signal = format!("ws://{listen}");
    let extra = ["--relay-only", "--signal", &signal];
    let (_owner, _joiner, o, j) = connected_pair(&extra, &[]).await;
    for ev in [&o, &j] {
        assert_eq!(ev["relay"], "udp", "{ev}");
    }
    assert!(live_allocations(&listen, "udp").await >= 2);
    assert_eq!(live_allocations(&listen, "tcp").await, 0);
}

/// A certificate for `localhost`, self-signed (its own authority): the PEM files of the
/// certificate and of its key, in `dir`.
fn localhost_certificate(dir: &std::path::Path) -> (String, String) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    (
        cert.to_string_lossy().into_owned(),
        key.to_string_lossy().into_owned(),
    )
}

/// A `wss://` rendezvous with a certificate no public authority signed: refused as untrusted
/// (exit code and message), and used once `SSL_CERT_FILE` names the authority.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_authority_is_trusted_through_ssl_cert_file() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = localhost_certificate(dir.path());
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let signal = Yakk::start(&[
        "signal",
        "--listen",
        &listen,
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ]);
    wait_for_listener(&listen, &signal).await;
    let url = format!("wss://localhost:{port}");
    let (echo, _echo) = echo_server().await;
    let p = echo.to_string();
    let owner_args = [
        "server",
        "-p",
        &p,
        "--json",
        "--ice-ip",
        "127.0.0.1",
        "--signal",
        &url,
    ];

    // Untrusted: the owner cannot open a room, and says why.
    let mut untrusted = Yakk::start(&owner_args);
    let err = untrusted.event("error", 30).await;
    let text = err.to_string().to_lowercase();
    assert!(text.contains("certificate"), "{err}");
    assert_ne!(untrusted.exit_code(10).await, 0);

    // Trusted through SSL_CERT_FILE: a tunnel through it works.
    let env = [("SSL_CERT_FILE", cert.as_str())];
    let mut owner = Yakk::start_env(&owner_args, &env);
    let code = owner.event("code", 30).await["code"]
        .as_str()
        .unwrap()
        .to_string();
    let mut joiner = Yakk::start_env(
        &[
            "client",
            "-p",
            "0",
            "--json",
            "--ice-ip",
            "127.0.0.1",
            "--signal",
            &url,
            &code,
        ],
        &env,
    );
    joiner.event("connected", 30).await;
    let addr = joiner.event("listening", 10).await["address"]
        .as_str()
        .unwrap()
        .to_string();
    let data = pattern(64 << 10, 5);
    assert!(round_trip(&addr, &data).await == data);
}
