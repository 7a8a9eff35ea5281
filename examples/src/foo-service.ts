/**
 * Example service "foo": an ordinary Express 5 app, unmodified, mounted on
 * api.foo. Start several copies and they share the load; SIGTERM drains.
 *
 *   NATS_URL=nats://127.0.0.1:4222 node examples/dist/src/foo-service.js
 */
import { createHash } from 'node:crypto';
import express from 'express';
import { serve } from '@natsgw/service-sdk';

export function createFooApp(): express.Express {
  const app = express();
  app.use(express.json());
  app.get('/foo/hello', (req, res) => {
    res.json({ hello: req.query.name ?? 'world', from: 'foo', pid: process.pid });
  });
  app.get('/foo/users/:id', (req, res) => {
    res.json({ id: req.params.id, name: `user ${req.params.id}` });
  });
  app.post('/foo/echo', (req, res) => {
    res.status(201).json({ youSent: req.body as unknown });
  });
  // Server-sent events: one a second (n of them, default 10), each reaching
  // the client as it is written.
  app.get('/foo/clock', (req, res) => {
    const n = Math.min(Number(req.query.n ?? 10) || 10, 3600);
    res.setHeader('content-type', 'text/event-stream');
    res.setHeader('cache-control', 'no-cache');
    res.flushHeaders();
    let sent = 0;
    const tick = (): void => {
      res.write(`data: ${JSON.stringify({ time: new Date().toISOString(), tick: ++sent })}\n\n`);
      if (sent >= n) {
        clearInterval(timer);
        res.end();
      }
    };
    const timer = setInterval(tick, 1000);
    tick();
    req.on('close', () => clearInterval(timer));
  });
  // An upload of any size, read as a stream: its length and SHA-256.
  app.post('/foo/upload', (req, res) => {
    const hash = createHash('sha256');
    let bytes = 0;
    req.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      hash.update(chunk);
    });
    req.on('end', () => res.json({ bytes, sha256: hash.digest('hex') }));
  });
  // A large download (mib MiB of zeros, default 100), streamed with backpressure.
  app.get('/foo/download', (req, res) => {
    const mib = Math.min(Number(req.query.mib ?? 100) || 100, 10_240);
    res.setHeader('content-type', 'application/octet-stream');
    res.setHeader('content-length', String(mib * 1024 * 1024));
    const chunk = Buffer.alloc(64 * 1024);
    let left = mib * 16;
    const pump = (): void => {
      while (left > 0) {
        left--;
        if (!res.write(chunk)) return void res.once('drain', pump);
      }
      res.end();
    };
    res.on('close', () => (left = 0));
    pump();
  });
  return app;
}

const isMain = process.argv[1] !== undefined && import.meta.url === new URL(process.argv[1], 'file:').href;
if (isMain) {
  const service = await serve(createFooApp(), {
    nats: process.env.NATS_URL ?? 'nats://127.0.0.1:4222',
    subject: process.env.FOO_SUBJECT ?? 'api.foo',
    // How NATS service tooling (nats micro ls, natsgw services) lists it.
    name: 'foo',
    version: '1.0.0',
    description: 'Express example: hello, users, echo, server-sent events, downloads',
  });
  console.error(`foo: serving ${service.subject} (pid ${process.pid})`);
  const stop = () => void service.drain().then(() => process.exit(0));
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}
