/**
 * Balancing policies. Each picks one available backend, never one in
 * `exclude` (those already tried for this request), or undefined when none
 * is left. Selection allocates nothing: state lives in arrays sized once per
 * route version.
 *
 * The same conformance suite (test/balancer.test.ts) runs against every
 * policy: weights are honoured, unavailable backends are never chosen.
 */
import type { BalancingPolicy } from '../../routes/route-schema.js';
import type { Upstream } from './upstream.js';

export interface Balancer {
  pick(now: number, exclude: ReadonlySet<Upstream> | undefined): Upstream | undefined;
}

type Random = () => number;

abstract class Base implements Balancer {
  protected readonly usable: Uint8Array;
  constructor(
    protected readonly upstreams: readonly Upstream[],
    /** The route's weight for each backend (weights are the route's: routes sharing a backend may weigh it differently). */
    protected readonly weights: readonly number[],
    protected readonly random: Random,
  ) {
    this.usable = new Uint8Array(upstreams.length);
  }

  /** Marks the usable backends; returns their total weight. */
  protected scan(now: number, exclude: ReadonlySet<Upstream> | undefined): number {
    let total = 0;
    for (let i = 0; i < this.upstreams.length; i++) {
      const u = this.upstreams[i]!;
      const ok = u.isAvailable(now) && (exclude === undefined || !exclude.has(u));
      this.usable[i] = ok ? 1 : 0;
      if (ok) total += this.weights[i]!;
    }
    return total;
  }

  /** A usable backend chosen at random in proportion to weight. */
  protected weightedRandom(total: number, skip = -1): number {
    let r = this.random() * total;
    let last = -1;
    for (let i = 0; i < this.upstreams.length; i++) {
      if (this.usable[i] !== 1 || i === skip) continue;
      last = i;
      r -= this.weights[i]!;
      if (r < 0) return i;
    }
    return last;
  }

  abstract pick(now: number, exclude: ReadonlySet<Upstream> | undefined): Upstream | undefined;
}

/** nginx's smooth weighted round robin: weights are honoured without bursts (a,a,b for 2:1 becomes a,b,a). */
class SmoothRoundRobin extends Base {
  private readonly current: Float64Array;
  constructor(upstreams: readonly Upstream[], weights: readonly number[], random: Random) {
    super(upstreams, weights, random);
    this.current = new Float64Array(upstreams.length);
  }
  pick(now: number, exclude: ReadonlySet<Upstream> | undefined): Upstream | undefined {
    const total = this.scan(now, exclude);
    if (total === 0) return undefined;
    let best = -1;
    for (let i = 0; i < this.upstreams.length; i++) {
      if (this.usable[i] !== 1) continue;
      this.current[i]! += this.weights[i]!;
      if (best < 0 || this.current[i]! > this.current[best]!) best = i;
    }
    this.current[best]! -= total;
    return this.upstreams[best];
  }
}

/** Fewest requests in flight per unit of weight; ties go round the list. */
class LeastConnections extends Base {
  private start = 0;
  pick(now: number, exclude: ReadonlySet<Upstream> | undefined): Upstream | undefined {
    if (this.scan(now, exclude) === 0) return undefined;
    const n = this.upstreams.length;
    let best = -1;
    let bestLoad = Infinity;
    for (let k = 0; k < n; k++) {
      const i = (this.start + k) % n;
      if (this.usable[i] !== 1) continue;
      const load = this.upstreams[i]!.inFlight / this.weights[i]!;
      if (load < bestLoad) {
        best = i;
        bestLoad = load;
      }
    }
    this.start = (this.start + 1) % n;
    return this.upstreams[best];
  }
}

class WeightedRandom extends Base {
  pick(now: number, exclude: ReadonlySet<Upstream> | undefined): Upstream | undefined {
    const total = this.scan(now, exclude);
    return total === 0 ? undefined : this.upstreams[this.weightedRandom(total)];
  }
}

/**
 * Power of two choices: two distinct backends drawn by weight, the one with
 * fewer requests in flight (per weight) wins. Nearly as good as
 * least-connections at avoiding slow backends, without every gateway in a
 * fleet piling onto the same "least loaded" one.
 */
class PowerOfTwoChoices extends Base {
  pick(now: number, exclude: ReadonlySet<Upstream> | undefined): Upstream | undefined {
    const total = this.scan(now, exclude);
    if (total === 0) return undefined;
    const a = this.weightedRandom(total);
    const remaining = total - this.weights[a]!;
    if (remaining <= 0) return this.upstreams[a];
    const b = this.weightedRandom(remaining, a);
    const ua = this.upstreams[a]!;
    const ub = this.upstreams[b]!;
    return ub.inFlight / this.weights[b]! < ua.inFlight / this.weights[a]! ? ub : ua;
  }
}

/**
 * @example const balancer = createBalancer('p2c', upstreams, [1, 1]); balancer.pick(Date.now(), undefined)
 */
export function createBalancer(policy: BalancingPolicy, upstreams: readonly Upstream[], weights: readonly number[], random: Random = Math.random): Balancer {
  switch (policy) {
    case 'round-robin':
      return new SmoothRoundRobin(upstreams, weights, random);
    case 'least-connections':
      return new LeastConnections(upstreams, weights, random);
    case 'random':
      return new WeightedRandom(upstreams, weights, random);
    case 'p2c':
      return new PowerOfTwoChoices(upstreams, weights, random);
  }
}
