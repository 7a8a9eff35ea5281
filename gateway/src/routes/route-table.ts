/**
 * The effective overrides of one gateway: KV keys under its root subject,
 * each a RouteRuntime; the longest key that is the subject or a prefix of it
 * (at a token boundary) wins. Keys outside the root are ignored, so one
 * bucket serves many gateways. An invalid value is rejected with its reason
 * and the last good version of that key keeps serving.
 */
import { BackendRegistry } from '../http/upstream/backend-registry.js';
import type { UpstreamEvents } from '../http/upstream/upstream.js';
import { combinePolicies, compilePolicy, type CompiledPolicy, type EffectivePolicy } from '../policy/route-policy.js';
import type { RateLimiter } from '../policy/rate-limiter.js';
import { PolicyRoute } from './policy-route.js';
import { RawRoute } from './raw-route.js';
import { RouteRuntime } from './route.js';
import { isRouteKey, parseRoute } from './route-schema.js';

export interface Rejection {
  revision: number;
  reason: string;
  at: string;
}

/** An entry of the table: an HTTP override, a subject tree sent to NATS raw, or only a policy. */
export type Route = RouteRuntime | RawRoute | PolicyRoute;

/** What applies to a path: the target (undefined: NATS with the envelope) and the effective policy. */
export interface Resolved {
  readonly route: RouteRuntime | RawRoute | undefined;
  readonly policy: EffectivePolicy | undefined;
}

/** Per entry: its resolution, made once per table generation. */
const resolvedCache = new WeakMap<Route, { generation: number; resolved: Resolved }>();

export type PutResult = { status: 'applied'; route: Route } | { status: 'rejected'; reason: string } | { status: 'ignored' } | { status: 'unchanged' };

/**
 * The entries that apply to `subject`, most specific first: the subject and
 * each prefix of it at a token boundary, down to the root (`rootLength`
 * characters). The gateway's resolve() and `natsgw routes explain` both walk
 * the tree with this.
 */
export function keyChain<T>(subject: string, rootLength: number, lookup: (key: string) => T | undefined): T[] {
  const chain: T[] = [];
  let s = subject;
  for (;;) {
    const r = lookup(s);
    if (r !== undefined) chain.push(r);
    const dot = s.lastIndexOf('.');
    if (dot < rootLength) return chain;
    s = s.slice(0, dot);
  }
}

export class RouteTable {
  private readonly routes = new Map<string, Route>();
  readonly rejected = new Map<string, Rejection>();
  /** The backends the routes use, each once however many routes name it. */
  readonly backends: BackendRegistry;
  /** Fleet rate limiters of this table that took tokens since their last report (fleet-limits.ts). */
  readonly fleetDirty = new Set<RateLimiter>();
  /** Bumped by every change: cached resolutions of an older generation are made again. */
  private generation = 0;

  constructor(
    readonly rootSubject: string,
    events: UpstreamEvents = {},
  ) {
    this.backends = new BackendRegistry(events);
  }

  get size(): number {
    return this.routes.size;
  }

  /** True when `key` concerns this gateway (the root or below it). */
  covers(key: string): boolean {
    return key === this.rootSubject || key.startsWith(this.rootSubject + '.');
  }

  /** The entry stored under exactly `key`. */
  get(key: string): Route | undefined {
    return this.routes.get(key);
  }

  /** The most specific entry whose key is `subject` or a prefix of it (at a token boundary). */
  private closest(subject: string): Route | undefined {
    if (this.routes.size === 0) return undefined;
    let s = subject;
    const rootLength = this.rootSubject.length;
    for (;;) {
      const r = this.routes.get(s);
      if (r !== undefined) return r;
      const dot = s.lastIndexOf('.');
      if (dot < rootLength) return undefined;
      s = s.slice(0, dot);
    }
  }

  /**
   * The target of `subject` (the most specific override or raw route
   * covering it; policy-only entries are passed over), if any.
   * @example table.match('api.legacy.users.7') // the route stored under api.legacy
   */
  match(subject: string): RouteRuntime | RawRoute | undefined {
    return this.resolve(subject)?.route;
  }

  /**
   * What applies to `subject`: its target and its effective policy (each
   * block from the most specific key that sets it). The same object for
   * every path below the same entry until the table changes.
   */
  resolve(subject: string): Resolved | undefined {
    const entry = this.closest(subject);
    if (entry === undefined) return undefined;
    const cached = resolvedCache.get(entry);
    if (cached !== undefined && cached.generation === this.generation) return cached.resolved;
    const chain = keyChain(entry.key, this.rootSubject.length, (k) => this.routes.get(k));
    const target = chain.find((r) => r.kind !== 'policy') as RouteRuntime | RawRoute | undefined;
    const resolved: Resolved = { route: target, policy: combinePolicies(chain) };
    resolvedCache.set(entry, { generation: this.generation, resolved });
    return resolved;
  }

  put(key: string, value: Uint8Array | string, revision: number): PutResult {
    if (!this.covers(key)) return { status: 'ignored' };
    // The same revision again (a re-watch after a reconnect): nothing changed.
    const current = this.routes.get(key);
    if (current !== undefined && current.revision === revision) return { status: 'unchanged' };
    if (this.rejected.get(key)?.revision === revision) return { status: 'unchanged' };
    const reject = (reason: string): PutResult => this.reject(key, revision, reason);
    if (!isRouteKey(key)) return reject('key is not a subject');
    const parsed = parseRoute(value);
    if (!parsed.ok) return reject(parsed.reason);
    const config = parsed.config;
    // Compiled before anything changes: a policy that cannot be compiled leaves the last good version serving.
    let policy: CompiledPolicy | undefined;
    try {
      policy = config.policy === undefined ? undefined : compilePolicy(config.policy, key, current?.policy, this.fleetDirty);
    } catch (err) {
      return reject(`policy: ${(err as Error).message}`);
    }
    const route =
      config.target === 'nats-raw'
        ? new RawRoute(key, revision, config)
        : config.target === 'policy'
          ? new PolicyRoute(key, revision, config)
          : new RouteRuntime(key, revision, config, this.rootSubject, current?.kind === 'http' ? current : undefined, this.backends);
    route.policy = policy;
    this.routes.set(key, route);
    this.generation++;
    if (current?.kind === 'http') current.release(this.backends);
    this.rejected.delete(key);
    return { status: 'applied', route };
  }

  /**
   * Records `key`'s entry at `revision` as rejected; whatever served the key
   * before (its last good version, or NATS) keeps serving.
   */
  reject(key: string, revision: number, reason: string): PutResult {
    this.rejected.set(key, { revision, reason, at: new Date().toISOString() });
    return { status: 'rejected', reason };
  }

  /** The key was deleted: its paths go back to NATS. */
  delete(key: string): boolean {
    const route = this.routes.get(key);
    this.rejected.delete(key);
    if (route === undefined) return false;
    this.routes.delete(key);
    this.generation++;
    if (route.kind === 'http') route.release(this.backends);
    return true;
  }

  /** Keys currently applied. */
  keys(): string[] {
    return [...this.routes.keys()];
  }

  entries(): IterableIterator<[string, Route]> {
    return this.routes.entries();
  }

  /** Drops every route (shutdown). */
  clear(): void {
    for (const key of [...this.routes.keys()]) this.delete(key);
  }
}
