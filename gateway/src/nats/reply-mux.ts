/**
 * Request/reply over one wildcard reply subscription.
 *
 * Every request is published with a reply subject `<prefix>.<key>` under a
 * single subscription to `<prefix>.*`; a Map of pending requests, kept in
 * insertion order, finds the waiting request, and one coarse timer expires
 * the oldest. A prototype measured 1.7× the throughput of `nc.request()`,
 * which creates a timer and bookkeeping per request (cf. nats.js
 * muxsubscription.ts).
 *
 * Hostile input: the subscription callback runs inside nats.js's socket
 * parser, where a throw would stop the connection's reader, and the timer
 * callbacks run where a throw would end the process; every call into the
 * handler is contained and ends its request with onHandlerError. The key
 * in a reply subject carries 66 random bits, so a service that saw one
 * reply subject cannot guess the reply subject of a request sent to
 * another one (with NATS permissions, allow_responses enforces the same).
 */
import { performance } from 'node:perf_hooks';
import { createInbox, type Msg, type MsgHdrs, type NatsConnection, type PublishOptions, type Subscription } from '@nats-io/transport-node';
import { decodeFrame, encodeCancel, InboxKeys, isNoResponders, isValidInbox, MAX_SERVICE_ERROR_TEXT, SERVICE_ERROR_CODE_HEADER, SERVICE_ERROR_HEADER } from '@natsgw/service-sdk/protocol';

const STALE_CANCEL = encodeCancel('no such request: it is over (client gone or timed out)');

/** A late close or cancel (a WebSocket service answering the gateway's close): nothing is left to stop. */
function endsItself(data: Uint8Array): boolean {
  const frame = decodeFrame(data);
  return typeof frame !== 'string' && (frame.t === 'close' || frame.t === 'cancel');
}
/** Ended requests whose late frames are answered with a cancel: at most this many, for this long. */
const MAX_ENDED = 4096;
const ENDED_KEEP_MS = 60_000;

/** What the mux needs on each request; the gateway's request context implements it. */
export interface PendingRequest {
  muxKey: string;
  deadline: number;
}

/** How a pending request ends; exactly one of these is called, once. */
export interface ReplyHandler<P extends PendingRequest> {
  /** The reply (its payload; `msg` for what else it carries: a raw-mode reply's headers). */
  onReply(p: P, data: Uint8Array, msg: Msg): void;
  /** The reply carries NATS's service error headers (`Nats-Service-Error-Code`, `Nats-Service-Error`); `data` is its payload. */
  onServiceError(p: P, code: string, text: string, data: Uint8Array): void;
  /** The server said nobody is subscribed to the subject (a 503 status message). */
  onNoResponders(p: P): void;
  onTimeout(p: P): void;
  /** The NATS connection dropped while the request waited: its reply can no longer arrive. */
  onConnectionLost(p: P): void;
  /** nats.js refused the publish (connection closed or draining). */
  onPublishFailed(p: P, error: unknown): void;
  /**
   * One of the calls above threw: answer and release `p` (the gateway sends
   * a 502). Must not throw; if it does, the mux swallows it.
   */
  onHandlerError(p: P, error: unknown): void;
  /** A later message of a stream `p` holds open (see {@link ReplyMux.hold}); `msg` for its headers (raw mode). */
  onStreamMessage(p: P, data: Uint8Array, msg: Msg): void;
  /** A frame `p` sent to the service's inbox found nobody there (NATS no-responders): the service is gone. */
  onStreamPeerGone(p: P): void;
}

export class ReplyMux<P extends PendingRequest> {
  private readonly pending = new Map<string, P>();
  /** Requests whose reply is a stream: every message on their reply subject goes to onStreamMessage until release(). */
  private readonly open = new Map<string, P>();
  private readonly keys = new InboxKeys();
  /** Keys of requests that ended early, with when (see remember()). */
  private readonly ended = new Map<string, number>();
  private readonly prefix: string;
  private readonly prefixLength: number;
  private readonly sub: Subscription;
  private readonly timer: NodeJS.Timeout;
  // Reused for every publish: nats.js reads it synchronously.
  private readonly publishOptions: PublishOptions = { reply: '' };
  // Publishes waiting for the end of this event-loop turn (see send()).
  private readonly batchSubjects: string[] = [];
  private readonly batchPayloads: Uint8Array[] = [];
  private readonly batchRequests: P[] = [];
  /** NATS headers of each batched publish (raw mode); undefined for an envelope. */
  private readonly batchHeaders: Array<MsgHdrs | undefined> = [];
  // Session frames waiting for the end of this turn (see queueFrame()).
  private readonly frameInboxes: string[] = [];
  private readonly framePayloads: Uint8Array[] = [];
  private readonly frameOwners: P[] = [];
  private flushScheduled = false;
  /** Keys of requests with a timeout of their own (customTimeout). */
  private readonly custom = new Set<string>();
  private customTimer: NodeJS.Timeout | undefined;
  private customTickMs = 1000;
  private readonly flushBatch = () => this.flush();

  constructor(
    private readonly nc: NatsConnection,
    private readonly handler: ReplyHandler<P>,
    private readonly timeoutMs: number,
  ) {
    // Under the connection's inbox prefix, the one subject space its NATS user may read replies on.
    this.prefix = createInbox((nc as { options?: { inboxPrefix?: string } }).options?.inboxPrefix) + '.';
    this.prefixLength = this.prefix.length;
    this.sub = nc.subscribe(this.prefix + '*', { callback: (_err, msg) => this.onMessage(msg) });
    // Coarse: a request expires within one tick after its deadline.
    const tickMs = Math.min(1000, Math.max(10, Math.floor(timeoutMs / 20)));
    this.timer = setInterval(() => this.expire(performance.now()), tickMs);
    this.timer.unref();
  }

  /**
   * Registers `p` for the reply and publishes `payload` to `subject`.
   *
   * The publish is deferred to the end of this event-loop turn: nats.js
   * flushes its socket on a microtask, and uWS enters JavaScript once per
   * request, so publishing at once would cost one write() per request. Batched,
   * every request read in one poll of the HTTP sockets leaves in one write.
   */
  send(subject: string, payload: Uint8Array, p: P, headers?: MsgHdrs, timeoutMs = this.timeoutMs): void {
    const key = this.keys.next();
    p.muxKey = key;
    p.deadline = performance.now() + timeoutMs;
    this.pending.set(key, p);
    if (timeoutMs !== this.timeoutMs) this.customTimeout(key, timeoutMs);
    this.batchSubjects.push(subject);
    this.batchPayloads.push(payload);
    this.batchRequests.push(p);
    this.batchHeaders.push(headers);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(this.flushBatch);
    }
  }

  /** Runs one handler call; a throw ends the request through onHandlerError instead of escaping. */
  private contained(p: P, call: (p: P) => void): void {
    try {
      call(p);
    } catch (error) {
      try {
        this.handler.onHandlerError(p, error);
      } catch {
        // The handler's own last resort failed; nothing is left to do for p.
      }
    }
  }

  /**
   * Like publishFrame(), deferred to the end of this event-loop turn with
   * the requests: uWS enters JavaScript once per WebSocket message, so
   * publishing at once would cost a write() per message; batched, the
   * messages read in one poll leave in one write. Order per `p` is kept. A
   * publish nats.js refuses ends `p` with onConnectionLost.
   */
  queueFrame(p: P, inbox: string, data: Uint8Array): void {
    this.frameInboxes.push(inbox);
    this.framePayloads.push(data);
    this.frameOwners.push(p);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(this.flushBatch);
    }
  }

  private flushFrames(): void {
    const n = this.frameOwners.length;
    for (let i = 0; i < n; i++) {
      const p = this.frameOwners[i]!;
      this.publishOptions.reply = this.prefix + p.muxKey;
      try {
        this.nc.publish(this.frameInboxes[i]!, this.framePayloads[i]!, this.publishOptions);
      } catch {
        this.contained(p, this.onLost);
      }
    }
    this.frameInboxes.length = 0;
    this.framePayloads.length = 0;
    this.frameOwners.length = 0;
  }

  private flush(): void {
    this.flushScheduled = false;
    if (this.frameOwners.length > 0) this.flushFrames();
    const n = this.batchRequests.length;
    for (let i = 0; i < n; i++) {
      const p = this.batchRequests[i]!;
      if (this.pending.get(p.muxKey) !== p) continue; // cancelled meanwhile (client went away)
      this.publishOptions.reply = this.prefix + p.muxKey;
      const headers = this.batchHeaders[i];
      try {
        this.nc.publish(this.batchSubjects[i]!, this.batchPayloads[i]!, headers === undefined ? this.publishOptions : { reply: this.publishOptions.reply, headers });
      } catch (error) {
        this.pending.delete(p.muxKey);
        this.contained(p, (q) => this.handler.onPublishFailed(q, error));
      }
    }
    this.batchSubjects.length = 0;
    this.batchPayloads.length = 0;
    this.batchRequests.length = 0;
    this.batchHeaders.length = 0;
  }

  /** Forgets a request (its client went away, or its stream ended); a late message is dropped. */
  cancel(p: P): void {
    this.pending.delete(p.muxKey);
    this.open.delete(p.muxKey);
    this.remember(p.muxKey);
  }

  /**
   * Keeps the key of a request that ended without its full reply (cancelled,
   * timed out) for a while, so a stream frame that still arrives for it can
   * be answered with a cancel; a frame for any other key is a guess and gets
   * nothing, so nobody can have the gateway publish to a subject of their
   * choosing. Bounded in count and age.
   */
  private remember(key: string): void {
    this.ended.set(key, performance.now());
    if (this.ended.size > MAX_ENDED) this.ended.delete(this.ended.keys().next().value!);
  }

  /**
   * Keeps `p`'s reply subject open after its first message (the reply is a
   * stream): later messages go to onStreamMessage, no timeout applies (the
   * stream keeps its own idle limit), until cancel().
   */
  hold(p: P): void {
    this.open.set(p.muxKey, p);
  }

  /** Streams held open right now. */
  get openStreams(): number {
    return this.open.size;
  }

  /**
   * Publishes a frame of `p`'s stream to the service's inbox, with `p`'s
   * reply subject, so a dead service comes back as no-responders. False
   * when nats.js refused it (connection closed).
   */
  publishFrame(p: P, inbox: string, data: Uint8Array): boolean {
    this.publishOptions.reply = this.prefix + p.muxKey;
    try {
      this.nc.publish(inbox, data, this.publishOptions);
      return true;
    } catch {
      return false;
    }
  }

  /** Ends every pending request and open stream with onConnectionLost. */
  failAll(): void {
    const all = [...this.pending.values(), ...this.open.values()];
    this.pending.clear();
    this.open.clear();
    for (const p of all) this.contained(p, this.onLost);
  }

  /** Stops the timer and the subscription; pending requests are failed. */
  close(): void {
    // Frames queued this turn (closes at shutdown) go out first.
    this.flushFrames();
    clearInterval(this.timer);
    clearInterval(this.customTimer);
    this.failAll();
    if (!this.sub.isClosed()) this.sub.unsubscribe();
  }

  private readonly onLost = (p: P): void => this.handler.onConnectionLost(p);
  private readonly onExpired = (p: P): void => this.handler.onTimeout(p);

  private onMessage(msg: Msg): void {
    const key = msg.subject.substring(this.prefixLength);
    const p = this.pending.get(key);
    if (p === undefined) {
      const s = this.open.get(key);
      if (s !== undefined) this.onStream(s, msg);
      else if (msg.reply && this.ended.has(key) && !isNoResponders(msg) && isValidInbox(msg.reply) && !endsItself(msg.data)) {
        // A stream frame for a request that is over (its client went away,
        // it timed out): tell the service to stop, without a reply subject
        // of our own so nothing can bounce back. Late v1 replies carry none.
        try {
          this.nc.publish(msg.reply, STALE_CANCEL);
        } catch {
          // connection closing
        }
      }
      return; // else late, after a timeout or a client abort; or a guess
    }
    this.pending.delete(key);
    try {
      const data = msg.data;
      if (isNoResponders(msg)) this.handler.onNoResponders(p);
      else {
        const error = msg.headers === undefined ? undefined : serviceError(msg.headers);
        if (error !== undefined) this.handler.onServiceError(p, error.code, error.text, data);
        else this.handler.onReply(p, data, msg);
      }
    } catch (error) {
      try {
        this.handler.onHandlerError(p, error);
      } catch {
        // see contained()
      }
    }
  }

  private onStream(p: P, msg: Msg): void {
    this.contained(p, (q) => (isNoResponders(msg) ? this.handler.onStreamPeerGone(q) : this.handler.onStreamMessage(q, msg.data, msg)));
  }

  /**
   * A request with its own timeout (a route's limits policy): kept apart, as
   * the pending map's order is deadline order only for the default timeout,
   * and checked often enough for its length.
   */
  private customTimeout(key: string, timeoutMs: number): void {
    this.custom.add(key);
    const tickMs = Math.min(1000, Math.max(10, Math.floor(timeoutMs / 20)));
    if (tickMs < this.customTickMs || this.customTimer === undefined) {
      clearInterval(this.customTimer);
      this.customTickMs = tickMs;
      this.customTimer = setInterval(() => this.expireCustom(performance.now()), tickMs);
      this.customTimer.unref();
    }
  }

  private expireCustom(now: number): void {
    for (const key of this.custom) {
      const p = this.pending.get(key);
      if (p === undefined) {
        this.custom.delete(key);
        continue;
      }
      if (p.deadline > now) continue;
      this.custom.delete(key);
      this.pending.delete(key);
      this.remember(key);
      this.contained(p, this.onExpired);
    }
    if (this.custom.size === 0) {
      clearInterval(this.customTimer);
      this.customTimer = undefined;
    }
  }

  private expire(now: number): void {
    for (const [key, at] of this.ended) {
      if (now - at < ENDED_KEEP_MS) break;
      this.ended.delete(key);
    }
    // Same timeout for all, so insertion order is deadline order: stop at the first live one (those with their own are checked apart).
    for (const [key, p] of this.pending) {
      if (p.deadline > now) {
        if (this.custom.size > 0 && this.custom.has(key)) continue;
        return;
      }
      this.custom.delete(key);
      this.pending.delete(key);
      this.remember(key);
      this.contained(p, this.onExpired);
    }
  }
}

/** NATS's service error headers, when a reply has them (names compared case-insensitively). */
export function serviceError(h: MsgHdrs): { code: string; text: string } | undefined {
  let code: string | undefined;
  let text = '';
  for (const k of h.keys()) {
    const lower = k.toLowerCase();
    if (lower === CODE_HEADER) code = h.get(k);
    else if (lower === TEXT_HEADER) text = h.get(k);
  }
  if (code === undefined) return undefined;
  return { code: code.trim(), text: text.length > MAX_SERVICE_ERROR_TEXT ? text.slice(0, MAX_SERVICE_ERROR_TEXT) : text };
}
const CODE_HEADER = SERVICE_ERROR_CODE_HEADER.toLowerCase();
const TEXT_HEADER = SERVICE_ERROR_HEADER.toLowerCase();
