//! A data channel wired to a [`Channel`]: two pump tasks (one per direction, so a blocked send
//! never stops the channel from being drained, which would deadlock two peers sending to each
//! other at once), the end-of-stream marker, flow-control grants, and the connection's send
//! budget. The channel's shared state and its close handshake are in `close.rs`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::peer_connection::PeerConnection;

mod close;

use close::{ChannelState, drain_after_close, messages_delivered, more_to_come};

use crate::channel::{Channel, ChannelEnds, Outbound, coalesce};
use crate::flow::{self, Admit, Flow, Pool};

/// How often a channel holding budget checks what the stack has released, when the stack has
/// not said so itself (see `Held::take`).
const BUDGET_POLL: Duration = Duration::from_millis(2);

/// After the peer closed a channel, how long its reader waits for the next of the messages
/// the stack still owes it (they come as soon as every reader on the connection keeps up).
const PEER_CLOSE_STALL: Duration = Duration::from_secs(60);

/// What a channel takes from its connection when it is wired to a [`Channel`].
pub(crate) struct ChannelContext {
    pub(crate) max_message: usize,
    /// The most the writer hands the stack in one message (at most `max_message`): smaller
    /// toward a peer that asked for small bursts.
    pub(crate) max_part: usize,
    /// The send budget is small (small bursts): a writer waiting for it is woken by the stack's
    /// release rather than only by its poll.
    pub(crate) small_budget: bool,
    pub(crate) half_close: bool,
    /// Per-stream flow control with the peer (both sides announced it).
    pub(crate) flow: bool,
    /// With flow control, the opener of a channel closes it (both sides announced it); else
    /// the side that accepted it.
    pub(crate) opener_closes: bool,
    pub(crate) pool: Arc<Pool>,
    /// The connection's token: the channel's own is a child of it.
    pub(crate) dead: CancellationToken,
    pub(crate) last_peer_close: Arc<Mutex<Option<Instant>>>,
    pub(crate) pc: Weak<dyn PeerConnection>,
    pub(crate) budget: Arc<Semaphore>,
    pub(crate) budget_cap: usize,
}

/// Wire an open data channel to a new `Channel`; the token is cancelled when the channel is
/// finished. `early`: events already taken off the channel (while it was opening), handled
/// first.
pub(crate) fn attach(
    cx: ChannelContext,
    dc: Arc<dyn DataChannel>,
    opener: bool,
    early: Vec<DataChannelEvent>,
) -> (Channel, CancellationToken) {
    let flow = (cx.half_close && cx.flow && cx.max_message as u64 <= flow::INITIAL_WINDOW)
        .then(|| Flow::new(cx.pool.clone()));
    let ended = cx.dead.child_token();
    let (stream, ends) = Channel::pair(cx.max_message, flow.clone(), ended.clone());
    let ChannelEnds {
        to_app,
        from_app,
        room,
    } = ends;
    let state = Arc::new(ChannelState {
        dc,
        half_close: cx.half_close,
        local_done: AtomicBool::new(false),
        remote_done: AtomicBool::new(false),
        ended,
        flow,
        closed: tokio::sync::Mutex::new(false),
        opener,
        closes: opener == cx.opener_closes,
        peer_closing: AtomicBool::new(false),
        sent_closing: AtomicBool::new(false),
        finishing: AtomicBool::new(false),
        released: tokio::sync::Notify::new(),
        last_peer_close: cx.last_peer_close,
        pc: cx.pc,
    });
    let ended = state.ended.clone();
    tokio::spawn(read_pump(state.clone(), to_app, room, early));
    tokio::spawn(write_pump(
        state,
        from_app,
        (cx.max_message, cx.max_part.clamp(1, cx.max_message)),
        Held {
            budget: cx.budget,
            cap: cx.budget_cap,
            bytes: 0,
            wake_on_release: cx.small_budget,
        },
    ));
    (stream, ended)
}

/// Data channel → application. Ends on close, on the peer's marker (EOF) or with the connection.
///
/// The peer's close does not end the stream at once: the stack can hand us the close before
/// the channel's last messages (see `messages_delivered`), so after the close the pump reads on
/// until it has taken every message the stack received for the channel. `seen` counts the
/// messages taken off the channel (wrapping, as the stack's count does), `early` ones first.
async fn read_pump(
    st: Arc<ChannelState>,
    to_app: mpsc::Sender<bytes::Bytes>,
    room: Option<Arc<Semaphore>>,
    early: Vec<DataChannelEvent>,
) {
    let mut early = early.into_iter();
    let mut seen: u32 = 0;
    let mut to_app = Some(to_app);
    // After the peer's close: how many messages the stack received for the channel in all.
    let mut closed_at: Option<u32> = None;
    loop {
        if let Some(total) = closed_at
            && !more_to_come(total, seen)
        {
            break;
        }
        let ev = if let Some(ev) = early.next() {
            Some(ev)
        } else {
            tokio::select! {
                ev = st.dc.poll() => ev,
                _ = st.ended.cancelled() => {
                    drain_after_close(&st).await;
                    break;
                }
                _ = tokio::time::sleep(PEER_CLOSE_STALL), if closed_at.is_some() => {
                    tracing::warn!(
                        "a closed channel's last messages did not arrive within \
                         {PEER_CLOSE_STALL:?}"
                    );
                    break;
                }
            }
        };
        match ev {
            None => break,
            Some(DataChannelEvent::OnClose) => {
                if st.opener {
                    // A poisoned lock still holds a whole `Option<Instant>`: overwrite it.
                    *st.last_peer_close
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
                }
                // With the peer's end-of-stream marker taken, nothing the application wants
                // can follow; and after our own close we want nothing more.
                if st.remote_done.load(Ordering::SeqCst) || *st.closed.lock().await {
                    break;
                }
                match messages_delivered(&st).await {
                    Some(total) if more_to_come(total, seen) => {
                        tracing::debug!(
                            "the peer closed a channel with {} message(s) still on their way",
                            total.wrapping_sub(seen)
                        );
                        closed_at = Some(total);
                    }
                    _ => break,
                }
            }
            Some(DataChannelEvent::OnMessage(m)) => {
                seen = seen.wrapping_add(1);
                if m.is_string && st.half_close && !m.data.is_empty() {
                    // A control message: a window grant, the closing marker, or something
                    // newer we ignore.
                    match (&st.flow, flow::parse_grant(&m.data)) {
                        (Some(f), Some(limit)) => f.on_grant(limit),
                        (Some(_), None) if &m.data[..] == b"c" => {
                            // The peer sends nothing more: closing now loses nothing of its,
                            // whichever side we are. Before both directions ended, the peer
                            // gave the stream up (`give_up`); what we still had to send
                            // would not be read.
                            st.peer_closing.store(true, Ordering::SeqCst);
                            st.close().await;
                            break;
                        }
                        _ => tracing::debug!("ignoring a control message on a channel"),
                    }
                    continue;
                }
                if m.is_string && st.half_close {
                    st.remote_done.store(true, Ordering::SeqCst);
                    // `finishing` first, then the reader's EOF: a reader that drops the stream
                    // at its EOF must find the close handshake under way, or `write_pump`
                    // would take the drop for the stream given up.
                    let ours = st.local_done.load(Ordering::SeqCst)
                        && !st.finishing.swap(true, Ordering::SeqCst);
                    to_app = None; // EOF for the reader
                    if ours && st.finish().await {
                        break;
                    }
                    continue;
                }
                if let Some(f) = &st.flow
                    && let Admit::Overrun { received, granted } = f.admit(m.data.len())
                {
                    tracing::warn!(
                        "the peer sent {received} bytes on a stream where it was allowed \
                         {granted}: resetting the stream"
                    );
                    st.reset().await;
                    break;
                }
                let Some(tx) = &to_app else { continue };
                if m.data.is_empty() {
                    continue;
                }
                if st.flow.is_some() {
                    // Within the window the queue has room for every message: never wait
                    // here, or the stack would stop draining the other channels too.
                    match tx.try_send(m.data.freeze()) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Closed(_)) => to_app = None,
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            tracing::warn!("a stream's inbound queue overflowed: resetting it");
                            st.reset().await;
                            break;
                        }
                    }
                    continue;
                }
                // Without flow control: wait only when the queue is full in bytes.
                if let Some(room) = &room {
                    let cost = (flow::cost(m.data.len()) as usize)
                        .min(crate::channel::UNFLOWED_QUEUE_BYTES);
                    tokio::select! {
                        p = room.acquire_many(cost as u32) => match p {
                            Ok(p) => p.forget(),
                            Err(_) => to_app = None,
                        },
                        _ = st.ended.cancelled() => break,
                    }
                }
                let Some(tx) = &to_app else { continue };
                tokio::select! {
                    r = tx.send(m.data.freeze()) => if r.is_err() {
                        // The application dropped the stream: keep draining until closed.
                        to_app = None;
                    },
                    _ = st.ended.cancelled() => break,
                }
            }
            Some(DataChannelEvent::OnBufferedAmountLow) => st.released.notify_one(),
            Some(_) => {}
        }
    }
    st.ended.cancel();
}

/// A channel's share of the connection's send budget: bytes it handed to the stack that
/// the stack has not released yet.
struct Held {
    budget: Arc<Semaphore>,
    /// The budget's size: no take asks for more.
    cap: usize,
    bytes: usize,
    /// Have the stack say when it released enough (see `take`): for small budgets, which a
    /// round trip uses up.
    wake_on_release: bool,
}

impl Held {
    /// Give back what the stack no longer holds for this channel.
    async fn release(&mut self, st: &ChannelState) {
        if self.bytes == 0 {
            return;
        }
        let outstanding = st.dc.outstanding_bytes().await.unwrap_or(0);
        if outstanding < self.bytes {
            self.budget.add_permits(self.bytes - outstanding);
            self.bytes = outstanding;
        }
    }

    /// Take `n` bytes of budget, giving back our own released bytes while waiting.
    /// `false` if the channel ended first.
    ///
    /// With a small budget (toward the browser page), while it waits on its own bytes it asks
    /// the stack to say when enough of them are released (the channel's buffered-amount low
    /// threshold), so that it is not held up to a poll period on every round trip. The stack
    /// counts its buffered amount a little differently from the bytes held here, so the poll
    /// stays as the fallback. A large budget is rarely used up, and the extra wake-ups cost
    /// CPU there (the README's browser section).
    async fn take(&mut self, st: &ChannelState, n: usize) -> bool {
        let n = n.min(self.cap);
        loop {
            self.release(st).await;
            if self.wake_on_release && self.bytes > 0 && self.budget.available_permits() < n {
                let low = u32::try_from(self.bytes.saturating_sub(n)).unwrap_or(u32::MAX);
                let _ = st.dc.set_buffered_amount_low_threshold(low).await;
                // What was released before the threshold was set raises no event.
                self.release(st).await;
            }
            tokio::select! {
                _ = st.released.notified(), if self.wake_on_release && self.bytes > 0 => {}
                p = self.budget.acquire_many(n as u32) => {
                    let Ok(p) = p else { return false };
                    p.forget();
                    self.bytes += n;
                    return true;
                }
                _ = tokio::time::sleep(BUDGET_POLL), if self.bytes > 0 => {}
                _ = st.ended.cancelled() => return false,
            }
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // The channel is gone: what it still held is discarded with it.
        self.budget.add_permits(self.bytes);
    }
}

/// Resolves when this stream owes the peer a grant (never without flow control).
async fn grant_due(st: &ChannelState) {
    match &st.flow {
        Some(f) => f.grant_due.notified().await,
        None => std::future::pending().await,
    }
}

/// Sends the grant that is due, if any: none once the peer has finished sending or the
/// channel is closed. `false` if the channel is gone.
async fn send_grant(st: &ChannelState) -> bool {
    let closed = st.closed.lock().await;
    if *closed || st.remote_done.load(Ordering::SeqCst) || st.sent_closing.load(Ordering::SeqCst) {
        return !*closed;
    }
    let Some(limit) = st.flow.as_ref().and_then(|f| f.next_grant()) else {
        return true;
    };
    let text = flow::grant_text(limit);
    tokio::select! {
        r = st.dc.send_text(&text) => r.is_ok(),
        _ = st.ended.cancelled() => false,
    }
}

/// Waits until the peer's window has room, sending our own grants meanwhile (both sides
/// may be waiting on each other) and giving back the send budget the stack has released
/// (a stream waiting here must not keep the others' budget). Returns how many of `len`
/// bytes may go now (at least one), or `None` if the channel ended.
async fn wait_credit(st: &ChannelState, held: &mut Held, len: usize) -> Option<usize> {
    let Some(f) = &st.flow else { return Some(len) };
    loop {
        let n = f.room(len);
        if n > 0 {
            return Some(n);
        }
        tokio::select! {
            _ = f.credit.notified() => {}
            _ = f.grant_due.notified() => if !send_grant(st).await {
                return None;
            },
            _ = tokio::time::sleep(BUDGET_POLL), if held.bytes > 0 => {
                held.release(st).await;
            }
            _ = st.ended.cancelled() => return None,
        }
    }
}

/// Application → channel. Coalesces small queued writes up to `max_message` and hands them to
/// the stack in messages of at most `max_part`, within the connection's send budget and the
/// peer's window.
async fn write_pump(
    st: Arc<ChannelState>,
    mut from_app: mpsc::Receiver<Outbound>,
    (max, max_part): (usize, usize),
    mut held: Held,
) {
    let mut carry: Option<Outbound> = None;
    loop {
        let item = match carry.take() {
            Some(item) => Some(item),
            None => loop {
                tokio::select! {
                    item = from_app.recv() => break item,
                    _ = grant_due(&st) => if !send_grant(&st).await {
                        return;
                    },
                    _ = tokio::time::sleep(BUDGET_POLL), if held.bytes > 0 => {
                        held.release(&st).await;
                    }
                    _ = st.ended.cancelled() => return,
                }
            },
        };
        match item {
            None => {
                // The stream was dropped: everything it wrote is queued. Once both
                // directions ended, closing is `both_done`'s business; else it was given up.
                st.give_up().await;
                break;
            }
            Some(Outbound::Data(mut msg)) => {
                carry = coalesce(&mut msg, &mut from_app, max);
                while !msg.is_empty() {
                    let Some(n) = wait_credit(&st, &mut held, msg.len().min(max_part)).await else {
                        return;
                    };
                    let part = msg.split_to(n);
                    if !held.take(&st, n).await {
                        return;
                    }
                    let sent = tokio::select! {
                        r = st.dc.send(part) => r.is_ok(),
                        _ = st.ended.cancelled() => false,
                    };
                    if !sent {
                        return;
                    }
                    if let Some(f) = &st.flow {
                        f.on_sent(n);
                    }
                }
            }
            Some(Outbound::Finish) => {
                if !st.half_close {
                    st.close().await;
                    break;
                }
                let sent = tokio::select! {
                    r = st.dc.send_text("") => r.is_ok(),
                    _ = st.ended.cancelled() => false,
                };
                if !sent {
                    break;
                }
                st.local_done.store(true, Ordering::SeqCst);
                if st.remote_done.load(Ordering::SeqCst) {
                    st.both_done().await;
                    break;
                }
            }
        }
    }
    // Dropping `from_app` makes further writes fail with BrokenPipe.
}
