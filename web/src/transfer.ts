/**
 * The file transfer protocol (docs/yakk2-transfer.md, transfer version 1) over a
 * {@link DataStream}: the browser as the receiver (it opened the stream; it joined with a
 * code) and as the sender (it owns the room).
 */

import { blake3Hash, bulkBlake3Hasher } from "./proto/hash";
import {
  decodeAccept,
  decodeFrameHeader,
  decodeHello,
  decodeOffer as decodeOfferCore,
  decodeStreamEnd,
  decodeText,
  encodeAccept,
  encodeFrame,
  encodeHello,
  encodeOffer as encodeOfferCore,
  encodeText,
  unsupportedVersionText,
  type FrameType,
  type Offer,
  type OfferEntry,
} from "./proto/transfer";
import { escape } from "./proto/text";
import { DataStream } from "./stream";

export const HELLO = 1,
  OFFER = 2,
  ACCEPT = 3,
  REFUSE = 4,
  DATA = 5,
  FILE_END = 6,
  DONE = 7,
  ERROR = 8,
  ACK = 9;

const CHUNK = 1024 * 1024;

export class TransferError extends Error {
  constructor(
    message: string,
    /** Who is to blame, for the text shown. */
    readonly kind: "peer" | "declined" | "damaged" | "protocol" | "gone" | "local",
  ) {
    super(message);
  }
}

export interface Entry {
  kind: 0 | 1 | 2;
  name: string;
  size: number;
  hash: Uint8Array | null;
}

/** Shows text from the peer escaped: control, bidi and invisible format characters as \u{…}. */
export const escapeText = escape;

const frame = (type: number, payload: Uint8Array): Uint8Array => encodeFrame(type as FrameType, payload);
const text = encodeText;

/** The protocol core's errors, as this page's. */
function core<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    throw e instanceof TransferError ? e : new TransferError(e instanceof Error ? e.message : String(e), "protocol");
  }
}

/** A frame's header; the payload is left on the stream. Checks the type's bounds first. */
async function readHeader(s: DataStream): Promise<{ type: number; len: number } | null> {
  const h = await s.readExact(5);
  if (h === null) return null;
  const { type, length: len } = core(() => decodeFrameHeader(h));
  return { type, len };
}

async function readFrame(s: DataStream): Promise<{ type: number; payload: Uint8Array } | null> {
  const h = await readHeader(s);
  if (h === null) return null;
  const payload = await s.readExact(h.len);
  if (payload === null) throw new TransferError("the stream ended in the middle of a frame", "gone");
  return { type: h.type, payload };
}

function peerText(payload: Uint8Array): string {
  return decodeText(payload);
}

/**
 * The peer's first frame, which must be of `type`. A broken one most likely means the other
 * side is no file transfer at all (a code used with the wrong command), so a protocol error
 * says so, asking `guess`; other failures pass unchanged. `closed`: said when the stream ends
 * first.
 */
async function readFirst(
  s: DataStream,
  type: number,
  who: string,
  closed: string,
  guess: string,
): Promise<{ type: number; payload: Uint8Array }> {
  try {
    const f = await readFrame(s);
    if (f === null) throw new TransferError(closed, "gone");
    if (f.type !== type) throw errorFrom(f, who);
    return f;
  } catch (e) {
    if (e instanceof TransferError && e.kind === "protocol") {
      throw new TransferError(`${e.message}: the other side does not speak yakk's file protocol (${guess})`, "protocol");
    }
    throw e;
  }
}

function errorFrom(f: { type: number; payload: Uint8Array }, who: string): TransferError {
  if (f.type === ERROR) {
    const t = peerText(f.payload);
    if (t === "stopped") return new TransferError(`the ${who} stopped the transfer`, "peer");
    return new TransferError(`the ${who} says: ${t}`, "peer");
  }
  if (f.type === REFUSE) return new TransferError(`the ${who} declined the offer`, "declined");
  return new TransferError(`unexpected frame of type ${f.type} from the ${who}`, "protocol");
}

const KIND = { dir: 0, file: 1, stream: 2 } as const;

/** Decodes and checks an offer (the protocol core: names, bounds, tree) into this page's entries. */
export function decodeOffer(p: Uint8Array): { offer: Offer; entries: Entry[] } {
  const offer = core(() => decodeOfferCore(p));
  const entries = offer.entries.map((e: OfferEntry) => ({
    kind: KIND[e.kind],
    name: e.name,
    size: e.kind === "file" ? e.size : 0,
    hash: e.kind === "file" ? e.hash : null,
  }));
  return { offer, entries };
}

export function encodeOffer(entries: Entry[]): Uint8Array {
  return encodeOfferCore({
    entries: entries.map((e): OfferEntry =>
      e.kind === 0
        ? { kind: "dir", name: e.name }
        : e.kind === 1
          ? { kind: "file", name: e.name, size: e.size, hash: e.hash! }
          : { kind: "stream", name: e.name },
    ),
  });
}

/** Rate and ETA over a sliding few seconds. */
export class Meter {
  private samples: [number, number][] = [];
  readonly started = performance.now();
  constructor(readonly total: number | null) {}
  update(done: number): { rate: number; eta: number | null } {
    const now = performance.now();
    this.samples.push([now, done]);
    while (this.samples.length > 2 && now - this.samples[0]![0] > 3000) this.samples.shift();
    const [t0, d0] = this.samples[0]!;
    const dt = (now - t0) / 1000;
    const rate = dt > 0.05 ? (done - d0) / dt : 0;
    const eta = this.total !== null && rate > 0 ? (this.total - done) / rate : null;
    return { rate, eta };
  }
}

export interface ProgressInfo {
  name: string;
  bytes: number;
  total: number | null;
  rate: number;
  eta: number | null;
}

/** Where a received file goes. */
export interface Sink {
  write(chunk: Uint8Array): Promise<void> | void;
  /** The file is complete and verified. */
  finish(): Promise<void> | void;
  /** The transfer failed: drop what was written. */
  discard(): Promise<void> | void;
}

export interface ReceiveHooks {
  /** Shows the offer; resolves with how to save, or null to decline. */
  ask(entries: Entry[]): Promise<((e: Entry) => Promise<Sink>) | null>;
  progress(p: ProgressInfo): void;
}

/** Runs the receiver's side on `s`, which this side opened. */
export async function receive(s: DataStream, hooks: ReceiveHooks): Promise<{ files: number; bytes: number; secs: number }> {
  await s.write(frame(HELLO, encodeHello()));
  const first = await readFirst(s, OFFER, "sender", "the sender closed the stream before its offer", "was this code made for sending files?");
  let entries: Entry[];
  try {
    entries = decodeOffer(first.payload).entries;
  } catch (e) {
    await s.write(frame(ERROR, text(e instanceof Error ? e.message : "a bad offer"))).catch(() => {});
    s.shutdown();
    throw e;
  }
  // While the person decides, a sender that gives up is heard at once.
  const early = readFrame(s);
  early.catch(() => {});
  const decided = await Promise.race([hooks.ask(entries), early.then((f) => ({ early: f }))]);
  if (decided && typeof decided === "object" && "early" in decided) {
    const f = (decided as { early: { type: number; payload: Uint8Array } | null }).early;
    if (f === null) throw new TransferError("the sender went away", "gone");
    throw errorFrom(f, "sender");
  }
  const open = decided as ((e: Entry) => Promise<Sink>) | null;
  if (!open) {
    await s.write(frame(REFUSE, text("declined")));
    s.shutdown();
    await s.closedWithin(2000);
    throw new TransferError("you declined the offer", "declined");
  }
  await s.write(frame(ACCEPT, encodeAccept(entries.map(() => 0))));
  const total = entries.some((e) => e.kind === 2) ? null : entries.reduce((n, e) => n + e.size, 0);
  const meter = new Meter(total);
  let bytes = 0;
  let lastShown = 0;
  const show = (name: string, force = false) => {
    const now = performance.now();
    if (!force && now - lastShown < 250) return;
    lastShown = now;
    const { rate, eta } = meter.update(bytes);
    hooks.progress({ name, bytes, total, rate, eta });
  };
  // The frame that `early` was reading is the first data-phase frame.
  let pending: Promise<{ type: number; payload: Uint8Array } | null> | null = null;
  let files = 0;
  const fail = async (msg: string, kind: TransferError["kind"]) => {
    await s.write(frame(ERROR, text(msg))).catch(() => {});
    s.shutdown();
    return new TransferError(msg, kind);
  };
  // `early` read a whole frame, payload included: fine for small frames, and DATA frames
  // are at most 1 MiB. Later frames are read header first and streamed.
  let carried: { type: number; payload: Uint8Array } | null | undefined = await early;
  const nextHeader = async (): Promise<{ type: number; len: number; payload?: Uint8Array } | null> => {
    if (carried !== undefined) {
      const c = carried;
      carried = undefined;
      return c === null ? null : { type: c.type, len: c.payload.length, payload: c.payload };
    }
    return readHeader(s);
  };
  void pending;
  for (const e of entries) {
    if (e.kind === 0) {
      const sink = await open(e);
      await sink.finish();
      continue;
    }
    const sink = await open(e);
    if (e.kind === 1 && e.size === 0) {
      if (!bytesEqual(blake3Hash(new Uint8Array(0)), e.hash!)) {
        await sink.discard();
        throw await fail(`${escapeText(e.name)} arrived damaged`, "damaged");
      }
      await sink.finish();
      files++;
      continue;
    }
    const h = await bulkBlake3Hasher();
    let got = 0;
    for (;;) {
      const hd = await nextHeader();
      if (hd === null) {
        await sink.discard();
        throw new TransferError("the sender went away in the middle of the transfer", "gone");
      }
      if (hd.type === DATA) {
        if (e.kind === 1 && got + hd.len > e.size) {
          await sink.discard();
          throw await fail("the sender sent more data than it declared", "protocol");
        }
        if (hd.payload) {
          h.update(hd.payload);
          await sink.write(hd.payload);
          got += hd.len;
          bytes += hd.len;
        } else {
          let left = hd.len;
          while (left > 0) {
            const c = await s.read(left);
            if (c === null) {
              await sink.discard();
              throw new TransferError("the sender went away in the middle of the transfer", "gone");
            }
            h.update(c);
            await sink.write(c);
            left -= c.length;
            got += c.length;
            bytes += c.length;
          }
        }
        show(e.name);
        continue;
      }
      if (hd.type === FILE_END) {
        const payload = hd.payload ?? (await s.readExact(hd.len)) ?? new Uint8Array(0);
        let want = e.hash;
        if (e.kind === 2) {
          let trailer: { size: number; hash: Uint8Array };
          try {
            trailer = decodeStreamEnd(payload);
          } catch {
            await sink.discard();
            throw await fail("a stream ended without its trailer", "protocol");
          }
          if (trailer.size !== got) {
            await sink.discard();
            throw await fail("the stream's size differs from the bytes received", "protocol");
          }
          want = trailer.hash;
        } else if (payload.length !== 0 || got !== e.size) {
          await sink.discard();
          throw await fail("the sender sent less data than it declared", "protocol");
        }
        if (!bytesEqual(h.digest(), want!)) {
          await sink.discard();
          throw await fail(`${escapeText(e.name)} arrived damaged`, "damaged");
        }
        await sink.finish();
        files++;
        break;
      }
      await sink.discard();
      if (hd.type === ERROR) {
        const payload = hd.payload ?? (await s.readExact(hd.len)) ?? new Uint8Array(0);
        throw errorFrom({ type: ERROR, payload }, "sender");
      }
      throw await fail(hd.type === DONE ? "the sender sent less data than it declared" : `unexpected frame of type ${hd.type}`, "protocol");
    }
  }
  const end = await nextHeader();
  if (end === null) throw new TransferError("the sender went away before it finished", "gone");
  if (end.type !== DONE) {
    if (end.type === ERROR) {
      const payload = end.payload ?? (await s.readExact(end.len)) ?? new Uint8Array(0);
      throw errorFrom({ type: ERROR, payload }, "sender");
    }
    throw await fail(end.type === DATA ? "data after the last file" : `unexpected frame of type ${end.type}`, "protocol");
  }
  show("", true);
  await s.write(frame(ACK, new Uint8Array(0)));
  s.shutdown();
  // The sender's end-of-stream marker follows its DONE; then the close handshake.
  await s.read(1).catch(() => null);
  await s.closedWithin(3000);
  return { files, bytes, secs: (performance.now() - meter.started) / 1000 };
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i]! ^ b[i]!;
  return d === 0;
}

/** A file to send: its offer entry and where its bytes come from. */
export interface Source {
  entry: Entry;
  file: File | null;
}

/** Hashes `file` (BLAKE3), reporting progress. */
export async function hashFile(file: File, progress: (done: number) => void): Promise<Uint8Array> {
  const h = await bulkBlake3Hasher();
  for (let off = 0; off < file.size; off += 4 * CHUNK) {
    const buf = new Uint8Array(await file.slice(off, off + 4 * CHUNK).arrayBuffer());
    h.update(buf);
    progress(off + buf.length);
  }
  return h.digest();
}

/** Runs the sender's side on `s`, which the receiver opened. */
export async function send(
  s: DataStream,
  sources: Source[],
  progress: (p: ProgressInfo) => void,
): Promise<{ files: number; bytes: number; secs: number }> {
  const hello = await readFirst(s, HELLO, "receiver", "the receiver closed the stream at once", "was this code given to something that receives files?");
  const version = core(() => decodeHello(hello.payload));
  if (version !== 1) {
    await s.write(frame(ERROR, text(unsupportedVersionText(version))));
    s.shutdown();
    throw new TransferError("the receiver speaks another transfer version", "protocol");
  }
  const offer: Offer = { entries: [] };
  const offerBytes = encodeOffer(sources.map((x) => x.entry));
  offer.entries = decodeOfferCore(offerBytes, false).entries;
  await s.write(frame(OFFER, offerBytes));
  const reply = await readFrame(s);
  if (reply === null) throw new TransferError("the receiver went away", "gone");
  if (reply.type !== ACCEPT) {
    s.shutdown();
    throw errorFrom(reply, "receiver");
  }
  let offsets: number[];
  try {
    offsets = decodeAccept(reply.payload, offer);
  } catch (e) {
    await s.write(frame(ERROR, text(e instanceof Error ? e.message : "a bad ACCEPT")));
    s.shutdown();
    throw new TransferError("the receiver's answer does not match the offer", "protocol");
  }
  // One read stays pending: the receiver's ERROR stops us at once; its ACK ends the transfer.
  let last: { type: number; payload: Uint8Array } | null | "pending" = "pending";
  const tail = readFrame(s).then(
    (f) => (last = f),
    () => (last = null),
  );
  const total = sources.reduce((n, x, i) => n + x.entry.size - offsets[i]!, 0);
  const meter = new Meter(total);
  let bytes = 0;
  let lastShown = 0;
  let files = 0;
  for (let i = 0; i < sources.length; i++) {
    const { entry, file } = sources[i]!;
    if (entry.kind !== 1 || offsets[i]! >= entry.size) {
      if (entry.kind === 1) files++;
      continue;
    }
    for (let off = offsets[i]!; off < entry.size; off += CHUNK) {
      if (last !== "pending") {
        const f = last;
        if (f === null) throw new TransferError("the receiver went away", "gone");
        throw errorFrom(f, "receiver");
      }
      const buf = new Uint8Array(await file!.slice(off, Math.min(off + CHUNK, entry.size)).arrayBuffer());
      await s.write(frame(DATA, buf));
      bytes += buf.length;
      const now = performance.now();
      if (now - lastShown > 250) {
        lastShown = now;
        const { rate, eta } = meter.update(bytes);
        progress({ name: entry.name, bytes, total, rate, eta });
      }
    }
    await s.write(frame(FILE_END, new Uint8Array(0)));
    files++;
  }
  await s.write(frame(DONE, new Uint8Array(0)));
  await tail;
  const f = last as unknown as { type: number; payload: Uint8Array } | null;
  if (f === null) throw new TransferError("the receiver went away before it confirmed", "gone");
  if (f.type !== ACK) throw errorFrom(f, "receiver");
  const { rate } = meter.update(bytes);
  progress({ name: "", bytes, total, rate, eta: 0 });
  s.shutdown();
  await s.closedWithin(3000);
  return { files, bytes, secs: (performance.now() - meter.started) / 1000 };
}
