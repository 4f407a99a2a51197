//! The code a joiner types: `ROOM-WORD-WORD[@SERVER]`. The room comes first, the password after
//! the first dash, and the signalling server after `@` when it is not the configured one.

use rand::Rng;

const WORDS: &str = include_str!("words.txt");

/// What a code carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Code {
    pub room: String,
    pub password: Option<String>,
    pub server: Option<String>,
}

impl Code {
    /// Parses what the user typed. A bare room (no dash) has no password. What people do to
    /// codes when they pass them on is forgiven (see [`normalize`]).
    pub fn parse(typed: &str) -> Result<Code, String> {
        let normal = normalize(typed);
        let s = normal.as_str();
        let (main, server) = match s.split_once('@') {
            Some((m, srv)) if !srv.is_empty() => (m, Some(srv.to_string())),
            Some(_) => return Err(format!("code {s:?} ends with '@' but names no server")),
            None => (s, None),
        };
        let (room, password) = match main.split_once('-') {
            Some((r, pw)) if !pw.is_empty() => (r, Some(pw.to_string())),
            Some((r, _)) => (r, None),
            None => (main, None),
        };
        if room.is_empty() || !room.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(format!(
                "{:?} is not a yakk code: codes look like 123-crossbow-nimble (ask the sender for theirs)",
                typed.trim()
            ));
        }
        Ok(Code {
            room: room.to_string(),
            password: password.map(|p| normalize_password(&p)),
            server,
        })
    }

    /// The code as printed; includes the password, so it is shown to the user and never logged.
    pub fn to_code_string(&self) -> String {
        let mut s = self.room.clone();
        if let Some(pw) = &self.password {
            s.push('-');
            s.push_str(pw);
        }
        if let Some(srv) = &self.server {
            s.push('@');
            s.push_str(srv);
        }
        s
    }
}

impl Drop for Code {
    /// The password is a secret: wiped when the code is dropped.
    fn drop(&mut self) {
        if let Some(pw) = &mut self.password {
            zeroize::Zeroize::zeroize(pw);
        }
    }
}

/// A code as people pass it on, made canonical: surrounding spaces and a trailing full stop,
/// comma, semicolon or colon (from a sentence) go; runs of spaces between words become one dash
/// (`417 crossbow nimble`), and so do runs of dashes. The server part, after `@`, is kept as
/// typed; the password part is lower-cased by [`normalize_password`].
pub fn normalize(typed: &str) -> zeroize::Zeroizing<String> {
    let t = typed
        .trim()
        .trim_end_matches(['.', ',', ';', ':'])
        .trim_end();
    let (main, server) = match t.split_once('@') {
        Some((m, srv)) => (m, Some(srv.trim())),
        None => (t, None),
    };
    let mut out = String::with_capacity(t.len());
    // A code that starts with a dash has no room: keep the dash for `parse` to refuse.
    if main.starts_with('-') {
        out.push('-');
    }
    for part in main.split(|c: char| c.is_whitespace() || c == '-') {
        if part.is_empty() {
            continue;
        }
        if !out.is_empty() && out != "-" {
            out.push('-');
        }
        out.push_str(part);
    }
    if let Some(srv) = server {
        out.push('@');
        out.push_str(srv);
    }
    zeroize::Zeroizing::new(out)
}

/// A password as both sides use it: generated passwords are lower-case words joined by dashes,
/// and people type them with capitals or spaces; one canonical form (lower case, spaces as one
/// dash) means such a slip never costs the one guess a code allows. Applied to the owner's
/// `--pw` as well, so that both sides agree.
pub fn normalize_password(pw: &str) -> String {
    pw.split(|c: char| c.is_whitespace() || c == '-')
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join("-")
}

/// The built-in word list passwords are made of.
pub fn word_list() -> Vec<&'static str> {
    WORDS.split_whitespace().collect()
}

/// A password of `words` random words from the built-in list, joined by dashes.
pub fn generate_password(words: usize) -> String {
    let list: Vec<&str> = WORDS.split_whitespace().collect();
    let mut rng = rand::rng();
    (0..words.max(1))
        .map(|_| list[rng.random_range(0..list.len())])
        .collect::<Vec<_>>()
        .join("-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_code() {
        let c = Code::parse("123-crossbow-nimble@10.0.0.5:6006").unwrap();
        assert_eq!(c.room, "123");
        assert_eq!(c.password.as_deref(), Some("crossbow-nimble"));
        assert_eq!(c.server.as_deref(), Some("10.0.0.5:6006"));
        assert_eq!(c.to_code_string(), "123-crossbow-nimble@10.0.0.5:6006");
    }

    #[test]
    fn parses_bare_room_and_ws_server() {
        let c = Code::parse("armadillo").unwrap();
        assert_eq!(
            (c.room.as_str(), c.password.as_deref(), c.server.as_deref()),
            ("armadillo", None, None)
        );
        let c = Code::parse("7-a@wss://signal.example:443").unwrap();
        assert_eq!(c.server.as_deref(), Some("wss://signal.example:443"));
    }

    #[test]
    fn forgives_what_people_do_to_codes() {
        for typed in [
            "417-crossbow-nimble",
            "  417-crossbow-nimble  ",
            "417-Crossbow-NIMBLE",
            "417 crossbow nimble",
            "417  crossbow\tnimble.",
            "417-crossbow-nimble,",
            "417 - crossbow - nimble;",
            "417--crossbow--nimble",
        ] {
            let c = Code::parse(typed).unwrap_or_else(|e| panic!("{typed:?}: {e}"));
            assert_eq!(c.room, "417", "{typed:?}");
            assert_eq!(c.password.as_deref(), Some("crossbow-nimble"), "{typed:?}");
            assert_eq!(c.server, None, "{typed:?}");
        }
        let c = Code::parse(" 417 Crossbow Nimble@10.0.0.5:6006. ").unwrap();
        assert_eq!(c.password.as_deref(), Some("crossbow-nimble"));
        assert_eq!(c.server.as_deref(), Some("10.0.0.5:6006"));
        // The server part keeps its case (a URL path may need it).
        let c = Code::parse("7-a@wss://Signal.example/Path").unwrap();
        assert_eq!(c.server.as_deref(), Some("wss://Signal.example/Path"));
        assert_eq!(normalize_password("My  Secret"), "my-secret");
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "-pw", "x@", "../1-a", "r\u{1b}[2J-pw", "a.b-c"] {
            assert!(Code::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn generated_passwords_use_the_list_and_differ() {
        let a = generate_password(2);
        assert_eq!(a.split('-').count(), 2);
        let list: Vec<&str> = WORDS.split_whitespace().collect();
        assert!(a.split('-').all(|w| list.contains(&w)));
        let many: std::collections::HashSet<String> =
            (0..50).map(|_| generate_password(2)).collect();
        assert!(many.len() > 40, "passwords repeat too often");
    }

    #[test]
    fn word_list_is_clean() {
        let list: Vec<&str> = WORDS.split_whitespace().collect();
        let set: std::collections::HashSet<&&str> = list.iter().collect();
        assert_eq!(set.len(), list.len(), "duplicate words");
        assert!(list.len() >= 600);
        assert!(
            list.iter()
                .all(|w| w.chars().all(|c| c.is_ascii_lowercase()))
        );
    }
}
