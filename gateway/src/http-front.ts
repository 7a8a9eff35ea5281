/**
 * The HTTP side of the gateway (uWebSockets.js): reads a request, maps its
 * path to a subject, sends it as a msgpack envelope over NATS and writes the
 * reply back.
 *
 * uWS rules this file follows (docs/index.d.ts): everything needed from the
 * HttpRequest is copied before the handler returns; onAborted is attached
 * before anything asynchronous; onData chunks are copied (they are neutered
 * after the callback); writes from outside a uWS callback happen in cork().
 */
import { BlockList, isIPv6 } from 'node:net';
import { STATUS_CODES } from 'node:http';
import type { HttpRequest, HttpResponse } from 'uWebSockets.js';
import {
  decodeReply,
  encodeRequest,
  pathToSubject,
  PROBLEM_CONTENT_TYPE,
  problemJson,
  PROTOCOL_VERSION,
  type ReplyEnvelope,
  type RequestEnvelope,
} from '@natsgw/service-sdk/protocol';
import { nuid } from '@nats-io/transport-node';
import { FAILURES, type FailureCode } from './errors.js';
import type { PendingRequest, ReplyHandler, ReplyMux } from './reply-mux.js';
import { formatAddress } from './uws.js';

export interface HttpFrontOptions {
  rootSubject: string;
  timeoutMs: number;
  maxBodyBytes: number;
  maxHeaderBytes: number;
  trustedProxies: readonly string[];
  /** Called once per unexpected internal error and per bad reply, for logging. */
  onEvent?: (event: FrontEvent) => void;
}

export type FrontEvent =
  | { type: 'bad-reply'; subject: string; reason: string; requestId: string }
  | { type: 'internal-error'; error: unknown; requestId: string };

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
  Connection,
}
const REQUEST_HEADER_KIND = new Map<string, H>([
  ['connection', H.Connection],
  ['keep-alive', H.Drop],
  ['proxy-connection', H.Drop],
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
]);

// Reply headers never passed to the client: hop-by-hop ones, and those uWS
// writes itself (Date, Content-Length) which would otherwise appear twice.
const REPLY_HEADER_SKIP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'content-length',
  'date',
  'x-request-id',
]);

const STATUS_LINES: string[] = [];
for (let s = 0; s < 600; s++) STATUS_LINES.push(`${s} ${STATUS_CODES[s] ?? ''}`);

const REQUEST_ID_RE = /^[\x21-\x7e]{1,200}$/;
const CONTENT_LENGTH_RE = /^\d{1,15}$/;

/** One HTTP request from arrival to response. */
export class Exchange implements PendingRequest {
  muxKey = '';
  deadline = 0;
  method = '';
  path = '';
  query = '';
  headers: string[] = [];
  headerBytes = 0;
  host = '';
  requestId = '';
  subject = '';
  contentLength = -1;
  lengthConflict = false;
  transferEncoding: string | undefined = undefined;
  connectionTokens: string | undefined = undefined;
  forwardedFor: string | undefined = undefined;
  forwardedProto: string | undefined = undefined;
  forwardedHost: string | undefined = undefined;
  body: Buffer | undefined = undefined;
  chunks: Buffer[] | undefined = undefined;
  received = 0;
  /** The client went away; nothing may be written to `res` any more. */
  aborted = false;
  /** A response was written (or the exchange was abandoned). */
  done = false;

  constructor(readonly res: HttpResponse) {}
}

let collecting: Exchange;
function collectHeader(name: string, value: string): void {
  const ex = collecting;
  ex.headerBytes += name.length + value.length + 4;
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
      ex.host = value;
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
    case H.Connection:
      ex.connectionTokens = value;
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
function writeReplyCorked(): void {
  writeReply(corkExchange, corkReply);
}
function writeProblemCorked(): void {
  writeProblem(corkExchange, corkFailure, corkDetail, corkClose);
}

function writeReply(ex: Exchange, r: ReplyEnvelope): void {
  const res = ex.res;
  res.writeStatus(STATUS_LINES[r.status]!);
  const h = r.headers;
  let reportedLength = -1;
  let skipNamed: Set<string> | undefined;
  for (let i = 0; i < h.length; i += 2) {
    if (h[i]!.toLowerCase() === 'connection') skipNamed = connectionNamed(h[i + 1]!);
  }
  for (let i = 0; i < h.length; i += 2) {
    const name = h[i]!;
    const lower = name.toLowerCase();
    if (REPLY_HEADER_SKIP.has(lower) || skipNamed?.has(lower)) {
      if (lower === 'content-length' && CONTENT_LENGTH_RE.test(h[i + 1]!)) reportedLength = Number(h[i + 1]);
      continue;
    }
    res.writeHeader(name, h[i + 1]!);
  }
  res.writeHeader('x-request-id', ex.requestId);
  const status = r.status;
  if (ex.method === 'HEAD') {
    // A HEAD response has no body but may say how long the GET body is (RFC 9110 §9.3.2).
    endHead(res, reportedLength, false);
  } else if (status === 204 || status === 304) {
    // No body and no Content-Length (RFC 9110 §8.6, §15.4.5).
    res.endWithoutBody();
  } else {
    res.end(r.body);
  }
}

function writeProblem(ex: Exchange, code: FailureCode, detail: string, close: boolean): void {
  const status = FAILURES[code];
  const body = problemJson({ status, code, detail, subject: ex.subject || undefined, requestId: ex.requestId || undefined });
  const res = ex.res;
  res.writeStatus(STATUS_LINES[status]!);
  res.writeHeader('content-type', PROBLEM_CONTENT_TYPE);
  if (ex.requestId) res.writeHeader('x-request-id', ex.requestId);
  if (ex.method === 'HEAD') endHead(res, Buffer.byteLength(body), close);
  else res.end(body, close);
}

/**
 * Ends a HEAD response, announcing `length` when known (≥ 0). In uWS v20.30,
 * endWithoutBody(n) with n > 0 leaves the response pending (the connection is
 * then lost), endWithoutBody(0) writes its own Content-Length, and any
 * non-number writes a bogus one; only the argument-less form is safe. Without
 * its close flag, `close` becomes a Connection: close header the client honours.
 */
function endHead(res: HttpResponse, length: number, close: boolean): void {
  if (length >= 0) res.writeHeader('content-length', String(length));
  if (close) res.writeHeader('connection', 'close');
  res.endWithoutBody();
}

function connectionNamed(value: string): Set<string> {
  return new Set(value.split(',').map((t) => t.trim().toLowerCase()).filter(Boolean));
}

/**
 * Owns request handling for one gateway: the uWS route handler, body
 * buffering, and the reply handler the mux calls back.
 */
export class HttpFront implements ReplyHandler<Exchange> {
  /** Requests accepted and not yet answered or aborted. */
  inFlight = 0;
  /** Set while connected to NATS. */
  link: NatsLink | undefined = undefined;
  /** Set when shutting down: new requests get 503. */
  closing = false;
  private readonly trusted: BlockList | undefined;
  private readonly emptyBody = Buffer.alloc(0);

  constructor(private readonly opts: HttpFrontOptions) {
    if (opts.trustedProxies.length > 0) {
      const list = new BlockList();
      for (const cidr of opts.trustedProxies) {
        const [addr, bits] = cidr.split('/') as [string, string | undefined];
        const family = isIPv6(addr) ? 'ipv6' : 'ipv4';
        if (bits === undefined) list.addAddress(addr, family);
        else list.addSubnet(addr, Number(bits), family);
      }
      this.trusted = list;
    }
  }

  /** The uWS route handler for every method and path. */
  readonly handle = (res: HttpResponse, req: HttpRequest): void => {
    const ex = new Exchange(res);
    ex.method = req.getCaseSensitiveMethod();
    ex.path = req.getUrl();
    ex.query = req.getQuery() ?? '';
    collecting = ex;
    req.forEach(collectHeader);
    this.inFlight++;
    res.onAborted(() => this.onAbort(ex));
    try {
      this.start(ex);
    } catch (error) {
      this.internalError(ex, error);
    }
  };

  private start(ex: Exchange): void {
    const opts = this.opts;
    if (ex.requestId === '') ex.requestId = nuid.next();

    // Framing problems first: the connection cannot be trusted after these, so close it.
    if (ex.lengthConflict) return this.fail(ex, 'bad-request', 'conflicting or malformed Content-Length', true);
    let chunked = false;
    if (ex.transferEncoding !== undefined) {
      const codings = ex.transferEncoding.toLowerCase().split(',').map((c) => c.trim());
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

    if (this.closing) return this.fail(ex, 'shutting-down', 'the gateway is shutting down', hasBody);
    const link = this.link;
    if (link === undefined) return this.fail(ex, 'nats-unavailable', `not connected to NATS, cannot reach ${subject}`, hasBody);
    const limit = this.bodyLimit(link);
    if (ex.contentLength > limit) {
      return this.fail(ex, 'body-too-large', `request body of ${ex.contentLength} bytes exceeds the limit of ${limit} bytes`, true);
    }
    if (!hasBody) {
      ex.body = this.emptyBody;
      return this.dispatch(ex, link);
    }
    if (chunked) ex.chunks = [];
    else ex.body = Buffer.allocUnsafe(ex.contentLength);
    ex.res.onData((chunk, isLast) => this.onData(ex, chunk, isLast));
  }

  /** Largest body this request may carry: --max-body, and room for the envelope within max_payload. */
  private bodyLimit(link: NatsLink): number {
    return Math.min(this.opts.maxBodyBytes, link.maxPayload - this.opts.maxHeaderBytes - 1024);
  }

  private onData(ex: Exchange, chunk: ArrayBuffer, isLast: boolean): void {
    if (ex.done) return;
    const n = chunk.byteLength;
    if (ex.chunks !== undefined) {
      const link = this.link;
      const limit = link === undefined ? this.opts.maxBodyBytes : this.bodyLimit(link);
      if (ex.received + n > limit) {
        // Stop reading: answer now and close, rather than buffer the rest.
        return this.failCorked(ex, 'body-too-large', `chunked request body exceeds the limit of ${limit} bytes`, true);
      }
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
    const link = this.link;
    if (link === undefined) return this.failCorked(ex, 'nats-unavailable', `not connected to NATS, cannot reach ${ex.subject}`, false);
    try {
      this.dispatch(ex, link);
    } catch (error) {
      this.internalError(ex, error);
    }
  }

  private dispatch(ex: Exchange, link: NatsLink): void {
    const res = ex.res;
    const remote = formatAddress(res.getRemoteAddress());
    const headers = ex.headers;
    let scheme = 'http';
    let host = ex.host;
    let forwardedFor = remote;
    if (ex.connectionTokens !== undefined) stripConnectionNamed(headers, ex.connectionTokens);
    // The body travels whole, so its length is always known: a chunked
    // upload reaches the service with a Content-Length instead.
    if (ex.contentLength >= 0) headers.push('content-length', String(ex.body!.length));
    // X-Forwarded-*: a trusted proxy's values are extended, anyone else's replaced.
    if (this.trusted !== undefined && this.trusted.check(remote, isIPv6(remote) ? 'ipv6' : 'ipv4')) {
      if (ex.forwardedFor !== undefined) forwardedFor = ex.forwardedFor + ', ' + remote;
      if (ex.forwardedProto === 'https' || ex.forwardedProto === 'http') scheme = ex.forwardedProto;
      if (ex.forwardedHost !== undefined) host = ex.forwardedHost;
    }
    headers.push('x-forwarded-for', forwardedFor, 'x-forwarded-proto', scheme, 'x-forwarded-host', host, 'x-request-id', ex.requestId);
    const envelope: RequestEnvelope = {
      v: PROTOCOL_VERSION,
      id: ex.requestId,
      method: ex.method,
      path: ex.path,
      query: ex.query,
      headers,
      body: ex.body!,
      remote,
      scheme,
      host,
      root: this.opts.rootSubject,
      subject: ex.subject,
      timeoutMs: this.opts.timeoutMs,
    };
    const payload = encodeRequest(envelope);
    ex.body = undefined;
    if (payload.length > link.maxPayload) {
      return this.failCorked(ex, 'body-too-large', `request of ${payload.length} bytes exceeds the NATS max_payload of ${link.maxPayload} bytes`, false);
    }
    link.mux.send(ex.subject, payload, ex);
  }

  private onAbort(ex: Exchange): void {
    ex.aborted = true;
    if (ex.done) return;
    ex.done = true;
    this.inFlight--;
    this.link?.mux.cancel(ex);
  }

  // ReplyHandler: called by the mux outside any uWS callback, hence cork().

  onReply(ex: Exchange, data: Uint8Array): void {
    if (ex.done) return;
    const reply = decodeReply(data);
    if (typeof reply === 'string') {
      this.opts.onEvent?.({ type: 'bad-reply', subject: ex.subject, reason: reply, requestId: ex.requestId });
      return this.failCorked(ex, 'bad-reply', `invalid reply from ${ex.subject}: ${reply}`, false);
    }
    this.finish(ex);
    corkExchange = ex;
    corkReply = reply;
    ex.res.cork(writeReplyCorked);
  }

  onNoResponders(ex: Exchange): void {
    this.failCorked(ex, 'no-responders', `no service is subscribed to ${ex.subject}`, false);
  }

  onTimeout(ex: Exchange): void {
    this.failCorked(ex, 'timeout', `no reply from ${ex.subject} within ${this.opts.timeoutMs} ms`, false);
  }

  onPublishFailed(ex: Exchange, error: unknown): void {
    this.failCorked(ex, 'nats-unavailable', `could not publish to ${ex.subject}: ${(error as Error).message}`, false);
  }

  onConnectionLost(ex: Exchange): void {
    this.failCorked(ex, 'nats-connection-lost', `connection to NATS lost while waiting for ${ex.subject}`, false);
  }

  private finish(ex: Exchange): void {
    ex.done = true;
    this.inFlight--;
  }

  /** Answers with a problem from inside the route handler (already corked). */
  private fail(ex: Exchange, code: FailureCode, detail: string, close: boolean): void {
    if (ex.done) return;
    this.finish(ex);
    if (!ex.aborted) writeProblem(ex, code, detail, close);
  }

  /** Answers with a problem from any other callback. */
  private failCorked(ex: Exchange, code: FailureCode, detail: string, close: boolean): void {
    if (ex.done) return;
    this.finish(ex);
    if (ex.aborted) return;
    corkExchange = ex;
    corkFailure = code;
    corkDetail = detail;
    corkClose = close;
    ex.res.cork(writeProblemCorked);
  }

  private internalError(ex: Exchange, error: unknown): void {
    this.opts.onEvent?.({ type: 'internal-error', error, requestId: ex.requestId });
    this.failCorked(ex, 'internal', 'internal gateway error', true);
  }
}

/** Removes the fields a Connection header names (RFC 9110 §7.6.1). */
function stripConnectionNamed(headers: string[], tokens: string): void {
  const named = connectionNamed(tokens);
  for (let i = headers.length - 2; i >= 0; i -= 2) {
    if (named.has(headers[i]!)) headers.splice(i, 2);
  }
}
