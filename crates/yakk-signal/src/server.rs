//! The network side: accepting TCP (and TLS) connections, HTTP routing (`/hello`, `/metrics`,
//! `/ws/`: `upgrade.rs`, and the web app at `/`: `web.rs`), the expiry sweep, and graceful
//! shutdown. With TLS and the embedded relay, a TLS connection that starts with a STUN message
//! (or negotiated ALPN `stun.turn`) is handed to the relay instead (TURN over TLS, `turns:`).
//!
//! Built directly on hyper (HTTP/1.1 only) and tokio-tungstenite rather than a web framework:
//! three routes need no router, and owning the upgrade lets us size tungstenite's buffers for
//! ten thousands of mostly idle sockets and see its typed errors (an oversized frame must be
//! told apart from a dead socket to answer it with close code 1009).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::ice::RelayIce;
use crate::mailbox::{Kick, MailboxHandle};
use crate::metrics::{self, Exposition, Metrics, Rejection};
use crate::ratelimit::{ClientKey, ConnectionLimit, RateLimiter};
use crate::redis_store::{RedisConfig, RedisStore, RedisStoreError};
use crate::registry::{
    CreateError, CreateOptions, EvictReason, JoinError, MailboxId, Registry, RoomRef,
};
use crate::store::{Created, LocalStore, Relayed, RoomStore};
use crate::turn::{self, EmbeddedRelay};
use crate::upgrade;

/// Room names longer than this cannot exist; a join for one is answered "No such room".
pub(crate) const MAX_ROOM_NAME: usize = 64;
/// TURN-over-TCP and TURN-over-TLS connections open at once, each: one per allocation the relay
/// may hold, and this many more for clients that have none yet.
const TURN_SPARE_CONNECTIONS: usize = 64;

/// The mutable state of the server; one mutex, held only for short, non-async sections.
pub(crate) struct State {
    /// WebSockets open per client address.
    pub per_address: ConnectionLimit,
}

/// Where the rooms are: in this process, or in Redis shared with other instances.
pub(crate) enum Store {
    Local(Box<LocalStore<MailboxHandle>>),
    Redis(RedisStore<MailboxHandle>),
}

impl Store {
    /// Rooms and mailboxes: all of them (local), or those with a socket here (Redis).
    pub fn counts(&self) -> (usize, usize) {
        match self {
            Store::Local(s) => s.counts(),
            Store::Redis(s) => s.counts(),
        }
    }

    pub fn is_shared(&self) -> bool {
        matches!(self, Store::Redis(_))
    }
}

impl RoomStore for Store {
    type Handle = MailboxHandle;

    async fn create(
        &self,
        owner: MailboxHandle,
        options: CreateOptions,
        client: ClientKey,
        now: Instant,
    ) -> Result<Created, CreateError> {
        match self {
            Store::Local(s) => s.create(owner, options, client, now).await,
            Store::Redis(s) => s.create(owner, options, client, now).await,
        }
    }

    async fn join(
        &self,
        name: &str,
        joiner: MailboxHandle,
        client: ClientKey,
        now: Instant,
    ) -> Result<(RoomRef, MailboxId), JoinError> {
        match self {
            Store::Local(s) => s.join(name, joiner, client, now).await,
            Store::Redis(s) => s.join(name, joiner, client, now).await,
        }
    }

    async fn reclaim(
        &self,
        name: &str,
        secret: &str,
        owner: MailboxHandle,
        client: ClientKey,
        now: Instant,
    ) -> Result<Created, JoinError> {
        match self {
            Store::Local(s) => s.reclaim(name, secret, owner, client, now).await,
            Store::Redis(s) => s.reclaim(name, secret, owner, client, now).await,
        }
    }

    async fn leave(&self, room: &RoomRef, id: MailboxId, now: Instant) -> bool {
        match self {
            Store::Local(s) => s.leave(room, id, now).await,
            Store::Redis(s) => s.leave(room, id, now).await,
        }
    }

    async fn relay(
        &self,
        room: &RoomRef,
        from: MailboxId,
        to: MailboxId,
        frame: Bytes,
        now: Instant,
    ) -> Relayed {
        match self {
            Store::Local(s) => s.relay(room, from, to, frame, now).await,
            Store::Redis(s) => s.relay(room, from, to, frame, now).await,
        }
    }
}

/// What every task of one server shares.
pub(crate) struct Shared {
    pub config: Config,
    pub ws_config: WebSocketConfig,
    pub store: Store,
    state: Mutex<State>,
    pub metrics: Metrics,
    pub ws_permits: Arc<Semaphore>,
    http_permits: Arc<Semaphore>,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
    /// The embedded TURN relay's book-keeping, for `/metrics`.
    relay_gate: Option<Arc<turn::Gate>>,
    /// Where TURN-over-TLS connections go, when the relay serves them on this listener.
    turns: Option<Arc<turn::StreamTransport>>,
    /// The listening address (the server's side of a connection whose own is unknown).
    local_addr: SocketAddr,
}

impl Shared {
    /// Locks the state. A panic while holding the lock cannot leave the registry half-updated
    /// in a way that matters more than stopping would, so a poisoned lock is used as is.
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot read the listening socket's address: {0}")]
    LocalAddr(std::io::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot listen for TURN on udp/tcp {addr}: {source}")]
    Relay {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Redis(#[from] RedisStoreError),
}

/// A running server. Dropping it leaves the server running; call [`ServerHandle::shutdown`].
pub struct ServerHandle {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
    relay: Option<EmbeddedRelay>,
}

impl ServerHandle {
    /// The address the server listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Live rooms and mailboxes, for embedders and tests.
    pub fn counts(&self) -> (usize, usize) {
        self.shared.store.counts()
    }

    /// This instance's id in Redis, when its rooms are there.
    pub fn instance(&self) -> Option<String> {
        match &self.shared.store {
            Store::Redis(s) => Some(s.instance().to_string()),
            Store::Local(_) => None,
        }
    }

    /// The metrics page, as `/metrics` serves it.
    pub fn metrics_text(&self) -> String {
        render_metrics(&self.shared)
    }

    /// The embedded TURN relay's UDP address (TCP is on the same port), if it runs.
    pub fn relay_addr(&self) -> Option<SocketAddr> {
        self.relay.as_ref().map(EmbeddedRelay::udp_addr)
    }

    /// The embedded TURN relay's counters, if it runs.
    pub fn relay_gate(&self) -> Option<Arc<turn::Gate>> {
        self.relay.as_ref().map(EmbeddedRelay::gate)
    }

    /// Stops accepting, closes every WebSocket and waits (at most the configured shutdown
    /// grace) for connections to finish. Alone, the server closes them with code 1001 (going
    /// away); sharing its rooms through Redis, it drains: code 1012 (service restart) tells
    /// clients to reconnect, to any instance, and their mailboxes leave their rooms in Redis
    /// (owners take theirs back with their reclaim secret).
    pub async fn shutdown(self) {
        if let Some(relay) = self.relay {
            relay.stop();
        }
        self.shared.shutdown.cancel();
        if let Err(e) = self.task.await {
            tracing::warn!("signalling server task ended abnormally: {e}");
        }
    }
}

/// Starts serving on `listener` in the background.
pub async fn spawn(mut config: Config, listener: TcpListener) -> Result<ServerHandle, ServerError> {
    let local_addr = listener.local_addr().map_err(ServerError::LocalAddr)?;
    let relay = match &config.relay {
        None => None,
        Some(rc) => {
            // With TLS, the relay also takes TURN over TLS from this listener.
            let limits = turn::StreamLimits {
                max_connections: rc.max_allocations.saturating_add(TURN_SPARE_CONNECTIONS),
                max_per_address: config.max_connections_per_ip,
            };
            let tls_addr = config.tls.is_some().then_some(local_addr);
            let relay = EmbeddedRelay::start(rc, limits, tls_addr)
                .await
                .map_err(|source| ServerError::Relay {
                    addr: rc.listen,
                    source,
                })?;
            let port = relay.udp_addr().port();
            let host = match rc.relay_ip {
                std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                v4 => v4.to_string(),
            };
            let mut urls = vec![format!("turn:{host}:{port}?transport=udp")];
            if relay.tcp_addr().is_some() {
                urls.push(format!("turn:{host}:{port}?transport=tcp"));
            }
            tracing::info!(
                "TURN relay listening on udp/tcp {}{} (relayed addresses {}, ports {}-{})",
                relay.udp_addr(),
                if tls_addr.is_some() {
                    format!(" and TLS {local_addr}")
                } else {
                    String::new()
                },
                rc.relay_ip,
                rc.ports.0,
                rc.ports.1
            );
            config.ice.relay = Some(RelayIce {
                urls,
                secret: rc.secret.clone(),
                ttl: rc.credential_ttl,
                turns_port: tls_addr.map(|_| local_addr.port()),
            });
            if let (Some(tls), Some(_)) = (&config.tls, tls_addr) {
                // TURN clients that ask for ALPN ask for this one (RFC 7443).
                let mut tls = rustls::ServerConfig::clone(tls);
                tls.alpn_protocols.push(turn::TURNS_ALPN.to_vec());
                config.tls = Some(Arc::new(tls));
            }
            Some(relay)
        }
    };
    let relay_gate = relay.as_ref().map(EmbeddedRelay::gate);
    let turns = relay.as_ref().and_then(EmbeddedRelay::turns);
    let ws_config = WebSocketConfig::default()
        // Mostly idle sockets: a small eager read buffer; it grows for a large frame.
        .read_buffer_size(4096)
        // Every message is flushed at once anyway; do not hold a second copy.
        .write_buffer_size(0)
        .max_write_buffer_size(config.max_message_bytes.saturating_mul(4).max(1 << 20))
        .max_message_size(Some(config.max_message_bytes))
        .max_frame_size(Some(config.max_message_bytes));
    let store = match &config.redis_url {
        None => Store::Local(Box::new(LocalStore::new(
            Registry::new(config.limits.clone()),
            RateLimiter::new(config.creates_per_minute, config.rate_limit_clients),
            RateLimiter::new(config.joins_per_minute, config.rate_limit_clients),
        ))),
        Some(url) => Store::Redis(
            RedisStore::connect(RedisConfig {
                url: url.clone(),
                limits: config.limits.clone(),
                creates_per_minute: config.creates_per_minute,
                joins_per_minute: config.joins_per_minute,
                reclaim_grace: config.reclaim_grace,
                heartbeat: config.heartbeat,
                ca_pem: config.redis_ca_pem.clone(),
            })
            .await?,
        ),
    };
    let state = State {
        per_address: ConnectionLimit::new(config.max_connections_per_ip),
    };
    let shared = Arc::new(Shared {
        ws_permits: Arc::new(Semaphore::new(config.max_connections)),
        // Connections still speaking HTTP (not yet upgraded); bounded separately so that slow
        // HTTP clients cannot starve WebSockets of file descriptors unboundedly.
        http_permits: Arc::new(Semaphore::new(config.max_connections.max(64))),
        config,
        ws_config,
        store,
        state: Mutex::new(state),
        metrics: Metrics::default(),
        shutdown: CancellationToken::new(),
        tracker: TaskTracker::new(),
        relay_gate,
        turns,
        local_addr,
    });
    tracing::info!(
        "signalling server listening on {}{}",
        if shared.config.tls.is_some() {
            "https://"
        } else {
            "http://"
        },
        local_addr
    );
    let task = tokio::spawn(serve(shared.clone(), listener));
    Ok(ServerHandle {
        local_addr,
        shared,
        task,
        relay,
    })
}

async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    shared.tracker.spawn(sweeper(shared.clone()));
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let Ok(permit) = shared.http_permits.clone().try_acquire_owned() else {
                        shared.metrics.reject(Rejection::TooManyConnections);
                        tracing::debug!(%peer, "refused a connection: too many open");
                        continue;
                    };
                    let _ = tcp.set_nodelay(true);
                    let s = shared.clone();
                    shared.tracker.spawn(async move {
                        serve_tcp(s, tcp, peer).await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    // Typically out of file descriptors: wait instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    drop(listener);
    tracing::info!("signalling server shutting down");
    // Sockets in rooms learn of the shutdown through the cancellation token. Sharing rooms
    // through Redis, each leaves its room there as it closes.
    if let Store::Local(s) = &shared.store {
        s.drain();
    }
    shared.tracker.close();
    if tokio::time::timeout(shared.config.shutdown_grace, shared.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not close in time");
    }
    if let Store::Redis(s) = &shared.store {
        s.drain();
        s.stop();
    }
}

async fn serve_tcp(shared: Arc<Shared>, tcp: TcpStream, peer: SocketAddr) {
    let local = tcp.local_addr().unwrap_or(shared.local_addr);
    let Some(tls) = shared.config.tls.clone() else {
        return serve_http(shared, tcp, peer, local).await;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let timeout = shared.config.handshake_timeout;
    let stream = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return tracing::debug!(%peer, "TLS handshake failed: {e}"),
        Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
    };
    let Some(turns) = shared.turns.clone() else {
        return serve_http(shared, stream, peer, local).await;
    };
    // TURN or HTTP? A client that negotiated TURN's ALPN protocol is TURN; otherwise the first
    // byte tells: a STUN message starts with two zero bits, an HTTP request with a letter. The
    // byte is looked at, not consumed: a one-byte buffer holds it, and the reads after it
    // (larger than the buffer) go straight to the TLS stream.
    let alpn_turn = stream.get_ref().1.alpn_protocol() == Some(turn::TURNS_ALPN);
    let mut io = tokio::io::BufReader::with_capacity(1, stream);
    if !alpn_turn {
        let first = match tokio::time::timeout(timeout, io.fill_buf()).await {
            Ok(Ok(buf)) => buf.first().copied(),
            Ok(Err(e)) => return tracing::debug!(%peer, "TLS connection failed: {e}"),
            Err(_) => return tracing::debug!(%peer, "nothing received after the TLS handshake"),
        };
        match first {
            None => return,
            Some(b) if is_stun_start(b) => {}
            Some(_) => return serve_http(shared, io, peer, local).await,
        }
    }
    turns.accept(io, peer);
}

/// Whether `first` can be the first byte of a STUN message (its two top bits are 0); the first
/// byte of an HTTP request is an ASCII letter (0x41 and above).
fn is_stun_start(first: u8) -> bool {
    first & 0xc0 == 0
}

async fn serve_http<I>(shared: Arc<Shared>, io: I, peer: SocketAddr, local: SocketAddr)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let s = shared.clone();
    let service = hyper::service::service_fn(move |req| {
        let s = s.clone();
        async move { Ok::<_, Infallible>(route(s, peer, local, req)) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(shared.config.handshake_timeout)
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, "HTTP connection ended: {e}");
            }
        }
        _ = shared.shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(shared.config.shutdown_grace, conn).await;
        }
    }
}

pub(crate) fn text(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn render_metrics(shared: &Shared) -> String {
    let (rooms, mailboxes) = shared.store.counts();
    let mut out = Exposition::default();
    shared.metrics.expose(rooms, mailboxes, &mut out);
    if let Store::Redis(s) = &shared.store {
        out.counter(
            "yakk_signal_redis_errors_total",
            "Redis operations that failed (unreachable, timed out).",
            s.errors(),
        );
    }
    if let Some(gate) = &shared.relay_gate {
        turn::expose_metrics(gate, &mut out);
    }
    out.render()
}

fn route(
    shared: Arc<Shared>,
    peer: SocketAddr,
    local: SocketAddr,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n");
    }
    match req.uri().path() {
        "/hello" => text(StatusCode::OK, "application/json", r#"{"Hello":"World"}"#),
        "/metrics" => text(
            StatusCode::OK,
            metrics::CONTENT_TYPE,
            render_metrics(&shared),
        ),
        "/ws/" | "/ws" => upgrade::upgrade(shared, peer, local, req),
        path => crate::web::serve(path, req.headers())
            .unwrap_or_else(|| text(StatusCode::NOT_FOUND, "text/plain", "not found\n")),
    }
}

/// Expiry: empty rooms after their grace, idle mailboxes, rooms past their lifetime; also
/// forgets rate-limit entries of clients that are back to a full allowance.
async fn sweeper(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.config.sweep_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_prune = Instant::now();
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        let m = &shared.metrics;
        let local = match &shared.store {
            Store::Local(store) => {
                let prune = now.duration_since(last_prune) >= Duration::from_secs(60);
                if prune {
                    last_prune = now;
                }
                store.sweep(now, prune)
            }
            Store::Redis(store) => {
                let sweep = store.sweep(now).await;
                for _ in 0..sweep.idle {
                    m.reject(Rejection::IdleTimeout);
                }
                for _ in 0..sweep.lifetime {
                    m.reject(Rejection::RoomLifetime);
                }
                continue;
            }
        };
        m.rooms_expired.fetch_add(
            (local.rooms_expired + local.rooms_ended) as u64,
            Ordering::Relaxed,
        );
        for e in local.evicted {
            let kick = match e.reason {
                EvictReason::Idle => {
                    m.reject(Rejection::IdleTimeout);
                    Kick::IDLE
                }
                EvictReason::RoomLifetime => {
                    m.reject(Rejection::RoomLifetime);
                    Kick::LIFETIME
                }
            };
            tracing::debug!(room = %e.room.name, mailbox = e.id, "closing: {}", kick.reason);
            e.handle.kick(kick);
        }
    }
}
