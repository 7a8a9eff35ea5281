/**
 * The admin views over NATS, so the CLI can find every gateway on a cluster
 * without knowing where they run:
 *
 *   natsgw.admin.<verb>        every gateway answers (scatter-gather)
 *   natsgw.admin.<id>.<verb>   one gateway answers
 *
 * Requests carry the admin token, when one is set, in an `Authorization:
 * Bearer …` NATS header. Replies are JSON: {"id", "ok": true, "data"} or
 * {"id", "ok": false, "error"}.
 */
import type { Msg, NatsConnection, Subscription } from '@nats-io/transport-node';
import { answer, isAdminVerb } from './admin-data.js';
import type { AdminToken } from './admin-token.js';
import type { GatewayView } from './gateway-view.js';

export const ADMIN_SUBJECT_PREFIX = 'natsgw.admin';

export function serveAdminOverNats(nc: NatsConnection, view: GatewayView, token: AdminToken): Subscription[] {
  const handle = (_err: Error | null, msg: Msg): void => {
    if (!msg.reply) return;
    const verb = msg.subject.slice(msg.subject.lastIndexOf('.') + 1);
    let body: object;
    if (!token.allows(msg.headers?.get('Authorization') || undefined)) body = { ok: false, error: 'unauthorized' };
    else if (!isAdminVerb(verb)) body = { ok: false, error: `unknown admin verb ${verb}` };
    else body = { ok: true, data: answer(view, verb) };
    msg.respond(JSON.stringify({ id: view.id, ...body }));
  };
  return [nc.subscribe(`${ADMIN_SUBJECT_PREFIX}.*`, { callback: handle }), nc.subscribe(`${ADMIN_SUBJECT_PREFIX}.${view.id}.*`, { callback: handle })];
}
