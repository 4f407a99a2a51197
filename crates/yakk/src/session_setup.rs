//! A joiner's setup, and what both sides share: turning flags and codes into a session
//! configuration, prompting for a code or password, the errors of joining, and saying what
//! connected. An owner's room, code and embedded server: `owner_setup.rs`.

use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use yakk_session::{Connection, IceServer, PathKind, SessionConfig, Version};
use zeroize::Zeroizing;

use crate::cli::Common;
use crate::code::{self, Code};
use crate::exit::Failure;
use crate::output::Out;

/// ICE servers given on the command line.
fn ice_servers(c: &Common) -> Vec<IceServer> {
    let mut v = Vec::new();
    if !c.stun.is_empty() {
        v.push(IceServer {
            urls: c.stun.clone(),
            username: None,
            credential: None,
        });
    }
    if !c.turn.is_empty() {
        v.push(IceServer {
            urls: c.turn.clone(),
            username: c.turn_user.clone(),
            credential: c.turn_pass.clone(),
        });
    }
    v
}

pub(crate) fn base_config(c: &Common, signal: String, password: String) -> SessionConfig {
    let mut cfg = SessionConfig::new(signal, password);
    cfg.allow_v1 = c.legacy || c.v1_only;
    cfg.v1_only = c.v1_only;
    cfg.ice_servers = ice_servers(c);
    cfg.ice_ips = c.ice_ips.clone();
    cfg.relay_only = c.relay_only;
    cfg.lanes = c.lanes;
    cfg
}

/// Warns when a secret came on the command line, where every user of the machine can read it.
pub(crate) fn warn_if_in_argv(out: Out, value: Option<&str>, env: &str, what: &str) {
    let Some(v) = value else { return };
    if std::env::var(env).is_ok_and(|e| e == v) {
        return;
    }
    let msg = format!(
        "the {what} on the command line can be seen by other users of this machine (ps); \
         pass it in {env} instead, or leave it out to be asked for it"
    );
    out.event(
        "warning",
        json!({"message": msg}),
        Some(&format!("Warning: {msg}.")),
    );
}

/// A joiner's configuration from the code (or room + --pw), prompting on a terminal if needed;
/// the room; and whether the code named the signalling server (an owner's embedded one).
pub fn joiner_config(
    c: &mut Common,
    mut code_args: Vec<String>,
    out: Out,
) -> anyhow::Result<(SessionConfig, String, bool)> {
    crate::config::apply_file(c)?;
    let from_args = !code_args.is_empty();
    // A code's words given apart (`417 crossbow nimble`) are one code.
    let typed = if from_args {
        let joined = Zeroizing::new(code_args.join(" "));
        code_args.iter_mut().for_each(zeroize::Zeroize::zeroize);
        joined
    } else {
        prompt_code()?
    };
    let given_pw = c.password.take().map(Zeroizing::new);
    let code = Code::parse(&typed).map_err(Failure::usage)?;
    if code.password.is_some() && from_args {
        warn_if_in_argv(out, Some(&typed), "YAKK_CODE", "code");
    }
    if given_pw.as_deref().is_some_and(|p| !p.is_empty()) {
        warn_if_in_argv(
            out,
            given_pw.as_deref().map(String::as_str),
            "YAKK_PASSWORD",
            "password",
        );
    }
    let password = match (&given_pw, &code.password) {
        // Two passwords that differ: using either could be a wrong guess, which burns the
        // owner's code (a YAKK_PASSWORD left in the environment from another session, say).
        (Some(pw), Some(in_code)) if !pw.is_empty() && code::normalize_password(pw) != *in_code => {
            return Err(Failure::usage(
                "the code carries a password and --pw (or YAKK_PASSWORD) gives another: give \
                 only one (a wrong password burns the code)",
            )
            .into());
        }
        (Some(pw), _) => code::normalize_password(pw),
        (None, Some(pw)) => pw.clone(),
        (None, None) => code::normalize_password(&prompt_password("Password: ")?),
    };
    if password.is_empty() {
        return Err(Failure::usage("the password must not be empty").into());
    }
    let signal = match (&code.server, &c.signal) {
        (Some(s), _) => s.clone(),
        (None, Some(s)) => s.clone(),
        (None, None) => {
            return Err(Failure::usage(
                "this code names no signalling server: pass --signal URL (or YAKK_SIGNAL), or ask for the full code",
            )
            .into());
        }
    };
    let from_code = code.server.is_some();
    Ok((
        base_config(c, signal, password),
        code.room.clone(),
        from_code,
    ))
}

/// A joiner's failure to join, said for people. `from_code`: the signalling server came from
/// the code, which means the owner runs it: if it cannot be reached, the owner has stopped or
/// closed the code (after a failed attempt, perhaps), which is what the joiner needs to hear.
pub fn join_failure(e: yakk_session::SessionError, from_code: bool) -> Failure {
    let f = Failure::from(e);
    if from_code && f.code == crate::exit::ExitCode::SignalUnreachable {
        return Failure::new(
            f.code,
            format!(
                "{}: this code points to the signalling server inside the yakk that made it, which \
                 can be reached only from its own network and only while it runs: if you are on \
                 another network, the sender needs a signalling server you both reach (-s, see \
                 README); otherwise it stopped, or closed the code after a failed attempt: ask \
                 for a new code",
                f.message
            ),
        );
    }
    f
}

/// Refuses to prompt where nobody can answer.
fn need_terminal(what: &str) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        return Ok(());
    }
    Err(Failure::usage(format!(
        "missing {what}: give it as an argument (no terminal to ask on)"
    ))
    .into())
}

/// A password asked for on the terminal, not shown as it is typed.
fn prompt_password(what: &str) -> anyhow::Result<Zeroizing<String>> {
    need_terminal("password")?;
    let v = rpassword::prompt_password(what).context("cannot read from the terminal")?;
    Ok(Zeroizing::new(v.trim().to_string()))
}

/// The code, asked for on the terminal. It is shown as it is typed (once read aloud, a code is
/// no secret from the person typing it, and seeing it avoids typing slips), and Tab completes
/// the words of the built-in list, as magic-wormhole's prompt does.
fn prompt_code() -> anyhow::Result<Zeroizing<String>> {
    use rustyline::error::ReadlineError;
    need_terminal("code")?;
    let config = rustyline::Config::builder()
        // The terminal itself, not stdout: with --json, stdout carries only events.
        .behavior(rustyline::Behavior::PreferTerm)
        .auto_add_history(false)
        .completion_type(rustyline::CompletionType::List)
        .build();
    let mut editor =
        rustyline::Editor::<CodeWords, rustyline::history::DefaultHistory>::with_config(config)
            .context("cannot use the terminal")?;
    editor.set_helper(Some(CodeWords(code::word_list())));
    match editor.readline("Code: ") {
        Ok(line) => Ok(Zeroizing::new(line)),
        Err(ReadlineError::Interrupted) => Err(Failure::stopped("Stopped.").into()),
        Err(ReadlineError::Eof) => Err(Failure::usage("no code given").into()),
        Err(e) => Err(anyhow::Error::new(e).context("cannot read from the terminal")),
    }
}

/// Tab completion of a code's words at the prompt.
#[derive(rustyline::Helper, rustyline::Hinter, rustyline::Highlighter, rustyline::Validator)]
struct CodeWords(Vec<&'static str>);

impl rustyline::completion::Completer for CodeWords {
    type Candidate = String;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        Ok(complete_word(&self.0, &line[..pos]))
    }
}

/// The completions of the word being typed at the end of `before` (the code up to the
/// cursor), and where that word starts. The first part of a code is the room: never completed.
fn complete_word(words: &[&'static str], before: &str) -> (usize, Vec<String>) {
    let Some(start) = before
        .rfind(|c: char| c == '-' || c.is_whitespace())
        .map(|i| i + 1)
    else {
        return (before.len(), Vec::new());
    };
    let prefix = before[start..].to_lowercase();
    if prefix.is_empty() {
        return (start, Vec::new());
    }
    let found = words
        .iter()
        .filter(|w| w.starts_with(&prefix))
        .map(|w| (*w).to_string())
        .collect();
    (start, found)
}

/// What is said once connected: the `connected` event, the yakk/1 warning, the lanes tip.
pub fn connected_event(out: Out, conn: &Connection, who: &str) {
    let path = conn.path();
    let rtt = path.rtt.map(|d| d.as_secs_f64() * 1e3);
    out.event(
        "connected",
        json!({
            "peer": who,
            "protocol": conn.version().to_string(),
            "path": path_name(path.kind),
            // How this side reaches its TURN server (udp, tcp, tls); null unless its own
            // candidate of the pair is a relay candidate.
            "relay": path.relay.map(|r| r.name()),
            // null where the stack does not say (it reports no address for a peer-reflexive
            // candidate, the one an answerer often learns its peer by).
            "local": (!path.local.is_empty()).then_some(&path.local),
            "remote": (!path.remote.is_empty()).then_some(&path.remote),
            "rtt_ms": rtt,
            "lanes": conn.lanes(),
        }),
        Some(&format!(
            "Connected to {who} ({}, {} path{}{}{})",
            conn.version(),
            path_name(path.kind),
            path.relay
                .map(|r| format!(" over {}", r.name().to_uppercase()))
                .unwrap_or_default(),
            rtt.map(|r| format!(", rtt {r:.1} ms")).unwrap_or_default(),
            match conn.lanes() {
                1 => String::new(),
                n => format!(", {n} lanes"),
            }
        )),
    );
    if conn.version() == Version::V1 {
        let msg = "this session speaks yakk/1, the original program's protocol: its key exchange is weaker than yakk/2's (PROTOCOL.md)";
        out.event(
            "warning",
            json!({"message": msg}),
            Some(&format!("Warning: {msg}.")),
        );
    }
    if let Some(hint) = lanes_hint(conn.version(), conn.lanes(), path.rtt) {
        out.say(&hint);
    }
}

/// The ICE candidate type name of a path, as in SDP.
fn path_name(k: PathKind) -> &'static str {
    match k {
        PathKind::Host => "host",
        PathKind::Srflx => "srflx",
        PathKind::Prflx => "prflx",
        PathKind::Relay => "relay",
    }
}

/// A tip for people on a long path with one lane (chosen, or `auto` misled by a quick
/// signalling server), which only yakk/2 peers can widen.
fn lanes_hint(version: Version, lanes: usize, rtt: Option<Duration>) -> Option<String> {
    let rtt = rtt?;
    (version == Version::V2 && lanes == 1 && rtt >= yakk_session::LONG_PATH).then(|| {
        format!(
            "This path is long ({:.0} ms round trip): if it loses packets, `--lanes 32` on \
             either side can make transfers several times faster.",
            rtt.as_secs_f64() * 1e3
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tab_completes_the_word_being_typed_but_not_the_room() {
        let words = code::word_list();
        let (at, found) = complete_word(&words, "417-cross");
        assert_eq!(at, 4);
        assert!(!found.is_empty());
        assert!(found.iter().all(|w| w.starts_with("cross")), "{found:?}");
        // After a space, in capitals: the same words.
        let (at, upper) = complete_word(&words, "417 CROSS");
        assert_eq!((at, &upper), (4, &found));
        // The room, and an empty word, are not completed; nor is a word of no list.
        assert!(complete_word(&words, "41").1.is_empty());
        assert!(complete_word(&words, "417-").1.is_empty());
        assert!(complete_word(&words, "417-qqqq").1.is_empty());
        // Every word of the list completes from its whole self.
        for w in &words {
            assert!(
                complete_word(&words, &format!("1-{w}"))
                    .1
                    .contains(&w.to_string())
            );
        }
    }

    #[test]
    fn lanes_hint_only_for_one_lane_yakk2_on_a_long_path() {
        let ms = |n| Some(Duration::from_millis(n));
        let tip = lanes_hint(Version::V2, 1, ms(52)).expect("a tip on a 52 ms path");
        assert!(tip.contains("52 ms") && tip.contains("--lanes 32"), "{tip}");
        assert_eq!(lanes_hint(Version::V2, 1, ms(3)), None, "short path");
        assert_eq!(lanes_hint(Version::V2, 1, None), None, "round trip unknown");
        assert_eq!(lanes_hint(Version::V2, 32, ms(52)), None, "lanes already");
        assert_eq!(
            lanes_hint(Version::V1, 1, ms(52)),
            None,
            "yakk/1 has no lanes"
        );
    }
}
