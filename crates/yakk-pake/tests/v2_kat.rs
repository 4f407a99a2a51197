//! yakk/2 known-answer vector (`tests/vectors/jpake2-kat.json`): both sides rebuilt from
//! their fixed secrets through the public API must produce every message and key.

use serde_json::Value;
use yakk_pake::PakeError;
use yakk_pake::v2::{KeyConfirm, Party, Role, Round1, Round2, Secrets};

fn load() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/jpake2-kat.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn h32(v: &Value) -> [u8; 32] {
    hex::decode(v.as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap()
}

fn party(role: Role, kat: &Value, side: &Value) -> Party {
    let secrets = Secrets {
        x1: h32(&side["x1_hex"]),
        x2: h32(&side["x2_hex"]),
        nonce_x1: h32(&side["nonce_x1_hex"]),
        nonce_x2: h32(&side["nonce_x2_hex"]),
        nonce_round2: h32(&side["nonce_round2_hex"]),
    };
    Party::with_secrets(
        role,
        kat["password"].as_str().unwrap().as_bytes(),
        kat["room"].as_str().unwrap(),
        &secrets,
    )
    .unwrap()
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap()
}

#[test]
fn each_side_reproduces_its_messages_and_keys_from_the_peer_messages() {
    let kat = load();
    for (role, me, peer) in [
        (Role::Owner, &kat["owner"], &kat["joiner"]),
        (Role::Joiner, &kat["joiner"], &kat["owner"]),
    ] {
        let mut p = party(role, &kat, me);
        assert_eq!(p.round1().to_payload(), s(&me["round1_payload"]));
        let r2 = p
            .receive_round1(&Round1::from_payload(s(&peer["round1_payload"])).unwrap())
            .unwrap();
        assert_eq!(r2.to_payload(), s(&me["round2_payload"]));
        let kc = p
            .receive_round2(&Round2::from_payload(s(&peer["round2_payload"])).unwrap())
            .unwrap();
        assert_eq!(kc.to_payload(), s(&me["key_confirm_payload"]));
        let keys = p
            .verify_confirmation(
                &KeyConfirm::from_payload(s(&peer["key_confirm_payload"])).unwrap(),
            )
            .unwrap();
        assert_eq!(
            hex::encode(keys.signal_send_key()),
            s(&me["signal_send_key_hex"])
        );
        assert_eq!(
            hex::encode(keys.signal_recv_key()),
            s(&me["signal_recv_key_hex"])
        );
        let label = s(&kat["exporter_label"]).as_bytes();
        assert_eq!(hex::encode(keys.exporter(label)), s(&me["exporter_hex"]));
    }
    // Directional keys mirror each other.
    assert_eq!(
        kat["owner"]["signal_send_key_hex"],
        kat["joiner"]["signal_recv_key_hex"]
    );
    assert_eq!(
        kat["owner"]["signal_recv_key_hex"],
        kat["joiner"]["signal_send_key_hex"]
    );
}

#[test]
fn the_vector_fails_under_another_password_or_room() {
    let kat = load();
    let mut wrong_pw = kat.clone();
    wrong_pw["password"] = Value::from("correct horse battery stapler");
    let mut p = party(Role::Owner, &wrong_pw, &kat["owner"]);
    p.receive_round1(&Round1::from_payload(s(&kat["joiner"]["round1_payload"])).unwrap())
        .unwrap();
    p.receive_round2(&Round2::from_payload(s(&kat["joiner"]["round2_payload"])).unwrap())
        .unwrap();
    assert_eq!(
        p.verify_confirmation(
            &KeyConfirm::from_payload(s(&kat["joiner"]["key_confirm_payload"])).unwrap()
        )
        .unwrap_err(),
        PakeError::ConfirmationMismatch
    );

    let mut wrong_room = kat.clone();
    wrong_room["room"] = Value::from("armadillo-8");
    let mut p = party(Role::Owner, &wrong_room, &kat["owner"]);
    assert!(matches!(
        p.receive_round1(&Round1::from_payload(s(&kat["joiner"]["round1_payload"])).unwrap()),
        Err(PakeError::InvalidProof { .. })
    ));
}
