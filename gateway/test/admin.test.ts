import { test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'undici';
import type { BackendView, CircuitView, GatewayStatus, RoutesView, StatsView } from '../src/ops/admin-data.js';
import { putRoute, routesBucket, startBackends } from './backends.js';
import { echo, eventually, respond, runCli, startStack, startTestGateway } from './helpers.js';

const cli = (args: string[]) => runCli(args);
const TOKEN = 'a-long-admin-token-0123456789';

test('admin: every endpoint answers with what the gateway is doing', async () => {
  const s = await startStack();
  const [ok, bad] = await startBackends(2);
  try {
    const admin = `http://127.0.0.1:${s.gw.adminPort}`;
    const get = async (path: string) => {
      const r = await request(`${admin}${path}`);
      return { status: r.statusCode, type: String(r.headers['content-type']), body: await r.body.text() };
    };
    await respond(s.nc, 'api.svc.>', (req) => echo(req));
    // Healthy by its probes, failing every request: only the breaker takes it out.
    bad!.handler = (req, res) => {
      res.statusCode = req.url === '/health' ? 200 : 503;
      res.end('no');
    };
    const kv = await routesBucket(s.nc);
    const rev = await putRoute(kv, s.gw, 'api.legacy', {
      upstreams: [{ url: ok!.url }, { url: bad!.url }],
      balancing: 'round-robin',
      retries: 0,
      healthCheck: { path: '/health', intervalMs: 200, unhealthyIntervalMs: 200, unhealthyThreshold: 1, healthyThreshold: 1 },
      circuitBreaker: { failureThreshold: 2, openMs: 60_000 },
      passiveHealth: { consecutiveFailures: 100 },
    });
    await putRoute(kv, s.gw, 'api.broken', '{"upstreams": []}');
    for (let i = 0; i < 4; i++) await (await request(`${s.base}/svc/a/${i}`, { method: 'POST', body: 'hello' })).body.dump();
    for (let i = 0; i < 6; i++) await (await request(`${s.base}/legacy/item/${i}`)).body.dump();
    await (await request(`${s.base}/nobody/missing-thing`, { method: 'DELETE' })).body.dump();

    const status = JSON.parse((await get('/status')).body) as GatewayStatus;
    assert.equal(status.id, s.gw.id);
    assert.equal(status.rootSubject, 'api');
    assert.equal(status.version, '0.1.0');
    assert.ok(status.uptimeS >= 0);
    assert.equal(status.nats.connected, true);
    assert.match(status.nats.server!, /127\.0\.0\.1:\d+/);
    assert.equal(status.inFlight, 0);
    assert.equal(status.ready, true);
    assert.deepEqual(status.overrides, { available: true, state: 'watching', bucket: 'natsgw-routes', routes: 1, rejected: 1 });
    assert.equal(status.requestsTotal, 11);

    const routes = JSON.parse((await get('/routes')).body) as RoutesView;
    assert.deepEqual(
      routes.applied.map((r) => [r.subject, r.revision, r.balancing]),
      [['api.legacy', rev, 'round-robin']],
    );
    assert.equal(routes.rejected[0]!.subject, 'api.broken');
    assert.match(routes.rejected[0]!.reason, /upstreams: must NOT have fewer than 1 items/);

    await eventually(async () => (JSON.parse((await get('/backends')).body) as BackendView[]).every((b) => b.lastProbe !== null), 3000, 'probes ran');
    const backends = JSON.parse((await get('/backends')).body) as BackendView[];
    const b1 = backends.find((b) => b.url === new URL(ok!.url).href)!;
    const b2 = backends.find((b) => b.url === new URL(bad!.url).href)!;
    assert.ok(b1 && b2);
    assert.deepEqual([b1.routes, b1.routeCount, b2.routes], [['api.legacy'], 1, ['api.legacy']], 'each backend once, with the routes using it');
    assert.match(b1.settings, /^[0-9a-f]{8}$/);
    assert.equal(b1.settings, b2.settings, 'one route: one set of backend settings');
    assert.equal(b1.available, true);
    assert.equal(b1.lastProbe!.ok, true);
    assert.equal(b2.breaker, 'open');
    assert.equal(b2.available, false);
    assert.equal(b2.failures, 2, 'two failures opened the breaker; it then took no more');
    assert.equal(b1.inFlight, 0);
    assert.equal(typeof b1.ejections, 'number');

    const circuits = JSON.parse((await get('/circuits')).body) as CircuitView[];
    const c2 = circuits.find((c) => c.url === new URL(bad!.url).href)!;
    assert.equal(c2.state, 'open');
    assert.ok(Date.parse(c2.nextTrialAt!) > Date.now(), 'next trial in the future');
    assert.equal(circuits.find((c) => c.url === new URL(ok!.url).href)!.state, 'closed');

    const stats = JSON.parse((await get('/stats')).body) as StatsView[];
    const nats = stats.find((x) => x.target === 'nats')!;
    assert.equal(nats.route, 'api');
    assert.equal(nats.requests, 5);
    assert.deepEqual(nats.byStatusClass, { '1xx': 0, '2xx': 4, '3xx': 0, '4xx': 0, '5xx': 1 });
    assert.ok(nats.latencyMs.p50! > 0 && nats.latencyMs.p50! <= nats.latencyMs.p90! && nats.latencyMs.p90! <= nats.latencyMs.p99!);
    assert.ok(nats.bytes > 0);
    const legacy = stats.find((x) => x.route === 'api.legacy')!;
    assert.equal(legacy.requests, 6);
    assert.equal(legacy.byStatusClass['2xx']! + legacy.byStatusClass['5xx']!, 6);

    assert.deepEqual(await get('/healthz'), { status: 200, type: 'application/json', body: '{"ok":true}' });
    assert.equal((await get('/readyz')).status, 200);
    assert.equal((await get('/nope')).status, 404);
    assert.equal((await request(`${admin}/status`, { method: 'POST', body: '' })).statusCode, 405);

    const metrics = await get('/metrics');
    assert.equal(metrics.status, 200);
    assert.match(metrics.type, /^text\/plain/);
    for (const name of [
      'http_requests_total{route="api",target="nats",method="POST",status_class="2xx"} 4',
      'http_requests_total{route="api",target="nats",method="DELETE",status_class="5xx"} 1',
      'http_request_duration_seconds_bucket{route="api",target="nats",le="+Inf"} 5',
      'natsgw_http_requests_in_flight 0',
      `natsgw_backend_up{upstream="${new URL(bad!.url).href}",settings="${b2.settings}"} 0`,
      `natsgw_circuit_breaker_state{upstream="${new URL(bad!.url).href}",settings="${b2.settings}"} 1`,
      `natsgw_circuit_breaker_transitions_total{upstream="${new URL(bad!.url).href}",settings="${b2.settings}",to="open"} 1`,
      'natsgw_config_reloads_total{result="applied"} 1',
      'natsgw_config_reloads_total{result="rejected"} 1',
      'natsgw_nats_connected 1',
      'natsgw_overrides_available 1',
      'natsgw_upstream_requests_total{',
      'natsgw_upstream_timeouts_total{',
      'natsgw_upstream_connect_errors_total{',
      'natsgw_upstream_retries_total{',
      'natsgw_backend_ejections_total{',
      'natsgw_nats_reconnects_total 0',
      'process_cpu_seconds_total',
      'nodejs_eventloop_lag_seconds',
    ]) {
      assert.ok(metrics.body.includes(name), `metrics have ${name}`);
    }
    assert.doesNotMatch(metrics.body, /item\/|missing-thing|svc\/a/, 'request paths never become labels');
  } finally {
    await ok!.stop();
    await bad!.stop();
    await s.close();
  }
});

test('admin: with a token every admin request needs it, over HTTP and over NATS', async () => {
  const s = await startStack({ adminToken: TOKEN });
  try {
    const admin = `http://127.0.0.1:${s.gw.adminPort}`;
    for (const path of ['/status', '/metrics', '/healthz', '/readyz', '/stats']) {
      const none = await request(`${admin}${path}`);
      assert.equal(none.statusCode, 401, `${path} without a token`);
      assert.equal(none.headers['www-authenticate'], 'Bearer realm="natsgw admin"');
      await none.body.dump();
      const wrong = await request(`${admin}${path}`, { headers: { authorization: `Bearer ${TOKEN}x` } });
      assert.equal(wrong.statusCode, 401, `${path} with a wrong token`);
      await wrong.body.dump();
      const right = await request(`${admin}${path}`, { headers: { authorization: `Bearer ${TOKEN}` } });
      assert.equal(right.statusCode, 200, `${path} with the token`);
      await right.body.dump();
    }
    const noToken = await cli(['status', '--nats', s.ns.url]);
    assert.equal(noToken.status, 1);
    assert.match(noToken.stdout + noToken.stderr, /unauthorized/);
    const withToken = await cli(['status', '--nats', s.ns.url, '--admin-token', TOKEN, '--json']);
    assert.equal(withToken.status, 0, withToken.stderr);
    assert.equal((JSON.parse(withToken.stdout) as Array<{ ok: boolean }>)[0]!.ok, true);
    const http = await cli(['status', '--gateway', admin]);
    assert.equal(http.status, 1);
    assert.match(http.stderr, /^natsgw: the gateway at .* refused: unauthorized \(check --admin-token\)\n$/);
  } finally {
    await s.close();
  }
});

test('admin: natsgw status finds every gateway on the cluster (scatter-gather); the views print as tables or JSON', async () => {
  const s = await startStack({ subject: 'api.staging' });
  const prod = await startTestGateway({ nats: s.ns.url, subject: 'api.prod' });
  const [b] = await startBackends(1);
  try {
    await prod.gw.connected;
    const kv = await routesBucket(s.nc);
    await putRoute(kv, s.gw, 'api.staging.legacy', { upstreams: [{ url: b!.url }], circuitBreaker: {} });
    await (await request(`${s.base}/legacy/x`)).body.dump();
    const nats = ['--nats', s.ns.url];

    const status = await cli(['status', ...nats]);
    assert.equal(status.status, 0, status.stderr);
    const lines = status.stdout.trim().split('\n');
    assert.match(lines[0]!, /^GATEWAY\s+ROOT\s+UPTIME\s+REQ\/S\s+IN-FLIGHT\s+NATS\s+OVERRIDES\s+READY$/);
    assert.equal(lines.length, 3, 'both gateways listed');
    assert.ok(lines.some((l) => l.startsWith(s.gw.id) && /\sapi\.staging\s/.test(l) && /\syes$/.test(l)));
    assert.ok(lines.some((l) => l.startsWith(prod.gw.id) && /\sapi\.prod\s/.test(l)));
    assert.doesNotMatch(status.stdout, /\x1b\[/, 'no colour when not a terminal');

    const json = JSON.parse((await cli(['status', ...nats, '--json'])).stdout) as Array<{ gateway: string; ok: boolean; data: GatewayStatus }>;
    assert.deepEqual(json.map((a) => a.gateway).sort(), [s.gw.id, prod.gw.id].sort());
    assert.ok(json.every((a) => a.ok && a.data.id === a.gateway && typeof a.data.requestsPerSecond === 'number'));

    const backends = await cli(['backends', ...nats]);
    assert.equal(backends.status, 0);
    assert.match(backends.stdout, /^GATEWAY\s+BACKEND\s+ROUTES\s+STATE/);
    assert.match(backends.stdout, new RegExp(`${s.gw.id}\\s+http://127\\.0\\.0\\.1:${b!.port}/\\s+api\\.staging\\.legacy\\s+up`));
    const circuits = await cli(['circuits', ...nats, '--json']);
    const cj = JSON.parse(circuits.stdout) as Array<{ gateway: string; data: CircuitView[] }>;
    assert.deepEqual(
      cj.find((a) => a.gateway === s.gw.id)!.data.map((c) => c.state),
      ['closed'],
    );
    assert.deepEqual(cj.find((a) => a.gateway === prod.gw.id)!.data, []);
    const stats = await cli(['stats', ...nats]);
    assert.match(stats.stdout, /^GATEWAY\s+ROUTE\s+TARGET\s+REQUESTS\s+2XX\s+3XX\s+4XX\s+5XX\s+P50 MS\s+P90 MS\s+P99 MS\s+BYTES/);
    assert.match(stats.stdout, /api\.staging\.legacy\s+http\s+1\s+1\s+0\s+0\s+0/);
    const routes = await cli(['routes', ...nats]);
    assert.match(routes.stdout, new RegExp(`${s.gw.id}\\s+api\\.staging\\.legacy\\s+\\d+\\s+applied`));
    const one = JSON.parse((await cli(['stats', '--gateway', `http://127.0.0.1:${prod.gw.adminPort}`, '--json'])).stdout) as Array<{ gateway: string; ok: boolean }>;
    assert.equal(one.length, 1, '--gateway asks only that gateway');
  } finally {
    await prod.gw.close(200);
    await b!.stop();
    await s.close();
  }
});

test('admin: the breaker opening is seen through natsgw circuits and /metrics', async () => {
  const s = await startStack();
  const [b] = await startBackends(1);
  try {
    b!.handler = (_req, res) => {
      res.statusCode = 502;
      res.end();
    };
    const kv = await routesBucket(s.nc);
    await putRoute(kv, s.gw, 'api.flaky', { upstreams: [{ url: b!.url }], retries: 0, circuitBreaker: { failureThreshold: 3, openMs: 30_000 } });
    const state = async () => {
      const r = await cli(['circuits', '--gateway', `http://127.0.0.1:${s.gw.adminPort}`, '--json']);
      return (JSON.parse(r.stdout) as Array<{ data: CircuitView[] }>)[0]!.data[0]!;
    };
    const metricLine = async () =>
      (await (await request(`http://127.0.0.1:${s.gw.adminPort}/metrics`)).body.text()).split('\n').find((l) => l.startsWith(`natsgw_circuit_breaker_state{upstream="${new URL(b!.url).href}"`))!;
    assert.equal((await state()).state, 'closed');
    assert.match(await metricLine(), / 0$/);
    for (let i = 0; i < 3; i++) await (await request(`${s.base}/flaky`)).body.dump();
    const open = await state();
    assert.equal(open.state, 'open');
    assert.equal(open.trips, 1);
    assert.match(await metricLine(), / 1$/);
    const table = (await cli(['circuits', '--gateway', `http://127.0.0.1:${s.gw.adminPort}`])).stdout;
    assert.match(table, /http:\/\/127\.0\.0\.1:\d+\/\s+api\.flaky\s+open\s+\d+\s+1\s+in \d+s/);
  } finally {
    await b!.stop();
    await s.close();
  }
});

test('admin: unreachable NATS or no gateway is one clear line and a non-zero exit', async () => {
  const s = await startStack();
  try {
    await s.gw.close(100); // NATS up, no gateway
    const none = await cli(['status', '--nats', s.ns.url, '--wait', '500']);
    assert.equal(none.status, 1);
    assert.match(none.stderr, /^natsgw: no gateway answered on natsgw\.admin\.status \(is one running on this NATS\?\)\n$/);
    const down = await cli(['backends', '--nats', 'nats://127.0.0.1:1']);
    assert.equal(down.status, 1);
    assert.match(down.stderr, /^natsgw: cannot connect to NATS at nats:\/\/127\.0\.0\.1:1: /);
    assert.equal(down.stderr.trim().split('\n').length, 1);
  } finally {
    await s.close();
  }
});

test('logs: one structured access line per request; --access-log false turns them off', async () => {
  const s = await startStack();
  const quiet = await startTestGateway({ nats: s.ns.url, accessLog: false });
  const [b] = await startBackends(1);
  try {
    await quiet.gw.connected;
    await respond(s.nc, 'api.logged', (req) => echo(req));
    const kv = await routesBucket(s.nc);
    await putRoute(kv, s.gw, 'api.legacy', { upstreams: [{ url: b!.url }] });
    await (await request(`${s.base}/logged`, { headers: { 'x-request-id': 'log-me' } })).body.dump();
    await (await request(`${s.base}/legacy/thing`, { headers: { 'x-request-id': 'log-me-too' } })).body.dump();
    await eventually(() => s.logs.filter((l) => l.msg === 'request').length >= 2, 2000, 'access lines');
    const nats = s.logs.find((l) => l.requestId === 'log-me')!;
    assert.equal(nats.kind, 'access');
    assert.equal(nats.method, 'GET');
    assert.equal(nats.path, '/logged');
    assert.equal(nats.subject, 'api.logged');
    assert.equal(nats.status, 200);
    assert.ok(typeof nats.durationMs === 'number' && (nats.bytes as number) > 0);
    assert.equal(nats.level, 30);
    const http = s.logs.find((l) => l.requestId === 'log-me-too')!;
    assert.equal(http.route, 'api.legacy');
    assert.equal(http.upstream, new URL(b!.url).href);
    await (await request(`${quiet.base}/logged`)).body.dump();
    assert.equal(quiet.logs.filter((l) => l.msg === 'request').length, 0);
  } finally {
    await quiet.gw.close(100);
    await b!.stop();
    await s.close();
  }
});
