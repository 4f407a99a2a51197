/**
 * The signalling envelope (docs/yakk2.md "Envelope"; crates/yakk-wire): one JSON object
 * per WebSocket message, `{"Msg_type":…,"Payload":…,"Sender":…,"Recipient":…}` with the
 * optional server extras `IceServers` and `Reclaim`; the message names of yakk/1, the
 * server and yakk/2; the payloads that travel in the clear (`YAKKMSG_REQUESTOFFER`'s
 * version list, `YAKK2_ABORT`'s reason); and the JSON plaintexts that travel sealed
 * (offer, answer, candidate), in the field order the Rust session prints them.
 */

/** Largest envelope in bytes, both ways (the server's default and what peers accept). */
export const MAX_ENVELOPE = 64 * 1024;
/** `Sender` of the server's own replies (`YAKKMSG_ROOMCREATED`). */
export const SERVER_ID = -1;

/** Message names of the server and of yakk/1 (the reference program). */
export const MSG = {
  ROOM_CREATED: "YAKKMSG_ROOMCREATED",
  ROOM_JOINED: "YAKKMSG_ROOMJOINED",
  JOIN_ROOM: "YAKKMSG_JOINROOM",
  ERROR: "YAKKMSG_ERROR",
  REQUEST_OFFER: "YAKKMSG_REQUESTOFFER",
  JPAKE_ROUND1: "YAKKMSG_JPAKEROUND1",
  JPAKE_ROUND2: "YAKKMSG_JPAKEROUND2",
  JPAKE_KEY_CONFIRMATION: "YAKKMSG_JPAKEKEYCONFIRMATION",
  OFFER: "YAKKMSG_OFFER",
  ANSWER: "YAKKMSG_ANSWER",
  NEW_ICE_CANDIDATE: "YAKKMSG_NEW_ICE_CANDIDATE",
  CONNECTED: "YAKKMSG_CONNECTED",
} as const;

/** Message names of yakk/2. */
export const MSG2 = {
  PAKE1: "YAKK2_PAKE1",
  PAKE2: "YAKK2_PAKE2",
  CONFIRM: "YAKK2_CONFIRM",
  SEALED: "YAKK2_SEALED",
  ABORT: "YAKK2_ABORT",
} as const;

/** The version strings of the negotiation. */
export const VERSION_2 = "yakk/2";
export const VERSION_1 = "yakk/1";
/** Data-plane feature: per-stream flow control (docs/yakk2.md "Stream flow control"). */
export const FEATURE_WINDOW = "window";
/** Data-plane feature a side announces alone: keep bursts toward it small (docs/yakk2.md). */
export const FEATURE_SMALL_BURSTS = "small-bursts";
/** Most lanes (peer connections per session) yakk/2 peers agree on. */
export const MAX_LANES = 32;

/** An ICE server the signalling server advertises (`IceServers`). */
export interface IceServer {
  urls: string[];
  username?: string;
  credential?: string;
}

/** One signalling message. */
export interface Envelope {
  msgType: string;
  payload: string;
  sender: number;
  recipient: number;
  iceServers?: IceServer[];
  reclaim?: string;
}

/** Why a frame is not an envelope (or a payload not what it should be). */
export class EnvelopeError extends Error {
  readonly code: "too-large" | "malformed";
  constructor(code: "too-large" | "malformed", message: string) {
    super(message);
    this.name = "EnvelopeError";
    this.code = code;
  }
}

function malformed(why: string): EnvelopeError {
  return new EnvelopeError("malformed", `message is not a signalling envelope: ${why}`);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** An i64 that JavaScript holds exactly (mailbox ids are small). */
function mailbox(v: unknown, field: string): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v)) throw malformed(`${field} is not an integer`);
  return v;
}

function optString(v: unknown, field: string): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string") throw malformed(`${field} is not a string`);
  return v;
}

function iceServers(v: unknown): IceServer[] | undefined {
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v)) throw malformed("IceServers is not a list");
  return v.map((s) => {
    if (!isObject(s) || !Array.isArray(s.urls) || !s.urls.every((u) => typeof u === "string")) {
      throw malformed("IceServers entry without urls");
    }
    const out: IceServer = { urls: s.urls as string[] };
    const username = optString(s.username, "username");
    const credential = optString(s.credential, "credential");
    if (username !== undefined) out.username = username;
    if (credential !== undefined) out.credential = credential;
    return out;
  });
}

const ASCII_WS = /^[\t\n\f\r ]+|[\t\n\f\r ]+$/g;

/**
 * Parses one WebSocket message (text, or binary as UTF-8). Refuses more than `maxLen`
 * bytes before parsing, tolerates surrounding ASCII whitespace, ignores unknown fields.
 */
export function parseEnvelope(data: string | Uint8Array, maxLen = MAX_ENVELOPE): Envelope {
  let text: string;
  let len: number;
  if (typeof data === "string") {
    text = data;
    len = new TextEncoder().encode(data).length;
  } else {
    len = data.length;
    if (len <= maxLen) {
      try {
        text = new TextDecoder("utf-8", { fatal: true }).decode(data);
      } catch {
        throw malformed("not UTF-8");
      }
    } else text = "";
  }
  if (len > maxLen) {
    throw new EnvelopeError("too-large", `message is ${len} bytes, over the limit of ${maxLen}`);
  }
  let v: unknown;
  try {
    v = JSON.parse(text.replace(ASCII_WS, ""));
  } catch (e) {
    throw malformed((e as Error).message);
  }
  if (!isObject(v)) throw malformed("not a JSON object");
  if (typeof v.Msg_type !== "string") throw malformed("Msg_type is missing or not a string");
  if (typeof v.Payload !== "string") throw malformed("Payload is missing or not a string");
  const env: Envelope = {
    msgType: v.Msg_type,
    payload: v.Payload,
    sender: mailbox(v.Sender, "Sender"),
    recipient: mailbox(v.Recipient, "Recipient"),
  };
  const ice = iceServers(v.IceServers);
  if (ice !== undefined) env.iceServers = ice;
  const reclaim = optString(v.Reclaim, "Reclaim");
  if (reclaim !== undefined) env.reclaim = reclaim;
  return env;
}

/** Compact JSON in the Rust field order, byte for byte what yakk-wire prints. */
export function serializeEnvelope(env: Envelope): string {
  const o: Record<string, unknown> = {
    Msg_type: env.msgType,
    Payload: env.payload,
    Sender: env.sender,
    Recipient: env.recipient,
  };
  if (env.iceServers !== undefined) {
    o.IceServers = env.iceServers.map((s) => {
      const e: Record<string, unknown> = { urls: s.urls };
      if (s.username !== undefined) e.username = s.username;
      if (s.credential !== undefined) e.credential = s.credential;
      return e;
    });
  }
  if (env.reclaim !== undefined) o.Reclaim = env.reclaim;
  return JSON.stringify(o);
}

/** A new envelope without extras. */
export function envelope(msgType: string, payload: string, sender: number, recipient: number): Envelope {
  return { msgType, payload, sender, recipient };
}

/** `YAKKMSG_REQUESTOFFER`'s payload: `{"versions":[…]}`. */
export function requestOfferPayload(versions: string[] = [VERSION_2]): string {
  return JSON.stringify({ versions });
}

/** The versions of a `YAKKMSG_REQUESTOFFER` payload; `[]` for an empty one (a yakk/1 joiner). */
export function parseRequestOffer(payload: string): string[] {
  if (payload.trim() === "") return [];
  let v: unknown;
  try {
    v = JSON.parse(payload);
  } catch {
    throw malformed("YAKKMSG_REQUESTOFFER payload is not JSON");
  }
  if (!isObject(v) || !Array.isArray(v.versions) || !v.versions.every((s) => typeof s === "string")) {
    throw malformed("YAKKMSG_REQUESTOFFER payload has no version list");
  }
  return v.versions as string[];
}

/** The reason codes of `YAKK2_ABORT`. */
export type AbortReason = "closed" | "full" | "busy" | "downgrade" | "sealed" | "pake" | "protocol";

/** What each abort reason tells the side that receives it (the Rust session's texts). */
export const ABORT_REASONS: Record<AbortReason, string> = {
  closed: "the code was closed after a failed password attempt: ask for a new code",
  full: "the room admits no more joiners: ask for a new code",
  busy: "the owner is busy with other joiners: try again in a moment",
  downgrade:
    "the session was downgraded to yakk/1 on the way (the signalling server tampered with the negotiation)",
  sealed:
    "a sealed message from this side failed authentication there (the signalling server or someone in the room tampered with it)",
  pake: "it found our key-exchange message invalid",
  protocol:
    "it received a malformed or out-of-place message (the signalling server may have altered it)",
};

/** The abort reasons by which an owner refuses a joiner rather than reporting a failure. */
export const REFUSALS: readonly AbortReason[] = ["closed", "full", "busy"];

/** `YAKK2_ABORT`'s payload: `{"reason":"…"}`. */
export function abortPayload(reason: AbortReason): string {
  return JSON.stringify({ reason });
}

/** The reason code of a `YAKK2_ABORT` payload; `""` when there is none (it is unauthenticated). */
export function parseAbort(payload: string): string {
  try {
    const v: unknown = JSON.parse(payload);
    if (isObject(v) && typeof v.reason === "string") return v.reason;
  } catch {
    // fall through
  }
  return "";
}

/** An ICE candidate as the peers exchange it: the browser's `RTCIceCandidateInit`. */
export interface IceCandidate {
  candidate: string;
  sdpMid: string | null;
  sdpMLineIndex: number | null;
  usernameFragment: string | null;
}

/** A sealed offer or answer (SDP), with its features and lanes. */
export interface SealedDescription {
  type: "offer" | "answer";
  sdp: string;
  /** Data-plane features the sender speaks; empty = none (the field is then left out). */
  features: string[];
  /** The lane this description is for (0 is the first; left out when 0). */
  lane: number;
  /** Lane 0 only: lanes asked for (offer) or agreed (answer); absent = the sender knows none. */
  lanes?: number;
}

/** A sealed trickled ICE candidate. */
export interface SealedCandidate {
  type: "candidate";
  candidate: IceCandidate;
  lane: number;
}

/** The plaintext of a `YAKK2_SEALED` message. */
export type SealedMessage = SealedDescription | SealedCandidate;

/** JSON of a sealed plaintext, in the Rust session's field order. */
export function encodeSealedMessage(m: SealedMessage): string {
  if (m.type === "candidate") {
    const c = m.candidate;
    const o: Record<string, unknown> = {
      type: "candidate",
      candidate: {
        candidate: c.candidate,
        sdpMid: c.sdpMid ?? null,
        sdpMLineIndex: c.sdpMLineIndex ?? null,
        usernameFragment: c.usernameFragment ?? null,
      },
    };
    if (m.lane) o.lane = m.lane;
    return JSON.stringify(o);
  }
  const o: Record<string, unknown> = { type: m.type, sdp: m.sdp };
  if (m.features.length > 0) o.features = m.features;
  if (m.lane) o.lane = m.lane;
  if (m.lanes !== undefined) o.lanes = m.lanes;
  return JSON.stringify(o);
}

function u32(v: unknown, field: string): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > 0xffffffff) {
    throw malformed(`sealed ${field} is not a u32`);
  }
  return v;
}

function nullableString(v: unknown, field: string): string | null {
  if (v === undefined || v === null) return null;
  if (typeof v !== "string") throw malformed(`sealed ${field} is not a string`);
  return v;
}

/** Parses a sealed plaintext (bytes as UTF-8, or text) as the Rust session does. */
export function decodeSealedMessage(data: string | Uint8Array): SealedMessage {
  let v: unknown;
  try {
    const text = typeof data === "string" ? data : new TextDecoder("utf-8", { fatal: true }).decode(data);
    v = JSON.parse(text);
  } catch {
    throw malformed("sealed message is not JSON");
  }
  if (!isObject(v)) throw malformed("sealed message is not an object");
  const lane = v.lane === undefined ? 0 : u32(v.lane, "lane");
  switch (v.type) {
    case "offer":
    case "answer": {
      if (typeof v.sdp !== "string") throw malformed("sealed description has no sdp");
      let features: string[] = [];
      if (v.features !== undefined) {
        if (!Array.isArray(v.features) || !v.features.every((f) => typeof f === "string")) {
          throw malformed("sealed features is not a list of strings");
        }
        features = v.features as string[];
      }
      const d: SealedDescription = { type: v.type, sdp: v.sdp, features, lane };
      if (v.lanes !== undefined && v.lanes !== null) d.lanes = u32(v.lanes, "lanes");
      return d;
    }
    case "candidate": {
      const c = v.candidate;
      if (!isObject(c) || typeof c.candidate !== "string") {
        throw malformed("sealed candidate has no candidate");
      }
      let mline: number | null = null;
      if (c.sdpMLineIndex !== undefined && c.sdpMLineIndex !== null) {
        mline = u32(c.sdpMLineIndex, "sdpMLineIndex");
        if (mline > 0xffff) throw malformed("sealed sdpMLineIndex is not a u16");
      }
      return {
        type: "candidate",
        candidate: {
          candidate: c.candidate,
          sdpMid: nullableString(c.sdpMid, "sdpMid"),
          sdpMLineIndex: mline,
          usernameFragment: nullableString(c.usernameFragment, "usernameFragment"),
        },
        lane,
      };
    }
    default:
      throw malformed("sealed message of unknown type");
  }
}
