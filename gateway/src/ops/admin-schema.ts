/**
 * The admin views' shapes, defined once: the gateway's types come from these
 * schemas (admin-data.ts builds the views), and the fleet CLI checks every
 * answer it receives against them before it shows anything, because anyone
 * who may publish on NATS can answer an admin request. Fields a later
 * gateway adds are allowed (additionalProperties); the fields the CLI
 * reads must have the stated types.
 */
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { Ajv } from 'ajv';

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

export const ADMIN_VERBS = ['status', 'routes', 'backends', 'circuits', 'stats'] as const;
export type AdminVerb = (typeof ADMIN_VERBS)[number];

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

type Check = ((x: unknown) => boolean) & { errors?: Array<{ instancePath?: string; message?: string }> | null };
let compiled: { answer: Check; views: Record<AdminVerb, Check> } | undefined;
/** Compiled on first use: only the CLI checks answers, so a gateway never pays for it at start-up. */
function checks(): { answer: Check; views: Record<AdminVerb, Check> } {
  if (compiled === undefined) {
    const ajv = new Ajv({ allErrors: false, strict: false });
    compiled = {
      answer: ajv.compile(AdminAnswerSchema),
      views: Object.fromEntries(Object.entries(VIEW_SCHEMAS).map(([verb, schema]) => [verb, ajv.compile(schema)])) as unknown as Record<AdminVerb, Check>,
    };
  }
  return compiled;
}

/**
 * Checks an answer to `verb`; returns it, or why it is not a gateway's.
 * @example checkAdminAnswer('status', JSON.parse(text))
 */
export function checkAdminAnswer(verb: AdminVerb, answer: unknown): AdminAnswer | string {
  const { answer: checkAnswer, views } = checks();
  if (!checkAnswer(answer)) return `not an admin answer (${describe(checkAnswer.errors?.[0])})`;
  const a = answer as AdminAnswer;
  if (a.ok && !views[verb](a.data)) return `its ${verb} view does not have the expected shape (${describe(views[verb].errors?.[0])})`;
  return a;
}

/** Checks the data of `verb` from one gateway's HTTP admin API. */
export function checkAdminView(verb: AdminVerb, data: unknown): string | undefined {
  const check = checks().views[verb];
  return check(data) ? undefined : `its ${verb} view does not have the expected shape (${describe(check.errors?.[0])})`;
}

function describe(e: { instancePath?: string; message?: string } | null | undefined): string {
  return e ? `${e.instancePath || 'answer'} ${e.message ?? 'is invalid'}` : 'invalid';
}
