//! What the receiver decides before it writes anything: where each offered file goes (walking
//! every existing component without following links), what is already there (a conflict, an
//! identical file, a partial file to resume), the folders to create, and the renames that
//! commit a finished transfer.

use std::fs;
use std::path::{Path, PathBuf};

use super::{OfferSummary, Policy, ReceiveSummary};
use crate::error::{Result, TransferError};
use crate::names::{self, escape, is_partial_name};
use crate::wire::{self, Hash, Offer, WireEntry, WireKind};

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
pub(crate) enum Found {
    Nothing,
    File(fs::Metadata),
    Dir,
}

/// Whether files can be received into `out`: it is a folder, or nothing is there yet (it is
/// created when the first file comes). Checked before connecting, so that a mistake in `-o`
/// does not use up the sender's code.
pub fn check_destination(out: &Path) -> Result<()> {
    inspect(out, &[]).map(|_| ())
}

/// Look at `out/parts…` without following links; parents must be real folders.
pub(crate) fn inspect(out: &Path, parts: &[&str]) -> Result<(PathBuf, Found)> {
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

pub(crate) fn hex(h: &[u8]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
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
                let (_, have) = wire::hash_file(&final_path)
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
pub(crate) fn conflict_list(names: &[String], count: usize) -> String {
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

/// A file of the offer that needs work: its index and the bytes already here. Kept this small
/// (paths are rebuilt when the file starts) so that a large offer costs little memory.
pub(crate) struct Job {
    pub(crate) idx: usize,
    pub(crate) offset: u64,
}

/// Where entry `e` goes, once planned (checked) with `offset` bytes already held.
pub(crate) fn target(
    out: Option<&Path>,
    e: &WireEntry,
    offset: u64,
    stream_stem: &str,
) -> FileTarget {
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

/// The decisions taken before anything is written.
pub(crate) struct Plan {
    pub(crate) summary: ReceiveSummary,
    /// Files that need data, in offer order.
    pub(crate) jobs: Vec<Job>,
    /// Files complete in their partial file (or empty): verify and rename only.
    pub(crate) finish_only: Vec<Job>,
    /// Folders to create (declared ones and parents of files), each once.
    pub(crate) dirs: Vec<String>,
    /// The ACCEPT: bytes already held per entry.
    pub(crate) offsets: Vec<u64>,
    /// Entries whose partial file takes the final name at the end (all files but those kept
    /// as identical).
    pub(crate) rename: Vec<bool>,
    /// Partial-file stem of a stream entry (no resume: unique per run).
    pub(crate) stream_stem: String,
}

impl Plan {
    /// `--stdout`: the single file of the offer (checked by [`single_file`]), from its start.
    pub(crate) fn to_writer() -> Self {
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

pub(crate) fn partial_stem(name: &str, hash: &Hash) -> String {
    let mut h = blake3::Hasher::new();
    h.update(name.as_bytes());
    h.update(&[0]);
    h.update(hash);
    hex(&h.finalize().as_bytes()[..16])
}

/// What the offer alone says is wrong (no disk involved): names reserved for partial files.
pub(crate) fn check_offer(offer: &Offer) -> Result<()> {
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

/// `--stdout` takes exactly one file (or stream).
pub(crate) fn single_file(offer: &Offer, summary: &OfferSummary) -> Result<()> {
    match offer.entries.as_slice() {
        [e] if e.kind != WireKind::Dir => Ok(()),
        _ => Err(TransferError::StdoutSingleFile(summary.headline())),
    }
}

/// Decide every target in `out` before writing anything (after the person accepted).
pub(crate) fn plan(offer: &Offer, out: &Path, policy: Policy) -> Result<Plan> {
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
pub(crate) fn commit(out: &Path, offer: &Offer, rename: &[bool], stream_stem: &str) -> Result<()> {
    for (e, _) in offer.entries.iter().zip(rename).filter(|(_, r)| **r) {
        let t = target(Some(out), e, 0, stream_stem);
        fs::rename(&t.partial, &t.final_path).map_err(|err| TransferError::write(err, &t.shown))?;
    }
    Ok(())
}
