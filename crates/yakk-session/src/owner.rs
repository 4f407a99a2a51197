//! The owner's room: a router that runs one handshake per joiner and judges every key
//! confirmation through the room's one [`Admission`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use yakk_wire::{Envelope, IceServer};

use crate::admission::Admission;
use crate::driver::{Context, FINISH_WAIT, check_relay, choose_lanes, params, run};
use crate::handshake::{Handshake, Role};
use crate::rendezvous::{self, Membership};
use crate::{Connection, SessionConfig, SessionError};

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
    /// most `FINISH_WAIT`): call it before exiting after a failed joiner, whose key
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
}
