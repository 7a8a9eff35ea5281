/**
 * WebSockets over NATS (ISSUE: WebSockets): real `ws` clients through a real
 * gateway and nats-server to SDK services, and to hand-written services
 * that speak the protocol's frames (PROTOCOL.md §14).
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import WebSocket, { WebSocketServer } from 'ws';
import express from 'express';
import { serve, type ServiceWebSocket } from '@natsgw/service-sdk';
import { request } from 'undici';
import { connect, type Msg } from '@nats-io/transport-node';
import { decodeFrame, decodeRequest, encodeClose, encodeMsg, encodeReply, encodeTopicFrame, WS_CLOSE } from '@natsgw/service-sdk/protocol';
import { putRoute, routesBucket } from './backends.js';
import { eventually, rawRequest, spawnGateway, startStack, startTestGateway, type Stack } from './helpers.js';
import { launchChromium, NO_CHROMIUM } from './chromium.js';

const WS_SERVICE = fileURLToPath(new URL('./fixtures/ws-service.js', import.meta.url));

/** The echo fixture in its own process; resolves once it serves. Its stdout lines are collected in `lines`. */
async function spawnWsService(t: TestContext, natsUrl: string, mount: string, timeoutMs?: number): Promise<{ child: ChildProcess; lines: string[] }> {
  const child = spawn(process.execPath, [WS_SERVICE, natsUrl, mount, ...(timeoutMs === undefined ? [] : [String(timeoutMs)])], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.after(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  const lines: string[] = [];
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      for (const l of d.toString().split('\n')) if (l !== '') lines.push(l);
      if (lines.includes('ready')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`service exited with ${code}`)));
  });
  return { child, lines };
}

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
  // The service sending more than the limit: both sides learn 1009 too.
  const tooBig = closed(ws);
  sockets[0]!.send(Buffer.alloc(5 * MiB));
  assert.equal((await tooBig).code, WS_CLOSE.tooBig);
  await eventually(() => sockets[0]!.readyState === 3, 2000, 'the service was told');
  const again = await openClient(wsUrl(s, '/chat/big'));
  await eventually(() => sockets.length === 2);
  const serviceSaw = once(sockets[1]!, 'close');
  const done = closed(again);
  again.send(Buffer.alloc(16 * MiB));
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

test('kill -9 of the service: the client gets 1011 within a few seconds, never a half-open connection', async (t) => {
  const s = await stack(t);
  const { child } = await spawnWsService(t, s.ns.url, 'api.chat');
  const ws = await openClient(wsUrl(s, '/chat/k'));
  ws.send('ping');
  assert.equal((await nextMessage(ws)).data.toString(), 'ping');
  const done = closed(ws);
  const killedAt = Date.now();
  child.kill('SIGKILL');
  const { code } = await done;
  assert.equal(code, WS_CLOSE.internalError);
  // Probes every 2 s find the inbox gone (no-responders).
  assert.ok(Date.now() - killedAt < 4000, `closed ${Date.now() - killedAt} ms after the kill`);
  await eventually(() => s.gw.view.websockets().open === 0, 2000, 'the gateway forgot the connection');
});

test('client gone without a close frame: the service sees close promptly', async (t) => {
  const s = await stack(t);
  const { sockets } = await echoService(s);
  const ws = await openClient(wsUrl(s, '/chat/gone'));
  await eventually(() => sockets.length === 1);
  const serviceSaw = once(sockets[0]!, 'close');
  const at = Date.now();
  (ws as unknown as { _socket: { destroy(): void } })._socket.destroy();
  const [code] = (await serviceSaw) as [number];
  assert.equal(code, WS_CLOSE.abnormal);
  assert.ok(Date.now() - at < 1000, `the service heard ${Date.now() - at} ms later`);
});

test('a slow client holds the service back: bufferedAmount grows, the gateway holds only about a window, nothing is lost', async (t) => {
  const s = await stack(t);
  let socket: ServiceWebSocket | undefined;
  await s.serve((_req, res) => res.end(), {
    nats: s.ns.url,
    subject: 'api.feed',
    websocket: { onConnection: (ws) => (socket = ws), maxBufferedBytes: 64 * MiB },
  });
  const ws = await openClient(wsUrl(s, '/feed'));
  await eventually(() => socket !== undefined);
  const raw = (ws as unknown as { _socket: { pause(): void; resume(): void } })._socket;
  raw.pause();
  const chunk = 256 * 1024;
  let sent = 0;
  // 48 MiB offered to a client that reads nothing.
  while (sent < 48 * MiB) {
    socket!.send(Buffer.alloc(chunk, (sent / chunk) % 251));
    sent += chunk;
    if (sent % (4 * MiB) === 0) await new Promise((r) => setTimeout(r, 20));
  }
  await new Promise((r) => setTimeout(r, 300));
  const reached = s.gw.view.websockets().bytesOut;
  assert.ok(socket!.bufferedAmount > 24 * MiB, `the service holds what the client cannot take (${socket!.bufferedAmount} bytes)`);
  // What left the service: the window, plus what the kernel's socket buffers took before uWS saw backpressure.
  assert.ok(reached < 16 * MiB, `the gateway passed on only ${reached} bytes`);
  let got = 0;
  let bad = -1;
  const all = new Promise<void>((resolve) =>
    ws.on('message', (data: Buffer) => {
      if (data.length !== chunk || data[0] !== (got / chunk) % 251) bad = got;
      got += data.length;
      if (got === 48 * MiB) resolve();
    }),
  );
  raw.resume();
  await all;
  assert.equal(bad, -1, 'every message arrived, in order');
  assert.equal(socket!.bufferedAmount, 0);
  ws.close();
});

test('a client too slow for the service bound is closed with 1013; the send callback reports it', async (t) => {
  const s = await stack(t);
  let socket: ServiceWebSocket | undefined;
  await s.serve((_req, res) => res.end(), { nats: s.ns.url, subject: 'api.feed', websocket: { onConnection: (ws) => (socket = ws), maxBufferedBytes: 2 * MiB } });
  const ws = await openClient(wsUrl(s, '/feed'));
  await eventually(() => socket !== undefined);
  (ws as unknown as { _socket: { pause(): void } })._socket.pause();
  const serviceSaw = once(socket!, 'close');
  let failed: Error | undefined;
  for (let i = 0; i < 400 && failed === undefined && socket!.readyState === 1; i++) {
    socket!.send(Buffer.alloc(256 * 1024), (err) => (failed ??= err));
    await new Promise((r) => setImmediate(r));
  }
  const [code] = (await serviceSaw) as [number];
  assert.equal(code, WS_CLOSE.tryAgainLater);
  await eventually(() => failed !== undefined, 1000, 'a send callback got the error');
});

test('a slow service holds the client back: paused, messages wait within the bound; past it the client gets 1013', async (t) => {
  const s = await stack(t);
  let socket: ServiceWebSocket | undefined;
  const got: number[] = [];
  await s.serve((_req, res) => res.end(), {
    nats: s.ns.url,
    subject: 'api.slow',
    websocket: (ws) => {
      socket = ws;
      ws.on('message', (data: Buffer) => got.push(data.readUInt32BE(0)));
    },
  });
  const a = await openClient(wsUrl(s, '/slow'));
  await eventually(() => socket !== undefined);
  socket!.pause();
  // 1.5 MiB: beyond the 1 MiB window, within window + max message (2 MiB).
  for (let i = 0; i < 24; i++)
    a.send(
      Buffer.alloc(64 * 1024)
        .fill(0)
        .fill(i, 3, 4),
    );
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(got.length, 0, 'nothing delivered while paused');
  socket!.resume();
  await eventually(() => got.length === 24, 3000, 'all 24 delivered after resume');
  assert.deepEqual(
    got,
    Array.from({ length: 24 }, (_, i) => i),
  );
  // Now past the bound.
  socket!.pause();
  const done = closed(a);
  for (let i = 0; i < 64; i++) a.send(Buffer.alloc(64 * 1024));
  assert.equal((await done).code, WS_CLOSE.tryAgainLater);
});

test('gateway SIGTERM closes clients with 1001 after its grace period, and tells the service', async (t) => {
  const s = await stack(t);
  const { sockets } = await echoService(s);
  const gw = await spawnGateway(['serve', '--nats', s.ns.url, '--host', '127.0.0.1', '--port', '0', '--admin-port', '0', '--shutdown-grace', '800'], (out) => out.includes('connected to NATS'));
  t.after(() => gw.child.kill('SIGKILL'));
  const port = Number(/"port":(\d+)/.exec(gw.output())![1]);
  const ws = await openClient(`ws://127.0.0.1:${port}/chat/down`);
  await eventually(() => sockets.length === 1);
  const serviceSaw = once(sockets[0]!, 'close');
  const done = closed(ws);
  const at = Date.now();
  gw.child.kill('SIGTERM');
  // Still served during the grace period.
  ws.send('during grace');
  assert.equal((await nextMessage(ws)).data.toString(), 'during grace');
  assert.equal((await done).code, WS_CLOSE.goingAway);
  assert.ok(Date.now() - at >= 700, `the connection had the grace period (${Date.now() - at} ms)`);
  const [code] = (await serviceSaw) as [number];
  assert.equal(code, WS_CLOSE.goingAway);
  const [exit] = (await once(gw.child, 'exit')) as [number];
  assert.equal(exit, 0);
});

test("a service's drain lets connections finish, then closes the rest with 1001", async (t) => {
  const s = await stack(t);
  const { child, lines } = await spawnWsService(t, s.ns.url, 'api.chat', 1500);
  const finishing = await openClient(wsUrl(s, '/chat/one'));
  const lingering = await openClient(wsUrl(s, '/chat/two'));
  await eventually(() => lines.filter((l) => l === 'open').length === 2);
  const lingerClosed = closed(lingering);
  child.kill('SIGTERM');
  await new Promise((r) => setTimeout(r, 200));
  // Still served while draining.
  finishing.send('still here');
  assert.equal((await nextMessage(finishing)).data.toString(), 'still here');
  finishing.close(1000);
  assert.equal((await lingerClosed).code, WS_CLOSE.goingAway);
  await once(child, 'exit');
  assert.ok(lines.includes('close 1000') && lines.includes('close 1001') && lines.includes('drained'), lines.join(' | '));
});

test('topics across the fleet: one broadcast reaches subscribed clients on two gateways, and only those', async (t) => {
  const s = await stack(t);
  const service = await s.serve((_req, res) => res.end(), {
    nats: s.ns.url,
    subject: 'api.chat',
    websocket: (ws, req) => {
      const room = (req.url ?? '').split('/')[2] ?? 'lobby';
      ws.subscribe(room).then(() => ws.send(`joined ${room}`));
      ws.on('message', (data) => service.broadcast(room, `${room}: ${String(data)}`));
    },
  });
  const second = await startTestGateway({ nats: s.ns.url, port: 0, adminPort: 0 });
  await second.gw.connected;
  t.after(() => second.gw.close(200));
  const onA = new WebSocket(wsUrl(s, '/chat/room1'));
  const onB = new WebSocket(second.base.replace('http://', 'ws://') + '/chat/room1');
  const elsewhere = new WebSocket(wsUrl(s, '/chat/room2'));
  const joined = [onA, onB, elsewhere].map((c) => nextMessage(c));
  for (const j of joined) assert.match((await j).data.toString(), /^joined room/);
  const leak: string[] = [];
  elsewhere.on('message', (d: Buffer) => leak.push(d.toString()));
  const a = nextMessage(onA);
  const b = nextMessage(onB);
  onA.send('hello');
  assert.equal((await a).data.toString(), 'room1: hello');
  assert.equal((await b).data.toString(), 'room1: hello');
  // Binary broadcast from outside any connection.
  const binA = nextMessage(onA);
  service.broadcast('room1', Buffer.from([1, 2, 3]));
  assert.deepEqual([...(await binA).data], [1, 2, 3]);
  assert.equal((await binA).isBinary, true);
  await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(leak, [], 'room2 heard nothing of room1');
  // One NATS subscription per topic per gateway, gone with the topic's last connection.
  assert.deepEqual([s.gw.view.websockets().topics, second.gw.view.websockets().topics], [2, 1]);
  for (const c of [onA, onB, elsewhere]) c.close();
  await eventually(() => s.gw.view.websockets().topics === 0 && second.gw.view.websockets().topics === 0, 2000, 'topic subscriptions dropped');
});

/**
 * A hand-written service on `subject` that accepts every upgrade and then
 * sends what `misbehave` publishes to the gateway; frames the gateway sends
 * back are collected in `received`.
 */
async function acceptingResponder(s: Stack, subject: string, misbehave: (send: (data: Uint8Array) => void) => void) {
  const received: Array<ReturnType<typeof decodeFrame>> = [];
  const inbox = `_INBOX.evil.${Math.random().toString(36).slice(2)}`;
  const inboxSub = s.nc.subscribe(inbox, {
    callback: (_e, m) => {
      received.push(decodeFrame(m.data));
    },
  });
  const sub = s.nc.subscribe(subject, {
    callback: (_e, msg: Msg) => {
      const gateway = msg.reply!;
      s.nc.publish(gateway, encodeReply({ v: 2, status: 101, headers: [], body: new Uint8Array(0), inbox, credit: 1024 * 1024 }), { reply: inbox });
      setTimeout(() => misbehave((data) => s.nc.publish(gateway, data, { reply: inbox })), 50);
    },
  });
  await s.nc.flush();
  return {
    received,
    stop: () => {
      sub.unsubscribe();
      inboxSub.unsubscribe();
    },
  };
}

const HOSTILE: Array<[what: string, frames: () => Uint8Array[]]> = [
  ['a gap in msg sequence numbers', () => [encodeMsg(2, Buffer.from('skipped one'), false, false)]],
  ['a text message that is not UTF-8', () => [encodeMsg(1, Buffer.from([0xc3, 0x28]), false, false)]],
  ['a close code that may not be sent to a client', () => [encodeClose(1005, 'reserved')]],
  ['bytes that are not msgpack', () => [Buffer.from('not a frame')]],
  ['a reply envelope inside the session', () => [encodeReply({ v: 1, status: 200, headers: [], body: Buffer.from('x') })]],
  ['a subscription to a 257th topic', () => Array.from({ length: 257 }, (_, i) => encodeTopicFrame('sub', `api.evil.t${i}`))],
  [
    'a topic frame with a wildcard',
    () => {
      const f = Buffer.from(encodeTopicFrame('sub', 'api.x.y'));
      f[f.length - 1] = 0x2a; // api.x.*
      return [f];
    },
  ],
];

for (const [what, frames] of HOSTILE) {
  test(`hostile service: ${what} closes the client with 1011, cancels the session, and the gateway serves on`, async (t) => {
    const s = await stack(t);
    const evil = await acceptingResponder(s, 'api.evil', (send) => {
      for (const f of frames()) send(f);
    });
    t.after(() => evil.stop());
    const ws = await openClient(wsUrl(s, '/evil'));
    assert.equal((await closed(ws)).code, WS_CLOSE.internalError);
    await eventually(() => evil.received.some((f) => typeof f !== 'string' && f.t === 'cancel'), 2000, 'the service was sent a cancel');
    await eventually(() => s.logs.some((l) => l.msg === 'invalid WebSocket frame from service'), 2000, 'logged');
    // The gateway is fine: a plain request still gets its answer.
    assert.equal((await request(`${s.base}/nobody`)).statusCode, 503);
  });
}

test('a service that answers 101 to a plain request, or picks a subprotocol the client did not offer, gets a 502', async (t) => {
  const s = await stack(t);
  const evil = await acceptingResponder(s, 'api.evil', () => undefined);
  t.after(() => evil.stop());
  assert.equal((await request(`${s.base}/evil`)).statusCode, 502);
  const sub = s.nc.subscribe('api.proto', {
    callback: (_e, msg) =>
      s.nc.publish(msg.reply!, encodeReply({ v: 2, status: 101, headers: ['sec-websocket-protocol', 'mqtt'], body: new Uint8Array(0), inbox: '_INBOX.p.1', credit: 1024 }), { reply: '_INBOX.p.1' }),
  });
  t.after(() => sub.unsubscribe());
  await s.nc.flush();
  const err = (await openClient(wsUrl(s, '/proto'), {}, ['chat.v1']).catch((e: unknown) => e)) as { status: number };
  assert.equal(err.status, 502);
});

test('subprotocols are chosen by the service among those offered; pings from the service come back as pong', async (t) => {
  const s = await stack(t);
  let socket: ServiceWebSocket | undefined;
  await s.serve((_req, res) => res.end(), {
    nats: s.ns.url,
    subject: 'api.chat',
    websocket: { onConnection: (ws) => (socket = ws), handleProtocols: (offered) => (offered.has('chat.v2') ? 'chat.v2' : false) },
  });
  const ws = await openClient(wsUrl(s, '/chat/p'), {}, ['chat.v1', 'chat.v2']);
  assert.equal(ws.protocol, 'chat.v2');
  await eventually(() => socket !== undefined);
  assert.equal(socket!.protocol, 'chat.v2');
  const pong = once(socket!, 'pong');
  socket!.ping(Buffer.from('are you there'));
  const [body] = (await pong) as [Buffer];
  assert.equal(body.toString(), 'are you there');
  ws.close();
});

test('upgrades the gateway refuses itself: bad handshake 400, override 501, past --ws-max-connections 503', async (t) => {
  const s = await stack(t, { wsMaxConnections: 1 });
  await echoService(s);
  const bad = await rawRequest(
    s.gw.port,
    'GET /chat/x HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n',
  );
  assert.match(bad.text, /^HTTP\/1\.1 400 /);
  const kv = await routesBucket(s.nc);
  await putRoute(kv, s.gw, 'api.legacy', { upstreams: [{ url: 'http://127.0.0.1:9' }] });
  const override = (await openClient(wsUrl(s, '/legacy/socket')).catch((e: unknown) => e)) as { status: number; body: string };
  assert.equal(override.status, 501, override.body);
  assert.match(override.body, /HTTP backends/);
  const first = await openClient(wsUrl(s, '/chat/1'));
  const second = (await openClient(wsUrl(s, '/chat/2')).catch((e: unknown) => e)) as { status: number };
  assert.equal(second.status, 503);
  first.close();
  await eventually(() => s.gw.view.websockets().open === 0);
  (await openClient(wsUrl(s, '/chat/3'))).close();
});

test('operations: /status and /metrics count connections, messages, bytes and closes; the access log has open and close lines', async (t) => {
  const s = await stack(t);
  await echoService(s);
  const ws = await openClient(wsUrl(s, '/chat/ops'));
  ws.send('12345');
  await nextMessage(ws);
  const admin = `http://127.0.0.1:${s.gw.adminPort}`;
  const status = (await (await request(`${admin}/status`)).body.json()) as { websockets: { open: number; messagesIn: number; bytesOut: number } };
  assert.equal(status.websockets.open, 1);
  assert.equal(status.websockets.messagesIn, 1);
  assert.equal(status.websockets.bytesOut, 5);
  const done = closed(ws);
  ws.close(4002, 'done');
  await done;
  await eventually(() => s.gw.view.websockets().open === 0);
  const metrics = await (await request(`${admin}/metrics`)).body.text();
  assert.match(metrics, /natsgw_ws_connections_open 0/);
  assert.match(metrics, /natsgw_ws_messages_total\{direction="in"\} 1/);
  assert.match(metrics, /natsgw_ws_bytes_total\{direction="out"\} 5/);
  assert.match(metrics, /natsgw_ws_closes_total\{code="4002"\} 1/);
  const opened = s.logs.find((l) => l.kind === 'access' && l.status === 101);
  assert.ok(opened, 'an access line for the upgrade, status 101');
  await eventually(() => s.logs.some((l) => l.kind === 'access' && l.ws === 'close'), 2000, 'a close line');
  const closeLine = s.logs.find((l) => l.ws === 'close')!;
  assert.equal(closeLine.code, 4002);
  assert.equal(closeLine.messagesIn, 1);
  assert.equal(closeLine.requestId, opened.requestId);
  assert.equal(typeof closeLine.durationMs, 'number');
});

test('overlapping mounts: the most specific mount takes the upgrade, and its session runs through the hand-off', async (t) => {
  const s = await stack(t);
  const mount = (name: string) => (ws: ServiceWebSocket) => {
    ws.send(name);
    ws.on('message', (d) => ws.send(`${name} ${String(d)}`));
  };
  await s.serve((_req, res) => res.end(), { nats: s.ns.url, subject: 'api.chat', websocket: mount('chat') });
  await s.serve((_req, res) => res.end(), { nats: s.ns.url, subject: 'api.chat.vip', websocket: mount('vip') });
  // Enough connections that the queue group hands some to api.chat, which passes them on.
  for (let i = 0; i < 12; i++) {
    const ws = new WebSocket(wsUrl(s, `/chat/vip/${i}`));
    assert.equal((await nextMessage(ws)).data.toString(), 'vip');
    const echoed = nextMessage(ws);
    ws.send(Buffer.alloc(300 * 1024, 0x61).toString()); // several messages' worth through the relay
    assert.equal((await echoed).data.length, 'vip '.length + 300 * 1024);
    const done = closed(ws);
    ws.close(4003);
    assert.equal((await done).code, 4003);
  }
  const other = new WebSocket(wsUrl(s, '/chat/lobby'));
  assert.equal((await nextMessage(other)).data.toString(), 'chat');
  other.close();
});

test('a browser (headless Chromium) echoes text and binary through the gateway', { skip: NO_CHROMIUM }, async (t) => {
  const s = await stack(t);
  await echoService(s);
  // Chromium's own account of the connection (handshake, frames, close), shown if the check fails.
  const { evaluate, events } = await launchChromium(t, 'Network.webSocket');
  const result = await evaluate(`new Promise((resolve, reject) => {
    const ws = new WebSocket('${wsUrl(s, '/chat/browser')}');
    ws.binaryType = 'arraybuffer';
    const got = [];
    ws.onopen = () => { ws.send('hello from chromium'); ws.send(new Uint8Array([7, 8, 9])); };
    ws.onmessage = (e) => {
      got.push(typeof e.data === 'string' ? e.data : Array.from(new Uint8Array(e.data)));
      if (got.length === 2) ws.close(1000, 'done');
    };
    ws.onclose = (e) => resolve({ got, code: e.code });
    ws.onerror = () => reject(new Error('websocket error'));
  })`);
  assert.deepEqual(result, { got: ['hello from chromium', [7, 8, 9]], code: 1000 }, events.join('\n'));
});

test("keep-alive is the gateway's: an idle client that answers pings stays, one that does not is closed; the service hears neither", async (t) => {
  const s = await stack(t, { wsIdleTimeout: 8000 });
  const events: string[] = [];
  await s.serve((_req, res) => res.end(), {
    nats: s.ns.url,
    subject: 'api.idle',
    websocket: (ws, req) => {
      ws.on('message', () => events.push(`message ${req.url}`));
      ws.on('pong', () => events.push(`pong ${req.url}`));
      ws.on('close', (code) => events.push(`close ${req.url} ${code}`));
    },
  });
  const alive = await openClient(wsUrl(s, '/idle/alive'));
  const mute = await openClient(wsUrl(s, '/idle/mute'), { autoPong: false });
  let pings = 0;
  alive.on('ping', () => pings++);
  const muteClosed = closed(mute);
  await new Promise((r) => setTimeout(r, 14_000));
  assert.equal(alive.readyState, WebSocket.OPEN, 'a client that answers pings outlives the idle timeout');
  assert.ok(pings >= 1, 'the gateway pinged it');
  assert.notEqual((await muteClosed).code, 0);
  await eventually(() => events.includes('close /idle/mute 1006'), 2000, 'the service heard the mute one go');
  assert.deepEqual(events, ['close /idle/mute 1006'], 'no message or pong reached the service for keep-alive');
  alive.close();
});

test("the same `ws` connection callback runs under ws's own server and under the SDK", async (t) => {
  // Written for the ws package, unchanged.
  const onConnection = (ws: WebSocket | ServiceWebSocket, req: { url?: string }) => {
    ws.send(`hello ${req.url}`);
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (String(data) === 'bye') return ws.close(4000, 'as asked');
      ws.send(isBinary ? data : `echo ${String(data)}`, { binary: isBinary });
    });
  };
  const script = async (url: string) => {
    const ws = new WebSocket(url);
    const got: string[] = [];
    ws.on('message', (d: Buffer, bin: boolean) => got.push(bin ? `bin ${[...d].join(',')}` : String(d)));
    await once(ws, 'open');
    ws.send('one');
    ws.send(Buffer.from([1, 2]));
    await eventually(() => got.length === 3);
    ws.send('bye');
    const [code, reason] = (await once(ws, 'close')) as [number, Buffer];
    return [...got, `close ${code} ${String(reason)}`];
  };
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  t.after(() => wss.close());
  wss.on('connection', onConnection);
  await once(wss, 'listening');
  const direct = await script(`ws://127.0.0.1:${(wss.address() as { port: number }).port}/chat/same`);
  const s = await stack(t);
  await s.serve((_req, res) => res.end(), { nats: s.ns.url, subject: 'api.chat', websocket: onConnection });
  const viaGateway = await script(wsUrl(s, '/chat/same'));
  assert.deepEqual(viaGateway, direct);
  assert.deepEqual(direct, ['hello /chat/same', 'echo one', 'bin 1,2', 'close 4000 as asked']);
});

test('600 upgrades in a row all open: none is closed right after open by the upgrade-in-cork bug of uWS (ws/cork-anchor.ts)', async (t) => {
  const s = await stack(t);
  await s.serve((_req, res) => res.end(), { nats: s.ns.url, subject: 'api.chat', websocket: (ws) => ws.send('open') });
  let dropped = 0;
  for (let i = 0; i < 600; i++) {
    const ws = new WebSocket(wsUrl(s, `/chat/${i}`));
    const outcome = await new Promise<string>((resolve) => {
      ws.once('message', () => resolve('open'));
      ws.once('close', (code) => resolve(`closed ${code}`));
    });
    if (outcome !== 'open') dropped++;
    ws.terminate();
  }
  // Without the anchor, about 1 in 200 of these was dropped with 1006 (measured; this test then failed 1 run in 3), and 1 in 5 of Chromium's.
  assert.equal(dropped, 0);
});

test("NATS connections lost: the service's → its clients get 1011 within a few seconds; the gateway's → 1011 at once, and new upgrades get 503 until it is back", async (t) => {
  const s = await stack(t);
  const own = await connect({ servers: s.ns.url });
  // serve() on a connection of the test's own, so it can be cut without a drain.
  const quiet = { error: () => undefined, warn: () => undefined, info: () => undefined };
  await serve((_req, res) => res.end(), { nats: own, subject: 'api.chat', logger: quiet, websocket: (ws) => ws.on('message', (d) => ws.send(d as Buffer)) });
  const a = await openClient(wsUrl(s, '/chat/a'));
  const aClosed = closed(a);
  const at = Date.now();
  await own.close(); // its subscriptions (the socket's inbox among them) are gone from the server
  assert.equal((await aClosed).code, WS_CLOSE.internalError);
  assert.ok(Date.now() - at < 4000, `closed ${Date.now() - at} ms after the service's connection`);

  const { sockets } = await echoService(s);
  const b = await openClient(wsUrl(s, '/chat/b'));
  await eventually(() => sockets.length === 1);
  const bClosed = closed(b);
  const stoppedAt = Date.now();
  await s.ns.stop(true);
  assert.equal((await bClosed).code, WS_CLOSE.internalError);
  assert.ok(Date.now() - stoppedAt < 2000, 'the gateway closed its clients as soon as it lost NATS');
  const refused = (await openClient(wsUrl(s, '/chat/c')).catch((e: unknown) => e)) as { status: number };
  assert.equal(refused.status, 503);
  await s.ns.restart();
  // Back once the gateway and the service have both reconnected (and resubscribed).
  let c: WebSocket | undefined;
  await eventually(
    async () => {
      c = await openClient(wsUrl(s, '/chat/c')).catch(() => undefined);
      return c !== undefined;
    },
    15_000,
    'upgrades accepted again',
  );
  c!.send('back');
  assert.equal((await nextMessage(c!)).data.toString(), 'back');
  c!.close();
});
