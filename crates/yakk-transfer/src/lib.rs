//! yakk's file transfer, on top of any reliable ordered byte stream.
//!
//! The crate knows nothing of WebRTC: the session layer hands it a stream
//! (`AsyncRead + AsyncWrite + Unpin`) and it moves files over it.
//!
//! Two protocols live here:
//!
//! * **yakk/2** ([`send`] / [`receive`]): the owner of the room is the sender, the joiner the
//!   receiver. The receiver opens the stream and says hello, the sender answers with an offer
//!   (names, sizes, BLAKE3 hashes), the receiver accepts with the offsets it already holds per
//!   file (resume) or refuses, and the sender streams the data. Framing is documented byte for
//!   byte in `docs/yakk2-transfer.md` at the root of the repository; the codec is in [`wire`].
//! * **yakk/1** ([`serve_http_v1`] / [`fetch_http_v1`]): the original program's single-file
//!   HTTP/1.1 exchange, `GET /yakkfilesendreceive`.
//!
//! The CLI scans what to send once ([`Manifest::scan`]) and may serve it to several receivers in
//! turn; it picks a [`Reporter`] ([`TerminalReporter`] or [`JsonReporter`]) for progress, and
//! hands [`send_for`] / [`receive_for`] the session's [`Protocol`] and a [`Stop`] that Ctrl-C
//! fires: they choose between the two protocols.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use yakk_transfer::{Manifest, NullReporter, ReceiveOptions, receive, send};
//!
//! let src = tempfile::tempdir()?;
//! std::fs::write(src.path().join("hello.txt"), "hi")?;
//! let dst = tempfile::tempdir()?;
//!
//! // Owner: scan once (hashes every file), then serve each receiver that connects.
//! let manifest = Manifest::scan(&[src.path().join("hello.txt")])?;
//! // The session layer hands out the stream; an in-memory pipe stands in for it here.
//! let (owner_end, joiner_end) = tokio::io::duplex(64 << 10);
//! let opts = ReceiveOptions::into_dir(dst.path()); // add `confirm` to ask first
//! let (sent, received) = tokio::join!(
//!     send(owner_end, &manifest, &NullReporter),
//!     receive(joiner_end, opts, &NullReporter),
//! );
//! assert_eq!(sent?.bytes_sent, 2);
//! assert_eq!(received?.files_received, 1);
//! assert_eq!(std::fs::read(dst.path().join("hello.txt"))?, b"hi");
//! # Ok(())
//! # }
//! ```
//!
//! A sender is not trusted: every name in an offer is checked ([`names`]) before anything touches
//! the disk, everything the peer can make us allocate is bounded, declared sizes and hashes are
//! enforced, and names are escaped before they are shown.
#![forbid(unsafe_code)]
// No panics outside tests; a local `allow` says why it cannot fire.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![cfg_attr(not(test), deny(clippy::unreachable))]

mod error;
mod manifest;
pub mod names;
mod protocol;
mod receive;
mod report;
mod send;
mod stop;
mod v1;
pub mod wire;

pub use error::{Result, TransferError};
/// Sizes as the offer and the progress show them ("14 B", "2.00 MiB").
pub use indicatif::HumanBytes;
pub use manifest::{Entry, EntryKind, Listing, Manifest};
pub use protocol::{Protocol, receive_for, send_for};
pub use receive::{
    Confirm, Destination, MAX_SUMMARY_ENTRIES, OfferEntrySummary, OfferSummary, ReceiveOptions,
    ReceiveSummary, check_destination, receive, receive_until,
};
pub use report::{
    Direction, DoneInfo, JsonReporter, NullReporter, Progress, Reporter, StartInfo,
    TerminalReporter,
};
pub use send::{SendSummary, send, send_until};
pub use stop::Stop;
pub use v1::{V1_PATH, V1Served, fetch_http_v1, serve_http_v1};

/// The yakk/1 HTTP head codec, for the fuzz targets in `fuzz/` (not a stable API).
#[doc(hidden)]
pub mod v1_head {
    pub use crate::v1::head::{
        BadRequest, Body, Request, Response, chunk_size, disposition, parse_filename, parse_range,
        parse_request, parse_response,
    };
}
