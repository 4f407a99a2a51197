//! yakk/1 file exchange: the original program's HTTP/1.1 `GET /yakkfilesendreceive`.
//!
//! The owner serves one file; the joiner requests it through a data channel and saves the body.
//! The response names the file in `Content-Disposition: attachment; filename=<name>`. yakk/1
//! carries one file, has no hash and no resume: the fetcher checks the length when the sender
//! declares one, writes to a partial file and renames it at the end, and discards the partial
//! file on failure.
//!
//! Serving: the request head (at most 16 KiB) must be `GET` or `HEAD /yakkfilesendreceive` (a
//! query string is ignored); the answer carries `Accept-Ranges: bytes` and `Content-Length` for
//! a file (one byte range is honoured) and `Transfer-Encoding: chunked` for standard input, then
//! `Connection: close`. One request per stream: the original program's downloader asks `HEAD`
//! and then `GET` on a new connection, so the caller serves every stream the receiver opens.
//! The name is written bare, as the original program does, unless it contains a space, `;`,
//! `"`, `\` or a comma, in which case it is a quoted string.
//!
//! Fetching accepts a body delimited by `Content-Length`, by chunked encoding, or by the end of
//! the stream; the name may be bare or quoted, and must be a single safe component.

use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};

use crate::error::{Result, TransferError};
use crate::manifest::{EntryKind, Manifest};
use crate::names::escape;
use crate::report::{Direction, DoneInfo, Progress, Reporter, StartInfo};
use crate::send::{CHUNK, SendSummary};
use head::parse_range;

/// The request path of the yakk/1 file exchange.
pub const V1_PATH: &str = "/yakkfilesendreceive";
const MAX_HEAD: usize = 16 << 10;
const MAX_HEADERS: usize = head::MAX_HEADERS;

mod fetch;
pub(crate) mod head;
mod serve_streams;

pub use fetch::fetch_http_v1;
pub(crate) use serve_streams::serve_streams;

fn http(msg: impl Into<String>) -> TransferError {
    TransferError::Http(msg.into())
}

/// Read up to the end of an HTTP head; returns the head and whatever body bytes followed it.
async fn read_head<R: AsyncRead + Unpin>(r: &mut R) -> Result<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((buf, rest));
        }
        if buf.len() > MAX_HEAD {
            return Err(http("HTTP head longer than 16 KiB"));
        }
        let n = r.read(&mut chunk).await.map_err(TransferError::conn)?;
        if n == 0 {
            return Err(TransferError::PeerClosed);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// What one request of a yakk/1 receiver got.
#[derive(Debug)]
pub enum V1Served {
    /// A `HEAD`: the response head only, as a `GET` would have it.
    Head,
    /// A `GET` that carried the file to its end (all of it, or a range through its last byte).
    File(SendSummary),
    /// A `GET` for a range that stops before the file's end: the receiver does not hold the
    /// whole file yet, so serving goes on.
    Part(SendSummary),
}

/// Answer one request of a yakk/1 receiver on `stream` for a single-file `manifest`.
///
/// `GET /yakkfilesendreceive` gets the file, `HEAD` the same head without a body (the original
/// program's downloader asks `HEAD` first, then `GET` on a new connection). Files are served
/// with `Accept-Ranges: bytes` and one byte range is honoured (`206`), as the original did,
/// so that its downloader can resume a partial file. Anything else is answered with an error
/// status and returned as an error; the caller may go on serving other streams.
pub async fn serve_http_v1<S>(
    stream: S,
    manifest: &Manifest,
    reporter: &dyn Reporter,
) -> Result<V1Served>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let entry = match manifest.entries() {
        [e] if e.kind != EntryKind::Dir => e,
        [e] => {
            return Err(TransferError::V1SingleFile(format!(
                "{} is a folder",
                escape(&e.name)
            )));
        }
        es => {
            return Err(TransferError::V1SingleFile(format!(
                "{} entries given",
                es.len()
            )));
        }
    };
    let (rd, wr) = tokio::io::split(stream);
    let mut rd = BufReader::new(rd);
    let mut wr = BufWriter::with_capacity(256 << 10, wr);
    let (head, _) = read_head(&mut rd).await?;
    let request = match head::parse_request(&head) {
        Ok(r) => r,
        Err(bad) => {
            let _ = wr
                .write_all(
                    format!(
                        "HTTP/1.1 {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        bad.status
                    )
                    .as_bytes(),
                )
                .await;
            let _ = wr.shutdown().await;
            return Err(http(bad.what));
        }
    };
    let head_only = request.head_only;
    let range_header = request.range;

    let started = Instant::now();
    let mut summary = SendSummary::default();
    let name = entry.name.as_str();
    match &entry.kind {
        EntryKind::File { size, .. } => {
            let size = *size;
            let range = range_header.as_deref().and_then(|v| parse_range(v, size));
            let (status, first, len, content_range) = match range {
                None => ("200 OK", 0, size, String::new()),
                Some(Ok((a, b))) => (
                    "206 Partial Content",
                    a,
                    b - a + 1,
                    format!("Content-Range: bytes {a}-{b}/{size}\r\n"),
                ),
                Some(Err(())) => {
                    let _ = wr
                        .write_all(
                            format!(
                                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{size}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            )
                            .as_bytes(),
                        )
                        .await;
                    let _ = wr.shutdown().await;
                    return Err(http(format!(
                        "unsatisfiable range {}",
                        escape(range_header.as_deref().unwrap_or(""))
                    )));
                }
            };
            let head = head::file_response(status, name, &content_range, len);
            wr.write_all(head.as_bytes())
                .await
                .map_err(TransferError::conn)?;
            if head_only {
                return finish_head(wr).await;
            }
            reporter.start(&StartInfo {
                direction: Direction::Send,
                files: 1,
                total_bytes: Some(len),
                resumed_bytes: first,
            });
            reporter.file_start(name, Some(size), first);
            let (tx, mut rx) = tokio::sync::mpsc::channel(4);
            let (spare_tx, spare_rx) = std::sync::mpsc::channel();
            let Some(source) = entry.source.clone() else {
                return Err(http("the file to serve has no source"));
            };
            let job = crate::send::ReadJob {
                path: source,
                name: name.to_owned(),
                offset: first,
                size,
                modified: entry.modified,
            };
            tokio::task::spawn_blocking(move || crate::send::read_files(vec![job], tx, spare_rx));
            // Dropping `rx` (when the range ends before the file) stops the reader.
            while summary.bytes_sent < len {
                match rx.recv().await {
                    Some(crate::send::Chunk::Data(mut buf)) => {
                        buf.truncate((len - summary.bytes_sent).min(buf.len() as u64) as usize);
                        wr.write_all(&buf).await.map_err(TransferError::conn)?;
                        summary.bytes_sent += buf.len() as u64;
                        let _ = spare_tx.send(buf);
                        reporter.progress(&Progress {
                            name,
                            file_bytes: first + summary.bytes_sent,
                            file_size: Some(size),
                            bytes: summary.bytes_sent,
                            total_bytes: Some(len),
                        });
                    }
                    Some(crate::send::Chunk::End) => break,
                    Some(crate::send::Chunk::Failed(e)) => return Err(e),
                    None => return Err(http("file reader stopped")),
                }
            }
            summary.resumed_bytes = first;
            if first + len < size {
                wr.flush().await.map_err(TransferError::conn)?;
                let _ = wr.shutdown().await;
                return Ok(V1Served::Part(summary));
            }
        }
        EntryKind::Stream => {
            let head = head::stream_response(name);
            wr.write_all(head.as_bytes())
                .await
                .map_err(TransferError::conn)?;
            if head_only {
                return finish_head(wr).await;
            }
            reporter.start(&StartInfo {
                direction: Direction::Send,
                files: 1,
                total_bytes: None,
                resumed_bytes: 0,
            });
            reporter.file_start(name, None, 0);
            let mut src = manifest.take_stream()?;
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = src
                    .read(&mut buf)
                    .await
                    .map_err(|e| TransferError::io("reading standard input", e))?;
                if n == 0 {
                    break;
                }
                wr.write_all(format!("{n:x}\r\n").as_bytes())
                    .await
                    .map_err(TransferError::conn)?;
                wr.write_all(&buf[..n]).await.map_err(TransferError::conn)?;
                wr.write_all(b"\r\n").await.map_err(TransferError::conn)?;
                summary.bytes_sent += n as u64;
                reporter.progress(&Progress {
                    name,
                    file_bytes: summary.bytes_sent,
                    file_size: None,
                    bytes: summary.bytes_sent,
                    total_bytes: None,
                });
            }
            wr.write_all(b"0\r\n\r\n")
                .await
                .map_err(TransferError::conn)?;
        }
        EntryKind::Dir => {
            return Err(TransferError::V1SingleFile(format!(
                "{} is a folder",
                escape(name)
            )));
        }
    }
    wr.flush().await.map_err(TransferError::conn)?;
    let _ = wr.shutdown().await;
    summary.files_sent = 1;
    reporter.file_done(name, first_plus(&summary));
    reporter.done(&DoneInfo {
        direction: Direction::Send,
        files: 1,
        bytes_transferred: summary.bytes_sent,
        resumed_bytes: summary.resumed_bytes,
        elapsed: started.elapsed(),
    });
    Ok(V1Served::File(summary))
}

/// The size the receiver holds once a (possibly partial) answer is complete.
fn first_plus(s: &SendSummary) -> u64 {
    s.resumed_bytes + s.bytes_sent
}

/// Send a `HEAD` answer's head and end the stream.
async fn finish_head<W: AsyncWrite + Unpin>(mut wr: W) -> Result<V1Served> {
    wr.flush().await.map_err(TransferError::conn)?;
    let _ = wr.shutdown().await;
    Ok(V1Served::Head)
}
