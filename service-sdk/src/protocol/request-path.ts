/**
 * What the gateway makes of a request target's path and query before it
 * maps the path to a subject, matches an override or forwards anything
 * (PROTOCOL.md §2):
 *
 * - Dot segments are removed as RFC 3986 §5.2.4 says (`/a/./b` → `/a/b`,
 *   `/a/b/../c` → `/a/c`); a segment counts as one when it percent-decodes
 *   to `.` or `..` (`%2e`, `.%2E`), since RFC 3986 §6.2.2.2 makes those the
 *   same characters. One that would climb above the root is refused:
 *   `/../x` is never a path a client means, and no path can then reach a
 *   backend outside its route's prefix.
 * - A segment that hides a dot segment behind an encoded slash or a
 *   backslash (`..%2F..`, `..\x`, `%2e%2e%5c`) is refused: some servers
 *   decode `%2F` or treat `\` as a separator before they resolve dots. Other
 *   encoded slashes are data and stay (`group%2Fproject`).
 * - Characters a URI cannot hold raw (from U+007F up, as clients send raw
 *   UTF-8) are percent-encoded as UTF-8; bytes that are not UTF-8 (uWS hands
 *   them over as U+FFFD) are refused, as is a `#`: a request target has no
 *   fragment (RFC 9112 §3.2).
 * Everything else, percent-encoding included, is left exactly as sent.
 * Linear in the input; the common path (no dot, `%`, `\`, `#` or non-ASCII)
 * is one scan and no allocation.
 */

/** Why a request target was refused; the gateway answers 400 with the reason. */
export type PathRefusal = 'bad-percent-encoding' | 'dot-segment-above-root' | 'hidden-dot-segment' | 'fragment' | 'not-utf8';

/** Most path segments normalised; the subject mapping allows far fewer (MAX_SEGMENTS). */
const MAX_RAW_SEGMENTS = 256;

const HEX = '0123456789ABCDEF';

function hexValue(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 65 && c <= 70) return c - 55;
  if (c >= 97 && c <= 102) return c - 87;
  return -1;
}

/** True for characters that make a path need the slow path. */
function special(c: number): boolean {
  return c === 46 /* . */ || c === 37 /* % */ || c === 92 /* \ */ || c === 35 /* # */ || c >= 0x7f;
}

/**
 * The path as the gateway uses it, or why it is refused.
 * @example normalizePath('/legacy/a/../b')   // '/legacy/b'
 * @example normalizePath('/legacy/../../etc') // 'dot-segment-above-root'
 * @example normalizePath('/ü')                // '/%C3%BC'
 */
export function normalizePath(path: string): string | PathRefusal {
  let plain = true;
  for (let i = 0; i < path.length && plain; i++) if (special(path.charCodeAt(i))) plain = false;
  if (plain) return path;
  if (path.includes('#')) return 'fragment';
  if (path.includes('\uFFFD')) return 'not-utf8';
  const raw = (path.charCodeAt(0) === 47 ? path.slice(1) : path).split('/', MAX_RAW_SEGMENTS + 1);
  // More segments than any subject may have: the subject mapping refuses it (414), nothing is forwarded.
  if (raw.length > MAX_RAW_SEGMENTS) return path;
  const out: string[] = [];
  let endsWithSlash = false;
  for (let i = 0; i < raw.length; i++) {
    const segment = raw[i]!;
    const kind = dotKind(segment);
    if (kind === undefined) return 'bad-percent-encoding';
    const last = i === raw.length - 1;
    if (kind === 1) {
      endsWithSlash = last;
      continue;
    }
    if (kind === 2) {
      if (out.length === 0) return 'dot-segment-above-root';
      out.pop();
      endsWithSlash = last;
      continue;
    }
    if (kind === 3) return 'hidden-dot-segment';
    out.push(encodeRaw(segment));
    endsWithSlash = false;
  }
  if (endsWithSlash) out.push('');
  if (out.length === 0 || (out.length === 1 && out[0] === '')) return '/';
  return '/' + out.join('/');
}

/**
 * 0: an ordinary segment, 1: `.`, 2: `..`, 3: hides a dot segment behind
 * `/` or `\` once decoded; undefined for broken percent-encoding.
 */
function dotKind(segment: string): 0 | 1 | 2 | 3 | undefined {
  let hasDot = false;
  let hasPercent = false;
  let hasBackslash = false;
  for (let i = 0; i < segment.length; i++) {
    const c = segment.charCodeAt(i);
    if (c === 46) hasDot = true;
    else if (c === 37) hasPercent = true;
    else if (c === 92) hasBackslash = true;
  }
  if (!hasPercent) {
    if (!hasDot) return 0;
    if (segment === '.') return 1;
    if (segment === '..') return 2;
    return hasBackslash && hidesDot(segment) ? 3 : 0;
  }
  // Decode only the characters that matter here: '.', '/', '\'.
  let decoded = '';
  for (let i = 0; i < segment.length; i++) {
    const c = segment.charCodeAt(i);
    if (c !== 37) {
      decoded += segment[i];
      continue;
    }
    const hi = hexValue(segment.charCodeAt(i + 1));
    const lo = hexValue(segment.charCodeAt(i + 2));
    if (hi < 0 || lo < 0) return undefined;
    const b = (hi << 4) | lo;
    decoded += b === 46 ? '.' : b === 47 ? '/' : b === 92 ? '\\' : '\u0000';
    i += 2;
  }
  if (decoded === '.') return 1;
  if (decoded === '..') return 2;
  return hidesDot(decoded) ? 3 : 0;
}

/** True when splitting on `/` and `\` leaves a `.` or `..` piece. */
function hidesDot(s: string): boolean {
  let start = 0;
  for (let i = 0; i <= s.length; i++) {
    const c = i < s.length ? s.charCodeAt(i) : 47;
    if (c !== 47 && c !== 92) continue;
    const len = i - start;
    if ((len === 1 && s.charCodeAt(start) === 46) || (len === 2 && s.charCodeAt(start) === 46 && s.charCodeAt(start + 1) === 46)) return true;
    start = i + 1;
  }
  return false;
}

/** Percent-encodes (as UTF-8) the characters from U+007F up; everything else stays as sent. */
function encodeRaw(s: string): string {
  let i = 0;
  while (i < s.length && s.charCodeAt(i) < 0x7f) i++;
  if (i === s.length) return s;
  let out = s.slice(0, i);
  for (const b of Buffer.from(s.slice(i), 'utf8')) out += b < 0x7f ? String.fromCharCode(b) : '%' + HEX[b >> 4] + HEX[b & 15];
  return out;
}

/**
 * The query as the gateway forwards it, or why it is refused: characters
 * from U+007F up percent-encoded as UTF-8, like the path's; not-UTF-8 bytes
 * and `#` refused.
 * @example normalizeQuery('q=ü') // 'q=%C3%BC'
 */
export function normalizeQuery(query: string): string | PathRefusal {
  let plain = true;
  for (let i = 0; i < query.length && plain; i++) {
    const c = query.charCodeAt(i);
    if (c === 35 || c >= 0x7f) plain = false;
  }
  if (plain) return query;
  if (query.includes('#')) return 'fragment';
  if (query.includes('\uFFFD')) return 'not-utf8';
  return encodeRaw(query);
}
