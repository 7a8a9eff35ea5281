/**
 * The TypeBox source of the configuration schema (config.ts loads and checks
 * configuration with it): the options' types, and
 * gateway/schema/config.schema.json, written from this by `npm run schema`
 * and kept equal to it by a test. Build-time only: the gateway validates with
 * the JSON file and never loads TypeBox.
 */
// Hint, Kind, OptionalKind, ReadonlyKind: named so the exported schema's type can be declared.
// biome-ignore lint/correctness/noUnusedImports: the declaration emit needs these names (TS4023 without them).
import { Type, type Static, type TSchema, type Hint, type Kind, type OptionalKind, type ReadonlyKind } from '@sinclair/typebox';
import { ROOT_SUBJECT_PATTERN } from '@natsgw/service-sdk/protocol';
import {
  DEFAULT_ADMIN_HOST,
  DEFAULT_ADMIN_PORT,
  DEFAULT_HOST,
  DEFAULT_INBOX_PREFIX,
  DEFAULT_MAX_BODY_BYTES,
  DEFAULT_MAX_HEADER_BYTES,
  DEFAULT_MAX_UPLOAD_BUFFER_BYTES,
  DEFAULT_NATS_URL,
  DEFAULT_PORT,
  DEFAULT_SHUTDOWN_GRACE_MS,
  DEFAULT_STREAM_IDLE_MS,
  DEFAULT_SUBJECT,
  DEFAULT_TIMEOUT_MS,
  DEFAULT_WS_IDLE_TIMEOUT_MS,
  DEFAULT_WS_MAX_CONNECTIONS,
  DEFAULT_WS_MAX_MESSAGE_BYTES,
  LOG_FORMATS,
  LOG_LEVELS,
} from '../config.js';
import { DEFAULT_ROUTES_BUCKET } from '../routes/routes-bucket.js';
import { draft07 } from './draft07.js';

/** Per-key help, shown by `--help` and used in error messages. `hint` explains a pattern in words. */
export interface Meta {
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

/** The schema as plain JSON Schema (draft-07), as published in gateway/schema/config.schema.json. */
export function configJsonSchema(): object {
  return draft07({
    $id: 'https://natsgw.dev/schema/config.schema.json',
    title: 'natsgw configuration',
    description:
      'The options of natsgw serve, as a --config file holds them (camelCase keys); flags and NATSGW_* variables take the same values. placeholder, hint and secret are what --help and error messages use.',
    ...(GatewayOptionsSchema as TSchema),
    // Not an option: lets a config file name this schema for editors (natsgw serve ignores it).
    patternProperties: { '^\\$schema$': { type: 'string', description: 'This schema, for editors; natsgw serve ignores it.' } },
  });
}
