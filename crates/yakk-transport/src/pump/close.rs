//! A channel's state shared by its two pumps, and how the channel ends: the close handshake
//! with the peer, and what a reader still takes after a close.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::peer_connection::{PeerConnection, RTCStatsReportEntry, StatsSelector};

use crate::flow::Flow;

/// How long a side waits for the peer's part of the close handshake once both directions
/// have ended (see `ChannelState::both_done`).
const CLOSE_HANDSHAKE_WAIT: Duration = Duration::from_secs(10);
const CLOSE_WAIT_STEP: Duration = Duration::from_millis(5);
/// How long a closing channel waits for the peer to acknowledge more of what was sent before
/// it closes anyway (a peer that stops reading for good does not keep the channel forever).
const CLOSE_STALL: Duration = Duration::from_secs(60);
/// After our close, how long the reader keeps taking what the stack still delivers for the
/// channel, waiting for the peer's close (see `drain_after_close`).
const DRAIN_AFTER_CLOSE: Duration = Duration::from_secs(2);

/// Per-channel state shared by its two pumps.
pub(super) struct ChannelState {
    pub(super) dc: Arc<dyn DataChannel>,
    pub(super) half_close: bool,
    /// We sent the end-of-stream marker.
    pub(super) local_done: AtomicBool,
    /// The peer sent the end-of-stream marker.
    pub(super) remote_done: AtomicBool,
    /// Cancelled when the channel is finished (closed by either side or the connection died).
    pub(super) ended: CancellationToken,
    /// Per-stream flow control, when both sides speak it.
    pub(super) flow: Option<Arc<Flow>>,
    /// Set once the channel is closed; held while a grant is sent, so none follows the close.
    pub(super) closed: tokio::sync::Mutex<bool>,
    /// We opened the channel (rather than accepted it from the peer).
    pub(super) opener: bool,
    /// With flow control, this side closes the channel once it has the peer's closing marker
    /// (the other side sends the marker).
    pub(super) closes: bool,
    /// The peer sent its closing marker: it sends nothing more (flow control only).
    pub(super) peer_closing: AtomicBool,
    /// We sent our closing marker: we send nothing more, grants included (set under
    /// `closed`).
    pub(super) sent_closing: AtomicBool,
    /// `both_done` ran.
    pub(super) finishing: AtomicBool,
    /// The stack said it released some of what was sent (the channel's buffered amount fell to
    /// its low threshold, set by `Held::take`): a writer waiting for send budget looks again
    /// at once instead of at its next poll.
    pub(super) released: tokio::sync::Notify,
    /// The connection's `last_peer_close`.
    pub(super) last_peer_close: Arc<Mutex<Option<Instant>>>,
    /// The peer connection, for the stack's count of the channel's messages.
    pub(super) pc: Weak<dyn PeerConnection>,
}

impl ChannelState {
    /// Close once what was sent has been delivered: closing resets the SCTP stream, which
    /// would drop data still in flight. A slow reader is waited for as long as it makes
    /// progress; one that stops acknowledging for `CLOSE_STALL` does not keep the channel.
    pub(super) async fn close(&self) {
        let mut least = usize::MAX;
        let mut progress = Instant::now();
        while !self.ended.is_cancelled() {
            let outstanding = self.dc.outstanding_bytes().await.unwrap_or(0);
            if outstanding == 0 {
                break;
            }
            if outstanding < least {
                least = outstanding;
                progress = Instant::now();
            } else if progress.elapsed() >= CLOSE_STALL {
                tracing::warn!(
                    "closing a channel whose peer acknowledged nothing for {CLOSE_STALL:?}: \
                     {outstanding} bytes not delivered"
                );
                break;
            }
            tokio::time::sleep(CLOSE_WAIT_STEP).await;
        }
        self.reset().await;
    }

    /// Both directions have ended: decide who closes. Returns `true` if the channel was
    /// closed here, `false` if the reader must keep draining until the close comes.
    ///
    /// Without flow control both sides close, as before. With it, one side sends the closing
    /// marker `"c"` (nothing follows it) and waits; the other closes once it has that marker.
    /// Each side closes by itself after `CLOSE_HANDSHAKE_WAIT` if the other does not play
    /// along. Which side closes (`closes`):
    /// - **the opener**, when both sides announced `opener-closes`. This stack answers a
    ///   stream reset of a stream it holds with a reset of its own, so a close by the
    ///   acceptor ends with a last reset that reaches the opener about a round trip after the
    ///   opener freed the id, and ends whatever channel the opener has put on it since (in
    ///   bursts of short connections, some were lost: bench/README.md). A close by the
    ///   opener ends with a last reset that reaches the acceptor, which never picks the
    ///   opener's ids. The cost: the stack frees the id of a channel it closes itself at
    ///   once, before the reset is done, and an open that lands on it fails until the reset
    ///   completes; nothing is sent on that open, and it is retried when it ends, at the
    ///   latest after the open timeout (`open_channel`).
    /// - **the acceptor** otherwise (peers without the feature, the browser).
    ///
    /// Why a marker: a message that reaches a channel after it was closed is never collected,
    /// and the stack then never completes that SCTP stream's reset, so the stream id stays
    /// taken. Grants can follow an end-of-stream marker (for the direction still open), so
    /// "both markers seen" is not enough; the closing marker says the sender is silent from
    /// then on.
    pub(super) async fn both_done(self: &Arc<Self>) -> bool {
        if self.finishing.swap(true, Ordering::SeqCst) {
            return false;
        }
        self.finish().await
    }

    /// `both_done` once `finishing` is ours.
    pub(super) async fn finish(self: &Arc<Self>) -> bool {
        if self.flow.is_none() {
            self.close().await;
            return true;
        }
        if self.closes && self.peer_closing.load(Ordering::SeqCst) {
            self.close().await;
            return true;
        }
        if !self.closes {
            self.send_closing().await;
        }
        self.close_unless_peer_does();
        false
    }

    /// The application dropped the stream before both directions ended (it gave the stream
    /// up). Without flow control: close now. With it: send the closing marker and leave the
    /// close to the peer, taking and dropping what it sends until then; close after
    /// `CLOSE_HANDSHAKE_WAIT` if it does not. Closing at once would leave what the peer
    /// still sends arriving on a closed stream, and this stack then never completes the
    /// stream's reset: its id stays taken for good (every open that lands on it fails), and
    /// the data left on it shrinks the connection's receive window for good.
    pub(super) async fn give_up(self: &Arc<Self>) {
        if self.finishing.swap(true, Ordering::SeqCst) {
            return;
        }
        if self.flow.is_none() || self.peer_closing.load(Ordering::SeqCst) {
            self.close().await;
            return;
        }
        self.send_closing().await;
        self.close_unless_peer_does();
    }

    /// Send the closing marker `"c"`, once, unless the channel is closed.
    pub(super) async fn send_closing(&self) {
        let closed = self.closed.lock().await;
        if !*closed && !self.sent_closing.swap(true, Ordering::SeqCst) {
            let _ = self.dc.send_text("c").await;
        }
    }

    /// Close after `CLOSE_HANDSHAKE_WAIT` unless the channel ends before.
    pub(super) fn close_unless_peer_does(self: &Arc<Self>) {
        let st = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(CLOSE_HANDSHAKE_WAIT) => st.close().await,
                _ = st.ended.cancelled() => {}
            }
        });
    }

    /// Close now. Nothing is sent on the channel afterwards: a message sent on a closed
    /// channel can leave its SCTP stream behind, and the next channel given that stream id
    /// then fails to open.
    pub(super) async fn reset(&self) {
        let mut closed = self.closed.lock().await;
        if !*closed {
            *closed = true;
            let _ = self.dc.close().await;
        }
        self.ended.cancel();
    }
}

/// After our own close (or the stream's end): take and drop what the stack still delivers
/// for the channel until the peer's close comes, for up to `DRAIN_AFTER_CLOSE`.
///
/// rtc-sctp 0.21.1 holds back the peer's reset of a stream while received data waits on it
/// unread, and the peer may meanwhile give the stream id to a new channel: the reset, done
/// later, then ends that new channel instead ("Stream not existed": a yakk/1 answer lost
/// now and then when the owner closes each connection). A reader that stopped at our close
/// left such data unread.
pub(super) async fn drain_after_close(st: &ChannelState) {
    if !*st.closed.lock().await {
        return;
    }
    let _ = tokio::time::timeout(DRAIN_AFTER_CLOSE, async {
        while let Some(ev) = st.dc.poll().await {
            if matches!(ev, DataChannelEvent::OnClose) {
                break;
            }
        }
    })
    .await;
}

/// Whether a stack that received `total` messages for a channel has more to hand over to a
/// reader that took `seen` (both counts wrap).
pub(super) fn more_to_come(total: u32, seen: u32) -> bool {
    (total.wrapping_sub(seen) as i32) > 0
}

/// How many messages the stack received for this channel in all, from its statistics; `None`
/// when they do not say (the connection is gone).
///
/// Why this is needed: the `webrtc` crate's driver hands out the stack's events (a channel's
/// close among them) before the messages the stack has read, and while any reader on the
/// connection is behind it leaves those messages in the stack and hands out events all the
/// same. So when the peer closes a channel right after its last bytes (yakk/1 closes a
/// channel as its end of stream; a yakk/2 peer that aborts closes without a marker), the
/// close can reach us ahead of the last messages. The stack counts every message it delivers
/// to the channel before it learns of the close, so this count, read after the close, is final.
pub(super) async fn messages_delivered(st: &ChannelState) -> Option<u32> {
    let pc = st.pc.upgrade()?;
    let report = pc.get_stats(Instant::now(), StatsSelector::None).await;
    let key = format!("RTCDataChannel_{}", st.dc.id());
    match report.get(&key) {
        Some(RTCStatsReportEntry::DataChannel(s)) => Some(s.messages_received),
        _ => {
            tracing::warn!("no statistics for a closed channel: its last messages may be lost");
            None
        }
    }
}
