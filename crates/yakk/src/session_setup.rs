//! Shared by the peer commands: turning flags and codes into a session configuration, running the
//! embedded signalling server when none is configured, announcing the code, and saying what
//! connected.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
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

fn base_config(c: &Common, signal: String, password: String) -> SessionConfig {
    let mut cfg = SessionConfig::new(signal, password);
    cfg.allow_v1 = c.legacy || c.v1_only;
    cfg.v1_only = c.v1_only;
    cfg.ice_servers = ice_servers(c);
    cfg.ice_ips = c.ice_ips.clone();
    cfg.relay_only = c.relay_only;
    cfg.lanes = c.lanes;
    cfg
}

/// A room owner's setup: the configuration, the code to print, and the embedded server (kept
/// alive by the caller) when no server was configured.
pub struct OwnerSetup {
    pub config: SessionConfig,
    /// The server part of the code, when the joiner cannot know it.
    pub code_server: Option<String>,
    /// Held only to keep the embedded server running as long as the setup lives.
    pub _embedded: Option<yakk_signal::ServerHandle>,
}

impl OwnerSetup {
    /// With the embedded server, once the room is closed: waits (at most `LINGER`) until every
    /// joiner's socket has left it, so that what the owner sent last (the key confirmation a
    /// wrong guess is judged by) reaches the joiner before this process, and the server in it,
    /// ends. Without it the joiner could see its signalling connection drop instead of hearing
    /// that its password was wrong.
    pub async fn drain_embedded(&self) {
        const LINGER: std::time::Duration = std::time::Duration::from_secs(3);
        let Some(server) = &self._embedded else {
            return;
        };
        let until = tokio::time::Instant::now() + LINGER;
        while server.counts().1 > 0 && tokio::time::Instant::now() < until {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

/// The owner's setup; the password given in `c` is wiped from it once copied.
pub async fn owner_setup(c: &mut Common, code_length: u8, out: Out) -> anyhow::Result<OwnerSetup> {
    crate::config::apply_file(c)?;
    let given = c.password.take().map(Zeroizing::new);
    let password = match given {
        Some(given) => {
            // The form a joiner's code takes after it is typed (see `code::normalize_password`).
            let p = code::normalize_password(&given);
            if p.is_empty() {
                return Err(Failure::usage("--pw must not be empty").into());
            }
            warn_if_in_argv(out, Some(&given), "YAKK_PASSWORD", "password");
            p
        }
        None => code::generate_password(usize::from(code_length)),
    };
    let (signal, code_server, embedded) = match &c.signal {
        Some(s) => (s.clone(), None, None),
        None => {
            let listener =
                tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
                    .await
                    .context("cannot open a port for the embedded signalling server")?;
            let port = listener.local_addr()?.port();
            let handle = yakk_signal::spawn(yakk_signal::Config::default(), listener).await?;
            let reach = reachable_ip(&c.ice_ips);
            let addr = SocketAddr::new(reach, port).to_string();
            (format!("127.0.0.1:{port}"), Some(addr), Some(handle))
        }
    };
    Ok(OwnerSetup {
        config: base_config(c, signal, password),
        code_server,
        _embedded: embedded,
    })
}

/// The address a joiner can reach this machine at: the first --ice-ip, else the first
/// non-loopback IPv4 address of an interface, else loopback.
fn reachable_ip(ice_ips: &[IpAddr]) -> IpAddr {
    if let Some(ip) = ice_ips.first() {
        return *ip;
    }
    if_addrs::get_if_addrs()
        .ok()
        .and_then(|ifs| {
            ifs.into_iter()
                .map(|i| i.ip())
                .find(|ip| ip.is_ipv4() && !ip.is_loopback())
        })
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// The command the other side should run: the code in `YAKK_CODE` (the environment of a
/// process is private to its user, its arguments are not: `ps` shows them to everyone), and the
/// signalling server when the code does not name it.
fn joiner_command(setup: &OwnerSetup, code: &str, joiner_cmd: &str) -> String {
    let quote = |s: &str| {
        shlex::try_quote(s)
            .map(|q| q.into_owned())
            .unwrap_or_else(|_| s.to_string())
    };
    let mut cmd = format!("YAKK_CODE={} yakk {joiner_cmd}", quote(code));
    if setup.code_server.is_none() {
        cmd.push_str(&format!(" -s {}", quote(&setup.config.signal)));
    }
    cmd
}

/// The browser page that joins with `code`: with the embedded signalling server (which serves
/// the web app, crates/yakk-signal/src/web.rs) a phone or any browser that opens it receives
/// the files with nothing installed. The code travels in the fragment, never sent to a server.
fn page_url(setup: &OwnerSetup, room: &str, joiner_cmd: &str) -> Option<String> {
    let addr = setup.code_server.as_ref()?;
    (joiner_cmd == "filereceive")
        .then(|| format!("http://{addr}/#{room}-{}", setup.config.password.as_str()))
}

/// Prints the code and the command the joiner should run (and a QR code with `qr`: of the
/// browser page's link when the embedded server serves it to receivers, else of the code).
pub fn announce(out: Out, setup: &OwnerSetup, room: &str, joiner_cmd: &str, qr: bool) {
    let code = Code {
        room: room.to_string(),
        password: Some(setup.config.password.to_string()),
        server: setup.code_server.clone(),
    }
    .to_code_string();
    let code = Zeroizing::new(code);
    let command = Zeroizing::new(joiner_command(setup, &code, joiner_cmd));
    let url = page_url(setup, room, joiner_cmd).map(Zeroizing::new);
    let mut human = format!(
        "Code: {}\nOn the other computer run:\n    {}\n",
        code.as_str(),
        command.as_str()
    );
    if let Some(url) = &url {
        human.push_str(&format!("Or open in a browser:\n    {}\n", url.as_str()));
    }
    out.event(
        "code",
        json!({
            "code": code.as_str(),
            "room": room,
            "command": command.as_str(),
            "url": url.as_ref().map(|u| u.as_str()),
        }),
        Some(&human),
    );
    if qr && !out.json {
        let shown = url.as_ref().map_or(code.as_str(), |u| u.as_str());
        match qrcode::QrCode::new(shown.as_bytes()) {
            Ok(q) => eprintln!(
                "{}",
                q.render::<qrcode::render::unicode::Dense1x2>()
                    .quiet_zone(true)
                    .build()
            ),
            Err(e) => tracing::warn!("cannot draw the QR code: {e}"),
        }
    }
}

/// Warns when a secret came on the command line, where every user of the machine can read it.
fn warn_if_in_argv(out: Out, value: Option<&str>, env: &str, what: &str) {
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
    fn the_page_link_is_given_only_for_files_through_the_embedded_server() {
        let setup = |server: Option<&str>| OwnerSetup {
            config: SessionConfig::new("127.0.0.1:1", "crossbow-nimble"),
            code_server: server.map(str::to_string),
            _embedded: None,
        };
        let embedded = setup(Some("192.168.1.20:40125"));
        assert_eq!(
            page_url(&embedded, "417", "filereceive").as_deref(),
            Some("http://192.168.1.20:40125/#417-crossbow-nimble")
        );
        assert_eq!(page_url(&embedded, "417", "client -p 10022"), None);
        assert_eq!(page_url(&setup(None), "417", "filereceive"), None);
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
