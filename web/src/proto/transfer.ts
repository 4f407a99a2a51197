/**
 * The yakk/2 file transfer protocol's wire codec, transfer version 1 (docs/yakk2-transfer.md;
 * crates/yakk-transfer/src/wire.rs), free of I/O and usable by both roles: frame encoding and
 * an incremental {@link FrameReader} that checks each header's bounds before buffering the
 * payload, and the HELLO, OFFER, ACCEPT, FILE_END, REFUSE/ERROR codecs with every check the
 * Rust decoders make (names, duplicates, a file used as a folder, counts, sizes). Beside it:
 * names.ts (the rules for a name), hash.ts (BLAKE3), data.ts (the data phase of each role),
 * window.ts (a stream's messages and `window` flow control).
 *
 * Sizes are JavaScript numbers: a size above 2^53 − 1 is refused as a protocol error
 * (the Rust side accepts up to 2^64 − 1; no browser holds such a file).
 */

import { concat, fromUtf8, fromUtf8Lossy, U64_MAX, u32be, u64be, utf8 } from "./bytes.js";
import { escape } from "./text.js";
import { TransferError, protocolError, unsafeName } from "./errors.js";
import { MAX_NAME_BYTES, validateName, isPartialName } from "./names.js";

export { TransferError } from "./errors.js";
export type { TransferErrorCode } from "./errors.js";

/** Frame types. */
export const FRAME = {
  HELLO: 1,
  OFFER: 2,
  ACCEPT: 3,
  REFUSE: 4,
  DATA: 5,
  FILE_END: 6,
  DONE: 7,
  ERROR: 8,
  ACK: 9,
} as const;
export type FrameType = (typeof FRAME)[keyof typeof FRAME];

/** The name of a frame type, as the Rust `Frame` enum's Debug prints it. */
export const FRAME_NAMES: Record<FrameType, string> = {
  1: "Hello",
  2: "Offer",
  3: "Accept",
  4: "Refuse",
  5: "Data",
  6: "FileEnd",
  7: "Done",
  8: "Error",
  9: "Ack",
};

/** `"yakk-transfer"`, the start of HELLO. */
export const MAGIC = utf8("yakk-transfer");
/** The transfer protocol version spoken here. */
export const TRANSFER_VERSION = 1;
/** Largest OFFER payload. */
export const MAX_OFFER_BYTES = 64 << 20;
/** Most entries in an offer. */
export const MAX_ENTRIES = 1_000_000;
/** Largest DATA payload; also the sender's chunk size for files. */
export const MAX_DATA = 1 << 20;
/** Largest REFUSE / ERROR text, in bytes. */
export const MAX_TEXT = 1024;
/** Hash algorithm id of BLAKE3. */
export const HASH_BLAKE3 = 1;
/** The text of every REFUSE yakk's receiver sends. */
export const DECLINED = "declined";
/** The ERROR text of a side whose user stopped the transfer. */
export const STOPPED = "stopped";
/** What a receiver says of its own failures (disk full, permission denied). */
export const RECEIVER_LOCAL_FAILURE = "the receiver could not save the files";
/** What a sender says of its own failures. */
export const SENDER_LOCAL_FAILURE = "the sender could not read its files";

/** Payload length bounds `[min, max]` of each frame type. */
export function frameBounds(type: FrameType): [number, number] {
  switch (type) {
    case FRAME.HELLO:
      return [15, 15];
    case FRAME.OFFER:
      return [6, MAX_OFFER_BYTES];
    case FRAME.ACCEPT:
      return [4, 4 + 8 * MAX_ENTRIES];
    case FRAME.REFUSE:
    case FRAME.ERROR:
      return [0, MAX_TEXT];
    case FRAME.DATA:
      return [1, MAX_DATA];
    case FRAME.FILE_END:
      return [0, 41];
    case FRAME.DONE:
    case FRAME.ACK:
      return [0, 0];
  }
}

function isFrameType(t: number): t is FrameType {
  return Number.isInteger(t) && t >= 1 && t <= 9;
}

/** A whole frame: `type ‖ length (u32 BE) ‖ payload`. Throws if the payload is out of bounds. */
export function encodeFrame(type: FrameType, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  const [min, max] = frameBounds(type);
  if (payload.length < min || payload.length > max) {
    throw new RangeError(`${FRAME_NAMES[type]} payload of ${payload.length} bytes (allowed ${min}..=${max})`);
  }
  const out = new Uint8Array(5 + payload.length);
  out[0] = type;
  new DataView(out.buffer).setUint32(1, payload.length);
  out.set(payload, 5);
  return out;
}

/** Checks a 5-byte frame header: the type and its length bounds. */
export function decodeFrameHeader(header: Uint8Array): { type: FrameType; length: number } {
  const t = header[0]!;
  if (!isFrameType(t)) throw protocolError(`unknown frame type ${t}`);
  const length = new DataView(header.buffer, header.byteOffset, 5).getUint32(1);
  const [min, max] = frameBounds(t);
  if (length < min || length > max) {
    throw protocolError(`${FRAME_NAMES[t]} frame of ${length} bytes (allowed ${min}..=${max})`);
  }
  return { type: t, length };
}

/** One frame read off the stream. */
export interface Frame {
  type: FrameType;
  payload: Uint8Array;
}

/**
 * Splits a byte stream (data-channel messages of any size) into frames. Each header is
 * checked as soon as its 5 bytes are in, before any of its payload is kept; a payload is
 * held only as its bytes arrive. After an error the reader stays failed.
 */
export class FrameReader {
  #chunks: Uint8Array[] = [];
  #head = 0;
  #buffered = 0;
  #header: { type: FrameType; length: number } | null = null;
  #failed: TransferError | null = null;

  /** Bytes received and not yet handed out as frames. */
  get buffered(): number {
    return this.#buffered;
  }

  /** Whether the stream is between frames (a clean place for it to end). */
  get atBoundary(): boolean {
    return this.#buffered === 0 && this.#header === null;
  }

  /** The frame being read, once its header is in (for progress on large payloads). */
  get pendingHeader(): { type: FrameType; length: number } | null {
    return this.#header;
  }

  /** Adds received bytes and returns every frame now complete. */
  push(bytes: Uint8Array): Frame[] {
    if (this.#failed) throw this.#failed;
    if (bytes.length > 0) {
      this.#chunks.push(bytes);
      this.#buffered += bytes.length;
    }
    const out: Frame[] = [];
    try {
      for (;;) {
        if (this.#header === null) {
          if (this.#buffered < 5) break;
          this.#header = decodeFrameHeader(this.#take(5));
        }
        if (this.#buffered < this.#header.length) break;
        out.push({ type: this.#header.type, payload: this.#take(this.#header.length) });
        this.#header = null;
      }
    } catch (e) {
      this.#failed = e as TransferError;
      throw e;
    }
    return out;
  }

  #take(n: number): Uint8Array {
    this.#buffered -= n;
    const first = this.#chunks[this.#head];
    if (first !== undefined && first.length >= n) {
      const out = first.subarray(0, n);
      this.#consume(first, n);
      return out;
    }
    const out = new Uint8Array(n);
    let o = 0;
    while (o < n) {
      const c = this.#chunks[this.#head]!;
      const k = Math.min(c.length, n - o);
      out.set(c.subarray(0, k), o);
      o += k;
      this.#consume(c, k);
    }
    return out;
  }

  /** Drops `k` bytes of the head chunk `c`; compacts the list now and then. */
  #consume(c: Uint8Array, k: number): void {
    if (k < c.length) {
      this.#chunks[this.#head] = c.subarray(k);
      return;
    }
    this.#head++;
    if (this.#head === this.#chunks.length) {
      this.#chunks = [];
      this.#head = 0;
    } else if (this.#head >= 1024 && this.#head * 2 >= this.#chunks.length) {
      this.#chunks = this.#chunks.slice(this.#head);
      this.#head = 0;
    }
  }
}

// ---------------------------------------------------------------- HELLO

/** The receiver's HELLO payload: magic and version. */
export function encodeHello(version = TRANSFER_VERSION): Uint8Array {
  const v = new Uint8Array(15);
  v.set(MAGIC);
  v[13] = version >> 8;
  v[14] = version & 0xff;
  return v;
}

/** Checks a HELLO payload; the peer's version (the caller answers ERROR unless it is 1). */
export function decodeHello(p: Uint8Array): number {
  if (p.length !== 15 || MAGIC.some((b, i) => p[i] !== b)) {
    throw protocolError("the peer is not a yakk file receiver");
  }
  return (p[13]! << 8) | p[14]!;
}

/** The ERROR text of a sender that does not speak the receiver's version. */
export function unsupportedVersionText(version: number): string {
  return new TransferError("version", versionMessage(version)).message;
}

function versionMessage(version: number): string {
  return `the peer speaks transfer protocol version ${version}, this yakk speaks version 1: update yakk on both sides`;
}

// ---------------------------------------------------------------- OFFER

/** One entry of an offer. */
export type OfferEntry =
  | { kind: "dir"; name: string }
  | { kind: "file"; name: string; size: number; hash: Uint8Array }
  | { kind: "stream"; name: string };

/** A decoded, checked offer. */
export interface Offer {
  entries: OfferEntry[];
}

const KIND_BYTE = { dir: 0, file: 1, stream: 2 } as const;

/** The OFFER payload. */
export function encodeOffer(offer: Offer): Uint8Array {
  const parts: Uint8Array[] = [new Uint8Array([0, TRANSFER_VERSION]), u32be(offer.entries.length)];
  for (const e of offer.entries) {
    const name = utf8(e.name);
    const head = new Uint8Array(3);
    head[0] = KIND_BYTE[e.kind];
    head[1] = name.length >> 8;
    head[2] = name.length & 0xff;
    parts.push(head, name);
    if (e.kind === "file") {
      if (e.hash.length !== 32) throw new RangeError("a BLAKE3 hash is 32 bytes");
      parts.push(u64be(e.size), new Uint8Array([HASH_BLAKE3]), e.hash);
    }
  }
  return concat(...parts);
}

class Cursor {
  #view: DataView;
  #at = 0;
  constructor(readonly bytes: Uint8Array, readonly what: string) {
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  }
  get rest(): number {
    return this.bytes.length - this.#at;
  }
  #need(n: number): void {
    if (this.rest < n) throw protocolError(`truncated ${this.what}`);
  }
  take(n: number): Uint8Array {
    this.#need(n);
    const out = this.bytes.subarray(this.#at, this.#at + n);
    this.#at += n;
    return out;
  }
  u8(): number {
    this.#need(1);
    return this.#view.getUint8(this.#at++);
  }
  u16(): number {
    this.#need(2);
    const v = this.#view.getUint16(this.#at);
    this.#at += 2;
    return v;
  }
  u32(): number {
    this.#need(4);
    const v = this.#view.getUint32(this.#at);
    this.#at += 4;
    return v;
  }
  u64(): bigint {
    this.#need(8);
    const v = this.#view.getBigUint64(this.#at);
    this.#at += 8;
    return v;
  }
}

function safeSize(v: bigint): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw protocolError("a size too large for this receiver");
  return Number(v);
}

/**
 * Decodes and checks an OFFER payload as the Rust `decode_offer` does: version, count
 * (1..=1 000 000, at most a quarter of the payload), every name, hash algorithm, the sum of
 * sizes within 64 bits, no trailing bytes, no duplicate, nothing under a file, a stream
 * only alone. With `forReceiver` (default) it also refuses names reserved for partial
 * files, as yakk's receiver does before it asks its person.
 */
export function decodeOffer(p: Uint8Array, forReceiver = true): Offer {
  const c = new Cursor(p, "offer");
  const version = c.u16();
  if (version !== TRANSFER_VERSION) throw new TransferError("version", versionMessage(version));
  const count = c.u32();
  if (count === 0) throw protocolError("empty offer");
  if (count > MAX_ENTRIES) {
    throw protocolError(`offer of ${count} entries, more than the limit of ${MAX_ENTRIES}`);
  }
  if (count > Math.floor(p.length / 4)) throw protocolError("truncated offer");
  const entries: OfferEntry[] = [];
  let total = 0n;
  const sizes: bigint[] = [];
  for (let i = 0; i < count; i++) {
    const kind = c.u8();
    const len = c.u16();
    if (len > MAX_NAME_BYTES) throw protocolError("name longer than 4096 bytes in offer");
    let name: string;
    try {
      name = fromUtf8(c.take(len));
    } catch (e) {
      if (e instanceof TransferError) throw e;
      throw protocolError("name in offer is not UTF-8");
    }
    validateName(name);
    if (kind === 0) entries.push({ kind: "dir", name });
    else if (kind === 1) {
      const size = c.u64();
      const alg = c.u8();
      if (alg !== HASH_BLAKE3) throw protocolError(`unknown hash algorithm ${alg}`);
      const hash = c.take(32).slice();
      total += size;
      if (total > U64_MAX) throw protocolError("offer sizes overflow");
      sizes.push(size);
      entries.push({ kind: "file", name, size: 0, hash });
    } else if (kind === 2) entries.push({ kind: "stream", name });
    else throw protocolError(`unknown entry kind ${kind}`);
  }
  if (c.rest !== 0) throw protocolError("trailing bytes after offer");
  let f = 0;
  for (const e of entries) if (e.kind === "file") e.size = safeSize(sizes[f++]!);
  const offer = { entries };
  checkTree(offer);
  if (forReceiver) {
    for (const e of entries) {
      if (isPartialName(e.name.slice(e.name.lastIndexOf("/") + 1))) {
        throw unsafeName(e.name, "reserved for yakk's partial files");
      }
    }
  }
  return offer;
}

function checkTree(offer: Offer): void {
  const streams = offer.entries.filter((e) => e.kind === "stream").length;
  if (streams > 0 && offer.entries.length !== 1) throw protocolError("a stream entry must be alone in its offer");
  const seen = new Map<string, boolean>();
  for (const e of offer.entries) {
    if (seen.has(e.name)) throw unsafeName(e.name, "offered twice");
    seen.set(e.name, e.kind === "dir");
  }
  for (const e of offer.entries) {
    for (let i = e.name.indexOf("/"); i >= 0; i = e.name.indexOf("/", i + 1)) {
      if (seen.get(e.name.slice(0, i)) === false) {
        throw unsafeName(e.name, "inside a name that is offered as a file");
      }
    }
  }
}

// ---------------------------------------------------------------- ACCEPT

/** The ACCEPT payload: one offset per entry, in offer order. */
export function encodeAccept(offsets: readonly number[]): Uint8Array {
  return concat(u32be(offsets.length), ...offsets.map((o) => u64be(o)));
}

/** Decodes an ACCEPT for `offer`: the count must match and no offset exceed its entry. */
export function decodeAccept(p: Uint8Array, offer: Offer): number[] {
  const c = new Cursor(p, "offer"); // Rust says "truncated offer" here too
  const n = c.u32();
  if (n !== offer.entries.length || c.rest !== n * 8) throw protocolError("accept does not match the offer");
  return offer.entries.map((e) => {
    const off = c.u64();
    const max = e.kind === "file" ? BigInt(e.size) : 0n;
    if (off > max) throw protocolError("accept offset beyond the end of a file");
    return Number(off);
  });
}

// ---------------------------------------------------------------- FILE_END

/** The FILE_END payload of a stream entry: size, algorithm, hash. */
export function encodeStreamEnd(size: number, hash: Uint8Array): Uint8Array {
  if (hash.length !== 32) throw new RangeError("a BLAKE3 hash is 32 bytes");
  return concat(u64be(size), new Uint8Array([HASH_BLAKE3]), hash);
}

/** Decodes the FILE_END trailer of a stream entry. */
export function decodeStreamEnd(p: Uint8Array): { size: number; hash: Uint8Array } {
  if (p.length !== 41 || p[8] !== HASH_BLAKE3) throw protocolError("bad end of stream");
  const size = new DataView(p.buffer, p.byteOffset, 8).getBigUint64(0);
  return { size: safeSize(size), hash: p.slice(9) };
}

// ---------------------------------------------------------------- REFUSE / ERROR

/** A REFUSE / ERROR text, cut to 1024 bytes on a character boundary. */
export function encodeText(s: string): Uint8Array {
  const b = utf8(s);
  if (b.length <= MAX_TEXT) return b;
  let end = MAX_TEXT;
  while (end > 0 && (b[end]! & 0xc0) === 0x80) end--;
  return b.slice(0, end);
}

/** A REFUSE / ERROR text as it may be shown: lossy UTF-8, escaped. */
export function decodeText(p: Uint8Array): string {
  return escape(fromUtf8Lossy(p));
}

/** The error an ERROR payload stands for: the peer stopped, or gave up. */
export function peerError(p: Uint8Array): TransferError {
  const text = fromUtf8Lossy(p);
  if (text === STOPPED && p.length === STOPPED.length) {
    return new TransferError("peer-stopped", "the peer stopped the transfer");
  }
  return new TransferError("peer-error", `the peer gave up: ${decodeText(p)}`);
}

/** The error a REFUSE payload stands for. */
export function peerRefused(p: Uint8Array): TransferError {
  const reason = decodeText(p);
  const suffix = reason === "" || reason === DECLINED ? "" : `: ${reason}`;
  return new TransferError("refused", `the receiver declined the transfer${suffix}`);
}
