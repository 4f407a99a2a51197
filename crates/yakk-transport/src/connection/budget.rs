//! The connection's send budget (bytes all its channels together may have in the stack
//! unacknowledged), and what it becomes toward a peer that asked for small bursts.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::events::path_info;
use super::{Inner, PEER_SEND_BUDGET};
use crate::PathKind;

/// With small bursts (`set_small_bursts`, the browser page): the send budget on a short path,
/// handed to the stack in messages of at most `SMALL_BURST_MESSAGE`. Chromium's WebRTC socket
/// holds 128 KiB of datagrams counted with their kernel overhead, about 55 full ones, and on a
/// short path what the stack sends at once lands in it at once: more loses its tail, which the
/// stack resends only after a timeout of at least a second. 48 KiB in 8 KiB messages was the
/// one setting tried that it never overflowed (the README's browser section).
const SMALL_BURST_BYTES: usize = 48 * 1024;
const SMALL_BURST_MESSAGE: usize = 8 * 1024;
/// A path whose round trip is measured under this is short: what the measure holds is mostly
/// the two peers' own processing, not a link that spaces a flight out.
const SMALL_BURST_SHORT: Duration = Duration::from_millis(2);
/// On a longer path the link spaces a flight out, so the budget grows with the round trip
/// rather than capping the rate: this many bytes per millisecond of it.
const SMALL_BURST_PER_MS: usize = 64 * 1024;
/// How often the budget is fitted to the least round trip seen. The first measure, taken while
/// both peers are busy setting up, can be many times too long: the budget starts as for a
/// short path and grows only with what a path through a NAT or a relay keeps showing (ICE's
/// consent checks measure it every `ICE_KEEPALIVE`).
const SMALL_BURST_REFIT: Duration = Duration::from_secs(1);

impl Inner {
    pub(super) fn set_send_budget(&self, bytes: usize) {
        // At least what a channel hands the stack at once, or it could never take it.
        let bytes = bytes.clamp(self.max_part(), PEER_SEND_BUDGET);
        let before = self.budget_size.swap(bytes, Ordering::SeqCst);
        if bytes < before {
            self.budget.forget_permits(before - bytes);
        } else {
            self.budget.add_permits(bytes - before);
        }
    }

    /// The most a channel hands the stack in one message.
    pub(super) fn max_part(&self) -> usize {
        if self.small_bursts.load(Ordering::SeqCst) {
            SMALL_BURST_MESSAGE.min(self.max_message)
        } else {
            self.max_message
        }
    }

    /// With small bursts, the send budget for the least round trip the path has shown
    /// (`None`: none yet, the path taken as short).
    pub(super) fn fit_small_bursts(&self, least_rtt: Option<Duration>) {
        if self.small_bursts.load(Ordering::SeqCst) {
            self.set_send_budget(small_burst_budget(least_rtt));
        }
    }
}

/// The send budget toward a peer that asked for small bursts, for a path with this round trip
/// (`None`: not measured, taken as short): `SMALL_BURST_BYTES` on a short path,
/// `SMALL_BURST_PER_MS` per millisecond of a longer one, at most the connection's usual budget.
pub(crate) fn small_burst_budget(rtt: Option<Duration>) -> usize {
    match rtt {
        Some(rtt) if rtt >= SMALL_BURST_SHORT => {
            let bytes = SMALL_BURST_PER_MS as f64 * rtt.as_secs_f64() * 1e3;
            (bytes as usize).clamp(SMALL_BURST_BYTES, PEER_SEND_BUDGET)
        }
        _ => SMALL_BURST_BYTES,
    }
}

/// With small bursts, every `SMALL_BURST_REFIT` until the connection ends: the send budget
/// follows the least round trip the selected path has shown since it came up. A path from a
/// local interface address to the peer's stays short whatever it shows: on a LAN a measured
/// round trip holds the peers' own queues more than the link, and a budget fitted to it
/// overflowed the page's socket on loopback.
pub(super) fn spawn_small_burst_refit(inner: &Arc<Inner>) {
    let weak = Arc::downgrade(inner);
    let dead = inner.dead.clone();
    tokio::spawn(async move {
        let mut least: Option<Duration> = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(SMALL_BURST_REFIT) => {}
                _ = dead.cancelled() => return,
            }
            let Some(inner) = weak.upgrade() else { return };
            if !inner.small_bursts.load(Ordering::SeqCst) {
                continue;
            }
            let (path, _) = path_info(&*inner.pc).await;
            if path.kind == PathKind::Host {
                continue;
            }
            if let Some(rtt) = path.rtt {
                least = Some(least.map_or(rtt, |l| l.min(rtt)));
            }
            inner.fit_small_bursts(least);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Toward a peer that asked for small bursts: 48 KiB on a short or unmeasured path, where
    /// a whole flight lands in its socket at once; 64 KiB per millisecond of a round trip of
    /// 2 ms or more, so that a path of 50 ms is not held to 1 MB/s; never more than the usual
    /// budget.
    #[test]
    fn the_small_burst_budget_grows_with_the_round_trip() {
        let ms = |m: f64| Some(Duration::from_secs_f64(m / 1e3));
        assert_eq!(small_burst_budget(None), 48 * 1024);
        assert_eq!(small_burst_budget(ms(0.2)), 48 * 1024);
        assert_eq!(small_burst_budget(ms(1.9)), 48 * 1024);
        assert_eq!(small_burst_budget(ms(2.0)), 128 * 1024);
        assert_eq!(small_burst_budget(ms(4.0)), 256 * 1024);
        assert_eq!(small_burst_budget(ms(50.0)), 3200 * 1024);
        assert_eq!(small_burst_budget(ms(500.0)), PEER_SEND_BUDGET);
    }
}
