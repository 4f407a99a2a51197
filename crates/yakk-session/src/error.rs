//! What can end a session.

use yakk_transport::TransportError;

/// What can end a session, phrased for the person at the keyboard.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("invalid signalling server address {0}")]
    BadSignalUrl(String),
    #[error("cannot reach the signalling server {0}")]
    SignalUnreachable(String),
    #[error("the signalling server closed the connection {0}")]
    SignalClosed(String),
    #[error("the signalling server refused: {0}")]
    SignalRefused(String),
    #[error("the signalling server sent something unexpected: {0}")]
    SignalProtocol(String),
    #[error(
        "no such room: {0} (check the code, or ask for a new one: codes stop working when their owner stops)"
    )]
    NoSuchRoom(String),
    #[error("wrong password, or someone else joined the room first: ask for a new code")]
    WrongPassword,
    /// The signalling server admits nobody more to the room: someone else used the code first
    /// (or its owner admits no more joiners).
    #[error(
        "the room is full: someone else joined with this code first, or its owner admits no more joiners: ask for a new code"
    )]
    RoomFull,
    #[error(
        "the peer speaks only yakk/1 (the original YAKK program), whose key exchange is weaker; run again with --legacy to allow it"
    )]
    V1Refused,
    /// The owner refused a joiner: the code was closed after a failed password attempt, the
    /// room admits no more joiners, or it is busy.
    #[error("{0}")]
    Refused(String),
    #[error("the handshake failed: {0}")]
    Handshake(String),
    #[error("the peer did not complete the handshake in time (is the other side still running?)")]
    HandshakeTimeout,
    #[error(
        "no network path to the peer was found in time: a relay is needed; configure a TURN server (--turn URL with credentials, or on the signalling server)"
    )]
    NoPath,
    #[error("the peer went away: {0}")]
    PeerGone(String),
    #[error("WebRTC error: {0}")]
    Transport(#[from] TransportError),
    #[error("internal error: {0}")]
    Internal(&'static str),
}
