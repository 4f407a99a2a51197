//! What a sender offers: the scan of the paths given to `yakk filesend`.
//!
//! A [`Manifest`] is built once, hashes every file (BLAKE3) and can then be offered to several
//! receivers in turn, which is how a resumed transfer finds the same files again. Inside folders,
//! symbolic links and special files are skipped (listed in [`Manifest::skipped`]) rather than
//! followed, so a folder cannot drag files from elsewhere into an offer; a path named explicitly
//! is followed. `-` stands for standard input: it must be alone, has no size or hash up front,
//! and can be sent once only. Partial files of an interrupted receive (`.yakk-*.part`) are
//! skipped too.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use tokio::io::AsyncRead;

use crate::error::{Result, TransferError};
use crate::names;
use crate::wire::{self, Hash, Offer, WireEntry, WireKind};

/// What an entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A folder.
    Dir,
    /// A regular file.
    File {
        /// Size at scan time.
        size: u64,
        /// BLAKE3 of the content at scan time.
        hash: Hash,
    },
    /// Standard input (or another reader): size and hash known only at its end.
    Stream,
}

/// One thing on offer.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Entry {
    /// Name on the wire: relative, `/`-separated.
    pub name: String,
    /// Where it is read from (none for a stream).
    pub source: Option<PathBuf>,
    /// What it is.
    pub kind: EntryKind,
    /// Modification time at scan time, to notice a file that changes before it is sent.
    pub modified: Option<SystemTime>,
}

type StreamSource = Box<dyn AsyncRead + Send + Unpin>;

/// The scanned offer of a sender.
pub struct Manifest {
    entries: Vec<Entry>,
    skipped: Vec<PathBuf>,
    stream: Mutex<Option<StreamSource>>,
}

impl std::fmt::Debug for Manifest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manifest")
            .field("entries", &self.entries)
            .field("skipped", &self.skipped)
            .finish_non_exhaustive()
    }
}

fn bad(path: &Path, reason: impl Into<String>) -> TransferError {
    TransferError::BadSource {
        path: names::escape(&path.to_string_lossy()),
        reason: reason.into(),
    }
}

/// The paths to send, walked and checked (names, duplicates, bounds), their files not read yet:
/// what [`Manifest::list`] gives, quickly, so that a bad path is refused before a room is opened.
/// [`Listing::hash`] then reads every file.
#[derive(Debug)]
pub struct Listing(Manifest);

impl Listing {
    /// Read and hash every file: the manifest to offer. A file whose size changes meanwhile is
    /// refused.
    ///
    /// This reads every byte once; call it from a blocking context (`spawn_blocking`).
    pub fn hash(mut self) -> Result<Manifest> {
        for e in &mut self.0.entries {
            let (EntryKind::File { size, hash }, Some(path)) = (&mut e.kind, &e.source) else {
                continue;
            };
            let meta = fs::metadata(path).map_err(|err| bad(path, err.to_string()))?;
            let (n, h) = crate::wire::hash_file(path).map_err(|err| bad(path, err.to_string()))?;
            if n != *size || meta.len() != *size {
                return Err(bad(path, "it changed while yakk was reading it"));
            }
            *hash = h;
            e.modified = meta.modified().ok();
        }
        Ok(self.0)
    }

    /// What will be offered, with the sizes the file system gives now.
    pub fn summary(&self) -> crate::OfferSummary {
        self.0.summary()
    }

    /// Symbolic links and special files found inside folders and left out.
    pub fn skipped(&self) -> &[PathBuf] {
        self.0.skipped()
    }
}

impl Manifest {
    /// Scan files and folders (or `-` alone for standard input) and hash every file:
    /// [`Manifest::list`] then [`Listing::hash`].
    ///
    /// This reads every byte once; call it from a blocking context (`spawn_blocking`).
    pub fn scan<P: AsRef<Path>>(paths: &[P]) -> Result<Manifest> {
        Self::list(paths)?.hash()
    }

    /// Walk and check files and folders (or `-` alone for standard input) without reading the
    /// files: every refusal of the paths given (missing, duplicate names, a name that cannot be
    /// sent, too many entries) comes from here.
    pub fn list<P: AsRef<Path>>(paths: &[P]) -> Result<Listing> {
        if paths.is_empty() {
            return Err(bad(Path::new(""), "nothing to send"));
        }
        if paths.iter().any(|p| p.as_ref() == Path::new("-")) {
            if paths.len() != 1 {
                return Err(bad(
                    Path::new("-"),
                    "standard input (-) must be the only thing sent",
                ));
            }
            return Ok(Listing(Self::stdin("stdin")));
        }
        let mut m = Manifest {
            entries: Vec::new(),
            skipped: Vec::new(),
            stream: Mutex::new(None),
        };
        let mut top = std::collections::HashSet::new();
        for p in paths {
            let p = p.as_ref();
            let meta = fs::metadata(p).map_err(|e| bad(p, e.to_string()))?;
            let name = match p.file_name() {
                Some(n) => n.to_owned(),
                None => fs::canonicalize(p)
                    .ok()
                    .and_then(|c| c.file_name().map(|n| n.to_owned()))
                    .ok_or_else(|| bad(p, "it has no name (send the files inside it instead)"))?,
            };
            let name = name
                .to_str()
                .ok_or_else(|| bad(p, "its name is not valid UTF-8"))?
                .to_owned();
            if !top.insert(name.clone()) {
                return Err(bad(p, "two paths given have the same name"));
            }
            m.add(p, name, &meta)?;
        }
        Ok(Listing(m))
    }

    /// Offer standard input as one stream entry called `name` (`yakk filesend - --name NAME`).
    pub fn stdin(name: &str) -> Manifest {
        Self::from_reader(name, Box::new(tokio::io::stdin()))
    }

    /// What is offered, counted and escaped as the receiver will show it.
    pub fn summary(&self) -> crate::OfferSummary {
        crate::receive::summarize(&self.offer())
    }

    /// Offer the bytes of `reader` as one stream entry called `name` (standard input).
    pub fn from_reader(name: &str, reader: Box<dyn AsyncRead + Send + Unpin>) -> Manifest {
        Manifest {
            entries: vec![Entry {
                name: name.to_owned(),
                source: None,
                kind: EntryKind::Stream,
                modified: None,
            }],
            skipped: Vec::new(),
            stream: Mutex::new(Some(reader)),
        }
    }

    fn push(&mut self, e: Entry, path: &Path) -> Result<()> {
        names::validate(&e.name).map_err(|err| match err {
            TransferError::UnsafeName { reason, .. } => {
                bad(path, format!("its name cannot be sent: {reason}"))
            }
            other => other,
        })?;
        if self.entries.len() >= wire::MAX_ENTRIES as usize {
            return Err(bad(
                path,
                "more than 1,000,000 entries: send an archive instead",
            ));
        }
        self.entries.push(e);
        Ok(())
    }

    fn add(&mut self, path: &Path, name: String, meta: &fs::Metadata) -> Result<()> {
        if meta.is_file() {
            // Hashed by `Listing::hash`.
            return self.push(
                Entry {
                    name,
                    source: Some(path.to_owned()),
                    kind: EntryKind::File {
                        size: meta.len(),
                        hash: [0; 32],
                    },
                    modified: meta.modified().ok(),
                },
                path,
            );
        }
        if !meta.is_dir() {
            return Err(bad(path, "not a regular file or folder"));
        }
        self.push(
            Entry {
                name: name.clone(),
                source: Some(path.to_owned()),
                kind: EntryKind::Dir,
                modified: None,
            },
            path,
        )?;
        let mut children: Vec<fs::DirEntry> = fs::read_dir(path)
            .map_err(|e| bad(path, e.to_string()))?
            .collect::<std::io::Result<_>>()
            .map_err(|e| bad(path, e.to_string()))?;
        children.sort_by_key(|c| c.file_name());
        for c in children {
            let cpath = c.path();
            let ft = c.file_type().map_err(|e| bad(&cpath, e.to_string()))?;
            if !(ft.is_file() || ft.is_dir()) {
                self.skipped.push(cpath);
                continue;
            }
            let cname = c
                .file_name()
                .to_str()
                .ok_or_else(|| bad(&cpath, "its name is not valid UTF-8"))?
                .to_owned();
            // Leftovers of an interrupted receive are not content.
            if crate::names::is_partial_name(&cname) {
                self.skipped.push(cpath);
                continue;
            }
            let cmeta = c.metadata().map_err(|e| bad(&cpath, e.to_string()))?;
            self.add(&cpath, format!("{name}/{cname}"), &cmeta)?;
        }
        Ok(())
    }

    /// The entries, folders before what they contain.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Symbolic links and special files found inside folders and left out.
    pub fn skipped(&self) -> &[PathBuf] {
        &self.skipped
    }

    /// Sum of the file sizes (a stream counts as 0).
    pub fn total_bytes(&self) -> u64 {
        self.entries
            .iter()
            .map(|e| match e.kind {
                EntryKind::File { size, .. } => size,
                _ => 0,
            })
            .sum()
    }

    /// Number of files (streams included).
    pub fn file_count(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| e.kind != EntryKind::Dir)
            .count()
    }

    /// True when the manifest is exactly one regular file (what yakk/1 can carry).
    pub fn single_file(&self) -> Option<&Entry> {
        match self.entries.as_slice() {
            [
                e @ Entry {
                    kind: EntryKind::File { .. },
                    ..
                },
            ] => Some(e),
            _ => None,
        }
    }

    pub(crate) fn offer(&self) -> Offer {
        Offer {
            entries: self
                .entries
                .iter()
                .map(|e| WireEntry {
                    name: e.name.clone(),
                    kind: match e.kind {
                        EntryKind::Dir => WireKind::Dir,
                        EntryKind::File { size, hash } => WireKind::File { size, hash },
                        EntryKind::Stream => WireKind::Stream,
                    },
                })
                .collect(),
        }
    }

    pub(crate) fn take_stream(&self) -> Result<StreamSource> {
        self.stream
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or(TransferError::StdinConsumed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_tree_with_empty_folders_and_skips_links() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("top");
        fs::create_dir_all(root.join("empty")).unwrap();
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::write(root.join("sub/ü.txt"), b"hello").unwrap();
        fs::write(root.join("zero"), b"").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink("/etc/passwd", root.join("link")).unwrap();
        let m = Manifest::scan(&[&root]).unwrap();
        let names: Vec<&str> = m.entries().iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            ["top", "top/empty", "top/sub", "top/sub/ü.txt", "top/zero"]
        );
        assert_eq!(m.total_bytes(), 5);
        assert_eq!(m.file_count(), 2);
        #[cfg(unix)]
        assert_eq!(m.skipped(), &[root.join("link")]);
        let EntryKind::File { hash, .. } = &m.entries()[3].kind else {
            panic!()
        };
        assert_eq!(hash, blake3::hash(b"hello").as_bytes());
    }

    #[test]
    fn listing_checks_first_and_hashing_reads_later() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("a"), b"12345").unwrap();
        fs::create_dir(t.path().join("d")).unwrap();
        fs::write(t.path().join("d/a"), b"x").unwrap();
        // Duplicate names are refused by the walk alone.
        let dup = Manifest::list(&[t.path().join("a"), t.path().join("d/a")]).unwrap_err();
        assert!(dup.to_string().contains("same name"), "{dup}");
        let listing = Manifest::list(&[t.path().join("a"), t.path().join("d")]).unwrap();
        assert_eq!(
            listing.summary().headline(),
            "2 file(s) in 1 folder(s), 6 B"
        );
        let m = Manifest::list(&[t.path().join("a")])
            .unwrap()
            .hash()
            .unwrap();
        let EntryKind::File { hash, .. } = &m.entries()[0].kind else {
            panic!()
        };
        assert_eq!(hash, blake3::hash(b"12345").as_bytes());
        // A file that changes between the walk and the reading is refused.
        let listing = Manifest::list(&[t.path().join("a")]).unwrap();
        fs::write(t.path().join("a"), b"1234567").unwrap();
        let e = listing.hash().unwrap_err();
        assert!(e.to_string().contains("changed"), "{e}");
    }

    #[test]
    fn refuses_bad_paths() {
        let t = tempfile::tempdir().unwrap();
        assert!(Manifest::scan(&[t.path().join("missing")]).is_err());
        assert!(Manifest::scan::<&Path>(&[]).is_err());
        fs::write(t.path().join("a"), b"1").unwrap();
        fs::create_dir(t.path().join("d")).unwrap();
        fs::write(t.path().join("d/a"), b"2").unwrap();
        assert!(Manifest::scan(&[t.path().join("a"), t.path().join("d/a")]).is_err());
        assert!(Manifest::scan(&[Path::new("-"), &t.path().join("a")]).is_err());
        fs::write(t.path().join("back\\slash"), b"").unwrap();
        assert!(Manifest::scan(&[t.path().join("back\\slash")]).is_err());
    }
}
