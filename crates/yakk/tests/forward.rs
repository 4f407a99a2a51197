//! End to end: `yakk server` and `yakk client` as real processes, real TCP sockets and real
//! WebRTC over 127.0.0.1, with the embedded signalling server.

mod common;

use std::time::Duration;

use common::*;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::test(flavor = "multi_thread")]
async fn echo_through_the_tunnel() {
    let (port, _srv) = echo_server().await;
    let (_owner, joiner, addr) = tunnel(port, &[], &[]).await;
    let back = round_trip(&addr, b"hello through yakk\n").await;
    assert_eq!(back, b"hello through yakk\n");
    drop(joiner);
}

#[tokio::test(flavor = "multi_thread")]
async fn connected_event_says_protocol_and_path() {
    let (port, _srv) = echo_server().await;
    let p = port.to_string();
    let mut owner = Yakk::start(&["server", "-p", &p, "--json", "--ice-ip", "127.0.0.1"]);
    let code = owner.event("code", 20).await["code"]
        .as_str()
        .unwrap()
        .to_string();
    let mut joiner = Yakk::start(&[
        "client",
        "-p",
        "0",
        "--json",
        "--ice-ip",
        "127.0.0.1",
        &code,
    ]);
    let ev = joiner.event("connected", 30).await;
    assert_eq!(ev["protocol"], "yakk/2");
    assert_eq!(ev["path"], "host");
    // Not relayed: the relay leg's transport is null (but the field is there).
    assert_eq!(ev.get("relay"), Some(&serde_json::Value::Null), "{ev}");
    let ev = owner.event("connected", 30).await;
    assert_eq!(ev["protocol"], "yakk/2");
    assert_eq!(ev.get("relay"), Some(&serde_json::Value::Null), "{ev}");
}

/// `--relay-only` with no TURN server anywhere (none given, none advertised by the embedded
/// signalling server; a STUN server does not count) cannot ever reach the peer: the joiner
/// and the owner each stop at once with "no network path … configure a TURN server", exit 7.
#[tokio::test(flavor = "multi_thread")]
async fn relay_only_without_a_turn_server_fails_with_exit_7() {
    fn says_a_relay_is_needed(err: &serde_json::Value) {
        let msg = err["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains("no network path") && msg.contains("configure a TURN server"),
            "{err}"
        );
        assert_eq!(err["exit_code"], 7, "{err}");
    }
    let (port, _srv) = echo_server().await;
    let (_owner, code) = owner_with_code(port, &[]).await;
    for extra in [&[][..], &["--stun", "stun:127.0.0.1:9"][..]] {
        let started = std::time::Instant::now();
        let mut args = vec!["client", "-p", "0", "--json", "--ice-ip", "127.0.0.1"];
        args.extend_from_slice(extra);
        args.extend(["--relay-only", &code]);
        let mut joiner = Yakk::start(&args);
        says_a_relay_is_needed(&joiner.event("error", 20).await);
        assert_eq!(
            joiner.exit_code(10).await,
            7,
            "exit code 7 = no network path"
        );
        let secs = started.elapsed().as_secs_f64();
        assert!(secs < 10.0, "the joiner took {secs:.1} s to give up");
    }
    // The code was not used up: a joiner without the option still connects.
    let mut joiner = Yakk::start(&[
        "client",
        "-p",
        "0",
        "--json",
        "--ice-ip",
        "127.0.0.1",
        &code,
    ]);
    assert_eq!(joiner.event("connected", 30).await["path"], "host");
    drop(joiner);
    // An owner with its embedded server (which advertises no relay) stops before it prints
    // a code.
    let mut owner = start_owner(port, &["--relay-only"]);
    says_a_relay_is_needed(&owner.event("error", 20).await);
    assert_eq!(owner.exit_code(10).await, 7);
}

/// 32 MiB each way at the same time, checked by hash, through one forwarded connection.
#[tokio::test(flavor = "multi_thread")]
async fn bulk_both_directions_intact() {
    const N: usize = 32 << 20;
    // A server that sends its own stream while hashing what it receives.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        let (mut r, mut w) = s.into_split();
        let send = tokio::spawn(async move {
            w.write_all(&pattern(N, 2)).await.unwrap();
            w.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        send.await.unwrap();
        Sha256::digest(&got)
    });
    let (_owner, _joiner, addr) = tunnel(port, &[], &[]).await;
    let back = tokio::time::timeout(Duration::from_secs(120), round_trip(&addr, &pattern(N, 1)))
        .await
        .expect("bulk transfer finished in time");
    assert_eq!(back.len(), N);
    assert_eq!(Sha256::digest(&back), Sha256::digest(pattern(N, 2)));
    assert_eq!(server.await.unwrap(), Sha256::digest(pattern(N, 1)));
}

/// The client shuts down its write side; the reply still arrives in full.
#[tokio::test(flavor = "multi_thread")]
async fn half_close_carries_the_reply() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut req = Vec::new();
        s.read_to_end(&mut req).await.unwrap(); // waits for the client's half-close
        tokio::time::sleep(Duration::from_millis(200)).await;
        let reply = format!("got {} bytes", req.len()).repeat(1000);
        s.write_all(reply.as_bytes()).await.unwrap();
        s.shutdown().await.unwrap();
    });
    let (_owner, _joiner, addr) = tunnel(port, &[], &[]).await;
    let back = round_trip(&addr, &vec![7u8; 100_000]).await;
    assert_eq!(back, "got 100000 bytes".repeat(1000).as_bytes());
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_concurrent_connections() {
    let (port, _srv) = echo_server().await;
    let (_owner, _joiner, addr) = tunnel(port, &[], &[]).await;
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        let addr = addr.clone();
        tasks.push(tokio::spawn(async move {
            let data = pattern(20_000 + i as usize * 37, i);
            let back = round_trip(&addr, &data).await;
            assert_eq!(back, data, "connection {i}");
        }));
    }
    let all = futures::future::join_all(tasks);
    for r in tokio::time::timeout(Duration::from_secs(90), all)
        .await
        .expect("all 200 finished")
    {
        r.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn owner_killed_mid_stream_closes_everything() {
    // A server that never answers: the connection stays open until the tunnel dies.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    let (mut owner, mut joiner, addr) = tunnel(port, &[], &[]).await;
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"ping").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    owner.child.start_kill().unwrap();
    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf))
        .await
        .expect("the forwarded connection closes after the owner dies");
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    assert_eq!(joiner.exit_code(30).await, 4, "exit code 4 = peer gone");
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_password_fails_on_both_sides() {
    let (port, _srv) = echo_server().await;
    let p = port.to_string();
    let mut owner = Yakk::start(&["server", "-p", &p, "--json", "--ice-ip", "127.0.0.1"]);
    let code = owner.event("code", 20).await["code"]
        .as_str()
        .unwrap()
        .to_string();
    let bad = with_wrong_password(&code, "not-the-password");
    let mut joiner = Yakk::start(&["client", "-p", "0", "--json", "--ice-ip", "127.0.0.1", &bad]);
    let err = joiner.event("error", 30).await;
    assert!(
        err["message"].as_str().unwrap().contains("wrong password"),
        "{err}"
    );
    assert_eq!(joiner.exit_code(10).await, 3);
    let warn = owner.event("warning", 10).await;
    assert!(
        warn["message"].as_str().unwrap().contains("wrong password"),
        "{warn}"
    );
    assert!(
        !joiner.stderr_text().contains("not-the-password"),
        "password leaked to stderr"
    );
    // One guess per code: the owner burns it and, with no tunnel open, exits.
    owner.event("burned", 10).await;
    assert_eq!(owner.exit_code(10).await, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn allow_retries_keeps_the_code_alive() {
    let (port, _srv) = echo_server().await;
    let p = port.to_string();
    let mut owner = Yakk::start(&[
        "server",
        "-p",
        &p,
        "--json",
        "--ice-ip",
        "127.0.0.1",
        "--allow-retries",
        "1",
    ]);
    let code = owner.event("code", 20).await["code"]
        .as_str()
        .unwrap()
        .to_string();
    let bad = with_wrong_password(&code, "wrong-guess");
    let mut j1 = Yakk::start(&["client", "-p", "0", "--json", "--ice-ip", "127.0.0.1", &bad]);
    assert_eq!(j1.exit_code(30).await, 3);
    owner.event("warning", 10).await;
    // The one allowed retry: the right code still connects.
    let mut j2 = Yakk::start(&[
        "client",
        "-p",
        "0",
        "--json",
        "--ice-ip",
        "127.0.0.1",
        &code,
    ]);
    j2.event("connected", 30).await;
    let addr = j2.event("listening", 10).await["address"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(round_trip(&addr, b"still here").await, b"still here");
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_room_is_a_clear_error() {
    let (port, _srv) = echo_server().await;
    let p = port.to_string();
    let mut owner = Yakk::start(&["server", "-p", &p, "--json", "--ice-ip", "127.0.0.1"]);
    let code = owner.event("code", 20).await["code"]
        .as_str()
        .unwrap()
        .to_string();
    let server = code.split_once('@').unwrap().1;
    let bad = format!("99999-some-words@{server}");
    let mut joiner = Yakk::start(&["client", "-p", "0", "--json", &bad]);
    let err = joiner.event("error", 20).await;
    assert!(
        err["message"].as_str().unwrap().contains("no such room"),
        "{err}"
    );
    assert_eq!(joiner.exit_code(10).await, 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn port_in_use_is_a_usage_error() {
    let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let mut joiner = Yakk::start(&["client", "-p", &port, "--json", "123-a-b@127.0.0.1:1"]);
    let err = joiner.event("error", 20).await;
    assert!(
        err["message"].as_str().unwrap().contains("cannot listen"),
        "{err}"
    );
    assert_eq!(joiner.exit_code(10).await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn legacy_protocol_between_our_own_peers() {
    let (port, _srv) = echo_server().await;
    let (_owner, mut joiner, addr, o, _) =
        tunnel_with_events(port, &["--legacy-only"], &["--legacy"]).await;
    assert_eq!(o["protocol"], "yakk/1");
    // yakk/1 has no half-close (closing a channel closes both ways), so read the echo back
    // before closing, as a reference peer's user would.
    let data = pattern(300_000, 9);
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(&data).await.unwrap();
    let mut back = vec![0u8; data.len()];
    tokio::time::timeout(Duration::from_secs(30), s.read_exact(&mut back))
        .await
        .expect("echo in time")
        .unwrap();
    assert_eq!(back, data);
    drop(joiner.child.start_kill());
}

#[tokio::test(flavor = "multi_thread")]
async fn legacy_peer_refused_without_the_flag() {
    let (port, _srv) = echo_server().await;
    let p = port.to_string();
    let mut owner = Yakk::start(&[
        "server",
        "-p",
        &p,
        "--json",
        "--ice-ip",
        "127.0.0.1",
        "--legacy-only",
    ]);
    let code = owner.event("code", 20).await["code"]
        .as_str()
        .unwrap()
        .to_string();
    let mut joiner = Yakk::start(&[
        "client",
        "-p",
        "0",
        "--json",
        "--ice-ip",
        "127.0.0.1",
        &code,
    ]);
    let err = joiner.event("error", 20).await;
    assert!(
        err["message"].as_str().unwrap().contains("--legacy"),
        "{err}"
    );
    assert_eq!(joiner.exit_code(10).await, 8);
}

/// With lanes, every forwarded connection is striped over several peer connections: bulk data
/// both ways arrives intact, half-close still carries the reply, and many connections at once
/// each get their own bytes back.
#[tokio::test(flavor = "multi_thread")]
async fn lanes_carry_connections_intact() {
    let (port, _srv) = echo_server().await;
    // The owner wishes for one, not for lanes by its round trip (32 on a loaded machine).
    let (_owner, _joiner, addr, o, j) =
        tunnel_with_events(port, &["--lanes", "1"], &["--lanes", "4"]).await;
    assert_eq!(
        (o["lanes"].as_u64(), j["lanes"].as_u64()),
        (Some(4), Some(4))
    );
    let data = pattern(24 << 20, 5);
    let back = tokio::time::timeout(Duration::from_secs(120), round_trip(&addr, &data))
        .await
        .expect("bulk echo in time");
    assert!(back.len() == data.len() && back == data, "bulk echo intact");
    let mut tasks = Vec::new();
    for i in 0..40u64 {
        let addr = addr.clone();
        tasks.push(tokio::spawn(async move {
            let data = pattern(1 + i as usize * 9_973, 50 + i);
            let back = round_trip(&addr, &data).await;
            assert!(back == data, "connection {i}");
        }));
    }
    let all = futures::future::join_all(tasks);
    for r in tokio::time::timeout(Duration::from_secs(90), all)
        .await
        .expect("all 40 finished")
    {
        r.unwrap();
    }
}

/// The session takes the larger wish of the two sides, and yakk/1 (no lanes in the reference
/// program's protocol) always runs one.
#[tokio::test(flavor = "multi_thread")]
async fn lanes_are_the_larger_wish_and_never_with_yakk1() {
    let (port, _srv) = echo_server().await;
    let (_o1, _j1, addr, o, j) =
        tunnel_with_events(port, &["--lanes", "3"], &["--lanes", "2"]).await;
    assert_eq!(
        (o["lanes"].as_u64(), j["lanes"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(round_trip(&addr, b"three lanes").await, b"three lanes");
    let (_o2, _j2, _, o, j) = tunnel_with_events(
        port,
        &["--legacy-only", "--lanes", "4"],
        &["--legacy", "--lanes", "4"],
    )
    .await;
    assert_eq!(o["protocol"], "yakk/1");
    assert_eq!(
        (o["lanes"].as_u64(), j["lanes"].as_u64()),
        (Some(1), Some(1))
    );
}

/// A target that stops reading must not hold up the tunnel's other connections: with one
/// connection stalled under 64 MiB of unread data, new connections still echo promptly, in
/// both directions of the stall (joiner to owner and owner to joiner).
#[tokio::test(flavor = "multi_thread")]
async fn stalled_connection_does_not_block_the_others() {
    stall_case(&[]).await;
}

/// The same over three lanes: a stalled striped connection fills only its own channels.
#[tokio::test(flavor = "multi_thread")]
async fn stalled_connection_does_not_block_the_others_over_lanes() {
    stall_case(&["--lanes", "3"]).await;
}

async fn stall_case(joiner_extra: &[&str]) {
    // The target: the first connection is never read (and keeps sending 64 MiB towards the
    // joiner, which does not read either); every later connection is echoed.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (stalled, _) = l.accept().await.unwrap();
        let (_keep_reading_half, mut w) = stalled.into_split();
        tokio::spawn(async move {
            let chunk = vec![7u8; 64 << 10];
            for _ in 0..1024 {
                if w.write_all(&chunk).await.is_err() {
                    break;
                }
            }
        });
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    let (_owner, _joiner, addr) = tunnel(port, &[], joiner_extra).await;
    let stalled = TcpStream::connect(&addr).await.unwrap();
    let (_r, mut w) = stalled.into_split();
    let pusher = tokio::spawn(async move {
        let chunk = vec![9u8; 64 << 10];
        let mut sent = 0usize;
        while sent < (64 << 20) {
            if w.write_all(&chunk).await.is_err() {
                break;
            }
            sent += chunk.len();
        }
        sent
    });
    // Give the stall time to fill every buffer on the way.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for i in 0..3 {
        let data = pattern(256 << 10, 100 + i);
        let back = tokio::time::timeout(Duration::from_secs(10), round_trip(&addr, &data))
            .await
            .unwrap_or_else(|_| panic!("connection {i} stuck behind the stalled one"));
        assert!(back == data, "connection {i} came back intact");
    }
    assert!(!pusher.is_finished(), "the stalled connection is held back");
    pusher.abort();
}

/// Downloads through the tunnel that their client breaks off (a browser does this all the
/// time) leave the tunnel as quick as before. Each connection's first byte chooses: `D`, the
/// target sends without end; anything else, it echoes. A download broken off used to close its
/// data channel while the target's bytes were still on their way, which cost the WebRTC stack
/// that stream id for good (every later connection then waited 3 s for its channel) and the
/// bytes on their way, out of the connection's receive window (after a few, no connection
/// opened at all).
#[tokio::test(flavor = "multi_thread")]
async fn downloads_broken_off_leave_the_tunnel_whole() {
    broken_off_case(&[]).await;
}

/// The same over three lanes: a connection striped over several channels gives each up.
#[tokio::test(flavor = "multi_thread")]
async fn downloads_broken_off_leave_the_tunnel_whole_over_lanes() {
    broken_off_case(&["--lanes", "3"]).await;
}

async fn broken_off_case(joiner_extra: &[&str]) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut first = [0u8; 1];
                if s.read_exact(&mut first).await.is_err() {
                    return;
                }
                let (mut r, mut w) = s.split();
                if first[0] == b'D' {
                    let chunk = vec![5u8; 64 << 10];
                    while w.write_all(&chunk).await.is_ok() {}
                    return;
                }
                if w.write_all(&first).await.is_ok() {
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                }
                let _ = w.shutdown().await;
            });
        }
    });
    let (_owner, _joiner, addr) = tunnel(port, &[], joiner_extra).await;
    for round in 0..3 {
        let mut download = TcpStream::connect(&addr).await.unwrap();
        download.write_all(b"D").await.unwrap();
        let mut buf = vec![0u8; 256 << 10];
        let mut got = 0;
        while got < (4 << 20) {
            let n = download.read(&mut buf).await.unwrap();
            assert!(n > 0, "round {round}: the download ended after {got} bytes");
            got += n;
        }
        drop(download);
        for i in 0..3 {
            let mut data = b"E".to_vec();
            data.extend(pattern(64 << 10, 10 * round + i));
            let began = std::time::Instant::now();
            let back = tokio::time::timeout(Duration::from_secs(20), round_trip(&addr, &data))
                .await
                .unwrap_or_else(|_| panic!("round {round}, connection {i}: no answer in 20 s"));
            let took = began.elapsed();
            assert!(
                back == data,
                "round {round}, connection {i}: wrong data back"
            );
            assert!(
                took < Duration::from_millis(2500),
                "round {round}, connection {i} after a broken-off download took {took:?}"
            );
        }
    }
}

/// Every process's command line, joined: what `ps` shows to any user of the machine.
fn all_command_lines() -> String {
    let mut all = String::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(raw) = std::fs::read(entry.path().join("cmdline")) {
            all.push_str(&String::from_utf8_lossy(&raw).replace('\0', " "));
            all.push('\n');
        }
    }
    all
}

/// The owner prints a command for the other side; run as a shell would run it, it connects
/// (with a configured signalling server too, which it names), and the code appears in no
/// process's arguments. A code given as an argument draws a warning.
#[tokio::test(flavor = "multi_thread")]
async fn the_printed_command_works_and_keeps_the_code_out_of_ps() {
    let (port, _srv) = echo_server().await;
    let p = port.to_string();
    // The first owner's embedded signalling server is the "configured" one of the second.
    let mut first = Yakk::start(&["server", "-p", &p, "--json", "--ice-ip", "127.0.0.1"]);
    let code = first.event("code", 20).await["code"]
        .as_str()
        .unwrap()
        .to_string();
    let server = code.split_once('@').unwrap().1.to_string();
    let mut owner = Yakk::start(&[
        "server",
        "-p",
        &p,
        "--json",
        "--ice-ip",
        "127.0.0.1",
        "-s",
        &server,
    ]);
    let ev = owner.event("code", 20).await;
    let (code, command) = (
        ev["code"].as_str().unwrap().to_string(),
        ev["command"].as_str().unwrap().to_string(),
    );
    let password = code.split_once('-').unwrap().1.to_string();
    // What a shell makes of the line: an environment assignment, the program, its arguments.
    let words = shlex::split(&command).expect("the command is valid shell");
    let (assign, rest) = words.split_first().unwrap();
    let value = assign
        .strip_prefix("YAKK_CODE=")
        .unwrap_or_else(|| panic!("the code goes in YAKK_CODE: {command}"));
    assert_eq!(value, code);
    assert_eq!(rest[0], "yakk");
    assert!(
        !rest.iter().any(|w| w.contains(&password)),
        "the code is an argument: {command}"
    );
    assert!(
        rest.windows(2).any(|w| w[0] == "-s" && w[1] == server),
        "the command names the configured server: {command}"
    );
    // The joiner listens on a free port here, as the shared one is taken on this machine.
    let mut args: Vec<&str> = rest[1..].iter().map(String::as_str).collect();
    let at = args.iter().position(|a| *a == "-p").unwrap();
    args[at + 1] = "0";
    args.extend(["--json", "--ice-ip", "127.0.0.1"]);
    let mut joiner = Yakk::start_env(&args, &[("YAKK_CODE", &code)]);
    joiner.event("connected", 30).await;
    assert!(
        !all_command_lines().contains(&password),
        "the password shows in the process list"
    );
    let warnings = joiner.stderr.lock().unwrap().clone();
    assert!(!warnings.contains("(ps)"), "{warnings}");
    drop(joiner);

    // The same code as an argument: it works, and the joiner is warned.
    let mut args: Vec<&str> = vec!["client", "-p", "0", "--json", "--ice-ip", "127.0.0.1"];
    args.extend(["-s", &server, &code]);
    let mut joiner = Yakk::start(&args);
    let w = joiner.event("warning", 20).await;
    assert!(w["message"].as_str().unwrap().contains("ps"), "{w}");
    drop(first);
}

/// A second joiner with the code of a room whose one place is taken hears that the room is
/// full (someone else used the code first), with the exit code of a code that did not work (3).
#[tokio::test(flavor = "multi_thread")]
async fn a_full_room_is_said_and_exits_like_a_used_code() {
    let (port, _srv) = echo_server().await;
    let p = port.to_string();
    let mut owner = Yakk::start(&[
        "server",
        "-p",
        &p,
        "--json",
        "--ice-ip",
        "127.0.0.1",
        "--max-peers",
        "1",
    ]);
    let code = owner.event("code", 20).await["code"]
        .as_str()
        .unwrap()
        .to_string();
    let join = || {
        Yakk::start(&[
            "client",
            "-p",
            "0",
            "--json",
            "--ice-ip",
            "127.0.0.1",
            &code,
        ])
    };
    let mut first = join();
    first.event("connected", 30).await;
    let mut second = join();
    let err = second.event("error", 30).await;
    assert!(
        err["message"].as_str().unwrap().contains("room is full"),
        "{err}"
    );
    assert_eq!(second.exit_code(10).await, 3);
    // The first joiner's tunnel is untouched.
    let addr = first.event("listening", 10).await["address"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(round_trip(&addr, b"still here\n").await, b"still here\n");
}

/// Sharing a port where nothing listens: the owner says so at once (a warning: the service may
/// start later), and port 0 is refused as a usage error.
#[tokio::test(flavor = "multi_thread")]
async fn sharing_a_port_where_nothing_listens_warns() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let p = free.local_addr().unwrap().port().to_string();
    drop(free);
    let mut owner = Yakk::start(&["server", "-p", &p, "--json", "--ice-ip", "127.0.0.1"]);
    let code = owner.event("code", 20).await["code"]
        .as_str()
        .unwrap()
        .to_string();
    let warn = owner.event("warning", 10).await;
    let msg = warn["message"].as_str().unwrap();
    assert!(
        msg.contains(&format!("127.0.0.1:{p}")) && msg.contains("until something does"),
        "{warn}"
    );
    // A joiner's connection: both sides say what happened to it, not a bare empty reply.
    let mut joiner = Yakk::start(&[
        "client",
        "-p",
        "0",
        "--json",
        "--ice-ip",
        "127.0.0.1",
        &code,
    ]);
    let addr = joiner.event("listening", 30).await["address"]
        .as_str()
        .unwrap()
        .to_string();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut reply)).await;
    assert!(reply.is_empty(), "{reply:?}");
    let told = joiner.event("warning", 10).await;
    assert!(
        told["message"]
            .as_str()
            .unwrap()
            .contains("is the shared service running"),
        "{told}"
    );
    let warn = owner.event("warning", 10).await;
    assert!(
        warn["message"]
            .as_str()
            .unwrap()
            .contains(&format!("cannot connect to 127.0.0.1:{p}")),
        "{warn}"
    );
    let mut zero = Yakk::start(&["server", "-p", "0", "--json"]);
    assert_eq!(zero.exit_code(10).await, 2);
}

/// The configuration file names the rendezvous once: with it, both sides reach a standalone
/// `yakk signal` without `-s`, and the code is the short one (no server in it).
#[tokio::test(flavor = "multi_thread")]
async fn a_configuration_file_names_the_signalling_server() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let listen = format!("127.0.0.1:{port}");
    let _signal = Yakk::start(&["signal", "--listen", &listen]);
    let up = tokio::time::timeout(Duration::from_secs(15), async {
        while TcpStream::connect(&listen).await.is_err() {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await;
    assert!(up.is_ok(), "yakk signal is not listening on {listen}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(&file, format!("signal = \"ws://{listen}\"\n")).unwrap();
    let env = [("YAKK_CONFIG", file.to_str().unwrap())];
    let (echo, _srv) = echo_server().await;
    let p = echo.to_string();
    let mut owner = Yakk::start_env(
        &["server", "-p", &p, "--json", "--ice-ip", "127.0.0.1"],
        &env,
    );
    let code = owner.event("code", 20).await;
    let short = code["code"].as_str().unwrap().to_string();
    assert!(!short.contains('@'), "{code}");
    // The printed command still names the server, for a joiner without the same file.
    assert!(
        code["command"]
            .as_str()
            .unwrap()
            .contains(&format!(" -s ws://{listen}")),
        "{code}"
    );
    let mut joiner = Yakk::start_env(
        &[
            "client",
            "-p",
            "0",
            "--json",
            "--ice-ip",
            "127.0.0.1",
            &short,
        ],
        &env,
    );
    let addr = joiner.event("listening", 30).await["address"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(round_trip(&addr, b"configured\n").await, b"configured\n");

    // A mistake in the file is a usage error that names the file.
    std::fs::write(&file, "signall = \"typo\"\n").unwrap();
    let mut bad = Yakk::start_env(&["server", "-p", &p, "--json"], &env);
    let err = bad.event("error", 10).await;
    assert!(
        err["message"].as_str().unwrap().contains("config.toml"),
        "{err}"
    );
    assert_eq!(bad.exit_code(10).await, 2);
}
