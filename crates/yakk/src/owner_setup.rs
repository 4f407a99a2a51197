//! A room owner's setup: the password (given or generated), the embedded signalling server when
//! none is configured, and announcing the code, the joiner's command and the browser link.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::Context;
use serde_json::json;
use yakk_session::SessionConfig;
use zeroize::Zeroizing;

use crate::cli::Common;
use crate::code::{self, Code};
use crate::exit::Failure;
use crate::output::Out;
use crate::session_setup::{base_config, warn_if_in_argv};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
