/**
 * yakk/2 J-PAKE (RFC 8236 on P-256 with RFC 8235 Schnorr proofs), byte for byte as
 * docs/yakk2-pake.md and crates/yakk-pake/src/v2 define it: the password scalar, the
 * three messages, every check on receipt, the key confirmation in the order of §6a
 * (the joiner confirms first; the owner judges before it sends its own) and the HKDF
 * key schedule ({@link SessionKeys}).
 *
 * Point arithmetic is @noble/curves' P-256; hashes are @noble/hashes'. MACs are compared
 * in constant time. JavaScript BigInt arithmetic is not constant time; noble's scalar
 * multiplication is written to be as regular as the language allows.
 */

import { p256 } from "@noble/curves/nist.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { hmac } from "@noble/hashes/hmac.js";
import { expand, extract } from "@noble/hashes/hkdf.js";
import { randomBytes } from "@noble/hashes/utils.js";

import {
  base64Decode,
  base64Encode,
  bigIntToBytes,
  bytesToBigInt,
  concat,
  constantTimeEqual,
  lp,
  lpAll,
  utf8,
} from "./bytes.js";

const Point = p256.Point;
type Point = InstanceType<typeof p256.Point>;
const N: bigint = Point.Fn.ORDER;
const P_FIELD: bigint = Point.Fp.ORDER;

/** Type byte of round 1. */
export const ROUND1_TYPE = 0x01;
/** Type byte of round 2. */
export const ROUND2_TYPE = 0x02;
/** Type byte of the key confirmation. */
export const CONFIRM_TYPE = 0x03;
/** Round 1: type, G1, V1, r1, G2, V2, r2. */
export const ROUND1_LEN = 197;
/** Round 2: type, A, V, r. */
export const ROUND2_LEN = 99;
/** Key confirmation: type, MAC. */
export const CONFIRM_LEN = 33;
/** Longest PAKE payload accepted, in base64 characters. */
export const MAX_PAKE_PAYLOAD = 4096;
/** Length of every derived key. */
export const KEY_LEN = 32;

const VERSION = utf8("yakk/2");
const PASSWORD_SALT = utf8("yakk/2 password salt");
const PASSWORD_INFO = utf8("yakk/2 password to scalar");
const TRANSCRIPT_LABEL = utf8("yakk/2 transcript");
const KC_LABEL = utf8("yakk/2 key confirmation");
const SIGNAL_OWNER_TO_JOINER = utf8("yakk/2 signal owner to joiner");
const SIGNAL_JOINER_TO_OWNER = utf8("yakk/2 signal joiner to owner");
const EXPORTER_LABEL = utf8("yakk/2 exporter");
const KC_TAG = utf8("KC_1_U");

/** Which end of the room a party is: the owner created it, the joiner joined it. */
export type Role = "owner" | "joiner";

/** The other role. */
export function peerRole(role: Role): Role {
  return role === "owner" ? "joiner" : "owner";
}

/** What went wrong; `confirmation` is the wrong-password case. */
export type PakeErrorCode =
  | "base64"
  | "length"
  | "type"
  | "point"
  | "scalar"
  | "secret"
  | "proof"
  | "identity"
  | "reflected"
  | "order"
  | "aborted"
  | "confirmation";

/** A refused message or a failed exchange. The party is finished after any error. */
export class PakeError extends Error {
  readonly code: PakeErrorCode;
  /**
   * Owner only, on `confirmation`: its own key confirmation, which §6a says to send all
   * the same (after counting the failed guess and, if the budget is spent, burning the code).
   */
  readonly reply: string | null;
  constructor(code: PakeErrorCode, message: string, reply: string | null = null) {
    super(message);
    this.name = "PakeError";
    this.code = code;
    this.reply = reply;
  }
  /** Whether this is a failed key confirmation: a wrong password (or someone in the middle). */
  get wrongPassword(): boolean {
    return this.code === "confirmation";
  }
}

/**
 * Fixed random values for known-answer tests: 32-byte big-endian scalars in [1, n−1].
 * Reusing them across sessions reveals the password-derived secret: tests only.
 */
export interface Secrets {
  x1: Uint8Array;
  x2: Uint8Array;
  nonceX1: Uint8Array;
  nonceX2: Uint8Array;
  nonceRound2: Uint8Array;
}

function mod(a: bigint): bigint {
  const r = a % N;
  return r < 0n ? r + N : r;
}

function randomScalar(): bigint {
  // 48 bytes reduced mod n: bias about 2^-128; retry the (2^-256) zero.
  for (;;) {
    const s = mod(bytesToBigInt(randomBytes(48)));
    if (s !== 0n) return s;
  }
}

function secretScalar(bytes: Uint8Array, field: string): bigint {
  if (bytes.length !== 32) throw new PakeError("secret", `${field} is not 32 bytes`);
  const s = bytesToBigInt(bytes);
  if (s === 0n || s >= N) throw new PakeError("secret", `${field} is not in [1, n−1]`);
  return s;
}

/** `s = OS2IP(HKDF-SHA256(salt, password, info, 48)) mod n`, 0 mapped to 1. */
export function passwordScalar(password: Uint8Array): bigint {
  const prk = extract(sha256, password, PASSWORD_SALT);
  const okm = expand(sha256, prk, PASSWORD_INFO, 48);
  const s = mod(bytesToBigInt(okm));
  return s === 0n ? 1n : s;
}

function enc(p: Point): Uint8Array {
  return p.toBytes(true);
}

function challenge(base: Point, v: Point, x: Point, signer: Role, room: Uint8Array): bigint {
  const h = sha256(lpAll(enc(base), enc(v), enc(x), utf8(signer), VERSION, room));
  return mod(bytesToBigInt(h));
}

interface Proof {
  v: Point;
  r: bigint;
}

function prove(
  base: Point,
  x: bigint,
  xPub: Point,
  nonce: bigint,
  signer: Role,
  room: Uint8Array,
): Proof {
  const v = base.multiply(nonce);
  const c = challenge(base, v, xPub, signer, room);
  return { v, r: mod(nonce - c * x) };
}

/** `V = r·B + c·X`, all public values. */
function proofHolds(base: Point, xPub: Point, proof: Proof, signer: Role, room: Uint8Array): boolean {
  const c = challenge(base, proof.v, xPub, signer, room);
  const rb = proof.r === 0n ? Point.ZERO : base.multiplyUnsafe(proof.r);
  const cx = c === 0n ? Point.ZERO : xPub.multiplyUnsafe(c);
  return rb.add(cx).equals(proof.v);
}

/** A SEC1 compressed point: tag 02/03, x below p, on the curve (never the identity). */
function decodePoint(bytes: Uint8Array, field: string): Point {
  const tag = bytes[0];
  if (bytes.length !== 33 || (tag !== 0x02 && tag !== 0x03)) {
    throw new PakeError("point", `${field} is not a compressed point`);
  }
  if (bytesToBigInt(bytes.subarray(1)) >= P_FIELD) {
    throw new PakeError("point", `${field} has an x coordinate beyond the field`);
  }
  let p: Point;
  try {
    p = Point.fromBytes(bytes);
    p.assertValidity();
  } catch {
    throw new PakeError("point", `${field} is not on the curve`);
  }
  if (p.equals(Point.ZERO)) throw new PakeError("point", `${field} is the identity`);
  return p;
}

function decodeScalar(bytes: Uint8Array, field: string): bigint {
  const s = bytesToBigInt(bytes);
  if (s >= N) throw new PakeError("scalar", `${field} is not below the group order`);
  return s;
}

function scalarBytes(s: bigint): Uint8Array {
  return bigIntToBytes(s, 32);
}

function proofBytes(p: Proof): Uint8Array {
  return concat(enc(p.v), scalarBytes(p.r));
}

/** Decodes a payload: valid padded base64 of at most 4096 characters, exact length, type. */
function openPayload(payload: string, name: string, type: number, len: number): Uint8Array {
  if (payload.length > MAX_PAKE_PAYLOAD) {
    throw new PakeError("length", `${name} payload of ${payload.length} characters is too long`);
  }
  const bytes = base64Decode(payload);
  if (bytes === null) throw new PakeError("base64", `${name} is not valid base64`);
  if (bytes.length !== len) {
    throw new PakeError("length", `${name} is ${bytes.length} bytes, expected ${len}`);
  }
  if (bytes[0] !== type) {
    throw new PakeError("type", `${name} has type ${bytes[0]}, expected ${type}`);
  }
  return bytes;
}

/** A decoded round 1: G1, its proof, G2, its proof. */
export interface Round1 {
  g1: Point;
  zkp1: Proof;
  g2: Point;
  zkp2: Proof;
  bytes: Uint8Array;
}

/** A decoded round 2: A and its proof. */
export interface Round2 {
  a: Point;
  zkp: Proof;
  bytes: Uint8Array;
}

/** Parses a round 1 payload strictly (the proofs are checked by the {@link Party}). */
export function decodeRound1(payload: string): Round1 {
  const b = openPayload(payload, "yakk/2 round 1", ROUND1_TYPE, ROUND1_LEN);
  return {
    g1: decodePoint(b.subarray(1, 34), "round 1 point G1"),
    zkp1: {
      v: decodePoint(b.subarray(34, 67), "round 1 proof commitment V1"),
      r: decodeScalar(b.subarray(67, 99), "round 1 proof response r1"),
    },
    g2: decodePoint(b.subarray(99, 132), "round 1 point G2"),
    zkp2: {
      v: decodePoint(b.subarray(132, 165), "round 1 proof commitment V2"),
      r: decodeScalar(b.subarray(165, 197), "round 1 proof response r2"),
    },
    bytes: b,
  };
}

/** Parses a round 2 payload strictly. */
export function decodeRound2(payload: string): Round2 {
  const b = openPayload(payload, "yakk/2 round 2", ROUND2_TYPE, ROUND2_LEN);
  return {
    a: decodePoint(b.subarray(1, 34), "round 2 point A"),
    zkp: {
      v: decodePoint(b.subarray(34, 67), "round 2 proof commitment V"),
      r: decodeScalar(b.subarray(67, 99), "round 2 proof response r"),
    },
    bytes: b,
  };
}

/** Parses a key confirmation payload strictly; the MAC. */
export function decodeConfirm(payload: string): Uint8Array {
  return openPayload(payload, "yakk/2 key confirmation", CONFIRM_TYPE, CONFIRM_LEN).subarray(1);
}

/** The keys of a confirmed exchange, seen from one role (docs/yakk2-pake.md §5). */
export class SessionKeys {
  readonly role: Role;
  /** AES-256-GCM key for the signalling payloads this side seals. */
  readonly signalSendKey: Uint8Array;
  /** AES-256-GCM key for the signalling payloads the peer seals. */
  readonly signalRecvKey: Uint8Array;
  readonly #prk: Uint8Array;

  /** @internal Built by {@link Party}. */
  constructor(role: Role, prk: Uint8Array) {
    this.role = role;
    this.#prk = prk;
    const o2j = hkdfExpand(prk, SIGNAL_OWNER_TO_JOINER);
    const j2o = hkdfExpand(prk, SIGNAL_JOINER_TO_OWNER);
    this.signalSendKey = role === "owner" ? o2j : j2o;
    this.signalRecvKey = role === "owner" ? j2o : o2j;
  }

  /** `E("yakk/2 exporter", label)`: a further 32-byte key, the same on both sides. */
  exporter(label: string | Uint8Array): Uint8Array {
    return hkdfExpand(this.#prk, EXPORTER_LABEL, typeof label === "string" ? utf8(label) : label);
  }

  /** @internal k', the key confirmation key. */
  confirmationKey(): Uint8Array {
    return hkdfExpand(this.#prk, KC_LABEL);
  }
}

function hkdfExpand(prk: Uint8Array, label: Uint8Array, context?: Uint8Array): Uint8Array {
  const info = context === undefined ? lp(label) : lpAll(label, context);
  return expand(sha256, prk, info, KEY_LEN);
}

/** TH: the transcript hash over the four round messages as sent. */
export function transcriptHash(
  room: Uint8Array,
  owner1: Uint8Array,
  joiner1: Uint8Array,
  owner2: Uint8Array,
  joiner2: Uint8Array,
): Uint8Array {
  return sha256(lpAll(TRANSCRIPT_LABEL, room, owner1, joiner1, owner2, joiner2));
}

function confirmationMac(
  kcKey: Uint8Array,
  sender: Role,
  senderPoints: [Point, Point],
  receiverPoints: [Point, Point],
  room: Uint8Array,
): Uint8Array {
  const msg = lpAll(
    KC_TAG,
    utf8(sender),
    utf8(peerRole(sender)),
    enc(senderPoints[0]),
    enc(senderPoints[1]),
    enc(receiverPoints[0]),
    enc(receiverPoints[1]),
    VERSION,
    room,
  );
  return hmac(sha256, kcKey, msg);
}

type State =
  | { kind: "round1" }
  | { kind: "round2"; peer1: Round1; ours2: Uint8Array }
  | { kind: "confirm"; keys: SessionKeys; peerMac: Uint8Array; ourConfirm: string }
  | { kind: "done" }
  | { kind: "failed" };

/** Intermediates exposed for known-answer tests. */
export interface Intermediates {
  /** x-coordinate of K (Z). */
  sharedX: Uint8Array;
  /** The transcript hash TH. */
  transcriptHash: Uint8Array;
}

/**
 * One side of a yakk/2 exchange. Payloads are the envelope `Payload` strings (base64).
 *
 * - send {@link round1} at once (`YAKK2_PAKE1`);
 * - on the peer's round 1, send what {@link receiveRound1} returns (`YAKK2_PAKE2`);
 * - on the peer's round 2, {@link receiveRound2}: the joiner gets its confirmation to send
 *   (`YAKK2_CONFIRM`); the owner gets `null` and holds its own back (§6a);
 * - on the peer's confirmation, {@link receiveConfirmation} hands out the keys and, for the
 *   owner, its own confirmation to send now. A mismatch throws a {@link PakeError} with code
 *   `confirmation` whose `reply` (owner) is the confirmation to send after judging.
 *
 * Any error finishes the party.
 */
export class Party {
  readonly role: Role;
  readonly #room: Uint8Array;
  readonly #s: bigint;
  readonly #x2: bigint;
  readonly #nonceRound2: bigint;
  readonly #g1: Point;
  readonly #g2: Point;
  readonly #round1: Uint8Array;
  #state: State = { kind: "round1" };
  #intermediates: Intermediates | null = null;

  /**
   * @param password the code's password bytes (a string is taken as UTF-8)
   * @param room the room name
   * @param secrets fixed secrets for known-answer tests; random ones otherwise
   */
  constructor(role: Role, password: string | Uint8Array, room: string, secrets?: Secrets) {
    this.role = role;
    this.#room = utf8(room);
    const x1 = secrets ? secretScalar(secrets.x1, "x1") : randomScalar();
    const x2 = secrets ? secretScalar(secrets.x2, "x2") : randomScalar();
    const v1 = secrets ? secretScalar(secrets.nonceX1, "nonce_x1") : randomScalar();
    const v2 = secrets ? secretScalar(secrets.nonceX2, "nonce_x2") : randomScalar();
    const v3 = secrets ? secretScalar(secrets.nonceRound2, "nonce_round2") : randomScalar();
    this.#s = passwordScalar(typeof password === "string" ? utf8(password) : password);
    this.#x2 = x2;
    this.#nonceRound2 = v3;
    const G = Point.BASE;
    this.#g1 = G.multiply(x1);
    this.#g2 = G.multiply(x2);
    const zkp1 = prove(G, x1, this.#g1, v1, role, this.#room);
    const zkp2 = prove(G, x2, this.#g2, v2, role, this.#room);
    this.#round1 = concat(
      new Uint8Array([ROUND1_TYPE]),
      enc(this.#g1),
      proofBytes(zkp1),
      enc(this.#g2),
      proofBytes(zkp2),
    );
  }

  /** Our round 1 payload, to send as soon as the peer is known. */
  round1(): string {
    return base64Encode(this.#round1);
  }

  /** What the party waits for: `round1`, `round2`, `confirm`, `done` or `failed`. */
  get waitingFor(): State["kind"] {
    return this.#state.kind;
  }

  /** Z and TH once round 2 was taken (for known-answer tests). */
  get intermediates(): Intermediates | null {
    return this.#intermediates;
  }

  #expect<K extends State["kind"]>(kind: K, got: string): Extract<State, { kind: K }> {
    const st = this.#state;
    if (st.kind === "failed") throw new PakeError("aborted", "the exchange already failed");
    if (st.kind !== kind) {
      this.#state = { kind: "failed" };
      throw new PakeError("order", `got ${got} while waiting for ${st.kind}`);
    }
    return st as Extract<State, { kind: K }>;
  }

  #guard<T>(f: () => T): T {
    try {
      return f();
    } catch (e) {
      this.#state = { kind: "failed" };
      throw e;
    }
  }

  /** Takes the peer's round 1 payload and returns our round 2 payload. */
  receiveRound1(payload: string): string {
    this.#expect("round1", "round 1");
    return this.#guard(() => {
      const peer = decodeRound1(payload);
      const ours = [this.#g1, this.#g2];
      if (ours.some((p) => p.equals(peer.g1) || p.equals(peer.g2))) {
        throw new PakeError("reflected", "the peer's round 1 repeats our own points (reflected)");
      }
      const them = peerRole(this.role);
      const G = Point.BASE;
      if (!proofHolds(G, peer.g1, peer.zkp1, them, this.#room)) {
        throw new PakeError("proof", "invalid round 1 proof for G1");
      }
      if (!proofHolds(G, peer.g2, peer.zkp2, them, this.#room)) {
        throw new PakeError("proof", "invalid round 1 proof for G2");
      }
      const base = this.#g1.add(peer.g1).add(peer.g2);
      if (base.equals(Point.ZERO)) {
        throw new PakeError("identity", "round 2 generator G1+G3+G4 is the identity");
      }
      const xs = mod(this.#x2 * this.#s);
      const a = base.multiply(xs);
      const zkp = prove(base, xs, a, this.#nonceRound2, this.role, this.#room);
      const ours2 = concat(new Uint8Array([ROUND2_TYPE]), enc(a), proofBytes(zkp));
      this.#state = { kind: "round2", peer1: peer, ours2 };
      return base64Encode(ours2);
    });
  }

  /**
   * Takes the peer's round 2 payload and derives the keys. The joiner gets its key
   * confirmation payload, to send at once; the owner gets `null` (it sends its own only
   * from {@link receiveConfirmation}, after judging the joiner's).
   */
  receiveRound2(payload: string): string | null {
    const st = this.#expect("round2", "round 2");
    return this.#guard(() => {
      const peer = decodeRound2(payload);
      const peer1 = st.peer1;
      const base = this.#g1.add(this.#g2).add(peer1.g1);
      if (base.equals(Point.ZERO)) {
        throw new PakeError("identity", "round 2 generator G1+G2+G3 is the identity");
      }
      const them = peerRole(this.role);
      if (!proofHolds(base, peer.a, peer.zkp, them, this.#room)) {
        throw new PakeError("proof", "invalid round 2 proof for A");
      }
      const xs = mod(this.#x2 * this.#s);
      const inner = peer.a.subtract(peer1.g2.multiply(xs));
      const k = inner.equals(Point.ZERO) ? Point.ZERO : inner.multiply(this.#x2);
      if (k.equals(Point.ZERO)) throw new PakeError("identity", "the shared point K is the identity");
      const kx = bigIntToBytes(k.toAffine().x, 32);
      const [o1, j1, o2, j2] =
        this.role === "owner"
          ? [this.#round1, peer1.bytes, st.ours2, peer.bytes]
          : [peer1.bytes, this.#round1, peer.bytes, st.ours2];
      const th = transcriptHash(this.#room, o1, j1, o2, j2);
      this.#intermediates = { sharedX: kx, transcriptHash: th };
      const prk = extract(sha256, kx, th);
      const keys = new SessionKeys(this.role, prk);
      const kc = keys.confirmationKey();
      const ours: [Point, Point] = [this.#g1, this.#g2];
      const theirs: [Point, Point] = [peer1.g1, peer1.g2];
      const ourMac = confirmationMac(kc, this.role, ours, theirs, this.#room);
      const peerMac = confirmationMac(kc, them, theirs, ours, this.#room);
      const ourConfirm = base64Encode(concat(new Uint8Array([CONFIRM_TYPE]), ourMac));
      this.#state = { kind: "confirm", keys, peerMac, ourConfirm };
      return this.role === "joiner" ? ourConfirm : null;
    });
  }

  /**
   * Our own key confirmation payload once round 2 was taken, whatever the role. The
   * owner must not send it before judging the joiner's (§6a); {@link receiveConfirmation}
   * hands it out at the right moment. For tests and for the owner's wrong-password reply.
   */
  ownConfirmation(): string | null {
    return this.#state.kind === "confirm" ? this.#state.ourConfirm : null;
  }

  /**
   * Between our key confirmation and the peer's: the key that seals what we send. The joiner
   * seals its offer with it and sends it right behind its confirmation (§6a): a sealed message
   * tests the same single guess as the confirmation. The key that opens the peer's messages
   * comes only from {@link receiveConfirmation}.
   */
  sendKeyBeforeConfirmation(): Uint8Array | null {
    return this.#state.kind === "confirm" ? this.#state.keys.signalSendKey.slice() : null;
  }

  /**
   * Checks the peer's key confirmation (constant-time compare) and hands out the keys,
   * with, for the owner, its own confirmation to send now (`reply`; `null` for the joiner).
   * A mismatch throws {@link PakeError} `confirmation` carrying the owner's `reply`.
   */
  receiveConfirmation(payload: string): { keys: SessionKeys; reply: string | null } {
    const st = this.#expect("confirm", "key confirmation");
    this.#state = { kind: "failed" };
    const reply = this.role === "owner" ? st.ourConfirm : null;
    const mac = decodeConfirm(payload);
    if (!constantTimeEqual(mac, st.peerMac)) {
      throw new PakeError(
        "confirmation",
        "the key confirmation failed: the code is wrong, or someone else joined the room first",
        reply,
      );
    }
    this.#state = { kind: "done" };
    return { keys: st.keys, reply };
  }
}
