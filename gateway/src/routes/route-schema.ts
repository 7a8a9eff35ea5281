/**
 * The override schema: what a value in the routes KV bucket may say.
 *
 * One schema, used by the gateway when it reads the bucket, by the CLI when
 * it writes it, and published as JSON Schema (gateway/schema/route.schema.json,
 * kept equal to this by a test) for any other tool. A value the CLI accepts
 * is a value the gateway accepts. Every field has a default, stated here.
 */
// Hint, Kind, OptionalKind, ReadonlyKind: named so the exported schema's type can be declared.
// biome-ignore lint/correctness/noUnusedImports: the declaration emit needs these names (TS4023 without them).
import { Type, type Static, type TSchema, type Hint, type Kind, type OptionalKind, type ReadonlyKind } from '@sinclair/typebox';
import { Ajv, type ErrorObject } from 'ajv';
import { checkPolicy, PolicySchema, redactPolicy, type PolicyConfig } from '../policy/policy-schema.js';

export const BALANCING_POLICIES = ['p2c', 'round-robin', 'least-connections', 'random'] as const;
export type BalancingPolicy = (typeof BALANCING_POLICIES)[number];

/** A KV key: a subject whose tokens may hold the `=XX` escapes paths map to. */
export const ROUTE_KEY_PATTERN = '^[A-Za-z0-9_=-]+(\\.[A-Za-z0-9_=-]+)*$';
const ROUTE_KEY_RE = new RegExp(ROUTE_KEY_PATTERN);
export const isRouteKey = (key: string): boolean => ROUTE_KEY_RE.test(key);
const UPSTREAM_URL_PATTERN = '^https?://[^\\s/?#@]+(/[^\\s?#]*)?$';
const HEADER_NAME_PATTERN = "^[!#$%&'*+\\-.^_`|~0-9A-Za-z]+$";
const HEADER_VALUE_PATTERN = '^[\\t\\x20-\\x7e\\x80-\\uffff]*$';

const Headers = Type.Object(
  {
    set: Type.Record(Type.String({ pattern: HEADER_NAME_PATTERN }), Type.String({ pattern: HEADER_VALUE_PATTERN }), {
      default: {},
      additionalProperties: false,
      description: 'Headers to set (replacing any of the same name). Names are case-insensitive.',
    }),
    remove: Type.Array(Type.String({ pattern: HEADER_NAME_PATTERN }), { default: [], description: 'Header names to remove (case-insensitive).' }),
  },
  { additionalProperties: false, default: {} },
);

export const ROUTE_TARGETS = ['http', 'nats-raw'] as const;
export type RouteTarget = (typeof ROUTE_TARGETS)[number];

/** A string that is one of `values` (a plain JSON Schema enum, which Ajv's errors name), `fallback` when left out. */
const oneOf = <T extends string>(values: readonly T[], fallback: T, description: string) => Type.Unsafe<T>({ type: 'string', enum: [...values], default: fallback, description });

const RouteSchemaStrict = Type.Object(
  {
    target: oneOf(
      ROUTE_TARGETS,
      'http',
      'http (default): an HTTP override, sent to `upstreams`. nats-raw: stays on NATS, in raw mode: the request body is the NATS payload and the HTTP request line and headers travel as NATS headers, so any NATS service answers it without the envelope (README "Raw NATS routes"). A nats-raw entry takes only maxRequestBodyBytes and policy besides. An entry without target and upstreams is a policy only (the subject stays on NATS, the envelope).',
    ),
    upstreams: Type.Optional(
      Type.Array(
        Type.Object(
          {
            url: Type.String({ pattern: UPSTREAM_URL_PATTERN, description: 'Base URL of an HTTP server, e.g. http://10.0.0.5:8080 or http://host:8080/base.' }),
            weight: Type.Integer({ minimum: 1, maximum: 1000, default: 1, description: 'Relative share of the traffic. Default 1.' }),
          },
          { additionalProperties: false },
        ),
        { minItems: 1, maxItems: 64, description: 'The HTTP servers to send this subject to. Required for target http.' },
      ),
    ),
    balancing: oneOf(
      BALANCING_POLICIES,
      'p2c',
      'p2c (default): of two randomly chosen backends (by weight), the one with fewer requests in flight; adapts to slow backends like least-connections without herding every gateway onto the same one. round-robin: smooth weighted. least-connections: fewest in flight per weight. random: by weight.',
    ),
    healthCheck: Type.Optional(
      Type.Object(
        {
          path: Type.String({ pattern: '^/', default: '/health', description: 'Path probed with GET. Default /health.' }),
          intervalMs: Type.Integer({ minimum: 100, default: 5000, description: 'Time between probes of a healthy backend, jittered ±10 %. Default 5000.' }),
          unhealthyIntervalMs: Type.Integer({ minimum: 100, default: 1000, description: 'Time between probes of an unhealthy backend. Default 1000.' }),
          timeoutMs: Type.Integer({ minimum: 10, default: 2000, description: 'A probe slower than this fails. Default 2000.' }),
          unhealthyThreshold: Type.Integer({ minimum: 1, default: 3, description: 'Consecutive failed probes that mark a backend unhealthy. Default 3.' }),
          healthyThreshold: Type.Integer({ minimum: 1, default: 2, description: 'Consecutive good probes that mark it healthy again. Default 2.' }),
          expectedStatus: Type.Object(
            {
              min: Type.Integer({ minimum: 100, maximum: 599, default: 200 }),
              max: Type.Integer({ minimum: 100, maximum: 599, default: 399 }),
            },
            { additionalProperties: false, default: {}, description: 'Status range of a good probe. Default 200–399.' },
          ),
        },
        { additionalProperties: false, description: 'Active health checks. Off unless present.' },
      ),
    ),
    passiveHealth: Type.Object(
      {
        consecutiveFailures: Type.Integer({ minimum: 1, default: 5, description: 'Failures in a row that eject a backend. Default 5.' }),
        baseEjectionMs: Type.Integer({ minimum: 100, default: 10_000, description: 'First ejection time; each ejection adds as much again. Default 10000.' }),
        maxEjectionMs: Type.Integer({ minimum: 100, default: 300_000, description: 'Longest ejection. Default 300000.' }),
        maxEjectionPercent: Type.Integer({ minimum: 0, maximum: 100, default: 50, description: 'Never eject more than this share of the backends. Default 50.' }),
        failureStatuses: Type.Array(Type.Integer({ minimum: 500, maximum: 599 }), {
          default: [502, 503, 504],
          description: 'Response statuses that count as failures (connect errors, resets, timeouts and garbage always do). Default [502, 503, 504].',
        }),
      },
      { additionalProperties: false, default: {}, description: 'Ejection of failing backends. Always on.' },
    ),
    circuitBreaker: Type.Optional(
      Type.Object(
        {
          failureThreshold: Type.Integer({ minimum: 1, default: 5, description: 'Failures in a row that open the breaker. Default 5.' }),
          successThreshold: Type.Integer({ minimum: 1, default: 2, description: 'Successful trials that close it again. Default 2.' }),
          openMs: Type.Integer({ minimum: 10, default: 10_000, description: 'How long it stays open before trials; doubles on each failed trial. Default 10000.' }),
          maxOpenMs: Type.Integer({ minimum: 10, default: 120_000, description: 'Longest open time. Default 120000.' }),
          halfOpenRequests: Type.Integer({ minimum: 1, default: 1, description: 'Trial requests allowed at once while half-open. Default 1.' }),
        },
        { additionalProperties: false, description: 'Per-backend circuit breaker. Off unless present.' },
      ),
    ),
    timeoutMs: Type.Integer({
      minimum: 1,
      maximum: 3_600_000,
      default: 30_000,
      description:
        'Longest wait for the response headers, all tries included; also the longest silence between two body chunks (time a slow client held the stream back does not count). Default 30000.',
    }),
    tryTimeoutMs: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 3_600_000,
        description:
          'Longest wait for one try, from waiting for a free connection to the response headers (default: timeoutMs). A try still waiting for a connection sent nothing, so it moves to another backend whatever the method.',
      }),
    ),
    connectTimeoutMs: Type.Integer({ minimum: 1, maximum: 600_000, default: 5_000, description: 'Longest TCP/TLS connect. Default 5000.' }),
    retries: Type.Integer({
      minimum: 0,
      maximum: 10,
      default: 1,
      description:
        'Further tries, each on a different backend: for any method when the request never reached a backend, for idempotent methods otherwise, never once response bytes reached the client. Default 1.',
    }),
    retryBudget: Type.Object(
      {
        percent: Type.Integer({ minimum: 0, maximum: 100, default: 20, description: 'Retries may add at most this share of the requests of the last 10 s. Default 20.' }),
        minPerSecond: Type.Integer({ minimum: 0, default: 5, description: 'Retries always allowed per second regardless. Default 5.' }),
      },
      { additionalProperties: false, default: {} },
    ),
    maxRequestBodyBytes: Type.Integer({
      minimum: 0,
      maximum: 1024 * 1024 * 1024,
      default: 1024 * 1024,
      description: 'Request bodies are buffered (so they can be retried); larger → 413. Default 1048576.',
    }),
    maxConnections: Type.Integer({ minimum: 1, maximum: 10_000, default: 128, description: 'Connections per backend. Default 128.' }),
    stripPrefix: Type.Boolean({ default: false, description: "Remove the path segments of this route's subject before forwarding (/legacy/users → /users for api.legacy). Default false." }),
    addPrefix: Type.String({ pattern: '^(/[^\\s?#]*)?$', default: '', description: 'Path prefix added before forwarding. Default none.' }),
    preserveHost: Type.Boolean({ default: false, description: "Send the client's Host header instead of the backend's. Default false." }),
    requestHeaders: Headers,
    responseHeaders: Headers,
    policy: Type.Optional(PolicySchema),
  },
  {
    additionalProperties: false,
    $id: 'https://natsgw.dev/schema/route.schema.json',
    title: 'natsgw route entry',
    description:
      'An entry of the routes bucket: an HTTP override (upstreams), a raw NATS route (target nats-raw), or only a policy (the subject stays on NATS; an entry with only a policy takes no other field). Any of them may carry a policy.',
    // An HTTP override needs its upstreams; a raw NATS route has none; an entry without either is a policy.
    if: { properties: { target: { const: 'nats-raw' } }, required: ['target'] },
    // biome-ignore lint/suspicious/noThenProperty: JSON Schema's if/then/else keyword; this object is a schema, never awaited.
    then: { not: { required: ['upstreams'] } },
    else: { anyOf: [{ required: ['upstreams'] }, { required: ['policy'], not: { required: ['target'] } }] },
  },
);

/**
 * Fields with a default may be left out: drop them from every `required`
 * list, so the published JSON Schema accepts what people write, and Ajv
 * fills them in (useDefaults) when the gateway or the CLI validates.
 */
function optionalDefaults<T>(schema: T): T {
  const s = schema as { type?: string; properties?: Record<string, { default?: unknown }>; required?: string[]; items?: unknown; anyOf?: unknown[] };
  if (s.properties) {
    for (const child of Object.values(s.properties)) optionalDefaults(child);
    if (s.required) {
      s.required = s.required.filter((k) => s.properties![k]?.default === undefined);
      if (s.required.length === 0) delete s.required;
    }
  }
  if (s.items) optionalDefaults(s.items);
  return schema;
}

export const RouteSchema = optionalDefaults(RouteSchemaStrict);

/** A validated route (defaults applied). */
export type RouteOptions = Static<typeof RouteSchemaStrict>;

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

const ajv = new Ajv({ useDefaults: true, allErrors: false, strict: false });
const validate = ajv.compile(RouteSchema);
const validatePolicy = ajv.compile(PolicySchema);

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
    if (!validate(copy)) return { ok: false, reason: describe(validate.errors![0]!) };
    const bad = copy.policy === undefined ? undefined : checkPolicy(copy.policy as PolicyConfig);
    if (bad !== undefined) return { ok: false, reason: bad };
    const raw: RawRouteConfig = { target: 'nats-raw', maxRequestBodyBytes: copy.maxRequestBodyBytes as number, ...(copy.policy !== undefined ? { policy: copy.policy as PolicyConfig } : {}) };
    return { ok: true, config: deepFreeze(raw) };
  }
  if (copy.upstreams === undefined && copy.target === undefined && copy.policy !== undefined) {
    // Only a policy: validated alone, so no HTTP default is filled in.
    const other = Object.keys(copy).find((k) => k !== 'policy');
    if (other !== undefined) return { ok: false, reason: `${other}: an entry with only a policy takes no other field (add upstreams for an HTTP override)` };
    if (!validatePolicy(copy.policy)) return { ok: false, reason: describe(prefixed(validatePolicy.errors![0]!, '/policy')) };
    const bad = checkPolicy(copy.policy as PolicyConfig);
    if (bad !== undefined) return { ok: false, reason: bad };
    return { ok: true, config: deepFreeze({ target: 'policy', policy: copy.policy as PolicyConfig }) };
  }
  if (copy.upstreams === undefined) return { ok: false, reason: 'upstreams: required for an HTTP override (or set target to nats-raw, or give only a policy)' };
  if (!validate(copy)) return { ok: false, reason: describe(validate.errors![0]!) };
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
    validate(minimal);
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

/** The schema as plain JSON Schema (draft-07), as published in gateway/schema/route.schema.json. */
export function routeJsonSchema(): object {
  return JSON.parse(JSON.stringify({ $schema: 'http://json-schema.org/draft-07/schema#', ...(RouteSchema as TSchema) })) as object;
}
