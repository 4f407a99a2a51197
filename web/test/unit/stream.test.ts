// DataStream over a stand-in for RTCDataChannel: what the peer sends before the page has made
// its stream must not be lost. A browser drops a `message` event that finds no listener, as
// EventTarget does here, and yakk sends as soon as the channel is open (a sender its offer, a
// forwarded service its greeting).
import { describe, expect, it } from "vitest";

import { DataStream, hold } from "../../src/stream";

class FakeChannel extends EventTarget {
  binaryType = "blob";
  bufferedAmount = 0;
  bufferedAmountLowThreshold = 0;
  readyState: RTCDataChannelState = "open";
  sent: unknown[] = [];
  send(d: unknown): void {
    this.sent.push(d);
  }
  close(): void {
    this.closedByPeer();
  }
  /** A message from the peer. */
  receive(data: unknown): void {
    const e = new Event("message");
    Object.defineProperty(e, "data", { value: data });
    this.dispatchEvent(e);
  }
  closedByPeer(): void {
    this.readyState = "closed";
    this.dispatchEvent(new Event("close"));
  }
}

const channel = (c: FakeChannel) => c as unknown as RTCDataChannel;
const bytes = (...b: number[]) => new Uint8Array(b).buffer;
/** The read's result, or "pending" if it has none within a few turns of the event loop. */
const settled = <T>(p: Promise<T>) =>
  Promise.race([p, new Promise<"pending">((r) => setTimeout(() => r("pending"), 50))]);

describe("a channel's first messages", () => {
  it("are lost when the stream is made after them and nothing held them", async () => {
    const c = new FakeChannel();
    c.receive(bytes(1, 2, 3));
    const s = new DataStream(channel(c), { opener: true, window: false });
    expect(await settled(s.read(10))).toBe("pending");
  });

  it("are kept by hold() until the stream takes them, in order, with the end of the stream", async () => {
    const c = new FakeChannel();
    hold(channel(c));
    expect(c.binaryType).toBe("arraybuffer");
    c.receive(bytes(1, 2, 3));
    c.receive(bytes(4));
    c.receive("");
    const s = new DataStream(channel(c), { opener: true, window: false });
    expect(await s.readExact(4)).toEqual(new Uint8Array([1, 2, 3, 4]));
    expect(await s.read(10)).toBeNull();
    // Later messages go to the stream alone.
    const t = new FakeChannel();
    hold(channel(t));
    const u = new DataStream(channel(t), { opener: true, window: false });
    t.receive(bytes(9));
    expect(await u.read(10)).toEqual(new Uint8Array([9]));
  });

  it("a channel that closed before its stream was made ends the stream's reads", async () => {
    const c = new FakeChannel();
    hold(channel(c));
    c.receive(bytes(7));
    c.closedByPeer();
    const s = new DataStream(channel(c), { opener: true, window: false });
    expect(await s.read(10)).toEqual(new Uint8Array([7]));
    await expect(settled(s.read(10))).rejects.toThrow("the stream was closed");
  });
});

describe("the closing marker", () => {
  for (const opener of [true, false]) {
    it(`closes the channel at once, also before the stream ended (${opener ? "opener" : "acceptor"})`, async () => {
      // A yakk peer that gives a stream up sends the marker and waits for this side to close:
      // closing itself while this side still sends would cost its stack the stream.
      const c = new FakeChannel();
      const s = new DataStream(channel(c), { opener, window: true });
      c.receive(bytes(1, 2));
      c.receive("c");
      expect(c.readyState).toBe("closed");
      expect(await s.read(10)).toEqual(new Uint8Array([1, 2]));
      await expect(settled(s.read(10))).rejects.toThrow("the stream was closed");
    });
  }
});
