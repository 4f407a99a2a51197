//! Attack and misuse tests for yakk/1: each forged message must end in a typed error
//! and leave the victim without a key.

use super::*;

fn point(k: u64) -> AffinePoint {
    (ProjectivePoint::GENERATOR * Scalar::from(k)).to_affine()
}

/// A proof for Y = x·base with a chosen nonce, as an attacker would build it.
fn forged_proof(base: &ProjectivePoint, x: &Scalar, y_for_hash: &AffinePoint, v: u64) -> Proof {
    let v = Scalar::from(v);
    let t = (*base * v).to_affine();
    let c = challenge(&base.to_affine(), &t, y_for_hash);
    let r = v - ec::scalar_reduce_be(&c) * x;
    let (tx, ty) = wire::encode_point(&t);
    Proof {
        tx,
        ty,
        r: wire::encode_int(&r.to_bytes().into()),
        c: wire::encode_int(&c),
    }
}

/// An honest-looking round 1 from an attacker who knows x3 and x4 but not the password.
fn attacker_round1(x3: u64, x4: u64) -> Round1 {
    let g = ProjectivePoint::GENERATOR;
    let (g3, g4) = (point(x3), point(x4));
    let (x1_gx, x1_gy) = wire::encode_point(&g3);
    let (x2_gx, x2_gy) = wire::encode_point(&g4);
    Round1 {
        x1_gx,
        x1_gy,
        x2_gx,
        x2_gy,
        x1_zkp: forged_proof(&g, &Scalar::from(x3), &g3, 1234),
        x2_zkp: forged_proof(&g, &Scalar::from(x4), &g4, 5678),
    }
}

fn exchange(pa: &[u8], pb: &[u8]) -> (Party, Party, KeyConfirm, KeyConfirm) {
    let mut a = Party::new(pa);
    let mut b = Party::new(pb);
    let a2 = a.receive_round1(&b.round1()).unwrap();
    let b2 = b.receive_round1(&a.round1()).unwrap();
    let ac = a.receive_round2(&b2).unwrap();
    let bc = b.receive_round2(&a2).unwrap();
    (a, b, ac, bc)
}

#[test]
fn honest_exchange_agrees() {
    let (a, b, ac, bc) = exchange(b"hunter2", b"hunter2");
    assert_eq!(a.session_key(), b.session_key());
    assert!(a.session_key().is_some());
    a.verify_confirmation(&bc).unwrap();
    b.verify_confirmation(&ac).unwrap();
}

#[test]
fn wrong_password_fails_confirmation_both_ways() {
    let (a, b, ac, bc) = exchange(b"hunter2", b"hunter3");
    assert_ne!(a.session_key(), b.session_key());
    assert_eq!(
        a.verify_confirmation(&bc),
        Err(PakeError::ConfirmationMismatch)
    );
    assert_eq!(
        b.verify_confirmation(&ac),
        Err(PakeError::ConfirmationMismatch)
    );
}

/// The published attack on the original program: (0,0) as G4 with a proof that the original program
/// accepts (T = r·G + c·(0,0) holds for T = v·G, r = v), so that the victim's key would
/// not depend on the password.
#[test]
fn zero_point_as_g4_is_refused() {
    let g = ProjectivePoint::GENERATOR;
    let identity = AffinePoint::IDENTITY;
    let mut forged = attacker_round1(11, 13);
    for zero in ["", "AA=="] {
        forged.x2_gx = zero.to_owned();
        forged.x2_gy = zero.to_owned();
        // With Y the identity, r = v makes the original program's equation hold.
        forged.x2_zkp = forged_proof(&g, &Scalar::ZERO, &identity, 77);
        let t = wire::parse_point(&forged.x2_zkp.tx, &forged.x2_zkp.ty, "T").unwrap();
        let r = wire::parse_int(&forged.x2_zkp.r, "r").unwrap();
        assert_eq!((g * ec::scalar_reduce_be(&r)).to_affine(), t);

        let mut victim = Party::new(b"correct horse");
        assert_eq!(
            victim.receive_round1(&forged),
            Err(PakeError::IdentityPoint {
                field: "round 1 point x2G"
            })
        );
        assert!(victim.session_key().is_none());
    }
}

#[test]
fn zero_point_as_b_is_refused() {
    let mut victim = Party::new(b"correct horse");
    let forged1 = attacker_round1(11, 13);
    victim.receive_round1(&forged1).unwrap();
    // The victim verifies over its G1 + G2 + the attacker's G3.
    let gen_b = ProjectivePoint::from(victim.g1) + victim.g2 + point(11);
    let forged2 = Round2 {
        ax: String::new(),
        ay: String::new(),
        xs_zkp: forged_proof(&gen_b, &Scalar::ZERO, &AffinePoint::IDENTITY, 99),
    };
    assert_eq!(
        victim.receive_round2(&forged2),
        Err(PakeError::IdentityPoint {
            field: "round 2 point A"
        })
    );
    assert!(victim.session_key().is_none());
    assert_eq!(
        victim.verify_confirmation(&KeyConfirm {
            session_key: String::new()
        }),
        Err(PakeError::Aborted)
    );
}

#[test]
fn off_curve_points_are_refused() {
    let honest = Party::new(b"pw").round1();
    let mut victim = Party::new(b"pw");
    let mut bad = honest.clone();
    let mut y = wire::parse_int(&bad.x1_gy, "y").unwrap();
    y[31] ^= 1;
    bad.x1_gy = wire::encode_int(&y);
    assert_eq!(
        victim.receive_round1(&bad),
        Err(PakeError::PointNotOnCurve {
            field: "round 1 point x1G"
        })
    );
    assert!(victim.session_key().is_none());

    let mut victim = Party::new(b"pw");
    let mut bad = honest;
    let mut ty = wire::parse_int(&bad.x2_zkp.ty, "y").unwrap();
    ty[0] ^= 0x80;
    bad.x2_zkp.ty = wire::encode_int(&ty);
    assert_eq!(
        victim.receive_round1(&bad),
        Err(PakeError::PointNotOnCurve {
            field: "round 1 point x2ZKP.T"
        })
    );
}

#[test]
fn identity_commitment_is_refused() {
    let mut bad = Party::new(b"pw").round1();
    bad.x1_zkp.tx = String::new();
    bad.x1_zkp.ty = String::new();
    let mut victim = Party::new(b"pw");
    assert_eq!(
        victim.receive_round1(&bad),
        Err(PakeError::IdentityPoint {
            field: "round 1 point x1ZKP.T"
        })
    );
    assert!(victim.session_key().is_none());
}

#[test]
fn reflected_round1_is_refused() {
    let mut victim = Party::new(b"pw");
    let own = victim.round1();
    assert_eq!(victim.receive_round1(&own), Err(PakeError::Reflected));
    assert!(victim.session_key().is_none());

    // Half a reflection: the attacker's G3 with our own G1 as G4.
    let mut victim = Party::new(b"pw");
    let own = victim.round1();
    let mut mixed = attacker_round1(5, 6);
    mixed.x2_gx = own.x1_gx;
    mixed.x2_gy = own.x1_gy;
    mixed.x2_zkp = own.x1_zkp;
    assert_eq!(victim.receive_round1(&mixed), Err(PakeError::Reflected));
}

#[test]
fn tampered_proofs_are_refused() {
    let honest = Party::new(b"pw").round1();
    let mut bad = honest.clone();
    let mut r = wire::parse_int(&bad.x1_zkp.r, "r").unwrap();
    r[31] ^= 1;
    bad.x1_zkp.r = wire::encode_int(&r);
    assert_eq!(
        Party::new(b"pw").receive_round1(&bad),
        Err(PakeError::InvalidProof {
            field: "round 1 proof x1ZKP"
        })
    );
    let mut bad = honest;
    bad.x2_zkp.c = wire::encode_int(&[7u8; 32]);
    assert_eq!(
        Party::new(b"pw").receive_round1(&bad),
        Err(PakeError::InvalidProof {
            field: "round 1 proof x2ZKP"
        })
    );
}

#[test]
fn out_of_order_and_after_failure() {
    let mut a = Party::new(b"pw");
    let b = Party::new(b"pw");
    let confirm = KeyConfirm {
        session_key: String::new(),
    };
    assert!(matches!(
        a.verify_confirmation(&confirm),
        Err(PakeError::OutOfOrder { .. })
    ));
    let mut b2 = Party::new(b"pw");
    let round2 = b2.receive_round1(&a.round1()).unwrap();
    let mut early = Party::new(b"pw");
    assert!(matches!(
        early.receive_round2(&round2),
        Err(PakeError::OutOfOrder { .. })
    ));
    assert_eq!(early.receive_round1(&b.round1()), Err(PakeError::Aborted));
    a.receive_round1(&b.round1()).unwrap();
    assert!(matches!(
        a.receive_round1(&b.round1()),
        Err(PakeError::OutOfOrder { .. })
    ));
}

#[test]
fn zero_secrets_are_refused() {
    assert_eq!(
        Party::with_secrets(b"pw", &[0], &[1]).unwrap_err(),
        PakeError::InvalidSecret { field: "x1" }
    );
    assert_eq!(
        Party::with_secrets(b"pw", &[1], &[]).unwrap_err(),
        PakeError::InvalidSecret { field: "x2" }
    );
}
