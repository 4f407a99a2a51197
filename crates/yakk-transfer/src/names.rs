//! Names that travel in an offer: what a safe relative name is, and how to show any name.
//!
//! A name on the wire is UTF-8, relative, with `/` between components. The receiver accepts a
//! name only if every component is a plain file name: not empty, not `.` or `..`, at most
//! [`MAX_COMPONENT_BYTES`] bytes, without `/`, `\`, `:` (drive letters, alternate data streams),
//! NUL or any control character. So a name cannot be absolute, climb out of the target folder,
//! name a drive, or carry a terminal escape. Symbolic links cannot be created by an offer at all
//! (there is no entry kind for them); links already in the target folder are refused by the
//! receiver when it walks each path (see `receive`).

use crate::error::TransferError;

/// Longest name (all components and separators), in bytes.
pub const MAX_NAME_BYTES: usize = 4096;
/// Longest single component, in bytes (the common file-system limit).
pub const MAX_COMPONENT_BYTES: usize = 255;
/// Deepest nesting of folders in a name.
pub const MAX_DEPTH: usize = 128;

/// Check that `name` is a safe relative name and split it into its components.
pub fn validate(name: &str) -> Result<Vec<&str>, TransferError> {
    let bad = |reason| TransferError::UnsafeName {
        name: escape(name),
        reason,
    };
    if name.is_empty() {
        return Err(bad("empty name"));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(bad("name too long"));
    }
    if name.starts_with('/') {
        return Err(bad("absolute path"));
    }
    let parts: Vec<&str> = name.split('/').collect();
    if parts.len() > MAX_DEPTH {
        return Err(bad("folders nested too deep"));
    }
    for part in &parts {
        check_component(part).map_err(bad)?;
    }
    Ok(parts)
}

/// Check one component; the reason on failure.
pub fn check_component(part: &str) -> Result<(), &'static str> {
    if part.is_empty() {
        return Err("empty path component");
    }
    if part == "." || part == ".." {
        return Err("`.` or `..` path component");
    }
    if part.len() > MAX_COMPONENT_BYTES {
        return Err("path component longer than 255 bytes");
    }
    for c in part.chars() {
        match c {
            '\\' => return Err("backslash in name"),
            ':' => return Err("colon in name (drive letter or stream name)"),
            '/' => return Err("slash in name"),
            c if c.is_control() => return Err("control character in name"),
            _ => {}
        }
    }
    Ok(())
}

/// Make any string (a name, a peer's message) safe to print on a terminal: yakk's one
/// escaping, shared with the session layer (signalling servers' texts).
pub use yakk_wire::escape;

/// True for names yakk uses for its own partial files.
pub(crate) fn is_partial_name(n: &str) -> bool {
    n.starts_with(".yakk-") && n.ends_with(".part")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names_in_any_script() {
        assert_eq!(validate("a/b/c.txt").unwrap(), vec!["a", "b", "c.txt"]);
        validate("фото/写真/صورة.jpg").unwrap();
        validate(".hidden").unwrap();
        validate("...").unwrap();
        validate("a b").unwrap();
    }

    #[test]
    fn refuses_escapes() {
        for bad in [
            "",
            "/etc/passwd",
            "..",
            "../x",
            "a/../../x",
            "a/./b",
            "a//b",
            "a/",
            "C:\\x",
            "C:x",
            "..\\..\\x",
            "a\\b",
            "x\u{1b}[31m",
            "x\ny",
            "nul\0",
            "del\u{7f}",
            "c1\u{9b}",
        ] {
            assert!(validate(bad).is_err(), "accepted {bad:?}");
        }
        assert!(validate(&"a".repeat(256)).is_err());
        assert!(validate(&"a/".repeat(2100)).is_err());
        assert!(validate(&vec!["a"; 200].join("/")).is_err());
    }
}
