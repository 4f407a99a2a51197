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
// No unwrap, expect, panic or unreachable outside tests: errors are returned, or an
// `#[allow]` beside the call says why it cannot fail.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![cfg_attr(not(test), deny(clippy::panic, clippy::unreachable))]

pub mod admission;
mod config;
mod connection;
mod driver;
mod error;
pub mod handshake;
mod owner;
mod pake;
mod parts;
pub mod rendezvous;
pub mod sealed;
mod session;
pub mod stripe;

pub use config::{AUTO_LANES, LANES_AUTO, LONG_PATH, OWNER_LANE_BUDGET, SessionConfig, auto_lanes};
pub use connection::{Connection, Stream};
pub use driver::join;
pub use error::SessionError;
pub use handshake::{MAX_LANES, Version};
pub use owner::{Owner, OwnerEvent};
pub use yakk_transport::{PathInfo, PathKind, RelayProtocol};
pub use yakk_wire::IceServer;
