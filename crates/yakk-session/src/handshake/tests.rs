//! The handshake alone: both sides in memory, the relay a queue.

use super::*;
use crate::admission::{Admission, Refusal};
use crate::sealed::{self, Header, SealError, SealedChannel};

/// Parameters of a side of room 417 (the owner is 0, the joiner 1), one lane wished.
pub(crate) fn params(role: Role, pw: &str) -> Params {
    let (my_id, peer_id) = match role {
        Role::Owner => (0, 1),
        Role::Joiner => (1, 0),
    };
    Params {
        role,
        room: "417".into(),
        my_id,
        peer_id,
        password: Zeroizing::new(pw.into()),
        allow_v1: false,
        v1_only: false,
        lanes: 1,
        lanes_cap: MAX_LANES,
        admission: None,
    }
}

/// Both sides' non-send actions, or the first error and which side raised it.
type Outcome = Result<(Vec<Action>, Vec<Action>), (Role, HandshakeError)>;

/// Delivers every envelope to the other side (as the server would, in order) until quiet.
/// `tamper` may rewrite envelopes in flight.
fn relay(
    joiner: &mut Handshake,
    owner: &mut Handshake,
    from_joiner: Vec<Action>,
    from_owner: Vec<Action>,
    tamper: &mut dyn FnMut(&mut Envelope),
) -> Outcome {
    let (mut j_other, mut o_other) = (vec![], vec![]);
    let mut to_owner = std::collections::VecDeque::new();
    let mut to_joiner = std::collections::VecDeque::new();
    let split = |acts: Vec<Action>,
                 q: &mut std::collections::VecDeque<Envelope>,
                 other: &mut Vec<Action>| {
        for a in acts {
            match a {
                Action::Send(e) => q.push_back(e),
                a => other.push(a),
            }
        }
    };
    split(from_joiner, &mut to_owner, &mut j_other);
    split(from_owner, &mut to_joiner, &mut o_other);
    while !to_owner.is_empty() || !to_joiner.is_empty() {
        if let Some(mut e) = to_owner.pop_front() {
            tamper(&mut e);
            let acts = owner.on_message(&e).map_err(|x| (Role::Owner, x))?;
            split(acts, &mut to_joiner, &mut o_other);
        }
        if let Some(mut e) = to_joiner.pop_front() {
            tamper(&mut e);
            let acts = joiner.on_message(&e).map_err(|x| (Role::Joiner, x))?;
            split(acts, &mut to_owner, &mut j_other);
        }
    }
    Ok((j_other, o_other))
}

fn candidate(n: u16) -> IceCandidate {
    IceCandidate {
        candidate: format!("candidate:{n} 1 udp 2130706431 127.0.0.1 {n} typ host"),
        sdp_mid: Some("0".into()),
        sdp_mline_index: Some(0),
        username_fragment: None,
    }
}

/// Runs a full exchange; returns what each side was asked to do after key confirmation.
fn full_exchange(jp: Params, op: Params) -> Outcome {
    let (mut j, first) = Handshake::joiner(jp);
    let mut o = Handshake::owner(op);
    let (ja, oa) = relay(&mut j, &mut o, first, vec![], &mut |_| {})?;
    // A yakk/2 joiner is asked for its offer as its confirmation goes out.
    let joiner_asked = match j.version() {
        Some(Version::V2) => matches!(
            ja.as_slice(),
            [
                Action::OfferEarly(Version::V2),
                Action::KeyConfirmed(Version::V2)
            ]
        ),
        _ => matches!(ja.as_slice(), [Action::KeyConfirmed(Version::V1)]),
    };
    assert!(joiner_asked, "{ja:?}");
    assert!(matches!(oa.as_slice(), [Action::KeyConfirmed(_)]), "{oa:?}");
    // A candidate gathered before the offer waits for it.
    assert!(j.on_local_candidate(0, candidate(1)).unwrap().is_empty());
    let offer = j.on_local_description(0, "v=0 offer".into()).unwrap();
    assert_eq!(offer.len(), 2, "offer then the queued candidate");
    let (_, oa) = relay(&mut j, &mut o, offer, vec![], &mut |_| {})?;
    assert_eq!(
        oa,
        vec![
            Action::AcceptOffer(0, "v=0 offer".into()),
            Action::AddCandidate(0, candidate(1))
        ]
    );
    let mut answer = o.on_local_description(0, "v=0 answer".into()).unwrap();
    answer.extend(o.on_local_candidate(0, candidate(2)).unwrap());
    let (ja, _) = relay(&mut j, &mut o, vec![], answer, &mut |_| {})?;
    assert_eq!(
        ja,
        vec![
            Action::AcceptAnswer(0, "v=0 answer".into()),
            Action::AddCandidate(0, candidate(2))
        ]
    );
    assert_eq!(j.version(), o.version());
    Ok((vec![], vec![]))
}

#[test]
fn yakk2_full_exchange() {
    full_exchange(
        params(Role::Joiner, "pw-one"),
        params(Role::Owner, "pw-one"),
    )
    .unwrap();
}

/// Runs a yakk/2 exchange up to both descriptions, each side announcing `features`.
fn negotiate(joiner_features: &[&str], owner_features: &[&str]) -> (Handshake, Handshake) {
    let (mut j, first) = Handshake::joiner(params(Role::Joiner, "pw"));
    let mut o = Handshake::owner(params(Role::Owner, "pw"));
    relay(&mut j, &mut o, first, vec![], &mut |_| {}).unwrap();
    for f in joiner_features {
        j.announce(f);
    }
    for f in owner_features {
        o.announce(f);
    }
    let offer = j.on_local_description(0, "v=0 offer".into()).unwrap();
    relay(&mut j, &mut o, offer, vec![], &mut |_| {}).unwrap();
    let answer = o.on_local_description(0, "v=0 answer".into()).unwrap();
    relay(&mut j, &mut o, vec![], answer, &mut |_| {}).unwrap();
    (j, o)
}

#[test]
fn features_are_used_only_when_both_sides_announce_them() {
    let (j, o) = negotiate(&[FEATURE_WINDOW], &[FEATURE_WINDOW]);
    assert!(j.agreed(FEATURE_WINDOW) && o.agreed(FEATURE_WINDOW));
    // A peer from before the feature announces nothing: neither side uses it.
    let (j, o) = negotiate(&[FEATURE_WINDOW], &[]);
    assert!(!j.agreed(FEATURE_WINDOW) && !o.agreed(FEATURE_WINDOW));
    let (j, o) = negotiate(&[], &[FEATURE_WINDOW]);
    assert!(!j.agreed(FEATURE_WINDOW) && !o.agreed(FEATURE_WINDOW));
    assert!(!j.agreed("other") && !o.agreed("other"));
}

#[test]
fn a_description_without_features_still_parses() {
    // What a yakk/2 peer from before the feature field sends.
    let old: v2::Message = serde_json::from_str(r#"{"type":"offer","sdp":"v=0"}"#).unwrap();
    assert!(matches!(old, v2::Message::Offer { features, .. } if features.is_empty()));
    let new = serde_json::to_string(&v2::Message::Answer {
        sdp: "v=0".into(),
        features: vec![],
        lane: 0,
        lanes: None,
    })
    .unwrap();
    assert_eq!(new, r#"{"type":"answer","sdp":"v=0"}"#);
}

/// Key exchange, then lane 0's offer and answer, with each side's lane wish; the joiner's
/// offer can be made by an older peer that knows nothing of lanes.
fn negotiate_lanes(
    joiner: u32,
    owner: u32,
    old_joiner: bool,
) -> (Handshake, Handshake, Vec<Action>) {
    let mut jp = params(Role::Joiner, "pw");
    jp.lanes = joiner;
    let mut op = params(Role::Owner, "pw");
    op.lanes = owner;
    let (mut j, mut o) = exchange_with(jp, op, &mut |_| {});
    let offer = if old_joiner {
        j.description_sent.push(0);
        vec![Action::Send(j.seal_v2(&v2::Message::Offer {
            sdp: "v=0 offer".into(),
            features: vec![],
            lane: 0,
            lanes: None,
        }))]
    } else {
        j.on_local_description(0, "v=0 offer".into()).unwrap()
    };
    relay(&mut j, &mut o, offer, vec![], &mut |_| {}).unwrap();
    let answer = o.on_local_description(0, "v=0 answer".into()).unwrap();
    let (ja, _) = relay(&mut j, &mut o, vec![], answer, &mut |_| {}).unwrap();
    (j, o, ja)
}

/// An owner with little of its lane budget left answers with fewer lanes than wished,
/// never none; the joiner goes along with the answer.
#[test]
fn the_owner_caps_the_lanes_it_answers_with() {
    for (cap, want) in [(32, 16), (5, 5), (1, 1), (0, 1)] {
        let mut jp = params(Role::Joiner, "pw");
        jp.lanes = 16;
        let mut op = params(Role::Owner, "pw");
        op.lanes_cap = cap;
        let (mut j, first) = Handshake::joiner(jp);
        let mut o = Handshake::owner(op);
        relay(&mut j, &mut o, first, vec![], &mut |_| {}).unwrap();
        let offer = j.on_local_description(0, "v=0 offer".into()).unwrap();
        relay(&mut j, &mut o, offer, vec![], &mut |_| {}).unwrap();
        let answer = o.on_local_description(0, "v=0 answer".into()).unwrap();
        relay(&mut j, &mut o, vec![], answer, &mut |_| {}).unwrap();
        assert_eq!((j.lanes(), o.lanes()), (want, want), "cap {cap}");
    }
}

#[test]
fn lanes_are_the_larger_wish_and_each_lane_negotiates_on_its_own() {
    for (jw, ow, want) in [
        (4, 1, 4),
        (1, 6, 6),
        (3, 2, 3),
        (1, 1, 1),
        (99, 1, MAX_LANES),
    ] {
        let (mut j, mut o, ja) = negotiate_lanes(jw, ow, false);
        assert_eq!((j.lanes(), o.lanes()), (want, want), "wishes {jw} and {ow}");
        assert_eq!(ja, vec![Action::AcceptAnswer(0, "v=0 answer".into())]);
        for lane in 1..want {
            // A candidate gathered early waits for its own lane's description only.
            assert!(
                j.on_local_candidate(lane, candidate(lane as u16))
                    .unwrap()
                    .is_empty()
            );
            let offer = j
                .on_local_description(lane, format!("offer {lane}"))
                .unwrap();
            assert_eq!(offer.len(), 2);
            let (_, oa) = relay(&mut j, &mut o, offer, vec![], &mut |_| {}).unwrap();
            assert_eq!(
                oa,
                vec![
                    Action::AcceptOffer(lane, format!("offer {lane}")),
                    Action::AddCandidate(lane, candidate(lane as u16)),
                ]
            );
            let mut answer = o
                .on_local_description(lane, format!("answer {lane}"))
                .unwrap();
            answer.extend(
                o.on_local_candidate(lane, candidate(100 + lane as u16))
                    .unwrap(),
            );
            let (ja, _) = relay(&mut j, &mut o, vec![], answer, &mut |_| {}).unwrap();
            assert_eq!(
                ja,
                vec![
                    Action::AcceptAnswer(lane, format!("answer {lane}")),
                    Action::AddCandidate(lane, candidate(100 + lane as u16)),
                ]
            );
        }
    }
}

/// A joiner and an owner (lane cap `cap`) through the key exchange; `tamper` may rewrite
/// what the server relays.
fn exchanged(wish: u32, cap: u32, tamper: &mut dyn FnMut(&mut Envelope)) -> (Handshake, Handshake) {
    let mut jp = params(Role::Joiner, "pw");
    jp.lanes = wish;
    let mut op = params(Role::Owner, "pw");
    op.lanes_cap = cap;
    exchange_with(jp, op, tamper)
}

/// A joiner and an owner of these parameters through the key exchange.
fn exchange_with(
    jp: Params,
    op: Params,
    tamper: &mut dyn FnMut(&mut Envelope),
) -> (Handshake, Handshake) {
    let (mut j, first) = Handshake::joiner(jp);
    let mut o = Handshake::owner(op);
    relay(&mut j, &mut o, first, vec![], tamper).unwrap();
    (j, o)
}

/// An owner announces the lanes it answers with; the joiner then offers its lanes together,
/// before lane 0's answer, as many as it wishes within that; the owner takes them all in
/// order, and the answers come back in order.
#[test]
fn the_joiner_offers_its_lanes_together_when_the_owner_announces_them() {
    for (wish, cap, early) in [(8, 32, 8), (8, 4, 4), (1, 32, 1), (8, 1, 1)] {
        let (mut j, mut o) = exchanged(wish, cap, &mut |_| {});
        assert_eq!(j.early_lanes(), early, "wish {wish}, cap {cap}");
        let mut offers = vec![];
        for lane in 0..early {
            offers.extend(
                j.on_local_description(lane, format!("offer {lane}"))
                    .unwrap(),
            );
        }
        // No lane beyond what was announced before an answer.
        assert!(matches!(
            j.on_local_description(early, "offer".into()),
            Err(HandshakeError::OutOfOrder(_))
        ));
        let (_, oa) = relay(&mut j, &mut o, offers, vec![], &mut |_| {}).unwrap();
        let took: Vec<_> = (0..early)
            .map(|l| Action::AcceptOffer(l, format!("offer {l}")))
            .collect();
        assert_eq!(oa, took, "wish {wish}, cap {cap}");
        let mut answers = vec![];
        for lane in 0..early {
            answers.extend(
                o.on_local_description(lane, format!("answer {lane}"))
                    .unwrap(),
            );
        }
        let (ja, _) = relay(&mut j, &mut o, vec![], answers, &mut |_| {}).unwrap();
        let accepted: Vec<_> = (0..early)
            .map(|l| Action::AcceptAnswer(l, format!("answer {l}")))
            .collect();
        assert_eq!(ja, accepted);
        assert_eq!((j.lanes(), o.lanes()), (early, early));
    }
}

/// The announcement travels in the clear. A server that raises it gets the joiner to offer a
/// lane the owner did not agree on, which the owner refuses: the session fails, as it would
/// if the server dropped messages, and nothing else changes. A malformed one is refused.
#[test]
fn a_raised_lane_announcement_only_makes_the_owner_refuse() {
    let mut raise = |e: &mut Envelope| {
        if e.msg_type == msg2::LANES {
            e.payload = r#"{"lanes":32}"#.into();
        }
    };
    let (mut j, mut o) = exchanged(8, 4, &mut raise);
    assert_eq!(j.early_lanes(), 8);
    let mut offers = vec![];
    for lane in 0..8 {
        offers.extend(
            j.on_local_description(lane, format!("offer {lane}"))
                .unwrap(),
        );
    }
    let err = relay(&mut j, &mut o, offers, vec![], &mut |_| {}).unwrap_err();
    assert!(
        matches!(err, (Role::Owner, HandshakeError::Unexpected(_))),
        "{err:?}"
    );

    let mut jp = params(Role::Joiner, "pw");
    jp.lanes = 8;
    let (mut j, _) = Handshake::joiner(jp);
    let mut o = Handshake::owner(params(Role::Owner, "pw"));
    let req = Envelope::new(msg::REQUEST_OFFER, r#"{"versions":["yakk/2"]}"#, 1, 0);
    let sent = sent(o.on_message(&req).unwrap());
    assert!(sent.iter().any(|e| e.msg_type == msg2::LANES));
    let bad = Envelope::new(msg2::LANES, "{\"lanes\":\"all\"}", 0, 1);
    assert!(matches!(
        j.on_message(&bad),
        Err(HandshakeError::Malformed(_))
    ));
    // An owner never takes it.
    assert!(
        o.on_message(&Envelope::new(msg2::LANES, r#"{"lanes":2}"#, 1, 0))
            .is_err()
    );
}

#[test]
fn a_joiner_from_before_lanes_gets_one() {
    let (j, o, _) = negotiate_lanes(1, 8, true);
    assert_eq!((j.lanes(), o.lanes()), (1, 1));
    // And the owner's answer says nothing of lanes, as before.
    let plain = serde_json::to_value(v2::Message::Answer {
        sdp: "x".into(),
        features: vec![],
        lane: 0,
        lanes: match &o.state {
            State::Negotiating(Negotiation::V2(n)) => n.peer_speaks_lanes.then_some(n.lanes),
            _ => panic!("not negotiating yakk/2"),
        },
    })
    .unwrap();
    assert!(plain.get("lanes").is_none());
}

#[test]
fn lanes_out_of_place_are_refused() {
    let sealed = |h: &mut Handshake, m: v2::Message| h.seal_v2(&m);
    let offer = |lane| v2::Message::Offer {
        sdp: "o".into(),
        features: vec![],
        lane,
        lanes: None,
    };
    let unexpected = |r: Result<Vec<Action>, HandshakeError>| {
        assert!(matches!(r, Err(HandshakeError::Unexpected(_))), "{r:?}");
    };
    // Beyond the agreed number.
    let (mut j, mut o, _) = negotiate_lanes(2, 1, false);
    let env = sealed(&mut j, offer(2));
    unexpected(o.on_message(&env));
    // The same lane twice.
    let (mut j, mut o, _) = negotiate_lanes(2, 1, false);
    let env = sealed(&mut j, offer(1));
    o.on_message(&env).unwrap();
    let env = sealed(&mut j, offer(1));
    unexpected(o.on_message(&env));
    // A second offer for lane 0.
    let (mut j, mut o, _) = negotiate_lanes(2, 1, false);
    let env = sealed(&mut j, offer(0));
    unexpected(o.on_message(&env));
    // A candidate for a lane that does not exist.
    let (mut j, mut o, _) = negotiate_lanes(1, 1, false);
    let env = sealed(
        &mut j,
        v2::Message::Candidate {
            candidate: candidate(1),
            lane: 1,
        },
    );
    unexpected(o.on_message(&env));
    // An answer for a lane the joiner made no offer on.
    let (mut j, mut o, _) = negotiate_lanes(3, 1, false);
    let env = sealed(
        &mut o,
        v2::Message::Answer {
            sdp: "a".into(),
            features: vec![],
            lane: 1,
            lanes: None,
        },
    );
    unexpected(j.on_message(&env));
}

#[test]
fn an_answer_with_an_impossible_lane_count_is_refused() {
    for bad in [0, MAX_LANES + 1] {
        let mut jp = params(Role::Joiner, "pw");
        jp.lanes = 2;
        let (mut j, first) = Handshake::joiner(jp);
        let mut o = Handshake::owner(params(Role::Owner, "pw"));
        relay(&mut j, &mut o, first, vec![], &mut |_| {}).unwrap();
        let offer = j.on_local_description(0, "v=0 offer".into()).unwrap();
        relay(&mut j, &mut o, offer, vec![], &mut |_| {}).unwrap();
        o.description_sent.push(0);
        let env = o.seal_v2(&v2::Message::Answer {
            sdp: "a".into(),
            features: vec![],
            lane: 0,
            lanes: Some(bad),
        });
        let r = j.on_message(&env);
        assert!(matches!(r, Err(HandshakeError::Malformed(_))), "{r:?}");
    }
}

#[test]
fn yakk2_is_chosen_when_both_allow_v1() {
    let mut jp = params(Role::Joiner, "pw");
    let mut op = params(Role::Owner, "pw");
    jp.allow_v1 = true;
    op.allow_v1 = true;
    let (mut j, first) = Handshake::joiner(jp);
    let mut o = Handshake::owner(op);
    relay(&mut j, &mut o, first, vec![], &mut |_| {}).unwrap();
    assert_eq!(
        (j.version(), o.version()),
        (Some(Version::V2), Some(Version::V2))
    );
}

#[test]
fn yakk1_with_a_reference_style_owner_when_allowed() {
    let mut jp = params(Role::Joiner, "test");
    jp.allow_v1 = true;
    let mut op = params(Role::Owner, "test");
    op.v1_only = true;
    full_exchange(jp, op).unwrap();
}

#[test]
fn yakk1_with_a_reference_style_joiner_when_allowed() {
    let mut jp = params(Role::Joiner, "test");
    jp.v1_only = true;
    let mut op = params(Role::Owner, "test");
    op.allow_v1 = true;
    let (mut j, first) = Handshake::joiner(jp);
    assert_eq!(first.len(), 2);
    let mut o = Handshake::owner(op);
    relay(&mut j, &mut o, first, vec![], &mut |_| {}).unwrap();
    assert_eq!(
        (j.version(), o.version()),
        (Some(Version::V1), Some(Version::V1))
    );
    // yakk/1 descriptions travel as the reference's message names.
    let offer = j.on_local_description(0, "sdp".into()).unwrap();
    let Action::Send(e) = &offer[0] else { panic!() };
    assert_eq!(e.msg_type, msg::OFFER);
}

#[test]
fn v1_refused_by_default_on_both_sides() {
    let mut jp = params(Role::Joiner, "test");
    jp.v1_only = true;
    let (mut j, first) = Handshake::joiner(jp);
    let mut o = Handshake::owner(params(Role::Owner, "test"));
    let err = relay(&mut j, &mut o, first, vec![], &mut |_| {}).unwrap_err();
    assert!(
        matches!(err, (Role::Owner, HandshakeError::V1Refused)),
        "{err:?}"
    );

    let mut op = params(Role::Owner, "test");
    op.v1_only = true;
    let (mut j, first) = Handshake::joiner(params(Role::Joiner, "test"));
    let mut o = Handshake::owner(op);
    let err = relay(&mut j, &mut o, first, vec![], &mut |_| {}).unwrap_err();
    assert!(
        matches!(err, (Role::Joiner, HandshakeError::V1Refused)),
        "{err:?}"
    );
}

#[test]
fn wrong_password_fails_confirmation() {
    for v1 in [false, true] {
        let mut jp = params(Role::Joiner, "right");
        let mut op = params(Role::Owner, "wrong");
        jp.v1_only = v1;
        op.allow_v1 = v1;
        let (mut j, first) = Handshake::joiner(jp);
        let mut o = Handshake::owner(op);
        let err = relay(&mut j, &mut o, first, vec![], &mut |_| {}).unwrap_err();
        assert!(matches!(err.1, HandshakeError::WrongPassword), "{err:?}");
        assert!(!j.is_confirmed() && !o.is_confirmed());
    }
}

fn is_confirm(e: &Envelope) -> bool {
    e.msg_type == msg2::CONFIRM || e.msg_type == msg::JPAKE_KEY_CONFIRMATION
}

/// Runs a joiner and an owner until the joiner's key confirmation is ready, and withholds
/// it: returns it, and every envelope the owner sent up to then.
fn up_to_joiner_confirm(
    j: &mut Handshake,
    first: Vec<Action>,
    o: &mut Handshake,
) -> (Envelope, Vec<Envelope>) {
    let sends = |acts: Vec<Action>| {
        acts.into_iter()
            .filter_map(|a| match a {
                Action::Send(e) => Some(e),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let mut to_owner: std::collections::VecDeque<Envelope> = sends(first).into();
    let mut to_joiner = std::collections::VecDeque::new();
    let (mut confirm, mut owner_sent) = (None, vec![]);
    loop {
        if let Some(e) = to_owner.pop_front() {
            if is_confirm(&e) {
                confirm = Some(e);
                continue;
            }
            let out = sends(o.on_message(&e).unwrap());
            owner_sent.extend(out.iter().cloned());
            to_joiner.extend(out);
        } else if let Some(e) = to_joiner.pop_front() {
            to_owner.extend(sends(j.on_message(&e).unwrap()));
        } else {
            break;
        }
    }
    (confirm.expect("the joiner confirms"), owner_sent)
}

/// A joiner and an owner of `room`, both versions, with the owner's shared admission.
fn pair(
    v1: bool,
    joiner_pw: &str,
    admission: &Arc<Mutex<Admission>>,
) -> (Handshake, Vec<Action>, Handshake) {
    let mut jp = params(Role::Joiner, joiner_pw);
    let mut op = params(Role::Owner, "right");
    jp.v1_only = v1;
    op.allow_v1 = v1;
    op.admission = Some(admission.clone());
    let (j, first) = Handshake::joiner(jp);
    (j, first, Handshake::owner(op))
}

#[test]
fn the_owner_confirms_only_after_judging_the_joiners_confirmation() {
    for v1 in [false, true] {
        let adm = Arc::new(Mutex::new(Admission::new(0, None)));
        let (mut j, first, mut o) = pair(v1, "right", &adm);
        let (confirm, owner_sent) = up_to_joiner_confirm(&mut j, first, &mut o);
        // A joiner that leaves here has nothing to test a guess against.
        assert!(
            !owner_sent.iter().any(is_confirm),
            "v1 {v1}: the owner's confirmation went out before the joiner's"
        );
        let acts = o.on_message(&confirm).unwrap();
        assert!(
            matches!(&acts[..], [Action::Send(e), Action::KeyConfirmed(_)] if is_confirm(e)),
            "{acts:?}"
        );
        let Action::Send(owner_confirm) = &acts[0] else {
            unreachable!()
        };
        assert!(matches!(
            j.on_message(owner_confirm).unwrap()[..],
            [Action::KeyConfirmed(_)]
        ));
        assert!(!o.burned_room());
    }
}

/// The envelopes among `acts`.
fn sent(acts: Vec<Action>) -> Vec<Envelope> {
    acts.into_iter()
        .filter_map(|a| match a {
            Action::Send(e) => Some(e),
            _ => None,
        })
        .collect()
}

/// A yakk/2 joiner's offer and candidate go out right behind its key confirmation, before the
/// owner's comes back; the owner, which judges the confirmation first, takes them; the joiner
/// takes the answer only after the owner's confirmation.
#[test]
fn the_joiners_offer_follows_its_confirmation_without_waiting() {
    let adm = Arc::new(Mutex::new(Admission::new(0, None)));
    let (mut j, first, mut o) = pair(false, "right", &adm);
    let (confirm, _) = up_to_joiner_confirm(&mut j, first, &mut o);
    // Nothing from the owner since the joiner's confirmation: the offer is made at once.
    assert!(j.on_local_candidate(0, candidate(1)).unwrap().is_empty());
    let early = sent(j.on_local_description(0, "v=0 offer".into()).unwrap());
    assert_eq!(
        early.len(),
        2,
        "the offer, then the candidate gathered before it"
    );
    assert!(early.iter().all(|e| e.msg_type == msg2::SEALED));
    assert!(!j.is_confirmed());

    // The owner: the confirmation first (judged), then what was sealed behind it.
    let acts = o.on_message(&confirm).unwrap();
    let [
        Action::Send(owner_confirm),
        Action::KeyConfirmed(Version::V2),
    ] = &acts[..]
    else {
        panic!("{acts:?}")
    };
    let mut took = vec![];
    for e in &early {
        took.extend(o.on_message(e).unwrap());
    }
    assert_eq!(
        took,
        vec![
            Action::AcceptOffer(0, "v=0 offer".into()),
            Action::AddCandidate(0, candidate(1))
        ]
    );
    let answer = sent(o.on_local_description(0, "v=0 answer".into()).unwrap());

    // The joiner: the owner's answer is refused before the owner's confirmation ...
    let (mut j2, first2, mut o2) = pair(false, "right", &adm);
    let (confirm2, _) = up_to_joiner_confirm(&mut j2, first2, &mut o2);
    j2.on_local_description(0, "v=0 offer".into()).unwrap();
    let acts2 = o2.on_message(&confirm2).unwrap();
    assert!(matches!(
        &acts2[..],
        [Action::Send(_), Action::KeyConfirmed(_)]
    ));
    let answer2 = sent(o2.on_local_description(0, "v=0 answer".into()).unwrap());
    assert!(
        matches!(
            j2.on_message(&answer2[0]),
            Err(HandshakeError::Unexpected(_))
        ),
        "a sealed answer taken before the owner's confirmation"
    );

    // ... and taken after it, with candidates sealed on in the same counter sequence.
    assert!(matches!(
        j.on_message(owner_confirm).unwrap()[..],
        [Action::KeyConfirmed(Version::V2)]
    ));
    assert!(j.is_confirmed());
    assert_eq!(
        j.on_message(&answer[0]).unwrap(),
        vec![Action::AcceptAnswer(0, "v=0 answer".into())]
    );
    let later = sent(j.on_local_candidate(0, candidate(3)).unwrap());
    assert_eq!(
        o.on_message(&later[0]).unwrap(),
        vec![Action::AddCandidate(0, candidate(3))]
    );
}

/// A joiner with a wrong password sends its offer behind its confirmation too: the owner
/// judges the confirmation first, counts the one guess and takes nothing sealed after it.
#[test]
fn an_early_offer_under_a_wrong_password_is_never_taken() {
    let adm = Arc::new(Mutex::new(Admission::new(0, None)));
    let (mut j, first, mut o) = pair(false, "wrong", &adm);
    let (confirm, _) = up_to_joiner_confirm(&mut j, first, &mut o);
    let early = sent(j.on_local_description(0, "v=0 offer".into()).unwrap());
    assert!(matches!(
        o.on_message(&confirm),
        Err(HandshakeError::WrongPassword)
    ));
    assert!(o.burned_room());
    assert!(!o.is_confirmed());
    assert!(
        o.on_message(&early[0]).is_err(),
        "a sealed offer after a wrong guess"
    );
    assert!(!o.is_confirmed());
}

#[test]
fn a_wrong_password_is_told_and_burns_the_shared_admission() {
    for v1 in [false, true] {
        let adm = Arc::new(Mutex::new(Admission::new(0, None)));
        let (mut j, first, mut o) = pair(v1, "wrong", &adm);
        let (confirm, _) = up_to_joiner_confirm(&mut j, first, &mut o);
        let err = o.on_message(&confirm).unwrap_err();
        assert!(matches!(err, HandshakeError::WrongPassword), "{err:?}");
        assert!(o.burned_room() && adm.lock().unwrap().is_burned());
        // The owner's confirmation goes out after the judgement: the joiner sees its
        // password was wrong, and that is all (its one guess was already judged).
        let notice = o.abort_notice(&err).expect("the owner's confirmation");
        assert!(is_confirm(&notice));
        assert!(matches!(
            j.on_message(&notice),
            Err(HandshakeError::WrongPassword)
        ));

        // The next joiner, with the right password, is not judged at all.
        let (mut j2, first, mut o2) = pair(v1, "right", &adm);
        let (confirm, owner_sent) = up_to_joiner_confirm(&mut j2, first, &mut o2);
        let err = o2.on_message(&confirm).unwrap_err();
        assert!(
            matches!(err, HandshakeError::Refused(Refusal::Burned)),
            "{err:?}"
        );
        assert!(!o2.burned_room(), "only the first failure burned it");
        let notice = o2.abort_notice(&err);
        assert!(!owner_sent.iter().any(is_confirm));
        if v1 {
            assert!(notice.is_none(), "a yakk/1 joiner gets nothing");
        } else {
            let notice = notice.expect("a yakk/2 joiner is told");
            assert!(!is_confirm(&notice));
            let e = j2.on_message(&notice).unwrap_err();
            assert!(matches!(e, HandshakeError::RefusedByOwner(_)), "{e:?}");
            assert!(e.to_string().contains("ask for a new code"), "{e}");
        }
    }
}

#[test]
fn a_blanked_version_list_is_caught_as_a_downgrade() {
    let mut jp = params(Role::Joiner, "pw");
    let mut op = params(Role::Owner, "pw");
    jp.allow_v1 = true;
    op.allow_v1 = true;
    let (mut j, first) = Handshake::joiner(jp);
    let mut o = Handshake::owner(op);
    // The server makes the joiner look like the reference program.
    let mut blank = |e: &mut Envelope| {
        if e.msg_type == msg::REQUEST_OFFER {
            e.payload.clear();
        }
    };
    relay(&mut j, &mut o, first, vec![], &mut blank).unwrap();
    assert_eq!(o.version(), Some(Version::V1));
    assert_eq!(j.version(), Some(Version::V1));
    let offer = j.on_local_description(0, "v=0 offer".into()).unwrap();
    let err = relay(&mut j, &mut o, offer, vec![], &mut blank).unwrap_err();
    assert!(
        matches!(err, (Role::Owner, HandshakeError::Downgrade)),
        "{err:?}"
    );
    // The joiner hears of it, in yakk/1 too.
    let notice = o.abort_notice(&err.1).expect("a notice");
    assert!(j.on_message(&notice).is_err());

    // The joiner checks the owner's answer the same way.
    let answer = v1::Description {
        kind: "answer".into(),
        sdp: "v=0".into(),
        versions: vec![VERSION_2.into(), VERSION_1.into()],
    };
    assert!(matches!(
        v1::check_not_downgraded(true, &answer),
        Err(HandshakeError::Downgrade)
    ));
    // A reference peer's description has no list: nothing to refuse.
    let reference = v1::Description {
        versions: vec![],
        ..answer
    };
    assert!(v1::check_not_downgraded(true, &reference).is_ok());
}

#[test]
fn tampered_or_substituted_offer_is_refused() {
    for v1 in [false, true] {
        for substitute in [false, true] {
            let mut jp = params(Role::Joiner, "pw");
            let mut op = params(Role::Owner, "pw");
            jp.v1_only = v1;
            op.allow_v1 = v1;
            let (mut j, first) = Handshake::joiner(jp);
            let mut o = Handshake::owner(op);
            relay(&mut j, &mut o, first, vec![], &mut |_| {}).unwrap();
            let offer = j.on_local_description(0, "v=0 genuine".into()).unwrap();
            let mut tamper = |e: &mut Envelope| {
                if substitute {
                    // A server with its own key seals its own offer.
                    e.payload = if v1 {
                        sealed::seal_v1(&[9u8; 32], br#"{"type":"offer","sdp":"evil"}"#).unwrap()
                    } else {
                        SealedChannel::new(&[9u8; 32], &[9u8; 32])
                            .seal(
                                Header {
                                    msg_type: msg2::SEALED,
                                    room: "417",
                                    sender: 1,
                                    recipient: 0,
                                },
                                br#"{"type":"offer","sdp":"evil"}"#,
                            )
                            .unwrap()
                    };
                } else {
                    use base64::Engine;
                    let b64 = base64::engine::general_purpose::STANDARD;
                    let mut raw = b64.decode(&e.payload).unwrap();
                    let mid = raw.len() / 2;
                    raw[mid] ^= 1;
                    e.payload = b64.encode(raw);
                }
            };
            let err = relay(&mut j, &mut o, offer, vec![], &mut tamper).unwrap_err();
            assert!(
                matches!(
                    err,
                    (
                        Role::Owner,
                        HandshakeError::Sealed(SealError::Authentication)
                    )
                ),
                "v1={v1} substitute={substitute}: {err:?}"
            );
        }
    }
}

#[test]
fn the_side_that_finds_tampering_tells_the_other() {
    let (mut j, first) = Handshake::joiner(params(Role::Joiner, "pw"));
    let mut o = Handshake::owner(params(Role::Owner, "pw"));
    relay(&mut j, &mut o, first, vec![], &mut |_| {}).unwrap();
    let mut offer = match j
        .on_local_description(0, "v=0 genuine".into())
        .unwrap()
        .remove(0)
    {
        Action::Send(e) => e,
        other => panic!("expected the sealed offer, got {other:?}"),
    };
    offer.payload.insert(4, 'A');
    let err = o.on_message(&offer).unwrap_err();
    let notice = o.abort_notice(&err).expect("a sealed failure is announced");
    assert_eq!(notice.msg_type, msg2::ABORT);
    assert!(!notice.payload.contains("genuine"));
    match j.on_message(&notice) {
        Err(HandshakeError::PeerAborted { who: "owner", why }) => {
            assert!(why.contains("tampered"), "{why}")
        }
        other => panic!("the joiner must stop with the owner's reason: {other:?}"),
    }
    // Not for failures the peer sees itself, nor toward a yakk/1 peer.
    assert!(o.abort_notice(&HandshakeError::WrongPassword).is_none());
    let mut jp = params(Role::Joiner, "pw");
    jp.v1_only = true;
    let (j1, _) = Handshake::joiner(jp);
    assert!(
        j1.abort_notice(&HandshakeError::Sealed(SealError::Authentication))
            .is_none()
    );
}

#[test]
fn pake_messages_out_of_place_are_refused() {
    let (mut j, _) = Handshake::joiner(params(Role::Joiner, "pw"));
    let sealed = Envelope::new(msg2::SEALED, "AAAA", 0, 1);
    assert!(matches!(
        j.on_message(&sealed),
        Err(HandshakeError::Unexpected(_))
    ));
    let garbage = Envelope::new(msg2::PAKE1, "not base64!", 0, 1);
    assert!(matches!(
        j.on_message(&garbage),
        Err(HandshakeError::Pake(_))
    ));
    // Unknown message names are ignored, so later versions can add some.
    let future = Envelope::new("YAKK3_HELLO", "", 0, 1);
    assert!(j.on_message(&future).unwrap().is_empty());
}

/// The session the reference (Go) program recorded (`yakk1-session.json`, password "test"),
/// with the session key both of its sides derived.
fn reference_session() -> (serde_json::Value, [u8; 32]) {
    let s: serde_json::Value = serde_json::from_str(include_str!(
        "../../../yakk-pake/tests/vectors/yakk1-session.json"
    ))
    .unwrap();
    let hex = s["session_key_hex"].as_str().unwrap();
    let key: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    (s.clone(), key.try_into().unwrap())
}

fn recorded(s: &serde_json::Value, side: &str) -> Vec<Envelope> {
    serde_json::from_value(s[side].clone()).unwrap()
}

/// One side of ours, past the key exchange with the reference's session key, as if the
/// PAKE of the recorded session had just run (its secrets are not in the recording).
fn past_pake_with_reference(role: Role, key: [u8; 32]) -> Handshake {
    let mut p = params(role, "test");
    p.v1_only = true;
    Handshake::confirmed(p, Keys::V1(Zeroizing::new(key)))
}

#[test]
fn the_reference_joiners_sealed_offer_opens_on_our_owner() {
    let (s, key) = reference_session();
    let mut owner = past_pake_with_reference(Role::Owner, key);
    let mut offers = 0;
    for env in recorded(&s, "joiner_sent") {
        if env.msg_type != msg::OFFER && env.msg_type != msg::CONNECTED {
            continue;
        }
        let acts = owner.on_message(&env).unwrap();
        if env.msg_type == msg::OFFER {
            let [Action::AcceptOffer(0, sdp)] = acts.as_slice() else {
                panic!("{acts:?}")
            };
            assert!(sdp.starts_with("v=0\r\n"), "{sdp}");
            assert!(sdp.contains("webrtc-datachannel"), "{sdp}");
            assert!(sdp.contains("a=fingerprint:sha-256 "), "{sdp}");
            offers += 1;
        } else {
            assert!(acts.is_empty(), "{acts:?}");
        }
    }
    assert_eq!(offers, 1);
}

#[test]
fn the_reference_owners_sealed_answer_and_candidate_open_on_our_joiner() {
    let (s, key) = reference_session();
    let mut joiner = past_pake_with_reference(Role::Joiner, key);
    let mut seen = Vec::new();
    for env in recorded(&s, "owner_sent") {
        if !matches!(env.msg_type.as_str(), msg::ANSWER | msg::NEW_ICE_CANDIDATE) {
            continue;
        }
        match single_action(joiner.on_message(&env).unwrap()) {
            Action::AcceptAnswer(0, sdp) => {
                assert!(sdp.starts_with("v=0\r\n") && sdp.contains("webrtc-datachannel"));
                seen.push("answer");
            }
            Action::AddCandidate(0, c) => {
                assert!(c.candidate.starts_with("candidate:"), "{c:?}");
                assert!(c.sdp_mid.is_some() || c.sdp_mline_index.is_some(), "{c:?}");
                seen.push("candidate");
            }
            a => panic!("{a:?}"),
        }
    }
    assert_eq!(seen, ["answer", "candidate"]);
}

fn single_action(acts: Vec<Action>) -> Action {
    let [a] = <[Action; 1]>::try_from(acts).unwrap_or_else(|a| panic!("{a:?}"));
    a
}

#[test]
fn a_recorded_reference_message_altered_or_under_another_key_is_refused() {
    let (s, key) = reference_session();
    let offer = recorded(&s, "joiner_sent")
        .into_iter()
        .find(|e| e.msg_type == msg::OFFER)
        .unwrap();
    // One byte changed anywhere in the sealed payload (here in the middle).
    let mut raw =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &offer.payload).unwrap();
    let mid = raw.len() / 2;
    raw[mid] ^= 0x01;
    let mut altered = offer.clone();
    altered.payload = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &raw);
    let mut owner = past_pake_with_reference(Role::Owner, key);
    assert!(matches!(
        owner.on_message(&altered),
        Err(HandshakeError::Sealed(_))
    ));
    let mut other = key;
    other[31] ^= 0x80;
    let mut owner = past_pake_with_reference(Role::Owner, other);
    assert!(matches!(
        owner.on_message(&offer),
        Err(HandshakeError::Sealed(_))
    ));
}

#[test]
fn our_yakk1_sealing_has_the_references_layout() {
    // The reference's sealed payload is base64 of nonce, ciphertext and tag, with the
    // plaintext as long as the JSON it carries: ours must have the same length for the
    // same plaintext, and open back.
    let (s, key) = reference_session();
    for env in recorded(&s, "owner_sent") {
        if !matches!(env.msg_type.as_str(), msg::ANSWER | msg::NEW_ICE_CANDIDATE) {
            continue;
        }
        let plain = sealed::open_v1(&key, &env.payload).unwrap();
        let ours = sealed::seal_v1(&key, &plain).unwrap();
        assert_eq!(ours.len(), env.payload.len(), "{}", env.msg_type);
        assert_ne!(ours, env.payload, "a fresh nonce every time");
        assert_eq!(sealed::open_v1(&key, &ours).unwrap(), plain);
    }
}

/// A small deterministic generator for the chaos test (no dependency needed).
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Alters an envelope the way a hostile relay might: another message name, a flipped,
/// cut, stretched or replaced payload, another sender or recipient.
fn mutate(e: &mut Envelope, rng: &mut XorShift) {
    // The handshake's names, with CONNECTED among the yakk/1 ones and one from the future.
    let names = [
        &[msg::REQUEST_OFFER][..],
        &KNOWN[..6],
        &[msg::CONNECTED],
        &KNOWN[6..],
        &["YAKK2_FUTURE"],
    ]
    .concat();
    match rng.below(6) {
        0 => e.msg_type = names[rng.below(names.len() as u64) as usize].into(),
        1 if !e.payload.is_empty() => {
            let mut b = e.payload.clone().into_bytes();
            let i = rng.below(b.len() as u64) as usize;
            b[i] = b"AZaz09+/=\"{}[],:x"[rng.below(17) as usize];
            e.payload = String::from_utf8_lossy(&b).into_owned();
        }
        2 => {
            let cut = rng.below(e.payload.len() as u64 + 1) as usize;
            e.payload.truncate(cut);
        }
        3 => e.payload = e.payload.repeat(1 + rng.below(3) as usize),
        4 => {
            e.payload = match rng.below(4) {
                0 => String::new(),
                1 => r#"{"versions":["yakk/2","yakk/1"]}"#.into(),
                2 => r#"{"reason":"closed"}"#.into(),
                _ => format!("{:x}", rng.next()),
            }
        }
        _ => e.sender = rng.below(3) as i64 - 1,
    }
}

/// A real joiner and a real owner through a relay that drops, repeats, reorders and alters
/// messages at random, a few thousand times: nothing panics, the owner releases its key
/// confirmation only with its own key confirmed or as the answer to a judged wrong
/// password, and a joiner with a wrong password is never admitted.
#[test]
fn a_chaotic_relay_never_makes_the_owner_leak_or_admit_a_wrong_password() {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let (mut judged_wrong, mut admitted) = (0, 0);
    for case in 0..1500 {
        let right = rng.below(2) == 0;
        let v1 = rng.below(3) == 0;
        let mut jp = params(Role::Joiner, if right { "pw" } else { "not-pw" });
        let mut op = params(Role::Owner, "pw");
        jp.allow_v1 = v1;
        op.allow_v1 = v1;
        jp.v1_only = v1 && rng.below(2) == 0;
        let (mut j, first) = Handshake::joiner(jp);
        let mut o = Handshake::owner(op);
        let mut to_owner: std::collections::VecDeque<Envelope> = first
            .into_iter()
            .filter_map(|a| match a {
                Action::Send(e) => Some(e),
                _ => None,
            })
            .collect();
        let mut to_joiner = std::collections::VecDeque::new();
        let mut owner_done = false;
        for _ in 0..40 {
            if let Some(mut e) = to_owner.pop_front() {
                if owner_done {
                    continue;
                }
                match rng.below(10) {
                    0 => continue,                      // dropped
                    1 => to_owner.push_back(e.clone()), // repeated later
                    2 => mutate(&mut e, &mut rng),
                    _ => {}
                }
                match o.on_message(&e) {
                    Ok(acts) => {
                        let confirmed = acts.iter().any(|a| matches!(a, Action::KeyConfirmed(_)));
                        if confirmed {
                            assert!(right, "case {case}: a wrong password was admitted");
                            admitted += 1;
                        }
                        for a in acts {
                            if let Action::Send(out) = a {
                                assert!(
                                    !is_confirm(&out) || confirmed,
                                    "case {case}: the owner's confirmation left before judgement"
                                );
                                to_joiner.push_back(out);
                            }
                        }
                    }
                    Err(err) => {
                        if let Some(n) = o.abort_notice(&err) {
                            assert!(
                                !is_confirm(&n) || matches!(err, HandshakeError::WrongPassword),
                                "case {case}: confirmation released on {err:?}"
                            );
                        }
                        if matches!(err, HandshakeError::WrongPassword) {
                            judged_wrong += 1;
                        }
                        owner_done = true;
                    }
                }
            } else if let Some(mut e) = to_joiner.pop_front() {
                if rng.below(10) == 0 {
                    mutate(&mut e, &mut rng);
                }
                match j.on_message(&e) {
                    Ok(acts) => to_owner.extend(acts.into_iter().filter_map(|a| match a {
                        Action::Send(e) => Some(e),
                        _ => None,
                    })),
                    Err(_) => to_joiner.clear(),
                }
            } else {
                break;
            }
        }
    }
    // The relay let enough through for both outcomes to be exercised.
    assert!(
        judged_wrong > 20 && admitted > 20,
        "{judged_wrong} {admitted}"
    );
}

/// Feeds `h` the `bad` payloads, which it must refuse as unauthentic, then the `good` one, a
/// candidate it must take; returns its own description, sealed.
fn refuses_then_takes(h: &mut Handshake, t: &str, bad: [String; 2], good: String) -> Envelope {
    let (me, peer) = (h.p.my_id, h.p.peer_id);
    for bad in bad {
        let got = h.on_message(&Envelope::new(t, bad, peer, me));
        assert!(
            matches!(got, Err(HandshakeError::Sealed(SealError::Authentication))),
            "{t}: {got:?}"
        );
    }
    let got = h.on_message(&Envelope::new(t, good, peer, me)).unwrap();
    assert_eq!(got, vec![Action::AddCandidate(0, candidate(7))], "{t}");
    let sent = h.on_local_description(0, "v=0 ours".into()).unwrap();
    let [Action::Send(ours)] = sent.as_slice() else {
        panic!("{sent:?}")
    };
    ours.clone()
}

/// `Handshake::confirmed` (for the `sealed` fuzz target): on each role and version, a sealed
/// message that the peer sealed under the agreed keys is taken, one tampered with or sealed
/// under the keys the other way round is refused, and what the handshake seals opens on the
/// peer's side.
#[test]
fn a_confirmed_handshake_takes_what_is_sealed_under_its_keys_only() {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let flip = |payload: &str| {
        let mut raw = b64.decode(payload).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        b64.encode(raw)
    };
    let (a, b) = ([0x11u8; 32], [0x22u8; 32]);
    let plain = json(&candidate(7));
    let plain_v2 = json(&v2::Message::Candidate {
        candidate: candidate(7),
        lane: 0,
    });
    for role in [Role::Owner, Role::Joiner] {
        let p = params(role, "unused");
        let header = |sender, recipient| Header {
            msg_type: msg2::SEALED,
            room: "417",
            sender,
            recipient,
        };
        // yakk/2: the handshake sends under `a` and receives under `b`.
        let keys = Keys::V2 {
            send: Zeroizing::new(a),
            recv: Zeroizing::new(b),
        };
        let mut h = Handshake::confirmed(p.clone(), keys);
        assert!(h.is_confirmed());
        assert_eq!(h.version(), Some(Version::V2));
        let mut peer = SealedChannel::new(&b, &a);
        let mut backwards = SealedChannel::new(&a, &b);
        let to_us = header(p.peer_id, p.my_id);
        let good = peer.seal(to_us, plain_v2.as_bytes()).unwrap();
        let wrong_way = backwards.seal(to_us, plain_v2.as_bytes()).unwrap();
        let ours = refuses_then_takes(&mut h, msg2::SEALED, [flip(&good), wrong_way], good);
        let opened = peer
            .open(header(p.my_id, p.peer_id), &ours.payload)
            .unwrap();
        assert!(String::from_utf8(opened).unwrap().contains("v=0 ours"));

        // yakk/1: one key, both ways.
        let mut h = Handshake::confirmed(p.clone(), Keys::V1(Zeroizing::new(a)));
        assert_eq!(h.version(), Some(Version::V1));
        let good = sealed::seal_v1(&a, plain.as_bytes()).unwrap();
        let other_key = sealed::seal_v1(&b, plain.as_bytes()).unwrap();
        let t = msg::NEW_ICE_CANDIDATE;
        let ours = refuses_then_takes(&mut h, t, [flip(&good), other_key], good);
        let opened = sealed::open_v1(&a, &ours.payload).unwrap();
        let d: v1::Description = serde_json::from_slice(&opened).unwrap();
        assert_eq!(d.sdp, "v=0 ours");
        // A joiner repeats the versions it would have announced (here yakk/2 only).
        let repeated: &[&str] = match role {
            Role::Owner => &[VERSION_2, VERSION_1],
            Role::Joiner => &[VERSION_2],
        };
        assert_eq!(d.versions, repeated);
    }
}
