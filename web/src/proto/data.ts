/**
 * The data phase of a transfer (docs/yakk2-transfer.md §4): the sender's plan
 * ({@link dataPlan}) and the receiver's rules ({@link ReceiveTracker}).
 */

import { TransferError, protocolError } from "./errors.js";
import { blake3Hasher, type Hasher } from "./hash.js";
import { escape } from "./text.js";
import {
  decodeStreamEnd,
  FRAME,
  FRAME_NAMES,
  MAX_DATA,
  peerError,
  type Frame,
  type Offer,
  type OfferEntry,
} from "./transfer.js";

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
    if (this.#done) throw protocolError(`unexpected ${FRAME_NAMES[f.type]} frame after the end`);
    const cur = this.current;
    if (f.type === FRAME.ERROR) throw peerError(f.payload);
    if (cur === null) {
      if (f.type === FRAME.DONE) {
        this.#done = true;
        return { kind: "done" };
      }
      if (f.type === FRAME.DATA) throw protocolError("the sender sent more data than it offered");
      throw protocolError(`unexpected ${FRAME_NAMES[f.type]} frame at the end`);
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
          if (f.payload.length !== 0) throw protocolError("file end with a trailer for a file of known size");
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
        throw protocolError(`unexpected ${FRAME_NAMES[f.type]} frame during data`);
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
