//! The async drivers: they feed envelopes from the signalling server and events from the peer
//! connection into a [`Handshake`], and carry out its actions, until the peer connection is up.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use yakk_transport::{Disconnect, PathInfo, Peer, PeerEvent, TransportConfig};
use yakk_wire::{Envelope, IceServer};

use crate::handshake::{Action, Handshake, HandshakeError, Params, Role, Version};
use crate::rendezvous::{self, Membership};
use crate::session::{Command, Outcome, Session};
use crate::{Connection, SessionConfig, SessionError};

/// How long a side that gives up (a failed joiner, a closing owner) waits for its last
/// signalling messages to go out.
pub(crate) const FINISH_WAIT: Duration = Duration::from_secs(2);

fn transport_config(cfg: &SessionConfig, advertised: &[IceServer], v: Version) -> TransportConfig {
    let mut ice_servers = cfg.ice_servers.clone();
    ice_servers.extend(advertised.iter().cloned());
    TransportConfig {
        ice_servers,
        ice_ips: cfg.ice_ips.clone(),
        max_message: match v {
            Version::V1 => 4096,
            Version::V2 => 64 * 1024,
        },
        half_close: v == Version::V2,
        udp_buffer: 4 * 1024 * 1024,
        relay_only: cfg.relay_only,
    }
}

/// Whether any of these ICE servers is a TURN server (`turn:` or `turns:`).
fn has_turn<'a>(servers: impl IntoIterator<Item = &'a IceServer>) -> bool {
    servers.into_iter().flat_map(|s| &s.urls).any(|u| {
        let u = u.trim().to_ascii_lowercase();
        u.starts_with("turn:") || u.starts_with("turns:")
    })
}

/// With [`SessionConfig::relay_only`], a relay is the only path: without any TURN server
/// (configured here or advertised by the signalling server) no peer could ever be reached,
/// so say so at once rather than after the ICE timeout. Otherwise starts the transport's
/// warm-up for these servers.
pub(crate) fn check_relay(
    cfg: &SessionConfig,
    advertised: &[IceServer],
) -> Result<(), SessionError> {
    if cfg.relay_only && !has_turn(cfg.ice_servers.iter().chain(advertised)) {
        tracing::info!("--relay-only, and no TURN server is configured or advertised");
        return Err(SessionError::NoPath);
    }
    // The servers are known: what the peer connection will ask about them first (does the
    // relay answer over UDP?) can be found out during the key exchange.
    let mut all = cfg.ice_servers.clone();
    all.extend(advertised.iter().cloned());
    yakk_transport::warm_up(&all);
    Ok(())
}

/// Runs one handshake to a connected peer. `incoming` carries only this peer's envelopes. On
/// failure, also says whether this joiner's wrong password burned the owner's code.
pub(crate) async fn run(
    hs: Handshake,
    first_actions: Vec<Action>,
    incoming: mpsc::Receiver<Envelope>,
    outgoing: mpsc::Sender<Envelope>,
    ctx: Context,
) -> Result<Connection, (SessionError, bool)> {
    let role = ctx.role;
    let s = Session::new(hs, role, first_actions, ctx.cfg.connect_timeout, now());
    drive(s, incoming, outgoing, ctx).await
}

/// The time as the session core sees it (tokio's clock, so that paused time applies).
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// What a handshake's driver knows of its side.
pub(crate) struct Context {
    pub(crate) cfg: Arc<SessionConfig>,
    /// ICE servers the signalling server advertised.
    pub(crate) advertised: Arc<Vec<IceServer>>,
    pub(crate) role: Role,
    /// Set once the key is confirmed (for an owner: the joiner was admitted).
    pub(crate) confirmed: Arc<AtomicBool>,
}

/// One peer connection of the session while it is negotiated.
struct Lane {
    peer: Peer,
    path: Option<PathInfo>,
}

/// Makes the peer connection of `lane` and forwards its events, tagged with the lane, to
/// `events` for as long as both live.
async fn new_lane(
    tc: &TransportConfig,
    lane: u32,
    events: &mpsc::Sender<(u32, PeerEvent)>,
) -> Result<Peer, SessionError> {
    let (p, mut ev) = Peer::new(tc.clone()).await?;
    let tx = events.clone();
    tokio::spawn(async move {
        while let Some(e) = ev.recv().await {
            if tx.send((lane, e)).await.is_err() {
                break;
            }
        }
    });
    Ok(p)
}

/// The peer connections of a session while it is negotiated, by lane; `None` for a lane
/// that is gone or not made yet.
struct Lanes {
    lanes: Vec<Option<Lane>>,
    events: mpsc::Sender<(u32, PeerEvent)>,
}

impl Lanes {
    fn peer(&self, lane: u32) -> Result<&Peer, SessionError> {
        self.lanes
            .get(lane as usize)
            .and_then(|l| l.as_ref())
            .map(|l| &l.peer)
            .ok_or(SessionError::Internal("no peer connection on this lane"))
    }

    /// Carries out one command of the core, and reports back to it.
    async fn execute(
        &mut self,
        c: Command,
        s: &mut Session,
        outgoing: &mpsc::Sender<Envelope>,
        ctx: &Context,
    ) {
        match c {
            Command::Send(env) => {
                if outgoing.send(env).await.is_err() {
                    s.on_send_failed();
                }
            }
            Command::Notify(env) => {
                let _ = outgoing.send(env).await;
            }
            Command::CreatePeer { lane, version } => {
                let tc = transport_config(&ctx.cfg, &ctx.advertised, version);
                match new_lane(&tc, lane, &self.events).await {
                    Ok(peer) => {
                        let i = lane as usize;
                        if self.lanes.len() <= i {
                            self.lanes.resize_with(i + 1, || None);
                        }
                        self.lanes[i] = Some(Lane { peer, path: None });
                    }
                    Err(e) => s.on_failure(lane, e),
                }
            }
            Command::Tune {
                lane,
                flow,
                opener_closes,
                small_bursts,
                lanes,
            } => {
                if let Ok(p) = self.peer(lane) {
                    crate::connection::tune_lane(p, flow, opener_closes, small_bursts, lanes);
                }
            }
            Command::MakeOffer(lane) => {
                let sdp = match self.peer(lane) {
                    Ok(p) => p.create_offer().await.map_err(SessionError::from),
                    Err(e) => Err(e),
                };
                s.on_description(lane, sdp);
            }
            Command::AcceptOffer(lane, offer) => {
                let sdp = match self.peer(lane) {
                    Ok(p) => p.accept_offer(&offer).await.map_err(SessionError::from),
                    Err(e) => Err(e),
                };
                s.on_description(lane, sdp);
            }
            Command::AcceptAnswer(lane, answer) => {
                let r = match self.peer(lane) {
                    Ok(p) => p.accept_answer(&answer).await.map_err(SessionError::from),
                    Err(e) => Err(e),
                };
                if let Err(e) = r {
                    s.on_failure(lane, e);
                }
            }
            Command::AddCandidate(lane, c) => {
                if let Ok(p) = self.peer(lane)
                    && let Err(e) = p.add_remote_candidate(c).await
                {
                    tracing::debug!(lane, "ignoring a candidate the stack refused: {e}");
                }
            }
            Command::CloseLane(lane) => {
                if let Some(l) = self.lanes.get_mut(lane as usize).and_then(Option::take) {
                    tokio::spawn(async move { l.peer.close().await });
                }
            }
        }
    }
}

/// The thin loop around the session core: envelopes, peer events and the clock go in, its
/// commands are carried out, until it has an outcome.
async fn drive(
    mut s: Session,
    mut incoming: mpsc::Receiver<Envelope>,
    outgoing: mpsc::Sender<Envelope>,
    ctx: Context,
) -> Result<Connection, (SessionError, bool)> {
    let (ev_tx, mut ev_rx) = mpsc::channel::<(u32, PeerEvent)>(256);
    let mut lanes = Lanes {
        lanes: Vec::new(),
        events: ev_tx,
    };
    loop {
        while let Some(c) = s.poll_command() {
            lanes.execute(c, &mut s, &outgoing, &ctx).await;
        }
        if s.is_confirmed() {
            ctx.confirmed.store(true, Ordering::Relaxed);
        }
        match s.poll_outcome(now()) {
            Some(Outcome::Connected {
                version,
                agreed,
                up,
            }) => {
                let Lanes { lanes, events } = lanes;
                drop(events);
                return connection(lanes, &up, ev_rx, version, agreed)
                    .map_err(|e| (e, s.burned_room()));
            }
            Some(Outcome::Failed(e)) => return Err((e, s.burned_room())),
            None => {}
        }
        let wake = tokio::time::Instant::from_std(s.poll_timeout());
        tokio::select! {
            env = incoming.recv() => match env {
                Some(env) => s.on_message(&env, now()),
                None => s.on_signal_end(),
            },
            ev = ev_rx.recv() => match ev {
                Some((lane, PeerEvent::LocalCandidate(c))) => s.on_local_candidate(lane, c),
                Some((lane, PeerEvent::Connected(path))) => {
                    log_path(lane, &path);
                    if let Some(Some(l)) = lanes.lanes.get_mut(lane as usize) {
                        l.path = Some(path);
                    }
                    s.on_connected(lane, now());
                }
                Some((lane, PeerEvent::Disconnected(why))) => s.on_disconnected(lane, why),
                None => s.on_disconnected(0, Disconnect::Closed),
            },
            _ = tokio::time::sleep_until(wake) => s.handle_timeout(now()),
        }
    }
}

fn log_path(lane: u32, path: &PathInfo) {
    tracing::info!(
        lane,
        "connected over a {} path{} ({} -> {}), rtt {}",
        format!("{:?}", path.kind).to_lowercase(),
        path.relay
            .map(|r| format!(" (TURN over {})", r.name()))
            .unwrap_or_default(),
        path.local,
        path.remote,
        path.rtt
            .map(|d| format!("{:.1} ms", d.as_secs_f64() * 1e3))
            .unwrap_or_else(|| "not measured yet".into())
    );
}

/// The connection, over the lanes `up` (lane 0 first); the core has closed the others.
fn connection(
    mut lanes: Vec<Option<Lane>>,
    up: &[u32],
    events: mpsc::Receiver<(u32, PeerEvent)>,
    version: Version,
    agreed: u32,
) -> Result<Connection, SessionError> {
    let mut peers = Vec::new();
    let mut path = None;
    for &lane in up {
        let Some(l) = lanes.get_mut(lane as usize).and_then(Option::take) else {
            continue;
        };
        if lane == 0 {
            path = l.path;
        }
        peers.push((lane, l.peer));
    }
    let path = path.ok_or(SessionError::Internal("lane 0 is up without a path"))?;
    Ok(Connection::new(peers, events, version, path, agreed > 1))
}

pub(crate) fn params(cfg: &SessionConfig, m: &Membership, role: Role, peer_id: i64) -> Params {
    Params {
        role,
        room: m.room.clone(),
        my_id: m.my_id,
        peer_id,
        password: cfg.password.clone(),
        allow_v1: cfg.allow_v1,
        v1_only: cfg.v1_only,
        lanes: cfg.lanes,
        lanes_cap: crate::MAX_LANES,
        admission: None,
    }
}

/// With `lanes` on auto, this side wishes for lanes by its round trip to the signalling server:
/// the owner's embedded server makes the joiner's round trip the one to the owner, and
/// peers both near one server are near each other. (A side far from the server but near its
/// peer gets lanes it could do without: they cost memory, not speed.)
pub(crate) fn choose_lanes(mut cfg: SessionConfig, server_rtt: Duration) -> SessionConfig {
    if cfg.lanes == crate::LANES_AUTO {
        cfg.lanes = crate::auto_lanes(Some(server_rtt));
        tracing::info!(
            lanes = cfg.lanes,
            "round trip to the signalling server {:.1} ms",
            server_rtt.as_secs_f64() * 1e3
        );
    }
    cfg
}

/// Joins `room` and returns the connection to its owner.
pub async fn join(cfg: SessionConfig, room: &str) -> Result<Connection, SessionError> {
    match join_once(cfg.clone(), room).await {
        // The signalling connection went away before the owner confirmed our key (an instance
        // of a clustered service restarting or draining, a network blip): nothing was judged
        // that a second attempt could add to, so try once more; behind a load balancer the
        // next instance answers.
        Err((SessionError::SignalClosed(why), false)) => {
            tracing::info!("lost the signalling server {why}: joining once more");
            tokio::time::sleep(JOIN_RETRY_PAUSE).await;
            join_once(cfg, room).await.map_err(|(e, _)| e)
        }
        r => r.map_err(|(e, _)| e),
    }
}

/// Pause before a joiner's second attempt after losing the signalling server.
const JOIN_RETRY_PAUSE: Duration = Duration::from_millis(300);

/// One attempt at joining; on failure, also whether the owner had confirmed our key.
async fn join_once(cfg: SessionConfig, room: &str) -> Result<Connection, (SessionError, bool)> {
    let mut m = rendezvous::join_room(&cfg.signal, room)
        .await
        .map_err(|e| (e, false))?;
    if let Err(e) = check_relay(&cfg, &m.ice_servers) {
        m.finish(FINISH_WAIT).await;
        return Err((e, false));
    }
    let cfg = choose_lanes(cfg, m.server_rtt);
    let owner = m.owner_id;
    let (hs, first) = Handshake::joiner(params(&cfg, &m, Role::Joiner, owner));
    // Only the owner's messages reach the handshake.
    let (tx, rx) = mpsc::channel(64);
    let mut server_rx = std::mem::replace(&mut m.incoming, mpsc::channel(1).1);
    tokio::spawn(async move {
        while let Some(env) = server_rx.recv().await {
            if env.sender == owner && tx.send(env).await.is_err() {
                break;
            }
        }
    });
    let advertised = Arc::new(m.ice_servers.clone());
    let out = m.outgoing.clone();
    let confirmed = Arc::new(AtomicBool::new(false));
    let ctx = Context {
        cfg: Arc::new(cfg),
        advertised,
        role: Role::Joiner,
        confirmed: confirmed.clone(),
    };
    let conn = match run(hs, first, rx, out, ctx).await {
        Ok(conn) => conn,
        Err((e, _)) => {
            // The caller may exit at once: first make sure our last messages (our key
            // confirmation, an abort notice) have reached the server.
            m.finish(FINISH_WAIT).await;
            return Err((e, confirmed.load(Ordering::Relaxed)));
        }
    };
    // Keep the membership alive as long as the connection: the owner may still be sending
    // candidates. Dropping `m` closes the WebSocket.
    conn.hold(Box::new(m));
    Ok(conn)
}

impl From<HandshakeError> for SessionError {
    fn from(e: HandshakeError) -> Self {
        match e {
            HandshakeError::WrongPassword => SessionError::WrongPassword,
            HandshakeError::V1Refused => SessionError::V1Refused,
            e @ (HandshakeError::Refused(_) | HandshakeError::RefusedByOwner(_)) => {
                SessionError::Refused(e.to_string())
            }
            other => SessionError::Handshake(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(url: &str) -> IceServer {
        IceServer {
            urls: vec![url.to_string()],
            username: None,
            credential: None,
        }
    }

    #[test]
    fn relay_only_needs_a_turn_server_from_either_side() {
        let mut cfg = SessionConfig::new("127.0.0.1:1", "pw");
        let stun = [server("stun:10.0.0.1:3478")];
        let turn = [server("turn:10.0.0.1:3478?transport=udp")];
        let turns = [server("TURNS:relay.example.org:443")];
        // Without --relay-only nothing is required.
        assert!(check_relay(&cfg, &[]).is_ok());
        cfg.relay_only = true;
        assert!(matches!(check_relay(&cfg, &[]), Err(SessionError::NoPath)));
        assert!(matches!(
            check_relay(&cfg, &stun),
            Err(SessionError::NoPath)
        ));
        assert!(check_relay(&cfg, &turn).is_ok());
        assert!(check_relay(&cfg, &turns).is_ok());
        cfg.ice_servers = turn.to_vec();
        assert!(check_relay(&cfg, &stun).is_ok());
        assert!(transport_config(&cfg, &[], Version::V2).relay_only);
        cfg.relay_only = false;
        assert!(!transport_config(&cfg, &[], Version::V2).relay_only);
    }
}
