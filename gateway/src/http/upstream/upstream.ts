/**
 * One backend HTTP server: its connection pool, what is in flight, and
 * whether it may take traffic.
 *
 * Available = healthy (active checks) && not ejected (passive health) &&
 * breaker admits (circuit breaker) — Caddy's Available() = Healthy() && !Full().
 *
 * Upstream objects outlive route updates: when a route changes, the backends
 * whose URL stays keep their object, so their health, ejection and breaker
 * state carry over (see RouteRuntime).
 */
import { createRequire } from 'node:module';
import type { Pool } from 'undici';
import { CircuitBreaker, type BreakerSettings, type BreakerState } from './breaker.js';
import type { HealthChecker } from './health-checker.js';

/**
 * undici is loaded with the first backend, not at start: a gateway without
 * HTTP overrides never needs it, and it is the largest part of the
 * gateway's start-up memory after nats.js (≈ 8 MB RSS, README "Memory").
 */
let PoolClass: typeof Pool | undefined;
function undiciPool(): typeof Pool {
  return (PoolClass ??= (createRequire(import.meta.url)('undici') as typeof import('undici')).Pool);
}

export interface PassiveHealthSettings {
  consecutiveFailures: number;
  baseEjectionMs: number;
  maxEjectionMs: number;
  maxEjectionPercent: number;
  failureStatuses: readonly number[];
}

export interface PoolSettings {
  maxConnections: number;
  connectTimeoutMs: number;
}

export interface UpstreamEvents {
  onBreakerChange?(upstream: Upstream, from: BreakerState, to: BreakerState): void;
  onEjected?(upstream: Upstream, forMs: number): void;
  onHealthChange?(upstream: Upstream, healthy: boolean): void;
}

/** The outcome of one try, as far as this backend's health is concerned. */
export type TryOutcome = 'success' | 'failure' | 'neutral';

export class Upstream {
  readonly url: string;
  readonly origin: string;
  /** Path of the base URL without a trailing slash ('' for none). */
  readonly basePath: string;
  weight: number;
  pool: Pool;
  private poolSettings: PoolSettings;

  inFlight = 0;
  // Counters for metrics (they survive route updates with the object).
  requests = 0;
  successes = 0;
  failures = 0;
  /** Tries that ended without a verdict (the client went away). */
  abandoned = 0;
  retries = 0;
  timeouts = 0;
  connectErrors = 0;
  readonly breakerTransitions: Record<BreakerState, number> = { closed: 0, open: 0, 'half-open': 0 };
  /** Active health: false after unhealthyThreshold failed probes (or an ejection, when probes run). */
  healthy = true;
  /** Whether active health checks run for this backend. */
  probed = false;
  lastProbe: { at: number; ok: boolean; detail: string } | undefined;
  consecutiveFailures = 0;
  ejections = 0;
  ejectedUntil = 0;
  breaker: CircuitBreaker | undefined;
  /** Active health checks, when the route configures them. */
  checker: HealthChecker | undefined;
  retired = false;

  constructor(
    url: string,
    weight: number,
    pool: PoolSettings,
    public passive: PassiveHealthSettings,
    breaker: BreakerSettings | undefined,
    private readonly events: UpstreamEvents = {},
  ) {
    const u = new URL(url);
    this.url = url;
    this.origin = u.origin;
    this.basePath = u.pathname === '/' ? '' : u.pathname.replace(/\/$/, '');
    this.weight = weight;
    this.poolSettings = pool;
    this.pool = Upstream.createPool(this.origin, pool);
    this.setBreaker(breaker);
  }

  private static createPool(origin: string, s: PoolSettings): Pool {
    return new (undiciPool())(origin, {
      connections: s.maxConnections,
      pipelining: 1,
      connect: { timeout: s.connectTimeoutMs },
      keepAliveTimeout: 4_000,
      // No undici timers: the proxy keeps its own limits (ProxyRequest.tick).
      headersTimeout: 0,
      bodyTimeout: 0,
    });
  }

  /** Applies a route update; the pool is replaced (the old one drains) only if its settings changed. */
  update(weight: number, pool: PoolSettings, passive: PassiveHealthSettings, breaker: BreakerSettings | undefined): void {
    this.weight = weight;
    this.passive = passive;
    if (pool.maxConnections !== this.poolSettings.maxConnections || pool.connectTimeoutMs !== this.poolSettings.connectTimeoutMs) {
      const old = this.pool;
      this.pool = Upstream.createPool(this.origin, pool);
      this.poolSettings = pool;
      void old.close().catch(() => undefined);
    }
    if (breaker === undefined) this.breaker = undefined;
    else if (this.breaker === undefined) this.setBreaker(breaker);
    else this.breaker.settings = breaker;
  }

  private setBreaker(settings: BreakerSettings | undefined): void {
    this.breaker =
      settings === undefined
        ? undefined
        : new CircuitBreaker(settings, (from, to) => {
            this.breakerTransitions[to]++;
            this.events.onBreakerChange?.(this, from, to);
          });
  }

  isEjected(now: number): boolean {
    return now < this.ejectedUntil;
  }

  /** May take a request now; for picking one (an open breaker whose wait is over moves to half-open). */
  isAvailable(now: number): boolean {
    return this.inService(now) && (this.breaker === undefined || this.breaker.canAccept(now));
  }

  /** Whether it would take a request now, changing nothing: for admin views, metrics and messages. */
  wouldAccept(now: number): boolean {
    return this.inService(now) && (this.breaker === undefined || this.breaker.admitsAt(now));
  }

  private inService(now: number): boolean {
    return !this.retired && this.healthy && now >= this.ejectedUntil;
  }

  /** A request is being sent here. */
  acquire(): void {
    this.inFlight++;
    this.requests++;
    this.breaker?.acquire();
  }

  /**
   * A try ended. `mayEject` says whether the route can spare this backend
   * (the max-ejection share). Returns true if this failure ejected it.
   */
  release(outcome: TryOutcome, now: number, mayEject: () => boolean): boolean {
    this.inFlight--;
    if (outcome === 'neutral') {
      this.abandoned++;
      this.breaker?.onAbandon();
      return false;
    }
    if (outcome === 'success') {
      this.successes++;
      this.consecutiveFailures = 0;
      // A long healthy stretch forgives earlier ejections.
      if (this.ejections > 0 && now - this.ejectedUntil > this.passive.maxEjectionMs) this.ejections = 0;
      this.breaker?.onSuccess();
      return false;
    }
    this.failures++;
    this.breaker?.onFailure(now);
    if (++this.consecutiveFailures < this.passive.consecutiveFailures || this.isEjected(now) || !mayEject()) return false;
    this.ejections++;
    const forMs = Math.min(this.passive.baseEjectionMs * this.ejections, this.passive.maxEjectionMs);
    this.ejectedUntil = now + forMs;
    this.consecutiveFailures = 0;
    // With active checks, coming back also takes healthyThreshold good probes.
    if (this.probed) this.setHealthy(false);
    this.events.onEjected?.(this, forMs);
    return true;
  }

  setHealthy(healthy: boolean): void {
    if (this.healthy === healthy) return;
    this.healthy = healthy;
    this.events.onHealthChange?.(this, healthy);
  }

  /** Stops using this backend; its connections close once their requests finish. */
  retire(): void {
    this.retired = true;
    this.checker?.stop();
    void this.pool.close().catch(() => undefined);
  }
}
