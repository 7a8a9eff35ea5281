/**
 * `npm run bench`: one run that measures the same handler
 *   (a) served directly by node:http,
 *   (b) behind nginx proxy_pass (1 worker, keep-alive upstream), when nginx is installed,
 *   (c) through the gateway over NATS to an SDK service,
 *   (d) through the gateway's HTTP override path to the same node:http server,
 * with wrk (else autocannon), alternating contenders over several rounds so
 * machine noise hits all of them alike. Prints req/s, p50/p99, the gateway's
 * memory, and the ratios of (c) to (b) and (a); writes bench/results/*.json.
 *
 * Targets are benchmark figures, not tests: the NATS path (c) should reach
 * at least 1.0× the throughput of nginx → node:http (b), the override path
 * (d) at least 0.8× of it, on the same machine in the same run.
 *
 * Like the nginx contender (access_log off), the gateway runs without its
 * access log; logging every request costs both of them alike.
 *
 * Environment: BENCH_DURATION (s, default 5), BENCH_CONNECTIONS (50),
 * BENCH_ROUNDS (3), BENCH_TOOL (wrk|autocannon).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { connect } from '@nats-io/transport-node';
import { freePort, startNatsServer, type NatsServer } from '@natsgw/devkit';
import { openRoutesBucket } from '@natsgw/gateway';

const DURATION_S = Number(process.env.BENCH_DURATION ?? 5);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 50);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const WARMUP_S = 1;
const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const RESULTS_DIR = here('../../results');

function which(name: string): string | undefined {
  for (const dir of [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/usr/local/sbin']) {
    if (dir && existsSync(join(dir, name))) return join(dir, name);
  }
  return undefined;
}

interface Measurement {
  requestsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
}

interface Contender {
  key: 'direct' | 'nginx' | 'gateway' | 'override';
  label: string;
  url: string;
}

const children: ChildProcess[] = [];
function start(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): ChildProcess {
  const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  return child;
}
function waitForLine(child: ChildProcess, pattern: RegExp, what: string): Promise<RegExpExecArray> {
  return new Promise((resolve, reject) => {
    let seen = '';
    const onData = (d: Buffer) => {
      seen += d.toString();
      const m = pattern.exec(seen);
      if (m) {
        child.stdout!.off('data', onData);
        child.stderr!.off('data', onData);
        resolve(m);
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code) => reject(new Error(`${what} exited (${code}): ${seen.slice(-500)}`)));
    setTimeout(() => reject(new Error(`${what} did not start: ${seen.slice(-500)}`)), 15_000).unref();
  });
}

function toMs(value: string): number {
  const m = /^([\d.]+)(us|ms|s)$/.exec(value.trim());
  if (!m) return NaN;
  const n = Number(m[1]);
  return m[2] === 'us' ? n / 1000 : m[2] === 's' ? n * 1000 : n;
}

function runWrk(wrk: string, url: string, seconds: number): Measurement {
  const r = spawnSync(wrk, ['-t1', `-c${CONNECTIONS}`, `-d${seconds}s`, '--latency', url], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`wrk failed: ${r.stderr}`);
  const out = r.stdout;
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN);
  const p50 = toMs(/^\s+50%\s+(\S+)/m.exec(out)?.[1] ?? '');
  const p99 = toMs(/^\s+99%\s+(\S+)/m.exec(out)?.[1] ?? '');
  const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(out)?.[1] ?? 0);
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const socketErrors = sock ? sock.slice(1).reduce((a, b) => a + Number(b), 0) : 0;
  return { requestsPerSec: rps, p50Ms: p50, p99Ms: p99, errors: non2xx + socketErrors };
}

async function runAutocannon(url: string, seconds: number): Promise<Measurement> {
  const r = await autocannon({ url, connections: CONNECTIONS, duration: seconds });
  return { requestsPerSec: r.requests.average, p50Ms: r.latency.p50, p99Ms: r.latency.p99, errors: r.non2xx + r.errors + r.timeouts };
}

function startNginx(nginx: string, upstreamPort: number, port: number): { child: ChildProcess; dir: string } {
  const dir = mkdtempSync(join(tmpdir(), 'natsgw-bench-nginx-'));
  for (const d of ['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) mkdirSync(join(dir, d));
  const conf = `
worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  upstream backend { server 127.0.0.1:${upstreamPort}; keepalive 64; }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}`;
  writeFileSync(join(dir, 'nginx.conf'), conf);
  return { child: start(nginx, ['-c', join(dir, 'nginx.conf'), '-p', dir]), dir };
}

function memoryKb(pid: number): { rssKb: number; peakRssKb: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return {
    rssKb: Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN),
    peakRssKb: Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? NaN),
  };
}

async function main(): Promise<void> {
  const wrk = process.env.BENCH_TOOL === 'autocannon' ? undefined : which('wrk');
  const nginx = which('nginx');
  const tool = wrk ? 'wrk' : 'autocannon';
  console.log(`natsgw bench: ${tool}, ${CONNECTIONS} connections, ${DURATION_S} s per run, ${ROUNDS} rounds, ${cpus().length} CPUs, node ${process.version}`);
  if (!wrk) console.log('  (wrk not installed: using autocannon, which runs in this process; install Debian\'s wrk for steadier figures)');
  if (!nginx) console.log('  (nginx not installed: skipping the nginx contender; install Debian\'s nginx to compare)');

  const contenders: Contender[] = [];
  let nats: NatsServer | undefined;
  let nginxDir: string | undefined;
  let gatewayPid = 0;
  let uwsNative = true;
  try {
    // (a) node:http
    const direct = start(process.execPath, [here('./node-server.js')]);
    const directPort = Number((await waitForLine(direct, /port (\d+)/, 'node:http server'))[1]);
    contenders.push({ key: 'direct', label: 'node:http direct', url: `http://127.0.0.1:${directPort}/hello` });

    // (b) nginx → node:http
    if (nginx) {
      const port = await freePort();
      const n = startNginx(nginx, directPort, port);
      nginxDir = n.dir;
      await new Promise((r) => setTimeout(r, 300));
      if (n.child.exitCode !== null) throw new Error(`nginx exited: ${readFileSync(join(n.dir, 'error.log'), 'utf8')}`);
      contenders.push({ key: 'nginx', label: 'nginx → node:http', url: `http://127.0.0.1:${port}/hello` });
    }

    // (c) gateway → NATS → SDK service
    nats = await startNatsServer();
    const service = start(process.execPath, [here('./service.js')], { NATS_URL: nats.url, SUBJECT: 'api.hello' });
    await waitForLine(service, /ready/, 'service');
    const gateway = start(process.execPath, [here('../../../gateway/bin/natsgw.js'), 'serve', '--nats', nats.url, '--subject', 'api', '--host', '127.0.0.1', '--port', '0', '--admin-port', '0', '--log-level', 'info', '--access-log', 'false']);
    let gwLog = '';
    gateway.stdout!.on('data', (d: Buffer) => (gwLog += d.toString()));
    const gwPort = Number((await waitForLine(gateway, /listening on http:\/\/127\.0\.0\.1:(\d+)/, 'gateway'))[1]);
    await waitForLine(gateway, /connected to NATS/, 'gateway NATS connection');
    uwsNative = !/NOT loaded/.test(gwLog);
    gatewayPid = gateway.pid!;
    contenders.push({ key: 'gateway', label: 'natsgw → NATS → service', url: `http://127.0.0.1:${gwPort}/hello` });

    // (d) gateway → HTTP override → the same node:http server as (a)
    const nc = await connect({ servers: nats.url });
    const kv = await openRoutesBucket(nc);
    await kv.put('api.proxied', JSON.stringify({ upstreams: [{ url: `http://127.0.0.1:${directPort}` }], stripPrefix: true }));
    await nc.close();
    for (let waited = 0; !gwLog.includes('override applied'); waited += 50) {
      if (waited > 10_000) throw new Error(`the gateway did not apply the override: ${gwLog.slice(-500)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    contenders.push({ key: 'override', label: 'natsgw → HTTP override', url: `http://127.0.0.1:${gwPort}/proxied/hello` });

    const measure = (url: string, seconds: number) => (wrk ? Promise.resolve(runWrk(wrk, url, seconds)) : runAutocannon(url, seconds));
    const rounds: Record<string, Measurement[]> = {};
    for (let round = 1; round <= ROUNDS; round++) {
      for (const c of contenders) {
        await measure(c.url, WARMUP_S);
        const m = await measure(c.url, DURATION_S);
        (rounds[c.key] ??= []).push(m);
        console.log(`  round ${round}  ${c.label.padEnd(26)} ${m.requestsPerSec.toFixed(0).padStart(7)} req/s  p50 ${m.p50Ms.toFixed(2)} ms  p99 ${m.p99Ms.toFixed(2)} ms${m.errors ? `  errors ${m.errors}` : ''}`);
      }
    }
    const mem = memoryKb(gatewayPid);

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
      uwsNative,
      results: Object.fromEntries(contenders.map((c) => [c.key, { label: c.label, best: best[c.key], rounds: rounds[c.key] }])),
      gatewayMemory: mem,
      ratios: { gatewayVsNginx: ratio('gateway', 'nginx'), gatewayVsDirect: ratio('gateway', 'direct'), overrideVsNginx: ratio('override', 'nginx') },
      target: { gatewayVsNginx: 1.0, overrideVsNginx: 0.8 },
    };

    console.log('\nbest of rounds');
    console.log('  contender                  req/s     p50 ms   p99 ms  errors');
    for (const c of contenders) {
      const m = best[c.key]!;
      console.log(`  ${c.label.padEnd(26)} ${m.requestsPerSec.toFixed(0).padStart(7)}  ${m.p50Ms.toFixed(2).padStart(8)} ${m.p99Ms.toFixed(2).padStart(8)}  ${m.errors}`);
    }
    console.log(`\n  gateway memory: RSS ${(mem.rssKb / 1024).toFixed(1)} MiB, peak ${(mem.peakRssKb / 1024).toFixed(1)} MiB${uwsNative ? '' : '  (uWS FALLBACK, not native!)'}`);
    if (result.ratios.gatewayVsNginx !== undefined) {
      const r = result.ratios.gatewayVsNginx;
      console.log(`  gateway / nginx→node:http  = ${r.toFixed(2)}×  (target ≥ 1.00×: ${r >= 1 ? 'met' : 'NOT met'})`);
    }
    console.log(`  gateway / node:http direct = ${result.ratios.gatewayVsDirect!.toFixed(2)}×`);
    if (result.ratios.overrideVsNginx !== undefined) {
      const r = result.ratios.overrideVsNginx;
      console.log(`  override / nginx→node:http = ${r.toFixed(2)}×  (target ≥ 0.80×: ${r >= 0.8 ? 'met' : 'NOT met'})`);
    }

    mkdirSync(RESULTS_DIR, { recursive: true });
    const file = join(RESULTS_DIR, `bench-${result.date.replace(/[:.]/g, '-')}.json`);
    writeFileSync(file, JSON.stringify(result, null, 2) + '\n');
    writeFileSync(join(RESULTS_DIR, 'latest.json'), JSON.stringify(result, null, 2) + '\n');
    console.log(`\n  written to ${file}`);
  } finally {
    for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 300));
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    await nats?.dispose();
    if (nginxDir) rmSync(nginxDir, { recursive: true, force: true });
  }
}

await main();
