//! The transfer a session's protocol asks for: yakk/2's transfer protocol, or yakk/1's HTTP
//! exchange. A caller hands over the protocol and the streams; [`send_for`] and
//! [`receive_for`] choose, run it, and wait for the peer to hear the last word.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::{Result, TransferError};
use crate::manifest::Manifest;
use crate::receive::{ReceiveOptions, ReceiveSummary, receive_until};
use crate::report::Reporter;
use crate::send::{SendSummary, send_until};
use crate::stop::Stop;
use crate::v1::{fetch_http_v1, serve_streams};

/// The protocol a session speaks, which decides how files travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// yakk/1: one file over HTTP, one request per stream.
    V1,
    /// yakk/2: the transfer protocol of [`send_until`] / [`receive_until`].
    V2,
}

impl Protocol {
    /// Whether a transfer that ended early can continue where it stopped (yakk/2 only).
    pub fn resumes(self) -> bool {
        self == Protocol::V2
    }
}

/// Offers `manifest` to the receiver on `first`. yakk/2 runs on that stream alone; a yakk/1
/// receiver may open more streams, which `accept` hands out (`None` once the receiver is gone).
/// Ends early with [`TransferError::Stopped`] when `stop` fires; the reporter is abandoned on
/// any error.
pub async fn send_for<S, A, F>(
    protocol: Protocol,
    mut first: S,
    accept: A,
    manifest: &Arc<Manifest>,
    reporter: Arc<dyn Reporter>,
    stop: &Stop,
) -> Result<SendSummary>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    A: FnMut() -> F,
    F: Future<Output = Option<S>>,
{
    let result = match protocol {
        Protocol::V1 => tokio::select! {
            r = serve_streams(first, accept, manifest, &reporter) => r,
            () = stop.requested() => Err(TransferError::Stopped),
        },
        Protocol::V2 => {
            let result = send_until(&mut first, manifest, &*reporter, stop).await;
            if peer_may_listen(&result) {
                linger(&mut first).await;
            }
            result
        }
    };
    if result.is_err() {
        reporter.abandon();
    }
    result
}

/// Receives what the sender on `stream` offers, by `protocol`, until `stop` fires. On an error
/// the reporter is abandoned before the peer is given time to read our last word.
pub async fn receive_for<S>(
    protocol: Protocol,
    mut stream: S,
    opts: ReceiveOptions,
    reporter: &dyn Reporter,
    stop: &Stop,
) -> Result<ReceiveSummary>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let result = match protocol {
        Protocol::V1 => tokio::select! {
            r = fetch_http_v1(&mut stream, opts, reporter) => r,
            () = stop.requested() => Err(TransferError::Stopped),
        },
        Protocol::V2 => receive_until(&mut stream, opts, reporter, stop).await,
    };
    if result.is_err() {
        reporter.abandon();
    }
    if peer_may_listen(&result) {
        linger(&mut stream).await;
    }
    result
}

/// After the protocol's last word: shut down our side and wait (briefly) for the peer to close
/// its side, so that the last messages are delivered before the connection is torn down.
pub(crate) async fn linger<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) {
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// Whether the peer may still be reading our last words: after a success, and after an error
/// we told it about (a refusal, a declined offer, a failed check), but not once the connection
/// is gone.
pub(crate) fn peer_may_listen<T>(result: &Result<T>) -> bool {
    !matches!(
        result,
        Err(TransferError::Connection(_) | TransferError::PeerClosed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::NullReporter;

    /// Each protocol carries a file between `send_for` and `receive_for`.
    #[tokio::test]
    async fn both_protocols_carry_a_file() {
        for protocol in [Protocol::V1, Protocol::V2] {
            let src = tempfile::tempdir().unwrap();
            let path = src.path().join("a.txt");
            std::fs::write(&path, b"hello").unwrap();
            let manifest = Arc::new(Manifest::scan(&[&path]).unwrap());
            let dst = tempfile::tempdir().unwrap();
            let (owner_end, joiner_end) = tokio::io::duplex(1 << 16);
            let no_more = || async { None::<tokio::io::DuplexStream> };
            let opts = ReceiveOptions::into_dir(dst.path());
            let never = Stop::never();
            let (sent, got) = tokio::join!(
                send_for(
                    protocol,
                    owner_end,
                    no_more,
                    &manifest,
                    Arc::new(NullReporter),
                    &never
                ),
                receive_for(protocol, joiner_end, opts, &NullReporter, &never),
            );
            assert_eq!(sent.unwrap().bytes_sent, 5, "{protocol:?}");
            assert_eq!(got.unwrap().files_received, 1, "{protocol:?}");
            assert_eq!(std::fs::read(dst.path().join("a.txt")).unwrap(), b"hello");
        }
    }
}
