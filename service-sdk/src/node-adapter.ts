/**
 * Request/response stand-ins that let a plain Node `(req, res)` handler —
 * Express, Fastify, Koa — serve a request that arrived as an envelope.
 *
 * `req` is a real http.IncomingMessage and `res` a real http.ServerResponse,
 * so every framework's prototype tricks keep working (Express swaps both
 * prototypes for its own subclasses of these). Only the response's output
 * path is replaced, with *own* properties — they survive a prototype swap —
 * pointing at shared module-level functions, so nothing is allocated per
 * request beyond the two objects and the body. Header handling stays Node's
 * own (setHeader, getHeader, validation), so names and values are checked
 * exactly as node:http checks them.
 *
 * What the handler writes goes to a {@link ResponseSink} (call.ts), which
 * sends it as one reply or as a stream; a streamed request body is fed in
 * with {@link feedBody} as it arrives.
 */
import { IncomingMessage, ServerResponse, type OutgoingHttpHeaders } from 'node:http';
import type { RequestEnvelope } from './protocol/envelope.js';

/** Where the handler's response goes. */
export interface ResponseSink {
  /** A body chunk (the head is written: see {@link responseHead}); returns what `res.write()` returns. */
  onWrite(res: ServerResponse, chunk: Buffer): boolean;
  /** `res.end()`, with its last chunk if any; called once. */
  onEnd(res: ServerResponse, chunk: Buffer | undefined): void;
  /** The handler's `req` wants more body (it read what it had): the place to grant credit. */
  onBodyRead(): void;
}

/** Per-response state, stored on the response under a symbol. */
interface Collected {
  sink: ResponseSink;
  discardBody: boolean;
  ended: boolean;
}

const kCollected = Symbol('natsgw.collected');
type AdaptedResponse = ServerResponse & { [kCollected]: Collected };

/**
 * Stand-in for the client's socket: frameworks read the peer address and
 * whether the connection is encrypted from it. There is no real socket, so
 * the stream and timer methods do nothing.
 */
class EnvelopeSocket {
  readonly remotePort = 0;
  readonly localAddress = '';
  readonly localPort = 0;
  // Live as far as frameworks can tell: on-finished (used by body-parser and
  // finalhandler) treats a non-readable socket as a request already consumed.
  readable = true;
  readonly writable = true;
  // Set when the client went away: IncomingMessage#_destroy then skips the socket.
  destroyed = false;
  readonly remoteFamily: string;
  readonly encrypted: true | undefined;
  constructor(
    readonly remoteAddress: string,
    https: boolean,
    private readonly sink: ResponseSink,
  ) {
    this.remoteFamily = remoteAddress.includes(':') ? 'IPv6' : 'IPv4';
    this.encrypted = https ? true : undefined;
  }
  on(): this {
    return this;
  }
  once(): this {
    return this;
  }
  off(): this {
    return this;
  }
  addListener(): this {
    return this;
  }
  removeListener(): this {
    return this;
  }
  emit(): boolean {
    return false;
  }
  /** IncomingMessage#_read calls this when the handler wants more body. */
  resume(): this {
    this.sink.onBodyRead();
    return this;
  }
  pause(): this {
    return this;
  }
  setTimeout(): this {
    return this;
  }
  setNoDelay(): this {
    return this;
  }
  setKeepAlive(): this {
    return this;
  }
  destroy(): this {
    return this;
  }
  end(): this {
    return this;
  }
  address(): { address: string; port: number; family: string } {
    return { address: '', port: 0, family: this.remoteFamily };
  }
}

/**
 * Fields node:http keeps only the first value of (its matchKnownFields list):
 * a second Content-Length or Host is dropped, not joined.
 */
const FIRST_VALUE_WINS = new Set([
  'content-type',
  'content-length',
  'user-agent',
  'referer',
  'host',
  'authorization',
  'proxy-authorization',
  'if-modified-since',
  'if-unmodified-since',
  'from',
  'location',
  'max-forwards',
  'retry-after',
  'etag',
  'last-modified',
  'server',
  'age',
  'expires',
]);

/**
 * The `req.headers` object, by node:http's merge rules (checked against
 * IncomingMessage#_addHeaderLine by a property test): `set-cookie` kept as an
 * array, `cookie` joined with "; ", the fields above keep their first value,
 * any other repeat is joined with ", ". Node's lazy `headers` getter cannot
 * be used: it reads a count only its HTTP parser sets.
 */
export function headersObject(raw: readonly string[]): IncomingMessage['headers'] {
  const dest: Record<string, string | string[]> = {};
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    const value = raw[i + 1]!;
    // Own properties only: a header named "constructor" is a header. (One
    // named "__proto__" is lost, exactly as in node:http.)
    const current = Object.hasOwn(dest, name) ? dest[name] : undefined;
    if (current === undefined) dest[name] = name === 'set-cookie' ? [value] : value;
    else if (name === 'set-cookie') (current as string[]).push(value);
    else if (name === 'cookie') dest[name] = current + '; ' + value;
    else if (!FIRST_VALUE_WINS.has(name)) dest[name] = current + ', ' + value;
  }
  return dest as IncomingMessage['headers'];
}

function asBuffer(body: Uint8Array): Buffer {
  return Buffer.isBuffer(body) ? body : Buffer.from(body.buffer, body.byteOffset, body.length);
}

/**
 * Adds a chunk of a streamed request body to `req`; `last` ends it. Returns
 * the bytes `req` holds unread, which the sink keeps within its window.
 */
export function feedBody(req: IncomingMessage, chunk: Uint8Array, last: boolean): number {
  if (req.destroyed) return 0;
  if (chunk.length > 0) req.push(asBuffer(chunk));
  if (last) {
    req.complete = true;
    req.push(null);
  }
  return req.readableLength;
}

/**
 * The client went away (or the stream broke) while the handler ran: `req`
 * emits `aborted` and `close` (and `error` ECONNRESET only if someone
 * listens, as node:http does), `res` emits `close`; later writes are dropped.
 */
export function clientGone(req: IncomingMessage, res: ServerResponse | undefined): void {
  const socket = req.socket as unknown as EnvelopeSocket;
  socket.destroyed = true;
  socket.readable = false;
  if (!req.destroyed) req.destroy(Object.assign(new Error('aborted'), { code: 'ECONNRESET' }));
  if (res !== undefined) abandon(res);
}

/**
 * Builds the `req`/`res` pair for one envelope. `url` is the value for
 * `req.url` (see {@link requestUrl}).
 */
export function createExchange(env: RequestEnvelope, url: string, sink: ResponseSink): { req: IncomingMessage; res: ServerResponse } {
  const socket = new EnvelopeSocket(env.remote, env.scheme === 'https', sink);
  const req = new IncomingMessage(socket as never);
  // Set before ServerResponse reads them (it checks the version to decide keep-alive).
  req.httpVersionMajor = 1;
  req.httpVersionMinor = 1;
  req.httpVersion = '1.1';
  req.method = env.method;
  req.url = url;
  req.rawHeaders = env.headers;
  req.headers = headersObject(env.headers);
  // The identity the gateway verified (its auth policy); undefined without one. Own property, like res's below.
  req.auth = env.identity;
  // A streamed body (more) is fed in later with feedBody.
  const streamed = env.more === true;
  req.complete = !streamed;
  if (env.body.length > 0) req.push(asBuffer(env.body));
  if (!streamed) req.push(null);

  const res = new ServerResponse(req) as AdaptedResponse;
  res[kCollected] = { sink, discardBody: env.method === 'HEAD', ended: false };
  // Own properties: they outlive Express's Object.setPrototypeOf(res, app.response).
  res.writeHead = writeHead as never;
  res.write = write as never;
  res.end = end as never;
  res.flushHeaders = flushHeaders;
  res.writeContinue = noop;
  res.writeProcessing = noop;
  res.writeEarlyHints = noop as never;
  return { req, res };
}

/**
 * `req.url` for a request: the full path and query as the client sent it, or
 * (`relative`) the part below the mount, as Express's `app.use(prefix, …)`
 * would present it.
 * @example requestUrl(env /* path /foo/users/1, query a=1, root api *\/, 'api.foo', true) // '/users/1?a=1'
 */
export function requestUrl(env: RequestEnvelope, mount: string, relative: boolean): string {
  let path = env.path;
  if (relative && env.root !== '' && (mount === env.root || mount.startsWith(env.root + '.'))) {
    const skip = mount === env.root ? 0 : mount.slice(env.root.length + 1).split('.').length;
    let at = 0;
    for (let i = 0; i < skip && at !== -1; i++) at = path.indexOf('/', at + 1);
    path = at === -1 ? '/' : path.slice(at);
  }
  return env.query === '' ? path : path + '?' + env.query;
}

function noop(): void {}

function flushHeaders(this: AdaptedResponse): void {
  if (!this.headersSent) this.writeHead(this.statusCode);
}

/** node:http's writeHead, minus the wire: headers go through setHeader so Node validates them. */
function writeHead(this: AdaptedResponse, statusCode: number, reason?: unknown, headers?: unknown): AdaptedResponse {
  if (this.headersSent) return this;
  if (typeof reason === 'string') this.statusMessage = reason;
  else headers = reason;
  this.statusCode = statusCode;
  if (Array.isArray(headers)) {
    // Either [[k, v], ...] or a flat [k, v, k, v, ...] list, as node:http accepts.
    if (Array.isArray(headers[0])) for (const [k, v] of headers as [string, string][]) this.appendHeader(k, v);
    else for (let i = 0; i < headers.length; i += 2) this.appendHeader(headers[i] as string, headers[i + 1] as string);
  } else if (headers !== undefined && headers !== null) {
    const obj = headers as OutgoingHttpHeaders;
    for (const k in obj) {
      const v = obj[k];
      if (v !== undefined) this.setHeader(k, v);
    }
  }
  // headersSent is `Boolean(this._header)`; mark the head as written.
  (this as unknown as { _header: string })._header = 'natsgw';
  return this;
}

function toBuffer(chunk: unknown, encoding: unknown): Buffer {
  if (typeof chunk === 'string') return Buffer.from(chunk, (typeof encoding === 'string' ? encoding : 'utf8') as BufferEncoding);
  if (Buffer.isBuffer(chunk)) return chunk;
  if (chunk instanceof Uint8Array) return Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  throw new TypeError('The "chunk" argument must be of type string or an instance of Buffer or Uint8Array');
}

function write(this: AdaptedResponse, chunk: unknown, encoding?: unknown, cb?: unknown): boolean {
  const c = this[kCollected];
  const callback = typeof encoding === 'function' ? encoding : cb;
  if (c.ended) {
    // After the client went away (res.destroyed), writes are dropped as node:http drops them.
    if (this.destroyed) return false;
    const err = Object.assign(new Error('write after end'), { code: 'ERR_STREAM_WRITE_AFTER_END' });
    if (typeof callback === 'function') process.nextTick(callback as (e: Error) => void, err);
    return false;
  }
  if (!this.headersSent) this.writeHead(this.statusCode);
  let ok = true;
  if (!c.discardBody && chunk !== undefined && chunk !== null) {
    const buf = toBuffer(chunk, encoding);
    if (buf.length > 0) ok = c.sink.onWrite(this, buf);
  }
  if (typeof callback === 'function') process.nextTick(callback as () => void);
  return ok;
}

function end(this: AdaptedResponse, chunk?: unknown, encoding?: unknown, cb?: unknown): AdaptedResponse {
  const c = this[kCollected];
  if (typeof chunk === 'function') {
    cb = chunk;
    chunk = undefined;
  } else if (typeof encoding === 'function') {
    cb = encoding;
    encoding = undefined;
  }
  if (c.ended) {
    if (typeof cb === 'function') process.nextTick(cb as () => void);
    return this;
  }
  if (!this.headersSent) this.writeHead(this.statusCode);
  let last: Buffer | undefined;
  if (!c.discardBody && chunk !== undefined && chunk !== null) {
    last = toBuffer(chunk, encoding);
    if (last.length === 0) last = undefined;
  }
  c.ended = true;
  this.finished = true;
  if (typeof cb === 'function') this.once('finish', cb as () => void);
  c.sink.onEnd(this, last);
  return this;
}

/** The response left completely (sent as one reply, or its last frame published): `finish`, then `close`. */
export function responseFinished(res: ServerResponse): void {
  process.nextTick(emitFinish, res);
}

function emitFinish(res: ServerResponse): void {
  res.emit('prefinish');
  res.emit('finish');
  res.emit('close');
  res.req.emit('close');
}

/** Status and flattened headers of a response whose head is written. */
export function responseHead(res: ServerResponse): { status: number; headers: string[] } {
  return { status: res.statusCode, headers: flattenHeaders(res) };
}

/** Tells a response that waited on `write()` returning false that it can write again. */
export function responseDrained(res: ServerResponse): void {
  if (!res.destroyed) res.emit('drain');
}

function flattenHeaders(res: ServerResponse): string[] {
  const out: string[] = [];
  const headers = res.getHeaders();
  for (const name in headers) {
    const v = headers[name];
    if (Array.isArray(v)) for (const item of v) out.push(name, item);
    else if (v !== undefined) out.push(name, String(v));
  }
  return out;
}

/**
 * Ends an exchange the handler never finished (timeout): later writes are
 * ignored and listeners see `close`, so handlers can stop work.
 */
export function abandon(res: ServerResponse): void {
  const c = (res as AdaptedResponse)[kCollected];
  if (c === undefined || res.destroyed) return;
  c.ended = true;
  c.discardBody = true;
  res.destroyed = true;
  process.nextTick(() => {
    res.emit('close');
    // A destroyed req emits its own close.
    if (!res.req.destroyed) res.req.emit('close');
  });
}
