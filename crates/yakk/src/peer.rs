//! Shared by the peer commands: turning flags and codes into a session configuration, running the
//! embedded signalling server when none is configured, and announcing the code.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::Context;
use serde_json::json;
use yakk_session::{IceServer, SessionConfig};
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
    cfg.allow_legacy = c.legacy || c.legacy_only;
    cfg.legacy_only = c.legacy_only;
    cfg.ice_servers = ice_servers(c);
    cfg.ice_ips = c.ice_ips.clone();
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
pub async fn owner_setup(c: &mut Common, out: Out) -> anyhow::Result<OwnerSetup> {
    let given = c.password.take().map(Zeroizing::new);
    let password = match given {
        Some(p) if p.is_empty() => return Err(Failure::usage("--pw must not be empty").into()),
        Some(p) => {
            warn_if_in_argv(out, Some(&p), "YAKK_PASSWORD", "password");
            p.to_string()
        }
        None => code::generate_password(usize::from(c.code_length)),
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

/// Prints the code and the command the joiner should run (and a QR code of the code with `qr`).
pub fn announce(out: Out, setup: &OwnerSetup, room: &str, joiner_cmd: &str, qr: bool) {
    let code = Code {
        room: room.to_string(),
        password: Some(setup.config.password.to_string()),
        server: setup.code_server.clone(),
    }
    .to_code_string();
    let code = Zeroizing::new(code);
    let command = Zeroizing::new(joiner_command(setup, &code, joiner_cmd));
    out.event(
        "code",
        json!({"code": code.as_str(), "room": room, "command": command.as_str()}),
        Some(&format!(
            "Code: {}\nOn the other computer run:\n    {}\n",
            code.as_str(),
            command.as_str()
        )),
    );
    if qr && !out.json {
        match qrcode::QrCode::new(code.as_bytes()) {
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

/// A joiner's configuration from the code (or room + --pw), prompting on a terminal if needed.
pub fn joiner_config(
    c: &mut Common,
    code_arg: Option<String>,
    out: Out,
) -> anyhow::Result<(SessionConfig, String)> {
    let from_args = code_arg.is_some();
    let typed = match code_arg {
        Some(s) => Zeroizing::new(s),
        None => prompt("Code: ")?,
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
        (Some(pw), _) => pw.to_string(),
        (None, Some(pw)) => pw.clone(),
        (None, None) => prompt("Password: ")?.to_string(),
    };
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
    Ok((base_config(c, signal, password), code.room.clone()))
}

fn prompt(what: &str) -> anyhow::Result<Zeroizing<String>> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        return Err(Failure::usage(format!(
            "missing {}: give it as an argument (no terminal to ask on)",
            what.trim_end_matches(": ").to_lowercase()
        ))
        .into());
    }
    let v = rpassword::prompt_password(what).context("cannot read from the terminal")?;
    Ok(Zeroizing::new(v.trim().to_string()))
}
