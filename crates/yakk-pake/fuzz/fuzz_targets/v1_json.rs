//! yakk/1 message JSON and the base64 integers, points and scalars inside it, fed
//! through a party's state machine: errors are fine, panics are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use yakk_pake::v1::{KeyConfirm, Party, Round1, Round2};

fuzz_target!(|data: &[u8]| {
    if let Ok(r1) = Round1::from_json(data) {
        let mut party = Party::new(b"fuzz");
        let _ = party.receive_round1(&r1);
        let mine = party.round1();
        let _ = r1.verify_proofs();
        let _ = KeyConfirm::expected(&[7; 32], &r1, &mine);
    }
    if let Ok(r2) = Round2::from_json(data) {
        let mut party = Party::new(b"fuzz");
        let peer = Party::new(b"fuzz").round1();
        if party.receive_round1(&peer).is_ok() {
            let _ = party.receive_round2(&r2);
        }
        let _ = r2.verify_proof(&peer, &party.round1());
    }
    if let Ok(kc) = KeyConfirm::from_json(data) {
        let _ = Party::new(b"fuzz").verify_confirmation(&kc);
    }
});
