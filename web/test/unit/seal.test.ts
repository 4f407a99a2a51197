// Sealed signalling and envelopes against vectors made by the Rust crates
// (crates/yakk-session/tests/vectors/web-sealed.json, checked by
// crates/yakk-session/tests/web_vectors.rs).
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

import { base64Decode, base64Encode, fromHex, fromUtf8 } from "../../src/proto/bytes.js";
import {
  abortPayload,
  decodeSealedMessage,
  encodeSealedMessage,
  parseAbort,
  parseEnvelope,
  parseRequestOffer,
  requestOfferPayload,
  serializeEnvelope,
  type Envelope,
} from "../../src/proto/envelope.js";
import { SealError, SealedChannel, type SealHeader } from "../../src/proto/seal.js";

interface RustHeader {
  msg_type: string;
  room: string;
  sender: number;
  recipient: number;
}
interface Vectors {
  room: string;
  msg_type: string;
  owner_id: number;
  joiner_id: number;
  owner_to_joiner_key_hex: string;
  joiner_to_owner_key_hex: string;
  messages: { from: "owner" | "joiner"; counter: number; plaintext: string; payload: string; envelope: string }[];
  refused: {
    case: string;
    header: RustHeader;
    payload: string;
    error: string;
    expected_counter: number | null;
  }[];
  envelopes: {
    json: string;
    msg_type: string;
    payload: string;
    sender: number;
    recipient: number;
    ice_servers: { urls: string[]; username?: string; credential?: string }[] | null;
    reclaim: string | null;
  }[];
  refused_envelopes: { json: string; max_len: number; error: string }[];
  max_envelope: number;
}

const v: Vectors = JSON.parse(
  readFileSync(
    fileURLToPath(new URL("../../../crates/yakk-session/tests/vectors/web-sealed.json", import.meta.url)),
    "utf8",
  ),
);
const o2j = fromHex(v.owner_to_joiner_key_hex);
const j2o = fromHex(v.joiner_to_owner_key_hex);

function channels(): { owner: SealedChannel; joiner: SealedChannel } {
  return { owner: new SealedChannel(o2j, j2o), joiner: new SealedChannel(j2o, o2j) };
}

function headerOf(from: "owner" | "joiner"): SealHeader {
  const me = from === "owner" ? v.owner_id : v.joiner_id;
  const peer = from === "owner" ? v.joiner_id : v.owner_id;
  return { msgType: v.msg_type, room: v.room, sender: me, recipient: peer };
}

function rustHeader(h: RustHeader): SealHeader {
  return { msgType: h.msg_type, room: h.room, sender: h.sender, recipient: h.recipient };
}

describe("sealed signalling against the Rust SealedChannel", () => {
  it("vectors are not empty", () => {
    expect(v.messages.length).toBeGreaterThanOrEqual(6);
    expect(v.refused.length).toBeGreaterThanOrEqual(8);
  });

  it("seals every message byte for byte as Rust does, in both directions", () => {
    const { owner, joiner } = channels();
    for (const m of v.messages) {
      const sealer = m.from === "owner" ? owner : joiner;
      expect(sealer.sendCounter).toBe(BigInt(m.counter));
      expect(sealer.seal(headerOf(m.from), m.plaintext)).toBe(m.payload);
    }
  });

  it("opens every Rust payload in order, inside the Rust envelope", () => {
    const { owner, joiner } = channels();
    for (const m of v.messages) {
      const opener = m.from === "owner" ? joiner : owner;
      const env = parseEnvelope(m.envelope);
      expect(env.payload).toBe(m.payload);
      const h: SealHeader = { msgType: env.msgType, room: v.room, sender: env.sender, recipient: env.recipient };
      expect(fromUtf8(opener.open(h, env.payload))).toBe(m.plaintext);
      expect(serializeEnvelope(env)).toBe(m.envelope);
    }
  });

  it("refuses what Rust refuses, with the same reason", () => {
    for (const r of v.refused) {
      const owner = new SealedChannel(o2j, j2o);
      let err: unknown = null;
      try {
        owner.open(rustHeader(r.header), r.payload);
      } catch (e) {
        err = e;
      }
      expect(err, r.case).toBeInstanceOf(SealError);
      expect((err as SealError).code, r.case).toBe(r.error);
      if (r.expected_counter !== null) {
        expect((err as SealError).message, r.case).toContain(`expected ${r.expected_counter}`);
      }
      // A refused message does not move the counter: the genuine first one still opens.
      expect(owner.recvCounter).toBe(0n);
    }
  });

  it("refuses a replay and a reordering", () => {
    const { owner } = channels();
    const first = v.messages.find((m) => m.from === "joiner" && m.counter === 0)!;
    const second = v.messages.find((m) => m.from === "joiner" && m.counter === 1)!;
    const h = headerOf("joiner");
    expect(() => owner.open(h, second.payload)).toThrow(/out of order/);
    owner.open(h, first.payload);
    expect(() => owner.open(h, first.payload)).toThrow(/counter 0, expected 1/);
    expect(fromUtf8(owner.open(h, second.payload))).toBe(second.plaintext);
  });

  it("refuses every single-bit change of a payload", () => {
    const first = v.messages.find((m) => m.from === "joiner" && m.counter === 0)!;
    const raw = base64Decode(first.payload)!;
    for (let i = 0; i < raw.length; i++) {
      const bad = raw.slice();
      bad[i]! ^= 1 << i % 8;
      const owner = new SealedChannel(o2j, j2o);
      expect(() => owner.open(headerOf("joiner"), base64Encode(bad)), `byte ${i}`).toThrow(SealError);
    }
  });
});

describe("sealed plaintexts", () => {
  it("re-encodes every JSON plaintext of the vectors byte for byte", () => {
    let n = 0;
    for (const m of v.messages) {
      if (!m.plaintext.startsWith("{")) continue;
      n++;
      expect(encodeSealedMessage(decodeSealedMessage(m.plaintext))).toBe(m.plaintext);
    }
    expect(n).toBeGreaterThanOrEqual(5);
  });

  it("reads defaults and refuses malformed ones", () => {
    expect(decodeSealedMessage('{"type":"offer","sdp":"s","extra":1}')).toEqual({
      type: "offer",
      sdp: "s",
      features: [],
      lane: 0,
    });
    for (const bad of [
      "",
      "[]",
      '{"type":"offer"}',
      '{"type":"pranswer","sdp":"s"}',
      '{"type":"offer","sdp":"s","lane":-1}',
      '{"type":"offer","sdp":"s","features":"window"}',
      '{"type":"candidate","candidate":{}}',
      '{"type":"candidate","candidate":{"candidate":"c","sdpMLineIndex":70000}}',
    ]) {
      expect(() => decodeSealedMessage(bad), bad).toThrow();
    }
  });
});

describe("envelopes against yakk-wire", () => {
  it("parses and prints every Rust envelope byte for byte", () => {
    expect(v.envelopes.length).toBeGreaterThanOrEqual(5);
    for (const e of v.envelopes) {
      const want: Envelope = {
        msgType: e.msg_type,
        payload: e.payload,
        sender: e.sender,
        recipient: e.recipient,
      };
      if (e.ice_servers !== null) want.iceServers = e.ice_servers;
      if (e.reclaim !== null) want.reclaim = e.reclaim;
      expect(parseEnvelope(e.json)).toEqual(want);
      expect(parseEnvelope(new TextEncoder().encode(` ${e.json}\n`))).toEqual(want);
      expect(serializeEnvelope(want)).toBe(e.json);
    }
  });

  it("refuses what yakk-wire refuses", () => {
    for (const r of v.refused_envelopes) {
      let err: unknown = null;
      try {
        parseEnvelope(r.json, r.max_len);
      } catch (e) {
        err = e;
      }
      expect(err, r.json.slice(0, 60)).not.toBeNull();
      expect((err as { code: string }).code, r.json.slice(0, 60)).toBe(r.error);
    }
    expect(v.max_envelope).toBe(65536);
  });

  it("builds and reads the plain payloads", () => {
    expect(requestOfferPayload()).toBe('{"versions":["yakk/2"]}');
    expect(parseRequestOffer('{"versions":["yakk/2","yakk/1"]}')).toEqual(["yakk/2", "yakk/1"]);
    expect(parseRequestOffer(" ")).toEqual([]);
    expect(() => parseRequestOffer('{"versions":"yakk/2"}')).toThrow();
    expect(abortPayload("sealed")).toBe('{"reason":"sealed"}');
    expect(parseAbort('{"reason":"closed"}')).toBe("closed");
    expect(parseAbort("junk")).toBe("");
  });
});
