//! `yakk server` and `yakk client`: port forwarding between a room's owner and its joiners.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use yakk_forward::Stats;
use yakk_session::{Connection, Owner, OwnerEvent};

use crate::cli::{ClientArgs, ServerArgs};
use crate::exit::{ExitCode, Failure};
use crate::interrupt::Interrupt;
use crate::output::Out;
use crate::owner_setup;
use crate::session_setup::{self, connected_event};

/// The local port to suggest to the joiner: the shared one, unless it is a privileged port
/// (below 1024), which the joiner could not listen on without root and which its own service
/// (its sshd for port 22) may hold.
fn suggested_port(port: u16) -> u16 {
    if port < 1024 { 10000 + port } else { port }
}

/// A shared port where nothing listens is a mistake people make (a service not started yet,
/// the wrong port): say so at once instead of leaving joiners with empty replies. Only a
/// warning: the service may start later.
fn warn_if_nothing_listens(out: Out, host: &str, port: u16) {
    if !nothing_listens(host, port) {
        return;
    }
    let msg = format!(
        "nothing listens on {host}:{port}: joiners' connections will fail until something does"
    );
    out.event(
        "warning",
        json!({"message": msg}),
        Some(&format!("Warning: {msg}.")),
    );
}

/// Whether no socket of this machine listens on `host:port`, for a local host; `false` when it
/// cannot tell (another machine). Asked by binding the address for an instant rather than by
/// connecting: a connection would be one the service accepts, and a one-shot service (`nc -l`)
/// would spend itself on it.
fn nothing_listens(host: &str, port: u16) -> bool {
    let free = |ip: IpAddr| std::net::TcpListener::bind((ip, port)).is_ok();
    match host.trim_start_matches('[').trim_end_matches(']') {
        "localhost" => {
            free(IpAddr::from([127, 0, 0, 1])) && free(IpAddr::from(std::net::Ipv6Addr::LOCALHOST))
        }
        h => match h.parse::<IpAddr>() {
            Ok(ip) if ip.is_loopback() => free(ip),
            _ => false,
        },
    }
}

pub async fn server(mut args: ServerArgs, out: Out) -> anyhow::Result<()> {
    let mut setup = owner_setup::owner_setup(&mut args.common, args.owner.code_length, out).await?;
    setup.config.max_peers = args.max_peers;
    setup.config.allow_retries = args.owner.allow_retries;
    let target = format!("{}:{}", args.host, args.port);
    let interrupt = Interrupt::listen();
    let owner = Owner::create(setup.config.clone())
        .await
        .map_err(Failure::from)?;
    owner_setup::announce(
        out,
        &setup,
        &owner.room,
        &format!("client -p {}", suggested_port(args.port)),
        args.owner.qr,
    );
    out.say(&format!("Sharing {target}. Press Ctrl-C to stop."));
    warn_if_nothing_listens(out, &args.host, args.port);
    let stats = Arc::new(Stats::default());
    let mut tunnels = tokio::task::JoinSet::new();
    // The joiners' connections, to close on Ctrl-C (so that they hear we left).
    let mut live: Vec<std::sync::Weak<Connection>> = Vec::new();
    let mut joiners = 0u64;
    // `None` once the room is closed (code burned, or the signalling server gone): no new
    // joiners, existing tunnels keep running; `closed` says why, for the exit once they end.
    let mut owner = Some(owner);
    let mut closed: Option<Failure> = None;
    loop {
        if owner.is_none() && tunnels.is_empty() {
            break;
        }
        let ev = tokio::select! {
            Some(ev) = async {
                match owner.as_mut() {
                    Some(o) => Some(o.next().await),
                    None => None,
                }
            }, if owner.is_some() => ev,
            Some(_) = tunnels.join_next(), if !tunnels.is_empty() => continue,
            () = interrupt.wait() => {
                close_all(live.iter().filter_map(std::sync::Weak::upgrade)).await;
                return Err(Failure::stopped("Stopped.").into());
            }
        };
        match ev {
            None => {
                let lost = Failure::new(
                    ExitCode::SignalUnreachable,
                    "lost the connection to the signalling server; the room is gone",
                );
                if tunnels.is_empty() {
                    return Err(lost.into());
                }
                // Tunnels no longer need the server: they keep working until they end.
                owner = None;
                out.event(
                    "warning",
                    json!({"message": "lost the connection to the signalling server: no new joiners can come; connected ones keep working"}),
                    Some("Lost the connection to the signalling server: no new joiners can come; connected ones keep working."),
                );
                closed = Some(lost);
            }
            Some(OwnerEvent::Failed { peer, error }) => {
                let f = Failure::from(error);
                let msg = if f.code == ExitCode::WrongPassword {
                    "someone tried a wrong password".to_string()
                } else {
                    f.message
                };
                out.event(
                    "warning",
                    json!({"joiner": peer, "message": msg}),
                    Some(&format!("A joiner failed: {msg}")),
                );
            }
            Some(OwnerEvent::Burned) => {
                // The session closed the room; wait for the failed joiner's last message
                // (our key confirmation, from which it learns its password was wrong).
                if let Some(o) = owner.take() {
                    o.close().await;
                }
                setup.drain_embedded().await;
                closed = Some(Failure::new(
                    ExitCode::WrongPassword,
                    "someone tried a wrong password, so the code was burned: run yakk server again for a new code",
                ));
                out.event(
                    "burned",
                    json!({"message": "the code is burned after a failed password attempt"}),
                    Some("The code is burned: nobody else can join with it. Run yakk server again for a new code."),
                );
            }
            Some(OwnerEvent::Connected(conn)) => {
                joiners += 1;
                let who = format!("joiner {joiners}");
                connected_event(out, &conn, &who);
                let conn: Arc<_> = Arc::from(conn);
                live.retain(|c| c.strong_count() > 0);
                live.push(Arc::downgrade(&conn));
                let (target, stats) = (target.clone(), stats.clone());
                tunnels.spawn(async move {
                    let why = yakk_forward::serve_owner(conn, target, stats, notices(out)).await;
                    out.event(
                        "disconnected",
                        json!({"peer": who, "reason": why}),
                        Some(&format!("{who} went away: {why}")),
                    );
                });
            }
        }
    }
    Err(closed
        .unwrap_or_else(|| Failure::new(ExitCode::Error, "the room is closed"))
        .into())
}

pub async fn client(mut args: ClientArgs, out: Out) -> anyhow::Result<()> {
    let (config, room, from_code) =
        session_setup::joiner_config(&mut args.common, std::mem::take(&mut args.code), out)?;
    // Bind first: a port in use is the user's to fix before anyone connects.
    let addr = SocketAddr::new(args.bind, args.port);
    let listener = yakk_forward::listen(addr)
        .map_err(|e| Failure::usage(format!("cannot listen on {addr}: {e}")))?;
    let local = listener.local_addr().context("listener address")?;
    let interrupt = Interrupt::listen();
    let conn = tokio::select! {
        c = yakk_session::join(config, &room) => c.map_err(|e| session_setup::join_failure(e, from_code))?,
        () = interrupt.wait() => return Err(Failure::stopped("Stopped before connecting.").into()),
    };
    connected_event(out, &conn, "owner");
    out.event(
        "listening",
        json!({"address": local.to_string()}),
        Some(&format!(
            "Forwarding {local} to the owner. Press Ctrl-C to stop."
        )),
    );
    let conn = Arc::new(conn);
    let stats = Arc::new(Stats::default());
    tokio::select! {
        why = yakk_forward::serve_joiner(conn.clone(), listener, stats, notices(out)) => {
            Err(Failure::new(ExitCode::PeerGone, format!("the owner went away: {why}")).into())
        }
        () = interrupt.wait() => {
            close_all([conn]).await;
            Err(Failure::stopped("Stopped.").into())
        }
    }
}

/// What the forwarding layer notices about single connections, said as warnings.
fn notices(out: Out) -> yakk_forward::Notify {
    Arc::new(move |n: yakk_forward::Notice| {
        let msg = n.to_string();
        out.event(
            "warning",
            json!({"message": msg}),
            Some(&format!("Warning: {msg}.")),
        );
    })
}

/// Closes these connections so that their peers hear we left (rather than find out from a
/// silence), waiting at most a second: Ctrl-C must not hang.
async fn close_all(conns: impl IntoIterator<Item = Arc<Connection>>) {
    let all = futures::future::join_all(conns.into_iter().map(|c| async move { c.close().await }));
    let _ = tokio::time::timeout(Duration::from_secs(1), all).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privileged_ports_are_not_suggested_to_the_joiner() {
        assert_eq!(suggested_port(22), 10022);
        assert_eq!(suggested_port(443), 10443);
        assert_eq!(suggested_port(8080), 8080);
    }
}
