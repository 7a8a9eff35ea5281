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
 * at least 1.0× the throughput of nginx → node:http (b) with the access log
 * on on both sides, and 1.1× with it off on both; the override path (d) at
 * least 0.8× of (b), on the same machine in the same run.
 *
 * The access-log pair: (b+log) is the same nginx with `access_log` to a file
 * (buffer=64k flush=1s), (c+log) a second gateway with its default access
 * log, stdout to a file. (c+w2) is a gateway with --workers 2, log on.
 * CPU µs per request is given for every process on the path (gateway,
 * service, nats-server; nginx worker, node:http). Memory: the gateway's RSS
 * idle after start, after the rounds, and during and after a burst of 1,000
 * connections with logging on; and what each dependency costs at import.
 *
 * Environment: BENCH_DURATION (s, default 5), BENCH_CONNECTIONS (50),
 * BENCH_ROUNDS (3), BENCH_LARGE_MIB (100; 0 skips the large-body
 * contenders), BENCH_TOOL (wrk|autocannon), BENCH_COMPARE (the path
 * of another built checkout: its gateway joins the same run as contenders
 * (c') and (d'), on the same NATS, service and backend, for before/after
 * figures from one run).
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { freePorts, startNatsServer, type NatsServer } from '@natsgw/devkit';
import { burst } from './burst.js';
import { runLarge, type LargeContender } from './large.js';
import {
  cpuTicks,
  cpuUsPerRequest,
  envCount,
  memoryKb,
  putProxiedOverride,
  putPolicyRoute,
  runAutocannon,
  runWrk,
  shebangFlags,
  start,
  startGateway,
  startNginx,
  stopAll,
  waitForLine,
  waitForLog,
  which,
  type Measurement,
} from './tools.js';

const DURATION_S = envCount('BENCH_DURATION', 5);
const CONNECTIONS = envCount('BENCH_CONNECTIONS', 50);
const ROUNDS = envCount('BENCH_ROUNDS', 3);
/** Size of the large-body contenders' download and upload (0 skips them). */
const LARGE_MIB = envCount('BENCH_LARGE_MIB', 100, true);
const WARMUP_S = 2;
/** When the gateway's RSS is read a second time, idle, after its start. */
const IDLE_SETTLE_MS = 35_000;
const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const RESULTS_DIR = here('../../results');

type Key = 'direct' | 'nginx' | 'nginxLog' | 'gateway' | 'gatewayPolicy' | 'gatewaySameHeaders' | 'gatewayLog' | 'gatewayWorkers' | 'override' | 'compareGateway' | 'compareOverride';

interface Contender {
  key: Key;
  label: string;
  url: string;
  /** Every process on the contender's path, whose CPU is counted; the first does the proxying. */
  pids: Array<[role: string, pid: number]>;
  /** Request headers the load generator sends. */
  headers?: Record<string, string>;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
const mib = (kb: number) => Math.round((kb / 1024) * 10) / 10;

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
  if (!wrk) console.log("  (wrk not installed: using autocannon, which runs in this process; install Debian's wrk for steadier figures)");
  if (!nginx) console.log("  (nginx not installed: skipping the nginx contenders; install Debian's nginx to compare)");

  const contenders: Contender[] = [];
  let nats: NatsServer | undefined;
  let nginxDir: string | undefined;
  const logDir = mkdtempSync(join(tmpdir(), 'natsgw-bench-logs-'));
  try {
    // (a) node:http
    const direct = start(process.execPath, [here('./node-server.js')]);
    const directPort = Number((await waitForLine(direct, /port (\d+)/, 'node:http server'))[1]);
    const directPid = direct.pid!;
    contenders.push({ key: 'direct', label: 'node:http direct', url: `http://127.0.0.1:${directPort}/hello`, pids: [['node:http', directPid]] });

    // (b) nginx → node:http, without and with an access log
    if (nginx) {
      const [port, logPort] = (await freePorts(2)) as [number, number];
      const n = await startNginx(nginx, directPort, port, logPort);
      nginxDir = n.dir;
      // One nginx worker serves both: the logging server block on its own port.
      for (const [key, label, p] of [
        ['nginx', 'nginx → node:http', port],
        ['nginxLog', 'nginx+log → node:http', logPort],
      ] as const) {
        contenders.push({
          key,
          label,
          url: `http://127.0.0.1:${p}/hello`,
          pids: [
            ['nginx', n.workerPid],
            ['node:http', directPid],
          ],
        });
      }
    }

    // (c) gateway → NATS → SDK service
    nats = await startNatsServer();
    const service = start(process.execPath, [here('./service.js')], { NATS_URL: nats.url, SUBJECT: 'api.hello' });
    const servicePid = service.pid!;
    await waitForLine(service, /ready/, 'service');
    const natsPath = (gatewayPid: number): Contender['pids'] => [
      ['gateway', gatewayPid],
      ['service', servicePid],
      ['nats-server', nats!.pid],
    ];
    const gateway = await startGateway(nats.url);
    const gatewayStarted = Date.now();
    await waitForLog(gateway, 'connected to NATS', 'connect to NATS');
    const gatewayPid = gateway.child.pid!;
    await new Promise((r) => setTimeout(r, 1000));
    const idle = memoryKb(gatewayPid);
    contenders.push({ key: 'gateway', label: 'natsgw → NATS → service', url: `http://127.0.0.1:${gateway.port}/hello`, pids: natsPath(gatewayPid) });
    // The same path with CORS + rate limit + JWT on its route (the policies issue's contender).
    const policyHeaders = await putPolicyRoute(nats.url, gateway);
    contenders.push({ key: 'gatewayPolicy', label: 'natsgw+cors+rl+jwt → NATS', url: `http://127.0.0.1:${gateway.port}/hello/p`, pids: natsPath(gatewayPid), headers: policyHeaders });
    // What the same request (Origin, a bearer token) costs without the policy: the policies' own cost is the difference.
    contenders.push({ key: 'gatewaySameHeaders', label: 'natsgw, same headers', url: `http://127.0.0.1:${gateway.port}/hello/h`, pids: natsPath(gatewayPid), headers: policyHeaders });
    const logged = await startGateway(nats.url, { accessLog: true, logFile: join(logDir, 'gateway.log') });
    await waitForLog(logged, 'connected to NATS', 'connect to NATS');
    await new Promise((r) => setTimeout(r, 1000));
    const idleLogged = memoryKb(logged.child.pid!);
    contenders.push({ key: 'gatewayLog', label: 'natsgw+log → NATS', url: `http://127.0.0.1:${logged.port}/hello`, pids: natsPath(logged.child.pid!) });
    const pooled = await startGateway(nats.url, { accessLog: true, logFile: join(logDir, 'workers.log'), workers: 2 });
    await waitForLog(pooled, 'connected to NATS', 'connect to NATS');
    contenders.push({ key: 'gatewayWorkers', label: 'natsgw+log --workers 2', url: `http://127.0.0.1:${pooled.port}/hello`, pids: natsPath(pooled.child.pid!) });

    // (c') another checkout's gateway on the same NATS and service
    const other = compare === undefined ? undefined : await startGateway(nats.url, { checkout: compare });
    if (other !== undefined) {
      await waitForLog(other, 'connected to NATS', 'connect to NATS');
      contenders.push({ key: 'compareGateway', label: 'compare: natsgw → NATS', url: `http://127.0.0.1:${other.port}/hello`, pids: natsPath(other.child.pid!) });
    }

    // Idle for longer: V8's memory reducer runs a GC some 20-30 s after start when nothing happens
    // (read before the override below loads undici).
    await new Promise((r) => setTimeout(r, Math.max(0, gatewayStarted + IDLE_SETTLE_MS - Date.now())));
    const idleSettled = memoryKb(gatewayPid);

    // (d) gateway → HTTP override → the same node:http server as (a)
    await putProxiedOverride(nats.url, directPort, gateway);
    contenders.push({
      key: 'override',
      label: 'natsgw → HTTP override',
      url: `http://127.0.0.1:${gateway.port}/proxied/hello`,
      pids: [
        ['gateway', gatewayPid],
        ['node:http', directPid],
      ],
    });
    if (other !== undefined) {
      await waitForLog(other, 'override applied', 'apply the override');
      contenders.push({
        key: 'compareOverride',
        label: 'compare: natsgw → override',
        url: `http://127.0.0.1:${other.port}/proxied/hello`,
        pids: [
          ['gateway', other.child.pid!],
          ['node:http', directPid],
        ],
      });
    }

    const measure = (url: string, seconds: number, headers?: Record<string, string>) =>
      wrk ? Promise.resolve(runWrk(wrk, url, seconds, CONNECTIONS, headers)) : runAutocannon(url, seconds, CONNECTIONS, headers);
    const rounds: Record<string, Measurement[]> = {};
    for (let round = 1; round <= ROUNDS; round++) {
      for (const c of contenders) {
        await measure(c.url, WARMUP_S, c.headers);
        const before = c.pids.map(([, pid]) => cpuTicks(pid));
        const m = await measure(c.url, DURATION_S, c.headers);
        m.cpuUsPerReq = Object.fromEntries(c.pids.map(([role, pid], i) => [role, cpuUsPerRequest(pid, before[i]!, m.requestsPerSec, DURATION_S)]));
        m.proxyCpuUsPerReq = m.cpuUsPerReq[c.pids[0]![0]]!;
        (rounds[c.key] ??= []).push(m);
        const cpu = c.pids.map(([role]) => `${role} ${m.cpuUsPerReq![role]!.toFixed(1)}`).join(' + ');
        console.log(
          `  round ${round}  ${c.label.padEnd(26)} ${m.requestsPerSec.toFixed(0).padStart(7)} req/s  p50 ${m.p50Ms.toFixed(2)} ms  p99 ${m.p99Ms.toFixed(2)} ms  CPU µs/req ${cpu}${m.errors ? `  errors ${m.errors}` : ''}`,
        );
      }
    }
    const afterRounds = memoryKb(gatewayPid);
    const afterRoundsLogged = memoryKb(logged.child.pid!);

    // 1,000 connections at once, logging on: RSS during (sampled) and after.
    console.log('\nburst: 1,000 connections for 5 s against natsgw+log');
    const burstResult = await burst(wrk, `http://127.0.0.1:${logged.port}/hello`, logged.child.pid!);
    console.log(`  ${burstResult.requestsPerSec.toFixed(0)} req/s, RSS before ${mib(burstResult.beforeKb)} MiB, peak during ${mib(burstResult.peakKb)} MiB, 3 s after ${mib(burstResult.afterKb)} MiB`);

    // Large bodies, streamed: (a), (b), (c) only.
    let large: Awaited<ReturnType<typeof runLarge>> | undefined;
    if (LARGE_MIB > 0) {
      console.log(`\nlarge bodies: ${LARGE_MIB} MiB down and up, ${ROUNDS} rounds`);
      const base = (key: string) => contenders.find((c) => c.key === key)!.url.replace(/\/hello$/, '/big');
      const largeContenders: LargeContender[] = contenders
        .filter((c) => c.key === 'direct' || c.key === 'nginx' || c.key === 'gateway')
        .map((c) => ({ key: c.key, label: c.label, base: base(c.key) }));
      large = await runLarge(largeContenders, ROUNDS, LARGE_MIB, { gateway: gatewayPid, service: servicePid });
    }
    const compareMem = compare !== undefined ? memoryKb(contenders.find((c) => c.key === 'compareGateway')!.pids[0]![1]) : undefined;
    const imports = importCosts();

    // Best round of each: the same rule for every contender.
    const best = Object.fromEntries(Object.entries(rounds).map(([k, ms]) => [k, ms.reduce((a, b) => (b.requestsPerSec > a.requestsPerSec ? b : a))])) as Record<string, Measurement>;
    const ratio = (a: string, b: string) => (best[a] && best[b] ? best[a].requestsPerSec / best[b].requestsPerSec : undefined);
    const medianCpu = (key: string, role: string) => median((rounds[key] ?? []).map((m) => m.cpuUsPerReq![role]!));
    const result = {
      date: new Date().toISOString(),
      machine: { cpus: cpus().length, model: cpus()[0]?.model, node: process.version },
      tool,
      connections: CONNECTIONS,
      durationS: DURATION_S,
      rounds: ROUNDS,
      results: Object.fromEntries(
        contenders.map((c) => [c.key, { label: c.label, best: best[c.key], medianCpuUsPerReq: Object.fromEntries(c.pids.map(([role]) => [role, medianCpu(c.key, role)])), rounds: rounds[c.key] }]),
      ),
      memoryMiB: {
        gatewayIdle: mib(idle.rssKb),
        gatewayIdleAfter35s: mib(idleSettled.rssKb),
        gatewayIdleAfter35sSplit: { anonymous: mib(idleSettled.anonKb), fileBacked: mib(idleSettled.fileKb) },
        bareNode: bareNode(),
        gatewayAfterRounds: mib(afterRounds.rssKb),
        gatewayLogIdle: mib(idleLogged.rssKb),
        gatewayLogAfterRounds: mib(afterRoundsLogged.rssKb),
        burst: { connections: 1000, requestsPerSec: burstResult.requestsPerSec, before: mib(burstResult.beforeKb), peak: mib(burstResult.peakKb), after: mib(burstResult.afterKb) },
        gatewayWorkersAfterRounds: mib(memoryKb(pooled.child.pid!).rssKb),
        imports,
      },
      ratios: {
        gatewayVsNginx: ratio('gateway', 'nginx'),
        gatewayLogVsNginxLog: ratio('gatewayLog', 'nginxLog'),
        gatewayWorkersVsNginxLog: ratio('gatewayWorkers', 'nginxLog'),
        gatewayVsDirect: ratio('gateway', 'direct'),
        policyVsGateway: ratio('gatewayPolicy', 'gateway'),
        policyVsSameHeaders: ratio('gatewayPolicy', 'gatewaySameHeaders'),
        overrideVsNginx: ratio('override', 'nginx'),
      },
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
      target: { gatewayVsNginx: 1.1, gatewayLogVsNginxLog: 1.0, overrideVsNginx: 0.8, policyVsGateway: 0.9, gatewayIdleMiB: 60, gatewayBurstMiB: 100 },
    };

    console.log('\nbest of rounds (CPU: median over the rounds, µs per request, per process)');
    console.log('  contender                  req/s     p50 ms   p99 ms  errors  CPU µs/req');
    for (const c of contenders) {
      const m = best[c.key]!;
      const cpu = c.pids.map(([role]) => `${role} ${medianCpu(c.key, role).toFixed(1)}`);
      const sum = c.pids.reduce((a, [role]) => a + medianCpu(c.key, role), 0);
      console.log(
        `  ${c.label.padEnd(26)} ${m.requestsPerSec.toFixed(0).padStart(7)}  ${m.p50Ms.toFixed(2).padStart(8)} ${m.p99Ms.toFixed(2).padStart(8)}  ${String(m.errors).padStart(6)}  ${cpu.join(' + ')} = ${sum.toFixed(1)}`,
      );
    }
    const verdict = (r: number | undefined, target: number) => (r === undefined ? 'n/a' : `${r.toFixed(2)}×  (target ≥ ${target.toFixed(2)}×: ${r >= target ? 'met' : 'NOT met'})`);
    console.log('');
    if (nginx) {
      console.log(`  natsgw / nginx, access logs off     = ${verdict(result.ratios.gatewayVsNginx, 1.1)}`);
      console.log(`  natsgw / nginx, access logs on      = ${verdict(result.ratios.gatewayLogVsNginxLog, 1.0)}`);
      console.log(`  natsgw --workers 2 / nginx, logs on = ${verdict(result.ratios.gatewayWorkersVsNginxLog, 1.0)}`);
      console.log(`  override / nginx                    = ${verdict(result.ratios.overrideVsNginx, 0.8)}`);
    }
    console.log(`  natsgw / node:http direct           = ${result.ratios.gatewayVsDirect!.toFixed(2)}×`);
    console.log(`  cors+rate limit+jwt / no policy     = ${verdict(result.ratios.policyVsGateway, 0.9)}`);
    console.log(`    … / the same request without them = ${result.ratios.policyVsSameHeaders!.toFixed(2)}×  (what the policies alone cost)`);
    const mem = result.memoryMiB;
    console.log(
      `\n  gateway RSS: idle ${mem.gatewayIdle} MiB 1 s after start, ${mem.gatewayIdleAfter35s} MiB 35 s after (target ≤ 60; anonymous ${mem.gatewayIdleAfter35sSplit.anonymous}, file-backed ${mem.gatewayIdleAfter35sSplit.fileBacked}; node with the same flags and nothing loaded: ${mem.bareNode.rss}, of them ${mem.bareNode.anonymous} anonymous, ${mem.bareNode.fileBacked} file-backed), after the rounds ${mem.gatewayAfterRounds} MiB; with its access log: idle ${mem.gatewayLogIdle} MiB, after the rounds ${mem.gatewayLogAfterRounds} MiB`,
    );
    console.log(`  1,000-connection burst, log on: peak ${mem.burst.peak} MiB, after ${mem.burst.after} MiB (target ≤ 100)`);
    console.log(`  --workers 2 after the rounds: ${mem.gatewayWorkersAfterRounds} MiB`);
    console.log(`  what loading costs (RSS MiB, cumulative, node ${process.version}): ${imports.map((i) => `${i.module} ${i.rssMiB}`).join(', ')}`);
    if (compare !== undefined) {
      console.log(`\n  this checkout vs ${compare} (same run):`);
      for (const [mine, theirs, what] of [
        ['gateway', 'compareGateway', 'NATS path'],
        ['override', 'compareOverride', 'override path'],
      ] as const) {
        console.log(
          `    ${what.padEnd(14)} req/s ${ratio(mine, theirs)!.toFixed(2)}×   gateway CPU µs/req (median of rounds) ${medianCpu(mine, 'gateway').toFixed(1)} vs ${medianCpu(theirs, 'gateway').toFixed(1)}`,
        );
      }
      console.log(`    gateway memory RSS ${mib(afterRounds.rssKb)} MiB vs ${mib(compareMem!.rssKb)} MiB`);
    }

    if (large !== undefined) {
      console.log(`\n  large bodies (${LARGE_MIB} MiB, best of rounds)      download MB/s   upload MB/s`);
      for (const [key, r] of Object.entries(large.best))
        console.log(`    ${contenders.find((c) => c.key === key)!.label.padEnd(30)} ${r.downloadMBps.toFixed(0).padStart(10)} ${r.uploadMBps.toFixed(0).padStart(13)}`);
      const lr = result.large?.ratios;
      if (lr !== undefined)
        console.log(
          `    natsgw / nginx→node:http: download ${lr.downloadVsNginx.toFixed(2)}×, upload ${lr.uploadVsNginx.toFixed(2)}×  (target ≥ 0.50×: ${lr.downloadVsNginx >= 0.5 && lr.uploadVsNginx >= 0.5 ? 'met' : 'NOT met'})`,
        );
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
    rmSync(logDir, { recursive: true, force: true });
  }
}

/** The V8 flags the `natsgw` command runs with (its shebang line). */
const gatewayFlags = (): string[] => shebangFlags(here('../../../gateway/bin/natsgw.js'));

/** RSS of a node process with the gateway's V8 flags that loads nothing, 3 s after start: the part of the gateway's RSS that is node itself. */
function bareNode(): { rss: number; anonymous: number; fileBacked: number } {
  const script = "setTimeout(() => process.stdout.write(require('fs').readFileSync('/proc/self/status', 'utf8')), 3000)";
  const status = spawnSync(process.execPath, [...gatewayFlags(), '-e', script], { encoding: 'utf8' }).stdout;
  const kb = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)?.[1] ?? NaN);
  return { rss: mib(kb('VmRSS')), anonymous: mib(kb('RssAnon')), fileBacked: mib(kb('RssFile')) };
}

/** RSS after importing each of the gateway's parts in turn, in a fresh node with the gateway's V8 flags. */
function importCosts(): Array<{ module: string; rssMiB: number }> {
  const r = spawnSync(process.execPath, [...gatewayFlags(), here('./import-costs.js')], { encoding: 'utf8', cwd: here('../../../gateway') });
  if (r.status !== 0) return [];
  return JSON.parse(r.stdout) as Array<{ module: string; rssMiB: number }>;
}

await main();
