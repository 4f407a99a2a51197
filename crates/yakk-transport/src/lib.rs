//! yakk's data plane: a WebRTC peer connection that hands out byte streams.
//!
//! This is the only crate in yakk that names WebRTC types. Everything above it sees SDP as
//! strings, ICE candidates as [`IceCandidate`] (the JSON shape yakk/1 peers send),
//! connection news as [`PeerEvent`]s, and data channels as [`Channel`]s (`AsyncRead` +
//! `AsyncWrite`).
//!
//! # Use
//!
//! ```text
//! let (peer, mut events) = Peer::new(cfg).await?;
//! // offerer                                   // answerer
//! let offer = peer.create_offer().await?;      let answer = peer.accept_offer(&offer).await?;
//! peer.accept_answer(&answer).await?;
//! // both: forward PeerEvent::LocalCandidate to the other side, feed theirs to
//! // add_remote_candidate (before or after the description: they are queued).
//! let s = peer.open_channel("DataConn1").await?;   // one side
//! let (label, s) = peer.accept_channel().await?;   // the other side
//! ```
//!
//! # Data plane rules
//!
//! * Every channel is reliable and ordered. Writes are cut into messages of at most
//!   [`TransportConfig::max_message`] bytes (4096 toward yakk/1 peers;
//!   65536 between yakk/2 peers). Small writes queued behind a busy channel are coalesced
//!   up to that size.
//! * Backpressure runs end to end. With per-stream flow control ([`Peer::set_flow_control`],
//!   between yakk/2 peers that both announce it; docs/yakk2.md, "Stream flow control") a
//!   stream's sender never has more unread data at the receiver than the receiver granted
//!   (64 KiB to 4 MiB per stream), so a reader that stops reading stops only its own stream.
//!   Without it (yakk/1, older yakk/2 peers), a reader that stops reading stops draining the
//!   channel, and once its queue is full the stack stops reading the whole association:
//!   every stream of the connection waits for it. Memory is bounded per stream whatever the
//!   amount sent.
//! * Half-close (yakk/2, [`TransportConfig::half_close`]): `poll_shutdown` sends an
//!   **empty string-type message** (SCTP PPID 56, "WebRTC String Empty") as the end-of-stream
//!   marker. Data always travels as binary messages, so the marker cannot be confused with
//!   data. The peer's reader then sees EOF while the other direction keeps flowing; the
//!   channel is closed once both directions have ended, or when either `Channel` is dropped.
//!   Without half-close (yakk/1), `poll_shutdown` closes the channel,
//!   and string messages are treated as data.
//! * When the peer connection fails, disconnects or is closed, every stream ends (reads see
//!   EOF, writes fail with `BrokenPipe`) and a [`PeerEvent::Disconnected`] is sent.
//! * ICE: trickle both ways. Local candidates are sent as [`PeerEvent::LocalCandidate`] as
//!   they are gathered (never dropped); remote candidates may be added before the remote
//!   description is set (they are queued). With [`TransportConfig::ice_ips`] set, host
//!   candidates are gathered only on those addresses (loopback allowed). No STUN/TURN server
//!   is contacted unless configured. With [`TransportConfig::relay_only`] only relay
//!   candidates are gathered (the stack's relay ICE transport policy).
//! * No multicast DNS: no socket on 224.0.0.251:5353, local candidates carry plain addresses,
//!   and a peer's `.local` candidates are dropped. Nothing is ever sent to a multicast,
//!   broadcast or unspecified address: such remote candidates are refused, and the sockets
//!   drop datagrams for them (whatever asked: a candidate, an advertised ICE server).
//!
//! # Implementation
//!
//! The `webrtc` crate's async layer (`connection/`; each channel's pumps in `pump/`, its
//! application end in `channel.rs`). Its timers are capped while a connection is being set up
//! (`netbuf.rs`, `SetupClock`), so the first channel opens without waiting for the stack's
//! timer ticks.
//!
//! # Limits worth knowing
//!
//! * Without flow control (see above), a stream whose reader stops reading stalls reception
//!   on the whole connection once its queue is full (head-of-line blocking across streams).
//!   Other streams resume as soon as it reads again.
//! * A peer that calls [`Peer::close`] is noticed at once: it closes the "command" channel
//!   first, and the other side ends the connection with "the peer closed the session". A peer
//!   that only drops its `Peer`, or vanishes silently, is noticed by ICE consent after about
//!   4 s (so is a close in the first milliseconds after connecting, before the offerer's
//!   "command" channel has opened).
//! * rtc 0.21.1 frees a channel's stream id when it closes the channel, before the SCTP stream
//!   reset completes, so opening a channel right after another one closed can fail ("there
//!   already exists a stream with identifier"). Such an open is retried for about 1.5 s.
//!   With flow control, a close handshake makes sure nothing arrives after the close, and
//!   between two yakk peers the opener closes ([`Peer::set_opener_closes`]): rtc 0.21.1
//!   answers a stream reset with a reset of its own, so the last reset of a close goes to the
//!   side that did not close, and it must not be the opener, which reuses ids.
//! * The `webrtc` crate's driver hands out a channel's close ahead of messages the stack has
//!   read but not yet delivered (it holds messages back while any reader is behind). A
//!   channel therefore reads on after a peer's close until it has every message the stack
//!   counted for the channel.
//! * rtc 0.21.1 can drop the last messages of a channel whose peer resets it while the
//!   receiver is behind (the stack defers the reset until the data is read, then discards
//!   what it read in the pass that completes it: "failed to resume parked SCTP streams").
//!   Nothing above the stack can recover them once it is in that state. yakk/2 streams are
//!   not exposed (a channel is closed only after both end-of-stream markers were read).
//!   yakk/1 ones are kept out of it: their readers may fall 16 MiB behind before the pump
//!   waits and so holds the stack back; a reader further behind than that is still exposed.
#![forbid(unsafe_code)]
// No unwrap, expect, panic or unreachable outside tests: errors are returned, or an
// `#[allow]` beside the call says why it cannot fail.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![cfg_attr(not(test), deny(clippy::panic, clippy::unreachable))]

mod channel;
mod connection;
mod flow;
mod netbuf;
mod pump;
mod stats;
pub mod tls;
mod turn_stream;

use std::net::IpAddr;
use std::time::Duration;

pub use connection::Peer;

/// Starts, in the background, what a peer connection with these ICE servers will want to know
/// first: whether their TURN relay answers over UDP (if not, its TCP and TLS URLs are used
/// through a bridge). Call it as soon as the servers are known; a connection made later then
/// does not wait for the answer.
pub fn warm_up(ice_servers: &[yakk_wire::IceServer]) {
    turn_stream::warm_up(ice_servers.iter().flat_map(|s| s.urls.iter()));
}

/// Stream flow control (`flow.rs`), for the fuzz target in `fuzz/` (not a stable API).
#[doc(hidden)]
pub mod flow_control {
    pub use crate::flow::{
        Admit, Flow, INITIAL_WINDOW, MAX_WINDOW, MIN_COST, Pool, cost, grant_text, parse_grant,
    };
}
pub use channel::Channel;

/// How a [`Peer`] connects and how its streams cut data into messages.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// STUN/TURN servers. Empty: host candidates only, no server is contacted.
    pub ice_servers: Vec<yakk_wire::IceServer>,
    /// Gather host candidates only on these local addresses; empty means all interfaces
    /// (loopback excluded). Loopback addresses listed here are used as candidates.
    pub ice_ips: Vec<IpAddr>,
    /// Largest data-channel message sent: 4096 toward yakk/1 peers,
    /// 65536 between yakk/2 peers.
    pub max_message: usize,
    /// Carry TCP half-close with an end-of-stream marker (yakk/2). Off for yakk/1.
    pub half_close: bool,
    /// SO_RCVBUF/SO_SNDBUF for the ICE UDP sockets, in bytes (Linux caps it at
    /// `net.core.rmem_max`/`wmem_max`). 0 leaves the system default.
    pub udp_buffer: usize,
    /// Use only relayed paths: gather and signal relay (TURN) candidates only, so the
    /// connection goes through a TURN server even where a direct path exists (diagnosis and
    /// tests). Needs a `turn:`/`turns:` server in [`Self::ice_servers`]: without one,
    /// [`Peer::new`] fails with [`TransportError::Setup`].
    pub relay_only: bool,
}

impl TransportConfig {
    /// Settings toward yakk/1 peers: 4096-byte messages, no half-close marker.
    pub fn v1() -> Self {
        TransportConfig {
            max_message: V1_MAX_MESSAGE,
            half_close: false,
            ..Self::v2()
        }
    }

    /// Settings between yakk/2 peers: 64 KiB messages, half-close carried.
    pub fn v2() -> Self {
        TransportConfig {
            ice_servers: Vec::new(),
            ice_ips: Vec::new(),
            max_message: V2_MAX_MESSAGE,
            half_close: true,
            udp_buffer: 4 * 1024 * 1024,
            relay_only: false,
        }
    }
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self::v2()
    }
}

/// The largest message a yakk/1 peer accepts (it reads into a 4096-byte buffer).
pub const V1_MAX_MESSAGE: usize = 4096;
/// Message size between yakk/2 peers.
pub const V2_MAX_MESSAGE: usize = 65536;

/// One ICE candidate: the wire shape shared with the signalling layer.
pub use yakk_wire::IceCandidate;

/// News from a [`Peer`], delivered on the receiver returned by [`Peer::new`]. Keep draining it:
/// candidates must be forwarded to the other side.
#[derive(Debug, Clone)]
pub enum PeerEvent {
    /// A local candidate was gathered: send it to the other side.
    LocalCandidate(IceCandidate),
    /// The connection is up (ICE, DTLS and SCTP), over this path.
    Connected(PathInfo),
    /// The connection failed, was closed, or the peer went away; every stream has ended.
    Disconnected(Disconnect),
}

/// Why a peer connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Disconnect {
    /// The peer said so: it closed its command channel first (a Ctrl-C, a normal end).
    #[error("the peer closed the session")]
    PeerClosed,
    /// ICE consent checks went unanswered: the peer is gone or its network is.
    #[error("the peer stopped answering (ICE disconnected)")]
    Unresponsive,
    /// ICE, DTLS or SCTP failed.
    #[error("the connection to the peer failed")]
    Failed,
    /// Closed on this side, or the stack ended without a reason.
    #[error("the connection was closed")]
    Closed,
}

/// The candidate pair the connection runs over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathInfo {
    /// The kind of the local candidate of the selected pair.
    pub kind: PathKind,
    /// Local address, `ip:port`.
    pub local: String,
    /// Remote address, `ip:port`.
    pub remote: String,
    /// Round-trip time of the pair, when measured.
    pub rtt: Option<Duration>,
    /// How this side reaches its TURN server, when its own candidate of the pair is a relay
    /// candidate. `None` otherwise: a direct path, or one relayed only on the peer's side
    /// (its candidate does not say how the peer reaches its server).
    pub relay: Option<RelayProtocol>,
}

/// The transport between a peer and its TURN server (the relay leg of a relayed path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayProtocol {
    Udp,
    Tcp,
    /// TCP with TLS (`turns:`).
    Tls,
}

impl RelayProtocol {
    /// `udp`, `tcp` or `tls`.
    pub fn name(self) -> &'static str {
        match self {
            RelayProtocol::Udp => "udp",
            RelayProtocol::Tcp => "tcp",
            RelayProtocol::Tls => "tls",
        }
    }
}

/// How a path reaches the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    /// Directly, from a local interface address.
    Host,
    /// Through a NAT mapping learnt from a STUN server.
    Srflx,
    /// Through a NAT mapping learnt from the peer's checks.
    Prflx,
    /// Through a TURN relay.
    Relay,
}

/// What went wrong in the transport.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("could not set up the WebRTC peer connection: {0}")]
    Setup(String),
    #[error("the peer's session description is not usable ({0}); is the other side a yakk peer?")]
    BadDescription(String),
    #[error("the peer's ICE candidate is not usable ({0})")]
    BadCandidate(String),
    #[error("signalling out of order: {0}")]
    Signalling(String),
    #[error("could not open data channel {label:?}: {reason}")]
    OpenChannel { label: String, reason: String },
    #[error("the peer connection is closed ({0}); start a new session")]
    Closed(String),
    #[error("invalid transport configuration: {0}")]
    Config(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_json_has_the_browser_field_names() {
        let c = IceCandidate {
            candidate: "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host".into(),
            sdp_mid: Some("0".into()),
            sdp_mline_index: Some(0),
            username_fragment: None,
        };
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["candidate"], c.candidate.as_str());
        assert_eq!(json["sdpMid"], "0");
        assert_eq!(json["sdpMLineIndex"], 0);
        assert!(json["usernameFragment"].is_null());
        // What a yakk/1 peer sends may leave fields out.
        let back: IceCandidate = serde_json::from_str(r#"{"candidate":"candidate:x"}"#).unwrap();
        assert_eq!(back.sdp_mid, None);
        assert_eq!(back.sdp_mline_index, None);
    }

    #[test]
    fn presets() {
        let one = TransportConfig::v1();
        assert_eq!(one.max_message, 4096);
        assert!(!one.half_close);
        let two = TransportConfig::default();
        assert_eq!(two.max_message, 65536);
        assert!(two.half_close);
    }
}
