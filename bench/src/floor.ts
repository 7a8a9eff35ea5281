/**
 * `npm run bench:floor`: how close can any uWebSockets.js proxy in Node get
 * to nginx on this machine? Measures, alternating, in the same run:
 *   nginx → node:http                     (the reference of `npm run bench`)
 *   floor proxy, undici  → node:http      (see floor-proxy.ts)
 *   floor proxy, raw net + llhttp → node:http
 *   natsgw HTTP override → node:http      (the product, all features on)
 * and for the NATS path:
 *   floor: uWS → NATS → raw responder     (floor-nats.ts, floor-responder.ts)
 *   natsgw → NATS → raw responder         (the gateway's own cost)
 *   natsgw → NATS → SDK service           (the product end to end)
 * and prints req/s, CPU µs per request of every process on the path, and
 * each contender's ratio to nginx. It answers "is the gap in natsgw's code
 * or in its parts?" — the gateway next to its floor is the cost of its
 * features; the undici floor next to the raw floor is the cost of the client;
 * the NATS floor next to nginx is what no gateway code can win back.
 *
 * Needs wrk and nginx (Debian packages). Environment: BENCH_DURATION (s, 4),
 * BENCH_CONNECTIONS (50), BENCH_ROUNDS (3), BENCH_PROFILE (1: the gateway
 * and the floors run under `--cpu-prof`, and each of their contenders gets
 * a breakdown of its CPU per request by owner, from the measured runs only:
 * profile-summary.ts. Profiling costs every process some 10 %, so compare
 * those figures with each other, not with a run without it).
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { freePorts, startNatsServer, type NatsServer } from '@natsgw/devkit';
import { summarizeProfile, type Window } from './profile-summary.js';
import { cpuTicks, cpuUsPerRequest, envCount, putProxiedOverride, runWrk, start, startGateway, startNginx, stopAll, waitForLine, which } from './tools.js';

const DURATION_S = envCount('BENCH_DURATION', 4);
const CONNECTIONS = envCount('BENCH_CONNECTIONS', 50);
const ROUNDS = envCount('BENCH_ROUNDS', 3);
const PROFILE = process.env.BENCH_PROFILE === '1';
const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));

interface Contender {
  label: string;
  url: string;
  /** The processes on the path, the proxying one first. */
  pids: Array<[role: string, pid: number]>;
  rps: number[];
  /** Per round, CPU µs per request of each process. */
  cpu: number[][];
  /** BENCH_PROFILE: the proxying process's profile directory, the measured windows and their requests. */
  profile?: { dir: string; windows: Window[]; requests: number };
}

const nowUs = () => Number(process.hrtime.bigint() / 1000n);

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
/** "gateway 21.0 + service 12.0 + nats-server 9.0 = 42.0" */
const describeCpu = (c: Contender, cpu: number[]) => `${c.pids.map(([role], i) => `${role} ${cpu[i]!.toFixed(1)}`).join(' + ')} = ${cpu.reduce((a, b) => a + b, 0).toFixed(1)}`;

async function main(): Promise<void> {
  const wrk = which('wrk');
  const nginx = which('nginx');
  if (!wrk || !nginx) {
    console.log('bench:floor needs wrk and nginx (Debian packages wrk, nginx); skipped.');
    return;
  }
  let nats: NatsServer | undefined;
  let nginxDir: string | undefined;
  try {
    const upstream = start(process.execPath, [here('./node-server.js')]);
    const upstreamPort = Number((await waitForLine(upstream, /port (\d+)/, 'node:http server'))[1]);
    const contenders: Contender[] = [];
    const profileRoot = PROFILE ? mkdtempSync(join(tmpdir(), 'natsgw-bench-profile-')) : undefined;
    const profiled: ChildProcess[] = [];
    /** Node flags that write a CPU profile of one process into `name`'s directory. */
    const profileFlags = (name: string) => (profileRoot === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${join(profileRoot, name)}`, '--import', here('./exit-on-signal.js')]);
    const add = (label: string, url: string, ...pids: Array<[string, number]>) => contenders.push({ label, url, pids, rps: [], cpu: [] });
    const profileLast = (dir: string) => {
      if (profileRoot !== undefined) contenders.at(-1)!.profile = { dir: join(profileRoot, dir), windows: [], requests: 0 };
    };
    const backend: [string, number] = ['node:http', upstream.pid!];

    const [nginxPort, nginxLogPort] = (await freePorts(2)) as [number, number];
    const n = await startNginx(nginx, upstreamPort, nginxPort, nginxLogPort);
    nginxDir = n.dir;
    add('nginx → node:http', `http://127.0.0.1:${nginxPort}/hello`, ['nginx', n.workerPid], backend);

    for (const client of ['undici', 'net']) {
      const p = start(process.execPath, [...profileFlags(`floor-${client}`), here('./floor-proxy.js'), String(upstreamPort)], { FLOOR_CLIENT: client });
      profiled.push(p);
      const port = Number((await waitForLine(p, /port (\d+)/, `floor proxy (${client})`))[1]);
      add(`floor: uWS + ${client === 'net' ? 'raw net' : 'undici'}`, `http://127.0.0.1:${port}/hello`, ['proxy', p.pid!], backend);
      profileLast(`floor-${client}`);
    }

    nats = await startNatsServer();
    const gateway = await startGateway(nats.url, profileRoot === undefined ? {} : { nodeArgs: ['--cpu-prof', `--cpu-prof-dir=${join(profileRoot, 'gateway')}`] });
    profiled.push(gateway.child);
    await putProxiedOverride(nats.url, upstreamPort, gateway);
    add('natsgw HTTP override', `http://127.0.0.1:${gateway.port}/proxied/hello`, ['gateway', gateway.child.pid!], backend);
    profileLast('gateway');

    // The NATS path: its floor, the gateway over a responder without the SDK, the product.
    const natsPid: [string, number] = ['nats-server', nats.pid];
    const responder = start(process.execPath, [here('./floor-responder.js')], { NATS_URL: nats.url, SUBJECT: 'api.raw' });
    await waitForLine(responder, /ready/, 'raw responder');
    const raw: [string, number] = ['responder', responder.pid!];
    const floorNats = start(process.execPath, [...profileFlags('floor-nats'), here('./floor-nats.js')], { NATS_URL: nats.url, SUBJECT: 'api.raw' });
    profiled.push(floorNats);
    const floorPort = Number((await waitForLine(floorNats, /port (\d+)/, 'NATS floor'))[1]);
    add('floor: uWS → NATS → raw', `http://127.0.0.1:${floorPort}/raw`, ['floor', floorNats.pid!], raw, natsPid);
    profileLast('floor-nats');
    add('natsgw → NATS → raw', `http://127.0.0.1:${gateway.port}/raw`, ['gateway', gateway.child.pid!], raw, natsPid);
    profileLast('gateway');
    const service = start(process.execPath, [here('./service.js')], { NATS_URL: nats.url, SUBJECT: 'api.hello' });
    await waitForLine(service, /ready/, 'service');
    add('natsgw → NATS → SDK', `http://127.0.0.1:${gateway.port}/hello`, ['gateway', gateway.child.pid!], ['service', service.pid!], natsPid);
    profileLast('gateway');

    console.log(`natsgw bench:floor: wrk, ${CONNECTIONS} connections, ${DURATION_S} s per run, ${ROUNDS} rounds`);
    for (let round = 1; round <= ROUNDS; round++) {
      for (const c of contenders) {
        runWrk(wrk, c.url, 2, CONNECTIONS); // warm-up (JIT, connections)
        const before = c.pids.map(([, pid]) => cpuTicks(pid));
        const from = nowUs();
        const m = runWrk(wrk, c.url, DURATION_S, CONNECTIONS);
        if (c.profile !== undefined) {
          c.profile.windows.push({ from, to: nowUs() });
          c.profile.requests += m.requestsPerSec * DURATION_S;
        }
        if (m.errors) throw new Error(`${c.label}: ${m.errors} errors`);
        const cpu = c.pids.map(([, pid], i) => cpuUsPerRequest(pid, before[i]!, m.requestsPerSec, DURATION_S));
        c.rps.push(m.requestsPerSec);
        c.cpu.push(cpu);
        const ratio = m.requestsPerSec / contenders[0]!.rps[round - 1]!;
        console.log(`  round ${round}  ${c.label.padEnd(24)} ${m.requestsPerSec.toFixed(0).padStart(7)} req/s  ${ratio.toFixed(2)}× nginx  CPU µs/req ${describeCpu(c, cpu)}`);
      }
    }
    console.log('\nmedian of rounds (ratio: to nginx in the same round)');
    for (const c of contenders) {
      const ratios = c.rps.map((r, i) => r / contenders[0]!.rps[i]!);
      const cpu = c.pids.map((_, i) => median(c.cpu.map((round) => round[i]!)));
      console.log(`  ${c.label.padEnd(24)} ${median(c.rps).toFixed(0).padStart(7)} req/s  ${median(ratios).toFixed(2)}×  CPU µs/req ${describeCpu(c, cpu)}`);
    }
    if (profileRoot !== undefined) await printProfiles(contenders, profiled);
  } finally {
    await stopAll();
    await nats?.dispose();
    if (nginxDir) rmSync(nginxDir, { recursive: true, force: true });
  }
}

/**
 * Stops the profiled processes so they write their profiles, then prints,
 * for each profiled contender, its proxying process's CPU per request by
 * owner (and the costliest functions of natsgw's contenders).
 */
async function printProfiles(contenders: Contender[], processes: ChildProcess[]): Promise<void> {
  await Promise.all(
    processes.map(
      (p) =>
        new Promise<void>((resolve) => {
          if (p.exitCode !== null) return resolve();
          p.once('exit', () => resolve());
          p.kill('SIGINT');
        }),
    ),
  );
  console.log('\nwhere the proxying process spends its CPU per request (from its --cpu-prof profile, measured runs only; natives charged to their callers)');
  for (const c of contenders) {
    if (c.profile === undefined) continue;
    const file = readdirSync(c.profile.dir).find((f) => f.endsWith('.cpuprofile'));
    if (file === undefined) {
      console.log(`  ${c.label}: no profile written`);
      continue;
    }
    const s = summarizeProfile(join(c.profile.dir, file), c.profile.windows, 8);
    const perRequest = (us: number) => (us / c.profile!.requests).toFixed(1);
    console.log(`  ${c.label.padEnd(24)} ${perRequest(s.busyUs)} µs: ${s.owners.map(([owner, us]) => `${owner} ${perRequest(us)}`).join(', ')}`);
    if (c.label.startsWith('natsgw')) for (const [fn, us] of s.top) console.log(`      ${perRequest(us).padStart(6)} µs  ${fn}`);
  }
  console.log(`  (profiles kept in ${dirname(contenders.find((c) => c.profile)!.profile!.dir)})`);
}

await main();
