//! Framing over a stream (RFC 8656 §12.5, RFC 6062): a STUN message is its 20-byte header and
//! `length` more bytes (a multiple of 4); ChannelData is its 4-byte header and `length` bytes,
//! padded to a multiple of 4. A frame that is neither, is longer than accepted, or does not
//! decode closes the connection (its stream cannot be trusted any further).
//!
//! ChannelData: the crate has no public way to build its `ChannelData` from outside; its UDP
//! transport decodes one from a datagram. Each ChannelData frame therefore goes through a
//! private pair of connected loopback UDP sockets and is read back with the crate's UDP
//! decoder, one at a time (the crate reads a transport's requests from a single task).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use bytecodec::DecodeExt as _;
use medea_turn::attr::{Attribute, ChannelNumber};
use medea_turn::transport::{Request, Transport};
use stun_codec::{Message, MessageDecoder};
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::net::UdpSocket;

/// Largest STUN message accepted, header included.
pub const MAX_STUN: usize = 4096;
/// Largest ChannelData accepted, header included, padding not: what the relay reads of a UDP
/// datagram.
pub const MAX_CHANNEL_DATA: usize = 1500;
/// A ChannelData frame lost in the loopback decoding (it cannot happen but by a bug) is given
/// up after this.
const DECODE_TIMEOUT: Duration = Duration::from_secs(1);
/// At most this many stale datagrams are cleared before a decode (an abandoned decode leaves
/// one).
const STALE_DATAGRAMS: usize = 256;
/// The magic cookie of every STUN message (RFC 5389), bytes 4 to 8.
pub(super) const MAGIC_COOKIE: [u8; 4] = 0x2112_A442_u32.to_be_bytes();

/// A frame read from a client.
pub(super) enum Frame {
    Stun(Box<Message<Attribute>>),
    /// A whole ChannelData, header included, padding removed.
    ChannelData(Vec<u8>),
}

#[derive(Debug)]
pub(super) enum ReadError {
    /// End of stream, or a broken connection.
    Gone,
    /// Not a frame this transport accepts.
    Malformed(&'static str),
}

impl From<io::Error> for ReadError {
    fn from(_: io::Error) -> Self {
        ReadError::Gone
    }
}

/// Reads one frame: a STUN message or a ChannelData (see the module's documentation).
pub(super) async fn read_frame<R>(rd: &mut R) -> Result<Frame, ReadError>
where
    R: AsyncRead + Unpin,
{
    let mut head = [0u8; 4];
    rd.read_exact(&mut head).await?;
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    match head[0] >> 6 {
        0b00 => {
            if len % 4 != 0 {
                return Err(ReadError::Malformed("STUN length not a multiple of 4"));
            }
            if 20 + len > MAX_STUN {
                return Err(ReadError::Malformed("STUN message too long"));
            }
            let mut buf = vec![0u8; 20 + len];
            buf[..4].copy_from_slice(&head);
            rd.read_exact(&mut buf[4..]).await?;
            if buf[4..8] != MAGIC_COOKIE {
                return Err(ReadError::Malformed("no STUN magic cookie"));
            }
            match MessageDecoder::<Attribute>::new().decode_from_bytes(&buf) {
                Ok(Ok(msg)) => Ok(Frame::Stun(Box::new(msg))),
                _ => Err(ReadError::Malformed("undecodable STUN message")),
            }
        }
        0b01 => {
            let number = u16::from_be_bytes([head[0], head[1]]);
            if !(ChannelNumber::MIN..=ChannelNumber::MAX).contains(&number) {
                return Err(ReadError::Malformed(
                    "ChannelData with an invalid channel number",
                ));
            }
            if 4 + len > MAX_CHANNEL_DATA {
                return Err(ReadError::Malformed("ChannelData too long"));
            }
            let padded = (4 + len).next_multiple_of(4);
            let mut buf = vec![0u8; padded];
            buf[..4].copy_from_slice(&head);
            rd.read_exact(&mut buf[4..]).await?;
            buf.truncate(4 + len);
            Ok(Frame::ChannelData(buf))
        }
        _ => Err(ReadError::Malformed("neither STUN nor ChannelData")),
    }
}

/// Turns ChannelData bytes into the crate's `ChannelData` through its UDP decoder (see the
/// module's documentation).
pub(super) struct ChannelDataDecoder {
    tx: UdpSocket,
    rx: UdpSocket,
}

impl ChannelDataDecoder {
    pub(super) async fn new() -> io::Result<ChannelDataDecoder> {
        let pair = match Self::pair(Ipv4Addr::LOCALHOST.into()).await {
            Ok(pair) => pair,
            Err(v4) => Self::pair(Ipv6Addr::LOCALHOST.into()).await.map_err(|v6| {
                io::Error::other(format!(
                    "TURN over TCP and TLS needs a loopback UDP socket pair: {v4} (127.0.0.1), \
                     {v6} (::1)"
                ))
            })?,
        };
        Ok(pair)
    }

    /// Two UDP sockets on `ip`, each connected to the other (so nothing else reaches them).
    async fn pair(ip: IpAddr) -> io::Result<ChannelDataDecoder> {
        let tx = UdpSocket::bind((ip, 0)).await?;
        let rx = UdpSocket::bind((ip, 0)).await?;
        tx.connect(rx.local_addr()?).await?;
        rx.connect(tx.local_addr()?).await?;
        Ok(ChannelDataDecoder { tx, rx })
    }

    pub(super) async fn decode(&self, raw: &[u8]) -> Option<Request> {
        // A decode abandoned halfway (the crate's task stopped) may have left a datagram.
        let mut scrap = [0u8; 1];
        for _ in 0..STALE_DATAGRAMS {
            if self.rx.try_recv(&mut scrap).is_err() {
                break;
            }
        }
        self.tx.send(raw).await.ok()?;
        match tokio::time::timeout(DECODE_TIMEOUT, Transport::recv_from(&self.rx)).await {
            Ok(Ok((req @ Request::ChannelData(_), _))) => Some(req),
            _ => None,
        }
    }
}

/// Fuzzing only (feature `fuzzing`, not a stable API): the framing as a connection reads it.
#[cfg(feature = "fuzzing")]
pub mod fuzz {
    use std::future::Future as _;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    pub use super::{MAX_CHANNEL_DATA, MAX_STUN};

    /// A frame read, without the decoded message.
    #[derive(Debug)]
    pub enum Frame {
        Stun,
        /// Header included, padding removed.
        ChannelData(Vec<u8>),
    }

    /// Reads frames off `bytes` as one connection would, until a frame is malformed or the
    /// bytes run out. Returns each frame with the bytes it took (padding included), and the
    /// reason a malformed frame gave, if one ended it.
    pub fn read_frames(bytes: &[u8]) -> (Vec<(usize, Frame)>, Option<&'static str>) {
        let mut rd = bytes;
        let mut frames = Vec::new();
        loop {
            let before = rd.len();
            // A slice never makes a read wait, so one poll finishes it.
            let polled =
                pin!(super::read_frame(&mut rd)).poll(&mut Context::from_waker(Waker::noop()));
            let took = before - rd.len();
            match polled {
                Poll::Ready(Ok(super::Frame::Stun(_))) => frames.push((took, Frame::Stun)),
                Poll::Ready(Ok(super::Frame::ChannelData(raw))) => {
                    frames.push((took, Frame::ChannelData(raw)));
                }
                Poll::Ready(Err(super::ReadError::Malformed(why))) => return (frames, Some(why)),
                Poll::Ready(Err(super::ReadError::Gone)) | Poll::Pending => return (frames, None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn frame(bytes: &[u8]) -> Result<Frame, ReadError> {
        let mut rd = bytes;
        read_frame(&mut rd).await
    }

    fn stun_binding() -> Vec<u8> {
        let mut b = vec![0x00, 0x01, 0x00, 0x00];
        b.extend_from_slice(&MAGIC_COOKIE);
        b.extend_from_slice(&[7u8; 12]);
        b
    }

    #[tokio::test]
    async fn frames_are_split_as_rfc_8656_says() {
        assert!(matches!(frame(&stun_binding()).await, Ok(Frame::Stun(_))));
        // ChannelData: 5 bytes of payload, 3 of padding; the padding is not part of it.
        let mut cd = vec![0x40, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0];
        cd.extend_from_slice(&stun_binding());
        let mut rd = &cd[..];
        match read_frame(&mut rd).await {
            Ok(Frame::ChannelData(raw)) => assert_eq!(raw, [0x40, 0x01, 0, 5, 1, 2, 3, 4, 5]),
            other => panic!("{:?}", other.err()),
        }
        // The next frame starts after the padding.
        assert!(matches!(read_frame(&mut rd).await, Ok(Frame::Stun(_))));
        assert!(matches!(read_frame(&mut rd).await, Err(ReadError::Gone)));
    }

    #[tokio::test]
    async fn malformed_frames_are_refused() {
        for (what, bytes) in [
            ("HTTP", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
            ("top bits 10", vec![0x80, 0, 0, 0]),
            ("channel 0x5000", vec![0x50, 0x00, 0, 4, 1, 2, 3, 4]),
            ("ChannelData too long", vec![0x40, 0x00, 0x05, 0xdd]),
            ("STUN too long", vec![0x00, 0x01, 0x10, 0x00]),
            ("STUN length", vec![0x00, 0x01, 0x00, 0x02]),
            ("no cookie", {
                let mut b = stun_binding();
                b[4] = 0;
                b
            }),
            ("undecodable", {
                // An attribute longer than the message.
                let mut b = stun_binding();
                b[3] = 4;
                b.extend_from_slice(&[0x00, 0x06, 0x00, 0x40]);
                b
            }),
        ] {
            assert!(
                matches!(frame(&bytes).await, Err(ReadError::Malformed(_))),
                "{what}"
            );
        }
        // A frame cut short is the end of the stream, not a malformed one.
        assert!(matches!(
            frame(&stun_binding()[..10]).await,
            Err(ReadError::Gone)
        ));
    }

    #[tokio::test]
    async fn channel_data_goes_through_the_crates_decoder() {
        let d = ChannelDataDecoder::new().await.unwrap();
        for payload in [&b"x"[..], &[9u8; 1496][..], &[][..]] {
            let mut raw = vec![0x40, 0x02];
            raw.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            raw.extend_from_slice(payload);
            assert!(matches!(
                d.decode(&raw).await,
                Some(Request::ChannelData(_))
            ));
        }
    }
}
