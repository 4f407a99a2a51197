//! [`Channel`]: the application's end of one data channel, as a byte stream.
//!
//! A `Channel` knows nothing of WebRTC: it talks to the channel's pump tasks (`pump/`)
//! through two bounded queues, one per direction. The queues bound memory and carry
//! backpressure: `poll_write` waits for a free slot. Inbound, without flow control the pump
//! stops draining the channel while the application does not read; with it (`flow`), the
//! queue holds the stream's whole window and every message taken off it is reported, so the
//! pump can grant the peer more.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::{CancellationToken, PollSender};

use crate::flow::{self, Flow};

/// What the application hands to the channel's writer pump.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// One message's worth of bytes (at most `max_message`).
    Data(BytesMut),
    /// The application shut down its writing half.
    Finish,
}

/// Appends data writes already queued behind `msg`, while the result stays within `max`
/// bytes (fewer, larger messages). Returns the first queued item it did not take, which the
/// caller handles next.
pub(crate) fn coalesce(
    msg: &mut BytesMut,
    from_app: &mut mpsc::Receiver<Outbound>,
    max: usize,
) -> Option<Outbound> {
    while msg.len() < max {
        match from_app.try_recv() {
            Ok(Outbound::Data(next)) if msg.len() + next.len() <= max => {
                msg.extend_from_slice(&next);
            }
            Ok(other) => return Some(other),
            Err(_) => break,
        }
    }
    None
}

/// The pump's side of a stream.
pub(crate) struct ChannelEnds {
    /// Received data toward the application; dropping it gives the application EOF.
    pub to_app: mpsc::Sender<Bytes>,
    /// Data and shutdown from the application; `None` once the `Channel` is dropped.
    pub from_app: mpsc::Receiver<Outbound>,
    /// Without flow control: room in the inbound queue, in bytes ([`flow::cost`] per
    /// message); the pump takes a message's cost before it queues it, the reader gives it back.
    pub room: Option<Arc<Semaphore>>,
}

/// Messages queued from the application toward the channel.
const OUT_DEPTH: usize = 4;
/// Messages queued from the channel toward the application (at most 16 × `max_message`
/// bytes per stream); deep enough that the pump rarely finds it full while the reader keeps
/// up, since a full queue pauses reception on the connection.
const IN_DEPTH: usize = 16;
/// Without flow control (yakk/1), the inbound queue holds up to this many bytes (each message
/// counted at least [`flow::MIN_COST`]). A pump that waits on its reader stops the stack's
/// delivery to every channel of the connection, and rtc 0.21.1 can then lose the tail of a
/// channel the peer closes meanwhile (1 to 2 in 1,000 8 MiB answers, 50 at a time, with a
/// queue of 16 messages); a deep queue keeps a reader that is a little behind from stopping
/// the pump.
pub(crate) const UNFLOWED_QUEUE_BYTES: usize = 16 << 20;

/// A reliable, ordered byte stream over one data channel.
///
/// Reads return EOF when the peer shuts down its writing half (half-close), closes the
/// channel, or the connection ends. Writes fail with `BrokenPipe` once the channel or the
/// connection is gone. Dropping the stream closes the channel.
pub struct Channel {
    inbound: mpsc::Receiver<Bytes>,
    pending: Bytes,
    outbound: PollSender<Outbound>,
    max_message: usize,
    shut_down: bool,
    /// Size of the largest message received (for tests that check the peer's message cap).
    largest_in: usize,
    /// Flow control with the peer, when both sides speak it: each message taken off
    /// `inbound` is reported, so the pump can grant the peer more.
    flow: Option<Arc<Flow>>,
    /// Without flow control: the inbound queue's room in bytes (see [`ChannelEnds::room`]).
    room: Option<Arc<Semaphore>>,
    /// Cancelled when the channel is finished (closed, or its connection gone): a write
    /// fails from then on, even before the writer pump has seen it and let go of its queue.
    ended: CancellationToken,
}

impl Channel {
    /// With flow control the queue holds a whole window and the pump never waits (the peer
    /// cannot send more than the window). Without it the queue holds
    /// [`UNFLOWED_QUEUE_BYTES`], and the pump waits on it only beyond that (a reader that
    /// stops reading then stops the pump).
    pub(crate) fn pair(
        max_message: usize,
        flow: Option<Arc<Flow>>,
        ended: CancellationToken,
    ) -> (Channel, ChannelEnds) {
        let (depth, room) = if flow.is_some() {
            (flow::QUEUE_LIMIT, None)
        } else {
            (
                (UNFLOWED_QUEUE_BYTES / flow::MIN_COST as usize).max(IN_DEPTH),
                Some(Arc::new(Semaphore::new(UNFLOWED_QUEUE_BYTES))),
            )
        };
        let (to_app, inbound) = mpsc::channel(depth);
        let (out_tx, from_app) = mpsc::channel(OUT_DEPTH);
        (
            Channel {
                inbound,
                pending: Bytes::new(),
                outbound: PollSender::new(out_tx),
                max_message: max_message.max(1),
                shut_down: false,
                largest_in: 0,
                flow,
                room: room.clone(),
                ended,
            },
            ChannelEnds {
                to_app,
                from_app,
                room,
            },
        )
    }
}

impl Channel {
    /// The size of the largest data-channel message received so far. A diagnostic: it shows
    /// the message size the peer sends (at most 4096 from a yakk/1 sender).
    pub fn largest_message_received(&self) -> usize {
        self.largest_in
    }

    /// For the parts of a striped stream: let the peer send up to `bytes` ahead of what is
    /// read (at most 4 MiB, as far as the connection's window pool allows), whether or not the
    /// application keeps up. A striped reader leaves one part unread while it waits for the
    /// next frame on another, so the usual growth (only while the reader keeps up) would keep
    /// the parts' windows at their smallest. No effect without flow control.
    pub fn set_striped_window(&self, bytes: u64) {
        if let Some(f) = &self.flow {
            f.set_eager(bytes);
        }
    }

    /// A message was taken off the inbound queue.
    fn took(&mut self, len: usize) {
        self.largest_in = self.largest_in.max(len);
        if let Some(f) = &self.flow {
            f.consumed(len);
        }
        if let Some(r) = &self.room {
            r.add_permits(flow::cost(len) as usize);
        }
    }
}

fn broken_pipe() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "data channel closed")
}

impl AsyncRead for Channel {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        while this.pending.is_empty() {
            match ready!(this.inbound.poll_recv(cx)) {
                Some(bytes) => {
                    this.took(bytes.len());
                    this.pending = bytes;
                }
                None => return Poll::Ready(Ok(())), // EOF
            }
        }
        let n = this.pending.len().min(buf.remaining());
        buf.put_slice(&this.pending.split_to(n));
        // Take whatever else is already queued, so one read empties several messages.
        while this.pending.is_empty() && buf.remaining() > 0 {
            match this.inbound.try_recv() {
                Ok(bytes) => {
                    this.took(bytes.len());
                    let n = bytes.len().min(buf.remaining());
                    this.pending = bytes;
                    buf.put_slice(&this.pending.split_to(n));
                }
                Err(_) => break,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Channel {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.shut_down {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "stream already shut down for writing",
            )));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.ended.is_cancelled() || ready!(this.outbound.poll_reserve(cx)).is_err() {
            return Poll::Ready(Err(broken_pipe()));
        }
        let n = buf.len().min(this.max_message);
        match this
            .outbound
            .send_item(Outbound::Data(BytesMut::from(&buf[..n])))
        {
            Ok(()) => Poll::Ready(Ok(n)),
            Err(_) => Poll::Ready(Err(broken_pipe())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Everything written is already queued toward the channel.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.shut_down {
            return Poll::Ready(Ok(()));
        }
        if ready!(this.outbound.poll_reserve(cx)).is_err() {
            // The channel is gone already: nothing left to shut down.
            this.shut_down = true;
            return Poll::Ready(Ok(()));
        }
        this.shut_down = true;
        let _ = this.outbound.send_item(Outbound::Finish);
        Poll::Ready(Ok(()))
    }
}
