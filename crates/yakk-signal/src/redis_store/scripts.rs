//! The key layout in Redis and the Lua scripts that read and change it (see the module
//! documentation of `redis_store` for what each key holds).

use sha1::{Digest, Sha1};

use crate::ratelimit::ClientKey;

pub(super) struct Scripts {
    pub(super) create: redis::Script,
    pub(super) join: redis::Script,
    pub(super) reclaim: redis::Script,
    pub(super) leave: redis::Script,
    pub(super) relay: redis::Script,
    pub(super) heartbeat: redis::Script,
    pub(super) janitor: redis::Script,
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
pub(super) const JANITOR_BATCH: usize = 200;

fn script(parts: &[&str]) -> redis::Script {
    redis::Script::new(&format!("{LUA_PRELUDE}{}", parts.concat()))
}

impl Scripts {
    pub(super) fn load() -> Self {
        Scripts {
            create: script(&[LUA_CREATE]),
            join: script(&[LUA_ADMIT, LUA_JOIN]),
            reclaim: script(&[LUA_ADMIT, LUA_RECLAIM]),
            leave: script(&[LUA_LEAVE]),
            relay: script(&[LUA_RELAY]),
            heartbeat: script(&[LUA_HEARTBEAT]),
            janitor: script(&[LUA_JANITOR]),
        }
    }
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn secret_hash(secret: &str) -> String {
    hex(&Sha1::digest(secret.as_bytes()))
}

pub(super) fn rate_key(kind: &str, client: ClientKey) -> String {
    format!("yakk:rate:{kind}:{}", client.ip())
}
