import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { connect } from '@nats-io/transport-node';
import { request } from 'undici';
import { startNatsServer } from '@natsgw/devkit';
import { Backend, routesBucket } from './backends.js';
import { eventually, spawnGateway } from './helpers.js';

const MB = 1024 * 1024;
const peakRssMb = (pid: number) => Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;

test('proxy: a 100 MB download streams through with backpressure; gateway memory stays flat', async () => {
  const ns = await startNatsServer();
  // The backend streams 100 MB in 64 KiB chunks, honouring its own backpressure.
  const backend = new Backend('big', (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(100 * MB) });
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    let sent = 0;
    const pump = () => {
      while (sent < 100 * MB) {
        sent += chunk.length;
        if (!res.write(chunk)) return void res.once('drain', pump);
      }
      res.end();
    };
    pump();
  });
  await backend.start();
  let nc: Awaited<ReturnType<typeof connect>> | undefined;
  const gw = await spawnGateway(
    ['serve', '--nats', ns.url, '--host', '127.0.0.1', '--port', '0', '--admin-port', '0', '--log-level', 'info'],
    (out) => /listening on/.test(out) && out.includes('overrides: watching'),
  );
  const gateway = gw.child;
  const out = gw.output;
  try {
    const port = Number(/listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(out())![1]);
    nc = await connect({ servers: ns.url });
    const kv = await routesBucket(nc);
    await kv.put('api.files', JSON.stringify({ upstreams: [{ url: backend.url }] }));
    await eventually(() => out().includes('override applied'), 5000, 'route applied');
    // Warm up, then take the baseline.
    await (await request(`http://127.0.0.1:${port}/files/warm`, { method: 'HEAD' })).body.dump();
    const baseline = peakRssMb(gateway.pid!);

    // A client that reads more slowly than loopback could deliver, so the
    // gateway must pause the backend instead of buffering.
    const r = await request(`http://127.0.0.1:${port}/files/big.bin`);
    assert.equal(r.statusCode, 200);
    assert.equal(r.headers['content-length'], String(100 * MB));
    let received = 0;
    let sincePause = 0;
    const rssMb = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${gateway.pid}/status`, 'utf8'))![1]) / 1024;
    const samples: number[] = [];
    const sampler = setInterval(() => samples.push(rssMb()), 50);
    for await (const chunk of r.body as AsyncIterable<Buffer>) {
      received += chunk.length;
      sincePause += chunk.length;
      if (sincePause >= 4 * MB) {
        sincePause = 0;
        await new Promise((res) => setTimeout(res, 40));
      }
    }
    clearInterval(sampler);
    assert.equal(received, 100 * MB, 'every byte arrived');
    // Flat: the peak stays far below the 100 MiB that went through, and
    // memory does not trend upward as more bytes pass (GC churn levels off).
    const growth = peakRssMb(gateway.pid!) - baseline;
    assert.ok(growth < 64, `gateway peak memory grew by ${growth.toFixed(1)} MiB while streaming 100 MiB`);
    const quarter = Math.max(1, Math.floor(samples.length / 4));
    const early = Math.max(...samples.slice(0, quarter));
    const late = Math.max(...samples.slice(-quarter));
    assert.ok(late <= early + 16, `no upward trend: ${early.toFixed(0)} MiB early, ${late.toFixed(0)} MiB late`);
  } finally {
    await nc?.close();
    gateway.kill('SIGKILL');
    await backend.stop();
    await ns.dispose();
  }
});
