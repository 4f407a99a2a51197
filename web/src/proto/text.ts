/**
 * Text that came from elsewhere (a peer, a signalling server), made safe to show: the one
 * escaping of yakk-wire's `escape`. Control characters (C0, DEL, C1), bidirectional
 * overrides and invisible format characters become `\u{…}` (lower-case hex) and a
 * backslash becomes `\\`; everything else, letters of any script included, is kept.
 */

function isControl(cp: number): boolean {
  return cp <= 0x1f || (cp >= 0x7f && cp <= 0x9f);
}

function isFormat(cp: number): boolean {
  return (
    cp === 0x061c ||
    (cp >= 0x200b && cp <= 0x200f) ||
    (cp >= 0x2028 && cp <= 0x202e) ||
    (cp >= 0x2060 && cp <= 0x2069) ||
    cp === 0xfeff ||
    (cp >= 0xfff9 && cp <= 0xfffb)
  );
}

/** yakk's escaping of any foreign text before it is shown. */
export function escape(s: string): string {
  let out = "";
  for (const ch of s) {
    const cp = ch.codePointAt(0)!;
    if (ch === "\\") out += "\\\\";
    else if (isControl(cp) || isFormat(cp)) out += `\\u{${cp.toString(16)}}`;
    else out += ch;
  }
  return out;
}
