//! Unit tests of yakk/2: decoders, misuse and attacks, and the intermediate values
//! (s, K, the transcript hash) of the known-answer vector file.

use super::*;
use sha2::{Digest, Sha256};

fn pair(room_owner: &str, room_joiner: &str, pw_o: &[u8], pw_j: &[u8]) -> (Party, Party) {
    (
        Party::new(Role::Owner, pw_o, room_owner),
        Party::new(Role::Joiner, pw_j, room_joiner),
    )
}

fn run(o: &mut Party, j: &mut Party) -> Result<(SessionKeys, SessionKeys), (PakeError, PakeError)> {
    let o2 = o.receive_round1(&j.round1()).unwrap();
    let j2 = j.receive_round1(&o.round1()).unwrap();
    let oc = o.receive_round2(&j2).unwrap();
    let jc = j.receive_round2(&o2).unwrap();
    match (o.verify_confirmation(&jc), j.verify_confirmation(&oc)) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        (a, b) => Err((a.err().unwrap(), b.err().unwrap())),
    }
}

#[test]
fn honest_exchange_gives_matching_directional_keys() {
    let (mut o, mut j) = pair("room", "room", b"pw", b"pw");
    let (ko, kj) = run(&mut o, &mut j).unwrap();
    assert_eq!(ko.signal_send_key(), kj.signal_recv_key());
    assert_eq!(ko.signal_recv_key(), kj.signal_send_key());
    assert_ne!(ko.signal_send_key(), ko.signal_recv_key());
    assert_eq!(ko.exporter(b"files"), kj.exporter(b"files"));
    assert_ne!(ko.exporter(b"files"), ko.exporter(b"file"));
    assert_ne!(&ko.exporter(b""), ko.signal_send_key());
    assert_eq!((ko.role(), kj.role()), (Role::Owner, Role::Joiner));
    // Debug output names the role and never prints key bytes.
    assert_eq!(format!("{ko:?}"), "SessionKeys { role: Owner, .. }");
}

#[test]
fn wrong_password_fails_on_both_sides() {
    let (mut o, mut j) = pair("room", "room", b"pw1", b"pw2");
    let (eo, ej) = run(&mut o, &mut j).unwrap_err();
    assert_eq!(eo, PakeError::ConfirmationMismatch);
    assert_eq!(ej, PakeError::ConfirmationMismatch);
}

#[test]
fn reflection_is_refused() {
    let mut o = Party::new(Role::Owner, b"pw", "room");
    assert_eq!(o.receive_round1(&o.round1()), Err(PakeError::Reflected));
    assert_eq!(o.receive_round1(&o.round1()), Err(PakeError::Aborted));
}

#[test]
fn same_role_on_both_sides_fails_the_proofs() {
    let mut a = Party::new(Role::Owner, b"pw", "room");
    let b = Party::new(Role::Owner, b"pw", "room");
    assert_eq!(
        a.receive_round1(&b.round1()),
        Err(PakeError::InvalidProof {
            field: "round 1 proof for G1"
        })
    );
}

#[test]
fn other_room_fails_the_proofs() {
    let mut a = Party::new(Role::Owner, b"pw", "room-a");
    let b = Party::new(Role::Joiner, b"pw", "room-b");
    assert!(matches!(
        a.receive_round1(&b.round1()),
        Err(PakeError::InvalidProof { .. })
    ));
}

#[test]
fn out_of_order_messages_abort() {
    let mut a = Party::new(Role::Owner, b"pw", "room");
    let b = Party::new(Role::Joiner, b"pw", "room");
    let confirm = KeyConfirm { mac: [0; 32] };
    assert!(matches!(
        a.verify_confirmation(&confirm),
        Err(PakeError::OutOfOrder { .. })
    ));
    assert_eq!(a.receive_round1(&b.round1()), Err(PakeError::Aborted));
}

#[test]
fn confirmation_is_single_use() {
    let (mut o, mut j) = pair("room", "room", b"pw", b"pw");
    let o2 = o.receive_round1(&j.round1()).unwrap();
    let j2 = j.receive_round1(&o.round1()).unwrap();
    let _ = o.receive_round2(&j2).unwrap();
    let jc = j.receive_round2(&o2).unwrap();
    o.verify_confirmation(&jc).unwrap();
    assert!(matches!(
        o.verify_confirmation(&jc),
        Err(PakeError::OutOfOrder { .. })
    ));
}

#[test]
fn decoders_are_strict() {
    let r1 = Party::new(Role::Owner, b"pw", "room").round1();
    let bytes = r1.to_bytes();
    assert_eq!(bytes.len(), Round1::LEN);
    assert_eq!(Round1::from_bytes(&bytes).unwrap(), r1);
    assert_eq!(Round1::from_payload(&r1.to_payload()).unwrap(), r1);

    assert!(matches!(
        Round1::from_bytes(&bytes[..bytes.len() - 1]),
        Err(PakeError::Length { .. })
    ));
    assert!(matches!(
        Round1::from_bytes(&[]),
        Err(PakeError::Length { .. })
    ));
    let mut wrong_type = bytes.clone();
    wrong_type[0] = ROUND2_TYPE;
    assert!(matches!(
        Round1::from_bytes(&wrong_type),
        Err(PakeError::MessageType { .. })
    ));
    // G1 with tag 0x04 / 0x00 is not a compressed point.
    for tag in [0x00, 0x04, 0x05] {
        let mut bad = bytes.clone();
        bad[1] = tag;
        assert_eq!(
            Round1::from_bytes(&bad),
            Err(PakeError::PointNotOnCurve {
                field: "round 1 point G1"
            })
        );
    }
    // r1 = n − 1 + 1 = n is not canonical.
    let mut bad = bytes.clone();
    let order = hex_literal("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551");
    bad[1 + 33 + 33..1 + 33 + 33 + 32].copy_from_slice(&order);
    assert_eq!(
        Round1::from_bytes(&bad),
        Err(PakeError::InvalidScalar {
            field: "round 1 proof response r1"
        })
    );
    // An x with no point on the curve: find one by trial.
    let mut found = false;
    for x in 1u8..50 {
        let mut bad = bytes.clone();
        bad[2..34].copy_from_slice(&[0u8; 32]);
        bad[33] = x;
        if let Err(e) = Round1::from_bytes(&bad) {
            assert_eq!(
                e,
                PakeError::PointNotOnCurve {
                    field: "round 1 point G1"
                }
            );
            found = true;
            break;
        }
    }
    assert!(found);
    assert!(matches!(
        Round2::from_payload("AQ=="),
        Err(PakeError::Length { .. })
    ));
    assert!(matches!(
        KeyConfirm::from_payload("not base64!"),
        Err(PakeError::Base64 { .. })
    ));
    assert!(matches!(
        KeyConfirm::from_payload(&"A".repeat(crate::MAX_PAYLOAD_LEN + 4)),
        Err(PakeError::TooLong { .. })
    ));
}

#[test]
fn tampered_round2_and_confirmation_fail() {
    let (mut o, mut j) = pair("room", "room", b"pw", b"pw");
    let o2 = o.receive_round1(&j.round1()).unwrap();
    let _ = j.receive_round1(&o.round1()).unwrap();
    let mut bad = o2.clone();
    bad.zkp.r += Scalar::ONE;
    assert_eq!(
        j.receive_round2(&bad),
        Err(PakeError::InvalidProof {
            field: "round 2 proof for A"
        })
    );
}

#[test]
fn password_scalar_is_in_range_and_separated() {
    let s = schedule::password_scalar(b"pw");
    assert!(!bool::from(s.is_zero()));
    assert_ne!(s, schedule::password_scalar(b"pw "));
    assert_ne!(s, schedule::password_scalar(b""));
}

#[test]
fn zero_or_out_of_range_secrets_are_refused() {
    let mut secrets = kat_secrets("owner");
    secrets.nonce_round2 = [0; 32];
    assert_eq!(
        Party::with_secrets(Role::Owner, b"pw", "room", &secrets).unwrap_err(),
        PakeError::InvalidSecret {
            field: "nonce_round2"
        }
    );
    secrets.x1 = [0xff; 32];
    assert_eq!(
        Party::with_secrets(Role::Owner, b"pw", "room", &secrets).unwrap_err(),
        PakeError::InvalidSecret { field: "x1" }
    );
}

fn hex_literal(h: &str) -> Vec<u8> {
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Fixed values for the vector file: SHA-256 of a label, which is below n for these.
fn kat_value(label: &str) -> [u8; 32] {
    let v: [u8; 32] = Sha256::digest(label.as_bytes()).into();
    assert!(ec::scalar_from_canonical(&v).is_some(), "{label}");
    v
}

fn kat_secrets(side: &str) -> Secrets {
    let v = |name: &str| kat_value(&format!("yakk/2 kat {side} {name}"));
    Secrets {
        x1: v("x1"),
        x2: v("x2"),
        nonce_x1: v("nonce_x1"),
        nonce_x2: v("nonce_x2"),
        nonce_round2: v("nonce_round2"),
    }
}

const KAT_PASSWORD: &str = "correct horse battery staple";
const KAT_ROOM: &str = "armadillo-7";
const KAT_EXPORTER_LABEL: &str = "yakk/2 kat exporter";
const KAT_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/jpake2-kat.json");

/// Computes the whole vector document from the fixed inputs.
fn kat_document() -> serde_json::Value {
    let so = kat_secrets("owner");
    let sj = kat_secrets("joiner");
    let pw = KAT_PASSWORD.as_bytes();
    let mut o = Party::with_secrets(Role::Owner, pw, KAT_ROOM, &so).unwrap();
    let mut j = Party::with_secrets(Role::Joiner, pw, KAT_ROOM, &sj).unwrap();
    let (o1, j1) = (o.round1(), j.round1());
    let o2 = o.receive_round1(&j1).unwrap();
    let j2 = j.receive_round1(&o1).unwrap();
    let oc = o.receive_round2(&j2).unwrap();
    let jc = j.receive_round2(&o2).unwrap();
    let ko = o.verify_confirmation(&jc).unwrap();
    let kj = j.verify_confirmation(&oc).unwrap();

    // Independent route to K: (x1 + x3)·x2·x4·s·G.
    let s = schedule::password_scalar(pw);
    let sc = |b: &[u8; 32]| ec::scalar_from_canonical(b).unwrap();
    let k = ProjectivePoint::GENERATOR * ((sc(&so.x1) + sc(&sj.x1)) * sc(&so.x2) * sc(&sj.x2) * s);
    let (kx, _) = ec::affine_xy(&k.to_affine());
    let th = schedule::transcript_hash(
        KAT_ROOM.as_bytes(),
        [
            &o1.to_bytes(),
            &j1.to_bytes(),
            &o2.to_bytes(),
            &j2.to_bytes(),
        ],
    );

    let side = |sec: &Secrets, r1: &Round1, r2: &Round2, kc: &KeyConfirm, keys: &SessionKeys| {
        serde_json::json!({
            "x1_hex": hex(&sec.x1),
            "x2_hex": hex(&sec.x2),
            "nonce_x1_hex": hex(&sec.nonce_x1),
            "nonce_x2_hex": hex(&sec.nonce_x2),
            "nonce_round2_hex": hex(&sec.nonce_round2),
            "round1_payload": r1.to_payload(),
            "round2_payload": r2.to_payload(),
            "key_confirm_payload": kc.to_payload(),
            "signal_send_key_hex": hex(keys.signal_send_key()),
            "signal_recv_key_hex": hex(keys.signal_recv_key()),
            "exporter_hex": hex(&keys.exporter(KAT_EXPORTER_LABEL.as_bytes())),
        })
    };
    serde_json::json!({
        "description": "yakk/2 J-PAKE known-answer vector (docs/yakk2-pake.md). Fixed secrets and nonces for both roles; every payload is standard base64 of the binary message. s, K.x and the transcript hash are intermediates for implementers. Regenerate with YAKK_PAKE_WRITE_KAT=1 cargo test -p yakk-pake kat_file (only when the format changes on purpose).",
        "password": KAT_PASSWORD,
        "room": KAT_ROOM,
        "exporter_label": KAT_EXPORTER_LABEL,
        "s_hex": hex(&s.to_bytes()),
        "shared_x_hex": hex(&kx),
        "transcript_hash_hex": hex(&th),
        "owner": side(&so, &o1, &o2, &oc, &ko),
        "joiner": side(&sj, &j1, &j2, &jc, &kj),
    })
}

#[test]
fn kat_file_matches_the_implementation() {
    let doc = kat_document();
    if std::env::var_os("YAKK_PAKE_WRITE_KAT").is_some() {
        let text = serde_json::to_string_pretty(&doc).unwrap() + "\n";
        std::fs::write(KAT_PATH, text).unwrap();
    }
    let text = std::fs::read_to_string(KAT_PATH).unwrap();
    let stored: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(stored, doc);
}

/// The send key is out only between our confirmation and the peer's: the one the confirmed
/// keys give, and never before round 2 nor after the peer's confirmation was judged.
#[test]
fn the_send_key_is_out_only_while_awaiting_the_peers_confirmation() {
    let (mut o, mut j) = pair("room", "room", b"pw", b"pw");
    assert!(j.send_key_before_confirmation().is_none(), "before round 1");
    let o2 = o.receive_round1(&j.round1()).unwrap();
    let j2 = j.receive_round1(&o.round1()).unwrap();
    assert!(j.send_key_before_confirmation().is_none(), "before round 2");
    let oc = o.receive_round2(&j2).unwrap();
    let jc = j.receive_round2(&o2).unwrap();
    let early = *j.send_key_before_confirmation().expect("after round 2");
    let ko = o.verify_confirmation(&jc).unwrap();
    assert_eq!(&early, ko.signal_recv_key(), "what the owner opens with");
    let kj = j.verify_confirmation(&oc).unwrap();
    assert_eq!(&early, kj.signal_send_key());
    assert!(
        j.send_key_before_confirmation().is_none(),
        "after the confirmation"
    );

    // A wrong confirmation ends the exchange: no key is out after it either.
    let (mut o, mut j) = pair("room", "room", b"pw", b"other");
    let o2 = o.receive_round1(&j.round1()).unwrap();
    let j2 = j.receive_round1(&o.round1()).unwrap();
    let oc = o.receive_round2(&j2).unwrap();
    j.receive_round2(&o2).unwrap();
    assert!(j.verify_confirmation(&oc).is_err());
    assert!(
        j.send_key_before_confirmation().is_none(),
        "after a failed confirmation"
    );
}
