//! Per-stream flow control between yakk/2 peers ("window" feature).
//!
//! Without it, a reader that stops reading (a forwarded connection whose target is stalled)
//! fills its channel's queue in the stack, and the stack then stops draining the whole SCTP
//! association: every other stream of the connection freezes with it. With it, a sender
//! never has more unread data at the receiver than the receiver granted, so the receiving
//! side can always drain every channel at once and a stalled stream holds only its window.
//!
//! Rules (docs/yakk2.md, "Stream flow control"):
//!
//! * Each data message costs `max(len, MIN_COST)` bytes of window, on both sides alike.
//! * Each direction of a stream starts with `INITIAL_WINDOW` of credit, implied.
//! * The receiver raises the limit with a string message `"w <limit>"` (ASCII decimal): the
//!   sender may send messages while the total cost sent stays at or below `<limit>`. Limits
//!   only grow; a smaller one is ignored. The empty string stays the end-of-stream marker.
//! * A receiver that gets more than it granted resets the stream.
//! * Closing: once both end-of-stream markers have passed, one side sends `"c"` and nothing
//!   more; the other closes on it: the opener when both announced `opener-closes`, else the
//!   acceptor (see `both_done` in `pump/close.rs`).
//! * The receiver grows a stream's window (doubling, up to `MAX_WINDOW`) while its reader
//!   keeps up, and the windows of one connection together stay within `PEER_WINDOW_POOL`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

/// Every message counts at least this much, so a peer sending tiny messages cannot make the
/// receiver hold millions of them inside one window.
pub const MIN_COST: u64 = 256;
/// Credit each direction of a new stream starts with, without a message.
pub const INITIAL_WINDOW: u64 = 64 * 1024;
/// The largest window one stream grows to (about 80 MB/s at 50 ms of round trip).
pub const MAX_WINDOW: u64 = 4 * 1024 * 1024;
/// Growth beyond the initial windows that all streams of one connection may share.
pub(crate) const PEER_WINDOW_POOL: u64 = 32 * 1024 * 1024;
/// Deepest inbound queue a stream can need within its window.
pub(crate) const QUEUE_LIMIT: usize = (MAX_WINDOW / MIN_COST) as usize + 16;

/// The cost of one data message of `len` bytes.
pub fn cost(len: usize) -> u64 {
    (len as u64).max(MIN_COST)
}

/// The grant message for a new limit.
pub fn grant_text(limit: u64) -> String {
    format!("w {limit}")
}

/// Parses a grant message; `None` for anything else.
pub fn parse_grant(text: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(text).ok()?;
    let digits = s.strip_prefix("w ")?;
    if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Growth handed out to the streams of one connection (beyond their initial windows).
#[derive(Debug)]
pub struct Pool {
    used: AtomicU64,
    /// At most this much growth in all; `PEER_WINDOW_POOL` unless the session shares it
    /// out among several connections (lanes).
    limit: AtomicU64,
}

impl Default for Pool {
    fn default() -> Self {
        Pool {
            used: AtomicU64::new(0),
            limit: AtomicU64::new(PEER_WINDOW_POOL),
        }
    }
}

impl Pool {
    pub fn set_limit(&self, limit: u64) {
        self.limit.store(limit, Ordering::Release);
    }

    fn take(&self, n: u64) -> bool {
        let limit = self.limit.load(Ordering::Acquire);
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                (u + n <= limit).then_some(u + n)
            })
            .is_ok()
    }

    fn give(&self, n: u64) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// One stream's flow-control state, shared by the application's `Channel` and the pumps.
#[derive(Debug)]
pub struct Flow {
    pool: Arc<Pool>,
    // Receiving direction.
    /// Cost of the messages the application has taken.
    consumed: AtomicU64,
    /// Cost of the messages received from the peer.
    received: AtomicU64,
    /// The limit last granted to the peer.
    granted: AtomicU64,
    /// This stream's current window.
    window: AtomicU64,
    /// Set when a grant is due; the writer pump sends it.
    pub(crate) grant_due: Notify,
    // Sending direction.
    /// Cost of the messages sent.
    sent: AtomicU64,
    /// The peer's limit for what we send.
    peer_limit: AtomicU64,
    /// Woken when the peer's limit grows.
    pub(crate) credit: Notify,
    /// A window this stream grows to whether or not its reader keeps up (0: none). For the
    /// parts of a striped stream, whose reader leaves a part unread while it waits for
    /// another (see `Channel::set_striped_window`).
    eager: AtomicU64,
}

/// What the receiving pump makes of one data message.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    Ok,
    /// The peer sent beyond its credit: reset the stream.
    Overrun {
        received: u64,
        granted: u64,
    },
}

impl Flow {
    pub fn new(pool: Arc<Pool>) -> Arc<Flow> {
        Arc::new(Flow {
            pool,
            consumed: AtomicU64::new(0),
            received: AtomicU64::new(0),
            granted: AtomicU64::new(INITIAL_WINDOW),
            window: AtomicU64::new(INITIAL_WINDOW),
            grant_due: Notify::new(),
            sent: AtomicU64::new(0),
            peer_limit: AtomicU64::new(INITIAL_WINDOW),
            credit: Notify::new(),
            eager: AtomicU64::new(0),
        })
    }

    /// Receiving pump: a data message of `len` bytes arrived.
    pub fn admit(&self, len: usize) -> Admit {
        let received = self.received.fetch_add(cost(len), Ordering::AcqRel) + cost(len);
        let granted = self.granted.load(Ordering::Acquire);
        if received > granted {
            Admit::Overrun { received, granted }
        } else {
            Admit::Ok
        }
    }

    /// Application: it took a message of `len` bytes off the queue.
    pub fn consumed(&self, len: usize) {
        let consumed = self.consumed.fetch_add(cost(len), Ordering::AcqRel) + cost(len);
        let window = self.window.load(Ordering::Acquire);
        let granted = self.granted.load(Ordering::Acquire);
        // Grant again once an eighth of the window has been read since the last grant.
        if consumed + window >= granted + window / 8 {
            self.grant_due.notify_one();
        }
    }

    /// Writer pump: the next limit to grant, if one is due. Grows the window while the
    /// reader keeps up (less than a quarter of the window waiting unread).
    pub fn next_grant(&self) -> Option<u64> {
        let consumed = self.consumed.load(Ordering::Acquire);
        let received = self.received.load(Ordering::Acquire);
        let mut window = self.window.load(Ordering::Acquire);
        let unread = received.saturating_sub(consumed);
        let eager = self.eager.load(Ordering::Acquire);
        if eager > 0 {
            // A striped part: its window is set, not learnt from the reader.
            while window < eager && self.pool.take(window) {
                window *= 2;
                self.window.store(window, Ordering::Release);
            }
        } else if unread <= window / 4 && window < MAX_WINDOW && self.pool.take(window) {
            window *= 2;
            self.window.store(window, Ordering::Release);
        }
        let limit = consumed + window;
        let granted = self.granted.load(Ordering::Acquire);
        if limit < granted + window / 8 {
            return None;
        }
        self.granted.store(limit, Ordering::Release);
        Some(limit)
    }

    /// Grow the window to `max` (at most `MAX_WINDOW`, as far as the pool allows) at the
    /// next grant, whether the reader keeps up or not; and make that grant due now.
    pub fn set_eager(&self, max: u64) {
        self.eager.store(max.min(MAX_WINDOW), Ordering::Release);
        self.grant_due.notify_one();
    }

    /// Receiving pump: the peer granted `limit`.
    pub fn on_grant(&self, limit: u64) {
        if self.peer_limit.fetch_max(limit, Ordering::AcqRel) < limit {
            self.credit.notify_one();
        }
    }

    /// Writer pump: how many of `len` bytes may be sent now (all of them, or as many as the
    /// peer's limit leaves room for); 0 when not even a minimal message fits. Sending what
    /// fits, rather than waiting for room for the whole message, matters: the receiver
    /// grants again only after reading an eighth of its window.
    pub fn room(&self, len: usize) -> usize {
        let avail = self
            .peer_limit
            .load(Ordering::Acquire)
            .saturating_sub(self.sent.load(Ordering::Acquire));
        if cost(len) <= avail {
            len
        } else if avail >= MIN_COST {
            avail as usize
        } else {
            0
        }
    }

    /// Writer pump: a message of `len` bytes was sent.
    pub fn on_sent(&self, len: usize) {
        self.sent.fetch_add(cost(len), Ordering::AcqRel);
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        let window = *self.window.get_mut();
        self.pool.give(window - INITIAL_WINDOW);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_messages_round_trip_and_reject_junk() {
        assert_eq!(parse_grant(grant_text(123_456).as_bytes()), Some(123_456));
        assert_eq!(parse_grant(grant_text(u64::MAX).as_bytes()), Some(u64::MAX));
        for junk in [
            &b""[..],
            b"w",
            b"w ",
            b"w -1",
            b"w 1x",
            b"x 12",
            b"w 99999999999999999999",
            b"w 1 2",
            b"\xff\xfe",
        ] {
            assert_eq!(parse_grant(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn tiny_messages_cost_the_floor() {
        assert_eq!(cost(0), MIN_COST);
        assert_eq!(cost(1), MIN_COST);
        assert_eq!(cost(65536), 65536);
    }

    #[test]
    fn a_sender_stops_at_the_initial_window_until_granted() {
        let f = Flow::new(Arc::new(Pool::default()));
        let mut sent = 0;
        while f.room(4096) == 4096 {
            f.on_sent(4096);
            sent += 4096;
        }
        assert_eq!(sent, INITIAL_WINDOW);
        assert_eq!(f.room(1), 0);
        f.on_grant(INITIAL_WINDOW + 8192);
        assert_eq!(f.room(8192), 8192);
        // What does not fit whole is cut to what does.
        assert_eq!(f.room(65536), 8192);
        // A smaller limit never takes credit back.
        f.on_grant(10);
        assert_eq!(f.room(8192), 8192);
        f.on_sent(8192 - 100);
        assert_eq!(f.room(65536), 0, "less room than a minimal message");
    }

    #[test]
    fn overrun_is_detected() {
        let f = Flow::new(Arc::new(Pool::default()));
        assert_eq!(f.admit(INITIAL_WINDOW as usize), Admit::Ok);
        assert_eq!(
            f.admit(1),
            Admit::Overrun {
                received: INITIAL_WINDOW + MIN_COST,
                granted: INITIAL_WINDOW
            }
        );
    }

    #[test]
    fn a_reader_that_keeps_up_grows_its_window_to_the_cap() {
        let f = Flow::new(Arc::new(Pool::default()));
        let mut limit = INITIAL_WINDOW;
        for _ in 0..64 {
            // The peer fills what it may; the reader reads it all at once.
            let n = (limit - f.received.load(Ordering::Acquire)) as usize;
            assert_eq!(f.admit(n), Admit::Ok);
            f.consumed(n);
            limit = f
                .next_grant()
                .expect("a grant is due after reading everything");
        }
        assert_eq!(f.window.load(Ordering::Acquire), MAX_WINDOW);
    }

    #[test]
    fn a_stalled_reader_gets_no_grant_and_no_growth() {
        let f = Flow::new(Arc::new(Pool::default()));
        assert_eq!(f.admit(INITIAL_WINDOW as usize), Admit::Ok);
        assert_eq!(f.next_grant(), None);
        assert_eq!(f.window.load(Ordering::Acquire), INITIAL_WINDOW);
        // A slow reader: grants follow what it reads, and the window stays put.
        f.consumed(16 * 1024);
        assert_eq!(f.next_grant(), Some(INITIAL_WINDOW + 16 * 1024));
        assert_eq!(f.window.load(Ordering::Acquire), INITIAL_WINDOW);
    }

    #[test]
    fn the_pool_caps_growth_across_streams_and_is_given_back() {
        let pool = Arc::new(Pool::default());
        let grow = |f: &Flow| {
            for _ in 0..64 {
                let n = (f.granted.load(Ordering::Acquire) - f.received.load(Ordering::Acquire))
                    as usize;
                if n > 0 {
                    f.admit(n);
                    f.consumed(n);
                }
                f.next_grant();
            }
            f.window.load(Ordering::Acquire)
        };
        let flows: Vec<_> = (0..16).map(|_| Flow::new(pool.clone())).collect();
        let total: u64 = flows.iter().map(|f| grow(f) - INITIAL_WINDOW).sum();
        assert!(total <= PEER_WINDOW_POOL, "growth {total}");
        assert!(
            flows
                .iter()
                .any(|f| f.window.load(Ordering::Acquire) < MAX_WINDOW)
        );
        drop(flows);
        assert_eq!(pool.used.load(Ordering::Acquire), 0);
    }

    /// A striped part grows to its window at once, though nothing is read, and no further;
    /// a pool with a lower limit (a session's lanes sharing it) caps that growth.
    #[test]
    fn an_eager_window_grows_unread_within_the_pool() {
        let f = Flow::new(Arc::new(Pool::default()));
        assert_eq!(f.admit(INITIAL_WINDOW as usize), Admit::Ok);
        f.set_eager(1 << 20);
        assert_eq!(f.next_grant(), Some(1 << 20), "nothing read, window 1 MiB");
        assert_eq!(f.window.load(Ordering::Acquire), 1 << 20);
        // Still nothing read: no more growth than asked for.
        assert_eq!(f.admit((1 << 20) - INITIAL_WINDOW as usize), Admit::Ok);
        assert_eq!(f.next_grant(), None);
        assert_eq!(f.window.load(Ordering::Acquire), 1 << 20);

        let pool = Arc::new(Pool::default());
        pool.set_limit(256 * 1024);
        let f = Flow::new(pool.clone());
        f.set_eager(4 << 20);
        f.next_grant();
        // 64 KiB + 64 + 128 = 256 KiB of growth would be 512 KiB: the limit stops it at 256.
        assert_eq!(f.window.load(Ordering::Acquire), 256 * 1024);
        assert!(pool.used.load(Ordering::Acquire) <= 256 * 1024);
    }
}
