//! The errors of a transfer, worded for the person who runs the command.
//!
//! Every name that appears in a message has been escaped with [`crate::names::escape`] first,
//! so a hostile sender cannot put terminal escapes in front of the user through an error.

use std::io;

/// Result of this crate.
pub type Result<T, E = TransferError> = std::result::Result<T, E>;

/// Everything that can stop a transfer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// A local file or folder could not be read or written for another reason.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing, with the (escaped) path.
        context: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// Reading from or writing to the peer failed.
    #[error("connection to the peer lost: {0}")]
    Connection(#[source] io::Error),
    /// The peer closed the stream in the middle of the exchange.
    #[error("the peer closed the connection before the transfer finished")]
    PeerClosed,
    /// The peer broke the protocol (bad frame, bound exceeded, unexpected message).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The peer speaks a version of the transfer protocol we do not.
    #[error(
        "the peer speaks transfer protocol version {0}, this yakk speaks version 1: update yakk on both sides"
    )]
    UnsupportedVersion(u16),
    /// A name in the offer could escape the target folder or is otherwise unusable.
    #[error("unsafe name in the offer: {name}: {reason}")]
    UnsafeName {
        /// The escaped name.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// Files we would write exist already (the escaped names, a few of them and how many more).
    #[error(
        "already here: {0}; nothing was received (--overwrite replaces existing files, --skip-identical keeps those identical to the offered ones)"
    )]
    FileExists(String),
    /// A file we would write exists as a folder.
    #[error("{0} exists as a folder: move it away or receive into another folder (-o)")]
    ExistsAsFolder(String),
    /// A folder we would create (or write into) exists as a file.
    #[error("{0} exists and is not a folder: move it away or receive into another folder (-o)")]
    NotAFolder(String),
    /// A path we would write through is a symbolic link.
    #[error(
        "refusing to write through the symbolic link {0}: move it away or receive into another folder (-o)"
    )]
    Symlink(String),
    /// The disk filled up while writing.
    #[error(
        "disk full while writing {0}: partial data kept; free some space, then ask the sender for a new code and receive again: it continues where it stopped"
    )]
    DiskFull(String),
    /// We may not write there.
    #[error(
        "permission denied while writing {0}: partial data kept; fix the permissions or choose another folder (-o), then ask the sender for a new code and receive again"
    )]
    PermissionDenied(String),
    /// The sender sent more or fewer bytes than it declared.
    #[error(
        "the sender sent {what} data than it declared for {name} ({declared} bytes): transfer stopped"
    )]
    SizeMismatch {
        /// The escaped name.
        name: String,
        /// "more" or "less".
        what: &'static str,
        /// The declared size.
        declared: u64,
    },
    /// The data received does not hash to the offered value.
    #[error(
        "{0} arrived damaged (hash mismatch): it was discarded; ask the sender for a new code to try again"
    )]
    HashMismatch(String),
    /// The local person declined the offer.
    #[error("transfer declined: nothing was written")]
    Declined,
    /// The receiver declined our offer (with the text it gave, escaped; yakk's receivers give
    /// no reason, see [`crate::wire::DECLINED`]).
    #[error("the receiver declined the transfer{}", reason_suffix(.0))]
    PeerRefused(String),
    /// The peer gave up and said why.
    #[error("the peer gave up: {0}")]
    PeerError(String),
    /// The peer's user stopped the transfer (Ctrl-C on the other side).
    #[error("the peer stopped the transfer")]
    PeerStopped,
    /// Our user stopped the transfer ([`crate::Stop`]); the peer was told.
    #[error("stopped")]
    Stopped,
    /// A file to send changed on disk since it was scanned.
    #[error("{0} changed since yakk filesend started: run yakk filesend again")]
    SourceChanged(String),
    /// A path given to send does not exist or cannot be used.
    #[error("cannot send {path}: {reason}")]
    BadSource {
        /// The escaped path.
        path: String,
        /// Why.
        reason: String,
    },
    /// Standard input can be sent once only.
    #[error("standard input was already sent to an earlier receiver: start yakk filesend again")]
    StdinConsumed,
    /// The yakk/1 exchange carries one file only.
    #[error(
        "legacy mode (--legacy, yakk/1) carries a single file only: {0}; send one file (for example an archive) or drop --legacy"
    )]
    V1SingleFile(String),
    /// `--stdout` needs an offer of exactly one file.
    #[error(
        "--stdout needs an offer of exactly one file, the sender offers {0}: receive into a folder instead (-o)"
    )]
    StdoutSingleFile(String),
    /// The yakk/1 HTTP exchange went wrong.
    #[error("legacy (yakk/1) file exchange: {0}")]
    Http(String),
}

/// ": reason" for a reason other than yakk's generic one, else nothing.
fn reason_suffix(reason: &str) -> String {
    if reason.is_empty() || reason == crate::wire::DECLINED {
        String::new()
    } else {
        format!(": {reason}")
    }
}

impl TransferError {
    /// The text to send the peer when we stop on this error. What the peer sent wrong (names,
    /// sizes, hashes, frames) is said; the state of our own disk never is: a local failure is
    /// told as `local` ("the receiver could not save the files").
    pub(crate) fn peer_text(&self, local: &str) -> String {
        match self {
            Self::Protocol(_)
            | Self::UnsupportedVersion(_)
            | Self::UnsafeName { .. }
            | Self::SizeMismatch { .. } => self.to_string(),
            Self::HashMismatch(name) => format!("{name} arrived damaged (hash mismatch)"),
            Self::Stopped => crate::wire::STOPPED.to_owned(),
            _ => local.to_owned(),
        }
    }

    /// The peer ended the exchange (or the connection did): nothing more to tell it.
    pub(crate) fn peer_ended(&self) -> bool {
        matches!(
            self,
            Self::PeerError(_) | Self::PeerStopped | Self::PeerClosed | Self::Connection(_)
        )
    }

    /// An error of the stream to the peer: an early end is reported as [`Self::PeerClosed`].
    pub(crate) fn conn(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted => Self::PeerClosed,
            _ => Self::Connection(e),
        }
    }

    /// Classify an error while writing `name` (escaped) on the local disk.
    pub(crate) fn write(e: io::Error, name: &str) -> Self {
        match e.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
                Self::DiskFull(name.to_owned())
            }
            io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
                Self::PermissionDenied(name.to_owned())
            }
            io::ErrorKind::IsADirectory => Self::ExistsAsFolder(name.to_owned()),
            io::ErrorKind::NotADirectory => Self::NotAFolder(name.to_owned()),
            _ => Self::Io {
                context: format!("writing {name}"),
                source: e,
            },
        }
    }

    /// A local I/O error with context.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_errors_are_classified() {
        let full = io::Error::from(io::ErrorKind::StorageFull);
        let e = TransferError::write(full, "big.iso");
        assert!(matches!(e, TransferError::DiskFull(_)));
        assert!(e.to_string().contains("partial data kept"));
        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        assert!(matches!(
            TransferError::write(denied, "x"),
            TransferError::PermissionDenied(_)
        ));
        #[cfg(unix)]
        {
            let enospc = io::Error::from_raw_os_error(libc::ENOSPC);
            assert!(matches!(
                TransferError::write(enospc, "x"),
                TransferError::DiskFull(_)
            ));
        }
        assert!(
            TransferError::FileExists("photo.jpg".into())
                .to_string()
                .starts_with("already here: photo.jpg; nothing was received (--overwrite")
        );
        assert_eq!(
            TransferError::PeerRefused(crate::wire::DECLINED.into()).to_string(),
            "the receiver declined the transfer"
        );
    }
}
