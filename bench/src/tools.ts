/** What the bench scripts share: finding tools, starting processes, nginx, wrk, CPU accounting. */
import { generateKeyPairSync, sign } from 'node:crypto';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { connect } from '@nats-io/transport-node';
import { openRoutesBucket } from '@natsgw/gateway';

/** A positive (or, with `allowZero`, non-negative) whole number from the environment, or `fallback`; anything else stops the bench with exit code 2. */
export function envCount(name: string, fallback: number, allowZero = false): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  if (!/^[1-9]\d*$/.test(raw) && !(allowZero && raw === '0')) {
    process.stderr.write(`bench: ${name} must be a ${allowZero ? 'non-negative' : 'positive'} whole number (got ${JSON.stringify(raw)})\n`);
    process.exit(2);
  }
  return Number(raw);
}

export function which(name: string): string | undefined {
  for (const dir of [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/usr/local/sbin']) {
    if (dir && existsSync(join(dir, name))) return join(dir, name);
  }
  return undefined;
}

export interface Measurement {
  requestsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  /** CPU time (user + system) the proxying process spent per request, in µs. */
  proxyCpuUsPerReq?: number;
  /** CPU µs per request of every process on the contender's path, by role (gateway, service, nats-server, nginx, node:http). */
  cpuUsPerReq?: Record<string, number>;
}

/**
 * CPU time of a process in clock ticks (utime + stime, /proc/PID/stat). The
 * VM this runs on has steal time that swings req/s by 15–30 % between rounds;
 * CPU per request barely moves with it, so it says more about the code.
 */
export function cpuTicks(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return Number(fields[11]) + Number(fields[12]);
}
const TICKS_PER_S = 100; // USER_HZ on Linux

/** CPU µs per request of `pid` over a run of `seconds` at `requestsPerSec`, given cpuTicks(pid) before it. */
export function cpuUsPerRequest(pid: number, ticksBefore: number, requestsPerSec: number, seconds: number): number {
  return ((cpuTicks(pid) - ticksBefore) / TICKS_PER_S / (requestsPerSec * seconds)) * 1e6;
}

const children: ChildProcess[] = [];
export function start(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): ChildProcess {
  const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  return child;
}
export function waitForLine(child: ChildProcess, pattern: RegExp, what: string, timeoutMs = 15_000): Promise<RegExpExecArray> {
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
    setTimeout(() => reject(new Error(`${what} did not start: ${seen.slice(-500)}`)), timeoutMs).unref();
  });
}

function toMs(value: string): number {
  const m = /^([\d.]+)(us|ms|s)$/.exec(value.trim());
  if (!m) return NaN;
  const n = Number(m[1]);
  return m[2] === 'us' ? n / 1000 : m[2] === 's' ? n * 1000 : n;
}

export function runWrk(wrk: string, url: string, seconds: number, connections: number, headers: Record<string, string> = {}): Measurement {
  const h = Object.entries(headers).flatMap(([k, v]) => ['-H', `${k}: ${v}`]);
  const r = spawnSync(wrk, ['-t1', `-c${connections}`, `-d${seconds}s`, '--latency', ...h, url], { encoding: 'utf8' });
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

export async function runAutocannon(url: string, seconds: number, connections: number, headers: Record<string, string> = {}): Promise<Measurement> {
  const r = await autocannon({ url, connections, duration: seconds, headers });
  return { requestsPerSec: r.requests.average, p50Ms: r.latency.p50, p99Ms: r.latency.p99, errors: r.non2xx + r.errors + r.timeouts };
}

/**
 * nginx (1 worker) proxying 127.0.0.1:port to the upstream; `workerPid` is
 * the process doing the work. `logPort` is the same proxy with an access log
 * (the combined format to a file, buffered 64 KiB, flushed every second:
 * what a production nginx does).
 */
export async function startNginx(nginx: string, upstreamPort: number, port: number, logPort: number): Promise<{ child: ChildProcess; dir: string; workerPid: number }> {
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
    listen 127.0.0.1:${logPort};
    access_log ${dir}/access.log combined buffer=64k flush=1s;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
    # The large-body contender: streamed both ways, as natsgw streams.
    location /big/ {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      client_max_body_size 0;
      proxy_request_buffering off;
      proxy_buffering off;
    }
  }
}`;
  writeFileSync(join(dir, 'nginx.conf'), conf);
  const child = start(nginx, ['-c', join(dir, 'nginx.conf'), '-p', dir]);
  await new Promise((r) => setTimeout(r, 300));
  if (child.exitCode !== null) throw new Error(`nginx exited: ${readFileSync(join(dir, 'error.log'), 'utf8')}`);
  return { child, dir, workerPid: nginxWorkerPid(child) };
}

/** A process's RSS, peak RSS, and the RSS split into anonymous memory (heap, malloc, stacks) and file-backed pages (the node binary, shared libraries). */
export function memoryKb(pid: number): { rssKb: number; peakRssKb: number; anonKb: number; fileKb: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return {
    rssKb: Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN),
    peakRssKb: Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? NaN),
    anonKb: Number(/RssAnon:\s+(\d+)/.exec(status)?.[1] ?? NaN),
    fileKb: Number(/RssFile:\s+(\d+)/.exec(status)?.[1] ?? NaN),
  };
}

/** Stops every process started with start(): SIGTERM, then SIGKILL for those still running. */
export async function stopAll(): Promise<void> {
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
  await new Promise((r) => setTimeout(r, 300));
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
}

/** The pid of nginx's one worker (the master only supervises), once it has started. */
function nginxWorkerPid(master: ChildProcess): number {
  const kids = readFileSync(`/proc/${master.pid}/task/${master.pid}/children`, 'utf8').trim();
  return Number(kids.split(/\s+/)[0]) || master.pid!;
}

export interface BenchGateway {
  child: ChildProcess;
  port: number;
  /** Everything the gateway has logged so far. */
  log(): string;
}

export interface GatewayRun {
  /** Another built clone (BENCH_COMPARE) instead of this checkout. */
  checkout?: string;
  /** Log one line per request, to `logFile` (default: no access log, like nginx's `access_log off`). */
  accessLog?: boolean;
  /** Where stdout goes; the log is kept in memory when absent. */
  logFile?: string;
  workers?: number;
  /** The routes bucket (default: the gateway's default bucket). */
  routesBucket?: string;
  /** Node flags (e.g. --cpu-prof, which NODE_OPTIONS refuses): then the bin runs as `node <its shebang's flags> <these> natsgw.js`. */
  nodeArgs?: string[];
}

/**
 * Starts `natsgw serve` (root subject `api`) and waits until it listens. The
 * bin runs as users run it, by its shebang (its V8 flags included), not as
 * `node natsgw.js`.
 */
export async function startGateway(natsUrl: string, run: GatewayRun = {}): Promise<BenchGateway> {
  const bin = run.checkout === undefined ? fileURLToPath(new URL('../../../gateway/bin/natsgw.js', import.meta.url)) : join(run.checkout, 'gateway', 'bin', 'natsgw.js');
  const args = [
    'serve',
    '--nats',
    natsUrl,
    '--subject',
    'api',
    '--host',
    '127.0.0.1',
    '--port',
    '0',
    '--admin-port',
    '0',
    '--log-level',
    'info',
    '--log-format',
    'json',
    '--access-log',
    String(run.accessLog === true),
  ];
  if (run.workers !== undefined) args.push('--workers', String(run.workers));
  if (run.routesBucket !== undefined) args.push('--routes-bucket', run.routesBucket);
  const logFd = run.logFile === undefined ? undefined : openSync(run.logFile, 'w');
  const child =
    run.nodeArgs === undefined
      ? spawn(bin, args, { env: process.env, stdio: ['ignore', logFd ?? 'pipe', 'pipe'] })
      : spawn(process.execPath, [...shebangFlags(bin), ...run.nodeArgs, bin, ...args], { env: process.env, stdio: ['ignore', logFd ?? 'pipe', 'pipe'] });
  children.push(child);
  if (logFd !== undefined) closeSync(logFd);
  let log = '';
  child.stdout?.on('data', (d: Buffer) => (log += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  const read = () => (run.logFile === undefined ? log : readFileSync(run.logFile, 'utf8').slice(0, 1 << 20) + log);
  const gateway = { child, port: 0, log: read };
  await waitForLog(gateway, 'listening on http://127.0.0.1:', 'listen');
  gateway.port = Number(/listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(read())![1]);
  return gateway;
}

/** The node flags in a script's `#!/usr/bin/env -S node …` line. */
export function shebangFlags(script: string): string[] {
  const tokens = readFileSync(script, 'utf8').split('\n', 1)[0]!.split(' ');
  const node = tokens.findIndex((t) => t === 'node' || t.endsWith('/node'));
  return node === -1 ? [] : tokens.slice(node + 1).filter((t) => t.startsWith('-'));
}

/** Waits until the gateway has logged `text` (at most 10 s). */
export async function waitForLog(gateway: BenchGateway, text: string, what: string): Promise<void> {
  for (let waited = 0; !gateway.log().includes(text); waited += 50) {
    if (waited > 10_000) throw new Error(`the gateway did not ${what}: ${gateway.log().slice(-500)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Puts the override `api.proxied` → upstreamPort (prefix stripped) and waits until the gateway applied it. */
export async function putProxiedOverride(natsUrl: string, upstreamPort: number, gateway: BenchGateway): Promise<void> {
  const nc = await connect({ servers: natsUrl });
  const kv = await openRoutesBucket(nc);
  await kv.put('api.proxied', JSON.stringify({ upstreams: [{ url: `http://127.0.0.1:${upstreamPort}` }], stripPrefix: true }));
  await nc.close();
  await waitForLog(gateway, 'override applied', 'apply the override');
}

/**
 * The policy contender's route: CORS, a rate limit (by client, high enough
 * never to refuse) and a JWT (ES256) on api.hello.p, which the bench service
 * answers like api.hello; with the headers a browser client would send.
 * The token is made here with node:crypto (a JWS is three base64url parts).
 */
export async function putPolicyRoute(natsUrl: string, gateway: BenchGateway): Promise<Record<string, string>> {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const signed = `${b64({ alg: 'ES256', kid: 'bench', typ: 'JWT' })}.${b64({ sub: 'bench', iss: 'https://issuer.bench', aud: 'natsgw', exp: Math.floor(Date.now() / 1000) + 3600 })}`;
  const token = `${signed}.${sign('sha256', Buffer.from(signed), { key: privateKey, dsaEncoding: 'ieee-p1363' }).toString('base64url')}`;
  const policy = {
    cors: { origins: ['https://app.example.com'] },
    rateLimit: { rate: 1_000_000, burst: 1_000_000, key: 'client' },
    auth: { jwt: { keys: [{ ...publicKey.export({ format: 'jwk' }), kid: 'bench', alg: 'ES256' }], algorithms: ['ES256'], issuer: 'https://issuer.bench', audience: 'natsgw' } },
  };
  const nc = await connect({ servers: natsUrl });
  const kv = await openRoutesBucket(nc);
  await kv.put('api.hello.p', JSON.stringify({ policy }));
  await nc.close();
  await waitForLog(gateway, 'override applied', 'apply the policy');
  return { origin: 'https://app.example.com', authorization: `Bearer ${token}` };
}
