import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { KV } from '@nats-io/kv';
import { request } from 'undici';
import { type Backend, putRoute, routesBucket, startBackends, httpRoute } from './backends.js';
import { eventually, startLoad, startStack, type Stack } from './helpers.js';

let s: Stack;
let kv: KV;
const started: Backend[] = [];
before(async () => {
  s = await startStack();
  kv = await routesBucket(s.nc);
});
after(async () => {
  for (const b of started) await b.stop();
  await s.close();
});
async function backends(n: number): Promise<Backend[]> {
  const list = await startBackends(n);
  started.push(...list);
  return list;
}
const upstream = (key: string, b: Backend) => httpRoute(s.gw.routes, key).upstreams.find((u) => u.url === new URL(b.url).href)!;

test('health: a backend dies mid-traffic — requests are retried, no client sees an error; it is ejected, then readmitted after healthy probes', async (t) => {
  const [a, b] = await backends(2);
  await putRoute(kv, s.gw, 'api.ha', {
    upstreams: [{ url: a!.url }, { url: b!.url }],
    balancing: 'round-robin',
    retries: 1,
    healthCheck: { path: '/health', intervalMs: 300, unhealthyIntervalMs: 100, timeoutMs: 200, unhealthyThreshold: 2, healthyThreshold: 3 },
    passiveHealth: { consecutiveFailures: 2, baseEjectionMs: 60_000 },
  });
  const failures: string[] = [];
  const load = startLoad(
    t,
    async () => {
      const r = await request(`${s.base}/ha/item`);
      const text = await r.body.text();
      if (r.statusCode !== 200) failures.push(`${r.statusCode} ${text}`);
    },
    { workers: 4, pauseMs: 5 },
  );
  await eventually(() => a!.hits > 20 && b!.hits > 20, 5000, 'both serving');
  await a!.stop();
  const ua = upstream('api.ha', a!);
  await eventually(() => !ua.isAvailable(Date.now()), 3000, 'a taken out');
  assert.ok(ua.ejections >= 1 || !ua.healthy, 'ejected or failed its probes');
  const hitsWhileDown = a!.hits;
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(a!.hits, hitsWhileDown);

  const probesBefore = ua.lastProbe?.at ?? 0;
  const restartedAt = Date.now();
  await a!.start(); // same port
  await eventually(() => ua.isAvailable(Date.now()), 5000, 'a readmitted');
  const readmittedAfter = Date.now() - restartedAt;
  // healthyThreshold (3) good probes, 100 ms apart, before the 60 s ejection would have ended.
  assert.ok(readmittedAfter >= 150, `readmitted after ${readmittedAfter} ms: not before its probes passed`);
  assert.ok((ua.lastProbe?.at ?? 0) > probesBefore && ua.lastProbe?.ok);
  const served = a!.hits;
  await eventually(() => a!.hits > served + 10, 5000, 'a serving again');
  await load.stop();
  assert.deepEqual([...failures, ...load.errors.map(String)], [], 'no client saw an error');
});

test('health: probes mark a backend down after unhealthyThreshold failures and up after healthyThreshold successes; flapping does not oscillate', async () => {
  const [b] = await backends(1);
  let healthStatus = 200;
  let flapping = false;
  const healthAnswers: number[] = [];
  b!.handler = (req, res) => {
    if (req.url === '/health') {
      // Flapping: every probe gets the opposite of the one before.
      if (flapping) healthStatus = healthStatus === 500 ? 200 : 500;
      healthAnswers.push(healthStatus);
      res.statusCode = healthStatus;
    }
    res.end('ok');
  };
  await putRoute(kv, s.gw, 'api.probe', {
    upstreams: [{ url: b!.url }],
    healthCheck: { path: '/health', intervalMs: 100, unhealthyIntervalMs: 100, unhealthyThreshold: 3, healthyThreshold: 3, timeoutMs: 500 },
  });
  const u = upstream('api.probe', b!);
  const changes: boolean[] = [];
  let last = u.healthy;
  const watch = setInterval(() => {
    if (u.healthy !== last) changes.push((last = u.healthy));
  }, 5);
  try {
    // Flapping: good and bad in turn never makes three in a row.
    flapping = true;
    const before = healthAnswers.length;
    await eventually(() => healthAnswers.length >= before + 8, 5000, 'eight flapping probes');
    flapping = false;
    assert.deepEqual(changes, [], `no state change while flapping (answers ${healthAnswers.slice(-10).join(',')})`);
    healthStatus = 503;
    await eventually(() => !u.healthy, 3000, 'marked unhealthy');
    const r = await request(`${s.base}/probe`);
    assert.equal(r.statusCode, 503);
    const detail = ((await r.body.json()) as { detail: string }).detail;
    assert.equal(detail, 'no backend of api.probe is available', 'the client learns no backend state');
    assert.ok(
      s.logs.some((l) => l.msg === 'override request failed' && /unhealthy/.test(String(l.detail))),
      'the log says why',
    );
    healthStatus = 200;
    await eventually(() => changes.length === 2, 3000, 'healthy again');
    assert.deepEqual(changes, [false, true]);
  } finally {
    clearInterval(watch);
  }
});

test('health: the breaker cycle seen through the gateway', async () => {
  const [b] = await backends(1);
  let failing = true;
  b!.handler = (_req, res) => {
    res.statusCode = failing ? 503 : 200;
    res.end(failing ? 'down' : 'up');
  };
  await putRoute(kv, s.gw, 'api.cb', {
    upstreams: [{ url: b!.url }],
    retries: 0,
    circuitBreaker: { failureThreshold: 3, successThreshold: 2, openMs: 400, maxOpenMs: 5000, halfOpenRequests: 1 },
  });
  const u = upstream('api.cb', b!);
  const get = async () => {
    const r = await request(`${s.base}/cb`);
    const body = await r.body.text();
    return { status: r.statusCode, body };
  };
  for (let i = 0; i < 3; i++) assert.equal((await get()).status, 503);
  assert.equal(u.breaker!.state, 'open', 'opens after failureThreshold failures');
  const hits = b!.hits;
  const fast = await get();
  assert.equal(fast.status, 503);
  assert.match(fast.body, /"code":"no-backend"/);
  assert.doesNotMatch(fast.body, /breaker|127\.0\.0\.1/, 'no breaker state or address for the client');
  assert.ok(
    s.logs.some((l) => l.msg === 'override request failed' && /breaker open/.test(String(l.detail))),
    'the log says why',
  );
  assert.equal(b!.hits, hits, 'fails fast without touching the backend');

  // Half-open: one trial at a time; it fails → open again for twice as long.
  await new Promise((r) => setTimeout(r, 450));
  assert.equal((await get()).status, 503);
  assert.equal(b!.hits, hits + 1, 'one trial went through');
  assert.equal(u.breaker!.state, 'open');
  assert.equal(u.breaker!.currentOpenMs, 800, 'the next wait is longer');
  await new Promise((r) => setTimeout(r, 450));
  assert.match((await get()).body, /"code":"no-backend"/, 'still open after the first wait');
  assert.equal(b!.hits, hits + 1);

  // It recovers: trials succeed, successThreshold closes the breaker.
  failing = false;
  await new Promise((r) => setTimeout(r, 400));
  assert.equal((await get()).status, 200);
  assert.equal(u.breaker!.state, 'half-open');
  assert.equal((await get()).status, 200);
  assert.equal(u.breaker!.state, 'closed');
  assert.equal(u.breaker!.currentOpenMs, 400, 'wait back to openMs');
});
