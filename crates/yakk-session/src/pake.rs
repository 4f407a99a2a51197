//! Adapter between the handshake and the `yakk-pake` crate: one interface over both protocol
//! versions, speaking in envelope payload strings. It knows nothing of the handshake.

use yakk_pake::{v1, v2};
use zeroize::Zeroizing;

/// The outcome of a confirmed exchange.
pub enum Keys {
    /// yakk/1: one AES-256-GCM key for both directions.
    V1(Zeroizing<[u8; 32]>),
    /// yakk/2: one key per direction, seen from our role.
    V2 {
        send: Zeroizing<[u8; 32]>,
        recv: Zeroizing<[u8; 32]>,
    },
}

pub enum PakeFailure {
    /// The peer's key confirmation did not match: wrong password (or a man in the middle).
    Confirmation,
    /// The peer's message was malformed or failed validation.
    Invalid(String),
}

#[cfg(not(feature = "fuzzing"))]
fn new_v1(password: &[u8]) -> v1::Party {
    v1::Party::new(password)
}

#[cfg(not(feature = "fuzzing"))]
fn new_v2(role: v2::Role, password: &[u8], room: &str) -> v2::Party {
    v2::Party::new(role, password, room)
}

/// Fuzzing only: one party per password, built once per thread and cloned. Its key generation
/// costs more than everything a fuzz input drives; and every exchange for that password then
/// uses the same secrets, which only a fuzz target may accept.
#[cfg(feature = "fuzzing")]
fn new_v1(password: &[u8]) -> v1::Party {
    thread_local! {
        static PARTIES: std::cell::RefCell<std::collections::HashMap<Vec<u8>, v1::Party>> =
            Default::default();
    }
    PARTIES.with(|parties| {
        parties
            .borrow_mut()
            .entry(password.to_vec())
            .or_insert_with(|| v1::Party::new(password))
            .clone()
    })
}

/// Fuzzing only: as `new_v1`, per role, password and room.
#[cfg(feature = "fuzzing")]
fn new_v2(role: v2::Role, password: &[u8], room: &str) -> v2::Party {
    type Key = (v2::Role, Vec<u8>, String);
    thread_local! {
        static PARTIES: std::cell::RefCell<std::collections::HashMap<Key, v2::Party>> =
            Default::default();
    }
    PARTIES.with(|parties| {
        parties
            .borrow_mut()
            .entry((role, password.to_vec(), room.to_string()))
            .or_insert_with(|| v2::Party::new(role, password, room))
            .clone()
    })
}

pub enum Pake {
    V1(Box<v1::Party>),
    V2(Box<v2::Party>),
}

impl Pake {
    pub fn v1(password: &[u8]) -> (Pake, String) {
        let party = new_v1(password);
        let round1 = party.round1().to_payload();
        (Pake::V1(Box::new(party)), round1)
    }

    pub fn v2(role: v2::Role, password: &[u8], room: &str) -> (Pake, String) {
        let party = new_v2(role, password, room);
        let round1 = party.round1().to_payload();
        (Pake::V2(Box::new(party)), round1)
    }

    pub fn on_round1(&mut self, payload: &str) -> Result<String, PakeFailure> {
        match self {
            Pake::V1(p) => {
                let m = v1::Round1::from_payload(payload).map_err(invalid)?;
                Ok(p.receive_round1(&m).map_err(invalid)?.to_payload())
            }
            Pake::V2(p) => {
                let m = v2::Round1::from_payload(payload).map_err(invalid)?;
                Ok(p.receive_round1(&m).map_err(invalid)?.to_payload())
            }
        }
    }

    pub fn on_round2(&mut self, payload: &str) -> Result<String, PakeFailure> {
        match self {
            Pake::V1(p) => {
                let m = v1::Round2::from_payload(payload).map_err(invalid)?;
                Ok(p.receive_round2(&m).map_err(invalid)?.to_payload())
            }
            Pake::V2(p) => {
                let m = v2::Round2::from_payload(payload).map_err(invalid)?;
                Ok(p.receive_round2(&m).map_err(invalid)?.to_payload())
            }
        }
    }

    /// yakk/2, between our key confirmation and the peer's: the key that seals what we send
    /// (a joiner's offer may go out before the owner's confirmation). yakk/1 has none.
    pub fn send_key_before_confirmation(&self) -> Option<Zeroizing<[u8; 32]>> {
        match self {
            Pake::V1(_) => None,
            Pake::V2(p) => p.send_key_before_confirmation().map(|k| Zeroizing::new(*k)),
        }
    }

    /// Checks the peer's key confirmation; the exchange is over either way.
    pub fn on_confirm(&mut self, payload: &str) -> Result<Keys, PakeFailure> {
        match self {
            Pake::V1(p) => {
                let m = v1::KeyConfirm::from_payload(payload).map_err(invalid)?;
                p.verify_confirmation(&m).map_err(confirm)?;
                let key = Zeroizing::new(*p.session_key().ok_or(PakeFailure::Confirmation)?);
                Ok(Keys::V1(key))
            }
            Pake::V2(p) => {
                let m = v2::KeyConfirm::from_payload(payload).map_err(invalid)?;
                let keys = p.verify_confirmation(&m).map_err(confirm)?;
                Ok(Keys::V2 {
                    send: Zeroizing::new(*keys.signal_send_key()),
                    recv: Zeroizing::new(*keys.signal_recv_key()),
                })
            }
        }
    }
}

fn invalid(e: yakk_pake::PakeError) -> PakeFailure {
    PakeFailure::Invalid(e.to_string())
}

fn confirm(e: yakk_pake::PakeError) -> PakeFailure {
    match e {
        yakk_pake::PakeError::ConfirmationMismatch => PakeFailure::Confirmation,
        other => invalid(other),
    }
}
