//! yakk/1: the original program's J-PAKE on P-256, byte for byte (`PROTOCOL.md` §2),
//! hardened without changing the wire.
//!
//! This module owns the yakk/1 state machine ([`Party`]), its Schnorr proofs, key
//! derivation and key confirmation. What it adds to the original program, invisibly to
//! its peers: every received point (G3, G4, B, each proof's T) must be on the curve
//! and not the identity, as must the generators built from them; a round 1 that repeats
//! our own points is refused; the received challenge must equal the recomputed one; the
//! confirmation is compared in constant time; secrets are zeroized on drop.
//!
//! The original program has no participant identities, so yakk/1 cannot tell the two roles
//! apart; prefer [`crate::v2`] wherever the peer speaks it.

mod wire;

#[cfg(test)]
mod tests;

pub use wire::{KeyConfirm, Proof, Round1, Round2};

use hmac::{Hmac, Mac};
use p256::elliptic_curve::Field as _;
use p256::{AffinePoint, ProjectivePoint, Scalar};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use crate::PakeError;
use crate::ec::{self, SCALAR_LEN};
use wire::{ParsedProof, ProofNames};

type HmacSha256 = Hmac<Sha256>;

/// Length of the session key: an AES-256-GCM key.
pub const SESSION_KEY_LEN: usize = 32;

/// One side of a yakk/1 exchange.
///
/// Both sides send [`Party::round1`] at once; on the peer's round 1 send what
/// [`Party::receive_round1`] returns; on the peer's round 2 send what
/// [`Party::receive_round2`] returns; then check the peer's confirmation with
/// [`Party::verify_confirmation`] before using [`Party::session_key`]. Any error aborts:
/// later calls return [`PakeError::Aborted`].
///
/// Cloned only by the fuzz targets (feature `fuzzing`), to start each run from a party
/// built once.
#[cfg_attr(feature = "fuzzing", derive(Clone))]
pub struct Party {
    s: Scalar,
    x1: Scalar,
    x2: Scalar,
    g1: AffinePoint,
    g2: AffinePoint,
    round1: Round1,
    state: State,
}

#[cfg_attr(feature = "fuzzing", derive(Clone))]
enum State {
    AwaitRound1,
    AwaitRound2 {
        g3: AffinePoint,
        g4: AffinePoint,
    },
    KeyReady {
        key: Zeroizing<[u8; SESSION_KEY_LEN]>,
        peer_mac: [u8; 32],
    },
    Failed,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::AwaitRound1 => "the peer's round 1",
            State::AwaitRound2 { .. } => "the peer's round 2",
            State::KeyReady { .. } => "the peer's key confirmation",
            State::Failed => "nothing (failed)",
        }
    }
}

impl std::fmt::Debug for Party {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("v1::Party")
            .field("waiting_for", &self.state.name())
            .finish_non_exhaustive()
    }
}

impl Drop for Party {
    fn drop(&mut self) {
        self.s.zeroize();
        self.x1.zeroize();
        self.x2.zeroize();
    }
}

impl Party {
    /// A party with fresh random secrets from the operating system.
    pub fn new(password: &[u8]) -> Party {
        Party::build(
            password,
            ec::random_nonzero_scalar(),
            ec::random_nonzero_scalar(),
        )
    }

    /// A party with the given private scalars (big-endian, any length, reduced mod n),
    /// for known-answer tests. Proof nonces are still random. Never use fixed secrets
    /// in a real session.
    pub fn with_secrets(password: &[u8], x1: &[u8], x2: &[u8]) -> Result<Party, PakeError> {
        let x1 = Zeroizing::new(ec::scalar_reduce_be(x1));
        let x2 = Zeroizing::new(ec::scalar_reduce_be(x2));
        if bool::from(x1.is_zero()) {
            return Err(PakeError::InvalidSecret { field: "x1" });
        }
        if bool::from(x2.is_zero()) {
            return Err(PakeError::InvalidSecret { field: "x2" });
        }
        Ok(Party::build(password, *x1, *x2))
    }

    fn build(password: &[u8], x1: Scalar, x2: Scalar) -> Party {
        let digest = Zeroizing::new(<[u8; 32]>::from(Sha256::digest(password)));
        let s = ec::scalar_reduce_be(digest.as_slice());
        let g = ProjectivePoint::GENERATOR;
        let v1 = Zeroizing::new(ec::random_nonzero_scalar());
        let v2 = Zeroizing::new(ec::random_nonzero_scalar());
        // G1, G2 and both proofs' T, made affine with one field inversion.
        let [g1, g2, t1, t2] = ec::to_affine_all(&[
            ec::mul(&g, &x1),
            ec::mul(&g, &x2),
            ec::mul(&g, &v1),
            ec::mul(&g, &v2),
        ]);
        let (x1_gx, x1_gy) = wire::encode_point(&g1);
        let (x2_gx, x2_gy) = wire::encode_point(&g2);
        let round1 = Round1 {
            x1_gx,
            x1_gy,
            x2_gx,
            x2_gy,
            x1_zkp: prove_with_nonce(&AffinePoint::GENERATOR, &t1, &v1, &x1, &g1),
            x2_zkp: prove_with_nonce(&AffinePoint::GENERATOR, &t2, &v2, &x2, &g2),
        };
        Party {
            s,
            x1,
            x2,
            g1,
            g2,
            round1,
            state: State::AwaitRound1,
        }
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
        self.expect("the peer's round 1", |s| matches!(s, State::AwaitRound1))?;
        let (g3, g4) = parse_round1(peer)?;
        let ours = [self.g1, self.g2];
        if ours.contains(&g3) || ours.contains(&g4) {
            return Err(PakeError::Reflected);
        }
        verify_round1_proofs(peer, &g3, &g4)?;

        let gen_a = ProjectivePoint::from(self.g1) + g3 + g4;
        if ec::is_identity(&gen_a) {
            return Err(PakeError::IdentityPoint {
                field: "round 2 generator G1+G3+G4",
            });
        }
        let xs = Zeroizing::new(self.x2 * self.s);
        let v = Zeroizing::new(ec::random_nonzero_scalar());
        // A = xs·Gen and the proof's T = v·Gen share one base: one comb for both.
        let [a, t] = ec::mul_pair(&gen_a, &xs, &v);
        let [a, t, gen_a_affine] = ec::to_affine_all(&[a, t, gen_a]);
        let (ax, ay) = wire::encode_point(&a);
        let round2 = Round2 {
            ax,
            ay,
            xs_zkp: prove_with_nonce(&gen_a_affine, &t, &v, &xs, &a),
        };
        self.state = State::AwaitRound2 { g3, g4 };
        Ok(round2)
    }

    /// Takes the peer's round 2, derives the session key and returns our confirmation.
    pub fn receive_round2(&mut self, peer: &Round2) -> Result<KeyConfirm, PakeError> {
        let result = self.try_receive_round2(peer);
        if result.is_err() {
            self.state = State::Failed;
        }
        result
    }

    fn try_receive_round2(&mut self, peer: &Round2) -> Result<KeyConfirm, PakeError> {
        self.expect("the peer's round 2", |s| {
            matches!(s, State::AwaitRound2 { .. })
        })?;
        let State::AwaitRound2 { g3, g4 } = self.state else {
            return Err(PakeError::Aborted);
        };
        let b = wire::parse_point(&peer.ax, &peer.ay, "round 2 point A")?;
        let gen_b = ProjectivePoint::from(self.g1) + self.g2 + g3;
        verify_round2_proof(peer, &gen_b, &b)?;

        let xs = Zeroizing::new(self.x2 * self.s);
        // K = (B − xs·G4)·x2 = x2·B − (x2·xs)·G4, as one constant-time double multiplication.
        let k = ec::lincomb(&b.into(), &self.x2, &g4.into(), &-(self.x2 * *xs));
        if ec::is_identity(&k) {
            return Err(PakeError::IdentityPoint {
                field: "shared point K",
            });
        }
        let (kx, _) = ec::affine_xy(&k.to_affine());
        let key = session_key_from_kx(&kx);
        let our_mac = confirmation_mac(&key, [&self.g1, &self.g2, &g3, &g4]);
        let peer_mac = confirmation_mac(&key, [&g3, &g4, &self.g1, &self.g2]);
        self.state = State::KeyReady { key, peer_mac };
        Ok(KeyConfirm {
            session_key: ec::encode_base64(&our_mac),
        })
    }

    /// The 32-byte session key (an AES-256-GCM key), once the peer's round 2 is in.
    /// Use it only after [`Party::verify_confirmation`] succeeded.
    pub fn session_key(&self) -> Option<&[u8; SESSION_KEY_LEN]> {
        match &self.state {
            State::KeyReady { key, .. } => Some(key),
            _ => None,
        }
    }

    /// Checks the peer's key confirmation in constant time.
    pub fn verify_confirmation(&self, peer: &KeyConfirm) -> Result<(), PakeError> {
        let State::KeyReady { peer_mac, .. } = &self.state else {
            return Err(match self.state {
                State::Failed => PakeError::Aborted,
                _ => PakeError::OutOfOrder {
                    expected: self.state.name(),
                    got: "key confirmation",
                },
            });
        };
        let received = ec::decode_base64(&peer.session_key, 64, "key confirmation")?;
        if bool::from(received.as_slice().ct_eq(peer_mac)) {
            Ok(())
        } else {
            Err(PakeError::ConfirmationMismatch)
        }
    }

    fn expect(&self, got: &'static str, ok: impl Fn(&State) -> bool) -> Result<(), PakeError> {
        match &self.state {
            State::Failed => Err(PakeError::Aborted),
            s if ok(s) => Ok(()),
            s => Err(PakeError::OutOfOrder {
                expected: s.name(),
                got,
            }),
        }
    }
}

impl Round1 {
    /// Checks both proofs of a round 1 over the base point, as any observer can: what
    /// a captured session supports without secrets.
    pub fn verify_proofs(&self) -> Result<(), PakeError> {
        let (g3, g4) = parse_round1(self)?;
        verify_round1_proofs(self, &g3, &g4)
    }
}

impl Round2 {
    /// Checks the proof of a round 2 sent by the owner of `sender` to the owner of
    /// `receiver` (the generator is receiver's G1 + G2 + sender's G1).
    pub fn verify_proof(&self, sender: &Round1, receiver: &Round1) -> Result<(), PakeError> {
        let (s1, _) = parse_round1(sender)?;
        let (r1, r2) = parse_round1(receiver)?;
        let gen_b = ProjectivePoint::from(r1) + r2 + s1;
        let a = wire::parse_point(&self.ax, &self.ay, "round 2 point A")?;
        verify_round2_proof(self, &gen_b, &a)
    }
}

impl KeyConfirm {
    /// The confirmation the owner of `sender` sends to the owner of `receiver` once both
    /// hold `session_key`.
    pub fn expected(
        session_key: &[u8; SESSION_KEY_LEN],
        sender: &Round1,
        receiver: &Round1,
    ) -> Result<KeyConfirm, PakeError> {
        let (s1, s2) = parse_round1(sender)?;
        let (r1, r2) = parse_round1(receiver)?;
        let mac = confirmation_mac(session_key, [&s1, &s2, &r1, &r2]);
        Ok(KeyConfirm {
            session_key: ec::encode_base64(&mac),
        })
    }
}

fn parse_round1(msg: &Round1) -> Result<(AffinePoint, AffinePoint), PakeError> {
    let g_a = wire::parse_point(&msg.x1_gx, &msg.x1_gy, "round 1 point x1G")?;
    let g_b = wire::parse_point(&msg.x2_gx, &msg.x2_gy, "round 1 point x2G")?;
    Ok((g_a, g_b))
}

fn verify_round1_proofs(msg: &Round1, g3: &AffinePoint, g4: &AffinePoint) -> Result<(), PakeError> {
    if round1_proofs_hold(msg, g3, g4) {
        return Ok(());
    }
    // Something is wrong: the separate checks, in order, say what.
    let g = ProjectivePoint::GENERATOR;
    verify(
        &g,
        g3,
        &wire::parse_proof(&msg.x1_zkp, &wire::X1_ZKP)?,
        &wire::X1_ZKP,
    )?;
    verify(
        &g,
        g4,
        &wire::parse_proof(&msg.x2_zkp, &wire::X2_ZKP)?,
        &wire::X2_ZKP,
    )
}

/// Fast path of [`verify_round1_proofs`]: both proofs parse, both challenges match, and
/// both equations hold by one batched check. `false` decides nothing by itself.
fn round1_proofs_hold(msg: &Round1, g3: &AffinePoint, g4: &AffinePoint) -> bool {
    let claim = |y: &AffinePoint, proof: &Proof, names: &ProofNames| {
        let proof = wire::parse_proof(proof, names).ok()?;
        let c = challenge(&AffinePoint::GENERATOR, &proof.t, y);
        (c == proof.c).then(|| ec::GeneratorClaim {
            r: proof.r,
            c: ec::scalar_reduce_be(&c),
            y: *y,
            t: proof.t,
        })
    };
    match (
        claim(g3, &msg.x1_zkp, &wire::X1_ZKP),
        claim(g4, &msg.x2_zkp, &wire::X2_ZKP),
    ) {
        (Some(a), Some(b)) => ec::both_hold_public(&a, &b),
        _ => false,
    }
}

fn verify_round2_proof(
    msg: &Round2,
    gen_b: &ProjectivePoint,
    b: &AffinePoint,
) -> Result<(), PakeError> {
    if ec::is_identity(gen_b) {
        return Err(PakeError::IdentityPoint {
            field: "round 2 generator G1+G2+G3",
        });
    }
    let proof = wire::parse_proof(&msg.xs_zkp, &wire::XS_ZKP)?;
    verify(gen_b, b, &proof, &wire::XS_ZKP)
}

/// c = SHA-256 over the base64 strings of Gen, T and Y's coordinates.
fn challenge(base: &AffinePoint, t: &AffinePoint, y: &AffinePoint) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in [base, t, y] {
        let (px, py) = wire::encode_point(p);
        h.update(px.as_bytes());
        h.update(py.as_bytes());
    }
    h.finalize().into()
}

/// The proof of x for y = x·base, with nonce v and its commitment t = v·base.
fn prove_with_nonce(
    base: &AffinePoint,
    t: &AffinePoint,
    v: &Scalar,
    x: &Scalar,
    y: &AffinePoint,
) -> Proof {
    let c = challenge(base, t, y);
    let r = *v - ec::scalar_reduce_be(&c) * x;
    let (tx, ty) = wire::encode_point(t);
    Proof {
        tx,
        ty,
        r: wire::encode_int(&r.to_bytes().into()),
        c: wire::encode_int(&c),
    }
}

fn verify(
    base: &ProjectivePoint,
    y: &AffinePoint,
    proof: &ParsedProof,
    names: &ProofNames,
) -> Result<(), PakeError> {
    let base = ec::base_affine(base);
    let c = challenge(&base, &proof.t, y);
    if c != proof.c {
        return Err(PakeError::InvalidProof { field: names.proof });
    }
    let c = ec::scalar_reduce_be(&c);
    if ec::proof_holds(&base, &proof.r, y, &c, &proof.t) {
        Ok(())
    } else {
        Err(PakeError::InvalidProof { field: names.proof })
    }
}

/// session key = HMAC-SHA256(key = "kdfsecret", message = b64(K.x)).
fn session_key_from_kx(kx: &[u8; SCALAR_LEN]) -> Zeroizing<[u8; SESSION_KEY_LEN]> {
    let text = Zeroizing::new(wire::encode_int(kx));
    let mut mac = new_hmac(b"kdfsecret");
    mac.update(text.as_bytes());
    Zeroizing::new(mac.finalize().into_bytes().into())
}

/// The original program's confirmation MAC, with its swapped key and message.
fn confirmation_mac(key: &[u8; SESSION_KEY_LEN], points: [&AffinePoint; 4]) -> [u8; 32] {
    let mut kdf = new_hmac(b"kdfsecret");
    kdf.update(key);
    kdf.update(b"KC_1_U");
    let k_prime = Zeroizing::new(<[u8; 32]>::from(kdf.finalize().into_bytes()));

    let mut mac_key = Vec::with_capacity(16 + 4 * SCALAR_LEN);
    mac_key.extend_from_slice(b"KC_1_UAliceBob");
    for p in points {
        let (x, _) = ec::affine_xy(p);
        mac_key.extend_from_slice(wire::minimal(&x));
    }
    let mut mac = new_hmac(&mac_key);
    mac.update(k_prime.as_slice());
    mac.finalize().into_bytes().into()
}

// HMAC takes keys of any length: the error arm cannot happen.
#[allow(clippy::unreachable)]
fn new_hmac(key: &[u8]) -> HmacSha256 {
    <HmacSha256 as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
}
