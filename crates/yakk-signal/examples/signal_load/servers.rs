//! The processes the benchmark measures: a server child, and the Redis that instances share.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt};

use super::*;

/// The server side: listen on 127.0.0.1:0, print the port, serve until stdin closes.
pub(crate) async fn serve_child() -> anyhow::Result<()> {
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

pub(crate) fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    pub(crate) pid: Option<u32>,
    pub(crate) child: Option<tokio::process::Child>,
}

/// A redis-server child on a free loopback port, without persistence.
pub(crate) struct Redis {
    pub(crate) child: tokio::process::Child,
    pub(crate) dir: std::path::PathBuf,
    pub(crate) url: String,
}

pub(crate) async fn start_redis() -> anyhow::Result<Redis> {
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

pub(crate) async fn start_server(args: &Args, redis: Option<&Redis>) -> anyhow::Result<Server> {
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
