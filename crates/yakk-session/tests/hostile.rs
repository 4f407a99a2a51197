//! "One guess per code" against attackers that do not follow the protocol: joiners that abandon
//! the exchange, joiners that race, a signalling server that plays joiners itself, and a relay
//! that downgrades two yakk/2 peers to yakk/1. Real signalling server, real WebSockets on
//! loopback; the attackers speak the envelope and J-PAKE through the project's own crates.
//!
//! An attacker *learns a guess* when it gets the owner's key confirmation for an exchange it ran
//! with a guessed password: with it, it can tell offline whether the guess was right.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use yakk_pake::v2;
use yakk_session::rendezvous;
use yakk_session::{Owner, OwnerEvent, SessionConfig, SessionError};
use yakk_wire::{Envelope, msg};

mod common;
use common::{Relay, signal_server, ws_relay};

const PASSWORD: &str = "crossbow-nimble";

fn config(signal: &str, password: &str) -> SessionConfig {
    let mut c = SessionConfig::new(signal, password);
    c.ice_ips = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    c
}

/// What an attacking joiner does once it has the owner's round 2.
#[derive(Clone, Copy, PartialEq)]
enum Finish {
    /// Leaves at once (after a short wait for anything the owner volunteers).
    Abandon,
    /// Sends its key confirmation and waits for the owner's answer.
    Confirm,
}

/// What one attacking exchange got.
#[derive(Debug, PartialEq)]
enum Learnt {
    /// The owner's key confirmation: the guess can be checked offline (`right` says how).
    Guess { right: bool },
    /// Nothing to test a guess against.
    Nothing,
}

/// The messages one yakk/2 J-PAKE joiner with password `guess` sends and receives, over any
/// pair of envelope channels (`from_owner` carries only the owner's envelopes).
async fn attack(
    guess: &str,
    room: &str,
    me: i64,
    owner: i64,
    to_owner: &mpsc::Sender<Envelope>,
    from_owner: &mut mpsc::Receiver<Envelope>,
    finish: Finish,
) -> Learnt {
    let mut party = v2::Party::new(v2::Role::Joiner, guess.as_bytes(), room);
    let send = |t: &str, p: String| Envelope::new(t, p, me, owner);
    let _ = to_owner
        .send(send(
            msg::REQUEST_OFFER,
            r#"{"versions":["yakk/2"]}"#.into(),
        ))
        .await;
    let _ = to_owner
        .send(send("YAKK2_PAKE1", party.round1().to_payload()))
        .await;
    // Abandoners give the owner a moment to volunteer its confirmation after round 2.
    let patience = match finish {
        Finish::Abandon => Duration::from_millis(400),
        Finish::Confirm => Duration::from_secs(10),
    };
    let mut deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let env = tokio::select! {
            e = from_owner.recv() => match e { Some(e) => e, None => return Learnt::Nothing },
            _ = tokio::time::sleep_until(deadline) => return Learnt::Nothing,
        };
        if std::env::var_os("HOSTILE_DEBUG").is_some() {
            eprintln!("attacker {me} got {} {}", env.msg_type, env.payload.len());
        }
        match env.msg_type.as_str() {
            "YAKK2_PAKE1" => {
                let Ok(m) = v2::Round1::from_payload(&env.payload) else {
                    return Learnt::Nothing;
                };
                let Ok(r2) = party.receive_round1(&m) else {
                    return Learnt::Nothing;
                };
                let _ = to_owner.send(send("YAKK2_PAKE2", r2.to_payload())).await;
            }
            "YAKK2_PAKE2" => {
                let Ok(m) = v2::Round2::from_payload(&env.payload) else {
                    return Learnt::Nothing;
                };
                let Ok(c) = party.receive_round2(&m) else {
                    return Learnt::Nothing;
                };
                if finish == Finish::Confirm {
                    let _ = to_owner.send(send("YAKK2_CONFIRM", c.to_payload())).await;
                }
                deadline = tokio::time::Instant::now() + patience;
            }
            "YAKK2_CONFIRM" => {
                let Ok(m) = v2::KeyConfirm::from_payload(&env.payload) else {
                    return Learnt::Nothing;
                };
                // The offline test.
                return Learnt::Guess {
                    right: party.verify_confirmation(&m).is_ok(),
                };
            }
            // Refusals, busy notices: nothing learnt.
            "YAKK2_ABORT" => return Learnt::Nothing,
            _ => {}
        }
    }
}

/// An attacking joiner through the real signalling server.
async fn attack_via_server(signal: &str, room: &str, guess: &str, finish: Finish) -> Learnt {
    let Ok(mut m) = rendezvous::join_room(signal, room).await else {
        return Learnt::Nothing;
    };
    let (me, owner) = (m.my_id, m.owner_id);
    let (tx, mut rx) = mpsc::channel(64);
    let mut incoming = std::mem::replace(&mut m.incoming, mpsc::channel(1).1);
    tokio::spawn(async move {
        while let Some(e) = incoming.recv().await {
            if e.sender == owner && tx.send(e).await.is_err() {
                break;
            }
        }
    });
    let out = m.outgoing.clone();
    let learnt = attack(guess, room, me, owner, &out, &mut rx, finish).await;
    drop(out);
    m.finish(Duration::from_secs(1)).await;
    learnt
}

/// Owner events until quiet for `quiet`: the count of each kind.
async fn drain(owner: &mut Owner, quiet: Duration) -> (usize, usize, bool) {
    let (mut connected, mut failed, mut burned) = (0, 0, false);
    while let Ok(Some(ev)) = tokio::time::timeout(quiet, owner.next()).await {
        match ev {
            OwnerEvent::Connected(_) => connected += 1,
            OwnerEvent::Failed { .. } => failed += 1,
            OwnerEvent::Burned => burned = true,
        }
    }
    (connected, failed, burned)
}

fn guesses_learnt(results: &[Learnt]) -> usize {
    results
        .iter()
        .filter(|l| matches!(l, Learnt::Guess { .. }))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoning_joiners_learn_nothing_and_do_not_burn_the_code() {
    let server = signal_server().await.to_string();
    let mut owner = Owner::create(config(&server, PASSWORD)).await.unwrap();
    let room = owner.room.clone();
    let mut results = Vec::new();
    // The right password among the guesses: an abandoner must not even learn that.
    for i in 0..12 {
        let guess = if i == 7 {
            PASSWORD.to_string()
        } else {
            format!("guess-{i}")
        };
        results.push(attack_via_server(&server, &room, &guess, Finish::Abandon).await);
    }
    eprintln!(
        "sequential abandoners: {} of {} learnt a guess",
        guesses_learnt(&results),
        results.len()
    );
    assert_eq!(guesses_learnt(&results), 0, "{results:?}");
    // Abandoning is no guess: the room is still open to the right password.
    let joiner = {
        let (cfg, room) = (config(&server, PASSWORD), room.clone());
        tokio::spawn(async move { yakk_session::join(cfg, &room).await })
    };
    let ev = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match owner.next().await {
                Some(OwnerEvent::Connected(c)) => return Some(c),
                Some(OwnerEvent::Burned) | None => return None,
                Some(OwnerEvent::Failed { .. }) => continue,
            }
        }
    })
    .await
    .expect("the owner answers in time");
    assert!(ev.is_some(), "abandoners burned the code");
    let conn = joiner.await.unwrap().expect("the right joiner connects");
    conn.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_joiners_get_one_guess_between_them() {
    let server = signal_server().await.to_string();
    let mut owner = Owner::create(config(&server, PASSWORD)).await.unwrap();
    let room = owner.room.clone();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..16 {
        let (server, room) = (server.clone(), room.clone());
        tasks.spawn(async move {
            attack_via_server(&server, &room, &format!("guess-{i}"), Finish::Confirm).await
        });
    }
    let results: Vec<Learnt> = tasks.join_all().await;
    let learnt = guesses_learnt(&results);
    eprintln!("16 concurrent joiners: {learnt} learnt a guess");
    assert!(learnt <= 1, "{learnt} guesses tested: {results:?}");
    let (connected, _, burned) = drain(&mut owner, Duration::from_secs(3)).await;
    assert_eq!(connected, 0);
    assert!(burned, "a wrong password must burn the code");
    // The code is dead for the right password too.
    let late = late_join(&server, &room).await;
    assert!(
        matches!(
            late,
            Err(SessionError::NoSuchRoom(_) | SessionError::Refused(_))
        ),
        "a burned code admitted a joiner: {:?}",
        late.err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_guess_then_the_right_one_is_refused() {
    let server = signal_server().await.to_string();
    let mut cfg = config(&server, PASSWORD);
    cfg.allow_retries = 1;
    let mut owner = Owner::create(cfg).await.unwrap();
    let room = owner.room.clone();
    // With one retry allowed: two wrong guesses are judged, the third is not even looked at.
    let mut results = Vec::new();
    for i in 0..3 {
        results.push(attack_via_server(&server, &room, &format!("g{i}"), Finish::Confirm).await);
    }
    assert_eq!(
        results,
        vec![
            Learnt::Guess { right: false },
            Learnt::Guess { right: false },
            Learnt::Nothing
        ]
    );
    let (_, _, burned) = drain(&mut owner, Duration::from_secs(2)).await;
    assert!(burned);
    let late = late_join(&server, &room).await;
    assert!(
        matches!(
            late,
            Err(SessionError::NoSuchRoom(_) | SessionError::Refused(_))
        ),
        "a burned code admitted the right password: {:?}",
        late.err()
    );
}

/// The right password, after the room was burned: the owner has left the room, which then
/// admits nobody (a moment for the server to see the owner's socket close).
async fn late_join(server: &str, room: &str) -> Result<yakk_session::Connection, SessionError> {
    tokio::time::sleep(Duration::from_secs(1)).await;
    tokio::time::timeout(
        Duration::from_secs(40),
        yakk_session::join(config(server, PASSWORD), room),
    )
    .await
    .expect("the late joiner stops in time")
}

/// A signalling server that lies: it hands the owner a room, then plays joiners itself, each
/// with a fresh mailbox id and a fresh guess. Returns what each fabricated joiner learnt.
async fn lying_server(joiners: usize, max_peers: Option<u32>) -> (Vec<Learnt>, bool) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let room = "417";
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let created = Envelope::new(msg::ROOM_CREATED, room, yakk_wire::SERVER_ID, 0);
        ws.send(Message::text(created.to_json())).await.unwrap();
        let (mut sink, mut stream) = ws.split();
        // Route the owner's messages to the fabricated joiner they are addressed to.
        let mut routes: std::collections::HashMap<i64, mpsc::Sender<Envelope>> = Default::default();
        let (to_owner_tx, mut to_owner_rx) = mpsc::channel::<Envelope>(1024);
        let mut attackers = tokio::task::JoinSet::new();
        for i in 0..joiners {
            let id = 100 + i as i64;
            let (tx, mut rx) = mpsc::channel(64);
            routes.insert(id, tx);
            let to_owner = to_owner_tx.clone();
            // One of the guesses is right: the server still must not learn it.
            let guess = if i == joiners / 2 {
                PASSWORD.to_string()
            } else {
                format!("lie-{i}")
            };
            attackers.spawn(async move {
                attack(&guess, room, id, 0, &to_owner, &mut rx, Finish::Confirm).await
            });
        }
        drop(to_owner_tx);
        let pump = async {
            loop {
                tokio::select! {
                    Some(e) = to_owner_rx.recv() => {
                        if sink.send(Message::text(e.to_json())).await.is_err() { break; }
                    }
                    frame = stream.next() => {
                        let Some(Ok(frame)) = frame else { break };
                        let Ok(e) = Envelope::parse(&frame.into_data(), 65536) else { continue };
                        if let Some(tx) = routes.get(&e.recipient) {
                            let _ = tx.send(e).await;
                        }
                    }
                    else => break,
                }
            }
        };
        let results = tokio::select! {
            r = attackers.join_all() => r,
            _ = pump => Vec::new(),
        };
        results
    });
    let mut cfg = config(&addr.to_string(), PASSWORD);
    cfg.max_peers = max_peers;
    let mut owner = Owner::create(cfg).await.unwrap();
    let results = tokio::time::timeout(Duration::from_secs(60), server)
        .await
        .expect("the attack ends")
        .unwrap();
    let (_, _, burned) = drain(&mut owner, Duration::from_secs(2)).await;
    (results, burned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_server_that_fabricates_joiners_gets_one_guess() {
    for max_peers in [None, Some(1)] {
        let (results, burned) = lying_server(40, max_peers).await;
        let learnt = guesses_learnt(&results);
        let wrong = results
            .iter()
            .filter(|l| **l == Learnt::Guess { right: false })
            .count();
        let right = results.contains(&Learnt::Guess { right: true });
        eprintln!(
            "lying server, max peers {max_peers:?}: {learnt} of 40 fabricated joiners learnt a guess ({wrong} wrong)"
        );
        // One fabricated joiner carries the right password: when it is judged first, it gets
        // in (and learns nothing the server did not know). With no cap on joiners the room
        // then stays open, so the next guess is judged too: wrong, it burns the code. What
        // must never happen is a second *wrong* guess tested, whatever the order.
        assert!(wrong <= 1, "{wrong} wrong guesses tested: {results:?}");
        assert!(
            learnt <= 1 + usize::from(right),
            "{learnt} guesses: {results:?}"
        );
        if max_peers == Some(1) {
            // A room for one joiner judges nothing after it admitted one.
            assert!(
                learnt <= 1,
                "{learnt} guesses with --max-peers 1: {results:?}"
            );
        }
        assert!(burned || right, "a wrong guess must burn the code");
    }
}

/// A WebSocket relay in front of the real server that empties the joiner's version list:
/// what a server that wants two yakk/2 peers on yakk/1 would do.
async fn downgrading_relay(upstream: SocketAddr) -> SocketAddr {
    let (addr, _) = ws_relay(upstream, |_, m| {
        Relay::Pass(match Envelope::parse(&m.clone().into_data(), 65536) {
            Ok(mut e) if e.msg_type == msg::REQUEST_OFFER => {
                e.payload.clear();
                Message::text(e.to_json())
            }
            _ => m,
        })
    })
    .await;
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_cannot_downgrade_two_yakk2_peers() {
    let server = signal_server().await;
    let relay = downgrading_relay(server).await;
    let mut oc = config(&server.to_string(), PASSWORD);
    oc.allow_v1 = true;
    let mut owner = Owner::create(oc).await.unwrap();
    let mut jc = config(&relay.to_string(), PASSWORD);
    jc.allow_v1 = true;
    let joined = tokio::time::timeout(Duration::from_secs(40), yakk_session::join(jc, &owner.room))
        .await
        .expect("the joiner stops in time");
    match joined {
        Ok(c) => panic!("downgraded to {} without notice", c.version()),
        Err(e) => {
            let text = e.to_string();
            assert!(text.contains("downgrade"), "{text}");
        }
    }
    let ev = tokio::time::timeout(Duration::from_secs(10), owner.next())
        .await
        .expect("the owner reports the joiner");
    match ev {
        Some(OwnerEvent::Failed { error, .. }) => {
            assert!(error.to_string().contains("downgrade"), "{error}")
        }
        _ => panic!("the owner did not refuse the downgraded joiner"),
    }
}
