//! Text that came from elsewhere (a peer, a signalling server), made safe to show.
//!
//! One escaping for everything yakk prints that it did not write itself: file names from an
//! offer, a peer's error message, a signalling server's refusal or close reason. A hostile
//! sender must not be able to move the cursor, clear the screen, retitle the terminal or
//! reorder what the user reads.

/// Characters that are invisible or reorder text on a terminal: shown escaped.
fn is_format_char(c: char) -> bool {
    matches!(c,
        '\u{061c}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2069}'
        | '\u{feff}' | '\u{fff9}'..='\u{fffb}')
}

/// Make any string (a name, a peer's or a server's message) safe to print on a terminal.
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
    fn escape_neutralises_terminal_tricks() {
        assert_eq!(escape("ok.txt"), "ok.txt");
        assert_eq!(escape("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(escape("evil\u{202e}gpj.exe"), "evil\\u{202e}gpj.exe");
        assert_eq!(escape("a\\b"), "a\\\\b");
        assert_eq!(escape("x\ny\u{9b}"), "x\\u{a}y\\u{9b}");
        assert_eq!(escape("日本"), "日本");
    }
}
