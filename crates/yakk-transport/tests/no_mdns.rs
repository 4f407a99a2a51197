//! A peer connection binds no multicast DNS socket (UDP port 5353) and sends nothing to a
//! multicast address. Alone in its test binary: it looks at every socket of this process.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use yakk_transport::{IceCandidate, Peer, TransportConfig, TransportError};

/// The inodes of this process's sockets.
fn my_socket_inodes() -> HashSet<u64> {
    let mut inodes = HashSet::new();
    for entry in std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd") {
        let Ok(entry) = entry else { continue };
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy().into_owned();
        if let Some(n) = target
            .strip_prefix("socket:[")
            .and_then(|s| s.strip_suffix(']'))
            .and_then(|s| s.parse().ok())
        {
            inodes.insert(n);
        }
    }
    inodes
}

/// (local address in /proc's hex form, local port) of every UDP socket of this process.
fn my_udp_sockets() -> Vec<(String, u16)> {
    let mine = my_socket_inodes();
    let mut found = Vec::new();
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(inode)) = (fields.get(1), fields.get(9)) else {
                continue;
            };
            let Ok(inode) = inode.parse::<u64>() else {
                continue;
            };
            if !mine.contains(&inode) {
                continue;
            }
            let Some((addr, port)) = local.rsplit_once(':') else {
                continue;
            };
            let port = u16::from_str_radix(port, 16).expect("hex port");
            found.push((addr.to_string(), port));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_socket_on_the_mdns_port_and_no_multicast_candidates() {
    let cfg = common::loopback(TransportConfig::v2());
    let p = common::connect(cfg.clone(), cfg).await;
    // The connection carries data, so every socket it needs is there.
    let (mut a, mut b) = tokio::time::timeout(Duration::from_secs(10), async {
        let a = p.a.open_channel("DataConn1").await.expect("open");
        let (_, b) = p.b.accept_channel().await.expect("accept");
        (a, b)
    })
    .await
    .expect("stream within 10 s");
    a.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), b.read_exact(&mut buf))
        .await
        .expect("echo within 10 s")
        .unwrap();
    assert_eq!(&buf, b"ping");

    let udp = my_udp_sockets();
    // The peers' own ICE sockets are seen (on 127.0.0.1, "0100007F"): the check looks at the
    // right sockets.
    assert!(
        udp.iter().any(|(addr, _)| addr == "0100007F"),
        "no UDP socket of this process on 127.0.0.1 found: {udp:?}"
    );
    let mdns: Vec<_> = udp.iter().filter(|(_, port)| *port == 5353).collect();
    assert!(
        mdns.is_empty(),
        "a socket of this process is bound to the mDNS port 5353: {mdns:?} (all: {udp:?})"
    );

    // A candidate naming a multicast, broadcast or unspecified address is refused: nothing is
    // sent there, whatever the peer (or a server advertising it) says.
    for addr in [
        "224.0.0.251 5353",
        "239.255.255.250 1900",
        "255.255.255.255 9",
        "0.0.0.0 9",
        "ff02::fb 5353",
        "::ffff:224.0.0.251 5353",
    ] {
        let c = IceCandidate {
            candidate: format!("candidate:1 1 udp 2130706431 {addr} typ host"),
            sdp_mid: Some("0".into()),
            sdp_mline_index: Some(0),
            username_fragment: None,
        };
        let r = p.a.add_remote_candidate(c).await;
        assert!(
            matches!(r, Err(TransportError::BadCandidate(_))),
            "{addr}: {r:?}"
        );
    }
    // A unicast one still goes through.
    let ok = IceCandidate {
        candidate: "candidate:2 1 udp 2130706431 127.0.0.1 9 typ host".into(),
        sdp_mid: Some("0".into()),
        sdp_mline_index: Some(0),
        username_fragment: None,
    };
    p.a.add_remote_candidate(ok)
        .await
        .expect("unicast candidate");
    drop((a, b));
    close(p.a).await;
    close(p.b).await;
}

async fn close(p: Peer) {
    let _ = tokio::time::timeout(Duration::from_secs(5), p.close()).await;
}
