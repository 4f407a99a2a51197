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

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sha1::{Digest, Sha1};
use tokio_util::sync::CancellationToken;

use crate::ratelimit::ClientKey;
use crate::registry::{
    CreateError, CreateOptions, EvictReason, JoinError, MailboxId, OWNER_ID, RegistryLimits,
    RoomRef,
};
use crate::store::{CloseReason, Created, Mailbox, Relayed, RoomStore};

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

struct Member<M> {
    serial: u64,
    token: String,
    handle: M,
    last_activity: Instant,
    created: Instant,
}

impl<M> Member<M> {
    /// Whether this membership is the one `room` refers to (not a later one with the same id).
    fn is(&self, room: &RoomRef) -> bool {
        room_ref(&room.name, self.serial, &self.token) == *room
    }

    /// A member of a room created `age_ms` ago (by Redis's clock).
    fn new(serial: u64, token: String, handle: M, now: Instant, age_ms: u64) -> Self {
        Member {
            serial,
            token,
            handle,
            last_activity: now,
            created: now
                .checked_sub(Duration::from_millis(age_ms))
                .unwrap_or(now),
        }
    }
}

#[derive(Default)]
struct Local<M> {
    rooms: HashMap<String, HashMap<MailboxId, Member<M>>>,
    mailboxes: usize,
}

struct Scripts {
    create: redis::Script,
    join: redis::Script,
    reclaim: redis::Script,
    leave: redis::Script,
    relay: redis::Script,
    heartbeat: redis::Script,
    janitor: redis::Script,
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

const LUA_PRELUDE: &str = r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function instance_of(v)
  return string.match(v, '^([^/]+)/')
end
local function alive(v)
  local inst = instance_of(v)
  return inst ~= nil and redis.call('EXISTS', 'yakk:alive:' .. inst) == 1
end
local function settle(name, now)
  local rk = 'yakk:room:' .. name
  local mk = 'yakk:mb:' .. name
  local r = redis.call('HMGET', rk, 'created', 'life', 'grace')
  if not r[1] then return end
  local at = tonumber(r[1]) + tonumber(r[2])
  if redis.call('EXISTS', mk) == 0 then
    at = math.min(at, now + tonumber(r[3]))
  end
  redis.call('PEXPIREAT', rk, at)
  redis.call('PEXPIREAT', mk, at)
  redis.call('ZADD', 'yakk:rooms', at, name)
end
local function rate(key, limit)
  if limit <= 0 then return true end
  local n = redis.call('INCR', key)
  if n == 1 then redis.call('PEXPIRE', key, 60000) end
  return n <= limit
end
local function prune(name)
  local mk = 'yakk:mb:' .. name
  local all = redis.call('HGETALL', mk)
  for i = 1, #all, 2 do
    if not alive(all[i + 1]) then redis.call('HDEL', mk, all[i]) end
  end
end
"#;

// ARGV: token, rate key, rate limit, max rooms, lifetime ms, grace ms, max joiners (-1: none),
// serial, secret hash, name candidates…
const LUA_CREATE: &str = r#"
local now = now_ms()
if not rate(ARGV[2], tonumber(ARGV[3])) then return {'rate'} end
redis.call('ZREMRANGEBYSCORE', 'yakk:rooms', '-inf', now)
local live = redis.call('ZCARD', 'yakk:rooms')
if live >= tonumber(ARGV[4]) then return {'full'} end
local space = 999
while live > math.floor(space / 10) do space = space * 10 + 9 end
local half = math.floor((#ARGV - 9) / 2)
for i = 10, #ARGV do
  if i == 10 + half then space = space * 10 + 9 end
  local name = string.format('%.0f', math.fmod(tonumber(ARGV[i]), space) + 1)
  local rk = 'yakk:room:' .. name
  if redis.call('EXISTS', rk) == 0 then
    redis.call('HSET', rk, 'serial', ARGV[8], 'next', 1, 'admitted', 0, 'max', ARGV[7],
      'created', now, 'life', ARGV[5], 'grace', ARGV[6], 'secret', ARGV[9])
    redis.call('HSET', 'yakk:mb:' .. name, '0', ARGV[1])
    settle(name, now)
    return {'ok', name}
  end
end
return {'retry'}
"#;

// The start of join and reclaim. ARGV: token, rate key, rate limit, name, …
const LUA_ADMIT: &str = r#"
local now = now_ms()
if not rate(ARGV[2], tonumber(ARGV[3])) then return {'rate'} end
local name = ARGV[4]
local rk = 'yakk:room:' .. name
local mk = 'yakk:mb:' .. name
"#;

// ARGV: token, rate key, rate limit, name, max mailboxes per room.
const LUA_JOIN: &str = r#"
if redis.call('EXISTS', rk) == 0 then return {'nosuch'} end
prune(name)
if redis.call('HEXISTS', mk, '0') == 0 then
  settle(name, now)
  return {'nosuch'}
end
local r = redis.call('HMGET', rk, 'serial', 'next', 'admitted', 'max', 'created')
local admitted = tonumber(r[3])
local max = tonumber(r[4])
if redis.call('HLEN', mk) >= tonumber(ARGV[5]) or (max >= 0 and admitted >= max) then
  return {'full'}
end
local id = tonumber(r[2])
redis.call('HSET', rk, 'next', id + 1, 'admitted', admitted + 1)
redis.call('HSET', mk, string.format('%d', id), ARGV[1])
settle(name, now)
return {'ok', r[1], string.format('%d', id), string.format('%d', now - tonumber(r[5]))}
"#;

// ARGV: token, rate key, rate limit, name, secret hash.
const LUA_RECLAIM: &str = r#"
local r = redis.call('HMGET', rk, 'secret', 'serial', 'created')
if not r[1] or r[1] ~= ARGV[5] then return {'nosuch'} end
local old = redis.call('HGET', mk, '0')
redis.call('HSET', mk, '0', ARGV[1])
settle(name, now)
if old and old ~= ARGV[1] then
  local inst = instance_of(old)
  if inst then redis.call('PUBLISH', 'yakk:to:' .. inst, 'k\n' .. name .. '\n' .. old) end
end
return {'ok', r[2], string.format('%d', now - tonumber(r[3]))}
"#;

// ARGV: name, serial, id, token.
const LUA_LEAVE: &str = r#"
local now = now_ms()
local name = ARGV[1]
if redis.call('HGET', 'yakk:room:' .. name, 'serial') ~= ARGV[2] then return 0 end
if redis.call('HGET', 'yakk:mb:' .. name, ARGV[3]) ~= ARGV[4] then return 0 end
redis.call('HDEL', 'yakk:mb:' .. name, ARGV[3])
settle(name, now)
return 1
"#;

// ARGV: name, serial, from, to, sender's token, frame, this instance.
const LUA_RELAY: &str = r#"
local name = ARGV[1]
local mk = 'yakk:mb:' .. name
if redis.call('HGET', 'yakk:room:' .. name, 'serial') ~= ARGV[2] then return {'gone'} end
if redis.call('HGET', mk, ARGV[3]) ~= ARGV[5] then return {'gone'} end
if ARGV[3] == ARGV[4] then return {'self'} end
local v = redis.call('HGET', mk, ARGV[4])
if not v then return {'unknown'} end
if not alive(v) then
  redis.call('HDEL', mk, ARGV[4])
  return {'unknown'}
end
local inst = instance_of(v)
if inst == ARGV[7] then return {'local', v} end
redis.call('PUBLISH', 'yakk:to:' .. inst, 'm\n' .. name .. '\n' .. ARGV[4] .. '\n' .. v .. '\n' .. ARGV[6])
return {'sent'}
"#;

// ARGV: instance, alive ttl ms, epoch candidate.
const LUA_HEARTBEAT: &str = r#"
redis.call('SET', 'yakk:alive:' .. ARGV[1], 1, 'PX', ARGV[2])
local e = redis.call('GET', 'yakk:epoch')
if not e then
  redis.call('SET', 'yakk:epoch', ARGV[3])
  e = ARGV[3]
end
return e
"#;

// ARGV: room names. Forgets the mailboxes of instances that stopped and sets each room's expiry
// again: a room whose members all were on a killed instance then goes after its grace period
// instead of waiting for someone to look at it.
const LUA_JANITOR: &str = r#"
local now = now_ms()
for i = 1, #ARGV do
  if redis.call('EXISTS', 'yakk:room:' .. ARGV[i]) == 1 then
    prune(ARGV[i])
    settle(ARGV[i], now)
  else
    redis.call('DEL', 'yakk:mb:' .. ARGV[i])
  end
end
return #ARGV
"#;

/// Rooms the janitor looks at per heartbeat (a `SCAN` step over the mailbox keys).
const JANITOR_BATCH: usize = 200;

fn script(parts: &[&str]) -> redis::Script {
    redis::Script::new(&format!("{LUA_PRELUDE}{}", parts.concat()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn secret_hash(secret: &str) -> String {
    hex(&Sha1::digest(secret.as_bytes()))
}

fn rate_key(kind: &str, client: ClientKey) -> String {
    format!("yakk:rate:{kind}:{}", client.ip())
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
            scripts: Scripts {
                create: script(&[LUA_CREATE]),
                join: script(&[LUA_ADMIT, LUA_JOIN]),
                reclaim: script(&[LUA_ADMIT, LUA_RECLAIM]),
                leave: script(&[LUA_LEAVE]),
                relay: script(&[LUA_RELAY]),
                heartbeat: script(&[LUA_HEARTBEAT]),
                janitor: script(&[LUA_JANITOR]),
            },
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
        tokio::spawn(listen(Arc::downgrade(&inner), pubsub, inner.stop.clone()));
        tokio::spawn(beat(Arc::downgrade(&inner), inner.stop.clone()));
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
    fn new_token(&self) -> String {
        format!(
            "{}/{}",
            self.instance,
            self.next_token.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn failed(&self, what: &str, e: &redis::RedisError) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!("Redis {what} failed: {e}");
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        inv: redis::ScriptInvocation<'_>,
    ) -> redis::RedisResult<T> {
        let mut con = self.con.clone();
        bounded(inv.invoke_async(&mut con)).await
    }

    /// Runs a join or reclaim script (rate-limited as joins) for a new connection's token.
    async fn admit(
        &self,
        script: &redis::Script,
        name: &str,
        client: ClientKey,
        last: &str,
    ) -> Result<(String, Vec<String>), JoinError> {
        let token = self.new_token();
        let mut inv = script.prepare_invoke();
        inv.arg(&token)
            .arg(rate_key("join", client))
            .arg(self.config.joins_per_minute)
            .arg(name)
            .arg(last);
        match self.run(inv).await {
            Ok(reply) => Ok((token, reply)),
            Err(e) => Err(unavailable_or(&e, self, "join", JoinError::Unavailable)),
        }
    }

    /// One step of the janitor: the next batch of rooms in a `SCAN` over all of them; returns
    /// the cursor for the next step (0: a pass is complete).
    async fn janitor(&self, cursor: u64) -> redis::RedisResult<u64> {
        let mut con = self.con.clone();
        let (next, keys): (u64, Vec<String>) = bounded(
            redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg("yakk:mb:*")
                .arg("COUNT")
                .arg(JANITOR_BATCH)
                .query_async(&mut con),
        )
        .await?;
        let names: Vec<&str> = keys
            .iter()
            .filter_map(|k| k.strip_prefix("yakk:mb:"))
            .collect();
        if !names.is_empty() {
            let mut inv = self.scripts.janitor.prepare_invoke();
            for n in names {
                inv.arg(n);
            }
            self.run::<i64>(inv).await?;
        }
        Ok(next)
    }

    async fn heartbeat(&self) -> redis::RedisResult<String> {
        let candidate = format!("{:016x}", lock(&self.rng).random::<u64>());
        let ttl = (self.config.heartbeat * 3).as_millis() as u64;
        let mut inv = self.scripts.heartbeat.prepare_invoke();
        inv.arg(&self.instance).arg(ttl).arg(candidate);
        self.run(inv).await
    }

    async fn subscribe(&self) -> redis::RedisResult<redis::aio::PubSub> {
        let channel = format!("yakk:to:{}", self.instance);
        let fut = async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(channel).await?;
            Ok(pubsub)
        };
        bounded(fut).await
    }

    fn add_local(&self, name: &str, id: MailboxId, member: Member<M>) {
        let mut local = lock(&self.local);
        let members = local.rooms.entry(name.to_string()).or_default();
        let old = members.insert(id, member);
        let added = old.is_none();
        if let Some(old) = old {
            // The owner reclaimed its room on this same instance: its old socket goes.
            old.handle.close(CloseReason::Reclaimed);
        }
        if added {
            local.mailboxes += 1;
        }
    }

    /// Removes a local member if it is still the one with `token`.
    fn remove_local(&self, name: &str, id: MailboxId, token: &str) -> Option<Member<M>> {
        let mut local = lock(&self.local);
        let members = local.rooms.get_mut(name)?;
        if members.get(&id).is_none_or(|m| m.token != token) {
            return None;
        }
        let m = members.remove(&id);
        if members.is_empty() {
            local.rooms.remove(name);
        }
        local.mailboxes -= 1;
        m
    }

    async fn leave_in_redis(&self, name: &str, serial: u64, id: MailboxId, token: &str) -> bool {
        let mut inv = self.scripts.leave.prepare_invoke();
        inv.arg(name).arg(serial.to_string()).arg(id).arg(token);
        match self.run::<i64>(inv).await {
            Ok(n) => n == 1,
            Err(e) => {
                self.failed("leave", &e);
                false
            }
        }
    }

    fn touch(&self, name: &str, id: MailboxId, now: Instant) {
        let mut local = lock(&self.local);
        if let Some(m) = local.rooms.get_mut(name).and_then(|r| r.get_mut(&id)) {
            m.last_activity = now;
        }
    }

    /// Delivers a frame to a local member with `token`; a slow one is closed and removed.
    async fn deliver_local(&self, name: &str, id: MailboxId, token: &str, frame: Bytes) -> bool {
        let now = Instant::now();
        let target = {
            let mut local = lock(&self.local);
            match local.rooms.get_mut(name).and_then(|r| r.get_mut(&id)) {
                Some(m) if m.token == token => {
                    m.last_activity = now;
                    (m.handle.clone(), m.serial)
                }
                _ => return false,
            }
        };
        if target.0.deliver(frame) {
            return true;
        }
        if self.remove_local(name, id, token).is_some() {
            target.0.close(CloseReason::SlowConsumer);
            self.leave_in_redis(name, target.1, id, token).await;
        }
        false
    }

    /// One message from the instance channel.
    async fn on_message(&self, payload: &[u8]) {
        let mut parts = payload.splitn(5, |b| *b == b'\n');
        let kind = parts.next().unwrap_or_default();
        fn text(p: Option<&[u8]>) -> Option<&str> {
            p.and_then(|b| std::str::from_utf8(b).ok())
        }
        match kind {
            b"m" => {
                let (Some(name), Some(to), Some(token), Some(frame)) = (
                    text(parts.next()),
                    text(parts.next()).and_then(|s| s.parse::<MailboxId>().ok()),
                    text(parts.next()),
                    parts.next(),
                ) else {
                    tracing::debug!("ignoring a malformed message from Redis");
                    return;
                };
                let frame = Bytes::copy_from_slice(frame);
                self.deliver_local(name, to, token, frame).await;
            }
            b"k" => {
                let (Some(name), Some(token)) = (text(parts.next()), text(parts.next())) else {
                    return;
                };
                if let Some(m) = self.remove_local(name, OWNER_ID, token) {
                    m.handle.close(CloseReason::Reclaimed);
                }
            }
            _ => tracing::debug!("ignoring an unknown message from Redis"),
        }
    }

    /// Forgets every local mailbox; returns their handles.
    fn take_all(&self) -> Vec<M> {
        let mut local = lock(&self.local);
        local.mailboxes = 0;
        local
            .rooms
            .drain()
            .flat_map(|(_, members)| members.into_values().map(|m| m.handle))
            .collect()
    }

    /// Redis lost its data: every local room is gone.
    fn lose_everything(&self) {
        let handles = self.take_all();
        if !handles.is_empty() {
            tracing::warn!(
                "Redis lost its rooms (restarted without its data): closing {} sockets",
                handles.len()
            );
        }
        for h in handles {
            h.close(CloseReason::RoomLost);
        }
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

/// A room reference for the membership holding `token`.
fn room_ref(name: &str, serial: u64, token: &str) -> RoomRef {
    let member = token
        .rsplit('/')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX);
    RoomRef::new(name.to_string(), serial, member)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Receives this instance's messages; resubscribes after Redis comes back.
async fn listen<M: Mailbox>(
    inner: std::sync::Weak<Inner<M>>,
    first: redis::aio::PubSub,
    stop: CancellationToken,
) {
    let mut pubsub = Some(first);
    loop {
        if let Some(p) = pubsub.take() {
            let mut stream = p.into_on_message();
            loop {
                let msg = tokio::select! {
                    _ = stop.cancelled() => return,
                    msg = stream.next() => msg,
                };
                let Some(msg) = msg else { break };
                let Some(inner) = inner.upgrade() else { return };
                inner.on_message(msg.get_payload_bytes()).await;
            }
            tracing::warn!("lost the Redis subscription; reconnecting");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        let Some(inner) = inner.upgrade() else { return };
        match inner.subscribe().await {
            Ok(p) => {
                tracing::info!("subscribed to Redis again");
                pubsub = Some(p);
            }
            Err(e) => inner.failed("subscribe", &e),
        }
    }
}

/// Keeps this instance alive in Redis and notices when Redis lost its data.
async fn beat<M: Mailbox>(inner: std::sync::Weak<Inner<M>>, stop: CancellationToken) {
    let period = match inner.upgrade() {
        Some(i) => i.config.heartbeat,
        None => return,
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut cursor = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(inner) = inner.upgrade() else { return };
        match inner.heartbeat().await {
            Ok(epoch) => {
                let changed = {
                    let mut known = lock(&inner.epoch);
                    let changed = *known != epoch;
                    *known = epoch;
                    changed
                };
                if changed {
                    inner.lose_everything();
                }
            }
            Err(e) => inner.failed("heartbeat", &e),
        }
        match inner.janitor(cursor).await {
            Ok(next) => cursor = next,
            Err(e) => {
                inner.failed("janitor", &e);
                cursor = 0;
            }
        }
    }
}

fn unavailable_or<E>(e: &redis::RedisError, inner: &Inner<impl Mailbox>, what: &str, v: E) -> E {
    inner.failed(what, e);
    v
}

impl<M: Mailbox> RoomStore for RedisStore<M> {
    type Handle = M;

    async fn create(
        &self,
        owner: M,
        options: CreateOptions,
        client: ClientKey,
        now: Instant,
    ) -> Result<Created, CreateError> {
        let inner = &self.inner;
        let limits = &inner.config.limits;
        let (rate_key, rate) = (rate_key("create", client), inner.config.creates_per_minute);
        let token = inner.new_token();
        let (serial, secret, candidates) = {
            let mut rng = lock(&inner.rng);
            let serial = rng.random::<u64>();
            let secret = hex(&rng.random::<[u8; 16]>());
            // Below 2^52: exact in Lua's doubles.
            let candidates: Vec<u64> = (0..NAME_CANDIDATES)
                .map(|_| rng.random_range(0..1u64 << 52))
                .collect();
            (serial, secret, candidates)
        };
        let grace = if options.keep_alive {
            limits.keep_alive_grace
        } else {
            limits.empty_room_grace
        }
        .max(inner.config.reclaim_grace);
        let mut inv = inner.scripts.create.prepare_invoke();
        inv.arg(&token)
            .arg(rate_key)
            .arg(rate)
            .arg(limits.max_rooms)
            .arg(limits.room_lifetime.as_millis() as u64)
            .arg(grace.as_millis() as u64)
            .arg(options.max_joiners.map_or(-1, i64::from))
            .arg(serial.to_string())
            .arg(secret_hash(&secret));
        for c in candidates {
            inv.arg(c);
        }
        let reply: Vec<String> = match inner.run(inv).await {
            Ok(r) => r,
            Err(e) => {
                return Err(unavailable_or(
                    &e,
                    inner,
                    "create",
                    CreateError::Unavailable,
                ));
            }
        };
        match reply.first().map(String::as_str) {
            Some("ok") if reply.len() == 2 => {
                let name = reply[1].clone();
                let room = room_ref(&name, serial, &token);
                inner.add_local(&name, OWNER_ID, Member::new(serial, token, owner, now, 0));
                Ok(Created {
                    room,
                    reclaim: Some(secret),
                })
            }
            Some("rate") => Err(CreateError::RateLimited),
            Some("full") => Err(CreateError::TooManyRooms),
            // 32 draws all hit live rooms: the space is crowded beyond reason.
            _ => Err(CreateError::TooManyRooms),
        }
    }

    async fn join(
        &self,
        name: &str,
        joiner: M,
        client: ClientKey,
        now: Instant,
    ) -> Result<(RoomRef, MailboxId), JoinError> {
        let inner = &self.inner;
        let cap = inner.config.limits.max_mailboxes_per_room.to_string();
        let (token, reply) = inner.admit(&inner.scripts.join, name, client, &cap).await?;
        match reply.first().map(String::as_str) {
            Some("ok") if reply.len() == 4 => {
                let (Ok(serial), Ok(id), Ok(age)) = (
                    reply[1].parse::<u64>(),
                    reply[2].parse::<MailboxId>(),
                    reply[3].parse::<u64>(),
                ) else {
                    return Err(JoinError::Unavailable);
                };
                let room = room_ref(name, serial, &token);
                inner.add_local(name, id, Member::new(serial, token, joiner, now, age));
                Ok((room, id))
            }
            Some("rate") => Err(JoinError::RateLimited),
            Some("full") => Err(JoinError::RoomFull),
            _ => Err(JoinError::NoSuchRoom),
        }
    }

    async fn reclaim(
        &self,
        name: &str,
        secret: &str,
        owner: M,
        client: ClientKey,
        now: Instant,
    ) -> Result<Created, JoinError> {
        let inner = &self.inner;
        let hash = secret_hash(secret);
        let (token, reply) = inner
            .admit(&inner.scripts.reclaim, name, client, &hash)
            .await?;
        match reply.first().map(String::as_str) {
            Some("ok") if reply.len() == 3 => {
                let (Ok(serial), Ok(age)) = (reply[1].parse::<u64>(), reply[2].parse::<u64>())
                else {
                    return Err(JoinError::Unavailable);
                };
                let room = room_ref(name, serial, &token);
                inner.add_local(name, OWNER_ID, Member::new(serial, token, owner, now, age));
                Ok(Created {
                    room,
                    reclaim: Some(secret.to_string()),
                })
            }
            Some("rate") => Err(JoinError::RateLimited),
            _ => Err(JoinError::NoSuchRoom),
        }
    }

    async fn leave(&self, room: &RoomRef, id: MailboxId, _now: Instant) -> bool {
        let inner = &self.inner;
        let token = {
            let local = lock(&inner.local);
            match local.rooms.get(&room.name).and_then(|r| r.get(&id)) {
                Some(m) if m.serial == room.serial() && m.is(room) => m.token.clone(),
                _ => return false,
            }
        };
        inner.remove_local(&room.name, id, &token);
        inner
            .leave_in_redis(&room.name, room.serial(), id, &token)
            .await
    }

    async fn relay(
        &self,
        room: &RoomRef,
        from: MailboxId,
        to: MailboxId,
        frame: Bytes,
        now: Instant,
    ) -> Relayed {
        let inner = &self.inner;
        let token = {
            let local = lock(&inner.local);
            match local.rooms.get(&room.name).and_then(|r| r.get(&from)) {
                Some(m) if m.serial == room.serial() && m.is(room) => m.token.clone(),
                _ => return Relayed::SenderGone,
            }
        };
        let mut inv = inner.scripts.relay.prepare_invoke();
        inv.arg(&room.name)
            .arg(room.serial().to_string())
            .arg(from)
            .arg(to)
            .arg(&token)
            .arg(frame.as_ref())
            .arg(&inner.instance);
        let reply: Vec<String> = match inner.run(inv).await {
            Ok(r) => r,
            Err(e) => return unavailable_or(&e, inner, "relay", Relayed::Unavailable),
        };
        match reply.first().map(String::as_str) {
            Some("sent") => {
                inner.touch(&room.name, from, now);
                Relayed::Delivered
            }
            Some("local") if reply.len() == 2 => {
                inner.touch(&room.name, from, now);
                if inner.deliver_local(&room.name, to, &reply[1], frame).await {
                    Relayed::Delivered
                } else {
                    Relayed::SlowConsumer
                }
            }
            Some("self") => Relayed::SelfAddressed,
            Some("unknown") => Relayed::UnknownRecipient,
            _ => {
                // The room is gone from Redis while this socket is still in it here.
                if let Some(m) = inner.remove_local(&room.name, from, &token) {
                    m.handle.close(CloseReason::RoomLost);
                }
                Relayed::SenderGone
            }
        }
    }
}

impl<M> Drop for Inner<M> {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
