/**
 * Wire protocol v1: the msgpack envelopes exchanged between the gateway and
 * services. PROTOCOL.md is the specification; this file is its only
 * implementation, imported by both the gateway and the service SDK.
 */
import { Packr, Unpackr } from 'msgpackr';

/** The protocol's major version, carried as `v` in every envelope. */
export const PROTOCOL_VERSION = 1;

/** Queue group every SDK service joins, so overlapping mounts never both receive a request. */
export const DEFAULT_QUEUE = 'natsgw';

/** An HTTP request as the gateway sends it to a service. */
export interface RequestEnvelope {
  /** Protocol major version, always 1 here. */
  v: number;
  /** Request id: the client's `x-request-id`, or one the gateway made up. Echoed on the response. */
  id: string;
  /** Method as the client sent it, e.g. `GET`. */
  method: string;
  /** Path as the client sent it: starts with `/`, percent-encoding intact, no query. */
  path: string;
  /** Raw query string without the `?`; empty when there is none. */
  query: string;
  /** Header fields in order, flattened: `[name0, value0, name1, value1, …]`; names are lower-case. */
  headers: string[];
  /** Request body; empty when there is none. */
  body: Uint8Array;
  /** Address of the client that connected to the gateway. */
  remote: string;
  /** `http` or `https`, as seen by the client. */
  scheme: string;
  /** The authority the client asked for (its `Host` header). */
  host: string;
  /** The gateway's root subject, e.g. `api`. */
  root: string;
  /** The subject this request was published on. */
  subject: string;
  /** How long the gateway waits for the reply, in milliseconds. */
  timeoutMs: number;
}

/** A service's answer. */
export interface ReplyEnvelope {
  v: number;
  /** HTTP status, 200–599. */
  status: number;
  /** Header fields, flattened like the request's; repeated names (`set-cookie`) stay repeated. */
  headers: string[];
  body: Uint8Array;
}

// useRecords: false keeps the output plain msgpack that any implementation
// can read; variableMapSize writes the smallest map header (fixmap).
const packr = new Packr({ useRecords: false, variableMapSize: true });
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });

/**
 * Encodes a request envelope.
 * @example encodeRequest({ v: 1, id: 'r1', method: 'GET', path: '/', query: '', headers: [], body: new Uint8Array(), remote: '127.0.0.1', scheme: 'http', host: 'localhost', root: 'api', subject: 'api', timeoutMs: 30000 })
 */
export function encodeRequest(env: RequestEnvelope): Uint8Array {
  return packr.pack(env);
}

/**
 * Encodes a reply envelope.
 * @example encodeReply({ v: 1, status: 200, headers: ['content-type', 'text/plain'], body: Buffer.from('hi') })
 */
export function encodeReply(env: ReplyEnvelope): Uint8Array {
  return packr.pack(env);
}

/** Thrown (SDK side) for a request envelope that does not follow the protocol. */
export class ProtocolError extends Error {
  override name = 'ProtocolError';
  constructor(readonly code: 'bad-envelope' | 'unsupported-version', message: string) {
    super(message);
  }
}

// RFC 9110 §5.1: field-name = token; tchar is this set.
const TOKEN_RE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// RFC 9110 §5.5: a field value holds no CR, LF, NUL or other control
// characters except HTAB. (obs-text, bytes ≥ 0x80, is let through.)
const BAD_VALUE_RE = /[\x00-\x08\x0a-\x1f\x7f]/;

/** True when `name` is a legal HTTP field name. */
export function isValidHeaderName(name: string): boolean {
  return TOKEN_RE.test(name);
}

/** True when `value` is a legal HTTP field value (no CR, LF, NUL, other controls). */
export function isValidHeaderValue(value: string): boolean {
  return !BAD_VALUE_RE.test(value);
}

function decodeBody(body: unknown): Uint8Array | undefined {
  if (body instanceof Uint8Array) return body;
  if (body === undefined || body === null) return EMPTY;
  if (typeof body === 'string') return Buffer.from(body, 'utf8');
  return undefined;
}
const EMPTY = new Uint8Array(0);

function unpack(data: Uint8Array): unknown {
  try {
    return unpackr.unpack(data);
  } catch {
    return undefined;
  }
}

/** A decoded msgpack map: a plain object (msgpackr turns extensions and the never-used 0xC1 into other objects). */
function isMap(x: unknown): x is Record<string, unknown> {
  if (x === null || typeof x !== 'object') return false;
  const proto = Object.getPrototypeOf(x) as unknown;
  return proto === Object.prototype || proto === null;
}

function isStringPairs(a: unknown): a is string[] {
  if (!Array.isArray(a) || (a.length & 1) !== 0) return false;
  for (let i = 0; i < a.length; i++) if (typeof a[i] !== 'string') return false;
  return true;
}

/**
 * Decodes and checks a service's reply. Returns the envelope, or a short
 * reason (a string) when it must not be forwarded: not msgpack, unknown
 * version, status outside 200–599, or an illegal header name or value.
 * Unknown fields are ignored.
 * @example decodeReply(encodeReply({ v: 1, status: 204, headers: [], body: new Uint8Array() })).status // 204
 */
export function decodeReply(data: Uint8Array): ReplyEnvelope | string {
  const r = unpack(data);
  if (!isMap(r)) return 'reply is not a msgpack map';
  if (r.v !== PROTOCOL_VERSION) return `reply has unsupported protocol version ${JSON.stringify(r.v) ?? 'undefined'}`;
  const status = r.status;
  if (typeof status !== 'number' || !Number.isInteger(status) || status < 200 || status > 599) {
    return `reply has invalid status ${JSON.stringify(status) ?? 'undefined'}`;
  }
  let headers = r.headers;
  if (headers === undefined || headers === null) headers = [];
  else if (!isStringPairs(headers)) return 'reply headers are not a flat list of name/value strings';
  const h = headers as string[];
  for (let i = 0; i < h.length; i += 2) {
    if (!TOKEN_RE.test(h[i]!)) return `reply has an illegal header name ${JSON.stringify(h[i]!.slice(0, 64))}`;
    if (BAD_VALUE_RE.test(h[i + 1]!)) return `reply header ${h[i]} has an illegal value (control characters)`;
  }
  const body = decodeBody(r.body);
  if (body === undefined) return 'reply body is not binary';
  return { v: PROTOCOL_VERSION, status, headers: h, body };
}

/**
 * Decodes a request envelope (service side). Throws {@link ProtocolError} for
 * anything a v1 gateway would not send; unknown fields are ignored.
 */
export function decodeRequest(data: Uint8Array): RequestEnvelope {
  const r = unpack(data);
  if (!isMap(r)) throw new ProtocolError('bad-envelope', 'request is not a msgpack map');
  if (r.v !== PROTOCOL_VERSION) {
    throw new ProtocolError('unsupported-version', `request has unsupported protocol version ${JSON.stringify(r.v) ?? 'undefined'}`);
  }
  const str = (k: string, fallback?: string): string => {
    const x = r[k];
    if (typeof x === 'string') return x;
    if (x === undefined && fallback !== undefined) return fallback;
    throw new ProtocolError('bad-envelope', `request field ${k} must be a string`);
  };
  const method = str('method');
  const path = str('path');
  if (!path.startsWith('/')) throw new ProtocolError('bad-envelope', 'request path must start with /');
  const headers = r.headers ?? [];
  if (!isStringPairs(headers)) throw new ProtocolError('bad-envelope', 'request headers must be a flat list of name/value strings');
  const body = decodeBody(r.body);
  if (body === undefined) throw new ProtocolError('bad-envelope', 'request body must be binary');
  const timeoutMs = typeof r.timeoutMs === 'number' && r.timeoutMs > 0 ? r.timeoutMs : 0;
  return {
    v: PROTOCOL_VERSION,
    id: str('id', ''),
    method,
    path,
    query: str('query', ''),
    headers,
    body,
    remote: str('remote', ''),
    scheme: str('scheme', 'http'),
    host: str('host', ''),
    root: str('root', ''),
    subject: str('subject', ''),
    timeoutMs,
  };
}
