/**
 * The TypeBox source of the route schema (routes/route-schema.ts says what
 * an entry of the routes bucket may hold): the types the gateway is written
 * against, and gateway/schema/route.schema.json, written from this by
 * `npm run schema` and kept equal to it by a test. Build-time only: the
 * gateway and the CLI validate with the JSON file and never load TypeBox.
 */
// Hint, Kind, OptionalKind, ReadonlyKind: named so the exported schema's type can be declared.
// biome-ignore lint/correctness/noUnusedImports: the declaration emit needs these names (TS4023 without them).
import { Type, type Static, type Hint, type Kind, type OptionalKind, type ReadonlyKind } from '@sinclair/typebox';
import { BALANCING_POLICIES, ROUTE_TARGETS } from '../routes/route-schema.js';
import { PolicySchema } from './policy.js';
import { draft07 } from './draft07.js';

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

/** The schema as plain JSON Schema (draft-07), as published in gateway/schema/route.schema.json. */
export function routeJsonSchema(): object {
  return draft07(RouteSchema);
}
