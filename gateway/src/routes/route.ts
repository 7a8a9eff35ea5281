/**
 * One version of one override: its validated config, the backends it uses
 * (shared with other routes through the BackendRegistry), its weights,
 * balancer and retry budget. Requests keep the RouteRuntime they started
 * with, so a route update never changes a request in flight.
 *
 * A route nobody requests stays a small object: its balancer, retry budget
 * and failure-status set are made on its first request.
 */
import type { BackendRegistry } from '../http/upstream/backend-registry.js';
import { backendSettings } from '../http/upstream/backend-registry.js';
import { createBalancer, type Balancer } from '../http/upstream/balancer.js';
import { RetryBudget } from '../http/upstream/retry-budget.js';
import type { Upstream } from '../http/upstream/upstream.js';
import type { CompiledPolicy } from '../policy/route-policy.js';
import type { RouteConfig } from './route-schema.js';

export class RouteRuntime {
  readonly kind = 'http';
  /** The entry's own policy blocks, compiled (route-policy.ts). */
  policy: CompiledPolicy | undefined = undefined;
  readonly upstreams: readonly Upstream[];
  /** Path segments to drop (stripPrefix): the route subject's tokens below the root; 0 without stripPrefix. */
  readonly stripSegments: number;
  private picker: Balancer | undefined;
  private retryBudget: RetryBudget | undefined;
  private failures: ReadonlySet<number> | undefined;
  private ejectGuard: (() => boolean) | undefined;

  constructor(
    readonly key: string,
    readonly revision: number,
    readonly config: RouteConfig,
    rootSubject: string,
    previous: RouteRuntime | undefined,
    registry: BackendRegistry,
  ) {
    const settings = backendSettings(config);
    const before = new Map(previous?.upstreams.map((u) => [u.url, u]) ?? []);
    this.upstreams = config.upstreams.map(({ url }) => {
      const href = new URL(url).href;
      const old = before.get(href);
      return registry.use(href, settings, this, old === undefined ? undefined : { upstream: old, user: previous! });
    });
    this.retryBudget = previous?.retryBudget;
    if (this.retryBudget !== undefined) this.retryBudget.settings = config.retryBudget;
    this.stripSegments = !config.stripPrefix || key === rootSubject ? 0 : key.split('.').length - rootSubject.split('.').length;
  }

  /** The route's weight for upstreams[i]. */
  weight(i: number): number {
    return this.config.upstreams[i]!.weight;
  }

  get balancer(): Balancer {
    return (this.picker ??= createBalancer(
      this.config.balancing,
      this.upstreams,
      this.config.upstreams.map((u) => u.weight),
    ));
  }

  get budget(): RetryBudget {
    return (this.retryBudget ??= new RetryBudget(this.config.retryBudget));
  }

  get failureStatuses(): ReadonlySet<number> {
    return (this.failures ??= new Set(this.config.passiveHealth.failureStatuses));
  }

  /** Whether this route can spare one more ejected backend (passiveHealth.maxEjectionPercent of its backends). */
  get mayEject(): () => boolean {
    return (this.ejectGuard ??= () => {
      const now = Date.now();
      let ejected = 0;
      for (const u of this.upstreams) if (u.isEjected(now)) ejected++;
      return (ejected + 1) * 100 <= this.config.passiveHealth.maxEjectionPercent * this.upstreams.length;
    });
  }

  /** Lets go of this version's backends; a backend no route uses any more is retired (it closes once drained). */
  release(registry: BackendRegistry): void {
    for (const u of this.upstreams) registry.release(u, this);
  }
}
