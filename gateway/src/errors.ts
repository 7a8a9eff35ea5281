/**
 * Every way a gateway request can fail, with its HTTP status: one table, so a
 * failure always gets the same answer. Clients receive an RFC 9457 problem
 * body naming the subject and the reason (see problem.ts in the protocol).
 */
export const FAILURES = {
  /** Nobody is subscribed to the subject. */
  'no-responders': 503,
  /** The gateway has no NATS connection (starting, or reconnecting). */
  'nats-unavailable': 503,
  /** The connection dropped while the request waited for its reply. */
  'nats-connection-lost': 503,
  /** No reply within --timeout. */
  timeout: 504,
  /** The reply broke the protocol: not msgpack, bad version, status or header. */
  'bad-reply': 502,
  /** A streamed exchange broke before the response head: the service went away (NATS no-responders on its inbox), cancelled, or broke the protocol. After the head, the connection is closed instead. */
  'stream-broken': 502,
  /** A stream had no message from its service for --stream-idle-timeout while it was the service's turn. */
  'stream-idle': 504,
  /** The reply carried NATS's service error headers: its code becomes the status when it is one (400–599), else 502. */
  'service-error': 502,
  /** Handling the reply failed inside the gateway (logged with its cause); the request is released. */
  'reply-failed': 502,
  /** Streamed uploads read past their pause hold more than --max-upload-buffer (upload-overrun.ts): the upload that took it there is cut off. */
  'upload-buffer-full': 503,
  /** Body larger than --max-body (or than NATS max_payload allows). */
  'body-too-large': 413,
  /** Path with too many segments, or a subject too long. */
  'uri-too-long': 414,
  /** Request headers larger than --max-header-size. */
  'headers-too-large': 431,
  /** Malformed request: bad percent-encoding, conflicting Content-Length. */
  'bad-request': 400,
  /** A transfer coding other than chunked. */
  'unsupported-transfer-coding': 501,
  /** An override's backends are all down, ejected or behind open breakers. */
  'no-backend': 503,
  /** An override's backend refused, reset, or answered garbage (on every try). */
  'upstream-error': 502,
  /** An override's backend did not answer in time. */
  'upstream-timeout': 504,
  /** Every connection of the gateway's own pool to an override's backends stayed busy past the try's limit. */
  'upstream-busy': 503,
  /** A method the gateway does not forward on this path (CONNECT to HTTP backends). */
  'unsupported-method': 501,
  /** A WebSocket upgrade on a path the gateway cannot serve WebSockets on (an HTTP override or a raw NATS route). */
  'ws-unsupported': 501,
  /** A WebSocket upgrade beyond --ws-max-connections. */
  'ws-limit': 503,
  /** A CORS preflight the route's cors policy does not allow (origin, method or header). */
  'cors-refused': 403,
  /** A method the route's limits policy does not allow; the response says which are (Allow). */
  'method-not-allowed': 405,
  /** No credentials, or invalid ones, for a route with an auth policy (WWW-Authenticate says which kind). */
  unauthorized: 401,
  /** Valid credentials without a scope or claim the route's auth policy requires. */
  forbidden: 403,
  /** The keys to check a token with (a JWKS URL) could not be fetched. */
  'auth-unavailable': 503,
  /** Over the route's rate limit (Retry-After says when to try again). */
  'rate-limited': 429,
  /** The gateway is shutting down. */
  'shutting-down': 503,
  /** An unexpected error inside the gateway (a bug); logged with its stack. */
  internal: 500,
} as const;

export type FailureCode = keyof typeof FAILURES;
