//! The yakk/1 messages exactly as the original program encodes them: JSON objects whose values
//! are base64 integers, wrapped once more in base64 to form the envelope `Payload`.
//!
//! This module owns the JSON field names, the integer encoding and the parsing of
//! received fields into validated curve points and scalars.

use p256::{AffinePoint, Scalar};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::ec::{self, SCALAR_LEN};
use crate::{MAX_PAYLOAD_LEN, PakeError};

/// The longest base64 text accepted for one integer: 32 bytes need 44 characters, the
/// slack admits leading zero bytes that a lenient encoder might add.
const MAX_INT_TEXT: usize = 64;

/// A Schnorr proof of knowledge as the original program sends it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof {
    /// x coordinate of the commitment T = v·Gen.
    pub tx: String,
    /// y coordinate of T.
    pub ty: String,
    /// The response r = v − c·x mod n.
    pub r: String,
    /// The challenge c, the unreduced SHA-256 value.
    pub c: String,
}

/// Round 1: G1 = x1·G and G2 = x2·G, each with a proof over the base point.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Round1 {
    /// x of G1.
    #[serde(rename = "x1Gx")]
    pub x1_gx: String,
    /// y of G1.
    #[serde(rename = "x1Gy")]
    pub x1_gy: String,
    /// x of G2.
    #[serde(rename = "x2Gx")]
    pub x2_gx: String,
    /// y of G2.
    #[serde(rename = "x2Gy")]
    pub x2_gy: String,
    /// Proof of knowledge of x1.
    #[serde(rename = "x1ZKP")]
    pub x1_zkp: Proof,
    /// Proof of knowledge of x2.
    #[serde(rename = "x2ZKP")]
    pub x2_zkp: Proof,
}

/// Round 2: A = (x2·s)·(G1 + G3 + G4) with its proof over that generator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Round2 {
    /// x of A.
    #[serde(rename = "Ax")]
    pub ax: String,
    /// y of A.
    #[serde(rename = "Ay")]
    pub ay: String,
    /// Proof of knowledge of x2·s.
    #[serde(rename = "xsZKP")]
    pub xs_zkp: Proof,
}

/// Key confirmation: the base64 MAC (the original program names the field `SessionKey`, but it
/// carries a MAC, never the key).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyConfirm {
    /// base64 of the 32-byte confirmation MAC.
    #[serde(rename = "SessionKey")]
    pub session_key: String,
}

fn to_payload<T: Serialize>(msg: &T) -> String {
    // Structs of strings always serialise; the fallback is unreachable.
    let json = serde_json::to_vec(msg).unwrap_or_default();
    ec::encode_base64(&json)
}

fn from_payload<T: DeserializeOwned>(payload: &str, message: &'static str) -> Result<T, PakeError> {
    let json = ec::decode_base64(payload, MAX_PAYLOAD_LEN, message)?;
    from_json(&json, message)
}

fn from_json<T: DeserializeOwned>(json: &[u8], message: &'static str) -> Result<T, PakeError> {
    serde_json::from_slice(json).map_err(|e| PakeError::Json {
        message,
        detail: e.to_string(),
    })
}

macro_rules! payload_codec {
    ($ty:ty, $name:literal) => {
        impl $ty {
            /// The envelope `Payload`: standard base64 of the compact JSON, byte for
            /// byte what the original program sends.
            pub fn to_payload(&self) -> String {
                to_payload(self)
            }

            /// Parses an envelope `Payload` (base64 of the JSON). Checks the shape only;
            /// the values are validated when the message is handed to a [`super::Party`].
            pub fn from_payload(payload: &str) -> Result<Self, PakeError> {
                from_payload(payload, $name)
            }

            /// Parses the bare JSON object (as the known-answer vectors hold it).
            pub fn from_json(json: &[u8]) -> Result<Self, PakeError> {
                from_json(json, $name)
            }
        }
    };
}

payload_codec!(Round1, "yakk/1 round 1");
payload_codec!(Round2, "yakk/1 round 2");
payload_codec!(KeyConfirm, "yakk/1 key confirmation");

/// Strips the leading zero bytes, as Go's `big.Int.Bytes` does.
pub(crate) fn minimal(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

/// base64 of the minimal big-endian bytes: the original program's integer encoding.
pub(crate) fn encode_int(bytes: &[u8; SCALAR_LEN]) -> String {
    ec::encode_base64(minimal(bytes))
}

/// Parses a base64 integer that must fit in 32 bytes.
pub(crate) fn parse_int(text: &str, field: &'static str) -> Result<[u8; SCALAR_LEN], PakeError> {
    let raw = ec::decode_base64(text, MAX_INT_TEXT, field)?;
    let digits = minimal(&raw);
    if digits.len() > SCALAR_LEN {
        return Err(PakeError::InvalidScalar { field });
    }
    let mut out = [0u8; SCALAR_LEN];
    out[SCALAR_LEN - digits.len()..].copy_from_slice(digits);
    Ok(out)
}

pub(crate) fn parse_point(x: &str, y: &str, field: &'static str) -> Result<AffinePoint, PakeError> {
    ec::point_from_xy(&parse_int(x, field)?, &parse_int(y, field)?, field)
}

pub(crate) fn encode_point(p: &AffinePoint) -> (String, String) {
    let (x, y) = ec::affine_xy(p);
    (encode_int(&x), encode_int(&y))
}

/// A received proof with its values checked for range and curve membership.
pub(crate) struct ParsedProof {
    pub(crate) t: AffinePoint,
    pub(crate) r: Scalar,
    pub(crate) c: [u8; SCALAR_LEN],
}

/// Names of one proof's fields for error messages.
pub(crate) struct ProofNames {
    pub(crate) proof: &'static str,
    pub(crate) t: &'static str,
    pub(crate) r: &'static str,
    pub(crate) c: &'static str,
}

pub(crate) const X1_ZKP: ProofNames = ProofNames {
    proof: "round 1 proof x1ZKP",
    t: "round 1 point x1ZKP.T",
    r: "round 1 value x1ZKP.r",
    c: "round 1 value x1ZKP.c",
};
pub(crate) const X2_ZKP: ProofNames = ProofNames {
    proof: "round 1 proof x2ZKP",
    t: "round 1 point x2ZKP.T",
    r: "round 1 value x2ZKP.r",
    c: "round 1 value x2ZKP.c",
};
pub(crate) const XS_ZKP: ProofNames = ProofNames {
    proof: "round 2 proof xsZKP",
    t: "round 2 point xsZKP.T",
    r: "round 2 value xsZKP.r",
    c: "round 2 value xsZKP.c",
};

pub(crate) fn parse_proof(p: &Proof, names: &ProofNames) -> Result<ParsedProof, PakeError> {
    let t = parse_point(&p.tx, &p.ty, names.t)?;
    let r_bytes = parse_int(&p.r, names.r)?;
    let r =
        ec::scalar_from_canonical(&r_bytes).ok_or(PakeError::InvalidScalar { field: names.r })?;
    let c = parse_int(&p.c, names.c)?;
    Ok(ParsedProof { t, r, c })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_use_minimal_bytes() {
        let mut seven = [0u8; 32];
        seven[31] = 7;
        assert_eq!(encode_int(&seven), "Bw==");
        assert_eq!(encode_int(&[0u8; 32]), "");
        assert_eq!(parse_int("Bw==", "f").unwrap(), seven);
        assert_eq!(parse_int("AAAH", "f").unwrap(), seven);
        assert_eq!(parse_int("", "f").unwrap(), [0u8; 32]);
        let too_big = ec::encode_base64(&[1u8; 33]);
        assert_eq!(
            parse_int(&too_big, "f"),
            Err(PakeError::InvalidScalar { field: "f" })
        );
        assert_eq!(parse_int("B", "f"), Err(PakeError::Base64 { field: "f" }));
    }

    #[test]
    fn payload_rejects_garbage() {
        assert!(matches!(
            Round1::from_payload("!!!"),
            Err(PakeError::Base64 { .. })
        ));
        assert!(matches!(
            Round2::from_payload(&ec::encode_base64(b"{\"Ax\":1}")),
            Err(PakeError::Json { .. })
        ));
        let long = "A".repeat(MAX_PAYLOAD_LEN + 4);
        assert!(matches!(
            KeyConfirm::from_payload(&long),
            Err(PakeError::TooLong { .. })
        ));
    }
}
