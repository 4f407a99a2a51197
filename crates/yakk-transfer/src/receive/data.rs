//! The data phase of a yakk/2 receive: DATA and FILE_END per file into the sink, then DONE.

use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::{FileTarget, ReceiveSummary, Sink};
use crate::error::{Result, TransferError};
use crate::report::{Direction, DoneInfo, Progress, Reporter, StartInfo};
use crate::wire::{self, Frame, Offer, WireKind};

/// Read DATA / FILE_END for each job in order, then DONE; the figures for the `done` report
/// (made once the files have their final names).
pub(super) async fn data_phase<R: AsyncRead + Unpin>(
    rd: &mut R,
    sink: &mut Sink,
    jobs: impl Iterator<Item = (usize, FileTarget)>,
    offer: &Offer,
    reporter: &dyn Reporter,
    summary: &mut ReceiveSummary,
) -> Result<DoneInfo> {
    let known: Option<u64> = offer
        .entries
        .iter()
        .map(|e| match e.kind {
            WireKind::File { size, .. } => Some(size),
            WireKind::Stream => None,
            WireKind::Dir => Some(0),
        })
        .sum();
    let files = offer
        .entries
        .iter()
        .filter(|e| e.kind != WireKind::Dir)
        .count() as u64;
    let started = Instant::now();
    reporter.start(&StartInfo {
        direction: Direction::Receive,
        files,
        total_bytes: known,
        resumed_bytes: summary.resumed_bytes,
    });
    let mut done = summary.resumed_bytes;
    for (idx, target) in jobs {
        let entry = &offer.entries[idx];
        let size = match entry.kind {
            WireKind::File { size, .. } => Some(size),
            _ => None,
        };
        let shown = target.shown.clone();
        let offset = target.offset;
        reporter.file_start(&entry.name, size, offset);
        sink.begin(target).await?;
        let mut got = offset;
        loop {
            let (t, len) = wire::read_header(rd).await?;
            match t {
                Frame::Data => {
                    if size.is_some_and(|s| got + len as u64 > s) {
                        return Err(TransferError::SizeMismatch {
                            name: shown,
                            what: "more",
                            declared: size.unwrap_or(0),
                        });
                    }
                    let mut buf = sink.buffer(len as usize);
                    // Keep even part of a chunk if the connection dies in it: fewer bytes to
                    // send again on resume.
                    let mut filled = 0;
                    while filled < buf.len() {
                        match rd.read(&mut buf[filled..]).await {
                            Ok(0) | Err(_) => {
                                buf.truncate(filled);
                                if filled > 0 {
                                    sink.data(buf).await?;
                                }
                                return Err(TransferError::PeerClosed);
                            }
                            Ok(n) => filled += n,
                        }
                    }
                    sink.data(buf).await?;
                    got += len as u64;
                    done += len as u64;
                    summary.bytes_received += len as u64;
                    reporter.progress(&Progress {
                        name: &entry.name,
                        file_bytes: got,
                        file_size: size,
                        bytes: done,
                        total_bytes: known,
                    });
                }
                Frame::FileEnd => {
                    let p = wire::read_payload(rd, len).await?;
                    let trailer = match size {
                        Some(size) => {
                            if !p.is_empty() {
                                return Err(TransferError::Protocol(
                                    "file end with a trailer for a file of known size".into(),
                                ));
                            }
                            if got < size {
                                return Err(TransferError::SizeMismatch {
                                    name: shown,
                                    what: "less",
                                    declared: size,
                                });
                            }
                            None
                        }
                        None => Some(wire::decode_stream_end(&p)?),
                    };
                    sink.end(trailer).await?;
                    summary.files_received += 1;
                    reporter.file_done(&entry.name, got);
                    break;
                }
                Frame::Error => {
                    let p = wire::read_payload(rd, len).await?;
                    return Err(wire::peer_error(&p));
                }
                Frame::Done => {
                    return Err(TransferError::SizeMismatch {
                        name: shown,
                        what: "less",
                        declared: size.unwrap_or(got),
                    });
                }
                other => {
                    return Err(TransferError::Protocol(format!(
                        "unexpected {other:?} frame during data"
                    )));
                }
            }
        }
    }
    let (t, len) = wire::read_header(rd).await?;
    match t {
        Frame::Done => {}
        Frame::Data => {
            return Err(TransferError::Protocol(
                "the sender sent more data than it offered".into(),
            ));
        }
        Frame::Error => {
            let p = wire::read_payload(rd, len).await?;
            return Err(wire::peer_error(&p));
        }
        other => {
            return Err(TransferError::Protocol(format!(
                "unexpected {other:?} frame at the end"
            )));
        }
    }
    Ok(DoneInfo {
        direction: Direction::Receive,
        files,
        bytes_transferred: summary.bytes_received,
        resumed_bytes: summary.resumed_bytes,
        elapsed: started.elapsed(),
    })
}
