/** BLAKE3, the hash of every file a transfer carries. */

import { blake3 } from "@noble/hashes/blake3.js";
import { createBLAKE3 } from "hash-wasm";

/** An incremental BLAKE3-256 hasher. */
export interface Hasher {
  update(data: Uint8Array): Hasher;
  digest(): Uint8Array;
}

/** A new incremental BLAKE3 hasher. */
export function blake3Hasher(): Hasher {
  const h = blake3.create({});
  return {
    update(data: Uint8Array) {
      h.update(data);
      return this;
    },
    digest: () => h.digest(),
  };
}

/** BLAKE3 of `data`. */
export function blake3Hash(data: Uint8Array): Uint8Array {
  return blake3(data);
}

/**
 * A new incremental BLAKE3 hasher for bulk data: WebAssembly (`hash-wasm`, about 12 times
 * faster than JavaScript: hashing was the page's bottleneck when receiving), or the JavaScript
 * one where the page may not compile WebAssembly (no support, or a policy without
 * `'wasm-unsafe-eval'`).
 */
export async function bulkBlake3Hasher(): Promise<Hasher> {
  if (wasmUsable !== false) {
    try {
      const h = await createBLAKE3(256);
      h.init();
      wasmUsable = true;
      const hasher: Hasher = {
        update(data: Uint8Array) {
          h.update(data);
          return hasher;
        },
        digest: () => h.digest("binary"),
      };
      return hasher;
    } catch {
      wasmUsable = false;
    }
  }
  return blake3Hasher();
}

/** Whether WebAssembly hashing worked here: unknown until first tried. */
let wasmUsable: boolean | null = null;

/** Which implementation [`bulkBlake3Hasher`] gives: for tests and diagnostics. */
export function bulkHasherKind(): "wasm" | "js" | "untried" {
  return wasmUsable === null ? "untried" : wasmUsable ? "wasm" : "js";
}
