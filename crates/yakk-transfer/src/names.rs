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

/// Characters that are invisible or reorder text on a terminal: shown escaped.
fn is_format_char(c: char) -> bool {
    matches!(c,
        '\u{061c}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2069}'
        | '\u{feff}' | '\u{fff9}'..='\u{fffb}')
}

/// Make any string (a name, a peer's message) safe to print on a terminal.
///
/// Control characters (C0, DEL, C1), bidirectional overrides and invisible format characters
/// become `\u{…}`, and a backslash becomes `\\`, so the output is unambiguous. Everything
/// else, letters of any script included, is kept.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '\\' {
            out.push_str("\\\\");
        } else if c.is_control() || is_format_char(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
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

    #[test]
    fn escape_neutralises_terminal_tricks() {
        assert_eq!(escape("ok.txt"), "ok.txt");
        assert_eq!(escape("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(escape("evil\u{202e}gpj.exe"), "evil\\u{202e}gpj.exe");
        assert_eq!(escape("a\\b"), "a\\\\b");
        assert_eq!(escape("x\ny\u{9b}"), "x\\u{a}y\\u{9b}");
        assert_eq!(escape("日本"), "日本");
    }
}
