/** A stream's messages and its `window` flow control (docs/yakk2.md, "Stream flow control"). */

import { U64_MAX } from "./bytes.js";

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
