/**
 * Path ↔ subject mapping, protocol v1 (see PROTOCOL.md, "Subjects").
 *
 * A URL path becomes a NATS subject under the gateway's root: one token per
 * path segment. Each segment is percent-decoded to bytes, then every byte
 * outside `A-Z a-z 0-9 - _` is written as `=` plus two upper-case hex digits,
 * and an empty segment is written as a lone `=`. So a token never holds `.`,
 * `*`, `>` or white space: no path can produce a wildcard, climb out of the
 * root, or reach a subject other than the one its segments name. The escape
 * is `=` rather than `%` so that every subject is also a valid JetStream KV
 * key (`[-/_=.A-Za-z0-9]`), which the override bucket relies on.
 */

/** Most path segments a request may have; more → 414. */
export const MAX_SEGMENTS = 64;
/** Longest subject (bytes, root included) a request may map to; longer → 414. */
export const MAX_SUBJECT_BYTES = 1024;

/** Why a path could not be mapped; the gateway turns these into 400 / 414. */
export type SubjectError = 'bad-percent-encoding' | 'too-many-segments' | 'subject-too-long';

/** A root subject: one or more tokens of `A-Z a-z 0-9 - _`, separated by dots. */
export const ROOT_SUBJECT_PATTERN = '^[A-Za-z0-9_-]+(\\.[A-Za-z0-9_-]+)*$';
const ROOT_RE = new RegExp(ROOT_SUBJECT_PATTERN);

/**
 * True when `root` can serve as a gateway root or mount subject.
 * @example isValidRoot('api.staging') // true
 * @example isValidRoot('api.*')       // false
 */
export function isValidRoot(root: string): boolean {
  return ROOT_RE.test(root);
}

// Byte classes, built once. 1 = passes through unchanged.
const SAFE = new Uint8Array(256);
for (let c = 0; c < 256; c++) {
  const ch = String.fromCharCode(c);
  if (/[A-Za-z0-9_-]/.test(ch)) SAFE[c] = 1;
}
const HEX = '0123456789ABCDEF';
const ESCAPES: string[] = [];
for (let b = 0; b < 256; b++) ESCAPES.push('=' + HEX[b >> 4] + HEX[b & 15]);

function hexValue(c: number): number {
  if (c >= 48 && c <= 57) return c - 48; // 0-9
  if (c >= 65 && c <= 70) return c - 55; // A-F
  if (c >= 97 && c <= 102) return c - 87; // a-f
  return -1;
}

/**
 * Maps a raw request path (as received, percent-encoding intact, starting
 * with `/`, no query) to a subject under `root`. Returns a string subject or
 * a {@link SubjectError}.
 * @example pathToSubject('api', '/foo/bar')   // 'api.foo.bar'
 * @example pathToSubject('api', '/')          // 'api'
 * @example pathToSubject('api', '/a.b/%2e%2e') // 'api.a=2Eb.=2E=2E'
 */
export function pathToSubject(root: string, path: string): string | SubjectError {
  const len = path.length;
  // Fast path: a plain path (only safe characters and single slashes, no
  // trailing slash) maps by replacing '/' with '.'.
  let plain = len > 1;
  let segments = 1;
  for (let i = 1; i < len && plain; i++) {
    const c = path.charCodeAt(i);
    if (c === 47) {
      if (path.charCodeAt(i - 1) === 47 || i === len - 1) plain = false;
      segments++;
    } else if (c > 255 || SAFE[c] !== 1) {
      plain = false;
    }
  }
  if (plain) {
    if (segments > MAX_SEGMENTS) return 'too-many-segments';
    const subject = root + '.' + path.slice(1).replaceAll('/', '.');
    return subject.length > MAX_SUBJECT_BYTES ? 'subject-too-long' : subject;
  }
  if (len <= 1) return root; // '/' or ''
  return slowPathToSubject(root, path);
}

function slowPathToSubject(root: string, path: string): string | SubjectError {
  const tokens: string[] = [];
  const rest = path.charCodeAt(0) === 47 ? path.slice(1) : path;
  const raw = rest.split('/');
  if (raw.length > MAX_SEGMENTS) return 'too-many-segments';
  let size = root.length;
  for (const segment of raw) {
    const bytes = percentDecode(segment);
    if (bytes === undefined) return 'bad-percent-encoding';
    const token = encodeToken(bytes);
    size += 1 + token.length;
    if (size > MAX_SUBJECT_BYTES) return 'subject-too-long';
    tokens.push(token);
  }
  return root + '.' + tokens.join('.');
}

/** Percent-decodes one raw path segment to bytes; undefined when a `%` is not followed by two hex digits. */
function percentDecode(segment: string): Uint8Array | undefined {
  const utf8 = Buffer.from(segment, 'utf8');
  if (!utf8.includes(37)) return utf8;
  // Decoding only shrinks, so the input's length is enough room.
  const out = Buffer.allocUnsafe(utf8.length);
  let o = 0;
  for (let i = 0; i < utf8.length; i++) {
    const c = utf8[i]!;
    if (c !== 37) {
      out[o++] = c;
      continue;
    }
    const hi = hexValue(utf8[i + 1] ?? -1);
    const lo = hexValue(utf8[i + 2] ?? -1);
    if (hi < 0 || lo < 0) return undefined;
    out[o++] = (hi << 4) | lo;
    i += 2;
  }
  return out.subarray(0, o);
}

/** Encodes one segment's bytes as a subject token. */
export function encodeToken(bytes: Uint8Array): string {
  if (bytes.length === 0) return '=';
  let token = '';
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]!;
    token += SAFE[b] === 1 ? String.fromCharCode(b) : ESCAPES[b];
  }
  return token;
}

/**
 * Decodes one subject token back to the segment's bytes; undefined when the
 * token is not one that {@link encodeToken} produces.
 */
export function decodeToken(token: string): Uint8Array | undefined {
  if (token === '=') return new Uint8Array(0);
  if (token.length === 0) return undefined;
  const out: number[] = [];
  for (let i = 0; i < token.length; i++) {
    const c = token.charCodeAt(i);
    if (c === 61) {
      const hi = token.charCodeAt(i + 1);
      const lo = token.charCodeAt(i + 2);
      // Only upper-case hex is produced; accept nothing else so decoding is one-to-one.
      const h = hi >= 97 ? -1 : hexValue(hi);
      const l = lo >= 97 ? -1 : hexValue(lo);
      if (h < 0 || l < 0) return undefined;
      const b = (h << 4) | l;
      if (SAFE[b] === 1) return undefined; // a safe byte is never escaped
      out.push(b);
      i += 2;
    } else if (c < 256 && SAFE[c] === 1) {
      out.push(c);
    } else {
      return undefined;
    }
  }
  return Uint8Array.from(out);
}

/**
 * Maps a subject under `root` back to the decoded path segments (bytes), the
 * inverse of {@link pathToSubject}. Undefined when the subject is not under
 * `root` or holds a token no path produces.
 * @example subjectToSegments('api', 'api.a=2Eb') // [bytes of 'a.b']
 */
export function subjectToSegments(root: string, subject: string): Uint8Array[] | undefined {
  if (subject === root) return [];
  if (!subject.startsWith(root + '.')) return undefined;
  const segments: Uint8Array[] = [];
  for (const token of subject.slice(root.length + 1).split('.')) {
    const bytes = decodeToken(token);
    if (bytes === undefined) return undefined;
    segments.push(bytes);
  }
  return segments;
}

// Characters left as they are when a segment is written back into a path:
// RFC 3986 unreserved characters (§2.3) plus the sub-delims and ':' '@'
// that pchar allows (§3.3). Everything else is percent-encoded.
const PCHAR = new Uint8Array(256);
for (const ch of "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@") PCHAR[ch.charCodeAt(0)] = 1;

/**
 * Writes a subject under `root` as the canonical path that maps to it.
 * @example subjectToPath('api', 'api.foo.a=2Eb') // '/foo/a.b'
 */
export function subjectToPath(root: string, subject: string): string | undefined {
  const segments = subjectToSegments(root, subject);
  if (segments === undefined) return undefined;
  if (segments.length === 0) return '/';
  let path = '';
  for (const bytes of segments) {
    path += '/';
    for (const b of bytes) path += PCHAR[b] === 1 ? String.fromCharCode(b) : '%' + HEX[b >> 4] + HEX[b & 15];
  }
  return path;
}
