/**
 * Byte helpers shared by the yakk/2 protocol core: strict standard base64 (as the Rust
 * `base64` crate's STANDARD engine decodes it: padding required, no stray bits), hex,
 * UTF-8, big-endian integers, length-prefixed concatenation (`LP`, RFC 8235 §4) and a
 * constant-time comparison.
 */

const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const B64_INDEX: Int16Array = (() => {
  const t = new Int16Array(256).fill(-1);
  for (let i = 0; i < B64.length; i++) t[B64.charCodeAt(i)] = i;
  return t;
})();

/** Standard base64 with padding (RFC 4648 §4). */
export function base64Encode(bytes: Uint8Array): string {
  let out = "";
  let i = 0;
  for (; i + 3 <= bytes.length; i += 3) {
    const n = (bytes[i]! << 16) | (bytes[i + 1]! << 8) | bytes[i + 2]!;
    out += B64[n >> 18]! + B64[(n >> 12) & 63]! + B64[(n >> 6) & 63]! + B64[n & 63]!;
  }
  const rest = bytes.length - i;
  if (rest === 1) {
    const n = bytes[i]! << 16;
    out += B64[n >> 18]! + B64[(n >> 12) & 63]! + "==";
  } else if (rest === 2) {
    const n = (bytes[i]! << 16) | (bytes[i + 1]! << 8);
    out += B64[n >> 18]! + B64[(n >> 12) & 63]! + B64[(n >> 6) & 63]! + "=";
  }
  return out;
}

/**
 * Strict standard base64: a multiple of 4 characters, only the standard alphabet, `=`
 * only as the final one or two characters, and the unused bits of the last group zero
 * (canonical). Returns `null` for anything else.
 */
export function base64Decode(text: string): Uint8Array | null {
  if (text.length % 4 !== 0) return null;
  let pad = 0;
  if (text.endsWith("==")) pad = 2;
  else if (text.endsWith("=")) pad = 1;
  const out = new Uint8Array((text.length / 4) * 3 - pad);
  let o = 0;
  for (let i = 0; i < text.length; i += 4) {
    const last = i + 4 === text.length;
    const v: number[] = [0, 0, 0, 0];
    for (let j = 0; j < 4; j++) {
      const code = text.charCodeAt(i + j);
      if (last && j >= 4 - pad) {
        if (code !== 61) return null;
        continue;
      }
      const d = code < 256 ? B64_INDEX[code]! : -1;
      if (d < 0) return null;
      v[j] = d;
    }
    const n = (v[0]! << 18) | (v[1]! << 12) | (v[2]! << 6) | v[3]!;
    if (last && pad === 2) {
      if ((n & 0xffff) !== 0) return null;
      out[o++] = n >> 16;
    } else if (last && pad === 1) {
      if ((n & 0xff) !== 0) return null;
      out[o++] = n >> 16;
      out[o++] = (n >> 8) & 0xff;
    } else {
      out[o++] = n >> 16;
      out[o++] = (n >> 8) & 0xff;
      out[o++] = n & 0xff;
    }
  }
  return out;
}

/** Lower-case hex of `bytes`. */
export function toHex(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += b.toString(16).padStart(2, "0");
  return s;
}

/** Bytes of a hex string (even length, hex digits only); throws otherwise. */
export function fromHex(hex: string): Uint8Array {
  if (hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) {
    throw new Error("invalid hex string");
  }
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

const encoder = new TextEncoder();

/** UTF-8 bytes of `s`. */
export function utf8(s: string): Uint8Array {
  return encoder.encode(s);
}

/** Strict UTF-8 decoding; throws on invalid input. */
export function fromUtf8(bytes: Uint8Array): string {
  return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
}

/** Lossy UTF-8 decoding (invalid sequences become U+FFFD), as Rust's `from_utf8_lossy`. */
export function fromUtf8Lossy(bytes: Uint8Array): string {
  return new TextDecoder("utf-8").decode(bytes);
}

/** The concatenation of `parts`. */
export function concat(...parts: Uint8Array[]): Uint8Array {
  let len = 0;
  for (const p of parts) len += p.length;
  const out = new Uint8Array(len);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** `n` as a 4-byte big-endian unsigned integer. */
export function u32be(n: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, n >>> 0);
  return out;
}

/** The largest u64. */
export const U64_MAX = (1n << 64n) - 1n;

/** `n` (0 ≤ n < 2^64) as an 8-byte big-endian unsigned integer. */
export function u64be(n: bigint | number): Uint8Array {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt(n));
  return out;
}

/** `n` (−2^63 ≤ n < 2^63) as an 8-byte big-endian two's-complement integer. */
export function i64be(n: bigint | number): Uint8Array {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigInt64(0, BigInt(n));
  return out;
}

/** `LP(x)`: `len(x)` as 4 bytes big-endian, then `x`. */
export function lp(x: Uint8Array): Uint8Array {
  return concat(u32be(x.length), x);
}

/** `LP(a) ‖ LP(b) ‖ …` */
export function lpAll(...parts: Uint8Array[]): Uint8Array {
  return concat(...parts.map(lp));
}

/** Compares two byte strings in time that depends only on their lengths. */
export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}

/** Big-endian bytes as an unsigned integer (OS2IP). */
export function bytesToBigInt(bytes: Uint8Array): bigint {
  let n = 0n;
  for (const b of bytes) n = (n << 8n) | BigInt(b);
  return n;
}

/** `n` (0 ≤ n < 2^(8·len)) as `len` big-endian bytes. */
export function bigIntToBytes(n: bigint, len: number): Uint8Array {
  const out = new Uint8Array(len);
  for (let i = len - 1; i >= 0; i--) {
    out[i] = Number(n & 0xffn);
    n >>= 8n;
  }
  return out;
}
