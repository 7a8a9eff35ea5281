/**
 * The backends of one gateway, shared by the routes that name them.
 *
 * A backend is a URL plus the settings that shape its state: the pool
 * (maxConnections, connectTimeoutMs), ejection (passiveHealth's
 * consecutiveFailures, baseEjectionMs, maxEjectionMs), the circuit breaker
 * and the health checks. Routes naming the same URL with the same settings
 * share one Upstream: one pool, one health checker, one breaker. Routes
 * naming it with other settings get a backend of their own, so no route's
 * settings ever change another route's backend, and nothing depends on the
 * order routes were written in. What stays per route: weights, balancing,
 * retries and their budget, timeouts, body limit, prefixes, headers, which
 * statuses count as failures, and the share of its backends it lets be
 * ejected.
 *
 * A backend lives while a route version uses it; when the last one lets go
 * it is retired (its pool closes once its requests finish).
 */
import { createHash } from 'node:crypto';
import type { RouteConfig } from '../../routes/route-schema.js';
import { Upstream, type BackendSettings, type UpstreamEvents } from './upstream.js';

/** The backend settings a route's config gives its backends. */
export function backendSettings(config: RouteConfig): BackendSettings {
  const p = config.passiveHealth;
  return {
    pool: { maxConnections: config.maxConnections, connectTimeoutMs: config.connectTimeoutMs },
    passive: { consecutiveFailures: p.consecutiveFailures, baseEjectionMs: p.baseEjectionMs, maxEjectionMs: p.maxEjectionMs },
    breaker: config.circuitBreaker,
    healthCheck: config.healthCheck,
  };
}

/** The settings as text in a fixed order (the identity of a backend, with its URL). */
function canonical(s: BackendSettings): string {
  const b = s.breaker;
  const h = s.healthCheck;
  return JSON.stringify([
    s.pool.maxConnections,
    s.pool.connectTimeoutMs,
    s.passive.consecutiveFailures,
    s.passive.baseEjectionMs,
    s.passive.maxEjectionMs,
    b === undefined ? null : [b.failureThreshold, b.successThreshold, b.openMs, b.maxOpenMs, b.halfOpenRequests],
    h === undefined ? null : [h.path, h.intervalMs, h.unhealthyIntervalMs, h.timeoutMs, h.unhealthyThreshold, h.healthyThreshold, h.expectedStatus.min, h.expectedStatus.max],
  ]);
}

/** A user of backends: a route version. */
export interface BackendUser {
  readonly key: string;
}

export class BackendRegistry {
  /** Live backends by identity: URL and settings text (kept on each as `identity`). */
  private readonly byIdentity = new Map<string, Upstream>();

  constructor(private readonly events: UpstreamEvents = {}) {}

  get size(): number {
    return this.byIdentity.size;
  }

  all(): IterableIterator<Upstream> {
    return this.byIdentity.values();
  }

  /**
   * The backend for `href` with `settings`, used by `user` from now on.
   * `previous`, the backend the same route's previous version used for this
   * URL, is given new settings in place when that route was its only user
   * and no backend has those settings yet: a route changing its own pool or
   * health settings keeps its backends' health, ejection and breaker state.
   */
  use(href: string, settings: BackendSettings, user: BackendUser, previous?: { upstream: Upstream; user: BackendUser }): Upstream {
    const text = canonical(settings);
    const identity = href + ' ' + text;
    let upstream = this.byIdentity.get(identity);
    if (upstream === undefined) {
      const id = createHash('sha256').update(text).digest('hex').slice(0, 8);
      const p = previous?.upstream;
      if (p !== undefined && !p.retired && p.users.size === 1 && p.users.has(previous!.user)) {
        this.byIdentity.delete(p.identity);
        p.reconfigure(settings, id);
        upstream = p;
      } else {
        upstream = new Upstream(href, settings, this.events, id);
      }
      upstream.identity = identity;
      this.byIdentity.set(identity, upstream);
    }
    upstream.users.add(user);
    return upstream;
  }

  /** `user` no longer uses `upstream`; the last user's release retires it. */
  release(upstream: Upstream, user: BackendUser): void {
    if (!upstream.users.delete(user) || upstream.users.size > 0) return;
    if (this.byIdentity.get(upstream.identity) === upstream) this.byIdentity.delete(upstream.identity);
    upstream.retire();
  }
}
