//! The sending side of yakk/2: answer a receiver's hello with the offer, then stream the data.
//!
//! Files are read on a blocking thread in 1 MiB chunks that flow through a bounded channel
//! (4 chunks) to the async writer, so disk reads overlap network writes and memory stays
//! bounded. There is no round trip per chunk or per file: after the accept, the sender writes
//! until the last file and only then waits for the receiver's verdict. While it writes it also
//! watches the stream for an ERROR from the receiver (disk full, hash mismatch), so it stops
//! with the receiver's reason rather than a broken pipe.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::mpsc as std_mpsc;
use std::time::{Instant, SystemTime};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::mpsc;

use crate::error::{Result, TransferError};
use crate::manifest::{EntryKind, Manifest};
use crate::names::escape;
use crate::receive::refuse;
use crate::report::{Direction, DoneInfo, Progress, Reporter, StartInfo};
use crate::stop::Stop;
use crate::wire::{self, Frame};

/// How long a stop may wait for the frame being written to end (so that the stream stays
/// readable for our ERROR) before the transfer is dropped without a word.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// At the end of standard input, how long to wait for a Ctrl-C that came with it: Ctrl-C on a
/// terminal goes to the whole pipeline (`tar c . | yakk filesend -`), and the producer that
/// dies of it closes the pipe; that end is not the end of the data.
const STREAM_END_GRACE: std::time::Duration = std::time::Duration::from_millis(100);

/// Size of the chunks read from disk and sent in DATA frames.
pub(crate) const CHUNK: usize = wire::MAX_DATA as usize;

/// What one [`send`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SendSummary {
    /// Files whose data (or end) was sent in this run.
    pub files_sent: u64,
    /// File bytes sent in this run (frame headers not counted).
    pub bytes_sent: u64,
    /// Bytes the receiver already held and that were not sent again.
    pub resumed_bytes: u64,
    /// Files that needed no data (complete at the receiver already, or empty).
    pub files_skipped: u64,
}

impl SendSummary {
    /// Files of the offer the receiver now holds complete (all of them): what both sides count.
    pub fn files(&self) -> u64 {
        self.files_sent + self.files_skipped
    }
}

/// One file to read, from `offset` to `size`.
pub(crate) struct ReadJob {
    pub path: PathBuf,
    pub name: String,
    pub offset: u64,
    pub size: u64,
    pub modified: Option<SystemTime>,
}

pub(crate) enum Chunk {
    Data(Vec<u8>),
    End,
    Failed(TransferError),
}

/// Read `jobs` in order on the calling (blocking) thread, feeding `tx`.
pub(crate) fn read_files(
    jobs: Vec<ReadJob>,
    tx: mpsc::Sender<Chunk>,
    spare: std_mpsc::Receiver<Vec<u8>>,
) {
    for job in jobs {
        if let Err(e) = read_one(&job, &tx, &spare) {
            let _ = tx.blocking_send(Chunk::Failed(e));
            return;
        }
        if tx.blocking_send(Chunk::End).is_err() {
            return;
        }
    }
}

fn read_one(
    job: &ReadJob,
    tx: &mpsc::Sender<Chunk>,
    spare: &std_mpsc::Receiver<Vec<u8>>,
) -> Result<()> {
    let shown = escape(&job.path.to_string_lossy());
    let changed = || TransferError::SourceChanged(shown.clone());
    let mut f =
        fs::File::open(&job.path).map_err(|e| TransferError::io(format!("opening {shown}"), e))?;
    let meta = f
        .metadata()
        .map_err(|e| TransferError::io(format!("reading {shown}"), e))?;
    if meta.len() != job.size || meta.modified().ok() != job.modified {
        return Err(changed());
    }
    f.seek(SeekFrom::Start(job.offset))
        .map_err(|e| TransferError::io(format!("reading {shown}"), e))?;
    let mut left = job.size - job.offset;
    while left > 0 {
        let mut buf = spare.try_recv().unwrap_or_default();
        let want = (left as usize).min(CHUNK);
        buf.resize(want, 0);
        let mut got = 0;
        while got < want {
            let n = f
                .read(&mut buf[got..])
                .map_err(|e| TransferError::io(format!("reading {shown}"), e))?;
            if n == 0 {
                return Err(changed());
            }
            got += n;
        }
        left -= want as u64;
        if tx.blocking_send(Chunk::Data(buf)).is_err() {
            // The sending task is gone (transfer stopped): nothing more to do.
            return Ok(());
        }
    }
    Ok(())
}

/// Serve `manifest` to one receiver over `stream` (yakk/2).
///
/// Call it again with the same manifest for the next receiver: a receiver that already holds
/// part of the files gets only the rest.
pub async fn send<S>(stream: S, manifest: &Manifest, reporter: &dyn Reporter) -> Result<SendSummary>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    send_until(stream, manifest, reporter, &Stop::never()).await
}

/// [`send`], until `stop` fires: then the receiver is told (ERROR [`wire::STOPPED`]) and the
/// result is [`TransferError::Stopped`].
pub async fn send_until<S>(
    stream: S,
    manifest: &Manifest,
    reporter: &dyn Reporter,
    stop: &Stop,
) -> Result<SendSummary>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (rd, wr) = tokio::io::split(stream);
    let mut rd = BufReader::with_capacity(16 << 10, rd);
    let mut wr = BufWriter::with_capacity(256 << 10, wr);

    let (_, hello) = tokio::select! {
        r = wire::read_frame(&mut rd, &[Frame::Hello]) => r.map_err(|e| wire::first_frame(e, "was the code given to another command than `yakk filereceive`?"))?,
        () = stop.requested() => return Err(stopped(&mut wr).await),
    };
    let version = wire::decode_hello(&hello)?;
    if version != wire::VERSION {
        let msg = format!("unsupported transfer protocol version {version}");
        let _ = wire::write_frame(&mut wr, Frame::Error, &wire::encode_text(&msg)).await;
        let _ = wr.flush().await;
        return Err(TransferError::UnsupportedVersion(version));
    }
    let offer = manifest.offer();
    wire::write_frame(&mut wr, Frame::Offer, &wire::encode_offer(&offer)).await?;
    wr.flush().await.map_err(TransferError::conn)?;

    let (t, p) = tokio::select! {
        r = wire::read_frame(&mut rd, &[Frame::Accept, Frame::Refuse]) => r?,
        () = stop.requested() => return Err(stopped(&mut wr).await),
    };
    if t == Frame::Refuse {
        return Err(TransferError::PeerRefused(wire::decode_text(&p)));
    }
    let offsets = wire::decode_accept(&p, &offer)?;

    let mut summary = SendSummary::default();
    let mut jobs = Vec::new();
    let mut stream_name = None;
    for (e, &off) in manifest.entries().iter().zip(&offsets) {
        match &e.kind {
            EntryKind::Dir => {}
            EntryKind::File { size, .. } => {
                summary.resumed_bytes += off;
                if off == *size {
                    summary.files_skipped += 1;
                } else {
                    jobs.push(ReadJob {
                        path: e.source.clone().ok_or_else(|| TransferError::BadSource {
                            path: escape(&e.name),
                            reason: "it has no file to read".into(),
                        })?,
                        name: e.name.clone(),
                        offset: off,
                        size: *size,
                        modified: e.modified,
                    });
                }
            }
            EntryKind::Stream => stream_name = Some(e.name.clone()),
        }
    }
    let total = manifest.total_bytes();
    let started = Instant::now();
    reporter.start(&StartInfo {
        direction: Direction::Send,
        files: manifest.file_count() as u64,
        total_bytes: stream_name.is_none().then_some(total),
        resumed_bytes: summary.resumed_bytes,
    });

    // The receiver speaks only at the end (ACK) or to give up (ERROR): keep one read pending
    // through the whole data phase and stop early if it answers first.
    let watch = wire::read_frame(&mut rd, &[Frame::Ack]);
    tokio::pin!(watch);
    let data = async {
        match stream_name {
            Some(name) => send_stream(&mut wr, manifest, &name, reporter, &mut summary, stop).await,
            None => send_files(&mut wr, jobs, total, reporter, &mut summary, stop).await,
        }
    };
    // The data phase stops itself between frames; should a frame take longer than the grace
    // to go out (a receiver that does not read), it is dropped mid-frame and nothing is said.
    let mut mid_frame = false;
    let outcome = tokio::select! {
        // The receiver's word first: a receiver that stops writes its ERROR and then closes,
        // and its reason matters more than our broken write.
        biased;
        early = &mut watch => Err(match early {
            Ok(_) => TransferError::Protocol("receiver acknowledged before the end".into()),
            Err(e) => e,
        }),
        r = data => match r {
            Err(e @ (TransferError::PeerClosed | TransferError::Connection(_))) => {
                // Its ERROR may be just behind the close.
                match tokio::time::timeout(std::time::Duration::from_millis(500), &mut watch).await {
                    Ok(Err(said @ (TransferError::PeerStopped | TransferError::PeerError(_)))) => {
                        Err(said)
                    }
                    _ => Err(e),
                }
            }
            r => r,
        },
        () = async {
            stop.requested().await;
            tokio::time::sleep(STOP_GRACE).await;
        } => {
            mid_frame = true;
            Err(TransferError::Stopped)
        }
    };
    if let Err(e) = outcome {
        if !mid_frame && !e.peer_ended() {
            let text = e.peer_text("the sender could not read its files");
            refuse(&mut wr, Frame::Error, &text).await;
        }
        return Err(e);
    }
    wire::write_frame(&mut wr, Frame::Done, &[]).await?;
    wr.flush().await.map_err(TransferError::conn)?;
    tokio::select! {
        r = watch => { r?; }
        () = stop.requested() => return Err(stopped(&mut wr).await),
    }
    let _ = wr.shutdown().await;
    reporter.done(&DoneInfo {
        direction: Direction::Send,
        files: manifest.file_count() as u64,
        bytes_transferred: summary.bytes_sent,
        resumed_bytes: summary.resumed_bytes,
        elapsed: started.elapsed(),
    });
    Ok(summary)
}

/// Tell the receiver we stop; the error to return.
async fn stopped<W: AsyncWrite + Unpin>(wr: &mut W) -> TransferError {
    refuse(wr, Frame::Error, wire::STOPPED).await;
    TransferError::Stopped
}

async fn send_files<W: AsyncWrite + Unpin>(
    wr: &mut W,
    jobs: Vec<ReadJob>,
    total: u64,
    reporter: &dyn Reporter,
    summary: &mut SendSummary,
    stop: &Stop,
) -> Result<()> {
    let meta: Vec<(String, u64, u64)> = jobs
        .iter()
        .map(|j| (j.name.clone(), j.offset, j.size))
        .collect();
    // Read-ahead of two chunks: reading one takes a fraction of the time sending it does, and
    // each chunk held is a MiB of the sender's memory.
    let (tx, mut rx) = mpsc::channel(2);
    let (spare_tx, spare_rx) = std_mpsc::channel();
    let reader = tokio::task::spawn_blocking(move || read_files(jobs, tx, spare_rx));
    let mut done = summary.resumed_bytes;
    for (name, offset, size) in meta {
        reporter.file_start(&name, Some(size), offset);
        let mut file_bytes = offset;
        loop {
            let next = tokio::select! {
                biased;
                () = stop.requested() => return Err(TransferError::Stopped),
                c = rx.recv() => c,
            };
            match next {
                Some(Chunk::Data(buf)) => {
                    wire::write_frame(wr, Frame::Data, &buf).await?;
                    file_bytes += buf.len() as u64;
                    done += buf.len() as u64;
                    summary.bytes_sent += buf.len() as u64;
                    let _ = spare_tx.send(buf);
                    reporter.progress(&Progress {
                        name: &name,
                        file_bytes,
                        file_size: Some(size),
                        bytes: done,
                        total_bytes: Some(total),
                    });
                }
                Some(Chunk::End) => break,
                Some(Chunk::Failed(e)) => return Err(e),
                None => {
                    return Err(match reader.await {
                        Err(e) => TransferError::io("reading files", std::io::Error::other(e)),
                        Ok(()) => TransferError::Protocol("file reader stopped".into()),
                    });
                }
            }
        }
        wire::write_frame(wr, Frame::FileEnd, &[]).await?;
        summary.files_sent += 1;
        reporter.file_done(&name, size);
    }
    Ok(())
}

async fn send_stream<W: AsyncWrite + Unpin>(
    wr: &mut W,
    manifest: &Manifest,
    name: &str,
    reporter: &dyn Reporter,
    summary: &mut SendSummary,
    stop: &Stop,
) -> Result<()> {
    let mut src = manifest.take_stream()?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; CHUNK];
    let mut n = 0u64;
    reporter.file_start(name, None, 0);
    loop {
        let k = tokio::select! {
            biased;
            () = stop.requested() => return Err(TransferError::Stopped),
            k = src.read(&mut buf) => k.map_err(|e| TransferError::io("reading standard input", e))?,
        };
        if k == 0 {
            if tokio::time::timeout(STREAM_END_GRACE, stop.requested())
                .await
                .is_ok()
            {
                return Err(TransferError::Stopped);
            }
            break;
        }
        hasher.update(&buf[..k]);
        wire::write_frame(wr, Frame::Data, &buf[..k]).await?;
        n += k as u64;
        reporter.progress(&Progress {
            name,
            file_bytes: n,
            file_size: None,
            bytes: n,
            total_bytes: None,
        });
    }
    let end = wire::encode_stream_end(n, hasher.finalize().as_bytes());
    wire::write_frame(wr, Frame::FileEnd, &end).await?;
    summary.bytes_sent = n;
    summary.files_sent = 1;
    reporter.file_done(name, n);
    Ok(())
}
