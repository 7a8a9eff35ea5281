/**
 * One version of one override: its validated config, its backends, balancer
 * and retry budget. Requests keep the RouteRuntime they started with, so a
 * route update never changes a request in flight.
 */
import { createBalancer, type Balancer } from '../http/upstream/balancer.js';
import { HealthChecker } from '../http/upstream/health-checker.js';
import { RetryBudget } from '../http/upstream/retry-budget.js';
import { Upstream, type UpstreamEvents } from '../http/upstream/upstream.js';
import type { RouteConfig } from './route-schema.js';

export class RouteRuntime {
  readonly upstreams: readonly Upstream[];
  readonly balancer: Balancer;
  readonly budget: RetryBudget;
  /** Path segments to drop (stripPrefix): the route subject's tokens below the root; 0 without stripPrefix. */
  readonly stripSegments: number;
  readonly failureStatuses: ReadonlySet<number>;
  readonly mayEject = (): boolean => {
    const now = Date.now();
    let ejected = 0;
    for (const u of this.upstreams) if (u.isEjected(now)) ejected++;
    return (ejected + 1) * 100 <= this.config.passiveHealth.maxEjectionPercent * this.upstreams.length;
  };

  constructor(
    readonly key: string,
    readonly revision: number,
    readonly config: RouteConfig,
    rootSubject: string,
    previous: RouteRuntime | undefined,
    events: UpstreamEvents,
  ) {
    const pool = { maxConnections: config.maxConnections, connectTimeoutMs: config.connectTimeoutMs };
    const reuse = new Map(previous?.upstreams.map((u) => [u.url, u]) ?? []);
    this.upstreams = config.upstreams.map(({ url, weight }) => {
      const href = new URL(url).href;
      const existing = reuse.get(href);
      if (existing !== undefined) {
        existing.update(weight, pool, config.passiveHealth, config.circuitBreaker);
        return existing;
      }
      return new Upstream(href, weight, pool, config.passiveHealth, config.circuitBreaker, events);
    });
    for (const u of this.upstreams) {
      if (config.healthCheck === undefined) {
        u.checker?.stop();
        u.checker = undefined;
        u.setHealthy(true);
      } else if (u.checker !== undefined) {
        u.checker.settings = config.healthCheck;
      } else {
        u.checker = new HealthChecker(u, config.healthCheck);
        u.checker.start();
      }
    }
    this.balancer = createBalancer(config.balancing, this.upstreams);
    this.budget = previous?.budget ?? new RetryBudget(config.retryBudget);
    this.budget.settings = config.retryBudget;
    this.stripSegments = !config.stripPrefix || key === rootSubject ? 0 : key.split('.').length - rootSubject.split('.').length;
    this.failureStatuses = new Set(config.passiveHealth.failureStatuses);
  }

  /** Retires the backends that `next` no longer has (they close once drained). */
  retireRemoved(next: RouteRuntime | undefined): void {
    const kept = new Set(next?.upstreams ?? []);
    for (const u of this.upstreams) if (!kept.has(u)) u.retire();
  }
}
