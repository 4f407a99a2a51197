//! Writing a received file past the page cache where the system allows it (Linux `O_DIRECT`).
//!
//! A buffered write copies every byte into the kernel's page cache, and the kernel writes it
//! out later: for a large transfer that copy is a large part of the receiver's CPU
//! (bench/PROFILE.md), and the cache fills with data nobody reads back soon. Here the bulk of
//! each file goes through a second descriptor opened with `O_DIRECT`, from the device's
//! point of view straight out of a staging buffer, in large aligned writes. What cannot be
//! aligned (the first bytes of a file resumed at an odd offset, the last bytes of every file)
//! goes through the ordinary descriptor, at its own offsets, so the two never write the same
//! range. Where `O_DIRECT` is refused (a file system without it, a device with larger blocks),
//! everything goes through the ordinary descriptor, as before; and so does a file under 1 MiB,
//! which would gain nothing.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// The alignment `O_DIRECT` asks of file offsets, lengths and buffer addresses: the largest
/// logical block size of common devices.
const ALIGN: usize = 4096;
/// How much is gathered before one direct write: large enough that each write's latency is
/// small beside its size (bench/PROFILE.md), small beside the receiver's memory.
const STAGE: usize = 1 << 20;
/// What the first direct write of a file waits for; each next one waits for twice as much, up
/// to `STAGE`, so that the first bytes reach the disk soon.
const FIRST_STAGE: usize = 64 << 10;
/// Direct writes start once a file reaches this size: a smaller one gains nothing from them
/// and would cost a second descriptor and a staging buffer.
const DIRECT_FROM: u64 = STAGE as u64;

/// A file being written at increasing offsets, from `start`.
pub(crate) struct FileOut {
    /// The ordinary descriptor (buffered writes).
    file: File,
    direct: Option<Direct>,
    /// The file's path while direct writes may still start (`DIRECT_FROM`).
    path: Option<PathBuf>,
    /// Where the next byte goes when nothing is staged; with `direct`, the offset of the
    /// staging buffer's first byte.
    at: u64,
}

struct Direct {
    file: File,
    /// `STAGE + ALIGN` bytes, of which `stage_start..stage_start + STAGE` is aligned.
    buf: Vec<u8>,
    stage_start: usize,
    /// Bytes staged.
    filled: usize,
    /// Bytes staged that make the next direct write (a multiple of `ALIGN`, at most `STAGE`).
    limit: usize,
}

impl Direct {
    fn stage(&mut self) -> &mut [u8] {
        &mut self.buf[self.stage_start..self.stage_start + STAGE]
    }
}

impl FileOut {
    /// Writes to `file` (opened at `path`) from offset `start`; from `DIRECT_FROM` bytes on,
    /// past the page cache if the system lets a second descriptor of the same file be opened
    /// for direct writes.
    pub(crate) fn new(file: File, path: &Path, start: u64) -> Self {
        Self {
            file,
            direct: None,
            path: Some(path.to_path_buf()),
            at: start,
        }
    }

    /// Opens the descriptor for direct writes, once; from then on they are used if it opened.
    fn start_direct(&mut self) {
        let Some(path) = self.path.take() else {
            return;
        };
        self.direct = open_direct(&self.file, &path).map(|d| {
            let buf = vec![0u8; STAGE + ALIGN];
            let stage_start = buf.as_ptr().align_offset(ALIGN);
            Direct {
                file: d,
                buf,
                stage_start,
                filled: 0,
                limit: FIRST_STAGE,
            }
        });
    }

    /// Whether the bulk of the data goes past the page cache.
    #[cfg(test)]
    pub(crate) fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    pub(crate) fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        if self.path.is_some() && self.at + data.len() as u64 >= DIRECT_FROM {
            self.start_direct();
        }
        loop {
            let Some(d) = self.direct.as_mut() else {
                write_all_at(&self.file, data, self.at)?;
                self.at += data.len() as u64;
                return Ok(());
            };
            if data.is_empty() {
                return Ok(());
            }
            // Up to the first aligned offset (a file resumed at an odd length): the ordinary
            // way.
            let misaligned = (self.at % ALIGN as u64) as usize;
            if d.filled == 0 && misaligned != 0 {
                let n = data.len().min(ALIGN - misaligned);
                write_all_at(&self.file, &data[..n], self.at)?;
                self.at += n as u64;
                data = &data[n..];
                continue;
            }
            let n = data.len().min(d.limit - d.filled);
            let from = d.filled;
            d.stage()[from..from + n].copy_from_slice(&data[..n]);
            d.filled += n;
            data = &data[n..];
            if d.filled == d.limit {
                d.limit = (d.limit * 2).min(STAGE);
                self.flush_aligned()?;
            }
        }
    }

    /// Writes the staged bytes up to the last whole block directly; keeps the rest staged.
    /// A direct write the system refuses (`EINVAL`) ends direct writing for this file: what
    /// was staged is written the ordinary way instead.
    fn flush_aligned(&mut self) -> io::Result<()> {
        let Some(mut d) = self.direct.take() else {
            return Ok(());
        };
        let n = d.filled / ALIGN * ALIGN;
        let start = d.stage_start;
        match write_all_at(&d.file, &d.buf[start..start + n], self.at) {
            Ok(()) => {
                d.buf.copy_within(start + n..start + d.filled, start);
                d.filled -= n;
                self.at += n as u64;
                self.direct = Some(d);
                Ok(())
            }
            // `EINVAL`, as the standard library names it.
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                // Rewriting what a short direct write may have written is harmless: the same
                // bytes at the same offsets.
                write_all_at(&self.file, &d.buf[start..start + d.filled], self.at)?;
                self.at += d.filled as u64;
                Ok(())
            }
            Err(e) => {
                self.direct = Some(d);
                Err(e)
            }
        }
    }

    /// Writes everything staged: the file holds every byte given to [`FileOut::write`].
    pub(crate) fn finish(&mut self) -> io::Result<()> {
        self.flush_aligned()?;
        if let Some(d) = self.direct.as_mut()
            && d.filled > 0
        {
            let start = d.stage_start;
            write_all_at(&self.file, &d.buf[start..start + d.filled], self.at)?;
            self.at += d.filled as u64;
            d.filled = 0;
        }
        Ok(())
    }
}

impl Drop for FileOut {
    /// A file left unfinished (the connection broke, the person stopped) keeps what arrived,
    /// for the next run to resume from; an error here only makes that resume start earlier.
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// Writes all of `buf` at `offset` of `file`, whatever its cursor.
fn write_all_at(file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::write_all_at(file, buf, offset)
    }
    #[cfg(windows)]
    {
        let mut done = 0;
        while done < buf.len() {
            match std::os::windows::fs::FileExt::seek_write(
                file,
                &buf[done..],
                offset + done as u64,
            ) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// A second descriptor of `file`, for direct writes, or `None` where the system has no such
/// writes or they are refused for this file.
#[cfg(target_os = "linux")]
fn open_direct(file: &File, path: &Path) -> Option<File> {
    use std::fs::OpenOptions;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

    let direct = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT | libc::O_NOFOLLOW)
        .open(path)
        .ok()?;
    // The same file, not whatever the path names now.
    let (a, b) = (file.metadata().ok()?, direct.metadata().ok()?);
    (a.dev() == b.dev() && a.ino() == b.ino()).then_some(direct)
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_file: &File, _path: &Path) -> Option<File> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| ((i as u64 * 2654435761) >> 7) as u8 ^ seed)
            .collect()
    }

    /// Whether the test folder's file system takes direct writes.
    fn direct_available() -> bool {
        let probe = tempfile::tempdir().unwrap();
        let p = probe.path().join("p");
        open_direct(&open(&p), &p).is_some()
    }

    fn open(path: &Path) -> File {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .unwrap()
    }

    /// Writes `head` bytes ordinarily (a partial file from an earlier run), then the rest
    /// through a `FileOut` in pieces of the given sizes; the file must equal the data.
    fn round_trip(total: usize, head: usize, pieces: &[usize]) -> bool {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data = pattern(total, head as u8);
        std::fs::write(&path, &data[..head]).unwrap();
        let mut out = FileOut::new(open(&path), &path, head as u64);
        let mut direct = false;
        let mut at = head;
        let mut i = 0;
        while at < total {
            let n = pieces[i % pieces.len()].min(total - at);
            out.write(&data[at..at + n]).unwrap();
            direct |= out.is_direct();
            at += n;
            i += 1;
        }
        if (total as u64) < DIRECT_FROM {
            assert!(!direct, "a file of {total} bytes went past the page cache");
        }
        out.finish().unwrap();
        drop(out);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            data,
            "total {total}, head {head}"
        );
        direct
    }

    #[test]
    fn every_byte_lands_at_its_offset() {
        let mut direct = false;
        for (total, head, pieces) in [
            (0, 0, &[1][..]),
            (1, 0, &[1][..]),
            (ALIGN, 0, &[ALIGN][..]),
            (ALIGN + 1, 0, &[1000][..]),
            (STAGE, 0, &[1 << 20][..]),
            (STAGE * 2 + 17, 0, &[1 << 20, 65_536, 3][..]),
            (STAGE * 2 + 17, 5, &[1 << 20][..]),
            (STAGE + 3 * ALIGN, ALIGN - 1, &[100_000, 7][..]),
            (STAGE + 3 * ALIGN, ALIGN + 1, &[STAGE][..]),
            (3 * ALIGN, 2 * ALIGN, &[ALIGN / 2][..]),
            (10, 3, &[1][..]),
            (STAGE * 3, STAGE + 5, &[300_000][..]),
            (STAGE * 2, STAGE - 1, &[1, 2 * STAGE][..]),
        ] {
            direct |= round_trip(total, head, pieces);
        }
        // On a file system that takes direct writes, as /tmp here does, this test must
        // exercise them. (Where it does not, the ordinary path was checked.)
        if direct_available() {
            assert!(direct, "direct writes were available but not used");
        }
    }

    #[test]
    fn a_refused_direct_write_falls_back_without_losing_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut out = FileOut::new(open(&path), &path, 0);
        out.start_direct();
        if !out.is_direct() {
            return; // Nothing to fall back from here; the ordinary path is tested above.
        }
        // A staging buffer off the alignment the system asks for: its next direct write is
        // refused, as a device with larger blocks would refuse it.
        if let Some(d) = out.direct.as_mut() {
            d.stage_start += 1;
        }
        let data = pattern(STAGE + 12_345, 9);
        out.write(&data).unwrap();
        if out.is_direct() {
            // A file system without alignment rules (tmpfs takes any buffer): no refusal to
            // fall back from here, and the content is still checked below.
            eprintln!("the file system took a misaligned direct write: no fallback to test");
        }
        out.write(&data).unwrap();
        out.finish().unwrap();
        drop(out);
        let got = std::fs::read(&path).unwrap();
        assert_eq!(got.len(), data.len() * 2);
        assert!(got[..data.len()] == data[..] && got[data.len()..] == data[..]);
    }

    #[test]
    fn an_unfinished_file_keeps_what_was_staged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data = pattern(STAGE + ALIGN * 3 + 5, 3);
        let mut out = FileOut::new(open(&path), &path, 0);
        out.write(&data).unwrap();
        let staged = out.direct.as_ref().map_or(0, |d| d.filled);
        drop(out);
        if direct_available() {
            assert!(
                staged > 0,
                "nothing was left staged: the test checks nothing"
            );
        }
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }
}
