//! The handshake state machines of owner and joiner, free of I/O: an envelope or a local event
//! goes in, envelopes to send and instructions for the peer connection come out.
//!
//! Flow (PROTOCOL.md §2, docs/yakk2.md): the joiner announces the versions it speaks in
//! `YAKKMSG_REQUESTOFFER` and, for yakk/2, sends its first J-PAKE message at once. Both sides run
//! the PAKE concurrently; when the peer's key confirmation verifies, the joiner makes the offer,
//! the owner answers, and both trickle ICE candidates — all sealed under the session key.
//! yakk/1 is spoken only when the user allowed it; a yakk/2 peer never falls back silently.

use serde::{Deserialize, Serialize};
use yakk_wire::{Envelope, IceCandidate, msg};
use zeroize::Zeroizing;

use std::sync::{Arc, Mutex, PoisonError};

use crate::admission::{Admission, Judgement, Refusal};
use crate::pake::{Keys, Pake, PakeFailure};
use crate::sealed::{self, Header, SealError, SealedChannel};

/// Message names of yakk/2. A reference peer ignores them.
pub mod msg2 {
    pub const PAKE1: &str = "YAKK2_PAKE1";
    pub const PAKE2: &str = "YAKK2_PAKE2";
    pub const CONFIRM: &str = "YAKK2_CONFIRM";
    pub const SEALED: &str = "YAKK2_SEALED";
    /// Plain notice that the sender gave up the handshake, with the reason's code: the side
    /// that finds a tampered message is the only one that knows, and the other would wait.
    pub const ABORT: &str = "YAKK2_ABORT";
}

/// The versions string a joiner announces.
pub const VERSION_2: &str = "yakk/2";
pub const VERSION_1: &str = "yakk/1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Owner,
    Joiner,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Version {
    #[serde(rename = "yakk/1")]
    V1,
    #[serde(rename = "yakk/2")]
    V2,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Version::V1 => VERSION_1,
            Version::V2 => VERSION_2,
        })
    }
}

/// What the handshake asks its driver to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send this envelope to the signalling server.
    Send(Envelope),
    /// The key is confirmed; the peer connection may be built now (joiner: make an offer).
    KeyConfirmed(Version),
    /// Owner: apply this offer to the peer connection of this lane (0 is the first; yakk/2
    /// lanes, docs/yakk2.md) and produce an answer.
    AcceptOffer(u32, String),
    /// Joiner: apply this answer to the peer connection of this lane. After lane 0's answer,
    /// [`Handshake::lanes`] says how many peer connections to make.
    AcceptAnswer(u32, String),
    /// Add the peer's ICE candidate to the peer connection of this lane.
    AddCandidate(u32, IceCandidate),
}

/// Why a handshake ended.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error(
        "the key confirmation failed: the password is wrong, or someone else joined the room first"
    )]
    WrongPassword,
    #[error(
        "the peer speaks only yakk/1 (the original YAKK program), whose key exchange is weaker; run again with --legacy to allow it"
    )]
    LegacyRefused,
    #[error("the peer sent an invalid key-exchange message: {0}")]
    Pake(String),
    #[error(
        "a sealed signalling message was refused: {0} (the signalling server or someone in the room tampered with it)"
    )]
    Sealed(#[from] SealError),
    #[error("the peer sent an unexpected {0} message")]
    Unexpected(String),
    #[error("the peer sent a malformed {0} message")]
    Malformed(String),
    /// Owner: a joiner's key confirmation was not judged (the code is burned or used up).
    #[error("{}", refusal_text(*.0))]
    Refused(Refusal),
    /// Joiner: the owner refused to judge our key confirmation (code closed, room full) or
    /// to start a handshake (busy).
    #[error("{0}")]
    RefusedByOwner(&'static str),
    /// Two yakk/2 peers were made to speak yakk/1: someone removed the joiner's version list.
    #[error(
        "the peer speaks yakk/2 but the session was downgraded to yakk/1: the signalling server tampered with the negotiation"
    )]
    Downgrade,
    /// The peer sent `YAKK2_ABORT`. Unauthenticated, like the signalling itself: whoever can
    /// forge it could as well drop every message, so it only says why the wait ends.
    #[error("the {who} ended the handshake: {why}")]
    PeerAborted { who: &'static str, why: String },
}

fn refusal_text(r: Refusal) -> &'static str {
    match r {
        Refusal::Burned => "refused a joiner: the code was closed after a failed password attempt",
        Refusal::Full => "refused a joiner: the room admits no more joiners",
    }
}

/// Reason codes of `YAKK2_ABORT`, and what they tell the side that receives one.
const ABORT_REASONS: &[(&str, &str)] = &[
    (
        "closed",
        "the code was closed after a failed password attempt: ask for a new code",
    ),
    (
        "full",
        "the room admits no more joiners: ask for a new code",
    ),
    (
        "busy",
        "the owner is busy with other joiners: try again in a moment",
    ),
    (
        "downgrade",
        "the session was downgraded to yakk/1 on the way (the signalling server tampered with the negotiation)",
    ),
    (
        "sealed",
        "a sealed message from this side failed authentication there (the signalling server or someone in the room tampered with it)",
    ),
    ("pake", "it found our key-exchange message invalid"),
    (
        "protocol",
        "it received a malformed or out-of-place message (the signalling server may have altered it)",
    ),
];

/// The reason codes by which an owner refuses a joiner (rather than reporting a failure).
const REFUSALS: &[&str] = &["closed", "full", "busy"];

#[derive(Debug, Serialize, Deserialize)]
struct Abort {
    reason: String,
}

impl From<PakeFailure> for HandshakeError {
    fn from(f: PakeFailure) -> Self {
        match f {
            PakeFailure::Confirmation => HandshakeError::WrongPassword,
            PakeFailure::Invalid(e) => HandshakeError::Pake(e),
        }
    }
}

/// Fixed facts of one handshake.
#[derive(Clone)]
pub struct Params {
    pub role: Role,
    pub room: String,
    pub my_id: i64,
    pub peer_id: i64,
    pub password: Zeroizing<String>,
    pub allow_legacy: bool,
    /// Speak only yakk/1, exactly as the reference program does (for interoperability tests).
    pub legacy_only: bool,
    /// How many peer connections (lanes) this side asks for; yakk/2 uses the larger wish of
    /// the two sides, at most [`MAX_LANES`].
    pub lanes: u32,
    /// Owner: the most lanes it answers with, whatever the wishes (at least 1): what its
    /// budget for all joiners leaves. [`MAX_LANES`] for no cap.
    pub lanes_cap: u32,
    /// Owner: the room's admission policy, shared by the handshakes of all its joiners, which
    /// judges key confirmations one at a time. `None`: a room of its own that burns at the
    /// first wrong password.
    pub admission: Option<Arc<Mutex<Admission>>>,
}

/// The most lanes (peer connections per session) yakk/2 peers agree on.
pub const MAX_LANES: u32 = 32;

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Debug, Serialize, Deserialize)]
struct RequestOffer {
    versions: Vec<String>,
}

/// The plaintext of a yakk/2 sealed message.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Sealed2 {
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

/// Feature: per-stream flow control with window grants (docs/yakk2.md).
pub const FEATURE_WINDOW: &str = "window";

/// The plaintext of a yakk/1 offer or answer.
#[derive(Debug, Serialize, Deserialize)]
struct Description1 {
    #[serde(rename = "type")]
    kind: String,
    sdp: String,
    /// The versions the sender speaks, repeated under the session key so that a yakk/2 peer
    /// can tell a downgrade from a reference peer (which leaves this out and ignores it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    versions: Vec<String>,
}

enum Crypto {
    V1(Zeroizing<[u8; 32]>),
    V2(Box<SealedChannel>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Owner: waiting for the joiner's first message.
    AwaitPeer,
    AwaitRound1,
    AwaitRound2,
    AwaitConfirm,
    /// Key confirmed; exchanging descriptions and candidates.
    Negotiating,
}

pub struct Handshake {
    p: Params,
    stage: Stage,
    version: Option<Version>,
    pake: Option<Pake>,
    crypto: Option<Crypto>,
    /// The lanes whose description of ours went out (their candidates wait for it).
    description_sent: Vec<u32>,
    /// Candidates gathered before their lane's description, with their lane.
    queued_candidates: Vec<(u32, IceCandidate)>,
    /// Lanes agreed; 1 until lane 0's descriptions are both known.
    lanes: u32,
    /// Lanes whose peer description arrived.
    described: Vec<u32>,
    /// Features we announce with our description (yakk/2).
    features: Vec<String>,
    /// Features the peer announced with its description.
    peer_features: Vec<String>,
    /// Owner: the joiner's offer said how many lanes it wants (it speaks lanes).
    peer_lanes: bool,
    /// Owner: our key confirmation, held back until the joiner's has been judged.
    held_confirm: Option<Envelope>,
    /// Owner: the joiner's wrong password was the one that burned the code.
    burned_room: bool,
    /// The versions we announce (joiner) or speak (owner), as repeated in a yakk/1 description.
    versions: Vec<String>,
    admission: Arc<Mutex<Admission>>,
}

impl Handshake {
    /// A joiner: announces its versions and, for yakk/2, starts the PAKE at once.
    pub fn joiner(p: Params) -> (Self, Vec<Action>) {
        if p.legacy_only {
            // As the reference: an empty request, then round 1 at once.
            let (pake, round1) = Pake::v1(p.password.as_bytes());
            let mut h = Handshake::blank(p);
            h.pake = Some(pake);
            h.version = Some(Version::V1);
            h.stage = Stage::AwaitRound1;
            let actions = vec![
                Action::Send(h.plain(msg::REQUEST_OFFER, String::new())),
                Action::Send(h.plain(msg::JPAKE_ROUND1, round1)),
            ];
            return (h, actions);
        }
        let mut versions = vec![VERSION_2.to_string()];
        if p.allow_legacy {
            versions.push(VERSION_1.to_string());
        }
        let req = serde_json::to_string(&RequestOffer {
            versions: versions.clone(),
        })
        .expect("serialises");
        let (pake, round1) = Pake::v2(Role::Joiner, p.password.as_bytes(), &p.room);
        let mut h = Handshake::blank(p);
        h.versions = versions;
        h.pake = Some(pake);
        h.version = Some(Version::V2);
        h.stage = Stage::AwaitRound1;
        let actions = vec![
            Action::Send(h.plain(msg::REQUEST_OFFER, req)),
            Action::Send(h.plain(msg2::PAKE1, round1)),
        ];
        (h, actions)
    }

    /// An owner, for one joiner whose first message has not been seen yet.
    pub fn owner(p: Params) -> Self {
        Handshake::blank(p)
    }

    fn blank(p: Params) -> Self {
        let admission = p
            .admission
            .clone()
            .unwrap_or_else(|| Arc::new(Mutex::new(Admission::new(0, None))));
        // A yakk/2-capable owner says so in a yakk/1 answer (see `Description1::versions`).
        let versions = if p.role == Role::Owner && !p.legacy_only {
            vec![VERSION_2.to_string(), VERSION_1.to_string()]
        } else {
            Vec::new()
        };
        Handshake {
            p,
            stage: Stage::AwaitPeer,
            version: None,
            pake: None,
            crypto: None,
            description_sent: Vec::new(),
            queued_candidates: Vec::new(),
            lanes: 1,
            described: Vec::new(),
            features: Vec::new(),
            peer_features: Vec::new(),
            peer_lanes: false,
            held_confirm: None,
            burned_room: false,
            versions,
            admission,
        }
    }

    /// Announce a data-plane feature with our description (yakk/2 only; call before it).
    pub fn announce(&mut self, feature: &str) {
        if !self.features.iter().any(|f| f == feature) {
            self.features.push(feature.to_string());
        }
    }

    /// Whether both sides announced `feature`: known once the peer's description arrived.
    pub fn agreed(&self, feature: &str) -> bool {
        self.version == Some(Version::V2)
            && self.features.iter().any(|f| f == feature)
            && self.peer_features.iter().any(|f| f == feature)
    }

    pub fn version(&self) -> Option<Version> {
        self.version
    }

    /// How many lanes (peer connections) the session runs: 1 unless both sides are yakk/2
    /// peers that speak lanes and one asked for more. Known once lane 0's descriptions are in.
    pub fn lanes(&self) -> u32 {
        self.lanes
    }

    /// Checks the lane of a description from the peer: known, and the first for that lane.
    fn peer_describes(&mut self, lane: u32) -> Result<(), HandshakeError> {
        let fresh = !self.described.contains(&lane);
        let ours_first = self.p.role == Role::Owner || self.description_sent.contains(&lane);
        let known = lane == 0 || lane < self.lanes;
        if !(fresh && ours_first && known) {
            return Err(HandshakeError::Unexpected("sealed description".into()));
        }
        self.described.push(lane);
        Ok(())
    }

    /// Owner: whether this joiner's wrong password burned the code (the room must close).
    pub fn burned_room(&self) -> bool {
        self.burned_room
    }

    pub fn is_confirmed(&self) -> bool {
        self.stage == Stage::Negotiating
    }

    fn plain(&self, msg_type: &str, payload: String) -> Envelope {
        Envelope::new(msg_type, payload, self.p.my_id, self.p.peer_id)
    }

    /// Handles one envelope from the peer (the driver has checked it comes from `peer_id`).
    pub fn on_message(&mut self, env: &Envelope) -> Result<Vec<Action>, HandshakeError> {
        let t = env.msg_type.as_str();
        match (self.stage, t) {
            (Stage::AwaitPeer, msg::REQUEST_OFFER) => self.on_request_offer(&env.payload),
            (Stage::AwaitPeer, msg::JPAKE_ROUND1) if self.p.role == Role::Owner => {
                // A reference joiner may send its round 1 right behind REQUESTOFFER; treat it as
                // the announcement of yakk/1.
                let mut out = self.on_request_offer("")?;
                out.extend(self.on_message(env)?);
                Ok(out)
            }
            (Stage::AwaitRound1, msg::JPAKE_ROUND1) if self.version == Some(Version::V2) => {
                // The owner answered with yakk/1: it is the reference program.
                if !self.p.allow_legacy {
                    return Err(HandshakeError::LegacyRefused);
                }
                let (pake, round1) = Pake::v1(self.p.password.as_bytes());
                self.pake = Some(pake);
                self.version = Some(Version::V1);
                let mut out = vec![Action::Send(self.plain(msg::JPAKE_ROUND1, round1))];
                out.extend(self.on_round1(&env.payload)?);
                Ok(out)
            }
            (Stage::AwaitRound1, msg::JPAKE_ROUND1) | (Stage::AwaitRound1, msg2::PAKE1)
                if self.is_pake_msg(t, 1) =>
            {
                self.on_round1(&env.payload)
            }
            (Stage::AwaitRound2, _) if self.is_pake_msg(t, 2) => {
                let pake = self.pake.as_mut().expect("pake runs in this stage");
                let confirm = pake.on_round2(&env.payload)?;
                self.stage = Stage::AwaitConfirm;
                let name = if self.version == Some(Version::V1) {
                    msg::JPAKE_KEY_CONFIRMATION
                } else {
                    msg2::CONFIRM
                };
                let confirm = self.plain(name, confirm);
                // The joiner confirms first. The owner's confirmation would let the joiner test
                // its password guess offline and leave: it goes out only once the joiner's has
                // been judged (docs/yakk2-pake.md, "Confirmation order").
                if self.p.role == Role::Owner {
                    self.held_confirm = Some(confirm);
                    return Ok(vec![]);
                }
                Ok(vec![Action::Send(confirm)])
            }
            (Stage::AwaitConfirm, _) if self.is_pake_msg(t, 3) => {
                let pake = self.pake.take().expect("pake runs in this stage");
                let keys = match self.p.role {
                    Role::Joiner => pake.on_confirm(&env.payload)?,
                    Role::Owner => {
                        let judged = self
                            .admission
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .judge(|| pake.on_confirm(&env.payload));
                        match judged {
                            Judgement::Admitted(keys) => keys,
                            Judgement::Wrong { burned } => {
                                self.burned_room = burned;
                                return Err(HandshakeError::WrongPassword);
                            }
                            Judgement::Refused(r) => {
                                self.held_confirm = None;
                                return Err(HandshakeError::Refused(r));
                            }
                            Judgement::Invalid(e) => {
                                self.held_confirm = None;
                                return Err(HandshakeError::Pake(e));
                            }
                        }
                    }
                };
                self.crypto = Some(match keys {
                    Keys::V1(k) => Crypto::V1(k),
                    Keys::V2 { send, recv } => {
                        Crypto::V2(Box::new(SealedChannel::new(&send, &recv)))
                    }
                });
                self.stage = Stage::Negotiating;
                let mut out: Vec<Action> = self
                    .held_confirm
                    .take()
                    .map(Action::Send)
                    .into_iter()
                    .collect();
                out.push(Action::KeyConfirmed(
                    self.version.expect("version known once the PAKE ran"),
                ));
                Ok(out)
            }
            (Stage::Negotiating, msg2::SEALED) if self.version == Some(Version::V2) => {
                let plain = self.open(env)?;
                let m: Sealed2 = serde_json::from_slice(&plain)
                    .map_err(|_| HandshakeError::Malformed("sealed".into()))?;
                Ok(match (self.p.role, m) {
                    (
                        Role::Owner,
                        Sealed2::Offer {
                            sdp,
                            features,
                            lane,
                            lanes,
                        },
                    ) => {
                        self.peer_describes(lane)?;
                        if lane == 0 {
                            self.peer_features = features;
                            // A joiner that speaks lanes gets the larger wish of the two.
                            self.peer_lanes = lanes.is_some();
                            if let Some(wish) = lanes {
                                self.lanes = wish
                                    .max(self.p.lanes)
                                    .min(self.p.lanes_cap)
                                    .clamp(1, MAX_LANES);
                            }
                        }
                        vec![Action::AcceptOffer(lane, sdp)]
                    }
                    (
                        Role::Joiner,
                        Sealed2::Answer {
                            sdp,
                            features,
                            lane,
                            lanes,
                        },
                    ) => {
                        self.peer_describes(lane)?;
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
                    (_, Sealed2::Candidate { candidate, lane }) => {
                        if lane >= self.lanes {
                            return Err(HandshakeError::Unexpected("sealed candidate".into()));
                        }
                        vec![Action::AddCandidate(lane, candidate)]
                    }
                    _ => return Err(HandshakeError::Unexpected("sealed description".into())),
                })
            }
            (Stage::Negotiating, msg::OFFER | msg::ANSWER | msg::NEW_ICE_CANDIDATE)
                if self.version == Some(Version::V1) =>
            {
                let plain = self.open(env)?;
                let want_offer = self.p.role == Role::Owner;
                match t {
                    msg::NEW_ICE_CANDIDATE => {
                        let c: IceCandidate = serde_json::from_slice(&plain)
                            .map_err(|_| HandshakeError::Malformed(t.into()))?;
                        Ok(vec![Action::AddCandidate(0, c)])
                    }
                    msg::OFFER if want_offer => {
                        let d: Description1 = serde_json::from_slice(&plain)
                            .map_err(|_| HandshakeError::Malformed(t.into()))?;
                        self.check_not_downgraded(&d)?;
                        Ok(vec![Action::AcceptOffer(0, d.sdp)])
                    }
                    msg::ANSWER if !want_offer => {
                        let d: Description1 = serde_json::from_slice(&plain)
                            .map_err(|_| HandshakeError::Malformed(t.into()))?;
                        self.check_not_downgraded(&d)?;
                        Ok(vec![Action::AcceptAnswer(0, d.sdp)])
                    }
                    _ => Err(HandshakeError::Unexpected(t.into())),
                }
            }
            // Also in yakk/1: only our own peers send it there (a downgraded session).
            (_, msg2::ABORT) => {
                let code = serde_json::from_str::<Abort>(&env.payload)
                    .map(|a| a.reason)
                    .unwrap_or_default();
                let text = ABORT_REASONS
                    .iter()
                    .find(|(c, _)| *c == code)
                    .map(|(_, text)| *text);
                if self.p.role == Role::Joiner
                    && REFUSALS.contains(&code.as_str())
                    && let Some(text) = text
                {
                    return Err(HandshakeError::RefusedByOwner(text));
                }
                let why = text.unwrap_or("no reason given").to_string();
                let who = match self.p.role {
                    Role::Owner => "joiner",
                    Role::Joiner => "owner",
                };
                Err(HandshakeError::PeerAborted { who, why })
            }
            // Harmless: the reference repeats CONNECTED and REQUESTOFFER; unknown names are
            // ignored so that later versions can add messages.
            (_, msg::CONNECTED | msg::REQUEST_OFFER) => Ok(vec![]),
            // Speaking yakk/1, we are the reference: it ignores yakk/2 names (a joiner that
            // allows both versions sends its yakk/2 round 1 before it learns ours is yakk/1).
            (_, t) if self.version == Some(Version::V1) && t.starts_with("YAKK2_") => Ok(vec![]),
            (_, t) if is_known(t) => Err(HandshakeError::Unexpected(t.into())),
            _ => Ok(vec![]),
        }
    }

    /// The notice to send the peer when this handshake fails with `e`, if it should hear of
    /// it: only yakk/2 peers, and only for failures the peer cannot see itself (a wrong
    /// password fails on both sides anyway).
    pub fn abort_notice(&self, e: &HandshakeError) -> Option<Envelope> {
        // An owner that judged a wrong password sends its own confirmation after all: the
        // joiner's check of it fails, and it learns no more than that its one guess was wrong.
        if matches!(e, HandshakeError::WrongPassword) {
            return self.held_confirm.clone();
        }
        let reason = match e {
            HandshakeError::Downgrade => "downgrade",
            _ if self.version != Some(Version::V2) => return None,
            HandshakeError::Sealed(_) => "sealed",
            HandshakeError::Pake(_) => "pake",
            HandshakeError::Malformed(_) | HandshakeError::Unexpected(_) => "protocol",
            HandshakeError::Refused(Refusal::Burned) => "closed",
            HandshakeError::Refused(Refusal::Full) => "full",
            _ => return None,
        };
        let payload = serde_json::to_string(&Abort {
            reason: reason.into(),
        })
        .expect("serialises");
        Some(self.plain(msg2::ABORT, payload))
    }

    /// A yakk/1 description from a peer that says it speaks yakk/2, while we do too: the
    /// negotiation was tampered with (the plain version list removed on the way).
    fn check_not_downgraded(&self, d: &Description1) -> Result<(), HandshakeError> {
        let we_speak_2 = !self.p.legacy_only;
        if we_speak_2 && d.versions.iter().any(|v| v == VERSION_2) {
            return Err(HandshakeError::Downgrade);
        }
        Ok(())
    }

    fn is_pake_msg(&self, t: &str, round: u8) -> bool {
        let names = match self.version {
            Some(Version::V1) => [
                msg::JPAKE_ROUND1,
                msg::JPAKE_ROUND2,
                msg::JPAKE_KEY_CONFIRMATION,
            ],
            Some(Version::V2) => [msg2::PAKE1, msg2::PAKE2, msg2::CONFIRM],
            None => return false,
        };
        names[usize::from(round - 1)] == t
    }

    fn on_request_offer(&mut self, payload: &str) -> Result<Vec<Action>, HandshakeError> {
        let versions = if payload.trim().is_empty() {
            vec![]
        } else {
            serde_json::from_str::<RequestOffer>(payload)
                .map_err(|_| HandshakeError::Malformed(msg::REQUEST_OFFER.into()))?
                .versions
        };
        if versions.iter().any(|v| v == VERSION_2) && !self.p.legacy_only {
            let (pake, round1) = Pake::v2(Role::Owner, self.p.password.as_bytes(), &self.p.room);
            self.pake = Some(pake);
            self.version = Some(Version::V2);
            self.stage = Stage::AwaitRound1;
            Ok(vec![Action::Send(self.plain(msg2::PAKE1, round1))])
        } else if self.p.allow_legacy || self.p.legacy_only {
            let (pake, round1) = Pake::v1(self.p.password.as_bytes());
            self.pake = Some(pake);
            self.version = Some(Version::V1);
            self.stage = Stage::AwaitRound1;
            Ok(vec![Action::Send(self.plain(msg::JPAKE_ROUND1, round1))])
        } else {
            Err(HandshakeError::LegacyRefused)
        }
    }

    fn on_round1(&mut self, payload: &str) -> Result<Vec<Action>, HandshakeError> {
        let pake = self.pake.as_mut().expect("pake runs in this stage");
        let round2 = pake.on_round1(payload)?;
        self.stage = Stage::AwaitRound2;
        let name = if self.version == Some(Version::V1) {
            msg::JPAKE_ROUND2
        } else {
            msg2::PAKE2
        };
        Ok(vec![Action::Send(self.plain(name, round2))])
    }

    fn open(&mut self, env: &Envelope) -> Result<Vec<u8>, HandshakeError> {
        let header = Header {
            msg_type: &env.msg_type,
            room: &self.p.room,
            sender: self.p.peer_id,
            recipient: self.p.my_id,
        };
        match self.crypto.as_mut().expect("keys exist while negotiating") {
            Crypto::V1(k) => Ok(sealed::open_v1(k, &env.payload)?),
            Crypto::V2(ch) => Ok(ch.open(header, &env.payload)?),
        }
    }

    fn seal_v2(&mut self, m: &Sealed2) -> Envelope {
        let plain = serde_json::to_vec(m).expect("serialises");
        let (me, peer) = (self.p.my_id, self.p.peer_id);
        let room = self.p.room.clone();
        let header = Header {
            msg_type: msg2::SEALED,
            room: &room,
            sender: me,
            recipient: peer,
        };
        let Some(Crypto::V2(ch)) = self.crypto.as_mut() else {
            unreachable!("seal_v2 is called only with yakk/2 keys")
        };
        let payload = ch.seal(header, &plain);
        Envelope::new(msg2::SEALED, payload, me, peer)
    }

    fn seal_v1(&self, msg_type: &str, plain: &[u8]) -> Envelope {
        let Some(Crypto::V1(k)) = &self.crypto else {
            unreachable!("seal_v1 is called only with yakk/1 keys")
        };
        self.plain(msg_type, sealed::seal_v1(k, plain))
    }

    fn candidate_envelope(&mut self, lane: u32, c: IceCandidate) -> Envelope {
        match self.version {
            Some(Version::V2) => self.seal_v2(&Sealed2::Candidate { candidate: c, lane }),
            _ => {
                let plain = serde_json::to_vec(&c).expect("serialises");
                self.seal_v1(msg::NEW_ICE_CANDIDATE, &plain)
            }
        }
    }

    /// Our offer (joiner) or answer (owner) for `lane` is ready: seal and send it, then the
    /// candidates of that lane that were gathered meanwhile.
    pub fn on_local_description(&mut self, lane: u32, sdp: String) -> Vec<Action> {
        assert!(
            self.is_confirmed(),
            "descriptions are made only after key confirmation"
        );
        assert!(lane < self.lanes, "a description for an agreed lane");
        let offer = self.p.role == Role::Joiner;
        let env = match self.version {
            Some(Version::V2) => {
                let (features, lanes) = if lane > 0 {
                    (Vec::new(), None)
                } else if offer {
                    (
                        self.features.clone(),
                        Some(self.p.lanes.clamp(1, MAX_LANES)),
                    )
                } else {
                    (self.features.clone(), self.peer_lanes.then_some(self.lanes))
                };
                self.seal_v2(&if offer {
                    Sealed2::Offer {
                        sdp,
                        features,
                        lane,
                        lanes,
                    }
                } else {
                    Sealed2::Answer {
                        sdp,
                        features,
                        lane,
                        lanes,
                    }
                })
            }
            _ => {
                let kind = if offer { "offer" } else { "answer" };
                let plain = serde_json::to_vec(&Description1 {
                    kind: kind.into(),
                    sdp,
                    versions: self.versions.clone(),
                })
                .expect("serialises");
                self.seal_v1(if offer { msg::OFFER } else { msg::ANSWER }, &plain)
            }
        };
        self.description_sent.push(lane);
        let mut out = vec![Action::Send(env)];
        let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.queued_candidates)
            .into_iter()
            .partition(|(l, _)| *l == lane);
        self.queued_candidates = later;
        for (l, c) in now {
            out.push(Action::Send(self.candidate_envelope(l, c)));
        }
        out
    }

    /// A local ICE candidate of `lane` was gathered.
    pub fn on_local_candidate(&mut self, lane: u32, c: IceCandidate) -> Vec<Action> {
        if !self.description_sent.contains(&lane) {
            self.queued_candidates.push((lane, c));
            return vec![];
        }
        vec![Action::Send(self.candidate_envelope(lane, c))]
    }

    /// ICE connected: the reference expects `YAKKMSG_CONNECTED`.
    pub fn on_connected(&self) -> Vec<Action> {
        match self.version {
            Some(Version::V1) => vec![Action::Send(self.plain(msg::CONNECTED, String::new()))],
            _ => vec![],
        }
    }
}

fn is_known(t: &str) -> bool {
    [
        msg::JPAKE_ROUND1,
        msg::JPAKE_ROUND2,
        msg::JPAKE_KEY_CONFIRMATION,
        msg::OFFER,
        msg::ANSWER,
        msg::NEW_ICE_CANDIDATE,
        msg2::PAKE1,
        msg2::PAKE2,
        msg2::CONFIRM,
        msg2::SEALED,
        msg2::ABORT,
    ]
    .contains(&t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(role: Role, pw: &str) -> Params {
        let (my_id, peer_id) = match role {
            Role::Owner => (0, 1),
            Role::Joiner => (1, 0),
        };
        Params {
            role,
            room: "417".into(),
            my_id,
            peer_id,
            password: Zeroizing::new(pw.into()),
            allow_legacy: false,
            legacy_only: false,
            lanes: 1,
            lanes_cap: MAX_LANES,
            admission: None,
        }
    }

    /// Both sides' non-send actions, or the first error and which side raised it.
    type Outcome = Result<(Vec<Action>, Vec<Action>), (Role, HandshakeError)>;

    /// Delivers every envelope to the other side (as the server would, in order) until quiet.
    /// `tamper` may rewrite envelopes in flight.
    fn relay(
        joiner: &mut Handshake,
        owner: &mut Handshake,
        from_joiner: Vec<Action>,
        from_owner: Vec<Action>,
        tamper: &mut dyn FnMut(&mut Envelope),
    ) -> Outcome {
        let (mut j_other, mut o_other) = (vec![], vec![]);
        let mut to_owner = std::collections::VecDeque::new();
        let mut to_joiner = std::collections::VecDeque::new();
        let split = |acts: Vec<Action>,
                     q: &mut std::collections::VecDeque<Envelope>,
                     other: &mut Vec<Action>| {
            for a in acts {
                match a {
                    Action::Send(e) => q.push_back(e),
                    a => other.push(a),
                }
            }
        };
        split(from_joiner, &mut to_owner, &mut j_other);
        split(from_owner, &mut to_joiner, &mut o_other);
        while !to_owner.is_empty() || !to_joiner.is_empty() {
            if let Some(mut e) = to_owner.pop_front() {
                tamper(&mut e);
                let acts = owner.on_message(&e).map_err(|x| (Role::Owner, x))?;
                split(acts, &mut to_joiner, &mut o_other);
            }
            if let Some(mut e) = to_joiner.pop_front() {
                tamper(&mut e);
                let acts = joiner.on_message(&e).map_err(|x| (Role::Joiner, x))?;
                split(acts, &mut to_owner, &mut j_other);
            }
        }
        Ok((j_other, o_other))
    }

    fn candidate(n: u16) -> IceCandidate {
        IceCandidate {
            candidate: format!("candidate:{n} 1 udp 2130706431 127.0.0.1 {n} typ host"),
            sdp_mid: Some("0".into()),
            sdp_mline_index: Some(0),
            username_fragment: None,
        }
    }

    /// Runs a full exchange; returns what each side was asked to do after key confirmation.
    fn full_exchange(jp: Params, op: Params) -> Outcome {
        let (mut j, first) = Handshake::joiner(jp);
        let mut o = Handshake::owner(op);
        let (ja, oa) = relay(&mut j, &mut o, first, vec![], &mut |_| {})?;
        assert!(matches!(ja.as_slice(), [Action::KeyConfirmed(_)]), "{ja:?}");
        assert!(matches!(oa.as_slice(), [Action::KeyConfirmed(_)]), "{oa:?}");
        // A candidate gathered before the offer waits for it.
        assert!(j.on_local_candidate(0, candidate(1)).is_empty());
        let offer = j.on_local_description(0, "v=0 offer".into());
        assert_eq!(offer.len(), 2, "offer then the queued candidate");
        let (_, oa) = relay(&mut j, &mut o, offer, vec![], &mut |_| {})?;
        assert_eq!(
            oa,
            vec![
                Action::AcceptOffer(0, "v=0 offer".into()),
                Action::AddCandidate(0, candidate(1))
            ]
        );
        let mut answer = o.on_local_description(0, "v=0 answer".into());
        answer.extend(o.on_local_candidate(0, candidate(2)));
        let (ja, _) = relay(&mut j, &mut o, vec![], answer, &mut |_| {})?;
        assert_eq!(
            ja,
            vec![
                Action::AcceptAnswer(0, "v=0 answer".into()),
                Action::AddCandidate(0, candidate(2))
            ]
        );
        assert_eq!(j.version(), o.version());
        Ok((vec![], vec![]))
    }

    #[test]
    fn yakk2_full_exchange() {
        full_exchange(
            params(Role::Joiner, "pw-one"),
            params(Role::Owner, "pw-one"),
        )
        .unwrap();
    }

    /// Runs a yakk/2 exchange up to both descriptions, each side announcing `features`.
    fn negotiate(joiner_features: &[&str], owner_features: &[&str]) -> (Handshake, Handshake) {
        let (mut j, first) = Handshake::joiner(params(Role::Joiner, "pw"));
        let mut o = Handshake::owner(params(Role::Owner, "pw"));
        relay(&mut j, &mut o, first, vec![], &mut |_| {}).unwrap();
        for f in joiner_features {
            j.announce(f);
        }
        for f in owner_features {
            o.announce(f);
        }
        let offer = j.on_local_description(0, "v=0 offer".into());
        relay(&mut j, &mut o, offer, vec![], &mut |_| {}).unwrap();
        let answer = o.on_local_description(0, "v=0 answer".into());
        relay(&mut j, &mut o, vec![], answer, &mut |_| {}).unwrap();
        (j, o)
    }

    #[test]
    fn features_are_used_only_when_both_sides_announce_them() {
        let (j, o) = negotiate(&[FEATURE_WINDOW], &[FEATURE_WINDOW]);
        assert!(j.agreed(FEATURE_WINDOW) && o.agreed(FEATURE_WINDOW));
        // A peer from before the feature announces nothing: neither side uses it.
        let (j, o) = negotiate(&[FEATURE_WINDOW], &[]);
        assert!(!j.agreed(FEATURE_WINDOW) && !o.agreed(FEATURE_WINDOW));
        let (j, o) = negotiate(&[], &[FEATURE_WINDOW]);
        assert!(!j.agreed(FEATURE_WINDOW) && !o.agreed(FEATURE_WINDOW));
        assert!(!j.agreed("other") && !o.agreed("other"));
    }

    #[test]
    fn a_description_without_features_still_parses() {
        // What a yakk/2 peer from before the feature field sends.
        let old: Sealed2 = serde_json::from_str(r#"{"type":"offer","sdp":"v=0"}"#).unwrap();
        assert!(matches!(old, Sealed2::Offer { features, .. } if features.is_empty()));
        let new = serde_json::to_string(&Sealed2::Answer {
            sdp: "v=0".into(),
            features: vec![],
            lane: 0,
            lanes: None,
        })
        .unwrap();
        assert_eq!(new, r#"{"type":"answer","sdp":"v=0"}"#);
    }

    /// Key exchange, then lane 0's offer and answer, with each side's lane wish; the joiner's
    /// offer can be made by an older peer that knows nothing of lanes.
    fn negotiate_lanes(
        joiner: u32,
        owner: u32,
        old_joiner: bool,
    ) -> (Handshake, Handshake, Vec<Action>) {
        let mut jp = params(Role::Joiner, "pw");
        jp.lanes = joiner;
        let mut op = params(Role::Owner, "pw");
        op.lanes = owner;
        let (mut j, first) = Handshake::joiner(jp);
        let mut o = Handshake::owner(op);
        relay(&mut j, &mut o, first, vec![], &mut |_| {}).unwrap();
        let offer = if old_joiner {
            j.description_sent.push(0);
            vec![Action::Send(j.seal_v2(&Sealed2::Offer {
                sdp: "v=0 offer".into(),
                features: vec![],
                lane: 0,
                lanes: None,
            }))]
        } else {
            j.on_local_description(0, "v=0 offer".into())
        };
        relay(&mut j, &mut o, offer, vec![], &mut |_| {}).unwrap();
        let answer = o.on_local_description(0, "v=0 answer".into());
        let (ja, _) = relay(&mut j, &mut o, vec![], answer, &mut |_| {}).unwrap();
        (j, o, ja)
    }

    /// An owner with little of its lane budget left answers with fewer lanes than wished,
    /// never none; the joiner goes along with the answer.
    #[test]
    fn the_owner_caps_the_lanes_it_answers_with() {
        for (cap, want) in [(32, 16), (5, 5), (1, 1), (0, 1)] {
            let mut jp = params(Role::Joiner, "pw");
            jp.lanes = 16;
            let mut op = params(Role::Owner, "pw");
            op.lanes_cap = cap;
            let (mut j, first) = Handshake::joiner(jp);
            let mut o = Handshake::owner(op);
            relay(&mut j, &mut o, first, vec![], &mut |_| {}).unwrap();
            let offer = j.on_local_description(0, "v=0 offer".into());
            relay(&mut j, &mut o, offer, vec![], &mut |_| {}).unwrap();
            let answer = o.on_local_description(0, "v=0 answer".into());
            relay(&mut j, &mut o, vec![], answer, &mut |_| {}).unwrap();
            assert_eq!((j.lanes(), o.lanes()), (want, want), "cap {cap}");
        }
    }

    #[test]
    fn lanes_are_the_larger_wish_and_each_lane_negotiates_on_its_own() {
        for (jw, ow, want) in [
            (4, 1, 4),
            (1, 6, 6),
            (3, 2, 3),
            (1, 1, 1),
            (99, 1, MAX_LANES),
        ] {
            let (mut j, mut o, ja) = negotiate_lanes(jw, ow, false);
            assert_eq!((j.lanes(), o.lanes()), (want, want), "wishes {jw} and {ow}");
            assert_eq!(ja, vec![Action::AcceptAnswer(0, "v=0 answer".into())]);
            for lane in 1..want {
                // A candidate gathered early waits for its own lane's description only.
                assert!(
                    j.on_local_candidate(lane, candidate(lane as u16))
                        .is_empty()
                );
                let offer = j.on_local_description(lane, format!("offer {lane}"));
                assert_eq!(offer.len(), 2);
                let (_, oa) = relay(&mut j, &mut o, offer, vec![], &mut |_| {}).unwrap();
                assert_eq!(
                    oa,
                    vec![
                        Action::AcceptOffer(lane, format!("offer {lane}")),
                        Action::AddCandidate(lane, candidate(lane as u16)),
                    ]
                );
                let mut answer = o.on_local_description(lane, format!("answer {lane}"));
                answer.extend(o.on_local_candidate(lane, candidate(100 + lane as u16)));
                let (ja, _) = relay(&mut j, &mut o, vec![], answer, &mut |_| {}).unwrap();
                assert_eq!(
                    ja,
                    vec![
                        Action::AcceptAnswer(lane, format!("answer {lane}")),
                        Action::AddCandidate(lane, candidate(100 + lane as u16)),
                    ]
                );
            }
        }
    }

    #[test]
    fn a_joiner_from_before_lanes_gets_one() {
        let (j, o, _) = negotiate_lanes(1, 8, true);
        assert_eq!((j.lanes(), o.lanes()), (1, 1));
        // And the owner's answer says nothing of lanes, as before.
        let plain = serde_json::to_value(Sealed2::Answer {
            sdp: "x".into(),
            features: vec![],
            lane: 0,
            lanes: o.peer_lanes.then_some(o.lanes),
        })
        .unwrap();
        assert!(plain.get("lanes").is_none());
    }

    #[test]
    fn lanes_out_of_place_are_refused() {
        let sealed = |h: &mut Handshake, m: Sealed2| h.seal_v2(&m);
        let offer = |lane| Sealed2::Offer {
            sdp: "o".into(),
            features: vec![],
            lane,
            lanes: None,
        };
        let unexpected = |r: Result<Vec<Action>, HandshakeError>| {
            assert!(matches!(r, Err(HandshakeError::Unexpected(_))), "{r:?}");
        };
        // Beyond the agreed number.
        let (mut j, mut o, _) = negotiate_lanes(2, 1, false);
        let env = sealed(&mut j, offer(2));
        unexpected(o.on_message(&env));
        // The same lane twice.
        let (mut j, mut o, _) = negotiate_lanes(2, 1, false);
        let env = sealed(&mut j, offer(1));
        o.on_message(&env).unwrap();
        let env = sealed(&mut j, offer(1));
        unexpected(o.on_message(&env));
        // A second offer for lane 0.
        let (mut j, mut o, _) = negotiate_lanes(2, 1, false);
        let env = sealed(&mut j, offer(0));
        unexpected(o.on_message(&env));
        // A candidate for a lane that does not exist.
        let (mut j, mut o, _) = negotiate_lanes(1, 1, false);
        let env = sealed(
            &mut j,
            Sealed2::Candidate {
                candidate: candidate(1),
                lane: 1,
            },
        );
        unexpected(o.on_message(&env));
        // An answer for a lane the joiner made no offer on.
        let (mut j, mut o, _) = negotiate_lanes(3, 1, false);
        let env = sealed(
            &mut o,
            Sealed2::Answer {
                sdp: "a".into(),
                features: vec![],
                lane: 1,
                lanes: None,
            },
        );
        unexpected(j.on_message(&env));
    }

    #[test]
    fn an_answer_with_an_impossible_lane_count_is_refused() {
        for bad in [0, MAX_LANES + 1] {
            let mut jp = params(Role::Joiner, "pw");
            jp.lanes = 2;
            let (mut j, first) = Handshake::joiner(jp);
            let mut o = Handshake::owner(params(Role::Owner, "pw"));
            relay(&mut j, &mut o, first, vec![], &mut |_| {}).unwrap();
            let offer = j.on_local_description(0, "v=0 offer".into());
            relay(&mut j, &mut o, offer, vec![], &mut |_| {}).unwrap();
            o.description_sent.push(0);
            let env = o.seal_v2(&Sealed2::Answer {
                sdp: "a".into(),
                features: vec![],
                lane: 0,
                lanes: Some(bad),
            });
            let r = j.on_message(&env);
            assert!(matches!(r, Err(HandshakeError::Malformed(_))), "{r:?}");
        }
    }

    #[test]
    fn yakk2_is_chosen_when_both_allow_legacy() {
        let mut jp = params(Role::Joiner, "pw");
        let mut op = params(Role::Owner, "pw");
        jp.allow_legacy = true;
        op.allow_legacy = true;
        let (mut j, first) = Handshake::joiner(jp);
        let mut o = Handshake::owner(op);
        relay(&mut j, &mut o, first, vec![], &mut |_| {}).unwrap();
        assert_eq!(
            (j.version(), o.version()),
            (Some(Version::V2), Some(Version::V2))
        );
    }

    #[test]
    fn yakk1_with_a_reference_style_owner_when_allowed() {
        let mut jp = params(Role::Joiner, "test");
        jp.allow_legacy = true;
        let mut op = params(Role::Owner, "test");
        op.legacy_only = true;
        full_exchange(jp, op).unwrap();
    }

    #[test]
    fn yakk1_with_a_reference_style_joiner_when_allowed() {
        let mut jp = params(Role::Joiner, "test");
        jp.legacy_only = true;
        let mut op = params(Role::Owner, "test");
        op.allow_legacy = true;
        let (mut j, first) = Handshake::joiner(jp);
        assert_eq!(first.len(), 2);
        let mut o = Handshake::owner(op);
        relay(&mut j, &mut o, first, vec![], &mut |_| {}).unwrap();
        assert_eq!(
            (j.version(), o.version()),
            (Some(Version::V1), Some(Version::V1))
        );
        // yakk/1 descriptions travel as the reference's message names.
        let offer = j.on_local_description(0, "sdp".into());
        let Action::Send(e) = &offer[0] else { panic!() };
        assert_eq!(e.msg_type, msg::OFFER);
    }

    #[test]
    fn legacy_refused_by_default_on_both_sides() {
        let mut jp = params(Role::Joiner, "test");
        jp.legacy_only = true;
        let (mut j, first) = Handshake::joiner(jp);
        let mut o = Handshake::owner(params(Role::Owner, "test"));
        let err = relay(&mut j, &mut o, first, vec![], &mut |_| {}).unwrap_err();
        assert!(
            matches!(err, (Role::Owner, HandshakeError::LegacyRefused)),
            "{err:?}"
        );

        let mut op = params(Role::Owner, "test");
        op.legacy_only = true;
        let (mut j, first) = Handshake::joiner(params(Role::Joiner, "test"));
        let mut o = Handshake::owner(op);
        let err = relay(&mut j, &mut o, first, vec![], &mut |_| {}).unwrap_err();
        assert!(
            matches!(err, (Role::Joiner, HandshakeError::LegacyRefused)),
            "{err:?}"
        );
    }

    #[test]
    fn wrong_password_fails_confirmation() {
        for legacy in [false, true] {
            let mut jp = params(Role::Joiner, "right");
            let mut op = params(Role::Owner, "wrong");
            jp.legacy_only = legacy;
            op.allow_legacy = legacy;
            let (mut j, first) = Handshake::joiner(jp);
            let mut o = Handshake::owner(op);
            let err = relay(&mut j, &mut o, first, vec![], &mut |_| {}).unwrap_err();
            assert!(matches!(err.1, HandshakeError::WrongPassword), "{err:?}");
            assert!(!j.is_confirmed() && !o.is_confirmed());
        }
    }

    fn is_confirm(e: &Envelope) -> bool {
        e.msg_type == msg2::CONFIRM || e.msg_type == msg::JPAKE_KEY_CONFIRMATION
    }

    /// Runs a joiner and an owner until the joiner's key confirmation is ready, and withholds
    /// it: returns it, and every envelope the owner sent up to then.
    fn up_to_joiner_confirm(
        j: &mut Handshake,
        first: Vec<Action>,
        o: &mut Handshake,
    ) -> (Envelope, Vec<Envelope>) {
        let sends = |acts: Vec<Action>| {
            acts.into_iter()
                .filter_map(|a| match a {
                    Action::Send(e) => Some(e),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        let mut to_owner: std::collections::VecDeque<Envelope> = sends(first).into();
        let mut to_joiner = std::collections::VecDeque::new();
        let (mut confirm, mut owner_sent) = (None, vec![]);
        loop {
            if let Some(e) = to_owner.pop_front() {
                if is_confirm(&e) {
                    confirm = Some(e);
                    continue;
                }
                let out = sends(o.on_message(&e).unwrap());
                owner_sent.extend(out.iter().cloned());
                to_joiner.extend(out);
            } else if let Some(e) = to_joiner.pop_front() {
                to_owner.extend(sends(j.on_message(&e).unwrap()));
            } else {
                break;
            }
        }
        (confirm.expect("the joiner confirms"), owner_sent)
    }

    /// A joiner and an owner of `room`, both versions, with the owner's shared admission.
    fn pair(
        legacy: bool,
        joiner_pw: &str,
        admission: &Arc<Mutex<Admission>>,
    ) -> (Handshake, Vec<Action>, Handshake) {
        let mut jp = params(Role::Joiner, joiner_pw);
        let mut op = params(Role::Owner, "right");
        jp.legacy_only = legacy;
        op.allow_legacy = legacy;
        op.admission = Some(admission.clone());
        let (j, first) = Handshake::joiner(jp);
        (j, first, Handshake::owner(op))
    }

    #[test]
    fn the_owner_confirms_only_after_judging_the_joiners_confirmation() {
        for legacy in [false, true] {
            let adm = Arc::new(Mutex::new(Admission::new(0, None)));
            let (mut j, first, mut o) = pair(legacy, "right", &adm);
            let (confirm, owner_sent) = up_to_joiner_confirm(&mut j, first, &mut o);
            // A joiner that leaves here has nothing to test a guess against.
            assert!(
                !owner_sent.iter().any(is_confirm),
                "legacy {legacy}: the owner's confirmation went out before the joiner's"
            );
            let acts = o.on_message(&confirm).unwrap();
            assert!(
                matches!(&acts[..], [Action::Send(e), Action::KeyConfirmed(_)] if is_confirm(e)),
                "{acts:?}"
            );
            let Action::Send(owner_confirm) = &acts[0] else {
                unreachable!()
            };
            assert!(matches!(
                j.on_message(owner_confirm).unwrap()[..],
                [Action::KeyConfirmed(_)]
            ));
            assert!(!o.burned_room());
        }
    }

    #[test]
    fn a_wrong_password_is_told_and_burns_the_shared_admission() {
        for legacy in [false, true] {
            let adm = Arc::new(Mutex::new(Admission::new(0, None)));
            let (mut j, first, mut o) = pair(legacy, "wrong", &adm);
            let (confirm, _) = up_to_joiner_confirm(&mut j, first, &mut o);
            let err = o.on_message(&confirm).unwrap_err();
            assert!(matches!(err, HandshakeError::WrongPassword), "{err:?}");
            assert!(o.burned_room() && adm.lock().unwrap().is_burned());
            // The owner's confirmation goes out after the judgement: the joiner sees its
            // password was wrong, and that is all (its one guess was already judged).
            let notice = o.abort_notice(&err).expect("the owner's confirmation");
            assert!(is_confirm(&notice));
            assert!(matches!(
                j.on_message(&notice),
                Err(HandshakeError::WrongPassword)
            ));

            // The next joiner, with the right password, is not judged at all.
            let (mut j2, first, mut o2) = pair(legacy, "right", &adm);
            let (confirm, owner_sent) = up_to_joiner_confirm(&mut j2, first, &mut o2);
            let err = o2.on_message(&confirm).unwrap_err();
            assert!(
                matches!(err, HandshakeError::Refused(Refusal::Burned)),
                "{err:?}"
            );
            assert!(!o2.burned_room(), "only the first failure burned it");
            let notice = o2.abort_notice(&err);
            assert!(!owner_sent.iter().any(is_confirm));
            if legacy {
                assert!(notice.is_none(), "a yakk/1 joiner gets nothing");
            } else {
                let notice = notice.expect("a yakk/2 joiner is told");
                assert!(!is_confirm(&notice));
                let e = j2.on_message(&notice).unwrap_err();
                assert!(matches!(e, HandshakeError::RefusedByOwner(_)), "{e:?}");
                assert!(e.to_string().contains("ask for a new code"), "{e}");
            }
        }
    }

    #[test]
    fn a_blanked_version_list_is_caught_as_a_downgrade() {
        let mut jp = params(Role::Joiner, "pw");
        let mut op = params(Role::Owner, "pw");
        jp.allow_legacy = true;
        op.allow_legacy = true;
        let (mut j, first) = Handshake::joiner(jp);
        let mut o = Handshake::owner(op);
        // The server makes the joiner look like the reference program.
        let mut blank = |e: &mut Envelope| {
            if e.msg_type == msg::REQUEST_OFFER {
                e.payload.clear();
            }
        };
        relay(&mut j, &mut o, first, vec![], &mut blank).unwrap();
        assert_eq!(o.version(), Some(Version::V1));
        assert_eq!(j.version(), Some(Version::V1));
        let offer = j.on_local_description(0, "v=0 offer".into());
        let err = relay(&mut j, &mut o, offer, vec![], &mut blank).unwrap_err();
        assert!(
            matches!(err, (Role::Owner, HandshakeError::Downgrade)),
            "{err:?}"
        );
        // The joiner hears of it, in yakk/1 too.
        let notice = o.abort_notice(&err.1).expect("a notice");
        assert!(j.on_message(&notice).is_err());

        // The joiner checks the owner's answer the same way.
        let answer = Description1 {
            kind: "answer".into(),
            sdp: "v=0".into(),
            versions: vec![VERSION_2.into(), VERSION_1.into()],
        };
        assert!(matches!(
            j.check_not_downgraded(&answer),
            Err(HandshakeError::Downgrade)
        ));
        // A reference peer's description has no list: nothing to refuse.
        let reference = Description1 {
            versions: vec![],
            ..answer
        };
        assert!(j.check_not_downgraded(&reference).is_ok());
    }

    #[test]
    fn tampered_or_substituted_offer_is_refused() {
        for legacy in [false, true] {
            for substitute in [false, true] {
                let mut jp = params(Role::Joiner, "pw");
                let mut op = params(Role::Owner, "pw");
                jp.legacy_only = legacy;
                op.allow_legacy = legacy;
                let (mut j, first) = Handshake::joiner(jp);
                let mut o = Handshake::owner(op);
                relay(&mut j, &mut o, first, vec![], &mut |_| {}).unwrap();
                let offer = j.on_local_description(0, "v=0 genuine".into());
                let mut tamper = |e: &mut Envelope| {
                    if substitute {
                        // A server with its own key seals its own offer.
                        e.payload = if legacy {
                            sealed::seal_v1(&[9u8; 32], br#"{"type":"offer","sdp":"evil"}"#)
                        } else {
                            SealedChannel::new(&[9u8; 32], &[9u8; 32]).seal(
                                Header {
                                    msg_type: msg2::SEALED,
                                    room: "417",
                                    sender: 1,
                                    recipient: 0,
                                },
                                br#"{"type":"offer","sdp":"evil"}"#,
                            )
                        };
                    } else {
                        use base64::Engine;
                        let b64 = base64::engine::general_purpose::STANDARD;
                        let mut raw = b64.decode(&e.payload).unwrap();
                        let mid = raw.len() / 2;
                        raw[mid] ^= 1;
                        e.payload = b64.encode(raw);
                    }
                };
                let err = relay(&mut j, &mut o, offer, vec![], &mut tamper).unwrap_err();
                assert!(
                    matches!(
                        err,
                        (
                            Role::Owner,
                            HandshakeError::Sealed(SealError::Authentication)
                        )
                    ),
                    "legacy={legacy} substitute={substitute}: {err:?}"
                );
            }
        }
    }

    #[test]
    fn the_side_that_finds_tampering_tells_the_other() {
        let (mut j, first) = Handshake::joiner(params(Role::Joiner, "pw"));
        let mut o = Handshake::owner(params(Role::Owner, "pw"));
        relay(&mut j, &mut o, first, vec![], &mut |_| {}).unwrap();
        let mut offer = match j.on_local_description(0, "v=0 genuine".into()).remove(0) {
            Action::Send(e) => e,
            other => panic!("expected the sealed offer, got {other:?}"),
        };
        offer.payload.insert(4, 'A');
        let err = o.on_message(&offer).unwrap_err();
        let notice = o.abort_notice(&err).expect("a sealed failure is announced");
        assert_eq!(notice.msg_type, msg2::ABORT);
        assert!(!notice.payload.contains("genuine"));
        match j.on_message(&notice) {
            Err(HandshakeError::PeerAborted { who: "owner", why }) => {
                assert!(why.contains("tampered"), "{why}")
            }
            other => panic!("the joiner must stop with the owner's reason: {other:?}"),
        }
        // Not for failures the peer sees itself, nor toward a yakk/1 peer.
        assert!(o.abort_notice(&HandshakeError::WrongPassword).is_none());
        let mut jp = params(Role::Joiner, "pw");
        jp.legacy_only = true;
        let (j1, _) = Handshake::joiner(jp);
        assert!(
            j1.abort_notice(&HandshakeError::Sealed(SealError::Authentication))
                .is_none()
        );
    }

    #[test]
    fn pake_messages_out_of_place_are_refused() {
        let (mut j, _) = Handshake::joiner(params(Role::Joiner, "pw"));
        let sealed = Envelope::new(msg2::SEALED, "AAAA", 0, 1);
        assert!(matches!(
            j.on_message(&sealed),
            Err(HandshakeError::Unexpected(_))
        ));
        let garbage = Envelope::new(msg2::PAKE1, "not base64!", 0, 1);
        assert!(matches!(
            j.on_message(&garbage),
            Err(HandshakeError::Pake(_))
        ));
        // Unknown message names are ignored, so later versions can add some.
        let future = Envelope::new("YAKK3_HELLO", "", 0, 1);
        assert!(j.on_message(&future).unwrap().is_empty());
    }

    /// The session the reference (Go) program recorded (`yakk1-session.json`, password "test"),
    /// with the session key both of its sides derived.
    fn reference_session() -> (serde_json::Value, [u8; 32]) {
        let s: serde_json::Value = serde_json::from_str(include_str!(
            "../../yakk-pake/tests/vectors/yakk1-session.json"
        ))
        .unwrap();
        let hex = s["session_key_hex"].as_str().unwrap();
        let key: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        (s.clone(), key.try_into().unwrap())
    }

    fn recorded(s: &serde_json::Value, side: &str) -> Vec<Envelope> {
        serde_json::from_value(s[side].clone()).unwrap()
    }

    /// One side of ours, past the key exchange with the reference's session key, as if the
    /// PAKE of the recorded session had just run (its secrets are not in the recording).
    fn past_pake_with_reference(role: Role, key: [u8; 32]) -> Handshake {
        let mut p = params(role, "test");
        p.legacy_only = true;
        let mut h = Handshake::blank(p);
        h.version = Some(Version::V1);
        h.crypto = Some(Crypto::V1(Zeroizing::new(key)));
        h.stage = Stage::Negotiating;
        h
    }

    #[test]
    fn the_reference_joiners_sealed_offer_opens_on_our_owner() {
        let (s, key) = reference_session();
        let mut owner = past_pake_with_reference(Role::Owner, key);
        let mut offers = 0;
        for env in recorded(&s, "joiner_sent") {
            if env.msg_type != msg::OFFER && env.msg_type != msg::CONNECTED {
                continue;
            }
            let acts = owner.on_message(&env).unwrap();
            if env.msg_type == msg::OFFER {
                let [Action::AcceptOffer(0, sdp)] = acts.as_slice() else {
                    panic!("{acts:?}")
                };
                assert!(sdp.starts_with("v=0\r\n"), "{sdp}");
                assert!(sdp.contains("webrtc-datachannel"), "{sdp}");
                assert!(sdp.contains("a=fingerprint:sha-256 "), "{sdp}");
                offers += 1;
            } else {
                assert!(acts.is_empty(), "{acts:?}");
            }
        }
        assert_eq!(offers, 1);
    }

    #[test]
    fn the_reference_owners_sealed_answer_and_candidate_open_on_our_joiner() {
        let (s, key) = reference_session();
        let mut joiner = past_pake_with_reference(Role::Joiner, key);
        let mut seen = Vec::new();
        for env in recorded(&s, "owner_sent") {
            if !matches!(env.msg_type.as_str(), msg::ANSWER | msg::NEW_ICE_CANDIDATE) {
                continue;
            }
            match single_action(joiner.on_message(&env).unwrap()) {
                Action::AcceptAnswer(0, sdp) => {
                    assert!(sdp.starts_with("v=0\r\n") && sdp.contains("webrtc-datachannel"));
                    seen.push("answer");
                }
                Action::AddCandidate(0, c) => {
                    assert!(c.candidate.starts_with("candidate:"), "{c:?}");
                    assert!(c.sdp_mid.is_some() || c.sdp_mline_index.is_some(), "{c:?}");
                    seen.push("candidate");
                }
                a => panic!("{a:?}"),
            }
        }
        assert_eq!(seen, ["answer", "candidate"]);
    }

    fn single_action(acts: Vec<Action>) -> Action {
        let [a] = <[Action; 1]>::try_from(acts).unwrap_or_else(|a| panic!("{a:?}"));
        a
    }

    #[test]
    fn a_recorded_reference_message_altered_or_under_another_key_is_refused() {
        let (s, key) = reference_session();
        let offer = recorded(&s, "joiner_sent")
            .into_iter()
            .find(|e| e.msg_type == msg::OFFER)
            .unwrap();
        // One byte changed anywhere in the sealed payload (here in the middle).
        let mut raw =
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &offer.payload)
                .unwrap();
        let mid = raw.len() / 2;
        raw[mid] ^= 0x01;
        let mut altered = offer.clone();
        altered.payload = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &raw);
        let mut owner = past_pake_with_reference(Role::Owner, key);
        assert!(matches!(
            owner.on_message(&altered),
            Err(HandshakeError::Sealed(_))
        ));
        let mut other = key;
        other[31] ^= 0x80;
        let mut owner = past_pake_with_reference(Role::Owner, other);
        assert!(matches!(
            owner.on_message(&offer),
            Err(HandshakeError::Sealed(_))
        ));
    }

    #[test]
    fn our_yakk1_sealing_has_the_references_layout() {
        // The reference's sealed payload is base64 of nonce, ciphertext and tag, with the
        // plaintext as long as the JSON it carries: ours must have the same length for the
        // same plaintext, and open back.
        let (s, key) = reference_session();
        for env in recorded(&s, "owner_sent") {
            if !matches!(env.msg_type.as_str(), msg::ANSWER | msg::NEW_ICE_CANDIDATE) {
                continue;
            }
            let plain = sealed::open_v1(&key, &env.payload).unwrap();
            let ours = sealed::seal_v1(&key, &plain);
            assert_eq!(ours.len(), env.payload.len(), "{}", env.msg_type);
            assert_ne!(ours, env.payload, "a fresh nonce every time");
            assert_eq!(sealed::open_v1(&key, &ours).unwrap(), plain);
        }
    }

    /// A small deterministic generator for the chaos test (no dependency needed).
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Alters an envelope the way a hostile relay might: another message name, a flipped,
    /// cut, stretched or replaced payload, another sender or recipient.
    fn mutate(e: &mut Envelope, rng: &mut XorShift) {
        const NAMES: &[&str] = &[
            msg::REQUEST_OFFER,
            msg::JPAKE_ROUND1,
            msg::JPAKE_ROUND2,
            msg::JPAKE_KEY_CONFIRMATION,
            msg::OFFER,
            msg::ANSWER,
            msg::NEW_ICE_CANDIDATE,
            msg::CONNECTED,
            msg2::PAKE1,
            msg2::PAKE2,
            msg2::CONFIRM,
            msg2::SEALED,
            msg2::ABORT,
            "YAKK2_FUTURE",
        ];
        match rng.below(6) {
            0 => e.msg_type = NAMES[rng.below(NAMES.len() as u64) as usize].into(),
            1 if !e.payload.is_empty() => {
                let mut b = e.payload.clone().into_bytes();
                let i = rng.below(b.len() as u64) as usize;
                b[i] = b"AZaz09+/=\"{}[],:x"[rng.below(17) as usize];
                e.payload = String::from_utf8_lossy(&b).into_owned();
            }
            2 => {
                let cut = rng.below(e.payload.len() as u64 + 1) as usize;
                e.payload.truncate(cut);
            }
            3 => e.payload = e.payload.repeat(1 + rng.below(3) as usize),
            4 => {
                e.payload = match rng.below(4) {
                    0 => String::new(),
                    1 => r#"{"versions":["yakk/2","yakk/1"]}"#.into(),
                    2 => r#"{"reason":"closed"}"#.into(),
                    _ => format!("{:x}", rng.next()),
                }
            }
            _ => e.sender = rng.below(3) as i64 - 1,
        }
    }

    /// A real joiner and a real owner through a relay that drops, repeats, reorders and alters
    /// messages at random, a few thousand times: nothing panics, the owner releases its key
    /// confirmation only with its own key confirmed or as the answer to a judged wrong
    /// password, and a joiner with a wrong password is never admitted.
    #[test]
    fn a_chaotic_relay_never_makes_the_owner_leak_or_admit_a_wrong_password() {
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        let (mut judged_wrong, mut admitted) = (0, 0);
        for case in 0..1500 {
            let right = rng.below(2) == 0;
            let legacy = rng.below(3) == 0;
            let mut jp = params(Role::Joiner, if right { "pw" } else { "not-pw" });
            let mut op = params(Role::Owner, "pw");
            jp.allow_legacy = legacy;
            op.allow_legacy = legacy;
            jp.legacy_only = legacy && rng.below(2) == 0;
            let (mut j, first) = Handshake::joiner(jp);
            let mut o = Handshake::owner(op);
            let mut to_owner: std::collections::VecDeque<Envelope> = first
                .into_iter()
                .filter_map(|a| match a {
                    Action::Send(e) => Some(e),
                    _ => None,
                })
                .collect();
            let mut to_joiner = std::collections::VecDeque::new();
            let mut owner_done = false;
            for _ in 0..40 {
                if let Some(mut e) = to_owner.pop_front() {
                    if owner_done {
                        continue;
                    }
                    match rng.below(10) {
                        0 => continue,                      // dropped
                        1 => to_owner.push_back(e.clone()), // repeated later
                        2 => mutate(&mut e, &mut rng),
                        _ => {}
                    }
                    match o.on_message(&e) {
                        Ok(acts) => {
                            let confirmed =
                                acts.iter().any(|a| matches!(a, Action::KeyConfirmed(_)));
                            if confirmed {
                                assert!(right, "case {case}: a wrong password was admitted");
                                admitted += 1;
                            }
                            for a in acts {
                                if let Action::Send(out) = a {
                                    assert!(
                                        !is_confirm(&out) || confirmed,
                                        "case {case}: the owner's confirmation left before judgement"
                                    );
                                    to_joiner.push_back(out);
                                }
                            }
                        }
                        Err(err) => {
                            if let Some(n) = o.abort_notice(&err) {
                                assert!(
                                    !is_confirm(&n) || matches!(err, HandshakeError::WrongPassword),
                                    "case {case}: confirmation released on {err:?}"
                                );
                            }
                            if matches!(err, HandshakeError::WrongPassword) {
                                judged_wrong += 1;
                            }
                            owner_done = true;
                        }
                    }
                } else if let Some(mut e) = to_joiner.pop_front() {
                    if rng.below(10) == 0 {
                        mutate(&mut e, &mut rng);
                    }
                    match j.on_message(&e) {
                        Ok(acts) => to_owner.extend(acts.into_iter().filter_map(|a| match a {
                            Action::Send(e) => Some(e),
                            _ => None,
                        })),
                        Err(_) => to_joiner.clear(),
                    }
                } else {
                    break;
                }
            }
        }
        // The relay let enough through for both outcomes to be exercised.
        assert!(
            judged_wrong > 20 && admitted > 20,
            "{judged_wrong} {admitted}"
        );
    }
}
