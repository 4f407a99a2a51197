//! Why a handshake ends, and the `YAKK2_ABORT` notice that tells the peer.

use serde::{Deserialize, Serialize};

use super::Role;
use crate::admission::Refusal;
use crate::pake::PakeFailure;
use crate::sealed::SealError;

/// Why a handshake ended.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error(
        "the key confirmation failed: the password is wrong, or someone else joined the room first"
    )]
    WrongPassword,
    #[error(
        "the peer speaks only yakk/1 (the original YAKK program), whose key exchange is weaker; run again with --legacy to allow it"
    )]
    V1Refused,
    #[error("the peer sent an invalid key-exchange message: {0}")]
    Pake(String),
    #[error(
        "a sealed signalling message was refused: {0} (the signalling server or someone in the room tampered with it)"
    )]
    Sealed(#[from] SealError),
    #[error("the peer sent an unexpected {0} message")]
    Unexpected(String),
    #[error("the peer sent a malformed {0} message")]
    Malformed(String),
    /// Owner: a joiner's key confirmation was not judged (the code is burned or used up).
    #[error("{}", refusal_text(*.0))]
    Refused(Refusal),
    /// Joiner: the owner refused to judge our key confirmation (code closed, room full) or
    /// to start a handshake (busy).
    #[error("{0}")]
    RefusedByOwner(&'static str),
    /// Two yakk/2 peers were made to speak yakk/1: someone removed the joiner's version list.
    #[error(
        "the peer speaks yakk/2 but the session was downgraded to yakk/1: the signalling server tampered with the negotiation"
    )]
    Downgrade,
    /// The peer sent `YAKK2_ABORT`. Unauthenticated, like the signalling itself: whoever can
    /// forge it could as well drop every message, so it only says why the wait ends.
    #[error("the {who} ended the handshake: {why}")]
    PeerAborted { who: &'static str, why: String },
    /// The driver asked for something out of order (a description before the key, or for a
    /// lane that was not agreed).
    #[error("internal error: {0}")]
    OutOfOrder(&'static str),
}

fn refusal_text(r: Refusal) -> &'static str {
    match r {
        Refusal::Burned => "refused a joiner: the code was closed after a failed password attempt",
        Refusal::Full => "refused a joiner: the room admits no more joiners",
    }
}

impl From<PakeFailure> for HandshakeError {
    fn from(f: PakeFailure) -> Self {
        match f {
            PakeFailure::Confirmation => HandshakeError::WrongPassword,
            PakeFailure::Invalid(e) => HandshakeError::Pake(e),
        }
    }
}

/// Reason codes of `YAKK2_ABORT`, and what they tell the side that receives one.
const ABORT_REASONS: &[(&str, &str)] = &[
    (
        "closed",
        "the code was closed after a failed password attempt: ask for a new code",
    ),
    (
        "full",
        "the room admits no more joiners: ask for a new code",
    ),
    (
        "busy",
        "the owner is busy with other joiners: try again in a moment",
    ),
    (
        "downgrade",
        "the session was downgraded to yakk/1 on the way (the signalling server tampered with the negotiation)",
    ),
    (
        "sealed",
        "a sealed message from this side failed authentication there (the signalling server or someone in the room tampered with it)",
    ),
    ("pake", "it found our key-exchange message invalid"),
    (
        "protocol",
        "it received a malformed or out-of-place message (the signalling server may have altered it)",
    ),
];

/// The reason codes by which an owner refuses a joiner (rather than reporting a failure).
const REFUSALS: &[&str] = &["closed", "full", "busy"];

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Abort {
    pub(super) reason: String,
}

/// The error a `YAKK2_ABORT` with `payload` ends our handshake with.
pub(super) fn on_abort(role: Role, payload: &str) -> HandshakeError {
    let code = serde_json::from_str::<Abort>(payload)
        .map(|a| a.reason)
        .unwrap_or_default();
    let text = ABORT_REASONS
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, text)| *text);
    if role == Role::Joiner
        && REFUSALS.contains(&code.as_str())
        && let Some(text) = text
    {
        return HandshakeError::RefusedByOwner(text);
    }
    let why = text.unwrap_or("no reason given").to_string();
    let who = match role {
        Role::Owner => "joiner",
        Role::Joiner => "owner",
    };
    HandshakeError::PeerAborted { who, why }
}

/// The reason code to tell a peer whose handshake failed with `e` on our side, if it should
/// hear of it: only yakk/2 peers (`v2`), and only for failures it cannot see itself.
pub(super) fn abort_reason(e: &HandshakeError, v2: bool) -> Option<&'static str> {
    Some(match e {
        HandshakeError::Downgrade => "downgrade",
        _ if !v2 => return None,
        HandshakeError::Sealed(_) => "sealed",
        HandshakeError::Pake(_) => "pake",
        HandshakeError::Malformed(_) | HandshakeError::Unexpected(_) => "protocol",
        HandshakeError::Refused(Refusal::Burned) => "closed",
        HandshakeError::Refused(Refusal::Full) => "full",
        _ => return None,
    })
}
