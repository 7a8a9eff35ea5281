/**
 * Protocol v2 end to end: streamed responses (SSE, large downloads),
 * streamed request bodies (large uploads), flow control both ways, and what
 * happens when either end goes away mid-stream. Real nats-server, real
 * Express apps, real HTTP clients.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { request } from 'undici';
import express from 'express';
import { startStack } from './helpers.js';

const MiB = 1024 * 1024;

test('streaming: smoke', async () => {
  const s = await startStack();
  try {
    const app = express();
    app.get('/s/sse', (req, res) => {
      res.setHeader('content-type', 'text/event-stream');
      res.flushHeaders();
      let i = 0;
      const t = setInterval(() => {
        res.write(`data: ${i++}\n\n`);
        if (i === 5) {
          clearInterval(t);
          res.end();
        }
      }, 20);
      req.on('close', () => clearInterval(t));
    });
    app.get('/s/big', (_req, res) => {
      res.setHeader('content-length', String(5 * MiB));
      const chunk = Buffer.alloc(64 * 1024, 7);
      let left = 80;
      const pump = (): void => {
        while (left > 0) {
          left--;
          if (!res.write(chunk)) return void res.once('drain', pump);
        }
        res.end();
      };
      pump();
    });
    app.post('/s/up', (req, res) => {
      const h = createHash('sha256');
      let n = 0;
      req.on('data', (c: Buffer) => {
        n += c.length;
        h.update(c);
      });
      req.on('end', () => res.json({ n, sha: h.digest('hex') }));
    });
    await s.serve(app, { nats: s.ns.url, subject: 'api.s' });
    const sse = await request(`${s.base}/s/sse`);
    assert.equal(sse.statusCode, 200);
    assert.equal(await sse.body.text(), [0, 1, 2, 3, 4].map((i) => `data: ${i}\n\n`).join(''));
    const big = await request(`${s.base}/s/big`);
    assert.equal(big.headers['content-length'], String(5 * MiB));
    const buf = Buffer.from(await big.body.arrayBuffer());
    assert.equal(buf.length, 5 * MiB);
    const body = Buffer.alloc(3 * MiB + 5, 3);
    const up = await request(`${s.base}/s/up`, { method: 'POST', body });
    assert.equal(up.statusCode, 200);
    assert.deepEqual(await up.body.json(), { n: body.length, sha: createHash('sha256').update(body).digest('hex') });
  } finally {
    await s.close();
  }
});
