//! The signalling envelope: the one JSON shape that travels between a peer and the signalling
//! server, in both directions (PROTOCOL.md §1), plus the message names both sides use.
//!
//! This crate owns parsing and printing of envelopes, and the one escaping ([`escape`]) of text
//! that came over the wire before it is shown; it knows nothing of rooms, keys or WebRTC. Both
//! the signalling server and the peers' session layer depend on it so that there is exactly one
//! definition of the wire shape.
#![forbid(unsafe_code)]
// No panics outside tests; a local `allow` says why it cannot fire.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![cfg_attr(not(test), deny(clippy::unreachable))]

mod text;

pub use text::escape;

use serde::{Deserialize, Serialize};

/// Largest envelope, in bytes: what a yakk signalling server accepts by default, and the most a
/// yakk peer accepts from a server (its WebSocket refuses a longer message or frame before
/// reading it).
pub const MAX_ENVELOPE: usize = 64 * 1024;

/// Mailbox id the server uses as `Sender` in its own replies (`YAKKMSG_ROOMCREATED`).
pub const SERVER_ID: i64 = -1;

/// Message names of yakk/1 and the server.
pub mod msg {
    pub const ROOM_CREATED: &str = "YAKKMSG_ROOMCREATED";
    pub const ROOM_JOINED: &str = "YAKKMSG_ROOMJOINED";
    pub const JOIN_ROOM: &str = "YAKKMSG_JOINROOM";
    pub const ERROR: &str = "YAKKMSG_ERROR";
    pub const REQUEST_OFFER: &str = "YAKKMSG_REQUESTOFFER";
    pub const JPAKE_ROUND1: &str = "YAKKMSG_JPAKEROUND1";
    pub const JPAKE_ROUND2: &str = "YAKKMSG_JPAKEROUND2";
    pub const JPAKE_KEY_CONFIRMATION: &str = "YAKKMSG_JPAKEKEYCONFIRMATION";
    pub const OFFER: &str = "YAKKMSG_OFFER";
    pub const ANSWER: &str = "YAKKMSG_ANSWER";
    pub const NEW_ICE_CANDIDATE: &str = "YAKKMSG_NEW_ICE_CANDIDATE";
    pub const CONNECTED: &str = "YAKKMSG_CONNECTED";
}

/// An ICE server (STUN or TURN) that the signalling server advertises to the peers of a room.
/// Travels as an extra field of `YAKKMSG_ROOMCREATED` / `YAKKMSG_ROOMJOINED`, which the original
/// program's clients ignore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// An ICE candidate as the peers exchange it inside sealed payloads: the JSON shape of the browser
/// API (`RTCIceCandidateInit`), which is what the original program sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceCandidate {
    pub candidate: String,
    #[serde(rename = "sdpMid", default)]
    pub sdp_mid: Option<String>,
    #[serde(rename = "sdpMLineIndex", default)]
    pub sdp_mline_index: Option<u16>,
    #[serde(rename = "usernameFragment", default)]
    pub username_fragment: Option<String>,
}

/// One signalling message. Field names are the original program's, byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    #[serde(rename = "Msg_type")]
    pub msg_type: String,
    #[serde(rename = "Payload")]
    pub payload: String,
    #[serde(rename = "Sender")]
    pub sender: i64,
    #[serde(rename = "Recipient")]
    pub recipient: i64,
    /// Extra field in the server's room replies: ICE servers the peers may use.
    #[serde(
        rename = "IceServers",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ice_servers: Option<Vec<IceServer>>,
    /// Extra field in `YAKKMSG_ROOMCREATED` from a clustered server (`yakk signal --redis`): the
    /// secret with which the owner takes its room back after losing its connection
    /// (`/ws/?roomID=NAME&reclaim=SECRET`). Clients that do not know it ignore it, as the
    /// original client ignores every field it does not name.
    #[serde(rename = "Reclaim", default, skip_serializing_if = "Option::is_none")]
    pub reclaim: Option<String>,
}

/// Why a frame is not an envelope.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("message is {0} bytes, over the limit of {1}")]
    TooLarge(usize, usize),
    #[error("message is not a signalling envelope: {0}")]
    Malformed(String),
}

impl Envelope {
    pub fn new(msg_type: &str, payload: impl Into<String>, sender: i64, recipient: i64) -> Self {
        Envelope {
            msg_type: msg_type.to_string(),
            payload: payload.into(),
            sender,
            recipient,
            ice_servers: None,
            reclaim: None,
        }
    }

    /// Parses one frame's bytes (text or binary frame alike), tolerating surrounding whitespace
    /// such as the trailing newline the original client sends.
    pub fn parse(bytes: &[u8], max_len: usize) -> Result<Self, WireError> {
        if bytes.len() > max_len {
            return Err(WireError::TooLarge(bytes.len(), max_len));
        }
        let trimmed = bytes.trim_ascii();
        serde_json::from_slice(trimmed).map_err(|e| WireError::Malformed(e.to_string()))
    }

    /// Compact JSON, as the original program prints it.
    pub fn to_json(&self) -> String {
        // Strings, numbers and options only, no map with non-string keys: serialising cannot fail.
        #[allow(clippy::expect_used)]
        serde_json::to_string(self).expect("an envelope always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_original_frame_with_trailing_newline() {
        let raw = b"{\"Msg_type\":\"YAKKMSG_REQUESTOFFER\",\"Payload\":\"\",\"Sender\":1,\"Recipient\":0}\n";
        let e = Envelope::parse(raw, 1024).unwrap();
        assert_eq!(e.msg_type, msg::REQUEST_OFFER);
        assert_eq!((e.sender, e.recipient), (1, 0));
        assert_eq!(e.ice_servers, None);
    }

    #[test]
    fn prints_original_field_order_without_extras() {
        let e = Envelope::new(msg::ROOM_CREATED, "armadillo", SERVER_ID, 0);
        assert_eq!(
            e.to_json(),
            r#"{"Msg_type":"YAKKMSG_ROOMCREATED","Payload":"armadillo","Sender":-1,"Recipient":0}"#
        );
    }

    #[test]
    fn reclaim_secret_is_an_optional_extra_field() {
        let mut e = Envelope::new(msg::ROOM_CREATED, "42", SERVER_ID, 0);
        e.reclaim = Some("s3cret".into());
        let json = e.to_json();
        assert_eq!(
            json,
            r#"{"Msg_type":"YAKKMSG_ROOMCREATED","Payload":"42","Sender":-1,"Recipient":0,"Reclaim":"s3cret"}"#
        );
        assert_eq!(Envelope::parse(json.as_bytes(), 1024).unwrap(), e);
    }

    #[test]
    fn rejects_wrong_types_missing_fields_and_oversize() {
        for bad in [
            &b"not json"[..],
            br#"{"Msg_type":1,"Payload":"","Sender":0,"Recipient":0}"#,
            br#"{"Msg_type":"x","Payload":"","Sender":0}"#,
            br#"{"Msg_type":"x","Payload":"","Sender":"0","Recipient":0}"#,
            b"\xff\xfe\x00",
        ] {
            assert!(matches!(
                Envelope::parse(bad, 1024),
                Err(WireError::Malformed(_))
            ));
        }
        let big = vec![b' '; 2000];
        assert!(matches!(
            Envelope::parse(&big, 1024),
            Err(WireError::TooLarge(2000, 1024))
        ));
    }
}
