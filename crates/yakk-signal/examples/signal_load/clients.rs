//! The load: WebSocket pairs in rooms, and the generators that relay timestamped messages.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::SinkExt;
use futures::stream::{SplitSink, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use yakk_wire::Envelope;

use super::*;

pub(crate) async fn connect(src: IpAddr, addr: SocketAddr, query: &str) -> anyhow::Result<Ws> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(src, 0))?;
    let tcp = sock.connect(addr).await?;
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let (ws, _) = tokio_tungstenite::client_async_with_config(
        format!("ws://{addr}/ws/?{query}"),
        tcp,
        Some(config),
    )
    .await?;
    Ok(ws)
}

pub(crate) async fn recv_envelope(ws: &mut Ws) -> anyhow::Result<Envelope> {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => return Ok(Envelope::parse(&b, 1 << 20)?),
            Ok(Some(Ok(Message::Text(t)))) => return Ok(Envelope::parse(t.as_bytes(), 1 << 20)?),
            Ok(Some(Ok(_))) => continue,
            Ok(other) => bail!("socket ended: {other:?}"),
            Err(_) => bail!("no reply within 30 s"),
        }
    }
}

/// One room: its owner and joiner sockets, and whether they are on different instances.
pub(crate) async fn open_pair(
    i: usize,
    servers: &[SocketAddr],
    sources: u8,
) -> anyhow::Result<(Ws, Ws, bool)> {
    let src = |k: usize| IpAddr::from([127, 0, 0, 1 + (k % sources as usize) as u8]);
    let n = servers.len();
    let owner_at = i % n;
    let joiner_at = if n > 1 && i % 2 == 1 {
        (owner_at + 1) % n
    } else {
        owner_at
    };
    let mut owner = connect(src(2 * i), servers[owner_at], "").await?;
    let created = recv_envelope(&mut owner).await?;
    if created.msg_type != yakk_wire::msg::ROOM_CREATED {
        bail!("create refused: {created:?}");
    }
    let query = format!("roomID={}", created.payload);
    let mut joiner = connect(src(2 * i + 1), servers[joiner_at], &query).await?;
    let joined = recv_envelope(&mut joiner).await?;
    if joined.msg_type != yakk_wire::msg::ROOM_JOINED {
        bail!("join refused: {joined:?}");
    }
    Ok((owner, joiner, owner_at != joiner_at))
}

/// The rooms one generator opens: pair indices `i` with `i mod of == part`, so that every
/// generator has the same mix of rooms within one instance and across instances.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Share {
    pub(crate) part: usize,
    pub(crate) of: usize,
}

/// What one generator measured; the generators' tallies add up with `merge`.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Tally {
    pub(crate) held: usize,
    pub(crate) failures: usize,
    pub(crate) open_secs: f64,
    pub(crate) sent: u64,
    pub(crate) send_errors: u64,
    pub(crate) received: u64,
    pub(crate) send_secs: f64,
    pub(crate) recv_secs: f64,
    /// Relay latencies in microseconds, within one instance and across instances: every
    /// sample, so that the percentiles are those of all the generators' messages together.
    pub(crate) latencies: Vec<u64>,
    pub(crate) cross_latencies: Vec<u64>,
}

impl Tally {
    /// Adds another generator's figures; the generators ran at the same time, so times are
    /// the longest.
    pub(crate) fn merge(&mut self, other: Tally) {
        self.held += other.held;
        self.failures += other.failures;
        self.open_secs = self.open_secs.max(other.open_secs);
        self.sent += other.sent;
        self.send_errors += other.send_errors;
        self.received += other.received;
        self.send_secs = self.send_secs.max(other.send_secs);
        self.recv_secs = self.recv_secs.max(other.recv_secs);
        self.latencies.extend(other.latencies);
        self.cross_latencies.extend(other.cross_latencies);
    }
}

/// One generator's open rooms: the joiners' sinks (they send) and tasks reading every socket.
pub(crate) struct Clients {
    pub(crate) sinks: Vec<SplitSink<Ws, Message>>,
    pub(crate) readers: tokio::task::JoinSet<()>,
    pub(crate) epoch: Instant,
    // Latencies within one instance, and across instances.
    pub(crate) latencies: Arc<Mutex<Vec<u64>>>,
    pub(crate) cross_latencies: Arc<Mutex<Vec<u64>>>,
    pub(crate) received: Arc<AtomicU64>,
    pub(crate) tally: Tally,
}

/// Opens and holds this generator's share of the rooms.
pub(crate) async fn open_clients(args: &Args, servers: &[SocketAddr], share: Share) -> Clients {
    let pairs = args.connections / 2;
    let t0 = Instant::now();
    let results: Vec<anyhow::Result<(Ws, Ws, bool)>> =
        futures::stream::iter((share.part..pairs).step_by(share.of))
            .map(|i| open_pair(i, servers, args.sources))
            .buffer_unordered((args.parallel / share.of).max(1))
            .collect()
            .await;
    let open_time = t0.elapsed();
    let mut sinks: Vec<SplitSink<Ws, Message>> = Vec::with_capacity(results.len());
    let mut failures = 0usize;
    let epoch = Instant::now();
    let latencies = Arc::new(Mutex::new(Vec::<u64>::new()));
    let cross_latencies = Arc::new(Mutex::new(Vec::<u64>::new()));
    let received = Arc::new(AtomicU64::new(0));
    let mut readers = tokio::task::JoinSet::new();
    for r in results {
        match r {
            Ok((owner, joiner, cross)) => {
                let (owner_sink, mut owner_stream) = owner.split();
                let (joiner_sink, mut joiner_stream) = joiner.split();
                sinks.push(joiner_sink);
                let lat = if cross {
                    cross_latencies.clone()
                } else {
                    latencies.clone()
                };
                let rec = received.clone();
                readers.spawn(async move {
                    let _keep = owner_sink;
                    while let Some(Ok(m)) = owner_stream.next().await {
                        let bytes = match m {
                            Message::Binary(b) => b,
                            Message::Text(t) => t.into(),
                            _ => continue,
                        };
                        if let Ok(e) = Envelope::parse(&bytes, 1 << 20)
                            && let Some((stamp, _)) = e.payload.split_once(' ')
                            && let Ok(sent_ns) = stamp.parse::<u64>()
                        {
                            let now_ns = epoch.elapsed().as_nanos() as u64;
                            lat.lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(now_ns.saturating_sub(sent_ns) / 1000);
                            rec.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
                // Joiners must keep reading so that they answer the server's pings.
                readers.spawn(async move { while let Some(Ok(_)) = joiner_stream.next().await {} });
            }
            Err(e) => {
                if failures < 5 {
                    eprintln!("connection failed: {e:#}");
                }
                failures += 1;
            }
        }
    }
    let tally = Tally {
        held: sinks.len() * 2,
        failures,
        open_secs: open_time.as_secs_f64(),
        ..Tally::default()
    };
    Clients {
        sinks,
        readers,
        epoch,
        latencies,
        cross_latencies,
        received,
        tally,
    }
}

impl Clients {
    /// Relays `total` messages at `rate` per second, round robin over the rooms, waits up to
    /// 5 s for the last ones, and returns the tally with the latencies so far.
    pub(crate) async fn relay(&mut self, rate: f64, total: u64, payload: usize) -> Tally {
        let filler = "x".repeat(payload);
        let mut sent = 0u64;
        let mut send_errors = 0u64;
        let start = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        if !self.sinks.is_empty() {
            while sent < total {
                tick.tick().await;
                let due = ((start.elapsed().as_secs_f64() * rate) as u64).min(total);
                while sent < due {
                    let k = (sent as usize) % self.sinks.len();
                    let stamp = self.epoch.elapsed().as_nanos();
                    let e = Envelope::new("YAKKMSG_LOAD", format!("{stamp} {filler}"), 1, 0);
                    if self.sinks[k]
                        .send(Message::text(e.to_json()))
                        .await
                        .is_err()
                    {
                        send_errors += 1;
                    }
                    sent += 1;
                }
            }
        }
        let send_time = start.elapsed();
        // Let the last messages arrive.
        let drain_deadline = Instant::now() + Duration::from_secs(5);
        while self.received.load(Ordering::Relaxed) < sent - send_errors
            && Instant::now() < drain_deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let take =
            |l: &Mutex<Vec<u64>>| std::mem::take(&mut *l.lock().unwrap_or_else(|e| e.into_inner()));
        Tally {
            sent,
            send_errors,
            received: self.received.load(Ordering::Relaxed),
            send_secs: send_time.as_secs_f64(),
            recv_secs: start.elapsed().as_secs_f64(),
            latencies: take(&self.latencies),
            cross_latencies: take(&self.cross_latencies),
            ..std::mem::take(&mut self.tally)
        }
    }

    pub(crate) async fn close(mut self) {
        for mut s in self.sinks {
            let _ = s.close().await;
        }
        self.readers.abort_all();
        while self.readers.join_next().await.is_some() {}
    }
}

/// The messages generator `share` sends: its part of `rate * seconds`, at its part of the rate.
pub(crate) fn relay_share(args: &Args, share: Share) -> (f64, u64) {
    let total = args.rate * args.seconds;
    let of = share.of as u64;
    let mine = total / of + u64::from((share.part as u64) < total % of);
    (args.rate as f64 / share.of as f64, mine)
}

/// A generator child: opens its rooms and prints its tally (one JSON line), relays when told
/// to (a line on stdin) and prints its tally again, then holds the connections until stdin
/// closes.
pub(crate) async fn generate_child(
    args: Args,
    share: Share,
    servers: Vec<SocketAddr>,
) -> anyhow::Result<()> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let mut clients = open_clients(&args, &servers, share).await;
    println!("{}", serde_json::to_string(&clients.tally)?);
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
    let mut line = String::new();
    if stdin.read_line(&mut line).await? > 0 {
        let (rate, total) = relay_share(&args, share);
        let tally = clients.relay(rate, total, args.payload).await;
        println!("{}", serde_json::to_string(&tally)?);
        while !matches!(stdin.read_line(&mut line).await, Ok(0) | Err(_)) {}
    }
    clients.close().await;
    Ok(())
}

pub(crate) struct Generator {
    pub(crate) child: tokio::process::Child,
    pub(crate) stdout: tokio::io::BufReader<tokio::process::ChildStdout>,
}

impl Generator {
    pub(crate) async fn tally(&mut self) -> anyhow::Result<Tally> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line).await? == 0 {
            bail!("a generator child ended early");
        }
        Ok(serde_json::from_str(&line)?)
    }
}

/// The clients: in this process, or spread over generator children.
pub(crate) enum Load {
    Here(Clients),
    Children(Vec<Generator>),
}

impl Load {
    /// Opens and holds all the rooms; returns the connections held and failures.
    pub(crate) async fn open(args: &Args, servers: &[SocketAddr]) -> anyhow::Result<(Load, Tally)> {
        if args.generators == 1 {
            let clients = open_clients(args, servers, Share { part: 0, of: 1 }).await;
            let tally = Tally {
                held: clients.tally.held,
                failures: clients.tally.failures,
                open_secs: clients.tally.open_secs,
                ..Tally::default()
            };
            return Ok((Load::Here(clients), tally));
        }
        let list = servers
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let mut generators = Vec::new();
        for part in 0..args.generators {
            let mut child = tokio::process::Command::new(std::env::current_exe()?)
                .args(std::env::args_os().skip(1))
                .env(GENERATOR_ENV, format!("{part}/{}", args.generators))
                .env(SERVERS_ENV, &list)
                .env_remove(SERVER_ENV)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()?;
            let stdout = child.stdout.take().context("generator stdout")?;
            generators.push(Generator {
                child,
                stdout: tokio::io::BufReader::new(stdout),
            });
        }
        let mut tally = Tally::default();
        for g in &mut generators {
            tally.merge(g.tally().await?);
        }
        Ok((Load::Children(generators), tally))
    }

    /// Relays `--rate` messages per second for `--seconds` over all the rooms; returns the
    /// merged tally. The connections stay open.
    pub(crate) async fn relay(&mut self, args: &Args) -> anyhow::Result<Tally> {
        match self {
            Load::Here(clients) => {
                let (rate, total) = relay_share(args, Share { part: 0, of: 1 });
                Ok(clients.relay(rate, total, args.payload).await)
            }
            Load::Children(generators) => {
                for g in generators.iter_mut() {
                    let stdin = g.child.stdin.as_mut().context("generator stdin")?;
                    stdin.write_all(b"relay\n").await?;
                    stdin.flush().await?;
                }
                let mut tally = Tally::default();
                for g in generators.iter_mut() {
                    tally.merge(g.tally().await?);
                }
                Ok(tally)
            }
        }
    }

    pub(crate) async fn close(self) {
        match self {
            Load::Here(clients) => clients.close().await,
            Load::Children(generators) => {
                for mut g in generators {
                    drop(g.child.stdin.take());
                    if tokio::time::timeout(Duration::from_secs(30), g.child.wait())
                        .await
                        .is_err()
                    {
                        let _ = g.child.kill().await;
                    }
                }
            }
        }
    }
}
