//! The receiving side of yakk/2, and the safe writing of files shared with the yakk/1 fetch.
//!
//! Order of work, so that a refusal or an error writes nothing: decode and check the offer
//! (names, bounds) → plan every target path without touching the disk (walking each existing
//! component with `symlink_metadata`: a symbolic link or a file where a folder should be stops
//! the plan; an existing file is an error unless it already has the offered content or
//! `--overwrite` was given; a partial file gives the resume offset) → ask the person → create
//! folders → accept with the offsets → receive.
//!
//! Data goes to a partial file `.yakk-<hash>.part` next to its final name, through a blocking
//! writer thread fed by a bounded channel; the writer hashes as it writes and renames the partial
//! to the final name only when the BLAKE3 hash matches the offer. On disk full, permission denied
//! or a broken connection the partial file stays, and the next run resumes from its length.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::mpsc;

use crate::error::{Result, TransferError};
use crate::names::{self, escape};
use crate::report::{Direction, DoneInfo, Progress, Reporter, StartInfo};
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
    /// Replace existing files that differ from the offered ones.
    pub overwrite: bool,
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
            confirm: None,
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
    /// Bytes already here from an earlier, interrupted run.
    pub resumed_bytes: u64,
    /// The size is not known up front (standard input, or a yakk/1 sender without length).
    pub size_unknown: bool,
}

impl std::fmt::Display for OfferSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} file(s)", self.files)?;
        if self.folders > 0 {
            write!(f, " in {} folder(s)", self.folders)?;
        }
        if self.size_unknown {
            write!(f, ", size unknown")?;
        } else {
            write!(f, ", {}", indicatif::HumanBytes(self.total_bytes))?;
        }
        if self.resumed_bytes > 0 {
            write!(
                f,
                " ({} already here, resuming)",
                indicatif::HumanBytes(self.resumed_bytes)
            )?;
        }
        writeln!(f, ":")?;
        const SHOWN: usize = 20;
        for e in self.entries.iter().take(SHOWN) {
            match (e.is_dir, e.size) {
                (true, _) => writeln!(f, "  {}/", e.name)?,
                (false, Some(s)) => writeln!(f, "  {} ({})", e.name, indicatif::HumanBytes(s))?,
                (false, None) => writeln!(f, "  {}", e.name)?,
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

/// Plan a file target for `name` (checked), size `size`, hash `expected`.
pub(crate) fn plan_file(
    out: &Path,
    name: &str,
    size: Option<u64>,
    expected: Option<Hash>,
    overwrite: bool,
    partial_stem: &str,
    resumable: bool,
) -> Result<(FileTarget, bool)> {
    let parts = names::validate(name)?;
    let shown = escape(name);
    let (final_path, found) = inspect(out, &parts)?;
    let mut already = false;
    match found {
        Found::Nothing => {}
        Found::Dir => return Err(TransferError::ExistsAsFolder(shown)),
        Found::File(m) => {
            if let (Some(size), Some(h)) = (size, expected)
                && m.len() == size
            {
                let (_, have) = crate::manifest::hash_file(&final_path)
                    .map_err(|e| TransferError::io(format!("reading {shown}"), e))?;
                already = have == h;
            }
            if !already && !overwrite {
                return Err(TransferError::FileExists(shown));
            }
        }
    }
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
        already,
    ))
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

    fn end(mut self, trailer: Option<(u64, Hash)>) -> Result<()> {
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
                Cmd::End(trailer) => cur.take().expect("end after begin").end(trailer)?,
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
    pub(crate) fn disk() -> Self {
        let (tx, rx) = mpsc::channel(4);
        let (spare_tx, spare) = std_mpsc::channel();
        let worker = tokio::task::spawn_blocking(move || write_files(rx, spare_tx));
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

/// Receive what the sender on `stream` offers (yakk/2).
pub async fn receive<S>(
    stream: S,
    opts: ReceiveOptions,
    reporter: &dyn Reporter,
) -> Result<ReceiveSummary>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (rd, wr) = tokio::io::split(stream);
    let mut rd = BufReader::with_capacity(64 << 10, rd);
    let mut wr = BufWriter::with_capacity(16 << 10, wr);

    wire::write_frame(&mut wr, Frame::Hello, &wire::encode_hello()).await?;
    wr.flush().await.map_err(TransferError::conn)?;
    let (_, p) = wire::read_frame(&mut rd, &[Frame::Offer]).await?;
    let offer = match wire::decode_offer(&p) {
        Ok(o) => o,
        Err(e) => {
            refuse(&mut wr, Frame::Error, &e.to_string()).await;
            return Err(e);
        }
    };
    drop(p);

    let planned = plan(&offer, &opts);
    let Plan {
        mut summary,
        jobs,
        finish_only,
        dirs,
        mut offer_summary,
        offsets,
        stream_stem,
    } = match planned {
        Ok(x) => x,
        Err(e) => {
            refuse(&mut wr, Frame::Refuse, &e.to_string()).await;
            return Err(e);
        }
    };
    offer_summary.resumed_bytes = summary.resumed_bytes;
    if let Some(confirm) = opts.confirm {
        let (yes, _) = tokio::task::spawn_blocking(move || {
            let yes = confirm(&offer_summary);
            (yes, offer_summary)
        })
        .await
        .map_err(|e| TransferError::io("asking for confirmation", std::io::Error::other(e)))?;
        if !yes {
            refuse(&mut wr, Frame::Refuse, "they answered no to the offer").await;
            return Err(TransferError::Declined);
        }
    }

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
                refuse(&mut wr, Frame::Error, &e.to_string()).await;
                return Err(e);
            }
            let mut seen = std::collections::HashSet::new();
            for e in &offer.entries {
                let top = e.name.split('/').next().unwrap_or_default();
                if seen.insert(top) {
                    summary.paths.push(out.join(top));
                }
            }
            Sink::disk()
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
        data_phase(&mut rd, &mut sink, targets, &offer, reporter, &mut summary).await?;
        sink.finish().await
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
            if !matches!(
                e,
                TransferError::PeerError(_)
                    | TransferError::PeerClosed
                    | TransferError::Connection(_)
            ) {
                refuse(&mut wr, Frame::Error, &e.to_string()).await;
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
    offer_summary: OfferSummary,
    /// The ACCEPT: bytes already held per entry.
    offsets: Vec<u64>,
    /// Partial-file stem of a stream entry (no resume: unique per run).
    stream_stem: String,
}

fn partial_stem(name: &str, hash: &Hash) -> String {
    let mut h = blake3::Hasher::new();
    h.update(name.as_bytes());
    h.update(&[0]);
    h.update(hash);
    hex(&h.finalize().as_bytes()[..16])
}

/// Decide every target before writing anything.
fn plan(offer: &Offer, opts: &ReceiveOptions) -> Result<Plan> {
    let mut summary = ReceiveSummary::default();
    let mut os = OfferSummary::default();
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
        let last = e.name.rsplit('/').next().unwrap_or_default();
        if is_partial_name(last) {
            return Err(TransferError::UnsafeName {
                name: escape(&e.name),
                reason: "reserved for yakk's partial files",
            });
        }
    }
    let mut stream_stem = String::new();
    match &opts.destination {
        Destination::Writer(_) => {
            let [e] = offer.entries.as_slice() else {
                return Err(TransferError::StdoutSingleFile(format!(
                    "{} entries",
                    offer.entries.len()
                )));
            };
            if e.kind == WireKind::Dir {
                return Err(TransferError::StdoutSingleFile("a folder".into()));
            }
            jobs.push(Job { idx: 0, offset: 0 });
        }
        Destination::Dir(out) => {
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
                        let (t, already) = plan_file(
                            out,
                            &e.name,
                            Some(size),
                            Some(hash),
                            opts.overwrite,
                            &partial_stem(&e.name, &hash),
                            true,
                        )?;
                        if let Some((parent, _)) = e.name.rsplit_once('/') {
                            add_dir(parent, &mut dirs);
                        }
                        if already {
                            summary.files_skipped += 1;
                            summary.resumed_bytes += size;
                            offsets[i] = size;
                            continue;
                        }
                        summary.resumed_bytes += t.offset;
                        offsets[i] = t.offset;
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
                        plan_file(
                            out,
                            &e.name,
                            None,
                            None,
                            opts.overwrite,
                            &stream_stem,
                            false,
                        )?;
                        if let Some((parent, _)) = e.name.rsplit_once('/') {
                            add_dir(parent, &mut dirs);
                        }
                        jobs.push(Job { idx: i, offset: 0 });
                    }
                }
            }
        }
    }
    Ok(Plan {
        summary,
        jobs,
        finish_only,
        dirs,
        offer_summary: os,
        offsets,
        stream_stem,
    })
}

/// Read DATA / FILE_END for each job in order, then DONE.
async fn data_phase<R: AsyncRead + Unpin>(
    rd: &mut R,
    sink: &mut Sink,
    jobs: impl Iterator<Item = (usize, FileTarget)>,
    offer: &Offer,
    reporter: &dyn Reporter,
    summary: &mut ReceiveSummary,
) -> Result<()> {
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
                    return Err(TransferError::PeerError(wire::decode_text(&p)));
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
            return Err(TransferError::PeerError(wire::decode_text(&p)));
        }
        other => {
            return Err(TransferError::Protocol(format!(
                "unexpected {other:?} frame at the end"
            )));
        }
    }
    sink.finish().await?;
    reporter.done(&DoneInfo {
        direction: Direction::Receive,
        files,
        bytes_transferred: summary.bytes_received,
        resumed_bytes: summary.resumed_bytes,
        elapsed: started.elapsed(),
    });
    Ok(())
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
