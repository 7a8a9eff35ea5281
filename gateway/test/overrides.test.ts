import { test } from 'node:test';
import { jetstreamManager } from '@nats-io/jetstream';
import assert from 'node:assert/strict';
import { connect } from '@nats-io/transport-node';
import { request } from 'undici';
import { startNatsServer } from '@natsgw/devkit';
import { deleteRoute, putRoute, routesBucket, startBackends, httpRoute } from './backends.js';
import { echo, eventually, startLoad, respond, startStack, startTestGateway } from './helpers.js';

const backendOf = async (r: Awaited<ReturnType<typeof request>>) => ((await r.body.json()) as { backend?: string; path?: string }).backend ?? 'nats';

test('overrides: a change reaches every gateway within 1 s and sends its paths to HTTP', async () => {
  const s = await startStack();
  const second = await startTestGateway({ nats: s.ns.url });
  const [b1] = await startBackends(1);
  try {
    await second.gw.connected;
    await respond(s.nc, 'api.legacy.>', (req) => echo(req));
    const kv = await routesBucket(s.nc);
    await eventually(() => s.gw.overrides.state === 'watching' && second.gw.overrides.state === 'watching', 5000, 'both watching');
    const t0 = Date.now();
    await kv.put('api.legacy', JSON.stringify({ upstreams: [{ url: b1!.url }] }));
    const seenAt: number[] = [];
    await Promise.all(
      [s.base, second.base].map(async (base) => {
        await eventually(async () => (await backendOf(await request(`${base}/legacy/users`))) === 'b1', 2000, 'override served');
        seenAt.push(Date.now() - t0);
      }),
    );
    assert.ok(Math.max(...seenAt) < 1000, `reached both gateways in ${seenAt.join(' and ')} ms`);
  } finally {
    await second.gw.close(200);
    await b1!.stop();
    await s.close();
  }
});

test('overrides: the longest key wins; keys outside the root are ignored', async () => {
  const s = await startStack();
  const backends = await startBackends(3);
  try {
    await respond(s.nc, 'api.>', (req) => echo(req));
    const kv = await routesBucket(s.nc);
    await putRoute(kv, s.gw, 'api.shop', { upstreams: [{ url: backends[0]!.url }] });
    await putRoute(kv, s.gw, 'api.shop.admin', { upstreams: [{ url: backends[1]!.url }] });
    await kv.put('other.shop', JSON.stringify({ upstreams: [{ url: backends[2]!.url }] }));
    await kv.put('apix.shop', JSON.stringify({ upstreams: [{ url: backends[2]!.url }] }));
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(s.gw.routes.keys().sort(), ['api.shop', 'api.shop.admin']);
    const cases: Array<[string, string]> = [
      ['/shop', 'b1'],
      ['/shop/cart', 'b1'],
      ['/shop/admin', 'b2'],
      ['/shop/admin/users/1', 'b2'],
      ['/shop/administrator', 'b1'],
      ['/shopping', 'nats'],
      ['/other/shop', 'nats'],
    ];
    for (const [path, expected] of cases) assert.equal(await backendOf(await request(`${s.base}${path}`)), expected, path);
    assert.equal(backends[2]!.hits, 0);
  } finally {
    for (const b of backends) await b.stop();
    await s.close();
  }
});

test('overrides: an invalid value is rejected with its reason; the last good version keeps serving', async () => {
  const s = await startStack();
  const [good] = await startBackends(1);
  try {
    const kv = await routesBucket(s.nc);
    const rev = await putRoute(kv, s.gw, 'api.svc', { upstreams: [{ url: good!.url }] });
    const badRev = await putRoute(kv, s.gw, 'api.svc', { upstreams: [{ url: 'ftp://nope' }] });
    assert.equal(s.gw.routes.match('api.svc')?.revision, rev, 'previous version still applied');
    assert.match(s.gw.routes.rejected.get('api.svc')!.reason, /upstreams\.0\.url/);
    assert.equal(s.gw.routes.rejected.get('api.svc')!.revision, badRev);
    assert.equal(await backendOf(await request(`${s.base}/svc/x`)), 'b1');
    assert.ok(
      s.logs.some((l) => l.msg === 'override rejected' && l.key === 'api.svc' && /url/.test(String(l.reason))),
      'rejection logged with its reason',
    );
    // A rejected key that never had a good version leaves its paths on NATS.
    await putRoute(kv, s.gw, 'api.fresh', '{"upstreams": "nope"}');
    assert.equal(s.gw.routes.match('api.fresh'), undefined);
    // A good value clears the rejection.
    await putRoute(kv, s.gw, 'api.svc', { upstreams: [{ url: good!.url }], retries: 0 });
    assert.equal(s.gw.routes.rejected.has('api.svc'), false);
  } finally {
    await good!.stop();
    await s.close();
  }
});

test('overrides: deleting the key sends its paths back to NATS', async () => {
  const s = await startStack();
  const [b] = await startBackends(1);
  try {
    await respond(s.nc, 'api.move.>', () => ({ status: 200, headers: ['content-type', 'application/json'], body: Buffer.from('{"backend":"nats"}') }));
    const kv = await routesBucket(s.nc);
    await putRoute(kv, s.gw, 'api.move', { upstreams: [{ url: b!.url }] });
    assert.equal(await backendOf(await request(`${s.base}/move/x`)), 'b1');
    await deleteRoute(kv, s.gw, 'api.move');
    assert.equal(await backendOf(await request(`${s.base}/move/x`)), 'nats');
  } finally {
    await b!.stop();
    await s.close();
  }
});

test('overrides: updates and deletes in the middle of a stream of requests lose none; in-flight requests keep their version', async (t) => {
  const s = await startStack({ timeout: 5000 });
  const [a, b] = await startBackends(2);
  try {
    await respond(s.nc, 'api.flip.>', () => ({ status: 200, headers: ['content-type', 'application/json'], body: Buffer.from('{"backend":"nats"}') }));
    // a answers slowly, so requests are in flight whenever the route changes.
    a!.handler = (_req, res) => setTimeout(() => res.end(JSON.stringify({ backend: 'b1' })), 30);
    const kv = await routesBucket(s.nc);
    await putRoute(kv, s.gw, 'api.flip', { upstreams: [{ url: a!.url }] });
    const failures: string[] = [];
    const seen = new Set<string>();
    const load = startLoad(
      t,
      async () => {
        const r = await request(`${s.base}/flip/item`, { method: 'POST', body: 'x' });
        const text = await r.body.text();
        if (r.statusCode !== 200) failures.push(`${r.statusCode} ${text}`);
        else seen.add((JSON.parse(text) as { backend: string }).backend);
      },
      { workers: 8 },
    );
    const steps: unknown[] = [{ upstreams: [{ url: b!.url }] }, null, { upstreams: [{ url: a!.url }, { url: b!.url }] }, null, { upstreams: [{ url: a!.url }] }];
    for (const step of steps) {
      await new Promise((r) => setTimeout(r, 250));
      if (step === null) await deleteRoute(kv, s.gw, 'api.flip');
      else await putRoute(kv, s.gw, 'api.flip', step);
    }
    await new Promise((r) => setTimeout(r, 250));
    await load.stop();
    assert.deepEqual([...failures, ...load.errors.map(String)], [], `no failed request out of ${load.done}`);
    assert.deepEqual([...seen].sort(), ['b1', 'b2', 'nats']);
  } finally {
    await a!.stop();
    await b!.stop();
    await s.close();
  }
});

test('overrides: unchanged backends keep their state across an update; removed ones close after draining', async () => {
  const s = await startStack();
  const [a, b, c] = await startBackends(3);
  try {
    const kv = await routesBucket(s.nc);
    const route = (urls: string[]) => ({ upstreams: urls.map((url) => ({ url })), balancing: 'round-robin', retries: 0, circuitBreaker: { failureThreshold: 2, openMs: 60_000 } });
    await putRoute(kv, s.gw, 'api.keep', route([a!.url, b!.url]));
    a!.handler = (_req, res) => {
      res.statusCode = 503;
      res.end('down');
    };
    for (let i = 0; i < 6; i++) await (await request(`${s.base}/keep/x`)).body.dump();
    const before = httpRoute(s.gw.routes, 'api.keep').upstreams.find((u) => u.url === new URL(a!.url).href)!;
    assert.equal(before.breaker!.state, 'open');

    // b gets a slow request in flight, then the route drops b and adds c.
    b!.handler = (_req, res) => setTimeout(() => res.end(JSON.stringify({ backend: 'b2' })), 400);
    const slow = request(`${s.base}/keep/slow`);
    await eventually(
      () => b!.requests.some((r) => r.url === '/keep/slow'),
      2000,
      `slow request at b (seen: a ${a!.requests.map((r) => r.url).join(',')} b ${b!.requests.map((r) => r.url).join(',')})`,
    );
    await putRoute(kv, s.gw, 'api.keep', route([a!.url, c!.url]));
    const after = httpRoute(s.gw.routes, 'api.keep').upstreams.find((u) => u.url === new URL(a!.url).href)!;
    assert.equal(after, before, 'same backend object');
    assert.equal(after.breaker!.state, 'open', 'its breaker is still open');
    const slowResponse = await slow;
    assert.equal(slowResponse.statusCode, 200, 'the in-flight request to the removed backend finished');
    assert.equal(await backendOf(slowResponse), 'b2');
    await eventually(() => b!.connections === 0, 5000, "the removed backend's connections closed");
    for (let i = 0; i < 5; i++) assert.equal(await backendOf(await request(`${s.base}/keep/x`)), 'b3', 'traffic avoids the open breaker');
  } finally {
    for (const x of [a, b, c]) await x!.stop();
    await s.close();
  }
});

test('overrides: a NATS outage keeps the last known table serving, and updates resume after it', async () => {
  const s = await startStack();
  const [a, b] = await startBackends(2);
  try {
    const kv = await routesBucket(s.nc);
    await putRoute(kv, s.gw, 'api.keep', { upstreams: [{ url: a!.url }] });
    await s.ns.stop();
    await eventually(() => s.gw.nats!.isClosed() || s.logs.some((l) => /disconnected from NATS/.test(l.msg)), 5000, 'gateway saw the outage');
    for (let i = 0; i < 5; i++) assert.equal(await backendOf(await request(`${s.base}/keep/x`)), 'b1', 'override still served');
    await s.ns.restart();
    const nc = await connect({ servers: s.ns.url });
    try {
      const kv2 = await routesBucket(nc);
      await eventually(
        async () => {
          await kv2.put('api.keep', JSON.stringify({ upstreams: [{ url: b!.url }] }));
          await new Promise((r) => setTimeout(r, 200));
          return (await backendOf(await request(`${s.base}/keep/x`))) === 'b2';
        },
        15_000,
        'updates after the outage',
      );
    } finally {
      await nc.close();
    }
  } finally {
    await a!.stop();
    await b!.stop();
    await s.close();
  }
});

test('overrides: without JetStream the NATS path works and overrides report unavailable, until JetStream appears', async () => {
  const ns = await startNatsServer({ jetstream: false });
  const { gw, base, logs } = await startTestGateway({ nats: ns.url });
  const [b] = await startBackends(1);
  try {
    await gw.connected;
    const nc = await connect({ servers: ns.url, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
    await respond(nc, 'api.svc', (req) => echo(req));
    await eventually(() => gw.overrides.state === 'unavailable', 5000, 'overrides unavailable');
    assert.equal((await request(`${base}/svc`)).statusCode, 200, 'NATS path serves');
    assert.equal(logs.filter((l) => /overrides unavailable/.test(l.msg)).length, 1, 'one clear line');
    await nc.close();
    await ns.stop();
    await ns.restart({ jetstream: true });
    await eventually(() => gw.overrides.state === 'watching', 40_000, 'bucket picked up');
    const nc2 = await connect({ servers: ns.url });
    const kv = await routesBucket(nc2);
    await putRoute(kv, gw, 'api.svc', { upstreams: [{ url: b!.url }] });
    assert.equal(await backendOf(await request(`${base}/svc`)), 'b1');
    await nc2.close();
  } finally {
    await b!.stop();
    await gw.close(200);
    await ns.dispose();
  }
});

test('overrides: a watch whose consumer vanished (as in a JetStream leader change) is noticed within seconds and set up again', async () => {
  const s = await startStack();
  const [a] = await startBackends(1);
  try {
    await eventually(() => s.gw.overrides.state === 'watching', 10_000, 'watching');
    const kv = await routesBucket(s.nc);
    await putRoute(kv, s.gw, 'api.before', { upstreams: [{ url: a!.url }] });
    // Take the watch's consumer away. nats.js's ordered watch would notice only
    // after two missed 30 s heartbeats: measured here, an update was still
    // unseen 70 s later without the gateway's own check.
    const jsm = await jetstreamManager(s.nc);
    for await (const ci of jsm.consumers.list('KV_natsgw-routes')) await jsm.consumers.delete('KV_natsgw-routes', ci.name);
    await kv.put('api.after', JSON.stringify({ upstreams: [{ url: a!.url }] }));
    const t0 = Date.now();
    await eventually(() => s.gw.routes.match('api.after') !== undefined, 15_000, 'the update arrived');
    assert.ok(Date.now() - t0 < 10_000, `after ${Date.now() - t0} ms`);
    assert.ok(s.logs.some((l) => l.msg === 'the routes watch fell behind the bucket; watching again'));
    assert.ok(s.gw.routes.match('api.before') !== undefined, 'what was applied stays');
  } finally {
    await a!.stop();
    await s.close();
  }
});

test('overrides: what the bucket holds at start is applied and logged as one line; later changes log one line each', async () => {
  const ns = await startNatsServer();
  const nc = await connect({ servers: ns.url });
  const [b] = await startBackends(1);
  let started: Awaited<ReturnType<typeof startTestGateway>> | undefined;
  try {
    const kv = await routesBucket(nc);
    for (let i = 0; i < 50; i++) await kv.put(`api.t${i}`, JSON.stringify({ upstreams: [{ url: b!.url }] }));
    await kv.put('api.broken', '{"upstreams": []}');
    await kv.put('api.gone', JSON.stringify({ upstreams: [{ url: b!.url }] }));
    await kv.delete('api.gone');
    started = await startTestGateway({ nats: ns.url });
    const { gw, logs } = started;
    await eventually(() => logs.some((l) => l.msg === 'overrides read from the routes bucket'), 10_000, 'the backlog read');
    const summary = logs.find((l) => l.msg === 'overrides read from the routes bucket')!;
    assert.deepEqual([summary.routes, summary.applied, summary.rejected, summary.backends], [50, 50, 1, 1]);
    assert.equal(gw.routes.size, 50);
    assert.equal(logs.filter((l) => l.msg === 'override applied').length, 0, 'no line per route of the backlog');
    assert.equal(logs.filter((l) => l.msg === 'override rejected').length, 1, 'a rejected entry is still named, with its reason');
    assert.equal((await request(`${started.base}/t49/x`)).statusCode, 200);

    await putRoute(kv, gw, 'api.new', { upstreams: [{ url: b!.url }] });
    assert.deepEqual(
      logs.filter((l) => l.msg === 'override applied').map((l) => l.key),
      ['api.new'],
    );
  } finally {
    await started?.gw.close(500);
    await b!.stop();
    await nc.close();
    await ns.dispose();
  }
});

test('overrides: a gateway starting on an empty bucket logs its first route as a change', async () => {
  const s = await startStack();
  const [b] = await startBackends(1);
  try {
    await putRoute(await routesBucket(s.nc), s.gw, 'api.first', { upstreams: [{ url: b!.url }] });
    assert.equal(s.logs.filter((l) => l.msg === 'override applied' && l.key === 'api.first').length, 1);
    assert.equal(s.logs.filter((l) => l.msg === 'overrides read from the routes bucket').length, 0);
  } finally {
    await b!.stop();
    await s.close();
  }
});
