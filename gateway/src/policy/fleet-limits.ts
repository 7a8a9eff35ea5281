/**
 * Fleet rate limits (rateLimit mode fleet): every FLEET_SYNC_MS each gateway
 * publishes what its fleet limiters took since the last time, per key, on
 * `_NATSGW.ratelimit.<entry key>`, and takes what the others report from its
 * own replicas of those buckets (rate-limiter.ts). Gateways that are alive
 * report; a gateway that dies stops taking. No leader, no storage: a
 * gateway that starts has full buckets, as after a quiet time.
 *
 * Reports come from NATS and are hostile until checked: a message larger
 * than MAX_REPORT_BYTES, not JSON of the shape below, or naming a key
 * without a fleet limit is dropped whole; counts are whole numbers from 1 to
 * MAX_COUNT, keys at most MAX_LIMIT_KEY long.
 *
 *   {"g":"<gateway id>","k":[["203.0.113.7",3],["198.51.100.2",1]]}
 */
import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import type { RouteTable } from '../routes/route-table.js';
import { MAX_LIMIT_KEY } from './rate-limiter.js';

export const FLEET_SUBJECT_PREFIX = '_NATSGW.ratelimit';
/** How often takes are reported (the error bound grows with it). */
export const FLEET_SYNC_MS = 100;
const MAX_REPORT_BYTES = 64 * 1024;
const KEYS_PER_REPORT = 500;
const MAX_COUNT = 1_000_000;

export class FleetLimits {
  private readonly subs: Subscription[];
  private readonly timer: NodeJS.Timeout;
  private readonly enc = new TextEncoder();
  /** Reports dropped as invalid (kept for tests and /status). */
  dropped = 0;

  constructor(
    private readonly nc: NatsConnection,
    private readonly table: RouteTable,
    private readonly gatewayId: string,
  ) {
    const root = table.rootSubject;
    const callback = (_err: Error | null, msg: { subject: string; data: Uint8Array }) => {
      try {
        this.onReport(msg.subject, msg.data);
      } catch {
        // Contained: nats.js runs this inside its socket reader.
        this.dropped++;
      }
    };
    this.subs = [nc.subscribe(`${FLEET_SUBJECT_PREFIX}.${root}`, { callback }), nc.subscribe(`${FLEET_SUBJECT_PREFIX}.${root}.>`, { callback })];
    this.timer = setInterval(() => this.report(), FLEET_SYNC_MS);
    this.timer.unref();
  }

  private report(): void {
    const dirty = this.table.fleetDirty;
    if (dirty.size === 0 || this.nc.isClosed()) return;
    for (const limiter of dirty) {
      const taken = limiter.drainTaken();
      if (taken === undefined) continue;
      const subject = `${FLEET_SUBJECT_PREFIX}.${limiter.sourceKey}`;
      let batch: [string, number][] = [];
      const send = () => {
        try {
          this.nc.publish(subject, this.enc.encode(JSON.stringify({ g: this.gatewayId, k: batch })));
        } catch {
          // Disconnected: these takes are lost to the others (they admit a little more meanwhile).
        }
        batch = [];
      };
      for (const entry of taken) {
        batch.push(entry);
        if (batch.length === KEYS_PER_REPORT) send();
      }
      if (batch.length > 0) send();
    }
    dirty.clear();
  }

  private onReport(subject: string, data: Uint8Array): void {
    if (data.length > MAX_REPORT_BYTES) return void this.dropped++;
    const key = subject.slice(FLEET_SUBJECT_PREFIX.length + 1);
    const limiter = this.table.get(key)?.policy?.rateLimit;
    if (limiter === undefined || !limiter.fleet) return;
    const report = JSON.parse(Buffer.from(data.buffer, data.byteOffset, data.length).toString('utf8')) as { g?: unknown; k?: unknown };
    if (report === null || typeof report !== 'object' || typeof report.g !== 'string' || !Array.isArray(report.k) || report.k.length > KEYS_PER_REPORT) return void this.dropped++;
    if (report.g === this.gatewayId) return;
    // Checked whole before anything is taken.
    for (const e of report.k as unknown[]) {
      if (!Array.isArray(e) || e.length !== 2 || typeof e[0] !== 'string' || e[0].length > MAX_LIMIT_KEY || !Number.isInteger(e[1]) || e[1] < 1 || e[1] > MAX_COUNT) return void this.dropped++;
    }
    const now = Date.now();
    for (const [k, n] of report.k as [string, number][]) limiter.takenElsewhere(k, n, now);
  }

  close(): void {
    clearInterval(this.timer);
    this.report();
    for (const s of this.subs) if (!s.isClosed()) s.unsubscribe();
  }
}
