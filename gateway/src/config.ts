/**
 * Gateway configuration: one schema, one set of defaults, validated once.
 *
 * Flags, `NATSGW_*` environment variables and a JSON config file all feed the
 * same schema (gateway/schema/config.schema.json); precedence is flag > environment >
 * file > default. The result is frozen into a {@link GatewayConfig} whose
 * field names carry their units.
 */
import { preloadPath } from './preload.js';
import { existsSync, readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { availableParallelism } from 'node:os';
// The schema's source is schema-source/config.ts (TypeBox, build-time); this
// reads the JSON written from it (gateway/schema/config.schema.json: keys,
// help, defaults) and checks with the code compiled from that JSON
// (gateway/schema/validators/config.cjs).
import type { ErrorObject, ValidateFunction } from 'ajv';
import { schemaFile, schemaValidators } from './schema-file.js';
import type { GatewayOptions, Meta } from './schema-source/config.js';

export type { GatewayOptions } from './schema-source/config.js';

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

type Key = keyof GatewayOptions;
/** A property of the schema as the JSON file has it: plain JSON Schema and our help fields. */
type OptionSchema = Meta & { type?: string; anyOf?: unknown[]; default?: unknown };

/** The published configuration schema (gateway/schema/config.schema.json), read on first use. */
export const configSchema = schemaFile<{ properties: Record<Key, OptionSchema> }>('config.schema.json');

/** Every option's key (camelCase), in the schema's order. */
export const optionKeys = (): Key[] => Object.keys(configSchema().properties) as Key[];

const optionSchema = (key: string): OptionSchema | undefined => (configSchema().properties as Record<string, OptionSchema | undefined>)[key];

/** `maxBody` → `max-body` */
export const flagName = (key: string): string => key.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase());
/** `maxBody` → `NATSGW_MAX_BODY` */
export const envName = (key: string): string => 'NATSGW_' + key.replace(/[A-Z]/g, (c) => '_' + c).toUpperCase();

/** Help text for one option, as schema metadata. */
export function optionMeta(key: Key): Meta & { default?: unknown; type: string } {
  const s = optionSchema(key)!;
  return { ...s, type: s.type === 'integer' ? 'number' : s.type === 'array' ? 'array' : s.anyOf ? 'string' : String(s.type) };
}

/** The schema's validator, compiled at build time (it coerces strings and fills in defaults: schema-source/validators.ts). */
const configValidators = schemaValidators<'config'>('config.cjs');
let checker: { validate: ValidateFunction<GatewayOptions>; arrayKeys: ReadonlySet<string> } | undefined;
/** The validator and the keys that take lists: loaded on first use, so importing this reads nothing. */
function check(): NonNullable<typeof checker> {
  if (checker === undefined) {
    checker = { validate: configValidators().config as ValidateFunction<GatewayOptions>, arrayKeys: new Set(optionKeys().filter((k) => optionSchema(k)?.type === 'array')) };
  }
  return checker;
}

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
  const { validate, arrayKeys } = check();
  const merged: Record<string, unknown> = {};
  const origin: Record<string, string> = {};

  if (sources.file !== undefined) {
    const fileValues = readConfigFile(sources.file);
    for (const [k, v] of Object.entries(fileValues)) {
      merged[k] = v;
      origin[k] = `${k} in ${sources.file}`;
    }
  }
  for (const key of optionKeys()) {
    const v = sources.env?.[envName(key)];
    if (v !== undefined) {
      merged[key] = v;
      origin[key] = envName(key);
    }
  }
  for (const [key, v] of Object.entries(sources.flags ?? {})) {
    if (v === undefined) continue;
    if (Array.isArray(v) && !arrayKeys.has(key)) throw new ConfigError(`--${flagName(key)} given more than once`);
    merged[key] = v;
    origin[key] = '--' + flagName(key);
  }
  for (const key of arrayKeys) if (merged[key] !== undefined) merged[key] = splitList(merged[key]);

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
  // "$schema" points an editor at gateway/schema/config.schema.json (which allows it); it is not an option.
  const { $schema, ...options } = parsed as Record<string, unknown>;
  if ($schema !== undefined && typeof $schema !== 'string') throw new ConfigError(`"$schema" in config file ${path} must be a string (a schema's URL or path)`);
  return options;
}

function describe(e: ErrorObject, values: Record<string, unknown>, origin: Record<string, string>): string {
  if (e.keyword === 'additionalProperties') {
    const extra = (e.params as { additionalProperty: string }).additionalProperty;
    return `unknown option ${origin[extra] ?? extra}`;
  }
  const key = e.instancePath.split('/')[1] ?? '';
  const where = origin[key] ?? key;
  const meta = optionSchema(key);
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
