/**
 * Example service "foo": an ordinary Express 5 app, unmodified, mounted on
 * api.foo. Start several copies and they share the load; SIGTERM drains.
 *
 *   NATS_URL=nats://127.0.0.1:4222 node examples/dist/src/foo-service.js
 */
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
  return app;
}

const isMain = process.argv[1] !== undefined && import.meta.url === new URL(process.argv[1], 'file:').href;
if (isMain) {
  const service = await serve(createFooApp(), { nats: process.env.NATS_URL ?? 'nats://127.0.0.1:4222', subject: process.env.FOO_SUBJECT ?? 'api.foo' });
  console.error(`foo: serving ${service.subject} (pid ${process.pid})`);
  const stop = () => void service.drain().then(() => process.exit(0));
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}
