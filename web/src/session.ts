/**
 * A yakk/2 session from the browser: the key exchange through the signalling server
 * (docs/yakk2.md, docs/yakk2-pake.md, with the confirmation order of §6a), the sealed offer,
 * answer and candidates (a joiner offers right behind its key confirmation), and the
 * RTCPeerConnection they set up. One lane (no `lanes` field),
 * the `window` and `small-bursts` features announced.
 *
 * The joiner is the offerer: it opens the "command" channel (which yakk keeps open for the
 * session's life and closes first to say goodbye) and its data channels; the owner answers.
 */

import { FEATURE_SMALL_BURSTS, FEATURE_WINDOW } from "./proto/envelope";
import { Party, PakeError, type SessionKeys } from "./proto/pake";
import { SealedChannel, SealError, type SealHeader } from "./proto/seal";
import { Room, type Envelope, SignalError } from "./signal";
import { hold } from "./stream";

const PAKE1 = "YAKK2_PAKE1";
const PAKE2 = "YAKK2_PAKE2";
const CONFIRM = "YAKK2_CONFIRM";
const SEALED = "YAKK2_SEALED";
const ABORT = "YAKK2_ABORT";
const REQUEST_OFFER = "YAKKMSG_REQUESTOFFER";
/**
 * What this page announces in its offer or answer: flow control, and small bursts toward it
 * (Chromium's WebRTC socket holds about 128 KiB of datagrams, and what overflows it a yakk
 * sender resends only after a timeout of a second or more).
 */
const FEATURES = [FEATURE_WINDOW, FEATURE_SMALL_BURSTS];

/** How long a joiner waits for the peer connection to come up after the keys agree. */
const CONNECT_TIMEOUT_MS = 20_000;

export type FailureKind =
  | "wrong-code"
  | "burned"
  | "no-room"
  | "full"
  | "tampered"
  | "peer-gone"
  | "unreachable"
  | "no-path"
  | "protocol";

/** A failure with a text for a person. */
export class SessionFailure extends Error {
  constructor(
    message: string,
    readonly kind: FailureKind,
  ) {
    super(message);
  }
}

/** What the peer's YAKK2_ABORT reason means. */
const ABORT_TEXT: Record<string, [string, FailureKind]> = {
  closed: ["this code was burned by an earlier wrong attempt: ask the sender for a new code", "burned"],
  full: ["someone else already joined with this code: ask the sender for a new one", "full"],
  busy: ["the sender is busy with other joiners; try again in a moment", "protocol"],
  sealed: [
    "the other side could not open our signalling messages: someone between us (the signalling server or a proxy) tampered with them",
    "tampered",
  ],
  pake: ["the other side refused our key exchange message (tampered with, or not a yakk peer)", "tampered"],
  protocol: ["the other side found a message out of place", "protocol"],
  downgrade: ["the other side detected a protocol downgrade: someone tampered with the signalling", "tampered"],
};

export interface Code {
  room: string;
  password: string;
  /** The server part after `@`, if any (the page always uses the server it came from). */
  server: string | null;
}

/** Parses a code as yakk does, forgiving what people do to codes (crates/yakk/src/code.rs). */
export function parseCode(typed: string): Code | null {
  const t = typed.trim().replace(/[.,;:]+$/, "").trim();
  const at = t.indexOf("@");
  const main = at >= 0 ? t.slice(0, at) : t;
  const server = at >= 0 ? t.slice(at + 1).trim() || null : null;
  const parts = main.split(/[\s-]+/).filter((p) => p.length > 0);
  if (parts.length < 2) return null;
  const room = parts[0]!;
  if (!/^[A-Za-z0-9]+$/.test(room)) return null;
  const password = parts
    .slice(1)
    .map((w) => w.toLowerCase())
    .join("-");
  return { room, password, server };
}

export interface Connected {
  pc: RTCPeerConnection;
  /** Both sides announced `window`. */
  window: boolean;
  /** The channels the peer opened (owner), in order. */
  incoming: AsyncQueue<RTCDataChannel>;
  /** Resolves with a reason when the connection ends. */
  ended: Promise<string>;
  close(): void;
}

/** A tiny queue of things that arrive while nobody waits. */
export class AsyncQueue<T> {
  private items: T[] = [];
  private waiters: ((v: T) => void)[] = [];
  push(v: T): void {
    const w = this.waiters.shift();
    if (w) w(v);
    else this.items.push(v);
  }
  next(): Promise<T> {
    const v = this.items.shift();
    if (v !== undefined) return Promise.resolve(v);
    return new Promise((r) => this.waiters.push(r));
  }
}

interface Progress {
  (step: string): void;
}

/** The sealed-message half of a session, bound to one room and one peer. */
class Sealer {
  private readonly ch: SealedChannel;
  /** `recvKey` null: it seals only, until {@link Sealer.receiveWith} (a joiner's early offer). */
  constructor(
    sendKey: Uint8Array,
    recvKey: Uint8Array | null,
    private readonly room: Room,
    private readonly peer: number,
  ) {
    this.ch = new SealedChannel(sendKey, recvKey);
  }
  receiveWith(recvKey: Uint8Array): void {
    this.ch.receiveWith(recvKey);
  }
  send(msg: object): void {
    const header: SealHeader = { msgType: SEALED, room: this.room.name, sender: this.room.myId, recipient: this.peer };
    const payload = this.ch.seal(header, JSON.stringify(msg));
    this.room.send({ Msg_type: SEALED, Payload: payload, Sender: this.room.myId, Recipient: this.peer });
  }
  open(env: Envelope): Record<string, unknown> {
    const header: SealHeader = { msgType: env.Msg_type, room: this.room.name, sender: env.Sender, recipient: this.room.myId };
    const text = this.ch.openText(header, env.Payload);
    const v = JSON.parse(text);
    if (typeof v !== "object" || v === null) throw new SessionFailure("a sealed message is not an object", "protocol");
    return v as Record<string, unknown>;
  }
}

function abortFrom(env: Envelope): SessionFailure {
  let reason = "";
  try {
    reason = String(JSON.parse(env.Payload).reason ?? "");
  } catch {
    /* no reason */
  }
  const known = ABORT_TEXT[reason];
  if (known) return new SessionFailure(known[0], known[1]);
  return new SessionFailure("the other side gave up the handshake", "protocol");
}

function sendAbort(room: Room, peer: number, reason: string): void {
  room.send({ Msg_type: ABORT, Payload: JSON.stringify({ reason }), Sender: room.myId, Recipient: peer });
}

/** Turns any failure of the handshake into a SessionFailure, telling the peer when it should hear. */
function failure(e: unknown, room: Room, peer: number): SessionFailure {
  if (e instanceof SessionFailure) return e;
  if (e instanceof SealError) {
    sendAbort(room, peer, "sealed");
    return new SessionFailure(
      "a signalling message did not open: someone between you and the other side (the signalling server or a proxy) tampered with it. Nothing was sent; start again with a new code.",
      "tampered",
    );
  }
  if (e instanceof PakeError) {
    if (e.wrongPassword)
      return new SessionFailure(
        "wrong code: the other side did not accept it, and the code is now burned. Ask the sender for a new code.",
        "wrong-code",
      );
    sendAbort(room, peer, "pake");
    return new SessionFailure(`a key exchange message was refused (${e.message}): tampered with, or not a yakk peer`, "tampered");
  }
  if (e instanceof SignalError) {
    const kind: FailureKind = e.kind === "no-room" ? "no-room" : e.kind === "full" ? "full" : e.kind === "unreachable" ? "unreachable" : "peer-gone";
    return new SessionFailure(e.message, kind);
  }
  return new SessionFailure(e instanceof Error ? e.message : String(e), "protocol");
}

function candidateJson(c: RTCIceCandidate): object {
  return {
    candidate: c.candidate,
    sdpMid: c.sdpMid,
    sdpMLineIndex: c.sdpMLineIndex,
    usernameFragment: c.usernameFragment ?? null,
  };
}

function features(v: unknown): string[] {
  return Array.isArray(v) ? v.filter((f): f is string => typeof f === "string") : [];
}

/** Ends when the connection fails or closes. */
function watch(pc: RTCPeerConnection): Promise<string> {
  return new Promise((resolve) => {
    const check = () => {
      const s = pc.connectionState;
      if (s === "failed") resolve("the connection to the other side failed");
      else if (s === "closed") resolve("the connection was closed");
      else if (s === "disconnected") {
        // ICE may come back; give it a moment as yakk does (consent freshness).
        setTimeout(() => {
          if (pc.connectionState === "disconnected" || pc.connectionState === "failed")
            resolve("the other side went away");
        }, 5000);
      }
    };
    pc.addEventListener("connectionstatechange", check);
  });
}

function connectedPromise(pc: RTCPeerConnection, ms: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(
      () => reject(new SessionFailure("no network path to the other side (its yakk may need a TURN relay)", "no-path")),
      ms,
    );
    const check = () => {
      if (pc.connectionState === "connected") {
        clearTimeout(t);
        resolve();
      } else if (pc.connectionState === "failed" || pc.connectionState === "closed") {
        clearTimeout(t);
        reject(new SessionFailure("no network path to the other side", "no-path"));
      }
    };
    pc.addEventListener("connectionstatechange", check);
    check();
  });
}

/**
 * Joins with `code` and sets up the peer connection as the offerer. `labels` are the data
 * channels to open (besides "command"); they are returned in order, open.
 */
export async function join(
  code: Code,
  labels: string[],
  progress: Progress,
): Promise<{ conn: Connected; channels: RTCDataChannel[] }> {
  progress("connecting to the signalling server");
  let room: Room;
  try {
    room = await Room.join(code.room);
  } catch (e) {
    throw failure(e, null as unknown as Room, 0);
  }
  const owner = room.ownerId;
  const party = new Party("joiner", code.password, code.room);
  room.send({ Msg_type: REQUEST_OFFER, Payload: JSON.stringify({ versions: ["yakk/2"] }), Sender: room.myId, Recipient: owner });
  room.send({ Msg_type: PAKE1, Payload: party.round1(), Sender: room.myId, Recipient: owner });
  progress("checking the code");
  let confirmed = false;
  let sealer: Sealer | null = null;
  let pc: RTCPeerConnection | null = null;
  let window = false;
  const channels: RTCDataChannel[] = [];
  let connected: Promise<void> | null = null;
  try {
    for (;;) {
      const env = await (connected ? Promise.race([room.next(), connected.then(() => null)]) : room.next());
      if (env === null) break;
      if (env.Sender !== owner) continue;
      switch (env.Msg_type) {
        case PAKE1:
          room.send({ Msg_type: PAKE2, Payload: party.receiveRound1(env.Payload), Sender: room.myId, Recipient: owner });
          break;
        case PAKE2: {
          const confirm = party.receiveRound2(env.Payload);
          if (!confirm) break;
          room.send({ Msg_type: CONFIRM, Payload: confirm, Sender: room.myId, Recipient: owner });
          // The offer goes out right behind our confirmation, a round trip before the owner's
          // comes (docs/yakk2-pake.md §6a); nothing the owner seals opens before that.
          sealer = new Sealer(party.sendKeyBeforeConfirmation()!, null, room, owner);
          pc = new RTCPeerConnection({ iceServers: room.iceServers });
          const p = pc;
          const s = sealer;
          // yakk's offerer opens "command" first and keeps it for the session's life.
          pc.createDataChannel("command", { ordered: true });
          for (const l of labels) channels.push(hold(p.createDataChannel(l, { ordered: true })));
          const queued: RTCIceCandidate[] = [];
          let described = false;
          p.onicecandidate = (e) => {
            if (!e.candidate || !e.candidate.candidate) return;
            if (described) s.send({ type: "candidate", candidate: candidateJson(e.candidate) });
            else queued.push(e.candidate);
          };
          const offer = await p.createOffer();
          await p.setLocalDescription(offer);
          s.send({ type: "offer", sdp: p.localDescription!.sdp, features: FEATURES });
          described = true;
          for (const c of queued.splice(0)) s.send({ type: "candidate", candidate: candidateJson(c) });
          break;
        }
        case CONFIRM: {
          // Out of place (before our own) it throws, as a wrong one does.
          const { keys } = party.receiveConfirmation(env.Payload);
          if (!sealer || !pc) throw new SessionFailure("a key confirmation before our own", "protocol");
          sealer.receiveWith(keys.signalRecvKey);
          confirmed = true;
          progress("connecting to the other side");
          connected = connectedPromise(pc, CONNECT_TIMEOUT_MS);
          break;
        }
        case SEALED: {
          if (!sealer || !pc || !confirmed) throw new SessionFailure("a sealed message before the key was confirmed", "protocol");
          const m = sealer.open(env);
          if ((m.lane ?? 0) !== 0) throw new SessionFailure("a description for a lane we did not agree on", "protocol");
          if (m.type === "answer" && typeof m.sdp === "string") {
            if (m.lanes !== undefined && m.lanes !== 1) throw new SessionFailure("the answer asks for more lanes than we offered", "protocol");
            window = features(m.features).includes(FEATURE_WINDOW);
            await pc.setRemoteDescription({ type: "answer", sdp: m.sdp });
          } else if (m.type === "candidate" && typeof m.candidate === "object" && m.candidate) {
            const c = m.candidate as RTCIceCandidateInit;
            await pc.addIceCandidate(c).catch(() => {
              /* a candidate we cannot use (e.g. another address family) */
            });
          } else throw new SessionFailure("an unexpected sealed message", "protocol");
          break;
        }
        case ABORT:
          throw abortFrom(env);
        default:
          // yakk/1 names mean the other side is the original program: not supported here.
          if (env.Msg_type === "YAKKMSG_JPAKEROUND1")
            throw new SessionFailure("the other side speaks only yakk/1 (the original program); the browser speaks yakk/2", "protocol");
      }
    }
  } catch (e) {
    pc?.close();
    // The abort notice first: a socket already closing sends nothing more.
    const f = failure(e, room, owner);
    void room.close(500);
    throw f;
  }
  // The signalling socket stays open for late candidates, but the session no longer needs it.
  void pump(room, sealer!, pc!);
  const p = pc!;
  await Promise.all(channels.map((c) => opened(c)));
  return {
    conn: { pc: p, window, incoming: new AsyncQueue(), ended: watch(p), close: () => shutdown(p, room) },
    channels,
  };
}

/** Keeps adding late candidates after the connection is up. */
async function pump(room: Room, sealer: Sealer, pc: RTCPeerConnection): Promise<void> {
  try {
    for (;;) {
      const env = await room.next();
      if (env.Msg_type !== SEALED || env.Sender === room.myId) continue;
      const m = sealer.open(env);
      if (m.type === "candidate" && typeof m.candidate === "object" && m.candidate)
        await pc.addIceCandidate(m.candidate as RTCIceCandidateInit).catch(() => {});
    }
  } catch {
    /* the socket closed, or a late message did not open: the session runs on without it */
  }
}

function opened(c: RTCDataChannel): Promise<void> {
  if (c.readyState === "open") return Promise.resolve();
  return new Promise((resolve, reject) => {
    c.addEventListener("open", () => resolve(), { once: true });
    c.addEventListener("close", () => reject(new SessionFailure("the other side closed the channel", "peer-gone")), { once: true });
  });
}

function shutdown(pc: RTCPeerConnection, room: Room): void {
  setTimeout(() => pc.close(), 200);
  void room.close(500);
}

/** An owner's room, created and waiting for its joiner. */
export interface Hosted {
  room: Room;
  password: string;
  /** Runs the handshake with the first joiner and answers its offer. */
  accept(progress: Progress): Promise<Connected>;
}

/** Creates a room (one joiner) with a new password of `words` words. */
export async function host(words: string[], count = 2): Promise<Hosted> {
  const room = await Room.create();
  const password = randomPassword(words, count);
  return {
    room,
    password,
    accept: (progress) => answer(room, password, progress),
  };
}

function randomPassword(words: string[], count: number): string {
  const out: string[] = [];
  const limit = Math.floor(0x1_0000_0000 / words.length) * words.length;
  const buf = new Uint32Array(1);
  while (out.length < count) {
    crypto.getRandomValues(buf);
    if (buf[0]! >= limit) continue;
    out.push(words[buf[0]! % words.length]!);
  }
  return out.join("-");
}

async function answer(room: Room, password: string, progress: Progress): Promise<Connected> {
  let joiner: number | null = null;
  let party: Party | null = null;
  let sealer: Sealer | null = null;
  let pc: RTCPeerConnection | null = null;
  let window = false;
  const incoming = new AsyncQueue<RTCDataChannel>();
  let connected: Promise<void> | null = null;
  try {
    for (;;) {
      const env = await (connected ? Promise.race([room.next(), connected.then(() => null)]) : room.next());
      if (env === null) break;
      if (env.Sender === room.myId || env.Sender < 0) continue;
      if (joiner === null) {
        if (env.Msg_type !== REQUEST_OFFER) continue;
        let versions: string[] = [];
        try {
          versions = features(JSON.parse(env.Payload).versions);
        } catch {
          /* an empty payload: the original program */
        }
        if (!versions.includes("yakk/2")) {
          sendAbort(room, env.Sender, "protocol");
          continue;
        }
        joiner = env.Sender;
        progress("someone is joining: checking their code");
        party = new Party("owner", password, room.name);
        room.send({ Msg_type: PAKE1, Payload: party.round1(), Sender: room.myId, Recipient: joiner });
        continue;
      }
      if (env.Sender !== joiner) continue;
      switch (env.Msg_type) {
        case PAKE1:
          room.send({ Msg_type: PAKE2, Payload: party!.receiveRound1(env.Payload), Sender: room.myId, Recipient: joiner });
          break;
        case PAKE2:
          party!.receiveRound2(env.Payload);
          break;
        case CONFIRM: {
          let keys: SessionKeys;
          try {
            const r = party!.receiveConfirmation(env.Payload);
            keys = r.keys;
            room.send({ Msg_type: CONFIRM, Payload: r.reply!, Sender: room.myId, Recipient: joiner });
          } catch (e) {
            if (e instanceof PakeError && e.wrongPassword) {
              // Burn the code first (leave the room), then send our confirmation all the same.
              if (e.reply) room.send({ Msg_type: CONFIRM, Payload: e.reply, Sender: room.myId, Recipient: joiner });
              await room.close(2000);
              throw new SessionFailure(
                "someone tried a wrong code, so this code is burned: nobody can use it any more. Start again for a new code.",
                "burned",
              );
            }
            throw e;
          }
          sealer = new Sealer(keys.signalSendKey, keys.signalRecvKey, room, joiner);
          progress("connecting to the other side");
          pc = new RTCPeerConnection({ iceServers: room.iceServers });
          pc.ondatachannel = (e) => {
            if (e.channel.label !== "command") incoming.push(hold(e.channel));
          };
          break;
        }
        case SEALED: {
          if (!sealer || !pc) throw new SessionFailure("a sealed message before the key was confirmed", "protocol");
          const m = sealer.open(env);
          if ((m.lane ?? 0) !== 0) throw new SessionFailure("a description for a lane we did not agree on", "protocol");
          if (m.type === "offer" && typeof m.sdp === "string") {
            window = features(m.features).includes(FEATURE_WINDOW);
            await pc.setRemoteDescription({ type: "offer", sdp: m.sdp });
            const queued: RTCIceCandidate[] = [];
            let described = false;
            const p = pc;
            const s = sealer;
            p.onicecandidate = (e) => {
              if (!e.candidate || !e.candidate.candidate) return;
              if (described) s.send({ type: "candidate", candidate: candidateJson(e.candidate) });
              else queued.push(e.candidate);
            };
            const ans = await p.createAnswer();
            await p.setLocalDescription(ans);
            // `lanes` only when the joiner spoke of lanes: then one.
            const reply: Record<string, unknown> = { type: "answer", sdp: p.localDescription!.sdp, features: FEATURES };
            if (m.lanes !== undefined) reply.lanes = 1;
            s.send(reply);
            described = true;
            for (const c of queued.splice(0)) s.send({ type: "candidate", candidate: candidateJson(c) });
            connected = connectedPromise(p, CONNECT_TIMEOUT_MS);
          } else if (m.type === "candidate" && typeof m.candidate === "object" && m.candidate) {
            await pc.addIceCandidate(m.candidate as RTCIceCandidateInit).catch(() => {});
          } else throw new SessionFailure("an unexpected sealed message", "protocol");
          break;
        }
        case ABORT:
          throw abortFrom(env);
      }
    }
  } catch (e) {
    pc?.close();
    // The abort notice first: a socket already closing sends nothing more.
    const f = failure(e, room, joiner ?? 0);
    void room.close(500);
    throw f;
  }
  void pump(room, sealer!, pc!);
  const p = pc!;
  return { pc: p, window, incoming, ended: watch(p), close: () => shutdown(p, room) };
}
