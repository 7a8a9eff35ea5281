/**
 * One admin view from several worker threads' (--workers): the process is
 * one gateway to the fleet, so its answers read like one gateway's.
 *
 * Counts add up. "Is it up" takes the worst thread: a backend is available
 * or healthy only if every worker says so (each worker has its own pools,
 * health checks and breakers), a breaker shows the worst state any worker's
 * is in. Latency percentiles come from the summed histograms, never from
 * averaging percentiles. Routes come from the first worker: every worker
 * follows the same bucket.
 */
import { stats, type BackendView, type CircuitView, type GatewayStatus, type RoutesView, type StatsView } from './admin-data.js';
import type { GatewayView } from './gateway-view.js';
import { TrafficStats, type RouteTrafficSnapshot } from './traffic-stats.js';
import { mergeWs } from '../ws/ws-stats.js';

export interface WorkerTraffic {
  routes: RouteTrafficSnapshot[];
  total: number;
  rate: number;
}

export function mergeStatus(all: GatewayStatus[], traffic: WorkerTraffic[], workers: number): GatewayStatus {
  const first = all[0]!;
  const sum = (f: (s: GatewayStatus) => number) => all.reduce((a, s) => a + f(s), 0);
  return {
    ...first,
    ready: all.length === workers && all.every((s) => s.ready),
    shuttingDown: all.some((s) => s.shuttingDown),
    nats: { connected: all.every((s) => s.nats.connected), server: first.nats.server, reconnects: sum((s) => s.nats.reconnects) },
    inFlight: sum((s) => s.inFlight),
    websockets: mergeWs(all.map((s) => s.websockets)),
    requestsPerSecond: Math.round(traffic.reduce((a, t) => a + t.rate, 0) * 10) / 10,
    requestsTotal: traffic.reduce((a, t) => a + t.total, 0),
    workers: { configured: workers, running: all.length },
  } as GatewayStatus;
}

export function mergeRoutes(all: RoutesView[]): RoutesView {
  return all[0]!;
}

const BREAKER_RANK: Record<string, number> = { closed: 0, 'half-open': 1, open: 2 };
const worse = (a: string | null, b: string | null) => (a === null ? b : b === null ? a : (BREAKER_RANK[b] ?? 0) > (BREAKER_RANK[a] ?? 0) ? b : a);
const later = (a: string | null, b: string | null) => (a === null ? b : b === null ? a : a > b ? a : b);

function byKey<T extends { url: string; settings: string }>(all: T[][], merge: (a: T, b: T) => T): T[] {
  const out = new Map<string, T>();
  for (const list of all) {
    for (const item of list) {
      const key = item.url + '\n' + item.settings;
      const seen = out.get(key);
      out.set(key, seen === undefined ? { ...item } : merge(seen, item));
    }
  }
  return [...out.values()];
}

export function mergeBackends(all: BackendView[][]): BackendView[] {
  return byKey(all, (a, b) => ({
    ...a,
    available: a.available && b.available,
    healthy: a.healthy && b.healthy,
    activeChecks: a.activeChecks || b.activeChecks,
    lastProbe: a.lastProbe === null ? b.lastProbe : b.lastProbe === null ? a.lastProbe : a.lastProbe.at >= b.lastProbe.at ? a.lastProbe : b.lastProbe,
    ejected: a.ejected || b.ejected,
    ejectedUntil: later(a.ejectedUntil, b.ejectedUntil),
    ejections: a.ejections + b.ejections,
    inFlight: a.inFlight + b.inFlight,
    requests: a.requests + b.requests,
    failures: a.failures + b.failures,
    breaker: worse(a.breaker, b.breaker) as BackendView['breaker'],
  }));
}

export function mergeCircuits(all: CircuitView[][]): CircuitView[] {
  return byKey(all, (a, b) => ({
    ...a,
    state: worse(a.state, b.state) as CircuitView['state'],
    consecutiveFailures: Math.max(a.consecutiveFailures, b.consecutiveFailures),
    trips: a.trips + b.trips,
    nextTrialAt: later(a.nextTrialAt, b.nextTrialAt),
  }));
}

export function mergeStats(traffic: WorkerTraffic[]): StatsView[] {
  return stats({ traffic: TrafficStats.merged(traffic.map((t) => t.routes)) } as unknown as GatewayView);
}
