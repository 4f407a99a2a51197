//! Loopback benchmark of yakk-transport (not a test): two peers in one process over
//! 127.0.0.1, SDP and candidates passed in memory.
//!
//! usage: cargo run --release -p yakk-transport --example transport_bench -- [MiB=256] [max_message=65536]
//!
//! Prints: setup time (create_offer → first stream open), MB/s through one stream and
//! through 8 streams, a plain loopback TCP copy of the same size as the baseline, and the
//! process's peak RSS (both peers together).

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use yakk_transport::{Channel, Peer, PeerEvent, TransportConfig};

type BoxErr = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), BoxErr> {
    let args: Vec<String> = std::env::args().collect();
    let mib: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(256);
    let max_message: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(65536);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(mib << 20, max_message))
}

fn mbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

async fn run(total: usize, max_message: usize) -> Result<(), BoxErr> {
    println!("bytes={total} max_message={max_message}");

    let tcp = tcp_copy(total).await?;
    println!("tcp loopback baseline: {:.0} MB/s", mbps(total, tcp));

    let mut cfg = TransportConfig::v2();
    cfg.max_message = max_message;
    cfg.ice_ips = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    let (a, a_ev) = Peer::new(cfg.clone()).await?;
    let (b, b_ev) = Peer::new(cfg).await?;
    tokio::spawn(trickle(a_ev, b.clone()));
    tokio::spawn(trickle(b_ev, a.clone()));

    let t0 = Instant::now();
    let offer = a.create_offer().await?;
    let answer = b.accept_offer(&offer).await?;
    a.accept_answer(&answer).await?;
    let (s_a, s_b) = tokio::join!(a.open_channel("bench0"), b.accept_channel());
    let setup = t0.elapsed();
    let (mut s_a, (_, s_b)) = (s_a?, s_b.ok_or("no stream")?);
    println!(
        "setup (offer → stream open): {:.1} ms",
        setup.as_secs_f64() * 1e3
    );
    s_a.write_all(b"warm").await?;
    // The 8 streams are opened before the first one closes: opening a channel right after
    // another closed can hit a stream-id reuse race in rtc 0.21.1 (see BENCHMARKS.md).
    let per = total / 8;
    let mut pairs = Vec::new();
    for i in 0..8 {
        let label = format!("bench{}", i + 1);
        let (s, r) = tokio::join!(a.open_channel(&label), b.accept_channel());
        pairs.push((s?, r.ok_or("no stream")?.1));
    }

    let t = Instant::now();
    let reader = tokio::spawn(drain(s_b, 4));
    pump(s_a, total).await?;
    let got = reader.await??;
    let one = t.elapsed();
    assert_eq!(got, total, "one stream: lost bytes");
    println!("1 stream:  {:.0} MB/s", mbps(total, one));

    let t = Instant::now();
    let mut tasks = Vec::new();
    for (s, r) in pairs {
        tasks.push(tokio::spawn(async move {
            pump(s, per).await?;
            Ok::<_, BoxErr>(())
        }));
        tasks.push(tokio::spawn(async move {
            let n = drain(r, 0).await?;
            if n != per {
                return Err(format!("8 streams: got {n} of {per}").into());
            }
            Ok(())
        }));
    }
    for task in tasks {
        task.await?.map_err(|e| e.to_string())?;
    }
    let eight = t.elapsed();
    println!("8 streams: {:.0} MB/s", mbps(per * 8, eight));
    println!("peak RSS (process, both peers): {:.1} MB", peak_rss_mb());
    println!(
        "SUMMARY MiB={} setup_ms={:.1} one_MBps={:.0} eight_MBps={:.0} tcp_MBps={:.0} peak_rss_MB={:.1}",
        total >> 20,
        setup.as_secs_f64() * 1e3,
        mbps(total, one),
        mbps(per * 8, eight),
        mbps(total, tcp),
        peak_rss_mb()
    );
    a.close().await;
    b.close().await;
    Ok(())
}

async fn trickle(mut events: tokio::sync::mpsc::Receiver<PeerEvent>, to: Peer) {
    while let Some(ev) = events.recv().await {
        if let PeerEvent::LocalCandidate(c) = ev {
            let _ = to.add_remote_candidate(c).await;
        }
    }
}

async fn pump(mut s: Channel, total: usize) -> std::io::Result<()> {
    let block = vec![0xA5u8; 256 * 1024];
    let mut sent = 0;
    while sent < total {
        let n = block.len().min(total - sent);
        s.write_all(&block[..n]).await?;
        sent += n;
    }
    s.shutdown().await?;
    // Keep the stream until the peer has read everything and closes its side.
    let mut sink = [0u8; 64];
    while s.read(&mut sink).await? > 0 {}
    Ok(())
}

/// Read to EOF; `skip` bytes of warm-up are not counted.
async fn drain(mut s: Channel, skip: usize) -> Result<usize, BoxErr> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0;
    loop {
        let k = s.read(&mut buf).await?;
        if k == 0 {
            break;
        }
        n += k;
    }
    s.shutdown().await?;
    Ok(n - skip)
}

async fn tcp_copy(total: usize) -> std::io::Result<Duration> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut n = 0;
        loop {
            let k = s.read(&mut buf).await?;
            if k == 0 {
                break;
            }
            n += k;
        }
        Ok::<_, std::io::Error>(n)
    });
    let t = Instant::now();
    let mut c = tokio::net::TcpStream::connect(addr).await?;
    let block = vec![0xA5u8; 256 * 1024];
    let mut sent = 0;
    while sent < total {
        let n = block.len().min(total - sent);
        c.write_all(&block[..n]).await?;
        sent += n;
    }
    c.shutdown().await?;
    let n = server.await.map_err(std::io::Error::other)??;
    assert_eq!(n, total);
    Ok(t.elapsed())
}
