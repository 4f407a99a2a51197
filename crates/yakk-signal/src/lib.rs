//! yakk's signalling server: hands out rooms and relays small JSON envelopes between the
//! WebSockets (mailboxes) of a room, so that two peers can exchange their encrypted WebRTC
//! offer, answer and candidates. It sees no keys. The wire behaviour is PROTOCOL.md §1, hardened:
//! the server sets `Sender`, never reuses mailbox ids, never replaces a live room, and enforces
//! limits on message size, rooms, mailboxes, connections, request rates and lifetimes.
//!
//! Two ways in:
//! - [`run`] with [`SignalArgs`] (the flags of `yakk signal`): serve until SIGINT/SIGTERM;
//! - [`spawn`] with a [`Config`] and a bound listener: embed the server, e.g. on `127.0.0.1:0`.
//!
//! Layout: [`store`] (the [`store::RoomStore`] trait the connections use, and its in-process
//! implementation over [`registry`]), [`redis_store`] (the same rooms in Redis, shared by
//! several instances: `yakk signal --redis`), [`registry`] (pure room state, driven by a clock
//! the caller passes),
//! [`ratelimit`] (pure per-client token buckets), [`ice`] (ICE servers and TURN credentials),
//! [`metrics`] (counters and `/metrics`), [`stun`] (an optional STUN Binding responder),
//! [`turn`] (the optional embedded TURN relay, `--turn-listen`), `server` (HTTP, TLS, sweep,
//! shutdown), `upgrade` (the `/ws/` handshake and its query), `conn` (one WebSocket's task),
//! `mailbox` (how the store reaches a socket, and why a socket is closed) and `web` (the
//! browser peer's files, served at `/`, embedded by `build.rs` when `web/dist/` was built).
//!
//! Choices worth knowing:
//! - A frame that is not an envelope (not JSON, wrong types, missing fields, binary garbage)
//!   is answered with `{"Msg_type":"YAKKMSG_ERROR","Payload":"Malformed message","Sender":0,
//!   "Recipient":0}` (the shape of the server's other errors) and the socket stays open. A text
//!   frame that is not UTF-8 breaks the WebSocket protocol itself and is closed with code 1007.
//! - Relayed messages go out as binary frames holding the envelope's compact JSON, as a
//!   yakk/1 server relays them; the server's own replies are binary frames too.
//! - `maxPeers=N` on create admits N joiners over the room's whole life, so a one-to-one room
//!   (`maxPeers=1`) cannot be entered by anyone once its joiner was admitted.
//! - A message for a mailbox id not in the room, or addressed to its own sender, is dropped
//!   silently (counted, logged at debug). Only a message delivered to another mailbox counts as
//!   activity for the idle timeout: a lone socket talking to itself is closed like a silent one.
//! - A room whose owner has left admits no joiner (`No such room`): nobody is there to let
//!   one in, and its code stopped working when its owner stopped or burned it.
//! - A socket that is in no room (its join was refused: unknown room, room full) is closed
//!   after the lobby timeout (10 s by default), counted from its connection.
//! - At most `--max-connections-per-ip` WebSockets (64 by default) per client address (IPv6:
//!   per /64); more get HTTP 429. Tests and load generators that open many sockets from
//!   loopback set it (0 lifts it) rather than relying on an exemption.
//! - TURN credentials from `--turn-secret` are valid for 10 minutes by default: see [`ice`] for
//!   who gets them and why that lifetime.
#![forbid(unsafe_code)]
// No unwrap, expect, panic or unreachable outside tests: errors are returned, or an
// `#[allow]` beside the call says why it cannot fail.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![cfg_attr(not(test), deny(clippy::panic, clippy::unreachable))]

mod config;
mod conn;
pub mod ice;
mod mailbox;
pub mod metrics;
pub mod ratelimit;
pub mod redis_store;
pub mod registry;
mod server;
pub mod store;
pub mod stun;
pub mod turn;
mod upgrade;
mod web;

pub use config::{
    Config, ConfigError, SignalArgs, TURN_PASSWORD_ENV, tls_config, tls_config_from_files,
};
pub use conn::errors;
pub use server::{ServerError, ServerHandle, spawn};
pub use web::app_built;

use anyhow::Context as _;

/// Serves `yakk signal` until SIGINT or SIGTERM, then shuts down gracefully.
pub async fn run(args: SignalArgs) -> anyhow::Result<()> {
    let config = Config::from_args(&args).context("invalid signalling server configuration")?;
    raise_fd_limit(config.max_connections);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: args.listen,
            source,
        })?;
    let tls = config.tls.is_some();
    let relay = config.relay.clone();
    let server = spawn(config, listener).await?;
    // Said without -v: an operator needs to know where to point clients.
    let addr = server.local_addr();
    let (ws, http) = if tls {
        ("wss", "https")
    } else {
        ("ws", "http")
    };
    eprintln!(
        "yakk signal: listening on {ws}://{addr} (clients: -s {ws}://{addr}; metrics: {http}://{addr}/metrics). Ctrl-C stops it."
    );
    if let (Some(rc), Some(relay_addr)) = (&relay, server.relay_addr()) {
        eprintln!(
            "yakk signal: TURN relay on udp and tcp {relay_addr}{}, relayed addresses {}:{}-{}; room members get its credentials{}",
            if tls {
                format!(" and over TLS on {addr} (turns:)")
            } else {
                String::new()
            },
            rc.relay_ip,
            rc.ports.0,
            rc.ports.1,
            if args.turn_secret.is_some() {
                ""
            } else {
                " (from a random secret: no --turn-secret given)"
            }
        );
    }
    let stun = match args.stun_listen {
        Some(addr) => {
            let socket = tokio::net::UdpSocket::bind(addr)
                .await
                .with_context(|| format!("cannot listen for STUN on udp {addr}"))?;
            Some(tokio::spawn(stun::serve(socket)))
        }
        None => None,
    };
    wait_for_signal().await?;
    if let Some(t) = stun {
        t.abort();
    }
    server.shutdown().await;
    Ok(())
}

/// Each WebSocket holds one file descriptor; make sure the process may open enough.
fn raise_fd_limit(max_connections: usize) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < max_connections as u64 + 64 => tracing::warn!(
            "the open-file limit is {limit}: --max-connections {max_connections} needs {} \
             (one per WebSocket, and a few more for the server itself); raise it (ulimit -n) \
             or lower --max-connections",
            max_connections as u64 + 64
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot raise the open-file limit: {e}"),
    }
}

async fn wait_for_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("cannot listen for SIGINT")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("cannot listen for Ctrl-C")?;
    Ok(())
}
