//! J-PAKE for yakk: turns the short code two people share into a strong session key.
//!
//! This crate owns the password-authenticated key exchange and nothing else: the
//! arithmetic, the message codecs and a small state machine per protocol version. It
//! does no I/O, holds no clock and spawns nothing; the session layer feeds it the
//! peer's messages and sends what it returns.
//!
//! - [`v1`] speaks the original Go program's J-PAKE ("yakk/1") byte for byte, with the
//!   validation the original program lacks (see `PROTOCOL.md` §2).
//! - [`v2`] is our default ("yakk/2"): RFC 8236 J-PAKE on P-256 with RFC 8235 Schnorr
//!   proofs, role identities, a bound transcript and an HKDF key schedule
//!   (`docs/yakk2-pake.md` gives it byte for byte).
//!
//! Both share one error type, [`PakeError`], whose messages say what went wrong and
//! what the user can do about it.
#![forbid(unsafe_code)]
// No panics outside tests; a local `allow` says why it cannot fire.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![cfg_attr(not(test), deny(clippy::unreachable))]
#![warn(missing_docs)]

mod ec;
mod error;
pub mod v1;
pub mod v2;

pub use error::PakeError;

/// Longest envelope payload any decoder in this crate looks at, in characters.
///
/// The largest legitimate message (a yakk/1 round 1) is under 1 KiB of base64;
/// anything far larger is refused before it is decoded.
pub const MAX_PAYLOAD_LEN: usize = 4096;
