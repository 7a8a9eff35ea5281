/**
 * Raw NATS mode (a routes-bucket entry with `target: "nats-raw"`): for NATS
 * services that do not speak the envelope. The request body is the NATS
 * payload as is; the request line and the gateway's facts travel as NATS
 * headers named `Natsgw-*`, the client's request headers as NATS headers of
 * their own names. The reply's payload is the response body, its NATS
 * headers the response headers, its status `Natsgw-Status` (default 200).
 * Specified in PROTOCOL.md §12.
 */
import { CONTROL, classOf, NOT_TCHAR } from './http-syntax.js';

export const RAW_METHOD = 'Natsgw-Method';
export const RAW_PATH = 'Natsgw-Path';
export const RAW_QUERY = 'Natsgw-Query';
export const RAW_REQUEST_ID = 'Natsgw-Request-Id';
export const RAW_REMOTE = 'Natsgw-Remote';
export const RAW_SCHEME = 'Natsgw-Scheme';
export const RAW_HOST = 'Natsgw-Host';
/** The verified identity (an auth policy), JSON: set by the gateway only (PROTOCOL.md §15). */
export const RAW_AUTH = 'Natsgw-Auth';
/** In a reply: the HTTP status, three digits, 200–599. */
export const RAW_STATUS = 'Natsgw-Status';
/** In a reply message: `1` when another message of the same response follows (a streamed raw reply). */
export const RAW_MORE = 'Natsgw-More';

const MORE_LOWER = RAW_MORE.toLowerCase();
const STATUS_LOWER = RAW_STATUS.toLowerCase();

/** Header names the gateway owns (never a client's) and NATS's own (`Nats-*`), compared lower-case. */
export const isReservedRawHeader = (lowerName: string): boolean => lowerName.startsWith('natsgw-') || lowerName.startsWith('nats-');

/** A reply in raw mode as the gateway reads it: status, flattened headers, body; or why it is invalid. */
export interface RawReply {
  status: number;
  headers: string[];
  body: Uint8Array;
  /** More messages of this response follow (`Natsgw-More: 1`). */
  more: boolean;
}

/** Reads a `Natsgw-More` value: absent is the last message, `1` is more to come; anything else is invalid. */
function readMore(values: string[]): boolean | string {
  if (values.length === 1 && values[0] === '1') return true;
  return `Natsgw-More ${JSON.stringify((values[0] ?? '').slice(0, 16))} is not 1`;
}

/**
 * Whether a later message of a streamed raw reply says more follow. Its
 * other headers are not read: status and headers came with the first.
 */
export function readRawContinuation(entries: Iterable<[string, string[]]>): boolean | string {
  for (const [name, values] of entries) if (name.toLowerCase() === MORE_LOWER) return readMore(values);
  return false;
}

/**
 * Reads a raw reply from its NATS headers (`entries`: name and values, as
 * nats.js gives them) and payload. Invalid: a `Natsgw-Status` that is not
 * 200–599, a `Natsgw-More` other than `1`, a header name that is not an
 * HTTP token, a value with a control character. Linear in the input.
 */
export function readRawReply(entries: Iterable<[string, string[]]>, body: Uint8Array): RawReply | string {
  let status = 200;
  let more = false;
  const headers: string[] = [];
  for (const [name, values] of entries) {
    const lower = name.toLowerCase();
    if (lower === MORE_LOWER) {
      const m = readMore(values);
      if (typeof m === 'string') return m;
      more = m;
      continue;
    }
    if (lower === STATUS_LOWER) {
      const v = values[0] ?? '';
      if (!/^[2-5][0-9]{2}$/.test(v)) return `Natsgw-Status ${JSON.stringify(v.slice(0, 16))} is not a status from 200 to 599`;
      status = Number(v);
      continue;
    }
    if (isReservedRawHeader(lower)) continue;
    if (name.length === 0 || (classOf(name) & NOT_TCHAR) !== 0) return `header name ${JSON.stringify(name.slice(0, 64))} is not an HTTP token`;
    for (const v of values) {
      if ((classOf(v) & CONTROL) !== 0) return `header ${lower} has a control character in its value`;
      headers.push(lower, v);
    }
  }
  return { status, headers, body, more };
}
