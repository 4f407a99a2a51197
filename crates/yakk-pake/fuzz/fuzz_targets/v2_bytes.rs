//! yakk/2 binary messages (points, scalars, lengths, type bytes), decoded and fed to a
//! party in the matching state: errors are fine, panics are not, and the encoding is
//! canonical (decode then encode gives the input back).
#![no_main]

use libfuzzer_sys::fuzz_target;
use yakk_pake::v2::{KeyConfirm, Party, Role, Round1, Round2};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Round1::from_bytes(data) {
        assert_eq!(m.to_bytes(), data);
        let _ = Party::new(Role::Owner, b"fuzz", "room").receive_round1(&m);
    }
    if let Ok(m) = Round2::from_bytes(data) {
        assert_eq!(m.to_bytes(), data);
        let mut owner = Party::new(Role::Owner, b"fuzz", "room");
        let joiner = Party::new(Role::Joiner, b"fuzz", "room");
        if owner.receive_round1(&joiner.round1()).is_ok() {
            let _ = owner.receive_round2(&m);
        }
    }
    if let Ok(m) = KeyConfirm::from_bytes(data) {
        assert_eq!(m.to_bytes(), data);
        let _ = Party::new(Role::Joiner, b"fuzz", "room").verify_confirmation(&m);
    }
});
