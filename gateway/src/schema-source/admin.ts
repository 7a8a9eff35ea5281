/**
 * The TypeBox source of the admin views' shapes (ops/admin-schema.ts checks
 * answers with them): the gateway's types for the views admin-data.ts
 * builds, and gateway/schema/admin.schema.json, written from this by
 * `npm run schema` and kept equal to it by a test. Build-time only: the CLI
 * checks answers with the JSON file and never loads TypeBox.
 */
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import type { AdminVerb } from '../ops/admin-schema.js';
import { draft07 } from './draft07.js';

const Str = Type.String({ maxLength: 4096 });
const NullableStr = Type.Union([Str, Type.Null()]);
const Num = Type.Number();
const open = <T extends Parameters<typeof Type.Object>[0]>(props: T) => Type.Object(props, { additionalProperties: true });

export const GatewayStatusSchema = open({
  id: Str,
  host: Str,
  pid: Num,
  version: Str,
  startedAt: Str,
  uptimeS: Num,
  rootSubject: Str,
  ready: Type.Boolean(),
  shuttingDown: Type.Boolean(),
  nats: open({ connected: Type.Boolean(), server: NullableStr, reconnects: Num }),
  inFlight: Num,
  websockets: open({ open: Num, topics: Num, opened: Num, rejected: Num, messagesIn: Num, messagesOut: Num, bytesIn: Num, bytesOut: Num, closes: Type.Record(Type.String(), Num) }),
  requestsPerSecond: Num,
  requestsTotal: Num,
  overrides: open({ available: Type.Boolean(), state: Str, bucket: Str, reason: Type.Optional(Str), routes: Num, rejected: Num }),
});
export type GatewayStatus = Static<typeof GatewayStatusSchema>;

export const RoutesViewSchema = open({
  applied: Type.Array(
    open({
      subject: Str,
      revision: Num,
      upstreams: Type.Array(open({ url: Str, weight: Num })),
      balancing: Str,
      config: Type.Record(Type.String(), Type.Unknown()),
    }),
  ),
  rejected: Type.Array(open({ subject: Str, revision: Num, reason: Str, at: Str })),
});
export type RoutesView = Static<typeof RoutesViewSchema>;

/** A backend: one URL with one set of backend settings (`settings`, a short hash), and the routes using it (at most 100 listed; `routeCount` counts all). */
const BackendIdentity = {
  url: Str,
  settings: Str,
  routes: Type.Array(Str, { maxItems: 1000 }),
  routeCount: Num,
};

export const BackendViewSchema = open({
  ...BackendIdentity,
  available: Type.Boolean(),
  healthy: Type.Boolean(),
  activeChecks: Type.Boolean(),
  lastProbe: Type.Union([open({ at: Str, ok: Type.Boolean(), detail: Str }), Type.Null()]),
  ejected: Type.Boolean(),
  ejectedUntil: NullableStr,
  ejections: Num,
  inFlight: Num,
  requests: Num,
  failures: Num,
  breaker: NullableStr,
});
export type BackendView = Static<typeof BackendViewSchema>;

export const CircuitViewSchema = open({ ...BackendIdentity, state: Str, consecutiveFailures: Num, trips: Num, nextTrialAt: NullableStr });
export type CircuitView = Static<typeof CircuitViewSchema>;

const NullableNum = Type.Union([Num, Type.Null()]);
export const StatsViewSchema = open({
  route: Str,
  target: Str,
  requests: Num,
  byStatusClass: open({ '1xx': Num, '2xx': Num, '3xx': Num, '4xx': Num, '5xx': Num }),
  clientAborts: Num,
  latencyMs: open({ p50: NullableNum, p90: NullableNum, p99: NullableNum }),
  bytes: Num,
});
export type StatsView = Static<typeof StatsViewSchema>;

const VIEW_SCHEMAS: Record<AdminVerb, TSchema> = {
  status: GatewayStatusSchema,
  routes: RoutesViewSchema,
  backends: Type.Array(BackendViewSchema, { maxItems: 100_000 }),
  circuits: Type.Array(CircuitViewSchema, { maxItems: 100_000 }),
  stats: Type.Array(StatsViewSchema, { maxItems: 100_000 }),
};

/** One answer to an admin request over NATS, as a gateway sends it. */
export const AdminAnswerSchema = Type.Union([
  Type.Object({ id: Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9_-]+$' }), ok: Type.Literal(true), data: Type.Unknown() }, { additionalProperties: true }),
  Type.Object({ id: Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9_-]+$' }), ok: Type.Literal(false), error: Type.String({ maxLength: 1000 }) }, { additionalProperties: true }),
]);
export type AdminAnswer = Static<typeof AdminAnswerSchema>;

/** The schemas as plain JSON Schema (draft-07), as published in gateway/schema/admin.schema.json: `answer`, and one view per verb. */
export function adminJsonSchema(): object {
  return draft07({
    $id: 'https://natsgw.dev/schema/admin.schema.json',
    title: 'natsgw admin answers',
    description:
      'What a gateway answers an admin request with over NATS (definitions.answer), and the data of each verb (definitions.status, …), as the fleet CLI checks them. Later gateways may add fields.',
    definitions: { answer: AdminAnswerSchema, ...VIEW_SCHEMAS },
  });
}
