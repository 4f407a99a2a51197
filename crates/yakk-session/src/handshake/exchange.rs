//! The key exchange part of a handshake: its J-PAKE (yakk/1 or yakk/2), the round it is in,
//! and the handshake's steps through it up to the confirmed key.

use std::sync::PoisonError;

use yakk_pake::v2::Role as PakeRole;
use yakk_wire::{Envelope, msg};

use super::{
    Action, Handshake, HandshakeError, Keys, LanesCap, MAX_LANES, Negotiation, RequestOffer, Role,
    State, VERSION_2, Version, json, msg2, v1, v2,
};
use crate::admission::Judgement;
use crate::pake::Pake;

/// The key exchange, by round.
pub(super) struct Exchange {
    pub(super) pake: Pake,
    pub(super) round: Round,
    /// Owner: our key confirmation, held back until the joiner's has been judged.
    pub(super) held_confirm: Option<yakk_wire::Envelope>,
    /// Joiner, yakk/2, once its confirmation went out: the sealing half of the channel, for
    /// the offer that follows its confirmation without waiting for the owner's.
    pub(super) early: Option<super::v2::Negotiation>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Round {
    One,
    Two,
    Confirm,
}

impl Exchange {
    pub(super) fn new(pake: Pake) -> Self {
        Exchange {
            pake,
            round: Round::One,
            held_confirm: None,
            early: None,
        }
    }

    pub(super) fn version(&self) -> Version {
        match self.pake {
            Pake::V1(_) => Version::V1,
            Pake::V2(_) => Version::V2,
        }
    }

    /// The message name of `round` in this exchange's version.
    pub(super) fn name(&self, round: Round) -> &'static str {
        match (self.version(), round) {
            (Version::V1, Round::One) => msg::JPAKE_ROUND1,
            (Version::V1, Round::Two) => msg::JPAKE_ROUND2,
            (Version::V1, Round::Confirm) => msg::JPAKE_KEY_CONFIRMATION,
            (Version::V2, Round::One) => msg2::PAKE1,
            (Version::V2, Round::Two) => msg2::PAKE2,
            (Version::V2, Round::Confirm) => msg2::CONFIRM,
        }
    }
}

/// The key exchange's steps of a handshake.
impl Handshake {
    /// Owner: the joiner's first message, which says the versions it speaks.
    pub(super) fn on_request_offer(
        &mut self,
        payload: &str,
    ) -> Result<Vec<Action>, HandshakeError> {
        let versions = if payload.trim().is_empty() {
            vec![]
        } else {
            serde_json::from_str::<RequestOffer>(payload)
                .map_err(|_| HandshakeError::Malformed(msg::REQUEST_OFFER.into()))?
                .versions
        };
        let password = self.p.password.as_bytes();
        let (pake, round1) = if versions.iter().any(|v| v == VERSION_2) && !self.p.v1_only {
            Pake::v2(PakeRole::Owner, password, &self.p.room)
        } else if self.p.allow_v1 || self.p.v1_only {
            Pake::v1(password)
        } else {
            return Err(HandshakeError::V1Refused);
        };
        let x = Exchange::new(pake);
        let mut out = vec![Action::Send(self.plain(x.name(Round::One), round1))];
        // The most lanes this owner answers with, so that the joiner's other offers need not
        // wait for lane 0's answer. A joiner from before ignores the name.
        let cap = self.p.lanes_cap.clamp(1, MAX_LANES);
        if x.version() == Version::V2 && cap > 1 {
            let payload = json(&LanesCap { lanes: cap });
            out.push(Action::Send(self.plain(msg2::LANES, payload)));
        }
        self.state = State::Exchange(x);
        Ok(out)
    }

    /// The key-exchange message of the current round.
    pub(super) fn on_pake(&mut self, env: &Envelope) -> Result<Vec<Action>, HandshakeError> {
        let State::Exchange(x) = &mut self.state else {
            return Err(HandshakeError::Unexpected(env.msg_type.clone()));
        };
        let payload = env.payload.as_str();
        match x.round {
            Round::One => {
                let round2 = x.pake.on_round1(payload)?;
                x.round = Round::Two;
                let name = x.name(Round::Two);
                Ok(vec![Action::Send(self.plain(name, round2))])
            }
            Round::Two => {
                let confirm = x.pake.on_round2(payload)?;
                x.round = Round::Confirm;
                let confirm = Envelope::new(
                    x.name(Round::Confirm),
                    confirm,
                    self.p.my_id,
                    self.p.peer_id,
                );
                // The joiner confirms first. The owner's confirmation would let the joiner
                // test its password guess offline and leave: it goes out only once the
                // joiner's has been judged (docs/yakk2-pake.md, "Confirmation order").
                if self.p.role == Role::Owner {
                    x.held_confirm = Some(confirm);
                    return Ok(vec![]);
                }
                let mut out = vec![Action::Send(confirm)];
                // yakk/2: the joiner's offer need not wait for the owner's confirmation.
                if let Some(send) = x.pake.send_key_before_confirmation() {
                    x.early = Some(v2::Negotiation::sending_only(&send));
                    out.push(Action::OfferEarly(x.version()));
                }
                Ok(out)
            }
            Round::Confirm => {
                let version = x.version();
                let keys = match self.p.role {
                    Role::Joiner => x.pake.on_confirm(payload).map_err(HandshakeError::from),
                    Role::Owner => {
                        let judged = self
                            .admission
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .judge(|| x.pake.on_confirm(payload));
                        match judged {
                            Judgement::Admitted(keys) => Ok(keys),
                            Judgement::Wrong { burned } => {
                                self.burned_room = burned;
                                Err(HandshakeError::WrongPassword)
                            }
                            Judgement::Refused(r) => {
                                x.held_confirm = None;
                                Err(HandshakeError::Refused(r))
                            }
                            Judgement::Invalid(e) => {
                                x.held_confirm = None;
                                Err(HandshakeError::Pake(e))
                            }
                        }
                    }
                };
                let held_confirm = x.held_confirm.take();
                let early = x.early.take();
                let keys = match keys {
                    Ok(keys) => keys,
                    Err(e) => {
                        self.state = State::Failed {
                            version,
                            held_confirm,
                        };
                        return Err(e);
                    }
                };
                self.negotiate(keys, early);
                let mut out: Vec<Action> = held_confirm.map(Action::Send).into_iter().collect();
                out.push(Action::KeyConfirmed(version));
                Ok(out)
            }
        }
    }

    /// The key is confirmed: negotiate under `keys` from now on, going on with what `early`
    /// already sealed (a joiner's offer).
    pub(super) fn negotiate(&mut self, keys: Keys, early: Option<v2::Negotiation>) {
        self.state = State::Negotiating(match (keys, early) {
            (Keys::V1(k), _) => {
                Negotiation::V1(v1::Negotiation::new(k, std::mem::take(&mut self.versions)))
            }
            (Keys::V2 { recv, .. }, Some(mut n)) => {
                n.receive_with(&recv);
                Negotiation::V2(n)
            }
            (Keys::V2 { send, recv }, None) => Negotiation::V2(v2::Negotiation::new(&send, &recv)),
        });
    }

    /// Joiner: the owner announced how many lanes it answers with (`YAKK2_LANES`).
    pub(super) fn on_lanes_cap(&mut self, payload: &str) -> Result<Vec<Action>, HandshakeError> {
        let cap = serde_json::from_str::<LanesCap>(payload)
            .map_err(|_| HandshakeError::Malformed(msg2::LANES.into()))?
            .lanes;
        // A server that raised it can make the owner refuse an offer: no worse than dropping
        // messages, which it can do anyway.
        self.early_lanes = self.p.lanes.min(cap).clamp(1, MAX_LANES);
        Ok(vec![])
    }
}
