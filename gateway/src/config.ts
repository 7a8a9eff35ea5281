/**
 * Gateway configuration: one schema, one set of defaults, validated once.
 *
 * Flags, `NATSGW_*` environment variables and a JSON config file all feed the
 * same schema (`GatewayOptionsSchema`); precedence is flag > environment >
 * file > default. The result is frozen into a {@link GatewayConfig} whose
 * field names carry their units.
 */
import { preloadPath } from './preload.js';
import { existsSync, readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { availableParallelism } from 'node:os';
// Hint, Kind, OptionalKind, ReadonlyKind: named so the exported schema's type can be declared.
// biome-ignore lint/correctness/noUnusedImports: the declaration emit needs these names (TS4023 without them).
import { Type, type Static, type TSchema, type Hint, type Kind, type OptionalKind, type ReadonlyKind } from '@sinclair/typebox';
import { Ajv, type ErrorObject } from 'ajv';
import { ROOT_SUBJECT_PATTERN } from '@natsgw/service-sdk/protocol';
import { DEFAULT_ROUTES_BUCKET } from './routes/routes-bucket.js';

export const DEFAULT_NATS_URL = 'nats://127.0.0.1:4222';
export const DEFAULT_SUBJECT = 'api';
export const DEFAULT_PORT = 8080;
export const DEFAULT_HOST = '0.0.0.0';
export const DEFAULT_TIMEOUT_MS = 30_000;
/** 1 GiB: bodies larger than one NATS message stream (protocol v2), so the limit is about what a service should accept, not about NATS. */
export const DEFAULT_MAX_BODY_BYTES = 1024 * 1024 * 1024;
export const DEFAULT_STREAM_IDLE_MS = 60_000;
/** 256 MiB: room for a few dozen fast uploads' worth of TCP receive buffer (nats/upload-overrun.ts). */
export const DEFAULT_MAX_UPLOAD_BUFFER_BYTES = 256 * 1024 * 1024;
export const DEFAULT_MAX_HEADER_BYTES = 16 * 1024;
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export const LOG_FORMATS = ['auto', 'json', 'pretty'] as const;
export const DEFAULT_ADMIN_HOST = '127.0.0.1';
export const DEFAULT_ADMIN_PORT = 8081;
export const DEFAULT_SHUTDOWN_GRACE_MS = 10_000;
export const DEFAULT_INBOX_PREFIX = '_INBOX';
export const DEFAULT_WS_MAX_MESSAGE_BYTES = 1024 * 1024;
export const DEFAULT_WS_IDLE_TIMEOUT_MS = 120_000;
export const DEFAULT_WS_MAX_CONNECTIONS = 10_000;

/** Per-key help, shown by `--help` and used in error messages. `hint` explains a pattern in words. */
interface Meta {
  description: string;
  hint?: string;
  /** Flag value placeholder in --help. */
  placeholder?: string;
  /** Never echo the value back (secrets). */
  secret?: boolean;
}
const opt = <T extends TSchema>(schema: T, meta: Meta) => Type.Optional({ ...schema, ...meta } as T);

/** One of `values` (an option's choices), named in its hint when anything else is given. */
const choice = <T extends string>(values: readonly T[], fallback: T, meta: Omit<Meta, 'hint'>) =>
  opt(
    Type.Union(
      values.map((v) => Type.Literal(v)),
      { default: fallback },
    ),
    { ...meta, hint: `must be one of ${values.join(', ')}` },
  );

const urlList = Type.Array(Type.String({ minLength: 1, pattern: '^(nats|tls|ws|wss)://[^\\s,]+$|^[^\\s,:/]+:\\d+$' }), { minItems: 1 });

/** The one schema every configuration source is checked against. */
export const GatewayOptionsSchema = Type.Object(
  {
    nats: opt(
      { ...urlList, default: [DEFAULT_NATS_URL] },
      { description: 'NATS server URL(s), comma-separated for a cluster', placeholder: 'URL[,URL...]', hint: 'must be URLs like nats://host:4222' },
    ),
    subject: opt(Type.String({ pattern: ROOT_SUBJECT_PATTERN, default: DEFAULT_SUBJECT }), {
      description: 'Root subject: /foo/bar is sent to ROOT.foo.bar',
      placeholder: 'ROOT',
      hint: 'must be one or more tokens of A-Z a-z 0-9 - _ separated by dots, e.g. api or api.staging',
    }),
    port: opt(Type.Integer({ minimum: 0, maximum: 65535, default: DEFAULT_PORT }), { description: 'HTTP port (0 picks a free one)', placeholder: 'N' }),
    host: opt(Type.String({ minLength: 1, default: DEFAULT_HOST }), { description: 'HTTP listen address', placeholder: 'H' }),
    workers: opt(Type.String({ pattern: '^(auto|[1-9][0-9]?)$', default: '1' }), {
      description: 'HTTP event loops: worker threads sharing the port, each with its own NATS connection; auto = one per core',
      placeholder: 'N|auto',
      hint: 'must be a whole number from 1 to 99, or auto',
    }),
    timeout: opt(Type.Integer({ minimum: 1, maximum: 3_600_000, default: DEFAULT_TIMEOUT_MS }), {
      description: 'How long to wait for a service reply before answering 504, in milliseconds',
      placeholder: 'MS',
    }),
    maxBody: opt(Type.Integer({ minimum: 0, maximum: 2 ** 50, default: DEFAULT_MAX_BODY_BYTES }), {
      description: 'Largest request body in bytes (413 beyond); bodies larger than one NATS message stream to the service',
      placeholder: 'BYTES',
    }),
    maxUploadBuffer: opt(Type.Integer({ minimum: 0, maximum: 2 ** 50, default: DEFAULT_MAX_UPLOAD_BUFFER_BYTES }), {
      description:
        'Most request-body bytes streamed uploads may hold beyond their flow-control windows, all together (per worker with --workers): what a client sends past its pause while uWS still reads; the upload that goes past it gets 503',
      placeholder: 'BYTES',
    }),
    streamIdleTimeout: opt(Type.Integer({ minimum: 100, maximum: 3_600_000, default: DEFAULT_STREAM_IDLE_MS }), {
      description: "A streamed request or response is cut off when its service sends nothing for this long while it is the service's turn, in milliseconds",
      placeholder: 'MS',
    }),
    wsMaxMessage: opt(Type.Integer({ minimum: 125, maximum: 256 * 1024 * 1024, default: DEFAULT_WS_MAX_MESSAGE_BYTES }), {
      description: 'Largest WebSocket message either way, in bytes; a client sending a larger one is closed with 1009',
      placeholder: 'BYTES',
    }),
    wsIdleTimeout: opt(Type.Integer({ minimum: 8000, maximum: 3_600_000, default: DEFAULT_WS_IDLE_TIMEOUT_MS }), {
      description: 'A WebSocket with no message or pong for this long is closed; the gateway pings idle clients before that (never waking the service), in milliseconds',
      placeholder: 'MS',
    }),
    wsMaxConnections: opt(Type.Integer({ minimum: 0, maximum: 10_000_000, default: DEFAULT_WS_MAX_CONNECTIONS }), {
      description: 'Most open WebSocket connections per gateway (per worker with --workers); upgrades beyond get 503',
      placeholder: 'N',
    }),
    maxHeaderSize: opt(Type.Integer({ minimum: 1024, maximum: 1024 * 1024, default: DEFAULT_MAX_HEADER_BYTES }), {
      description: 'Largest total size of request headers in bytes (431 beyond)',
      placeholder: 'BYTES',
    }),
    routesBucket: opt(Type.String({ pattern: '^[A-Za-z0-9_-]+$', default: DEFAULT_ROUTES_BUCKET }), {
      description: 'JetStream KV bucket holding HTTP overrides (created when missing)',
      placeholder: 'NAME',
      hint: 'must be a KV bucket name: letters, digits, - and _',
    }),
    routesReplicas: opt(Type.Integer({ minimum: 1, maximum: 5, default: 1 }), {
      description: 'Copies of the routes bucket when it has to be created (3 for a JetStream cluster)',
      placeholder: 'N',
    }),
    trustedProxies: opt(Type.Array(Type.String({ minLength: 1 }), { default: [] }), {
      description: 'Addresses or CIDRs of proxies in front of the gateway whose X-Forwarded-* headers are trusted (comma-separated)',
      placeholder: 'CIDR[,CIDR...]',
    }),
    inboxPrefix: opt(Type.String({ pattern: ROOT_SUBJECT_PATTERN, default: DEFAULT_INBOX_PREFIX }), {
      description: "Prefix of the subjects replies come back on; give each NATS user its own (e.g. _INBOX_gw) so one cannot read another's replies",
      placeholder: 'PREFIX',
      hint: 'must be subject tokens of A-Z a-z 0-9 - _ separated by dots, e.g. _INBOX_gw',
    }),
    creds: opt(Type.String({ minLength: 1 }), { description: 'NATS credentials file (JWT + NKey)', placeholder: 'FILE' }),
    user: opt(Type.String({ minLength: 1 }), { description: 'NATS user name (with --pass)', placeholder: 'USER' }),
    pass: opt(Type.String(), { description: 'NATS password (with --user)', placeholder: 'PASS', secret: true }),
    token: opt(Type.String({ minLength: 1 }), { description: 'NATS authentication token', placeholder: 'TOKEN', secret: true }),
    tlsCa: opt(Type.String({ minLength: 1 }), { description: 'CA certificate file to verify the NATS server', placeholder: 'FILE' }),
    tlsCert: opt(Type.String({ minLength: 1 }), { description: 'Client certificate file for NATS TLS (with --tls-key)', placeholder: 'FILE' }),
    tlsKey: opt(Type.String({ minLength: 1 }), { description: 'Client private key file for NATS TLS (with --tls-cert)', placeholder: 'FILE' }),
    adminHost: opt(Type.String({ minLength: 1, default: DEFAULT_ADMIN_HOST }), {
      description: 'Admin API listen address (anything but loopback needs --admin-token)',
      placeholder: 'H',
    }),
    adminPort: opt(Type.Integer({ minimum: 0, maximum: 65535, default: DEFAULT_ADMIN_PORT }), { description: 'Admin API port (0 picks a free one)', placeholder: 'N' }),
    adminToken: opt(Type.String({ minLength: 16 }), {
      description: 'Bearer token every admin request must carry (HTTP and NATS)',
      placeholder: 'TOKEN',
      secret: true,
      hint: 'must be at least 16 characters',
    }),
    logLevel: choice(LOG_LEVELS, 'info', { description: 'Log level', placeholder: 'LEVEL' }),
    logFormat: choice(LOG_FORMATS, 'auto', { description: 'json, pretty (for humans), or auto: pretty on a terminal, json otherwise', placeholder: 'FORMAT' }),
    accessLog: opt(Type.Boolean({ default: true }), { description: 'Log one line per request (at info level)', placeholder: 'BOOL' }),
    preload: opt(Type.String({ minLength: 1 }), {
      description: 'Module imported in every thread that serves HTTP before the gateway starts there (e.g. an OpenTelemetry setup that registers a tracer provider)',
      placeholder: 'FILE',
    }),
    traceSampling: opt(Type.String({ pattern: '^(auto|0|1|0?[.][0-9]{1,6}|1[.]0{1,6})$', default: 'auto' }), {
      description:
        'Share of requests without a traceparent that start a trace (0 to 1); auto: all when an OpenTelemetry tracer provider is registered, none otherwise. A client traceparent is always passed on',
      placeholder: 'RATIO|auto',
      hint: 'must be a number from 0 to 1 (at most 6 decimals), or auto',
    }),
    shutdownGrace: opt(Type.Integer({ minimum: 0, maximum: 600_000, default: DEFAULT_SHUTDOWN_GRACE_MS }), {
      description: 'On SIGTERM/SIGINT, how long requests in flight may take to finish, in milliseconds',
      placeholder: 'MS',
    }),
  },
  { additionalProperties: false },
);

/** Configuration as a user writes it (any source), before defaults. */
export type GatewayOptions = Static<typeof GatewayOptionsSchema>;

/** The validated, frozen configuration the gateway runs with. */
export interface GatewayConfig {
  readonly natsServers: readonly string[];
  readonly rootSubject: string;
  readonly port: number;
  readonly host: string;
  /** Worker threads serving HTTP (1: the gateway runs in the main thread, no workers). */
  readonly workers: number;
  readonly timeoutMs: number;
  readonly maxBodyBytes: number;
  readonly streamIdleMs: number;
  /** Request-body bytes streamed uploads may hold beyond their windows, all together (nats/upload-overrun.ts). */
  readonly maxUploadBufferBytes: number;
  readonly maxHeaderBytes: number;
  readonly ws: Readonly<{ maxMessageBytes: number; idleTimeoutMs: number; maxConnections: number }>;
  readonly trustedProxies: readonly string[];
  readonly routesBucket: string;
  readonly routesReplicas: number;
  readonly inboxPrefix: string;
  readonly auth: Readonly<{ creds?: string; user?: string; pass?: string; token?: string }>;
  readonly tls: Readonly<{ ca?: string; cert?: string; key?: string }> | undefined;
  readonly logLevel: (typeof LOG_LEVELS)[number];
  readonly logFormat: (typeof LOG_FORMATS)[number];
  readonly accessLog: boolean;
  /** Share of requests without trace context that start a trace, or auto (front/trace-start.ts). */
  readonly traceSampling: number | 'auto';
  /** Absolute path of the --preload module, if any (preload.ts). */
  readonly preload: string | undefined;
  readonly admin: Readonly<{ host: string; port: number; token: string | undefined }>;
  readonly shutdownGraceMs: number;
}

/** A configuration problem; `message` is one line naming the offending flag, variable or key. */
export class ConfigError extends Error {
  override name = 'ConfigError';
  readonly code = 'ERR_NATSGW_CONFIG';
}

type Key = keyof typeof GatewayOptionsSchema.properties;
export const OPTION_KEYS = Object.keys(GatewayOptionsSchema.properties) as Key[];
const ARRAY_KEYS = new Set<string>(OPTION_KEYS.filter((k) => (GatewayOptionsSchema.properties[k] as TSchema).type === 'array'));

/** `maxBody` → `max-body` */
export const flagName = (key: string): string => key.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase());
/** `maxBody` → `NATSGW_MAX_BODY` */
export const envName = (key: string): string => 'NATSGW_' + key.replace(/[A-Z]/g, (c) => '_' + c).toUpperCase();

/** Help text for one option, as schema metadata. */
export function optionMeta(key: Key): Meta & { default?: unknown; type: string } {
  const s = GatewayOptionsSchema.properties[key] as TSchema & Meta;
  return { ...s, type: s.type === 'integer' ? 'number' : s.type === 'array' ? 'array' : s.anyOf ? 'string' : String(s.type) };
}

const ajv = new Ajv({ coerceTypes: true, useDefaults: true, allErrors: false, strict: false });
const validate = ajv.compile<GatewayOptions>(GatewayOptionsSchema);

function splitList(v: unknown): unknown {
  const parts = (Array.isArray(v) ? v : [v]).flatMap((x) => (typeof x === 'string' ? x.split(',') : [x]));
  return parts.map((x) => (typeof x === 'string' ? x.trim() : x)).filter((x) => x !== '');
}

export interface ConfigSources {
  /** Options given as flags (only the ones the user actually passed). */
  flags?: Record<string, unknown>;
  /** Environment to read `NATSGW_*` variables from. */
  env?: NodeJS.ProcessEnv;
  /** Path of a JSON config file. */
  file?: string;
}

/**
 * Merges and validates configuration from flags, environment and file.
 * Throws {@link ConfigError} with a one-line message naming the source.
 * @example
 *   const config = loadConfig({ flags: { subject: 'api.staging', port: 8080 }, env: process.env });
 */
export function loadConfig(sources: ConfigSources): GatewayConfig {
  const merged: Record<string, unknown> = {};
  const origin: Record<string, string> = {};

  if (sources.file !== undefined) {
    const fileValues = readConfigFile(sources.file);
    for (const [k, v] of Object.entries(fileValues)) {
      merged[k] = v;
      origin[k] = `${k} in ${sources.file}`;
    }
  }
  for (const key of OPTION_KEYS) {
    const v = sources.env?.[envName(key)];
    if (v !== undefined) {
      merged[key] = v;
      origin[key] = envName(key);
    }
  }
  for (const [key, v] of Object.entries(sources.flags ?? {})) {
    if (v === undefined) continue;
    if (Array.isArray(v) && !ARRAY_KEYS.has(key)) throw new ConfigError(`--${flagName(key)} given more than once`);
    merged[key] = v;
    origin[key] = '--' + flagName(key);
  }
  for (const key of ARRAY_KEYS) if (merged[key] !== undefined) merged[key] = splitList(merged[key]);

  if (!validate(merged)) {
    throw new ConfigError(describe(validate.errors![0]!, merged, origin));
  }
  const o = merged as Required<
    Pick<
      GatewayOptions,
      | 'nats'
      | 'subject'
      | 'port'
      | 'host'
      | 'workers'
      | 'timeout'
      | 'maxBody'
      | 'streamIdleTimeout'
      | 'maxUploadBuffer'
      | 'maxHeaderSize'
      | 'wsMaxMessage'
      | 'wsIdleTimeout'
      | 'wsMaxConnections'
      | 'trustedProxies'
      | 'routesBucket'
      | 'routesReplicas'
      | 'inboxPrefix'
      | 'logLevel'
      | 'logFormat'
      | 'accessLog'
      | 'traceSampling'
      | 'adminHost'
      | 'adminPort'
      | 'shutdownGrace'
    >
  > &
    GatewayOptions;
  checkCombinations(o, origin);
  return Object.freeze({
    natsServers: Object.freeze([...o.nats]),
    rootSubject: o.subject,
    port: o.port,
    host: o.host,
    workers: o.workers === 'auto' ? availableParallelism() : Number(o.workers),
    timeoutMs: o.timeout,
    maxBodyBytes: o.maxBody,
    streamIdleMs: o.streamIdleTimeout,
    maxUploadBufferBytes: o.maxUploadBuffer,
    maxHeaderBytes: o.maxHeaderSize,
    ws: Object.freeze({ maxMessageBytes: o.wsMaxMessage, idleTimeoutMs: o.wsIdleTimeout, maxConnections: o.wsMaxConnections }),
    trustedProxies: Object.freeze([...o.trustedProxies]),
    routesBucket: o.routesBucket,
    routesReplicas: o.routesReplicas,
    inboxPrefix: o.inboxPrefix,
    auth: Object.freeze({ creds: o.creds, user: o.user, pass: o.pass, token: o.token }),
    tls: o.tlsCa || o.tlsCert || o.tlsKey ? Object.freeze({ ca: o.tlsCa, cert: o.tlsCert, key: o.tlsKey }) : undefined,
    logLevel: o.logLevel,
    logFormat: o.logFormat,
    accessLog: o.accessLog,
    traceSampling: o.traceSampling === 'auto' ? 'auto' : Number(o.traceSampling),
    preload: o.preload === undefined ? undefined : preloadPath(o.preload),
    admin: Object.freeze({ host: o.adminHost, port: o.adminPort, token: o.adminToken }),
    shutdownGraceMs: o.shutdownGrace,
  });
}

function readConfigFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read config file ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`config file ${path} is not valid JSON: ${(err as Error).message}`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new ConfigError(`config file ${path} must hold a JSON object`);
  }
  return parsed as Record<string, unknown>;
}

function describe(e: ErrorObject, values: Record<string, unknown>, origin: Record<string, string>): string {
  if (e.keyword === 'additionalProperties') {
    const extra = (e.params as { additionalProperty: string }).additionalProperty;
    return `unknown option ${origin[extra] ?? extra}`;
  }
  const key = e.instancePath.split('/')[1] ?? '';
  const where = origin[key] ?? key;
  const meta = (GatewayOptionsSchema.properties as Record<string, Meta | undefined>)[key];
  const raw = values[key];
  const shown = meta?.secret ? '' : ` (got ${JSON.stringify(Array.isArray(raw) ? raw.join(',') : raw)})`;
  const reason = meta?.hint ?? e.message ?? 'is invalid';
  return `invalid ${where}: ${reason}${shown}`;
}

function checkCombinations(o: GatewayOptions, origin: Record<string, string>): void {
  const name = (k: string) => origin[k] ?? '--' + flagName(k);
  if (o.user !== undefined && o.pass === undefined) throw new ConfigError(`${name('user')} needs --pass (or NATSGW_PASS)`);
  if (o.pass !== undefined && o.user === undefined) throw new ConfigError(`${name('pass')} needs --user (or NATSGW_USER)`);
  const methods = (['creds', 'user', 'token'] as const).filter((k) => o[k] !== undefined);
  if (methods.length > 1) throw new ConfigError(`choose one NATS authentication method, not ${methods.map(name).join(' and ')}`);
  if ((o.tlsCert === undefined) !== (o.tlsKey === undefined)) {
    throw new ConfigError(`${o.tlsCert ? name('tlsCert') : name('tlsKey')} needs ${o.tlsCert ? '--tls-key' : '--tls-cert'} as well`);
  }
  for (const k of ['creds', 'tlsCa', 'tlsCert', 'tlsKey'] as const) {
    const file = o[k];
    if (file !== undefined && !existsSync(file)) throw new ConfigError(`invalid ${name(k)}: file ${file} does not exist`);
  }
  // The admin API tells a lot about the deployment: off loopback only with a token.
  const adminHost = o.adminHost ?? DEFAULT_ADMIN_HOST;
  const loopback = adminHost === 'localhost' || adminHost === '::1' || /^127\./.test(adminHost);
  if (!loopback && o.adminToken === undefined) {
    throw new ConfigError(`${name('adminHost')} ${adminHost} is not loopback: set --admin-token (or NATSGW_ADMIN_TOKEN) too`);
  }
  for (const cidr of o.trustedProxies ?? []) {
    const [addr, bits, more] = cidr.split('/');
    const family = isIP(addr ?? '');
    const maxBits = family === 6 ? 128 : 32;
    const okBits = bits === undefined || (/^\d+$/.test(bits) && Number(bits) <= maxBits);
    if (family === 0 || !okBits || more !== undefined) {
      throw new ConfigError(`invalid ${name('trustedProxies')}: ${JSON.stringify(cidr)} is not an IP address or CIDR`);
    }
  }
}
