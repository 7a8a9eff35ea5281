/**
 * The admin views of a gateway, as plain JSON: what /status, /routes,
 * /backends, /circuits and /stats answer, over HTTP and over NATS alike.
 */
import { hostname } from 'node:os';
import { redactRoute, type RouteOptions } from '../routes/route-schema.js';
import type { Upstream } from '../http/upstream/upstream.js';
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
    websockets: view.websockets(),
    requestsPerSecond: Math.round(view.traffic.ratePerSecond(now) * 10) / 10,
    requestsTotal: view.traffic.total,
    overrides: { available: ov.state === 'watching', state: ov.state, bucket: ov.bucket, ...(ov.reason ? { reason: ov.reason } : {}), routes: view.routes.size, rejected: view.routes.rejected.size },
  };
}

export function routes(view: GatewayView): RoutesView {
  return {
    applied: [...view.routes.entries()].map(([subject, r]) =>
      r.kind !== 'http'
        ? { subject, revision: r.revision, target: r.kind, upstreams: [], balancing: '', config: redactRoute({ ...r.config }) }
        : {
            subject,
            revision: r.revision,
            target: r.kind,
            upstreams: r.upstreams.map((u, i) => ({ url: u.url, weight: r.weight(i) })),
            balancing: r.config.balancing,
            config: redactRoute(r.config as RouteOptions),
          },
    ),
    rejected: [...view.routes.rejected.entries()].map(([subject, r]) => ({ subject, ...r })),
  };
}

/** Routes listed per backend in /backends and /circuits; `routeCount` has them all. */
export const LISTED_ROUTES = 100;

/** The routes using `u`, sorted, at most LISTED_ROUTES of them. */
function routesOf(u: Upstream): { routes: string[]; routeCount: number } {
  const keys = new Set<string>();
  for (const user of u.users) keys.add(user.key);
  return { routes: [...keys].sort().slice(0, LISTED_ROUTES), routeCount: keys.size };
}

/** Each backend once, with the routes that use it. */
export function backends(view: GatewayView): BackendView[] {
  const now = Date.now();
  const out: BackendView[] = [];
  for (const u of view.routes.backends.all()) {
    out.push({
      url: u.url,
      settings: u.settingsId,
      ...routesOf(u),
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
  return out;
}

export function circuits(view: GatewayView): CircuitView[] {
  const now = Date.now();
  const out: CircuitView[] = [];
  for (const u of view.routes.backends.all()) {
    const b = u.breaker;
    if (b === undefined) continue;
    const state = b.stateAt(now);
    out.push({
      url: u.url,
      settings: u.settingsId,
      ...routesOf(u),
      state,
      consecutiveFailures: b.consecutiveFailures,
      trips: b.trips,
      nextTrialAt: state === 'open' ? new Date(b.nextTrialAt()).toISOString() : null,
    });
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
