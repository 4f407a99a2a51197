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
    /// Parses what the user typed. A bare room (no dash) has no password.
    pub fn parse(s: &str) -> Result<Code, String> {
        let s = s.trim();
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
                "{s:?} is not a yakk code: codes look like 123-crossbow-nimble (ask the sender for theirs)"
            ));
        }
        Ok(Code {
            room: room.to_string(),
            password,
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
    fn rejects_garbage() {
        for bad in ["", "-pw", "a b-c", "x@", "../1-a", "r\u{1b}[2J-pw"] {
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
