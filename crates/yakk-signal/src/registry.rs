//! The room registry: every live room, its mailboxes and the decisions of the relay, as a pure
//! data structure.
//!
//! Nothing here does I/O, reads a clock or spawns a task. The caller passes the current time to
//! every operation and carries out the decisions it gets back (deliver a frame, close a socket).
//! `M` is whatever handle the driver needs to reach a mailbox's socket; the tests use plain values.
//!
//! Invariants kept here:
//! - a room name is unique among live rooms, and a live room is never replaced;
//! - mailbox ids within a room come from a counter (owner 0, joiners 1, 2, 3, …) and are never
//!   reused, so a message addressed to a mailbox that left cannot reach a newcomer;
//! - a room is known to its members by a [`RoomRef`] (name plus a serial number unique for the
//!   registry's life), so a socket of a deleted room can never act on a later room of the same name.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A mailbox id inside one room.
pub type MailboxId = i64;

/// The owner's mailbox id, in every room (as in yakk/1).
pub const OWNER_ID: MailboxId = 0;

/// Smallest upper bound of the room-name space: names are 1..=999 while few rooms are open.
const MIN_NAME_SPACE: u64 = 999;

/// Draws per name space before moving to a ten times larger one. With the space kept at most
/// one tenth full, the chance of 32 collisions in a row is below 10⁻³².
const NAME_DRAWS: usize = 32;

/// Limits the registry enforces itself.
#[derive(Debug, Clone)]
pub struct RegistryLimits {
    /// Live rooms in total.
    pub max_rooms: usize,
    /// Mailboxes in one room at once, the owner's included.
    pub max_mailboxes_per_room: usize,
    /// How long an empty room waits for someone before it is deleted.
    pub empty_room_grace: Duration,
    /// The same for rooms created with `keepAlive=true`.
    pub keep_alive_grace: Duration,
    /// A mailbox that neither sent nor received a relayed message for this long is closed.
    pub idle_timeout: Duration,
    /// A room is deleted, and its mailboxes closed, this long after its creation.
    pub room_lifetime: Duration,
}

impl Default for RegistryLimits {
    fn default() -> Self {
        RegistryLimits {
            max_rooms: 100_000,
            max_mailboxes_per_room: 16,
            empty_room_grace: Duration::from_secs(5),
            keep_alive_grace: Duration::from_secs(120),
            idle_timeout: Duration::from_secs(3600),
            room_lifetime: Duration::from_secs(24 * 3600),
        }
    }
}

/// What the owner asks for when creating a room.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CreateOptions {
    /// Use the longer empty-room grace period.
    pub keep_alive: bool,
    /// Joiners admitted over the room's whole life (`maxPeers`); `None` means only the
    /// per-room mailbox limit applies.
    pub max_joiners: Option<u32>,
}

/// Names a room as its members know it: the name plus the serial of that room's creation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoomRef {
    pub name: String,
    serial: u64,
    /// Which connection holds the membership, where a mailbox id can pass from one
    /// connection to another (an owner reclaiming its room in Redis); 0 in the registry.
    member: u64,
}

impl RoomRef {
    pub(crate) fn new(name: String, serial: u64, member: u64) -> Self {
        RoomRef {
            name,
            serial,
            member,
        }
    }

    /// The serial of this room's creation (the registry's counter, or a random value in Redis).
    pub(crate) fn serial(&self) -> u64 {
        self.serial
    }
}

/// Why a room could not be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CreateError {
    #[error("too many rooms are open")]
    TooManyRooms,
    /// The client created too many rooms in the last minute (stores that rate-limit).
    #[error("too many rooms created from this address")]
    RateLimited,
    /// The shared store cannot be reached.
    #[error("the room store is unavailable")]
    Unavailable,
}

/// Why a room could not be joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    #[error("no such room")]
    NoSuchRoom,
    #[error("room is full")]
    RoomFull,
    /// The client tried to join too often in the last minute (stores that rate-limit).
    #[error("too many join attempts from this address")]
    RateLimited,
    /// The shared store cannot be reached.
    #[error("the room store is unavailable")]
    Unavailable,
}

/// Where a message from a mailbox goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a, M> {
    /// Deliver to this mailbox.
    Deliver(&'a M),
    /// No mailbox with that id is in the room (never was, or left): drop the message.
    UnknownRecipient,
    /// The sender addressed itself: drop the message. Talking to itself must not keep a
    /// mailbox (and so its room) alive.
    SelfAddressed,
    /// The sender itself is no longer in the room (evicted, or the room was deleted).
    SenderGone,
}

/// Why the registry closed a mailbox on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictReason {
    /// No message relayed to or from it for the idle timeout.
    Idle,
    /// Its room reached the hard lifetime.
    RoomLifetime,
}

/// A mailbox the registry removed during a sweep; the driver must close its socket.
#[derive(Debug, PartialEq, Eq)]
pub struct Eviction<M> {
    pub room: RoomRef,
    pub id: MailboxId,
    pub handle: M,
    pub reason: EvictReason,
}

/// What a sweep did.
#[derive(Debug, PartialEq, Eq)]
pub struct Sweep<M> {
    pub evicted: Vec<Eviction<M>>,
    /// Rooms deleted because they stayed empty for their grace period.
    pub rooms_expired: usize,
    /// Rooms deleted because they reached the hard lifetime.
    pub rooms_ended: usize,
}

struct Mailbox<M> {
    handle: M,
    last_activity: Instant,
}

struct Room<M> {
    serial: u64,
    mailboxes: BTreeMap<MailboxId, Mailbox<M>>,
    next_id: MailboxId,
    joiners_admitted: u32,
    max_joiners: Option<u32>,
    keep_alive: bool,
    created: Instant,
    empty_since: Option<Instant>,
}

/// Every live room. One owner: the server keeps it behind a single mutex.
pub struct Registry<M> {
    rooms: HashMap<String, Room<M>>,
    limits: RegistryLimits,
    rng: StdRng,
    next_serial: u64,
    mailboxes: usize,
}

impl<M> Registry<M> {
    /// A registry whose room names come from the operating system's random source.
    pub fn new(limits: RegistryLimits) -> Self {
        Self::with_rng(limits, StdRng::from_os_rng())
    }

    /// A registry with a given random generator (tests seed it).
    pub fn with_rng(limits: RegistryLimits, rng: StdRng) -> Self {
        Registry {
            rooms: HashMap::new(),
            limits,
            rng,
            next_serial: 0,
            mailboxes: 0,
        }
    }

    pub fn limits(&self) -> &RegistryLimits {
        &self.limits
    }

    /// Live rooms.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// Mailboxes in all rooms.
    pub fn mailbox_count(&self) -> usize {
        self.mailboxes
    }

    /// The upper bound of the name space for the current number of live rooms: 999 while at
    /// most 99 rooms are live, then ×10 each time live rooms exceed a tenth of it.
    pub fn name_space(&self) -> u64 {
        let live = self.rooms.len() as u64;
        let mut n = MIN_NAME_SPACE;
        while live > n / 10 {
            n = n.saturating_mul(10).saturating_add(9);
        }
        n
    }

    fn pick_name(&mut self) -> String {
        let mut n = self.name_space();
        loop {
            for _ in 0..NAME_DRAWS {
                let name = self.rng.random_range(1..=n).to_string();
                if !self.rooms.contains_key(&name) {
                    return name;
                }
            }
            n = n.saturating_mul(10).saturating_add(9);
        }
    }

    /// Creates a room with `handle` as its owner (mailbox [`OWNER_ID`]).
    pub fn create(
        &mut self,
        handle: M,
        options: CreateOptions,
        now: Instant,
    ) -> Result<RoomRef, CreateError> {
        if self.rooms.len() >= self.limits.max_rooms {
            return Err(CreateError::TooManyRooms);
        }
        let name = self.pick_name();
        let serial = self.next_serial;
        self.next_serial += 1;
        let mut mailboxes = BTreeMap::new();
        mailboxes.insert(
            OWNER_ID,
            Mailbox {
                handle,
                last_activity: now,
            },
        );
        self.rooms.insert(
            name.clone(),
            Room {
                serial,
                mailboxes,
                next_id: OWNER_ID + 1,
                joiners_admitted: 0,
                max_joiners: options.max_joiners,
                keep_alive: options.keep_alive,
                created: now,
                empty_since: None,
            },
        );
        self.mailboxes += 1;
        Ok(RoomRef {
            name,
            serial,
            member: 0,
        })
    }

    /// Adds a joiner to room `name`; returns the room and the joiner's new mailbox id.
    pub fn join(
        &mut self,
        name: &str,
        handle: M,
        now: Instant,
    ) -> Result<(RoomRef, MailboxId), JoinError> {
        let max_mailboxes = self.limits.max_mailboxes_per_room;
        let room = self.rooms.get_mut(name).ok_or(JoinError::NoSuchRoom)?;
        // A room whose owner has left has nobody to let a joiner in: its code no longer works
        // (the owner stopped, or closed the room after a failed password attempt).
        if !room.mailboxes.contains_key(&OWNER_ID) {
            return Err(JoinError::NoSuchRoom);
        }
        if room.mailboxes.len() >= max_mailboxes
            || room.max_joiners.is_some_and(|m| room.joiners_admitted >= m)
        {
            return Err(JoinError::RoomFull);
        }
        let id = room.next_id;
        room.next_id += 1;
        room.joiners_admitted = room.joiners_admitted.saturating_add(1);
        room.empty_since = None;
        room.mailboxes.insert(
            id,
            Mailbox {
                handle,
                last_activity: now,
            },
        );
        self.mailboxes += 1;
        Ok((
            RoomRef {
                name: name.to_string(),
                serial: room.serial,
                member: 0,
            },
            id,
        ))
    }

    fn room_mut(&mut self, room: &RoomRef) -> Option<&mut Room<M>> {
        self.rooms
            .get_mut(&room.name)
            .filter(|r| r.serial == room.serial)
    }

    /// Removes a mailbox whose socket went away. Returns its handle if it was still there.
    /// The room stays for its grace period once empty.
    pub fn leave(&mut self, room: &RoomRef, id: MailboxId, now: Instant) -> Option<M> {
        let r = self.room_mut(room)?;
        let mailbox = r.mailboxes.remove(&id)?;
        if r.mailboxes.is_empty() {
            r.empty_since = Some(now);
        }
        self.mailboxes -= 1;
        Some(mailbox.handle)
    }

    /// Decides where a message from mailbox `from` addressed to `recipient` goes. Only a message
    /// delivered to another mailbox counts as activity (of both): one to itself or to nobody
    /// keeps nothing alive.
    pub fn route(
        &mut self,
        room: &RoomRef,
        from: MailboxId,
        recipient: MailboxId,
        now: Instant,
    ) -> Route<'_, M> {
        let Some(r) = self.room_mut(room) else {
            return Route::SenderGone;
        };
        if !r.mailboxes.contains_key(&from) {
            return Route::SenderGone;
        }
        if recipient == from {
            return Route::SelfAddressed;
        }
        if !r.mailboxes.contains_key(&recipient) {
            return Route::UnknownRecipient;
        }
        if let Some(sender) = r.mailboxes.get_mut(&from) {
            sender.last_activity = now;
        }
        match r.mailboxes.get_mut(&recipient) {
            Some(target) => {
                target.last_activity = now;
                Route::Deliver(&target.handle)
            }
            None => Route::UnknownRecipient,
        }
    }

    /// Deletes expired rooms and evicts idle mailboxes. Call it now and then (the server does
    /// every second); the cost is linear in the number of mailboxes.
    pub fn sweep(&mut self, now: Instant) -> Sweep<M> {
        let limits = &self.limits;
        let mut evicted = Vec::new();
        let mut rooms_expired = 0;
        let mut rooms_ended = 0;
        let mut removed_mailboxes = 0;
        self.rooms.retain(|name, room| {
            if now.saturating_duration_since(room.created) >= limits.room_lifetime {
                rooms_ended += 1;
                let room_ref = RoomRef {
                    name: name.clone(),
                    serial: room.serial,
                    member: 0,
                };
                for (id, mailbox) in std::mem::take(&mut room.mailboxes) {
                    removed_mailboxes += 1;
                    evicted.push(Eviction {
                        room: room_ref.clone(),
                        id,
                        handle: mailbox.handle,
                        reason: EvictReason::RoomLifetime,
                    });
                }
                return false;
            }
            let idle: Vec<MailboxId> = room
                .mailboxes
                .iter()
                .filter(|(_, m)| {
                    now.saturating_duration_since(m.last_activity) >= limits.idle_timeout
                })
                .map(|(id, _)| *id)
                .collect();
            for id in idle {
                if let Some(mailbox) = room.mailboxes.remove(&id) {
                    removed_mailboxes += 1;
                    evicted.push(Eviction {
                        room: RoomRef {
                            name: name.clone(),
                            serial: room.serial,
                            member: 0,
                        },
                        id,
                        handle: mailbox.handle,
                        reason: EvictReason::Idle,
                    });
                }
            }
            if room.mailboxes.is_empty() {
                let since = *room.empty_since.get_or_insert(now);
                let grace = if room.keep_alive {
                    limits.keep_alive_grace
                } else {
                    limits.empty_room_grace
                };
                if now.saturating_duration_since(since) >= grace {
                    rooms_expired += 1;
                    return false;
                }
            }
            true
        });
        self.mailboxes -= removed_mailboxes;
        Sweep {
            evicted,
            rooms_expired,
            rooms_ended,
        }
    }

    /// Empties the registry (server shutdown); returns every mailbox handle.
    pub fn drain(&mut self) -> Vec<M> {
        self.mailboxes = 0;
        self.rooms
            .drain()
            .flat_map(|(_, room)| room.mailboxes.into_values().map(|m| m.handle))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(limits: RegistryLimits) -> Registry<&'static str> {
        Registry::with_rng(limits, StdRng::seed_from_u64(7))
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn create_gives_owner_zero_and_a_short_numeric_name() {
        let mut reg = registry(RegistryLimits::default());
        let now = Instant::now();
        let room = reg.create("owner", CreateOptions::default(), now).unwrap();
        let n: u64 = room.name.parse().unwrap();
        assert!((1..=999).contains(&n));
        assert!(!room.name.starts_with('0'));
        assert_eq!(reg.room_count(), 1);
        assert_eq!(reg.mailbox_count(), 1);
        let (_, j) = reg.join(&room.name, "joiner", now).unwrap();
        assert_eq!(reg.route(&room, j, OWNER_ID, now), Route::Deliver(&"owner"));
    }

    #[test]
    fn join_hands_out_increasing_ids_never_reused() {
        let mut reg = registry(RegistryLimits::default());
        let now = Instant::now();
        let room = reg.create("o", CreateOptions::default(), now).unwrap();
        let (r1, a) = reg.join(&room.name, "a", now).unwrap();
        let (_, b) = reg.join(&room.name, "b", now).unwrap();
        assert_eq!((a, b), (1, 2));
        assert_eq!(r1, room);
        assert_eq!(reg.leave(&room, b, now), Some("b"));
        assert_eq!(reg.leave(&room, b, now), None);
        let (_, c) = reg.join(&room.name, "c", now).unwrap();
        assert_eq!(c, 3, "an id is never handed out twice");
        // A message for the departed mailbox 2 does not reach the newcomer.
        assert_eq!(reg.route(&room, a, 2, now), Route::UnknownRecipient);
        assert_eq!(reg.route(&room, a, 3, now), Route::Deliver(&"c"));
        assert_eq!(reg.mailbox_count(), 3);
    }

    #[test]
    fn unknown_room_and_unknown_recipient() {
        let mut reg = registry(RegistryLimits::default());
        let now = Instant::now();
        assert_eq!(
            reg.join("nosuchroom", "x", now).unwrap_err(),
            JoinError::NoSuchRoom
        );
        let room = reg.create("o", CreateOptions::default(), now).unwrap();
        assert_eq!(reg.route(&room, 0, 5, now), Route::UnknownRecipient);
        assert_eq!(reg.route(&room, 0, -1, now), Route::UnknownRecipient);
        // A mailbox that is not in the room cannot send.
        assert_eq!(reg.route(&room, 9, 0, now), Route::SenderGone);
    }

    #[test]
    fn names_are_unique_and_space_grows_with_live_rooms() {
        let mut reg = registry(RegistryLimits::default());
        let now = Instant::now();
        assert_eq!(reg.name_space(), 999);
        let mut names = std::collections::HashSet::new();
        for i in 0..2000 {
            let room = reg.create("o", CreateOptions::default(), now).unwrap();
            assert!(!room.name.starts_with('0'));
            let n: u64 = room.name.parse().unwrap();
            assert!(n >= 1);
            assert!(names.insert(room.name.clone()), "duplicate name at {i}");
        }
        // 2000 live rooms exceed 9999/10, so names come from 1..=99999.
        assert_eq!(reg.name_space(), 99_999);
        let mut reg = registry(RegistryLimits::default());
        for _ in 0..100 {
            reg.create("o", CreateOptions::default(), now).unwrap();
        }
        assert_eq!(reg.name_space(), 9_999);
    }

    #[test]
    fn live_room_never_replaced_and_stale_refs_are_inert() {
        let mut reg = registry(RegistryLimits {
            empty_room_grace: secs(5),
            ..RegistryLimits::default()
        });
        let t0 = Instant::now();
        let room = reg.create("old", CreateOptions::default(), t0).unwrap();
        reg.leave(&room, OWNER_ID, t0);
        let sweep = reg.sweep(t0 + secs(6));
        assert_eq!(sweep.rooms_expired, 1);
        // Force the next room to reuse the name: a stale reference must not touch it.
        let stale = room.clone();
        let mut reused = None;
        for _ in 0..20_000 {
            let r = reg.create("new", CreateOptions::default(), t0).unwrap();
            if r.name == stale.name {
                reused = Some(r);
                break;
            }
            reg.leave(&r, OWNER_ID, t0);
            reg.sweep(t0 + secs(100));
        }
        let reused = reused.expect("name drawn again");
        assert_ne!(reused, stale);
        assert_eq!(reg.leave(&stale, OWNER_ID, t0), None);
        assert_eq!(reg.route(&stale, OWNER_ID, 1, t0), Route::SenderGone);
        let (_, j) = reg.join(&reused.name, "j", t0).unwrap();
        assert_eq!(reg.route(&reused, j, OWNER_ID, t0), Route::Deliver(&"new"));
        assert_eq!(reg.route(&stale, j, OWNER_ID, t0), Route::SenderGone);
    }

    #[test]
    fn room_limits() {
        let mut reg = registry(RegistryLimits {
            max_rooms: 2,
            max_mailboxes_per_room: 3,
            ..RegistryLimits::default()
        });
        let now = Instant::now();
        let a = reg.create("a", CreateOptions::default(), now).unwrap();
        reg.create("b", CreateOptions::default(), now).unwrap();
        assert_eq!(
            reg.create("c", CreateOptions::default(), now).unwrap_err(),
            CreateError::TooManyRooms
        );
        reg.join(&a.name, "j1", now).unwrap();
        let (_, j2) = reg.join(&a.name, "j2", now).unwrap();
        assert_eq!(
            reg.join(&a.name, "j3", now).unwrap_err(),
            JoinError::RoomFull
        );
        // The mailbox cap counts mailboxes present: a leave makes room.
        reg.leave(&a, j2, now);
        assert_eq!(reg.join(&a.name, "j3", now).unwrap().1, 3);
    }

    #[test]
    fn max_joiners_counts_admissions_over_the_rooms_life() {
        let mut reg = registry(RegistryLimits::default());
        let now = Instant::now();
        let opts = CreateOptions {
            keep_alive: false,
            max_joiners: Some(1),
        };
        let room = reg.create("o", opts, now).unwrap();
        let (_, j) = reg.join(&room.name, "j", now).unwrap();
        assert_eq!(
            reg.join(&room.name, "k", now).unwrap_err(),
            JoinError::RoomFull
        );
        reg.leave(&room, j, now);
        assert_eq!(
            reg.join(&room.name, "k", now).unwrap_err(),
            JoinError::RoomFull
        );
    }

    #[test]
    fn empty_room_grace_and_keep_alive() {
        let mut reg = registry(RegistryLimits {
            empty_room_grace: secs(5),
            keep_alive_grace: secs(120),
            ..RegistryLimits::default()
        });
        let t0 = Instant::now();
        let short = reg.create("s", CreateOptions::default(), t0).unwrap();
        let long = reg
            .create(
                "l",
                CreateOptions {
                    keep_alive: true,
                    max_joiners: None,
                },
                t0,
            )
            .unwrap();
        // A joiner that is still in the room when the owner leaves keeps it alive.
        let (_, j) = reg.join(&short.name, "j", t0).unwrap();
        reg.leave(&short, OWNER_ID, t0);
        reg.leave(&long, OWNER_ID, t0);
        assert_eq!(reg.sweep(t0 + secs(4)).rooms_expired, 0);
        // Nobody can join a room whose owner has left: no one is there to let them in.
        assert_eq!(
            reg.join(&short.name, "late", t0 + secs(4)).unwrap_err(),
            JoinError::NoSuchRoom
        );
        assert_eq!(reg.sweep(t0 + secs(60)).rooms_expired, 0);
        reg.leave(&short, j, t0 + secs(60));
        assert_eq!(reg.sweep(t0 + secs(64)).rooms_expired, 0);
        assert_eq!(reg.sweep(t0 + secs(65)).rooms_expired, 1);
        assert_eq!(reg.room_count(), 1);
        assert_eq!(reg.sweep(t0 + secs(119)).rooms_expired, 0);
        assert_eq!(reg.sweep(t0 + secs(120)).rooms_expired, 1);
        assert_eq!(reg.room_count(), 0);
        assert_eq!(
            reg.join(&long.name, "x", t0).unwrap_err(),
            JoinError::NoSuchRoom
        );
    }

    #[test]
    fn idle_mailboxes_are_evicted_and_activity_counts_for_both_ends() {
        let mut reg = registry(RegistryLimits {
            idle_timeout: secs(100),
            empty_room_grace: secs(5),
            ..RegistryLimits::default()
        });
        let t0 = Instant::now();
        let room = reg.create("o", CreateOptions::default(), t0).unwrap();
        let (_, a) = reg.join(&room.name, "a", t0).unwrap();
        let (_, b) = reg.join(&room.name, "b", t0).unwrap();
        // a talks to the owner at t=50: both stay alive, b does not.
        assert_eq!(
            reg.route(&room, a, OWNER_ID, t0 + secs(50)),
            Route::Deliver(&"o")
        );
        assert!(reg.sweep(t0 + secs(99)).evicted.is_empty());
        let sweep = reg.sweep(t0 + secs(100));
        assert_eq!(
            sweep.evicted,
            vec![Eviction {
                room: room.clone(),
                id: b,
                handle: "b",
                reason: EvictReason::Idle
            }]
        );
        let sweep = reg.sweep(t0 + secs(150));
        assert_eq!(sweep.evicted.len(), 2);
        assert_eq!(reg.mailbox_count(), 0);
        // Now empty: deleted after the grace period.
        assert_eq!(reg.sweep(t0 + secs(154)).rooms_expired, 0);
        assert_eq!(reg.sweep(t0 + secs(155)).rooms_expired, 1);
    }

    /// A mailbox alone in its room that talks to itself, or to mailboxes that are not there,
    /// keeps neither itself nor the room alive: it is evicted after the idle timeout as if
    /// silent, and the room goes after its grace period, long before its hard lifetime.
    #[test]
    fn messages_to_itself_or_to_nobody_are_not_activity() {
        let mut reg = registry(RegistryLimits {
            idle_timeout: secs(100),
            empty_room_grace: secs(5),
            room_lifetime: secs(24 * 3600),
            ..RegistryLimits::default()
        });
        let t0 = Instant::now();
        let room = reg.create("o", CreateOptions::default(), t0).unwrap();
        for t in (10..=90).step_by(10) {
            assert_eq!(
                reg.route(&room, OWNER_ID, OWNER_ID, t0 + secs(t)),
                Route::SelfAddressed
            );
            assert_eq!(
                reg.route(&room, OWNER_ID, 7, t0 + secs(t)),
                Route::UnknownRecipient
            );
        }
        let sweep = reg.sweep(t0 + secs(100));
        assert_eq!(sweep.evicted.len(), 1, "the lone owner is idle");
        assert_eq!(sweep.evicted[0].reason, EvictReason::Idle);
        assert_eq!(reg.sweep(t0 + secs(105)).rooms_expired, 1);
        assert_eq!(reg.room_count(), 0);
        // A message to a joiner that is there is activity, of both.
        let room = reg.create("o", CreateOptions::default(), t0).unwrap();
        let (_, j) = reg.join(&room.name, "j", t0).unwrap();
        assert_eq!(reg.route(&room, j, j, t0 + secs(50)), Route::SelfAddressed);
        assert_eq!(
            reg.route(&room, OWNER_ID, j, t0 + secs(60)),
            Route::Deliver(&"j")
        );
        assert!(reg.sweep(t0 + secs(159)).evicted.is_empty());
        assert_eq!(reg.sweep(t0 + secs(160)).evicted.len(), 2);
    }

    #[test]
    fn hard_lifetime_ends_busy_rooms() {
        let mut reg = registry(RegistryLimits {
            room_lifetime: secs(1000),
            idle_timeout: secs(10_000),
            ..RegistryLimits::default()
        });
        let t0 = Instant::now();
        let room = reg.create("o", CreateOptions::default(), t0).unwrap();
        reg.join(&room.name, "j", t0).unwrap();
        reg.route(&room, 1, 0, t0 + secs(999));
        assert!(reg.sweep(t0 + secs(999)).evicted.is_empty());
        let sweep = reg.sweep(t0 + secs(1000));
        assert_eq!(sweep.rooms_ended, 1);
        assert_eq!(sweep.evicted.len(), 2);
        assert!(
            sweep
                .evicted
                .iter()
                .all(|e| e.reason == EvictReason::RoomLifetime)
        );
        assert_eq!((reg.room_count(), reg.mailbox_count()), (0, 0));
        assert_eq!(reg.route(&room, 1, 0, t0), Route::SenderGone);
    }

    #[test]
    fn drain_returns_everyone() {
        let mut reg = registry(RegistryLimits::default());
        let now = Instant::now();
        let room = reg.create("o", CreateOptions::default(), now).unwrap();
        reg.join(&room.name, "j", now).unwrap();
        let mut all = reg.drain();
        all.sort();
        assert_eq!(all, vec!["j", "o"]);
        assert_eq!((reg.room_count(), reg.mailbox_count()), (0, 0));
    }
}
