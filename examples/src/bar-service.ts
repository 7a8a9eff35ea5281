/**
 * Example service "bar": an ordinary Fastify 5 app, unmodified, mounted on
 * api.bar through `app.routing` (Fastify's plain (req, res) entry point).
 *
 *   NATS_URL=nats://127.0.0.1:4222 node examples/dist/src/bar-service.js
 */
import Fastify, { type FastifyInstance } from 'fastify';
import { serve } from '@natsgw/service-sdk';

export function createBarApp(): FastifyInstance {
  const app = Fastify();
  app.get('/bar/time', async () => ({ now: new Date().toISOString(), from: 'bar' }));
  app.post<{ Body: { numbers?: unknown } }>('/bar/sum', async (req, reply) => {
    const numbers = req.body?.numbers;
    if (!Array.isArray(numbers) || !numbers.every((n) => typeof n === 'number')) {
      return reply.code(400).send({ error: 'send {"numbers": [1, 2, 3]}' });
    }
    return { sum: numbers.reduce((a: number, b: number) => a + b, 0) };
  });
  return app;
}

const isMain = process.argv[1] !== undefined && import.meta.url === new URL(process.argv[1], 'file:').href;
if (isMain) {
  const app = createBarApp();
  await app.ready();
  const service = await serve((req, res) => app.routing(req, res), {
    nats: process.env.NATS_URL ?? 'nats://127.0.0.1:4222',
    subject: process.env.BAR_SUBJECT ?? 'api.bar',
    name: 'bar',
    version: '1.0.0',
    description: 'Fastify example: time, sum',
  });
  console.error(`bar: serving ${service.subject} (pid ${process.pid})`);
  const stop = () => void service.drain().then(() => process.exit(0));
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}
