/**
 * What the gateway has answered: per route (the root subject for the NATS
 * path, the override key for HTTP backends), requests by method and status
 * class, a latency histogram, and bytes sent.
 *
 * Recording is a few array increments per request (no label hashing, no
 * allocation); /stats percentiles and the Prometheus histogram are both read
 * from the same buckets at query time.
 */

import { SecondWindow } from '../timing/second-window.js';

/** Upper bounds of the latency buckets, in seconds (Prometheus `le`). */
export const LATENCY_BUCKETS_S = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60] as const;

export const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'other'] as const;
const METHOD_INDEX = new Map<string, number>(METHODS.map((m, i) => [m, i]));
export const STATUS_CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx'] as const;

export type Target = 'nats' | 'http';

export class RouteTraffic {
  /** [method][status class] */
  readonly requests: Float64Array = new Float64Array(METHODS.length * STATUS_CLASSES.length);
  /** Count per latency bucket (not cumulative); the last slot is +Inf. */
  readonly latency: Float64Array = new Float64Array(LATENCY_BUCKETS_S.length + 1);
  latencySumS = 0;
  count = 0;
  bytes = 0;
  clientAborts = 0;

  constructor(
    readonly route: string,
    readonly target: Target,
  ) {}

  record(method: string, status: number, durationS: number, bytes: number): void {
    const m = METHOD_INDEX.get(method) ?? METHODS.length - 1;
    const c = Math.min(4, Math.max(0, Math.floor(status / 100) - 1));
    this.requests[m * STATUS_CLASSES.length + c]!++;
    let b = 0;
    while (b < LATENCY_BUCKETS_S.length && durationS > LATENCY_BUCKETS_S[b]!) b++;
    this.latency[b]!++;
    this.latencySumS += durationS;
    this.count++;
    this.bytes += bytes;
  }

  byStatusClass(): Record<(typeof STATUS_CLASSES)[number], number> {
    const out = { '1xx': 0, '2xx': 0, '3xx': 0, '4xx': 0, '5xx': 0 };
    for (let m = 0; m < METHODS.length; m++) {
      for (let c = 0; c < STATUS_CLASSES.length; c++) out[STATUS_CLASSES[c]!] += this.requests[m * STATUS_CLASSES.length + c]!;
    }
    return out;
  }

  /** The q-quantile of latency in ms, interpolated within its bucket (as Prometheus' histogram_quantile does). */
  quantileMs(q: number): number | null {
    if (this.count === 0) return null;
    const rank = q * this.count;
    let seen = 0;
    for (let b = 0; b < this.latency.length; b++) {
      const n = this.latency[b]!;
      if (seen + n >= rank && n > 0) {
        const lower = b === 0 ? 0 : LATENCY_BUCKETS_S[b - 1]!;
        const upper = b < LATENCY_BUCKETS_S.length ? LATENCY_BUCKETS_S[b]! : lower;
        return (lower + ((upper - lower) * (rank - seen)) / n) * 1000;
      }
      seen += n;
    }
    return LATENCY_BUCKETS_S[LATENCY_BUCKETS_S.length - 1]! * 1000;
  }
}

/** A RouteTraffic as plain data, to cross a thread boundary (--workers). */
export interface RouteTrafficSnapshot {
  route: string;
  target: Target;
  requests: number[];
  latency: number[];
  latencySumS: number;
  count: number;
  bytes: number;
  clientAborts: number;
}

export class TrafficStats {
  private readonly routes = new Map<string, RouteTraffic>();
  private readonly perSecond = new SecondWindow(10);
  total = 0;

  /** The traffic record of a route, created on first use. */
  route(route: string, target: Target): RouteTraffic {
    const key = target === 'nats' ? 'nats:' + route : route;
    let t = this.routes.get(key);
    if (t === undefined) this.routes.set(key, (t = new RouteTraffic(route, target)));
    return t;
  }

  /** Counts a finished response towards the request rate. */
  tick(nowMs: number): void {
    this.perSecond.add(nowMs);
    this.total++;
  }

  /** Requests per second over the last 9 complete seconds. */
  ratePerSecond(nowMs: number): number {
    return this.perSecond.sum(nowMs, true) / (this.perSecond.seconds - 1);
  }

  all(): RouteTraffic[] {
    return [...this.routes.values()];
  }

  snapshot(): RouteTrafficSnapshot[] {
    return this.all().map((t) => ({
      route: t.route,
      target: t.target,
      requests: [...t.requests],
      latency: [...t.latency],
      latencySumS: t.latencySumS,
      count: t.count,
      bytes: t.bytes,
      clientAborts: t.clientAborts,
    }));
  }

  /** The sum of several gateways' (worker threads') traffic, route by route. */
  static merged(snapshots: readonly RouteTrafficSnapshot[][]): TrafficStats {
    const out = new TrafficStats();
    for (const snapshot of snapshots) {
      for (const s of snapshot) {
        const t = out.route(s.route, s.target);
        for (let i = 0; i < s.requests.length; i++) t.requests[i]! += s.requests[i]!;
        for (let i = 0; i < s.latency.length; i++) t.latency[i]! += s.latency[i]!;
        t.latencySumS += s.latencySumS;
        t.count += s.count;
        t.bytes += s.bytes;
        t.clientAborts += s.clientAborts;
      }
    }
    return out;
  }
}
