/**
 * yakk/2 sealed signalling payloads (docs/yakk2.md "Sealed payloads";
 * crates/yakk-session/src/sealed.rs): AES-256-GCM, one key and one 64-bit counter per
 * direction, nonce `00000000 ‖ counter`, associated data binding the envelope header,
 * Payload = base64(`counter ‖ ciphertext ‖ tag`). The receiver accepts only the next
 * counter of its direction, so a replayed, reordered, redirected, relabelled or altered
 * message fails to open.
 */

import { gcm } from "@noble/ciphers/aes.js";

import { base64Decode, base64Encode, concat, i64be, lp, u64be, utf8 } from "./bytes.js";

/** Why a sealed payload was refused (the Rust `SealError`). */
export type SealErrorCode = "base64" | "truncated" | "authentication" | "order";

/** A sealed payload that did not open. The handshake stops (abort reason `sealed`). */
export class SealError extends Error {
  readonly code: SealErrorCode;
  constructor(code: SealErrorCode, message: string) {
    super(message);
    this.name = "SealError";
    this.code = code;
  }
}

/** The envelope fields a sealed payload is bound to. */
export interface SealHeader {
  /** The envelope's `Msg_type` (`YAKK2_SEALED`). */
  msgType: string;
  /** The room name. */
  room: string;
  /** The sender's mailbox id (as the server vouches for it). */
  sender: number | bigint;
  /** The recipient's mailbox id. */
  recipient: number | bigint;
}

const LABEL = utf8("yakk/2 sealed");
const TAG_LEN = 16;

/**
 * `LP("yakk/2 sealed") ‖ LP(Msg_type) ‖ LP(room) ‖ Sender (i64 BE) ‖ Recipient (i64 BE) ‖
 * counter (u64 BE)`.
 */
export function associatedData(header: SealHeader, counter: bigint): Uint8Array {
  return concat(
    lp(LABEL),
    lp(utf8(header.msgType)),
    lp(utf8(header.room)),
    i64be(header.sender),
    i64be(header.recipient),
    u64be(counter),
  );
}

/** The 12-byte nonce of `counter`: four zero bytes, then the counter big-endian. */
export function counterNonce(counter: bigint): Uint8Array {
  return concat(new Uint8Array(4), u64be(counter));
}

const MAX_COUNTER = (1n << 64n) - 1n;

/** One peer's end of the sealed signalling channel. */
export class SealedChannel {
  readonly #sendKey: Uint8Array;
  /** `null` until the peer's key confirmation verified (see {@link SealedChannel.receiveWith}). */
  #recvKey: Uint8Array | null = null;
  #sendCounter = 0n;
  #recvCounter = 0n;

  /**
   * `sendKey` = `signalSendKey`, `recvKey` = `signalRecvKey` of the {@link SessionKeys}.
   * Without `recvKey` the channel only seals (a joiner's, between its key confirmation and
   * the owner's) and opens nothing until {@link SealedChannel.receiveWith}.
   */
  constructor(sendKey: Uint8Array, recvKey: Uint8Array | null = null) {
    if (sendKey.length !== 32) throw new Error("AES-256-GCM keys are 32 bytes");
    this.#sendKey = sendKey.slice();
    if (recvKey) this.receiveWith(recvKey);
  }

  /** The peer's key confirmation verified: open what it seals with `recvKey` from now on. */
  receiveWith(recvKey: Uint8Array): void {
    if (recvKey.length !== 32) throw new Error("AES-256-GCM keys are 32 bytes");
    this.#recvKey = recvKey.slice();
  }

  /** The counter the next sealed message will carry. */
  get sendCounter(): bigint {
    return this.#sendCounter;
  }

  /** The counter the next opened message must carry. */
  get recvCounter(): bigint {
    return this.#recvCounter;
  }

  /** Seals `plaintext` (bytes, or a string as UTF-8) for the envelope `header`. */
  seal(header: SealHeader, plaintext: Uint8Array | string): string {
    const counter = this.#sendCounter;
    if (counter >= MAX_COUNTER) throw new Error("sealed counter exhausted");
    this.#sendCounter = counter + 1n;
    const pt = typeof plaintext === "string" ? utf8(plaintext) : plaintext;
    const ct = gcm(this.#sendKey, counterNonce(counter), associatedData(header, counter)).encrypt(pt);
    return base64Encode(concat(u64be(counter), ct));
  }

  /** Opens a payload received in the envelope `header`; throws {@link SealError}. */
  open(header: SealHeader, payload: string): Uint8Array {
    const raw = base64Decode(payload.trim());
    if (raw === null) throw new SealError("base64", "sealed payload is not valid base64");
    if (raw.length < 8 + TAG_LEN) throw new SealError("truncated", "sealed payload is too short");
    const counter = new DataView(raw.buffer, raw.byteOffset, 8).getBigUint64(0);
    if (counter !== this.#recvCounter) {
      throw new SealError(
        "order",
        `sealed payload arrived out of order (counter ${counter}, expected ${this.#recvCounter})`,
      );
    }
    const recvKey = this.#recvKey;
    if (!recvKey) {
      throw new SealError("authentication", "a sealed payload before the peer's key confirmation");
    }
    let pt: Uint8Array;
    try {
      pt = gcm(recvKey, counterNonce(counter), associatedData(header, counter)).decrypt(
        raw.subarray(8),
      );
    } catch {
      throw new SealError(
        "authentication",
        "sealed payload failed authentication (tampered, replayed or not for us)",
      );
    }
    this.#recvCounter = counter + 1n;
    return pt;
  }

  /** {@link open}, decoded as UTF-8 text. */
  openText(header: SealHeader, payload: string): string {
    return new TextDecoder("utf-8", { fatal: true }).decode(this.open(header, payload));
  }
}
