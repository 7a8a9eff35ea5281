/**
 * One HTTP request from arrival to response, whichever way it goes (NATS or
 * an HTTP override). Filled from uWS while the handler runs, since the
 * HttpRequest is gone when it returns.
 */
import type { Span } from '@opentelemetry/api';
import type { HttpResponse } from 'uWebSockets.js';
import { formatAddress } from './uws.js';
import type { FailureCode } from '../errors.js';
import type { RawRoute } from '../routes/raw-route.js';
import type { RouteRuntime } from '../routes/route.js';
import type { PendingRequest } from '../nats/reply-mux.js';
import type { NatsStream } from '../nats/nats-stream.js';
import type { UpgradeRequest } from '../ws/ws-front.js';
import type { WsSession } from '../ws/ws-session.js';
import type { EffectivePolicy } from '../policy/route-policy.js';
import type { AuthOutcome, Identity } from '../policy/auth.js';
import type { BodyCompressor, Encoding } from '../policy/compression.js';

export class Exchange implements PendingRequest {
  muxKey = '';
  deadline = 0;
  method = '';
  /** The path as the client sent it (uWS's getUrl). */
  rawPath = '';
  rawQuery = '';
  /** The path as used from here on: dot segments removed, raw non-ASCII percent-encoded (request-path.ts). */
  path = '';
  query = '';
  /** Forwardable request headers, flattened; hop-by-hop and rewritten ones are kept out. */
  headers: string[] = [];
  headerBytes = 0;
  host = '';
  /** Host fields seen: more than one is a 400. */
  hostCount = 0;
  /** The first header whose value held bytes that are not UTF-8. */
  badHeaderValue: string | undefined = undefined;
  /** Forwarded, X-Real-IP, X-Forwarded-Port, X-Forwarded-Prefix as received, flattened; forwarded only from trusted proxies. */
  forwardedOther: string[] | undefined = undefined;
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
  /** Largest body this request may carry. */
  bodyLimit = 0;
  /** Set when an override sends this request to HTTP backends (the version it started with). */
  route: RouteRuntime | undefined = undefined;
  /** The raw NATS route it goes by (body as the NATS payload, request line as NATS headers), if any. */
  raw: RawRoute | undefined = undefined;
  /** Set for a WebSocket upgrade request: what the handshake needs once the service accepts. */
  upgrade: UpgradeRequest | undefined = undefined;
  /** The WebSocket session the upgrade became (its HTTP exchange is then done). */
  session: WsSession | undefined = undefined;
  /** The v2 stream of this exchange, when its request body or its response streams over NATS. */
  stream: NatsStream | undefined = undefined;
  /** The client's traceparent field, and how many it sent (more than one is invalid). */
  traceparentIn: string | undefined = undefined;
  traceparentCount = 0;
  /** The client's tracestate fields, joined. */
  tracestateIn: string | undefined = undefined;
  /** clientAddress()'s cache ('' until first read). */
  private remote = '';
  /** The trace this request belongs to (32 hex digits), or '' when it carries no trace context (trace-start.ts). */
  traceId = '';
  /** The traceparent sent on to the service or backend, or ''. */
  traceparent = '';
  tracestate: string | undefined = undefined;
  /** The gateway's span for this request, when a tracer provider records one. */
  span: Span | undefined = undefined;
  /** The gateway's failure code, when it answered with a problem or cut a stream off. */
  failure: FailureCode | undefined = undefined;
  /** Why a stream was cut off, for the access log. */
  streamFailure: string | undefined = undefined;
  /** The proxying in progress, for the override path. */
  proxy: { clientGone(): void } | undefined = undefined;
  /** When the request arrived (performance.now(), ms), for latency. */
  startedAt = 0;
  /** Status sent to the client (0 until known). */
  status = 0;
  /** Body bytes sent to the client. */
  bytesOut = 0;
  /** The backend that answered, for the override path (logs). */
  upstream = '';
  /** Writing the response head has begun: a failure from here on can only close the connection. */
  responding = false;
  /** The client went away; nothing may be written to `res` any more. */
  aborted = false;
  /** A response was written (or the exchange was abandoned). */
  done = false;
  /** How long the gateway waits for the response (--timeout, or the route's limits). */
  timeoutMs = 0;
  /** The policies of this request's path, as they were when it arrived. */
  policy: EffectivePolicy | undefined = undefined;
  /** Response fields the policies add to whatever answers (CORS, RateLimit, challenges), flattened. */
  extraHeaders: string[] | undefined = undefined;
  /** The verified identity (auth policy). */
  identity: Identity | undefined = undefined;
  /** A JWT being verified: the request is sent on once it is. */
  authPending: Promise<AuthOutcome> | undefined = undefined;
  /** The request is complete and waits only for authPending. */
  dispatchWaiting = false;
  /** The encoding the client takes, when the compression policy applies, and its Accept-Encoding. */
  encoding: Encoding | undefined = undefined;
  acceptEncoding: string | undefined = undefined;
  /** Compresses a streamed response body as it goes. */
  compressor: BodyCompressor | undefined = undefined;

  constructor(readonly res: HttpResponse) {}

  /**
   * The client's address, read from uWS once and kept: each uWS read is a
   * getpeername() system call and a new ArrayBuffer (2–3 µs a request).
   */
  clientAddress(): string {
    if (this.remote === '') this.remote = formatAddress(this.res.getRemoteAddress());
    return this.remote;
  }
}
