//! Vectors for the browser peer's TypeScript (`web/test/unit`): sealed signalling payloads made
//! by this crate's `SealedChannel` under the signalling keys of the yakk/2 known-answer vector,
//! the refusals of `SealedChannel::open`, and envelopes printed by `yakk_wire::Envelope`.
//!
//! The test rebuilds every vector with the real code and compares it with the committed
//! `tests/vectors/web-sealed.json`, so the file cannot drift from the Rust code. After an
//! intended change, regenerate it with
//! `YAKK_WRITE_VECTORS=1 cargo test -p yakk-session --test web_vectors`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use yakk_session::sealed::{Header, SealError, SealedChannel};
use yakk_wire::{Envelope, IceServer, MAX_ENVELOPE, msg};

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/web-sealed.json");
const KAT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../yakk-pake/tests/vectors/jpake2-kat.json"
);

const SEALED: &str = "YAKK2_SEALED";
const ROOM: &str = "armadillo-7";
const OWNER_ID: i64 = 0;
const JOINER_ID: i64 = 1;

fn key(hex: &Value) -> [u8; 32] {
    let s = hex.as_str().expect("a hex string");
    let bytes: Vec<u8> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect();
    bytes.try_into().expect("32 bytes")
}

fn header(msg_type: &str, room: &str, sender: i64, recipient: i64) -> Value {
    json!({ "msg_type": msg_type, "room": room, "sender": sender, "recipient": recipient })
}

/// The plaintexts of a session, in the JSON the session's (private) `Sealed2` prints.
const JOINER_SENDS: &[&str] = &[
    r#"{"type":"offer","sdp":"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n","features":["window"],"lanes":1}"#,
    r#"{"type":"candidate","candidate":{"candidate":"candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":null}}"#,
    r#"{"type":"candidate","candidate":{"candidate":"candidate:2 1 udp 2122260223 127.0.0.2 50001 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"ufrag"},"lane":1}"#,
    "",
    "caf\u{e9} \u{1f600}",
];
const OWNER_SENDS: &[&str] = &[
    r#"{"type":"answer","sdp":"v=0\r\n","features":["window"],"lanes":2}"#,
    r#"{"type":"candidate","candidate":{"candidate":"candidate:3 1 udp 1 ::1 9 typ host","sdpMid":null,"sdpMLineIndex":null,"usernameFragment":null}}"#,
    r#"{"type":"offer","sdp":"x","lane":1}"#,
];

fn build() -> Value {
    let kat: Value = serde_json::from_str(&std::fs::read_to_string(KAT).unwrap()).unwrap();
    let owner_send = key(&kat["owner"]["signal_send_key_hex"]);
    let owner_recv = key(&kat["owner"]["signal_recv_key_hex"]);
    let mut owner = SealedChannel::new(&owner_send, &owner_recv);
    let mut joiner = SealedChannel::new(&owner_recv, &owner_send);

    // Both directions interleaved, each message opened by the other side as it goes.
    let mut messages = Vec::new();
    let longest = JOINER_SENDS.len().max(OWNER_SENDS.len());
    for i in 0..longest {
        for (from, list) in [("joiner", JOINER_SENDS), ("owner", OWNER_SENDS)] {
            let Some(plain) = list.get(i) else { continue };
            let (me, peer) = if from == "owner" {
                (OWNER_ID, JOINER_ID)
            } else {
                (JOINER_ID, OWNER_ID)
            };
            let h = Header {
                msg_type: SEALED,
                room: ROOM,
                sender: me,
                recipient: peer,
            };
            let (sealer, opener) = if from == "owner" {
                (&mut owner, &mut joiner)
            } else {
                (&mut joiner, &mut owner)
            };
            let payload = sealer.seal(h, plain.as_bytes()).unwrap();
            assert_eq!(opener.open(h, &payload).unwrap(), plain.as_bytes());
            let env = Envelope::new(SEALED, payload.clone(), me, peer);
            messages.push(json!({
                "from": from,
                "counter": i,
                "plaintext": plain,
                "payload": payload,
                "envelope": env.to_json(),
            }));
        }
    }

    // Refusals: the joiner's first message, opened by a fresh owner channel unless stated.
    let good = Header {
        msg_type: SEALED,
        room: ROOM,
        sender: JOINER_ID,
        recipient: OWNER_ID,
    };
    let mut j = SealedChannel::new(&owner_recv, &owner_send);
    let first = j.seal(good, JOINER_SENDS[0].as_bytes()).unwrap();
    let second = j.seal(good, JOINER_SENDS[1].as_bytes()).unwrap();
    let mut tampered_tag = B64.decode(&first).unwrap();
    *tampered_tag.last_mut().unwrap() ^= 0x80;
    let mut tampered_ct = B64.decode(&first).unwrap();
    tampered_ct[8] ^= 0x01;
    let mut counter_changed = B64.decode(&second).unwrap();
    counter_changed[7] = 0;
    let cases: Vec<(&str, Header<'_>, String)> = vec![
        (
            "redirected to another recipient",
            Header {
                recipient: 2,
                ..good
            },
            first.clone(),
        ),
        (
            "claimed by another sender",
            Header { sender: 3, ..good },
            first.clone(),
        ),
        (
            "moved to another room",
            Header {
                room: "armadillo-8",
                ..good
            },
            first.clone(),
        ),
        (
            "relabelled",
            Header {
                msg_type: "YAKK2_OTHER",
                ..good
            },
            first.clone(),
        ),
        ("tag altered", good, B64.encode(&tampered_tag)),
        ("ciphertext altered", good, B64.encode(&tampered_ct)),
        ("second message first", good, second.clone()),
        ("counter rewritten", good, B64.encode(&counter_changed)),
        ("not base64", good, "not base64!".into()),
        ("unpadded base64", good, first.trim_end_matches('=').into()),
        ("too short", good, B64.encode([0u8; 23])),
        (
            "reflected back to its sealer",
            Header {
                sender: OWNER_ID,
                recipient: JOINER_ID,
                ..good
            },
            SealedChannel::new(&owner_send, &owner_recv)
                .seal(
                    Header {
                        sender: OWNER_ID,
                        recipient: JOINER_ID,
                        ..good
                    },
                    b"{}",
                )
                .unwrap(),
        ),
    ];
    let mut refused = Vec::new();
    for (case, h, payload) in cases {
        let mut o = SealedChannel::new(&owner_send, &owner_recv);
        // "reflected back to its sealer": the owner's own message, sealed under the owner's
        // sending key, cannot be opened with its receiving key.
        let err = o.open(h, &payload).expect_err(case);
        let (code, expected) = match err {
            SealError::Base64 => ("base64", None),
            SealError::Truncated => ("truncated", None),
            SealError::Authentication => ("authentication", None),
            SealError::OutOfOrder { expected, .. } => ("order", Some(expected)),
            SealError::Seal(why) => panic!("{case}: opening cannot fail to seal ({why})"),
        };
        refused.push(json!({
            "case": case,
            "opener": "owner",
            "header": header(h.msg_type, h.room, h.sender, h.recipient),
            "payload": payload,
            "error": code,
            "expected_counter": expected,
        }));
    }
    // A replay: the first message opens once, then is refused.
    let mut o = SealedChannel::new(&owner_send, &owner_recv);
    o.open(good, &first).unwrap();
    assert_eq!(
        o.open(good, &first),
        Err(SealError::OutOfOrder {
            got: 0,
            expected: 1
        })
    );

    json!({
        "description": "Sealed yakk/2 signalling (docs/yakk2.md \"Sealed payloads\") made by crates/yakk-session's SealedChannel under the signalling keys of crates/yakk-pake/tests/vectors/jpake2-kat.json, and envelopes printed by yakk-wire. Checked by crates/yakk-session/tests/web_vectors.rs; regenerate with YAKK_WRITE_VECTORS=1 cargo test -p yakk-session --test web_vectors.",
        "room": ROOM,
        "msg_type": SEALED,
        "owner_id": OWNER_ID,
        "joiner_id": JOINER_ID,
        "owner_to_joiner_key_hex": kat["owner"]["signal_send_key_hex"],
        "joiner_to_owner_key_hex": kat["owner"]["signal_recv_key_hex"],
        "messages": messages,
        "refused": refused,
        "envelopes": envelopes(),
        "refused_envelopes": refused_envelopes(),
        "max_envelope": MAX_ENVELOPE,
    })
}

/// Envelopes as yakk-wire prints them, each with its fields.
fn envelopes() -> Vec<Value> {
    let mut list = vec![
        Envelope::new(msg::REQUEST_OFFER, r#"{"versions":["yakk/2"]}"#, 1, 0),
        Envelope::new(msg::ROOM_CREATED, "armadillo", -1, 0),
        Envelope::new(
            "YAKK2_ABORT",
            r#"{"reason":"sealed"}"#,
            i64::from(i32::MAX),
            0,
        ),
        Envelope::new(
            msg::ERROR,
            "quote \" backslash \\ newline \n tab \t nul \u{0} del \u{7f} é 日本 \u{1f600} </script>",
            -1,
            7,
        ),
    ];
    let mut with_extras = Envelope::new(msg::ROOM_JOINED, "42", -1, 1);
    with_extras.ice_servers = Some(vec![
        IceServer {
            urls: vec!["stun:127.0.0.1:3478".into()],
            username: None,
            credential: None,
        },
        IceServer {
            urls: vec!["turn:127.0.0.1:3478".into(), "turns:h:5349".into()],
            username: Some("u".into()),
            credential: Some("c".into()),
        },
    ]);
    list.push(with_extras);
    let mut reclaim = Envelope::new(msg::ROOM_CREATED, "43", -1, 0);
    reclaim.reclaim = Some("s3cret".into());
    list.push(reclaim);
    list.into_iter()
        .map(|e| {
            let text = e.to_json();
            assert_eq!(Envelope::parse(text.as_bytes(), MAX_ENVELOPE).unwrap(), e);
            json!({
                "json": text,
                "msg_type": e.msg_type,
                "payload": e.payload,
                "sender": e.sender,
                "recipient": e.recipient,
                "ice_servers": e.ice_servers,
                "reclaim": e.reclaim,
            })
        })
        .collect()
}

/// Frames the Rust parser refuses (with a limit of 1024 bytes); the TypeScript one must too.
fn refused_envelopes() -> Vec<Value> {
    let cases = [
        "not json".to_string(),
        r#"{"Msg_type":1,"Payload":"","Sender":0,"Recipient":0}"#.to_string(),
        r#"{"Msg_type":"x","Payload":"","Sender":0}"#.to_string(),
        r#"{"Msg_type":"x","Payload":"","Sender":"0","Recipient":0}"#.to_string(),
        r#"{"Msg_type":"x","Sender":0,"Recipient":0}"#.to_string(),
        r#"{"Msg_type":"x","Payload":null,"Sender":0,"Recipient":0}"#.to_string(),
        r#"{"Msg_type":"x","Payload":"","Sender":0,"Recipient":0,"IceServers":[{"username":"u"}]}"#
            .to_string(),
        r#"{"Msg_type":"x","Payload":"","Sender":0,"Recipient":0,"Reclaim":5}"#.to_string(),
        format!(
            r#"{{"Msg_type":"x","Payload":"{}","Sender":0,"Recipient":0}}"#,
            "a".repeat(1000)
        ),
    ];
    cases
        .into_iter()
        .map(|text| {
            let err = Envelope::parse(text.as_bytes(), 1024).expect_err(&text);
            let code = match err {
                yakk_wire::WireError::TooLarge(..) => "too-large",
                yakk_wire::WireError::Malformed(_) => "malformed",
            };
            json!({ "json": text, "max_len": 1024, "error": code })
        })
        .collect()
}

#[test]
fn web_sealed_vectors_match_the_rust_code() {
    let built = build();
    if std::env::var_os("YAKK_WRITE_VECTORS").is_some() {
        let text = serde_json::to_string_pretty(&built).unwrap() + "\n";
        std::fs::write(VECTORS, text).unwrap();
    }
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(VECTORS)
            .expect("tests/vectors/web-sealed.json exists (YAKK_WRITE_VECTORS=1 writes it)"),
    )
    .unwrap();
    assert_eq!(
        committed, built,
        "web-sealed.json differs from what the Rust code makes now"
    );
}
