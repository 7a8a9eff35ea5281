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
import { answer, isAdminVerb } from './admin-data.js';
import { ADMIN_AUTH_HEADER, type AdminToken } from './admin-token.js';
import type { GatewayView } from './gateway-view.js';
import type { NatsFaults } from '../nats/nats-faults.js';

export const ADMIN_SUBJECT_PREFIX = 'natsgw.admin';

/**
 * Answers admin requests on `nc`. Anyone on NATS can send one, so every
 * request gets a defined answer and nothing in it can break the callback
 * (which runs inside nats.js's reader): a failure is counted in `faults`,
 * logged, and answered `{ ok: false, error: "internal error" }`.
 */
export function serveAdminOverNats(nc: NatsConnection, view: GatewayView, token: AdminToken, faults: NatsFaults): Subscription[] {
  const handle = (_err: Error | null, msg: Msg): void => {
    if (!msg.reply) return;
    let text: string;
    try {
      text = JSON.stringify({ id: view.id, ...respond(msg) });
    } catch (error) {
      faults.record('internal-error', { err: error, subject: msg.subject }, 'admin request over NATS failed');
      text = JSON.stringify({ id: view.id, ok: false, error: 'internal error' });
    }
    try {
      msg.respond(text);
    } catch (error) {
      faults.record('internal-error', { err: error, subject: msg.subject }, 'could not answer an admin request over NATS');
    }
  };
  const respond = (msg: Msg): object => {
    const verb = msg.subject.slice(msg.subject.lastIndexOf('.') + 1);
    if (!token.allowsSigned(msg.headers?.get(ADMIN_AUTH_HEADER) || undefined, msg.subject, msg.reply ?? '')) return { ok: false, error: 'unauthorized' };
    if (!isAdminVerb(verb)) return { ok: false, error: `unknown admin verb ${JSON.stringify(verb.slice(0, 32))}` };
    return { ok: true, data: answer(view, verb) };
  };
  return [nc.subscribe(`${ADMIN_SUBJECT_PREFIX}.*`, { callback: handle }), nc.subscribe(`${ADMIN_SUBJECT_PREFIX}.${view.id}.*`, { callback: handle })];
}
