//! The handshake state machines of owner and joiner, free of I/O: an envelope or a local event
//! goes in, envelopes to send and instructions for the peer connection come out.
//!
//! Flow (PROTOCOL.md §2, docs/yakk2.md): the joiner announces the versions it speaks in
//! `YAKKMSG_REQUESTOFFER` and, for yakk/2, sends its first J-PAKE message at once. Both sides run
//! the PAKE concurrently. A yakk/2 joiner makes its offer as soon as its own key confirmation
//! went out, the owner answers once that confirmation verified, and both trickle ICE
//! candidates — all sealed under the session key, and nothing opened before the peer's
//! confirmation verified.
//! yakk/1 is spoken only when the user allowed it; a yakk/2 peer never falls back silently.

//! The handshake is an enum of states that own their data (`State`). The key exchange's steps
//! are in `exchange.rs`; what follows it is split by version (`v1.rs`, `v2.rs`), and `v2.rs`
//! also agrees on the lanes.

mod error;
mod exchange;
mod v1;
mod v2;

#[cfg(test)]
pub(crate) mod tests;

use serde::{Deserialize, Serialize};
use yakk_pake::v2::Role as PakeRole;
use yakk_wire::{Envelope, IceCandidate, msg};
use zeroize::Zeroizing;

use std::sync::{Arc, Mutex};

use crate::admission::Admission;
#[cfg(not(any(test, feature = "fuzzing")))]
use crate::pake::Keys;
/// The keys an agreed exchange yields, for [`Handshake::confirmed`].
#[cfg(any(test, feature = "fuzzing"))]
pub use crate::pake::Keys;
use crate::pake::Pake;
pub use error::HandshakeError;
use exchange::{Exchange, Round};
/// Message names of yakk/2, under the name other crates know them by.
pub use v2::msg as msg2;

/// The versions string a joiner announces.
pub const VERSION_2: &str = "yakk/2";
pub const VERSION_1: &str = "yakk/1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Owner,
    Joiner,
}

impl From<Role> for PakeRole {
    fn from(r: Role) -> Self {
        match r {
            Role::Owner => PakeRole::Owner,
            Role::Joiner => PakeRole::Joiner,
        }
    }
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
    /// The key is confirmed; the peer connection may be built now (joiner: make an offer,
    /// unless [`Action::OfferEarly`] came first).
    KeyConfirmed(Version),
    /// Joiner, yakk/2: its key confirmation went out; build the peer connection and make the
    /// offer now. It goes out sealed right behind the confirmation, a round trip before the
    /// owner's confirmation comes (docs/yakk2-pake.md §6a); the owner's answer is taken only
    /// after that confirmation, and [`Action::KeyConfirmed`] follows it.
    OfferEarly(Version),
    /// Owner: apply this offer to the peer connection of this lane (0 is the first; yakk/2
    /// lanes, docs/yakk2.md) and produce an answer.
    AcceptOffer(u32, String),
    /// Joiner: apply this answer to the peer connection of this lane. After lane 0's answer,
    /// [`Handshake::lanes`] says how many peer connections to make.
    AcceptAnswer(u32, String),
    /// Add the peer's ICE candidate to the peer connection of this lane.
    AddCandidate(u32, IceCandidate),
}

/// Fixed facts of one handshake.
#[derive(Clone)]
pub struct Params {
    pub role: Role,
    pub room: String,
    pub my_id: i64,
    pub peer_id: i64,
    pub password: Zeroizing<String>,
    pub allow_v1: bool,
    /// Speak only yakk/1, exactly as the original program does (for interoperability tests).
    pub v1_only: bool,
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

/// Feature: per-stream flow control with window grants (docs/yakk2.md).
pub const FEATURE_WINDOW: &str = "window";
/// Feature: with `window`, the side that opened a stream closes it (docs/yakk2.md).
pub const FEATURE_OPENER_CLOSES: &str = "opener-closes";
/// Feature, announced by a side alone: its stack drops bursts that a yakk peer's takes, so
/// the other side keeps little unacknowledged on the connection (docs/yakk2.md). The browser
/// page announces it; yakk's own peers do not.
pub const FEATURE_SMALL_BURSTS: &str = "small-bursts";

#[derive(Debug, Serialize, Deserialize)]
struct RequestOffer {
    versions: Vec<String>,
}

/// The payload of `YAKK2_LANES`.
#[derive(Debug, Serialize, Deserialize)]
struct LanesCap {
    lanes: u32,
}

/// A message as JSON. Serialising can fail only for maps with keys that are not strings and
/// for `Serialize` impls that fail on purpose; the messages here are derived structs of
/// strings, numbers and lists, so it cannot.
fn json<T: Serialize>(m: &T) -> String {
    #[allow(clippy::expect_used)]
    serde_json::to_string(m).expect("plain derived structs serialise")
}

/// The versions a joiner that does not speak only yakk/1 announces.
fn announced_versions(p: &Params) -> Vec<String> {
    let mut versions = vec![VERSION_2.to_string()];
    if p.allow_v1 {
        versions.push(VERSION_1.to_string());
    }
    versions
}

/// Where a handshake is. Each state owns what it needs, so no state can lack its data.
enum State {
    /// Owner: waiting for the joiner's first message.
    AwaitPeer,
    /// Running the key exchange.
    Exchange(Exchange),
    /// The key confirmation failed or was refused: nothing more is judged.
    Failed {
        version: Version,
        /// Owner: its key confirmation, for a joiner whose wrong password was judged.
        held_confirm: Option<Envelope>,
    },
    /// Key confirmed; exchanging descriptions and candidates.
    Negotiating(Negotiation),
}

enum Negotiation {
    V1(v1::Negotiation),
    V2(v2::Negotiation),
}

impl Negotiation {
    fn version(&self) -> Version {
        match self {
            Negotiation::V1(_) => Version::V1,
            Negotiation::V2(_) => Version::V2,
        }
    }
}

pub struct Handshake {
    p: Params,
    state: State,
    /// The lanes whose description of ours went out (their candidates wait for it).
    description_sent: Vec<u32>,
    /// Candidates gathered before their lane's description, with their lane.
    queued_candidates: Vec<(u32, IceCandidate)>,
    /// Features we announce with our description (yakk/2).
    features: Vec<String>,
    /// Owner: the joiner's wrong password was the one that burned the code.
    burned_room: bool,
    /// Joiner: how many lanes it offers at once, lane 0 included, before lane 0's answer: its
    /// wish, within what the owner announced it answers with (`YAKK2_LANES`); 1 when the
    /// owner announced nothing.
    early_lanes: u32,
    /// The versions we announce (joiner) or speak (owner), as repeated in a yakk/1 description.
    versions: Vec<String>,
    admission: Arc<Mutex<Admission>>,
}

impl Handshake {
    /// A joiner: announces its versions and, for yakk/2, starts the PAKE at once.
    pub fn joiner(p: Params) -> (Self, Vec<Action>) {
        if p.v1_only {
            // As the original program: an empty request, then round 1 at once.
            let (pake, round1) = Pake::v1(p.password.as_bytes());
            let mut h = Handshake::blank(p);
            h.state = State::Exchange(Exchange::new(pake));
            let actions = vec![
                Action::Send(h.plain(msg::REQUEST_OFFER, String::new())),
                Action::Send(h.plain(msg::JPAKE_ROUND1, round1)),
            ];
            return (h, actions);
        }
        let versions = announced_versions(&p);
        let req = json(&RequestOffer {
            versions: versions.clone(),
        });
        let (pake, round1) = Pake::v2(PakeRole::Joiner, p.password.as_bytes(), &p.room);
        let mut h = Handshake::blank(p);
        h.versions = versions;
        h.state = State::Exchange(Exchange::new(pake));
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
        // A yakk/2-capable owner says so in a yakk/1 answer (see `v1::Description::versions`).
        let versions = if p.role == Role::Owner && !p.v1_only {
            vec![VERSION_2.to_string(), VERSION_1.to_string()]
        } else {
            Vec::new()
        };
        Handshake {
            p,
            state: State::AwaitPeer,
            description_sent: Vec::new(),
            queued_candidates: Vec::new(),
            features: Vec::new(),
            burned_room: false,
            early_lanes: 1,
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
        let State::Negotiating(Negotiation::V2(n)) = &self.state else {
            return false;
        };
        self.features.iter().any(|f| f == feature) && n.peer_features.iter().any(|f| f == feature)
    }

    /// Whether the peer announced `feature` in lane 0's description, whatever we announce.
    pub fn peer_announced(&self, feature: &str) -> bool {
        let State::Negotiating(Negotiation::V2(n)) = &self.state else {
            return false;
        };
        n.peer_features.iter().any(|f| f == feature)
    }

    pub fn version(&self) -> Option<Version> {
        match &self.state {
            State::AwaitPeer => None,
            State::Exchange(x) => Some(x.version()),
            State::Failed { version, .. } => Some(*version),
            State::Negotiating(n) => Some(n.version()),
        }
    }

    /// How many lanes (peer connections) the session runs: 1 unless both sides are yakk/2
    /// peers that speak lanes and one asked for more. Known once lane 0's descriptions are in.
    pub fn lanes(&self) -> u32 {
        match &self.state {
            State::Negotiating(Negotiation::V2(n)) => n.lanes,
            _ => 1,
        }
    }

    /// Joiner: how many lanes to offer at once with lane 0 (lane 0 included), before its
    /// answer: more than one only when the owner announced that it answers with that many.
    pub fn early_lanes(&self) -> u32 {
        self.early_lanes
    }

    /// Owner: whether this joiner's wrong password burned the code (the room must close).
    pub fn burned_room(&self) -> bool {
        self.burned_room
    }

    pub fn is_confirmed(&self) -> bool {
        matches!(self.state, State::Negotiating(_))
    }

    fn plain(&self, msg_type: &str, payload: String) -> Envelope {
        Envelope::new(msg_type, payload, self.p.my_id, self.p.peer_id)
    }

    /// Handles one envelope from the peer (the driver has checked it comes from `peer_id`).
    pub fn on_message(&mut self, env: &Envelope) -> Result<Vec<Action>, HandshakeError> {
        let t = env.msg_type.as_str();
        let role = self.p.role;
        match &mut self.state {
            State::AwaitPeer if t == msg::REQUEST_OFFER => {
                return self.on_request_offer(&env.payload);
            }
            State::AwaitPeer if t == msg::JPAKE_ROUND1 && role == Role::Owner => {
                // A joiner of the original program may send its round 1 right behind
                // REQUESTOFFER; take it as the announcement of yakk/1.
                let mut out = self.on_request_offer("")?;
                out.extend(self.on_message(env)?);
                return Ok(out);
            }
            State::Exchange(x)
                if x.round == Round::One
                    && x.version() == Version::V2
                    && t == msg::JPAKE_ROUND1 =>
            {
                // The peer answered with yakk/1: it is the original program.
                if !self.p.allow_v1 {
                    return Err(HandshakeError::V1Refused);
                }
                let (pake, round1) = Pake::v1(self.p.password.as_bytes());
                *x = Exchange::new(pake);
                let mut out = vec![Action::Send(self.plain(msg::JPAKE_ROUND1, round1))];
                out.extend(self.on_message(env)?);
                return Ok(out);
            }
            State::Exchange(x) if x.name(x.round) == t => return self.on_pake(env),
            State::Exchange(x)
                if t == msg2::LANES && role == Role::Joiner && x.version() == Version::V2 =>
            {
                return self.on_lanes_cap(&env.payload);
            }
            State::Negotiating(Negotiation::V2(n)) if t == msg2::SEALED => {
                return n.on_sealed(&self.p, &self.description_sent, env);
            }
            State::Negotiating(Negotiation::V1(n)) if v1::Negotiation::handles(t) => {
                return n.on_message(&self.p, env);
            }
            _ => {}
        }
        match t {
            // Also in yakk/1: only our own peers send it there (a downgraded session).
            msg2::ABORT => Err(error::on_abort(role, &env.payload)),
            // Harmless: the original program repeats CONNECTED and REQUESTOFFER; unknown names
            // are ignored so that later versions can add messages.
            msg::CONNECTED | msg::REQUEST_OFFER => Ok(vec![]),
            // Speaking yakk/1, we are the original program: it ignores yakk/2 names (a joiner
            // that allows both versions sends its yakk/2 round 1 before it learns ours is
            // yakk/1).
            t if self.version() == Some(Version::V1) && t.starts_with("YAKK2_") => Ok(vec![]),
            t if is_known(t) => Err(HandshakeError::Unexpected(t.into())),
            _ => Ok(vec![]),
        }
    }

    /// Tests and fuzzing only: a handshake whose key exchange has already agreed `keys`
    /// (yakk/1 or yakk/2, seen from `p.role`), as right after its key confirmation, without the
    /// J-PAKE arithmetic. A joiner repeats the versions it would have announced.
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn confirmed(p: Params, keys: Keys) -> Self {
        let mut h = Handshake::blank(p);
        if h.p.role == Role::Joiner && !h.p.v1_only {
            h.versions = announced_versions(&h.p);
        }
        h.negotiate(keys, None);
        h
    }

    /// The notice to send the peer when this handshake fails with `e`, if it should hear of
    /// it: only yakk/2 peers, and only for failures the peer cannot see itself (a wrong
    /// password fails on both sides anyway).
    pub fn abort_notice(&self, e: &HandshakeError) -> Option<Envelope> {
        // An owner that judged a wrong password sends its own confirmation after all: the
        // joiner's check of it fails, and it learns no more than that its one guess was wrong.
        if matches!(e, HandshakeError::WrongPassword) {
            return match &self.state {
                State::Failed { held_confirm, .. } => held_confirm.clone(),
                State::Exchange(x) => x.held_confirm.clone(),
                _ => None,
            };
        }
        let reason = error::abort_reason(e, self.version() == Some(Version::V2))?;
        let payload = json(&error::Abort {
            reason: reason.into(),
        });
        Some(self.plain(msg2::ABORT, payload))
    }

    /// Our offer (joiner) or answer (owner) for `lane` is ready: seal and send it, then the
    /// candidates of that lane that were gathered meanwhile.
    pub fn on_local_description(
        &mut self,
        lane: u32,
        sdp: String,
    ) -> Result<Vec<Action>, HandshakeError> {
        if lane >= self.lanes().max(self.early_lanes) {
            return Err(HandshakeError::OutOfOrder(
                "a description for a lane not agreed",
            ));
        }
        let env = match &mut self.state {
            State::Negotiating(Negotiation::V2(n))
            | State::Exchange(Exchange { early: Some(n), .. }) => {
                n.description(&self.p, &self.features, lane, sdp)
            }
            State::Negotiating(Negotiation::V1(n)) => n.description(&self.p, sdp),
            _ => return Err(HandshakeError::OutOfOrder("a description before the key")),
        }?;
        self.description_sent.push(lane);
        let mut out = vec![Action::Send(env)];
        let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.queued_candidates)
            .into_iter()
            .partition(|(l, _)| *l == lane);
        self.queued_candidates = later;
        for (l, c) in now {
            out.extend(self.candidate_envelope(l, c)?);
        }
        Ok(out)
    }

    fn candidate_envelope(
        &mut self,
        lane: u32,
        c: IceCandidate,
    ) -> Result<Option<Action>, HandshakeError> {
        let env = match &mut self.state {
            State::Negotiating(Negotiation::V2(n))
            | State::Exchange(Exchange { early: Some(n), .. }) => n.candidate(&self.p, lane, c),
            State::Negotiating(Negotiation::V1(n)) => n.candidate(&self.p, &c),
            _ => return Ok(None),
        }?;
        Ok(Some(Action::Send(env)))
    }

    /// A local ICE candidate of `lane` was gathered.
    pub fn on_local_candidate(
        &mut self,
        lane: u32,
        c: IceCandidate,
    ) -> Result<Vec<Action>, HandshakeError> {
        if !self.description_sent.contains(&lane) {
            self.queued_candidates.push((lane, c));
            return Ok(vec![]);
        }
        Ok(self.candidate_envelope(lane, c)?.into_iter().collect())
    }

    /// ICE connected: the original program expects `YAKKMSG_CONNECTED`.
    pub fn on_connected(&self) -> Vec<Action> {
        match self.version() {
            Some(Version::V1) => vec![Action::Send(self.plain(msg::CONNECTED, String::new()))],
            _ => vec![],
        }
    }

    /// Tests: seal a yakk/2 message of our own making.
    #[cfg(test)]
    fn seal_v2(&mut self, m: &v2::Message) -> Envelope {
        match &mut self.state {
            State::Negotiating(Negotiation::V2(n)) => n.seal(&self.p, m).unwrap(),
            _ => panic!("not negotiating yakk/2"),
        }
    }
}

/// Every message name the handshake knows after the opening `YAKKMSG_REQUESTOFFER`.
pub const KNOWN: &[&str] = &[
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
    msg2::LANES,
];

fn is_known(t: &str) -> bool {
    KNOWN.contains(&t)
}
