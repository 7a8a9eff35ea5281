/**
 * The HTTP side of the gateway (uWebSockets.js): reads a request, maps its
 * path to a subject, then either sends it over NATS as a msgpack envelope or,
 * when an override covers the subject, proxies it to HTTP backends.
 *
 * uWS rules this file follows (docs/index.d.ts): everything needed from the
 * HttpRequest is copied before the handler returns; onAborted is attached
 * before anything asynchronous; onData chunks are copied (they are neutered
 * after the callback); writes from outside a uWS callback happen in cork().
 */
import type { HttpRequest, HttpResponse, us_socket_context_t } from 'uWebSockets.js';
import {
  CAP_STREAM,
  CAP_WS,
  encodeCancel,
  decodeFrame,
  decodeReply,
  DEFAULT_STREAM_WINDOW,
  encodeRequest,
  normalizePath,
  normalizeQuery,
  pathToSubject,
  PROTOCOL_VERSION,
  PROBLEM_CONTENT_TYPE,
  RAW_AUTH,
  readRawContinuation,
  readRawReply,
  REPLY_IS_FRAME,
  serviceErrorStatus,
  STREAM_VERSION,
  TRACEPARENT,
  TRACESTATE,
  type PathRefusal,
  type ReplyEnvelope,
  type RequestEnvelope,
} from '@natsgw/service-sdk/protocol';
import { performance } from 'node:perf_hooks';
import { headers as natsHeaders, nuid, type Msg, type MsgHdrs } from '@nats-io/transport-node';
import { rawHeaderEntries, rawRequestHeaders } from '../nats/raw-request.js';
import type { FailureCode } from '../errors.js';
import { Exchange } from './exchange.js';
import { ForwardingPolicy } from './forwarding.js';
import type { RouteTable } from '../routes/route-table.js';
import type { RouteTraffic, TrafficStats } from '../ops/traffic-stats.js';
import { ProxyRequest, type ProxyOwner } from '../http/proxy.js';
import { serviceError, type ReplyHandler, type ReplyMux } from '../nats/reply-mux.js';
import { connectionNamed, CONTENT_LENGTH_RE, endHead, removeHeaders, RESPONSE_HEADER_SKIP, STATUS_LINES, writeProblem } from './respond.js';
import type { Upstream, TryOutcome } from '../http/upstream/upstream.js';
import { NatsStream, type StreamOwner } from '../nats/nats-stream.js';
import { UploadOverrun } from '../nats/upload-overrun.js';
import { endExchangeSpan, TraceStart, type TraceSampling } from './trace-start.js';
import type { WsFront } from '../ws/ws-front.js';
import type { WsSession } from '../ws/ws-session.js';
import { PolicyGate } from './policy-gate.js';
import { isRefusal, type AuthOutcome } from '../policy/auth.js';
import { compressWhole, type Encoding } from '../policy/compression.js';
import { decideCompression, weakened, writeCompressionHead, writeExtraHeaders } from '../policy/response-policy.js';

export { Exchange } from './exchange.js';

export interface HttpFrontOptions {
  rootSubject: string;
  timeoutMs: number;
  maxBodyBytes: number;
  maxHeaderBytes: number;
  /** A stream where it is the service's turn and nothing comes for this long is cut off. */
  streamIdleMs: number;
  /** Request-body bytes streamed uploads may hold beyond their windows, all together (upload-overrun.ts). */
  maxUploadBufferBytes: number;
  trustedProxies: readonly string[];
  /** Overrides: subjects sent to HTTP backends instead of NATS. */
  routes?: RouteTable;
  /** Reports what happened, for logs and stats. */
  onEvent?: (event: FrontEvent) => void;
  /** Where finished requests are counted. */
  traffic?: TrafficStats;
  /** Share of requests without trace context that start a trace (trace-start.ts); default auto. */
  traceSampling?: TraceSampling;
  /** The gateway's version, for the tracer's name. */
  version?: string;
  /** Called once per request when it is over (answered or abandoned by the client), e.g. for the access log. */
  onComplete?: (ex: Exchange, durationMs: number, aborted: boolean) => void;
}

export type FrontEvent =
  | { type: 'bad-reply'; subject: string; reason: string; requestId: string }
  | { type: 'service-error'; subject: string; code: string; text: string; requestId: string }
  | { type: 'internal-error'; error: unknown; requestId: string }
  | { type: 'upstream-try'; route: string; upstream: string; outcome: TryOutcome | 'retry'; detail: string; requestId: string }
  | { type: 'upstream-failed'; route: string; code: FailureCode; detail: string; requestId: string };

/** Largest body a request carries in its one NATS message: room for the envelope within the server's max_payload. Larger bodies stream. */
export function natsBodyLimit(maxBodyBytes: number, maxHeaderBytes: number, maxPayload: number): number {
  return Math.min(maxBodyBytes, maxPayload - maxHeaderBytes - 1024);
}

/** What the gateway offers every service: streamed replies; and on an upgrade request, a WebSocket. */
const CAPS = [CAP_STREAM];
const UPGRADE_CAPS = [CAP_STREAM, CAP_WS];
/** A Sec-WebSocket-Key is 16 random bytes in base64 (RFC 6455 §4.1). */
const WS_KEY_RE = /^[A-Za-z0-9+/]{22}==$/;

/** The NATS side as the front sees it; absent while disconnected. */
export interface NatsLink {
  mux: ReplyMux<Exchange>;
  /** Largest message the server accepts (its max_payload). */
  maxPayload: number;
}

// Request headers the gateway consumes instead of forwarding: hop-by-hop
// fields (RFC 9110 §7.6.1), Expect (answered here, the body is buffered),
// and the fields it rewrites itself.
const enum H {
  Forward,
  Drop,
  ContentLength,
  TransferEncoding,
  Host,
  RequestId,
  ForwardedFor,
  ForwardedProto,
  ForwardedHost,
  TraceParent,
  TraceState,
  /** Forwarded, X-Real-IP, X-Forwarded-Port, X-Forwarded-Prefix: kept only from trusted proxies. */
  ForwardedOther,
  Connection,
}
const REQUEST_HEADER_KIND = new Map<string, H>([
  ['connection', H.Connection],
  ['keep-alive', H.Drop],
  ['proxy-connection', H.Drop],
  ['proxy-authorization', H.Drop],
  ['te', H.Drop],
  ['trailer', H.Drop],
  ['upgrade', H.Drop],
  ['expect', H.Drop],
  ['transfer-encoding', H.TransferEncoding],
  ['content-length', H.ContentLength],
  ['host', H.Host],
  ['x-request-id', H.RequestId],
  ['x-forwarded-for', H.ForwardedFor],
  ['x-forwarded-proto', H.ForwardedProto],
  ['x-forwarded-host', H.ForwardedHost],
  ['traceparent', H.TraceParent],
  ['tracestate', H.TraceState],
  ['forwarded', H.ForwardedOther],
  ['x-real-ip', H.ForwardedOther],
  ['x-forwarded-port', H.ForwardedOther],
  ['x-forwarded-prefix', H.ForwardedOther],
  // The verified identity's header (auth policy): only the gateway sets it.
  ['natsgw-auth', H.Drop],
]);

const REQUEST_ID_RE = /^[\x21-\x7e]{1,200}$/;

/** What a client is told for each refused request target (always 400). */
const PATH_REFUSALS: Record<PathRefusal, string> = {
  'bad-percent-encoding': 'the path has malformed percent-encoding',
  'dot-segment-above-root': 'the path climbs above the root with ..',
  'hidden-dot-segment': 'a path segment hides a . or .. behind an encoded slash or a backslash',
  fragment: 'a request target has no fragment (#)',
  'not-utf8': 'the path or query holds bytes that are not UTF-8',
};

let collecting: Exchange;
function collectHeader(name: string, value: string): void {
  const ex = collecting;
  ex.headerBytes += name.length + value.length + 4;
  // uWS decodes values as UTF-8 and hands over bytes that are not UTF-8 as
  // U+FFFD; those cannot be carried on losslessly. (A one-byte string, every
  // ASCII value, answers that without looking at its characters.) uWS
  // refuses other controls itself but lets DEL through, which RFC 9110 §5.5
  // does not allow in a field value either.
  if (value.indexOf('\uFFFD') !== -1 || value.indexOf('\x7f') !== -1) ex.badHeaderValue ??= name;
  switch (REQUEST_HEADER_KIND.get(name) ?? H.Forward) {
    case H.Forward:
      ex.headers.push(name, value);
      return;
    case H.ContentLength:
      // RFC 9112 §6.3: differing Content-Length values are an error (a smuggling vector uWS lets through).
      if (ex.contentLength !== -1 && value !== String(ex.contentLength)) ex.lengthConflict = true;
      else if (CONTENT_LENGTH_RE.test(value)) ex.contentLength = Number(value);
      else ex.lengthConflict = true;
      return;
    case H.TransferEncoding:
      ex.transferEncoding = ex.transferEncoding === undefined ? value : ex.transferEncoding + ',' + value;
      return;
    case H.Host:
      // RFC 9112 §3.2: more than one Host is a 400 (uWS refuses it too; this does not depend on that).
      if (ex.hostCount++ === 0) ex.host = value;
      ex.headers.push(name, value);
      return;
    case H.RequestId:
      if (REQUEST_ID_RE.test(value)) ex.requestId = value;
      return;
    case H.ForwardedFor:
      ex.forwardedFor = ex.forwardedFor === undefined ? value : ex.forwardedFor + ', ' + value;
      return;
    case H.ForwardedProto:
      ex.forwardedProto = value;
      return;
    case H.ForwardedHost:
      ex.forwardedHost = value;
      return;
    case H.TraceParent:
      ex.traceparentIn = value;
      ex.traceparentCount++;
      return;
    case H.TraceState:
      ex.tracestateIn = ex.tracestateIn === undefined ? value : ex.tracestateIn + ',' + value;
      return;
    case H.Connection:
      // Several Connection fields: every token of every one counts (RFC 9110 §7.6.1).
      ex.connectionTokens = ex.connectionTokens === undefined ? value : ex.connectionTokens + ',' + value;
      return;
    case H.ForwardedOther:
      (ex.forwardedOther ??= []).push(name, value);
      return;
    case H.Drop:
      return;
  }
}

// cork() takes a callback; these module-level slots let one static function
// serve every call instead of a closure per response.
let corkExchange: Exchange;
let corkReply: ReplyEnvelope;
let corkFailure: FailureCode;
let corkDetail: string;
let corkClose: boolean;
let corkStatus: number | undefined;
function writeReplyCorked(): void {
  writeReply(corkExchange, corkReply, corkClose);
}
function writeProblemCorked(): void {
  writeProblem(corkExchange, corkFailure, corkDetail, corkClose, corkStatus);
}

/** A complete reply that is already the problem a service error maps to (what the SDK sends): passed on as it is. */
function isProblemWithStatus(reply: ReplyEnvelope | string, status: number): reply is ReplyEnvelope {
  if (typeof reply === 'string' || reply.more === true || reply.status !== status) return false;
  const h = reply.headers;
  for (let i = 0; i < h.length; i += 2) if (h[i]!.toLowerCase() === 'content-type') return h[i + 1] === PROBLEM_CONTENT_TYPE;
  return false;
}

/** The encoding writeReplyHead chose for a whole reply's body (compression policy), for writeReply. */
let wholeEncoding: Encoding | undefined;

/**
 * Writes status and headers of a reply; returns the Content-Length the
 * service announced, or -1 (also when a streamed body is compressed: it
 * then goes chunked).
 */
function writeReplyHead(ex: Exchange, r: ReplyEnvelope, streamed: boolean): number {
  const res = ex.res;
  ex.responding = true;
  res.writeStatus(STATUS_LINES[r.status]!);
  const h = r.headers;
  let reportedLength = -1;
  let skipNamed: Set<string> | undefined;
  let connection: string | undefined;
  const policy = ex.policy;
  let contentType: string | undefined;
  let contentEncoding: string | undefined;
  let cacheControl: string | undefined;
  for (let i = 0; i < h.length; i += 2) {
    const lower = h[i]!.toLowerCase();
    if (lower === 'connection') connection = connection === undefined ? h[i + 1]! : connection + ',' + h[i + 1]!;
    else if (policy?.compression !== undefined) {
      if (lower === 'content-type') contentType = h[i + 1];
      else if (lower === 'content-encoding') contentEncoding = h[i + 1];
      else if (lower === 'cache-control') cacheControl = cacheControl === undefined ? h[i + 1] : cacheControl + ',' + h[i + 1];
      else if (lower === 'content-length' && CONTENT_LENGTH_RE.test(h[i + 1]!)) reportedLength = Number(h[i + 1]);
    }
  }
  if (connection !== undefined) skipNamed = connectionNamed(connection);
  const length = streamed ? reportedLength : r.body.length;
  const compression = policy?.compression === undefined ? undefined : decideCompression(ex, r.status, contentType, contentEncoding, cacheControl, length, streamed);
  const encoded = compression !== undefined && compression !== 'vary';
  wholeEncoding = encoded && !streamed ? compression : undefined;
  const dropCors = policy?.cors !== undefined;
  for (let i = 0; i < h.length; i += 2) {
    const name = h[i]!;
    const lower = name.toLowerCase();
    if (RESPONSE_HEADER_SKIP.has(lower) || skipNamed?.has(lower)) {
      if (lower === 'content-length' && CONTENT_LENGTH_RE.test(h[i + 1]!)) reportedLength = Number(h[i + 1]);
      continue;
    }
    // With a cors policy the gateway alone answers CORS.
    if (dropCors && lower.startsWith('access-control-')) continue;
    if (encoded && lower === 'etag') {
      res.writeHeader(name, weakened(h[i + 1]!));
      continue;
    }
    res.writeHeader(name, h[i + 1]!);
  }
  res.writeHeader('x-request-id', ex.requestId);
  if (policy !== undefined) {
    writeExtraHeaders(res, ex);
    if (compression !== undefined) writeCompressionHead(res, compression);
  }
  ex.status = r.status;
  return encoded && streamed ? -1 : reportedLength;
}

function writeReply(ex: Exchange, r: ReplyEnvelope, close: boolean): void {
  const reportedLength = writeReplyHead(ex, r, false);
  const res = ex.res;
  const status = r.status;
  if (ex.method === 'HEAD') {
    // A HEAD response has no body but may say how long the GET body is (RFC 9110 §9.3.2).
    endHead(res, reportedLength, close);
  } else if (status === 204 || status === 304) {
    // No body and no Content-Length (RFC 9110 §8.6, §15.4.5).
    if (close) res.writeHeader('connection', 'close');
    res.endWithoutBody();
  } else if (wholeEncoding !== undefined) {
    const body = compressWhole(wholeEncoding, r.body);
    wholeEncoding = undefined;
    ex.bytesOut = body.length;
    res.end(body, close);
  } else {
    ex.bytesOut = r.body.length;
    res.end(r.body, close);
  }
}

/**
 * Owns request handling for one gateway: the uWS route handler, body
 * buffering, the NATS reply handler the mux calls back, and the hand-over to
 * the proxy for overridden subjects.
 */
export class HttpFront implements ReplyHandler<Exchange>, ProxyOwner, StreamOwner {
  /** Requests accepted and not yet answered or aborted. */
  inFlight = 0;
  /** Set while connected to NATS. */
  link: NatsLink | undefined = undefined;
  /** Set when shutting down: new requests get 503. */
  closing = false;
  /** WebSocket sessions, when the gateway serves them. */
  ws: WsFront | undefined = undefined;
  private readonly forwarding: ForwardingPolicy;
  private readonly gate: PolicyGate;
  private readonly traces: TraceStart;
  private readonly emptyBody = Buffer.alloc(0);
  private readonly natsTraffic: RouteTraffic | undefined;
  /** Exchanges with an open v2 stream, for idle limits and probes. */
  private readonly streams = new Set<Exchange>();
  /** StreamOwner: what uploads hold beyond their windows (read past a pause), and its limit. */
  readonly uploadOverrun: UploadOverrun;
  private readonly streamTimer: NodeJS.Timeout;

  constructor(private readonly opts: HttpFrontOptions) {
    this.forwarding = new ForwardingPolicy(opts.trustedProxies);
    this.uploadOverrun = new UploadOverrun(opts.maxUploadBufferBytes);
    this.gate = new PolicyGate(this, this.forwarding);
    this.traces = new TraceStart(opts.traceSampling ?? 'auto', opts.version ?? '0.0.0');
    this.natsTraffic = opts.traffic?.route(opts.rootSubject, 'nats');
    this.streamTimer = setInterval(() => this.tickStreams(), 500);
    this.streamTimer.unref();
  }

  /** Open v2 streams right now. */
  get openStreams(): number {
    return this.streams.size;
  }

  /** Stops the stream timer (the gateway is closing). */
  close(): void {
    clearInterval(this.streamTimer);
  }

  private tickStreams(): void {
    if (this.streams.size === 0) return;
    const now = performance.now();
    for (const ex of this.streams) {
      const stream = ex.stream!;
      if (stream.ended) {
        this.streams.delete(ex);
        continue;
      }
      try {
        ex.res.cork(() => stream.tick(now, this.opts.streamIdleMs, ex.timeoutMs));
      } catch (error) {
        this.onHandlerError(ex, error);
      }
    }
  }

  /** The uWS route handler for every method and path. */
  readonly handle = (res: HttpResponse, req: HttpRequest): void => this.admit(res, req, undefined);

  /** The uWS upgrade handler: a WebSocket upgrade request goes to its service like any request (PROTOCOL.md §14). */
  readonly handleUpgrade = (res: HttpResponse, req: HttpRequest, context: us_socket_context_t): void => this.admit(res, req, context);

  /** Copies what is needed from the HttpRequest (gone when the handler returns), then starts the exchange. */
  private admit(res: HttpResponse, req: HttpRequest, upgradeContext: us_socket_context_t | undefined): void {
    const ex = new Exchange(res);
    ex.method = req.getCaseSensitiveMethod();
    ex.rawPath = req.getUrl();
    ex.rawQuery = req.getQuery() ?? '';
    if (upgradeContext !== undefined) {
      const offered = req.getHeader('sec-websocket-protocol');
      const protocols: string[] = [];
      if (offered !== '') for (const p of offered.split(',')) if (p.trim() !== '') protocols.push(p.trim());
      ex.upgrade = { key: req.getHeader('sec-websocket-key'), version: req.getHeader('sec-websocket-version'), protocols, context: upgradeContext };
    }
    collecting = ex;
    req.forEach(collectHeader);
    this.inFlight++;
    res.onAborted(() => this.onAbort(ex));
    try {
      this.start(ex);
    } catch (error) {
      this.internalError(ex, error);
    }
  }

  private start(ex: Exchange): void {
    const opts = this.opts;
    ex.startedAt = performance.now();
    if (ex.requestId === '') ex.requestId = nuid.next();
    this.traces.begin(ex, ex.startedAt);
    if (ex.traceparent !== '') {
      // Checked and rewritten here: the service (or backend) gets the gateway's context, never an invalid one.
      ex.headers.push(TRACEPARENT, ex.traceparent);
      if (ex.tracestate !== undefined) ex.headers.push(TRACESTATE, ex.tracestate);
    }

    // Framing problems first: the connection cannot be trusted after these, so close it.
    if (ex.lengthConflict) return this.fail(ex, 'bad-request', 'conflicting or malformed Content-Length', true);
    let chunked = false;
    if (ex.transferEncoding !== undefined) {
      const codings = ex.transferEncoding
        .toLowerCase()
        .split(',')
        .map((c) => c.trim());
      if (codings.length !== 1 || codings[0] !== 'chunked') {
        // RFC 9112 §6.1: chunked must be the final coding (else 400); other codings are not implemented.
        return codings[codings.length - 1] === 'chunked'
          ? this.fail(ex, 'unsupported-transfer-coding', `transfer coding ${JSON.stringify(ex.transferEncoding)} is not supported`, true)
          : this.fail(ex, 'bad-request', `Transfer-Encoding ${JSON.stringify(ex.transferEncoding)} does not end in chunked`, true);
      }
      chunked = true;
    }
    const hasBody = chunked || ex.contentLength > 0;
    if (ex.headerBytes > opts.maxHeaderBytes) {
      return this.fail(ex, 'headers-too-large', `request headers exceed ${opts.maxHeaderBytes} bytes`, hasBody);
    }
    if (ex.hostCount > 1) return this.fail(ex, 'bad-request', 'more than one Host header (RFC 9112 §3.2)', true);
    if (ex.badHeaderValue !== undefined) return this.fail(ex, 'bad-request', `header ${ex.badHeaderValue} holds bytes that are not UTF-8, or DEL`, hasBody);

    const path = normalizePath(ex.rawPath === '' ? '/' : ex.rawPath);
    const query = normalizeQuery(ex.rawQuery);
    if (path.charCodeAt(0) !== 47 || query === 'fragment' || query === 'not-utf8') {
      return this.fail(ex, 'bad-request', PATH_REFUSALS[(path.charCodeAt(0) !== 47 ? path : query) as PathRefusal], hasBody);
    }
    ex.path = path;
    ex.query = query;

    const subject = pathToSubject(opts.rootSubject, ex.path);
    switch (subject) {
      case 'bad-percent-encoding':
        return this.fail(ex, 'bad-request', `path ${JSON.stringify(ex.path.slice(0, 100))} has malformed percent-encoding`, hasBody);
      case 'too-many-segments':
        return this.fail(ex, 'uri-too-long', 'path has too many segments', hasBody);
      case 'subject-too-long':
        return this.fail(ex, 'uri-too-long', 'path maps to a subject that is too long', hasBody);
    }
    ex.subject = subject;

    // Connection: close as well, so clients stop sending here.
    if (this.closing) return this.fail(ex, 'shutting-down', 'the gateway is shutting down', true);
    // An override wins over NATS; the request keeps this route version (and these policies) to the end.
    const resolved = opts.routes?.resolve(subject);
    const matched = resolved?.route;
    ex.timeoutMs = opts.timeoutMs;
    if (ex.upgrade !== undefined) {
      const up = ex.upgrade;
      if (matched !== undefined || this.ws === undefined) {
        return this.fail(ex, 'ws-unsupported', `WebSockets are served by services over NATS; ${subject} is routed to ${matched?.kind === 'http' ? 'HTTP backends' : 'a raw NATS route'}`, hasBody);
      }
      if (up.version !== '13' || !WS_KEY_RE.test(up.key)) return this.fail(ex, 'bad-request', 'a WebSocket upgrade needs Sec-WebSocket-Version 13 and a valid Sec-WebSocket-Key', true);
      if (hasBody) return this.fail(ex, 'bad-request', 'a WebSocket upgrade request has no body', true);
      if (this.ws.full) return this.fail(ex, 'ws-limit', 'too many WebSocket connections on this gateway', false);
    }
    const policy = resolved?.policy;
    if (policy !== undefined) {
      if (this.gate.admit(ex, policy, hasBody, Date.now())) return;
      if (ex.authPending !== undefined) {
        ex.authPending.then(
          (outcome) => this.onAuthDone(ex, outcome),
          (error: unknown) => this.internalError(ex, error),
        );
      }
      if (policy.limits?.timeoutMs !== undefined) ex.timeoutMs = policy.limits.timeoutMs;
    }
    const maxBody = policy?.limits?.maxRequestBodyBytes;
    const route = matched?.kind === 'http' ? matched : undefined;
    if (route !== undefined) {
      ex.route = route;
      ex.bodyLimit = maxBody ?? route.config.maxRequestBodyBytes;
      if (policy?.limits?.timeoutMs === undefined) ex.timeoutMs = route.config.timeoutMs;
    } else {
      if (this.link === undefined) return this.fail(ex, 'nats-unavailable', `not connected to NATS, cannot reach ${subject}`, hasBody);
      if (matched?.kind === 'nats-raw') {
        // Raw mode: the body is one NATS payload, never streamed.
        ex.raw = matched;
        ex.bodyLimit = Math.min(maxBody ?? matched.config.maxRequestBodyBytes, natsBodyLimit(opts.maxBodyBytes, opts.maxHeaderBytes, this.link.maxPayload));
      } else ex.bodyLimit = maxBody ?? opts.maxBodyBytes;
    }
    if (ex.contentLength > ex.bodyLimit) {
      return this.fail(ex, 'body-too-large', `request body of ${ex.contentLength} bytes exceeds the limit of ${ex.bodyLimit} bytes`, true);
    }
    if (!hasBody) {
      ex.body = this.emptyBody;
      return this.dispatch(ex);
    }
    ex.res.onData((chunk, isLast) => this.onData(ex, chunk, isLast));
    if (route === undefined && ex.raw === undefined && !chunked && ex.contentLength > natsBodyLimit(opts.maxBodyBytes, opts.maxHeaderBytes, this.link!.maxPayload)) {
      // Too large for one message: the body streams.
      return this.startUpload(ex);
    }
    if (chunked) ex.chunks = [];
    else ex.body = Buffer.allocUnsafe(ex.contentLength);
  }

  /** Sends the v2 head of a request whose body streams; the body follows in data frames. */
  private startUpload(ex: Exchange): void {
    const link = this.link!;
    ex.stream = new NatsStream(ex, this, link.maxPayload, true, performance.now());
    ex.body = this.emptyBody;
    this.dispatch(ex);
  }

  private onData(ex: Exchange, chunk: ArrayBuffer, isLast: boolean): void {
    if (ex.done) return;
    const n = chunk.byteLength;
    if (ex.received + n > ex.bodyLimit) {
      const detail = `request body exceeds the limit of ${ex.bodyLimit} bytes`;
      if (ex.stream !== undefined) return ex.stream.broken('body-too-large', detail, true, performance.now());
      // Stop reading: answer now and close, rather than buffer the rest.
      return this.failCorked(ex, 'body-too-large', detail, true);
    }
    if (
      ex.stream === undefined &&
      ex.chunks !== undefined &&
      ex.route === undefined &&
      ex.raw === undefined &&
      this.link !== undefined &&
      ex.received + n > natsBodyLimit(this.opts.maxBodyBytes, this.opts.maxHeaderBytes, this.link.maxPayload)
    ) {
      // A chunked body is collected while it fits one message (so v1
      // services get it whole, as always), and streams from the read that
      // proves it does not.
      this.startUpload(ex);
      for (const c of ex.chunks) ex.stream!.onBody(c, false, performance.now());
      ex.chunks = undefined;
    }
    if (ex.stream !== undefined) {
      ex.received += n;
      if (isLast && ex.contentLength >= 0 && ex.received !== ex.contentLength) {
        return ex.stream.broken('bad-request', 'request body shorter than its Content-Length', true, performance.now());
      }
      return ex.stream.onBodyView(new Uint8Array(chunk), isLast, performance.now());
    }
    if (ex.chunks !== undefined) {
      if (n > 0) ex.chunks.push(Buffer.from(new Uint8Array(chunk)));
    } else if (n > 0) {
      ex.body!.set(new Uint8Array(chunk), ex.received);
    }
    ex.received += n;
    if (!isLast) return;
    if (ex.chunks !== undefined) {
      ex.body = ex.chunks.length === 1 ? ex.chunks[0]! : Buffer.concat(ex.chunks, ex.received);
      ex.chunks = undefined;
      ex.contentLength = ex.received;
    } else if (ex.received !== ex.contentLength) {
      return this.failCorked(ex, 'bad-request', 'request body shorter than its Content-Length', true);
    }
    try {
      this.dispatch(ex);
    } catch (error) {
      this.internalError(ex, error);
    }
  }

  /** A token's verification is done: refuse the request, or send it on if it waits only for this. */
  private onAuthDone(ex: Exchange, outcome: AuthOutcome): void {
    ex.authPending = undefined;
    if (ex.done) return;
    try {
      const waiting = ex.dispatchWaiting;
      ex.dispatchWaiting = false;
      // A body still arriving (or streaming up) cannot be read on after a refusal: close.
      if (!this.gate.authorized(ex, outcome, !waiting || ex.stream !== undefined, true, Date.now())) {
        if (isRefusal(outcome) && ex.stream !== undefined) ex.res.resume();
        return;
      }
      if (waiting) ex.res.cork(() => this.dispatch(ex));
    } catch (error) {
      this.internalError(ex, error);
    }
  }

  /** Sends a complete request on its way: to its override's backends, or over NATS. */
  private dispatch(ex: Exchange): void {
    if (ex.authPending !== undefined) {
      // Sent once the token is verified (onAuthDone).
      ex.dispatchWaiting = true;
      return;
    }
    const remote = ex.clientAddress();
    if (ex.connectionTokens !== undefined) {
      const named = connectionNamed(ex.connectionTokens);
      removeHeaders(ex.headers, (name) => named.has(name));
    }
    const forwarded = this.forwarding.compute(ex, remote);
    // A trusted proxy's Forwarded / X-Real-IP / X-Forwarded-Port|Prefix pass; anyone else's are dropped.
    if (forwarded.trusted && ex.forwardedOther !== undefined) ex.headers.push(...ex.forwardedOther);
    if (ex.route !== undefined) {
      if (ex.identity !== undefined) ex.headers.push('natsgw-auth', ex.identity.json);
      const proxy = new ProxyRequest(ex, ex.route, forwarded, this);
      ex.proxy = proxy;
      proxy.start();
      return;
    }
    const link = this.link;
    if (link === undefined) return this.failCorked(ex, 'nats-unavailable', `not connected to NATS, cannot reach ${ex.subject}`, false);
    if (ex.raw !== undefined) {
      const body = ex.body!;
      const headers = rawRequestHeaders(ex, remote, forwarded);
      if (ex.identity !== undefined) headers.set(RAW_AUTH, ex.identity.json);
      ex.body = undefined;
      return link.mux.send(ex.subject, body, ex, headers, ex.timeoutMs);
    }
    const headers = ex.headers;
    const streamed = ex.stream !== undefined;
    // A body that travels whole has a known length: a chunked upload reaches
    // the service with a Content-Length instead. A streamed one keeps the
    // client's length, or says it is chunked (so body parsers expect a body).
    if (!streamed && ex.contentLength >= 0) headers.push('content-length', String(ex.body!.length));
    else if (streamed) headers.push(...(ex.contentLength >= 0 ? ['content-length', String(ex.contentLength)] : ['transfer-encoding', 'chunked']));
    // The hop-by-hop fields of the handshake were dropped with the others; a handler still sees an upgrade request.
    if (ex.upgrade !== undefined) headers.push('connection', 'Upgrade', 'upgrade', 'websocket');
    headers.push('x-forwarded-for', forwarded.forwardedFor, 'x-forwarded-proto', forwarded.scheme, 'x-forwarded-host', forwarded.host, 'x-request-id', ex.requestId);
    const envelope: RequestEnvelope = {
      v: streamed ? STREAM_VERSION : PROTOCOL_VERSION,
      id: ex.requestId,
      method: ex.method,
      path: ex.path,
      query: ex.query,
      headers,
      body: ex.body!,
      remote,
      scheme: forwarded.scheme,
      host: forwarded.host,
      root: this.opts.rootSubject,
      subject: ex.subject,
      timeoutMs: ex.timeoutMs,
      caps: CAPS,
      credit: DEFAULT_STREAM_WINDOW,
    };
    if (streamed) envelope.more = true;
    if (ex.identity !== undefined) envelope.auth = ex.identity.json;
    if (ex.upgrade !== undefined) {
      envelope.ws = true;
      envelope.caps = UPGRADE_CAPS;
      envelope.credit = this.ws!.window;
    }
    const payload = encodeRequest(envelope);
    ex.body = undefined;
    if (payload.length > link.maxPayload) {
      return this.failCorked(ex, 'body-too-large', `request of ${payload.length} bytes exceeds the NATS max_payload of ${link.maxPayload} bytes`, false);
    }
    // The trace context rides as NATS headers too, for NATS's own tools (nats-server 2.11+ message tracing).
    link.mux.send(ex.subject, payload, ex, ex.traceparent === '' ? undefined : traceHeaders(ex), ex.timeoutMs);
  }

  private onAbort(ex: Exchange): void {
    ex.aborted = true;
    if (ex.done) return;
    ex.done = true;
    this.inFlight--;
    if (ex.proxy !== undefined) ex.proxy.clientGone();
    else {
      ex.stream?.clientGone(performance.now());
      this.release(ex);
    }
    this.record(ex, true);
  }

  // ReplyHandler: called by the mux outside any uWS callback, hence cork().

  onReply(ex: Exchange, data: Uint8Array, msg?: Msg): void {
    if (ex.done) return;
    if (ex.raw !== undefined) return this.onRawReply(ex, data, msg);
    const reply = decodeReply(data);
    if (typeof reply !== 'string' && reply.status === 101) return this.onAccept(ex, reply);
    if (reply === REPLY_IS_FRAME || (typeof reply !== 'string' && reply.more === true) || ex.stream !== undefined) {
      // The reply streams (or the request body does): the reply subject stays open.
      this.link?.mux.hold(ex);
      return this.onEnvelopeStreamMessage(ex, data, reply);
    }
    if (typeof reply === 'string') return this.badReply(ex, reply);
    corkExchange = ex;
    corkReply = reply;
    corkClose = false;
    ex.res.cork(writeReplyCorked);
    this.finish(ex);
  }

  /** A service accepted a WebSocket upgrade (101): the handshake completes and the session starts. */
  private onAccept(ex: Exchange, reply: ReplyEnvelope): void {
    if (ex.upgrade === undefined || this.ws === undefined) return this.badReply(ex, 'a 101 reply to a request that is not a WebSocket upgrade');
    const refused = this.ws.accept(ex, ex.upgrade, reply, performance.now());
    if (refused !== undefined) {
      // The service believes the session is open: tell it otherwise.
      this.link?.mux.publishFrame(ex, reply.inbox!, encodeCancel(refused));
      return this.badReply(ex, refused);
    }
    this.finish(ex);
  }

  /** A message on a WebSocket session's reply subject: a frame from the service. */
  private onSessionMessage(session: WsSession, data: Uint8Array): void {
    const frame = decodeFrame(data);
    if (typeof frame === 'string') return session.broken(decodeReply(data) === REPLY_IS_FRAME ? frame : 'a reply envelope inside a WebSocket session');
    session.onFrame(frame, performance.now());
  }

  /**
   * The reply carries NATS's service error headers: the client gets their
   * code as status (400–599, else 502) and their text as the problem's
   * detail. A reply that already is that problem (the SDK's) goes as it is.
   */
  onServiceError(ex: Exchange, code: string, text: string, data: Uint8Array): void {
    if (ex.done) return;
    const status = serviceErrorStatus(code);
    // (A raw reply's payload is a body, never an envelope.)
    if (ex.raw === undefined) {
      const reply = decodeReply(data);
      if (reply !== REPLY_IS_FRAME && isProblemWithStatus(reply, status)) return this.onReply(ex, data);
    }
    this.opts.onEvent?.({ type: 'service-error', subject: ex.subject, code, text, requestId: ex.requestId });
    const stream = ex.stream;
    stream?.endedByReply();
    this.failCorked(ex, 'service-error', text || `${ex.subject} answered with service error ${code.slice(0, 16)}`, stream !== undefined && !stream.upDone, status);
  }

  /**
   * A raw-mode reply: its payload is the body, its NATS headers the
   * response's (PROTOCOL.md §12). With `Natsgw-More: 1` the body goes on in
   * the messages that follow on the same reply subject.
   */
  private onRawReply(ex: Exchange, data: Uint8Array, msg: Msg | undefined): void {
    const reply = readRawReply(msg?.headers === undefined ? [] : rawHeaderEntries(msg.headers), data);
    if (typeof reply === 'string') return this.badReply(ex, reply);
    const head: ReplyEnvelope = { v: PROTOCOL_VERSION, status: reply.status, headers: reply.headers, body: reply.body };
    if (reply.more) {
      this.link?.mux.hold(ex);
      const now = performance.now();
      const stream = (ex.stream = new NatsStream(ex, this, this.link?.maxPayload ?? 1024 * 1024, false, now, true));
      this.streams.add(ex);
      ex.res.cork(() => stream.onHead(head, now));
      return;
    }
    corkExchange = ex;
    corkReply = head;
    corkClose = false;
    ex.res.cork(writeReplyCorked);
    this.finish(ex);
  }

  /** A later message of a streamed raw reply. A service error or a bad Natsgw-More cuts the response off. */
  private onRawStreamMessage(ex: Exchange, stream: NatsStream, data: Uint8Array, msg: Msg): void {
    const now = performance.now();
    const error = msg.headers === undefined ? undefined : serviceError(msg.headers);
    if (error !== undefined) {
      this.opts.onEvent?.({ type: 'service-error', subject: ex.subject, code: error.code, text: error.text, requestId: ex.requestId });
      ex.res.cork(() => stream.broken('service-error', `the service failed mid-response: ${error.text || error.code.slice(0, 16)}`, false, now));
      return;
    }
    const more = msg.headers === undefined ? false : readRawContinuation(rawHeaderEntries(msg.headers));
    if (typeof more === 'string') return this.badReply(ex, more);
    ex.res.cork(() => stream.onRawChunk(Buffer.from(data.buffer, data.byteOffset, data.length), !more, now));
  }

  private badReply(ex: Exchange, reason: string): void {
    this.opts.onEvent?.({ type: 'bad-reply', subject: ex.subject, reason, requestId: ex.requestId });
    const detail = `invalid reply from ${ex.subject}: ${reason}`;
    if (ex.stream !== undefined) {
      ex.res.cork(() => ex.stream!.broken('bad-reply', detail, true, performance.now()));
      return;
    }
    this.failCorked(ex, 'bad-reply', detail, false);
  }

  /** A later message on the reply subject of a stream. */
  onStreamMessage(ex: Exchange, data: Uint8Array, msg: Msg): void {
    if (ex.session !== undefined) return this.onSessionMessage(ex.session, data);
    if (ex.done) return;
    if (ex.raw !== undefined && ex.stream !== undefined) return this.onRawStreamMessage(ex, ex.stream, data, msg);
    this.onEnvelopeStreamMessage(ex, data);
  }

  /** A message of an envelope stream: a head, a frame, or the one complete reply that ends it. */
  private onEnvelopeStreamMessage(ex: Exchange, data: Uint8Array, decoded?: ReplyEnvelope | string): void {
    if (ex.done) return;
    const reply = decoded ?? decodeReply(data);
    const now = performance.now();
    if (reply === REPLY_IS_FRAME) {
      const frame = decodeFrame(data);
      if (typeof frame === 'string') return this.badReply(ex, frame);
      const stream = (ex.stream ??= this.newStream(ex, now));
      if (frame.t === 'credit' && stream.inbox === '' && frame.inbox === undefined) return this.badReply(ex, 'first credit frame names no inbox');
      this.streams.add(ex);
      ex.res.cork(() => stream.onFrame(frame, now));
      return;
    }
    if (typeof reply === 'string') return this.badReply(ex, reply);
    if (reply.status === 101) return this.badReply(ex, 'a 101 reply inside a stream');
    if (ex.stream?.headWritten === true) return this.badReply(ex, 'a second response head');
    if (reply.more === true) {
      const stream = (ex.stream ??= this.newStream(ex, now));
      this.streams.add(ex);
      ex.res.cork(() => stream.onHead(reply, now));
      return;
    }
    // One complete reply: an upload still going cannot be read on, so the connection closes after it.
    const stream = ex.stream;
    corkExchange = ex;
    corkReply = reply;
    corkClose = stream !== undefined && !stream.upDone;
    if (stream?.uploading && stream.inbox === '' && reply.status === 400 && Buffer.from(reply.body).includes('"unsupported-version"')) {
      // A v1 service refused the v2 head: say what the client can do about it.
      this.failCorked(ex, 'body-too-large', `${ex.subject} takes request bodies only up to one NATS message (it speaks protocol v1)`, true);
      return stream.endedByReply();
    }
    ex.res.cork(writeReplyCorked);
    stream?.endedByReply();
    this.finish(ex);
  }

  onStreamPeerGone(ex: Exchange): void {
    if (ex.session !== undefined) return ex.session.peerGone();
    const stream = ex.stream;
    if (ex.done || stream === undefined) return;
    ex.res.cork(() => stream.peerGone(performance.now()));
  }

  private newStream(ex: Exchange, now: number): NatsStream {
    return new NatsStream(ex, this, this.link?.maxPayload ?? 1024 * 1024, false, now);
  }

  // StreamOwner

  publishFrame(ex: Exchange, inbox: string, data: Uint8Array): boolean {
    return this.link?.mux.publishFrame(ex, inbox, data) ?? false;
  }

  writeHead(ex: Exchange, reply: ReplyEnvelope): number {
    return writeReplyHead(ex, reply, true);
  }

  release(ex: Exchange): void {
    this.link?.mux.cancel(ex);
    this.streams.delete(ex);
  }

  onNoResponders(ex: Exchange): void {
    this.failCorked(ex, 'no-responders', `no service is subscribed to ${ex.subject}`, false);
  }

  onTimeout(ex: Exchange): void {
    const detail = `no reply from ${ex.subject} within ${ex.timeoutMs} ms`;
    if (ex.stream !== undefined) {
      ex.res.cork(() => ex.stream!.broken('timeout', detail, true, performance.now()));
      return;
    }
    this.failCorked(ex, 'timeout', detail, false);
  }

  onPublishFailed(ex: Exchange, error: unknown): void {
    this.failCorked(ex, 'nats-unavailable', `could not publish to ${ex.subject}: ${(error as Error).message}`, false);
  }

  onConnectionLost(ex: Exchange): void {
    if (ex.session !== undefined) return ex.session.closeClient(1011, 'the gateway lost its NATS connection');
    const detail = `connection to NATS lost while waiting for ${ex.subject}`;
    if (ex.stream !== undefined) {
      ex.res.cork(() => ex.stream!.broken('nats-connection-lost', detail, false, performance.now()));
      return;
    }
    this.failCorked(ex, 'nats-connection-lost', detail, false);
  }

  /** Handling a reply (or a timeout) threw: log and count it, answer 502, release the request. */
  onHandlerError(ex: Exchange, error: unknown): void {
    this.opts.onEvent?.({ type: 'internal-error', error, requestId: ex.requestId });
    if (ex.session !== undefined) return ex.session.closeClient(1011, 'internal gateway error');
    if (ex.done) return;
    try {
      if (ex.responding) {
        // Part of a response may be out: it cannot become a clean 502.
        ex.status = 502;
        this.finish(ex);
        if (!ex.aborted) ex.res.close();
        return;
      }
      this.failCorked(ex, 'reply-failed', `the gateway could not process the reply from ${ex.subject}`, false);
    } catch {
      this.finish(ex);
    }
  }

  // ProxyOwner

  /** The response is complete (ex.status and ex.bytesOut are set): count it once. */
  finish(ex: Exchange): void {
    if (ex.done) return;
    ex.done = true;
    this.inFlight--;
    this.record(ex, false);
  }

  private record(ex: Exchange, aborted: boolean): void {
    const now = performance.now();
    const durationMs = now - ex.startedAt;
    const traffic = this.opts.traffic;
    if (traffic !== undefined) {
      const t = ex.route !== undefined ? traffic.route(ex.route.key, 'http') : ex.raw !== undefined ? traffic.route(ex.raw.key, 'nats') : this.natsTraffic!;
      if (ex.upgrade !== undefined && ex.status !== 101 && this.ws !== undefined) this.ws.stats.rejected++;
      if (aborted) t.clientAborts++;
      else t.record(ex.method, ex.status, durationMs / 1000, ex.bytesOut);
      traffic.tick(performance.timeOrigin + now); // wall time from the same clock read
    }
    if (ex.span !== undefined) endExchangeSpan(ex, aborted);
    this.opts.onComplete?.(ex, durationMs, aborted);
  }

  onFailed(ex: Exchange, code: FailureCode, detail: string): void {
    this.opts.onEvent?.({ type: 'upstream-failed', route: ex.route!.key, code, detail, requestId: ex.requestId });
  }

  onTry(ex: Exchange, upstream: Upstream, outcome: TryOutcome | 'retry', detail: string): void {
    this.opts.onEvent?.({ type: 'upstream-try', route: ex.route!.key, upstream: upstream.url, outcome, detail, requestId: ex.requestId });
  }

  /** Answers with a problem from inside the route handler (already corked). */
  fail(ex: Exchange, code: FailureCode, detail: string, close: boolean): void {
    if (ex.done) return;
    if (!ex.aborted) writeProblem(ex, code, detail, close);
    this.finish(ex);
  }

  /** Answers with a problem from any other callback. */
  failCorked(ex: Exchange, code: FailureCode, detail: string, close: boolean, status?: number): void {
    if (ex.done) return;
    if (!ex.aborted) {
      corkExchange = ex;
      corkFailure = code;
      corkDetail = detail;
      corkClose = close;
      corkStatus = status;
      ex.res.cork(writeProblemCorked);
    }
    this.finish(ex);
  }

  private internalError(ex: Exchange, error: unknown): void {
    this.opts.onEvent?.({ type: 'internal-error', error, requestId: ex.requestId });
    this.failCorked(ex, 'internal', 'internal gateway error', true);
  }
}

function traceHeaders(ex: Exchange): MsgHdrs {
  const h = natsHeaders();
  h.set(TRACEPARENT, ex.traceparent);
  if (ex.tracestate !== undefined) h.set(TRACESTATE, ex.tracestate);
  return h;
}
