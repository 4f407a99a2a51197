//! Load benchmark of the signalling server over loopback.
//!
//! Starts the server in a child process (this same program, so its memory is measured alone),
//! opens `--connections` WebSockets as owner/joiner pairs in `--connections / 2` rooms, holds
//! them, then relays `--rate` messages per second (joiner → owner, timestamped) for
//! `--seconds`, and reports the connections held, the server's peak RSS, relay latency
//! percentiles and the message rate achieved. Everything is bounded in count and time and
//! stays on 127.0.0.0/8; the program stops by itself.
//!
//! ```text
//! cargo run --release -p yakk-signal --example signal_load -- --connections 10000 --rate 5000 --seconds 10
//! ```
//!
//! `--instances 3` starts a `redis-server` (from the PATH, on a free loopback port, without
//! persistence) and three server children sharing their rooms through it (`--redis`). Each
//! room's owner is on instance `i mod 3`; the joiner of every other room is on the next
//! instance, so half of the messages cross instances. Latency is then reported separately for
//! messages within one instance and across instances, and memory per instance and for Redis.
//!
//! `--generators N` spreads the client sockets over N child processes of this program (room
//! *i* goes to generator *i* mod N, each sending its share of the rate), so that each stays
//! below the per-process open-file limit; the parent adds up their counts and computes the
//! percentiles over all their latency samples together.
//!
//! `--target ADDR --server-pid PID` measures an already running server instead; start it with
//! its per-address limits lifted, as the child does (`yakk signal --creates-per-minute 0
//! --joins-per-minute 0 --max-connections-per-ip 0 --max-connections 30100`): every connection
//! comes from a few loopback addresses.
#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures::SinkExt;
use futures::stream::{SplitSink, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use yakk_wire::Envelope;

const SERVER_ENV: &str = "YAKK_SIGNAL_LOAD_SERVER";
/// Set for a server child that shares its rooms through this Redis.
const REDIS_ENV: &str = "YAKK_SIGNAL_LOAD_REDIS";
/// Set for a generator child: its part of the rooms, `PART/OF`.
const GENERATOR_ENV: &str = "YAKK_SIGNAL_LOAD_GENERATOR";
/// The servers' addresses for a generator child, comma separated.
const SERVERS_ENV: &str = "YAKK_SIGNAL_LOAD_SERVERS";
const MAX_INSTANCES: usize = 8;
const MAX_GENERATORS: usize = 8;
const MAX_CONNECTIONS: usize = 30_000;
const MAX_SECONDS: u64 = 120;
/// The whole run, connections included, ends by then whatever happens.
const OVERALL_DEADLINE: Duration = Duration::from_secs(600);

#[derive(Parser, Debug)]
struct Args {
    /// WebSockets to open and hold (half owners, half joiners).
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Relayed messages per second during the measurement.
    #[arg(long, default_value_t = 5_000)]
    rate: u64,
    /// Length of the measurement.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 200)]
    payload: usize,
    /// Loopback source addresses to spread connections over (127.0.0.1 ..= 127.0.0.N).
    #[arg(long, default_value_t = 4)]
    sources: u8,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 200)]
    parallel: usize,
    /// Server instances to start; more than one share their rooms through a redis-server
    /// that this program starts.
    #[arg(long, default_value_t = 1)]
    instances: usize,
    /// Client processes to spread the WebSockets over, each below the open-file limit; their
    /// results are merged.
    #[arg(long, default_value_t = 1)]
    generators: usize,
    /// Measure a running server on this loopback address instead of starting one.
    #[arg(long)]
    target: Option<SocketAddr>,
    /// The running server's process id, to read its memory use.
    #[arg(long)]
    server_pid: Option<u32>,
}

type Ws = WebSocketStream<TcpStream>;

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if std::env::var_os(SERVER_ENV).is_some() {
        return rt.block_on(serve_child());
    }
    let args = Args::parse();
    if let Some(part) = std::env::var_os(GENERATOR_ENV) {
        let share = part
            .to_str()
            .and_then(|p| p.split_once('/'))
            .and_then(|(part, of)| Some((part.parse().ok()?, of.parse().ok()?)))
            .filter(|&(part, of)| part < of && of <= MAX_GENERATORS)
            .map(|(part, of)| Share { part, of })
            .context("bad generator share")?;
        let addrs = std::env::var(SERVERS_ENV)?
            .split(',')
            .map(|a| a.parse::<SocketAddr>())
            .collect::<Result<Vec<_>, _>>()?;
        if addrs.is_empty() || addrs.iter().any(|a| !a.ip().is_loopback()) {
            bail!("a generator needs loopback server addresses");
        }
        return rt.block_on(async {
            tokio::time::timeout(OVERALL_DEADLINE, generate_child(args, share, addrs))
                .await
                .context("the generator ran past its deadline")?
        });
    }
    rt.block_on(async {
        tokio::time::timeout(OVERALL_DEADLINE, drive(args))
            .await
            .context("the benchmark ran past its deadline")?
    })
}

/// The server side: listen on 127.0.0.1:0, print the port, serve until stdin closes.
async fn serve_child() -> anyhow::Result<()> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    // All clients come from a few loopback addresses: lift the per-address limits (requests
    // and concurrent connections).
    let config = yakk_signal::Config {
        creates_per_minute: 0,
        joins_per_minute: 0,
        max_connections_per_ip: 0,
        max_connections: MAX_CONNECTIONS + 100,
        redis_url: std::env::var(REDIS_ENV).ok(),
        ..yakk_signal::Config::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let server = yakk_signal::spawn(config, listener).await?;
    println!("{}", server.local_addr());
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    let _ = tokio::time::timeout(OVERALL_DEADLINE, async {
        while !matches!(stdin.read(&mut buf).await, Ok(0) | Err(_)) {}
    })
    .await;
    server.shutdown().await;
    Ok(())
}

fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

async fn connect(src: IpAddr, addr: SocketAddr, query: &str) -> anyhow::Result<Ws> {
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

async fn recv_envelope(ws: &mut Ws) -> anyhow::Result<Envelope> {
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
async fn open_pair(
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

struct Server {
    addr: SocketAddr,
    pid: Option<u32>,
    child: Option<tokio::process::Child>,
}

/// A redis-server child on a free loopback port, without persistence.
struct Redis {
    child: tokio::process::Child,
    dir: std::path::PathBuf,
    url: String,
}

async fn start_redis() -> anyhow::Result<Redis> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let dir = std::env::temp_dir().join(format!("signal-load-redis-{port}"));
    std::fs::create_dir_all(&dir)?;
    let child = tokio::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--maxclients", "1000"])
        .arg("--dir")
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start redis-server: is it installed (apt-get install redis-server)?")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        if Instant::now() > deadline {
            bail!("redis-server did not start");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Redis {
        child,
        dir,
        url: format!("redis://127.0.0.1:{port}/0"),
    })
}

async fn start_server(args: &Args, redis: Option<&Redis>) -> anyhow::Result<Server> {
    if let Some(addr) = args.target {
        if !addr.ip().is_loopback() {
            bail!("--target must be a loopback address");
        }
        return Ok(Server {
            addr,
            pid: args.server_pid,
            child: None,
        });
    }
    let mut command = tokio::process::Command::new(std::env::current_exe()?);
    if let Some(r) = redis {
        command.env(REDIS_ENV, &r.url);
    }
    let mut child = command
        .env(SERVER_ENV, "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().context("child stdout")?;
    let mut line = String::new();
    tokio::io::BufReader::new(stdout)
        .read_line(&mut line)
        .await?;
    let addr = line
        .trim()
        .parse()
        .context("server did not print its address")?;
    Ok(Server {
        addr,
        pid: child.id(),
        child: Some(child),
    })
}

/// The rooms one generator opens: pair indices `i` with `i mod of == part`, so that every
/// generator has the same mix of rooms within one instance and across instances.
#[derive(Clone, Copy, Debug)]
struct Share {
    part: usize,
    of: usize,
}

/// What one generator measured; the generators' tallies add up with `merge`.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Tally {
    held: usize,
    failures: usize,
    open_secs: f64,
    sent: u64,
    send_errors: u64,
    received: u64,
    send_secs: f64,
    recv_secs: f64,
    /// Relay latencies in microseconds, within one instance and across instances: every
    /// sample, so that the percentiles are those of all the generators' messages together.
    latencies: Vec<u64>,
    cross_latencies: Vec<u64>,
}

impl Tally {
    /// Adds another generator's figures; the generators ran at the same time, so times are
    /// the longest.
    fn merge(&mut self, other: Tally) {
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
struct Clients {
    sinks: Vec<SplitSink<Ws, Message>>,
    readers: tokio::task::JoinSet<()>,
    epoch: Instant,
    // Latencies within one instance, and across instances.
    latencies: Arc<Mutex<Vec<u64>>>,
    cross_latencies: Arc<Mutex<Vec<u64>>>,
    received: Arc<AtomicU64>,
    tally: Tally,
}

/// Opens and holds this generator's share of the rooms.
async fn open_clients(args: &Args, servers: &[SocketAddr], share: Share) -> Clients {
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
    async fn relay(&mut self, rate: f64, total: u64, payload: usize) -> Tally {
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

    async fn close(mut self) {
        for mut s in self.sinks {
            let _ = s.close().await;
        }
        self.readers.abort_all();
        while self.readers.join_next().await.is_some() {}
    }
}

/// The messages generator `share` sends: its part of `rate * seconds`, at its part of the rate.
fn relay_share(args: &Args, share: Share) -> (f64, u64) {
    let total = args.rate * args.seconds;
    let of = share.of as u64;
    let mine = total / of + u64::from((share.part as u64) < total % of);
    (args.rate as f64 / share.of as f64, mine)
}

/// A generator child: opens its rooms and prints its tally (one JSON line), relays when told
/// to (a line on stdin) and prints its tally again, then holds the connections until stdin
/// closes.
async fn generate_child(args: Args, share: Share, servers: Vec<SocketAddr>) -> anyhow::Result<()> {
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

struct Generator {
    child: tokio::process::Child,
    stdout: tokio::io::BufReader<tokio::process::ChildStdout>,
}

impl Generator {
    async fn tally(&mut self) -> anyhow::Result<Tally> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line).await? == 0 {
            bail!("a generator child ended early");
        }
        Ok(serde_json::from_str(&line)?)
    }
}

/// The clients: in this process, or spread over generator children.
enum Load {
    Here(Clients),
    Children(Vec<Generator>),
}

impl Load {
    /// Opens and holds all the rooms; returns the connections held and failures.
    async fn open(args: &Args, servers: &[SocketAddr]) -> anyhow::Result<(Load, Tally)> {
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
    async fn relay(&mut self, args: &Args) -> anyhow::Result<Tally> {
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

    async fn close(self) {
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

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

async fn drive(args: Args) -> anyhow::Result<()> {
    if args.connections > MAX_CONNECTIONS || args.seconds > MAX_SECONDS || args.sources == 0 {
        bail!("at most {MAX_CONNECTIONS} connections, {MAX_SECONDS} s and at least one source");
    }
    if !(1..=MAX_INSTANCES).contains(&args.instances)
        || (args.instances > 1 && args.target.is_some())
    {
        bail!("1 to {MAX_INSTANCES} instances, and one with --target");
    }
    if !(1..=MAX_GENERATORS).contains(&args.generators) {
        bail!("1 to {MAX_GENERATORS} generators");
    }
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0) as usize;
    let per_generator = (args.connections / 2).div_ceil(args.generators) * 2;
    if limit < per_generator + 100 {
        bail!(
            "open-file limit {limit} is too low for {per_generator} client sockets per process: \
             raise it with ulimit -n or use more --generators"
        );
    }
    let per_instance = args.connections.div_ceil(args.instances);
    if args.target.is_none() && limit < per_instance + 100 {
        bail!(
            "open-file limit {limit} is too low for {per_instance} sockets per server instance: \
             raise it with ulimit -n, or use more --instances or fewer --connections"
        );
    }
    let mut redis = match args.instances {
        1 => None,
        _ => Some(start_redis().await?),
    };
    let mut servers = Vec::new();
    for _ in 0..args.instances {
        servers.push(start_server(&args, redis.as_ref()).await?);
    }
    let redis_pid = redis.as_ref().and_then(|r| r.child.id());
    let rss = |field| -> Vec<Option<u64>> {
        servers
            .iter()
            .map(|s| s.pid.and_then(|pid| proc_status_kib(pid, field)))
            .collect()
    };
    let redis_rss = |field| redis_pid.and_then(|pid| proc_status_kib(pid, field));
    let base_rss = rss("VmRSS:");
    let redis_base = redis_rss("VmRSS:");

    // Phase 1: open and hold the connections.
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let (mut load, opened) = Load::open(&args, &addrs).await?;
    let held = opened.held;
    let failures = opened.failures;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let held_rss = rss("VmRSS:");
    let redis_held = redis_rss("VmRSS:");

    // Phase 2: relay at the given rate, round robin over the rooms.
    let tally = load.relay(&args).await?;
    let peak_rss = rss("VmHWM:");
    let end_rss = rss("VmRSS:");
    let redis_peak = redis_rss("VmHWM:");
    let (sent, send_errors, got) = (tally.sent, tally.send_errors, tally.received);
    let send_time = Duration::from_secs_f64(tally.send_secs);
    let recv_time = Duration::from_secs_f64(tally.recv_secs);

    // Close everything.
    load.close().await;
    for server in &mut servers {
        if let Some(mut child) = server.child.take() {
            drop(child.stdin.take());
            if tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }
    if let Some(r) = redis.as_mut() {
        let _ = r.child.kill().await;
        let _ = std::fs::remove_dir_all(&r.dir);
    }

    let sorted = |mut v: Vec<u64>| {
        v.sort_unstable();
        v
    };
    let lat = sorted(tally.latencies);
    let cross = sorted(tally.cross_latencies);
    let mib = |k: Option<u64>| {
        k.map_or("n/a".to_string(), |k| {
            format!("{:.1} MiB", k as f64 / 1024.0)
        })
    };
    let sum = |v: &[Option<u64>]| v.iter().copied().sum::<Option<u64>>();
    let each = |v: &[Option<u64>]| v.iter().map(|k| mib(*k)).collect::<Vec<_>>().join(", ");
    println!(
        "instances                 {}{}",
        args.instances,
        if redis.is_some() { " + Redis" } else { "" }
    );
    println!("client processes          {}", args.generators);
    println!("connections requested     {}", args.connections);
    println!(
        "connections held          {held} ({failures} rooms failed) in {:.1} s",
        opened.open_secs
    );
    println!(
        "server RSS before         {} ({})",
        mib(sum(&base_rss)),
        each(&base_rss)
    );
    println!(
        "server RSS holding them   {} ({})",
        mib(sum(&held_rss)),
        each(&held_rss)
    );
    if let (Some(b), Some(h)) = (sum(&base_rss), sum(&held_rss))
        && held > 0
    {
        println!(
            "  per connection          {:.1} KiB",
            (h.saturating_sub(b)) as f64 / held as f64
        );
    }
    println!(
        "server RSS after relay    {} ({})",
        mib(sum(&end_rss)),
        each(&end_rss)
    );
    println!(
        "server peak RSS (VmHWM)   {} ({})",
        mib(sum(&peak_rss)),
        each(&peak_rss)
    );
    if redis.is_some() {
        println!(
            "Redis RSS                 {} before, {} holding, peak {}",
            mib(redis_base),
            mib(redis_held),
            mib(redis_peak)
        );
    }
    println!(
        "messages sent             {sent} in {:.2} s ({:.0}/s), {send_errors} send errors",
        send_time.as_secs_f64(),
        sent as f64 / send_time.as_secs_f64()
    );
    println!(
        "messages received         {got} ({:.0}/s)",
        got as f64 / recv_time.as_secs_f64()
    );
    let report = |what: &str, lat: &[u64]| {
        println!(
            "{what} p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms ({} messages)",
            percentile(lat, 0.50),
            percentile(lat, 0.99),
            percentile(lat, 0.999),
            percentile(lat, 1.0),
            lat.len()
        )
    };
    report("relay latency             ", &lat);
    if args.instances > 1 {
        report("  across instances        ", &cross);
    }
    Ok(())
}
