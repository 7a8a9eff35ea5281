/**
 * A config updater (cf. Momus's ConfigUpdater): while traffic runs, it flips
 * /shop between a NATS service and an HTTP backend by writing and deleting
 * the override in the routes bucket, and shows that no request fails.
 *
 *   npm run example:flip            (FLIP_SECONDS=10 by default)
 */
import { createServer } from 'node:http';
import { connect } from '@nats-io/transport-node';
import { freePort, startNatsServer } from '@natsgw/devkit';
import { loadConfig, openRoutesBucket, startGateway } from '@natsgw/gateway';
import { serve } from '@natsgw/service-sdk';

const seconds = Number(process.env.FLIP_SECONDS ?? 10);
const quiet = { error() {}, warn() {}, info() {} };

const nats = await startNatsServer();
const natsService = await serve((_req, res) => res.end('nats'), { nats: nats.url, subject: 'api.shop', logger: quiet });
const http = createServer((_req, res) => res.end('http'));
await new Promise<void>((r) => http.listen(0, '127.0.0.1', () => r()));
const httpUrl = `http://127.0.0.1:${(http.address() as { port: number }).port}`;
const port = await freePort();
const gw = await startGateway(loadConfig({ flags: { nats: nats.url, port, host: '127.0.0.1', adminPort: 0, logLevel: 'warn', accessLog: false } }));
await gw.connected;
const nc = await connect({ servers: nats.url });
const kv = await openRoutesBucket(nc);

const counts = { nats: 0, http: 0, failed: 0 };
let running = true;
const workers = Array.from({ length: 8 }, async () => {
  while (running) {
    try {
      const r = await fetch(`http://127.0.0.1:${port}/shop/item`);
      const body = await r.text();
      if (r.status === 200 && (body === 'nats' || body === 'http')) counts[body]++;
      else counts.failed++;
    } catch {
      counts.failed++;
    }
  }
});

console.log(`flipping /shop between NATS and ${httpUrl} every 500 ms for ${seconds} s under load (8 clients)\n`);
let onHttp = false;
const started = Date.now();
let last = { ...counts };
while (Date.now() - started < seconds * 1000) {
  onHttp = !onHttp;
  if (onHttp) await kv.put('api.shop', JSON.stringify({ upstreams: [{ url: httpUrl }] }));
  else await kv.delete('api.shop');
  await new Promise((r) => setTimeout(r, 500));
  if (Math.floor((Date.now() - started) / 1000) !== Math.floor((Date.now() - started - 500) / 1000)) {
    console.log(
      `  ${((Date.now() - started) / 1000).toFixed(0).padStart(3)} s   nats ${String(counts.nats - last.nats).padStart(5)}   http ${String(counts.http - last.http).padStart(5)}   failed ${counts.failed - last.failed}`,
    );
    last = { ...counts };
  }
}
running = false;
await Promise.all(workers);
console.log(`\ntotal: ${counts.nats} answered by NATS, ${counts.http} by HTTP, ${counts.failed} failed`);

await nc.close();
await gw.close(1000);
await natsService.drain();
http.close();
await nats.dispose();
process.exit(counts.failed === 0 && counts.nats > 0 && counts.http > 0 ? 0 : 1);
