/**
 * WebSockets over NATS (ISSUE: WebSockets): real `ws` clients through a real
 * gateway and nats-server to SDK services, and to hand-written services
 * that speak the protocol's frames (PROTOCOL.md §14).
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import WebSocket from 'ws';
import express from 'express';
import type { serve, ServiceWebSocket } from '@natsgw/service-sdk';
import { decodeRequest, encodeReply, WS_CLOSE } from '@natsgw/service-sdk/protocol';
import { eventually, startStack, type Stack } from './helpers.js';

const MiB = 1024 * 1024;

async function stack(t: TestContext, flags: Record<string, unknown> = {}): Promise<Stack> {
  const s = await startStack({ shutdownGrace: 500, ...flags });
  t.after(() => s.close());
  return s;
}

function wsUrl(s: Stack, path: string): string {
  return s.base.replace('http://', 'ws://') + path;
}

/** Opens a client and waits for it to be open, or rejects with the HTTP status the gateway answered instead. */
async function openClient(url: string, options: WebSocket.ClientOptions = {}, protocols?: string[]): Promise<WebSocket> {
  const ws = new WebSocket(url, protocols, options);
  await new Promise<void>((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c));
      res.on('end', () => reject(Object.assign(new Error(`status ${res.statusCode}`), { status: res.statusCode, body, headers: res.headers })));
    });
    ws.once('error', reject);
  });
  return ws;
}

function nextMessage(ws: WebSocket): Promise<{ data: Buffer; isBinary: boolean }> {
  return new Promise((resolve) => ws.once('message', (data: Buffer, isBinary: boolean) => resolve({ data, isBinary })));
}

function closed(ws: WebSocket): Promise<{ code: number; reason: string }> {
  return new Promise((resolve) => ws.once('close', (code: number, reason: Buffer) => resolve({ code, reason: reason.toString() })));
}

/** An echo service on api.chat: each message comes back as it came (text stays text). */
async function echoService(s: Stack, extra: Partial<Parameters<typeof serve>[1]> = {}) {
  const sockets: ServiceWebSocket[] = [];
  const service = await s.serve((_req, res) => res.end('plain http'), {
    nats: s.ns.url,
    subject: 'api.chat',
    websocket: (ws) => {
      sockets.push(ws);
      ws.on('message', (data, isBinary) => ws.send(data as Buffer, { binary: isBinary }));
    },
    ...extra,
  });
  return { service, sockets };
}

test('text stays text and binary stays binary, both ways; the handler sees the upgrade request', async (t) => {
  const s = await stack(t);
  let seen: { url?: string; upgrade?: string; cookie?: string; remote?: string } = {};
  await s.serve((_req, res) => res.end(), {
    nats: s.ns.url,
    subject: 'api.chat',
    websocket: (ws, req) => {
      seen = { url: req.url, upgrade: req.headers.upgrade, cookie: req.headers.cookie, remote: req.socket.remoteAddress };
      ws.on('message', (data, isBinary) => ws.send(data as Buffer, { binary: isBinary }));
    },
  });
  const ws = await openClient(wsUrl(s, '/chat/room1?x=1'), { headers: { cookie: 'sid=abc' } });
  assert.equal(seen.url, '/chat/room1?x=1');
  assert.equal(seen.upgrade, 'websocket');
  assert.equal(seen.cookie, 'sid=abc');
  assert.equal(seen.remote, '127.0.0.1');
  ws.send('héllo');
  const text = await nextMessage(ws);
  assert.equal(text.isBinary, false);
  assert.equal(text.data.toString(), 'héllo');
  ws.send(Buffer.from([0, 1, 2, 255]));
  const bin = await nextMessage(ws);
  assert.equal(bin.isBinary, true);
  assert.deepEqual([...bin.data], [0, 1, 2, 255]);
  const done = closed(ws);
  ws.close(4000, 'bye');
  assert.equal((await done).code, 4000);
});

test('10,000 messages arrive in order both ways', async (t) => {
  const s = await stack(t);
  await echoService(s);
  const ws = await openClient(wsUrl(s, '/chat/order'));
  const got: number[] = [];
  const all = new Promise<void>((resolve) =>
    ws.on('message', (data: Buffer) => {
      got.push(Number(data.toString()));
      if (got.length === 10_000) resolve();
    }),
  );
  for (let i = 0; i < 10_000; i++) ws.send(String(i));
  await all;
  for (let i = 0; i < 10_000; i++) if (got[i] !== i) assert.fail(`message ${i} arrived as ${got[i]}`);
  ws.close();
});

test('a message larger than one NATS message crosses in pieces, and one over --ws-max-message closes with 1009', async (t) => {
  const s = await stack(t, { wsMaxMessage: 4 * MiB });
  const { sockets } = await echoService(s);
  const ws = await openClient(wsUrl(s, '/chat/big'));
  // 3 MiB: more than max_payload (1 MiB) and than the credit window both ways.
  const big = Buffer.alloc(3 * MiB);
  for (let i = 0; i < big.length; i++) big[i] = i % 251;
  ws.send(big);
  const echoed = await nextMessage(ws);
  assert.equal(echoed.isBinary, true);
  assert.ok(echoed.data.equals(big), 'the 3 MiB message came back intact');
  const serviceSaw = once(sockets[0]!, 'close');
  const done = closed(ws);
  ws.send(Buffer.alloc(16 * MiB));
  assert.equal((await done).code, WS_CLOSE.tooBig);
  const [code] = (await serviceSaw) as [number];
  assert.equal(code, WS_CLOSE.tooBig, 'the service is told why');
});

test('close codes and reasons travel both ways', async (t) => {
  const s = await stack(t);
  const { sockets } = await echoService(s);
  // Client → service.
  const a = await openClient(wsUrl(s, '/chat/a'));
  await eventually(() => sockets.length === 1);
  const serviceSaw = once(sockets[0]!, 'close');
  a.close(4321, 'client says bye');
  const [code, reason] = (await serviceSaw) as [number, Buffer];
  assert.equal(code, 4321);
  assert.equal(reason.toString(), 'client says bye');
  // Service → client.
  const b = await openClient(wsUrl(s, '/chat/b'));
  await eventually(() => sockets.length === 2);
  const clientSaw = closed(b);
  sockets[1]!.close(4001, 'service says bye');
  assert.deepEqual(await clientSaw, { code: 4001, reason: 'service says bye' });
  assert.equal(sockets[1]!.readyState, 3);
  await eventually(() => s.gw.view.websockets().open === 0, 2000, 'no connection left open');
});

test('the service rejects an upgrade with a status and body; the client sees that response', async (t) => {
  const s = await stack(t);
  await s.serve((_req, res) => res.end(), {
    nats: s.ns.url,
    subject: 'api.chat',
    websocket: {
      verify: (req) => (req.headers.authorization === 'Bearer ok' ? true : { status: 403, body: 'no entry', headers: { 'x-why': 'token' } }),
      onConnection: (ws) => ws.send('welcome'),
    },
  });
  const err = (await openClient(wsUrl(s, '/chat/locked')).catch((e: unknown) => e)) as { status: number; body: string; headers: Record<string, string> };
  assert.equal(err.status, 403);
  assert.equal(err.body, 'no entry');
  assert.equal(err.headers['x-why'], 'token');
  const ws = new WebSocket(wsUrl(s, '/chat/locked'), { headers: { authorization: 'Bearer ok' } });
  assert.equal((await nextMessage(ws)).data.toString(), 'welcome');
  ws.close();
  assert.equal(s.gw.view.websockets().rejected, 1);
});

test('a service without WebSocket support answers the upgrade with an error, never a hang', async (t) => {
  const s = await stack(t);
  // An SDK service with no websocket option: the upgrade reaches its HTTP handler, which answers 404.
  const app = express();
  app.get('/plain/there', (_req, res) => res.send('http only'));
  await s.serve(app, { nats: s.ns.url, subject: 'api.plain' });
  const started = Date.now();
  const err = (await openClient(wsUrl(s, '/plain/nothing')).catch((e: unknown) => e)) as { status: number };
  assert.equal(err.status, 404);
  // A v1 service that knows nothing of WebSockets answers one envelope.
  const sub = s.nc.subscribe('api.old', {
    callback: (_e, msg) => {
      const env = decodeRequest(msg.data);
      assert.equal(env.ws, true, 'the request says it is an upgrade');
      msg.respond(encodeReply({ v: 1, status: 426, headers: ['content-type', 'text/plain'], body: Buffer.from('upgrade not here') }));
    },
  });
  t.after(() => sub.unsubscribe());
  await s.nc.flush();
  const old = (await openClient(wsUrl(s, '/old')).catch((e: unknown) => e)) as { status: number; body: string };
  assert.equal(old.status, 426);
  assert.equal(old.body, 'upgrade not here');
  // Nobody at all: 503 at once.
  const none = (await openClient(wsUrl(s, '/nobody')).catch((e: unknown) => e)) as { status: number };
  assert.equal(none.status, 503);
  assert.ok(Date.now() - started < 3000, 'all three answered promptly');
});
