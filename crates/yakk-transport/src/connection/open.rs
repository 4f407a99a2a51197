//! Opening a channel: wait for the association, retry an open that lands on a stream id
//! still being reset, and hold back one opened right after the peer closed another.

use std::sync::PoisonError;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use webrtc::data_channel::DataChannelEvent;

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
            let dc = self
                .inner
                .pc
                .create_data_channel(label, Some(reliable()))
                .await
                .map_err(|e| err(e.to_string()))?;
            // Messages taken off the channel while waiting for it to open (none are expected:
            // the peer sends only once it has acknowledged the open). Counted, so that the
            // channel's reader knows what the stack has delivered (see `read_pump`).
            let mut early: u32 = 0;
            let outcome = async {
                let mut check = tokio::time::interval_at(
                    tokio::time::Instant::now() + OPEN_WAIT_CHECK,
                    OPEN_WAIT_CHECK,
                );
                loop {
                    let ev = tokio::select! {
                        ev = dc.poll() => ev,
                        _ = self.inner.dead.cancelled() => return Ok(None),
                        _ = check.tick() => {
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
                        Some(DataChannelEvent::OnOpen) => return Ok(Some(true)),
                        Some(DataChannelEvent::OnClose) | None => return Ok(Some(false)),
                        Some(DataChannelEvent::OnMessage(_)) => {
                            early = early.wrapping_add(1);
                            tracing::warn!(
                                "channel {label:?}: a message before it opened, dropped"
                            );
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
