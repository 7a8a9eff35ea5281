/**
 * W3C Trace Context (https://www.w3.org/TR/trace-context/): the
 * `traceparent` and `tracestate` headers as the gateway reads them from a
 * client and writes them on to a service (PROTOCOL.md §13). Everything here
 * is a loop over characters: no regex, linear in the input, bounded output.
 */
import { randomFillSync } from 'node:crypto';

/** A valid traceparent's fields: ids as lower-case hex. */
export interface TraceParent {
  traceId: string;
  /** The caller's span (the parent of the next one). */
  spanId: string;
  /** Trace flags; bit 0 is "sampled". */
  flags: number;
}

export const TRACEPARENT = 'traceparent';
export const TRACESTATE = 'tracestate';
/** Longest tracestate passed on (the spec asks vendors to pass at least 512 characters). */
export const MAX_TRACESTATE = 512;
const MAX_TRACESTATE_MEMBERS = 32;

/** 0–15 for a lower-case hex digit, else -1 (upper case is invalid in traceparent). */
function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  return -1;
}

/** True when s[from, to) is lower-case hex and not all zeros (an invalid id). */
function isId(s: string, from: number, to: number): boolean {
  let nonZero = false;
  for (let i = from; i < to; i++) {
    const v = hexValue(s.charCodeAt(i));
    if (v < 0) return false;
    if (v !== 0) nonZero = true;
  }
  return nonZero;
}

/**
 * Parses a traceparent (`00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`),
 * or returns undefined when it is invalid. A later version is read by the
 * version-00 layout, as the spec says, if it is at least that long and
 * continues with a `-`; version `ff` is invalid.
 * @example parseTraceparent('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01') // { traceId: '4bf9…', spanId: '00f0…', flags: 1 }
 */
export function parseTraceparent(value: string): TraceParent | undefined {
  if (value.length < 55) return undefined;
  const v0 = hexValue(value.charCodeAt(0));
  const v1 = hexValue(value.charCodeAt(1));
  if (v0 < 0 || v1 < 0 || (v0 === 15 && v1 === 15)) return undefined;
  const version = v0 * 16 + v1;
  if (version === 0 ? value.length !== 55 : value.length > 55 && value.charCodeAt(55) !== 0x2d) return undefined;
  if (value.charCodeAt(2) !== 0x2d || value.charCodeAt(35) !== 0x2d || value.charCodeAt(52) !== 0x2d) return undefined;
  if (!isId(value, 3, 35) || !isId(value, 36, 52)) return undefined;
  const f0 = hexValue(value.charCodeAt(53));
  const f1 = hexValue(value.charCodeAt(54));
  if (f0 < 0 || f1 < 0) return undefined;
  return { traceId: value.slice(3, 35), spanId: value.slice(36, 52), flags: f0 * 16 + f1 };
}

/** A version-00 traceparent. */
export function formatTraceparent(traceId: string, spanId: string, sampled: boolean): string {
  return `00-${traceId}-${spanId}-${sampled ? '01' : '00'}`;
}

/** tracestate key characters after the first (lcalpha / DIGIT / _ - * /), and @ for tenant@system. */
function isKeyChar(c: number): boolean {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x5f || c === 0x2d || c === 0x2a || c === 0x2f || c === 0x40;
}

/** One list member `key=value` (already trimmed), by the spec's grammar, loosely on where @ may stand. */
function isMember(s: string): boolean {
  const eq = s.indexOf('=');
  if (eq < 1 || eq > 256 || s.length - eq - 1 < 1 || s.length - eq - 1 > 256) return false;
  const first = s.charCodeAt(0);
  if (!((first >= 0x61 && first <= 0x7a) || (first >= 0x30 && first <= 0x39))) return false;
  for (let i = 1; i < eq; i++) if (!isKeyChar(s.charCodeAt(i))) return false;
  // value: printable ASCII but , and =; spaces only inside.
  for (let i = eq + 1; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c > 0x7e || c === 0x2c || c === 0x3d) return false;
  }
  return s.charCodeAt(s.length - 1) !== 0x20;
}

/**
 * A tracestate (several fields already joined with `,`) as it is passed on:
 * members trimmed, empty ones dropped, at most 32 members and 512
 * characters (members dropped from the end, as the spec allows); undefined
 * when it is empty or any member is invalid (the spec lets a vendor drop an
 * invalid tracestate whole).
 */
export function normalizeTracestate(value: string): string | undefined {
  let out = '';
  let members = 0;
  let start = 0;
  while (start <= value.length) {
    let end = value.indexOf(',', start);
    if (end === -1) end = value.length;
    let a = start;
    let b = end;
    while (a < b && (value.charCodeAt(a) === 0x20 || value.charCodeAt(a) === 0x09)) a++;
    while (b > a && (value.charCodeAt(b - 1) === 0x20 || value.charCodeAt(b - 1) === 0x09)) b--;
    start = end + 1;
    if (a === b) continue;
    if (b - a > 513) return undefined;
    const member = value.slice(a, b);
    if (!isMember(member)) return undefined;
    if (++members > MAX_TRACESTATE_MEMBERS) return undefined;
    if (out.length + member.length + 1 <= MAX_TRACESTATE) out = out === '' ? member : out + ',' + member;
  }
  return out === '' ? undefined : out;
}

// Ids come from a pool of random bytes refilled 4 KiB at a time: one
// randomFillSync per 170 traces instead of one per id.
const pool = Buffer.allocUnsafe(4096);
let poolAt = pool.length;
function randomHex(bytes: number): string {
  for (;;) {
    if (poolAt + bytes > pool.length) {
      randomFillSync(pool);
      poolAt = 0;
    }
    const start = poolAt;
    poolAt += bytes;
    // All zeros is an invalid id; draw again (chance 2^-64 or less).
    for (let i = start; i < poolAt; i++) if (pool[i] !== 0) return pool.toString('hex', start, poolAt);
  }
}

/** A new random trace id: 32 lower-case hex digits, never all zero. */
export const newTraceId = (): string => randomHex(16);
/** A new random span id: 16 lower-case hex digits, never all zero. */
export const newSpanId = (): string => randomHex(8);
