//! The receiving side of yakk/2, and the safe writing of files shared with the yakk/1 fetch.
//!
//! Order of work, so that a refusal or an error writes nothing and the sender learns nothing of
//! the receiver's files: decode and check the offer (names, bounds: an offer that does not decode
//! is answered with ERROR) → ask the person (or `--yes`) → only then look at the disk: plan every
//! target path without writing (walking each existing component with `symlink_metadata`: a
//! symbolic link or a file where a folder should be stops the plan; an existing file is refused
//! unless `--overwrite`, or `--skip-identical` and it already has the offered content; a partial
//! file gives the resume offset) → create folders → accept with the offsets → receive. Every
//! refusal, whether the person said no or the plan failed, is the same REFUSE
//! ([`crate::wire::DECLINED`]); the reason is shown only here.
//!
//! Data goes to a partial file `.yakk-<hash>.part` next to its final name, through a blocking
//! writer thread fed by a bounded channel; the writer hashes as it writes and checks the BLAKE3
//! hash against the offer at each file's end. The yakk/2 receiver renames the partial files to
//! their final names together once the whole transfer arrived ([`commit`]), so that an
//! interrupted transfer leaves only partial files; the yakk/1 fetch renames its one file at once.
//! On disk full, permission denied, a broken connection or a stop the partial files stay, and the
//! next run resumes from their length (complete ones are only checked and renamed).
//!
//! The phases are here, the data phase in `data.rs`; what is decided before anything is written
//! is in `plan.rs`, and the writer thread with its partial files in `sink.rs`.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, BufWriter,
};

use crate::error::{Result, TransferError};
use crate::names::escape;
use crate::report::Reporter;
use crate::stop::Stop;
use crate::wire::{self, Frame, Offer, WireEntry, WireKind};

mod data;
mod direct;
mod plan;
mod sink;

use data::data_phase;

pub use plan::check_destination;
pub(crate) use plan::{Existing, FileTarget, make_dirs, plan_file};
use plan::{Plan, check_offer, commit, plan, single_file, target};
pub(crate) use sink::Sink;

/// Where received data goes.
pub enum Destination {
    /// Into this folder (created if missing).
    Dir(PathBuf),
    /// Into a writer (`--stdout`): the offer must be exactly one file; no resume.
    Writer(Box<dyn AsyncWrite + Send + Unpin>),
}

/// Asked once with the (escaped) summary of the offer; `true` accepts.
pub type Confirm = Box<dyn FnOnce(&OfferSummary) -> bool + Send>;

/// How to receive.
pub struct ReceiveOptions {
    /// Where the data goes.
    pub destination: Destination,
    /// Replace existing files.
    pub overwrite: bool,
    /// Keep an existing file that already has the offered content (same size and BLAKE3) and
    /// tell the sender it needs no data for it. Off by default: the sender then learns which
    /// files the receiver already had, and without it such a file is an existing file like any
    /// other (refused unless `overwrite`).
    pub skip_identical: bool,
    /// Ask before writing anything; `None` accepts (`--yes`). Runs on a blocking thread, so it may
    /// prompt on the terminal.
    pub confirm: Option<Confirm>,
}

impl ReceiveOptions {
    /// Receive into `dir`, no overwrite, no question.
    pub fn into_dir(dir: impl Into<PathBuf>) -> Self {
        Self {
            destination: Destination::Dir(dir.into()),
            overwrite: false,
            skip_identical: false,
            confirm: None,
        }
    }
}

/// What to do with files that exist already.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Policy {
    pub overwrite: bool,
    pub skip_identical: bool,
}

impl Policy {
    pub(crate) fn of(opts: &ReceiveOptions) -> Self {
        Self {
            overwrite: opts.overwrite,
            skip_identical: opts.skip_identical,
        }
    }
}

/// One entry of an offer, for showing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfferEntrySummary {
    /// The name, escaped for the terminal.
    pub name: String,
    /// Size, when known (files).
    pub size: Option<u64>,
    /// A folder.
    pub is_dir: bool,
}

/// Most entries listed in an [`OfferSummary`] (the counts cover all of them).
pub const MAX_SUMMARY_ENTRIES: usize = 1000;

/// What the sender offers, escaped, for the confirmation question.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OfferSummary {
    /// The entries, the first [`MAX_SUMMARY_ENTRIES`] of them.
    pub entries: Vec<OfferEntrySummary>,
    /// Number of files.
    pub files: u64,
    /// Number of folders.
    pub folders: u64,
    /// Sum of the file sizes (unknown parts, a stream, count 0).
    pub total_bytes: u64,
    /// The size is not known up front (standard input, or a yakk/1 sender without length).
    pub size_unknown: bool,
}

impl OfferSummary {
    /// The counts and the size, as both sides say them: "6 file(s) in 2 folder(s), 1.20 MiB",
    /// "1 file(s), unknown size".
    pub fn headline(&self) -> String {
        let mut s = format!("{} file(s)", self.files);
        if self.folders > 0 {
            s.push_str(&format!(" in {} folder(s)", self.folders));
        }
        if self.size_unknown {
            s.push_str(", unknown size");
        } else {
            s.push_str(&format!(", {}", indicatif::HumanBytes(self.total_bytes)));
        }
        s
    }
}

impl std::fmt::Display for OfferSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}:", self.headline())?;
        const SHOWN: usize = 20;
        for e in self.entries.iter().take(SHOWN) {
            match (e.is_dir, e.size) {
                (true, _) => writeln!(f, "  {}/", e.name)?,
                (false, Some(s)) => writeln!(f, "  {} ({})", e.name, indicatif::HumanBytes(s))?,
                (false, None) => writeln!(f, "  {} (unknown size)", e.name)?,
            }
        }
        let all = (self.files + self.folders) as usize;
        if all > SHOWN {
            writeln!(f, "  … and {} more", all - SHOWN)?;
        }
        Ok(())
    }
}

/// What one [`receive`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReceiveSummary {
    /// Files completed in this run (received, or finished from a complete partial).
    pub files_received: u64,
    /// Files that were already here, complete and identical.
    pub files_skipped: u64,
    /// File bytes received in this run.
    pub bytes_received: u64,
    /// Bytes that were already here (partial files, identical files).
    pub resumed_bytes: u64,
    /// Top-level paths written (empty with `--stdout`).
    pub paths: Vec<PathBuf>,
}

impl ReceiveSummary {
    /// Files of the offer now here complete (all of them): what both sides count.
    pub fn files(&self) -> u64 {
        self.files_received + self.files_skipped
    }
}

/// What the receiver tells the sender when it fails on its own side: nothing more.
const LOCAL_FAILURE: &str = "the receiver could not save the files";

/// Receive what the sender on `stream` offers (yakk/2).
pub async fn receive<S>(
    stream: S,
    opts: ReceiveOptions,
    reporter: &dyn Reporter,
) -> Result<ReceiveSummary>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    receive_until(stream, opts, reporter, &Stop::never()).await
}

/// Resolves when the peer speaks (or goes away) while we are busy on our side (asking the
/// person, planning): all it may say then is ERROR. The error to stop with.
async fn peer_interrupts<R: AsyncBufRead + Unpin>(rd: &mut R) -> TransferError {
    match rd.fill_buf().await {
        Err(e) => TransferError::conn(e),
        Ok([]) => TransferError::PeerClosed,
        Ok(_) => match wire::read_frame(rd, &[]).await {
            Err(e) => e,
            Ok((t, _)) => TransferError::Protocol(format!("unexpected {t:?} frame")),
        },
    }
}

/// Run `work` (our side's business) while watching `stop` and the peer.
async fn meanwhile<T, R, W>(
    work: impl std::future::Future<Output = Result<T>>,
    rd: &mut R,
    wr: &mut W,
    stop: &Stop,
) -> Result<T>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    tokio::select! {
        r = work => r,
        () = stop.requested() => {
            refuse(wr, Frame::Error, wire::STOPPED).await;
            Err(TransferError::Stopped)
        }
        e = peer_interrupts(rd) => Err(e),
    }
}

/// [`receive`], until `stop` fires: then the data already on disk stays for a resume (a
/// stream's goes), the sender is told (ERROR [`wire::STOPPED`]) and the result is
/// [`TransferError::Stopped`]. While the person is asked, the sender may stop too
/// ([`TransferError::PeerStopped`]): the question is then abandoned.
pub async fn receive_until<S>(
    stream: S,
    opts: ReceiveOptions,
    reporter: &dyn Reporter,
    stop: &Stop,
) -> Result<ReceiveSummary>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (rd, wr) = tokio::io::split(stream);
    let mut rd = BufReader::with_capacity(64 << 10, rd);
    let mut wr = BufWriter::with_capacity(16 << 10, wr);

    wire::write_frame(&mut wr, Frame::Hello, &wire::encode_hello()).await?;
    wr.flush().await.map_err(TransferError::conn)?;
    let (_, p) = tokio::select! {
        r = wire::read_frame(&mut rd, &[Frame::Offer]) => r.map_err(|e| wire::first_frame(e, "was the code made by another command than `yakk filesend`?"))?,
        () = stop.requested() => {
            refuse(&mut wr, Frame::Error, wire::STOPPED).await;
            return Err(TransferError::Stopped);
        }
    };
    let offer = match wire::decode_offer(&p).and_then(|o| check_offer(&o).map(|()| o)) {
        Ok(o) => o,
        Err(e) => {
            refuse(&mut wr, Frame::Error, &e.peer_text(LOCAL_FAILURE)).await;
            return Err(e);
        }
    };
    drop(p);
    let offer = std::sync::Arc::new(offer);
    let offer_summary = summarize(&offer);
    if let Destination::Writer(_) = opts.destination
        && let Err(e) = single_file(&offer, &offer_summary)
    {
        refuse(&mut wr, Frame::Refuse, wire::DECLINED).await;
        return Err(e);
    }

    // Ask first: nothing of this machine's files is looked at before the answer, so neither a
    // refusal nor its timing depends on them.
    let policy = Policy::of(&opts);
    if let Some(confirm) = opts.confirm {
        // On a blocking thread: a question abandoned (stop, or the sender gone) is left to the
        // process's end.
        let question = async {
            tokio::task::spawn_blocking(move || confirm(&offer_summary))
                .await
                .map_err(|e| TransferError::io("asking for confirmation", std::io::Error::other(e)))
        };
        let yes = meanwhile(question, &mut rd, &mut wr, stop).await?;
        if !yes {
            refuse(&mut wr, Frame::Refuse, wire::DECLINED).await;
            return Err(TransferError::Declined);
        }
    }

    let planned = match &opts.destination {
        Destination::Dir(out) => {
            let (offer, out) = (offer.clone(), out.clone());
            let planning = async {
                tokio::task::spawn_blocking(move || plan(&offer, &out, policy))
                    .await
                    .map_err(|e| {
                        TransferError::io("looking at the target folder", std::io::Error::other(e))
                    })
                    .and_then(|r| r)
            };
            match meanwhile(async { Ok(planning.await) }, &mut rd, &mut wr, stop).await {
                Ok(planned) => planned,
                Err(e) => return Err(e),
            }
        }
        Destination::Writer(_) => Ok(Plan::to_writer()),
    };
    let Plan {
        mut summary,
        jobs,
        finish_only,
        dirs,
        offsets,
        rename,
        stream_stem,
    } = match planned {
        Ok(x) => x,
        Err(e) => {
            refuse(&mut wr, Frame::Refuse, wire::DECLINED).await;
            return Err(e);
        }
    };

    let out = match &opts.destination {
        Destination::Dir(out) => Some(out.clone()),
        Destination::Writer(_) => None,
    };
    let out = out.as_deref();
    let mut sink = match opts.destination {
        Destination::Dir(ref out) => {
            // The destination itself first: an offer of plain files has no folder entries.
            let made = make_dirs(out, &[]).and_then(|()| {
                dirs.iter().try_for_each(|d| {
                    let parts: Vec<&str> = d.split('/').collect();
                    make_dirs(out, &parts)
                })
            });
            if let Err(e) = made {
                refuse(&mut wr, Frame::Refuse, wire::DECLINED).await;
                return Err(e);
            }
            let mut seen = std::collections::HashSet::new();
            for e in &offer.entries {
                let top = e.name.split('/').next().unwrap_or_default();
                if seen.insert(top) {
                    summary.paths.push(out.join(top));
                }
            }
            Sink::disk_deferred()
        }
        Destination::Writer(w) => Sink::writer(w),
    };

    let result = async {
        // Complete partial files (and empty files) need no data: finish them first.
        for j in finish_only {
            let t = target(out, &offer.entries[j.idx], j.offset, &stream_stem);
            sink.begin(t).await?;
            sink.end(None).await?;
            summary.files_received += 1;
        }
        wire::write_frame(&mut wr, Frame::Accept, &wire::encode_accept(&offsets)).await?;
        wr.flush().await.map_err(TransferError::conn)?;
        let targets = jobs.into_iter().map(|j| {
            (
                j.idx,
                target(out, &offer.entries[j.idx], j.offset, &stream_stem),
            )
        });
        // A stop drops the data phase wherever it is: what reached the writer stays on disk.
        let done = tokio::select! {
            biased;
            () = stop.requested() => Err(TransferError::Stopped),
            d = data_phase(&mut rd, &mut sink, targets, &offer, reporter, &mut summary) => d,
        }?;
        sink.finish().await?;
        // All arrived and checked: the files take their final names together, so that an
        // interrupted transfer leaves only partial files, which the next one resumes (complete
        // ones included) without mistaking them for files that were here before.
        if let Some(out) = out {
            let (out, offer) = (out.to_owned(), offer.clone());
            let stem = stream_stem.clone();
            tokio::task::spawn_blocking(move || commit(&out, &offer, &rename, &stem))
                .await
                .map_err(|e| TransferError::io("renaming the files", std::io::Error::other(e)))??;
        }
        reporter.done(&done);
        Ok(())
    }
    .await;
    match result {
        Ok(()) => {
            wire::write_frame(&mut wr, Frame::Ack, &[]).await?;
            wr.flush().await.map_err(TransferError::conn)?;
            let _ = wr.shutdown().await;
            Ok(summary)
        }
        Err(e) => {
            // Whatever failed, make sure queued data is on disk (resume) before returning.
            let first = sink.finish().await.err();
            let e = match (e, first) {
                (TransferError::PeerClosed, Some(disk)) => disk,
                (e, _) => e,
            };
            // A stream cannot be resumed: nothing of it stays, even complete but not renamed.
            if let (
                Some(out),
                [
                    entry @ WireEntry {
                        kind: WireKind::Stream,
                        ..
                    },
                ],
            ) = (out, offer.entries.as_slice())
            {
                let _ = fs::remove_file(target(Some(out), entry, 0, &stream_stem).partial);
            }
            if !e.peer_ended() {
                refuse(&mut wr, Frame::Error, &e.peer_text(LOCAL_FAILURE)).await;
            }
            Err(e)
        }
    }
}

/// The offer, escaped and counted, for the question (and for the sender's own words).
pub(crate) fn summarize(offer: &Offer) -> OfferSummary {
    let mut os = OfferSummary::default();
    for e in &offer.entries {
        let (size, is_dir) = match e.kind {
            WireKind::Dir => (None, true),
            WireKind::File { size, .. } => (Some(size), false),
            WireKind::Stream => (None, false),
        };
        if os.entries.len() < MAX_SUMMARY_ENTRIES {
            os.entries.push(OfferEntrySummary {
                name: escape(&e.name),
                size,
                is_dir,
            });
        }
        if is_dir {
            os.folders += 1;
        } else {
            os.files += 1;
        }
        os.total_bytes += size.unwrap_or(0);
        os.size_unknown |= e.kind == WireKind::Stream;
    }
    os
}

/// Tell the peer we stop (best effort, bounded in time).
pub(crate) async fn refuse<W: AsyncWrite + Unpin>(wr: &mut W, t: Frame, why: &str) {
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = wire::write_frame(wr, t, &wire::encode_text(why)).await;
        let _ = wr.flush().await;
        let _ = wr.shutdown().await;
    })
    .await;
}
