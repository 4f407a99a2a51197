//! The session layer: from a room and a password to a connected, authenticated peer that hands out
//! byte streams.
//!
//! ```text
//! rendezvous (WebSocket to the signalling server)
//!   -> handshake (J-PAKE, then sealed offer/answer/candidates; pure state machine)
//!   -> transport (WebRTC peer connection; streams over data channels)
//! ```
//! Applications call [`join`] (joiner) or [`Owner::create`] (owner) and then use
//! [`Connection::open_stream`] / [`Connection::accept_stream`]; they never see WebRTC types.
#![forbid(unsafe_code)]

mod driver;
pub mod handshake;
mod pake;
pub mod rendezvous;
pub mod sealed;

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use zeroize::Zeroizing;

pub use driver::{Owner, OwnerEvent, join};
pub use handshake::Version;
pub use yakk_transport::{PathInfo, PathKind, Stream};
use yakk_transport::{Peer, PeerEvent, TransportError};
pub use yakk_wire::IceServer;

/// Everything a peer needs to meet the other one.
#[derive(Clone)]
pub struct SessionConfig {
    /// The signalling server, as the user typed it (`host:port`, `ws://…`, `wss://…`).
    pub signal: String,
    pub password: Zeroizing<String>,
    /// Speak yakk/1 with a peer that only knows it (the original program).
    pub allow_legacy: bool,
    /// Speak only yakk/1, as the reference program does (interoperability tests).
    pub legacy_only: bool,
    /// ICE servers from the command line, used in addition to those the server advertises.
    pub ice_servers: Vec<IceServer>,
    /// Local addresses for host candidates; empty means every interface.
    pub ice_ips: Vec<IpAddr>,
    /// Owner: ask the server to admit at most this many joiners.
    pub max_peers: Option<u32>,
    /// Owner: ask for a longer grace period before an empty room is deleted.
    pub keep_alive: bool,
    /// How long ICE may take to find a path once the descriptions are exchanged.
    pub connect_timeout: Duration,
}

impl SessionConfig {
    pub fn new(signal: impl Into<String>, password: impl Into<String>) -> Self {
        SessionConfig {
            signal: signal.into(),
            password: Zeroizing::new(password.into()),
            allow_legacy: false,
            legacy_only: false,
            ice_servers: Vec::new(),
            ice_ips: Vec::new(),
            max_peers: None,
            keep_alive: false,
            connect_timeout: Duration::from_secs(15),
        }
    }
}

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
    #[error(
        "the peer speaks only yakk/1 (the original YAKK program), whose key exchange is weaker; run again with --legacy to allow it"
    )]
    LegacyRefused,
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

/// A connected, authenticated peer.
pub struct Connection {
    peer: Peer,
    version: Version,
    path: PathInfo,
    closed: watch::Receiver<Option<String>>,
    held: Mutex<Vec<Box<dyn Send>>>,
}

impl Connection {
    fn new(
        peer: Peer,
        mut events: mpsc::Receiver<PeerEvent>,
        version: Version,
        path: PathInfo,
    ) -> Self {
        let (tx, rx) = watch::channel(None);
        tokio::spawn(async move {
            let why = loop {
                match events.recv().await {
                    Some(PeerEvent::Disconnected(why)) => break why,
                    Some(_) => continue,
                    None => break "the peer connection ended".to_string(),
                }
            };
            let _ = tx.send(Some(why));
        });
        Connection {
            peer,
            version,
            path,
            closed: rx,
            held: Mutex::new(Vec::new()),
        }
    }

    /// Keeps `thing` alive as long as this connection.
    fn hold(&self, thing: Box<dyn Send>) {
        self.held.lock().expect("not poisoned").push(thing);
    }

    pub fn version(&self) -> Version {
        self.version
    }

    pub fn path(&self) -> &PathInfo {
        &self.path
    }

    /// Opens a new stream to the peer.
    pub async fn open_stream(&self, label: &str) -> Result<Stream, SessionError> {
        Ok(self.peer.open_stream(label).await?)
    }

    /// The next stream the peer opened; `None` once the peer is gone.
    pub async fn accept_stream(&self) -> Option<(String, Stream)> {
        self.peer.accept_stream().await
    }

    /// Resolves when the peer connection is gone, with the reason.
    pub async fn closed(&self) -> String {
        let mut rx = self.closed.clone();
        loop {
            if let Some(why) = rx.borrow_and_update().clone() {
                return why;
            }
            if rx.changed().await.is_err() {
                return "the peer connection ended".into();
            }
        }
    }

    pub async fn close(&self) {
        self.peer.close().await;
    }
}
