//! Property tests of yakk/2 over random passwords, rooms and sessions: agreement on
//! equal passwords, and failure for unequal passwords, replays across sessions, a
//! role swap and a changed room name.

use proptest::prelude::*;
use yakk_pake::PakeError;
use yakk_pake::v2::{KeyConfirm, Party, Role, Round2, SessionKeys};

struct Run {
    owner: Party,
    joiner: Party,
    owner_round2: Round2,
    joiner_round2: Round2,
    owner_confirm: KeyConfirm,
    joiner_confirm: KeyConfirm,
}

fn run(pw_o: &[u8], pw_j: &[u8], room: &str) -> Run {
    let mut owner = Party::new(Role::Owner, pw_o, room);
    let mut joiner = Party::new(Role::Joiner, pw_j, room);
    let owner_round2 = owner.receive_round1(&joiner.round1()).unwrap();
    let joiner_round2 = joiner.receive_round1(&owner.round1()).unwrap();
    let owner_confirm = owner.receive_round2(&joiner_round2).unwrap();
    let joiner_confirm = joiner.receive_round2(&owner_round2).unwrap();
    Run {
        owner,
        joiner,
        owner_round2,
        joiner_round2,
        owner_confirm,
        joiner_confirm,
    }
}

fn finish(
    mut r: Run,
) -> (
    Result<SessionKeys, PakeError>,
    Result<SessionKeys, PakeError>,
) {
    (
        r.owner.verify_confirmation(&r.joiner_confirm),
        r.joiner.verify_confirmation(&r.owner_confirm),
    )
}

fn room() -> impl Strategy<Value = String> {
    "[a-z0-9-]{1,24}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn equal_passwords_give_equal_keys(pw in prop::collection::vec(any::<u8>(), 0..40), room in room()) {
        let (o, j) = finish(run(&pw, &pw, &room));
        let (o, j) = (o.unwrap(), j.unwrap());
        prop_assert_eq!(o.signal_send_key(), j.signal_recv_key());
        prop_assert_eq!(o.signal_recv_key(), j.signal_send_key());
        prop_assert_eq!(o.exporter(b"x"), j.exporter(b"x"));
    }

    #[test]
    fn unequal_passwords_fail_on_both_sides(
        a in prop::collection::vec(any::<u8>(), 0..40),
        b in prop::collection::vec(any::<u8>(), 0..40),
        room in room(),
    ) {
        prop_assume!(a != b);
        let (o, j) = finish(run(&a, &b, &room));
        prop_assert_eq!(o.unwrap_err(), PakeError::ConfirmationMismatch);
        prop_assert_eq!(j.unwrap_err(), PakeError::ConfirmationMismatch);
    }

    #[test]
    fn messages_replayed_from_another_session_fail(pw in "[ -~]{1,20}", room in room(), which in 0u8..3) {
        // Session 1 completes up to the confirmations; session 2 gets one of its
        // messages replayed in place of the fresh one.
        let old = run(pw.as_bytes(), pw.as_bytes(), &room);
        let mut owner = Party::new(Role::Owner, pw.as_bytes(), &room);
        let mut joiner = Party::new(Role::Joiner, pw.as_bytes(), &room);
        match which {
            0 => {
                // The old joiner's round 1 verifies on its own, but then its round 2
                // (also replayed) was made for another owner's points.
                owner.receive_round1(&old.joiner.round1()).unwrap();
                let err = owner.receive_round2(&old.joiner_round2).unwrap_err();
                prop_assert!(matches!(err, PakeError::InvalidProof { .. }), "{err}");
            }
            1 => {
                owner.receive_round1(&joiner.round1()).unwrap();
                let err = owner.receive_round2(&old.joiner_round2).unwrap_err();
                prop_assert!(matches!(err, PakeError::InvalidProof { .. }), "{err}");
            }
            _ => {
                let o2 = owner.receive_round1(&joiner.round1()).unwrap();
                let j2 = joiner.receive_round1(&owner.round1()).unwrap();
                owner.receive_round2(&j2).unwrap();
                joiner.receive_round2(&o2).unwrap();
                prop_assert_eq!(
                    owner.verify_confirmation(&old.joiner_confirm).unwrap_err(),
                    PakeError::ConfirmationMismatch
                );
                prop_assert_eq!(
                    joiner.verify_confirmation(&old.owner_confirm).unwrap_err(),
                    PakeError::ConfirmationMismatch
                );
            }
        }
        let _ = old.owner_round2;
    }

    #[test]
    fn both_claiming_the_same_role_fails(pw in "[ -~]{1,20}", room in room(), owner_role in any::<bool>()) {
        let role = if owner_role { Role::Owner } else { Role::Joiner };
        let mut a = Party::new(role, pw.as_bytes(), &room);
        let mut b = Party::new(role, pw.as_bytes(), &room);
        let ea = a.receive_round1(&b.round1()).unwrap_err();
        let eb = b.receive_round1(&a.round1()).unwrap_err();
        prop_assert!(matches!(ea, PakeError::InvalidProof { .. }), "{ea}");
        prop_assert!(matches!(eb, PakeError::InvalidProof { .. }), "{eb}");
    }

    #[test]
    fn a_changed_room_name_fails(pw in "[ -~]{1,20}", room in room(), other in room()) {
        prop_assume!(room != other);
        let mut owner = Party::new(Role::Owner, pw.as_bytes(), &room);
        let mut joiner = Party::new(Role::Joiner, pw.as_bytes(), &other);
        let eo = owner.receive_round1(&joiner.round1()).unwrap_err();
        let ej = joiner.receive_round1(&owner.round1()).unwrap_err();
        prop_assert!(matches!(eo, PakeError::InvalidProof { .. }), "{eo}");
        prop_assert!(matches!(ej, PakeError::InvalidProof { .. }), "{ej}");
    }
}
