//! A signalling cluster for tests: a `redis-server` of the test's own (loopback, a free port, no
//! persistence, its own directory) and instances that can be killed as with `kill -9`. Shared
//! by yakk-signal's `tests/redis.rs` and yakk-session's `tests/reclaim.rs` (included by path).
//! Without `redis-server` on the PATH the tests that use it fail: CI installs it (`.ci/run`).
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use yakk_signal::Config;

/// A `redis-server` of one test: loopback only, no persistence, its own directory.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    /// With TLS only (`rediss://`): the files in `dir` of certificate, key and CA.
    tls: Option<[PathBuf; 3]>,
}

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_with(|_| None)
    }

    /// A server speaking TLS only; `write_tls` writes certificate, key and CA (PEM) into the
    /// directory it is given and returns their paths.
    pub fn start_with(write_tls: impl FnOnce(&std::path::Path) -> Option<[PathBuf; 3]>) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("yakk-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tls = write_tls(&dir);
        let mut server = RedisServer {
            child: None,
            port,
            dir,
            tls,
        };
        server.launch();
        server
    }

    pub fn launch(&mut self) {
        let mut command = Command::new("redis-server");
        match &self.tls {
            None => command.args(["--port", &self.port.to_string()]),
            Some([cert, key, ca]) => command
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .args(["--tls-auth-clients", "no", "--tls-cert-file"])
                .arg(cert)
                .arg("--tls-key-file")
                .arg(key)
                .arg("--tls-ca-cert-file")
                .arg(ca),
        };
        let child = command
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}): these tests need it on the PATH \
                     (Debian: apt-get install redis-server; .ci/run installs it)"
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }

    /// Kills the server (its data is gone: no persistence).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An instance of a cluster on `redis`: fast heartbeats, no per-address limits.
pub fn cluster_config(redis: &RedisServer) -> Config {
    Config {
        redis_url: Some(redis.url()),
        heartbeat: Duration::from_millis(200),
        max_connections_per_ip: 0,
        creates_per_minute: 0,
        joins_per_minute: 0,
        shutdown_grace: Duration::from_secs(3),
        ..Config::default()
    }
}

/// An instance in a runtime of its own, which the test can kill: all its tasks and sockets
/// vanish at once, and nothing is said to Redis, as with `kill -9`.
pub struct Killable {
    pub addr: SocketAddr,
    kill: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

pub fn start_killable(config: Config) -> Killable {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (kill, kill_rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let server = rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            yakk_signal::spawn(config, listener).await.unwrap()
        });
        addr_tx.send(server.local_addr()).unwrap();
        let _ = kill_rx.recv();
        drop(server);
        // Waits until every task (and so every socket) is dropped, so the port is free again.
        rt.shutdown_timeout(Duration::from_secs(5));
    });
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("instance started");
    Killable { addr, kill, thread }
}

impl Killable {
    pub fn kill(self) {
        let _ = self.kill.send(());
        self.thread.join().unwrap();
    }
}
