//! yakk/2: J-PAKE per RFC 8236 on P-256 with RFC 8235 Schnorr proofs, our default.
//!
//! This module owns the yakk/2 state machine ([`Party`]) and the checks it makes. Against
//! yakk/1 it adds: distinct identities for the owner and the joiner inside every proof;
//! the version and room name bound into every proof, the transcript and the key
//! confirmation; length-prefixed hash inputs; x1, x2 and s in [1, n−1]; every received
//! point a valid non-identity point (so G4 ≠ identity), the combined generators and
//! the shared point not the identity; a reflected round 1 refused; keys released only
//! after the peer's confirmation verified; and an HKDF key schedule with one key per
//! direction and purpose ([`SessionKeys`]). The wire format and the derivations are
//! documented byte for byte in `docs/yakk2-pake.md`.

mod schedule;
mod wire;

#[cfg(test)]
mod tests;

pub use schedule::{KEY_LEN, SessionKeys};
pub use wire::{CONFIRM_TYPE, KeyConfirm, ROUND1_TYPE, ROUND2_TYPE, Round1, Round2};

use p256::elliptic_curve::Field as _;
use p256::{AffinePoint, ProjectivePoint, Scalar};
use subtle::ConstantTimeEq as _;
use zeroize::{Zeroize, Zeroizing};

use crate::PakeError;
use crate::ec;
use wire::SchnorrProof;

/// Which end of the room a party is. The two sides of an exchange must differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Created the room (the original program's callee).
    Owner,
    /// Joined the room (the original program's caller).
    Joiner,
}

impl Role {
    /// The participant identity inside proofs and confirmations.
    pub fn id(self) -> &'static [u8] {
        match self {
            Role::Owner => b"owner",
            Role::Joiner => b"joiner",
        }
    }

    /// The other role.
    pub fn peer(self) -> Role {
        match self {
            Role::Owner => Role::Joiner,
            Role::Joiner => Role::Owner,
        }
    }
}

/// The random values of one party, fixed for known-answer tests: 32-byte big-endian
/// scalars, each non-zero and below the group order. Reusing them across sessions
/// reveals the password-derived secret; only tests and benchmarks should build these.
#[derive(Clone)]
pub struct Secrets {
    /// x1, the round 1 secret behind G1.
    pub x1: [u8; 32],
    /// x2, the round 1 secret behind G2 (and A).
    pub x2: [u8; 32],
    /// Nonce v of the proof for x1.
    pub nonce_x1: [u8; 32],
    /// Nonce v of the proof for x2.
    pub nonce_x2: [u8; 32],
    /// Nonce v of the round 2 proof for x2·s.
    pub nonce_round2: [u8; 32],
}

impl Drop for Secrets {
    fn drop(&mut self) {
        self.x1.zeroize();
        self.x2.zeroize();
        self.nonce_x1.zeroize();
        self.nonce_x2.zeroize();
        self.nonce_round2.zeroize();
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(..)")
    }
}

/// One side of a yakk/2 exchange.
///
/// Both sides send [`Party::round1`] at once; on the peer's round 1 send what
/// [`Party::receive_round1`] returns; on the peer's round 2 send what
/// [`Party::receive_round2`] returns; [`Party::verify_confirmation`] on the peer's
/// confirmation then hands out the [`SessionKeys`]. Any error aborts the party.
///
/// Cloned only by the fuzz targets (feature `fuzzing`), to start each run from a party
/// built once.
#[cfg_attr(feature = "fuzzing", derive(Clone))]
pub struct Party {
    role: Role,
    room: Vec<u8>,
    s: Scalar,
    x2: Scalar,
    nonce_round2: Scalar,
    round1: Round1,
    state: State,
}

#[cfg_attr(feature = "fuzzing", derive(Clone))]
enum State {
    AwaitRound1,
    AwaitRound2 {
        peer1: Box<Round1>,
        ours2: Box<Round2>,
    },
    AwaitConfirm {
        keys: SessionKeys,
        peer_mac: [u8; 32],
    },
    Done,
    Failed,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::AwaitRound1 => "the peer's round 1",
            State::AwaitRound2 { .. } => "the peer's round 2",
            State::AwaitConfirm { .. } => "the peer's key confirmation",
            State::Done => "nothing (the exchange is complete)",
            State::Failed => "nothing (failed)",
        }
    }
}

impl std::fmt::Debug for Party {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("v2::Party")
            .field("role", &self.role)
            .field("waiting_for", &self.state.name())
            .finish_non_exhaustive()
    }
}

impl Drop for Party {
    fn drop(&mut self) {
        self.s.zeroize();
        self.x2.zeroize();
        self.nonce_round2.zeroize();
    }
}

fn secret_scalar(bytes: &[u8; 32], field: &'static str) -> Result<Zeroizing<Scalar>, PakeError> {
    ec::scalar_from_canonical(bytes)
        .filter(|s| !bool::from(s.is_zero()))
        .map(Zeroizing::new)
        .ok_or(PakeError::InvalidSecret { field })
}

/// The proof of x for x_pub = x·base, given the nonce and its commitment v = nonce·base.
fn prove_with_commitment(
    base: &AffinePoint,
    x: &Scalar,
    x_pub: &AffinePoint,
    nonce: &Scalar,
    v: &AffinePoint,
    signer: Role,
    room: &[u8],
) -> SchnorrProof {
    let c = schedule::challenge(base, v, x_pub, signer, room);
    SchnorrProof {
        v: *v,
        r: *nonce - c * x,
    }
}

fn verify(
    base: &ProjectivePoint,
    x_pub: &AffinePoint,
    proof: &SchnorrProof,
    signer: Role,
    room: &[u8],
    field: &'static str,
) -> Result<(), PakeError> {
    let base = ec::base_affine(base);
    let c = schedule::challenge(&base, &proof.v, x_pub, signer, room);
    if ec::proof_holds(&base, &proof.r, x_pub, &c, &proof.v) {
        Ok(())
    } else {
        Err(PakeError::InvalidProof { field })
    }
}

fn non_identity(p: ProjectivePoint, field: &'static str) -> Result<ProjectivePoint, PakeError> {
    if ec::is_identity(&p) {
        Err(PakeError::IdentityPoint { field })
    } else {
        Ok(p)
    }
}

impl Party {
    /// A party with fresh random secrets from the operating system.
    pub fn new(role: Role, password: &[u8], room: &str) -> Party {
        // Random non-zero scalars: valid secrets by construction, nothing to check.
        let random = || Zeroizing::new(ec::random_nonzero_scalar());
        Party::from_scalars(
            role,
            password,
            room,
            [random(), random(), random(), random(), random()],
        )
    }

    /// A party with the given random values, for known-answer tests and benchmarks.
    pub fn with_secrets(
        role: Role,
        password: &[u8],
        room: &str,
        secrets: &Secrets,
    ) -> Result<Party, PakeError> {
        let scalars = [
            secret_scalar(&secrets.x1, "x1")?,
            secret_scalar(&secrets.x2, "x2")?,
            secret_scalar(&secrets.nonce_x1, "nonce_x1")?,
            secret_scalar(&secrets.nonce_x2, "nonce_x2")?,
            secret_scalar(&secrets.nonce_round2, "nonce_round2")?,
        ];
        Ok(Party::from_scalars(role, password, room, scalars))
    }

    /// A party from checked non-zero secrets: x1, x2 and the nonces of x1, x2 and round 2.
    fn from_scalars(
        role: Role,
        password: &[u8],
        room: &str,
        [x1, x2, v1, v2, v3]: [Zeroizing<Scalar>; 5],
    ) -> Party {
        let room = room.as_bytes().to_vec();
        let g = ProjectivePoint::GENERATOR;
        // G1, G2 and both proofs' V, made affine with one field inversion.
        let [g1, g2, c1, c2] = ec::to_affine_all(&[
            ec::mul(&g, &x1),
            ec::mul(&g, &x2),
            ec::mul(&g, &v1),
            ec::mul(&g, &v2),
        ]);
        let g = AffinePoint::GENERATOR;
        let round1 = Round1 {
            g1,
            zkp1: prove_with_commitment(&g, &x1, &g1, &v1, &c1, role, &room),
            g2,
            zkp2: prove_with_commitment(&g, &x2, &g2, &v2, &c2, role, &room),
        };
        Party {
            role,
            s: schedule::password_scalar(password),
            room,
            x2: *x2,
            nonce_round2: *v3,
            round1,
            state: State::AwaitRound1,
        }
    }

    /// Our role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Our round 1, to send as soon as the peer is known.
    pub fn round1(&self) -> Round1 {
        self.round1.clone()
    }

    /// Takes the peer's round 1 and returns our round 2.
    pub fn receive_round1(&mut self, peer: &Round1) -> Result<Round2, PakeError> {
        let result = self.try_receive_round1(peer);
        if result.is_err() {
            self.state = State::Failed;
        }
        result
    }

    fn try_receive_round1(&mut self, peer: &Round1) -> Result<Round2, PakeError> {
        self.expect("round 1", |s| matches!(s, State::AwaitRound1))?;
        let ours = [self.round1.g1, self.round1.g2];
        if ours.contains(&peer.g1) || ours.contains(&peer.g2) {
            return Err(PakeError::Reflected);
        }
        let them = self.role.peer();
        let claim = |x_pub: &AffinePoint, proof: &SchnorrProof| ec::GeneratorClaim {
            r: proof.r,
            c: schedule::challenge(&AffinePoint::GENERATOR, &proof.v, x_pub, them, &self.room),
            y: *x_pub,
            t: proof.v,
        };
        let batch = (claim(&peer.g1, &peer.zkp1), claim(&peer.g2, &peer.zkp2));
        if !ec::both_hold_public(&batch.0, &batch.1) {
            // At least one proof is false: the separate checks, in order, say which.
            let g = ProjectivePoint::GENERATOR;
            verify(
                &g,
                &peer.g1,
                &peer.zkp1,
                them,
                &self.room,
                "round 1 proof for G1",
            )?;
            verify(
                &g,
                &peer.g2,
                &peer.zkp2,
                them,
                &self.room,
                "round 1 proof for G2",
            )?;
        }

        let base = non_identity(
            ProjectivePoint::from(self.round1.g1) + peer.g1 + peer.g2,
            "round 2 generator G1+G3+G4",
        )?;
        let xs = Zeroizing::new(self.x2 * self.s);
        // A = xs·base and the proof's V = nonce·base share one base: one comb for both.
        let [a, v] = ec::mul_pair(&base, &xs, &self.nonce_round2);
        let [a, v, base] = ec::to_affine_all(&[a, v, base]);
        let ours2 = Round2 {
            a,
            zkp: prove_with_commitment(
                &base,
                &xs,
                &a,
                &self.nonce_round2,
                &v,
                self.role,
                &self.room,
            ),
        };
        self.state = State::AwaitRound2 {
            peer1: Box::new(peer.clone()),
            ours2: Box::new(ours2.clone()),
        };
        Ok(ours2)
    }

    /// Takes the peer's round 2, derives the keys and returns our confirmation.
    pub fn receive_round2(&mut self, peer: &Round2) -> Result<KeyConfirm, PakeError> {
        let result = self.try_receive_round2(peer);
        if result.is_err() {
            self.state = State::Failed;
        }
        result
    }

    fn try_receive_round2(&mut self, peer: &Round2) -> Result<KeyConfirm, PakeError> {
        self.expect("round 2", |s| matches!(s, State::AwaitRound2 { .. }))?;
        let State::AwaitRound2 { peer1, ours2 } = &self.state else {
            return Err(PakeError::Aborted);
        };
        let base = non_identity(
            ProjectivePoint::from(self.round1.g1) + self.round1.g2 + peer1.g1,
            "round 2 generator G1+G2+G3",
        )?;
        let them = self.role.peer();
        verify(
            &base,
            &peer.a,
            &peer.zkp,
            them,
            &self.room,
            "round 2 proof for A",
        )?;

        let xs = Zeroizing::new(self.x2 * self.s);
        // K = (A' − xs·G4)·x2 = x2·A' − (x2·xs)·G4, as one constant-time double multiplication.
        let k = non_identity(
            ec::lincomb(
                &peer.a.into(),
                &self.x2,
                &peer1.g2.into(),
                &-(self.x2 * *xs),
            ),
            "shared point K",
        )?;
        let (kx, _) = ec::affine_xy(&k.to_affine());
        let kx = Zeroizing::new(kx);

        let (r1_ours, r2_ours) = (self.round1.to_bytes(), ours2.to_bytes());
        let (r1_peer, r2_peer) = (peer1.to_bytes(), peer.to_bytes());
        let messages = match self.role {
            Role::Owner => [&r1_ours[..], &r1_peer[..], &r2_ours[..], &r2_peer[..]],
            Role::Joiner => [&r1_peer[..], &r1_ours[..], &r2_peer[..], &r2_ours[..]],
        };
        let th = schedule::transcript_hash(&self.room, messages);
        let keys = SessionKeys::derive(self.role, &th, &kx);
        let kc_key = keys.confirmation_key();
        let ours = [&self.round1.g1, &self.round1.g2];
        let theirs = [&peer1.g1, &peer1.g2];
        let our_mac = schedule::confirmation_mac(&kc_key, self.role, ours, theirs, &self.room);
        let peer_mac = schedule::confirmation_mac(&kc_key, them, theirs, ours, &self.room);
        self.state = State::AwaitConfirm { keys, peer_mac };
        Ok(KeyConfirm { mac: our_mac })
    }

    /// Between our key confirmation and the peer's: the key that seals what we send. A joiner
    /// may seal its offer with it and send it right behind its confirmation
    /// (docs/yakk2-pake.md §6a): anything sealed under it tests the same single guess as the
    /// confirmation does. The key that opens what the peer sends is handed out only by
    /// [`Party::verify_confirmation`]: nothing from the peer counts before that.
    pub fn send_key_before_confirmation(&self) -> Option<&[u8; KEY_LEN]> {
        match &self.state {
            State::AwaitConfirm { keys, .. } => Some(keys.signal_send_key()),
            _ => None,
        }
    }

    /// Checks the peer's key confirmation (in constant time) and, if it matches,
    /// hands out the session keys. The party is finished either way.
    pub fn verify_confirmation(&mut self, peer: &KeyConfirm) -> Result<SessionKeys, PakeError> {
        self.expect("key confirmation", |s| {
            matches!(s, State::AwaitConfirm { .. })
        })?;
        match std::mem::replace(&mut self.state, State::Failed) {
            State::AwaitConfirm { keys, peer_mac } if bool::from(peer.mac.ct_eq(&peer_mac)) => {
                self.state = State::Done;
                Ok(keys)
            }
            _ => Err(PakeError::ConfirmationMismatch),
        }
    }

    fn expect(&mut self, got: &'static str, ok: impl Fn(&State) -> bool) -> Result<(), PakeError> {
        match &self.state {
            State::Failed => Err(PakeError::Aborted),
            s if ok(s) => Ok(()),
            s => {
                let expected = s.name();
                self.state = State::Failed;
                Err(PakeError::OutOfOrder { expected, got })
            }
        }
    }
}
