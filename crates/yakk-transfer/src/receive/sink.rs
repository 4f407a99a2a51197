//! The disk side of a transfer: a blocking writer thread fed by a bounded channel, which writes
//! each file to its partial file (past the page cache where it can: `direct.rs`), hashes as it
//! writes and checks the BLAKE3 hash at the file's end.

use std::fs;
use std::io::Read;
use std::sync::mpsc as std_mpsc;

use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;

use super::FileTarget;
use super::direct::FileOut;
use crate::error::{Result, TransferError};
use crate::wire::Hash;

/// Commands to the disk writer thread.
pub(crate) enum Cmd {
    Begin(FileTarget),
    Data(Vec<u8>),
    /// The current file is complete; a stream brings its size and hash.
    End(Option<(u64, Hash)>),
}

pub(crate) struct Open {
    t: FileTarget,
    out: FileOut,
    hasher: blake3::Hasher,
    written: u64,
}

pub(crate) fn open_partial(t: &FileTarget) -> std::io::Result<fs::File> {
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
    pub(crate) fn begin(t: FileTarget) -> Result<Self> {
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
        Ok(Self {
            written: t.offset,
            out: FileOut::new(file, &t.partial, t.offset),
            t,
            hasher,
        })
    }

    /// Check the file; rename it to its final name unless `defer` (the caller renames every
    /// file at the end of the transfer, [`commit`]).
    pub(crate) fn end(mut self, trailer: Option<(u64, Hash)>, defer: bool) -> Result<()> {
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
        self.out
            .finish()
            .map_err(|e| TransferError::write(e, &self.t.shown))?;
        drop(self.out);
        if defer {
            return Ok(());
        }
        fs::rename(&self.t.partial, &self.t.final_path)
            .map_err(|e| TransferError::write(e, &self.t.shown))
    }

    pub(crate) fn discard(&self) {
        let _ = fs::remove_file(&self.t.partial);
    }
}

/// Data or an end with no file begun: a fault of this crate's own sequencing, not the peer's.
fn out_of_order() -> TransferError {
    TransferError::Protocol("file writer: data before the file began".into())
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
                    let o = cur.as_mut().ok_or_else(out_of_order)?;
                    o.out
                        .write(&buf)
                        .map_err(|e| TransferError::write(e, &o.t.shown))?;
                    o.hasher.update(&buf);
                    o.written += buf.len() as u64;
                    let _ = spare.send(buf);
                }
                Cmd::End(trailer) => cur
                    .take()
                    .ok_or_else(out_of_order)?
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
    pub(crate) fn disk_deferred() -> Self {
        Self::disk_with(true)
    }

    pub(crate) fn disk_with(defer_rename: bool) -> Self {
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

    pub(crate) async fn cmd(&mut self, c: Cmd) -> Result<()> {
        let sent = match self {
            Sink::Disk { tx: Some(tx), .. } => tx.send(c).await.is_ok(),
            // Finished already, or a writer sink (its callers never queue commands).
            Sink::Disk { tx: None, .. } | Sink::Writer { .. } => false,
        };
        if !sent {
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
