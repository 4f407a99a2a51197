//! yakk/2 binary messages (points, scalars, lengths, type bytes), decoded and fed to a
//! party in the matching state: errors are fine, panics are not, and the encoding is
//! canonical (decode then encode gives the input back).
//!
//! The parties are built once (feature `fuzzing` makes them `Clone`) and each run starts
//! from a copy: key generation would otherwise cost more than everything the input drives.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use yakk_pake::v2::{KeyConfirm, Party, Role, Round1, Round2};

struct Parties {
    /// An owner waiting for the joiner's round 1.
    owner: Party,
    /// An owner that took the joiner's round 1: waiting for its round 2.
    owner_after_round1: Party,
    /// A joiner that took the owner's rounds 1 and 2: waiting for its key confirmation.
    joiner_awaiting_confirm: Party,
}

fn parties() -> &'static Parties {
    static PARTIES: OnceLock<Parties> = OnceLock::new();
    PARTIES.get_or_init(|| {
        let owner = Party::new(Role::Owner, b"fuzz", "room");
        let joiner = Party::new(Role::Joiner, b"fuzz", "room");
        let mut owner_after_round1 = owner.clone();
        let owner_round2 = owner_after_round1
            .receive_round1(&joiner.round1())
            .expect("an honest round 1");
        let mut joiner_awaiting_confirm = joiner.clone();
        joiner_awaiting_confirm
            .receive_round1(&owner.round1())
            .expect("an honest round 1");
        joiner_awaiting_confirm
            .receive_round2(&owner_round2)
            .expect("an honest round 2");
        Parties {
            owner,
            owner_after_round1,
            joiner_awaiting_confirm,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let p = parties();
    if let Ok(m) = Round1::from_bytes(data) {
        assert_eq!(m.to_bytes(), data);
        let _ = p.owner.clone().receive_round1(&m);
    }
    if let Ok(m) = Round2::from_bytes(data) {
        assert_eq!(m.to_bytes(), data);
        let _ = p.owner_after_round1.clone().receive_round2(&m);
    }
    if let Ok(m) = KeyConfirm::from_bytes(data) {
        assert_eq!(m.to_bytes(), data);
        // A hostile confirmation never passes: only the owner's own could.
        assert!(
            p.joiner_awaiting_confirm
                .clone()
                .verify_confirmation(&m)
                .is_err()
        );
    }
});
