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
 * A v1 reply is one message: the body is collected and sent whole at `end()`.
 */
import { IncomingMessage, ServerResponse, type OutgoingHttpHeaders } from 'node:http';
import type { RequestEnvelope } from './protocol/envelope.js';

/** What the adapter reports when the handler ends the response. */
export interface ResponseSink {
  /** Called once, when the handler calls `res.end()`. */
  onEnd(res: ServerResponse, status: number, headers: string[], body: Buffer): void;
  /** Largest body to keep; beyond it the body is dropped and `overflow` reported via `bodyOverflow`. */
  maxBodyBytes: number;
}

/** Per-response state, stored on the response under a symbol. */
interface Collected {
  sink: ResponseSink;
  chunks: Buffer[];
  size: number;
  overflow: boolean;
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
  readonly readable = true;
  readonly writable = true;
  readonly destroyed = false;
  readonly remoteFamily: string;
  readonly encrypted: true | undefined;
  constructor(
    readonly remoteAddress: string,
    https: boolean,
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
  resume(): this {
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

function pushBody(req: IncomingMessage, body: Uint8Array): void {
  if (body.length > 0) req.push(Buffer.isBuffer(body) ? body : Buffer.from(body.buffer, body.byteOffset, body.length));
  req.push(null);
}

/**
 * Builds the `req`/`res` pair for one envelope. `url` is the value for
 * `req.url` (see {@link requestUrl}).
 */
export function createExchange(env: RequestEnvelope, url: string, sink: ResponseSink): { req: IncomingMessage; res: ServerResponse } {
  const socket = new EnvelopeSocket(env.remote, env.scheme === 'https');
  const req = new IncomingMessage(socket as never);
  // Set before ServerResponse reads them (it checks the version to decide keep-alive).
  req.httpVersionMajor = 1;
  req.httpVersionMinor = 1;
  req.httpVersion = '1.1';
  req.method = env.method;
  req.url = url;
  req.rawHeaders = env.headers;
  req.headers = headersObject(env.headers);
  req.complete = true;
  pushBody(req, env.body);

  const res = new ServerResponse(req) as AdaptedResponse;
  res[kCollected] = {
    sink,
    chunks: [],
    size: 0,
    overflow: false,
    discardBody: env.method === 'HEAD',
    ended: false,
  };
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

function collect(res: AdaptedResponse, chunk: unknown, encoding: unknown): void {
  const c = res[kCollected];
  if (c.discardBody || chunk === undefined || chunk === null) return;
  const buf = toBuffer(chunk, encoding);
  if (buf.length === 0) return;
  c.size += buf.length;
  if (c.size > c.sink.maxBodyBytes) {
    c.overflow = true;
    c.chunks.length = 0;
    return;
  }
  if (!c.overflow) c.chunks.push(buf);
}

function write(this: AdaptedResponse, chunk: unknown, encoding?: unknown, cb?: unknown): boolean {
  const c = this[kCollected];
  if (c.ended) {
    const err = Object.assign(new Error('write after end'), { code: 'ERR_STREAM_WRITE_AFTER_END' });
    if (typeof cb === 'function') process.nextTick(cb, err);
    else if (typeof encoding === 'function') process.nextTick(encoding as (e: Error) => void, err);
    return false;
  }
  if (!this.headersSent) this.writeHead(this.statusCode);
  collect(this, chunk, encoding);
  const callback = typeof encoding === 'function' ? encoding : cb;
  if (typeof callback === 'function') process.nextTick(callback as () => void);
  return true;
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
  collect(this, chunk, encoding);
  c.ended = true;
  this.finished = true;
  const body = c.overflow ? OVERFLOW : c.chunks.length === 1 ? c.chunks[0]! : Buffer.concat(c.chunks, c.size);
  c.chunks = [];
  c.sink.onEnd(this, this.statusCode, flattenHeaders(this), body);
  process.nextTick(emitFinish, this, cb);
  return this;
}

/** Marker body for a response that outgrew `maxBodyBytes`. */
const OVERFLOW = Buffer.alloc(0);

/** True when the handler's body was dropped for being too large. */
export function bodyOverflowed(res: ServerResponse): boolean {
  return (res as AdaptedResponse)[kCollected]?.overflow === true;
}

/** Size the handler tried to send, in bytes. */
export function bodySize(res: ServerResponse): number {
  return (res as AdaptedResponse)[kCollected]?.size ?? 0;
}

function emitFinish(res: AdaptedResponse, cb: unknown): void {
  if (typeof cb === 'function') (cb as () => void)();
  res.emit('prefinish');
  res.emit('finish');
  res.emit('close');
  res.req.emit('close');
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
  if (c === undefined || c.ended) return;
  c.ended = true;
  c.discardBody = true;
  res.destroyed = true;
  process.nextTick(() => {
    res.emit('close');
    res.req.emit('close');
  });
}
