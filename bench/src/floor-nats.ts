/**
 * The cheapest HTTP → NATS gateway one can write on uWebSockets.js and
 * nats.js, for `npm run bench:floor`: GET only, the path is not looked at,
 * one reply subscription with a Map, publishes batched per event-loop turn
 * (as natsgw does), the reply's bytes sent back as the body without
 * decoding, no timeouts, no headers, no validation. NOT a product: the floor
 * under natsgw's NATS path, to tell what its features cost from what its
 * parts (uWS, nats.js, nats-server) cost.
 *
 * env NATS_URL, SUBJECT. Prints "port N" once listening.
 */
import { connect, createInbox } from '@nats-io/transport-node';
import uws from 'uWebSockets.js';

const nc = await connect({ servers: process.env.NATS_URL! });
const subject = process.env.SUBJECT ?? 'api.raw';
const prefix = createInbox() + '.';
interface Pending {
  res: uws.HttpResponse;
  aborted: boolean;
}
const pending = new Map<string, Pending>();
let next = 0;
nc.subscribe(prefix + '*', {
  callback: (_err, msg) => {
    const key = msg.subject.slice(prefix.length);
    const p = pending.get(key);
    if (p === undefined) return;
    pending.delete(key);
    if (!p.aborted) p.res.cork(() => p.res.end(msg.data));
  },
});
const batch: string[] = [];
let scheduled = false;
const flush = () => {
  scheduled = false;
  for (const reply of batch) nc.publish(subject, EMPTY, { reply });
  batch.length = 0;
};
const EMPTY = new Uint8Array(0);
const app = uws.App().get('/*', (res) => {
  const key = String(next++);
  const p: Pending = { res, aborted: false };
  res.onAborted(() => {
    p.aborted = true;
    pending.delete(key);
  });
  pending.set(key, p);
  batch.push(prefix + key);
  if (!scheduled) {
    scheduled = true;
    setImmediate(flush);
  }
});
app.listen('127.0.0.1', 0, (socket) => {
  if (!socket) throw new Error('cannot listen');
  process.stdout.write(`port ${uws.us_socket_local_port(socket)}\n`);
});
