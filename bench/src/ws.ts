/**
 * `npm run bench:ws`: WebSockets through natsgw against a plain `ws` server
 * in Node doing the same work, in the same run (ws-servers.ts):
 *   - echo: BENCH_WS_CONNECTIONS (default 50) connections each sending a
 *     32-byte message and waiting for its echo, for BENCH_DURATION seconds
 *     (default 5), BENCH_ROUNDS rounds (default 3) alternating contenders;
 *     round trips per second, and CPU µs per round trip of every process on
 *     the path (natsgw: gateway, service, nats-server);
 *   - fan-out: BENCH_WS_FANOUT connections (default 1000) in one room, then
 *     BENCH_WS_MESSAGES (default 200) broadcasts of 32 bytes, each one
 *     publish (natsgw: one NATS message on the room's topic; plain: one
 *     message to the server, which sends it to every member); deliveries
 *     per second from first to last, and CPU µs per delivery.
 * The load generator is one Node process (ws-load.ts) for both contenders.
 * Prints the ratios natsgw / plain; writes bench/results/ws.json. A figure,
 * not a test.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { ChildProcess } from 'node:child_process';
import { connect } from '@nats-io/transport-node';
import WebSocket from 'ws';
import { freePorts, startNatsServer } from '@natsgw/devkit';
import { cpuTicks, envCount, start, startGateway, stopAll, waitForLine } from './tools.js';

const DURATION_S = envCount('BENCH_DURATION', 5);
const ROUNDS = envCount('BENCH_ROUNDS', 3);
const CONNECTIONS = envCount('BENCH_WS_CONNECTIONS', 50);
const FANOUT = envCount('BENCH_WS_FANOUT', 1000);
const MESSAGES = envCount('BENCH_WS_MESSAGES', 200);
const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const TICK_US = 10_000; // USER_HZ 100

interface Proc {
  name: string;
  pid: number;
}

async function runLoad(args: string[]): Promise<{ child: ChildProcess; result: Promise<Record<string, number>> }> {
  const child = start(process.execPath, [here('./ws-load.js'), ...args]);
  let out = '';
  child.stderr!.on('data', (d: Buffer) => process.stderr.write(`  load: ${d}`));
  const result = new Promise<Record<string, number>>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const line = out.split('\n').find((l) => l.startsWith('{'));
      if (line !== undefined) resolve(JSON.parse(line) as Record<string, number>);
    });
    child.once('exit', (code) => reject(new Error(`load generator exited with ${code}: ${out}`)));
  });
  return { child, result };
}

function cpuOf(procs: Proc[], before: number[], per: number): Record<string, number> {
  return Object.fromEntries(procs.map((p, i) => [p.name, Math.round((((cpuTicks(p.pid) - before[i]!) * TICK_US) / per) * 100) / 100]));
}

const nats = await startNatsServer({ jetstream: true });
const gateway = await startGateway(nats.url, { accessLog: false });
const sdk = start(process.execPath, [here('./ws-servers.js'), 'sdk'], { NATS_URL: nats.url });
await waitForLine(sdk, /ready/, 'the SDK service');
const [plainPort] = (await freePorts(1)) as [number];
const plain = start(process.execPath, [here('./ws-servers.js'), 'plain', String(plainPort)]);
await waitForLine(plain, /ready/, 'the plain ws server');

const contenders = [
  { name: 'plain ws (Node)', base: `ws://127.0.0.1:${plainPort}`, procs: [{ name: 'ws server', pid: plain.pid! }] },
  {
    name: 'natsgw → NATS → SDK',
    base: `ws://127.0.0.1:${gateway.port}`,
    procs: [
      { name: 'gateway', pid: gateway.child.pid! },
      { name: 'service', pid: sdk.pid! },
      { name: 'nats-server', pid: nats.pid },
    ],
  },
];

console.log(`bench:ws — ${cpus().length} cores, echo: ${CONNECTIONS} connections × ${DURATION_S} s × ${ROUNDS} rounds; fan-out: ${MESSAGES} broadcasts to ${FANOUT} connections`);
const echo = new Map<string, Array<{ perSecond: number; cpuUs: Record<string, number> }>>();
for (let round = 0; round < ROUNDS; round++) {
  for (const c of round % 2 === 0 ? contenders : [...contenders].reverse()) {
    const before = c.procs.map((p) => cpuTicks(p.pid));
    const { result } = await runLoad(['echo', `${c.base}/ws/echo`, String(CONNECTIONS), String(DURATION_S)]);
    const r = await result;
    const cpuUs = cpuOf(c.procs, before, r.roundTrips!);
    const perSecond = Math.round(r.roundTrips! / r.seconds!);
    (echo.get(c.name) ?? echo.set(c.name, []).get(c.name)!).push({ perSecond, cpuUs });
    console.log(`  echo round ${round + 1} ${c.name.padEnd(22)} ${String(perSecond).padStart(7)} round trips/s  CPU µs/round trip ${JSON.stringify(cpuUs)}`);
  }
}

const nc = await connect({ servers: nats.url });
const payload = Buffer.alloc(32, 0x62);
const fanout: Record<string, { deliveriesPerSecond: number; ms: number; cpuUs: Record<string, number> }> = {};
for (const c of contenders) {
  const { child, result } = await runLoad(['fanout', `${c.base}/ws/room`, String(FANOUT), String(MESSAGES)]);
  await waitForLine(child, /ready/, `${FANOUT} connections in the room`, 60_000);
  const before = c.procs.map((p) => cpuTicks(p.pid));
  if (c.procs.length === 1) {
    const control = new WebSocket(`${c.base}/ws/control`, { perMessageDeflate: false });
    await new Promise((r) => control.once('open', r));
    for (let i = 0; i < MESSAGES; i++) control.send(payload);
    await result;
    control.terminate();
  } else {
    for (let i = 0; i < MESSAGES; i++) nc.publish('_NATSGW.topic.api.ws.room', payload);
    await nc.flush();
  }
  const r = await result;
  const cpuUs = cpuOf(c.procs, before, r.deliveries!);
  fanout[c.name] = { deliveriesPerSecond: Math.round(r.deliveries! / (r.ms! / 1000)), ms: Math.round(r.ms!), cpuUs };
  console.log(
    `  fan-out ${c.name.padEnd(22)} ${String(fanout[c.name]!.deliveriesPerSecond).padStart(8)} deliveries/s (${r.deliveries} in ${Math.round(r.ms!)} ms)  CPU µs/delivery ${JSON.stringify(cpuUs)}`,
  );
}
await nc.close();

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const [p, g] = contenders.map((c) => c.name) as [string, string];
const echoRatio = median(echo.get(g)!.map((x) => x.perSecond)) / median(echo.get(p)!.map((x) => x.perSecond));
const fanRatio = fanout[g]!.deliveriesPerSecond / fanout[p]!.deliveriesPerSecond;
const sum = (o: Record<string, number>) => Object.values(o).reduce((a, b) => a + b, 0);
console.log(`
                         echo rt/s (median)   CPU µs/rt (all procs)   fan-out deliveries/s   CPU µs/delivery
  ${p.padEnd(22)} ${String(median(echo.get(p)!.map((x) => x.perSecond))).padStart(12)} ${sum(echo.get(p)!.at(-1)!.cpuUs).toFixed(1).padStart(22)} ${String(fanout[p]!.deliveriesPerSecond).padStart(22)} ${sum(fanout[p]!.cpuUs).toFixed(2).padStart(17)}
  ${g.padEnd(22)} ${String(median(echo.get(g)!.map((x) => x.perSecond))).padStart(12)} ${sum(echo.get(g)!.at(-1)!.cpuUs).toFixed(1).padStart(22)} ${String(fanout[g]!.deliveriesPerSecond).padStart(22)} ${sum(fanout[g]!.cpuUs).toFixed(2).padStart(17)}
  natsgw / plain: echo ${echoRatio.toFixed(2)}×, fan-out ${fanRatio.toFixed(2)}×
`);
mkdirSync(here('../../results'), { recursive: true });
writeFileSync(
  here('../../results/ws.json'),
  JSON.stringify(
    {
      at: new Date().toISOString(),
      cores: cpus().length,
      connections: CONNECTIONS,
      seconds: DURATION_S,
      fanout: FANOUT,
      messages: MESSAGES,
      echo: Object.fromEntries(echo),
      fanoutResults: fanout,
      ratios: { echo: echoRatio, fanout: fanRatio },
    },
    null,
    2,
  ),
);
await stopAll();
await nats.dispose();
process.exit(0);
