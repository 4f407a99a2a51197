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

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;

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

mod clients;
mod servers;

use clients::*;
use servers::*;

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
