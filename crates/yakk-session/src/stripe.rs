//! One byte stream carried over several lanes at once: a data channel on each of several peer
//! connections (docs/yakk2.md, "Lanes").
//!
//! Each SCTP association has its own congestion window, and on a lossy link that window, not
//! the link, sets the rate: halved at every loss, grown by one packet per round trip. Several
//! associations side by side each keep their own window, so together they carry several times
//! more. A striped stream cuts what is written into frames and sends each frame whole on one
//! lane, whichever has room first:
//!
//! ```text
//! frame = seq (u64 BE) ‖ len (u32 BE) ‖ len bytes of data
//! ```
//!
//! `seq` counts frames from 0 across all lanes of the stream. A frame with `len` 0 ends the
//! stream (the writer's shutdown); after it every lane is shut down. Each lane is reliable and
//! ordered, so the next frame the reader wants is always at the front of one lane: the reader
//! reads only frame headers ahead, and takes data only from the lane that holds the next frame.
//! It buffers nothing of its own; the lanes' flow control bounds memory as for any stream.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes before a frame's data.
pub const HEADER: usize = 12;
/// The largest frame, header included: one data-channel message between yakk/2 peers.
pub const MAX_FRAME: usize = 65536;
/// The most data one frame carries.
pub const MAX_PAYLOAD: usize = MAX_FRAME - HEADER;

/// What a lane has at its front, seen from the reader.
#[derive(Debug, Clone, Copy)]
struct Head {
    seq: u64,
    /// Data of the frame still to read; 0 for the end marker.
    left: usize,
}

struct Lane<S> {
    io: S,
    /// The header at this lane's front, once read whole.
    head: Option<Head>,
    hdr: [u8; HEADER],
    hdr_got: usize,
    /// The last sequence number read on this lane (frames on a lane only go up).
    last_seq: Option<u64>,
    /// The peer shut this lane down.
    eof: bool,
    /// We shut this lane down.
    write_shut: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadState {
    Data,
    /// The end marker arrived: every lane must now end, with nothing more on it.
    Draining,
    Done,
}

/// A byte stream over several lanes. See the module documentation for the format.
pub struct Striped<S> {
    lanes: Vec<Lane<S>>,
    // Writer.
    next_seq: u64,
    /// A frame handed to one lane but not yet written whole: (lane, frame, bytes written).
    out: Option<(usize, Vec<u8>, usize)>,
    /// The lane tried first for the next frame: the one after the last frame's.
    start: usize,
    end_queued: bool,
    /// A frame buffer kept between writes.
    spare: Vec<u8>,
    // Reader.
    expected: u64,
    state: ReadState,
}

/// A frame header: the sequence number (u64 BE), then the payload length (u32 BE).
fn split_header(h: &[u8; HEADER]) -> (u64, usize) {
    let [s0, s1, s2, s3, s4, s5, s6, s7, l0, l1, l2, l3] = *h;
    (
        u64::from_be_bytes([s0, s1, s2, s3, s4, s5, s6, s7]),
        u32::from_be_bytes([l0, l1, l2, l3]) as usize,
    )
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("striped stream: {msg}"))
}

fn cut_short() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "striped stream: a lane ended before the stream did (a peer connection was lost)",
    )
}

impl<S> Striped<S> {
    /// A stream over these lanes; the peer must stripe over the same lanes (in any order).
    pub fn new(lanes: Vec<S>) -> Self {
        assert!(
            !lanes.is_empty(),
            "a striped stream needs at least one lane"
        );
        Striped {
            lanes: lanes
                .into_iter()
                .map(|io| Lane {
                    io,
                    head: None,
                    hdr: [0; HEADER],
                    hdr_got: 0,
                    last_seq: None,
                    eof: false,
                    write_shut: false,
                })
                .collect(),
            next_seq: 0,
            out: None,
            start: 0,
            end_queued: false,
            spare: Vec::new(),
            expected: 0,
            state: ReadState::Data,
        }
    }

    pub fn lanes(&self) -> usize {
        self.lanes.len()
    }
}

impl<S: AsyncWrite + Unpin> Striped<S> {
    /// Writes the rest of the frame in progress, if any, on its lane.
    fn poll_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let Some((lane, frame, done)) = &mut self.out else {
                return Poll::Ready(Ok(()));
            };
            if *done == frame.len() {
                self.spare = std::mem::take(frame);
                self.out = None;
                return Poll::Ready(Ok(()));
            }
            let n = ready!(Pin::new(&mut self.lanes[*lane].io).poll_write(cx, &frame[*done..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *done += n;
        }
    }

    /// Hands a frame of `data` (empty: the end marker) to the first lane with room, trying
    /// them in turn from `start`. Pending (with every lane's waker set) when none has room.
    fn poll_frame(&mut self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<()>> {
        debug_assert!(self.out.is_none() && data.len() <= MAX_PAYLOAD);
        let mut frame = std::mem::take(&mut self.spare);
        frame.clear();
        frame.extend_from_slice(&self.next_seq.to_be_bytes());
        frame.extend_from_slice(&(data.len() as u32).to_be_bytes());
        frame.extend_from_slice(data);
        let count = self.lanes.len();
        for i in 0..count {
            let lane = (self.start + i) % count;
            match Pin::new(&mut self.lanes[lane].io).poll_write(cx, &frame) {
                Poll::Pending => continue,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.next_seq += 1;
                    self.start = (lane + 1) % count;
                    self.out = Some((lane, frame, n));
                    return Poll::Ready(Ok(()));
                }
            }
        }
        self.spare = frame;
        Poll::Pending
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Striped<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.end_queued {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "stream already shut down for writing",
            )));
        }
        ready!(this.poll_out(cx))?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = buf.len().min(MAX_PAYLOAD);
        ready!(this.poll_frame(cx, &buf[..n]))?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_out(cx))?;
        for lane in &mut this.lanes {
            if !lane.write_shut {
                ready!(Pin::new(&mut lane.io).poll_flush(cx))?;
            }
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_out(cx))?;
        if !this.end_queued {
            ready!(this.poll_frame(cx, &[]))?;
            this.end_queued = true;
            ready!(this.poll_out(cx))?;
        }
        for lane in &mut this.lanes {
            if !lane.write_shut {
                ready!(Pin::new(&mut lane.io).poll_shutdown(cx))?;
                lane.write_shut = true;
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> Striped<S> {
    /// Reads headers on the lanes that have none at their front. Ready(true) when a new
    /// header arrived, Ready(false) when no lane can give one now (wakers set on those pending).
    fn poll_headers(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        let mut progressed = false;
        for lane in &mut self.lanes {
            while lane.head.is_none() && !lane.eof {
                let mut rb = ReadBuf::new(&mut lane.hdr[lane.hdr_got..]);
                match Pin::new(&mut lane.io).poll_read(cx, &mut rb) {
                    Poll::Pending => break,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Ready(Ok(())) => {
                        let n = rb.filled().len();
                        if n == 0 {
                            if lane.hdr_got != 0 {
                                return Poll::Ready(Err(cut_short()));
                            }
                            lane.eof = true;
                            progressed = true;
                            break;
                        }
                        lane.hdr_got += n;
                        if lane.hdr_got < HEADER {
                            continue;
                        }
                        lane.hdr_got = 0;
                        let (seq, len) = split_header(&lane.hdr);
                        if len > MAX_PAYLOAD {
                            return Poll::Ready(Err(bad("frame larger than allowed")));
                        }
                        if seq < self.expected || lane.last_seq.is_some_and(|l| seq <= l) {
                            return Poll::Ready(Err(bad("frame out of sequence")));
                        }
                        lane.last_seq = Some(seq);
                        lane.head = Some(Head { seq, left: len });
                        progressed = true;
                    }
                }
            }
        }
        Poll::Ready(Ok(progressed))
    }

    /// After the end marker: every lane must end with nothing more on it.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut waiting = false;
        for lane in &mut self.lanes {
            if lane.head.is_some() {
                return Poll::Ready(Err(bad("data after the end of the stream")));
            }
            while !lane.eof {
                let mut one = [0u8; 1];
                let mut rb = ReadBuf::new(&mut one);
                match Pin::new(&mut lane.io).poll_read(cx, &mut rb) {
                    Poll::Pending => {
                        waiting = true;
                        break;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Ready(Ok(())) if rb.filled().is_empty() => lane.eof = true,
                    Poll::Ready(Ok(())) => {
                        return Poll::Ready(Err(bad("data after the end of the stream")));
                    }
                }
            }
        }
        if waiting {
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Striped<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            match this.state {
                ReadState::Done => return Poll::Ready(Ok(())),
                ReadState::Draining => {
                    ready!(this.poll_drain(cx))?;
                    this.state = ReadState::Done;
                    continue;
                }
                ReadState::Data => {}
            }
            let expected = this.expected;
            let found = this
                .lanes
                .iter()
                .enumerate()
                .find_map(|(i, l)| l.head.filter(|h| h.seq == expected).map(|h| (i, h)));
            let Some((i, head)) = found else {
                if ready!(this.poll_headers(cx))? {
                    continue;
                }
                // Nothing new anywhere. If no lane can still bring the next frame, it is lost.
                if this.lanes.iter().all(|l| l.eof || l.head.is_some()) {
                    return Poll::Ready(Err(cut_short()));
                }
                return Poll::Pending;
            };
            if head.left == 0 {
                this.lanes[i].head = None;
                this.state = ReadState::Draining;
                continue;
            }
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            let want = head.left.min(buf.remaining());
            let dst = buf.initialize_unfilled_to(want);
            let mut sub = ReadBuf::new(dst);
            ready!(Pin::new(&mut this.lanes[i].io).poll_read(cx, &mut sub))?;
            let n = sub.filled().len();
            if n == 0 {
                return Poll::Ready(Err(cut_short()));
            }
            buf.advance(n);
            let left = head.left - n;
            if left == 0 {
                this.lanes[i].head = None;
                this.expected += 1;
            } else {
                this.lanes[i].head = Some(Head { left, ..head });
            }
            return Poll::Ready(Ok(()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

    fn pairs(n: usize, cap: usize) -> (Vec<DuplexStream>, Vec<DuplexStream>) {
        (0..n).map(|_| duplex(cap)).unzip()
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + i / 7919) as u8).collect()
    }

    /// Data both ways over four lanes of different capacities, with EOF carried each way.
    #[tokio::test]
    async fn carries_both_ways_in_order_and_ends() {
        let (a, mut b): (Vec<_>, Vec<_>) = (0..4).map(|i| duplex(1000 + i * 70_000)).unzip();
        b.reverse(); // the lanes may come in any order on the other side
        let (mut a, mut b) = (Striped::new(a), Striped::new(b));
        let up = pattern(3_000_000);
        let down = pattern(100_000);
        let (up2, down2) = (up.clone(), down.clone());
        let ta = tokio::spawn(async move {
            // Writes of many sizes, around the frame size.
            let mut off = 0;
            let mut step = 1;
            while off < up2.len() {
                let end = (off + step).min(up2.len());
                a.write_all(&up2[off..end]).await.unwrap();
                off = end;
                step = (step * 3 + 17) % 150_000 + 1;
            }
            a.shutdown().await.unwrap();
            let mut back = Vec::new();
            a.read_to_end(&mut back).await.unwrap();
            back
        });
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        assert!(got == up, "the data arrived intact and in order");
        b.write_all(&down2).await.unwrap();
        b.shutdown().await.unwrap();
        assert!(ta.await.unwrap() == down);
    }

    /// A lane whose peer reads nothing more does not stop the stream: frames go to the others.
    #[tokio::test]
    async fn frames_go_around_a_full_lane() {
        let (a, mut b) = pairs(3, 256 * 1024);
        // Lane 1 is full before we start: nothing more fits on it.
        let filler = vec![0u8; 256 * 1024];
        let mut a = a;
        a[1].write_all(&filler).await.unwrap();
        let stuck = b.remove(1);
        let mut w = Striped::new(a);
        let data = pattern(2_000_000);
        let data2 = data.clone();
        // The reader gets only lanes 0 and 2; lane 1 stays full, so any frame sent there
        // would never come out and the read below would hang.
        let mut r = Striped::new(b);
        let writer = tokio::spawn(async move {
            w.write_all(&data2).await.unwrap();
            w
        });
        let mut got = vec![0u8; data.len()];
        tokio::time::timeout(std::time::Duration::from_secs(10), r.read_exact(&mut got))
            .await
            .expect("the stream moves around the full lane")
            .unwrap();
        assert!(got == data);
        let w = writer.await.unwrap();
        assert_eq!(w.lanes(), 3);
        drop(stuck);
    }

    /// A lane that ends before the end marker (its peer connection lost) fails the read: a
    /// stream never looks complete when part of it is missing.
    #[tokio::test]
    async fn a_lost_lane_is_an_error_not_an_end() {
        let (a, b) = pairs(2, 1 << 20);
        let mut w = Striped::new(a);
        let mut r = Striped::new(b);
        w.write_all(&pattern(500_000)).await.unwrap();
        w.flush().await.unwrap();
        // Drop the writer without shutting it down: lanes end without the end marker.
        drop(w);
        let mut got = Vec::new();
        let e = r.read_to_end(&mut got).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(got.len(), 500_000, "what was sent arrives before the error");
    }

    async fn read_hostile(
        frames: &[(usize, u64, u32, usize)],
        lanes: usize,
    ) -> io::Result<Vec<u8>> {
        let (mut a, b) = pairs(lanes, 1 << 20);
        for &(lane, seq, len, actual) in frames {
            let mut f = seq.to_be_bytes().to_vec();
            f.extend_from_slice(&len.to_be_bytes());
            f.extend(std::iter::repeat_n(7u8, actual));
            a[lane].write_all(&f).await.unwrap();
        }
        for mut l in a {
            l.shutdown().await.unwrap();
        }
        let mut r = Striped::new(b);
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.map(|_| got)
    }

    #[tokio::test]
    async fn hostile_frames_are_refused() {
        // Well formed: frames 0, 1 on different lanes, then the end marker.
        let ok = read_hostile(&[(1, 0, 3, 3), (0, 1, 2, 2), (1, 2, 0, 0)], 2).await;
        assert_eq!(ok.unwrap(), vec![7u8; 5]);
        // Too large.
        let e = read_hostile(&[(0, 0, MAX_PAYLOAD as u32 + 1, 0)], 1).await;
        assert_eq!(e.unwrap_err().kind(), io::ErrorKind::InvalidData);
        // A sequence number repeated on one lane.
        let e = read_hostile(&[(0, 0, 1, 1), (0, 0, 1, 1)], 1).await;
        assert_eq!(e.unwrap_err().kind(), io::ErrorKind::InvalidData);
        // The same frame on two lanes.
        let e = read_hostile(&[(0, 0, 1, 1), (1, 0, 1, 1), (0, 1, 0, 0)], 2).await;
        assert_eq!(e.unwrap_err().kind(), io::ErrorKind::InvalidData);
        // Data after the end marker.
        let e = read_hostile(&[(0, 0, 0, 0), (1, 1, 1, 1)], 2).await;
        assert_eq!(e.unwrap_err().kind(), io::ErrorKind::InvalidData);
        // A gap: frame 1 never comes, the lanes end.
        let e = read_hostile(&[(0, 0, 1, 1), (1, 2, 1, 1)], 2).await;
        assert_eq!(e.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        // A header cut in the middle.
        let (mut a, b) = pairs(1, 64);
        a[0].write_all(&[0, 0, 0]).await.unwrap();
        drop(a);
        let mut r = Striped::new(b);
        let e = r.read_to_end(&mut Vec::new()).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    /// Writing after shutdown fails; shutdown twice is fine.
    #[tokio::test]
    async fn shutdown_is_final() {
        let (a, _b) = pairs(2, 1024);
        let mut w = Striped::new(a);
        w.shutdown().await.unwrap();
        w.shutdown().await.unwrap();
        assert!(w.write_all(b"x").await.is_err());
    }
}
