//! yakk/1 after the key exchange, as the original program speaks it: offer, answer and
//! candidates sealed under the one session key (PROTOCOL.md §2), one peer connection.

use serde::{Deserialize, Serialize};
use yakk_wire::{Envelope, IceCandidate, msg};
use zeroize::Zeroizing;

use super::{Action, HandshakeError, Params, Role, VERSION_2, json};
use crate::sealed;

/// The plaintext of an offer or answer.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Description {
    #[serde(rename = "type")]
    pub(super) kind: String,
    pub(super) sdp: String,
    /// The versions the sender speaks, repeated under the session key so that a yakk/2 peer
    /// can tell a downgrade from the original program (which leaves this out and ignores it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) versions: Vec<String>,
}

/// A description from a peer that says it speaks yakk/2, while we do too: the negotiation
/// was tampered with (the plain version list removed on the way).
pub(super) fn check_not_downgraded(
    we_speak_v2: bool,
    d: &Description,
) -> Result<(), HandshakeError> {
    if we_speak_v2 && d.versions.iter().any(|v| v == VERSION_2) {
        return Err(HandshakeError::Downgrade);
    }
    Ok(())
}

/// The negotiation of a yakk/1 session.
pub(super) struct Negotiation {
    key: Zeroizing<[u8; 32]>,
    /// The versions we repeat in our description (see [`Description::versions`]).
    versions: Vec<String>,
}

impl Negotiation {
    pub(super) fn new(key: Zeroizing<[u8; 32]>, versions: Vec<String>) -> Self {
        Negotiation { key, versions }
    }

    /// Whether `t` is a message of this stage.
    pub(super) fn handles(t: &str) -> bool {
        matches!(t, msg::OFFER | msg::ANSWER | msg::NEW_ICE_CANDIDATE)
    }

    /// An offer, answer or candidate from the peer.
    pub(super) fn on_message(
        &self,
        p: &Params,
        env: &Envelope,
    ) -> Result<Vec<Action>, HandshakeError> {
        let t = env.msg_type.as_str();
        let plain = sealed::open_v1(&self.key, &env.payload)?;
        let malformed = |_| HandshakeError::Malformed(t.into());
        let we_speak_v2 = !p.v1_only;
        match (t, p.role) {
            (msg::NEW_ICE_CANDIDATE, _) => {
                let c: IceCandidate = serde_json::from_slice(&plain).map_err(malformed)?;
                Ok(vec![Action::AddCandidate(0, c)])
            }
            (msg::OFFER, Role::Owner) => {
                let d: Description = serde_json::from_slice(&plain).map_err(malformed)?;
                check_not_downgraded(we_speak_v2, &d)?;
                Ok(vec![Action::AcceptOffer(0, d.sdp)])
            }
            (msg::ANSWER, Role::Joiner) => {
                let d: Description = serde_json::from_slice(&plain).map_err(malformed)?;
                check_not_downgraded(we_speak_v2, &d)?;
                Ok(vec![Action::AcceptAnswer(0, d.sdp)])
            }
            _ => Err(HandshakeError::Unexpected(t.into())),
        }
    }

    fn seal(&self, p: &Params, msg_type: &str, plain: &[u8]) -> Result<Envelope, HandshakeError> {
        let payload = sealed::seal_v1(&self.key, plain)?;
        Ok(Envelope::new(msg_type, payload, p.my_id, p.peer_id))
    }

    /// Our offer (joiner) or answer (owner), sealed.
    pub(super) fn description(&self, p: &Params, sdp: String) -> Result<Envelope, HandshakeError> {
        let (kind, name) = match p.role {
            Role::Joiner => ("offer", msg::OFFER),
            Role::Owner => ("answer", msg::ANSWER),
        };
        let plain = json(&Description {
            kind: kind.into(),
            sdp,
            versions: self.versions.clone(),
        });
        self.seal(p, name, plain.as_bytes())
    }

    pub(super) fn candidate(
        &self,
        p: &Params,
        c: &IceCandidate,
    ) -> Result<Envelope, HandshakeError> {
        self.seal(p, msg::NEW_ICE_CANDIDATE, json(c).as_bytes())
    }
}
