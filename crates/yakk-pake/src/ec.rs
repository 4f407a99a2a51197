//! P-256 helpers shared by both protocol versions: scalar reduction, point
//! validation and encoding, base64 with a size cap, and length-prefixed hashing.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use p256::elliptic_curve::rand_core::OsRng;
use p256::elliptic_curve::sec1::{Coordinates, FromEncodedPoint as _, ToEncodedPoint as _};
use p256::elliptic_curve::{Group as _, PrimeField as _};
use p256::{AffinePoint, EncodedPoint, FieldBytes, NonZeroScalar, ProjectivePoint, Scalar};
use sha2::digest::Update;
use std::sync::OnceLock;
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
    *NonZeroScalar::random(&mut OsRng)
}

/// The scalar's 32 big-endian bytes, wiped when dropped.
fn secret_bytes(k: &Scalar) -> Zeroizing<[u8; SCALAR_LEN]> {
    Zeroizing::new(k.to_bytes().into())
}

/// Picks `table[index]` by reading every entry, so the memory access pattern does not
/// depend on the index.
fn select(table: &[ProjectivePoint; 16], index: u8) -> ProjectivePoint {
    let mut entry = ProjectivePoint::IDENTITY;
    for (j, candidate) in (0u8..).zip(table.iter()) {
        entry.conditional_assign(candidate, j.ct_eq(&index));
    }
    entry
}

/// An eight-tooth comb for one base point, in two tables of four teeth: `mul` computes
/// k·base in constant time with 32 doublings and 64 additions.
///
/// Tooth t is base·2^(32t). Step i, from 31 down to 0, doubles the sum so far and adds,
/// from each table, the precomputed sum of its teeth t whose scalar bit 32t + i is set.
/// Building the tables costs 224 doublings and 22 additions, paid once per base. Every
/// step does the same operations, and each table entry is picked by a constant-time
/// scan of all 16.
struct Comb {
    tables: [[ProjectivePoint; 16]; 2],
}

impl Comb {
    const TEETH: usize = 8;
    const ROWS: usize = 256 / Self::TEETH;

    fn new(base: &ProjectivePoint) -> Self {
        let mut teeth = [*base; Self::TEETH];
        for t in 1..Self::TEETH {
            let mut p = teeth[t - 1];
            for _ in 0..Self::ROWS {
                p = p.double();
            }
            teeth[t] = p;
        }
        // tables[k][j] = Σ teeth[4k + b] over the bits b set in j.
        let tables = [0, 1].map(|k| {
            let mut table = [ProjectivePoint::IDENTITY; 16];
            for (b, tooth) in teeth[4 * k..4 * k + 4].iter().enumerate() {
                let half = 1 << b;
                table[half] = *tooth;
                for j in 1..half {
                    table[half + j] = table[j] + tooth;
                }
            }
            table
        });
        Self { tables }
    }

    fn mul(&self, k: &Scalar) -> ProjectivePoint {
        let bytes = secret_bytes(k);
        // Big-endian bytes: bit b of the scalar is bit b % 8 of byte 31 − b / 8.
        let bit = |b: usize| (bytes[SCALAR_LEN - 1 - b / 8] >> (b % 8)) & 1;
        let mut acc = ProjectivePoint::IDENTITY;
        for i in (0..Self::ROWS).rev() {
            acc = acc.double();
            for (k, table) in self.tables.iter().enumerate() {
                let index = (0..4).fold(0u8, |index, b| {
                    index | (bit((4 * k + b) * Self::ROWS + i) << b)
                });
                acc += select(table, index);
            }
        }
        acc
    }
}

/// The comb of the base point, built on first use.
fn generator_comb() -> &'static Comb {
    static COMB: OnceLock<Comb> = OnceLock::new();
    COMB.get_or_init(|| Comb::new(&ProjectivePoint::GENERATOR))
}

/// x·base in constant time; the base point goes through a precomputed comb.
pub(crate) fn mul(base: &ProjectivePoint, x: &Scalar) -> ProjectivePoint {
    if *base == ProjectivePoint::GENERATOR {
        generator_comb().mul(x)
    } else {
        *base * x
    }
}

/// The multiples 0·p, 1·p, …, 15·p.
fn multiples(p: &ProjectivePoint) -> [ProjectivePoint; 16] {
    let mut table = [ProjectivePoint::IDENTITY; 16];
    for i in 1..16 {
        table[i] = if i % 2 == 0 {
            table[i / 2].double()
        } else {
            table[i - 1] + p
        };
    }
    table
}

/// a·p + b·q in constant time: one run of 4-bit windows over both scalars, sharing the
/// 252 doublings, with table entries picked by constant-time scans.
pub(crate) fn lincomb(
    p: &ProjectivePoint,
    a: &Scalar,
    q: &ProjectivePoint,
    b: &Scalar,
) -> ProjectivePoint {
    let tables = [multiples(p), multiples(q)];
    let scalars = [secret_bytes(a), secret_bytes(b)];
    let mut acc = ProjectivePoint::IDENTITY;
    for (i, byte) in (0..SCALAR_LEN).enumerate() {
        for shift in [4u8, 0] {
            if i > 0 || shift == 0 {
                acc = acc.double().double().double().double();
            }
            for (table, bytes) in tables.iter().zip(&scalars) {
                acc += select(table, (bytes[byte] >> shift) & 0x0f);
            }
        }
    }
    acc
}

/// Width-5 non-adjacent form of a public scalar: digits d_i, each 0 or odd with
/// |d_i| < 16, such that k = Σ d_i·2^i. Variable time: only for public scalars.
fn wnaf(k: &Scalar) -> [i8; 257] {
    let bytes: [u8; SCALAR_LEN] = k.to_bytes().into();
    // Little-endian 64-bit limbs with one spare limb for the carries.
    let mut limbs = [0u64; 5];
    for (i, chunk) in bytes.rchunks_exact(8).enumerate() {
        limbs[i] = u64::from_be_bytes(chunk.try_into().unwrap_or([0; 8]));
    }
    let mut digits = [0i8; 257];
    for digit in digits.iter_mut() {
        if limbs.iter().all(|&l| l == 0) {
            break;
        }
        if limbs[0] & 1 == 1 {
            let low = (limbs[0] & 0x1f) as i8;
            let d = if low >= 16 { low - 32 } else { low };
            *digit = d;
            // k −= d, which leaves k divisible by 32.
            if d > 0 {
                let mut borrow = u64::from(d.unsigned_abs());
                for limb in limbs.iter_mut() {
                    let (v, o) = limb.overflowing_sub(borrow);
                    *limb = v;
                    borrow = u64::from(o);
                }
            } else {
                let mut carry = u64::from(d.unsigned_abs());
                for limb in limbs.iter_mut() {
                    let (v, o) = limb.overflowing_add(carry);
                    *limb = v;
                    carry = u64::from(o);
                }
            }
        }
        for i in 0..limbs.len() {
            let next = limbs.get(i + 1).copied().unwrap_or(0);
            limbs[i] = (limbs[i] >> 1) | (next << 63);
        }
    }
    digits
}

/// Σ kᵢ·Pᵢ in variable time (width-5 NAF, shared doublings): only where every point and
/// scalar is public, as when verifying a proof.
pub(crate) fn lincomb_vartime(terms: &[(ProjectivePoint, Scalar)]) -> ProjectivePoint {
    // Odd multiples 1·P, 3·P, …, 15·P of each point.
    let odd: Vec<[ProjectivePoint; 8]> = terms
        .iter()
        .map(|(p, _)| {
            let twice = p.double();
            let mut table = [*p; 8];
            for i in 1..8 {
                table[i] = table[i - 1] + twice;
            }
            table
        })
        .collect();
    let digits: Vec<[i8; 257]> = terms.iter().map(|(_, k)| wnaf(k)).collect();
    let top = digits
        .iter()
        .filter_map(|d| d.iter().rposition(|&x| x != 0))
        .max();
    let mut acc = ProjectivePoint::IDENTITY;
    let Some(top) = top else {
        return acc;
    };
    for i in (0..=top).rev() {
        acc = acc.double();
        for (table, d) in odd.iter().zip(&digits) {
            let d = d[i];
            let entry = &table[usize::from(d.unsigned_abs() / 2)];
            if d > 0 {
                acc += entry;
            } else if d < 0 {
                acc -= entry;
            }
        }
    }
    acc
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
    let sum = lincomb_vartime(&[
        (ProjectivePoint::from(*base), *r),
        (ProjectivePoint::from(*y), *c),
    ]);
    sum == ProjectivePoint::from(*t)
}

/// k1·base and k2·base in constant time, sharing the comb tables, which depend only on
/// the base: 288 doublings for the pair instead of 512.
pub(crate) fn mul_pair(base: &ProjectivePoint, k1: &Scalar, k2: &Scalar) -> [ProjectivePoint; 2] {
    let comb = Comb::new(base);
    [comb.mul(k1), comb.mul(k2)]
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
    let sum = lincomb_vartime(&[
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

/// Affine forms of several points.
pub(crate) fn to_affine_all<const N: usize>(points: &[ProjectivePoint; N]) -> [AffinePoint; N] {
    points.map(|p| p.to_affine())
}

pub(crate) fn is_identity(p: &ProjectivePoint) -> bool {
    bool::from(p.is_identity())
}

/// The affine x and y coordinates as 32 big-endian bytes each; (0, 0) for the
/// identity, which is how the original program represents it.
pub(crate) fn affine_xy(p: &AffinePoint) -> ([u8; SCALAR_LEN], [u8; SCALAR_LEN]) {
    let encoded = p.to_encoded_point(false);
    match encoded.coordinates() {
        Coordinates::Uncompressed { x, y } => ((*x).into(), (*y).into()),
        _ => ([0; SCALAR_LEN], [0; SCALAR_LEN]),
    }
}

/// Builds a point from affine coordinates, refusing the original program's (0, 0) identity
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
        EncodedPoint::from_affine_coordinates(&FieldBytes::from(*x), &FieldBytes::from(*y), false);
    Option::from(AffinePoint::from_encoded_point(&encoded))
        .ok_or(PakeError::PointNotOnCurve { field })
}

/// SEC1 compressed encoding of a point that is not the identity.
pub(crate) fn point_to_compressed(p: &AffinePoint) -> [u8; POINT_LEN] {
    let encoded = p.to_encoded_point(true);
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
    let encoded =
        EncodedPoint::from_bytes(bytes).map_err(|_| PakeError::PointNotOnCurve { field })?;
    Option::from(AffinePoint::from_encoded_point(&encoded))
        .ok_or(PakeError::PointNotOnCurve { field })
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
    use p256::elliptic_curve::bigint::U256;
    use p256::elliptic_curve::ops::Reduce;

    #[test]
    fn reduce_matches_library_reduction_for_32_bytes() {
        let bytes = [0xffu8; 32];
        let ours = scalar_reduce_be(&bytes);
        let theirs = <Scalar as Reduce<U256>>::reduce_bytes(&FieldBytes::from(bytes));
        assert_eq!(ours, theirs);
        assert_eq!(scalar_reduce_be(&[0x07]), Scalar::from(7u64));
        assert_eq!(scalar_reduce_be(&[]), Scalar::ZERO);
    }

    #[test]
    fn mul_pair_matches_separate_multiplications() {
        let base = ProjectivePoint::GENERATOR * Scalar::from(0x1234_5678u64);
        let scalars = awkward_scalars();
        for pair in scalars.windows(2) {
            let [p, q] = mul_pair(&base, &pair[0], &pair[1]);
            assert_eq!(p, base * pair[0]);
            assert_eq!(q, base * pair[1]);
        }
        let [p, q] = mul_pair(&ProjectivePoint::IDENTITY, &scalars[5], &scalars[9]);
        assert!(is_identity(&p) && is_identity(&q));
    }

    /// Scalars at the edges of every window and comb quarter, plus random ones.
    fn awkward_scalars() -> Vec<Scalar> {
        let mut scalars = vec![
            Scalar::ZERO,
            Scalar::ONE,
            -Scalar::ONE,
            Scalar::from(2u64),
            Scalar::from(15u64),
            Scalar::from(16u64),
            Scalar::from(31u64),
            -Scalar::from(16u64),
        ];
        for bit in [
            0u32, 3, 4, 31, 32, 63, 64, 95, 96, 127, 128, 159, 160, 191, 192, 223, 224, 251, 252,
            255,
        ] {
            let mut bytes = [0u8; SCALAR_LEN];
            bytes[SCALAR_LEN - 1 - (bit / 8) as usize] = 1 << (bit % 8);
            scalars.push(scalar_reduce_be(&bytes));
            scalars.push(scalar_reduce_be(&bytes) - Scalar::ONE);
        }
        scalars.extend((0..8).map(|_| random_nonzero_scalar()));
        scalars
    }

    #[test]
    fn generator_comb_matches_plain_multiplication() {
        for k in awkward_scalars() {
            assert_eq!(
                mul(&ProjectivePoint::GENERATOR, &k),
                ProjectivePoint::GENERATOR * k
            );
        }
    }

    #[test]
    fn lincomb_matches_separate_multiplications() {
        let p = ProjectivePoint::GENERATOR * Scalar::from(0xfeed_u64);
        let q = ProjectivePoint::GENERATOR * random_nonzero_scalar();
        let scalars = awkward_scalars();
        for pair in scalars.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            assert_eq!(lincomb(&p, &a, &q, &b), p * a + q * b);
            assert_eq!(lincomb(&p, &a, &p, &b), p * (a + b));
        }
        let id = ProjectivePoint::IDENTITY;
        assert_eq!(lincomb(&id, &scalars[9], &q, &scalars[10]), q * scalars[10]);
    }

    #[test]
    fn wnaf_digits_are_odd_small_and_sum_to_the_scalar() {
        for k in awkward_scalars() {
            let digits = wnaf(&k);
            let mut sum = Scalar::ZERO;
            let mut last_nonzero: Option<usize> = None;
            for (i, &d) in digits.iter().enumerate().rev() {
                sum = sum + sum;
                if d != 0 {
                    assert!(d % 2 != 0 && d.unsigned_abs() < 16, "digit {d} at {i}");
                    if let Some(j) = last_nonzero {
                        assert!(j - i >= 5, "nonzero digits at {j} and {i} too close");
                    }
                    last_nonzero = Some(i);
                    let magnitude = Scalar::from(u64::from(d.unsigned_abs()));
                    sum += if d > 0 { magnitude } else { -magnitude };
                }
            }
            assert_eq!(sum, k);
        }
    }

    #[test]
    fn lincomb_vartime_matches_separate_multiplications() {
        let points: Vec<ProjectivePoint> = (1..=4u64)
            .map(|i| ProjectivePoint::GENERATOR * (random_nonzero_scalar() + Scalar::from(i)))
            .collect();
        let scalars = awkward_scalars();
        for window in scalars.windows(4) {
            let terms: Vec<(ProjectivePoint, Scalar)> =
                points.iter().copied().zip(window.iter().copied()).collect();
            let expected = terms
                .iter()
                .fold(ProjectivePoint::IDENTITY, |acc, (p, k)| acc + *p * k);
            assert_eq!(lincomb_vartime(&terms), expected);
        }
        assert!(is_identity(&lincomb_vartime(&[])));
        assert!(is_identity(&lincomb_vartime(&[(points[0], Scalar::ZERO)])));
    }

    fn claim(x: &Scalar, v: &Scalar, c: &Scalar) -> GeneratorClaim {
        GeneratorClaim {
            r: *v - *c * x,
            c: *c,
            y: mul(&ProjectivePoint::GENERATOR, x).to_affine(),
            t: mul(&ProjectivePoint::GENERATOR, v).to_affine(),
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
