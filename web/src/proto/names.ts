/**
 * The rules for a name in an offer (Rust `yakk-transfer` `names`): relative, `/`-separated,
 * no component that could leave the receiver's folder or mean something else on some system.
 */

import { utf8 } from "./bytes.js";
import { unsafeName } from "./errors.js";

/** Longest name / component, deepest nesting. */
export const MAX_NAME_BYTES = 4096;
export const MAX_COMPONENT_BYTES = 255;
export const MAX_DEPTH = 128;

// ---------------------------------------------------------------- names

function isControl(cp: number): boolean {
  return cp <= 0x1f || (cp >= 0x7f && cp <= 0x9f);
}

/** One component's problem, or `null` (Rust `names::check_component`). */
export function checkComponent(part: string): string | null {
  if (part.length === 0) return "empty path component";
  if (part === "." || part === "..") return "`.` or `..` path component";
  if (utf8(part).length > MAX_COMPONENT_BYTES) return "path component longer than 255 bytes";
  for (const ch of part) {
    if (ch === "\\") return "backslash in name";
    if (ch === ":") return "colon in name (drive letter or stream name)";
    if (ch === "/") return "slash in name";
    if (isControl(ch.codePointAt(0)!)) return "control character in name";
  }
  return null;
}

/** Checks a relative `/`-separated name (Rust `names::validate`); its components. */
export function validateName(name: string): string[] {
  if (name.length === 0) throw unsafeName(name, "empty name");
  if (utf8(name).length > MAX_NAME_BYTES) throw unsafeName(name, "name too long");
  if (name.startsWith("/")) throw unsafeName(name, "absolute path");
  const parts = name.split("/");
  if (parts.length > MAX_DEPTH) throw unsafeName(name, "folders nested too deep");
  for (const p of parts) {
    const why = checkComponent(p);
    if (why !== null) throw unsafeName(name, why);
  }
  return parts;
}

/** Whether a last component is of the form `.yakk-*.part`, reserved for partial files. */
export function isPartialName(component: string): boolean {
  return component.startsWith(".yakk-") && component.endsWith(".part");
}
