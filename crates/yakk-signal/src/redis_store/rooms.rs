//! The room operations of [`RedisStore`]: create, join, reclaim, leave and relay, each one
//! script run atomically by Redis.

use std::time::Instant;

use bytes::Bytes;
use rand::Rng;

use super::local::{Member, room_ref};
use super::scripts::{hex, rate_key, secret_hash};
use super::{Inner, NAME_CANDIDATES, RedisStore, lock, unavailable_or};
use crate::ratelimit::ClientKey;
use crate::registry::{CreateError, CreateOptions, JoinError, MailboxId, OWNER_ID, RoomRef};
use crate::store::{CloseReason, Created, Mailbox, Relayed, RoomStore};

impl<M: Mailbox> Inner<M> {
    /// Runs a join or reclaim script (rate-limited as joins) for a new connection's token.
    pub(super) async fn admit(
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

    pub(super) async fn leave_in_redis(
        &self,
        name: &str,
        serial: u64,
        id: MailboxId,
        token: &str,
    ) -> bool {
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
