//! P-256 helpers shared by both protocol versions: scalar reduction, point
//! validation and encoding, base64 with a size cap, and length-prefixed hashing.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use p256::elliptic_curve::BatchNormalize as _;
use p256::elliptic_curve::ops::{LinearCombination as _, MulByGeneratorVartime as _};
use p256::elliptic_curve::sec1::{Coordinates, FromSec1Point as _, ToSec1Point as _};
use p256::elliptic_curve::{Generate as _, Group as _, PrimeField as _};
use p256::{AffinePoint, FieldBytes, NonZeroScalar, ProjectivePoint, Scalar, Sec1Point};
use sha2::digest::Update;
use subtle::{ConditionallySelectable as _, ConstantTimeEq as _};
use zeroize::Zeroizing;

use crate::PakeError;

/// Length of a P-256 field element or scalar in bytes.
pub(crate) const SCALAR_LEN: usize = 32;
/// Length of a SEC1 compressed P-256 point.
pub(crate) const POINT_LEN: usize = 33;

/// Interprets big-endian bytes of any length as an integer and reduces it mod n.
///
/// Horner's rule in the scalar field: no branch or index depends on the value, so this
/// is as constant-time as the field arithmetic it uses.
pub(crate) fn scalar_reduce_be(bytes: &[u8]) -> Scalar {
    let base = Scalar::from(256u64);
    bytes.iter().fold(Scalar::ZERO, |acc, &b| {
        acc * base + Scalar::from(u64::from(b))
    })
}

/// Reads a canonical 32-byte big-endian scalar (strictly below n).
pub(crate) fn scalar_from_canonical(bytes: &[u8; SCALAR_LEN]) -> Option<Scalar> {
    Option::from(Scalar::from_repr(FieldBytes::from(*bytes)))
}

/// A uniformly random scalar in [1, n−1] from the operating system.
pub(crate) fn random_nonzero_scalar() -> Scalar {
    *NonZeroScalar::generate()
}

/// x·base in constant time; the base point goes through the precomputed table.
pub(crate) fn mul(base: &ProjectivePoint, x: &Scalar) -> ProjectivePoint {
    if *base == ProjectivePoint::GENERATOR {
        ProjectivePoint::mul_by_generator(x)
    } else {
        *base * x
    }
}

/// a·p + b·q in constant time (one interleaved ladder instead of two).
pub(crate) fn lincomb(
    p: &ProjectivePoint,
    a: &Scalar,
    q: &ProjectivePoint,
    b: &Scalar,
) -> ProjectivePoint {
    ProjectivePoint::lincomb(&[(*p, *a), (*q, *b)])
}

/// Whether r·base + c·y = t, in variable time: only for verifying proofs, where every
/// input is public.
pub(crate) fn proof_holds(
    base: &AffinePoint,
    r: &Scalar,
    y: &AffinePoint,
    c: &Scalar,
    t: &AffinePoint,
) -> bool {
    let sum = if *base == AffinePoint::GENERATOR {
        ProjectivePoint::mul_by_generator_and_mul_add_vartime(r, c, &ProjectivePoint::from(*y))
    } else {
        ProjectivePoint::lincomb_vartime(&[
            (ProjectivePoint::from(*base), *r),
            (ProjectivePoint::from(*y), *c),
        ])
    };
    sum == ProjectivePoint::from(*t)
}

/// k1·base and k2·base in constant time, sharing the work that depends only on the base.
///
/// A four-tooth comb: each scalar is cut into four 64-bit quarters, and step i adds the
/// precomputed sum of base·2^(64t) over the quarters t whose bit i is set. The 192
/// doublings that build the table are paid once for both scalars, so the pair costs
/// 320 doublings instead of 512. Every step does the same operations, and the table
/// entry is picked by a constant-time scan of all 16 entries.
pub(crate) fn mul_pair(base: &ProjectivePoint, k1: &Scalar, k2: &Scalar) -> [ProjectivePoint; 2] {
    const TEETH: usize = 4;
    const ROWS: usize = 256 / TEETH;
    let mut teeth = [*base; TEETH];
    for t in 1..TEETH {
        let mut p = teeth[t - 1];
        for _ in 0..ROWS {
            p = p.double();
        }
        teeth[t] = p;
    }
    // table[j] = Σ teeth[t] over the bits t set in j.
    let mut table = [ProjectivePoint::IDENTITY; 1 << TEETH];
    for (t, tooth) in teeth.iter().enumerate() {
        let half = 1 << t;
        table[half] = *tooth;
        for j in 1..half {
            table[half + j] = table[j] + tooth;
        }
    }
    [k1, k2].map(|k| {
        // Big-endian bytes: bit b of the scalar is bit b % 8 of byte 31 − b / 8.
        let bytes = Zeroizing::new(<[u8; SCALAR_LEN]>::from(k.to_bytes()));
        let bit = |b: usize| (bytes[SCALAR_LEN - 1 - b / 8] >> (b % 8)) & 1;
        let mut acc = ProjectivePoint::IDENTITY;
        for i in (0..ROWS).rev() {
            acc = acc.double();
            let index = (0..TEETH).fold(0u8, |index, t| index | (bit(t * ROWS + i) << t));
            let mut entry = ProjectivePoint::IDENTITY;
            for (j, candidate) in (0u8..).zip(table.iter()) {
                entry.conditional_assign(candidate, j.ct_eq(&index));
            }
            acc += entry;
        }
        acc
    })
}

/// One public Schnorr claim over the base point: r·G + c·Y = T.
pub(crate) struct GeneratorClaim {
    pub(crate) r: Scalar,
    pub(crate) c: Scalar,
    pub(crate) y: AffinePoint,
    pub(crate) t: AffinePoint,
}

/// Whether both claims hold, as one variable-time multi-scalar multiplication (every
/// input is public): with a fresh random weight w, (r₁ + w·r₂)·G + c₁·Y₁ + (w·c₂)·Y₂ −
/// w·T₂ = T₁. Two true claims always pass. If either is false, the check passes for at
/// most one w in n − 1, so a `true` here is as good as two separate checks; callers
/// treat `false` by running the separate checks, which name the proof that failed.
pub(crate) fn both_hold_public(a: &GeneratorClaim, b: &GeneratorClaim) -> bool {
    let w = random_nonzero_scalar();
    let sum = ProjectivePoint::lincomb_vartime(&[
        (ProjectivePoint::GENERATOR, a.r + w * b.r),
        (ProjectivePoint::from(a.y), a.c),
        (ProjectivePoint::from(b.y), w * b.c),
        (ProjectivePoint::from(b.t), -w),
    ]);
    sum == ProjectivePoint::from(a.t)
}

/// The affine form of a proof's base point, free for the generator.
pub(crate) fn base_affine(base: &ProjectivePoint) -> AffinePoint {
    if *base == ProjectivePoint::GENERATOR {
        AffinePoint::GENERATOR
    } else {
        base.to_affine()
    }
}

/// Affine forms of several points for the price of one field inversion.
pub(crate) fn to_affine_all<const N: usize>(points: &[ProjectivePoint; N]) -> [AffinePoint; N] {
    ProjectivePoint::batch_normalize(points)
}

pub(crate) fn is_identity(p: &ProjectivePoint) -> bool {
    bool::from(p.is_identity())
}

/// The affine x and y coordinates as 32 big-endian bytes each; (0, 0) for the
/// identity, which is how the reference represents it.
pub(crate) fn affine_xy(p: &AffinePoint) -> ([u8; SCALAR_LEN], [u8; SCALAR_LEN]) {
    let encoded = p.to_sec1_point(false);
    match encoded.coordinates() {
        Coordinates::Uncompressed { x, y } => ((*x).into(), (*y).into()),
        _ => ([0; SCALAR_LEN], [0; SCALAR_LEN]),
    }
}

/// Builds a point from affine coordinates, refusing the reference's (0, 0) identity
/// and anything not on the curve (including coordinates not below the field prime).
pub(crate) fn point_from_xy(
    x: &[u8; SCALAR_LEN],
    y: &[u8; SCALAR_LEN],
    field: &'static str,
) -> Result<AffinePoint, PakeError> {
    if x.iter().chain(y.iter()).all(|&b| b == 0) {
        return Err(PakeError::IdentityPoint { field });
    }
    let encoded =
        Sec1Point::from_affine_coordinates(&FieldBytes::from(*x), &FieldBytes::from(*y), false);
    Option::from(AffinePoint::from_sec1_point(&encoded)).ok_or(PakeError::PointNotOnCurve { field })
}

/// SEC1 compressed encoding of a point that is not the identity.
pub(crate) fn point_to_compressed(p: &AffinePoint) -> [u8; POINT_LEN] {
    let encoded = p.to_sec1_point(true);
    let mut out = [0u8; POINT_LEN];
    // Only the identity has a shorter encoding, and callers never encode it.
    if encoded.as_bytes().len() == POINT_LEN {
        out.copy_from_slice(encoded.as_bytes());
    }
    out
}

/// Decodes a SEC1 compressed point; the identity has no 33-byte encoding, so every
/// point this returns is a valid non-identity curve point.
pub(crate) fn point_from_compressed(
    bytes: &[u8; POINT_LEN],
    field: &'static str,
) -> Result<AffinePoint, PakeError> {
    if bytes[0] != 0x02 && bytes[0] != 0x03 {
        return Err(PakeError::PointNotOnCurve { field });
    }
    let encoded = Sec1Point::from_bytes(bytes).map_err(|_| PakeError::PointNotOnCurve { field })?;
    Option::from(AffinePoint::from_sec1_point(&encoded)).ok_or(PakeError::PointNotOnCurve { field })
}

/// Decodes standard padded base64, refusing oversized input before decoding it.
pub(crate) fn decode_base64(
    text: &str,
    max_len: usize,
    field: &'static str,
) -> Result<Vec<u8>, PakeError> {
    if text.len() > max_len {
        return Err(PakeError::TooLong {
            message: field,
            len: text.len(),
        });
    }
    STANDARD
        .decode(text)
        .map_err(|_| PakeError::Base64 { field })
}

pub(crate) fn encode_base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Feeds `data` preceded by its length as a 4-byte big-endian integer (RFC 8235 §4).
pub(crate) fn update_lp(h: &mut impl Update, data: &[u8]) {
    // Every element hashed here is a label, a point, a room name or a message of at
    // most a few KiB; saturating keeps the function total without a panic path.
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    h.update(&len.to_be_bytes());
    h.update(data);
}

/// Appends `data` preceded by its 4-byte big-endian length.
pub(crate) fn push_lp(out: &mut Vec<u8>, data: &[u8]) {
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(data);
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::elliptic_curve::ops::Reduce;

    #[test]
    fn reduce_matches_library_reduction_for_32_bytes() {
        let bytes = [0xffu8; 32];
        let ours = scalar_reduce_be(&bytes);
        let theirs = <Scalar as Reduce<FieldBytes>>::reduce(&FieldBytes::from(bytes));
        assert_eq!(ours, theirs);
        assert_eq!(scalar_reduce_be(&[0x07]), Scalar::from(7u64));
        assert_eq!(scalar_reduce_be(&[]), Scalar::ZERO);
    }

    #[test]
    fn mul_pair_matches_separate_multiplications() {
        let base = ProjectivePoint::GENERATOR * Scalar::from(0x1234_5678u64);
        let mut scalars = vec![Scalar::ZERO, Scalar::ONE, -Scalar::ONE, Scalar::from(2u64)];
        // Bits at every quarter boundary of the comb, and random values.
        for bit in [0u32, 63, 64, 127, 128, 191, 192, 255] {
            let mut bytes = [0u8; SCALAR_LEN];
            bytes[SCALAR_LEN - 1 - (bit / 8) as usize] = 1 << (bit % 8);
            scalars.push(scalar_reduce_be(&bytes));
        }
        scalars.extend((0..8).map(|_| random_nonzero_scalar()));
        for pair in scalars.windows(2) {
            let [p, q] = mul_pair(&base, &pair[0], &pair[1]);
            assert_eq!(p, base * pair[0]);
            assert_eq!(q, base * pair[1]);
        }
        let [p, q] = mul_pair(&ProjectivePoint::IDENTITY, &scalars[5], &scalars[9]);
        assert!(is_identity(&p) && is_identity(&q));
    }

    fn claim(x: &Scalar, v: &Scalar, c: &Scalar) -> GeneratorClaim {
        GeneratorClaim {
            r: *v - *c * x,
            c: *c,
            y: ProjectivePoint::mul_by_generator(x).to_affine(),
            t: ProjectivePoint::mul_by_generator(v).to_affine(),
        }
    }

    #[test]
    fn batched_claims_pass_only_when_both_hold() {
        let s = || random_nonzero_scalar();
        let (a, b) = (claim(&s(), &s(), &s()), claim(&s(), &s(), &s()));
        assert!(both_hold_public(&a, &b));
        assert!(both_hold_public(&b, &a));
        for tamper in 0..8 {
            let (mut a, mut b) = (claim(&s(), &s(), &s()), claim(&s(), &s(), &s()));
            let target = if tamper < 4 { &mut a } else { &mut b };
            match tamper % 4 {
                0 => target.r += Scalar::ONE,
                1 => target.c += Scalar::ONE,
                2 => {
                    target.y =
                        (ProjectivePoint::from(target.y) + ProjectivePoint::GENERATOR).to_affine()
                }
                _ => target.t = -target.t,
            }
            assert!(!both_hold_public(&a, &b), "tamper {tamper}");
        }
        // Two false claims whose errors cancel without the random weight.
        let (mut a, mut b) = (claim(&s(), &s(), &s()), claim(&s(), &s(), &s()));
        a.t = (ProjectivePoint::from(a.t) + ProjectivePoint::GENERATOR).to_affine();
        b.t = (ProjectivePoint::from(b.t) - ProjectivePoint::GENERATOR).to_affine();
        assert!(!both_hold_public(&a, &b));
    }

    #[test]
    fn compressed_round_trip_and_rejections() {
        let p = (ProjectivePoint::GENERATOR * Scalar::from(5u64)).to_affine();
        let bytes = point_to_compressed(&p);
        assert_eq!(point_from_compressed(&bytes, "p").unwrap(), p);
        let mut bad = bytes;
        bad[0] = 0x04;
        assert!(point_from_compressed(&bad, "p").is_err());
        // x = p (the field prime) is not canonical.
        let mut over = [0xffu8; 33];
        over[0] = 0x02;
        assert!(point_from_compressed(&over, "p").is_err());
    }

    #[test]
    fn xy_rejects_identity_and_off_curve() {
        let zero = [0u8; 32];
        assert_eq!(
            point_from_xy(&zero, &zero, "G4"),
            Err(PakeError::IdentityPoint { field: "G4" })
        );
        let (x, mut y) = affine_xy(&AffinePoint::GENERATOR);
        assert!(point_from_xy(&x, &y, "G").is_ok());
        y[31] ^= 1;
        assert_eq!(
            point_from_xy(&x, &y, "G"),
            Err(PakeError::PointNotOnCurve { field: "G" })
        );
    }
}
