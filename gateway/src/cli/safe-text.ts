/**
 * Text from elsewhere (gateway answers, routes bucket values) reaches the
 * user's terminal only through these: a raw ESC, CSI or bidi override in an
 * answer could recolour, rewrite or hide what the table shows. Linear, no
 * regular expressions.
 */

/** True for characters a terminal may act on: C0 and C1 controls, DEL, line/paragraph separators, bidi controls. */
function isUnsafe(c: number): boolean {
  return c < 0x20 || (c >= 0x7f && c <= 0x9f) || c === 0x2028 || c === 0x2029 || (c >= 0x202a && c <= 0x202e) || (c >= 0x2066 && c <= 0x2069) || c === 0x061c || c === 0x200e || c === 0x200f;
}

function unicodeEscape(c: number): string {
  return '\\u' + c.toString(16).padStart(4, '0');
}

/**
 * `s` with every unsafe character written as a visible `\uXXXX` escape.
 * @example printable('ok\x1b[2J') // 'ok\\u001b[2J'
 */
export function printable(s: string): string {
  return escapeFrom(s, 0);
}

/** Escapes the unsafe characters at or above `lowest`. */
function escapeFrom(s: string, lowest: number): string {
  let out: string | undefined;
  let from = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < lowest || !isUnsafe(c)) continue;
    out = (out ?? '') + s.slice(from, i) + unicodeEscape(c);
    from = i + 1;
  }
  return out === undefined ? s : out + s.slice(from);
}

/**
 * JSON text with the unsafe characters JSON.stringify leaves raw (C1, DEL,
 * separators, bidi controls) written as JSON escapes: the same data for a
 * JSON reader, nothing for a terminal to act on.
 * @example jsonSafe(JSON.stringify({ a: '\u009b' })) // '{"a":"\\u009b"}'
 */
export function jsonSafe(json: string): string {
  // JSON.stringify escapes every C0 control inside strings, so C0 here is
  // formatting (newlines, indentation); the rest is only ever inside
  // strings, where \uXXXX reads back as the same character.
  return escapeFrom(json, 0x7f);
}

/** A copy of `value` with {@link printable} applied to every string in it (keys too). */
export function printableDeep<T>(value: T): T {
  if (typeof value === 'string') return printable(value) as T;
  if (Array.isArray(value)) return value.map(printableDeep) as T;
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [printable(k), printableDeep(v)])) as T;
  }
  return value;
}

/**
 * `s` without the slashes at its end, in one pass.
 * @example withoutTrailingSlashes('http://h:8081//') // 'http://h:8081'
 */
export function withoutTrailingSlashes(s: string): string {
  let end = s.length;
  while (end > 0 && s.charCodeAt(end - 1) === 47) end--;
  return s.slice(0, end);
}
