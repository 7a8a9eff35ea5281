/**
 * `npm run bench:routes`: the routes bucket at scale. For each N in
 * BENCH_ROUTES (default "10,10000,100000": 10 is one route per backend, the cost of proxying itself), N override routes over M backends
 * (BENCH_BACKENDS, default 10) are written to a fresh bucket, then a
 * gateway starts and the bench prints:
 *   - the time from the gateway's start until every route is applied, and
 *     until a request to the last route written is answered by its backend;
 *   - the gateway's RSS then, against a gateway with an empty bucket in the
 *     same run (the "added" figure);
 *   - the time one live update takes to reach requests (a put, then
 *     requests until one sees the new version);
 *   - p50/p99 of BENCH_REQUESTS requests (default 4000, 16 at a time) spread
 *     over all routes, next to the same over 100 routes, so a lookup that
 *     grew with N would show.
 * Route values come in two shapes (BENCH_ROUTE_VALUES, default both):
 * "same" — each route names its backend and strips its prefix, so routes of
 * one backend have the same value (one override per tenant, as the issue
 * measured); "distinct" — each route also sets its own `x-tenant` request
 * header, so no two values are alike.
 * A figure, not a test. Results also go to bench/results/routes.json.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { connect } from '@nats-io/transport-node';
import { openRoutesBucket } from '@natsgw/gateway';
import { startNatsServer } from '@natsgw/devkit';
import { Pool } from 'undici';
import { envCount, memoryKb, start, startGateway, stopAll, waitForLine, type BenchGateway } from './tools.js';

const BACKENDS = envCount('BENCH_BACKENDS', 10);
const REQUESTS = envCount('BENCH_REQUESTS', 4000);
const SIZES = (process.env.BENCH_ROUTES ?? '10,10000,100000').split(',').map((s) => {
  if (!/^[1-9]\d*$/.test(s)) {
    process.stderr.write(`bench: BENCH_ROUTES must be a comma-separated list of positive whole numbers (got ${JSON.stringify(process.env.BENCH_ROUTES)})\n`);
    process.exit(2);
  }
  return Number(s);
});
const SHAPES = (process.env.BENCH_ROUTE_VALUES ?? 'same,distinct').split(',') as Array<'same' | 'distinct'>;
if (SHAPES.some((x) => x !== 'same' && x !== 'distinct')) {
  process.stderr.write(`bench: BENCH_ROUTE_VALUES must be same, distinct or both (got ${JSON.stringify(process.env.BENCH_ROUTE_VALUES)})\n`);
  process.exit(2);
}
const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const signed = (x: number) => (x >= 0 ? `+${x}` : `${x}`);
const mib = (kb: number) => Math.round((kb / 1024) * 10) / 10;

interface Scenario {
  routes: number;
  values: 'same' | 'distinct';
  backends: number;
  fillS: number;
  appliedS: number;
  servingS: number;
  rssMiB: number;
  addedMiB: number;
  /** RSS over the same-shape run with one route per backend (when BENCH_ROUTES has it): what the routes add beyond proxying itself. */
  addedOverReferenceMiB: number | null;
  heapUsedMiB: number;
  heapTotalMiB: number;
  rssAfterRequestsMiB: number;
  updateMs: number;
  p50Ms: number;
  p99Ms: number;
  p50Over100Ms: number;
  p99Over100Ms: number;
}

const routeValue = (port: number, tag?: string, tenant?: string) =>
  JSON.stringify({
    upstreams: [{ url: `http://127.0.0.1:${port}` }],
    stripPrefix: true,
    ...(tenant ? { requestHeaders: { set: { 'x-tenant': tenant } } } : {}),
    ...(tag ? { responseHeaders: { set: { 'x-version': tag } } } : {}),
  });

async function fill(natsUrl: string, bucket: string, n: number, ports: number[], shape: 'same' | 'distinct'): Promise<number> {
  const t0 = performance.now();
  const nc = await connect({ servers: natsUrl });
  const kv = await openRoutesBucket(nc, bucket);
  const WINDOW = 512;
  for (let i = 0; i < n; i += WINDOW) {
    const puts: Promise<unknown>[] = [];
    for (let j = i; j < Math.min(n, i + WINDOW); j++) puts.push(kv.put(`api.t${j}`, routeValue(ports[j % ports.length]!, undefined, shape === 'distinct' ? `t${j}` : undefined)));
    await Promise.all(puts);
  }
  await nc.close();
  return (performance.now() - t0) / 1000;
}

async function adminStatus(gw: BenchGateway, adminPort: number): Promise<{ overrides: { routes: number; rejected: number } }> {
  void gw;
  const r = await fetch(`http://127.0.0.1:${adminPort}/status`);
  return (await r.json()) as { overrides: { routes: number; rejected: number } };
}

/** Latencies (ms) of `count` GETs, `concurrency` at a time, to routes drawn from 0..routes-1. */
async function spread(pool: Pool, routes: number, count: number, concurrency = 16): Promise<{ p50: number; p99: number }> {
  const lat: number[] = [];
  let next = 0;
  let seed = 12345;
  const rand = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
  const worker = async () => {
    while (next++ < count) {
      const path = `/t${Math.floor(rand() * routes)}/x`;
      const t = performance.now();
      const r = await pool.request({ path, method: 'GET' });
      await r.body.dump();
      if (r.statusCode !== 200) throw new Error(`${path}: status ${r.statusCode}`);
      lat.push(performance.now() - t);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  lat.sort((a, b) => a - b);
  return { p50: lat[Math.floor(lat.length * 0.5)]!, p99: lat[Math.floor(lat.length * 0.99)]! };
}

/** The gateway's JS heap (used, total) in MiB, from its /metrics. */
async function heapMiB(adminPort: number): Promise<{ used: number; total: number }> {
  const text = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
  const read = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN) / 1048576;
  return { used: Math.round(read('nodejs_heap_size_used_bytes') * 10) / 10, total: Math.round(read('nodejs_heap_size_total_bytes') * 10) / 10 };
}

async function adminPortOf(gw: BenchGateway): Promise<number> {
  for (let waited = 0; waited < 10_000; waited += 20) {
    const m = /admin on http:\/\/127\.0\.0\.1:(\d+)/.exec(gw.log());
    if (m) return Number(m[1]);
    await sleep(20);
  }
  throw new Error(`no admin port in the log: ${gw.log().slice(-500)}`);
}

async function main(): Promise<void> {
  const nats = await startNatsServer();
  try {
    const backends = start(process.execPath, [here('./routes-backends.js')], { COUNT: String(BACKENDS) });
    const ports = (await waitForLine(backends, /ports ([\d,]+)/, 'backends'))[1]!.split(',').map(Number);

    // The reference: a gateway whose bucket is empty.
    const empty = await startGateway(nats.url, { routesBucket: 'bench-empty' });
    await adminPortOf(empty);
    await sleep(1000);
    const baseKb = memoryKb(empty.child.pid!).rssKb;
    const baseHeap = await heapMiB(await adminPortOf(empty));
    empty.child.kill('SIGTERM');
    console.log(`gateway with an empty bucket: RSS ${mib(baseKb)} MiB, heap ${baseHeap.used} used of ${baseHeap.total}`);

    const results: Scenario[] = [];
    /** RSS of the run with one route per backend, by value shape. */
    const referenceKb = new Map<string, number>();
    for (const n of SIZES)
      for (const shape of SHAPES) {
        const bucket = `bench-routes-${n}-${shape}`;
        const fillS = await fill(nats.url, bucket, n, ports, shape);
        const t0 = performance.now();
        const gw = await startGateway(nats.url, { routesBucket: bucket });
        const adminPort = await adminPortOf(gw);
        let appliedS = NaN;
        for (;;) {
          const s = await adminStatus(gw, adminPort).catch(() => undefined);
          if (s !== undefined && s.overrides.routes + s.overrides.rejected >= n) {
            appliedS = (performance.now() - t0) / 1000;
            if (s.overrides.rejected > 0) throw new Error(`${s.overrides.rejected} routes rejected`);
            break;
          }
          if (performance.now() - t0 > 120_000) throw new Error(`only ${s?.overrides.routes} of ${n} routes applied after 120 s`);
          await sleep(20);
        }
        const appliedKb = memoryKb(gw.child.pid!).rssKb;
        const pool = new Pool(`http://127.0.0.1:${gw.port}`, { connections: 16 });
        // The last route written is the last one the gateway reads.
        for (;;) {
          const r = await pool.request({ path: `/t${n - 1}/x`, method: 'GET' });
          await r.body.dump();
          if (r.statusCode === 200 && r.headers['x-backend'] !== undefined) break;
          await sleep(5);
        }
        const servingS = (performance.now() - t0) / 1000;
        console.log(`  ${n} routes (${shape} values): RSS ${signed(mib(appliedKb - baseKb))} MiB when all were applied, before any request`);
        await sleep(1000);
        const rssKb = memoryKb(gw.child.pid!).rssKb;
        const heap = await heapMiB(adminPort);

        // One live update: route t0 moves to another backend and gains a header.
        const nc = await connect({ servers: nats.url });
        const kv = await openRoutesBucket(nc, bucket);
        const u0 = performance.now();
        await kv.put('api.t0', routeValue(ports[1 % ports.length]!, 'v2'));
        let updateMs = NaN;
        for (;;) {
          const r = await pool.request({ path: '/t0/x', method: 'GET' });
          await r.body.dump();
          if (r.headers['x-version'] === 'v2') {
            updateMs = performance.now() - u0;
            break;
          }
          if (performance.now() - u0 > 10_000) throw new Error('the update did not apply within 10 s');
        }
        await nc.close();

        // Each spread twice, alternating; the second of each counts (the first warms up the path and the pools).
        await spread(pool, Math.min(n, 100), REQUESTS);
        await spread(pool, n, REQUESTS);
        const over100 = await spread(pool, Math.min(n, 100), REQUESTS);
        const overAll = await spread(pool, n, REQUESTS);
        const rssAfterKb = memoryKb(gw.child.pid!).rssKb;
        await pool.close();
        gw.child.kill('SIGTERM');
        await new Promise((r) => gw.child.once('exit', r));

        const s: Scenario = {
          routes: n,
          values: shape,
          backends: BACKENDS,
          fillS: Math.round(fillS * 10) / 10,
          appliedS: Math.round(appliedS * 100) / 100,
          servingS: Math.round(servingS * 100) / 100,
          rssMiB: mib(rssKb),
          addedMiB: mib(rssKb - baseKb),
          addedOverReferenceMiB: referenceKb.has(shape) ? mib(rssKb - referenceKb.get(shape)!) : null,
          heapUsedMiB: heap.used,
          heapTotalMiB: heap.total,
          rssAfterRequestsMiB: mib(rssAfterKb),
          updateMs: Math.round(updateMs * 10) / 10,
          p50Ms: Math.round(overAll.p50 * 100) / 100,
          p99Ms: Math.round(overAll.p99 * 100) / 100,
          p50Over100Ms: Math.round(over100.p50 * 100) / 100,
          p99Over100Ms: Math.round(over100.p99 * 100) / 100,
        };
        results.push(s);
        if (n === BACKENDS) referenceKb.set(shape, rssKb);
        console.log(
          `${n} routes over ${BACKENDS} backends, ${shape} values (bucket filled in ${s.fillS} s): all applied ${s.appliedS} s after start, serving at ${s.servingS} s; ` +
            `RSS ${s.rssMiB} MiB (${signed(s.addedMiB)} over an empty bucket${s.addedOverReferenceMiB === null ? '' : `, ${signed(s.addedOverReferenceMiB)} over ${BACKENDS} routes`}; heap ${s.heapUsedMiB} used of ${s.heapTotalMiB}; ${s.rssAfterRequestsMiB} after the requests); one update reached requests in ${s.updateMs} ms; ` +
            `latency over all routes p50 ${s.p50Ms} ms p99 ${s.p99Ms} ms (over 100 routes: p50 ${s.p50Over100Ms} p99 ${s.p99Over100Ms})`,
        );
      }
    mkdirSync(here('../../results'), { recursive: true });
    writeFileSync(here('../../results/routes.json'), JSON.stringify({ date: new Date().toISOString(), node: process.version, results }, null, 2) + '\n');
  } finally {
    await stopAll();
    await nats.stop();
  }
}

await main();
