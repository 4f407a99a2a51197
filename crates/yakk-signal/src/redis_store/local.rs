//! The mailboxes whose sockets this instance holds, with their idle and lifetime clocks.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Inner, lock};
use crate::registry::{MailboxId, RoomRef};
use crate::store::{CloseReason, Mailbox};

pub(super) struct Member<M> {
    pub(super) serial: u64,
    pub(super) token: String,
    pub(super) handle: M,
    pub(super) last_activity: Instant,
    pub(super) created: Instant,
}

impl<M> Member<M> {
    /// Whether this membership is the one `room` refers to (not a later one with the same id).
    pub(super) fn is(&self, room: &RoomRef) -> bool {
        room_ref(&room.name, self.serial, &self.token) == *room
    }

    /// A member of a room created `age_ms` ago (by Redis's clock).
    pub(super) fn new(serial: u64, token: String, handle: M, now: Instant, age_ms: u64) -> Self {
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
pub(super) struct Local<M> {
    pub(super) rooms: HashMap<String, HashMap<MailboxId, Member<M>>>,
    pub(super) mailboxes: usize,
}

impl<M: Mailbox> Inner<M> {
    pub(super) fn add_local(&self, name: &str, id: MailboxId, member: Member<M>) {
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
    pub(super) fn remove_local(&self, name: &str, id: MailboxId, token: &str) -> Option<Member<M>> {
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

    pub(super) fn touch(&self, name: &str, id: MailboxId, now: Instant) {
        let mut local = lock(&self.local);
        if let Some(m) = local.rooms.get_mut(name).and_then(|r| r.get_mut(&id)) {
            m.last_activity = now;
        }
    }

    /// Delivers a frame to a local member with `token`; a slow one is closed and removed.
    pub(super) async fn deliver_local(
        &self,
        name: &str,
        id: MailboxId,
        token: &str,
        frame: Bytes,
    ) -> bool {
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

    /// Forgets every local mailbox; returns their handles.
    pub(super) fn take_all(&self) -> Vec<M> {
        let mut local = lock(&self.local);
        local.mailboxes = 0;
        local
            .rooms
            .drain()
            .flat_map(|(_, members)| members.into_values().map(|m| m.handle))
            .collect()
    }

    /// Redis lost its data: every local room is gone.
    pub(super) fn lose_everything(&self) {
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

/// A room reference for the membership holding `token`.
pub(super) fn room_ref(name: &str, serial: u64, token: &str) -> RoomRef {
    let member = token
        .rsplit('/')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX);
    RoomRef::new(name.to_string(), serial, member)
}
