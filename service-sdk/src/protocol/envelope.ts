/**
 * Wire protocol: the msgpack envelopes exchanged between the gateway and
 * services (v1, and the stream heads of v2; the frames that follow a stream
 * head are in stream.ts). PROTOCOL.md is the specification; this file is its
 * only implementation, imported by both the gateway and the service SDK.
 */
import { CONTROL, NOT_TCHAR, NOT_VISIBLE } from './http-syntax.js';
import * as R from './msgpack-reader.js';
import * as W from './msgpack-writer.js';
import { decodeFrame, isValidInbox, STREAM_VERSION } from './stream.js';

/** The protocol's major version, carried as `v` in every envelope. */
export const PROTOCOL_VERSION = 1;

/** Queue group every SDK service joins, so overlapping mounts never both receive a request. */
export const DEFAULT_QUEUE = 'natsgw';

/** An HTTP request as the gateway sends it to a service. */
export interface RequestEnvelope {
  /** Protocol major version: 1, or 2 when the body streams (`more`). */
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
  /** Capabilities the gateway accepts in the reply (`stream`); absent from a v1 gateway. */
  caps?: string[];
  /** Response body bytes the service may send in data frames before it waits for more credit (v2). */
  credit?: number;
  /** The body continues in data frames (v2 only). */
  more?: boolean;
  /** The request is a WebSocket upgrade the gateway can complete (PROTOCOL.md §14); `caps` then lists `ws`. */
  ws?: boolean;
  /**
   * The identity the gateway verified (a route's auth policy), as JSON text:
   * `{"method":"jwt"|"api-key","sub":…,"claims":{…}}` (PROTOCOL.md §15).
   * Only the gateway sets it; a client has no way to.
   */
  auth?: string;
  /** `auth` parsed, as decodeRequest checked it (not encoded; set by the decoder only). */
  identity?: RequestIdentity;
}

/** A service's answer. */
export interface ReplyEnvelope {
  /** 1 for a complete reply, 2 for a stream head. */
  v: number;
  /** HTTP status, 200–599. */
  status: number;
  /** Header fields, flattened like the request's; repeated names (`set-cookie`) stay repeated. */
  headers: string[];
  body: Uint8Array;
  /** The body continues in data frames (v2 only). */
  more?: boolean;
  /** The service's private stream inbox, where credit and cancel go (v2). */
  inbox?: string;
  /** Accepting a WebSocket (status 101): message bytes the gateway may send before it waits for more credit. */
  credit?: number;
}

// Keys written often, as the str(...) calls below take them.
const K = {
  v: 'v',
  id: 'id',
  method: 'method',
  path: 'path',
  query: 'query',
  headers: 'headers',
  body: 'body',
  remote: 'remote',
  scheme: 'scheme',
  host: 'host',
  root: 'root',
  subject: 'subject',
  timeoutMs: 'timeoutMs',
  caps: 'caps',
  credit: 'credit',
  more: 'more',
  status: 'status',
  inbox: 'inbox',
  ws: 'ws',
  auth: 'auth',
} as const;

/**
 * Encodes a request envelope: a map of its fields in the order below (the
 * optional ones only when set). Any msgpack decoder reads it.
 * @example encodeRequest({ v: 1, id: 'r1', method: 'GET', path: '/', query: '', headers: [], body: new Uint8Array(), remote: '127.0.0.1', scheme: 'http', host: 'localhost', root: 'api', subject: 'api', timeoutMs: 30000 })
 */
export function encodeRequest(env: RequestEnvelope): Uint8Array {
  const { caps, credit, more, ws, auth } = env;
  W.begin(
    200 +
      W.strBound(env.id) +
      W.strBound(env.method) +
      W.strBound(env.path) +
      W.strBound(env.query) +
      W.strArrayBound(env.headers) +
      env.body.length +
      W.strBound(env.remote) +
      W.strBound(env.scheme) +
      W.strBound(env.host) +
      W.strBound(env.root) +
      W.strBound(env.subject) +
      (caps === undefined ? 0 : W.strArrayBound(caps)) +
      (auth === undefined ? 0 : W.strBound(auth)),
  );
  W.mapHeader(13 + (caps === undefined ? 0 : 1) + (credit === undefined ? 0 : 1) + (more === undefined ? 0 : 1) + (ws === undefined ? 0 : 1) + (auth === undefined ? 0 : 1));
  W.str(K.v);
  W.uint(env.v);
  W.str(K.id);
  W.str(env.id);
  W.str(K.method);
  W.str(env.method);
  W.str(K.path);
  W.str(env.path);
  W.str(K.query);
  W.str(env.query);
  W.str(K.headers);
  W.strArray(env.headers);
  W.str(K.body);
  W.bin(env.body);
  W.str(K.remote);
  W.str(env.remote);
  W.str(K.scheme);
  W.str(env.scheme);
  W.str(K.host);
  W.str(env.host);
  W.str(K.root);
  W.str(env.root);
  W.str(K.subject);
  W.str(env.subject);
  W.str(K.timeoutMs);
  W.uint(env.timeoutMs);
  if (caps !== undefined) {
    W.str(K.caps);
    W.strArray(caps);
  }
  if (credit !== undefined) {
    W.str(K.credit);
    W.uint(credit);
  }
  if (more !== undefined) {
    W.str(K.more);
    W.bool(more);
  }
  if (ws !== undefined) {
    W.str(K.ws);
    W.bool(ws);
  }
  if (auth !== undefined) {
    W.str(K.auth);
    W.str(auth);
  }
  return W.finish();
}

/**
 * Encodes a reply envelope (fields in this order, the optional ones only when set).
 * @example encodeReply({ v: 1, status: 200, headers: ['content-type', 'text/plain'], body: Buffer.from('hi') })
 */
export function encodeReply(env: ReplyEnvelope): Uint8Array {
  const { more, inbox, credit } = env;
  W.begin(80 + W.strArrayBound(env.headers) + env.body.length + (inbox === undefined ? 0 : W.strBound(inbox)));
  W.mapHeader(4 + (more === undefined ? 0 : 1) + (inbox === undefined ? 0 : 1) + (credit === undefined ? 0 : 1));
  W.str(K.v);
  W.uint(env.v);
  W.str(K.status);
  W.uint(env.status);
  W.str(K.headers);
  W.strArray(env.headers);
  W.str(K.body);
  W.bin(env.body);
  if (more !== undefined) {
    W.str(K.more);
    W.bool(more);
  }
  if (inbox !== undefined) {
    W.str(K.inbox);
    W.str(inbox);
  }
  if (credit !== undefined) {
    W.str(K.credit);
    W.uint(credit);
  }
  return W.finish();
}

/** Thrown (SDK side) for a request envelope that does not follow the protocol. */
export class ProtocolError extends Error {
  override name = 'ProtocolError';
  constructor(
    readonly code: 'bad-envelope' | 'unsupported-version',
    message: string,
  ) {
    super(message);
  }
}

/** Most header fields an envelope may carry (name/value pairs); more → rejected. */
export const MAX_ENVELOPE_HEADER_FIELDS = 1000;
/** Longest request id a service accepts (the gateway generates 22 characters and takes clients' up to 200). */
const MAX_ID_LENGTH = 256;
const EMPTY = new Uint8Array(0);

/** Shows at most 64 characters of an untrusted string in a reason, with control characters escaped. */
function shown(s: string): string {
  return JSON.stringify(s.length > 64 ? s.slice(0, 64) + '…' : s);
}

/** Reads the flattened header list, checking names and values as it goes. */
function readHeaders(what: 'reply' | 'request'): string[] {
  if (R.nil()) return [];
  const n = R.arrayHeader();
  if ((n & 1) !== 0) throw new R.MsgpackError(`${what} headers are not a flat list of name/value strings`);
  if (n > MAX_ENVELOPE_HEADER_FIELDS * 2) throw new R.MsgpackError(`${what} has more than ${MAX_ENVELOPE_HEADER_FIELDS} header fields`);
  const h = new Array<string>(n);
  for (let i = 0; i < n; i += 2) {
    const name = R.strOrUndefined();
    if (name === undefined) throw new R.MsgpackError(`${what} headers are not a flat list of name/value strings`);
    if ((R.lastStrClass & NOT_TCHAR) !== 0 || name.length === 0) throw new R.MsgpackError(`${what} has an illegal header name ${shown(name)}`);
    const value = R.strOrUndefined();
    if (value === undefined) throw new R.MsgpackError(`${what} headers are not a flat list of name/value strings`);
    if ((R.lastStrClass & CONTROL) !== 0) throw new R.MsgpackError(`${what} header ${name} has an illegal value (control characters)`);
    h[i] = name;
    h[i + 1] = value;
  }
  return h;
}

/** A body: bin, or str taken as its UTF-8 bytes, or nil for none. */
function readBody(what: 'reply' | 'request'): Uint8Array {
  if (R.nil()) return EMPTY;
  const t = R.peek();
  if (!(t === 0xc4 || t === 0xc5 || t === 0xc6 || (t >= 0xa0 && t <= 0xbf) || (t >= 0xd9 && t <= 0xdb))) {
    throw new R.MsgpackError(`${what} body is not binary`);
  }
  return R.bytes();
}

/** Opens the envelope's map; its entry count. */
function openMap(what: 'reply' | 'request'): number {
  const t = R.atEnd() ? -1 : R.peek();
  if (!((t >= 0x80 && t <= 0x8f) || t === 0xde || t === 0xdf)) throw new R.MsgpackError(`${what} is not a msgpack map`);
  return R.mapHeader();
}

function keyIndex(what: 'reply' | 'request', names: R.KeyTable): number {
  try {
    return R.keyIndex(names);
  } catch (err) {
    if (err instanceof R.MsgpackError && err.message.startsWith('map keys')) throw new R.MsgpackError(`${what} map keys must be strings`);
    throw err;
  }
}

/** Marks field `index` as seen; a field given twice is refused rather than resolved by order. */
function once(seen: number, index: number, what: 'reply' | 'request', names: readonly string[]): number {
  const bit = 1 << index;
  if ((seen & bit) !== 0) throw new R.MsgpackError(`${what} has the field ${names[index]} twice`);
  return seen | bit;
}

function closeMap(what: 'reply' | 'request'): void {
  if (!R.atEnd()) throw new R.MsgpackError(`${what} has bytes after its map`);
}

function isIntType(t: number): boolean {
  return t <= 0x7f || t >= 0xe0 || (t >= 0xcc && t <= 0xd3);
}

/** Capabilities listed in a request: at most this many, each at most 32 characters. */
const MAX_CAPS = 16;

function readCaps(): string[] {
  if (R.nil()) return [];
  const n = R.arrayHeader();
  if (n > MAX_CAPS) throw new R.MsgpackError(`request lists more than ${MAX_CAPS} capabilities`);
  const caps = new Array<string>(n);
  for (let i = 0; i < n; i++) {
    const c = R.strOrUndefined();
    if (c === undefined || c.length > 32) throw new R.MsgpackError('request caps must be short strings');
    caps[i] = c;
  }
  return caps;
}

function readBool(what: 'reply' | 'request', field: string): boolean {
  const t = R.peek();
  if (t !== 0xc2 && t !== 0xc3) throw new R.MsgpackError(`${what} field ${field} must be a bool`);
  return R.bool();
}

/**
 * What {@link decodeReply} returns for a message that is a stream frame
 * (it has a `t` field) rather than a reply: decode it with decodeFrame.
 */
export const REPLY_IS_FRAME = 'the message is a stream frame';

function versionOf(what: 'reply' | 'request'): number {
  if (isIntType(R.peek())) return R.int();
  throw new R.MsgpackError(`${what} has a protocol version that is not an integer`);
}

/**
 * Decodes and checks a service's reply. Returns the envelope, or a short
 * reason (a string) when it must not be forwarded: not msgpack as the
 * protocol allows it (§1), unknown version, status outside 200–599, an
 * illegal header name or value, more than {@link MAX_ENVELOPE_HEADER_FIELDS}
 * fields. Unknown fields are skipped. Never throws; never allocates for
 * more than the message holds. `body` is a view into `data`.
 * @example decodeReply(encodeReply({ v: 1, status: 204, headers: [], body: new Uint8Array() })).status // 204
 */
export function decodeReply(data: Uint8Array): ReplyEnvelope | string {
  let v = -1;
  let status = -1;
  let headers: string[] = [];
  let body: Uint8Array = EMPTY;
  let more = false;
  let inbox: string | undefined;
  let credit = -1;
  R.begin(data);
  try {
    const n = openMap('reply');
    let seen = 0;
    for (let i = 0; i < n; i++) {
      const k = keyIndex('reply', REPLY_KEYS);
      if (k < 0) {
        R.skip();
        continue;
      }
      seen = once(seen, k, 'reply', REPLY_FIELDS);
      switch (k) {
        case 0: // v
          v = versionOf('reply');
          break;
        case 1: // status
          if (isIntType(R.peek())) status = R.int();
          else {
            R.skip();
            status = -2;
          }
          break;
        case 2:
          headers = readHeaders('reply');
          break;
        case 3:
          body = readBody('reply');
          break;
        case 4:
          more = readBool('reply', 'more');
          break;
        case 5: {
          const s = R.strOrUndefined();
          if (s === undefined || !isValidInbox(s)) throw new R.MsgpackError('reply inbox must be a literal subject outside $ and _NATSGW.');
          inbox = s;
          break;
        }
        case 6: // t: a frame, not a reply
          return REPLY_IS_FRAME;
        case 7:
          if (!isIntType(R.peek())) throw new R.MsgpackError('reply field credit must be an integer');
          credit = R.int();
          break;
      }
    }
    closeMap('reply');
  } catch (err) {
    if (err instanceof R.MsgpackError) return err.message.startsWith('reply') ? err.message : `reply is not valid msgpack: ${err.message}`;
    throw err;
  } finally {
    R.finish();
  }
  if (v !== PROTOCOL_VERSION && v !== STREAM_VERSION) return `reply has unsupported protocol version ${v === -1 ? 'undefined' : v}`;
  if (status === 101) {
    // A WebSocket accept (§14.2): opens a session, carries no body.
    if (v !== STREAM_VERSION || more || inbox === undefined || credit < 0) return 'reply has invalid status 101: a WebSocket accept needs v 2, an inbox and a credit, and no more';
    if (body.length !== 0) return 'a 101 reply (WebSocket accept) has a body';
    return { v, status, headers, body, inbox, credit };
  }
  if (!Number.isInteger(status) || status < 200 || status > 599) return `reply has invalid status ${status === -1 ? 'undefined' : status === -2 ? '(not an integer)' : status}`;
  if (v === PROTOCOL_VERSION) {
    if (more || inbox !== undefined) return 'reply uses more or inbox with protocol version 1';
    return { v, status, headers, body };
  }
  if (more && inbox === undefined) return 'reply head with more has no inbox';
  return { v, status, headers, body, more, inbox };
}

/** The request envelope's fields, in the order of their bits for duplicate detection. */
const REQUEST_FIELDS = ['v', 'id', 'method', 'path', 'query', 'headers', 'body', 'remote', 'scheme', 'host', 'root', 'subject', 'timeoutMs', 'caps', 'credit', 'more', 'ws', 'auth'] as const;
const REQUEST_KEYS = R.keyTable(REQUEST_FIELDS);
const F_V = REQUEST_FIELDS.indexOf('v');
const F_HEADERS = REQUEST_FIELDS.indexOf('headers');
const F_BODY = REQUEST_FIELDS.indexOf('body');
const F_TIMEOUT = REQUEST_FIELDS.indexOf('timeoutMs');
const F_CAPS = REQUEST_FIELDS.indexOf('caps');
const F_CREDIT = REQUEST_FIELDS.indexOf('credit');
const F_MORE = REQUEST_FIELDS.indexOf('more');
const F_WS = REQUEST_FIELDS.indexOf('ws');
const F_ID = REQUEST_FIELDS.indexOf('id');
const F_METHOD = REQUEST_FIELDS.indexOf('method');
const F_PATH = REQUEST_FIELDS.indexOf('path');
const F_QUERY = REQUEST_FIELDS.indexOf('query');
const F_AUTH = REQUEST_FIELDS.indexOf('auth');
const CONTROL_FREE_FIELDS = (['remote', 'host', 'root', 'subject', 'auth'] as const).map((f) => REQUEST_FIELDS.indexOf(f));
const requestClasses = new Uint8Array(REQUEST_FIELDS.length);
const REPLY_FIELDS = ['v', 'status', 'headers', 'body', 'more', 'inbox', 't', 'credit'] as const;
const REPLY_KEYS = R.keyTable(REPLY_FIELDS);

/**
 * Decodes and checks a request envelope (service side), as strictly as the
 * gateway checks replies: the method is a token, `path` starts with `/` and
 * is visible ASCII like `query`, header names are tokens and values hold no
 * CR, LF, NUL or other controls, `scheme` is http or https, `timeoutMs` a
 * non-negative integer. Throws {@link ProtocolError} for anything a v1
 * gateway would not send; unknown fields are skipped.
 */
export function decodeRequest(data: Uint8Array): RequestEnvelope {
  const env: RequestEnvelope = { v: -1, id: '', method: '', path: '', query: '', headers: [], body: EMPTY, remote: '', scheme: 'http', host: '', root: '', subject: '', timeoutMs: 0 };
  // CHAR_CLASS bits of each string field, by REQUEST_FIELDS index.
  const classes = requestClasses;
  classes.fill(0);
  R.begin(data);
  try {
    const n = openMap('request');
    let seen = 0;
    for (let i = 0; i < n; i++) {
      const k = keyIndex('request', REQUEST_KEYS);
      if (k < 0) {
        R.skip();
        continue;
      }
      seen = once(seen, k, 'request', REQUEST_FIELDS);
      if (k === F_V) env.v = versionOf('request');
      else if (k === F_HEADERS) env.headers = readHeaders('request');
      else if (k === F_BODY) env.body = readBody('request');
      else if (k === F_TIMEOUT) {
        if (!isIntType(R.peek())) throw new R.MsgpackError('request field timeoutMs must be an integer');
        env.timeoutMs = R.int();
      } else if (k === F_CAPS) env.caps = readCaps();
      else if (k === F_CREDIT) {
        if (!isIntType(R.peek())) throw new R.MsgpackError('request field credit must be an integer');
        env.credit = R.int();
      } else if (k === F_MORE) env.more = readBool('request', 'more');
      else if (k === F_WS) env.ws = readBool('request', 'ws');
      else {
        const name = REQUEST_FIELDS[k] as Exclude<(typeof REQUEST_FIELDS)[number], 'v' | 'headers' | 'body' | 'timeoutMs' | 'caps' | 'credit' | 'more' | 'ws'>;
        if (k === F_AUTH) {
          const value = R.strOrUndefined();
          if (value === undefined) throw new R.MsgpackError('request field auth must be a string');
          env.auth = value;
          classes[k] = R.lastStrClass;
          continue;
        }
        const value = R.strOrUndefined();
        if (value === undefined) throw new R.MsgpackError(`request field ${name} must be a string`);
        env[name] = value;
        classes[k] = R.lastStrClass;
      }
    }
    closeMap('request');
  } catch (err) {
    if (err instanceof R.MsgpackError) throw new ProtocolError('bad-envelope', err.message.startsWith('request') ? err.message : `request is not valid msgpack: ${err.message}`);
    throw err;
  } finally {
    R.finish();
  }
  if (env.v !== PROTOCOL_VERSION && env.v !== STREAM_VERSION) throw new ProtocolError('unsupported-version', `request has unsupported protocol version ${env.v === -1 ? 'undefined' : env.v}`);
  const bad = (why: string): never => {
    throw new ProtocolError('bad-envelope', why);
  };
  if (env.method === '' || (classes[F_METHOD]! & NOT_TCHAR) !== 0) bad(`request method ${shown(env.method)} is not a token`);
  if (env.path.charCodeAt(0) !== 47 || (classes[F_PATH]! & NOT_VISIBLE) !== 0) bad('request path must start with / and be visible ASCII');
  if ((classes[F_QUERY]! & NOT_VISIBLE) !== 0) bad('request query must be visible ASCII');
  if (env.id.length > MAX_ID_LENGTH || (classes[F_ID]! & NOT_VISIBLE) !== 0) bad('request id must be at most 256 visible ASCII characters');
  if (env.scheme !== 'http' && env.scheme !== 'https') bad(`request scheme ${shown(env.scheme)} is not http or https`);
  for (const k of CONTROL_FREE_FIELDS) if ((classes[k]! & CONTROL) !== 0) bad(`request field ${REQUEST_FIELDS[k]} holds control characters`);
  if (env.timeoutMs < 0) bad('request timeoutMs must not be negative');
  if (env.credit !== undefined && env.credit < 0) bad('request credit must not be negative');
  if (env.more === true && env.v !== STREAM_VERSION) bad('request uses more with protocol version 1');
  if (env.ws === true && env.more === true) bad('a WebSocket upgrade request has no streamed body');
  if (env.auth !== undefined) {
    env.identity = parseIdentity(env.auth);
    if (env.identity === undefined) bad('request field auth is not an identity (JSON with method and sub)');
  }
  return env;
}

/**
 * True when `data` is the last message a service sends for a request: a v1
 * reply, a v2 head without `more`, a data frame without `more`, or a cancel.
 * Credit frames and probes are not; what does not decode counts as last
 * (the gateway refuses it and the exchange ends). Used to end a relay.
 */
export function isLastMessage(data: Uint8Array): boolean {
  const reply = decodeReply(data);
  // A WebSocket accept opens a session that a close (or cancel) ends.
  if (typeof reply !== 'string') return reply.more !== true && reply.status !== 101;
  if (reply !== REPLY_IS_FRAME) return true;
  const frame = decodeFrame(data);
  if (typeof frame === 'string') return true;
  return frame.t === 'cancel' || frame.t === 'close' || (frame.t === 'data' && !frame.more);
}

/** What the `auth` field holds once parsed (PROTOCOL.md §15). */
export interface RequestIdentity {
  method: 'jwt' | 'api-key';
  sub: string;
  claims: Record<string, unknown>;
}

/** Parses an `auth` field; undefined when it is not an identity. */
export function parseIdentity(text: string): RequestIdentity | undefined {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return undefined;
  }
  const o = v as RequestIdentity;
  if (o === null || typeof o !== 'object' || (o.method !== 'jwt' && o.method !== 'api-key') || typeof o.sub !== 'string') return undefined;
  if (o.claims === null || typeof o.claims !== 'object' || Array.isArray(o.claims)) return undefined;
  return o;
}
