//! Offline interoperability with the reference (Go) program, past the key exchange: the sealed
//! offer, answer and candidate it sent in a recorded session (`yakk1-session.json`) open with
//! the recorded session key, and yakk's real WebRTC stack takes them — it answers the
//! reference's offer, and takes its answer and candidate for an offer of its own.

use std::time::Duration;

use serde_json::Value;
use yakk_session::sealed::open_v1;
use yakk_transport::{IceCandidate, Peer, TransportConfig};
use yakk_wire::Envelope;

fn session() -> (Value, [u8; 32]) {
    let s: Value = serde_json::from_str(include_str!(
        "../../yakk-pake/tests/vectors/yakk1-session.json"
    ))
    .unwrap();
    let hex = s["session_key_hex"].as_str().unwrap().to_owned();
    let key: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    (s, key.try_into().unwrap())
}

/// The plaintext of the first `msg_type` message one side of the recording sent.
fn opened(s: &Value, side: &str, msg_type: &str, key: &[u8; 32]) -> Value {
    let sent: Vec<Envelope> = serde_json::from_value(s[side].clone()).unwrap();
    let env = sent
        .iter()
        .find(|e| e.msg_type == msg_type)
        .unwrap_or_else(|| panic!("no {msg_type} from {side}"));
    serde_json::from_slice(&open_v1(key, &env.payload).unwrap()).unwrap()
}

/// What yakk uses toward the reference: 4096-byte messages, host candidates on loopback only.
fn toward_reference() -> TransportConfig {
    TransportConfig {
        ice_ips: vec!["127.0.0.1".parse().unwrap()],
        ..TransportConfig::v1()
    }
}

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_owner_answers_the_reference_joiners_offer() {
    let (s, key) = session();
    let offer = opened(&s, "joiner_sent", "YAKKMSG_OFFER", &key);
    assert_eq!(offer["type"], "offer");
    let (peer, _events) = Peer::new(toward_reference()).await.unwrap();
    let answer = tokio::time::timeout(T, peer.accept_offer(offer["sdp"].as_str().unwrap()))
        .await
        .expect("timed out")
        .expect("our stack takes the reference's offer");
    assert!(answer.starts_with("v=0"), "{answer}");
    assert!(answer.contains("webrtc-datachannel"), "{answer}");
    // The reference offered `actpass`; an answer must pick a DTLS role.
    assert!(
        answer.contains("a=setup:active") || answer.contains("a=setup:passive"),
        "{answer}"
    );
    peer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_joiner_takes_the_reference_owners_answer_and_candidate() {
    let (s, key) = session();
    let answer = opened(&s, "owner_sent", "YAKKMSG_ANSWER", &key);
    assert_eq!(answer["type"], "answer");
    let candidate: IceCandidate =
        serde_json::from_value(opened(&s, "owner_sent", "YAKKMSG_NEW_ICE_CANDIDATE", &key))
            .unwrap();
    let (peer, _events) = Peer::new(toward_reference()).await.unwrap();
    tokio::time::timeout(T, async {
        peer.create_offer().await.unwrap();
        peer.accept_answer(answer["sdp"].as_str().unwrap())
            .await
            .expect("our stack takes the reference's answer");
        peer.add_remote_candidate(candidate)
            .await
            .expect("our stack takes the reference's candidate");
    })
    .await
    .expect("timed out");
    peer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_is_not_a_description_is_refused() {
    // The control for the test above: the same path refuses what is not an answer.
    let (peer, _events) = Peer::new(toward_reference()).await.unwrap();
    peer.create_offer().await.unwrap();
    assert!(peer.accept_answer("v=0 not a description").await.is_err());
    peer.close().await;
}
