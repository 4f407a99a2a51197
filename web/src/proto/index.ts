/**
 * yakk/2's protocol core for the browser peer, free of I/O: the J-PAKE key exchange
 * (docs/yakk2-pake.md), the sealed signalling and the envelope (docs/yakk2.md), and the
 * file transfer protocol with `window` flow control (docs/yakk2-transfer.md). Each part is
 * checked by the unit tests in web/test/unit against vectors made by the Rust crates.
 */

export {
  Party,
  PakeError,
  SessionKeys,
  passwordScalar,
  peerRole,
  transcriptHash,
  decodeRound1,
  decodeRound2,
  decodeConfirm,
  ROUND1_TYPE,
  ROUND2_TYPE,
  CONFIRM_TYPE,
  ROUND1_LEN,
  ROUND2_LEN,
  CONFIRM_LEN,
  MAX_PAKE_PAYLOAD,
  KEY_LEN,
} from "./pake.js";
export type { Role, Secrets, PakeErrorCode, Intermediates, Round1, Round2 } from "./pake.js";

export { SealedChannel, SealError, associatedData, counterNonce } from "./seal.js";
export type { SealHeader, SealErrorCode } from "./seal.js";

export {
  MAX_ENVELOPE,
  SERVER_ID,
  MSG,
  MSG2,
  VERSION_1,
  VERSION_2,
  FEATURE_WINDOW,
  FEATURE_SMALL_BURSTS,
  MAX_LANES,
  ABORT_REASONS,
  REFUSALS,
  EnvelopeError,
  parseEnvelope,
  serializeEnvelope,
  envelope,
  requestOfferPayload,
  parseRequestOffer,
  abortPayload,
  parseAbort,
  encodeSealedMessage,
  decodeSealedMessage,
} from "./envelope.js";
export type {
  Envelope,
  IceServer,
  IceCandidate,
  AbortReason,
  SealedMessage,
  SealedDescription,
  SealedCandidate,
} from "./envelope.js";

export * from "./transfer.js";
export * from "./names.js";
export * from "./hash.js";
export * from "./data.js";
export * from "./window.js";

export { escape } from "./text.js";
export {
  base64Encode,
  base64Decode,
  toHex,
  fromHex,
  utf8,
  fromUtf8,
  constantTimeEqual,
} from "./bytes.js";
