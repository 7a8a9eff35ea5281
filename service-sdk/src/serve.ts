/**
 * serve(): mounts a plain Node `(req, res)` handler on a NATS subject.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { connect, nuid, type Msg, type NatsConnection, type NodeConnectionOptions, type Subscription } from '@nats-io/transport-node';
import {
  decodeRequest,
  DEFAULT_QUEUE,
  encodeReply,
  isValidRoot,
  PROBLEM_CONTENT_TYPE,
  problemJson,
  ProtocolError,
  PROTOCOL_VERSION,
  type RequestEnvelope,
} from './protocol/index.js';
import { abandon, bodyOverflowed, bodySize, createExchange, requestUrl, type ResponseSink } from './node-adapter.js';
import { HANDOFF_PREFIX, MountRegistry } from './mounts.js';
import { guardConnection } from './nats-guard.js';

/** A plain Node request listener, as `http.createServer()` takes. Express and Koa's `app.callback()` are ones. */
export type RequestListener = (req: IncomingMessage, res: ServerResponse) => unknown;

/** Anything with pino's calling convention: `(object, message)`. */
export interface ServiceLogger {
  error(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
}

export const DEFAULT_SERVICE_TIMEOUT_MS = 30_000;

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
  const owned = !isConnection(options.nats);
  const nc = isConnection(options.nats)
    ? options.nats
    : await connect(
        typeof options.nats === 'string' || Array.isArray(options.nats)
          ? { servers: options.nats, name: `natsgw-service ${options.subject}` }
          : options.nats,
      );
  const service = new ServiceRuntime(handler, nc, owned, options);
  await service.start();
  return service;
}

/** One handler invocation; also the adapter's sink for its response. */
class Call implements ResponseSink {
  done = false;
  res: ServerResponse | undefined = undefined;
  constructor(
    readonly runtime: ServiceRuntime,
    readonly reply: string,
    readonly env: RequestEnvelope,
    readonly timeoutMs: number,
    readonly maxBodyBytes: number,
  ) {
    this.deadline = Date.now() + timeoutMs;
  }
  readonly deadline: number;
  onEnd(res: ServerResponse, status: number, headers: string[], body: Buffer): void {
    this.runtime.complete(this, res, status, headers, body);
  }
}

class ServiceRuntime implements Service {
  readonly subject: string;
  private readonly queue: string;
  private readonly relativeUrl: boolean;
  private readonly timeoutMs: number;
  private readonly log: ServiceLogger;
  private readonly onConnectionClosed: ((err: Error) => void) | undefined;
  private readonly registry: MountRegistry;
  private readonly subs: Subscription[] = [];
  private readonly calls = new Set<Call>();
  private forwarding = 0;
  private timer: NodeJS.Timeout | undefined;
  private draining: Promise<void> | undefined;
  private reportClosed!: (err: Error) => void;
  readonly closed = new Promise<Error>((resolve) => (this.reportClosed = resolve));
  private idle: (() => void) | undefined;

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
    this.log = options.logger ?? consoleLogger;
    this.onConnectionClosed = options.onConnectionClosed;
    this.registry = new MountRegistry(nc, this.subject, nuid.next(), {
      heartbeatMs: options.heartbeatMs ?? 5000,
      discoveryMs: options.discoveryMs ?? 100,
      readyTimeoutMs: options.readyTimeoutMs ?? 2000,
      onRefused: (subject, why) => this.safeLog('warn', { subject, why }, 'ignored a mount message'),
    });
  }

  get inFlight(): number {
    return this.calls.size + this.forwarding;
  }

  private get maxPayload(): number {
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
    await this.nc.flush();
    // Announce only once subscribed: whoever hands us a request finds us
    // listening. Resolve only once the mounts above know us, so "the most
    // specific mount runs it" holds from the moment serve() returns.
    const unacknowledged = await this.registry.announceUp();
    if (unacknowledged.length > 0) {
      this.safeLog('warn', { subject: this.subject, instances: unacknowledged }, 'mounts above this one did not acknowledge it in time; they may still run some of its requests until they hear its next announcement');
    }
    this.timer = setInterval(() => this.expire(), Math.min(1000, Math.max(10, this.timeoutMs / 20)));
    this.timer.unref();
    void this.watchClosed();
  }

  private async watchClosed(): Promise<void> {
    const err = (await this.nc.closed()) ?? new Error('the connection was closed');
    if (this.draining !== undefined) return;
    const exiting = this.onConnectionClosed === undefined && this.ownsConnection;
    this.safeLog('error', { err, subject: this.subject }, `NATS connection closed for good (${err.message}); ${this.subject} can no longer be served${exiting ? '; exiting' : ''}`);
    this.reportClosed(err);
    if (this.onConnectionClosed !== undefined) this.onConnectionClosed(err);
    else if (exiting) process.exit(1);
  }

  /** Logs through the user's logger, which must not be able to throw into NATS's reader either. */
  private safeLog(level: 'error' | 'warn', obj: object, msg: string): void {
    try {
      this.log[level](obj, msg);
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
      return;
    }
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
        void this.handOff(reply, msg.data, env, deeper, subject);
        return;
      }
    }
    this.execute(reply, env);
  }

  /** Passes a request to the more specific mount that owns it, and relays its answer. */
  private async handOff(reply: string, data: Uint8Array, env: RequestEnvelope, mount: string, subject: string): Promise<void> {
    this.forwarding++;
    try {
      const timeout = env.timeoutMs > 0 ? Math.min(env.timeoutMs, this.timeoutMs) : this.timeoutMs;
      const answer = await this.nc.request(HANDOFF_PREFIX + mount, data, { timeout });
      this.publish(reply, answer.data);
    } catch (err) {
      if ((err as { isNoResponders?: () => boolean }).isNoResponders?.() === true) {
        // Nobody received it, so it is safe to run elsewhere: the next best mount, or here.
        this.registry.forget(mount);
        const next = this.registry.deeperMountFor(subject);
        if (next !== undefined) void this.handOff(reply, data, env, next, subject);
        else this.execute(reply, env);
      } else {
        // It may have run there: never run it again here.
        this.safeLog('warn', { subject, mount, requestId: env.id, err }, 'hand-off to a more specific mount failed');
        this.respondProblem(reply, 504, 'handoff-timeout', `mount ${mount} did not answer for ${subject}`, subject, env.id);
      }
    } finally {
      this.forwarding--;
      this.checkIdle();
    }
  }

  private execute(reply: string, env: RequestEnvelope): void {
    const timeout = env.timeoutMs > 0 ? Math.min(env.timeoutMs, this.timeoutMs) : this.timeoutMs;
    const call = new Call(this, reply, env, timeout, this.maxPayload);
    this.calls.add(call);
    let res: ServerResponse;
    try {
      const exchange = createExchange(env, requestUrl(env, this.subject, this.relativeUrl), call);
      res = exchange.res;
      call.res = res;
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
    if (call.done) return;
    this.settle(call);
    if (call.res) abandon(call.res);
    this.respondProblem(call.reply, 500, 'handler-error', `the service for ${call.env.subject} failed while handling the request`, call.env.subject, call.env.id);
  }

  /** The adapter's callback when the handler ends its response. */
  complete(call: Call, res: ServerResponse, status: number, headers: string[], body: Buffer): void {
    if (call.done) return;
    this.settle(call);
    const env = call.env;
    if (bodyOverflowed(res)) {
      this.safeLog('error', { subject: env.subject, requestId: env.id, bytes: bodySize(res), maxPayload: this.maxPayload }, 'response too large for one NATS message');
      return this.respondProblem(call.reply, 502, 'response-too-large', `the response from ${env.subject} (${bodySize(res)} bytes) exceeds the NATS max_payload of ${this.maxPayload} bytes`, env.subject, env.id);
    }
    if (!Number.isInteger(status) || status < 200 || status > 599) {
      this.safeLog('error', { subject: env.subject, requestId: env.id, status }, 'handler answered with a status outside 200-599');
      return this.respondProblem(call.reply, 500, 'invalid-status', `the service for ${env.subject} answered with status ${status}`, env.subject, env.id);
    }
    const data = encodeReply({ v: PROTOCOL_VERSION, status, headers, body });
    if (data.length > this.maxPayload) {
      this.safeLog('error', { subject: env.subject, requestId: env.id, bytes: data.length, maxPayload: this.maxPayload }, 'response too large for one NATS message');
      return this.respondProblem(call.reply, 502, 'response-too-large', `the response from ${env.subject} (${data.length} bytes) exceeds the NATS max_payload of ${this.maxPayload} bytes`, env.subject, env.id);
    }
    this.publish(call.reply, data);
  }

  private settle(call: Call): void {
    call.done = true;
    this.calls.delete(call);
    this.checkIdle();
  }

  private expire(): void {
    const now = Date.now();
    for (const call of this.calls) {
      if (call.deadline > now) continue;
      this.settle(call);
      if (call.res) abandon(call.res);
      this.safeLog('warn', { subject: call.env.subject, requestId: call.env.id }, 'handler did not finish in time; request abandoned');
      this.respondProblem(call.reply, 504, 'handler-timeout', `the service for ${call.env.subject} did not finish within ${call.timeoutMs} ms`, call.env.subject, call.env.id);
    }
  }

  private respondProblem(reply: string, status: number, code: string, detail: string, subject: string | undefined, requestId: string | undefined): void {
    const body = Buffer.from(problemJson({ status, code, detail, subject, requestId }));
    this.publish(reply, encodeReply({ v: PROTOCOL_VERSION, status, headers: ['content-type', PROBLEM_CONTENT_TYPE], body }));
  }

  private publish(reply: string, data: Uint8Array): void {
    try {
      this.nc.publish(reply, data);
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
    if (this.inFlight > 0) await new Promise<void>((resolve) => (this.idle = resolve));
    clearInterval(this.timer);
    this.registry.stop();
    if (this.ownsConnection && !this.nc.isClosed()) await step('closing the connection', () => this.nc.drain());
  }
}
