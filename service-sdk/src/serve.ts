/**
 * serve(): mounts a plain Node `(req, res)` handler on a NATS subject.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { connect, createInbox, headers as natsHeaders, nuid, type Msg, type MsgHdrs, type NatsConnection, type NodeConnectionOptions, type Subscription } from '@nats-io/transport-node';
import {
  decodeFrame,
  decodeRequest,
  DEFAULT_QUEUE,
  encodeReply,
  InboxKeys,
  isNoResponders,
  isLastMessage,
  isValidRoot,
  PROBE_INTERVAL_MS,
  PROBLEM_CONTENT_TYPE,
  problemJson,
  ProtocolError,
  PROTOCOL_VERSION,
  STREAM_VERSION,
  type RequestEnvelope,
} from './protocol/index.js';
import { abandon, createExchange, requestUrl } from './node-adapter.js';
import { Call, type CallHost } from './call.js';
import { HANDOFF_PREFIX, MountRegistry } from './mounts.js';
import { MicroResponder } from './micro-service.js';
import { guardConnection } from './nats-guard.js';
import { endServiceSpan, startServiceSpan } from './service-span.js';
import { TracerLookup } from './tracing.js';
import { context } from '@opentelemetry/api';
import { ServiceWebSocket, type SocketHost } from './websocket.js';
import { CAP_WS, DEFAULT_STREAM_WINDOW, TOPIC_BINARY_HEADER, topicSubject } from './protocol/index.js';
import { defaultMicroName, isMicroName, isSemver, MAX_SERVICE_ERROR_TEXT, SERVICE_ERROR_CODE_HEADER, SERVICE_ERROR_HEADER } from './protocol/micro.js';

/** A plain Node request listener, as `http.createServer()` takes. Express and Koa's `app.callback()` are ones. */
export type RequestListener = (req: IncomingMessage, res: ServerResponse) => unknown;

/** Anything with pino's calling convention: `(object, message)`. */
export interface ServiceLogger {
  error(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
}

export const DEFAULT_SERVICE_TIMEOUT_MS = 30_000;

/** Called for every accepted WebSocket: the `ws` package's `wss.on('connection', …)` callback. */
export type ConnectionListener = (ws: ServiceWebSocket, req: IncomingMessage) => unknown;

/** What `verify` answers to turn an upgrade down: the client gets this response instead of a WebSocket. */
export interface UpgradeRejection {
  status: number;
  headers?: Record<string, string>;
  body?: string | Buffer;
}

export interface WebSocketOptions {
  onConnection: ConnectionListener;
  /**
   * Decides on an upgrade before it is accepted: `true` (or nothing) accepts,
   * `false` rejects with 403, an {@link UpgradeRejection} with its status
   * and body. May return a promise (within the gateway's timeout).
   */
  verify?: (req: IncomingMessage) => boolean | UpgradeRejection | undefined | Promise<boolean | UpgradeRejection | undefined>;
  /** Picks one of the subprotocols the client offered (`Sec-WebSocket-Protocol`), or false for none, as `ws`'s handleProtocols. */
  handleProtocols?: (protocols: Set<string>, req: IncomingMessage) => string | false;
  /** Most bytes `send()` may queue for a client that does not keep up before it is closed with 1013 (default 8 MiB). */
  maxBufferedBytes?: number;
  /** Largest message taken from a client (default 64 MiB; the gateway's --ws-max-message is usually lower). */
  maxMessageBytes?: number;
}

export interface ServeOptions {
  /** A NATS connection to use (left open by drain), or server URL(s) / options to connect with (closed by drain). */
  nats: NatsConnection | string | string[] | NodeConnectionOptions;
  /** Mount subject, e.g. `api.foo`: this subject and every subject below it. */
  subject: string;
  /**
   * Queue group (default `natsgw`). Copies of a service share the load through
   * it. Keep the default: only services in the same group are protected from
   * running one request twice when their mounts overlap.
   */
  queue?: string;
  /**
   * What `req.url` holds: `'full'` (default) the path and query exactly as the
   * client sent them (`/foo/users/1?a=1`); `'relative'` the part below the
   * mount (`/users/1?a=1` for mount `api.foo` under root `api`).
   */
  url?: 'full' | 'relative';
  /** Give up on a handler that has not ended its response after this long, answering 504 (default 30 s, or the gateway's timeout if shorter). */
  timeoutMs?: number;
  /** Where errors go (default: JSON lines on stderr). */
  logger?: ServiceLogger;
  /** Mount announcement interval in ms (default 5000). */
  heartbeatMs?: number;
  /** How long to collect existing mounts at start, in ms (default 100). */
  discoveryMs?: number;
  /**
   * Longest wait, in ms, for the running mounts above this one (`api.foo` for
   * `api.foo.bar`) to acknowledge it before serve() resolves (default 2000).
   * Once they have, none of them runs a request meant for this mount.
   */
  readyTimeoutMs?: number;
  /**
   * Called once when the NATS connection closes for good while the service
   * is not draining (nats.js gives up after repeated authorization errors: a
   * revoked user, expired or rotated credentials), so it will never serve
   * again. Default, when serve() opened the connection: log one line and
   * exit the process with code 1, so a supervisor restarts it. Default for a
   * connection you passed in: log the line; the connection is yours.
   */
  onConnectionClosed?: (err: Error) => void;
  /**
   * The mount's name as a NATS micro service (`nats micro ls`): letters,
   * digits, `-` and `_`. Default: the mount subject with dots as dashes
   * (`api.foo` → `api-foo`).
   */
  name?: string;
  /** Its version, semver (default `0.0.0`). */
  version?: string;
  /** Its description (default: "natsgw mount <subject>"). */
  description?: string;
  /** Its metadata; the SDK adds `natsgw.mount` and `natsgw.protocol`. */
  metadata?: Record<string, string>;
  /** Answer NATS's service API (`$SRV.PING|INFO|STATS`); default true. Its NATS user then needs to subscribe to `$SRV.>`. */
  serviceApi?: boolean;
  /**
   * Accept WebSockets on this mount (PROTOCOL.md §14): the `ws` package's
   * connection callback, or options with it. Without it, an upgrade request
   * reaches the HTTP handler like any GET (so it answers what it answers,
   * and the client gets that instead of a WebSocket).
   */
  websocket?: ConnectionListener | WebSocketOptions;
}

export interface Service {
  /** The mount subject. */
  readonly subject: string;
  /** Requests being handled (or handed off) right now. */
  readonly inFlight: number;
  /**
   * Stops taking new requests, finishes those in flight, then closes the NATS
   * connection if serve() opened it. Resolves when done.
   */
  drain(): Promise<void>;
  /** Resolves with the reason if the connection closes for good while not draining (see `onConnectionClosed`). */
  readonly closed: Promise<Error>;
  /** Its name and instance id as a NATS micro service. */
  readonly micro: { readonly name: string; readonly id: string; readonly version: string };
  /** WebSocket connections open on this instance. */
  readonly websockets: ReadonlySet<ServiceWebSocket>;
  /**
   * Publishes a message to every connection subscribed to `topic` (named
   * under the mount, as ws.subscribe() names it), on every gateway. Text for
   * a string unless `binary`.
   */
  broadcast(topic: string, data: string | Uint8Array, options?: { binary?: boolean }): void;
}

const consoleLogger: ServiceLogger = {
  error: (obj, msg) => console.error(JSON.stringify({ level: 'error', msg, ...serialise(obj) })),
  warn: (obj, msg) => console.error(JSON.stringify({ level: 'warn', msg, ...serialise(obj) })),
  info: (obj, msg) => console.error(JSON.stringify({ level: 'info', msg, ...serialise(obj) })),
};
function serialise(obj: object): object {
  const o = { ...obj } as Record<string, unknown>;
  if (o.err instanceof Error) o.err = { message: o.err.message, stack: o.err.stack };
  return o;
}

function isConnection(x: ServeOptions['nats']): x is NatsConnection {
  return typeof (x as NatsConnection).publish === 'function' && typeof (x as NatsConnection).subscribe === 'function';
}

/**
 * Serves `handler` on `subject` and every subject below it, in a queue group,
 * until `drain()`.
 * @example
 *   const app = express();
 *   app.get('/foo/hello', (req, res) => res.send('hi'));
 *   const service = await serve(app, { nats: 'nats://127.0.0.1:4222', subject: 'api.foo' });
 *   process.once('SIGTERM', () => service.drain().then(() => process.exit(0)));
 */
export async function serve(handler: RequestListener, options: ServeOptions): Promise<Service> {
  if (!isValidRoot(options.subject)) {
    throw new TypeError(`serve: subject ${JSON.stringify(options.subject)} must be tokens of A-Z a-z 0-9 - _ separated by dots`);
  }
  checkMicroOptions(options);
  const owned = !isConnection(options.nats);
  const nc = isConnection(options.nats)
    ? options.nats
    : await connect(typeof options.nats === 'string' || Array.isArray(options.nats) ? { servers: options.nats, name: `natsgw-service ${options.subject}` } : options.nats);
  const service = new ServiceRuntime(handler, nc, owned, options);
  await service.start();
  return service;
}

function checkMicroOptions(o: ServeOptions): void {
  if (o.name !== undefined && !isMicroName(o.name)) throw new TypeError(`serve: name ${JSON.stringify(o.name).slice(0, 80)} must be 1-256 of A-Z a-z 0-9 - _ (a NATS micro service name)`);
  if (o.version !== undefined && !isSemver(o.version)) throw new TypeError(`serve: version ${JSON.stringify(o.version).slice(0, 80)} must be a semantic version such as 1.2.3`);
  if (o.description !== undefined && typeof o.description !== 'string') throw new TypeError('serve: description must be a string');
  if (o.metadata !== undefined) {
    if (o.metadata === null || typeof o.metadata !== 'object' || Array.isArray(o.metadata)) throw new TypeError('serve: metadata must be an object of strings');
    for (const [k, v] of Object.entries(o.metadata)) if (typeof v !== 'string') throw new TypeError(`serve: metadata ${JSON.stringify(k).slice(0, 80)} must be a string`);
  }
}

/** Endpoint indexes of the micro service: the mount subject itself, and everything below it. */
const MOUNT_ENDPOINT = 0;
const TREE_ENDPOINT = 1;

/**
 * A hand-off carrying this header is relayed: the mount that took the
 * request passes every message the deeper mount sends to the reply subject
 * it listens on, so the deeper mount may stream. Without it (an older SDK
 * handing off) exactly one reply is expected.
 */
const RELAY_HEADER = 'Natsgw-Relay';

/** A no-op response sink: an upgrade request's `req` has no response of its own. */
const NO_SINK = { onWrite: () => true, onEnd: () => undefined, onBodyRead: () => undefined };
const WS_GOING_AWAY = 1001;

/** A relayed stream with no message for this long is given up (the deeper mount probes every 2 s). */
const RELAY_IDLE_MS = 30_000;

class ServiceRuntime implements Service, CallHost, SocketHost {
  readonly subject: string;
  private readonly queue: string;
  private readonly relativeUrl: boolean;
  private readonly timeoutMs: number;
  private readonly logger: ServiceLogger;
  private readonly onConnectionClosed: ((err: Error) => void) | undefined;
  private readonly registry: MountRegistry;
  private readonly subs: Subscription[] = [];
  private streamSub: Subscription | undefined;
  private readonly calls = new Set<Call>();
  /** Calls that stream, by the key of their private inbox. */
  private readonly streams = new Map<string, Call>();
  /** Hand-offs whose answers are being relayed, by the key of their relay inbox. */
  private readonly relays = new Map<string, (msg: Msg) => void>();
  private readonly keys = new InboxKeys();
  private readonly streamPrefix: string;
  private forwarding = 0;
  private timer: NodeJS.Timeout | undefined;
  private draining: Promise<void> | undefined;
  private reportClosed!: (err: Error) => void;
  readonly closed = new Promise<Error>((resolve) => (this.reportClosed = resolve));
  private idle: (() => void) | undefined;
  readonly micro: { readonly name: string; readonly id: string; readonly version: string };
  private readonly responder: MicroResponder | undefined;
  private readonly tracers = new TracerLookup('@natsgw/service-sdk');
  private readonly websocket: WebSocketOptions | undefined;
  /** Open WebSocket sessions, by the key of their private inbox. */
  private readonly sockets = new Map<string, ServiceWebSocket>();
  readonly websockets = new Set<ServiceWebSocket>();

  constructor(
    private readonly handler: RequestListener,
    private readonly nc: NatsConnection,
    private readonly ownsConnection: boolean,
    options: ServeOptions,
  ) {
    this.subject = options.subject;
    this.queue = options.queue ?? DEFAULT_QUEUE;
    this.relativeUrl = options.url === 'relative';
    this.timeoutMs = options.timeoutMs ?? DEFAULT_SERVICE_TIMEOUT_MS;
    this.logger = options.logger ?? consoleLogger;
    this.onConnectionClosed = options.onConnectionClosed;
    this.websocket = typeof options.websocket === 'function' ? { onConnection: options.websocket } : options.websocket;
    // Under the connection's inbox prefix, which NATS permissions let it read.
    this.streamPrefix = createInbox((nc as { options?: { inboxPrefix?: string } }).options?.inboxPrefix) + '.';
    const id = nuid.next();
    this.micro = { name: options.name ?? defaultMicroName(this.subject), id, version: options.version ?? '0.0.0' };
    this.responder =
      options.serviceApi === false
        ? undefined
        : new MicroResponder(
            nc,
            { ...this.micro, metadata: { ...options.metadata, 'natsgw.mount': this.subject, 'natsgw.protocol': String(STREAM_VERSION) } },
            options.description ?? `natsgw mount ${this.subject}`,
            [
              { name: 'mount', subject: this.subject, queue: this.queue },
              { name: 'tree', subject: this.subject + '.>', queue: this.queue },
            ],
            (err, subject) => this.safeLog('error', { err, subject }, 'failed to answer a service API request'),
          );
    this.registry = new MountRegistry(nc, this.subject, id, {
      heartbeatMs: options.heartbeatMs ?? 5000,
      discoveryMs: options.discoveryMs ?? 100,
      readyTimeoutMs: options.readyTimeoutMs ?? 2000,
      onRefused: (subject, why) => this.safeLog('warn', { subject, why }, 'ignored a mount message'),
    });
  }

  get inFlight(): number {
    return this.calls.size + this.forwarding + this.sockets.size;
  }

  get maxPayload(): number {
    return this.nc.info?.max_payload ?? 1024 * 1024;
  }

  async start(): Promise<void> {
    // No message may stop this connection's reader (nats-guard.ts); on a
    // connection the caller passed in, this protects their subscriptions too.
    guardConnection(this.nc, {
      onCallbackError: (subject, err) => this.safeLog('error', { subject, err }, 'a NATS message callback threw; the message was dropped, reading goes on'),
      onMalformedHeaders: (subject, droppedLines) => this.safeLog('warn', { subject, droppedLines }, 'a NATS message had header lines that do not parse; they were dropped'),
    });
    // Learn the deeper mounts before taking requests, so none is run here by mistake.
    await this.registry.start();
    const onRequest = (_err: Error | null, msg: Msg) => this.contained(msg, false);
    this.subs.push(this.nc.subscribe(this.subject, { queue: this.queue, callback: onRequest }));
    this.subs.push(this.nc.subscribe(this.subject + '.>', { queue: this.queue, callback: onRequest }));
    this.subs.push(this.nc.subscribe(HANDOFF_PREFIX + this.subject, { queue: this.queue, callback: (_e, msg) => this.contained(msg, true) }));
    // Frames of open streams, and no-responders for what they sent.
    this.streamSub = this.nc.subscribe(this.streamPrefix + '*', { callback: (_e, msg) => this.onStreamMessage(msg) });
    this.responder?.start();
    await this.nc.flush();
    // Announce only once subscribed: whoever hands us a request finds us
    // listening. Resolve only once the mounts above know us, so "the most
    // specific mount runs it" holds from the moment serve() returns.
    const unacknowledged = await this.registry.announceUp();
    if (unacknowledged.length > 0) {
      this.safeLog(
        'warn',
        { subject: this.subject, instances: unacknowledged },
        'mounts above this one did not acknowledge it in time; they may still run some of its requests until they hear its next announcement',
      );
    }
    this.timer = setInterval(() => this.expire(), Math.min(1000, Math.max(10, this.timeoutMs / 20)));
    this.timer.unref();
    void this.watchClosed();
  }

  private async watchClosed(): Promise<void> {
    const err = (await this.nc.closed()) ?? new Error('the connection was closed');
    // Open WebSockets end here too (their clients get 1011 from the gateway's probes).
    for (const socket of [...this.sockets.values()]) socket.end(1006, 'the NATS connection closed', false);
    if (this.draining !== undefined) return;
    const exiting = this.onConnectionClosed === undefined && this.ownsConnection;
    this.safeLog('error', { err, subject: this.subject }, `NATS connection closed for good (${err.message}); ${this.subject} can no longer be served${exiting ? '; exiting' : ''}`);
    this.reportClosed(err);
    if (this.onConnectionClosed !== undefined) this.onConnectionClosed(err);
    else if (exiting) process.exit(1);
  }

  log(level: 'error' | 'warn', obj: object, msg: string): void {
    this.safeLog(level, obj, msg);
  }

  /** Logs through the user's logger, which must not be able to throw into NATS's reader either. */
  private safeLog(level: 'error' | 'warn', obj: object, msg: string): void {
    try {
      this.logger[level](obj, msg);
    } catch {
      // nowhere left to report it
    }
  }

  /**
   * A request callback that cannot throw: it runs inside nats.js's socket
   * reader. Whatever goes wrong answers the request (500) when it has a
   * reply subject and nothing was answered yet.
   */
  private contained(msg: Msg, handedOff: boolean): void {
    try {
      this.onRequest(msg, handedOff);
    } catch (err) {
      this.safeLog('error', { err, subject: msg.subject }, 'failed to take a request');
      try {
        if (msg.reply) this.respondProblem(msg.reply, 500, 'internal', 'the service could not take the request', undefined, undefined);
      } catch {
        // the connection is gone; the gateway times the request out
      }
    }
  }

  private onRequest(msg: Msg, handedOff: boolean): void {
    const reply = msg.reply;
    if (!reply) return; // a publish, not a request: nobody to answer
    let env: RequestEnvelope;
    try {
      env = decodeRequest(msg.data);
    } catch (err) {
      const code = err instanceof ProtocolError ? err.code : 'bad-envelope';
      this.safeLog('warn', { subject: msg.subject, err }, 'rejected a request that is not a v1 envelope');
      this.respondProblem(reply, 400, code, (err as Error).message, msg.subject, undefined);
      this.responder?.record(this.endpointOf(msg.subject), 0, undefined);
      return;
    }
    // A hand-off is relayed message by message only when it says so (see RELAY_HEADER).
    const canStream = !handedOff || msg.headers?.get(RELAY_HEADER) === '1';
    if (handedOff && env.subject !== this.subject && !env.subject.startsWith(this.subject + '.')) {
      // A hand-off is for a subject of this mount; anything else was forged or misrouted.
      this.safeLog('warn', { subject: msg.subject, claimed: env.subject.slice(0, 200) }, 'rejected a hand-off for a subject outside this mount');
      this.respondProblem(reply, 400, 'bad-envelope', `hand-off for a subject outside ${this.subject}`, undefined, env.id);
      return;
    }
    if (!handedOff) {
      // Route on the subject NATS delivered, not on what the envelope claims.
      const subject = msg.subject;
      const deeper = this.registry.deeperMountFor(subject);
      if (deeper !== undefined) {
        this.handOff(reply, msg.data, env, deeper, subject);
        return;
      }
    }
    this.execute(reply, env, canStream);
  }

  /** A message on the stream inbox: a frame from the gateway for one call, no-responders for one it sent, or a relayed hand-off's answer. */
  private onStreamMessage(msg: Msg): void {
    try {
      const key = msg.subject.substring(this.streamPrefix.length);
      const call = this.streams.get(key);
      if (call === undefined) {
        const socket = this.sockets.get(key);
        if (socket !== undefined) return this.onSocketMessage(socket, msg);
        return this.relays.get(key)?.(msg); // a hand-off's answer; else over already, or a guess
      }
      if (isNoResponders(msg)) return call.onPeerGone();
      const frame = decodeFrame(msg.data);
      if (typeof frame === 'string') return call.broken(frame);
      call.onFrame(frame);
    } catch (err) {
      this.safeLog('error', { err, subject: msg.subject }, 'failed to handle a stream frame');
    }
  }

  // CallHost

  openStream(call: Call): string {
    call.key = this.keys.next();
    this.streams.set(call.key, call);
    return this.streamPrefix + call.key;
  }

  problem(call: Call, status: number, code: string, detail: string): void {
    if (call.done) return;
    call.status = status;
    if (status >= 500) call.failure ??= `${status} ${code}: ${detail}`;
    this.settle(call);
    this.respondProblem(call.reply, status, code, detail, call.env.subject, call.env.id, call.inbox || undefined);
  }

  /**
   * Passes a request to the more specific mount that owns it and relays what
   * it sends back, message by message, until the last one of its reply
   * (PROTOCOL.md §6). Replies go to a relay inbox of this service's own, so
   * "nobody received it" (no-responders) is still seen here and the request
   * can run elsewhere.
   */
  private handOff(reply: string, data: Uint8Array, env: RequestEnvelope, mount: string, subject: string): void {
    this.forwarding++;
    // The relay inbox is under the stream inbox prefix: streamSub receives it, no subscription per hand-off.
    const key = this.keys.next();
    const relay = this.streamPrefix + key;
    const firstTimeout = env.timeoutMs > 0 ? Math.min(env.timeoutMs, this.timeoutMs) : this.timeoutMs;
    const startedAt = performance.now();
    let first = true;
    let finished = false;
    const end = (): void => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      this.relays.delete(key);
      this.forwarding--;
      this.checkIdle();
    };
    const onTimeout = (): void => {
      if (finished) return;
      if (first) {
        // It may have run there: never run it again here.
        this.safeLog('warn', { subject, mount, requestId: env.id }, 'hand-off to a more specific mount failed');
        this.respondProblem(reply, 504, 'handoff-timeout', `mount ${mount} did not answer for ${subject}`, subject, env.id, undefined);
        this.responder?.record(this.endpointOf(subject), performance.now() - startedAt, `504 handoff-timeout: mount ${mount} did not answer`);
      }
      end();
    };
    let timer = setTimeout(onTimeout, firstTimeout);
    this.relays.set(key, (msg) => {
      if (finished) return;
      if (first && isNoResponders(msg)) {
        // Nobody received it, so it is safe to run elsewhere: the next best mount, or here.
        end();
        this.registry.forget(mount);
        const next = this.registry.deeperMountFor(subject);
        if (next !== undefined) this.handOff(reply, data, env, next, subject);
        else this.execute(reply, env, true);
        return;
      }
      first = false;
      // The deeper mount's private inbox rides along as the reply subject, so the gateway's frames go straight to it.
      this.publish(reply, msg.data, msg.reply || undefined);
      if (isLastMessage(msg.data)) return end();
      clearTimeout(timer);
      timer = setTimeout(onTimeout, RELAY_IDLE_MS);
    });
    const h = natsHeaders();
    h.set(RELAY_HEADER, '1');
    try {
      this.nc.publish(HANDOFF_PREFIX + mount, data, { reply: relay, headers: h });
    } catch (err) {
      this.safeLog('error', { err, subject }, 'could not hand a request off');
      this.respondProblem(reply, 503, 'handoff-failed', `could not hand the request for ${subject} to ${mount}`, subject, env.id, undefined);
      this.responder?.record(this.endpointOf(subject), performance.now() - startedAt, `503 handoff-failed: ${(err as Error).message}`);
      end();
    }
  }

  private onSocketMessage(socket: ServiceWebSocket, msg: Msg): void {
    if (isNoResponders(msg)) return socket.peerGone();
    const frame = decodeFrame(msg.data);
    if (typeof frame === 'string') return socket.broken(frame);
    try {
      socket.onFrame(frame);
    } catch (err) {
      // A listener threw (a 'message' handler): the app's bug, not the session's.
      this.safeLog('error', { err, subject: this.subject, requestId: socket.requestId }, 'a WebSocket event listener threw');
    }
  }

  /**
   * An upgrade request (PROTOCOL.md §14.2): verified, then accepted with a
   * 101 that names the socket's inbox and credit, then handed to the
   * connection listener.
   */
  private async upgrade(reply: string, env: RequestEnvelope, ws: WebSocketOptions): Promise<void> {
    this.forwarding++;
    const startedAt = performance.now();
    try {
      const url = requestUrl(env, this.subject, this.relativeUrl);
      const { req } = createExchange(env, url, NO_SINK);
      const verdict = ws.verify === undefined ? true : await ws.verify(req);
      if (verdict !== true && verdict !== undefined) {
        const r: UpgradeRejection = verdict === false ? { status: 403, body: 'Forbidden' } : verdict;
        const headers: string[] = [];
        for (const [k, v] of Object.entries(r.headers ?? {})) headers.push(k.toLowerCase(), String(v));
        if (!headers.includes('content-type')) headers.push('content-type', 'text/plain; charset=utf-8');
        const status = Number.isInteger(r.status) && r.status >= 200 && r.status <= 599 ? r.status : 500;
        this.publish(reply, encodeReply({ v: PROTOCOL_VERSION, status, headers, body: Buffer.from(r.body ?? '') }));
        this.responder?.record(this.endpointOf(env.subject), performance.now() - startedAt, status >= 500 ? `status ${status}` : undefined);
        return;
      }
      const offered = new Set(
        (req.headers['sec-websocket-protocol'] ?? '')
          .split(',')
          .map((p) => p.trim())
          .filter((p) => p !== ''),
      );
      const chosen = ws.handleProtocols !== undefined && offered.size > 0 ? ws.handleProtocols(offered, req) : false;
      const protocol = typeof chosen === 'string' && offered.has(chosen) ? chosen : '';
      const key = this.keys.next();
      const inbox = this.streamPrefix + key;
      const socket = new ServiceWebSocket(this, reply, inbox, this.subject, env.credit ?? DEFAULT_STREAM_WINDOW, protocol, env.id, {
        maxBufferedBytes: ws.maxBufferedBytes ?? 8 * 1024 * 1024,
        maxMessageBytes: ws.maxMessageBytes ?? 64 * 1024 * 1024,
      });
      this.sockets.set(key, socket);
      this.websockets.add(socket);
      this.publish(
        reply,
        encodeReply({ v: STREAM_VERSION, status: 101, headers: protocol === '' ? [] : ['sec-websocket-protocol', protocol], body: new Uint8Array(0), inbox, credit: DEFAULT_STREAM_WINDOW }),
        inbox,
      );
      this.responder?.record(this.endpointOf(env.subject), performance.now() - startedAt, undefined);
      ws.onConnection(socket, req);
    } catch (err) {
      this.safeLog('error', { err, subject: env.subject, requestId: env.id }, 'WebSocket upgrade failed');
      this.respondProblem(reply, 500, 'internal', 'the service could not accept the WebSocket', env.subject, env.id);
    } finally {
      this.forwarding--;
      this.checkIdle();
    }
  }

  // SocketHost

  socketEnded(socket: ServiceWebSocket): void {
    this.sockets.delete(socket.inbox.substring(this.streamPrefix.length));
    this.websockets.delete(socket);
    this.checkIdle();
  }

  broadcast(topic: string, data: string | Uint8Array, options?: { binary?: boolean }): void {
    const subject = topicSubject(this.subject + '.' + topic);
    const binary = options?.binary ?? typeof data !== 'string';
    const payload = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
    if (binary) {
      const h = natsHeaders();
      h.set(TOPIC_BINARY_HEADER, '1');
      this.nc.publish(subject, payload, { headers: h });
    } else this.nc.publish(subject, payload);
  }

  private execute(reply: string, env: RequestEnvelope, canStream: boolean): void {
    if (env.ws === true && this.websocket !== undefined && env.caps?.includes(CAP_WS) === true) {
      if (!canStream) {
        this.respondProblem(reply, 501, 'websocket-unsupported', 'WebSockets cannot pass this hand-off (an older SDK above this mount)', env.subject, env.id);
        return;
      }
      void this.upgrade(reply, env, this.websocket);
      return;
    }
    const timeout = env.timeoutMs > 0 ? Math.min(env.timeoutMs, this.timeoutMs) : this.timeoutMs;
    const call = new Call(this, reply, env, timeout, canStream);
    this.calls.add(call);
    const tracer = this.tracers.get(call.startedAt);
    if (tracer === undefined) return this.run(call, env);
    // The handler runs with the request's span active: the app's own spans (and instrumentations) become its children.
    const { span, active } = startServiceSpan(tracer, env, this.subject);
    call.span = span;
    context.with(active, this.run, this, call, env);
  }

  private run(call: Call, env: RequestEnvelope): void {
    let res: ServerResponse;
    try {
      const exchange = createExchange(env, requestUrl(env, this.subject, this.relativeUrl), call);
      res = exchange.res;
      call.req = exchange.req;
      call.res = res;
      call.acceptBody();
      const ret = this.handler(exchange.req, res) as { then?: unknown } | undefined;
      if (ret !== undefined && ret !== null && typeof ret.then === 'function') {
        (ret as Promise<unknown>).then(undefined, (err: unknown) => this.handlerFailed(call, err));
      }
    } catch (err) {
      this.handlerFailed(call, err);
    }
  }

  private handlerFailed(call: Call, err: unknown): void {
    this.safeLog('error', { err, subject: call.env.subject, requestId: call.env.id }, 'handler failed');
    if (!call.done) call.failure ??= `handler failed: ${err instanceof Error ? err.message : String(err)}`;
    call.failed();
  }

  /** The micro endpoint a request for `subject` counts on. */
  private endpointOf(subject: string): number {
    return subject === this.subject ? MOUNT_ENDPOINT : TREE_ENDPOINT;
  }

  settle(call: Call): void {
    if (call.done) return;
    call.done = true;
    const failure = call.failure ?? (call.status >= 500 ? `status ${call.status}` : undefined);
    this.responder?.record(this.endpointOf(call.env.subject), performance.now() - call.startedAt, failure);
    if (call.span !== undefined) endServiceSpan(call.span, call.status, call.failure);
    this.calls.delete(call);
    if (call.key !== '') this.streams.delete(call.key);
    this.checkIdle();
  }

  private expire(): void {
    const now = Date.now();
    for (const socket of this.sockets.values()) socket.probe(now, PROBE_INTERVAL_MS);
    for (const call of this.calls) {
      call.probe(now, PROBE_INTERVAL_MS);
      if (call.deadline > now || call.exempt) continue;
      this.safeLog('warn', { subject: call.env.subject, requestId: call.env.id }, 'handler did not finish in time; request abandoned');
      this.problem(call, 504, 'handler-timeout', `the service for ${call.env.subject} did not start its response within ${call.timeoutMs} ms`);
      if (call.res) abandon(call.res);
    }
  }

  /**
   * Answers with a problem. A 5xx one also carries NATS's service error
   * headers, so a NATS-native requester (not the gateway) sees the failure
   * without decoding the envelope.
   */
  private respondProblem(reply: string, status: number, code: string, detail: string, subject: string | undefined, requestId: string | undefined, inbox?: string): void {
    const body = Buffer.from(problemJson({ status, code, detail, subject, requestId }));
    let h: MsgHdrs | undefined;
    if (status >= 500) {
      h = natsHeaders();
      h.set(SERVICE_ERROR_CODE_HEADER, String(status));
      // A header value is one line.
      h.set(SERVICE_ERROR_HEADER, detail.replace(/[\r\n]+/g, ' ').slice(0, MAX_SERVICE_ERROR_TEXT));
    }
    this.publish(reply, encodeReply({ v: PROTOCOL_VERSION, status, headers: ['content-type', PROBLEM_CONTENT_TYPE], body }), inbox, h);
  }

  publishFrame(subject: string, data: Uint8Array, reply: string): boolean {
    try {
      this.nc.publish(subject, data, { reply });
      return true;
    } catch {
      return false;
    }
  }

  publish(reply: string, data: Uint8Array, replyTo?: string, headers?: MsgHdrs): void {
    try {
      if (headers !== undefined) this.nc.publish(reply, data, replyTo === undefined ? { headers } : { reply: replyTo, headers });
      else if (replyTo !== undefined) this.nc.publish(reply, data, { reply: replyTo });
      else this.nc.publish(reply, data);
    } catch (err) {
      this.safeLog('error', { err, reply }, 'could not publish a reply');
    }
  }

  private checkIdle(): void {
    if (this.idle !== undefined && this.inFlight === 0) this.idle();
  }

  drain(): Promise<void> {
    this.draining ??= this.doDrain();
    return this.draining;
  }

  private async doDrain(): Promise<void> {
    // Each step tolerates a connection that is already gone: draining must
    // always finish, or a service could not exit on SIGTERM after an outage.
    const step = async (what: string, fn: () => unknown): Promise<void> => {
      try {
        await fn();
      } catch (err) {
        this.safeLog('warn', { err, subject: this.subject }, `drain: ${what} failed; continuing`);
      }
    };
    await step('announcing down', () => this.registry.announceDown());
    // Unsubscribe; messages the server already sent are still handled.
    await step('unsubscribing', () => Promise.all(this.subs.map((s) => (s.isClosed() ? undefined : s.drain()))));
    this.responder?.stop();
    if (this.inFlight > 0) {
      // Streams (server-sent events) may never end by themselves: they get the handler timeout, then are cancelled.
      const grace = setTimeout(() => {
        for (const call of [...this.calls]) call.gone('the service is shutting down', true);
        for (const socket of [...this.sockets.values()]) socket.close(WS_GOING_AWAY, 'the service is shutting down');
      }, this.timeoutMs);
      await new Promise<void>((resolve) => (this.idle = resolve));
      clearTimeout(grace);
    }
    clearInterval(this.timer);
    if (this.streamSub !== undefined && !this.streamSub.isClosed()) this.streamSub.unsubscribe();
    this.registry.stop();
    if (this.ownsConnection && !this.nc.isClosed()) await step('closing the connection', () => this.nc.drain());
  }
}
