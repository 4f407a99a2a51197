/** The failures of the file transfer protocol, after the Rust `TransferError`. */

import { escape } from "./text.js";

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

export function protocolError(msg: string): TransferError {
  return new TransferError("protocol", `protocol error: ${msg}`);
}

export function unsafeName(name: string, reason: string): TransferError {
  return new TransferError("unsafe-name", `unsafe name in the offer: ${escape(name)}: ${reason}`);
}
