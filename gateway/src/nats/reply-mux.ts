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
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { createInbox, type Msg, type NatsConnection, type PublishOptions, type Subscription } from '@nats-io/transport-node';

/** What the mux needs on each request; the gateway's request context implements it. */
export interface PendingRequest {
  muxKey: string;
  deadline: number;
}

/** How a pending request ends; exactly one of these is called, once. */
export interface ReplyHandler<P extends PendingRequest> {
  onReply(p: P, data: Uint8Array): void;
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
}

/** Random base64url characters for reply keys: 11 per key (66 bits), 372 keys per refill. */
const RANDOM_POOL_BYTES = 3 * 1024;
const RANDOM_CHARS_PER_KEY = 11;

/** NATS status code the server sends to the reply subject when nobody listens. */
const NO_RESPONDERS = 503;

export class ReplyMux<P extends PendingRequest> {
  private readonly pending = new Map<string, P>();
  private readonly prefix: string;
  private readonly prefixLength: number;
  private readonly sub: Subscription;
  private readonly timer: NodeJS.Timeout;
  // Reused for every publish: nats.js reads it synchronously.
  private readonly publishOptions: PublishOptions = { reply: '' };
  private seq = 0;
  private random = '';
  private randomOffset = 0;
  // Publishes waiting for the end of this event-loop turn (see send()).
  private readonly batchSubjects: string[] = [];
  private readonly batchPayloads: Uint8Array[] = [];
  private readonly batchRequests: P[] = [];
  private flushScheduled = false;
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
  send(subject: string, payload: Uint8Array, p: P): void {
    const key = this.nextKey();
    p.muxKey = key;
    p.deadline = performance.now() + this.timeoutMs;
    this.pending.set(key, p);
    this.batchSubjects.push(subject);
    this.batchPayloads.push(payload);
    this.batchRequests.push(p);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(this.flushBatch);
    }
  }

  /**
   * A unique, unguessable reply key: a sequence number (unique; it holds no
   * '_') and 66 random bits as base64url (unguessable), cut from a string
   * made once per 372 keys: cheaper than formatting random numbers per key.
   */
  private nextKey(): string {
    if (this.randomOffset + RANDOM_CHARS_PER_KEY > this.random.length) {
      this.random = randomBytes(RANDOM_POOL_BYTES).toString('base64url');
      this.randomOffset = 0;
    }
    const o = this.randomOffset;
    this.randomOffset = o + RANDOM_CHARS_PER_KEY;
    return (this.seq++).toString(36) + '_' + this.random.slice(o, o + RANDOM_CHARS_PER_KEY);
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

  private flush(): void {
    this.flushScheduled = false;
    const n = this.batchRequests.length;
    for (let i = 0; i < n; i++) {
      const p = this.batchRequests[i]!;
      if (this.pending.get(p.muxKey) !== p) continue; // cancelled meanwhile (client went away)
      this.publishOptions.reply = this.prefix + p.muxKey;
      try {
        this.nc.publish(this.batchSubjects[i]!, this.batchPayloads[i]!, this.publishOptions);
      } catch (error) {
        this.pending.delete(p.muxKey);
        this.contained(p, (q) => this.handler.onPublishFailed(q, error));
      }
    }
    this.batchSubjects.length = 0;
    this.batchPayloads.length = 0;
    this.batchRequests.length = 0;
  }

  /** Forgets a request (its client went away); a late reply is dropped. */
  cancel(p: P): void {
    this.pending.delete(p.muxKey);
  }

  /** Ends every pending request with onConnectionLost. */
  failAll(): void {
    const all = [...this.pending.values()];
    this.pending.clear();
    for (const p of all) this.contained(p, this.onLost);
  }

  /** Stops the timer and the subscription; pending requests are failed. */
  close(): void {
    clearInterval(this.timer);
    this.failAll();
    if (!this.sub.isClosed()) this.sub.unsubscribe();
  }

  private readonly onLost = (p: P): void => this.handler.onConnectionLost(p);
  private readonly onExpired = (p: P): void => this.handler.onTimeout(p);

  private onMessage(msg: Msg): void {
    const key = msg.subject.substring(this.prefixLength);
    const p = this.pending.get(key);
    if (p === undefined) return; // late, after a timeout or a client abort; or a guess
    this.pending.delete(key);
    try {
      const data = msg.data;
      if (data.length === 0 && msg.headers?.code === NO_RESPONDERS) this.handler.onNoResponders(p);
      else this.handler.onReply(p, data);
    } catch (error) {
      try {
        this.handler.onHandlerError(p, error);
      } catch {
        // see contained()
      }
    }
  }

  private expire(now: number): void {
    // Same timeout for all, so insertion order is deadline order: stop at the first live one.
    for (const [key, p] of this.pending) {
      if (p.deadline > now) return;
      this.pending.delete(key);
      this.contained(p, this.onExpired);
    }
  }
}
