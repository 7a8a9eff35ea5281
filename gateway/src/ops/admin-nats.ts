/**
 * The admin views over NATS, so the CLI can find every gateway on a cluster
 * without knowing where they run:
 *
 *   natsgw.admin.<verb>        every gateway answers (scatter-gather)
 *   natsgw.admin.<id>.<verb>   one gateway answers
 *
 * With --admin-token set, a request must be signed with it (header
 * Natsgw-Admin-Auth, see admin-token.ts): the token itself never travels on
 * these broadcast subjects, and a signature seen on them cannot be reused.
 * Replies are JSON: {"id", "ok": true, "data"} or {"id", "ok": false, "error"}.
 */
import type { Msg, NatsConnection, Subscription } from '@nats-io/transport-node';
import { isAdminVerb } from './admin-data.js';
import type { AdminSource } from './admin-source.js';
import { ADMIN_AUTH_HEADER, type AdminToken } from './admin-token.js';
import type { NatsFaults } from '../nats/nats-faults.js';

export const ADMIN_SUBJECT_PREFIX = 'natsgw.admin';

/**
 * Answers admin requests on `nc`. Anyone on NATS can send one, so every
 * request gets a defined answer and nothing in it can break the callback
 * (which runs inside nats.js's reader): a failure is counted in `faults`,
 * logged, and answered `{ ok: false, error: "internal error" }`.
 */
export function serveAdminOverNats(nc: NatsConnection, source: AdminSource, token: AdminToken, faults: NatsFaults): Subscription[] {
  const reply = (msg: Msg, text: string): void => {
    try {
      msg.respond(text);
    } catch (error) {
      faults.record('internal-error', { err: error, subject: msg.subject }, 'could not answer an admin request over NATS');
    }
  };
  const handle = (_err: Error | null, msg: Msg): void => {
    if (!msg.reply) return;
    // A promise even for a synchronous throw, so every failure lands in catch.
    Promise.resolve()
      .then(() => respond(msg))
      .then(
        (answer) => reply(msg, JSON.stringify({ id: source.id, ...answer })),
        (error: unknown) => {
          faults.record('internal-error', { err: error, subject: msg.subject }, 'admin request over NATS failed');
          reply(msg, JSON.stringify({ id: source.id, ok: false, error: 'internal error' }));
        },
      );
  };
  const respond = async (msg: Msg): Promise<object> => {
    const verb = msg.subject.slice(msg.subject.lastIndexOf('.') + 1);
    if (!token.allowsSigned(msg.headers?.get(ADMIN_AUTH_HEADER) || undefined, msg.subject, msg.reply ?? '')) return { ok: false, error: 'unauthorized' };
    if (!isAdminVerb(verb)) return { ok: false, error: `unknown admin verb ${JSON.stringify(verb.slice(0, 32))}` };
    return { ok: true, data: await source.answer(verb) };
  };
  return [nc.subscribe(`${ADMIN_SUBJECT_PREFIX}.*`, { callback: handle }), nc.subscribe(`${ADMIN_SUBJECT_PREFIX}.${source.id}.*`, { callback: handle })];
}
