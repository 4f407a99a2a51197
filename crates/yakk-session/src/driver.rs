//! The async drivers: they feed envelopes from the signalling server and events from the peer
//! connection into a [`Handshake`], and carry out its actions, until the peer connection is up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use yakk_transport::{PathInfo, Peer, PeerEvent, TransportConfig};
use yakk_wire::{Envelope, IceServer};

use crate::admission::Admission;
use crate::handshake::{Action, Handshake, HandshakeError, Params, Role, Version};
use crate::rendezvous::{self, Membership};
use crate::session::{Command, Outcome, Session};
use crate::{Connection, SessionConfig, SessionError};

/// How long a side that gives up (a failed joiner, a closing owner) waits for its last
/// signalling messages to go out.
const FINISH_WAIT: Duration = Duration::from_secs(2);

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
/// so say so at once rather than after the ICE timeout.
fn check_relay(cfg: &SessionConfig, advertised: &[IceServer]) -> Result<(), SessionError> {
    if cfg.relay_only && !has_turn(cfg.ice_servers.iter().chain(advertised)) {
        tracing::info!("--relay-only, and no TURN server is configured or advertised");
        return Err(SessionError::NoPath);
    }
    Ok(())
}

/// Runs one handshake to a connected peer. `incoming` carries only this peer's envelopes. On
/// failure, also says whether this joiner's wrong password burned the owner's code.
async fn run(
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
struct Context {
    cfg: Arc<SessionConfig>,
    /// ICE servers the signalling server advertised.
    advertised: Arc<Vec<IceServer>>,
    role: Role,
    /// Set once the key is confirmed (for an owner: the joiner was admitted).
    confirmed: Arc<AtomicBool>,
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
            Command::Tune { lane, flow, lanes } => {
                if let Ok(p) = self.peer(lane) {
                    crate::connection::tune_lane(p, flow, lanes);
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
                Some((lane, PeerEvent::Disconnected(why))) => s.on_disconnected(lane, &why),
                None => s.on_disconnected(0, "the peer connection ended"),
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

fn params(cfg: &SessionConfig, m: &Membership, role: Role, peer_id: i64) -> Params {
    Params {
        role,
        room: m.room.clone(),
        my_id: m.my_id,
        peer_id,
        password: cfg.password.clone(),
        allow_legacy: cfg.allow_legacy,
        legacy_only: cfg.legacy_only,
        lanes: cfg.lanes,
        lanes_cap: crate::MAX_LANES,
        admission: None,
    }
}

/// The lanes of one owner-side connection, counted in the owner's total until it is dropped.
struct LaneShare {
    held: Arc<std::sync::atomic::AtomicU32>,
    lanes: u32,
}

impl Drop for LaneShare {
    fn drop(&mut self) {
        self.held
            .fetch_sub(self.lanes, std::sync::atomic::Ordering::Relaxed);
    }
}

/// With `lanes` on auto, this side wishes for lanes by its round trip to the signalling server:
/// the owner's embedded server makes the joiner's round trip the one to the owner, and
/// peers both near one server are near each other. (A side far from the server but near its
/// peer gets lanes it could do without: they cost memory, not speed.)
fn choose_lanes(mut cfg: SessionConfig, server_rtt: Duration) -> SessionConfig {
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

/// What an owner's room reports.
pub enum OwnerEvent {
    /// A joiner completed the handshake and the peer connection is up.
    Connected(Box<Connection>),
    /// A joiner's handshake failed (a wrong password, a refusal, a timeout, tampering).
    Failed { peer: i64, error: SessionError },
    /// A wrong password used up the budget (`SessionConfig::allow_retries`): the room is
    /// closed, and no joiner's confirmation is judged any more. Connections already up go on.
    /// The last event of a room.
    Burned,
}

/// Joiners an owner runs the key exchange with at once. A joiner that comes when all are taken
/// replaces the one that has waited longest (an abandoned exchange holds its place until its
/// timeout, and the owner is not told when a joiner leaves); when every one is past its key
/// confirmation, the newcomer is told the owner is busy.
const MAX_HANDSHAKES: usize = 8;

/// A joiner whose handshake runs.
struct Pending {
    inbox: Inbox,
    since: tokio::time::Instant,
    /// Past key confirmation (admitted): never replaced.
    confirmed: Arc<AtomicBool>,
}
/// What one joiner's messages may hold of the owner's memory while its handshake has not taken
/// them yet. An honest joiner sends a burst when it makes its lanes (32 lanes: 31 offers and
/// their candidates, some 100 KB) while the handshake is busy building peer connections; a
/// joiner that sends more is flooding, and is dropped.
const JOINER_BACKLOG: usize = 1 << 20;

/// The way from the owner's router to one joiner's handshake. Nothing is dropped on the way:
/// a lost sealed message breaks the counter sequence of every later one (docs/yakk2.md), so
/// the router queues what the handshake has not taken yet, up to [`JOINER_BACKLOG`] bytes.
struct Inbox {
    tx: mpsc::UnboundedSender<Envelope>,
    backlog: Arc<std::sync::atomic::AtomicUsize>,
}

/// The bytes an envelope holds while queued (its fields and their bookkeeping).
fn queued_size(env: &Envelope) -> usize {
    env.msg_type.len() + env.payload.len() + 64
}

impl Inbox {
    /// An inbox and the handshake's end of it.
    fn new() -> (Inbox, mpsc::Receiver<Envelope>) {
        let (utx, mut urx) = mpsc::unbounded_channel::<Envelope>();
        let (tx, rx) = mpsc::channel(64);
        let backlog = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let taken = backlog.clone();
        tokio::spawn(async move {
            while let Some(env) = urx.recv().await {
                let n = queued_size(&env);
                if tx.send(env).await.is_err() {
                    break;
                }
                taken.fetch_sub(n, Ordering::AcqRel);
            }
        });
        (Inbox { tx: utx, backlog }, rx)
    }

    /// Queues `env` for the handshake; false if the joiner has more than [`JOINER_BACKLOG`]
    /// waiting. Once the handshake ended, its messages are ignored.
    fn push(&self, env: Envelope) -> bool {
        if self.tx.is_closed() {
            return true;
        }
        let n = queued_size(&env);
        if self.backlog.fetch_add(n, Ordering::AcqRel) + n > JOINER_BACKLOG {
            self.backlog.fetch_sub(n, Ordering::AcqRel);
            return false;
        }
        let _ = self.tx.send(env);
        true
    }
}

/// Joiners whose handshake ended, remembered so that their late messages (the reference repeats
/// `YAKKMSG_REQUESTOFFER`) do not start another one; bounded, as a lying server can invent ids.
const FINISHED_MEMORY: usize = 1024;

/// An open room, accepting joiners until dropped.
pub struct Owner {
    pub room: String,
    pub ice_servers: Vec<IceServer>,
    events: mpsc::Receiver<OwnerEvent>,
    stop: watch::Sender<()>,
    router: tokio::task::JoinHandle<()>,
}

impl Owner {
    /// Creates a room on the configured server.
    pub async fn create(cfg: SessionConfig) -> Result<Owner, SessionError> {
        // Ask the server to admit the joiners we may admit plus those allowed to fail; we
        // count admissions ourselves too (a server may lie).
        let server_cap = cfg.max_peers.map(|m| m.saturating_add(cfg.allow_retries));
        let m = rendezvous::create_room(&cfg.signal, cfg.keep_alive, server_cap).await?;
        if let Err(e) = check_relay(&cfg, &m.ice_servers) {
            m.finish(FINISH_WAIT).await;
            return Err(e);
        }
        let cfg = choose_lanes(cfg, m.server_rtt);
        let (ev_tx, ev_rx) = mpsc::channel(16);
        let (stop_tx, stop_rx) = watch::channel(());
        let room = m.room.clone();
        let ice = m.ice_servers.clone();
        let router = tokio::spawn(route(m, Arc::new(cfg), ev_tx, stop_rx));
        Ok(Owner {
            room,
            ice_servers: ice,
            events: ev_rx,
            stop: stop_tx,
            router,
        })
    }

    /// Closes the room, and first writes what is still queued for the signalling server (at
    /// most [`FINISH_WAIT`]): call it before exiting after a failed joiner, whose key
    /// confirmation it needs to learn that its password was wrong. Dropping the owner closes
    /// the room too, without that wait.
    pub async fn close(self) {
        let Owner { stop, router, .. } = self;
        drop(stop);
        let _ = tokio::time::timeout(FINISH_WAIT + Duration::from_secs(1), router).await;
    }

    /// The next joiner event; `None` when the room is gone (signalling connection lost, or
    /// after [`OwnerEvent::Burned`]).
    pub async fn next(&mut self) -> Option<OwnerEvent> {
        self.events.recv().await
    }
}

/// Whether an envelope can open a handshake: a joiner's first messages.
fn opens_handshake(t: &str) -> bool {
    [
        yakk_wire::msg::REQUEST_OFFER,
        yakk_wire::msg::JPAKE_ROUND1,
        crate::handshake::msg2::PAKE1,
    ]
    .contains(&t)
}

/// The owner's router: one handshake task per joiner, keyed by the sender id the server
/// vouches for. Every handshake judges its joiner's key confirmation through the room's one
/// [`Admission`], so guesses are judged one at a time whatever the joiners do.
async fn route(
    mut m: Membership,
    cfg: Arc<SessionConfig>,
    events: mpsc::Sender<OwnerEvent>,
    mut stop: watch::Receiver<()>,
) {
    let admission = Arc::new(std::sync::Mutex::new(Admission::new(
        cfg.allow_retries,
        cfg.max_peers,
    )));
    let mut joiners: std::collections::HashMap<i64, Pending> = Default::default();
    let mut finished = std::collections::VecDeque::<i64>::new();
    let (done_tx, mut done_rx) = mpsc::channel::<(i64, bool)>(MAX_HANDSHAKES);
    let advertised = Arc::new(m.ice_servers.clone());
    // Lanes held by the connections handed out and not yet dropped.
    let held = Arc::new(std::sync::atomic::AtomicU32::new(0));
    loop {
        let env = tokio::select! {
            env = m.incoming.recv() => match env { Some(e) => e, None => break },
            Some((peer, burned)) = done_rx.recv() => {
                joiners.remove(&peer);
                if finished.len() >= FINISHED_MEMORY {
                    finished.pop_front();
                }
                finished.push_back(peer);
                if burned {
                    break;
                }
                continue;
            }
            _ = stop.changed() => break,
        };
        let sender = env.sender;
        if sender == m.my_id || sender < 0 {
            continue;
        }
        if let Some(p) = joiners.get(&sender) {
            if !p.inbox.push(env) {
                tracing::warn!(
                    joiner = sender,
                    "a joiner sent more than {JOINER_BACKLOG} bytes its handshake had not taken: dropping it"
                );
                // Its handshake sees its messages end; the rest of the flood is ignored.
                joiners.remove(&sender);
                if finished.len() >= FINISHED_MEMORY {
                    finished.pop_front();
                }
                finished.push_back(sender);
            }
            continue;
        }
        if finished.contains(&sender) || !opens_handshake(&env.msg_type) {
            continue;
        }
        if joiners.len() >= MAX_HANDSHAKES {
            let oldest = joiners
                .iter()
                .filter(|(_, p)| !p.confirmed.load(Ordering::Relaxed))
                .min_by_key(|(_, p)| p.since)
                .map(|(id, _)| *id);
            if let Some(id) = oldest {
                // Its task sees its messages end and stops (a failure, but no guess).
                tracing::info!(joiner = id, "too many joiners at once: dropping the oldest");
                joiners.remove(&id);
            }
        }
        if joiners.len() >= MAX_HANDSHAKES {
            tracing::info!(joiner = sender, "too many joiners at once: refusing one");
            let busy = Envelope::new(
                crate::handshake::msg2::ABORT,
                r#"{"reason":"busy"}"#,
                m.my_id,
                sender,
            );
            let _ = m.outgoing.try_send(busy);
            continue;
        }
        let (inbox, rx) = Inbox::new();
        let mut p = params(&cfg, &m, Role::Owner, sender);
        let in_use = held.load(std::sync::atomic::Ordering::Relaxed);
        p.lanes_cap = cfg.owner_lane_budget.saturating_sub(in_use).max(1);
        p.admission = Some(admission.clone());
        let hs = Handshake::owner(p);
        let confirmed = Arc::new(AtomicBool::new(false));
        let ctx = Context {
            cfg: cfg.clone(),
            advertised: advertised.clone(),
            role: Role::Owner,
            confirmed: confirmed.clone(),
        };
        let (out, events, held, done) = (
            m.outgoing.clone(),
            events.clone(),
            held.clone(),
            done_tx.clone(),
        );
        tracing::info!(joiner = sender, "a joiner arrived");
        tokio::spawn(async move {
            let (ev, burned) = match run(hs, vec![], rx, out, ctx).await {
                Ok(conn) => {
                    let lanes = conn.lanes() as u32;
                    held.fetch_add(lanes, std::sync::atomic::Ordering::Relaxed);
                    conn.hold(Box::new(LaneShare { held, lanes }));
                    (OwnerEvent::Connected(Box::new(conn)), false)
                }
                Err((error, burned)) => (
                    OwnerEvent::Failed {
                        peer: sender,
                        error,
                    },
                    burned,
                ),
            };
            let _ = events.send(ev).await;
            let _ = done.send((sender, burned)).await;
        });
        inbox.push(env);
        joiners.insert(
            sender,
            Pending {
                inbox,
                since: tokio::time::Instant::now(),
                confirmed,
            },
        );
    }
    // However the room ended, say so if a wrong password burned it (the signalling
    // connection may have closed before that joiner's handshake task reported).
    if admission
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .is_burned()
    {
        tracing::info!("a wrong password burned the code: closing the room");
        let _ = events.send(OwnerEvent::Burned).await;
    }
    drop(events);
    m.finish(FINISH_WAIT).await;
}

impl From<HandshakeError> for SessionError {
    fn from(e: HandshakeError) -> Self {
        match e {
            HandshakeError::WrongPassword => SessionError::WrongPassword,
            HandshakeError::LegacyRefused => SessionError::LegacyRefused,
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

    /// The router queues a joiner's messages while its handshake is busy, in order and none
    /// lost, up to `JOINER_BACKLOG` bytes; past that it says so, and once the handshake took
    /// them there is room again.
    #[tokio::test]
    async fn an_inbox_keeps_every_message_up_to_its_budget() {
        let (inbox, mut rx) = Inbox::new();
        let big = "x".repeat(100_000);
        let env = |i: i64| Envelope::new("T", big.clone(), i, 0);
        let fits = JOINER_BACKLOG / queued_size(&env(0));
        // More than the handshake's own queue (64) holds, none taken yet.
        for i in 0..fits as i64 {
            assert!(inbox.push(env(i)), "message {i} of {fits} refused");
        }
        assert!(
            !inbox.push(env(-1)),
            "past the budget, the joiner is a flood"
        );
        for i in 0..fits as i64 {
            let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("in time")
                .expect("a message");
            assert_eq!(got.sender, i, "in order, none lost");
        }
        // Taken: the budget is free again (the forwarder counts down as it hands over).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while inbox.backlog.load(Ordering::Acquire) > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the backlog never shrank"
            );
            tokio::task::yield_now().await;
        }
        assert!(inbox.push(env(99)));
        // A handshake that ended: its messages are ignored, not counted.
        drop(rx);
        tokio::time::sleep(Duration::from_millis(50)).await;
        for _ in 0..100 {
            assert!(inbox.push(env(0)));
        }
    }

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
