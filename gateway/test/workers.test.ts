/**
 * `--workers N`: N uWS event loops in worker threads on one port, each with
 * its own NATS connection; one admin API, one metrics view, one access log;
 * graceful shutdown of all; a crashed worker replaced on its own.
 *
 * Requests go out on a new connection each (Connection: close), so the
 * kernel's SO_REUSEPORT hashing spreads them over the workers: with 40
 * connections, the chance that one worker gets none is 2^-39.
 */
import { spawn } from 'node:child_process';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { connect, createInbox, type NatsConnection } from '@nats-io/transport-node';
import { startNatsServer, type NatsServer } from '@natsgw/devkit';
import { encodeReply } from '@natsgw/service-sdk/protocol';
import { serve } from '@natsgw/service-sdk';
import { request } from 'undici';
import WebSocket from 'ws';
import { ConfigError, loadConfig } from '../src/config.js';
import { startWorkerPool, type WorkerPool } from '../src/workers/worker-pool.js';
import { routesBucket, startBackends } from './backends.js';
import { captureLogger, eventually, rawRequest, spawnGateway, type LogLine } from './helpers.js';

interface PoolStack {
  ns: NatsServer;
  nc: NatsConnection;
  pool: WorkerPool;
  logs: LogLine[];
  admin: string;
  close(): Promise<void>;
}

async function startPool(flags: Record<string, unknown> = {}): Promise<PoolStack> {
  const ns = await startNatsServer();
  const logs: LogLine[] = [];
  const pool = await startWorkerPool(loadConfig({ flags: { nats: ns.url, port: 0, host: '127.0.0.1', adminPort: 0, workers: '2', ...flags } }), { logger: captureLogger(logs) });
  await pool.connected;
  const nc = await connect({ servers: ns.url });
  return {
    ns,
    nc,
    pool,
    logs,
    admin: `http://127.0.0.1:${pool.adminPort}`,
    async close() {
      await pool.close(1000);
      await nc.close();
      await ns.dispose();
    },
  };
}

/** One request on a connection of its own; the status, or 0 when the connection failed. */
async function get(port: number, path: string): Promise<{ status: number; text: string }> {
  try {
    const r = await rawRequest(port, `GET ${path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n`, 3000);
    return { status: Number(/^HTTP\/1\.1 (\d{3})/.exec(r.text)?.[1] ?? 0), text: r.text };
  } catch {
    return { status: 0, text: '' };
  }
}

/** Answers `subject` with 200 "ok" after `delayMs`; records the reply subject prefix of each request (one per gateway NATS connection). */
function responder(nc: NatsConnection, subject: string, delayMs = 0): { prefixes: Set<string>; received: number } {
  const seen = { prefixes: new Set<string>(), received: 0 };
  const prefixes = seen.prefixes;
  nc.subscribe(subject, {
    callback: (_err, msg) => {
      seen.received++;
      prefixes.add(msg.reply!.slice(0, msg.reply!.lastIndexOf('.')));
      setTimeout(() => msg.respond(encodeReply({ v: 1, status: 200, headers: ['content-type', 'text/plain'], body: Buffer.from('ok') })), delayMs);
    },
  });
  return seen;
}

const accessLines = (logs: LogLine[]) => logs.filter((l) => l.msg === 'request');

test('workers: two event loops share the port, each with its own NATS connection; the process has one admin API, one metrics view and one access log', async () => {
  const s = await startPool();
  try {
    const { prefixes } = responder(s.nc, 'api.who');
    await s.nc.flush();
    for (let i = 0; i < 40; i++) assert.equal((await get(s.pool.port, '/who')).status, 200);
    assert.equal(prefixes.size, 2, 'replies come back to two NATS connections (one reply mux per worker)');

    await eventually(() => accessLines(s.logs).length === 40, 3000, '40 access lines');
    const byWorker = new Set(accessLines(s.logs).map((l) => l.worker));
    assert.deepEqual([...byWorker].sort(), [1, 2], 'both workers served, and their lines reach the one log');

    const status = (await (await request(`${s.admin}/status`)).body.json()) as Record<string, unknown>;
    assert.equal(status.id, s.pool.id);
    assert.equal(status.requestsTotal, 40);
    assert.equal(status.ready, true);
    assert.deepEqual(status.workers, { configured: 2, running: 2 });
    const stats = (await (await request(`${s.admin}/stats`)).body.json()) as Array<{ route: string; requests: number; byStatusClass: Record<string, number> }>;
    assert.equal(stats.find((r) => r.route === 'api')!.requests, 40);
    assert.equal(stats.find((r) => r.route === 'api')!.byStatusClass['2xx'], 40);

    const metrics = await (await request(`${s.admin}/metrics`)).body.text();
    const total = [...metrics.matchAll(/^http_requests_total\{[^}]*\} (\d+)$/gm)].reduce((a, m) => a + Number(m[1]), 0);
    assert.equal(total, 40, 'counters summed over the workers');
    assert.match(metrics, /^natsgw_workers 2$/m);
    assert.match(metrics, /^natsgw_nats_connected 1$/m, 'connected means every worker is');
    assert.equal(metrics.match(/^process_resident_memory_bytes /gm)?.length, 1, 'process metrics once');
    assert.match(metrics, /^http_request_duration_seconds_count\{route="api",target="nats"\} 40$/m);

    // Over NATS, the process answers once, as one gateway.
    const inbox = createInbox();
    const answers: Array<{ id: string; data: { requestsTotal: number } }> = [];
    const sub = s.nc.subscribe(inbox, { callback: (_e, m) => void answers.push(m.json()) });
    s.nc.publish('natsgw.admin.status', '', { reply: inbox });
    await new Promise((r) => setTimeout(r, 500));
    sub.unsubscribe();
    assert.equal(answers.length, 1);
    assert.equal(answers[0]!.id, s.pool.id);
    assert.equal(answers[0]!.data.requestsTotal, 40);
  } finally {
    await s.close();
  }
});

test('workers: a worker that crashes is replaced; the other keeps serving and the process survives', async () => {
  const s = await startPool();
  try {
    responder(s.nc, 'api.who');
    await s.nc.flush();
    const before = s.pool.threads;
    assert.equal(Object.keys(before).length, 2);
    s.pool.crash(1);
    // Sequential requests through the crash: at most the one in the dying worker's hands fails.
    const statuses: number[] = [];
    const until = Date.now() + 10_000;
    while (s.pool.restarts === 0 && Date.now() < until) statuses.push((await get(s.pool.port, '/who')).status);
    assert.equal(s.pool.restarts, 1);
    assert.ok(statuses.filter((x) => x !== 200).length <= 1, `statuses during the crash: ${statuses.join(',')}`);
    await eventually(() => s.pool.threads[1] !== undefined, 5000, 'worker 1 serving again');
    assert.notEqual(s.pool.threads[1], before[1], 'worker 1 is a new thread');
    assert.equal(s.pool.threads[2], before[2], 'worker 2 was not touched');
    assert.ok(s.logs.some((l) => l.worker === 1 && l.level === 60 && l.msg.startsWith('worker crashed')));
    assert.ok(s.logs.some((l) => l.msg === 'worker 1 stopped (exit code 1); starting a new one'));
    await eventually(async () => (await request(`${s.admin}/readyz`)).statusCode === 200, 5000, 'ready again');

    const since = s.logs.length;
    for (let i = 0; i < 40; i++) assert.equal((await get(s.pool.port, '/who')).status, 200);
    await eventually(() => accessLines(s.logs.slice(since)).length === 40, 3000, 'access lines');
    assert.deepEqual([...new Set(accessLines(s.logs.slice(since)).map((l) => l.worker))].sort(), [1, 2], 'the new worker 1 serves');
  } finally {
    await s.close();
  }
});

test('workers: /backends and /circuits show each override backend once, its counts summed over the workers', async () => {
  const s = await startPool();
  const [backend] = await startBackends(1);
  try {
    await eventually(async () => ((await (await request(`${s.admin}/status`)).body.json()) as { overrides: { state: string } }).overrides.state === 'watching', 10_000, 'the routes bucket watched');
    const kv = await routesBucket(s.nc);
    await kv.put('api.legacy', JSON.stringify({ upstreams: [{ url: backend!.url }], circuitBreaker: {} }));
    await eventually(() => s.logs.filter((l) => l.msg === 'override applied' && l.key === 'api.legacy').length === 2, 5000, 'both workers applied the override');
    for (let i = 0; i < 40; i++) assert.equal((await get(s.pool.port, '/legacy/x')).status, 200);
    await eventually(() => accessLines(s.logs).length === 40, 3000, '40 access lines');
    assert.deepEqual([...new Set(accessLines(s.logs).map((l) => l.worker))].sort(), [1, 2], 'both workers proxied');

    const backends = (await (await request(`${s.admin}/backends`)).body.json()) as Array<{ routes: string[]; url: string; requests: number; available: boolean; inFlight: number }>;
    assert.equal(backends.length, 1, 'one backend, not one per worker');
    assert.deepEqual(backends[0]!.routes, ['api.legacy']);
    assert.equal(backends[0]!.requests, 40);
    assert.equal(backends[0]!.available, true);
    assert.equal(backends[0]!.inFlight, 0);
    const circuits = (await (await request(`${s.admin}/circuits`)).body.json()) as Array<{ routes: string[]; state: string; trips: number }>;
    assert.deepEqual(
      circuits.map((c) => [c.routes, c.state, c.trips]),
      [[['api.legacy'], 'closed', 0]],
    );
    const metrics = await (await request(`${s.admin}/metrics`)).body.text();
    assert.match(metrics, /^natsgw_upstream_requests_total\{upstream="[^"]+",settings="[0-9a-f]{8}",outcome="success"\} 40$/m);
    assert.match(metrics, /^natsgw_backend_up\{upstream="[^"]+",settings="[0-9a-f]{8}"\} 1$/m);
  } finally {
    await backend!.stop();
    await s.close();
  }
});

test('workers: shutdown stops every worker listening at once, finishes the requests in flight on each, then ends them all', async () => {
  const s = await startPool();
  try {
    const service = responder(s.nc, 'api.slow', 1000);
    await s.nc.flush();
    const slow = Array.from({ length: 20 }, () => get(s.pool.port, '/slow'));
    await eventually(() => service.received === 20, 3000, '20 requests in flight');
    const closing = s.pool.close(5000);
    await new Promise((r) => setTimeout(r, 100));
    assert.equal((await get(s.pool.port, '/slow')).status, 0, 'no new connection is accepted while closing');
    const results = await Promise.all(slow);
    assert.deepEqual(
      results.map((r) => r.status),
      Array(20).fill(200),
    );
    await closing;
    assert.deepEqual(s.pool.threads, {});
    for (const who of [1, 2, undefined])
      assert.ok(
        s.logs.some((l) => l.msg === 'gateway stopped' && l.worker === who),
        `worker ${who ?? 'main'} stopped`,
      );
    const served = new Set(accessLines(s.logs).map((l) => l.worker));
    assert.deepEqual([...served].sort(), [1, 2], 'requests were in flight on both workers');
  } finally {
    await s.nc.close();
    await s.ns.dispose();
  }
});

test('workers: natsgw serve --workers 2 serves, and exits 0 on SIGTERM after its workers stopped', async () => {
  const ns = await startNatsServer();
  const nc = await connect({ servers: ns.url });
  try {
    responder(nc, 'api.who');
    await nc.flush();
    const gw = await spawnGateway(
      ['serve', '--nats', ns.url, '--port', '0', '--admin-port', '0', '--host', '127.0.0.1', '--workers', '2', '--log-format', 'json'],
      (out) => /with 2 workers/.test(out) && (out.match(/connected to NATS/g)?.length ?? 0) === 2,
    );
    const port = Number(/listening on http:\/\/127\.0\.0\.1:(\d+) with 2 workers/.exec(gw.output())![1]);
    for (let i = 0; i < 10; i++) assert.equal((await get(port, '/who')).status, 200);
    const exited = new Promise<number | null>((resolve) => gw.child.once('exit', (code) => resolve(code)));
    gw.child.kill('SIGTERM');
    assert.equal(await exited, 0);
    assert.equal((gw.output().match(/"msg":"gateway stopped"/g) ?? []).length, 3);
    assert.ok(!/uv loop|Assertion failed/.test(gw.output()));
  } finally {
    await nc.close();
    await ns.dispose();
  }
});

test('workers: --workers takes 1 to 99 or auto, from a flag, NATSGW_WORKERS or the config file; anything else is refused by name', () => {
  assert.equal(loadConfig({}).workers, 1);
  assert.equal(loadConfig({ flags: { workers: '3' } }).workers, 3);
  assert.equal(loadConfig({ flags: { workers: 'auto' } }).workers, availableParallelism());
  assert.equal(loadConfig({ env: { NATSGW_WORKERS: '2' } }).workers, 2);
  for (const bad of ['0', '100', 'two', '-1', '1.5', '']) {
    assert.throws(
      () => loadConfig({ flags: { workers: bad } }),
      (err: Error) => err instanceof ConfigError && err.message.startsWith('invalid --workers: must be a whole number from 1 to 99, or auto'),
      bad,
    );
  }
  assert.throws(() => loadConfig({ env: { NATSGW_WORKERS: '0' } }), /^ConfigError: invalid NATSGW_WORKERS/);
  const dir = mkdtempSync(join(tmpdir(), 'natsgw-workers-'));
  try {
    writeFileSync(join(dir, 'gw.json'), JSON.stringify({ workers: 2 }));
    assert.equal(loadConfig({ file: join(dir, 'gw.json') }).workers, 2);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('workers: GET /services asks the account from the main thread', async () => {
  const s = await startPool();
  const service = await serve((_req, res) => res.end('ok'), { nats: s.nc, subject: 'api.shop', name: 'shop', version: '3.1.0' });
  try {
    await eventually(
      async () => {
        const r = await request(`${s.admin}/services`);
        const view = (await r.body.json()) as { services?: Array<{ name: string; versions: string[] }> };
        return r.statusCode === 200 && view.services?.some((x) => x.name === 'shop' && x.versions[0] === '3.1.0') === true;
      },
      10_000,
      'shop listed by the pool',
    );
  } finally {
    await service.drain();
    await s.close();
  }
});

test('workers: shutdown ends even with a wedged worker: after its grace period and a margin the process logs which one and kills itself', async () => {
  const ns = await startNatsServer();
  try {
    const fixture = fileURLToPath(new URL('./fixtures/wedged-pool.js', import.meta.url));
    const child = spawn(process.execPath, [fixture, ns.url], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => void (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => void (err += d.toString()));
    const ended = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    const lines = out
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as LogLine & { worker?: number; tookMs?: number });
    assert.deepEqual(ended, { code: null, signal: 'SIGKILL' }, `ended by its own SIGKILL, not a hang or Node's abort; stderr: ${err.slice(0, 500)}`);
    assert.ok(
      lines.some((l) => l.level === 50 && l.worker === 1 && /worker 1 did not stop within 3500 ms: its event loop is wedged/.test(l.msg)),
      out,
    );
    assert.ok(!lines.some((l) => l.worker === 2 && /did not stop/.test(l.msg)), 'worker 2 stopped by itself');
    const last = lines.find((l) => /killing the process/.test(l.msg));
    assert.ok(last !== undefined && last.tookMs! >= 3500 && last.tookMs! < 8000, `shutdown took ${last?.tookMs} ms: the grace period plus the 3 s margin`);
    assert.ok(!/Assertion failed|uv_loop_close/.test(err), 'no abort from Node');
  } finally {
    await ns.dispose();
  }
});

test('workers: WebSockets are served by every worker, and /status and /metrics add up their connections', async () => {
  const s = await startPool();
  const service = await serve((_req, res) => res.end(), {
    nats: s.ns.url,
    subject: 'api.chat',
    websocket: (ws) => ws.on('message', (d) => ws.send(`echo ${String(d)}`)),
  });
  try {
    // Enough connections that both workers hold some (the kernel spreads them over the shared port).
    const clients: WebSocket[] = [];
    for (let i = 0; i < 8; i++) {
      const ws = new WebSocket(`ws://127.0.0.1:${s.pool.port}/chat/${i}`);
      await new Promise((r) => ws.once('open', r));
      const echoed = new Promise<string>((r) => ws.once('message', (d: Buffer) => r(String(d))));
      ws.send(String(i));
      assert.equal(await echoed, `echo ${i}`);
      clients.push(ws);
    }
    const status = (await (await fetch(`${s.admin}/status`)).json()) as { websockets: { open: number; messagesIn: number } };
    assert.deepEqual([status.websockets.open, status.websockets.messagesIn], [8, 8]);
    assert.match(await (await fetch(`${s.admin}/metrics`)).text(), /natsgw_ws_connections_open 8/);
    for (const ws of clients) ws.close();
  } finally {
    await service.drain();
    await s.close();
  }
});
