/**
 * The WebSocket to the signalling server that served this page (`/ws/` on the same host):
 * creating or joining a room, then sending and receiving envelopes (docs/yakk2.md,
 * "Envelope"). The server relays peers' envelopes as binary frames of JSON.
 */

import { MAX_ENVELOPE, parseEnvelope } from "./proto/envelope";

export interface Envelope {
  Msg_type: string;
  Payload: string;
  Sender: number;
  Recipient: number;
  IceServers?: RTCIceServer[];
}

export class SignalError extends Error {
  constructor(
    message: string,
    readonly kind: "unreachable" | "no-room" | "full" | "closed" | "refused" | "protocol",
  ) {
    super(message);
  }
}

export class Room {
  readonly ws: WebSocket;
  readonly name: string;
  readonly myId: number;
  /** The owner's mailbox (joiner), or our own (owner). */
  readonly ownerId: number;
  readonly iceServers: RTCIceServer[];
  private queue: Envelope[] = [];
  private waiter: (() => void) | null = null;
  private ended: SignalError | null = null;

  private constructor(ws: WebSocket, first: Envelope, name: string, myId: number, ownerId: number) {
    this.ws = ws;
    this.name = name;
    this.myId = myId;
    this.ownerId = ownerId;
    this.iceServers = Array.isArray(first.IceServers) ? first.IceServers : [];
    ws.onmessage = (e) => {
      const env = parse(e.data);
      if (env) this.push(env);
    };
    ws.onclose = (e) => {
      this.ended = new SignalError(
        `the signalling server closed the connection${e.reason ? `: ${e.reason}` : ""}`,
        "closed",
      );
      this.wake();
    };
  }

  private push(env: Envelope): void {
    this.queue.push(env);
    this.wake();
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  /** The next envelope; throws once the socket closed. */
  async next(): Promise<Envelope> {
    for (;;) {
      const env = this.queue.shift();
      if (env) return env;
      if (this.ended) throw this.ended;
      await new Promise<void>((r) => (this.waiter = r));
    }
  }

  send(env: Envelope): void {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(env));
  }

  /** Closes the socket once what was sent has left (at most `ms`). */
  async close(ms = 2000): Promise<void> {
    const until = Date.now() + ms;
    while (this.ws.readyState === WebSocket.OPEN && this.ws.bufferedAmount > 0 && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 20));
    }
    this.ws.close(1000);
  }

  /** Joins room `name` on the server this page came from. */
  static async join(name: string): Promise<Room> {
    if (!/^[A-Za-z0-9-]{1,64}$/.test(name)) throw new SignalError(`no such room ${name}`, "no-room");
    const ws = await open(`?roomID=${encodeURIComponent(name)}`);
    const first = await firstEnvelope(ws);
    if (first.Msg_type === "YAKKMSG_ERROR") {
      ws.close();
      if (first.Payload === "No such room")
        throw new SignalError("no such room: the code is wrong, or its sender stopped or burned it", "no-room");
      if (first.Payload === "Room is full")
        throw new SignalError("someone else already joined this room: the code is used up", "full");
      throw new SignalError(`the signalling server refused: ${first.Payload.slice(0, 200)}`, "refused");
    }
    if (first.Msg_type !== "YAKKMSG_ROOMJOINED") {
      ws.close();
      throw new SignalError(`unexpected reply ${first.Msg_type.slice(0, 64)}`, "protocol");
    }
    return new Room(ws, first, name, first.Recipient, first.Sender);
  }

  /** Creates a room that admits one joiner. */
  static async create(): Promise<Room> {
    const ws = await open("?keepAlive=false&maxPeers=1");
    const first = await firstEnvelope(ws);
    if (first.Msg_type !== "YAKKMSG_ROOMCREATED") {
      ws.close();
      throw new SignalError(`the signalling server refused: ${first.Payload.slice(0, 200)}`, "refused");
    }
    if (!/^[A-Za-z0-9-]{1,64}$/.test(first.Payload)) {
      ws.close();
      throw new SignalError("the signalling server gave an unusable room name", "protocol");
    }
    return new Room(ws, first, first.Payload, first.Recipient, first.Recipient);
  }
}

function wsBase(): string {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws/`;
}

function open(query: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    let ws: WebSocket;
    try {
      ws = new WebSocket(wsBase() + query);
    } catch (e) {
      reject(new SignalError(`cannot reach the signalling server: ${String(e)}`, "unreachable"));
      return;
    }
    ws.binaryType = "arraybuffer";
    ws.onopen = () => resolve(ws);
    ws.onerror = () => reject(new SignalError("cannot reach the signalling server", "unreachable"));
  });
}

/** An envelope from the server (the protocol core checks it), or null for anything else. */
function parse(data: unknown): Envelope | null {
  if (typeof data !== "string" && !(data instanceof ArrayBuffer)) return null;
  try {
    const e = parseEnvelope(typeof data === "string" ? data : new Uint8Array(data), MAX_ENVELOPE);
    const env: Envelope = { Msg_type: e.msgType, Payload: e.payload, Sender: e.sender, Recipient: e.recipient };
    if (e.iceServers) env.IceServers = e.iceServers as RTCIceServer[];
    return env;
  } catch {
    return null;
  }
}

function firstEnvelope(ws: WebSocket): Promise<Envelope> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new SignalError("the signalling server did not answer", "unreachable")), 15000);
    ws.onmessage = (e) => {
      const env = parse(e.data);
      if (!env) return;
      clearTimeout(timer);
      resolve(env);
    };
    ws.onclose = (e) => {
      clearTimeout(timer);
      reject(new SignalError(`the signalling server closed the connection${e.reason ? `: ${e.reason}` : ""}`, "closed"));
    };
  });
}
