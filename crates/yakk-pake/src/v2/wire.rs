//! The yakk/2 PAKE messages: fixed-size binary (a type byte, SEC1 compressed points,
//! 32-byte big-endian scalars) carried as standard base64 in the envelope `Payload`.
//!
//! Decoding is strict: exact length, the right type byte, every point a valid
//! non-identity curve point, every scalar canonical (below n). A decoded message is
//! therefore well-formed; whether its proofs hold is checked by the [`super::Party`].

use p256::{AffinePoint, Scalar};

use crate::ec::{self, POINT_LEN, SCALAR_LEN};
use crate::{MAX_PAYLOAD_LEN, PakeError};

/// Type byte of a round 1 message.
pub const ROUND1_TYPE: u8 = 0x01;
/// Type byte of a round 2 message.
pub const ROUND2_TYPE: u8 = 0x02;
/// Type byte of a key confirmation message.
pub const CONFIRM_TYPE: u8 = 0x03;

/// Size of an encoded Schnorr proof: V then r.
const PROOF_LEN: usize = POINT_LEN + SCALAR_LEN;
/// MAC length of the key confirmation.
pub(crate) const MAC_LEN: usize = 32;

/// An RFC 8235 Schnorr proof: the commitment V = v·base and the response r = v − c·x.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SchnorrProof {
    pub(crate) v: AffinePoint,
    pub(crate) r: Scalar,
}

/// Round 1: G1 = x1·G and G2 = x2·G, each with a proof over the base point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Round1 {
    pub(crate) g1: AffinePoint,
    pub(crate) zkp1: SchnorrProof,
    pub(crate) g2: AffinePoint,
    pub(crate) zkp2: SchnorrProof,
}

/// Round 2: A = (x2·s)·(G1 + G3 + G4) with its proof over that generator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Round2 {
    pub(crate) a: AffinePoint,
    pub(crate) zkp: SchnorrProof,
}

/// Key confirmation: an HMAC-SHA256 tag over the sender's view of the exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyConfirm {
    pub(crate) mac: [u8; MAC_LEN],
}

/// Cursor over a message whose total length was checked up front.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        // The caller checked the total length, so `rest` always holds N bytes here;
        // `get` keeps the function panic-free regardless.
        if let Some(head) = self.rest.get(..N) {
            out.copy_from_slice(head);
            self.rest = &self.rest[N..];
        }
        out
    }

    fn point(&mut self, field: &'static str) -> Result<AffinePoint, PakeError> {
        ec::point_from_compressed(&self.take::<POINT_LEN>(), field)
    }

    fn scalar(&mut self, field: &'static str) -> Result<Scalar, PakeError> {
        ec::scalar_from_canonical(&self.take::<SCALAR_LEN>())
            .ok_or(PakeError::InvalidScalar { field })
    }

    fn proof(&mut self, v: &'static str, r: &'static str) -> Result<SchnorrProof, PakeError> {
        Ok(SchnorrProof {
            v: self.point(v)?,
            r: self.scalar(r)?,
        })
    }
}

fn open<'a>(
    bytes: &'a [u8],
    message: &'static str,
    msg_type: u8,
    len: usize,
) -> Result<Reader<'a>, PakeError> {
    if bytes.len() != len {
        return Err(PakeError::Length {
            message,
            expected: len,
            got: bytes.len(),
        });
    }
    match bytes.split_first() {
        Some((&t, rest)) if t == msg_type => Ok(Reader { rest }),
        Some((&got, _)) => Err(PakeError::MessageType {
            message,
            expected: msg_type,
            got,
        }),
        None => Err(PakeError::Length {
            message,
            expected: len,
            got: 0,
        }),
    }
}

fn push_proof(out: &mut Vec<u8>, p: &SchnorrProof) {
    out.extend_from_slice(&ec::point_to_compressed(&p.v));
    out.extend_from_slice(&p.r.to_bytes());
}

macro_rules! payload_codec {
    ($ty:ty, $name:literal) => {
        impl $ty {
            /// The envelope `Payload`: standard padded base64 of [`Self::to_bytes`].
            pub fn to_payload(&self) -> String {
                ec::encode_base64(&self.to_bytes())
            }

            /// Parses an envelope `Payload`, strictly (see [`Self::from_bytes`]).
            pub fn from_payload(payload: &str) -> Result<Self, PakeError> {
                let bytes = ec::decode_base64(payload, MAX_PAYLOAD_LEN, $name)?;
                Self::from_bytes(&bytes)
            }
        }
    };
}

payload_codec!(Round1, "yakk/2 round 1");
payload_codec!(Round2, "yakk/2 round 2");
payload_codec!(KeyConfirm, "yakk/2 key confirmation");

impl Round1 {
    /// Encoded size: type, G1, V1, r1, G2, V2, r2.
    pub const LEN: usize = 1 + 2 * (POINT_LEN + PROOF_LEN);

    /// The binary encoding: `0x01 ‖ G1 ‖ V1 ‖ r1 ‖ G2 ‖ V2 ‖ r2`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::LEN);
        out.push(ROUND1_TYPE);
        out.extend_from_slice(&ec::point_to_compressed(&self.g1));
        push_proof(&mut out, &self.zkp1);
        out.extend_from_slice(&ec::point_to_compressed(&self.g2));
        push_proof(&mut out, &self.zkp2);
        out
    }

    /// Decodes exactly [`Self::LEN`] bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, PakeError> {
        let mut r = open(bytes, "yakk/2 round 1", ROUND1_TYPE, Self::LEN)?;
        Ok(Round1 {
            g1: r.point("round 1 point G1")?,
            zkp1: r.proof("round 1 proof commitment V1", "round 1 proof response r1")?,
            g2: r.point("round 1 point G2")?,
            zkp2: r.proof("round 1 proof commitment V2", "round 1 proof response r2")?,
        })
    }
}

impl Round2 {
    /// Encoded size: type, A, V, r.
    pub const LEN: usize = 1 + POINT_LEN + PROOF_LEN;

    /// The binary encoding: `0x02 ‖ A ‖ V ‖ r`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::LEN);
        out.push(ROUND2_TYPE);
        out.extend_from_slice(&ec::point_to_compressed(&self.a));
        push_proof(&mut out, &self.zkp);
        out
    }

    /// Decodes exactly [`Self::LEN`] bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, PakeError> {
        let mut r = open(bytes, "yakk/2 round 2", ROUND2_TYPE, Self::LEN)?;
        Ok(Round2 {
            a: r.point("round 2 point A")?,
            zkp: r.proof("round 2 proof commitment V", "round 2 proof response r")?,
        })
    }
}

impl KeyConfirm {
    /// Encoded size: type, MAC.
    pub const LEN: usize = 1 + MAC_LEN;

    /// The binary encoding: `0x03 ‖ MAC`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::LEN);
        out.push(CONFIRM_TYPE);
        out.extend_from_slice(&self.mac);
        out
    }

    /// Decodes exactly [`Self::LEN`] bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, PakeError> {
        let mut r = open(bytes, "yakk/2 key confirmation", CONFIRM_TYPE, Self::LEN)?;
        Ok(KeyConfirm { mac: r.take() })
    }
}
