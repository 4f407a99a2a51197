//! End-to-end tests of the transport: two peers, real UDP over 127.0.0.1.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{connect, loopback, pattern};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;
use yakk_transport::{Channel, Disconnect, PathKind, PeerEvent, TransportConfig};

fn v2() -> TransportConfig {
    loopback(TransportConfig::v2())
}

fn v1() -> TransportConfig {
    loopback(TransportConfig::v1())
}

const T: Duration = Duration::from_secs(60);

async fn open_pair(p: &common::Pair, label: &str) -> (Channel, Channel) {
    let (opened, accepted) = tokio::join!(p.a.open_channel(label), p.b.accept_channel());
    let (got_label, b) = accepted.expect("accepted stream");
    assert_eq!(got_label, label);
    (opened.expect("open stream"), b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_and_echo() {
    timeout(T, async {
        let p = connect(v2(), v2()).await;
        assert_eq!(p.a_path.kind, PathKind::Host);
        assert!(p.a_path.local.starts_with("127.0.0.1:"), "{:?}", p.a_path);
        assert!(p.b_path.local.starts_with("127.0.0.1:"), "{:?}", p.b_path);
        let (mut a, b) = open_pair(&p, "DataConn1").await;
        let echo = tokio::spawn(async move {
            let (mut r, mut w) = tokio::io::split(b);
            tokio::io::copy(&mut r, &mut w).await.unwrap();
            w.shutdown().await.unwrap();
        });
        let msg = b"hello through a data channel".repeat(1000);
        a.write_all(&msg).await.unwrap();
        a.shutdown().await.unwrap();
        let mut back = Vec::new();
        a.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, msg);
        echo.await.unwrap();
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_v1_closes_on_shutdown() {
    timeout(T, async {
        let p = connect(v1(), v1()).await;
        let (mut a, mut b) = open_pair(&p, "DataConn1").await;
        let msg = pattern(1, 100_000);
        a.write_all(&msg).await.unwrap();
        // yakk/1 has no half-close: shutdown closes the channel once the data is out.
        a.shutdown().await.unwrap();
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), msg.len());
        assert!(got == msg);
        assert_eq!(b.largest_message_received(), 4096);
        // The channel is closed: the other way is gone too.
        let mut buf = [0u8; 16];
        assert_eq!(a.read(&mut buf).await.unwrap(), 0);
    })
    .await
    .expect("test timed out");
}

async fn send_hashed(mut w: impl AsyncWriteExt + Unpin, seed: u64, total: usize) -> [u8; 32] {
    let mut h = Sha256::new();
    let block = pattern(seed, 1 << 20);
    let mut sent = 0;
    while sent < total {
        let n = block.len().min(total - sent);
        w.write_all(&block[..n]).await.unwrap();
        h.update(&block[..n]);
        sent += n;
    }
    w.shutdown().await.unwrap();
    h.finalize().into()
}

async fn recv_hashed(mut r: impl AsyncReadExt + Unpin) -> ([u8; 32], usize) {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0;
    loop {
        let n = r.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        total += n;
    }
    (h.finalize().into(), total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_mib_both_ways_at_once() {
    const N: usize = 64 << 20;
    timeout(Duration::from_secs(240), async {
        let p = connect(v2(), v2()).await;
        let (a, b) = open_pair(&p, "bulk").await;
        let (ar, aw) = tokio::io::split(a);
        let (br, bw) = tokio::io::split(b);
        let (sa, sb, (ra, na), (rb, nb)) = tokio::join!(
            tokio::spawn(send_hashed(aw, 7, N)),
            tokio::spawn(send_hashed(bw, 8, N)),
            async { tokio::spawn(recv_hashed(br)).await.unwrap() },
            async { tokio::spawn(recv_hashed(ar)).await.unwrap() },
        );
        assert_eq!(na, N);
        assert_eq!(nb, N);
        assert_eq!(sa.unwrap(), ra, "a -> b corrupted");
        assert_eq!(sb.unwrap(), rb, "b -> a corrupted");
    })
    .await
    .expect("test timed out");
}

/// Writes of every size, a small one first: the sender must use whatever room the peer's
/// window leaves, or it waits for room for a whole message while the receiver waits for more
/// data before granting again (seen with a 2 KiB write followed by 64 KiB ones).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_of_every_size_pass_the_window() {
    timeout(T, async {
        let p = connect(v2(), v2()).await;
        let (a, b) = open_pair(&p, "sizes").await;
        let data = pattern(11, 8 << 20);
        let sender = {
            let data = data.clone();
            tokio::spawn(async move {
                let mut a = a;
                let sizes = [2048, 65536, 1, 300, 65535, 4096, 100_000, 7];
                let (mut at, mut i) = (0, 0);
                while at < data.len() {
                    let n = sizes[i % sizes.len()].min(data.len() - at);
                    a.write_all(&data[at..at + n]).await.unwrap();
                    at += n;
                    i += 1;
                }
                a.shutdown().await.unwrap();
                a
            })
        };
        let mut b = b;
        let mut got = Vec::new();
        // A reader taking small bites, as the forwarder does when idle.
        let mut buf = vec![0u8; 2048];
        loop {
            let n = b.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got.len(), data.len());
        assert!(got == data, "the stream came through intact");
        drop(sender.await.unwrap());
    })
    .await
    .expect("test timed out");
}

/// Toward a yakk/2 peer that does not announce flow control (an earlier yakk): streams work
/// as before, half-close included, and no grant is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_flow_control_streams_work_as_before() {
    timeout(T, async {
        let p = common::connect_without_flow(v2(), v2()).await;
        let (a, b) = open_pair(&p, "old").await;
        let echo = tokio::spawn(async move {
            let (mut r, mut w) = tokio::io::split(b);
            tokio::io::copy(&mut r, &mut w).await.unwrap();
            w.shutdown().await.unwrap();
        });
        let data = pattern(31, 3 << 20);
        let (mut ar, mut aw) = tokio::io::split(a);
        let to_send = data.clone();
        let writer = tokio::spawn(async move {
            aw.write_all(&to_send).await.unwrap();
            aw.shutdown().await.unwrap();
        });
        let mut back = Vec::new();
        ar.read_to_end(&mut back).await.unwrap();
        writer.await.unwrap();
        assert!(back == data);
        echo.await.unwrap();
    })
    .await
    .expect("test timed out");
}

/// Echoes every stream the peer opens, until the connection ends.
fn serve_echo(peer: yakk_transport::Peer) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some((_, s)) = peer.accept_channel().await {
            tokio::spawn(async move {
                let (mut r, mut w) = tokio::io::split(s);
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    })
}

/// Opens a channel, sends `data`, shuts down its write side and reads until the end;
/// `phase` becomes "open" once the channel is open.
async fn echo_cycle(
    peer: yakk_transport::Peer,
    label: &str,
    data: Vec<u8>,
    phase: Arc<Mutex<&'static str>>,
) -> Result<Vec<u8>, String> {
    let s = peer
        .open_channel(label)
        .await
        .map_err(|e| format!("open: {e}"))?;
    *phase.lock().unwrap() = "open";
    let (mut r, mut w) = tokio::io::split(s);
    let writer = tokio::spawn(async move {
        w.write_all(&data).await?;
        w.shutdown().await
    });
    let mut back = Vec::new();
    r.read_to_end(&mut back)
        .await
        .map_err(|e| format!("read: {e}"))?;
    writer
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("write: {e}"))?;
    Ok(back)
}

/// Channels opened one after another, each echoed and finished before the next, so stream
/// ids are freed and handed out again all the time. rtc 0.21.1 frees an id before its SCTP
/// stream reset completes; before the close handshake (docs/yakk2.md) a run like this stalled
/// within the first five channels, and before the hold-back of channels opened right after a
/// peer close about one channel in a thousand failed. An open the stack loses is retried
/// after 3 s: on a loaded machine (CI building beside the tests) a few of 200 channels take
/// that long, so each channel has 10 s, those slow ones are counted and reported, and the
/// test fails at the third channel that fails or stalls for good, or with more than 10 slow
/// ones. A stream id the stack loses for good makes every later channel slow: on one CPU
/// (`taskset -c 0`) that happened in about half the runs while a reader that dropped its
/// stream at its end could close it ahead of the peer's closing marker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_open_and_close_one_after_another() {
    const CHANNELS: u64 = 200;
    const ALLOWED_FAILURES: usize = 2;
    // What the run has reached, so that a run cut short by the overall limit says where.
    #[derive(Debug, Default)]
    struct Progress {
        channel: u64,
        phase: &'static str,
        failures: Vec<String>,
        slow: Vec<(u64, Duration)>,
    }
    let progress = Arc::new(Mutex::new(Progress::default()));
    let seen = progress.clone();
    let run = timeout(Duration::from_secs(240), async move {
        seen.lock().unwrap().phase = "connecting";
        let p = connect(v2(), v2()).await;
        let server = serve_echo(p.b.clone());
        for i in 0..CHANNELS {
            let data = pattern(100 + i, 100_000);
            let phase = Arc::new(Mutex::new("opening"));
            {
                let mut s = seen.lock().unwrap();
                s.channel = i;
                s.phase = "opening";
            }
            let began = std::time::Instant::now();
            let cycle = timeout(
                Duration::from_secs(10),
                echo_cycle(p.a.clone(), "seq", data.clone(), phase.clone()),
            )
            .await;
            let took = began.elapsed();
            let mut s = seen.lock().unwrap();
            if took >= Duration::from_secs(3) {
                s.slow.push((i, took));
            }
            let phase = *phase.lock().unwrap();
            match cycle {
                Ok(Ok(back)) if back == data => {}
                Ok(Ok(back)) => s.failures.push(format!("{i}: {} bytes back", back.len())),
                Ok(Err(e)) => s.failures.push(format!("{i}: {e}")),
                Err(_) => s.failures.push(format!("{i}: timed out ({phase})")),
            }
            assert!(
                s.failures.len() <= ALLOWED_FAILURES,
                "too many failed channels: {:?}",
                s.failures
            );
        }
        server.abort();
    })
    .await;
    let progress = progress.lock().unwrap();
    assert!(run.is_ok(), "test timed out: {progress:?}");
    assert!(
        progress.slow.len() <= 10,
        "{} channels took 3 s or more: {:?}",
        progress.slow.len(),
        progress.slow
    );
    eprintln!(
        "{CHANNELS} channels one after another, failures: {:?}, 3 s or slower: {:?}",
        progress.failures, progress.slow
    );
}

/// Many short connections at once, as a browser or a parallel client makes them through a
/// tunnel: channels keep closing while others open, so new channels keep landing on stream
/// ids the peer has just reset. Every one must carry its data intact.
#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_short_channels_all_succeed() {
    const ROUNDS: u64 = 3;
    const CHANNELS: u64 = 200;
    timeout(Duration::from_secs(180), async {
        let p = connect(v2(), v2()).await;
        let server = serve_echo(p.b.clone());
        let mut failures = Vec::new();
        for round in 0..ROUNDS {
            let mut tasks = Vec::new();
            for i in 0..CHANNELS {
                let a = p.a.clone();
                let data = pattern(round * CHANNELS + i, 20_000 + i as usize * 37);
                tasks.push(tokio::spawn(async move {
                    let expected = data.clone();
                    let phase = Arc::new(Mutex::new("opening"));
                    let cycle = timeout(
                        Duration::from_secs(45),
                        echo_cycle(a, "burst", data, phase.clone()),
                    )
                    .await;
                    match cycle {
                        Ok(Ok(back)) if back == expected => None,
                        Ok(Ok(back)) => Some(format!("{round}/{i}: {} bytes back", back.len())),
                        Ok(Err(e)) => Some(format!("{round}/{i}: {e}")),
                        Err(_) => Some(format!(
                            "{round}/{i}: timed out ({})",
                            phase.lock().unwrap()
                        )),
                    }
                }));
            }
            for t in tasks {
                if let Some(f) = t.await.expect("task") {
                    failures.push(f);
                }
            }
        }
        server.abort();
        assert!(
            failures.is_empty(),
            "{} of {} channels failed: {failures:?}",
            failures.len(),
            ROUNDS * CHANNELS
        );
    })
    .await
    .expect("test timed out");
}

/// A peer that ignores the window (here: one without flow control talking to one with it,
/// which is what a misbehaving peer looks like) gets the stream reset once it sends past its
/// credit; the receiver keeps no more than the window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_past_its_window_gets_the_stream_reset() {
    timeout(T, async {
        let p = common::connect_without_flow(v2(), v2()).await;
        // Only b enforces windows: a sends as if there were none.
        p.b.set_flow_control(true);
        let (mut a, mut b) = open_pair(&p, "greedy").await;
        let data = pattern(41, 8 << 20);
        // b does not read while a pushes far more than b's initial window.
        let pushed = timeout(Duration::from_secs(20), a.write_all(&data)).await;
        assert!(
            matches!(pushed, Ok(Err(_))),
            "the sender's writes fail once its stream is reset: {pushed:?}"
        );
        let mut got = Vec::new();
        timeout(Duration::from_secs(10), b.read_to_end(&mut got))
            .await
            .expect("the reset stream ends for its reader")
            .expect("ends cleanly");
        assert!(
            got.len() <= 64 * 1024,
            "the receiver kept only the window: {} bytes",
            got.len()
        );
        assert!(got[..] == data[..got.len()], "what was kept is intact");
    })
    .await
    .expect("test timed out");
}

/// A stream whose reader stopped must not hold up the others: with flow control the
/// stalled stream's sender stops at its window, and the connection keeps draining.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stream_does_not_stall_the_others() {
    timeout(T, async {
        let p = connect(v2(), v2()).await;
        let (mut stalled_w, _stalled_r) = open_pair(&p, "stalled").await;
        let pushed = tokio::spawn(async move {
            let chunk = vec![5u8; 64 << 10];
            let mut n = 0usize;
            // Far more than every buffer on the way holds.
            while n < (256 << 20) {
                if stalled_w.write_all(&chunk).await.is_err() {
                    break;
                }
                n += chunk.len();
            }
            n
        });
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut live = Vec::new();
        for i in 0..3u64 {
            let (mut a, mut b) = timeout(Duration::from_secs(10), open_pair(&p, "live"))
                .await
                .unwrap_or_else(|_| panic!("stream {i} could not be opened"));
            let data = pattern(20 + i, 1 << 20);
            let to_send = data.clone();
            let writer = tokio::spawn(async move { a.write_all(&to_send).await.map(|_| a) });
            let mut got = Vec::new();
            let mut buf = vec![0u8; 64 << 10];
            let read = timeout(Duration::from_secs(20), async {
                while got.len() < data.len() {
                    let n = b.read(&mut buf).await.unwrap();
                    assert!(n > 0, "early EOF");
                    got.extend_from_slice(&buf[..n]);
                }
            })
            .await;
            assert!(
                read.is_ok(),
                "stream {i} stuck behind the stalled one: {} of {} bytes arrived",
                got.len(),
                data.len()
            );
            assert!(got == data);
            // Kept open: closing a channel and opening the next at once can hit the stack's
            // stream-id reuse race (see the crate docs), which is not what this tests.
            live.push((writer.await.unwrap().unwrap(), b));
        }
        assert!(
            !pushed.is_finished(),
            "the stalled stream's writer is held back"
        );
        pushed.abort();
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_keeps_the_other_direction() {
    timeout(T, async {
        let p = connect(v2(), v2()).await;
        let (a, b) = open_pair(&p, "DataConn1").await;
        let server = tokio::spawn(async move {
            let mut b = b;
            let mut req = Vec::new();
            b.read_to_end(&mut req).await.unwrap(); // EOF from a's shutdown
            assert_eq!(req, b"GET /yakkfilesendreceive");
            let reply = pattern(3, 3 << 20);
            b.write_all(&reply).await.unwrap();
            b.shutdown().await.unwrap();
            reply
        });
        let mut a = a;
        a.write_all(b"GET /yakkfilesendreceive").await.unwrap();
        a.shutdown().await.unwrap();
        let mut got = Vec::new();
        a.read_to_end(&mut got).await.unwrap();
        let reply = server.await.unwrap();
        assert_eq!(got.len(), reply.len());
        assert!(got == reply);
        // Writing after shutdown is refused.
        assert!(a.write_all(b"more").await.is_err());
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_streams_at_once() {
    let streams: u64 = std::env::var("YAKK_TEST_STREAMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    const LEN: usize = 96 * 1024;
    timeout(Duration::from_secs(120), async {
        let p = connect(v2(), v2()).await;
        let b = p.b.clone();
        let server = tokio::spawn(async move {
            let mut tasks = Vec::new();
            for _ in 0..streams {
                let (label, mut s) = b.accept_channel().await.expect("accept");
                tasks.push(tokio::spawn(async move {
                    let seed: u64 = label.trim_start_matches("s").parse().unwrap();
                    let mut got = Vec::new();
                    s.read_to_end(&mut got).await.unwrap();
                    assert!(got == pattern(seed, LEN), "stream {seed} corrupted");
                    let digest = Sha256::digest(&got);
                    s.write_all(&digest).await.unwrap();
                    s.shutdown().await.unwrap();
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        });
        let mut clients = Vec::new();
        for i in 0..streams {
            let a = p.a.clone();
            clients.push(tokio::spawn(async move {
                let mut s = a.open_channel(&format!("s{i}")).await.unwrap();
                let data = pattern(i, LEN);
                s.write_all(&data).await.unwrap();
                s.shutdown().await.unwrap();
                let mut digest = Vec::new();
                s.read_to_end(&mut digest).await.unwrap();
                assert_eq!(digest, Sha256::digest(&data).to_vec(), "stream {i} digest");
            }));
        }
        for c in clients {
            c.await.unwrap();
        }
        server.await.unwrap();
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_reader_bounds_the_sender() {
    timeout(T, async {
        let p = connect(v2(), v2()).await;
        let (mut a, mut b) = open_pair(&p, "stall").await;
        let block = vec![0x5Au8; 64 * 1024];
        let mut accepted = 0usize;
        // Write until the writer has been stuck for a second: the reader is not reading.
        for _ in 0..100_000 {
            match timeout(Duration::from_secs(1), a.write_all(&block)).await {
                Ok(r) => {
                    r.unwrap();
                    accepted += block.len();
                }
                Err(_) => break,
            }
        }
        // Queues: the stream's, the channel send buffer (3 MiB), SCTP's window (3 MiB), the
        // stack's per-channel event queue and the reader's. Whatever the sender tries, no more
        // (about 19 MiB with the former 1 MiB windows, about 42 MiB with 3 MiB ones).
        assert!(
            accepted < 64 << 20,
            "sender accepted {accepted} bytes with a stalled reader"
        );
        // Resume reading: everything accepted arrives, and more can be sent.
        let reader = tokio::spawn(async move {
            let mut total = 0usize;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = b.read(&mut buf).await.unwrap();
                if n == 0 {
                    break total;
                }
                total += n;
            }
        });
        a.write_all(&block).await.unwrap();
        a.shutdown().await.unwrap();
        let total = reader.await.unwrap();
        assert_eq!(total, accepted + block.len());
        eprintln!("accepted while stalled: {} KiB", accepted / 1024);
    })
    .await
    .expect("test timed out");
}

/// yakk/1 has no flow control: the reader's queue takes up to 16 MiB (so that a reader a
/// little behind does not stop the stack's delivery to every channel), and no more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_flow_control_a_stalled_reader_still_bounds_the_sender() {
    timeout(T, async {
        let p = connect(v1(), v1()).await;
        let (mut a, mut b) = open_pair(&p, "DataConn1").await;
        let data = pattern(77, 40 << 20);
        let mut accepted = 0usize;
        // One message per write (yakk/1 messages are 4096 bytes): a write cut short by the
        // timeout has queued nothing, so `accepted` is exact.
        for block in data.chunks(4096) {
            match timeout(Duration::from_secs(2), a.write_all(block)).await {
                Ok(r) => {
                    r.unwrap();
                    accepted += block.len();
                }
                Err(_) => break,
            }
        }
        // The reader's queue (16 MiB), the stack's event queue, SCTP's window and the send
        // buffer (3 MiB each): well under what is offered.
        assert!(
            accepted < 36 << 20,
            "sender accepted {accepted} bytes with a stalled reader"
        );
        // And the deep queue is used: more than the former 16 messages of 4 KiB plus the
        // stack's buffers.
        assert!(accepted > 16 << 20, "only {accepted} bytes queued");
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = b.read(&mut buf).await.unwrap();
                if n == 0 {
                    break got;
                }
                got.extend_from_slice(&buf[..n]);
                if got.len() == 40 << 20 {
                    break got;
                }
            }
        });
        a.write_all(&data[accepted..]).await.unwrap();
        let got = reader.await.unwrap();
        drop(a);
        assert!(
            got == data,
            "{} of {} bytes, intact: false",
            got.len(),
            data.len()
        );
        eprintln!("accepted while stalled (yakk/1): {} KiB", accepted / 1024);
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_peer_ends_streams_and_reports() {
    timeout(T, async {
        let mut p = connect(v2(), v2()).await;
        let (mut a, mut b) = open_pair(&p, "victim").await;
        a.write_all(&pattern(9, 200_000)).await.unwrap();
        let mut buf = vec![0u8; 200_000];
        b.read_exact(&mut buf).await.unwrap();
        // Peer a goes away mid-stream, without a goodbye from the application.
        let a_peer = p.a.clone();
        drop(p.a);
        drop(a_peer);
        drop(a);
        let t0 = std::time::Instant::now();
        let ended = timeout(Duration::from_secs(8), async {
            loop {
                match b.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(ended.is_ok(), "b's read did not end after a went away");
        let ev = timeout(Duration::from_secs(8), async {
            loop {
                match p.b_events.recv().await {
                    Some(PeerEvent::Disconnected(why)) => break Some(why),
                    Some(_) => continue,
                    None => break None,
                }
            }
        })
        .await
        .expect("no Disconnected event");
        assert!(ev.is_some(), "event stream ended without Disconnected");
        eprintln!("b noticed within {:?}: {ev:?}", t0.elapsed());
        assert!(b.write_all(b"x").await.is_err() || b.write_all(b"x").await.is_err());
        assert!(p.b.accept_channel().await.is_none());
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_peer_ends_streams_promptly() {
    timeout(T, async {
        let mut p = connect(v2(), v2()).await;
        let (_a, mut b) = open_pair(&p, "victim").await;
        let t0 = std::time::Instant::now();
        p.a.close().await;
        let mut buf = [0u8; 64];
        let r = timeout(Duration::from_secs(8), b.read(&mut buf)).await;
        assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "{r:?}");
        let mut why = None;
        while let Ok(Some(ev)) = timeout(Duration::from_secs(8), p.b_events.recv()).await {
            if let PeerEvent::Disconnected(w) = ev {
                why = Some(w);
                break;
            }
        }
        let took = t0.elapsed();
        eprintln!("b noticed the close within {took:?}: {why:?}");
        // A deliberate close is told, not found out when ICE consent fails seconds later,
        // and it is said as such (not as a lost network).
        assert_eq!(why, Some(Disconnect::PeerClosed));
        assert_eq!(
            Disconnect::PeerClosed.to_string(),
            "the peer closed the session"
        );
        assert!(took < Duration::from_secs(2), "b took {took:?}");
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_messages_never_exceed_4096() {
    timeout(T, async {
        // Sender speaks yakk/1; the receiver accepts up to 64 KiB, so it would see bigger
        // messages if the sender cut them bigger.
        let p = connect(v1(), v2()).await;
        let (mut a, mut b) = open_pair(&p, "DataConn1").await;
        let data = pattern(5, 2 << 20);
        let sender = tokio::spawn(async move {
            a.write_all(&data).await.unwrap();
            a.shutdown().await.unwrap();
            a
        });
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0usize;
        loop {
            let n = b.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            total += n;
        }
        let _a = sender.await.unwrap();
        assert_eq!(total, 2 << 20);
        assert_eq!(b.largest_message_received(), 4096, "largest message seen");
    })
    .await
    .expect("test timed out");
}

/// A peer's close must not overtake the channel's last messages (issue 18). The stack hands
/// out a channel's close ahead of the messages it has read but not yet delivered, and it holds
/// messages back while any reader on the connection is behind. So: stream A's reader stops
/// reading, enough for the stack to stop delivering to anyone; meanwhile stream B gets its data
/// and the peer closes it (yakk/1 closes a channel as its end of stream). B's reader must get
/// every byte before EOF, once A's reader reads again. Before the fix, B's reader saw the
/// close first and lost its data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_close_does_not_overtake_the_last_messages() {
    timeout(T, async {
        let p = connect(v1(), v1()).await;
        let (mut a_send, mut a_recv) = open_pair(&p, "DataConn1").await;
        let (mut b_send, mut b_recv) = open_pair(&p, "DataConn2").await;
        // A: enough 4096-byte messages to fill A's queues on the receiving side (the stream's
        // own and the stack's for the channel) and stop the stack's delivery, but few enough
        // that the stack still takes B's messages out of SCTP (so they wait, read, in the
        // stack, behind the close).
        let a_data = pattern(21, 300 * 4096);
        a_send.write_all(&a_data).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        // B: a hundred messages, then the end of the stream (a close, in yakk/1).
        let b_data = pattern(22, 100 * 4096);
        b_send.write_all(&b_data).await.unwrap();
        b_send.shutdown().await.unwrap();
        // Let the close arrive while A still holds up the stack.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let b_reader = tokio::spawn(async move {
            let mut got = Vec::new();
            b_recv.read_to_end(&mut got).await.unwrap();
            got
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut got_a = vec![0u8; a_data.len()];
        a_recv.read_exact(&mut got_a).await.unwrap();
        assert!(got_a == a_data, "stream A intact");
        let got_b = b_reader.await.unwrap();
        assert_eq!(got_b.len(), b_data.len(), "every byte of B before its EOF");
        assert!(got_b == b_data);
    })
    .await
    .expect("test timed out");
}

/// The side a channel is opened to speaks first, on many channels opened at once. The
/// opener must get every greeting at once, and must never be handed one of its own channels
/// as if the peer had opened it.
///
/// webrtc 0.21.1 registers a new channel's event queue only after creating it; when the
/// peer's acknowledgement is processed in between, the stack announces our channel as the
/// peer's and gives it the `OnOpen` (and the greeting, if it comes quickly). Before yakk
/// took such channels back (`OwnOpens`), the open waited 3 s, dropped the greeting and gave
/// up, and the opener's `accept_channel` returned its own channel. The race needs a busy
/// machine: this test meets it only now and then (with three busy loops beside it, about
/// one run in five), the lane tests (yakk-session `lanes.rs`) more often.
///
/// It also meets a fault of the stack's stream resets: a channel opened on the id of one the
/// peer had just closed was ended by the last reset of the old stream, and what the peer wrote
/// on its end reached the next channel given that id (`REUSE_GUARD` in
/// `src/connection/open.rs`). With the guard alone, about one run in 11 still had an open
/// that did not complete within 2 s; since the opener closes its channels
/// (`Peer::set_opener_closes`, on here as between two yakk peers), that last reset goes to
/// the acceptor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_may_speak_first_on_many_channels_opened_at_once() {
    const ROUNDS: usize = 4;
    const CHANNELS: usize = 150;
    timeout(Duration::from_secs(120), async {
        for round in 0..ROUNDS {
            let p = connect(v2(), v2()).await;
            let b = p.b.clone();
            let greeter = tokio::spawn(async move {
                while let Some((label, mut s)) = b.accept_channel().await {
                    tokio::spawn(async move {
                        if label == "bulk" {
                            let (mut r, mut w) = tokio::io::split(s);
                            let _ = tokio::io::copy(&mut r, &mut w).await;
                            return;
                        }
                        let _ = s.write_all(label.as_bytes()).await;
                        let _ = s.shutdown().await;
                        let mut rest = Vec::new();
                        let _ = s.read_to_end(&mut rest).await;
                    });
                }
            });
            // Traffic both ways on another channel keeps the stack's driver busy while the
            // channels open, as on a connection already carrying data.
            let bulk = p.a.open_channel("bulk").await.expect("open stream");
            let (mut bulk_r, mut bulk_w) = tokio::io::split(bulk);
            let bulk = tokio::spawn(async move {
                let chunk = pattern(7, 256 << 10);
                let writer = async {
                    for _ in 0..64 {
                        if bulk_w.write_all(&chunk).await.is_err() {
                            break;
                        }
                    }
                };
                let reader = async {
                    let mut sink = vec![0u8; 256 << 10];
                    while let Ok(n) = bulk_r.read(&mut sink).await {
                        if n == 0 {
                            break;
                        }
                    }
                };
                tokio::join!(writer, reader);
            });
            let tasks: Vec<_> = (0..CHANNELS)
                .map(|i| {
                    let a = p.a.clone();
                    tokio::spawn(async move {
                        let label = format!("greet-{round}-{i}");
                        let got = timeout(Duration::from_secs(2), async {
                            let mut s = a.open_channel(&label).await.map_err(|e| e.to_string())?;
                            let mut back = Vec::new();
                            s.read_to_end(&mut back).await.map_err(|e| e.to_string())?;
                            s.shutdown().await.map_err(|e| e.to_string())?;
                            Ok::<_, String>(back)
                        })
                        .await;
                        match got {
                            Ok(Ok(back)) if back == label.as_bytes() => None,
                            Ok(Ok(back)) => Some(format!("{label}: {} bytes back", back.len())),
                            Ok(Err(e)) => Some(format!("{label}: {e}")),
                            Err(_) => Some(format!("{label}: no greeting within 2 s")),
                        }
                    })
                })
                .collect();
            let mut failures = Vec::new();
            for t in tasks {
                failures.extend(t.await.expect("task"));
            }
            assert!(
                failures.is_empty(),
                "round {round}: {} of {CHANNELS} channels failed: {failures:?}",
                failures.len()
            );
            bulk.abort();
            let own = timeout(Duration::from_millis(300), p.a.accept_channel()).await;
            if let Ok(Some((label, _))) = own {
                panic!("round {round}: the opener was handed its own channel {label:?}");
            }
            greeter.abort();
        }
    })
    .await
    .expect("test timed out");
}

/// Accepts every channel the peer opens and writes to it until a write fails; sends that
/// error's kind on `ends`.
fn serve_endless(
    peer: yakk_transport::Peer,
    ends: tokio::sync::mpsc::UnboundedSender<std::io::ErrorKind>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some((_, mut s)) = peer.accept_channel().await {
            let ends = ends.clone();
            tokio::spawn(async move {
                let block = pattern(9, 64 << 10);
                let kind = loop {
                    if let Err(e) = s.write_all(&block).await {
                        break e.kind();
                    }
                };
                let _ = ends.send(kind);
            });
        }
    })
}

/// Reads `n` bytes or more from `s`.
async fn read_at_least(s: &mut Channel, n: usize) {
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0;
    while got < n {
        let k = s.read(&mut buf).await.expect("read");
        assert!(k > 0, "the stream ended after {got} bytes");
        got += k;
    }
}

/// A stream given up while the peer is still sending (a forwarded connection reset by its
/// client mid-download): the peer's writes fail soon, and the connection stays whole. Before
/// the close handshake covered it, the stream was closed at once; the peer's data still on
/// its way reached a closed stream, the stack never completed that stream's reset, and every
/// later open landed on its id: each took 3 s, and after a few such streams opens failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_given_up_mid_transfer_leaves_the_connection_whole() {
    timeout(Duration::from_secs(120), async {
        let p = connect(v2(), v2()).await;
        let (ends_tx, mut ends) = tokio::sync::mpsc::unbounded_channel();
        let server = serve_endless(p.b.clone(), ends_tx);
        for round in 0..3 {
            let mut s = p.a.open_channel("given up").await.expect("open");
            read_at_least(&mut s, 2 << 20).await;
            drop(s);
            let kind = timeout(Duration::from_secs(5), ends.recv())
                .await
                .unwrap_or_else(|_| panic!("round {round}: the peer's writes went on"))
                .expect("writer's end");
            assert_eq!(kind, std::io::ErrorKind::BrokenPipe, "round {round}");
            for i in 0..3 {
                let began = std::time::Instant::now();
                let mut s = p.a.open_channel("after").await.expect("open after");
                let took = began.elapsed();
                assert!(
                    took < Duration::from_secs(2),
                    "round {round}, open {i} after a stream was given up took {took:?}"
                );
                read_at_least(&mut s, 4 << 20).await;
                drop(s);
                timeout(Duration::from_secs(5), ends.recv())
                    .await
                    .expect("the peer's writes went on")
                    .expect("writer's end");
            }
        }
        server.abort();
    })
    .await
    .expect("test timed out");
}

/// Without flow control there is no close handshake: a stream given up while the peer
/// sends is closed at once, and a message of the peer's still on its way costs the stack
/// that stream id (see `a_stream_given_up_mid_transfer_leaves_the_connection_whole`). The
/// open that lands on the lost id is set aside for good, so that only that one open waits:
/// before, the attempt was closed, the id was free again and every later open waited 3 s
/// on it. The peer sends a little at a time here, so that an id is all that is lost (much
/// data left on a lost stream would take the connection's receive window with it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_stream_id_costs_one_open() {
    const ROUNDS: usize = 20;
    timeout(Duration::from_secs(240), async {
        let p = common::connect_without_flow(v2(), v2()).await;
        let peer = p.b.clone();
        let server = tokio::spawn(async move {
            while let Some((label, s)) = peer.accept_channel().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = tokio::io::split(s);
                    if label == "echo" {
                        let _ = tokio::io::copy(&mut r, &mut w).await;
                        let _ = w.shutdown().await;
                        return;
                    }
                    if label == "sink" {
                        let _ = tokio::io::copy(&mut r, &mut tokio::io::sink()).await;
                        let _ = w.shutdown().await;
                        return;
                    }
                    let block = pattern(9, 1000);
                    while w.write_all(&block).await.is_ok() {
                        tokio::time::sleep(Duration::from_micros(100)).await;
                    }
                });
            }
        });
        let mut lost = 0;
        for round in 0..ROUNDS {
            let mut s = p.a.open_channel("trickle").await.expect("open");
            read_at_least(&mut s, 20_000).await;
            // Bulk data toward the peer while the stream is given up: the peer's stack takes
            // a while to reach our close, and its messages keep coming meanwhile.
            let mut sink = p.a.open_channel("sink").await.expect("open sink");
            let bulk = tokio::spawn(async move {
                let block = pattern(3, 1 << 20);
                for _ in 0..8 {
                    sink.write_all(&block).await?;
                }
                sink.shutdown().await?;
                let mut rest = Vec::new();
                sink.read_to_end(&mut rest).await.map(|_| ())
            });
            tokio::time::sleep(Duration::from_millis(5)).await;
            drop(s);
            bulk.await.expect("bulk task").expect("bulk send");
            tokio::time::sleep(Duration::from_millis(50)).await;
            let mut slow = Vec::new();
            for i in 0..4 {
                let began = std::time::Instant::now();
                let data = pattern(i, 10_000);
                let phase = Arc::new(Mutex::new("opening"));
                let back = echo_cycle(p.a.clone(), "echo", data.clone(), phase)
                    .await
                    .expect("echo");
                assert!(back == data, "round {round}, echo {i}: wrong data back");
                let took = began.elapsed();
                if took >= Duration::from_millis(2500) {
                    slow.push((i, took));
                }
            }
            assert!(
                slow.len() <= 1,
                "round {round}: opens that waited: {slow:?}"
            );
            lost += slow.len();
            if lost >= 2 {
                break;
            }
        }
        eprintln!("stream ids lost: {lost}");
        assert!(
            lost > 0,
            "no stream id was lost in {ROUNDS} rounds: nothing was tested"
        );
        server.abort();
    })
    .await
    .expect("test timed out");
}

/// Toward a peer that asked for small bursts (the browser page), the sender hands the stack
/// messages of at most 8 KiB, which Chromium's small socket takes without drops (see
/// `SMALL_BURST_MESSAGE`); toward any other peer, messages of up to 64 KiB. Every byte arrives,
/// through the smaller send budget too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_toward_a_peer_asking_for_small_bursts_are_small() {
    timeout(T, async {
        for (small, largest) in [(true, 8 * 1024), (false, 64 * 1024)] {
            let p = connect(v2(), v2()).await;
            for peer in [&p.a, &p.b] {
                peer.set_flow_control(true);
            }
            p.a.set_small_bursts(small);
            let (a, mut b) = open_pair(&p, "DataConn1").await;
            let total = 4 << 20;
            let (sent, (got, n)) = tokio::join!(send_hashed(a, 31, total), recv_hashed(&mut b));
            assert_eq!((got, n), (sent, total), "small bursts: {small}");
            assert_eq!(
                b.largest_message_received(),
                largest,
                "small bursts: {small}"
            );
        }
    })
    .await
    .expect("test timed out");
}
