//! Rooms shared by several `yakk signal` instances through Redis (`yakk signal --redis URL`).
//!
//! # What lives where
//! - In Redis, per room: `yakk:room:NAME` (a hash: creation serial, next mailbox id, joiners
//!   admitted, `maxPeers`, creation time, lifetime, grace, the hash of the owner's reclaim
//!   secret) and `yakk:mb:NAME` (a hash: mailbox id → the token of the connection that holds
//!   it, `INSTANCE/N`). Both keys carry the room's expiry: its hard lifetime while someone is
//!   in it, its grace period once it is empty, so Redis itself deletes rooms nobody uses, on one
//!   clock for every instance. `yakk:rooms` (a sorted set, name → expiry) counts live rooms for
//!   `--max-rooms` and sizes the name space.
//! - `yakk:alive:INSTANCE`, refreshed every heartbeat with a time-to-live of three heartbeats:
//!   a mailbox whose instance stopped refreshing it is treated as gone (and removed) by the
//!   next operation that looks at its room. A killed instance's rooms so survive it, and its
//!   owners can take them back from another instance.
//! - A janitor in every instance walks all rooms (a `SCAN` step per heartbeat) and does the
//!   same for rooms nobody touches, so a room whose members all were on a killed instance is
//!   deleted after its grace period rather than living to its hard lifetime.
//! - `yakk:epoch`: a random value the first instance sets. If it disappears, Redis lost its
//!   data (restarted without persistence): every instance then closes the sockets of the rooms
//!   it had, with a clear reason, instead of relaying into rooms that no longer exist.
//! - In this process: the mailboxes whose sockets it holds, with their idle and lifetime clocks.
//!
//! # Atomicity
//! Every decision that reads and writes shared state (create, join, reclaim, leave, relay) is
//! one Lua script, which Redis runs atomically: a name is checked free and taken in the same
//! step (so names stay unique across instances), `maxPeers` and the mailbox cap are checked and
//! counted in the same step as the admission, and the per-client rate limits are an `INCR` of a
//! key per client and kind that expires a minute after its first use (a fixed one-minute
//! window, counted cluster-wide, where the single process uses a token bucket). The scripts
//! name their keys themselves, which a standalone Redis or Valkey allows (not Redis Cluster).
//!
//! # Relay: pub/sub rather than streams
//! A message for a mailbox on another instance is `PUBLISH`ed to that instance's channel,
//! `yakk:to:INSTANCE`, by the same script that checks sender and recipient, so it costs one
//! round trip to Redis and one delivery. Pub/sub keeps nothing: a signalling message is only
//! useful to a socket that is connected now, and if the recipient's instance is gone, so is the
//! recipient's socket; the peers' handshake already copes with a lost message by failing and
//! retrying. Streams would add storage that has to be trimmed, consumer bookkeeping per
//! instance and a read loop that polls, for a delivery guarantee nobody could use. One channel
//! per instance (not per room) keeps subscriptions fixed while rooms come and go. A message for
//! a mailbox on the same instance is delivered directly, without a publish.
//!
//! # Files
//! `scripts.rs` (the key layout and the Lua scripts), `rooms.rs` (create, join, reclaim, leave
//! and relay), `local.rs` (the mailboxes whose sockets this instance holds), `pubsub.rs` (the
//! instance channel and what arrives on it), `heartbeat.rs` (liveness, the janitor and the
//! epoch).

mod heartbeat;
mod local;
mod pubsub;
mod rooms;
mod scripts;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio_util::sync::CancellationToken;

use crate::registry::{EvictReason, RegistryLimits};
use crate::store::{CloseReason, Mailbox};
use local::Local;
use scripts::Scripts;

/// Name candidates sent with each creation (half in the current name space, half in the next).
const NAME_CANDIDATES: usize = 32;

/// How long a single Redis operation may take before the instance treats Redis as unreachable.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(2);

/// Settings of a Redis-backed store.
#[derive(Clone)]
pub struct RedisConfig {
    /// `redis://[:PASSWORD@]HOST:PORT/DB` or `rediss://…` (TLS).
    pub url: String,
    pub limits: RegistryLimits,
    /// Room creations per client address per minute, cluster-wide (0: unlimited).
    pub creates_per_minute: u32,
    /// Join (and reclaim) attempts per client address per minute, cluster-wide (0: unlimited).
    pub joins_per_minute: u32,
    /// How long an empty room whose owner can still reclaim it is kept (at least its grace).
    pub reclaim_grace: Duration,
    /// How often this instance tells Redis it is alive; it counts as gone after three missed.
    pub heartbeat: Duration,
    /// PEM certificates to trust for `rediss://` instead of the system's roots (a private CA).
    pub ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact_url(&self.url))
            .field("reclaim_grace", &self.reclaim_grace)
            .field("heartbeat", &self.heartbeat)
            .finish_non_exhaustive()
    }
}

/// The URL with any password replaced, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}<redacted>{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// Why the store could not start.
#[derive(Debug, thiserror::Error)]
pub enum RedisStoreError {
    #[error("invalid Redis URL {url}: {source}")]
    Url {
        url: String,
        source: redis::RedisError,
    },
    #[error(
        "cannot reach Redis at {url}: {why} (is redis-server running there, and the password right?)"
    )]
    Unreachable { url: String, why: String },
}

struct Inner<M> {
    con: ConnectionManager,
    client: redis::Client,
    instance: String,
    config: RedisConfig,
    local: Mutex<Local<M>>,
    epoch: Mutex<String>,
    next_token: AtomicU64,
    rng: Mutex<StdRng>,
    scripts: Scripts,
    stop: CancellationToken,
    /// Operations that failed because Redis could not be reached.
    errors: AtomicU64,
}

/// A room store in Redis; see the module documentation. Cloning shares it.
pub struct RedisStore<M> {
    inner: Arc<Inner<M>>,
}

impl<M> Clone for RedisStore<M> {
    fn clone(&self) -> Self {
        RedisStore {
            inner: self.inner.clone(),
        }
    }
}

/// What a sweep of the local mailboxes did.
#[derive(Debug, Default)]
pub struct RedisSweep {
    pub idle: usize,
    pub lifetime: usize,
}

impl<M: Mailbox> RedisStore<M> {
    /// Connects to Redis, registers this instance and starts listening for messages. Fails
    /// (within a few seconds) if Redis cannot be reached.
    pub async fn connect(config: RedisConfig) -> Result<Self, RedisStoreError> {
        let shown = redact_url(&config.url);
        let client = match &config.ca_pem {
            Some(pem) if config.url.starts_with("rediss://") => redis::Client::build_with_tls(
                config.url.as_str(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            ),
            _ => redis::Client::open(config.url.as_str()),
        }
        .map_err(|source| RedisStoreError::Url {
            url: shown.clone(),
            source,
        })?;
        let unreachable = |why: String| RedisStoreError::Unreachable {
            url: shown.clone(),
            why,
        };
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(OPERATION_TIMEOUT))
            .set_response_timeout(Some(OPERATION_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let con = tokio::time::timeout(
            OPERATION_TIMEOUT * 3,
            client.get_connection_manager_with_config(manager_config),
        )
        .await
        .map_err(|_| unreachable("timed out".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
        let mut rng = StdRng::from_os_rng();
        let instance = format!("{:016x}", rng.random::<u64>());
        let inner = Arc::new(Inner {
            con,
            client,
            instance,
            config,
            local: Mutex::new(Local {
                rooms: HashMap::new(),
                mailboxes: 0,
            }),
            epoch: Mutex::new(String::new()),
            next_token: AtomicU64::new(0),
            rng: Mutex::new(rng),
            scripts: Scripts::load(),
            stop: CancellationToken::new(),
            errors: AtomicU64::new(0),
        });
        let epoch = inner
            .heartbeat()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        *lock(&inner.epoch) = epoch;
        let pubsub = inner
            .subscribe()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        tokio::spawn(pubsub::listen(
            Arc::downgrade(&inner),
            pubsub,
            inner.stop.clone(),
        ));
        tokio::spawn(heartbeat::beat(Arc::downgrade(&inner), inner.stop.clone()));
        tracing::info!(
            instance = %inner.instance,
            "sharing rooms through Redis at {}",
            redact_url(&inner.config.url)
        );
        Ok(RedisStore { inner })
    }

    /// This instance's id in Redis.
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    /// Rooms with a mailbox on this instance, and those mailboxes.
    pub fn counts(&self) -> (usize, usize) {
        let local = lock(&self.inner.local);
        (local.rooms.len(), local.mailboxes)
    }

    /// Operations that failed because Redis could not be reached, since the start.
    pub fn errors(&self) -> u64 {
        self.inner.errors.load(Ordering::Relaxed)
    }

    /// Stops the heartbeat and the message listener: other instances treat this one's
    /// mailboxes as gone after three heartbeats.
    pub fn stop(&self) {
        self.inner.stop.cancel();
    }

    /// Closes local mailboxes that were idle too long or whose room reached its lifetime, and
    /// removes them from their rooms.
    pub async fn sweep(&self, now: Instant) -> RedisSweep {
        let limits = &self.inner.config.limits;
        let mut gone = Vec::new();
        {
            let mut local = lock(&self.inner.local);
            let mut removed = 0;
            local.rooms.retain(|name, members| {
                members.retain(|id, m| {
                    let reason = if now.saturating_duration_since(m.created) >= limits.room_lifetime
                    {
                        EvictReason::RoomLifetime
                    } else if now.saturating_duration_since(m.last_activity) >= limits.idle_timeout
                    {
                        EvictReason::Idle
                    } else {
                        return true;
                    };
                    gone.push((name.clone(), *id, m.serial, m.token.clone(), reason));
                    m.handle.close(match reason {
                        EvictReason::Idle => CloseReason::Idle,
                        EvictReason::RoomLifetime => CloseReason::RoomLifetime,
                    });
                    removed += 1;
                    false
                });
                !members.is_empty()
            });
            local.mailboxes -= removed;
        }
        let mut sweep = RedisSweep::default();
        for (name, id, serial, token, reason) in gone {
            match reason {
                EvictReason::Idle => sweep.idle += 1,
                EvictReason::RoomLifetime => sweep.lifetime += 1,
            }
            self.inner.leave_in_redis(&name, serial, id, &token).await;
        }
        sweep
    }

    /// Empties this instance's part (shutdown); returns every local mailbox handle. The
    /// mailboxes leave their rooms in Redis as their sockets close.
    pub fn drain(&self) -> Vec<M> {
        self.inner.take_all()
    }
}

impl<M: Mailbox> Inner<M> {
    /// A token for a new connection's membership, `INSTANCE/N`.
    pub(super) fn new_token(&self) -> String {
        format!(
            "{}/{}",
            self.instance,
            self.next_token.fetch_add(1, Ordering::Relaxed)
        )
    }

    pub(super) fn failed(&self, what: &str, e: &redis::RedisError) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!("Redis {what} failed: {e}");
    }

    pub(super) async fn run<T: redis::FromRedisValue>(
        &self,
        inv: redis::ScriptInvocation<'_>,
    ) -> redis::RedisResult<T> {
        let mut con = self.con.clone();
        bounded(inv.invoke_async(&mut con)).await
    }
}

/// A Redis operation that takes longer than [`OPERATION_TIMEOUT`] fails.
async fn bounded<T>(
    fut: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    match tokio::time::timeout(OPERATION_TIMEOUT, fut).await {
        Ok(r) => r,
        Err(_) => Err(redis::RedisError::from((redis::ErrorKind::Io, "timed out"))),
    }
}

// A panic while a lock was held leaves plain maps and counters, each whole: keep using them.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
fn unavailable_or<E>(e: &redis::RedisError, inner: &Inner<impl Mailbox>, what: &str, v: E) -> E {
    inner.failed(what, e);
    v
}
impl<M> Drop for Inner<M> {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
