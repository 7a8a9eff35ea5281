/**
 * The override path: one request proxied to HTTP backends with undici.
 *
 * - The request body is already buffered (maxRequestBodyBytes), so a try can
 *   be repeated on another backend.
 * - Retries go to a backend not yet tried: for any method when the request
 *   never reached a backend (connect refused, connect timeout), for
 *   idempotent methods otherwise, never once response bytes reached the
 *   client, and only while the route's retry budget allows.
 * - The response is streamed to the client with backpressure both ways:
 *   when uWS cannot take more, the upstream read is paused (undici's
 *   controller) until uWS says it is writable again.
 * - Outcomes: nothing available → 503 at once; refused/reset/garbage → 502;
 *   too slow → 504; an upstream that dies after its headers → the client's
 *   response is cut off (no retry).
 * - Time limits are ours, checked by one coarse ticker for all requests
 *   (coarse-ticker.ts), not undici's headersTimeout/bodyTimeout: those start
 *   only once a request is written, so a request waiting for a free pool
 *   connection was never timed out. A try's limit now covers that wait (the
 *   try is given up and, as nothing was sent, moved to another backend for
 *   any method), then the wait for headers; after the headers, the backend's
 *   silence between body chunks, not counting time the client's backpressure
 *   paused the read.
 */
import type { Dispatcher } from 'undici';
import type { HttpResponse } from 'uWebSockets.js';
import { CoarseTicker, type Ticking } from '../timing/coarse-ticker.js';
import type { FailureCode } from '../errors.js';
import type { Exchange } from '../front/exchange.js';
import type { Forwarded } from '../front/forwarding.js';
import type { RouteRuntime } from '../routes/route.js';
import { connectionNamed, CONTENT_LENGTH_RE, endHead, RESPONSE_HEADER_SKIP, STATUS_LINES } from '../front/respond.js';
import type { TryOutcome, Upstream } from './upstream/upstream.js';
import { decideCompression, weakened, writeCompressionHead, writeExtraHeaders } from '../policy/response-policy.js';

export const IDEMPOTENT_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE']);

/** What the proxy needs from the front that owns the exchange. */
export interface ProxyOwner {
  /** The exchange is over (response complete or cut off). */
  finish(ex: Exchange): void;
  /** Answer with a problem; called outside uWS callbacks (corks). */
  failCorked(ex: Exchange, code: FailureCode, detail: string, close: boolean): void;
  /** Notes one try for stats and logs. */
  onTry?(ex: Exchange, upstream: Upstream, outcome: TryOutcome | 'retry', detail: string): void;
  /** The request failed; `detail` says why in full (addresses, OS errors, backend states), for the log only. */
  onFailed?(ex: Exchange, code: FailureCode, detail: string): void;
}

/** Abort reasons we give undici, so we know our own aborts when they come back. */
const CLIENT_GONE = Object.assign(new Error('client went away'), { code: 'NATSGW_CLIENT_GONE' });
const RETRYING = Object.assign(new Error('retrying on another backend'), { code: 'NATSGW_RETRY' });
const HEADERS_TIMEOUT = Object.assign(new Error('no response headers in time'), { code: 'NATSGW_HEADERS_TIMEOUT' });
const BODY_TIMEOUT = Object.assign(new Error('the response body stalled'), { code: 'NATSGW_BODY_TIMEOUT' });
// The try waited in the pool (all connections busy, or still connecting) past its limit; nothing was sent.
const QUEUE_TIMEOUT = Object.assign(new Error('no free connection to the backend in time'), { code: 'NATSGW_QUEUE_TIMEOUT' });
const ABANDONED = Object.assign(new Error('try abandoned while queued'), { code: 'NATSGW_ABANDONED' });

/** A time limit fires at most this late. */
const TIME_LIMIT_TICK_MS = 20;
const timeLimits = new CoarseTicker<ProxyRequest>(TIME_LIMIT_TICK_MS);

/** Error codes meaning the request never reached the backend (safe to retry for any method). */
const NOT_SENT = new Set(['ECONNREFUSED', 'UND_ERR_CONNECT_TIMEOUT', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN', 'ECONNABORTED']);
const TIMEOUTS = new Set([HEADERS_TIMEOUT.code, BODY_TIMEOUT.code, QUEUE_TIMEOUT.code, 'UND_ERR_CONNECT_TIMEOUT']);

/** undici's codes for a request it refuses to send (a header value, path or method it rejects): the client's doing. */
const REFUSED_BY_CLIENT = new Set(['UND_ERR_INVALID_ARG', 'UND_ERR_NOT_SUPPORTED']);

interface Classified {
  code: FailureCode;
  /**
   * Whose failure it is. Only `backend` counts against a backend (ejection,
   * breaker, failures); `client` (a request undici refuses to send) and
   * `busy` (our own pool had no free connection in time) are neutral, and
   * neither spends the retry budget.
   */
  fault: 'backend' | 'client' | 'busy';
  /** The request never reached the backend: any method may be retried. */
  notSent: boolean;
  /** Counted as a connect error (refused, connect timeout, unreachable). */
  connectError: boolean;
  /** For the log and /backends: may name addresses and OS errors, so never for the client. */
  detail: string;
}

function classify(err: Error & { code?: string }): Classified {
  const code = err.code ?? '';
  const detail = code ? `${code}: ${err.message}` : err.message;
  if (REFUSED_BY_CLIENT.has(code)) return { code: 'bad-request', fault: 'client', notSent: true, connectError: false, detail };
  if (code === QUEUE_TIMEOUT.code) return { code: 'upstream-busy', fault: 'busy', notSent: true, connectError: false, detail };
  if (TIMEOUTS.has(code)) {
    const connectTimeout = code === 'UND_ERR_CONNECT_TIMEOUT';
    return { code: 'upstream-timeout', fault: 'backend', notSent: connectTimeout, connectError: connectTimeout, detail };
  }
  const notSent = NOT_SENT.has(code);
  return { code: 'upstream-error', fault: 'backend', notSent, connectError: notSent, detail };
}

/** What a client is told about a failed override request: the route, never a backend's address or an OS error. */
function clientDetail(route: string, c: Classified, err: Error): string {
  switch (c.code) {
    case 'bad-request':
      return `the request cannot be forwarded to ${route}: ${err.message}`;
    case 'upstream-busy':
      return `every connection to the backends of ${route} is busy`;
    case 'upstream-timeout':
      return `no response from the backend of ${route} in time`;
    default:
      return `the backend of ${route} failed to answer`;
  }
}

/** Header values travel as latin1 in undici and as UTF-8 in uWS: non-ASCII ones are converted so their bytes arrive unchanged. */
const NON_ASCII = /[^\x00-\x7f]/;

// cork() takes a callback; module-level slots let one static function serve every call.
let corkRequest: ProxyRequest;
let corkChunk: Buffer;
const NO_BYTES = new Uint8Array(0);
function writeHeadCorked(): void {
  corkRequest.flushHead();
  corkRequest.completeHead();
}
function writeChunkCorked(): void {
  corkRequest.flushHead();
  if (!corkRequest.clientFinished) corkRequest.writeChunk(corkChunk);
}
function endCorked(): void {
  corkRequest.flushHead();
  corkRequest.endBody();
}

// Response heads wait for the body so a small response leaves in one write
// (undici delivers head, body and end of a small response in one go); heads
// still unwritten at the end of the turn — a stream that sends its head
// early — are flushed here, one queue for all requests.
const headsWaiting: ProxyRequest[] = [];
let headFlushScheduled = false;
function flushWaitingHeads(): void {
  headFlushScheduled = false;
  for (const p of headsWaiting.splice(0)) {
    if (!p.headPending) continue;
    corkRequest = p;
    p.ex.res.cork(writeHeadCorked);
  }
}

/**
 * The handler undici gets for one try. A try given up while it still waits
 * in undici's pool (see ProxyRequest.tick) can start later; it must then be
 * aborted before anything is written, and reach nothing of the request,
 * which has moved on.
 */
class UpstreamTry implements Dispatcher.DispatchHandler {
  constructor(private readonly req: ProxyRequest) {}
  onRequestStart(controller: Dispatcher.DispatchController): void {
    if (this.req.currentTry === this) this.req.onRequestStart(controller);
    else controller.abort(ABANDONED); // undici closes that connection: a rare, overloaded path
  }
  onResponseStart(controller: Dispatcher.DispatchController, statusCode: number, headers: Record<string, string | string[] | undefined>): void {
    if (this.req.currentTry === this) this.req.onResponseStart(controller, statusCode, headers);
  }
  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.req.currentTry === this) this.req.onResponseData(controller, chunk);
  }
  onResponseEnd(controller: Dispatcher.DispatchController): void {
    if (this.req.currentTry === this) this.req.onResponseEnd(controller);
  }
  onResponseError(controller: Dispatcher.DispatchController, err: Error): void {
    if (this.req.currentTry === this) this.req.onResponseError(controller, err);
  }
}

/**
 * A request header value (UTF-8 text, as uWS decoded it) in the form undici
 * writes unchanged: undici sends each character as one latin1 byte.
 */
function latin1Wire(value: string): string {
  return NON_ASCII.test(value) ? Buffer.from(value, 'utf8').toString('latin1') : value;
}

/** A response header value (undici decodes bytes as latin1) as bytes for uWS, which would write a string as UTF-8. */
function bytesOf(value: string): string | Buffer {
  return NON_ASCII.test(value) ? Buffer.from(value, 'latin1') : value;
}

export class ProxyRequest implements Ticking {
  /** undici's handler for the try in progress. */
  currentTry: UpstreamTry | undefined;
  private controller: Dispatcher.DispatchController | undefined;
  private upstream: Upstream | undefined;
  /** Backends tried so far, made on the first retry: most requests never need one. */
  private tried: Set<Upstream> | undefined;
  private tries = 0;
  private tryOpen = false;
  private readonly deadline: number;
  // time limits of the current try (checked by tick())
  private tryDeadline = 0;
  private inBody = false;
  /** Set while upstream reads are paused because the client is slow: not the backend's silence. */
  private paused = false;
  private chunks = 0;
  private chunksSeen = -1;
  private chunksSeenAt = 0;
  private readonly headers: string[];
  private readonly path: string;
  private readonly idempotent: boolean;
  // client side
  private headWritten = false;
  /** Status and headers received, not yet written to the client. */
  headPending = false;
  private headStatus = 0;
  private headHeaders: Record<string, string | string[] | undefined> | undefined;
  private clientDone = false;
  private total = -1;
  private pending: Buffer | undefined;
  private pendingOffset = 0;
  private upstreamEnded = false;
  private writableHooked = false;
  /** completeHead() sent the head with its length ahead of the body: the body must follow by tryEnd. */
  private headSent = false;

  constructor(
    readonly ex: Exchange,
    readonly route: RouteRuntime,
    forwarded: Forwarded,
    private readonly owner: ProxyOwner,
  ) {
    this.deadline = Date.now() + ex.timeoutMs;
    this.idempotent = IDEMPOTENT_METHODS.has(ex.method);
    this.path = this.upstreamPath();
    this.headers = this.upstreamHeaders(forwarded);
  }

  /** Path as the backend sees it: stripPrefix, addPrefix, the backend's base path, the query. */
  private upstreamPath(): string {
    let path = this.ex.path;
    for (let i = 0; i < this.route.stripSegments && path !== '/'; i++) {
      const next = path.indexOf('/', 1);
      path = next === -1 ? '/' : path.slice(next);
    }
    path = this.route.config.addPrefix + path;
    return this.ex.query === '' ? path : path + '?' + this.ex.query;
  }

  private upstreamHeaders(f: Forwarded): string[] {
    const config = this.route.config;
    const remove = config.requestHeaders.remove;
    const set = config.requestHeaders.set;
    const out: string[] = [];
    const h = this.ex.headers;
    let via = '';
    for (let i = 0; i < h.length; i += 2) {
      const name = h[i]!;
      if (name === 'host' && !config.preserveHost) continue;
      if (name === 'via') {
        via = h[i + 1]! + ', ';
        continue;
      }
      if ((remove.length > 0 && remove.includes(name)) || set[name] !== undefined) continue;
      out.push(name, latin1Wire(h[i + 1]!));
    }
    out.push('x-forwarded-for', f.forwardedFor, 'x-forwarded-proto', f.scheme, 'x-forwarded-host', f.host, 'via', via + '1.1 natsgw', 'x-request-id', this.ex.requestId);
    for (const name in set) out.push(name, latin1Wire(set[name]!));
    return out;
  }

  start(): void {
    // undici would open a tunnel; a reverse proxy has nothing to tunnel to.
    if (this.ex.method === 'CONNECT') return this.fail('unsupported-method', `CONNECT is not forwarded to HTTP backends (${this.route.key})`);
    this.route.budget.recordRequest(Date.now());
    this.tryNext(undefined);
  }

  /** Sends the request to the next backend, or answers the client when none is left. */
  private tryNext(last: { c: Classified; err: Error } | undefined): void {
    const now = Date.now();
    const remaining = this.deadline - now;
    if (remaining <= 0) return this.fail('upstream-timeout', `no response from ${this.route.key} within ${this.ex.timeoutMs} ms`);
    if (this.tried === undefined && this.upstream !== undefined) this.tried = new Set([this.upstream]);
    const upstream = this.route.balancer.pick(now, this.tried);
    if (upstream === undefined) {
      if (last !== undefined) return this.fail(last.c.code, clientDetail(this.route.key, last.c, last.err), last.c.detail);
      return this.fail('no-backend', `no backend of ${this.route.key} is available`, this.whyNone(now));
    }
    if (last !== undefined && this.upstream !== undefined) {
      // Counted only now that another backend takes it.
      this.upstream.retries++;
      this.owner.onTry?.(this.ex, this.upstream, 'retry', last.c.detail);
    }
    this.tried?.add(upstream);
    this.tries++;
    this.upstream = upstream;
    this.tryOpen = true;
    this.tryDeadline = now + Math.min(this.route.config.tryTimeoutMs ?? this.ex.timeoutMs, remaining);
    this.inBody = false;
    timeLimits.add(this);
    upstream.acquire();
    const body = this.ex.body;
    const attempt = new UpstreamTry(this);
    this.currentTry = attempt;
    try {
      upstream.pool.dispatch(
        {
          path: upstream.basePath + this.path,
          method: this.ex.method as Dispatcher.HttpMethod,
          headers: this.headers,
          body: body === undefined || (body.length === 0 && this.ex.contentLength < 0) ? null : body,
        },
        attempt,
      );
    } catch (err) {
      // undici refused the request itself (an argument it rejects, a pool
      // closed under us): not the backend's fault, and nothing was sent.
      const c = classify(err as Error);
      this.settle('neutral', c.detail);
      if (c.fault === 'client') this.fail(c.code, clientDetail(this.route.key, c, err as Error), c.detail);
      else this.fail('upstream-error', `the request could not be sent to the backend of ${this.route.key}`, `${upstream.url}: ${c.detail}`);
    }
  }

  private whyNone(now: number): string {
    return this.route.upstreams
      .map((u) => {
        const why = u.retired
          ? 'removed'
          : !u.healthy
            ? 'unhealthy'
            : u.isEjected(now)
              ? 'ejected'
              : u.breaker && !u.breaker.admitsAt(now)
                ? `breaker ${u.breaker.stateAt(now)}`
                : this.tried?.has(u)
                  ? 'already tried'
                  : 'busy';
        return `${u.url} ${why}`;
      })
      .join(', ');
  }

  /** Whether the try may be repeated elsewhere; `spendBudget` false for a try that failed through no backend's fault. */
  private canRetry(notSent: boolean, spendBudget = true): boolean {
    if (this.headWritten || this.ex.aborted || this.tries > this.route.config.retries || !(notSent || this.idempotent)) return false;
    const now = Date.now();
    return now < this.deadline && (!spendBudget || this.route.budget.tryAcquire(now));
  }

  /** Counts a failed try by kind on its backend (for metrics). */
  private count(c: Classified): void {
    const u = this.upstream;
    if (u === undefined) return;
    if (c.code === 'upstream-timeout') u.timeouts++;
    if (c.connectError) u.connectErrors++;
  }

  /** Records the current try's outcome on its backend, once. */
  private settle(outcome: TryOutcome, detail: string): void {
    if (!this.tryOpen || this.upstream === undefined) return;
    this.tryOpen = false;
    this.upstream.release(outcome, Date.now(), this.route.mayEject);
    this.owner.onTry?.(this.ex, this.upstream, outcome, detail);
  }

  /** Answers the client with `clientDetail`; `logDetail` (addresses, OS errors, backend states) goes to the log only. */
  private fail(code: FailureCode, clientDetail: string, logDetail?: string): void {
    this.clientDone = true;
    if (logDetail !== undefined) this.owner.onFailed?.(this.ex, code, logDetail);
    this.owner.failCorked(this.ex, code, clientDetail, false);
  }

  /** The client went away: stop the backend request; not the backend's fault. */
  clientGone(): void {
    this.clientDone = true;
    this.controller?.abort(CLIENT_GONE);
    if (this.controller === undefined) this.settle('neutral', 'client went away');
  }

  // undici's callbacks for the current try (through UpstreamTry)

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    if (this.ex.aborted) controller.abort(CLIENT_GONE);
  }

  /** Enforces the current try's time limits; see CoarseTicker. */
  tick(now: number): boolean {
    if (!this.tryOpen) return false;
    let limit: Error | undefined;
    if (!this.inBody) {
      if (now >= this.tryDeadline) limit = HEADERS_TIMEOUT;
    } else if (this.paused || this.chunks !== this.chunksSeen) {
      this.chunksSeen = this.chunks;
      this.chunksSeenAt = now;
    } else if (now - this.chunksSeenAt >= this.ex.timeoutMs) {
      limit = BODY_TIMEOUT;
    }
    if (limit === undefined) return true;
    if (this.controller !== undefined) {
      this.controller.abort(limit); // → onResponseError, as any failed try
    } else {
      // undici calls onRequestStart just before it writes a request, so this
      // one still waits for a connection and nothing was sent: give it up.
      this.currentTry = undefined;
      this.tryFailed(QUEUE_TIMEOUT);
    }
    return this.tryOpen;
  }

  onResponseStart(controller: Dispatcher.DispatchController, statusCode: number, headers: Record<string, string | string[] | undefined>): void {
    if (controller !== this.controller) return;
    if (this.ex.aborted) return controller.abort(CLIENT_GONE);
    if (this.route.failureStatuses.has(statusCode)) {
      this.settle('failure', `status ${statusCode}`);
      if (this.canRetry(false)) {
        this.controller = undefined;
        controller.abort(RETRYING);
        const detail = `status ${statusCode}`;
        return this.tryNext({ c: { code: 'upstream-error', fault: 'backend', notSent: false, connectError: false, detail }, err: new Error(detail) });
      }
    }
    this.inBody = true;
    this.chunksSeen = -1;
    this.headStatus = statusCode;
    this.headHeaders = headers;
    this.headPending = true;
    headsWaiting.push(this);
    if (!headFlushScheduled) {
      headFlushScheduled = true;
      queueMicrotask(flushWaitingHeads);
    }
  }

  get clientFinished(): boolean {
    return this.clientDone;
  }

  /** Writes the pending head (inside cork). */
  flushHead(): void {
    if (!this.headPending || this.ex.aborted) return;
    this.headPending = false;
    const headers = this.headHeaders!;
    this.headHeaders = undefined;
    this.writeHead(this.headStatus, headers);
  }

  /**
   * A head flushed before any body byte: uWS holds back the end of the
   * header block (its Date and length lines) until the first body write, so
   * a client would not see the response yet. With a known length an empty
   * tryEnd sends it; a chunked response has no such call in uWS v20.30 (its
   * head leaves with the first chunk; see the README's known limits).
   */
  completeHead(): void {
    if (this.clientDone || this.ex.aborted || this.total <= 0) return;
    const res = this.ex.res;
    if (res.getWriteOffset() === 0) {
      res.tryEnd(NO_BYTES, this.total);
      this.headSent = true;
    }
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (controller !== this.controller || this.clientDone) return;
    this.chunks++;
    corkRequest = this;
    corkChunk = chunk;
    this.ex.res.cork(writeChunkCorked);
  }

  onResponseEnd(controller: Dispatcher.DispatchController): void {
    if (controller !== this.controller) return;
    this.controller = undefined;
    this.settle('success', 'ok');
    timeLimits.delete(this);
    this.upstreamEnded = true;
    if (this.clientDone || this.pending !== undefined) return; // a pending chunk finishes in onWritable
    corkRequest = this;
    this.ex.res.cork(endCorked);
  }

  onResponseError(controller: Dispatcher.DispatchController, err: Error): void {
    if (controller !== this.controller) return;
    this.controller = undefined;
    this.tryFailed(err);
  }

  /** The current try failed: retry elsewhere, answer with a problem, or cut the response off. */
  private tryFailed(err: Error): void {
    if (err === CLIENT_GONE || this.ex.aborted) return this.settle('neutral', 'client went away');
    const c = classify(err);
    if (c.fault === 'backend') this.count(c);
    this.settle(c.fault === 'backend' ? 'failure' : 'neutral', c.detail);
    this.headPending = false; // a head never written can still become a clean 502/504
    if (!this.headWritten) {
      // A request undici refuses fails the same way on every backend.
      if (c.fault !== 'client' && this.canRetry(c.notSent, c.fault === 'backend')) return this.tryNext({ c, err });
      return this.fail(c.code, clientDetail(this.route.key, c, err), c.detail);
    }
    // Headers (and maybe part of the body) are with the client: cut the response off.
    if (!this.clientDone) {
      this.clientDone = true;
      this.ex.res.close(); // runs onAborted → the front finishes the exchange
    }
  }

  // Client side (called inside cork)

  private writeHead(status: number, headers: Record<string, string | string[] | undefined>): void {
    const res = this.ex.res;
    const config = this.route.config;
    const remove = config.responseHeaders.remove;
    const set = config.responseHeaders.set;
    // Connection usually says only keep-alive or close; it names other fields rarely.
    // Several Connection fields arrive as an array: every token of every one counts (RFC 9110 §7.6.1).
    const raw = headers.connection;
    const conn = Array.isArray(raw) ? raw.join(',') : raw;
    const named = conn !== undefined && conn !== 'keep-alive' && conn !== 'close' ? connectionNamed(conn) : undefined;
    res.writeStatus(STATUS_LINES[status] ?? `${status} `);
    const cl = headers['content-length'];
    const length = typeof cl === 'string' && CONTENT_LENGTH_RE.test(cl) ? Number(cl) : -1;
    const policy = this.ex.policy;
    const compression =
      policy?.compression === undefined
        ? undefined
        : decideCompression(this.ex, status, single(headers['content-type']), single(headers['content-encoding']), joined(headers['cache-control']), length, true);
    const encoded = compression !== undefined && compression !== 'vary';
    const dropCors = policy?.cors !== undefined;
    let via = '';
    for (const name in headers) {
      const value = headers[name];
      if (value === undefined || RESPONSE_HEADER_SKIP.has(name) || named?.has(name) || set[name] !== undefined || (remove.length > 0 && remove.includes(name))) continue;
      if (name === 'via') {
        via = String(value) + ', ';
        continue;
      }
      // With a cors policy the gateway alone answers CORS; a compressed body is another representation.
      if (dropCors && name.startsWith('access-control-')) continue;
      if (encoded && name === 'etag' && typeof value === 'string') {
        res.writeHeader(name, bytesOf(weakened(value)));
        continue;
      }
      if (typeof value === 'string') res.writeHeader(name, bytesOf(value));
      else for (const v of value) res.writeHeader(name, bytesOf(v));
    }
    for (const name in set) res.writeHeader(name, set[name]!);
    res.writeHeader('via', via + '1.1 natsgw');
    res.writeHeader('x-request-id', this.ex.requestId);
    if (policy !== undefined) {
      writeExtraHeaders(res, this.ex);
      if (compression !== undefined) writeCompressionHead(res, compression);
    }
    this.headWritten = true;
    this.ex.status = status;
    this.ex.upstream = this.upstream?.url ?? '';
    if (this.ex.method === 'HEAD') return this.endNow(() => endHead(res, length, false));
    if (status === 204 || status === 304) return this.endNow(() => res.endWithoutBody());
    if (length === 0) return this.endNow(() => res.end());
    // A compressed body goes chunked, compressed as it comes (BodyCompressor).
    this.total = encoded ? -1 : length;
  }

  private endNow(end: () => void): void {
    end();
    this.clientDone = true;
    this.owner.finish(this.ex);
  }

  writeChunk(chunk: Buffer): void {
    const comp = this.ex.compressor;
    if (comp !== undefined) {
      if (chunk.length === 0) return;
      chunk = comp.push(chunk);
      if (chunk.length === 0) return;
    }
    const res = this.ex.res;
    const before = this.ex.bytesOut;
    this.ex.bytesOut += chunk.length;
    if (this.total >= 0) {
      if (before === 0 && chunk.length === this.total && !this.headSent) {
        // The whole body in one piece, as most responses come: end() writes
        // head, length and body in one call, with no [ok, done] array.
        // What the socket does not take uWS keeps: this chunk, in memory already.
        res.end(chunk);
        return this.clientComplete();
      }
      const offset = res.getWriteOffset();
      const [ok, done] = res.tryEnd(chunk, this.total);
      if (done) return this.clientComplete();
      if (!ok) {
        this.pending = chunk;
        this.pendingOffset = offset;
        this.pause(res);
      }
    } else if (!res.write(chunk)) {
      // uWS keeps the chunk; wait until it drained before reading more.
      this.pause(res);
    }
  }

  endBody(): void {
    if (this.clientDone) return;
    const res = this.ex.res;
    if (this.total < 0) {
      const comp = this.ex.compressor;
      if (comp !== undefined) {
        const tail = comp.end();
        this.ex.bytesOut += tail.length;
        res.end(tail);
      } else res.end(); // the last (empty) chunk of a chunked response
      return this.clientComplete();
    }
    // With a known length tryEnd completes the response on its last byte; an
    // upstream that ended short of its Content-Length cannot be mended.
    this.clientDone = true;
    res.close();
  }

  private clientComplete(): void {
    if (this.clientDone) return;
    this.clientDone = true;
    this.owner.finish(this.ex);
  }

  private pause(res: HttpResponse): void {
    this.paused = true;
    this.controller?.pause();
    if (this.writableHooked) return;
    this.writableHooked = true;
    res.onWritable((offset) => this.onWritable(offset));
  }

  private onWritable(offset: number): boolean {
    if (this.clientDone) return true;
    const res = this.ex.res;
    if (this.pending !== undefined) {
      const [ok, done] = res.tryEnd(this.pending.subarray(offset - this.pendingOffset), this.total);
      if (done) {
        this.pending = undefined;
        this.clientComplete();
        return true;
      }
      if (!ok) return false;
      this.pending = undefined;
      if (this.upstreamEnded) {
        this.endBody();
        return true;
      }
    }
    this.paused = false;
    this.controller?.resume();
    return true;
  }
}

/** A header undici gave as a string, or the first of several. */
function single(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

/** A list header's fields joined. */
function joined(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v.join(',') : v;
}
