/**
 * `npm run bench:floor`: how close can any uWebSockets.js proxy in Node get
 * to nginx on this machine? Measures, alternating, in the same run:
 *   nginx → node:http                     (the reference of `npm run bench`)
 *   floor proxy, undici  → node:http      (see floor-proxy.ts)
 *   floor proxy, raw net + llhttp → node:http
 *   natsgw HTTP override → node:http      (the product, all features on)
 * and prints req/s, the proxying process's CPU µs per request, and each
 * contender's ratio to nginx. It answers "is the gap in natsgw's code or in
 * its parts?" — the gateway next to the undici floor is the cost of its
 * features; the undici floor next to the raw floor is the cost of the client.
 *
 * Needs wrk and nginx (Debian packages). Environment: BENCH_DURATION (s, 4),
 * BENCH_CONNECTIONS (50), BENCH_ROUNDS (3).
 */
import { rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { freePort, startNatsServer, type NatsServer } from '@natsgw/devkit';
import { cpuTicks, cpuUsPerRequest, envCount, putProxiedOverride, runWrk, start, startGateway, startNginx, stopAll, waitForLine, which } from './tools.js';

const DURATION_S = envCount('BENCH_DURATION', 4);
const CONNECTIONS = envCount('BENCH_CONNECTIONS', 50);
const ROUNDS = envCount('BENCH_ROUNDS', 3);
const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));

interface Contender {
  label: string;
  url: string;
  pid: number;
  rps: number[];
  cpu: number[];
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

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
    const add = (label: string, url: string, pid: number) => contenders.push({ label, url, pid, rps: [], cpu: [] });

    const nginxPort = await freePort();
    const n = await startNginx(nginx, upstreamPort, nginxPort, await freePort());
    nginxDir = n.dir;
    add('nginx → node:http', `http://127.0.0.1:${nginxPort}/hello`, n.workerPid);

    for (const client of ['undici', 'net']) {
      const p = start(process.execPath, [here('./floor-proxy.js'), String(upstreamPort)], { FLOOR_CLIENT: client });
      const port = Number((await waitForLine(p, /port (\d+)/, `floor proxy (${client})`))[1]);
      add(`floor: uWS + ${client === 'net' ? 'raw net' : 'undici'}`, `http://127.0.0.1:${port}/hello`, p.pid!);
    }

    nats = await startNatsServer();
    const gateway = await startGateway(nats.url);
    await putProxiedOverride(nats.url, upstreamPort, gateway);
    add('natsgw HTTP override', `http://127.0.0.1:${gateway.port}/proxied/hello`, gateway.child.pid!);

    console.log(`natsgw bench:floor: wrk, ${CONNECTIONS} connections, ${DURATION_S} s per run, ${ROUNDS} rounds`);
    for (let round = 1; round <= ROUNDS; round++) {
      for (const c of contenders) {
        runWrk(wrk, c.url, 2, CONNECTIONS); // warm-up (JIT, connections)
        const before = cpuTicks(c.pid);
        const m = runWrk(wrk, c.url, DURATION_S, CONNECTIONS);
        if (m.errors) throw new Error(`${c.label}: ${m.errors} errors`);
        const cpu = cpuUsPerRequest(c.pid, before, m.requestsPerSec, DURATION_S);
        c.rps.push(m.requestsPerSec);
        c.cpu.push(cpu);
        const ratio = m.requestsPerSec / contenders[0]!.rps[round - 1]!;
        console.log(`  round ${round}  ${c.label.padEnd(24)} ${m.requestsPerSec.toFixed(0).padStart(7)} req/s  ${ratio.toFixed(2)}× nginx  CPU ${cpu.toFixed(1)} µs/req`);
      }
    }
    console.log('\nmedian of rounds (ratio: to nginx in the same round)');
    for (const c of contenders) {
      const ratios = c.rps.map((r, i) => r / contenders[0]!.rps[i]!);
      console.log(`  ${c.label.padEnd(24)} ${median(c.rps).toFixed(0).padStart(7)} req/s  ${median(ratios).toFixed(2)}×  CPU ${median(c.cpu).toFixed(1)} µs/req`);
    }
  } finally {
    await stopAll();
    await nats?.dispose();
    if (nginxDir) rmSync(nginxDir, { recursive: true, force: true });
  }
}

await main();
