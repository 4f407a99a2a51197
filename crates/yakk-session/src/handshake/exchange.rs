//! The key exchange part of a handshake: its J-PAKE (yakk/1 or yakk/2) and the round it is in.

use yakk_wire::msg;

use super::{Version, msg2};
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
