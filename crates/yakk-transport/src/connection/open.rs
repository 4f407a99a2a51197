//! Opening a channel: wait for the association, keep a new channel off a stream id the
//! peer's stack may still reset (`REUSE_GUARD`), hold back one that may have got such an id
//! anyway, retry an open that fails, and take back a channel of ours the stack announced as
//! the peer's (`OwnOpens`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use webrtc::data_channel::{DataChannel, DataChannelEvent, RTCDataChannelId, RTCDataChannelState};
use webrtc::peer_connection::{RTCStatsReportEntry, StatsSelector};

use super::{Peer, attach, reliable};
use crate::TransportError;
use crate::channel::Channel;

/// Opening a channel: attempts, and the pause before the second one (doubling up to the
/// maximum): about 1.5 s in all.
const OPEN_ATTEMPTS: u32 = 8;
const OPEN_RETRY_FIRST: Duration = Duration::from_millis(10);
const OPEN_RETRY_MAX: Duration = Duration::from_millis(400);
/// After the peer closed a channel of ours, how long (beyond two round trips) no channel is
/// created, and a channel created around that time is held back before the application sees
/// it (`Peer::reuse_guard`).
///
/// rtc-sctp 0.21.1 answers a stream reset that was itself an answer. When the peer closes a
/// channel of ours, its stack resets its outgoing stream; ours resets the other direction in
/// answer and frees the id, and the stack gives the lowest free id to the next channel. The
/// peer's stack, on our answer, resets the same stream once more, about a round trip later.
/// Nothing in that request says which use of the id it means: it ends the new channel here
/// while the peer keeps its end, and what the peer then writes there reaches the next channel
/// given the id (seen as a channel getting another one's data, and as opens that never
/// complete: "there already exists a stream with identifier").
const REUSE_GUARD: Duration = Duration::from_millis(25);
/// The longest an open waits for `REUSE_GUARD` while channels keep closing (many short
/// connections at once): then it goes ahead, and the hold after the open still applies.
const REUSE_WAIT_MAX: Duration = Duration::from_millis(500);
/// How long one attempt waits for the peer to acknowledge an open: `OPEN_WAIT` while the
/// connection has nothing queued (many round trips), up to `OPEN_WAIT_MAX` while data is
/// queued ahead of the open (up to the send budget, seconds on a slow link). Checked every
/// `OPEN_WAIT_CHECK`.
const OPEN_WAIT: Duration = Duration::from_secs(3);
const OPEN_WAIT_MAX: Duration = Duration::from_secs(15);
const OPEN_WAIT_CHECK: Duration = Duration::from_millis(500);
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
    /// The stack's count of closed channels when an open last looked (`stack_closed_one`).
    closes_seen: AtomicU32,
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

impl Peer {
    /// Open a reliable, ordered channel with this label; resolves once it is open. Put a
    /// timeout around it: a peer that never answers leaves it pending until the connection
    /// ends.
    pub async fn open_channel(&self, label: &str) -> Result<Channel, TransportError> {
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
        // A channel whose open fails at once (the stack freed the id of a channel it closed
        // before its SCTP stream was reset: "there already exists a stream with identifier")
        // is retried a few times, a little later each time.
        let asked = Instant::now();
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
            let dc = loop {
                let wait = self.reuse_wait(asked);
                if !wait.is_zero() {
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => continue,
                        _ = self.inner.dead.cancelled() => {
                            return Err(TransportError::Closed(
                                "the connection ended while opening a channel".into(),
                            ));
                        }
                    }
                }
                let _creating = own.creating.lock().await;
                // The peer may have closed one of ours while we waited for the lock; and the
                // stack frees a closed channel's id before its event reaches the channel's
                // reader, but counts the close at once.
                if !self.reuse_wait(asked).is_zero()
                    || (asked.elapsed() < REUSE_WAIT_MAX && self.stack_closed_one().await)
                {
                    continue;
                }
                let dc = self
                    .inner
                    .pc
                    .create_data_channel(label, Some(reliable()))
                    .await
                    .map_err(|e| err(e.to_string()))?;
                own.note(dc.id());
                break dc;
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
                            // Ended by the peer's stack before it opened: as a close of ours
                            // by the peer, its id is not reused at once.
                            self.note_peer_close();
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
                    tracing::debug!(
                        "channel {label:?} did not open in {OPEN_WAIT:?}; setting it aside"
                    );
                    self.set_aside(dc.clone());
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
                let probe = dc.clone();
                let (stream, ended) = attach(&self.inner, dc, true, early);
                // The peer closed one of ours around the time this one was created: it may
                // sit on the id that close freed, and the peer's last reset of the old
                // stream may still come and end it. Held back until that cannot happen.
                let guard = self.reuse_guard();
                let risky = started.checked_sub(guard).unwrap_or(started);
                let Some(close) = self.peer_closed_since(risky) else {
                    return Ok(stream);
                };
                let until = close + guard;
                tokio::select! {
                    biased;
                    _ = ended.cancelled() => {}
                    _ = tokio::time::sleep(until.saturating_duration_since(Instant::now())) => {
                        // The stack may have ended the channel while its close has not
                        // reached the channel's reader yet (a busy thread): ask the stack.
                        let state = probe.ready_state().await.ok();
                        let open = state == Some(RTCDataChannelState::Open);
                        if open && !ended.is_cancelled() {
                            return Ok(stream);
                        }
                    }
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

    /// Keep an open attempt that neither opened nor closed in time, for as long as the
    /// connection lives, without closing it.
    ///
    /// Such an attempt almost always sits on a stream id the stack can no longer use: rtc
    /// 0.21.1 keeps the SCTP stream of a channel in the association until its reset
    /// completes, and never completes it when a message reached the stream after our close
    /// (a peer that does not follow the close handshake, or an older one), while its channel
    /// registry frees the id at our close. A channel created on that id neither opens nor
    /// closes. Closing the attempt would free the id in the registry once more, and the
    /// registry hands out the lowest free id: every later open would land on it and wait
    /// `OPEN_WAIT`. Kept, the id stays taken and one open pays for it. Should the attempt
    /// open after all (its acknowledgement was only late), it is closed then, which also
    /// ends the peer's side of it.
    fn set_aside(&self, dc: Arc<dyn DataChannel>) {
        let dead = self.inner.dead.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    ev = dc.poll() => match ev {
                        Some(DataChannelEvent::OnOpen) => {
                            let _ = dc.close().await;
                            break;
                        }
                        Some(DataChannelEvent::OnClose) | None => break,
                        Some(_) => {}
                    },
                    _ = dead.cancelled() => break,
                }
            }
        });
    }

    /// How long the peer's last close of one of our channels keeps its stream id unsafe to
    /// reuse: `REUSE_GUARD` plus two round trips of the selected path.
    fn reuse_guard(&self) -> Duration {
        let rtt = Duration::from_micros(self.inner.rtt_us.load(Ordering::Relaxed));
        REUSE_GUARD + rtt.saturating_mul(2)
    }

    fn last_peer_close(&self) -> Option<Instant> {
        // A poisoned lock still holds a whole `Option<Instant>`: nothing to repair.
        *self
            .inner
            .last_peer_close
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// How long an open asked at `asked` still waits before creating its channel: until the
    /// guard has passed since the last close of one of ours, for `REUSE_WAIT_MAX` at most.
    fn reuse_wait(&self, asked: Instant) -> Duration {
        let Some(close) = self.last_peer_close() else {
            return Duration::ZERO;
        };
        let until = (close + self.reuse_guard()).min(asked + REUSE_WAIT_MAX);
        until.saturating_duration_since(Instant::now())
    }

    /// Whether the stack closed a channel since an open last looked. If so, counted as the
    /// peer's close of one of ours, now: which channel, and who closed it, its count does not
    /// say (nor do its reports list a channel still opening).
    async fn stack_closed_one(&self) -> bool {
        let report = self
            .inner
            .pc
            .get_stats(Instant::now(), StatsSelector::None)
            .await;
        let Some(closed) = report.iter().find_map(|e| match e {
            RTCStatsReportEntry::PeerConnection(p) => Some(p.data_channels_closed),
            _ => None,
        }) else {
            return false;
        };
        if self.inner.own.closes_seen.swap(closed, Ordering::Relaxed) == closed {
            return false;
        }
        self.note_peer_close();
        true
    }

    /// The peer ended a channel of ours now.
    fn note_peer_close(&self) {
        // A poisoned lock still holds a whole `Option<Instant>`: overwrite it.
        *self
            .inner
            .last_peer_close
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
    }

    /// When the peer last closed one of our channels, if at or after `t`.
    fn peer_closed_since(&self, t: Instant) -> Option<Instant> {
        self.last_peer_close().filter(|closed| *closed >= t)
    }
}
