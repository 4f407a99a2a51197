//! The yakk/2 transfer framing: frame types, bounds, and the offer/accept codecs.
//!
//! Byte-for-byte description: `docs/yakk2-transfer.md`. In short, every frame is
//! `type: u8 | length: u32 big-endian | payload[length]`, each type with its own upper bound
//! checked before anything is allocated. Decoding an offer also checks every name
//! ([`crate::names::validate`]), duplicates, a file used as a folder, and the entry count, so an
//! [`Offer`] that decodes is safe to act on.

use std::collections::HashMap;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::{Result, TransferError};
use crate::names;

/// Bytes that open the receiver's hello.
pub const MAGIC: &[u8; 13] = b"yakk-transfer";
/// The version of the transfer protocol this crate speaks.
pub const VERSION: u16 = 1;
/// Largest offer payload.
pub const MAX_OFFER_BYTES: u32 = 64 << 20;
/// Most entries in one offer.
pub const MAX_ENTRIES: u32 = 1_000_000;
/// Largest DATA payload.
pub const MAX_DATA: u32 = 1 << 20;
/// Largest human-readable reason (REFUSE, ERROR).
pub const MAX_TEXT: u32 = 1024;
/// Hash algorithm id of BLAKE3 (32-byte digest), the only one defined.
pub const HASH_BLAKE3: u8 = 1;
/// The text of every REFUSE yakk's receiver sends, whatever the reason (the person said no, or
/// a file exists, a link is in the way…): the sender learns nothing of the receiver's files.
pub const DECLINED: &str = "declined";
/// The text of the ERROR a side sends when its user stops the transfer (Ctrl-C): the other side
/// reports that the peer stopped, not a failure.
pub const STOPPED: &str = "stopped";

/// Frame types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Frame {
    /// Receiver → sender, first frame: magic and version.
    Hello = 1,
    /// Sender → receiver: what is on offer.
    Offer = 2,
    /// Receiver → sender: yes, with the offset already held per entry.
    Accept = 3,
    /// Receiver → sender: no, with a reason.
    Refuse = 4,
    /// Sender → receiver: bytes of the current file.
    Data = 5,
    /// Sender → receiver: the current file is complete (stream entries carry size and hash).
    FileEnd = 6,
    /// Sender → receiver: every file has been sent.
    Done = 7,
    /// Either way: giving up, with a reason.
    Error = 8,
    /// Receiver → sender: everything arrived and verified.
    Ack = 9,
}

impl Frame {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::Hello,
            2 => Self::Offer,
            3 => Self::Accept,
            4 => Self::Refuse,
            5 => Self::Data,
            6 => Self::FileEnd,
            7 => Self::Done,
            8 => Self::Error,
            9 => Self::Ack,
            _ => return None,
        })
    }

    /// Largest payload length allowed for this type (and smallest, for fixed-size frames).
    fn bounds(self) -> (u32, u32) {
        match self {
            Self::Hello => (15, 15),
            Self::Offer => (6, MAX_OFFER_BYTES),
            Self::Accept => (4, 4 + 8 * MAX_ENTRIES),
            Self::Refuse | Self::Error => (0, MAX_TEXT),
            Self::Data => (1, MAX_DATA),
            Self::FileEnd => (0, 41),
            Self::Done | Self::Ack => (0, 0),
        }
    }
}

/// A 32-byte BLAKE3 digest.
pub type Hash = [u8; 32];

/// One entry of an offer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireEntry {
    /// Relative name, `/`-separated.
    pub name: String,
    /// What it is.
    pub kind: WireKind,
}

/// Kind of an offer entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WireKind {
    /// A folder (created even when empty).
    Dir,
    /// A file of known size and hash.
    File {
        /// Size in bytes.
        size: u64,
        /// BLAKE3 of the whole content.
        hash: Hash,
    },
    /// Data of unknown size (standard input); size and hash come in its FILE_END.
    Stream,
}

/// A decoded, checked offer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Offer {
    /// The entries, in the order the data will come.
    pub entries: Vec<WireEntry>,
}

fn proto(msg: impl Into<String>) -> TransferError {
    TransferError::Protocol(msg.into())
}

/// What a broken first frame most likely means: the other side is not a file command at all
/// (a code used with the wrong command), so say that beside what was wrong with it. `guess`
/// asks the question that fits this side, e.g. "was the code made by another command than
/// `yakk filesend`?".
pub fn first_frame(e: TransferError, guess: &str) -> TransferError {
    match e {
        TransferError::Protocol(msg) => TransferError::Protocol(format!(
            "{msg}: the other side does not speak yakk's file protocol ({guess})"
        )),
        other => other,
    }
}

/// Encode the receiver's hello payload.
pub fn encode_hello() -> Vec<u8> {
    let mut v = MAGIC.to_vec();
    v.extend_from_slice(&VERSION.to_be_bytes());
    v
}

/// Check a hello payload; the peer's version.
pub fn decode_hello(p: &[u8]) -> Result<u16> {
    if p.len() != 15 || &p[..13] != MAGIC {
        return Err(proto("the peer is not a yakk file receiver"));
    }
    Ok(u16::from_be_bytes([p[13], p[14]]))
}

/// Encode an offer payload.
pub fn encode_offer(offer: &Offer) -> Vec<u8> {
    let mut v = Vec::with_capacity(6 + offer.entries.len() * 48);
    v.extend_from_slice(&VERSION.to_be_bytes());
    v.extend_from_slice(&(offer.entries.len() as u32).to_be_bytes());
    for e in &offer.entries {
        let kind = match e.kind {
            WireKind::Dir => 0u8,
            WireKind::File { .. } => 1,
            WireKind::Stream => 2,
        };
        v.push(kind);
        v.extend_from_slice(&(e.name.len() as u16).to_be_bytes());
        v.extend_from_slice(e.name.as_bytes());
        if let WireKind::File { size, hash } = &e.kind {
            v.extend_from_slice(&size.to_be_bytes());
            v.push(HASH_BLAKE3);
            v.extend_from_slice(hash);
        }
    }
    v
}

/// A cursor over a payload that reports truncation as a protocol error.
struct Cur<'a>(&'a [u8]);

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(proto("truncated offer"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    /// The next `N` bytes.
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let (a, b) = self
            .0
            .split_first_chunk::<N>()
            .ok_or_else(|| proto("truncated offer"))?;
        self.0 = b;
        Ok(*a)
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }
}

/// Decode and check an offer payload.
pub fn decode_offer(p: &[u8]) -> Result<Offer> {
    let mut c = Cur(p);
    let version = c.u16()?;
    if version != VERSION {
        return Err(TransferError::UnsupportedVersion(version));
    }
    let count = c.u32()?;
    if count == 0 {
        return Err(proto("empty offer"));
    }
    if count > MAX_ENTRIES {
        return Err(proto(format!(
            "offer of {count} entries, more than the limit of {MAX_ENTRIES}"
        )));
    }
    // Each entry takes at least 4 bytes: a count larger than the payload can hold is a lie.
    if count as usize > p.len() / 4 {
        return Err(proto("truncated offer"));
    }
    let mut entries = Vec::with_capacity(count as usize);
    let mut total: u64 = 0;
    for _ in 0..count {
        let kind = c.u8()?;
        let len = c.u16()? as usize;
        if len > names::MAX_NAME_BYTES {
            return Err(proto("name longer than 4096 bytes in offer"));
        }
        let name = std::str::from_utf8(c.take(len)?)
            .map_err(|_| proto("name in offer is not UTF-8"))?
            .to_owned();
        names::validate(&name)?;
        let kind = match kind {
            0 => WireKind::Dir,
            1 => {
                let size = c.u64()?;
                let alg = c.u8()?;
                if alg != HASH_BLAKE3 {
                    return Err(proto(format!("unknown hash algorithm {alg}")));
                }
                let hash: Hash = c.array()?;
                total = total
                    .checked_add(size)
                    .ok_or_else(|| proto("offer sizes overflow"))?;
                WireKind::File { size, hash }
            }
            2 => WireKind::Stream,
            k => return Err(proto(format!("unknown entry kind {k}"))),
        };
        entries.push(WireEntry { name, kind });
    }
    if !c.0.is_empty() {
        return Err(proto("trailing bytes after offer"));
    }
    let offer = Offer { entries };
    check_tree(&offer)?;
    Ok(offer)
}

/// No duplicates, no file used as a folder, a stream only alone.
fn check_tree(offer: &Offer) -> Result<()> {
    let streams = offer
        .entries
        .iter()
        .filter(|e| e.kind == WireKind::Stream)
        .count();
    if streams > 0 && offer.entries.len() != 1 {
        return Err(proto("a stream entry must be alone in its offer"));
    }
    let mut seen: HashMap<&str, bool> = HashMap::with_capacity(offer.entries.len());
    for e in &offer.entries {
        if seen
            .insert(e.name.as_str(), e.kind == WireKind::Dir)
            .is_some()
        {
            return Err(TransferError::UnsafeName {
                name: names::escape(&e.name),
                reason: "offered twice",
            });
        }
    }
    for e in &offer.entries {
        for (i, _) in e.name.match_indices('/') {
            if seen.get(&e.name[..i]) == Some(&false) {
                return Err(TransferError::UnsafeName {
                    name: names::escape(&e.name),
                    reason: "inside a name that is offered as a file",
                });
            }
        }
    }
    Ok(())
}

/// Encode an accept: one offset per entry.
pub fn encode_accept(offsets: &[u64]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + offsets.len() * 8);
    v.extend_from_slice(&(offsets.len() as u32).to_be_bytes());
    for o in offsets {
        v.extend_from_slice(&o.to_be_bytes());
    }
    v
}

/// Decode an accept for `offer`, checking each offset against the entry.
pub fn decode_accept(p: &[u8], offer: &Offer) -> Result<Vec<u64>> {
    let mut c = Cur(p);
    let n = c.u32()? as usize;
    if n != offer.entries.len() || c.0.len() != n * 8 {
        return Err(proto("accept does not match the offer"));
    }
    let mut out = Vec::with_capacity(n);
    for e in &offer.entries {
        let off = c.u64()?;
        let max = match e.kind {
            WireKind::File { size, .. } => size,
            WireKind::Dir | WireKind::Stream => 0,
        };
        if off > max {
            return Err(proto("accept offset beyond the end of a file"));
        }
        out.push(off);
    }
    Ok(out)
}

/// Encode the FILE_END of a stream entry.
pub fn encode_stream_end(size: u64, hash: &Hash) -> Vec<u8> {
    let mut v = Vec::with_capacity(41);
    v.extend_from_slice(&size.to_be_bytes());
    v.push(HASH_BLAKE3);
    v.extend_from_slice(hash);
    v
}

/// Decode the FILE_END of a stream entry.
pub fn decode_stream_end(p: &[u8]) -> Result<(u64, Hash)> {
    let bad = || proto("bad end of stream");
    let (size, rest) = p.split_first_chunk::<8>().ok_or_else(bad)?;
    let (alg, hash) = rest.split_first().ok_or_else(bad)?;
    let hash: Hash = hash.try_into().map_err(|_| bad())?;
    if *alg != HASH_BLAKE3 {
        return Err(bad());
    }
    Ok((u64::from_be_bytes(*size), hash))
}

/// Text of a REFUSE or ERROR, escaped for display.
pub fn decode_text(p: &[u8]) -> String {
    names::escape(&String::from_utf8_lossy(p))
}

/// Truncate a reason to [`MAX_TEXT`] bytes on a character boundary.
pub fn encode_text(s: &str) -> Vec<u8> {
    let mut end = s.len().min(MAX_TEXT as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.as_bytes()[..end].to_vec()
}

/// Read a frame header; checks the type and the length bounds.
pub async fn read_header<R: AsyncRead + Unpin>(r: &mut R) -> Result<(Frame, u32)> {
    let mut h = [0u8; 5];
    r.read_exact(&mut h).await.map_err(TransferError::conn)?;
    let t = Frame::from_u8(h[0]).ok_or_else(|| proto(format!("unknown frame type {}", h[0])))?;
    let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]);
    let (min, max) = t.bounds();
    if len < min || len > max {
        return Err(proto(format!(
            "{t:?} frame of {len} bytes (allowed {min}..={max})"
        )));
    }
    Ok((t, len))
}

/// Read a payload of `len` bytes (already bounds-checked); memory grows only as bytes arrive.
pub async fn read_payload<R: AsyncRead + Unpin>(r: &mut R, len: u32) -> Result<Vec<u8>> {
    let mut v = Vec::with_capacity((len as usize).min(1 << 20));
    let got = (&mut *r)
        .take(len as u64)
        .read_to_end(&mut v)
        .await
        .map_err(TransferError::conn)?;
    if got != len as usize {
        return Err(TransferError::PeerClosed);
    }
    Ok(v)
}

/// Read a whole frame whose type must be one of `want`.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    want: &[Frame],
) -> Result<(Frame, Vec<u8>)> {
    let (t, len) = read_header(r).await?;
    if !want.contains(&t) && t != Frame::Error {
        return Err(proto(format!("unexpected {t:?} frame")));
    }
    let p = read_payload(r, len).await?;
    if t == Frame::Error {
        return Err(peer_error(&p));
    }
    Ok((t, p))
}

/// The error an ERROR payload stands for: the peer stopped on its user's request, or gave up.
pub fn peer_error(p: &[u8]) -> TransferError {
    if p == STOPPED.as_bytes() {
        TransferError::PeerStopped
    } else {
        TransferError::PeerError(decode_text(p))
    }
}

/// Write one frame (not flushed).
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, t: Frame, payload: &[u8]) -> Result<()> {
    debug_assert!(payload.len() <= t.bounds().1 as usize);
    let mut h = [0u8; 5];
    h[0] = t as u8;
    h[1..].copy_from_slice(&(payload.len() as u32).to_be_bytes());
    w.write_all(&h).await.map_err(TransferError::conn)?;
    w.write_all(payload).await.map_err(TransferError::conn)
}

/// The [`Hash`] an offer carries for a file on disk (BLAKE3 of its whole content), and its size.
pub(crate) fn hash_file(path: &std::path::Path) -> std::io::Result<(u64, Hash)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = std::io::Read::read(&mut f, &mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((n, *h.finalize().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, size: u64) -> WireEntry {
        WireEntry {
            name: name.into(),
            kind: WireKind::File {
                size,
                hash: [7; 32],
            },
        }
    }

    #[test]
    fn offer_round_trip_and_exact_bytes() {
        let offer = Offer {
            entries: vec![
                WireEntry {
                    name: "d".into(),
                    kind: WireKind::Dir,
                },
                file("d/é", 5),
            ],
        };
        let p = encode_offer(&offer);
        let mut want = vec![
            0, 1, 0, 0, 0, 2, 0, 0, 1, b'd', 1, 0, 4, b'd', b'/', 0xc3, 0xa9,
        ];
        want.extend_from_slice(&5u64.to_be_bytes());
        want.push(1);
        want.extend_from_slice(&[7; 32]);
        assert_eq!(p, want);
        assert_eq!(decode_offer(&p).unwrap(), offer);
        assert_eq!(encode_hello(), b"yakk-transfer\x00\x01");
    }

    #[test]
    fn offer_attacks_are_refused() {
        let enc = |entries: Vec<WireEntry>| encode_offer(&Offer { entries });
        assert!(decode_offer(&enc(vec![file("../x", 1)])).is_err());
        assert!(decode_offer(&enc(vec![file("a", 1), file("a", 1)])).is_err());
        assert!(decode_offer(&enc(vec![file("a", 1), file("a/b", 1)])).is_err());
        assert!(decode_offer(&enc(vec![file("a/b", 1), file("a", 1)])).is_err());
        assert!(decode_offer(&enc(vec![])).is_err());
        let stream = WireEntry {
            name: "s".into(),
            kind: WireKind::Stream,
        };
        assert!(decode_offer(&enc(vec![stream.clone(), file("b", 1)])).is_err());
        assert!(decode_offer(&enc(vec![stream])).is_ok());
        // sizes that overflow
        assert!(decode_offer(&enc(vec![file("a", u64::MAX), file("b", 1)])).is_err());
        // a count far beyond the payload
        let mut p = enc(vec![file("a", 1)]);
        p[2..6].copy_from_slice(&MAX_ENTRIES.to_be_bytes());
        assert!(decode_offer(&p).is_err());
        p[2..6].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode_offer(&p).is_err());
        // truncated and trailing
        let p = enc(vec![file("a", 1)]);
        assert!(decode_offer(&p[..p.len() - 1]).is_err());
        let mut q = p.clone();
        q.push(0);
        assert!(decode_offer(&q).is_err());
        // wrong version
        let mut q = p;
        q[1] = 2;
        assert!(matches!(
            decode_offer(&q),
            Err(TransferError::UnsupportedVersion(2))
        ));
    }

    #[test]
    fn accept_offsets_are_checked() {
        let offer = Offer {
            entries: vec![file("a", 10)],
        };
        assert_eq!(
            decode_accept(&encode_accept(&[4]), &offer).unwrap(),
            vec![4]
        );
        assert!(decode_accept(&encode_accept(&[11]), &offer).is_err());
        assert!(decode_accept(&encode_accept(&[1, 2]), &offer).is_err());
    }

    #[tokio::test]
    async fn frame_bounds_are_enforced_before_allocation() {
        let mut bytes: &[u8] = &[5, 0xff, 0xff, 0xff, 0xff];
        assert!(read_header(&mut bytes).await.is_err());
        let mut bytes: &[u8] = &[2, 0x10, 0, 0, 0];
        assert!(read_header(&mut bytes).await.is_err());
        let mut bytes: &[u8] = &[42, 0, 0, 0, 0];
        assert!(read_header(&mut bytes).await.is_err());
        let mut bytes: &[u8] = &[7, 0, 0, 0, 1, 0];
        assert!(read_header(&mut bytes).await.is_err());
        let mut bytes: &[u8] = &[5, 0, 0, 0, 3, 1];
        let (t, len) = read_header(&mut bytes).await.unwrap();
        assert_eq!((t, len), (Frame::Data, 3));
        assert!(matches!(
            read_payload(&mut bytes, len).await,
            Err(TransferError::PeerClosed)
        ));
    }

    /// The example at the end of docs/yakk2-transfer.md, byte for byte.
    #[tokio::test]
    async fn doc_example() {
        fn hex(s: &str) -> Vec<u8> {
            let s: String = s.split_whitespace().collect();
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect()
        }
        async fn framed(t: Frame, p: &[u8]) -> Vec<u8> {
            let mut v = Vec::new();
            write_frame(&mut v, t, p).await.unwrap();
            v
        }
        let h = *blake3::hash(b"hello").as_bytes();
        let offer = Offer {
            entries: vec![
                WireEntry {
                    name: "d".into(),
                    kind: WireKind::Dir,
                },
                WireEntry {
                    name: "d/é".into(),
                    kind: WireKind::File { size: 5, hash: h },
                },
            ],
        };
        assert_eq!(
            framed(Frame::Hello, &encode_hello()).await,
            hex("01 0000000f 79616b6b2d7472616e73666572 0001")
        );
        let mut want =
            hex("02 0000003a 0001 00000002 00 0001 64 01 0004 642fc3a9 0000000000000005 01");
        want.extend_from_slice(&h);
        assert_eq!(framed(Frame::Offer, &encode_offer(&offer)).await, want);
        assert_eq!(
            framed(Frame::Accept, &encode_accept(&[0, 0])).await,
            hex("03 00000014 00000002 0000000000000000 0000000000000000")
        );
        assert_eq!(
            framed(Frame::Data, b"hello").await,
            hex("05 00000005 68656c6c6f")
        );
        assert_eq!(framed(Frame::FileEnd, &[]).await, hex("06 00000000"));
    }
}
