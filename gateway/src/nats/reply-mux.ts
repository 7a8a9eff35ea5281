/**
 * Request/reply over one wildcard reply subscription.
 *
 * Every request is published with a reply subject `<prefix>.<key>` under a
 * single subscription to `<prefix>.*`; a Map of pending requests, kept in
 * insertion order, finds the waiting request, and one coarse timer expires
 * the oldest. A prototype measured 1.7× the throughput of `nc.request()`,
 * which creates a timer and bookkeeping per request (cf. nats.js
 * muxsubscription.ts).
 */
import { performance } from 'node:perf_hooks';
import { nuid, type Msg, type NatsConnection, type PublishOptions, type Subscription } from '@nats-io/transport-node';

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
}

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
    this.prefix = `_INBOX.${nuid.next()}.`;
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
    const key = (this.seq++).toString(36);
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
        this.handler.onPublishFailed(p, error);
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
    for (const p of all) this.handler.onConnectionLost(p);
  }

  /** Stops the timer and the subscription; pending requests are failed. */
  close(): void {
    clearInterval(this.timer);
    this.failAll();
    if (!this.sub.isClosed()) this.sub.unsubscribe();
  }

  private onMessage(msg: Msg): void {
    const key = msg.subject.substring(this.prefixLength);
    const p = this.pending.get(key);
    if (p === undefined) return; // late, after a timeout or a client abort
    this.pending.delete(key);
    const data = msg.data;
    if (data.length === 0 && msg.headers?.code === NO_RESPONDERS) this.handler.onNoResponders(p);
    else this.handler.onReply(p, data);
  }

  private expire(now: number): void {
    // Same timeout for all, so insertion order is deadline order: stop at the first live one.
    for (const [key, p] of this.pending) {
      if (p.deadline > now) return;
      this.pending.delete(key);
      this.handler.onTimeout(p);
    }
  }
}
