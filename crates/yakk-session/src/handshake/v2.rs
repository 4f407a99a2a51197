//! yakk/2 after the key exchange: every description and candidate is one sealed message on
//! a channel with a key per direction and a counter (docs/yakk2.md), and lane 0's
//! descriptions agree on the lanes and the features.

use serde::{Deserialize, Serialize};
use yakk_wire::{Envelope, IceCandidate};

use super::{Action, HandshakeError, MAX_LANES, Params, Role, json};
use crate::sealed::{Header, SealedChannel};

/// Message names of yakk/2. A yakk/1 peer ignores them.
pub mod msg {
    pub const PAKE1: &str = "YAKK2_PAKE1";
    pub const PAKE2: &str = "YAKK2_PAKE2";
    pub const CONFIRM: &str = "YAKK2_CONFIRM";
    pub const SEALED: &str = "YAKK2_SEALED";
    /// Plain, owner → joiner, right behind its round 1: `{"lanes":N}`, the most lanes it will
    /// answer with, so that the joiner may send its other lanes' offers with lane 0's.
    pub const LANES: &str = "YAKK2_LANES";
    /// Plain notice that the sender gave up the handshake, with the reason's code: the side
    /// that finds a tampered message is the only one that knows, and the other would wait.
    pub const ABORT: &str = "YAKK2_ABORT";
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The plaintext of a sealed message.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub(super) enum Message {
    Offer {
        sdp: String,
        /// Optional data-plane features the sender speaks (docs/yakk2.md); absent = none.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        features: Vec<String>,
        /// The lane this description is for; absent = 0.
        #[serde(default, skip_serializing_if = "is_zero")]
        lane: u32,
        /// Lane 0 only: the lanes the joiner asks for (offer) and the number agreed (answer).
        /// Absent: the sender knows nothing of lanes, and there is one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lanes: Option<u32>,
    },
    Answer {
        sdp: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        features: Vec<String>,
        #[serde(default, skip_serializing_if = "is_zero")]
        lane: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lanes: Option<u32>,
    },
    Candidate {
        candidate: IceCandidate,
        #[serde(default, skip_serializing_if = "is_zero")]
        lane: u32,
    },
}

/// The negotiation of a yakk/2 session: its sealed channel and what the peer's descriptions
/// said.
pub(super) struct Negotiation {
    channel: Box<SealedChannel>,
    /// Lanes agreed; 1 until lane 0's descriptions are both known.
    pub(super) lanes: u32,
    /// Lanes whose peer description arrived.
    described: Vec<u32>,
    /// Features the peer announced with its description.
    pub(super) peer_features: Vec<String>,
    /// Owner: the joiner's offer said how many lanes it wants (it speaks lanes).
    pub(super) peer_speaks_lanes: bool,
}

impl Negotiation {
    pub(super) fn new(send: &[u8; 32], recv: &[u8; 32]) -> Self {
        let mut n = Negotiation::sending_only(send);
        n.channel.receive_with(recv);
        n
    }

    /// A joiner's, between its key confirmation and the owner's: it seals its offer and
    /// candidates; it opens nothing until [`Negotiation::receive_with`].
    pub(super) fn sending_only(send: &[u8; 32]) -> Self {
        Negotiation {
            channel: Box::new(SealedChannel::sending_only(send)),
            lanes: 1,
            described: Vec::new(),
            peer_features: Vec::new(),
            peer_speaks_lanes: false,
        }
    }

    /// The owner's key confirmation verified: what it seals opens with `recv` from now on.
    pub(super) fn receive_with(&mut self, recv: &[u8; 32]) {
        self.channel.receive_with(recv);
    }

    /// A sealed message from the peer; `sent` are the lanes whose description of ours went
    /// out.
    pub(super) fn on_sealed(
        &mut self,
        p: &Params,
        sent: &[u32],
        env: &Envelope,
    ) -> Result<Vec<Action>, HandshakeError> {
        let header = Header {
            msg_type: &env.msg_type,
            room: &p.room,
            sender: p.peer_id,
            recipient: p.my_id,
        };
        let plain = self.channel.open(header, &env.payload)?;
        let m: Message = serde_json::from_slice(&plain)
            .map_err(|_| HandshakeError::Malformed("sealed".into()))?;
        Ok(match (p.role, m) {
            (
                Role::Owner,
                Message::Offer {
                    sdp,
                    features,
                    lane,
                    lanes,
                },
            ) => {
                self.peer_describes(p.role, sent, lane)?;
                if lane == 0 {
                    self.peer_features = features;
                    // A joiner that speaks lanes gets the larger wish of the two.
                    self.peer_speaks_lanes = lanes.is_some();
                    if let Some(wish) = lanes {
                        self.lanes = wish.max(p.lanes).min(p.lanes_cap).clamp(1, MAX_LANES);
                    }
                }
                vec![Action::AcceptOffer(lane, sdp)]
            }
            (
                Role::Joiner,
                Message::Answer {
                    sdp,
                    features,
                    lane,
                    lanes,
                },
            ) => {
                self.peer_describes(p.role, sent, lane)?;
                if lane == 0 {
                    self.peer_features = features;
                    let n = lanes.unwrap_or(1);
                    if !(1..=MAX_LANES).contains(&n) {
                        return Err(HandshakeError::Malformed("sealed answer".into()));
                    }
                    self.lanes = n;
                }
                vec![Action::AcceptAnswer(lane, sdp)]
            }
            (_, Message::Candidate { candidate, lane }) => {
                if lane >= self.lanes {
                    return Err(HandshakeError::Unexpected("sealed candidate".into()));
                }
                vec![Action::AddCandidate(lane, candidate)]
            }
            _ => return Err(HandshakeError::Unexpected("sealed description".into())),
        })
    }

    /// Checks the lane of a description from the peer: known, and the first for that lane
    /// (a joiner's offer comes first, so an answer only for a lane we offered).
    fn peer_describes(
        &mut self,
        role: Role,
        sent: &[u32],
        lane: u32,
    ) -> Result<(), HandshakeError> {
        let fresh = !self.described.contains(&lane);
        let ours_first = role == Role::Owner || sent.contains(&lane);
        let known = lane == 0 || lane < self.lanes;
        if !(fresh && ours_first && known) {
            return Err(HandshakeError::Unexpected("sealed description".into()));
        }
        self.described.push(lane);
        Ok(())
    }

    pub(super) fn seal(&mut self, p: &Params, m: &Message) -> Result<Envelope, HandshakeError> {
        let header = Header {
            msg_type: msg::SEALED,
            room: &p.room,
            sender: p.my_id,
            recipient: p.peer_id,
        };
        let payload = self.channel.seal(header, json(m).as_bytes())?;
        Ok(Envelope::new(msg::SEALED, payload, p.my_id, p.peer_id))
    }

    /// Our offer (joiner) or answer (owner) for `lane`, sealed. Lane 0's says which features
    /// we speak and, from a joiner, the lanes it wishes for; from an owner, the lanes agreed
    /// if the joiner speaks lanes.
    pub(super) fn description(
        &mut self,
        p: &Params,
        features: &[String],
        lane: u32,
        sdp: String,
    ) -> Result<Envelope, HandshakeError> {
        let (features, lanes) = match (lane, p.role) {
            (1.., _) => (Vec::new(), None),
            (0, Role::Joiner) => (features.to_vec(), Some(p.lanes.clamp(1, MAX_LANES))),
            (0, Role::Owner) => (
                features.to_vec(),
                self.peer_speaks_lanes.then_some(self.lanes),
            ),
        };
        let m = match p.role {
            Role::Joiner => Message::Offer {
                sdp,
                features,
                lane,
                lanes,
            },
            Role::Owner => Message::Answer {
                sdp,
                features,
                lane,
                lanes,
            },
        };
        self.seal(p, &m)
    }

    pub(super) fn candidate(
        &mut self,
        p: &Params,
        lane: u32,
        candidate: IceCandidate,
    ) -> Result<Envelope, HandshakeError> {
        self.seal(p, &Message::Candidate { candidate, lane })
    }
}
