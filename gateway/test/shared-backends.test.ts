/**
 * Backends are shared by the routes that name them (issue: routes bucket at
 * scale): one pool, one health checker, one breaker per backend, whatever
 * the number of routes; settings that differ keep backends apart.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Pool, request } from 'undici';
import { undiciLoadedFrom } from '../src/http/upstream/upstream.js';
import type { BackendView } from '../src/ops/admin-data.js';
import { RouteTable } from '../src/routes/route-table.js';
import { deleteRoute, putRoute, routesBucket, startBackends, httpRoute } from './backends.js';
import { eventually, startStack } from './helpers.js';

const backendsView = async (adminPort: number) => (await (await request(`http://127.0.0.1:${adminPort}/backends`)).body.json()) as BackendView[];

test('shared backends: 1,000 routes over 2 backends open at most the pool connections of 2 backends and run 2 health checkers', async () => {
  const s = await startStack();
  const [a, b] = await startBackends(2);
  a!.handler = (req, res) => {
    if (req.url === '/slow') return void setTimeout(() => res.end('slow done'), 400);
    res.end(req.url === '/health' ? 'ok' : 'a');
  };
  const client = new Pool(s.base, { connections: 50 });
  try {
    const kv = await routesBucket(s.nc);
    await eventually(() => s.gw.overrides.state === 'watching', 10_000, 'watching');
    const route = (i: number) => ({
      upstreams: [{ url: (i % 2 === 0 ? a : b)!.url }],
      stripPrefix: true,
      maxConnections: 4,
      healthCheck: { path: '/health', intervalMs: 200 },
    });
    for (let i = 0; i < 1000; i += 100) await Promise.all(Array.from({ length: 100 }, (_, j) => kv.put(`api.t${i + j}`, JSON.stringify(route(i + j)))));
    await eventually(() => s.gw.routes.size === 1000, 10_000, 'all 1,000 routes applied');

    // One request to every route, 50 at a time.
    const statuses: number[] = [];
    for (let i = 0; i < 1000; i += 50) {
      statuses.push(
        ...(await Promise.all(
          Array.from({ length: 50 }, async (_, j) => {
            const r = await client.request({ path: `/t${i + j}/x`, method: 'GET' });
            await r.body.dump();
            return r.statusCode;
          }),
        )),
      );
    }
    assert.deepEqual(new Set(statuses), new Set([200]));
    assert.equal(undiciLoadedFrom, 'pool', "undici's Pool alone was loaded, not its index (has undici moved lib/dispatcher/pool.js?)");
    assert.ok(a!.connectionsOpened <= 4 && b!.connectionsOpened <= 4, `at most maxConnections (4) per backend: a opened ${a!.connectionsOpened}, b ${b!.connectionsOpened}`);

    // Health checks: once per backend, not once per route.
    const probes = (x: typeof a) => x!.requests.filter((r) => r.url === '/health').length;
    const before = [probes(a), probes(b)];
    await new Promise((r) => setTimeout(r, 1000));
    const inASecond = [probes(a) - before[0]!, probes(b) - before[1]!];
    assert.ok(
      inASecond.every((n) => n >= 3 && n <= 8),
      `one checker per backend probes every 200 ms: ${inASecond.join(', ')} probes in 1 s`,
    );

    const view = await backendsView(s.gw.adminPort!);
    assert.deepEqual(
      view.map((v) => [v.url, v.routeCount, v.routes.length, v.activeChecks]).sort(),
      [
        [new URL(a!.url).href, 500, 100, true],
        [new URL(b!.url).href, 500, 100, true],
      ].sort(),
    );
    assert.equal(s.gw.routes.backends.size, 2);

    // Removing routes that share a backend keeps it; removing the last one closes its pool once its requests finish.
    for (let i = 2; i < 1000; i += 2) await kv.delete(`api.t${i}`);
    await eventually(() => s.gw.routes.size === 501, 10_000, '499 routes of a removed');
    assert.equal(a!.connectionsOpened <= 4 && a!.connections > 0, true, "a's pool is still open for api.t0");
    const slow = client.request({ path: '/t0/slow', method: 'GET' });
    await eventually(() => a!.requests.some((r) => r.url === '/slow'), 2000, 'the slow request reached a');
    await deleteRoute(kv, s.gw, 'api.t0');
    const r = await slow;
    assert.equal(r.statusCode, 200);
    assert.equal(await r.body.text(), 'slow done', 'the request in flight finished');
    await eventually(() => a!.connections === 0, 5000, "a's connections closed after its last route went");
    const probesAfter = probes(a);
    await new Promise((r) => setTimeout(r, 600));
    assert.equal(probes(a), probesAfter, "a's health checks stopped");
    assert.deepEqual(
      (await backendsView(s.gw.adminPort!)).map((v) => v.url),
      [new URL(b!.url).href],
    );
  } finally {
    await client.close();
    for (const x of [a, b]) await x!.stop();
    await s.close();
  }
});

test('shared backends: the same URL with the same settings shares its breaker; with other settings it is another backend; weights stay per route', async () => {
  const s = await startStack();
  const [bad, x, y] = await startBackends(3);
  bad!.handler = (_req, res) => {
    res.statusCode = 502;
    res.end('bad');
  };
  try {
    const kv = await routesBucket(s.nc);
    const breaking = { upstreams: [{ url: bad!.url }], retries: 0, circuitBreaker: { failureThreshold: 2, openMs: 60_000 } };
    await putRoute(kv, s.gw, 'api.a', breaking);
    await putRoute(kv, s.gw, 'api.c', breaking);
    await putRoute(kv, s.gw, 'api.b', { upstreams: [{ url: bad!.url }], retries: 0 });

    for (let i = 0; i < 2; i++) assert.equal((await request(`${s.base}/a`)).statusCode, 502);
    const hits = bad!.hits;
    const c = await request(`${s.base}/c`);
    assert.equal(c.statusCode, 503, 'api.c shares api.a backend, whose breaker is open');
    assert.equal(((await c.body.json()) as { code: string }).code, 'no-backend');
    assert.equal(bad!.hits, hits, 'api.c did not reach the backend');
    assert.equal((await request(`${s.base}/b`)).statusCode, 502, 'api.b names the URL without a breaker: its own backend, still tried');
    assert.equal(bad!.hits, hits + 1);

    const view = (await backendsView(s.gw.adminPort!)).filter((v) => v.url === new URL(bad!.url).href);
    assert.equal(view.length, 2, 'one URL, two sets of settings: two backends');
    const withBreaker = view.find((v) => v.breaker !== null)!;
    const without = view.find((v) => v.breaker === null)!;
    assert.deepEqual([withBreaker.routes, withBreaker.breaker, without.routes], [['api.a', 'api.c'], 'open', ['api.b']]);
    assert.notEqual(withBreaker.settings, without.settings);
    const metrics = await (await request(`http://127.0.0.1:${s.gw.adminPort}/metrics`)).body.text();
    const up = metrics.split('\n').filter((l) => l.startsWith(`natsgw_backend_up{upstream="${new URL(bad!.url).href}"`));
    assert.equal(up.length, 2, `one series per backend, not per route:\n${up.join('\n')}`);

    // Two routes over the same two backends, weighted the other way round.
    const weighted = (wx: number, wy: number) => ({
      upstreams: [
        { url: x!.url, weight: wx },
        { url: y!.url, weight: wy },
      ],
      balancing: 'round-robin',
    });
    await putRoute(kv, s.gw, 'api.p', weighted(1, 9));
    await putRoute(kv, s.gw, 'api.q', weighted(9, 1));
    assert.equal(httpRoute(s.gw.routes, 'api.p').upstreams[0], httpRoute(s.gw.routes, 'api.q').upstreams[0], 'one backend object for x');
    const share = async (path: string) => {
      const seen = { b2: 0, b3: 0 } as Record<string, number>;
      for (let i = 0; i < 20; i++) seen[((await (await request(`${s.base}${path}`)).body.json()) as { backend: string }).backend]!++;
      return [seen.b2, seen.b3];
    };
    assert.deepEqual(await share('/p'), [2, 18]);
    assert.deepEqual(await share('/q'), [18, 2]);
  } finally {
    for (const b of [bad, x, y]) await b!.stop();
    await s.close();
  }
});

test('shared backends: a route changing its own backend settings keeps their state; a backend it shared stays with the other routes', () => {
  const table = new RouteTable('api');
  const url = 'http://10.9.7.1:80';
  const value = (maxConnections: number) => JSON.stringify({ upstreams: [{ url }], circuitBreaker: { failureThreshold: 1 }, maxConnections });
  const fail = (key: string) => {
    const u = httpRoute(table, key).upstreams[0]!;
    u.acquire();
    u.release('failure', Date.now(), () => false);
    return u;
  };
  try {
    table.put('api.solo', value(8), 1);
    const opened = fail('api.solo');
    assert.equal(opened.breaker!.state, 'open');
    table.put('api.solo', value(16), 2);
    const after = httpRoute(table, 'api.solo').upstreams[0]!;
    assert.equal(after, opened, 'its only route changed the settings: same backend, state kept');
    assert.equal(after.breaker!.state, 'open');
    assert.equal(after.settings.pool.maxConnections, 16);

    table.put('api.one', value(4), 3);
    table.put('api.two', value(4), 4);
    const shared = httpRoute(table, 'api.one').upstreams[0]!;
    assert.equal(httpRoute(table, 'api.two').upstreams[0], shared);
    fail('api.one');
    table.put('api.one', value(32), 5);
    const moved = httpRoute(table, 'api.one').upstreams[0]!;
    assert.notEqual(moved, shared, 'api.one moved to a backend of its own');
    assert.equal(moved.breaker!.state, 'closed', 'a fresh backend');
    assert.equal(httpRoute(table, 'api.two').upstreams[0], shared, 'api.two keeps the shared one');
    assert.equal(shared.breaker!.state, 'open');
    assert.equal(shared.settings.pool.maxConnections, 4, "api.one's change did not touch api.two's backend");
    assert.deepEqual(
      [...shared.users].map((u) => u.key),
      ['api.two'],
    );
    table.delete('api.two');
    assert.equal(shared.retired, true, 'no route uses it: retired');
    assert.equal(table.backends.size, 2);
  } finally {
    table.clear();
  }
  assert.equal(table.backends.size, 0);
});
