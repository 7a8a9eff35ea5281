/**
 * `npm run demo`: nats-server (JetStream, temporary folder), the example
 * services foo (Express), bar (Fastify) and chat (WebSockets) on NATS, two "legacy" HTTP
 * servers behind an override (api.legacy, round-robin with health checks),
 * and a gateway on :8080 — each its own process, as in production. Prints a
 * few curl lines; Ctrl-C stops everything.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { connect } from '@nats-io/transport-node';
import { openRoutesBucket } from '@natsgw/gateway';
import { freePort, startNatsServer } from '@natsgw/devkit';

const port = Number(process.env.PORT ?? 8080);
const adminPort = Number(process.env.ADMIN_PORT ?? 8081);
const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));

const nats = await startNatsServer({ detached: true });
console.log(`nats-server  ${nats.url} (JetStream in ${nats.storeDir})`);

const children: ChildProcess[] = [];
function start(name: string, script: string, args: string[] = [], env: Record<string, string> = {}): ChildProcess {
  // Own process group: Ctrl-C reaches only the demo, which stops the others in order.
  const child = spawn(process.execPath, [script, ...args], {
    env: { ...process.env, NATS_URL: nats.url, ...env },
    stdio: ['ignore', 'inherit', 'inherit'],
    detached: true,
  });
  child.on('exit', (code, signal) => {
    if (!stopping) {
      console.error(`${name} exited (${signal ?? code}); stopping the demo`);
      void stop(1);
    }
  });
  children.push(child);
  return child;
}

let stopping = false;
async function stop(code = 0): Promise<void> {
  if (stopping) return;
  stopping = true;
  console.log('\nstopping: gateway and services drain, then nats-server');
  await Promise.all(
    children.map(
      (c) =>
        new Promise<void>((resolve) => {
          if (c.exitCode !== null || c.signalCode !== null) return resolve();
          c.once('exit', () => resolve());
          c.kill('SIGTERM');
        }),
    ),
  );
  await nats.dispose();
  process.exit(code);
}
process.on('SIGINT', () => void stop());
process.on('SIGTERM', () => void stop());
// Whatever ends the demo, leave no process behind.
process.on('exit', () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

start('foo', here('./foo-service.js'));
start('bar', here('./bar-service.js'));
start('chat', here('./chat-service.js'));
const legacyPorts = [await freePort(), await freePort()];
for (const [i, p] of legacyPorts.entries()) start(`legacy-${i + 1}`, here('./legacy-server.js'), [], { PORT: String(p), NAME: `legacy-${i + 1}` });

// The override, as `natsgw routes put api.legacy --upstream … --health-path /health` would write it.
{
  const nc = await connect({ servers: nats.url });
  const kv = await openRoutesBucket(nc);
  await kv.put(
    'api.legacy',
    JSON.stringify({
      upstreams: legacyPorts.map((p) => ({ url: `http://127.0.0.1:${p}` })),
      balancing: 'round-robin',
      healthCheck: { path: '/health', intervalMs: 2000 },
      stripPrefix: true,
    }),
  );
  await nc.close();
}
start('gateway', here('../../../gateway/bin/natsgw.js'), ['serve', '--nats', nats.url, '--subject', 'api', '--port', String(port), '--admin-port', String(adminPort), '--log-level', 'warn']);

// Ready when the gateway answers through both services.
const base = `http://127.0.0.1:${port}`;
const until = Date.now() + 20_000;
for (;;) {
  try {
    const [a, b, c, d] = await Promise.all([fetch(`${base}/foo/hello`), fetch(`${base}/bar/time`), fetch(`${base}/legacy/orders`), fetch(`${base}/chat/rooms`)]);
    if (a.status === 200 && b.status === 200 && c.status === 200 && d.status === 200) break;
  } catch {
    // not listening yet
  }
  if (Date.now() > until) {
    console.error('the demo did not come up within 20 s');
    await stop(1);
  }
  await new Promise((r) => setTimeout(r, 100));
}

console.log(`
natsgw is up on ${base} (root subject api). Try:

  curl -s '${base}/foo/hello?name=you'          # Express service on api.foo
  curl -s ${base}/foo/users/42
  curl -s -X POST ${base}/foo/echo -H 'content-type: application/json' -d '{"hi":1}'
  curl -sN '${base}/foo/clock?n=3'               # server-sent events: one a second, as written
  curl -s -o /dev/null -w '%{size_download} bytes\\n' '${base}/foo/download?mib=200'   # 200 MiB, streamed
  curl -s ${base}/bar/time                      # Fastify service on api.bar
  curl -s -X POST ${base}/bar/sum -H 'content-type: application/json' -d '{"numbers":[1,2,3]}'
  curl -s ${base}/legacy/orders/7                # HTTP override: two legacy servers, round-robin
  curl -si ${base}/nobody/home                  # 503: no service on api.nobody.home

WebSockets: a chat room on api.chat (open ${base}/chat/?room=lobby in a browser, or):
  echo hello | node examples/dist/src/chat-client.js ws://127.0.0.1:${port}/chat/lobby

Overrides live in the KV bucket natsgw-routes; try
  npx natsgw routes ls --nats ${nats.url}
  npx natsgw status --nats ${nats.url}
The services are NATS micro services too (nats micro ls sees them):
  npx natsgw services --nats ${nats.url}

Ctrl-C stops everything.`);
