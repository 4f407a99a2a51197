//! The yakk/2 derivations that involve no curve secret of the caller's: the password
//! scalar, the Schnorr challenge, the transcript hash, the confirmation MAC and the
//! HKDF key schedule that yields [`SessionKeys`].
//!
//! Every hashed element is length-prefixed (4-byte big-endian length, RFC 8235 §4) and
//! every label starts with "yakk/2", so no input of one derivation can be read as the
//! input of another. `docs/yakk2-pake.md` restates each one byte for byte.

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use p256::elliptic_curve::Field as _;
use p256::{AffinePoint, Scalar};
use sha2::{Digest, Sha256};
use subtle::ConditionallySelectable as _;
use zeroize::Zeroizing;

use super::Role;
use crate::ec::{self, update_lp};

/// The protocol version string bound into proofs and confirmations.
pub(crate) const VERSION: &[u8] = b"yakk/2";
const PASSWORD_SALT: &[u8] = b"yakk/2 password salt";
const PASSWORD_INFO: &[u8] = b"yakk/2 password to scalar";
const TRANSCRIPT_LABEL: &[u8] = b"yakk/2 transcript";
const KC_LABEL: &[u8] = b"yakk/2 key confirmation";
const SIGNAL_OWNER_TO_JOINER: &[u8] = b"yakk/2 signal owner to joiner";
const SIGNAL_JOINER_TO_OWNER: &[u8] = b"yakk/2 signal joiner to owner";
const EXPORTER_LABEL: &[u8] = b"yakk/2 exporter";

/// Length of every derived key.
pub const KEY_LEN: usize = 32;

/// s = (OS2IP(HKDF-SHA256(salt, password, info, 48 bytes)) mod n), with 0 mapped to 1.
///
/// 48 bytes make the bias of the reduction about 2^-128; the value 0 has probability
/// about 2^-256 and is replaced by 1 in constant time, so s is always in [1, n−1].
pub(crate) fn password_scalar(password: &[u8]) -> Scalar {
    let mut okm = Zeroizing::new([0u8; 48]);
    let hk = Hkdf::<Sha256>::new(Some(PASSWORD_SALT), password);
    // 48 bytes is far below HKDF-SHA256's 8160-byte limit; the error arm cannot happen.
    let _ = hk.expand(PASSWORD_INFO, okm.as_mut_slice());
    let s = ec::scalar_reduce_be(okm.as_slice());
    Scalar::conditional_select(&s, &Scalar::ONE, s.is_zero())
}

/// c = SHA-256(LP(base) ‖ LP(V) ‖ LP(X) ‖ LP(signer) ‖ LP("yakk/2") ‖ LP(room)) mod n:
/// RFC 8235's H(g ‖ V ‖ A ‖ UserID ‖ OtherInfo), with points SEC1-compressed.
pub(crate) fn challenge(
    base: &AffinePoint,
    v: &AffinePoint,
    x: &AffinePoint,
    signer: Role,
    room: &[u8],
) -> Scalar {
    let mut h = Sha256::new();
    update_lp(&mut h, &ec::point_to_compressed(base));
    update_lp(&mut h, &ec::point_to_compressed(v));
    update_lp(&mut h, &ec::point_to_compressed(x));
    update_lp(&mut h, signer.id());
    update_lp(&mut h, VERSION);
    update_lp(&mut h, room);
    ec::scalar_reduce_be(&h.finalize())
}

/// TH = SHA-256(LP("yakk/2 transcript") ‖ LP(room) ‖ LP(owner round 1) ‖
/// LP(joiner round 1) ‖ LP(owner round 2) ‖ LP(joiner round 2)), messages as encoded.
pub(crate) fn transcript_hash(room: &[u8], messages: [&[u8]; 4]) -> [u8; 32] {
    let mut h = Sha256::new();
    update_lp(&mut h, TRANSCRIPT_LABEL);
    update_lp(&mut h, room);
    for m in messages {
        update_lp(&mut h, m);
    }
    h.finalize().into()
}

/// The keys one side holds once the exchange is confirmed.
#[cfg_attr(feature = "fuzzing", derive(Clone))]
pub struct SessionKeys {
    role: Role,
    prk: Zeroizing<[u8; KEY_LEN]>,
    send: Zeroizing<[u8; KEY_LEN]>,
    recv: Zeroizing<[u8; KEY_LEN]>,
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionKeys")
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// Expands `PRK` with `info = LP(label) [‖ LP(context)]` into 32 bytes.
fn expand(prk: &[u8; KEY_LEN], label: &[u8], context: Option<&[u8]>) -> Zeroizing<[u8; KEY_LEN]> {
    let mut info = Vec::with_capacity(8 + label.len() + context.map_or(0, <[u8]>::len));
    ec::push_lp(&mut info, label);
    if let Some(c) = context {
        ec::push_lp(&mut info, c);
    }
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    // A 32-byte PRK is always valid and 32 bytes of output are always available.
    if let Ok(hk) = Hkdf::<Sha256>::from_prk(prk) {
        let _ = hk.expand(&info, out.as_mut_slice());
    }
    out
}

impl SessionKeys {
    /// PRK = HKDF-Extract(salt = TH, IKM = x-coordinate of K).
    pub(crate) fn derive(
        role: Role,
        transcript_hash: &[u8; 32],
        kx: &[u8; KEY_LEN],
    ) -> SessionKeys {
        let (prk, _) = Hkdf::<Sha256>::extract(Some(transcript_hash), kx);
        let prk = Zeroizing::new(<[u8; KEY_LEN]>::from(prk));
        let o2j = expand(&prk, SIGNAL_OWNER_TO_JOINER, None);
        let j2o = expand(&prk, SIGNAL_JOINER_TO_OWNER, None);
        let (send, recv) = match role {
            Role::Owner => (o2j, j2o),
            Role::Joiner => (j2o, o2j),
        };
        SessionKeys {
            role,
            prk,
            send,
            recv,
        }
    }

    /// The key confirmation key k'.
    pub(crate) fn confirmation_key(&self) -> Zeroizing<[u8; KEY_LEN]> {
        expand(&self.prk, KC_LABEL, None)
    }

    /// The role these keys were derived for.
    pub fn role(&self) -> Role {
        self.role
    }

    /// AES-256-GCM key for the signalling payloads we send.
    pub fn signal_send_key(&self) -> &[u8; KEY_LEN] {
        &self.send
    }

    /// AES-256-GCM key for the signalling payloads the peer sends us.
    pub fn signal_recv_key(&self) -> &[u8; KEY_LEN] {
        &self.recv
    }

    /// A 32-byte key for a future purpose named by `label`; both sides get the same
    /// value for the same label, and different labels give independent keys.
    pub fn exporter(&self, label: &[u8]) -> [u8; KEY_LEN] {
        *expand(&self.prk, EXPORTER_LABEL, Some(label))
    }
}

/// HMAC-SHA256(k', LP("KC_1_U") ‖ LP(sender id) ‖ LP(receiver id) ‖ LP(sender G1) ‖
/// LP(sender G2) ‖ LP(receiver G1) ‖ LP(receiver G2) ‖ LP("yakk/2") ‖ LP(room)):
/// RFC 8236 §5's MacTag, extended with the version and the room.
pub(crate) fn confirmation_mac(
    kc_key: &[u8; KEY_LEN],
    sender: Role,
    sender_points: [&AffinePoint; 2],
    receiver_points: [&AffinePoint; 2],
    room: &[u8],
) -> [u8; 32] {
    // HMAC takes keys of any length: the error arm cannot happen.
    #[allow(clippy::unreachable)]
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(kc_key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    update_lp(&mut mac, b"KC_1_U");
    update_lp(&mut mac, sender.id());
    update_lp(&mut mac, sender.peer().id());
    for p in sender_points.into_iter().chain(receiver_points) {
        update_lp(&mut mac, &ec::point_to_compressed(p));
    }
    update_lp(&mut mac, VERSION);
    update_lp(&mut mac, room);
    mac.finalize().into_bytes().into()
}
