/**
 * Follows the routes KV bucket and keeps the RouteTable equal to it, live.
 *
 * The bucket is created when missing. Without JetStream the gateway keeps
 * serving the NATS path, logs one line per change of state, reports
 * overrides as unavailable, and retries with backoff, so it picks the bucket
 * up once JetStream appears. Through a NATS outage the last known table keeps
 * serving; on every (re)start of the watch, keys that disappeared meanwhile
 * are dropped.
 */
import type { KV, KvWatchEntry } from '@nats-io/kv';
import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection, QueuedIterator } from '@nats-io/transport-node';
import type { Logger } from '../log.js';
import type { RouteTable } from './route-table.js';
import { openRoutesBucket } from './routes-bucket.js';

export interface OverridesStatus {
  state: 'starting' | 'watching' | 'unavailable' | 'stopped';
  bucket: string;
  reason?: string;
  since: string;
}

export type ReloadResult = 'applied' | 'rejected' | 'removed';

/** Longest wait for a retry while the bucket is unreachable (the wait doubles from 500 ms up to this). */
const MAX_RETRY_DELAY_MS = 5_000;
/** Longest the key listing that precedes a watch may take. */
const LIST_TIMEOUT_MS = 10_000;
/**
 * How often a running watch is checked against the bucket. nats.js's KV
 * watch is an ordered consumer that notices a lost consumer only after two
 * missed 30 s heartbeats; a consumer lost while a JetStream cluster elects
 * a new leader would leave updates unseen for a minute. A watch that stays
 * behind the bucket's last sequence, without progress, for two checks is
 * set up again.
 */
const LIVENESS_CHECK_MS = 2_000;
/**
 * While no watch can be set up, how often what was written since the last
 * revision applied is read with direct gets. Those are answered by any of
 * the stream's replicas and need no consumer, so no JetStream meta leader:
 * when a cluster loses the node that led it, the stream keeps taking writes
 * at once, but a new consumer waits for the election (measured here: 5 to
 * over 45 s on nats-server 2.9). Updates keep arriving meanwhile.
 */
const CATCH_UP_MS = 1_000;
/** Most entries read per catch-up round (the next round goes on). */
const CATCH_UP_BATCH = 1_000;

export class RoutesWatcher {
  status: OverridesStatus;
  private stopped = false;
  private iter: QueuedIterator<KvWatchEntry> | undefined;
  private wake: (() => void) | undefined;
  private running: Promise<void> | undefined;
  private restarting = false;
  /** The highest revision (stream sequence) the watch has delivered. */
  private lastRevision = 0;
  private delayMs = 500;
  private catchUpTimer: NodeJS.Timeout | undefined;
  private catchingUp = false;
  private watchedOnce = false;
  /**
   * While a new watch delivers what the bucket already held: applied
   * entries are counted and logged as one line at the end (a bucket of
   * 100,000 routes would otherwise log 100,000 lines at every start).
   */
  private loading: { applied: number; rejected: number; startedAt: number } | undefined;

  constructor(
    private readonly nc: NatsConnection,
    private readonly bucket: string,
    private readonly table: RouteTable,
    private readonly log: Logger,
    private readonly onReload?: (result: ReloadResult, key: string) => void,
    private readonly replicas = 1,
  ) {
    this.status = { state: 'starting', bucket, since: new Date().toISOString() };
  }

  /** Watches until stop(); never throws. */
  run(): Promise<void> {
    this.running ??= this.loop();
    return this.running;
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      let liveness: NodeJS.Timeout | undefined;
      try {
        const kv = await openRoutesBucket(this.nc, this.bucket, this.replicas);
        if (this.stopped) break;
        // Keys that went while no watch ran are dropped first. A first watch
        // has nothing to drop, and skips the listing: it would read every key
        // of a large bucket once more before the watch reads them all again.
        if (this.table.size > 0 || this.table.rejected.size > 0) {
          const present = await listKeys(kv);
          if (this.stopped) break;
          for (const key of this.table.keys()) if (!present.has(key)) this.remove(key);
          for (const key of [...this.table.rejected.keys()]) if (!present.has(key)) this.table.rejected.delete(key);
        }
        // The backlog ends with the entry that has nothing pending after it (delta 0).
        const held = (await kv.status()).streamInfo.state.messages;
        if (this.stopped) break;
        this.loading = held > 0 ? { applied: 0, rejected: 0, startedAt: performance.now() } : undefined;
        const iter = await kv.watch();
        this.iter = iter;
        // stop() may have come while the watch was being set up. The KV
        // iterator releases its consumer (and the consumer's heartbeat
        // interval, which would keep the process alive) only when a loop over
        // it ends, so stop it and run that loop.
        if (this.stopped) {
          iter.stop();
          for await (const _ of iter) void _;
          break;
        }
        this.stopCatchUp();
        this.watchedOnce = true;
        this.setStatus('watching');
        this.delayMs = 500;
        liveness = this.checkLiveness(kv, iter);
        for await (const entry of iter) this.apply(entry);
      } catch (err) {
        this.loading = undefined;
        if (this.stopped) break;
        this.setStatus('unavailable', (err as Error).message);
        this.startCatchUp();
      } finally {
        clearInterval(liveness);
      }
      if (this.stopped) break;
      if (this.restarting) {
        this.restarting = false;
        continue; // watch again at once
      }
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        setTimeout(resolve, this.delayMs).unref();
      });
      this.delayMs = Math.min(this.delayMs * 2, MAX_RETRY_DELAY_MS);
    }
    this.stopCatchUp();
    this.setStatus('stopped');
  }

  /** Reads, every CATCH_UP_MS, what the bucket holds beyond the last revision applied (see CATCH_UP_MS). */
  private startCatchUp(): void {
    // Only after a watch has run: lastRevision is then where it left the bucket (0: empty).
    if (this.catchUpTimer !== undefined || !this.watchedOnce) return;
    this.catchUpTimer = setInterval(() => void this.catchUp(), CATCH_UP_MS);
    this.catchUpTimer.unref();
  }

  private stopCatchUp(): void {
    clearInterval(this.catchUpTimer);
    this.catchUpTimer = undefined;
  }

  private async catchUp(): Promise<void> {
    if (this.catchingUp || this.stopped) return;
    this.catchingUp = true;
    try {
      // checkAPI: false skips $JS.API.INFO, which needs the meta leader too.
      const jsm = await jetstreamManager(this.nc, { checkAPI: false, timeout: 2000 });
      const prefix = `$KV.${this.bucket}.`;
      for (let i = 0; i < CATCH_UP_BATCH && !this.stopped && this.catchUpTimer !== undefined; i++) {
        const m = await jsm.direct.getMessage(`KV_${this.bucket}`, { seq: this.lastRevision + 1, next_by_subj: `${prefix}>` });
        if (m === null) break;
        // The watch may be back, and have applied newer entries, while this read was on its way.
        if (this.catchUpTimer === undefined || m.seq <= this.lastRevision) break;
        const operation = m.header?.get('KV-Operation') || 'PUT';
        // The shape apply() reads from a watch entry.
        this.apply({ key: m.subject.slice(prefix.length), value: m.data, revision: m.seq, operation } as unknown as KvWatchEntry);
      }
    } catch {
      // Not reachable this way either; the next round tries again.
    } finally {
      this.catchingUp = false;
    }
  }

  /** Every LIVENESS_CHECK_MS: if the bucket is ahead of the watch twice in a row, watch again. */
  private checkLiveness(kv: KV, iter: QueuedIterator<KvWatchEntry>): NodeJS.Timeout {
    let behind = 0;
    let checking = false;
    let seen = this.lastRevision;
    const timer = setInterval(() => {
      if (checking || this.stopped) return;
      checking = true;
      kv.status()
        .then((s) => {
          const last = s.streamInfo.state.last_seq;
          // Behind and not moving: a watch still delivering a large backlog is fine.
          const progressed = this.lastRevision !== seen;
          seen = this.lastRevision;
          behind = last > this.lastRevision && !progressed ? behind + 1 : 0;
          if (behind >= 2 && this.iter === iter) {
            this.log.warn({ bucket: this.bucket, lastSeen: this.lastRevision, bucketLast: last }, 'the routes watch fell behind the bucket; watching again');
            this.restart();
          }
        })
        .catch(() => undefined) // unreachable now: the watch itself will say so
        .finally(() => (checking = false));
    }, LIVENESS_CHECK_MS);
    timer.unref();
    return timer;
  }

  /**
   * Sets the watch up again (after a NATS reconnect: the watch's consumer may
   * have lived on a server that is gone, and the watch would stay silent).
   * Keys are re-read; unchanged ones are not touched.
   */
  restart(): void {
    if (this.stopped) return;
    this.restarting = true;
    this.delayMs = 500;
    // Until the new watch is up, which may wait for a JetStream election.
    this.startCatchUp();
    this.iter?.stop();
    this.wake?.();
  }

  /**
   * Stops watching and resolves once the loop has wound down (at most
   * `waitMs`). Close the NATS connection only after this: a watch torn down
   * by a closing connection mid-setup leaves a nats.js heartbeat timer behind
   * that keeps the process alive.
   */
  async stop(waitMs = 2000): Promise<void> {
    this.stopped = true;
    this.iter?.stop();
    this.wake?.();
    if (this.running === undefined) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.running, new Promise((r) => (timer = setTimeout(r, waitMs)))]);
    clearTimeout(timer);
  }

  /**
   * Applies one entry. Whatever an entry holds, it ends as applied, removed
   * or rejected with its reason, and the watch goes on to the next: an entry
   * that made this throw would otherwise end the watch, which would start
   * again at the same entry, forever.
   */
  private apply(e: KvWatchEntry): void {
    if (e.revision > this.lastRevision) this.lastRevision = e.revision;
    try {
      this.applyEntry(e);
    } catch (err) {
      try {
        this.rejected(e, `could not be applied: ${(err as Error).message}`);
      } catch {
        // Nothing more can be recorded for this entry; the next one is what matters.
      }
    }
    if (this.loading !== undefined && e.delta === 0) {
      const l = this.loading;
      this.loading = undefined;
      this.log.info(
        { routes: this.table.size, applied: l.applied, rejected: l.rejected, backends: this.table.backends.size, ms: Math.round(performance.now() - l.startedAt) },
        'overrides read from the routes bucket',
      );
    }
  }

  private applyEntry(e: KvWatchEntry): void {
    if (e.operation === 'DEL' || e.operation === 'PURGE') {
      this.remove(e.key);
      return;
    }
    if (e.operation !== 'PUT') {
      this.rejected(e, `unknown KV operation ${JSON.stringify(String(e.operation).slice(0, 32))}`);
      return;
    }
    const result = this.table.put(e.key, e.value, e.revision);
    if (result.status === 'applied') {
      if (this.loading !== undefined) this.loading.applied++;
      else if (result.route.kind !== 'http') this.log.info({ key: e.key, revision: e.revision, target: result.route.kind }, 'override applied');
      else this.log.info({ key: e.key, revision: e.revision, upstreams: result.route.upstreams.map((u) => u.url) }, 'override applied');
      this.onReload?.('applied', e.key);
    } else if (result.status === 'rejected') {
      this.reportRejected(e, result.reason);
    }
  }

  private rejected(e: KvWatchEntry, reason: string): void {
    this.table.reject(e.key, e.revision, reason);
    this.reportRejected(e, reason);
  }

  private reportRejected(e: KvWatchEntry, reason: string): void {
    if (this.loading !== undefined) this.loading.rejected++;
    const serving = this.table.get(e.key) !== undefined;
    this.log.warn({ key: e.key, revision: e.revision, reason, keepsServing: serving ? 'previous version' : 'NATS' }, 'override rejected');
    this.onReload?.('rejected', e.key);
  }

  private remove(key: string): void {
    if (this.table.delete(key)) {
      this.log.info({ key }, 'override removed; its paths go to NATS again');
      this.onReload?.('removed', key);
    }
  }

  private setStatus(state: OverridesStatus['state'], reason?: string): void {
    if (this.status.state === state && this.status.reason === reason) return;
    this.status = { state, bucket: this.bucket, since: new Date().toISOString(), ...(reason ? { reason } : {}) };
    if (state === 'watching') this.log.info({ bucket: this.bucket }, 'overrides: watching the routes bucket');
    else if (state === 'unavailable') this.log.warn({ bucket: this.bucket, reason }, 'overrides unavailable (JetStream not reachable); serving NATS only, retrying');
  }
}

/** The keys in the bucket, or a throw when listing them takes longer than LIST_TIMEOUT_MS (a consumer lost mid-listing never ends). */
async function listKeys(kv: KV): Promise<Set<string>> {
  const present = new Set<string>();
  const iter = await kv.keys();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    iter.stop();
  }, LIST_TIMEOUT_MS);
  try {
    for await (const key of iter) present.add(key);
  } finally {
    clearTimeout(timer);
  }
  if (timedOut) throw new Error(`listing the routes bucket's keys took longer than ${LIST_TIMEOUT_MS} ms`);
  return present;
}
