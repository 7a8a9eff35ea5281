/**
 * Hostile input from the NATS side (RELIABILITY.md 27, 28): nothing any NATS
 * user sends can stop a connection's reader, crash the gateway or a service,
 * or make it allocate for what a message merely declares.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type Msg } from '@nats-io/transport-node';
import { request } from 'undici';
import { connectRaw, startNatsServer } from '@natsgw/devkit';
import { encodeReply, encodeRequest, PROTOCOL_VERSION } from '@natsgw/service-sdk/protocol';
import { openRoutesBucket } from '../src/routes/routes-bucket.js';
import { ReplyMux, type PendingRequest } from '../src/nats/reply-mux.js';
import { serveAdminOverNats } from '../src/ops/admin-nats.js';
import { viewSource } from '../src/ops/admin-source.js';
import { AdminToken } from '../src/ops/admin-token.js';
import { NatsFaults } from '../src/nats/nats-faults.js';
import type { GatewayView } from '../src/ops/gateway-view.js';
import { RouteTable } from '../src/routes/route-table.js';
import { RoutesWatcher } from '../src/routes/routes-watcher.js';
import { createLogger } from '../src/log.js';
import { startBackends } from './backends.js';
import { eventually, respond, startStack, type LogLine } from './helpers.js';

const BAD_HEADERS = 'NATS/1.0\r\nBad Name: x\r\nX-Ok: fine\r\nX-\u00e9: y\r\n\r\n';
const ok = (body = 'ok') => encodeReply({ v: PROTOCOL_VERSION, status: 200, headers: ['content-type', 'text/plain'], body: Buffer.from(body) });

/** Asserts `GET base/path` answers 200 within `ms` (a stalled reader would wait for --timeout). */
async function servedAtOnce(base: string, path: string, ms = 1000): Promise<void> {
  const t0 = Date.now();
  const r = await request(`${base}${path}`);
  const text = await r.body.text();
  assert.equal(r.statusCode, 200, text);
  assert.ok(Date.now() - t0 < ms, `took ${Date.now() - t0} ms`);
}

test('hostile: a malformed NATS header on a reply, an admin request, a KV entry or a mount announcement stops nothing; the next request is served at once', async () => {
  const s = await startStack({ timeout: 5000 });
  const raw = await connectRaw(s.ns.url);
  try {
    await s.serve((_req, res) => res.end('svc'), { nats: s.nc, subject: 'api.svc' });
    await eventually(() => s.gw.overrides.state === 'watching', 10_000, 'routes bucket watched');

    // (a) A service answers with a header block nats.js cannot decode.
    raw.subscribe('api.evil', (m) => raw.publish(m.reply!, ok('evil'), { headerBlock: BAD_HEADERS }));
    await raw.flush();
    const evil = await request(`${s.base}/evil`);
    assert.equal(evil.statusCode, 200, 'the bad header lines are dropped, the envelope is served');
    assert.equal(await evil.body.text(), 'evil');
    await servedAtOnce(s.base, '/svc');

    // (b) Anyone sends an admin request with one.
    const answers: string[] = [];
    raw.subscribe('_INBOX.raw.admin', (m) => answers.push(m.payload.toString()));
    raw.publish('natsgw.admin.status', '', { reply: '_INBOX.raw.admin', headerBlock: BAD_HEADERS });
    await eventually(() => answers.length === 1, 2000, 'the admin request answered');
    assert.equal((JSON.parse(answers[0]!) as { ok: boolean }).ok, true);
    await servedAtOnce(s.base, '/svc');

    // (c) A KV writer stores one in the routes bucket; later keys (a put and a delete) still apply.
    const [backend] = await startBackends(1);
    try {
      const kv = await openRoutesBucket(s.nc);
      await kv.put('api.later', JSON.stringify({ upstreams: [{ url: backend!.url }] }));
      await eventually(() => s.gw.routes.match('api.later') !== undefined, 5000, 'api.later applied');
      raw.publish('$KV.natsgw-routes.api.kvbad', JSON.stringify({ upstreams: [{ url: backend!.url }] }), { headerBlock: 'NATS/1.0\r\nBad Name: x\r\n\r\n' });
      raw.publish('$KV.natsgw-routes.api.kvjunk', '\u0000not json', { headerBlock: 'NATS/1.0\r\nKV-Operation: PUT\r\nX-\u00ff: y\r\n\r\n' });
      raw.publish('$KV.natsgw-routes.api.kvop', '{}', { headerBlock: 'NATS/1.0\r\nKV-Operation: EXPLODE\r\n\r\n' });
      await raw.flush(); // stored before what follows on the other connection
      await kv.put('api.after', JSON.stringify({ upstreams: [{ url: backend!.url }] }));
      await kv.delete('api.later');
      await eventually(() => s.gw.routes.match('api.after') !== undefined && s.gw.routes.match('api.later') === undefined, 5000, 'keys written after the bad ones applied');
      assert.ok(s.gw.routes.match('api.kvbad') !== undefined, 'an entry whose only fault is a bad header line is read as the entry it is');
      assert.match(s.gw.routes.rejected.get('api.kvjunk')?.reason ?? '', /not JSON/);
      assert.match(s.gw.routes.rejected.get('api.kvop')?.reason ?? '', /unknown KV operation "EXPLODE"/);
      assert.equal(s.gw.routes.match('api.kvjunk'), undefined);
      await servedAtOnce(s.base, '/svc');
    } finally {
      await backend!.stop();
    }

    // (d) A forged mount announcement reaches the service's registry.
    raw.publish('_NATSGW.mounts.announce', '{"v":1}', { headerBlock: BAD_HEADERS });
    raw.publish('_NATSGW.mounts.announce.api.svc.x', '{"v":1}', { headerBlock: BAD_HEADERS });
    await raw.flush();
    await servedAtOnce(s.base, '/svc');

    assert.ok(s.gw.view.faults['malformed-headers'] >= 4, `counted: ${JSON.stringify(s.gw.view.faults)}`);
    assert.ok(
      s.logs.some((l) => /header lines that do not parse/.test(l.msg)),
      'logged',
    );
  } finally {
    raw.close();
    await s.close();
  }
});

test('hostile: replies in legal but unusual msgpack are served or refused with a 502 at once, without allocating for declared lengths', async () => {
  const s = await startStack({ timeout: 5000 });
  const raw = await connectRaw(s.ns.url);
  try {
    const replies: Record<string, Buffer> = {
      // {"v": uint64 1, "status": int64 200, "body": "u64"}
      u64: Buffer.from('83a176cf0000000000000001a6737461747573d300000000000000c8a4626f6479a3753634', 'hex'),
      // status as a uint64 beyond 2^53: refused, not a BigInt
      huge: Buffer.from('82a17601a6737461747573cf0020000000000000', 'hex'),
      // 26 bytes declaring 2^32-1 headers
      bomb: Buffer.from('83a17601a6737461747573ccc8a7686561646572' + '73ddffffffff', 'hex'),
      // an extension type in a field the gateway does not know
      ext: Buffer.from('83a17601a6737461747573ccc8a178d40100', 'hex'),
    };
    raw.subscribe('api.odd.*', (m) => raw.publish(m.reply!, replies[m.subject.split('.').pop()!]!));
    raw.subscribe('api.fine', (m) => raw.publish(m.reply!, ok()));
    await raw.flush();
    const served = await request(`${s.base}/odd/u64`);
    assert.equal(served.statusCode, 200);
    assert.equal(await served.body.text(), 'u64');
    const heapBefore = process.memoryUsage().heapUsed;
    for (const [kind, reason] of [
      ['huge', /integer out of range/],
      ['bomb', /longer than the message/],
      ['ext', /extension types/],
    ] as const) {
      const t0 = Date.now();
      const r = await request(`${s.base}/odd/${kind}`);
      assert.equal(r.statusCode, 502, kind);
      assert.match(((await r.body.json()) as { detail: string }).detail, reason, kind);
      assert.ok(Date.now() - t0 < 1000, `${kind}: answered at once`);
      await servedAtOnce(s.base, '/fine');
    }
    assert.ok(process.memoryUsage().heapUsed - heapBefore < 32 * 1024 * 1024, 'no allocation for declared lengths');
  } finally {
    raw.close();
    await s.close();
  }
});

interface Pending extends PendingRequest {
  n: number;
}

test('hostile: a reply-mux handler that throws ends its own request (502 path) and the next request is served at once', async () => {
  const ns = await startNatsServer({ jetstream: false });
  const nc = await connect({ servers: ns.url });
  const service = await connect({ servers: ns.url });
  try {
    service.subscribe('svc', { callback: (_e, m: Msg) => void m.respond('pong') });
    service.subscribe('svc.never', { callback: () => undefined });
    await service.flush();
    const outcomes: string[] = [];
    const mux = new ReplyMux<Pending>(
      nc,
      {
        onReply: (p) => {
          if (p.n === 1) throw new Error('boom in onReply');
          outcomes.push(`reply ${p.n}`);
        },
        onNoResponders: (p) => outcomes.push(`no responders ${p.n}`),
        onServiceError: (p) => outcomes.push(`service error ${p.n}`),
        onTimeout: (p) => {
          if (p.n === 3) throw new Error('boom in onTimeout');
          outcomes.push(`timeout ${p.n}`);
        },
        onConnectionLost: (p) => outcomes.push(`lost ${p.n}`),
        onPublishFailed: (p) => outcomes.push(`publish failed ${p.n}`),
        onStreamMessage: () => undefined,
        onStreamPeerGone: () => undefined,
        onHandlerError: (p, err) => outcomes.push(`handler error ${p.n}: ${(err as Error).message}`),
      },
      200,
    );
    mux.send('svc', new Uint8Array(0), { muxKey: '', deadline: 0, n: 1 });
    await eventually(() => outcomes.length === 1, 2000, 'first request ended');
    const t0 = Date.now();
    mux.send('svc', new Uint8Array(0), { muxKey: '', deadline: 0, n: 2 });
    await eventually(() => outcomes.length === 2, 1000, 'second request served');
    assert.ok(Date.now() - t0 < 500);
    mux.send('nobody-listens-here', new Uint8Array(0), { muxKey: '', deadline: 0, n: 4 });
    mux.send('svc.never', new Uint8Array(0), { muxKey: '', deadline: 0, n: 3 });
    await eventually(() => outcomes.length === 4, 2000, 'timeout handled');
    assert.deepEqual(outcomes, ['handler error 1: boom in onReply', 'reply 2', 'no responders 4', 'handler error 3: boom in onTimeout']);
    mux.close();
  } finally {
    await service.close();
    await nc.close();
    await ns.dispose();
  }
});

test('hostile: an admin view that throws answers "internal error", is counted, and the next admin request is answered', async () => {
  const ns = await startNatsServer({ jetstream: false });
  const nc = await connect({ servers: ns.url });
  const client = await connect({ servers: ns.url });
  const logs: LogLine[] = [];
  const faults = new NatsFaults(createLogger('debug', 'json', { write: (l: string) => void logs.push(JSON.parse(l) as LogLine) }));
  let broken = true;
  const view = {
    id: 'gw1',
    routes: new RouteTable('api'),
    traffic: { all: () => [], ratePerSecond: () => 0, total: 0 },
    inFlight: () => {
      if (broken) throw new Error('view exploded');
      return 0;
    },
  } as unknown as GatewayView;
  try {
    serveAdminOverNats(nc, viewSource(view), new AdminToken(undefined), faults);
    await nc.flush();
    const first = (await client.request('natsgw.admin.status', '', { timeout: 1000 })).json<{ ok: boolean; error: string }>();
    assert.deepEqual(first, { id: 'gw1', ok: false, error: 'internal error' });
    assert.equal(faults.counts['internal-error'], 1);
    assert.ok(logs.some((l) => l.msg === 'admin request over NATS failed'));
    broken = false;
    const second = (await client.request('natsgw.admin.routes', '', { timeout: 1000 })).json<{ ok: boolean }>();
    assert.equal(second.ok, true);
  } finally {
    await client.close();
    await nc.close();
    await ns.dispose();
  }
});

test('hostile: a routes entry that throws while being applied is rejected with its reason; later entries apply', async () => {
  const ns = await startNatsServer();
  const nc = await connect({ servers: ns.url });
  const [backend] = await startBackends(1);
  class ExplodingTable extends RouteTable {
    override put(key: string, value: Uint8Array | string, revision: number) {
      if (key === 'api.boom') throw new Error('exploded while applying');
      return super.put(key, value, revision);
    }
  }
  const table = new ExplodingTable('api');
  const watcher = new RoutesWatcher(nc, 'natsgw-routes', table, createLogger('silent'));
  try {
    void watcher.run();
    await eventually(() => watcher.status.state === 'watching', 10_000, 'watching');
    const kv = await openRoutesBucket(nc);
    const route = JSON.stringify({ upstreams: [{ url: backend!.url }] });
    await kv.put('api.boom', route);
    await kv.put('api.next', route);
    await eventually(() => table.match('api.next') !== undefined, 5000, 'the entry after it applied');
    assert.match(table.rejected.get('api.boom')?.reason ?? '', /could not be applied: exploded while applying/);
    assert.equal(watcher.status.state, 'watching', 'the watch never stopped');
  } finally {
    await watcher.stop();
    table.clear();
    await nc.close();
    await backend!.stop();
    await ns.dispose();
  }
});

test('hostile: in a service, a logger that throws while a bad request is rejected does not stop the connection; the next request is served at once', async () => {
  const s = await startStack({ timeout: 5000 });
  try {
    const throwing = {
      error: () => {
        throw new Error('logger down');
      },
      warn: () => {
        throw new Error('logger down');
      },
      info: () => undefined,
    };
    await s.serve((_req, res) => res.end('fine'), { nats: s.nc, subject: 'api.log', logger: throwing });
    const answer = await s.nc.request('api.log.x', Buffer.from('not an envelope'), { timeout: 1000 });
    assert.ok(answer.data.length > 0, 'the bad request is still answered (400)');
    const good = await s.nc.request(
      'api.log.x',
      encodeRequest({
        v: 1,
        id: 'r',
        method: 'GET',
        path: '/log/x',
        query: '',
        headers: [],
        body: new Uint8Array(0),
        remote: '',
        scheme: 'http',
        host: '',
        root: 'api',
        subject: 'api.log.x',
        timeoutMs: 1000,
      }),
      { timeout: 1000 },
    );
    assert.ok(good.data.length > 0);
    await servedAtOnce(s.base, '/log/y');
  } finally {
    await s.close();
  }
});

test('hostile: a reply subject says nothing about the next one: a party that saw one cannot answer another request', async () => {
  const s = await startStack({ timeout: 1500 });
  const raw = await connectRaw(s.ns.url);
  try {
    const seen: string[] = [];
    raw.subscribe('api.seen', (m) => {
      seen.push(m.reply!);
      raw.publish(m.reply!, ok('seen'));
    });
    await respond(s.nc, 'api.other', () => undefined); // never answers by itself
    await raw.flush();
    assert.equal(await (await request(`${s.base}/seen`)).body.text(), 'seen');
    const first = seen[0]!;
    const prefix = first.slice(0, first.lastIndexOf('.') + 1);
    const key = first.slice(prefix.length);
    assert.match(key, /^[0-9a-z]+_[A-Za-z0-9_-]{11}$/, 'a sequence number and 66 random bits');
    const seq = parseInt(key.split('_')[0]!, 36);
    // Guess the next request's reply subject every way a sequence allows.
    const other = request(`${s.base}/other`);
    await new Promise((r) => setTimeout(r, 100));
    for (const n of [seq + 1, seq + 2]) for (const guess of [`${prefix}${n.toString(36)}`, `${prefix}${n.toString(36)}_${key.split('_')[1]}`]) raw.publish(guess, ok('forged'));
    await raw.flush();
    const r = await other;
    assert.equal(r.statusCode, 504, 'the forged answers reached nothing; the request timed out as it should');
    await r.body.dump();
  } finally {
    raw.close();
    await s.close();
  }
});
