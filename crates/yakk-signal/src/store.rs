//! One interface to the rooms, whatever holds them: [`RoomStore`].
//!
//! Two implementations:
//! - [`LocalStore`]: the in-process [`Registry`] behind a mutex, plus the per-client token
//!   buckets. This is what `yakk signal` runs without `--redis`.
//! - [`RedisStore`](crate::redis_store::RedisStore): rooms in Redis, shared by every instance
//!   that uses the same Redis, with messages between instances over Redis pub/sub.
//!
//! A store does not know sockets: it holds a [`Mailbox`] handle per member that can take a
//! relayed frame or be told to close. The clock is the caller's (`now`) for everything the
//! store decides itself; the Redis store's room expiry runs on Redis's clock (key expiry), which
//! every instance shares.

use std::sync::Mutex;
use std::time::Instant;

use bytes::Bytes;

use crate::ratelimit::{ClientKey, RateLimiter};
use crate::registry::{
    CreateError, CreateOptions, JoinError, MailboxId, Registry, RoomRef, Route, Sweep,
};

/// Why a store closes a mailbox on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// No message relayed to or from it for the idle timeout.
    Idle,
    /// Its room reached the hard lifetime.
    RoomLifetime,
    /// It did not read its socket while messages for it piled up.
    SlowConsumer,
    /// Its owner took the room back through another connection (reclaim).
    Reclaimed,
    /// The shared store lost its rooms (Redis restarted without its data).
    RoomLost,
}

/// What a store needs from a member's socket.
pub trait Mailbox: Clone + Send + Sync + 'static {
    /// Queues a relayed frame. `false`: the mailbox's queue is over its budget (a slow
    /// consumer) or its socket is gone; the store then removes it.
    fn deliver(&self, frame: Bytes) -> bool;
    /// Asks the socket to close for this reason.
    fn close(&self, why: CloseReason);
}

/// A room just created (or taken back by its owner).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    pub room: RoomRef,
    /// The owner's secret to take the room back from any instance; only stores shared by
    /// several instances hand one out.
    pub reclaim: Option<String>,
}

/// What became of a relayed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relayed {
    /// Handed to the recipient's queue (here, or to the instance that holds it).
    Delivered,
    /// No mailbox with that id is in the room: dropped.
    UnknownRecipient,
    /// Addressed to its sender: dropped.
    SelfAddressed,
    /// The sender is no longer in the room (evicted, room deleted or lost).
    SenderGone,
    /// The recipient did not keep up and was disconnected.
    SlowConsumer,
    /// The store cannot be reached.
    Unavailable,
}

/// The rooms of a signalling service: creation, joins, reclaims, departures and the relay.
///
/// Both implementations are run by the same semantic tests (`tests/redis.rs`).
#[allow(async_fn_in_trait)]
pub trait RoomStore {
    type Handle: Mailbox;

    /// Creates a room owned by `owner` (mailbox [`OWNER_ID`](crate::registry::OWNER_ID)) for a client at `client`.
    async fn create(
        &self,
        owner: Self::Handle,
        options: CreateOptions,
        client: ClientKey,
        now: Instant,
    ) -> Result<Created, CreateError>;

    /// Adds a joiner to room `name`.
    async fn join(
        &self,
        name: &str,
        joiner: Self::Handle,
        client: ClientKey,
        now: Instant,
    ) -> Result<(RoomRef, MailboxId), JoinError>;

    /// Gives room `name` back to an owner that proves it with the secret it got at creation;
    /// a stale owner connection, if any, is closed. Unknown room or wrong secret: `NoSuchRoom`.
    async fn reclaim(
        &self,
        name: &str,
        secret: &str,
        owner: Self::Handle,
        client: ClientKey,
        now: Instant,
    ) -> Result<Created, JoinError>;

    /// Removes a mailbox whose socket went away; `true` if it was still there. `room` is the
    /// reference that mailbox got from `create`, `join` or `reclaim` (as for `relay`).
    async fn leave(&self, room: &RoomRef, id: MailboxId, now: Instant) -> bool;

    /// Relays `frame` from mailbox `from` to mailbox `to` of `room`.
    async fn relay(
        &self,
        room: &RoomRef,
        from: MailboxId,
        to: MailboxId,
        frame: Bytes,
        now: Instant,
    ) -> Relayed;
}

/// The in-process store: one [`Registry`] and the per-client rate limiters, behind a mutex.
pub struct LocalStore<M> {
    inner: Mutex<LocalState<M>>,
}

struct LocalState<M> {
    registry: Registry<M>,
    creates: RateLimiter,
    joins: RateLimiter,
}

impl<M> LocalStore<M> {
    pub fn new(registry: Registry<M>, creates: RateLimiter, joins: RateLimiter) -> Self {
        LocalStore {
            inner: Mutex::new(LocalState {
                registry,
                creates,
                joins,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LocalState<M>> {
        // A panic while the lock was held leaves the rooms as they were between two steps of
        // the registry: keep serving them rather than fail every socket.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Live rooms and mailboxes.
    pub fn counts(&self) -> (usize, usize) {
        let st = self.state();
        (st.registry.room_count(), st.registry.mailbox_count())
    }

    /// Expiry of rooms and mailboxes ([`Registry::sweep`]); with `prune`, also forgets
    /// rate-limit entries of clients back to a full allowance.
    pub fn sweep(&self, now: Instant, prune: bool) -> Sweep<M> {
        let mut st = self.state();
        if prune {
            st.creates.prune(now);
            st.joins.prune(now);
        }
        st.registry.sweep(now)
    }

    /// Empties the registry (shutdown); returns every mailbox handle.
    pub fn drain(&self) -> Vec<M> {
        self.state().registry.drain()
    }
}

impl<M: Mailbox> RoomStore for LocalStore<M> {
    type Handle = M;

    async fn create(
        &self,
        owner: M,
        options: CreateOptions,
        client: ClientKey,
        now: Instant,
    ) -> Result<Created, CreateError> {
        let mut st = self.state();
        if !st.creates.allow(client, now) {
            return Err(CreateError::RateLimited);
        }
        let room = st.registry.create(owner, options, now)?;
        Ok(Created {
            room,
            reclaim: None,
        })
    }

    async fn join(
        &self,
        name: &str,
        joiner: M,
        client: ClientKey,
        now: Instant,
    ) -> Result<(RoomRef, MailboxId), JoinError> {
        let mut st = self.state();
        if !st.joins.allow(client, now) {
            return Err(JoinError::RateLimited);
        }
        st.registry.join(name, joiner, now)
    }

    /// A single process hands out no reclaim secret, so there is nothing to reclaim.
    async fn reclaim(
        &self,
        _name: &str,
        _secret: &str,
        _owner: M,
        client: ClientKey,
        now: Instant,
    ) -> Result<Created, JoinError> {
        let mut st = self.state();
        if !st.joins.allow(client, now) {
            return Err(JoinError::RateLimited);
        }
        Err(JoinError::NoSuchRoom)
    }

    async fn leave(&self, room: &RoomRef, id: MailboxId, now: Instant) -> bool {
        self.state().registry.leave(room, id, now).is_some()
    }

    async fn relay(
        &self,
        room: &RoomRef,
        from: MailboxId,
        to: MailboxId,
        frame: Bytes,
        now: Instant,
    ) -> Relayed {
        let mut st = self.state();
        let target = match st.registry.route(room, from, to, now) {
            Route::Deliver(target) => target.clone(),
            Route::UnknownRecipient => return Relayed::UnknownRecipient,
            Route::SelfAddressed => return Relayed::SelfAddressed,
            Route::SenderGone => return Relayed::SenderGone,
        };
        if target.deliver(frame) {
            return Relayed::Delivered;
        }
        st.registry.leave(room, to, now);
        drop(st);
        target.close(CloseReason::SlowConsumer);
        Relayed::SlowConsumer
    }
}
