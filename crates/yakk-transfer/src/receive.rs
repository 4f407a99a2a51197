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

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
    BufWriter,
};
use tokio::sync::mpsc;

use crate::error::{Result, TransferError};
use crate::names::{self, escape};
use crate::report::{Direction, DoneInfo, Progress, Reporter, StartInfo};
use crate::stop::Stop;
use crate::wire::{self, Frame, Hash, Offer, WireEntry, WireKind};

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

/// Where one file goes, decided before anything is written.
pub(crate) struct FileTarget {
    /// Escaped name for messages.
    pub shown: String,
    pub final_path: PathBuf,
    pub partial: PathBuf,
    /// Bytes already in the partial file.
    pub offset: u64,
    /// Keep the partial file on failure (resumable).
    pub keep_partial: bool,
    /// Expected BLAKE3 (None: a stream, checked against its trailer; or yakk/1, unchecked).
    pub expected: Option<Hash>,
}

/// What exists at a path.
enum Found {
    Nothing,
    File(fs::Metadata),
    Dir,
}

/// Look at `out/parts…` without following links; parents must be real folders.
fn inspect(out: &Path, parts: &[&str]) -> Result<(PathBuf, Found)> {
    let mut cur = out.to_path_buf();
    let mut missing = match fs::symlink_metadata(out) {
        Ok(m) if m.is_dir() || m.file_type().is_symlink() && out.is_dir() => false,
        Ok(_) => return Err(TransferError::NotAFolder(escape(&out.to_string_lossy()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => {
            return Err(TransferError::io(
                format!("looking at {}", escape(&out.to_string_lossy())),
                e,
            ));
        }
    };
    for (i, part) in parts.iter().enumerate() {
        cur.push(part);
        if missing {
            continue;
        }
        let shown = || escape(&parts[..=i].join("/"));
        let last = i + 1 == parts.len();
        match fs::symlink_metadata(&cur) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => missing = true,
            Err(e) => return Err(TransferError::io(format!("looking at {}", shown()), e)),
            Ok(m) if m.file_type().is_symlink() => return Err(TransferError::Symlink(shown())),
            Ok(m) if m.is_dir() => {
                if last {
                    return Ok((cur, Found::Dir));
                }
            }
            Ok(m) => {
                if last && m.is_file() {
                    return Ok((cur, Found::File(m)));
                }
                if last {
                    // A device, socket or pipe: never opened (reading a pipe would block).
                    return Err(TransferError::io(
                        format!("{} exists and is not a regular file", shown()),
                        std::io::ErrorKind::AlreadyExists.into(),
                    ));
                }
                return Err(TransferError::NotAFolder(shown()));
            }
        }
    }
    Ok((cur, Found::Nothing))
}

fn hex(h: &[u8]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// True for names yakk uses for its own partial files.
pub(crate) fn is_partial_name(n: &str) -> bool {
    n.starts_with(".yakk-") && n.ends_with(".part")
}

/// What planning found at a file's final path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Existing {
    /// Nothing there, or a file `--overwrite` replaces.
    Free,
    /// A file with the offered content, kept (`--skip-identical`).
    Identical,
    /// A file that stops the transfer (neither `--overwrite` nor an identical file skipped).
    Conflict,
}

/// Plan a file target for `name` (checked), size `size`, hash `expected`.
pub(crate) fn plan_file(
    out: &Path,
    name: &str,
    size: Option<u64>,
    expected: Option<Hash>,
    policy: Policy,
    partial_stem: &str,
    resumable: bool,
) -> Result<(FileTarget, Existing)> {
    let parts = names::validate(name)?;
    let shown = escape(name);
    let (final_path, found) = inspect(out, &parts)?;
    let mut existing = Existing::Free;
    match found {
        Found::Nothing => {}
        Found::Dir => return Err(TransferError::ExistsAsFolder(shown)),
        Found::File(m) => {
            // Hashed only when asked to: reading a file the sender named is nobody's business
            // otherwise.
            if policy.skip_identical
                && let (Some(size), Some(h)) = (size, expected)
                && m.len() == size
            {
                let (_, have) = crate::manifest::hash_file(&final_path)
                    .map_err(|e| TransferError::io(format!("reading {shown}"), e))?;
                if have == h {
                    existing = Existing::Identical;
                }
            }
            if existing == Existing::Free && !policy.overwrite {
                existing = Existing::Conflict;
            }
        }
    }
    let already = existing == Existing::Identical;
    let partial = final_path.with_file_name(format!(".yakk-{partial_stem}.part"));
    let mut offset = 0;
    if resumable && !already {
        match fs::symlink_metadata(&partial) {
            Ok(m) if m.file_type().is_symlink() || !m.is_file() => {
                return Err(TransferError::Symlink(escape(&partial.to_string_lossy())));
            }
            Ok(m) if Some(m.len()) <= size => offset = m.len(),
            _ => {}
        }
    }
    Ok((
        FileTarget {
            shown,
            final_path,
            partial,
            offset,
            keep_partial: resumable,
            expected,
        },
        existing,
    ))
}

/// "a, b, c and 4 more" (escaped names) for the files that are in the way.
fn conflict_list(names: &[String], count: usize) -> String {
    let mut s = names.join(", ");
    if count > names.len() {
        s.push_str(&format!(" and {} more", count - names.len()));
    }
    s
}

/// Create `out/parts…` folder by folder, refusing links and files on the way.
pub(crate) fn make_dirs(out: &Path, parts: &[&str]) -> Result<()> {
    fs::create_dir_all(out)
        .map_err(|e| TransferError::write(e, &escape(&out.to_string_lossy())))?;
    let mut cur = out.to_path_buf();
    for (i, part) in parts.iter().enumerate() {
        cur.push(part);
        let shown = || escape(&parts[..=i].join("/"));
        match fs::create_dir(&cur) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let m = fs::symlink_metadata(&cur)
                    .map_err(|e| TransferError::io(format!("looking at {}", shown()), e))?;
                if m.file_type().is_symlink() {
                    return Err(TransferError::Symlink(shown()));
                }
                if !m.is_dir() {
                    return Err(TransferError::NotAFolder(shown()));
                }
            }
            Err(e) => return Err(TransferError::write(e, &shown())),
        }
    }
    Ok(())
}

/// Commands to the disk writer thread.
pub(crate) enum Cmd {
    Begin(FileTarget),
    Data(Vec<u8>),
    /// The current file is complete; a stream brings its size and hash.
    End(Option<(u64, Hash)>),
}

struct Open {
    t: FileTarget,
    file: fs::File,
    hasher: blake3::Hasher,
    written: u64,
}

fn open_partial(t: &FileTarget) -> std::io::Result<fs::File> {
    let mut o = fs::OpenOptions::new();
    o.read(true).write(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.custom_flags(libc::O_NOFOLLOW);
    }
    o.open(&t.partial)
}

impl Open {
    fn begin(t: FileTarget) -> Result<Self> {
        let mut file = open_partial(&t).map_err(|e| TransferError::write(e, &t.shown))?;
        let len = file
            .metadata()
            .map_err(|e| TransferError::write(e, &t.shown))?
            .len();
        if len < t.offset {
            return Err(TransferError::io(
                format!("resuming {}", t.shown),
                std::io::Error::other("the partial file shrank while yakk was running"),
            ));
        }
        if len > t.offset {
            file.set_len(t.offset)
                .map_err(|e| TransferError::write(e, &t.shown))?;
        }
        // Resume: the hash covers the whole file, so the bytes already here go in first.
        let mut hasher = blake3::Hasher::new();
        if t.offset > 0 {
            let mut buf = vec![0u8; 1 << 20];
            let mut left = t.offset;
            while left > 0 {
                let want = (left as usize).min(buf.len());
                file.read_exact(&mut buf[..want])
                    .map_err(|e| TransferError::io(format!("reading {}", t.shown), e))?;
                hasher.update(&buf[..want]);
                left -= want as u64;
            }
        }
        file.seek(SeekFrom::Start(t.offset))
            .map_err(|e| TransferError::write(e, &t.shown))?;
        Ok(Self {
            written: t.offset,
            t,
            file,
            hasher,
        })
    }

    /// Check the file; rename it to its final name unless `defer` (the caller renames every
    /// file at the end of the transfer, [`commit`]).
    fn end(mut self, trailer: Option<(u64, Hash)>, defer: bool) -> Result<()> {
        let got = *self.hasher.finalize().as_bytes();
        let want = match (self.t.expected, trailer) {
            (Some(h), _) => Some(h),
            (None, Some((size, h))) => {
                if size != self.written {
                    self.discard();
                    return Err(TransferError::SizeMismatch {
                        name: self.t.shown.clone(),
                        what: if size > self.written { "less" } else { "more" },
                        declared: size,
                    });
                }
                Some(h)
            }
            (None, None) => None,
        };
        if want.is_some_and(|w| w != got) {
            self.discard();
            return Err(TransferError::HashMismatch(self.t.shown.clone()));
        }
        self.file
            .flush()
            .map_err(|e| TransferError::write(e, &self.t.shown))?;
        drop(self.file);
        if defer {
            return Ok(());
        }
        fs::rename(&self.t.partial, &self.t.final_path)
            .map_err(|e| TransferError::write(e, &self.t.shown))
    }

    fn discard(&self) {
        let _ = fs::remove_file(&self.t.partial);
    }
}

/// The writer thread: runs `cmds` until the channel closes or an error.
pub(crate) fn write_files(
    mut cmds: mpsc::Receiver<Cmd>,
    spare: std_mpsc::Sender<Vec<u8>>,
    defer_rename: bool,
) -> Result<()> {
    let mut cur: Option<Open> = None;
    let result = (|| {
        while let Some(cmd) = cmds.blocking_recv() {
            match cmd {
                Cmd::Begin(t) => cur = Some(Open::begin(t)?),
                Cmd::Data(buf) => {
                    let o = cur.as_mut().expect("data after begin");
                    o.file
                        .write_all(&buf)
                        .map_err(|e| TransferError::write(e, &o.t.shown))?;
                    o.hasher.update(&buf);
                    o.written += buf.len() as u64;
                    let _ = spare.send(buf);
                }
                Cmd::End(trailer) => cur
                    .take()
                    .expect("end after begin")
                    .end(trailer, defer_rename)?,
            }
        }
        Ok(())
    })();
    // An unfinished file: keep it for resume, or drop it when it cannot be resumed.
    if let Some(o) = cur
        && !o.t.keep_partial
    {
        o.discard();
    }
    result
}

/// Where the bytes of the transfer go.
pub(crate) enum Sink {
    Disk {
        tx: Option<mpsc::Sender<Cmd>>,
        worker: Option<tokio::task::JoinHandle<Result<()>>>,
        spare: std_mpsc::Receiver<Vec<u8>>,
    },
    Writer {
        w: BufWriter<Box<dyn AsyncWrite + Send + Unpin>>,
        hasher: Box<blake3::Hasher>,
        expected: Option<Hash>,
        n: u64,
        shown: String,
    },
}

impl Sink {
    /// Files to disk, each renamed to its final name as soon as it is complete and checked.
    pub(crate) fn disk() -> Self {
        Self::disk_with(false)
    }

    /// Files to disk, checked as they complete but left under their partial names: the caller
    /// renames them all at the end ([`commit`]).
    fn disk_deferred() -> Self {
        Self::disk_with(true)
    }

    fn disk_with(defer_rename: bool) -> Self {
        let (tx, rx) = mpsc::channel(4);
        let (spare_tx, spare) = std_mpsc::channel();
        let worker = tokio::task::spawn_blocking(move || write_files(rx, spare_tx, defer_rename));
        Sink::Disk {
            tx: Some(tx),
            worker: Some(worker),
            spare,
        }
    }

    pub(crate) fn writer(w: Box<dyn AsyncWrite + Send + Unpin>) -> Self {
        Sink::Writer {
            w: BufWriter::with_capacity(256 << 10, w),
            hasher: Box::new(blake3::Hasher::new()),
            expected: None,
            n: 0,
            shown: String::new(),
        }
    }

    /// A buffer of `len` bytes, recycled when possible.
    pub(crate) fn buffer(&mut self, len: usize) -> Vec<u8> {
        let mut b = match self {
            Sink::Disk { spare, .. } => spare.try_recv().unwrap_or_default(),
            Sink::Writer { .. } => Vec::new(),
        };
        b.resize(len, 0);
        b
    }

    async fn cmd(&mut self, c: Cmd) -> Result<()> {
        let Sink::Disk { tx, .. } = self else {
            unreachable!("disk command on a writer sink")
        };
        if tx.as_ref().expect("open").send(c).await.is_err() {
            // The writer stopped on an error: finish() reports it.
            return Err(self
                .finish()
                .await
                .err()
                .unwrap_or_else(|| TransferError::Protocol("file writer stopped".into())));
        }
        Ok(())
    }

    pub(crate) async fn begin(&mut self, t: FileTarget) -> Result<()> {
        match self {
            Sink::Disk { .. } => self.cmd(Cmd::Begin(t)).await,
            Sink::Writer {
                hasher,
                expected,
                n,
                shown,
                ..
            } => {
                **hasher = blake3::Hasher::new();
                *expected = t.expected;
                *n = 0;
                *shown = t.shown;
                Ok(())
            }
        }
    }

    pub(crate) async fn data(&mut self, buf: Vec<u8>) -> Result<()> {
        match self {
            Sink::Disk { .. } => self.cmd(Cmd::Data(buf)).await,
            Sink::Writer { w, hasher, n, .. } => {
                hasher.update(&buf);
                *n += buf.len() as u64;
                w.write_all(&buf)
                    .await
                    .map_err(|e| TransferError::io("writing to standard output", e))
            }
        }
    }

    pub(crate) async fn end(&mut self, trailer: Option<(u64, Hash)>) -> Result<()> {
        match self {
            Sink::Disk { .. } => self.cmd(Cmd::End(trailer)).await,
            Sink::Writer {
                w,
                hasher,
                expected,
                n,
                shown,
            } => {
                w.flush()
                    .await
                    .map_err(|e| TransferError::io("writing to standard output", e))?;
                let want = match (*expected, trailer) {
                    (Some(h), _) => Some(h),
                    (None, Some((size, h))) => {
                        if size != *n {
                            return Err(TransferError::SizeMismatch {
                                name: shown.clone(),
                                what: if size > *n { "less" } else { "more" },
                                declared: size,
                            });
                        }
                        Some(h)
                    }
                    (None, None) => None,
                };
                if want.is_some_and(|h| &h != hasher.finalize().as_bytes()) {
                    return Err(TransferError::HashMismatch(shown.clone()));
                }
                Ok(())
            }
        }
    }

    /// Wait until everything queued is on disk; the first error of the writer.
    pub(crate) async fn finish(&mut self) -> Result<()> {
        match self {
            Sink::Disk { tx, worker, .. } => {
                tx.take();
                match worker.take() {
                    Some(w) => w.await.map_err(|e| {
                        TransferError::io("writing files", std::io::Error::other(e))
                    })?,
                    None => Ok(()),
                }
            }
            Sink::Writer { w, .. } => w
                .flush()
                .await
                .map_err(|e| TransferError::io("writing to standard output", e)),
        }
    }
}

/// A file of the offer that needs work: its index and the bytes already here. Kept this small
/// (paths are rebuilt when the file starts) so that a large offer costs little memory.
struct Job {
    idx: usize,
    offset: u64,
}

/// Where entry `e` goes, once planned (checked) with `offset` bytes already held.
fn target(out: Option<&Path>, e: &WireEntry, offset: u64, stream_stem: &str) -> FileTarget {
    let (expected, stem) = match &e.kind {
        WireKind::File { hash, .. } => (Some(*hash), partial_stem(&e.name, hash)),
        _ => (None, stream_stem.to_owned()),
    };
    let (final_path, partial) = match out {
        Some(out) => {
            let mut f = out.to_path_buf();
            f.extend(e.name.split('/'));
            let partial = f.with_file_name(format!(".yakk-{stem}.part"));
            (f, partial)
        }
        None => (PathBuf::new(), PathBuf::new()),
    };
    FileTarget {
        shown: escape(&e.name),
        final_path,
        partial,
        offset,
        keep_partial: out.is_some() && expected.is_some(),
        expected,
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
        r = wire::read_frame(&mut rd, &[Frame::Offer]) => r?,
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

/// The decisions taken before anything is written.
struct Plan {
    summary: ReceiveSummary,
    /// Files that need data, in offer order.
    jobs: Vec<Job>,
    /// Files complete in their partial file (or empty): verify and rename only.
    finish_only: Vec<Job>,
    /// Folders to create (declared ones and parents of files), each once.
    dirs: Vec<String>,
    /// The ACCEPT: bytes already held per entry.
    offsets: Vec<u64>,
    /// Entries whose partial file takes the final name at the end (all files but those kept
    /// as identical).
    rename: Vec<bool>,
    /// Partial-file stem of a stream entry (no resume: unique per run).
    stream_stem: String,
}

impl Plan {
    /// `--stdout`: the single file of the offer (checked by [`single_file`]), from its start.
    fn to_writer() -> Self {
        Plan {
            summary: ReceiveSummary::default(),
            jobs: vec![Job { idx: 0, offset: 0 }],
            finish_only: Vec::new(),
            dirs: Vec::new(),
            offsets: vec![0],
            rename: vec![false],
            stream_stem: String::new(),
        }
    }
}

fn partial_stem(name: &str, hash: &Hash) -> String {
    let mut h = blake3::Hasher::new();
    h.update(name.as_bytes());
    h.update(&[0]);
    h.update(hash);
    hex(&h.finalize().as_bytes()[..16])
}

/// What the offer alone says is wrong (no disk involved): names reserved for partial files.
fn check_offer(offer: &Offer) -> Result<()> {
    for e in &offer.entries {
        let last = e.name.rsplit('/').next().unwrap_or_default();
        if is_partial_name(last) {
            return Err(TransferError::UnsafeName {
                name: escape(&e.name),
                reason: "reserved for yakk's partial files",
            });
        }
    }
    Ok(())
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

/// `--stdout` takes exactly one file (or stream).
fn single_file(offer: &Offer, summary: &OfferSummary) -> Result<()> {
    match offer.entries.as_slice() {
        [e] if e.kind != WireKind::Dir => Ok(()),
        _ => Err(TransferError::StdoutSingleFile(summary.headline())),
    }
}

/// Decide every target in `out` before writing anything (after the person accepted).
fn plan(offer: &Offer, out: &Path, policy: Policy) -> Result<Plan> {
    let mut summary = ReceiveSummary::default();
    let mut jobs = Vec::new();
    let mut finish_only = Vec::new();
    let mut dirs = Vec::new();
    let mut dir_seen = std::collections::HashSet::new();
    let mut add_dir = |d: &str, dirs: &mut Vec<String>| {
        if dir_seen.insert(d.to_owned()) {
            dirs.push(d.to_owned());
        }
    };
    let mut offsets = vec![0u64; offer.entries.len()];
    let mut rename = vec![false; offer.entries.len()];
    let mut stream_stem = String::new();
    // Files in the way: all of them are named in the one error, a few by name.
    const NAMED: usize = 5;
    let mut conflicts = Vec::new();
    let mut conflict_count = 0;
    let mut conflict = |name: &str| {
        conflict_count += 1;
        if conflicts.len() < NAMED {
            conflicts.push(escape(name));
        }
    };
    for (i, e) in offer.entries.iter().enumerate() {
        match e.kind {
            WireKind::Dir => {
                let parts = names::validate(&e.name)?;
                match inspect(out, &parts)?.1 {
                    Found::File(_) => {
                        return Err(TransferError::NotAFolder(escape(&e.name)));
                    }
                    Found::Dir | Found::Nothing => add_dir(&e.name, &mut dirs),
                }
            }
            WireKind::File { size, hash } => {
                let (t, existing) = plan_file(
                    out,
                    &e.name,
                    Some(size),
                    Some(hash),
                    policy,
                    &partial_stem(&e.name, &hash),
                    true,
                )?;
                if let Some((parent, _)) = e.name.rsplit_once('/') {
                    add_dir(parent, &mut dirs);
                }
                match existing {
                    Existing::Conflict => {
                        conflict(&e.name);
                        continue;
                    }
                    Existing::Identical => {
                        summary.files_skipped += 1;
                        summary.resumed_bytes += size;
                        offsets[i] = size;
                        continue;
                    }
                    Existing::Free => {}
                }
                summary.resumed_bytes += t.offset;
                offsets[i] = t.offset;
                rename[i] = true;
                let job = Job {
                    idx: i,
                    offset: t.offset,
                };
                if t.offset == size {
                    finish_only.push(job);
                } else {
                    jobs.push(job);
                }
            }
            WireKind::Stream => {
                stream_stem = format!(
                    "stream-{}-{}",
                    std::process::id(),
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_nanos()
                );
                let (_, existing) =
                    plan_file(out, &e.name, None, None, policy, &stream_stem, false)?;
                if existing == Existing::Conflict {
                    conflict(&e.name);
                    continue;
                }
                if let Some((parent, _)) = e.name.rsplit_once('/') {
                    add_dir(parent, &mut dirs);
                }
                rename[i] = true;
                jobs.push(Job { idx: i, offset: 0 });
            }
        }
    }
    if conflict_count > 0 {
        return Err(TransferError::FileExists(conflict_list(
            &conflicts,
            conflict_count,
        )));
    }
    Ok(Plan {
        summary,
        jobs,
        finish_only,
        dirs,
        offsets,
        rename,
        stream_stem,
    })
}

/// Give every received file its final name (the transfer is complete and every file checked).
fn commit(out: &Path, offer: &Offer, rename: &[bool], stream_stem: &str) -> Result<()> {
    for (e, _) in offer.entries.iter().zip(rename).filter(|(_, r)| **r) {
        let t = target(Some(out), e, 0, stream_stem);
        fs::rename(&t.partial, &t.final_path).map_err(|err| TransferError::write(err, &t.shown))?;
    }
    Ok(())
}

/// Read DATA / FILE_END for each job in order, then DONE; the figures for the `done` report
/// (made once the files have their final names).
async fn data_phase<R: AsyncRead + Unpin>(
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

/// Tell the peer we stop (best effort, bounded in time).
pub(crate) async fn refuse<W: AsyncWrite + Unpin>(wr: &mut W, t: Frame, why: &str) {
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = wire::write_frame(wr, t, &wire::encode_text(why)).await;
        let _ = wr.flush().await;
        let _ = wr.shutdown().await;
    })
    .await;
}
