/**
 * The admin views' shapes, defined once: the gateway's types come from these
 * schemas (admin-data.ts builds the views), and the fleet CLI checks every
 * answer it receives against them before it shows anything, because anyone
 * who may publish on NATS can answer an admin request. Fields a later
 * gateway adds are allowed (additionalProperties); the fields the CLI
 * reads must have the stated types.
 */
// The schemas' source is schema-source/admin.ts (TypeBox, build-time); this
// checks with the code compiled from the JSON written from it
// (gateway/schema/admin.schema.json → gateway/schema/validators/admin.cjs).
import { schemaValidators } from '../schema-file.js';
import type { AdminAnswer } from '../schema-source/admin.js';

export type { AdminAnswer, BackendView, CircuitView, GatewayStatus, RoutesView, StatsView } from '../schema-source/admin.js';

export const ADMIN_VERBS = ['status', 'routes', 'backends', 'circuits', 'stats'] as const;
export type AdminVerb = (typeof ADMIN_VERBS)[number];

/** One validator per definition of the schema, compiled at build time; loaded on first use (only the CLI checks answers). */
const validators = schemaValidators<'answer' | AdminVerb>('admin.cjs');

/**
 * Checks an answer to `verb`; returns it, or why it is not a gateway's.
 * @example checkAdminAnswer('status', JSON.parse(text))
 */
export function checkAdminAnswer(verb: AdminVerb, answer: unknown): AdminAnswer | string {
  const check = validators().answer;
  if (!check(answer)) return `not an admin answer (${describe(check.errors?.[0])})`;
  const a = answer as AdminAnswer;
  return a.ok ? (checkAdminView(verb, a.data) ?? a) : a;
}

/** Checks the data of `verb` from one gateway's HTTP admin API. */
export function checkAdminView(verb: AdminVerb, data: unknown): string | undefined {
  const check = validators()[verb];
  return check(data) ? undefined : `its ${verb} view does not have the expected shape (${describe(check.errors?.[0])})`;
}

function describe(e: { instancePath?: string; message?: string } | null | undefined): string {
  return e ? `${e.instancePath || 'answer'} ${e.message ?? 'is invalid'}` : 'invalid';
}
