/**
 * A yakk/2 stream over one RTCDataChannel: a byte stream with the transport's rules
 * (docs/yakk2.md, "Data plane"): data travels as binary messages of at most 64 KiB, the
 * empty string message ends a direction (half-close), and with the `window` feature every
 * direction carries credit-based flow control (`w <limit>` grants) and the close handshake
 * (`c`: the opener sends it once both end-of-stream markers have passed, the acceptor closes
 * the channel when it gets it).
 */

import {
  CLOSE_MESSAGE,
  CLOSE_TIMEOUT_MS,
  END_OF_STREAM,
  grantText,
  MAX_MESSAGE,
  parseGrant,
  ReceiveWindow,
  SendCredit,
} from "./proto/window";

export { MAX_MESSAGE };
/** What this side keeps queued in the browser's send buffer before it waits. */
const SEND_BUFFER = 1024 * 1024;

export class StreamClosed extends Error {}

/**
 * Messages that reached a channel before its DataStream existed. A browser drops a `message`
 * event that finds no listener, and a peer may send as soon as the channel is open (yakk's
 * sender its offer, a forwarded service its greeting), while the page may still be awaiting
 * something else before it makes the stream.
 */
const early = new WeakMap<RTCDataChannel, { data: unknown[]; listener: (e: MessageEvent) => void }>();

/** Keeps what arrives on `channel` until a DataStream takes it over: call it as soon as the
 * channel exists (made, or handed over by `datachannel`). */
export function hold(channel: RTCDataChannel): RTCDataChannel {
  if (early.has(channel)) return channel;
  channel.binaryType = "arraybuffer";
  const data: unknown[] = [];
  const listener = (e: MessageEvent) => void data.push(e.data);
  channel.addEventListener("message", listener);
  early.set(channel, { data, listener });
  return channel;
}

export class DataStream {
  readonly channel: RTCDataChannel;
  private readonly window: boolean;
  private readonly opener: boolean;
  private readonly maxMessage: number;
  // Reading.
  private chunks: Uint8Array[] = [];
  private chunkOffset = 0;
  /** Sizes of the messages not yet fully taken, in order, with the bytes left of the first. */
  private pendingMessages: { len: number; left: number }[] = [];
  private buffered = 0;
  /** Flow control (the protocol core's `window` rules). */
  private readonly recv = new ReceiveWindow();
  private readonly credit = new SendCredit();
  private peerEnded = false;
  private readWaiter: (() => void) | null = null;
  // Writing.
  private creditWaiter: (() => void) | null = null;
  private ended = false;
  private closed = false;
  private failure: Error | null = null;
  private closeTimer: ReturnType<typeof setTimeout> | null = null;
  private closedWaiters: (() => void)[] = [];

  /**
   * `opener`: this side opened the channel (it sends `c`). `window`: both sides announced
   * the `window` feature. `maxMessage`: the peer's limit, if lower than 64 KiB.
   */
  constructor(channel: RTCDataChannel, opts: { opener: boolean; window: boolean; maxMessage?: number }) {
    this.channel = channel;
    this.opener = opts.opener;
    this.window = opts.window;
    this.maxMessage = Math.min(MAX_MESSAGE, opts.maxMessage ?? MAX_MESSAGE);
    channel.binaryType = "arraybuffer";
    channel.bufferedAmountLowThreshold = SEND_BUFFER / 2;
    channel.addEventListener("message", (e: MessageEvent) => this.onMessage(e.data));
    channel.addEventListener("close", () => this.onClose());
    channel.addEventListener("error", (e: Event) => {
      const err = (e as RTCErrorEvent).error;
      if (!this.closed) this.fail(new StreamClosed(`the data channel failed: ${err?.message ?? "unknown"}`));
    });
    // What came before this stream, in order, then whether the channel closed meanwhile.
    const held = early.get(channel);
    if (held) {
      channel.removeEventListener("message", held.listener);
      early.delete(channel);
      for (const data of held.data) this.onMessage(data);
    }
    if (channel.readyState === "closed") this.onClose();
  }

  /** Resolves once the channel is open. */
  async opened(): Promise<void> {
    if (this.channel.readyState === "open") return;
    await new Promise<void>((resolve, reject) => {
      this.channel.addEventListener("open", () => resolve(), { once: true });
      this.channel.addEventListener("close", () => reject(new StreamClosed("the data channel closed before it opened")), { once: true });
    });
  }

  private onMessage(data: unknown): void {
    if (typeof data === "string") {
      if (data === END_OF_STREAM) {
        this.peerEnded = true;
        this.wakeReader();
        this.maybeFinishClose();
      } else if (this.window && parseGrant(data) !== null) {
        if (this.credit.onGrant(parseGrant(data)!)) this.wakeWriter();
      } else if (this.window && data === CLOSE_MESSAGE) {
        // The peer sends nothing after it, whichever side asked: its end of a finished stream,
        // or a stream it gave up. Closing now loses nothing of the peer's.
        this.closeChannel();
      }
      // Other string messages are ignored (docs/yakk2.md).
      return;
    }
    const bytes = new Uint8Array(data as ArrayBuffer);
    if (this.peerEnded) {
      this.fail(new StreamClosed("data after the end of the stream"));
      return;
    }
    if (this.window && !this.recv.admit(bytes.length)) {
      this.fail(new StreamClosed("the peer sent more than it was granted"));
      this.closeChannel();
      return;
    }
    this.chunks.push(bytes);
    this.pendingMessages.push({ len: bytes.length, left: bytes.length });
    this.buffered += bytes.length;
    this.wakeReader();
  }

  private onClose(): void {
    this.closed = true;
    if (this.closeTimer) clearTimeout(this.closeTimer);
    if (!this.peerEnded && !this.failure) this.failure = new StreamClosed("the stream was closed");
    this.wakeReader();
    this.wakeWriter();
    for (const w of this.closedWaiters.splice(0)) w();
  }

  private fail(e: Error): void {
    if (!this.failure) this.failure = e;
    this.wakeReader();
    this.wakeWriter();
  }

  private wakeReader(): void {
    const w = this.readWaiter;
    this.readWaiter = null;
    w?.();
  }

  private wakeWriter(): void {
    const w = this.creditWaiter;
    this.creditWaiter = null;
    w?.();
  }

  /** Bytes waiting unread. */
  get unread(): number {
    return this.buffered;
  }

  /**
   * Up to `max` bytes, as soon as any are there; `null` at the end of the stream. Throws
   * when the stream broke.
   */
  async read(max: number): Promise<Uint8Array | null> {
    for (;;) {
      if (this.chunks.length > 0) {
        const first = this.chunks[0]!;
        const n = Math.min(max, first.length - this.chunkOffset);
        const out = first.subarray(this.chunkOffset, this.chunkOffset + n);
        this.chunkOffset += n;
        if (this.chunkOffset === first.length) {
          this.chunks.shift();
          this.chunkOffset = 0;
        }
        this.buffered -= n;
        this.taken(n);
        return out;
      }
      if (this.peerEnded) return null;
      if (this.failure) throw this.failure;
      await new Promise<void>((r) => (this.readWaiter = r));
    }
  }

  /** Exactly `n` bytes (copied into one array), or `null` if the stream ends first at 0. */
  async readExact(n: number): Promise<Uint8Array | null> {
    if (n === 0) return new Uint8Array(0);
    const first = await this.read(n);
    if (first === null) return null;
    if (first.length === n) return first;
    const out = new Uint8Array(n);
    out.set(first, 0);
    let got = first.length;
    while (got < n) {
      const more = await this.read(n - got);
      if (more === null) throw new StreamClosed("the stream ended in the middle of a frame");
      out.set(more, got);
      got += more.length;
    }
    return out;
  }

  /** The application took `n` bytes: messages fully taken count as consumed, grants follow. */
  private taken(n: number): void {
    let due = false;
    while (n > 0 && this.pendingMessages.length > 0) {
      const head = this.pendingMessages[0]!;
      const k = Math.min(n, head.left);
      head.left -= k;
      n -= k;
      if (head.left === 0) {
        due = this.recv.consumed(head.len) || due;
        this.pendingMessages.shift();
      }
    }
    // No grant once the peer's end-of-stream marker is in (docs/yakk2.md).
    if (!due || !this.window || this.peerEnded || this.channel.readyState !== "open") return;
    const limit = this.recv.nextGrant();
    if (limit !== null) this.channel.send(grantText(limit));
  }

  /** Sends all of `bytes`, waiting for credit and for the send buffer to drain. */
  async write(bytes: Uint8Array): Promise<void> {
    let off = 0;
    while (off < bytes.length) {
      if (this.failure) throw this.failure;
      if (this.closed || this.channel.readyState !== "open") throw new StreamClosed("the stream was closed");
      if (this.ended) throw new StreamClosed("write after the end of the stream");
      let n = Math.min(this.maxMessage, bytes.length - off);
      if (this.window) {
        // All of it, the part that fits, or nothing until the next grant.
        n = this.credit.room(n);
        if (n === 0) {
          await new Promise<void>((r) => (this.creditWaiter = r));
          continue;
        }
        this.credit.onSent(n);
      }
      if (this.channel.bufferedAmount > SEND_BUFFER) {
        await new Promise<void>((r) => {
          const done = () => {
            this.channel.removeEventListener("bufferedamountlow", done);
            this.channel.removeEventListener("close", done);
            r();
          };
          this.channel.addEventListener("bufferedamountlow", done);
          this.channel.addEventListener("close", done);
        });
        if (this.closed) throw this.failure ?? new StreamClosed("the stream was closed");
      }
      // send() of a view sends only the view's bytes.
      this.channel.send(bytes.subarray(off, off + n) as Uint8Array<ArrayBuffer>);
      off += n;
    }
  }

  /** Ends our direction (the end-of-stream marker); the other keeps flowing. */
  shutdown(): void {
    if (this.ended || this.channel.readyState !== "open") return;
    this.ended = true;
    this.channel.send(END_OF_STREAM);
    this.maybeFinishClose();
  }

  /** Both markers passed: the opener asks the acceptor to close; either gives up after 10 s. */
  private maybeFinishClose(): void {
    if (!(this.ended && this.peerEnded) || this.closeTimer || this.closed) return;
    if (!this.window) {
      // Without flow control, the transport closes once both directions have ended.
      this.closeTimer = setTimeout(() => this.closeChannel(), 0);
      return;
    }
    if (this.opener && this.channel.readyState === "open") this.channel.send(CLOSE_MESSAGE);
    this.closeTimer = setTimeout(() => this.closeChannel(), CLOSE_TIMEOUT_MS);
  }

  private closeChannel(): void {
    if (this.channel.readyState === "open" || this.channel.readyState === "connecting") this.channel.close();
  }

  /** Waits until everything sent has left the browser's buffer (or the channel closed). */
  async flushed(): Promise<void> {
    while (this.channel.readyState === "open" && this.channel.bufferedAmount > 0) {
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Resolves when the channel has closed (or after `ms`). */
  async closedWithin(ms: number): Promise<void> {
    if (this.closed || this.channel.readyState === "closed") return;
    await new Promise<void>((r) => {
      const t = setTimeout(r, ms);
      this.closedWaiters.push(() => {
        clearTimeout(t);
        r();
      });
    });
  }

  /** Closes at once (an error, or the user stopped). */
  abort(): void {
    this.closeChannel();
  }
}
