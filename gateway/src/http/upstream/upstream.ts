/**
 * One backend HTTP server: its connection pool, what is in flight, and
 * whether it may take traffic.
 *
 * Available = healthy (active checks) && not ejected (passive health) &&
 * breaker admits (circuit breaker) — Caddy's Available() = Healthy() && !Full().
 *
 * A backend is a URL plus the settings that shape its state (pool,
 * ejection, breaker, health checks: BackendSettings). Routes that name the
 * same URL with the same settings share one Upstream, so its pool, health
 * checks and breaker exist once however many routes use it
 * (BackendRegistry). Upstream objects outlive route updates: a backend whose
 * URL and settings stay keeps its object, so its health, ejection and
 * breaker state carry over.
 */
import { createRequire } from 'node:module';
import type { Pool } from 'undici';
import { CircuitBreaker, type BreakerSettings, type BreakerState } from './breaker.js';
import { HealthChecker, type HealthCheckSettings } from './health-checker.js';

/**
 * undici is loaded with the first pool, not at start: a gateway without
 * HTTP overrides never needs it. And only its Pool: undici's index also
 * loads fetch, WebSocket, caches, mocks and proxy agents, which the gateway
 * never uses, for ≈ 8 MB more RSS (measured here: Pool alone +10 MB, the
 * index +19 MB). The deep path is undici's own layout, not its API: should
 * an update move it, the index is loaded instead (and a test says so).
 */
let PoolClass: typeof Pool | undefined;
/** Which way undici was loaded ('pool' or 'index'), for that test. */
export let undiciLoadedFrom: 'pool' | 'index' | undefined;
function undiciPool(): typeof Pool {
  if (PoolClass !== undefined) return PoolClass;
  const require = createRequire(import.meta.url);
  try {
    PoolClass = require('undici/lib/dispatcher/pool.js') as typeof Pool;
    undiciLoadedFrom = 'pool';
  } catch {
    PoolClass = (require('undici') as typeof import('undici')).Pool;
    undiciLoadedFrom = 'index';
  }
  return PoolClass;
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

/** What a backend's ejection state machine needs of passiveHealth (the rest is the route's). */
export type EjectionSettings = Pick<PassiveHealthSettings, 'consecutiveFailures' | 'baseEjectionMs' | 'maxEjectionMs'>;

/** The settings that belong to a backend rather than to a route. */
export interface BackendSettings {
  readonly pool: PoolSettings;
  readonly passive: EjectionSettings;
  readonly breaker?: BreakerSettings | undefined;
  readonly healthCheck?: HealthCheckSettings | undefined;
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
  /** Short hash of the settings, telling apart two backends with the same URL (metrics label, /backends). */
  settingsId: string;
  /** URL and settings text: what the BackendRegistry knows it by. */
  identity = '';
  settings: BackendSettings;
  /** The route versions using this backend (BackendRegistry counts them). */
  readonly users = new Set<{ readonly key: string }>();
  private connections: Pool | undefined;

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
  /** Active health checks, when the settings have them. */
  checker: HealthChecker | undefined;
  retired = false;

  constructor(
    url: string,
    settings: BackendSettings,
    private readonly events: UpstreamEvents = {},
    settingsId = '',
  ) {
    const u = new URL(url);
    this.url = url;
    this.origin = u.origin;
    this.basePath = u.pathname === '/' ? '' : u.pathname.replace(/\/$/, '');
    this.settings = settings;
    this.settingsId = settingsId;
    this.setBreaker(settings.breaker);
    this.setHealthCheck(settings.healthCheck);
  }

  get passive(): EjectionSettings {
    return this.settings.passive;
  }

  /** The connection pool, made on first use: a backend nobody sends to holds no pool (and undici connects on the first request). */
  get pool(): Pool {
    return (this.connections ??= Upstream.createPool(this.origin, this.settings.pool));
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

  /**
   * New settings for this backend (its only route changed them): health,
   * ejection and breaker state carry over; the pool is replaced (the old
   * one drains) only if its settings changed.
   */
  reconfigure(settings: BackendSettings, settingsId: string): void {
    const before = this.settings;
    this.settings = settings;
    this.settingsId = settingsId;
    if (this.connections !== undefined && (settings.pool.maxConnections !== before.pool.maxConnections || settings.pool.connectTimeoutMs !== before.pool.connectTimeoutMs)) {
      const old = this.connections;
      this.connections = undefined;
      void old.close().catch(() => undefined);
    }
    if (settings.breaker === undefined) this.breaker = undefined;
    else if (this.breaker === undefined) this.setBreaker(settings.breaker);
    else this.breaker.settings = settings.breaker;
    this.setHealthCheck(settings.healthCheck);
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

  private setHealthCheck(settings: HealthCheckSettings | undefined): void {
    if (settings === undefined) {
      this.checker?.stop();
      this.checker = undefined;
      this.setHealthy(true);
    } else if (this.checker !== undefined) {
      this.checker.settings = settings;
    } else {
      this.checker = new HealthChecker(this, settings);
      this.checker.start();
    }
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
    void this.connections?.close().catch(() => undefined);
  }
}
