//! yakk/1 against the original program: the known-answer exchanges of
//! `jpake1-kat.json` and the captured session of `yakk1-session.json` (copied from
//! `shared/vectors/`, see `PROTOCOL.md` §4).

use serde_json::Value;
use yakk_pake::PakeError;
use yakk_pake::v1::{KeyConfirm, Party, Round1, Round2};

fn load(name: &str) -> Value {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn hex_any(text: &str) -> Vec<u8> {
    let padded = if text.len() % 2 == 1 {
        format!("0{text}")
    } else {
        text.to_owned()
    };
    hex::decode(padded).unwrap()
}

fn msg<T: serde::de::DeserializeOwned>(v: &Value) -> T {
    serde_json::from_value(v.clone()).unwrap()
}

/// Runs one side of a KAT case and returns (session key hex, our confirmation, accepts peer).
fn run_side(password: &str, me: &Value, peer: &Value) -> (String, KeyConfirm, bool) {
    let mut party = Party::with_secrets(
        password.as_bytes(),
        &hex_any(me["X1Hex"].as_str().unwrap()),
        &hex_any(me["X2Hex"].as_str().unwrap()),
    )
    .unwrap();
    // Our public points are deterministic, so they match the original program's round 1.
    let ours = party.round1();
    let theirs: Round1 = msg(&me["Round1"]);
    assert_eq!(
        (&ours.x1_gx, &ours.x1_gy, &ours.x2_gx, &ours.x2_gy),
        (&theirs.x1_gx, &theirs.x1_gy, &theirs.x2_gx, &theirs.x2_gy)
    );
    ours.verify_proofs().unwrap();

    party.receive_round1(&msg(&peer["Round1"])).unwrap();
    let confirm = party.receive_round2(&msg(&peer["Round2"])).unwrap();
    let key = hex::encode(party.session_key().unwrap());
    let accepts = match party.verify_confirmation(&msg(&peer["KeyConfirm"])) {
        Ok(()) => true,
        Err(PakeError::ConfirmationMismatch) => false,
        Err(e) => panic!("unexpected error {e}"),
    };
    (key, confirm, accepts)
}

#[test]
fn reproduces_every_kat_key_and_confirmation() {
    let cases = load("jpake1-kat.json");
    let cases = cases.as_array().unwrap();
    assert_eq!(cases.len(), 3);
    for (i, case) in cases.iter().enumerate() {
        let (a, b) = (&case["A"], &case["B"]);
        let pw_a = case["PasswordA"].as_str().unwrap();
        let pw_b = case["PasswordB"].as_str().unwrap();

        let (key_a, confirm_a, a_accepts_b) = run_side(pw_a, a, b);
        assert_eq!(
            key_a,
            a["SessionKeyHex"].as_str().unwrap(),
            "case {i} key A"
        );
        assert_eq!(
            confirm_a,
            msg::<KeyConfirm>(&a["KeyConfirm"]),
            "case {i} KC A"
        );
        assert_eq!(
            a_accepts_b,
            case["AAcceptsB"].as_bool().unwrap(),
            "case {i}"
        );

        let (key_b, confirm_b, b_accepts_a) = run_side(pw_b, b, a);
        assert_eq!(
            key_b,
            b["SessionKeyHex"].as_str().unwrap(),
            "case {i} key B"
        );
        assert_eq!(
            confirm_b,
            msg::<KeyConfirm>(&b["KeyConfirm"]),
            "case {i} KC B"
        );
        assert_eq!(
            b_accepts_a,
            case["BAcceptsA"].as_bool().unwrap(),
            "case {i}"
        );

        assert_eq!(key_a == key_b, pw_a == pw_b, "case {i}");
    }
}

#[test]
fn kat_proofs_verify() {
    for case in load("jpake1-kat.json").as_array().unwrap() {
        let r1a: Round1 = msg(&case["A"]["Round1"]);
        let r1b: Round1 = msg(&case["B"]["Round1"]);
        r1a.verify_proofs().unwrap();
        r1b.verify_proofs().unwrap();
        msg::<Round2>(&case["A"]["Round2"])
            .verify_proof(&r1a, &r1b)
            .unwrap();
        msg::<Round2>(&case["B"]["Round2"])
            .verify_proof(&r1b, &r1a)
            .unwrap();
        // Swapping the roles changes the generator, so the proof must fail.
        assert!(matches!(
            msg::<Round2>(&case["A"]["Round2"]).verify_proof(&r1b, &r1a),
            Err(PakeError::InvalidProof { .. })
        ));
    }
}

fn payload(sent: &Value, msg_type: &str) -> String {
    sent.as_array()
        .unwrap()
        .iter()
        .find(|e| e["Msg_type"] == msg_type)
        .unwrap_or_else(|| panic!("no {msg_type}"))["Payload"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn captured_session_verifies() {
    let session = load("yakk1-session.json");
    let key: [u8; 32] = hex::decode(session["session_key_hex"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let mut sides = Vec::new();
    for who in ["owner_sent", "joiner_sent"] {
        let sent = &session[who];
        let p1 = payload(sent, "YAKKMSG_JPAKEROUND1");
        let p2 = payload(sent, "YAKKMSG_JPAKEROUND2");
        let pc = payload(sent, "YAKKMSG_JPAKEKEYCONFIRMATION");
        let r1 = Round1::from_payload(&p1).unwrap();
        let r2 = Round2::from_payload(&p2).unwrap();
        let kc = KeyConfirm::from_payload(&pc).unwrap();
        // Our encoder reproduces the original program's payloads byte for byte.
        assert_eq!(r1.to_payload(), p1);
        assert_eq!(r2.to_payload(), p2);
        assert_eq!(kc.to_payload(), pc);
        r1.verify_proofs().unwrap();
        sides.push((r1, r2, kc));
    }
    let (owner, joiner) = (&sides[0], &sides[1]);
    owner.1.verify_proof(&owner.0, &joiner.0).unwrap();
    joiner.1.verify_proof(&joiner.0, &owner.0).unwrap();
    assert_eq!(
        KeyConfirm::expected(&key, &owner.0, &joiner.0).unwrap(),
        owner.2
    );
    assert_eq!(
        KeyConfirm::expected(&key, &joiner.0, &owner.0).unwrap(),
        joiner.2
    );
    // A different key gives a different confirmation.
    let mut other = key;
    other[0] ^= 1;
    assert_ne!(
        KeyConfirm::expected(&other, &owner.0, &joiner.0).unwrap(),
        owner.2
    );
}

#[test]
fn original_round2_for_another_round1_is_refused() {
    // Full state machine against the original program's messages, joined from both ends.
    let case = &load("jpake1-kat.json")[1];
    let mut ours = Party::new(case["PasswordA"].as_str().unwrap().as_bytes());
    let peer_round1: Round1 = msg(&case["B"]["Round1"]);
    ours.receive_round1(&peer_round1).unwrap();
    // The original program's round 2 was computed against A's fixed round 1, not ours.
    assert!(matches!(
        ours.receive_round2(&msg(&case["B"]["Round2"])),
        Err(PakeError::InvalidProof { .. })
    ));
}
