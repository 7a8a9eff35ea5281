import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import express, { type NextFunction, type Request, type Response } from 'express';
import cookieParser from 'cookie-parser';
import Fastify from 'fastify';
import Koa from 'koa';
import { request } from 'undici';
import { serve, type Service } from '@natsgw/service-sdk';
import { startStack, type Stack } from './helpers.js';

const quiet = { error() {}, warn() {}, info() {} };
const BINARY = Buffer.from(Array.from({ length: 256 }, (_, i) => i));

let s: Stack;
const services: Service[] = [];

before(async () => {
  s = await startStack();

  // An ordinary Express 5 app, exactly as one would write it for node:http.
  const app = express();
  app.use(express.json());
  app.use(express.raw({ type: 'application/octet-stream' }));
  app.use(cookieParser());
  app.get('/shop/items/:id', (req, res) => {
    res.json({ id: req.params.id, q: req.query, cookies: req.cookies as unknown, ip: req.ip, protocol: req.protocol, host: req.hostname });
  });
  app.post('/shop/items', (req, res) => {
    res
      .status(201)
      .cookie('session', 'abc', { httpOnly: true })
      .cookie('theme', 'dark')
      .location('/shop/items/7')
      .json({ created: req.body as unknown });
  });
  app.get('/shop/old', (_req, res) => res.redirect(301, '/shop/new'));
  app.post('/shop/binary', (req, res) => {
    const body = req.body as Buffer;
    res.type('application/octet-stream').send(Buffer.from(body).reverse());
  });
  app.get('/shop/binary', (_req, res) => res.type('application/octet-stream').send(BINARY));
  app.get('/shop/stream', (_req, res) => {
    res.setHeader('content-type', 'text/plain');
    res.write('one,');
    res.write(Buffer.from('two,'));
    setTimeout(() => res.end('three'), 10);
  });
  app.get('/shop/fail', () => {
    throw new Error('kaboom');
  });
  app.get('/shop/fail-async', async () => {
    await new Promise((r) => setTimeout(r, 5));
    throw new Error('async kaboom');
  });
  app.use((err: Error, _req: Request, res: Response, _next: NextFunction) => {
    res.status(500).json({ handledBy: 'express error handler', message: err.message });
  });
  services.push(await serve(app, { nats: s.ns.url, subject: 'api.shop', logger: quiet }));

  // An ordinary Fastify 5 app, through its plain (req, res) entry point.
  const fastify = Fastify();
  fastify.get<{ Params: { name: string }; Querystring: Record<string, string> }>('/cart/hello/:name', async (req) => ({
    hello: req.params.name,
    q: req.query,
    ip: req.ip,
    protocol: req.protocol,
  }));
  fastify.post('/cart/json', async (req, reply) => {
    reply.code(202).header('set-cookie', ['a=1', 'b=2']);
    return { got: req.body };
  });
  fastify.get('/cart/old', async (_req, reply) => reply.redirect('/cart/new', 308));
  fastify.addContentTypeParser('application/octet-stream', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
  fastify.post('/cart/binary', async (req, reply) => {
    reply.type('application/octet-stream');
    return Buffer.from(req.body as Buffer).reverse();
  });
  fastify.get('/cart/stream', async (_req, reply) => {
    reply.type('text/plain');
    return reply.send(Readable.from(['alpha,', 'beta,', 'gamma']));
  });
  fastify.get('/cart/fail', async () => {
    throw new Error('fastify kaboom');
  });
  fastify.setErrorHandler((err, _req, reply) => {
    void reply.code(418).send({ handledBy: 'fastify error handler', message: (err as Error).message });
  });
  await fastify.ready();
  services.push(await serve((req, res) => fastify.routing(req, res), { nats: s.ns.url, subject: 'api.cart', logger: quiet }));

  // And Koa, through app.callback().
  const koa = new Koa();
  koa.use(async (ctx) => {
    if (ctx.path === '/koa/teapot') ctx.throw(418, 'short and stout');
    ctx.cookies.set('k', 'v', { httpOnly: false });
    ctx.body = { path: ctx.path, query: ctx.query, method: ctx.method, ip: ctx.ip };
  });
  koa.silent = true;
  services.push(await serve(koa.callback(), { nats: s.ns.url, subject: 'api.koa', logger: quiet }));
});

after(async () => {
  for (const svc of services) await svc.drain();
  await s.close();
});

describe('sdk: Express 5 works unmodified', () => {
  test('routing, params, query, cookies, client address and protocol', async () => {
    const r = await request(`${s.base}/shop/items/42?color=red&size=m&size=l`, { headers: { cookie: 'sid=xyz; lang=fr', host: 'shop.example' } });
    assert.equal(r.statusCode, 200);
    assert.deepEqual(await r.body.json(), {
      id: '42',
      q: { color: 'red', size: ['m', 'l'] },
      cookies: { sid: 'xyz', lang: 'fr' },
      ip: '127.0.0.1',
      protocol: 'http',
      host: 'shop.example',
    });
  });

  test('JSON body in, status, repeated Set-Cookie and Location out', async () => {
    const r = await request(`${s.base}/shop/items`, { method: 'POST', body: JSON.stringify({ name: 'lamp', price: 9.5 }), headers: { 'content-type': 'application/json' } });
    assert.equal(r.statusCode, 201);
    assert.deepEqual(await r.body.json(), { created: { name: 'lamp', price: 9.5 } });
    assert.deepEqual(r.headers['set-cookie'], ['session=abc; Path=/; HttpOnly', 'theme=dark; Path=/']);
    assert.equal(r.headers.location, '/shop/items/7');
  });

  test('redirects', async () => {
    const r = await request(`${s.base}/shop/old`);
    assert.equal(r.statusCode, 301);
    assert.equal(r.headers.location, '/shop/new');
    await r.body.dump();
  });

  test('binary bodies both ways, every byte value intact', async () => {
    const up = await request(`${s.base}/shop/binary`, { method: 'POST', body: BINARY, headers: { 'content-type': 'application/octet-stream' } });
    assert.equal(up.statusCode, 200);
    assert.deepEqual(Buffer.from(await up.body.arrayBuffer()), Buffer.from(BINARY).reverse());
    const down = await request(`${s.base}/shop/binary`);
    assert.deepEqual(Buffer.from(await down.body.arrayBuffer()), BINARY);
  });

  test('streaming res.write calls arrive as one body', async () => {
    const r = await request(`${s.base}/shop/stream`);
    assert.equal(r.statusCode, 200);
    assert.equal(await r.body.text(), 'one,two,three');
  });

  test('error handlers run for sync and async errors; 404 for unknown routes', async () => {
    for (const path of ['/shop/fail', '/shop/fail-async']) {
      const r = await request(`${s.base}${path}`);
      assert.equal(r.statusCode, 500, path);
      const body = (await r.body.json()) as { handledBy: string; message: string };
      assert.equal(body.handledBy, 'express error handler');
      assert.match(body.message, /kaboom/);
    }
    const missing = await request(`${s.base}/shop/nothing-here`);
    assert.equal(missing.statusCode, 404);
    await missing.body.dump();
  });

  test('HEAD gets the GET headers and no body', async () => {
    const r = await request(`${s.base}/shop/items/1`, { method: 'HEAD' });
    assert.equal(r.statusCode, 200);
    assert.match(r.headers['content-type'] as string, /application\/json/);
    assert.ok(Number(r.headers['content-length']) > 0);
    assert.equal(await r.body.text(), '');
  });
});

describe('sdk: Fastify 5 works unmodified', () => {
  test('routing, params, query, client address', async () => {
    const r = await request(`${s.base}/cart/hello/world?x=1`);
    assert.equal(r.statusCode, 200);
    assert.deepEqual(await r.body.json(), { hello: 'world', q: { x: '1' }, ip: '127.0.0.1', protocol: 'http' });
  });

  test('JSON body, status and repeated Set-Cookie', async () => {
    const r = await request(`${s.base}/cart/json`, { method: 'POST', body: JSON.stringify({ qty: 3 }), headers: { 'content-type': 'application/json' } });
    assert.equal(r.statusCode, 202);
    assert.deepEqual(await r.body.json(), { got: { qty: 3 } });
    assert.deepEqual(r.headers['set-cookie'], ['a=1', 'b=2']);
  });

  test('redirects', async () => {
    const r = await request(`${s.base}/cart/old`);
    assert.equal(r.statusCode, 308);
    assert.equal(r.headers.location, '/cart/new');
    await r.body.dump();
  });

  test('binary bodies both ways', async () => {
    const r = await request(`${s.base}/cart/binary`, { method: 'POST', body: BINARY, headers: { 'content-type': 'application/octet-stream' } });
    assert.deepEqual(Buffer.from(await r.body.arrayBuffer()), Buffer.from(BINARY).reverse());
  });

  test('a streamed reply (Readable) arrives whole', async () => {
    const r = await request(`${s.base}/cart/stream`);
    assert.equal(r.statusCode, 200);
    assert.equal(await r.body.text(), 'alpha,beta,gamma');
  });

  test('the error handler runs; 404 for unknown routes', async () => {
    const r = await request(`${s.base}/cart/fail`);
    assert.equal(r.statusCode, 418);
    assert.deepEqual(await r.body.json(), { handledBy: 'fastify error handler', message: 'fastify kaboom' });
    const missing = await request(`${s.base}/cart/missing`);
    assert.equal(missing.statusCode, 404);
    await missing.body.dump();
  });
});

describe('sdk: Koa works unmodified', () => {
  test('context, query, cookies and thrown HTTP errors', async () => {
    const r = await request(`${s.base}/koa/thing?a=1`);
    assert.equal(r.statusCode, 200);
    assert.deepEqual(await r.body.json(), { path: '/koa/thing', query: { a: '1' }, method: 'GET', ip: '127.0.0.1' });
    assert.equal(r.headers['set-cookie'], 'k=v; path=/');
    const t = await request(`${s.base}/koa/teapot`);
    assert.equal(t.statusCode, 418);
    assert.equal(await t.body.text(), 'short and stout');
  });
});
