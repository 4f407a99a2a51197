//! The user's configuration file, so that people set their rendezvous once: the signalling
//! server (codes then stay short, `417-crossbow-nimble`) and the STUN and TURN servers.
//!
//! Read from `YAKK_CONFIG` when set, else `$XDG_CONFIG_HOME/yakk/config.toml`, else
//! `~/.config/yakk/config.toml`. The command line and the environment come first; the file
//! only fills in what they leave unset.
//!
//! ```toml
//! signal = "wss://rendezvous.example.org"
//! stun = ["stun:rendezvous.example.org:3478"]
//! turn = ["turn:rendezvous.example.org:3478?transport=udp"]
//! turn_user = "alice"
//! turn_pass = "…"
//! relay_only = false
//! ```

use std::path::PathBuf;

use serde::Deserialize;

use crate::cli::Common;
use crate::exit::Failure;

/// What the file may set.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// As `--signal`.
    pub signal: Option<String>,
    /// As `--stun`.
    #[serde(default)]
    pub stun: Vec<String>,
    /// As `--turn`.
    #[serde(default)]
    pub turn: Vec<String>,
    /// As `--turn-user`.
    pub turn_user: Option<String>,
    /// As `--turn-pass`.
    pub turn_pass: Option<String>,
    /// As `--relay-only`.
    pub relay_only: Option<bool>,
}

/// Where the file is looked for, and whether it was named explicitly (then it must exist).
fn location() -> Option<(PathBuf, bool)> {
    if let Some(p) = std::env::var_os("YAKK_CONFIG").filter(|p| !p.is_empty()) {
        return Some((PathBuf::from(p), true));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some((base.join("yakk").join("config.toml"), false))
}

/// Reads the file, if there is one.
pub fn load() -> Result<Option<FileConfig>, Failure> {
    let Some((path, named)) = location() else {
        return Ok(None);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !named => return Ok(None),
        Err(e) => {
            return Err(Failure::usage(format!(
                "cannot read the configuration file {}: {e}",
                path.display()
            )));
        }
    };
    parse(&text).map(Some).map_err(|e| {
        Failure::usage(format!(
            "the configuration file {} is not valid: {e}",
            path.display()
        ))
    })
}

fn parse(text: &str) -> Result<FileConfig, String> {
    toml::from_str(text).map_err(|e| e.message().to_string())
}

/// Fills in what the command line and the environment left unset.
pub fn apply(c: &mut Common, f: FileConfig) {
    if c.signal.is_none() {
        c.signal = f.signal;
    }
    if c.stun.is_empty() {
        c.stun = f.stun;
    }
    if c.turn.is_empty() {
        c.turn = f.turn;
        if c.turn_user.is_none() {
            c.turn_user = f.turn_user;
        }
        if c.turn_pass.is_none() {
            c.turn_pass = f.turn_pass;
        }
    }
    // A flag can only say yes; the file's yes holds unless the flag is given.
    c.relay_only |= f.relay_only.unwrap_or(false);
}

/// Applies the user's file, if any, to `c`, then checks the TURN settings they make together.
pub fn apply_file(c: &mut Common) -> Result<(), Failure> {
    if let Some(f) = load()? {
        apply(c, f);
    }
    // `--turn-pass` reads the same variable as `yakk signal`'s `--turn-password`.
    check_turn(
        c,
        std::env::var_os(yakk_signal::TURN_PASSWORD_ENV).is_some(),
    )
}

/// A TURN server needs both credentials, and credentials need a server (from the command line
/// or the file). A password from the environment with no server is left unused rather than
/// refused: the same variable may be set for `yakk signal`, or for the commands that do name a
/// server. `password_in_env`: the environment variable is set (the command line wins over it,
/// so the password may still have come from there; a user who passes it in both is told
/// nothing).
pub fn check_turn(c: &mut Common, password_in_env: bool) -> Result<(), Failure> {
    if c.turn.is_empty() {
        if c.turn_user.is_some() {
            return Err(Failure::usage(
                "--turn-user is for a TURN server: give one with --turn (or `turn` in the \
                 configuration file)",
            ));
        }
        if c.turn_pass.is_some() && !password_in_env {
            return Err(Failure::usage(
                "--turn-pass is for a TURN server: give one with --turn (or `turn` in the \
                 configuration file)",
            ));
        }
        c.turn_pass = None;
        return Ok(());
    }
    if c.turn_user.is_none() || c.turn_pass.is_none() {
        return Err(Failure::usage(
            "a TURN server needs a user name and a password: --turn-user, and --turn-pass or \
             YAKK_TURN_PASSWORD (or turn_user and turn_pass in the configuration file)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn common(args: &[&str]) -> Common {
        let mut all = vec!["yakk", "client", "-p", "1"];
        all.extend_from_slice(args);
        match crate::cli::Cli::parse_from(all).command {
            crate::cli::Command::Client(a) => a.common,
            _ => unreachable!("a client command"),
        }
    }

    #[test]
    fn the_file_fills_in_only_what_is_unset() {
        let f = || {
            parse(
                r#"
signal = "wss://rv.example.org"
stun = ["stun:rv.example.org:3478"]
turn = ["turn:rv.example.org:3478?transport=udp"]
turn_user = "alice"
turn_pass = "secret"
relay_only = true
"#,
            )
            .unwrap()
        };
        let mut c = common(&[]);
        apply(&mut c, f());
        assert_eq!(c.signal.as_deref(), Some("wss://rv.example.org"));
        assert_eq!(c.stun, ["stun:rv.example.org:3478"]);
        assert_eq!(c.turn, ["turn:rv.example.org:3478?transport=udp"]);
        assert_eq!(
            (c.turn_user.as_deref(), c.turn_pass.as_deref()),
            (Some("alice"), Some("secret"))
        );
        assert!(c.relay_only);
        let mut c = common(&[]);
        apply(&mut c, parse("relay_only = false").unwrap());
        assert!(!c.relay_only);
        // The command line wins, and a TURN server given there keeps its own credentials.
        let mut c = common(&[
            "-s",
            "127.0.0.1:6006",
            "--turn",
            "turn:other:3478",
            "--turn-user",
            "bob",
        ]);
        apply(&mut c, f());
        assert_eq!(c.signal.as_deref(), Some("127.0.0.1:6006"));
        assert_eq!(c.turn, ["turn:other:3478"]);
        assert_eq!(c.turn_user.as_deref(), Some("bob"));
        assert_eq!(c.turn_pass, None);
    }

    #[test]
    fn turn_credentials_need_a_server_and_a_server_needs_both() {
        let checked = |args: &[&str], file: &str, in_env: bool| {
            let mut c = common(args);
            apply(&mut c, parse(file).unwrap());
            check_turn(&mut c, in_env).map(|()| (c.turn_user, c.turn_pass))
        };
        let server = ["--turn", "turn:rv.example.org:3478"];
        let file = "turn = [\"turn:rv.example.org:3478\"]\nturn_user = \"alice\"";
        // A password from the environment with no server anywhere: unused, not an error.
        let pass_only = ["--turn-pass", "pw"];
        assert_eq!(checked(&pass_only, "", true).unwrap(), (None, None));
        // The same password given on the command line is a mistake to say.
        assert!(checked(&pass_only, "", false).is_err());
        assert!(checked(&["--turn-user", "bob"], "", false).is_err());
        // The server from the file, the user from the file, the password from the
        // environment (or the command line).
        assert_eq!(
            checked(&pass_only, file, true).unwrap(),
            (Some("alice".into()), Some("pw".into()))
        );
        // The user on the command line, the server from the file.
        let user_pass = ["--turn-user", "bob", "--turn-pass", "pw"];
        assert_eq!(
            checked(&user_pass, file, false).unwrap(),
            (Some("bob".into()), Some("pw".into()))
        );
        // A server without a password, or without a user name.
        assert!(checked(&server, "", false).is_err());
        assert!(checked(&[&server[..], &["--turn-user", "bob"]].concat(), "", false).is_err());
        assert!(checked(&[&server[..], &pass_only].concat(), "", true).is_err());
        assert!(checked(&[&server[..], &user_pass].concat(), "", false).is_ok());
    }

    #[test]
    fn a_mistake_in_the_file_is_said() {
        assert!(parse("signal = 3").is_err());
        assert!(parse("relay_only = \"yes\"").is_err());
        let e = parse("signall = \"x\"").unwrap_err();
        assert!(e.contains("signall"), "{e}");
        assert_eq!(parse("").unwrap(), FileConfig::default());
    }
}
