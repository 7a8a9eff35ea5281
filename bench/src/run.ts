/**
 * `npm run bench`: one run that measures the same handler
 *   (a) served directly by node:http,
 *   (b) behind nginx proxy_pass (1 worker, keep-alive upstream), when nginx is installed,
 *   (c) through the gateway over NATS to an SDK service,
 *   (d) through the gateway's HTTP override path to the same node:http server,
 * with wrk (else autocannon), alternating contenders over several rounds so
 * machine noise hits all of them alike. Prints req/s, p50/p99, the CPU time
 * the proxying process spends per request, the gateway's memory, and the
 * ratios of (c) to (b) and (a); writes bench/results/*.json.
 *
 * Targets are benchmark figures, not tests: the NATS path (c) should reach
 * at least 1.0× the throughput of nginx → node:http (b), the override path
 * (d) at least 0.8× of it, on the same machine in the same run.
 *
 * Like the nginx contender (access_log off), the gateway runs without its
 * access log; logging every request costs both of them alike.
 *
 * Environment: BENCH_DURATION (s, default 5), BENCH_CONNECTIONS (50),
 * BENCH_ROUNDS (3), BENCH_LARGE_MIB (100; 0 skips the large-body
 * contenders), BENCH_TOOL (wrk|autocannon), BENCH_COMPARE (the path
 * of another built checkout: its gateway joins the same run as contenders
 * (c') and (d'), on the same NATS, service and backend, for before/after
 * figures from one run).
 */
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, startNatsServer, type NatsServer } from '@natsgw/devkit';
import { runLarge, type LargeContender } from './large.js';
import { cpuTicks, cpuUsPerRequest, envCount, memoryKb, putProxiedOverride, runAutocannon, runWrk, start, startGateway, startNginx, stopAll, waitForLine, waitForLog, which, type Measurement } from './tools.js';

const DURATION_S = envCount('BENCH_DURATION', 5);
const CONNECTIONS = envCount('BENCH_CONNECTIONS', 50);
const ROUNDS = envCount('BENCH_ROUNDS', 3);
/** Size of the large-body contenders' download and upload (0 skips them). */
const LARGE_MIB = envCount('BENCH_LARGE_MIB', 100, true);
const WARMUP_S = 2;
const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const RESULTS_DIR = here('../../results');

interface Contender {
  key: 'direct' | 'nginx' | 'gateway' | 'override' | 'compareGateway' | 'compareOverride';
  label: string;
  url: string;
  /** The process doing the contender's proxying work, whose CPU is counted. */
  pid: number;
}

async function main(): Promise<void> {
  const toolChoice = process.env.BENCH_TOOL;
  if (toolChoice !== undefined && toolChoice !== '' && toolChoice !== 'wrk' && toolChoice !== 'autocannon') {
    process.stderr.write(`bench: BENCH_TOOL must be wrk or autocannon (got ${JSON.stringify(toolChoice)})\n`);
    process.exit(2);
  }
  const compare = process.env.BENCH_COMPARE || undefined;
  if (compare !== undefined && !existsSync(join(compare, 'gateway', 'dist', 'src', 'cli', 'cli.js')) && !existsSync(join(compare, 'gateway', 'dist', 'src', 'cli.js'))) {
    process.stderr.write(`bench: BENCH_COMPARE=${compare} is not a built natsgw checkout (run npm run build there)\n`);
    process.exit(2);
  }
  const wrk = toolChoice === 'autocannon' ? undefined : which('wrk');
  const nginx = which('nginx');
  const tool = wrk ? 'wrk' : 'autocannon';
  console.log(`natsgw bench: ${tool}, ${CONNECTIONS} connections, ${DURATION_S} s per run, ${ROUNDS} rounds, ${cpus().length} CPUs, node ${process.version}`);
  if (!wrk) console.log('  (wrk not installed: using autocannon, which runs in this process; install Debian\'s wrk for steadier figures)');
  if (!nginx) console.log('  (nginx not installed: skipping the nginx contender; install Debian\'s nginx to compare)');

  const contenders: Contender[] = [];
  let nats: NatsServer | undefined;
  let nginxDir: string | undefined;
  let gatewayPid = 0;
  let servicePid = 0;
  try {
    // (a) node:http
    const direct = start(process.execPath, [here('./node-server.js')]);
    const directPort = Number((await waitForLine(direct, /port (\d+)/, 'node:http server'))[1]);
    contenders.push({ key: 'direct', label: 'node:http direct', url: `http://127.0.0.1:${directPort}/hello`, pid: direct.pid! });

    // (b) nginx → node:http
    if (nginx) {
      const port = await freePort();
      const n = await startNginx(nginx, directPort, port);
      nginxDir = n.dir;
      contenders.push({ key: 'nginx', label: 'nginx → node:http', url: `http://127.0.0.1:${port}/hello`, pid: n.workerPid });
    }

    // (c) gateway → NATS → SDK service
    nats = await startNatsServer();
    const service = start(process.execPath, [here('./service.js')], { NATS_URL: nats.url, SUBJECT: 'api.hello' });
    servicePid = service.pid!;
    await waitForLine(service, /ready/, 'service');
    const gateway = await startGateway(nats.url);
    await waitForLog(gateway, 'connected to NATS', 'connect to NATS');
    gatewayPid = gateway.child.pid!;
    contenders.push({ key: 'gateway', label: 'natsgw → NATS → service', url: `http://127.0.0.1:${gateway.port}/hello`, pid: gatewayPid });

    // (c') another checkout's gateway on the same NATS and service
    const other = compare === undefined ? undefined : await startGateway(nats.url, compare);
    if (other !== undefined) {
      await waitForLog(other, 'connected to NATS', 'connect to NATS');
      contenders.push({ key: 'compareGateway', label: 'compare: natsgw → NATS', url: `http://127.0.0.1:${other.port}/hello`, pid: other.child.pid! });
    }

    // (d) gateway → HTTP override → the same node:http server as (a)
    await putProxiedOverride(nats.url, directPort, gateway);
    contenders.push({ key: 'override', label: 'natsgw → HTTP override', url: `http://127.0.0.1:${gateway.port}/proxied/hello`, pid: gatewayPid });
    if (other !== undefined) {
      await waitForLog(other, 'override applied', 'apply the override');
      contenders.push({ key: 'compareOverride', label: 'compare: natsgw → override', url: `http://127.0.0.1:${other.port}/proxied/hello`, pid: other.child.pid! });
    }

    const measure = (url: string, seconds: number) => (wrk ? Promise.resolve(runWrk(wrk, url, seconds, CONNECTIONS)) : runAutocannon(url, seconds, CONNECTIONS));
    const rounds: Record<string, Measurement[]> = {};
    for (let round = 1; round <= ROUNDS; round++) {
      for (const c of contenders) {
        await measure(c.url, WARMUP_S);
        const before = cpuTicks(c.pid);
        const m = await measure(c.url, DURATION_S);
        m.proxyCpuUsPerReq = cpuUsPerRequest(c.pid, before, m.requestsPerSec, DURATION_S);
        (rounds[c.key] ??= []).push(m);
        console.log(`  round ${round}  ${c.label.padEnd(26)} ${m.requestsPerSec.toFixed(0).padStart(7)} req/s  p50 ${m.p50Ms.toFixed(2)} ms  p99 ${m.p99Ms.toFixed(2)} ms  CPU ${m.proxyCpuUsPerReq.toFixed(1)} µs/req${m.errors ? `  errors ${m.errors}` : ''}`);
      }
    }
    const mem = memoryKb(gatewayPid);

    // Large bodies, streamed: (a), (b), (c) only.
    let large: Awaited<ReturnType<typeof runLarge>> | undefined;
    if (LARGE_MIB > 0) {
      console.log(`\nlarge bodies: ${LARGE_MIB} MiB down and up, ${ROUNDS} rounds`);
      const base = (key: string) => contenders.find((c) => c.key === key)!.url.replace(/\/hello$/, '/big');
      const largeContenders: LargeContender[] = contenders.filter((c) => c.key === 'direct' || c.key === 'nginx' || c.key === 'gateway').map((c) => ({ key: c.key, label: c.label, base: base(c.key) }));
      large = await runLarge(largeContenders, ROUNDS, LARGE_MIB, { gateway: gatewayPid, service: servicePid });
    }
    const compareMem = compare !== undefined ? memoryKb(contenders.find((c) => c.key === 'compareGateway')!.pid) : undefined;

    // Best round of each: the same rule for every contender.
    const best = Object.fromEntries(Object.entries(rounds).map(([k, ms]) => [k, ms.reduce((a, b) => (b.requestsPerSec > a.requestsPerSec ? b : a))])) as Record<string, Measurement>;
    const ratio = (a: string, b: string) => (best[a] && best[b] ? best[a].requestsPerSec / best[b].requestsPerSec : undefined);
    const result = {
      date: new Date().toISOString(),
      machine: { cpus: cpus().length, model: cpus()[0]?.model, node: process.version },
      tool,
      connections: CONNECTIONS,
      durationS: DURATION_S,
      rounds: ROUNDS,
      results: Object.fromEntries(contenders.map((c) => [c.key, { label: c.label, best: best[c.key], rounds: rounds[c.key] }])),
      gatewayMemory: mem,
      ratios: { gatewayVsNginx: ratio('gateway', 'nginx'), gatewayVsDirect: ratio('gateway', 'direct'), overrideVsNginx: ratio('override', 'nginx') },
      ...(large !== undefined
        ? {
            large: {
              mib: LARGE_MIB,
              best: large.best,
              peakRssMiB: Object.fromEntries(Object.entries(large.peakRss).map(([k, v]) => [k, Math.round((v / 1024 / 1024) * 10) / 10])),
              ratios: large.best.nginx
                ? { downloadVsNginx: large.best.gateway!.downloadMBps / large.best.nginx.downloadMBps, uploadVsNginx: large.best.gateway!.uploadMBps / large.best.nginx.uploadMBps }
                : undefined,
              target: { vsNginx: 0.5 },
            },
          }
        : {}),
      ...(compare !== undefined ? { compare: { checkout: compare, gatewayVsCompare: ratio('gateway', 'compareGateway'), overrideVsCompare: ratio('override', 'compareOverride') } } : {}),
      target: { gatewayVsNginx: 1.0, overrideVsNginx: 0.8 },
    };

    console.log('\nbest of rounds');
    console.log('  contender                  req/s     p50 ms   p99 ms  CPU µs/req  errors');
    for (const c of contenders) {
      const m = best[c.key]!;
      console.log(`  ${c.label.padEnd(26)} ${m.requestsPerSec.toFixed(0).padStart(7)}  ${m.p50Ms.toFixed(2).padStart(8)} ${m.p99Ms.toFixed(2).padStart(8)}  ${m.proxyCpuUsPerReq!.toFixed(1).padStart(10)}  ${m.errors}`);
    }
    console.log('  (CPU µs/req: the proxying process only — node:http itself, the nginx worker, the gateway)');
    console.log(`\n  gateway memory: RSS ${(mem.rssKb / 1024).toFixed(1)} MiB, peak ${(mem.peakRssKb / 1024).toFixed(1)} MiB`);
    if (result.ratios.gatewayVsNginx !== undefined) {
      const r = result.ratios.gatewayVsNginx;
      console.log(`  gateway / nginx→node:http  = ${r.toFixed(2)}×  (target ≥ 1.00×: ${r >= 1 ? 'met' : 'NOT met'})`);
    }
    console.log(`  gateway / node:http direct = ${result.ratios.gatewayVsDirect!.toFixed(2)}×`);
    if (compare !== undefined) {
      // CPU per request moves far less than req/s here: compare medians over the rounds.
      const medianCpu = (key: string) => {
        const xs = (rounds[key] ?? []).map((m) => m.proxyCpuUsPerReq!).sort((a, b) => a - b);
        return xs[Math.floor(xs.length / 2)] ?? NaN;
      };
      console.log(`\n  this checkout vs ${compare} (same run):`);
      for (const [mine, theirs, what] of [['gateway', 'compareGateway', 'NATS path'], ['override', 'compareOverride', 'override path']] as const) {
        console.log(`    ${what.padEnd(14)} req/s ${ratio(mine, theirs)!.toFixed(2)}×   CPU µs/req (median of rounds) ${medianCpu(mine).toFixed(1)} vs ${medianCpu(theirs).toFixed(1)}`);
      }
      console.log(`    gateway memory RSS ${(mem.rssKb / 1024).toFixed(1)} MiB vs ${(compareMem!.rssKb / 1024).toFixed(1)} MiB`);
    }
    if (result.ratios.overrideVsNginx !== undefined) {
      const r = result.ratios.overrideVsNginx;
      console.log(`  override / nginx→node:http = ${r.toFixed(2)}×  (target ≥ 0.80×: ${r >= 0.8 ? 'met' : 'NOT met'})`);
    }

    if (large !== undefined) {
      console.log(`\n  large bodies (${LARGE_MIB} MiB, best of rounds)      download MB/s   upload MB/s`);
      for (const [key, r] of Object.entries(large.best)) console.log(`    ${contenders.find((c) => c.key === key)!.label.padEnd(30)} ${r.downloadMBps.toFixed(0).padStart(10)} ${r.uploadMBps.toFixed(0).padStart(13)}`);
      const lr = result.large?.ratios;
      if (lr !== undefined) console.log(`    natsgw / nginx→node:http: download ${lr.downloadVsNginx.toFixed(2)}×, upload ${lr.uploadVsNginx.toFixed(2)}×  (target ≥ 0.50×: ${lr.downloadVsNginx >= 0.5 && lr.uploadVsNginx >= 0.5 ? 'met' : 'NOT met'})`);
      console.log(`    peak RSS during the transfers: gateway ${result.large!.peakRssMiB.gateway} MiB, service ${result.large!.peakRssMiB.service} MiB`);
    }

    mkdirSync(RESULTS_DIR, { recursive: true });
    const file = join(RESULTS_DIR, `bench-${result.date.replace(/[:.]/g, '-')}.json`);
    writeFileSync(file, JSON.stringify(result, null, 2) + '\n');
    writeFileSync(join(RESULTS_DIR, 'latest.json'), JSON.stringify(result, null, 2) + '\n');
    console.log(`\n  written to ${file}`);
  } finally {
    await stopAll();
    await nats?.dispose();
    if (nginxDir) rmSync(nginxDir, { recursive: true, force: true });
  }
}

await main();
