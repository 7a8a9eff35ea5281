/**
 * The override schema: what a value in the routes KV bucket may say.
 *
 * One schema, used by the gateway when it reads the bucket, by the CLI when
 * it writes it, and published as JSON Schema (gateway/schema/route.schema.json)
 * for any other tool. A value the CLI accepts
 * is a value the gateway accepts. Every field has a default, stated here.
 */
// The schema's source is schema-source/route.ts (TypeBox, build-time); this
// validates with the code compiled from the JSON written from it
// (gateway/schema/route.schema.json → gateway/schema/validators/route.cjs).
import type { ErrorObject, ValidateFunction } from 'ajv';
import { checkPolicy, redactPolicy, type PolicyConfig } from '../policy/policy-schema.js';
import { schemaFile, schemaValidators } from '../schema-file.js';
import type { RouteOptions } from '../schema-source/route.js';

export type { RouteOptions } from '../schema-source/route.js';

export const BALANCING_POLICIES = ['p2c', 'round-robin', 'least-connections', 'random'] as const;
export type BalancingPolicy = (typeof BALANCING_POLICIES)[number];

/** A KV key: a subject whose tokens may hold the `=XX` escapes paths map to. */
export const ROUTE_KEY_PATTERN = '^[A-Za-z0-9_=-]+(\\.[A-Za-z0-9_=-]+)*$';
const ROUTE_KEY_RE = new RegExp(ROUTE_KEY_PATTERN);
export const isRouteKey = (key: string): boolean => ROUTE_KEY_RE.test(key);
export const ROUTE_TARGETS = ['http', 'nats-raw'] as const;
export type RouteTarget = (typeof ROUTE_TARGETS)[number];

/** A validated HTTP override with every default filled in. */
export type RouteConfig = Readonly<Omit<RouteOptions, 'healthCheck' | 'circuitBreaker' | 'upstreams' | 'target' | 'policy'>> & {
  readonly policy?: PolicyConfig;
  readonly target: 'http';
  readonly upstreams: NonNullable<RouteOptions['upstreams']>;
  readonly healthCheck?: Required<NonNullable<RouteOptions['healthCheck']>>;
  readonly circuitBreaker?: Required<NonNullable<RouteOptions['circuitBreaker']>>;
};

/** A validated raw NATS route: what of a config applies to one. */
export interface RawRouteConfig {
  readonly target: 'nats-raw';
  readonly maxRequestBodyBytes: number;
  readonly policy?: PolicyConfig;
}

/** A validated entry with only a policy: its subject tree stays on NATS (the envelope), with these policies. */
export interface PolicyOnlyConfig {
  readonly target: 'policy';
  readonly policy: PolicyConfig;
}

/** What an entry of the routes bucket is, once validated. */
export type AnyRouteConfig = RouteConfig | RawRouteConfig | PolicyOnlyConfig;

/** The fields a raw NATS route may have; everything else configures HTTP backends. */
const RAW_ROUTE_FIELDS: ReadonlySet<string> = new Set(['target', 'maxRequestBodyBytes', 'policy']);

/** The published route schema (gateway/schema/route.schema.json), read on first use. */
export const routeSchema = schemaFile<{ properties: Record<keyof RouteOptions, object> }>('route.schema.json');

/** The whole entry's validator and its policy's, compiled at build time (they fill in defaults); loaded on first use. */
const validators = schemaValidators<'route' | 'policy'>('route.cjs');
const validator = (which: 'route' | 'policy'): ValidateFunction => validators()[which];

const prefixed = (e: ErrorObject, at: string): ErrorObject => ({ ...e, instancePath: at + e.instancePath });

function describe(e: ErrorObject): string {
  const where = e.instancePath === '' ? 'route' : e.instancePath.slice(1).replace(/\//g, '.');
  if (e.keyword === 'additionalProperties') return `${where}: unknown field ${(e.params as { additionalProperty: string }).additionalProperty}`;
  if (e.keyword === 'pattern' && where.endsWith('url')) return `${where}: must be an http:// or https:// URL without query or credentials`;
  if (e.keyword === 'enum') return `${where}: must be one of ${(e.params as { allowedValues: unknown[] }).allowedValues.join(', ')}`;
  return `${where}: ${e.message ?? 'is invalid'}`;
}

/**
 * Checks a route value (bytes from the bucket, a JSON string, or an object)
 * and fills in defaults. Returns the frozen config, or the reason it is
 * rejected.
 * @example parseRoute('{"upstreams":[{"url":"http://10.0.0.5:8080"}]}') // { ok: true, config: { balancing: 'p2c', ... } }
 */
export function parseRoute(value: Uint8Array | string | unknown): { ok: true; config: AnyRouteConfig } | { ok: false; reason: string } {
  if (!(value instanceof Uint8Array || typeof value === 'string')) return check(value, true);
  const text = typeof value === 'string' ? value : Buffer.from(value).toString('utf8');
  const seen = recent.get(text);
  if (seen !== undefined) return { ok: true, config: seen };
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch (err) {
    return { ok: false, reason: `not JSON: ${(err as Error).message}` };
  }
  const result = check(obj, false);
  if (result.ok && text.length <= RECENT_MAX_TEXT) {
    // Emptied when full: dropping the oldest one by one would make a Map
    // iterator skip its deleted entries on every insert.
    if (recent.size >= RECENT_SIZE) recent.clear();
    recent.set(text, result.config);
  }
  return result;
}

/**
 * Configs of the values parsed last, by their text. Routes whose values are
 * the same text (a tenant per route, all sent to one backend the same way)
 * share one frozen config: parsed and validated once, one object in memory
 * (a config is ≈ 330 bytes of heap; 100,000 routes of ten distinct values
 * then hold ten). Emptied when full; long values are not kept.
 */
const recent = new Map<string, AnyRouteConfig>();
const RECENT_SIZE = 1024;
const RECENT_MAX_TEXT = 4096;

function check(obj: unknown, fromCaller: boolean): { ok: true; config: AnyRouteConfig } | { ok: false; reason: string } {
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) return { ok: false, reason: 'must be a JSON object' };
  // Validation fills in defaults, in place: an object from the caller is copied first; one parsed here is ours.
  const copy = (fromCaller ? structuredClone(obj) : obj) as Record<string, unknown>;
  // Which blocks the value leaves out: validation gives those their default, which is then the shared one.
  let written = 0;
  for (let i = 0; i < SHARED_BLOCKS.length; i++) if (copy[SHARED_BLOCKS[i]!] !== undefined) written |= 1 << i;
  // Said here first, more plainly than the schema's if/then/else would.
  if (copy.target !== undefined && !(ROUTE_TARGETS as readonly unknown[]).includes(copy.target)) return { ok: false, reason: `target: must be one of ${ROUTE_TARGETS.join(', ')}` };
  if (copy.target === 'nats-raw') {
    const http = Object.keys(copy).find((k) => !RAW_ROUTE_FIELDS.has(k));
    if (http !== undefined) return { ok: false, reason: `${http}: a nats-raw route takes only maxRequestBodyBytes and policy (${http} configures HTTP backends)` };
    if (!validator('route')(copy)) return { ok: false, reason: describe(validator('route').errors![0]!) };
    const bad = copy.policy === undefined ? undefined : checkPolicy(copy.policy as PolicyConfig);
    if (bad !== undefined) return { ok: false, reason: bad };
    const raw: RawRouteConfig = { target: 'nats-raw', maxRequestBodyBytes: copy.maxRequestBodyBytes as number, ...(copy.policy !== undefined ? { policy: copy.policy as PolicyConfig } : {}) };
    return { ok: true, config: deepFreeze(raw) };
  }
  if (copy.upstreams === undefined && copy.target === undefined && copy.policy !== undefined) {
    // Only a policy: validated alone, so no HTTP default is filled in.
    const other = Object.keys(copy).find((k) => k !== 'policy');
    if (other !== undefined) return { ok: false, reason: `${other}: an entry with only a policy takes no other field (add upstreams for an HTTP override)` };
    if (!validator('policy')(copy.policy)) return { ok: false, reason: describe(prefixed(validator('policy').errors![0]!, '/policy')) };
    const bad = checkPolicy(copy.policy as PolicyConfig);
    if (bad !== undefined) return { ok: false, reason: bad };
    return { ok: true, config: deepFreeze({ target: 'policy', policy: copy.policy as PolicyConfig }) };
  }
  if (copy.upstreams === undefined) return { ok: false, reason: 'upstreams: required for an HTTP override (or set target to nats-raw, or give only a policy)' };
  if (!validator('route')(copy)) return { ok: false, reason: describe(validator('route').errors![0]!) };
  if (copy.policy !== undefined) {
    const bad = checkPolicy(copy.policy as PolicyConfig);
    if (bad !== undefined) return { ok: false, reason: bad };
  }
  const c = copy as RouteOptions & { upstreams: NonNullable<RouteOptions['upstreams']> };
  const urls = new Set<string>();
  for (const u of c.upstreams) {
    let href: string;
    try {
      href = new URL(u.url).href;
    } catch {
      return { ok: false, reason: `upstreams: ${u.url} is not a valid URL` };
    }
    if (urls.has(href)) return { ok: false, reason: 'upstreams: the same URL appears twice' };
    urls.add(href);
  }
  if (c.healthCheck && c.healthCheck.expectedStatus!.min! > c.healthCheck.expectedStatus!.max!) {
    return { ok: false, reason: 'healthCheck.expectedStatus: min is above max' };
  }
  if (c.circuitBreaker && c.circuitBreaker.openMs! > c.circuitBreaker.maxOpenMs!) return { ok: false, reason: 'circuitBreaker: openMs is above maxOpenMs' };
  if (c.passiveHealth.baseEjectionMs > c.passiveHealth.maxEjectionMs) return { ok: false, reason: 'passiveHealth: baseEjectionMs is above maxEjectionMs' };
  // HTTP field names are case-insensitive; requests and responses carry them in lower case.
  for (const h of [c.requestHeaders, c.responseHeaders]) {
    h.set = Object.fromEntries(Object.entries(h.set).map(([k, v]) => [k.toLowerCase(), v]));
    h.remove = h.remove.map((k) => k.toLowerCase());
  }
  // Framing and hop-by-hop fields are the gateway's to write: set on a route,
  // the HTTP client would refuse every request, or the framing would lie.
  for (const [where, h] of [
    ['requestHeaders', c.requestHeaders],
    ['responseHeaders', c.responseHeaders],
  ] as const) {
    const name = Object.keys(h.set).find((k) => FRAMING_HEADERS.has(k));
    if (name !== undefined) return { ok: false, reason: `${where}.set: ${name} cannot be set (the gateway writes framing and hop-by-hop fields itself)` };
  }
  return { ok: true, config: deepFreeze(shareBlocks(c, written)) as RouteConfig };
}

/** The blocks of a config that routes often have alike. */
const SHARED_BLOCKS = ['upstreams', 'passiveHealth', 'retryBudget', 'requestHeaders', 'responseHeaders', 'healthCheck', 'circuitBreaker', 'policy'] as const;
/** Per block name, frozen blocks by JSON text; each emptied when it holds BLOCKS_KEPT (blocks in use stay with their configs). */
const blocks = Object.fromEntries(SHARED_BLOCKS.map((k) => [k, new Map<string, object>()])) as Record<(typeof SHARED_BLOCKS)[number], Map<string, object>>;
const BLOCKS_KEPT = 4096;

/**
 * Makes equal blocks of configs one object. A bucket of 100,000 routes
 * holds 100,000 configs that mostly say the same things (the defaults
 * spelled out, the same backend); configs are frozen, so equal blocks can
 * be shared. A block seen for the first time is kept as JSON.parse rebuilds
 * it: validation added its defaults one by one, which V8 stores in a
 * separate property array, and a parsed object has them inline. Measured
 * per config: 524 bytes of heap before, 290 with a distinct value per route.
 */
function shareBlocks(c: RouteOptions, written: number): RouteOptions {
  const holder = c as unknown as Record<string, unknown>;
  const known = blockDefaults();
  for (let i = 0; i < SHARED_BLOCKS.length; i++) {
    const k = SHARED_BLOCKS[i]!;
    const v = holder[k];
    if (v === undefined) continue;
    const d = known.get(k);
    // Left out: validation filled in the default, so no need to look at it.
    if (d !== undefined && (written & (1 << i)) === 0) {
      holder[k] = d.block;
      continue;
    }
    const text = JSON.stringify(v);
    if (d !== undefined && d.text === text) {
      holder[k] = d.block;
      continue;
    }
    const kept = blocks[k];
    let shared = kept.get(text);
    if (shared === undefined) {
      if (kept.size >= BLOCKS_KEPT) kept.clear();
      shared = deepFreeze(JSON.parse(text) as object);
      kept.set(text, shared);
    }
    holder[k] = shared;
  }
  return c;
}

let defaults: Map<string, { text: string; block: object }> | undefined;
/** What validation fills in for each block a value leaves out, frozen once. */
function blockDefaults(): Map<string, { text: string; block: object }> {
  if (defaults === undefined) {
    const minimal = { upstreams: [{ url: 'http://default' }] } as Record<string, unknown>;
    validator('route')(minimal);
    defaults = new Map();
    for (const k of SHARED_BLOCKS) {
      if (k === 'upstreams' || minimal[k] === undefined) continue;
      const text = JSON.stringify(minimal[k]);
      defaults.set(k, { text, block: deepFreeze(JSON.parse(text) as object) });
    }
  }
  return defaults;
}

function deepFreeze<T>(o: T): T {
  if (o !== null && typeof o === 'object' && !Object.isFrozen(o)) {
    for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}

/** Header fields a route may not set: hop-by-hop (RFC 9110 §7.6.1) and message framing. */
const FRAMING_HEADERS: ReadonlySet<string> = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'expect', 'content-length']);

/** What redacted values read as. */
export const REDACTED = '[redacted]';

/**
 * A copy of a route for showing outside the routes bucket (admin API, logs,
 * `natsgw routes ls`): the values of `requestHeaders.set` (backend API keys,
 * say) are replaced by {@link REDACTED}; their names stay.
 * @example redactRoute(config).requestHeaders.set // { authorization: '[redacted]' }
 */
export function redactRoute<T extends Partial<Pick<RouteOptions, 'requestHeaders' | 'policy'>>>(route: T): T {
  const policy = route.policy === undefined ? undefined : redactPolicy(route.policy);
  if (policy !== route.policy) route = { ...route, policy };
  if (route.requestHeaders === undefined) return route;
  const set = route.requestHeaders?.set ?? {};
  return { ...route, requestHeaders: { ...route.requestHeaders, set: Object.fromEntries(Object.keys(set).map((k) => [k, REDACTED])) } };
}
