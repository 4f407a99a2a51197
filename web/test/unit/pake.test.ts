// The TypeScript J-PAKE against the Rust known-answer vector
// (crates/yakk-pake/tests/vectors/jpake2-kat.json), and its refusals.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { p256 } from "@noble/curves/nist.js";
import { describe, expect, it } from "vitest";

import { base64Decode, base64Encode, fromHex, toHex } from "../../src/proto/bytes.js";
import { Party, PakeError, passwordScalar, type Role, type Secrets } from "../../src/proto/pake.js";

interface SideVector {
  x1_hex: string;
  x2_hex: string;
  nonce_x1_hex: string;
  nonce_x2_hex: string;
  nonce_round2_hex: string;
  round1_payload: string;
  round2_payload: string;
  key_confirm_payload: string;
  signal_send_key_hex: string;
  signal_recv_key_hex: string;
  exporter_hex: string;
}
interface Kat {
  password: string;
  room: string;
  exporter_label: string;
  s_hex: string;
  shared_x_hex: string;
  transcript_hash_hex: string;
  owner: SideVector;
  joiner: SideVector;
}

const kat: Kat = JSON.parse(
  readFileSync(
    fileURLToPath(new URL("../../../crates/yakk-pake/tests/vectors/jpake2-kat.json", import.meta.url)),
    "utf8",
  ),
);

function secrets(v: SideVector): Secrets {
  return {
    x1: fromHex(v.x1_hex),
    x2: fromHex(v.x2_hex),
    nonceX1: fromHex(v.nonce_x1_hex),
    nonceX2: fromHex(v.nonce_x2_hex),
    nonceRound2: fromHex(v.nonce_round2_hex),
  };
}

function party(role: Role, password = kat.password, room = kat.room): Party {
  return new Party(role, password, room, secrets(kat[role]));
}

/** The smallest x (< 256) with no point on P-256, found with noble directly. */
function firstXOffCurve(): number {
  for (let x = 1; x < 256; x++) {
    const b = new Uint8Array(33);
    b[0] = 2;
    b[32] = x;
    try {
      p256.Point.fromBytes(b);
    } catch {
      return x;
    }
  }
  throw new Error("no x off the curve below 256");
}

/** Flips one bit of a base64 payload's binary message. */
function flip(payload: string, byte: number, bit = 1): string {
  const b = base64Decode(payload)!;
  b[byte]! ^= bit;
  return base64Encode(b);
}

describe("yakk/2 J-PAKE known-answer vector", () => {
  it("derives the password scalar", () => {
    expect(passwordScalar(new TextEncoder().encode(kat.password)).toString(16).padStart(64, "0")).toBe(
      kat.s_hex,
    );
  });

  for (const role of ["owner", "joiner"] as const) {
    it(`reproduces the ${role}'s payloads and keys from the other side's payloads`, () => {
      const me = kat[role];
      const peer = kat[role === "owner" ? "joiner" : "owner"];
      const p = party(role);
      expect(p.round1()).toBe(me.round1_payload);
      expect(p.receiveRound1(peer.round1_payload)).toBe(me.round2_payload);
      const sent = p.receiveRound2(peer.round2_payload);
      // §6a: the joiner confirms at once; the owner holds its confirmation back.
      if (role === "joiner") expect(sent).toBe(me.key_confirm_payload);
      else expect(sent).toBeNull();
      expect(p.ownConfirmation()).toBe(me.key_confirm_payload);
      expect(toHex(p.intermediates!.sharedX)).toBe(kat.shared_x_hex);
      expect(toHex(p.intermediates!.transcriptHash)).toBe(kat.transcript_hash_hex);
      const { keys, reply } = p.receiveConfirmation(peer.key_confirm_payload);
      expect(reply).toBe(role === "owner" ? me.key_confirm_payload : null);
      expect(toHex(keys.signalSendKey)).toBe(me.signal_send_key_hex);
      expect(toHex(keys.signalRecvKey)).toBe(me.signal_recv_key_hex);
      expect(toHex(keys.exporter(kat.exporter_label))).toBe(me.exporter_hex);
      expect(toHex(keys.exporter("another label"))).not.toBe(me.exporter_hex);
      expect(p.waitingFor).toBe("done");
    });
  }

  it("runs a fresh random exchange between two TypeScript parties", () => {
    const owner = new Party("owner", "pw", "room-1");
    const joiner = new Party("joiner", "pw", "room-1");
    const o2 = owner.receiveRound1(joiner.round1());
    const j2 = joiner.receiveRound1(owner.round1());
    expect(owner.receiveRound2(j2)).toBeNull();
    const jc = joiner.receiveRound2(o2)!;
    const { keys: ok, reply } = owner.receiveConfirmation(jc);
    const { keys: jk } = joiner.receiveConfirmation(reply!);
    expect(toHex(ok.signalSendKey)).toBe(toHex(jk.signalRecvKey));
    expect(toHex(ok.signalRecvKey)).toBe(toHex(jk.signalSendKey));
    expect(toHex(ok.signalSendKey)).not.toBe(toHex(ok.signalRecvKey));
  });
});

describe("yakk/2 J-PAKE refusals", () => {
  it("a wrong password fails the owner's judgement, and the owner's reply fails the joiner", () => {
    const owner = party("owner");
    const joiner = party("joiner", "correct horse battery stapler");
    const o2 = owner.receiveRound1(joiner.round1());
    const j2 = joiner.receiveRound1(owner.round1());
    expect(owner.receiveRound2(j2)).toBeNull();
    const jc = joiner.receiveRound2(o2)!;
    let err: unknown;
    try {
      owner.receiveConfirmation(jc);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PakeError);
    expect((err as PakeError).code).toBe("confirmation");
    expect((err as PakeError).wrongPassword).toBe(true);
    const reply = (err as PakeError).reply;
    expect(reply).toBe(owner.ownConfirmation() ?? reply);
    expect(reply).not.toBeNull();
    expect(() => joiner.receiveConfirmation(reply!)).toThrow(/key confirmation failed/);
    expect(owner.waitingFor).toBe("failed");
  });

  it("a different room fails the proofs", () => {
    const owner = party("owner");
    const joiner = party("joiner", kat.password, "armadillo-8");
    expect(() => owner.receiveRound1(joiner.round1())).toThrow(PakeError);
  });

  it("refuses a tampered round 1 (every field)", () => {
    // G1, V1, r1, G2, V2, r2: a bit in the last byte of each field.
    for (const at of [33, 66, 98, 131, 164, 196]) {
      const p = party("owner");
      const bad = flip(kat.joiner.round1_payload, at);
      expect(() => p.receiveRound1(bad), `byte ${at}`).toThrow(PakeError);
      expect(p.waitingFor).toBe("failed");
    }
    const p = party("owner");
    expect(() => p.receiveRound1(flip(kat.joiner.round1_payload, 0, 3))).toThrow(/type/);
  });

  it("refuses a tampered round 2 (A, V, r)", () => {
    for (const at of [33, 66, 98]) {
      const p = party("joiner");
      p.receiveRound1(kat.owner.round1_payload);
      expect(() => p.receiveRound2(flip(kat.owner.round2_payload, at)), `byte ${at}`).toThrow(PakeError);
    }
  });

  it("refuses a reflected round 1", () => {
    const p = party("owner");
    expect(() => p.receiveRound1(p.round1())).toThrow(/reflected/);
    // Only one of the two points reflected: still refused.
    const q = party("owner");
    const ours = base64Decode(q.round1())!;
    const theirs = base64Decode(kat.joiner.round1_payload)!;
    theirs.set(ours.subarray(99, 132), 1);
    expect(() => q.receiveRound1(base64Encode(theirs))).toThrow(/reflected/);
  });

  it("refuses a tampered confirmation", () => {
    const p = party("owner");
    p.receiveRound1(kat.joiner.round1_payload);
    p.receiveRound2(kat.joiner.round2_payload);
    expect(() => p.receiveConfirmation(flip(kat.joiner.key_confirm_payload, 32))).toThrow(
      /key confirmation failed/,
    );
  });

  it("refuses malformed payloads: base64, length, points off the curve, scalars ≥ n", () => {
    const cases: [string, RegExp][] = [
      ["not base64!", /base64/],
      [kat.joiner.round1_payload.slice(0, -4), /bytes/],
      [kat.joiner.round1_payload.replace(/=*$/, ""), /base64/],
      ["A".repeat(4100), /too long/],
    ];
    // x of G1 set to p (beyond the field) and to a value with no point.
    const beyond = base64Decode(kat.joiner.round1_payload)!;
    beyond.fill(0xff, 2, 34);
    cases.push([base64Encode(beyond), /beyond the field|not on the curve/]);
    const offCurve = base64Decode(kat.joiner.round1_payload)!;
    offCurve.fill(0, 2, 34);
    offCurve[33] = firstXOffCurve(); // x³ − 3x + b is not a square mod p
    cases.push([base64Encode(offCurve), /not on the curve/]);
    const tag = base64Decode(kat.joiner.round1_payload)!;
    tag[1] = 0x04;
    cases.push([base64Encode(tag), /compressed point/]);
    const bigR = base64Decode(kat.joiner.round1_payload)!;
    bigR.fill(0xff, 67, 99);
    cases.push([base64Encode(bigR), /group order/]);
    for (const [payload, why] of cases) {
      const p = party("owner");
      expect(() => p.receiveRound1(payload), payload.slice(0, 20)).toThrow(why);
    }
  });

  it("refuses messages out of order and everything after a failure", () => {
    const p = party("joiner");
    expect(() => p.receiveRound2(kat.owner.round2_payload)).toThrow(/waiting for round1/);
    expect(() => p.receiveRound1(kat.owner.round1_payload)).toThrow(/already failed/);
  });
});
