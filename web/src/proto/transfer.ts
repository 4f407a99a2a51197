/**
 * The yakk/2 file transfer protocol, transfer version 1 (docs/yakk2-transfer.md;
 * crates/yakk-transfer/src/wire.rs), free of I/O and usable by both roles: frame
 * encoding and an incremental {@link FrameReader} that checks each header's bounds before
 * buffering the payload; the HELLO, OFFER, ACCEPT, FILE_END, REFUSE/ERROR codecs with
 * every check the Rust decoders make (names, duplicates, a file used as a folder, counts,
 * sizes); BLAKE3 hashing; the receiver's data-phase rules ({@link ReceiveTracker}) and
 * the sender's plan ({@link dataPlan}); and the per-stream `window` flow control of
 * docs/yakk2.md ({@link SendCredit}, {@link ReceiveWindow}).
 *
 * Sizes are JavaScript numbers: a size above 2^53 − 1 is refused as a protocol error
 * (the Rust side accepts up to 2^64 − 1; no browser holds such a file).
 */

import { blake3 } from "@noble/hashes/blake3.js";
import { createBLAKE3 } from "hash-wasm";

import { concat, fromUtf8, fromUtf8Lossy, u32be, u64be, utf8 } from "./bytes.js";
import { escape } from "./text.js";

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
/** Longest name / component, deepest nesting. */
export const MAX_NAME_BYTES = 4096;
export const MAX_COMPONENT_BYTES = 255;
export const MAX_DEPTH = 128;

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

/** Kinds of failure, after the Rust `TransferError` variants that cross the wire. */
export type TransferErrorCode =
  | "protocol"
  | "version"
  | "unsafe-name"
  | "size"
  | "damaged"
  | "refused"
  | "peer-error"
  | "peer-stopped";

/** A failure of the transfer; `message` is the Rust error's text. */
export class TransferError extends Error {
  readonly code: TransferErrorCode;
  constructor(code: TransferErrorCode, message: string) {
    super(message);
    this.name = "TransferError";
    this.code = code;
  }

  /**
   * The ERROR text to send the peer for this failure (Rust `peer_text`): what the peer did
   * wrong is named; anything else becomes `local` (e.g. {@link RECEIVER_LOCAL_FAILURE}).
   */
  peerText(local: string): string {
    switch (this.code) {
      case "protocol":
      case "version":
      case "unsafe-name":
      case "size":
        return this.message;
      case "damaged":
        return this.message.replace(/: it was discarded.*$/, "");
      default:
        return local;
    }
  }
}

function proto(msg: string): TransferError {
  return new TransferError("protocol", `protocol error: ${msg}`);
}

function unsafeName(name: string, reason: string): TransferError {
  return new TransferError("unsafe-name", `unsafe name in the offer: ${escape(name)}: ${reason}`);
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
  if (!isFrameType(t)) throw proto(`unknown frame type ${t}`);
  const length = new DataView(header.buffer, header.byteOffset, 5).getUint32(1);
  const [min, max] = frameBounds(t);
  if (length < min || length > max) {
    throw proto(`${FRAME_NAMES[t]} frame of ${length} bytes (allowed ${min}..=${max})`);
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
    throw proto("the peer is not a yakk file receiver");
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

// ---------------------------------------------------------------- names

function isControl(cp: number): boolean {
  return cp <= 0x1f || (cp >= 0x7f && cp <= 0x9f);
}

/** One component's problem, or `null` (Rust `names::check_component`). */
export function checkComponent(part: string): string | null {
  if (part.length === 0) return "empty path component";
  if (part === "." || part === "..") return "`.` or `..` path component";
  if (utf8(part).length > MAX_COMPONENT_BYTES) return "path component longer than 255 bytes";
  for (const ch of part) {
    if (ch === "\\") return "backslash in name";
    if (ch === ":") return "colon in name (drive letter or stream name)";
    if (ch === "/") return "slash in name";
    if (isControl(ch.codePointAt(0)!)) return "control character in name";
  }
  return null;
}

/** Checks a relative `/`-separated name (Rust `names::validate`); its components. */
export function validateName(name: string): string[] {
  if (name.length === 0) throw unsafeName(name, "empty name");
  if (utf8(name).length > MAX_NAME_BYTES) throw unsafeName(name, "name too long");
  if (name.startsWith("/")) throw unsafeName(name, "absolute path");
  const parts = name.split("/");
  if (parts.length > MAX_DEPTH) throw unsafeName(name, "folders nested too deep");
  for (const p of parts) {
    const why = checkComponent(p);
    if (why !== null) throw unsafeName(name, why);
  }
  return parts;
}

/** Whether a last component is of the form `.yakk-*.part`, reserved for partial files. */
export function isPartialName(component: string): boolean {
  return component.startsWith(".yakk-") && component.endsWith(".part");
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
    if (this.rest < n) throw proto(`truncated ${this.what}`);
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

const U64_MAX = (1n << 64n) - 1n;

function safeSize(v: bigint): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw proto("a size too large for this receiver");
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
  if (count === 0) throw proto("empty offer");
  if (count > MAX_ENTRIES) {
    throw proto(`offer of ${count} entries, more than the limit of ${MAX_ENTRIES}`);
  }
  if (count > Math.floor(p.length / 4)) throw proto("truncated offer");
  const entries: OfferEntry[] = [];
  let total = 0n;
  const sizes: bigint[] = [];
  for (let i = 0; i < count; i++) {
    const kind = c.u8();
    const len = c.u16();
    if (len > MAX_NAME_BYTES) throw proto("name longer than 4096 bytes in offer");
    let name: string;
    try {
      name = fromUtf8(c.take(len));
    } catch (e) {
      if (e instanceof TransferError) throw e;
      throw proto("name in offer is not UTF-8");
    }
    validateName(name);
    if (kind === 0) entries.push({ kind: "dir", name });
    else if (kind === 1) {
      const size = c.u64();
      const alg = c.u8();
      if (alg !== HASH_BLAKE3) throw proto(`unknown hash algorithm ${alg}`);
      const hash = c.take(32).slice();
      total += size;
      if (total > U64_MAX) throw proto("offer sizes overflow");
      sizes.push(size);
      entries.push({ kind: "file", name, size: 0, hash });
    } else if (kind === 2) entries.push({ kind: "stream", name });
    else throw proto(`unknown entry kind ${kind}`);
  }
  if (c.rest !== 0) throw proto("trailing bytes after offer");
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
  if (streams > 0 && offer.entries.length !== 1) throw proto("a stream entry must be alone in its offer");
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
  if (n !== offer.entries.length || c.rest !== n * 8) throw proto("accept does not match the offer");
  return offer.entries.map((e) => {
    const off = c.u64();
    const max = e.kind === "file" ? BigInt(e.size) : 0n;
    if (off > max) throw proto("accept offset beyond the end of a file");
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
  if (p.length !== 41 || p[8] !== HASH_BLAKE3) throw proto("bad end of stream");
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

// ---------------------------------------------------------------- BLAKE3

/** An incremental BLAKE3-256 hasher. */
export interface Hasher {
  update(data: Uint8Array): Hasher;
  digest(): Uint8Array;
}

/** A new incremental BLAKE3 hasher. */
export function blake3Hasher(): Hasher {
  const h = blake3.create({});
  return {
    update(data: Uint8Array) {
      h.update(data);
      return this;
    },
    digest: () => h.digest(),
  };
}

/** BLAKE3 of `data`. */
export function blake3Hash(data: Uint8Array): Uint8Array {
  return blake3(data);
}

/**
 * A new incremental BLAKE3 hasher for bulk data: WebAssembly (`hash-wasm`, about 12 times
 * faster than JavaScript: hashing was the page's bottleneck when receiving), or the JavaScript
 * one where the page may not compile WebAssembly (no support, or a policy without
 * `'wasm-unsafe-eval'`).
 */
export async function bulkBlake3Hasher(): Promise<Hasher> {
  if (wasmUsable !== false) {
    try {
      const h = await createBLAKE3(256);
      h.init();
      wasmUsable = true;
      const hasher: Hasher = {
        update(data: Uint8Array) {
          h.update(data);
          return hasher;
        },
        digest: () => h.digest("binary"),
      };
      return hasher;
    } catch {
      wasmUsable = false;
    }
  }
  return blake3Hasher();
}

/** Whether WebAssembly hashing worked here: unknown until first tried. */
let wasmUsable: boolean | null = null;

/** Which implementation [`bulkBlake3Hasher`] gives: for tests and diagnostics. */
export function bulkHasherKind(): "wasm" | "js" | "untried" {
  return wasmUsable === null ? "untried" : wasmUsable ? "wasm" : "js";
}

// ---------------------------------------------------------------- data phase

/** One file (or the stream) that gets data, with the byte range it gets. */
export interface PlannedFile {
  index: number;
  entry: OfferEntry;
  /** First byte sent (the accepted offset). */
  from: number;
  /** End of the data; `null` for a stream (unknown). */
  to: number | null;
}

/**
 * The entries that get DATA frames and FILE_END, in offer order: files with
 * `offset < size`, and the stream. The sender sends each range in chunks of
 * {@link MAX_DATA} ({@link chunkRanges}), then FILE_END; then DONE.
 */
export function dataPlan(offer: Offer, offsets: readonly number[]): PlannedFile[] {
  const out: PlannedFile[] = [];
  offer.entries.forEach((entry, index) => {
    const from = offsets[index] ?? 0;
    if (entry.kind === "file" && from < entry.size) out.push({ index, entry, from, to: entry.size });
    else if (entry.kind === "stream") out.push({ index, entry, from: 0, to: null });
  });
  return out;
}

/** `[start, end)` ranges of at most `chunk` bytes covering `from..to`. */
export function chunkRanges(from: number, to: number, chunk = MAX_DATA): [number, number][] {
  const out: [number, number][] = [];
  for (let at = from; at < to; at += chunk) out.push([at, Math.min(to, at + chunk)]);
  return out;
}

/** What the receiver's tracker says of one frame of the data phase. */
export type DataEvent =
  | { kind: "data"; index: number; entry: OfferEntry; bytes: Uint8Array; received: number }
  | { kind: "file-end"; index: number; entry: OfferEntry; size: number; hash: Uint8Array }
  | { kind: "done" };

/**
 * The receiver's data-phase rules (docs/yakk2-transfer.md §4): which entry is current,
 * declared sizes enforced, the BLAKE3 of each file checked at FILE_END, DONE only after
 * every file. Give it each frame after ACCEPT; a {@link TransferError} says what to send
 * as ERROR ({@link TransferError.peerText}). An ERROR frame throws the peer's error.
 *
 * For a resumed file (offset > 0) the caller must pass the bytes it holds through
 * {@link hashPrefix} before the file's data arrives.
 */
export class ReceiveTracker {
  readonly #plan: PlannedFile[];
  #at = 0;
  #received = 0;
  #hasher: Hasher = blake3Hasher();
  #done = false;

  constructor(offer: Offer, offsets: readonly number[]) {
    this.#plan = dataPlan(offer, offsets);
  }

  /** The planned files, in the order their data comes. */
  get plan(): readonly PlannedFile[] {
    return this.#plan;
  }

  /** The file whose data comes next, or `null` after the last. */
  get current(): PlannedFile | null {
    return this.#plan[this.#at] ?? null;
  }

  /** Whether DONE was received. */
  get done(): boolean {
    return this.#done;
  }

  /** Feeds bytes the receiver already holds of the current file (resume) to its hash. */
  hashPrefix(bytes: Uint8Array): void {
    this.#hasher.update(bytes);
  }

  /** Takes one frame of the data phase (the Rust receiver's checks and texts). */
  onFrame(f: Frame): DataEvent {
    if (this.#done) throw proto(`unexpected ${FRAME_NAMES[f.type]} frame after the end`);
    const cur = this.current;
    if (f.type === FRAME.ERROR) throw peerError(f.payload);
    if (cur === null) {
      if (f.type === FRAME.DONE) {
        this.#done = true;
        return { kind: "done" };
      }
      if (f.type === FRAME.DATA) throw proto("the sender sent more data than it offered");
      throw proto(`unexpected ${FRAME_NAMES[f.type]} frame at the end`);
    }
    switch (f.type) {
      case FRAME.DATA: {
        if (cur.to !== null && cur.from + this.#received + f.payload.length > cur.to) {
          throw sizeError(cur.entry.name, "more", cur.to);
        }
        this.#received += f.payload.length;
        this.#hasher.update(f.payload);
        return {
          kind: "data",
          index: cur.index,
          entry: cur.entry,
          bytes: f.payload,
          received: cur.from + this.#received,
        };
      }
      case FRAME.FILE_END: {
        const got = cur.from + this.#received;
        let size: number;
        let want: Uint8Array;
        if (cur.entry.kind === "file") {
          if (f.payload.length !== 0) throw proto("file end with a trailer for a file of known size");
          if (got < cur.entry.size) throw sizeError(cur.entry.name, "less", cur.entry.size);
          size = cur.entry.size;
          want = cur.entry.hash;
        } else {
          const end = decodeStreamEnd(f.payload);
          if (end.size !== got) throw sizeError(cur.entry.name, end.size > got ? "less" : "more", end.size);
          size = end.size;
          want = end.hash;
        }
        const hash = this.#hasher.digest();
        if (!sameBytes(want, hash)) throw damaged(cur.entry.name);
        this.#at++;
        this.#received = 0;
        this.#hasher = blake3Hasher();
        return { kind: "file-end", index: cur.index, entry: cur.entry, size, hash };
      }
      case FRAME.DONE:
        throw sizeError(cur.entry.name, "less", cur.to ?? cur.from + this.#received);
      default:
        throw proto(`unexpected ${FRAME_NAMES[f.type]} frame during data`);
    }
  }
}

function sizeError(name: string, what: "more" | "less", declared: number): TransferError {
  return new TransferError(
    "size",
    `the sender sent ${what} data than it declared for ${escape(name)} (${declared} bytes): transfer stopped`,
  );
}

function damaged(name: string): TransferError {
  return new TransferError(
    "damaged",
    `${escape(name)} arrived damaged (hash mismatch): it was discarded; ask the sender for a new code to try again`,
  );
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

// ---------------------------------------------------------------- stream messages and `window`

/** Largest data-channel message between yakk/2 peers. */
export const MAX_MESSAGE = 64 * 1024;
/** The end-of-stream marker: the empty string message. */
export const END_OF_STREAM = "";
/** The closing message of the channel's opener, once both markers passed. */
export const CLOSE_MESSAGE = "c";
/** Every data message costs at least this much credit. */
export const MIN_COST = 256;
/** Credit each direction of a stream starts with, implied. */
export const INITIAL_WINDOW = 64 * 1024;
/** The largest window one stream grows to. */
export const MAX_WINDOW = 4 * 1024 * 1024;
/** Growth beyond the initial windows that all streams of a connection share. */
export const WINDOW_POOL = 32 * 1024 * 1024;
/** Seconds a side waits for the other's part of the closing before closing by itself. */
export const CLOSE_TIMEOUT_MS = 10_000;

/** The credit a data message of `len` bytes costs. */
export function cost(len: number): number {
  return Math.max(len, MIN_COST);
}

/** The grant message `w <limit>`. */
export function grantText(limit: number): string {
  return `w ${limit}`;
}

/**
 * The limit of a grant message, or `null` for anything else (the message is then ignored).
 * Limits beyond 2^53 − 1 are held as 2^53 − 1, which no stream reaches.
 */
export function parseGrant(text: string): number | null {
  if (!text.startsWith("w ")) return null;
  const digits = text.slice(2);
  if (digits.length === 0 || digits.length > 20 || !/^[0-9]+$/.test(digits)) return null;
  const v = BigInt(digits);
  if (v > U64_MAX) return null;
  return v > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(v);
}

/** Splits bytes into data-channel messages of at most `max` bytes (views, not copies). */
export function splitMessages(bytes: Uint8Array, max = MAX_MESSAGE): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let at = 0; at < bytes.length; at += max) out.push(bytes.subarray(at, Math.min(bytes.length, at + max)));
  return out;
}

/** The sending side of one stream's `window`: how much the peer lets us send. */
export class SendCredit {
  #sent = 0;
  #limit = INITIAL_WINDOW;

  /** The peer's highest limit so far. */
  get limit(): number {
    return this.#limit;
  }

  /** Total cost sent. */
  get sent(): number {
    return this.#sent;
  }

  /** A grant from the peer; a lower limit is ignored. Whether it raised the limit. */
  onGrant(limit: number): boolean {
    if (limit <= this.#limit) return false;
    this.#limit = limit;
    return true;
  }

  /**
   * How many of `len` bytes may go now as one message: all of them, or the part that fits
   * (at least {@link MIN_COST}), or 0 when not even a minimal message fits.
   */
  room(len: number): number {
    const avail = Math.max(0, this.#limit - this.#sent);
    if (cost(len) <= avail) return len;
    if (avail >= MIN_COST) return avail;
    return 0;
  }

  /** A message of `len` bytes was sent. */
  onSent(len: number): void {
    this.#sent += cost(len);
  }
}

/** Shares window growth among the streams of one connection. */
export class WindowPool {
  #used = 0;
  constructor(readonly limit = WINDOW_POOL) {}
  take(n: number): boolean {
    if (this.#used + n > this.limit) return false;
    this.#used += n;
    return true;
  }
  give(n: number): void {
    this.#used = Math.max(0, this.#used - n);
  }
}

/**
 * The receiving side of one stream's `window`: overrun detection and the grants, with the
 * window doubling (up to {@link MAX_WINDOW}, within the pool) while the reader keeps up.
 */
export class ReceiveWindow {
  #received = 0;
  #consumed = 0;
  #granted = INITIAL_WINDOW;
  #window = INITIAL_WINDOW;
  readonly #pool: WindowPool;

  constructor(pool: WindowPool = new WindowPool()) {
    this.#pool = pool;
  }

  /** The current window. */
  get window(): number {
    return this.#window;
  }

  /** The limit last granted. */
  get granted(): number {
    return this.#granted;
  }

  /** A data message of `len` bytes arrived; `false` when it overran the grant (close the stream). */
  admit(len: number): boolean {
    this.#received += cost(len);
    return this.#received <= this.#granted;
  }

  /** The application took a message of `len` bytes; whether a grant is now due. */
  consumed(len: number): boolean {
    this.#consumed += cost(len);
    return this.#consumed + this.#window >= this.#granted + this.#window / 8;
  }

  /**
   * The next limit to grant (send {@link grantText} of it), or `null` if none is due.
   * Doubles the window first if less than a quarter of it waits unread.
   */
  nextGrant(): number | null {
    const unread = Math.max(0, this.#received - this.#consumed);
    if (unread <= this.#window / 4 && this.#window < MAX_WINDOW && this.#pool.take(this.#window)) {
      this.#window *= 2;
    }
    const limit = this.#consumed + this.#window;
    if (limit < this.#granted + this.#window / 8) return null;
    this.#granted = limit;
    return limit;
  }

  /** Returns this stream's growth to the pool (when the stream closes). */
  release(): void {
    this.#pool.give(this.#window - INITIAL_WINDOW);
  }
}
