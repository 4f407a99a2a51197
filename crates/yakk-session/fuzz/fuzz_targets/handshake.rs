//! The handshake state machines' message input: any sequence of envelopes, as a hostile
//! signalling server could send them, into an owner and into a joiner of both protocol
//! versions. Nothing may panic, and the owner may send its key confirmation only together
//! with its own key confirmed, or as its answer to a judged wrong password.
#![no_main]

use libfuzzer_sys::fuzz_target;
use yakk_session::handshake::{Action, Handshake, HandshakeError, Params, Role, msg2};
use yakk_wire::{Envelope, msg};

const NAMES: &[&str] = &[
    msg::REQUEST_OFFER,
    msg::JPAKE_ROUND1,
    msg::JPAKE_ROUND2,
    msg::JPAKE_KEY_CONFIRMATION,
    msg::OFFER,
    msg::ANSWER,
    msg::NEW_ICE_CANDIDATE,
    msg::CONNECTED,
    msg2::PAKE1,
    msg2::PAKE2,
    msg2::CONFIRM,
    msg2::SEALED,
    msg2::ABORT,
    msg2::LANES,
];

fn params(role: Role, legacy: bool) -> Params {
    let (my_id, peer_id) = match role {
        Role::Owner => (0, 1),
        Role::Joiner => (1, 0),
    };
    Params {
        role,
        // The known-answer vectors' room and password (crates/yakk-pake/tests/vectors), so
        // their messages make seeds that pass the proofs.
        room: "armadillo-7".into(),
        my_id,
        peer_id,
        password: zeroize::Zeroizing::new("correct horse battery staple".into()),
        allow_v1: legacy,
        v1_only: false,
        lanes: 1,
        lanes_cap: 32,
        admission: None,
    }
}

fn is_confirm(e: &Envelope) -> bool {
    e.msg_type == msg2::CONFIRM || e.msg_type == msg::JPAKE_KEY_CONFIRMATION
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let legacy = flags & 1 == 1;
    let mut owner = Handshake::owner(params(Role::Owner, legacy));
    let (mut joiner, _) = Handshake::joiner(params(Role::Joiner, legacy));
    // Each message: a name index, a length (two bytes, big-endian: a round's payload is
    // longer than 255), that many payload bytes.
    while let [name, hi, lo, tail @ ..] = rest {
        let n = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (payload, next) = tail.split_at(n);
        rest = next;
        let name = NAMES[*name as usize % NAMES.len()];
        let payload = String::from_utf8_lossy(payload).into_owned();
        let to_owner = Envelope::new(name, payload.clone(), 1, 0);
        match owner.on_message(&to_owner) {
            Ok(acts) => {
                let confirmed = acts.iter().any(|a| matches!(a, Action::KeyConfirmed(_)));
                for a in &acts {
                    if let Action::Send(e) = a {
                        assert!(!is_confirm(e) || confirmed);
                    }
                }
            }
            Err(e) => {
                if let Some(n) = owner.abort_notice(&e) {
                    assert!(!is_confirm(&n) || matches!(e, HandshakeError::WrongPassword));
                }
            }
        }
        let _ = joiner.on_message(&Envelope::new(name, payload, 0, 1));
    }
});
