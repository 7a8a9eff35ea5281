/**
 * The admin views of a gateway, as plain JSON: what /status, /routes,
 * /backends, /circuits and /stats answer, over HTTP and over NATS alike.
 */
import { hostname } from 'node:os';
import { redactRoute, type RouteOptions } from '../routes/route-schema.js';
import type { GatewayView } from './gateway-view.js';

import { ADMIN_VERBS, type AdminVerb, type BackendView, type CircuitView, type GatewayStatus, type RoutesView, type StatsView } from './admin-schema.js';

export { ADMIN_VERBS, type AdminVerb, type BackendView, type CircuitView, type GatewayStatus, type RoutesView, type StatsView };
const VERBS: ReadonlySet<string> = new Set(ADMIN_VERBS);
export const isAdminVerb = (s: string): s is AdminVerb => VERBS.has(s);

export function status(view: GatewayView): GatewayStatus {
  const now = Date.now();
  const nats = view.nats();
  const ov = view.overrides();
  return {
    id: view.id,
    host: hostname(),
    pid: process.pid,
    version: view.version,
    startedAt: view.startedAt.toISOString(),
    uptimeS: Math.round((now - view.startedAt.getTime()) / 1000),
    rootSubject: view.rootSubject,
    ready: view.ready(),
    shuttingDown: view.shuttingDown(),
    nats: { connected: nats.connected, server: nats.server ?? null, reconnects: nats.reconnects },
    inFlight: view.inFlight(),
    requestsPerSecond: Math.round(view.traffic.ratePerSecond(now) * 10) / 10,
    requestsTotal: view.traffic.total,
    overrides: { available: ov.state === 'watching', state: ov.state, bucket: ov.bucket, ...(ov.reason ? { reason: ov.reason } : {}), routes: view.routes.size, rejected: view.routes.rejected.size },
  };
}

export function routes(view: GatewayView): RoutesView {
  return {
    applied: [...view.routes.entries()].map(([subject, r]) => ({
      subject,
      revision: r.revision,
      upstreams: r.upstreams.map((u) => ({ url: u.url, weight: u.weight })),
      balancing: r.config.balancing,
      config: redactRoute(r.config as RouteOptions),
    })),
    rejected: [...view.routes.rejected.entries()].map(([subject, r]) => ({ subject, ...r })),
  };
}

export function backends(view: GatewayView): BackendView[] {
  const now = Date.now();
  const out: BackendView[] = [];
  for (const [route, r] of view.routes.entries()) {
    for (const u of r.upstreams) {
      out.push({
        route,
        url: u.url,
        weight: u.weight,
        available: u.wouldAccept(now),
        healthy: u.healthy,
        activeChecks: u.probed,
        lastProbe: u.lastProbe ? { at: new Date(u.lastProbe.at).toISOString(), ok: u.lastProbe.ok, detail: u.lastProbe.detail } : null,
        ejected: u.isEjected(now),
        ejectedUntil: u.isEjected(now) ? new Date(u.ejectedUntil).toISOString() : null,
        ejections: u.ejections,
        inFlight: u.inFlight,
        requests: u.requests,
        failures: u.failures,
        breaker: u.breaker?.stateAt(now) ?? null,
      });
    }
  }
  return out;
}

export function circuits(view: GatewayView): CircuitView[] {
  const now = Date.now();
  const out: CircuitView[] = [];
  for (const [route, r] of view.routes.entries()) {
    for (const u of r.upstreams) {
      const b = u.breaker;
      if (b === undefined) continue;
      const state = b.stateAt(now);
      out.push({
        route,
        url: u.url,
        state,
        consecutiveFailures: b.consecutiveFailures,
        trips: b.trips,
        nextTrialAt: state === 'open' ? new Date(b.nextTrialAt()).toISOString() : null,
      });
    }
  }
  return out;
}

const round = (x: number | null) => (x === null ? null : Math.round(x * 100) / 100);

export function stats(view: GatewayView): StatsView[] {
  return view.traffic.all().map((t) => ({
    route: t.route,
    target: t.target,
    requests: t.count,
    byStatusClass: t.byStatusClass(),
    clientAborts: t.clientAborts,
    latencyMs: { p50: round(t.quantileMs(0.5)), p90: round(t.quantileMs(0.9)), p99: round(t.quantileMs(0.99)) },
    bytes: t.bytes,
  }));
}

/** The answer to an admin verb. */
export function answer(view: GatewayView, verb: AdminVerb): unknown {
  switch (verb) {
    case 'status':
      return status(view);
    case 'routes':
      return routes(view);
    case 'backends':
      return backends(view);
    case 'circuits':
      return circuits(view);
    case 'stats':
      return stats(view);
  }
}
