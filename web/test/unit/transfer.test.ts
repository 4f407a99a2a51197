// The transfer protocol codecs against vectors made and judged by the Rust crate
// (crates/yakk-transfer/tests/vectors/web-transfer.json, checked by
// crates/yakk-transfer/tests/web_vectors.rs), the receiver's data-phase rules and the
// `window` flow control.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

import { fromHex, toHex, utf8 } from "../../src/proto/bytes.js";
import { escape } from "../../src/proto/text.js";
import {
  FRAME,
  FrameReader,
  INITIAL_WINDOW,
  MAX_DATA,
  MAX_WINDOW,
  MIN_COST,
  ReceiveTracker,
  ReceiveWindow,
  SendCredit,
  TransferError,
  WindowPool,
  blake3Hash,
  blake3Hasher,
  bulkBlake3Hasher,
  bulkHasherKind,
  chunkRanges,
  cost,
  dataPlan,
  decodeAccept,
  decodeFrameHeader,
  decodeHello,
  decodeOffer,
  decodeStreamEnd,
  decodeText,
  encodeAccept,
  encodeFrame,
  encodeHello,
  encodeOffer,
  encodeStreamEnd,
  encodeText,
  grantText,
  parseGrant,
  peerError,
  splitMessages,
  validateName,
  type Frame,
  type FrameType,
  type Offer,
  type OfferEntry,
} from "../../src/proto/index.js";

type EntryJson =
  | { kind: "dir"; name: string }
  | { kind: "file"; name: string; size: number; hash_hex: string }
  | { kind: "stream"; name: string };
interface FrameJson {
  name: string;
  type: FrameType;
  payload_hex?: string;
  frame_hex?: string;
  pattern_len?: number;
  frame_head_hex?: string;
  frame_blake3_hex?: string;
}
interface V {
  frames: FrameJson[];
  refused_headers: { header_hex: string; error: string }[];
  accepted_headers: { header_hex: string; type: number; length: number }[];
  offers: { entries: EntryJson[]; payload_hex: string }[];
  refused_offers: { case: string; payload_hex: string; error: string }[];
  accepts: { offer: number; offsets: number[]; payload_hex: string }[];
  refused_accepts: { case: string; offer: number; payload_hex: string; error: string }[];
  stream_ends: { size: number; hash_hex: string; payload_hex: string }[];
  refused_stream_ends: { payload_hex: string; error: string }[];
  texts: { input: string; payload_hex: string }[];
  peer_errors: { payload_hex: string; decoded: string; error: string }[];
  names: { valid: string[]; invalid: { name: string; error: string }[] };
  escapes: { input: string; output: string }[];
  blake3: { len: number; hash_hex: string }[];
}

const v: V = JSON.parse(
  readFileSync(
    fileURLToPath(new URL("../../../crates/yakk-transfer/tests/vectors/web-transfer.json", import.meta.url)),
    "utf8",
  ),
);

function pattern(len: number): Uint8Array {
  const out = new Uint8Array(len);
  for (let i = 0; i < len; i++) out[i] = i % 251;
  return out;
}

function entry(e: EntryJson): OfferEntry {
  return e.kind === "file" ? { kind: "file", name: e.name, size: e.size, hash: fromHex(e.hash_hex) } : e;
}

function offer(i: number): Offer {
  return { entries: v.offers[i]!.entries.map(entry) };
}

function thrown(f: () => unknown): Error {
  try {
    f();
  } catch (e) {
    return e as Error;
  }
  throw new Error("did not throw");
}

/** A deterministic pseudo-random split of `bytes` into pieces of 1..max bytes. */
function split(bytes: Uint8Array, seed: number, max: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  let s = seed;
  for (let at = 0; at < bytes.length; ) {
    s = (s * 1103515245 + 12345) >>> 0;
    const n = 1 + (s % max);
    out.push(bytes.subarray(at, Math.min(bytes.length, at + n)));
    at += n;
  }
  return out;
}

function framePayload(f: FrameJson): Uint8Array {
  return f.pattern_len !== undefined ? pattern(f.pattern_len) : fromHex(f.payload_hex!);
}

describe("frames against yakk-transfer", () => {
  it("encodes every frame byte for byte", () => {
    expect(v.frames.length).toBeGreaterThanOrEqual(12);
    for (const f of v.frames) {
      const bytes = encodeFrame(f.type, framePayload(f));
      if (f.frame_hex !== undefined) expect(toHex(bytes), f.name).toBe(f.frame_hex);
      else {
        expect(toHex(bytes.subarray(0, 5)), f.name).toBe(f.frame_head_hex);
        expect(toHex(blake3Hash(bytes)), f.name).toBe(f.frame_blake3_hex);
      }
    }
  });

  it("reads all frames back from a stream split anywhere", () => {
    const all = v.frames.map((f) => encodeFrame(f.type, framePayload(f)));
    const stream = new Uint8Array(all.reduce((n, b) => n + b.length, 0));
    let o = 0;
    for (const b of all) {
      stream.set(b, o);
      o += b.length;
    }
    for (const [seed, max] of [
      [2, 50],
      [3, 1000],
      [4, 65536],
      [5, 3_000_000],
    ] as const) {
      const reader = new FrameReader();
      const got: Frame[] = [];
      for (const piece of split(stream, seed, max)) got.push(...reader.push(piece));
      expect(reader.atBoundary).toBe(true);
      expect(got.map((f) => f.type)).toEqual(v.frames.map((f) => f.type));
      got.forEach((f, i) =>
        expect(Buffer.from(f.payload).equals(Buffer.from(framePayload(v.frames[i]!))), v.frames[i]!.name).toBe(true),
      );
    }
  });

  it("refuses every header Rust refuses, with the same text, before any payload", () => {
    for (const h of v.refused_headers) {
      const reader = new FrameReader();
      expect(() => reader.push(fromHex(h.header_hex)), h.header_hex).toThrow(h.error);
      // and stays failed
      expect(() => reader.push(new Uint8Array(1))).toThrow(h.error);
      expect(() => decodeFrameHeader(fromHex(h.header_hex))).toThrow(TransferError);
    }
    for (const h of v.accepted_headers) {
      expect(decodeFrameHeader(fromHex(h.header_hex))).toEqual({ type: h.type, length: h.length });
      const reader = new FrameReader();
      expect(reader.push(fromHex(h.header_hex))).toEqual(h.length === 0 ? [{ type: h.type, payload: new Uint8Array(0) }] : []);
      if (h.length > 0) expect(reader.pendingHeader).toEqual({ type: h.type, length: h.length });
    }
  });

  it("refuses to encode a payload out of bounds", () => {
    expect(() => encodeFrame(FRAME.DATA, new Uint8Array(0))).toThrow(RangeError);
    expect(() => encodeFrame(FRAME.DATA, new Uint8Array(MAX_DATA + 1))).toThrow(RangeError);
    expect(() => encodeFrame(FRAME.DONE, new Uint8Array(1))).toThrow(RangeError);
  });

  it("hello", () => {
    const hello = v.frames.find((f) => f.name === "hello")!;
    expect(toHex(encodeHello())).toBe(hello.payload_hex);
    expect(decodeHello(encodeHello())).toBe(1);
    expect(decodeHello(encodeHello(7))).toBe(7);
    expect(() => decodeHello(utf8("yakk-transfeX\0\x01"))).toThrow(/not a yakk file receiver/);
  });
});

describe("offers and accepts against yakk-transfer", () => {
  it("encodes and decodes every offer", () => {
    v.offers.forEach((o, i) => {
      const off = offer(i);
      expect(toHex(encodeOffer(off))).toBe(o.payload_hex);
      expect(decodeOffer(fromHex(o.payload_hex))).toEqual(off);
    });
  });

  it("refuses every offer Rust refuses, with the same text", () => {
    expect(v.refused_offers.length).toBeGreaterThanOrEqual(25);
    for (const r of v.refused_offers) {
      const e = thrown(() => decodeOffer(fromHex(r.payload_hex)));
      expect(e, r.case).toBeInstanceOf(TransferError);
      expect(e.message, r.case).toBe(r.error);
    }
  });

  it("the receiver also refuses names reserved for partial files", () => {
    const o: Offer = { entries: [{ kind: "file", name: "d/.yakk-0123.part", size: 1, hash: new Uint8Array(32) }] };
    expect(() => decodeOffer(encodeOffer(o))).toThrow(/reserved for yakk's partial files/);
    expect(decodeOffer(encodeOffer(o), false)).toEqual(o);
  });

  it("accepts", () => {
    for (const a of v.accepts) {
      expect(toHex(encodeAccept(a.offsets))).toBe(a.payload_hex);
      expect(decodeAccept(fromHex(a.payload_hex), offer(a.offer))).toEqual(a.offsets);
    }
    for (const r of v.refused_accepts) {
      expect(() => decodeAccept(fromHex(r.payload_hex), offer(r.offer)), r.case).toThrow(r.error);
    }
  });

  it("stream ends", () => {
    for (const s of v.stream_ends) {
      expect(toHex(encodeStreamEnd(s.size, fromHex(s.hash_hex)))).toBe(s.payload_hex);
      const d = decodeStreamEnd(fromHex(s.payload_hex));
      expect(d.size).toBe(s.size);
      expect(toHex(d.hash)).toBe(s.hash_hex);
    }
    for (const r of v.refused_stream_ends) {
      expect(() => decodeStreamEnd(fromHex(r.payload_hex))).toThrow(r.error);
    }
  });

  it("texts, peer errors and the escaping", () => {
    for (const t of v.texts) expect(toHex(encodeText(t.input))).toBe(t.payload_hex);
    for (const p of v.peer_errors) {
      expect(decodeText(fromHex(p.payload_hex))).toBe(p.decoded);
      expect(peerError(fromHex(p.payload_hex)).message).toBe(p.error);
    }
    expect(peerError(utf8("stopped")).code).toBe("peer-stopped");
    for (const e of v.escapes) expect(escape(e.input)).toBe(e.output);
  });

  it("names", () => {
    for (const n of v.names.valid) expect(() => validateName(n), n).not.toThrow();
    for (const n of v.names.invalid) expect(() => validateName(n.name), n.name).toThrow(n.error);
  });
});

describe("BLAKE3", () => {
  it("hashes like the Rust blake3 crate, whole and in pieces", () => {
    for (const b of v.blake3) {
      const data = pattern(b.len);
      expect(toHex(blake3Hash(data)), `len ${b.len}`).toBe(b.hash_hex);
      const h = blake3Hasher();
      for (const piece of split(data, b.len, 5000)) h.update(piece);
      expect(toHex(h.digest()), `len ${b.len} in pieces`).toBe(b.hash_hex);
    }
  });

  it("the WebAssembly bulk hasher gives the same digests, whole and in pieces", async () => {
    for (const b of v.blake3) {
      const data = pattern(b.len);
      const whole = await bulkBlake3Hasher();
      expect(toHex(whole.update(data).digest()), `len ${b.len}`).toBe(b.hash_hex);
      const h = await bulkBlake3Hasher();
      for (const piece of split(data, b.len, 5000)) h.update(piece);
      expect(toHex(h.digest()), `len ${b.len} in pieces`).toBe(b.hash_hex);
    }
    // Node compiles WebAssembly: the fast path was the one tested.
    expect(bulkHasherKind()).toBe("wasm");
  });
});

describe("data phase", () => {
  const a = pattern(2 * MAX_DATA + 10);
  const b = utf8("hello");
  const o: Offer = {
    entries: [
      { kind: "dir", name: "d" },
      { kind: "file", name: "d/a", size: a.length, hash: blake3Hash(a) },
      { kind: "file", name: "d/empty", size: 0, hash: blake3Hash(new Uint8Array(0)) },
      { kind: "file", name: "d/b", size: b.length, hash: blake3Hash(b) },
    ],
  };

  /** The sender's frames for `offer` as the plan says. */
  function senderFrames(offsets: number[], contents: Record<number, Uint8Array>): Frame[] {
    const out: Frame[] = [];
    for (const p of dataPlan(o, offsets)) {
      for (const [s, e] of chunkRanges(p.from, p.to!)) out.push({ type: FRAME.DATA, payload: contents[p.index]!.subarray(s, e) });
      out.push({ type: FRAME.FILE_END, payload: new Uint8Array(0) });
    }
    out.push({ type: FRAME.DONE, payload: new Uint8Array(0) });
    return out;
  }

  it("plans chunks of 1 MiB and receives and verifies every file", () => {
    expect(dataPlan(o, [0, 0, 0, 0]).map((p) => p.index)).toEqual([1, 3]);
    expect(chunkRanges(0, a.length)).toEqual([
      [0, MAX_DATA],
      [MAX_DATA, 2 * MAX_DATA],
      [2 * MAX_DATA, 2 * MAX_DATA + 10],
    ]);
    const t = new ReceiveTracker(o, [0, 0, 0, 0]);
    const ends: number[] = [];
    for (const f of senderFrames([0, 0, 0, 0], { 1: a, 3: b })) {
      const ev = t.onFrame(f);
      if (ev.kind === "file-end") ends.push(ev.index);
    }
    expect(ends).toEqual([1, 3]);
    expect(t.done).toBe(true);
  });

  it("resumes from an offset when the held bytes are hashed first", () => {
    const t = new ReceiveTracker(o, [0, 100, 0, 0]);
    t.hashPrefix(a.subarray(0, 100));
    for (const f of senderFrames([0, 100, 0, 0], { 1: a, 3: b })) t.onFrame(f);
    expect(t.done).toBe(true);
  });

  it("refuses more data than declared, less data, damaged data, and data after the last file", () => {
    const more = new ReceiveTracker(o, [0, 0, 0, 0]);
    more.onFrame({ type: FRAME.DATA, payload: a });
    expect(() => more.onFrame({ type: FRAME.DATA, payload: b })).toThrow(
      `the sender sent more data than it declared for d/a (${a.length} bytes): transfer stopped`,
    );
    const less = new ReceiveTracker(o, [0, 0, 0, 0]);
    less.onFrame({ type: FRAME.DATA, payload: a.subarray(1) });
    expect(() => less.onFrame({ type: FRAME.FILE_END, payload: new Uint8Array(0) })).toThrow(/sent less data/);
    const early = new ReceiveTracker(o, [0, 0, 0, 0]);
    expect(() => early.onFrame({ type: FRAME.DONE, payload: new Uint8Array(0) })).toThrow(/sent less data/);
    const bad = a.slice();
    bad[12345]! ^= 1;
    const dmg = new ReceiveTracker(o, [0, 0, 0, 0]);
    dmg.onFrame({ type: FRAME.DATA, payload: bad });
    const e = thrown(() => dmg.onFrame({ type: FRAME.FILE_END, payload: new Uint8Array(0) }));
    expect((e as TransferError).code).toBe("damaged");
    expect((e as TransferError).peerText("x")).toBe("d/a arrived damaged (hash mismatch)");
    const after = new ReceiveTracker(o, [0, a.length, 0, b.length]);
    expect(() => after.onFrame({ type: FRAME.DATA, payload: b })).toThrow(/more data than it offered/);
    const stop = new ReceiveTracker(o, [0, 0, 0, 0]);
    expect(() => stop.onFrame({ type: FRAME.ERROR, payload: utf8("stopped") })).toThrow(/peer stopped/);
    const ack = new ReceiveTracker(o, [0, 0, 0, 0]);
    expect(() => ack.onFrame({ type: FRAME.ACK, payload: new Uint8Array(0) })).toThrow(/unexpected Ack frame during data/);
  });

  it("a stream entry is checked against its trailer", () => {
    const s: Offer = { entries: [{ kind: "stream", name: "-" }] };
    const ok = new ReceiveTracker(s, [0]);
    ok.onFrame({ type: FRAME.DATA, payload: b });
    const ev = ok.onFrame({ type: FRAME.FILE_END, payload: encodeStreamEnd(b.length, blake3Hash(b)) });
    expect(ev.kind === "file-end" && ev.size).toBe(5);
    const wrong = new ReceiveTracker(s, [0]);
    wrong.onFrame({ type: FRAME.DATA, payload: b });
    expect(() => wrong.onFrame({ type: FRAME.FILE_END, payload: encodeStreamEnd(6, blake3Hash(b)) })).toThrow(
      /sent less data/,
    );
    const dmg = new ReceiveTracker(s, [0]);
    dmg.onFrame({ type: FRAME.DATA, payload: b });
    expect(() => dmg.onFrame({ type: FRAME.FILE_END, payload: encodeStreamEnd(5, blake3Hash(a)) })).toThrow(
      /arrived damaged/,
    );
  });
});

describe("window flow control", () => {
  it("grant messages", () => {
    expect(parseGrant(grantText(123456))).toBe(123456);
    expect(parseGrant("w 18446744073709551615")).toBe(Number.MAX_SAFE_INTEGER);
    for (const junk of ["", "w", "w ", "w -1", "w +1", "w 1x", "x 12", "w 99999999999999999999", "w 1 ", "c"]) {
      expect(parseGrant(junk), junk).toBeNull();
    }
  });

  it("the sender sends within the highest limit, and the part that fits", () => {
    const c = new SendCredit();
    expect(cost(1)).toBe(MIN_COST);
    expect(c.room(INITIAL_WINDOW)).toBe(INITIAL_WINDOW);
    c.onSent(INITIAL_WINDOW - 1000);
    expect(c.room(65536)).toBe(1000);
    c.onSent(1000 - 200);
    expect(c.room(10)).toBe(0); // 200 left: not even a minimal message
    expect(c.onGrant(INITIAL_WINDOW - 1)).toBe(false); // lower: ignored
    expect(c.onGrant(INITIAL_WINDOW + 10_000)).toBe(true);
    expect(c.room(65536)).toBe(10_200);
  });

  it("the receiver detects an overrun and grants after an eighth of the window, growing it", () => {
    const w = new ReceiveWindow();
    expect(w.admit(INITIAL_WINDOW)).toBe(true);
    expect(w.admit(1)).toBe(false);
    const r = new ReceiveWindow();
    r.admit(4096);
    expect(r.consumed(4096)).toBe(false);
    r.admit(8192);
    expect(r.consumed(8192)).toBe(true);
    // The reader keeps up: the window doubles, and the limit is consumed + window.
    expect(r.nextGrant()).toBe(12288 + 2 * INITIAL_WINDOW);
    expect(r.window).toBe(2 * INITIAL_WINDOW);
    // Not an eighth of the window read since: no grant due.
    r.admit(256);
    expect(r.consumed(256)).toBe(false);
  });

  it("the window stops at 4 MiB and within the pool", () => {
    const r = new ReceiveWindow();
    let consumed = 0;
    for (let i = 0; i < 20; i++) {
      consumed += 1 << 20;
      r.admit(1 << 20);
      r.consumed(1 << 20);
      r.nextGrant();
    }
    expect(r.window).toBe(MAX_WINDOW);
    expect(r.granted).toBe(consumed + MAX_WINDOW);
    const pool = new WindowPool(INITIAL_WINDOW);
    const small = new ReceiveWindow(pool);
    small.admit(20_000);
    small.consumed(20_000);
    small.nextGrant();
    expect(small.window).toBe(2 * INITIAL_WINDOW);
    small.admit(40_000);
    small.consumed(40_000);
    small.nextGrant();
    expect(small.window).toBe(2 * INITIAL_WINDOW); // pool spent
  });

  it("splits bytes into messages of at most 64 KiB", () => {
    const parts = splitMessages(new Uint8Array(150_000));
    expect(parts.map((p) => p.length)).toEqual([65536, 65536, 18928]);
  });
});
