//! The one error type of the crate: every way a received message or a handshake step
//! can fail, each with a message that tells the user what to do next.

use thiserror::Error;

/// Why a J-PAKE step failed. Any of these aborts the handshake: the caller should
/// drop the party and tell the user, never retry with the same party.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PakeError {
    /// The message is longer than any legitimate message of this protocol.
    #[error(
        "the peer's {message} is too long ({len} characters): the peer does not speak this protocol, or someone is tampering with the signalling"
    )]
    TooLong {
        /// Which message.
        message: &'static str,
        /// Its length in characters.
        len: usize,
    },
    /// A base64 field or payload could not be decoded.
    #[error(
        "the peer's {field} is not valid base64: the message was corrupted, or the peer does not speak this protocol"
    )]
    Base64 {
        /// Which field or message.
        field: &'static str,
    },
    /// A yakk/1 message is not the JSON object the protocol prescribes.
    #[error(
        "the peer's {message} is not the expected JSON ({detail}): the peer does not speak yakk/1, or the message was corrupted"
    )]
    Json {
        /// Which message.
        message: &'static str,
        /// What the JSON parser said.
        detail: String,
    },
    /// A yakk/2 binary message has the wrong size.
    #[error(
        "the peer's {message} has {got} bytes where {expected} were expected: the peer speaks another protocol version, or the message was corrupted"
    )]
    Length {
        /// Which message.
        message: &'static str,
        /// The size this protocol prescribes.
        expected: usize,
        /// The size received.
        got: usize,
    },
    /// A yakk/2 binary message starts with another message's type byte.
    #[error(
        "the peer sent message type {got:#04x} where the {message} (type {expected:#04x}) was expected: the messages were mixed up, or the peer speaks another protocol version"
    )]
    MessageType {
        /// Which message was expected.
        message: &'static str,
        /// Its type byte.
        expected: u8,
        /// The type byte received.
        got: u8,
    },
    /// An integer is too large for its place (not below the group order or the field prime).
    #[error(
        "the peer's {field} is out of range: the message was corrupted or forged; start a new session"
    )]
    InvalidScalar {
        /// Which field.
        field: &'static str,
    },
    /// A point is not on the P-256 curve (or not a valid encoding of one).
    #[error(
        "the peer's {field} is not a point on the P-256 curve: the message was corrupted or forged; start a new session"
    )]
    PointNotOnCurve {
        /// Which field.
        field: &'static str,
    },
    /// A point (received or derived from received ones) is the identity.
    #[error(
        "the peer's {field} is the point at infinity, which only an attacker sends (it would force a known key): start a new session with a new code"
    )]
    IdentityPoint {
        /// Which point.
        field: &'static str,
    },
    /// The peer's round 1 contains our own points: our message was sent back to us.
    #[error(
        "the peer's round 1 repeats our own points: our message was reflected back to us, so someone other than the peer is answering; start a new session with a new code"
    )]
    Reflected,
    /// A zero-knowledge proof did not verify.
    #[error(
        "the peer's {field} did not verify: the message was tampered with, replayed from another session, or the peer plays the same role as we do"
    )]
    InvalidProof {
        /// Which proof.
        field: &'static str,
    },
    /// The key confirmation did not match.
    #[error(
        "the peer's key confirmation did not match: wrong password, or someone else is in the room; check the code and start again"
    )]
    ConfirmationMismatch,
    /// A message arrived in a state that does not expect it.
    #[error(
        "the peer's {got} arrived while we were waiting for {expected}: the handshake is out of order; start a new session"
    )]
    OutOfOrder {
        /// What the state machine was waiting for.
        expected: &'static str,
        /// What was handed to it.
        got: &'static str,
    },
    /// An earlier step failed; this party can no longer be used.
    #[error("this handshake already failed; start a new session")]
    Aborted,
    /// A secret handed to a test constructor is unusable.
    #[error("the secret {field} must be a non-zero number below the P-256 group order")]
    InvalidSecret {
        /// Which secret.
        field: &'static str,
    },
}
