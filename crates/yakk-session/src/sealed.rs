//! Sealed signalling payloads: the AES-256-GCM boxes that carry the offer, the answer and the ICE
//! candidates through the signalling server, so that the server can neither read nor alter them.
//!
//! yakk/1 (the original program) seals with a random nonce and no associated data:
//! `base64(nonce[12] ‖ ciphertext ‖ tag[16])`. yakk/2 seals each direction under its own key with a
//! counter nonce and binds the envelope header as associated data, so that a replayed, reordered,
//! redirected or re-labelled message fails to open (docs/yakk2.md, "Sealed payloads").

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

/// Why a sealed payload was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("sealed payload is not valid base64")]
    Base64,
    #[error("sealed payload is too short")]
    Truncated,
    #[error("sealed payload failed authentication (tampered, replayed or not for us)")]
    Authentication,
    #[error("sealed payload arrived out of order (counter {got}, expected {expected})")]
    OutOfOrder { got: u64, expected: u64 },
    /// Our own side could not seal: no randomness from the operating system, or a payload
    /// beyond what AES-GCM takes.
    #[error("could not seal a signalling message: {0}")]
    Seal(&'static str),
}

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// yakk/1: seal with a fresh random nonce, as the original program does.
pub fn seal_v1(key: &[u8; 32], plaintext: &[u8]) -> Result<String, SealError> {
    let cipher = Aes256Gcm::new(key.into());
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|_| SealError::Seal("no random nonce"))?;
    let ct = cipher
        .encrypt(Nonce::from_slice(&nonce), plaintext)
        .map_err(|_| SealError::Seal("payload too large"))?;
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(B64.encode(out))
}

/// yakk/1: open a payload sealed by [`seal_v1`] or by the original program.
pub fn open_v1(key: &[u8; 32], payload: &str) -> Result<Vec<u8>, SealError> {
    let raw = B64.decode(payload.trim()).map_err(|_| SealError::Base64)?;
    if raw.len() < NONCE_LEN + TAG_LEN {
        return Err(SealError::Truncated);
    }
    let (nonce, ct) = raw.split_at(NONCE_LEN);
    Aes256Gcm::new(key.into())
        .decrypt(Nonce::from_slice(nonce), ct)
        .map_err(|_| SealError::Authentication)
}

/// The envelope fields a yakk/2 sealed payload is bound to.
#[derive(Debug, Clone, Copy)]
pub struct Header<'a> {
    pub msg_type: &'a str,
    pub room: &'a str,
    pub sender: i64,
    pub recipient: i64,
}

impl Header<'_> {
    /// Associated data: a fixed label, then each field length-prefixed (u32 big-endian) or as a
    /// fixed-width big-endian integer.
    fn associated_data(&self, counter: u64) -> Vec<u8> {
        let mut ad = Vec::with_capacity(64 + self.room.len() + self.msg_type.len());
        for part in [
            b"yakk/2 sealed".as_slice(),
            self.msg_type.as_bytes(),
            self.room.as_bytes(),
        ] {
            ad.extend_from_slice(&(part.len() as u32).to_be_bytes());
            ad.extend_from_slice(part);
        }
        ad.extend_from_slice(&self.sender.to_be_bytes());
        ad.extend_from_slice(&self.recipient.to_be_bytes());
        ad.extend_from_slice(&counter.to_be_bytes());
        ad
    }
}

fn counter_nonce(counter: u64) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    n
}

/// yakk/2: one peer's end of the sealed signalling channel. Each direction has its own key and
/// its own counter, starting at 0; the receiver accepts only the next counter.
pub struct SealedChannel {
    send: Aes256Gcm,
    /// `None` until the peer's key confirmation verified (see [`SealedChannel::sending_only`]).
    recv: Option<Aes256Gcm>,
    send_counter: u64,
    recv_counter: u64,
}

impl SealedChannel {
    pub fn new(send_key: &[u8; 32], recv_key: &[u8; 32]) -> Self {
        let mut c = SealedChannel::sending_only(send_key);
        c.receive_with(recv_key);
        c
    }

    /// A channel that can seal but not open yet: a joiner's, between its key confirmation
    /// and the owner's. Nothing from the peer opens until [`SealedChannel::receive_with`].
    pub fn sending_only(send_key: &[u8; 32]) -> Self {
        SealedChannel {
            send: Aes256Gcm::new(send_key.into()),
            recv: None,
            send_counter: 0,
            recv_counter: 0,
        }
    }

    /// The peer's key confirmation verified: open what it sends with `recv_key` from now on.
    pub fn receive_with(&mut self, recv_key: &[u8; 32]) {
        self.recv = Some(Aes256Gcm::new(recv_key.into()));
    }

    /// Seals `plaintext` for the envelope described by `header`:
    /// `base64(counter u64 BE ‖ ciphertext ‖ tag)`.
    pub fn seal(&mut self, header: Header<'_>, plaintext: &[u8]) -> Result<String, SealError> {
        let counter = self.send_counter;
        self.send_counter += 1;
        let ad = header.associated_data(counter);
        let ct = self
            .send
            .encrypt(
                Nonce::from_slice(&counter_nonce(counter)),
                Payload {
                    msg: plaintext,
                    aad: &ad,
                },
            )
            .map_err(|_| SealError::Seal("payload too large"))?;
        let mut out = Vec::with_capacity(8 + ct.len());
        out.extend_from_slice(&counter.to_be_bytes());
        out.extend_from_slice(&ct);
        Ok(B64.encode(out))
    }

    /// Opens a payload received in the envelope described by `header`.
    pub fn open(&mut self, header: Header<'_>, payload: &str) -> Result<Vec<u8>, SealError> {
        let raw = B64.decode(payload.trim()).map_err(|_| SealError::Base64)?;
        let Some((ctr, ct)) = raw
            .split_first_chunk::<8>()
            .filter(|(_, ct)| ct.len() >= TAG_LEN)
        else {
            return Err(SealError::Truncated);
        };
        let counter = u64::from_be_bytes(*ctr);
        if counter != self.recv_counter {
            return Err(SealError::OutOfOrder {
                got: counter,
                expected: self.recv_counter,
            });
        }
        let Some(recv) = &self.recv else {
            return Err(SealError::Authentication);
        };
        let ad = header.associated_data(counter);
        let pt = recv
            .decrypt(
                Nonce::from_slice(&counter_nonce(counter)),
                Payload { msg: ct, aad: &ad },
            )
            .map_err(|_| SealError::Authentication)?;
        self.recv_counter += 1;
        Ok(pt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Header<'static> = Header {
        msg_type: "YAKK2_SEALED",
        room: "123",
        sender: 1,
        recipient: 0,
    };

    fn pair() -> (SealedChannel, SealedChannel) {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        (SealedChannel::new(&a, &b), SealedChannel::new(&b, &a))
    }

    #[test]
    fn v1_round_trip_and_tamper() {
        let key = [7u8; 32];
        let sealed = seal_v1(&key, b"{\"type\":\"offer\"}").unwrap();
        assert_eq!(open_v1(&key, &sealed).unwrap(), b"{\"type\":\"offer\"}");
        let mut raw = B64.decode(&sealed).unwrap();
        raw[14] ^= 1;
        assert_eq!(
            open_v1(&key, &B64.encode(&raw)),
            Err(SealError::Authentication)
        );
        assert_eq!(open_v1(&[8u8; 32], &sealed), Err(SealError::Authentication));
        assert_eq!(open_v1(&key, "!!"), Err(SealError::Base64));
        assert_eq!(open_v1(&key, "AAAA"), Err(SealError::Truncated));
    }

    /// A channel that only seals continues its counter once it may open too, and opens
    /// nothing before.
    #[test]
    fn a_sending_only_channel_opens_nothing_until_it_may() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let mut early = SealedChannel::sending_only(&a);
        let mut peer = SealedChannel::new(&b, &a);
        let first = early.seal(H, b"offer").unwrap();
        let reply = peer.seal(H, b"answer").unwrap();
        assert_eq!(early.open(H, &reply), Err(SealError::Authentication));
        early.receive_with(&b);
        assert_eq!(early.open(H, &reply).unwrap(), b"answer");
        let second = early.seal(H, b"candidate").unwrap();
        assert_eq!(peer.open(H, &first).unwrap(), b"offer");
        assert_eq!(peer.open(H, &second).unwrap(), b"candidate");
    }

    #[test]
    fn v2_in_order_messages_open() {
        let (mut a, mut b) = pair();
        for i in 0..3u8 {
            let s = a.seal(H, &[i; 5]).unwrap();
            assert_eq!(b.open(H, &s).unwrap(), vec![i; 5]);
        }
    }

    #[test]
    fn v2_replay_and_reorder_rejected() {
        let (mut a, mut b) = pair();
        let first = a.seal(H, b"one").unwrap();
        let second = a.seal(H, b"two").unwrap();
        assert_eq!(
            b.open(H, &second),
            Err(SealError::OutOfOrder {
                got: 1,
                expected: 0
            })
        );
        b.open(H, &first).unwrap();
        assert_eq!(
            b.open(H, &first),
            Err(SealError::OutOfOrder {
                got: 0,
                expected: 1
            })
        );
    }

    #[test]
    fn v2_redirected_relabelled_or_tampered_rejected() {
        for change in 0..5 {
            let (mut a, mut b) = pair();
            let mut h = H;
            let room2 = String::from("124");
            let mut sealed = a.seal(H, b"secret").unwrap();
            match change {
                0 => h.recipient = 2,
                1 => h.sender = 3,
                2 => h.room = &room2,
                3 => h.msg_type = "YAKK2_OTHER",
                _ => {
                    let mut raw = B64.decode(&sealed).unwrap();
                    let last = raw.len() - 1;
                    raw[last] ^= 0x80;
                    sealed = B64.encode(raw);
                }
            }
            assert_eq!(
                b.open(h, &sealed),
                Err(SealError::Authentication),
                "change {change}"
            );
        }
    }

    #[test]
    fn v2_directions_use_different_keys() {
        let (mut a, _) = pair();
        let mut a2 = SealedChannel::new(&[1u8; 32], &[2u8; 32]);
        let s = a.seal(H, b"x").unwrap();
        // A message sealed by `a` cannot be opened by a peer using the same direction keys.
        assert_eq!(a2.open(H, &s), Err(SealError::Authentication));
    }
}
