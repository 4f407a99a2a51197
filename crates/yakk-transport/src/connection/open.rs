//! Opening a channel: wait for the association, retry an open that lands on a stream id
//! still being reset, hold back one opened right after the peer closed another, and take
//! back a channel of ours the stack announced as the peer's (`OwnOpens`).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use webrtc::data_channel::{DataChannel, DataChannelEvent, RTCDataChannelId};

use super::{Connection, attach, reliable};
use crate::TransportError;
use crate::channel::Channel;

/// Opening a channel: attempts, and the pause before the second one (doubling up to the
/// maximum): about 1.5 s in all.
const OPEN_ATTEMPTS: u32 = 8;
const OPEN_RETRY_FIRST: Duration = Duration::from_millis(10);
const OPEN_RETRY_MAX: Duration = Duration::from_millis(400);
/// Pause before opening a channel right after the peer closed one of ours: the stream id just
/// freed is the one the stack hands out next, and the last steps of its reset may still be
/// on their way.
const OPEN_SETTLE: Duration = Duration::from_millis(25);
/// A channel that opened around the time the peer closed one of ours may sit on the stream
/// id just freed, and the last reset of the old stream (the peer's answer to ours, about a
/// round trip after the first) can still arrive and close it. That reset leaves the peer
/// right next to its acknowledgement of our open, so a new channel is held back this long
/// before the application gets it, when a peer close came this recently before the open
/// (`OPEN_RISK`): if it is closed in the meantime, nothing was sent on it and the open is
/// retried.
const OPEN_PROBATION: Duration = Duration::from_millis(20);
/// How long one attempt waits for the peer to acknowledge an open: `OPEN_WAIT` while the
/// connection has nothing queued (many round trips), up to `OPEN_WAIT_MAX` while data is
/// queued ahead of the open (up to the send budget, seconds on a slow link). Checked every
/// `OPEN_WAIT_CHECK`.
const OPEN_WAIT: Duration = Duration::from_secs(3);
const OPEN_WAIT_MAX: Duration = Duration::from_secs(15);
const OPEN_WAIT_CHECK: Duration = Duration::from_millis(500);
const OPEN_RISK: Duration = Duration::from_millis(50);
/// How long the handle of a channel we created is remembered for `OwnOpens::claim`: the
/// stack announces it, if it does, while the channel is being created; the check that
/// follows runs a moment later.
const OWN_HANDLE_MEMORY: Duration = Duration::from_secs(30);

/// Our own channels, told apart from the peer's.
///
/// webrtc 0.21.1's `create_data_channel` creates the channel in the core, releases the core,
/// and only then registers the channel's event queue. When the peer's acknowledgement of the
/// open is processed in between (a busy machine, a short round trip), the stack's driver
/// finds a channel without a queue and announces it as one the peer opened: that handle
/// gets the `OnOpen` (and what comes before our queue is registered), and ours gets the rest
/// but never the `OnOpen`. Left alone, the open waited 3 s, dropped the peer's first messages
/// and gave up, and the handle was handed to the application as a new channel from the peer
/// (a striped stream then took it as a part and waited for ever).
///
/// So creating a channel notes its handle under `creating`; an announced channel is checked
/// against those notes under the same lock, and one of ours is kept here (dropping it would
/// unregister our own channel's queue) and reported to the open waiting for it. Until our
/// queue replaced its queue, the other handle also got the peer's messages (its first
/// window grant comes right behind its acknowledgement): the open takes them from there and
/// hands them to the channel's reader before its own.
#[derive(Default)]
pub(super) struct OwnOpens {
    creating: tokio::sync::Mutex<()>,
    /// Handles of the channels we created, with when (`OWN_HANDLE_MEMORY`).
    recent: Mutex<VecDeque<(RTCDataChannelId, Instant)>>,
    /// Our channels the stack announced as the peer's, kept for the connection's lifetime.
    misannounced: Mutex<Vec<Arc<dyn DataChannel>>>,
    found: Notify,
}

impl OwnOpens {
    fn note(&self, id: RTCDataChannelId) {
        let now = Instant::now();
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        while recent
            .front()
            .is_some_and(|(_, t)| now.duration_since(*t) > OWN_HANDLE_MEMORY)
        {
            recent.pop_front();
        }
        recent.push_back((id, now));
    }

    /// For a channel the stack announced as the peer's: true when it is one of ours, which
    /// is then kept and reported to its open.
    pub(super) async fn claim(&self, dc: &Arc<dyn DataChannel>) -> bool {
        let _created = self.creating.lock().await;
        let ours = self
            .recent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .any(|(id, _)| *id == dc.id());
        if ours {
            tracing::debug!("the stack announced our channel {} as the peer's", dc.id());
            self.misannounced
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(dc.clone());
            self.found.notify_waiters();
        }
        ours
    }

    fn misannounced(&self, id: RTCDataChannelId) -> Option<Arc<dyn DataChannel>> {
        self.misannounced
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|dc| dc.id() == id)
            .cloned()
    }

    fn was_misannounced(&self, id: RTCDataChannelId) -> bool {
        self.misannounced(id).is_some()
    }

    /// The handle the stack announced for our channel `id`, once claimed (`claim` runs a
    /// moment after the channel is created), waiting up to `wait` for it.
    async fn claimed(&self, id: RTCDataChannelId, wait: Duration) -> Option<Arc<dyn DataChannel>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let found = self.found.notified();
            if let Some(dc) = self.misannounced(id) {
                return Some(dc);
            }
            tokio::time::timeout_at(deadline, found).await.ok()?;
        }
    }

    /// For our channel `id` whose `OnOpen` went to the handle the stack announced: what that
    /// handle got besides, in order.
    async fn recover(&self, id: RTCDataChannelId) -> Vec<DataChannelEvent> {
        let Some(other) = self.claimed(id, RECOVER_WAIT).await else {
            tracing::warn!("channel {id}: opened without its OnOpen, and no other handle had it");
            return Vec::new();
        };
        let deadline = tokio::time::Instant::now() + RECOVER_WAIT;
        // Its queue was replaced by ours, so it ends once what it holds is taken.
        let mut events = Vec::new();
        while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, other.poll()).await {
            if !matches!(ev, DataChannelEvent::OnOpen) {
                events.push(ev);
            }
        }
        events
    }
}

/// How long an open waits for `OwnOpens::recover`.
const RECOVER_WAIT: Duration = Duration::from_secs(2);
/// How long a channel closed before its `OnOpen`, with messages, waits to learn whether the
/// `OnOpen` went to another handle (then the messages and the close are the peer's).
const CLOSED_CLAIM_WAIT: Duration = Duration::from_millis(200);
/// Messages kept from before an `OnOpen`, in bytes; more are dropped (the peer's own are
/// within its first window).
const EARLY_BYTES: usize = 4 << 20;

impl Connection {
    /// Open a reliable, ordered channel with this label; resolves once it is open.
    pub(crate) async fn open_channel(&self, label: &str) -> Result<Channel, TransportError> {
        let err = |reason: String| TransportError::OpenChannel {
            label: label.to_string(),
            reason,
        };
        if self.inner.dead.is_cancelled() {
            return Err(TransportError::Closed("the connection has ended".into()));
        }
        let mut up = self.inner.sctp_up.subscribe();
        tokio::select! {
            r = up.wait_for(|up| *up) => if r.is_err() {
                return Err(TransportError::Closed("the connection has ended".into()));
            },
            _ = self.inner.dead.cancelled() => {
                return Err(TransportError::Closed("the connection ended while opening a channel".into()));
            }
        }
        // The stack frees a closed channel's stream id before its SCTP stream is reset, and
        // hands out the lowest free id: a channel opened right after another one closed can
        // get an id whose stream still exists, and fails at once ("there already exists a
        // stream with identifier"). Once the reset completes (a round trip) the id is usable,
        // so a failed open is retried a few times, a little later each time.
        // A poisoned lock still holds a whole `Option<Instant>`: nothing to repair.
        let since_close = self
            .inner
            .last_peer_close
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map(|t| t.elapsed());
        if let Some(since) = since_close
            && since < OPEN_SETTLE
        {
            tokio::time::sleep(OPEN_SETTLE - since).await;
        }
        let mut delay = OPEN_RETRY_FIRST;
        for attempt in 1..=OPEN_ATTEMPTS {
            if self.inner.dead.is_cancelled() {
                return Err(TransportError::Closed(
                    "the connection ended while opening a channel".into(),
                ));
            }
            let started = Instant::now();
            let own = &self.inner.own;
            // Created before the channel is: a report of its announcement is not missed.
            let found = own.found.notified();
            tokio::pin!(found);
            let dc = {
                let _creating = own.creating.lock().await;
                let dc = self
                    .inner
                    .pc
                    .create_data_channel(label, Some(reliable()))
                    .await
                    .map_err(|e| err(e.to_string()))?;
                own.note(dc.id());
                dc
            };
            // Messages taken off the channel before its `OnOpen`: the peer's first ones when
            // the stack gave the `OnOpen` to another handle (`OwnOpens`), and then the
            // channel's reader gets them first.
            let mut early = Vec::new();
            let mut saw_open = false;
            let mut early_bytes = 0usize;
            let outcome = async {
                let mut check = tokio::time::interval_at(
                    tokio::time::Instant::now() + OPEN_WAIT_CHECK,
                    OPEN_WAIT_CHECK,
                );
                loop {
                    let ev = tokio::select! {
                        ev = dc.poll() => ev,
                        _ = self.inner.dead.cancelled() => return Ok(None),
                        _ = &mut found => {
                            found.set(own.found.notified());
                            if own.was_misannounced(dc.id()) {
                                return Ok(Some(true));
                            }
                            continue;
                        }
                        _ = check.tick() => {
                            if own.was_misannounced(dc.id()) {
                                return Ok(Some(true));
                            }
                            // Data queued in the stack delays the open: wait longer then.
                            let waited = started.elapsed();
                            let idle = self.inner.budget.available_permits()
                                >= self.inner.budget_size.load(Ordering::Relaxed);
                            if waited >= OPEN_WAIT_MAX || (waited >= OPEN_WAIT && idle) {
                                return Err(waited);
                            }
                            continue;
                        }
                    };
                    match ev {
                        Some(DataChannelEvent::OnOpen) => {
                            saw_open = true;
                            return Ok(Some(true));
                        }
                        Some(DataChannelEvent::OnClose) | None => {
                            // The peer may have answered and closed before we learnt that
                            // our `OnOpen` went to another handle.
                            if !early.is_empty()
                                && own.claimed(dc.id(), CLOSED_CLAIM_WAIT).await.is_some()
                            {
                                early.push(DataChannelEvent::OnClose);
                                return Ok(Some(true));
                            }
                            return Ok(Some(false));
                        }
                        Some(DataChannelEvent::OnMessage(m)) => {
                            // Kept until the open is decided: the peer's own when the stack
                            // gave our `OnOpen` to another handle; otherwise left over from
                            // an earlier channel on the same stream id, and dropped.
                            early_bytes += m.data.len();
                            if early_bytes <= EARLY_BYTES {
                                early.push(DataChannelEvent::OnMessage(m));
                            }
                        }
                        Some(_) => {}
                    }
                }
            }
            .await;
            let opened = match outcome {
                Ok(Some(opened)) => opened,
                Ok(None) => {
                    return Err(TransportError::Closed(
                        "the connection ended while opening a channel".into(),
                    ));
                }
                Err(_) => {
                    // The stack lost track of the open (its acknowledgement went astray):
                    // give it up, so the peer's side of it ends too, and try again.
                    tracing::debug!(
                        "channel {label:?} did not open in {OPEN_WAIT:?}; giving it up"
                    );
                    let _ = dc.close().await;
                    false
                }
            };
            if opened {
                if saw_open {
                    if !early.is_empty() {
                        tracing::warn!(
                            "channel {label:?}: {} message(s) before it opened, dropped",
                            early.len()
                        );
                        early.clear();
                    }
                } else {
                    let mut first = own.recover(dc.id()).await;
                    first.append(&mut early);
                    early = first;
                }
                let (stream, ended) = attach(&self.inner, dc, true, early);
                if !self.peer_closed_since(started.checked_sub(OPEN_RISK).unwrap_or(started)) {
                    return Ok(stream);
                }
                tokio::select! {
                    _ = tokio::time::sleep(OPEN_PROBATION) => return Ok(stream),
                    _ = ended.cancelled() => {}
                }
                // Closed before the application saw it: nothing was sent on it.
                tracing::debug!(
                    "channel {label:?} closed right after opening (attempt {attempt}); retrying"
                );
                drop(stream);
            } else {
                // Not closed: the failed attempt never got a stream of its own, and closing
                // it would reset the stream id the next attempt may be given.
                tracing::debug!("channel {label:?} did not open (attempt {attempt}); retrying");
                drop(dc);
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(OPEN_RETRY_MAX);
        }
        Err(err("the peer refused or closed the channel".into()))
    }

    /// Whether the peer closed one of our channels at or after `t`.
    fn peer_closed_since(&self, t: Instant) -> bool {
        // A poisoned lock still holds a whole `Option<Instant>`: nothing to repair.
        self.inner
            .last_peer_close
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|closed| closed >= t)
    }
}
