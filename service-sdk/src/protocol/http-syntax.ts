/**
 * Character rules from RFC 9110 for what crosses the boundary: header names,
 * header values, methods, paths. One table lookup per character, done by
 * the decoders in the same pass that reads each string, so every check is
 * linear in its input whatever the input is (no regular expression that
 * could backtrack).
 */

// RFC 9110 §5.6.2: tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA
const TCHAR = new Uint8Array(128);
for (const ch of "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") TCHAR[ch.charCodeAt(0)] = 1;

/** Bits of {@link CHAR_CLASS}: what a character rules out. */
export const NOT_TCHAR = 1;
/** A control character other than HTAB (never in a field value). */
export const CONTROL = 2;
/** Not visible ASCII (0x21–0x7e): space, controls, DEL, and everything from 0x80. */
export const NOT_VISIBLE = 4;

/**
 * What each character code below 256 rules out, as {@link NOT_TCHAR} |
 * {@link CONTROL} | {@link NOT_VISIBLE}: one table lookup per character lets
 * a decoder classify a string in the same pass that reads it.
 */
export const CHAR_CLASS = new Uint8Array(256);
for (let c = 0; c < 256; c++) {
  let k = 0;
  if (c >= 128 || TCHAR[c] !== 1) k |= NOT_TCHAR;
  if ((c < 0x20 && c !== 0x09) || c === 0x7f) k |= CONTROL;
  if (c < 0x21 || c > 0x7e) k |= NOT_VISIBLE;
  CHAR_CLASS[c] = k;
}

/** The union of {@link CHAR_CLASS} bits over `s` (characters above 0xff count as non-token, non-visible). */
export function classOf(s: string): number {
  let k = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    k |= c < 256 ? CHAR_CLASS[c]! : NOT_TCHAR | NOT_VISIBLE;
  }
  return k;
}
