import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer as createTcpServer, type Server as TcpServer, type Socket } from 'node:net';
import { Readable } from 'node:stream';
import type { KV } from '@nats-io/kv';
import { request } from 'undici';
import { freePorts } from '@natsgw/devkit';
import { type Backend, putRoute, routesBucket, startBackends, httpRoute } from './backends.js';
import { eventually, parseResponses as parseResponsesOf, rawRequest, RawSession, startStack, type Stack } from './helpers.js';

let s: Stack;
let kv: KV;
const cleanup: Array<() => Promise<unknown> | undefined> = [];

before(async () => {
  s = await startStack();
  kv = await routesBucket(s.nc);
});
after(async () => {
  for (const fn of cleanup.reverse()) await fn();
  await s.close();
});

async function backends(n: number, handler?: ConstructorParameters<typeof Backend>[1]): Promise<Backend[]> {
  const list = await startBackends(n, handler ? () => handler : undefined);
  cleanup.push(() => Promise.all(list.map((b) => b.stop())));
  return list;
}

/** A TCP server that answers every connection with `respond` (for malformed HTTP). */
async function rawServer(respond: (socket: Socket) => void): Promise<{ url: string; hits: () => number }> {
  let hits = 0;
  const sockets = new Set<Socket>();
  const server: TcpServer = createTcpServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    socket.once('data', () => {
      hits++;
      respond(socket);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  cleanup.push(() => {
    for (const x of sockets) x.destroy();
    return new Promise((r) => server.close(r));
  });
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, hits: () => hits };
}

const upstreamOf = (key: string, url: string) => httpRoute(s.gw.routes, key).upstreams.find((u) => u.url === new URL(url).href)!;

test('proxy: hop-by-hop headers are removed both ways; X-Forwarded-*, Via and the request id are set; one Date, one Server', async () => {
  const [b] = await backends(1, (_req, res) => {
    res.setHeader('connection', 'x-resp-hop');
    res.setHeader('x-resp-hop', 'secret');
    res.setHeader('keep-alive', 'timeout=5');
    res.setHeader('proxy-authenticate', 'Basic');
    res.setHeader('trailer', 'x-t');
    res.setHeader('server', 'backend/1.0');
    res.setHeader('via', '1.1 inner');
    res.setHeader('x-request-id', 'backend-made-this-up');
    res.setHeader('set-cookie', ['a=1', 'b=2']);
    res.write('chunked ');
    res.end('body');
  });
  await putRoute(kv, s.gw, 'api.hdr', { upstreams: [{ url: b!.url }] });
  // Raw, because fetch clients refuse to send some of these headers.
  const c = new RawSession(s.gw.port);
  c.send(
    'GET /hdr/x?q=1 HTTP/1.1\r\nHost: gw.example\r\nConnection: keep-alive, x-client-hop\r\nX-Client-Hop: hidden\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n' +
      'Proxy-Authorization: Basic c2VjcmV0\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-Request-Id: rid-42\r\nX-End-To-End: kept\r\n\r\n',
  );
  const raw = await c.read();
  c.close();
  assert.equal(raw.status, 200);
  const r = await request(`${s.base}/hdr/x?q=1`, { headers: { 'x-request-id': 'rid-42' } });
  assert.equal(await r.body.text(), 'chunked body');
  const seen = b!.requests[0]!;
  assert.equal(seen.url, '/hdr/x?q=1');
  for (const hop of ['x-client-hop', 'keep-alive', 'te', 'proxy-authorization']) assert.equal(seen.headers[hop], undefined, `request ${hop}`);
  assert.equal(seen.headers['x-end-to-end'], 'kept');
  assert.equal(seen.headers['x-forwarded-for'], '127.0.0.1', 'spoofed X-Forwarded-For replaced');
  assert.equal(seen.headers['x-forwarded-proto'], 'http');
  assert.equal(seen.headers['x-forwarded-host'], 'gw.example');
  assert.equal(seen.headers.via, '1.1 natsgw');
  assert.equal(seen.headers['x-request-id'], 'rid-42');
  assert.equal(seen.headers.host, `127.0.0.1:${b!.port}`, 'Host is the backend (preserveHost off)');
  for (const hop of ['x-resp-hop', 'keep-alive', 'proxy-authenticate', 'trailer']) {
    assert.equal(raw.headers[hop], undefined, `response ${hop}`);
    assert.equal(r.headers[hop], undefined, `response ${hop}`);
  }
  assert.equal(raw.headers.date?.length, 1, 'exactly one Date');
  assert.equal(raw.headers.server?.length, 1, 'exactly one Server');
  assert.equal(r.headers.server, 'backend/1.0', 'Server passes once');
  assert.equal(typeof r.headers.date, 'string', 'exactly one Date');
  assert.equal(r.headers.via, '1.1 inner, 1.1 natsgw');
  assert.equal(r.headers['x-request-id'], 'rid-42');
  assert.deepEqual(r.headers['set-cookie'], ['a=1', 'b=2']);
});

test('proxy: preserveHost, stripPrefix, addPrefix, a base path, and header set/remove', async () => {
  const [b] = await backends(1, (_req, res) => {
    res.setHeader('x-powered-by', 'leaky');
    res.end('ok');
  });
  await putRoute(kv, s.gw, 'api.rw.v1', {
    upstreams: [{ url: `${b!.url}/base` }],
    stripPrefix: true,
    addPrefix: '/v2',
    preserveHost: true,
    requestHeaders: { set: { 'X-Api-Key': 'k1' }, remove: ['Cookie'] },
    responseHeaders: { set: { 'x-served-by': 'natsgw' }, remove: ['X-Powered-By'] },
  });
  const r = await request(`${s.base}/rw/v1/users/7?a=1`, { headers: { host: 'shop.example', cookie: 'sid=1', 'x-api-key': 'client-tried' } });
  assert.equal(await r.body.text(), 'ok');
  const seen = b!.requests[0]!;
  assert.equal(seen.url, '/base/v2/users/7?a=1');
  assert.equal(seen.headers.host, 'shop.example');
  assert.equal(seen.headers['x-api-key'], 'k1');
  assert.equal(seen.headers.cookie, undefined);
  assert.equal(r.headers['x-powered-by'], undefined);
  assert.equal(r.headers['x-served-by'], 'natsgw');
  // The route's own path maps to the base of the backend.
  await (await request(`${s.base}/rw/v1`)).body.dump();
  assert.equal(b!.requests[1]!.url, '/base/v2/');
});

test('proxy: an upstream that answers garbage → 502 (or a cut-off response once headers went out), counted as a failure', async () => {
  const garbage = await rawServer((sock) => sock.end('HELLO THERE\r\n\r\n'));
  const truncated = await rawServer((sock) => sock.end('HTTP/1.1 200 OK\r\nContent-Le'));
  const short = await rawServer((sock) => sock.end('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc'));
  const badChunks = await rawServer((sock) => sock.end('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n'));
  for (const [key, srv] of [
    ['garbage', garbage],
    ['truncated', truncated],
  ] as const) {
    await putRoute(kv, s.gw, `api.bad.${key}`, { upstreams: [{ url: srv.url }], retries: 0 });
    const r = await request(`${s.base}/bad/${key}`);
    assert.equal(r.statusCode, 502, key);
    const p = (await r.body.json()) as { code: string; detail: string };
    assert.equal(p.code, 'upstream-error');
    assert.equal(upstreamOf(`api.bad.${key}`, srv.url).failures, 1, `${key} counted`);
  }
  for (const [key, srv] of [
    ['short', short],
    ['chunks', badChunks],
  ] as const) {
    await putRoute(kv, s.gw, `api.bad.${key}`, { upstreams: [{ url: srv.url }], retries: 0 });
    const r = await request(`${s.base}/bad/${key}`);
    assert.equal(r.statusCode, 200, `${key}: headers were already sent`);
    await assert.rejects(r.body.text(), `${key}: the client sees the response cut off`);
    await eventually(() => upstreamOf(`api.bad.${key}`, srv.url).failures === 1, 2000, `${key} counted`);
  }
  await eventually(() => s.gw.inFlight === 0, 2000, 'nothing in flight');
});

test('proxy: bodies up to maxRequestBodyBytes reach the backend whole; larger → 413 without reading them', async () => {
  const [b] = await backends(1, (_req, res, body) => res.end(String(body.length)));
  await putRoute(kv, s.gw, 'api.upload', { upstreams: [{ url: b!.url }], maxRequestBodyBytes: 100_000 });
  const ok = await request(`${s.base}/upload`, { method: 'POST', body: Buffer.alloc(100_000, 7) });
  assert.equal(await ok.body.text(), '100000');
  assert.deepEqual(b!.requests[0]!.body, Buffer.alloc(100_000, 7));
  const big = await request(`${s.base}/upload`, { method: 'POST', body: Buffer.alloc(100_001, 7) });
  assert.equal(big.statusCode, 413);
  assert.match(((await big.body.json()) as { detail: string }).detail, /limit of 100000 bytes/);
  async function* chunks() {
    for (let i = 0; i < 20; i++) yield Buffer.alloc(10_000, 1);
  }
  const chunked = await request(`${s.base}/upload`, { method: 'POST', body: Readable.from(chunks()) }).catch((e: Error) => e);
  if (!(chunked instanceof Error)) {
    assert.equal(chunked.statusCode, 413);
    await chunked.body.dump();
  }
  assert.equal(b!.hits, 1, 'nothing oversize was forwarded');
});

test('proxy: a slow upstream → 504; a body that dribbles is cut off by the idle timeout', async () => {
  const [slow] = await backends(1, (_req, res) => setTimeout(() => res.end('late'), 1500));
  await putRoute(kv, s.gw, 'api.slow', { upstreams: [{ url: slow!.url }], timeoutMs: 300 });
  const t0 = Date.now();
  const r = await request(`${s.base}/slow`);
  assert.equal(r.statusCode, 504);
  assert.ok(Date.now() - t0 < 1200, `answered after ${Date.now() - t0} ms`);
  assert.equal(((await r.body.json()) as { code: string }).code, 'upstream-timeout');

  const [dribble] = await backends(1, (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.write('first part,');
    setTimeout(() => res.end('never in time'), 1500);
  });
  await putRoute(kv, s.gw, 'api.dribble', { upstreams: [{ url: dribble!.url }], timeoutMs: 300 });
  const d = await request(`${s.base}/dribble`);
  assert.equal(d.statusCode, 200);
  await assert.rejects(d.body.text(), 'cut off after the idle timeout');
});

test('proxy: a head the backend sends before its body reaches the client at once (known length)', async () => {
  const [b] = await backends(1, (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '5' });
    res.flushHeaders();
    setTimeout(() => res.end('later'), 1500);
  });
  await putRoute(kv, s.gw, 'api.headfirst', { upstreams: [{ url: b!.url }] });
  const t0 = Date.now();
  const r = await request(`${s.base}/headfirst`);
  const headAfter = Date.now() - t0;
  assert.equal(r.statusCode, 200);
  assert.ok(headAfter < 1000, `head arrived after ${headAfter} ms, not with the body`);
  assert.equal(await r.body.text(), 'later');
});

test("proxy: the idle limit counts the backend's silence, not a slow client's backpressure", async () => {
  // 16 MiB sent at once fills every buffer on the way, so the gateway pauses
  // the upstream read while this client sleeps for well over timeoutMs.
  const [big] = await backends(1, (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(16 * 1024 * 1024) });
    res.end(Buffer.alloc(16 * 1024 * 1024, 0x62));
  });
  await putRoute(kv, s.gw, 'api.slowreader', { upstreams: [{ url: big!.url }], timeoutMs: 200 });
  const r = await request(`${s.base}/slowreader`, { highWaterMark: 64 * 1024 });
  assert.equal(r.statusCode, 200);
  let received = 0;
  let slept = false;
  for await (const chunk of r.body as AsyncIterable<Buffer>) {
    received += chunk.length;
    if (!slept && received >= 1024 * 1024) {
      slept = true;
      await new Promise((res) => setTimeout(res, 1000));
    }
  }
  assert.equal(received, 16 * 1024 * 1024, "the whole body arrived after the client's pause");
});

test('proxy: a try that waits for a free connection past tryTimeoutMs moves on, even a POST (nothing was sent)', async () => {
  let held: (() => void) | undefined;
  // Answers its headers at once and holds the body: its one connection stays busy.
  const [busy] = await backends(1, (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '4' });
    res.flushHeaders();
    held = () => res.end('late');
  });
  const [spare] = await backends(1, (req, res) => res.end(`spare ${req.method}`));
  // One connection to `busy`; round-robin sends the first two requests there.
  await putRoute(kv, s.gw, 'api.queued', {
    upstreams: [
      { url: busy!.url, weight: 100 },
      { url: spare!.url, weight: 1 },
    ],
    balancing: 'round-robin',
    maxConnections: 1,
    tryTimeoutMs: 300,
    timeoutMs: 5000,
    retries: 1,
    passiveHealth: { consecutiveFailures: 100 },
  });
  const first = await request(`${s.base}/queued/first`); // takes busy's only connection
  assert.equal(first.statusCode, 200);
  const t0 = Date.now();
  const second = await request(`${s.base}/queued/second`, { method: 'POST', body: 'once' });
  assert.equal(second.statusCode, 200);
  assert.equal(await second.body.text(), 'spare POST', 'the queued POST went to the other backend');
  assert.ok(Date.now() - t0 < 2000, `moved on after ${Date.now() - t0} ms`);
  assert.equal(busy!.hits, 1, 'the busy backend never saw the POST');
  held!();
  assert.equal(await first.body.text(), 'late', 'the first response, held meanwhile, completes');
  // The connection is free now, and undici still holds the given-up POST: it must not go out.
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(busy!.hits, 1, 'the given-up POST was never sent, even once a connection was free');
  const again = await request(`${s.base}/queued/again`);
  assert.equal(again.statusCode, 200, 'the backend is still served afterwards');
  await again.body.dump();
});

test('proxy: connection refused everywhere → 502 after trying each; accepted but never answered → failover', async () => {
  const [p1, p2] = (await freePorts(2)) as [number, number];
  await putRoute(kv, s.gw, 'api.refused', { upstreams: [{ url: `http://127.0.0.1:${p1}` }, { url: `http://127.0.0.1:${p2}` }], retries: 3 });
  const r = await request(`${s.base}/refused`, { method: 'POST', body: 'x' });
  assert.equal(r.statusCode, 502);
  const detail = ((await r.body.json()) as { detail: string }).detail;
  assert.equal(detail, 'the backend of api.refused failed to answer', 'no address or OS error for the client');
  assert.ok(
    s.logs.some((l) => l.msg === 'override request failed' && /ECONNREFUSED/.test(String(l.detail))),
    'the log has the OS error',
  );
  const route = httpRoute(s.gw.routes, 'api.refused');
  assert.deepEqual(
    route.upstreams.map((u) => u.failures),
    [1, 1],
    'both tried once, even for POST: it never reached them',
  );

  const silent = await rawServer(() => undefined); // accepts, reads, never answers
  const [good] = await backends(1);
  await putRoute(kv, s.gw, 'api.failover', { upstreams: [{ url: silent.url }, { url: good!.url }], balancing: 'round-robin', tryTimeoutMs: 300, timeoutMs: 3000, retries: 1 });
  for (let i = 0; i < 4; i++) {
    const x = await request(`${s.base}/failover/${i}`);
    assert.equal(x.statusCode, 200, `request ${i}`);
    await x.body.dump();
  }
  assert.ok(silent.hits() >= 1, 'the silent backend was tried');
});

test('proxy: retries — after a reset only idempotent requests move on to another backend; nothing runs twice', async () => {
  // "dies" reads the request, then resets the connection without answering.
  const dies = await rawServer((sock) => sock.resetAndDestroy());
  const [ok] = await backends(1, (req, res) => res.end(`ok ${req.method}`));
  const route = { upstreams: [{ url: dies.url }, { url: ok!.url }], balancing: 'round-robin', retries: 1, passiveHealth: { consecutiveFailures: 100 } };
  // A fresh route's round-robin starts with the first backend: the one that dies.
  await putRoute(kv, s.gw, 'api.retry.get', route);
  const g = await request(`${s.base}/retry/get`);
  assert.equal(g.statusCode, 200, 'the GET was retried');
  assert.equal(await g.body.text(), 'ok GET');
  await putRoute(kv, s.gw, 'api.retry.post', route);
  const before = dies.hits();
  const p = await request(`${s.base}/retry/post`, { method: 'POST', body: 'once' });
  assert.equal(p.statusCode, 502, 'the POST reached a backend, so it is not retried');
  await p.body.dump();
  assert.equal(dies.hits() - before, 1);
  assert.equal(ok!.requests.filter((r) => r.method === 'POST').length, 0, 'and did not run anywhere else');
});

test('proxy: the retry budget caps retries when every backend fails', async () => {
  const failing = await backends(2, (_req, res) => {
    res.statusCode = 503;
    res.end('busy');
  });
  await putRoute(kv, s.gw, 'api.storm', {
    upstreams: failing.map((b) => ({ url: b.url })),
    retries: 1,
    retryBudget: { percent: 0, minPerSecond: 1 },
    passiveHealth: { consecutiveFailures: 1000 },
  });
  for (let i = 0; i < 40; i++) {
    const r = await request(`${s.base}/storm`);
    assert.equal(r.statusCode, 503);
    await r.body.dump();
  }
  const total = failing[0]!.hits + failing[1]!.hits;
  assert.ok(total >= 40 && total <= 50, `40 requests + at most 10 retries (1/s over 10 s), got ${total}`);
});

test('proxy: a backend that dies after its headers cuts the client response off; no retry', async () => {
  let calls = 0;
  const [b] = await backends(1, (_req, res) => {
    calls++;
    res.writeHead(200, { 'content-length': '1000' });
    res.write('partial');
    setTimeout(() => res.socket?.destroy(), 50);
  });
  const [other] = await backends(1);
  await putRoute(kv, s.gw, 'api.dies', { upstreams: [{ url: b!.url }, { url: other!.url }], balancing: 'round-robin', retries: 2 });
  // Round-robin starts at the first backend.
  const r = await request(`${s.base}/dies`);
  assert.equal(r.statusCode, 200);
  await assert.rejects(r.body.text());
  assert.equal(calls, 1);
  assert.equal(other!.hits, 0, 'not retried once bytes reached the client');
});

test('proxy: a client that disconnects mid-response cancels the upstream request, frees the connection, and is not a failure', async () => {
  let upstreamClosed = false;
  const [b] = await backends(1, (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    const timer = setInterval(() => res.write('tick\n'), 20);
    res.on('close', () => {
      clearInterval(timer);
      upstreamClosed = true;
    });
  });
  await putRoute(kv, s.gw, 'api.stream', { upstreams: [{ url: b!.url }] });
  const r = await request(`${s.base}/stream`);
  assert.equal(r.statusCode, 200);
  for await (const _ of r.body) break; // first chunk, then hang up
  r.body.destroy();
  await eventually(() => upstreamClosed, 3000, 'the upstream request was cancelled');
  const u = upstreamOf('api.stream', b!.url);
  await eventually(() => u.inFlight === 0, 2000, 'in-flight released');
  assert.equal(u.failures, 0, 'a client abort is not a backend failure');
  await eventually(() => s.gw.inFlight === 0, 2000, 'gateway in-flight released');
});

test('proxy: with every backend unavailable → 503 at once; why (breaker open) is logged and in /backends, not in the body', async () => {
  const [a, b] = await backends(2, (_req, res) => {
    res.statusCode = 502;
    res.end();
  });
  await putRoute(kv, s.gw, 'api.alldown', {
    upstreams: [{ url: a!.url }, { url: b!.url }],
    retries: 0,
    circuitBreaker: { failureThreshold: 1, openMs: 60_000 },
    passiveHealth: { consecutiveFailures: 1000 },
  });
  for (let i = 0; i < 4; i++) await (await request(`${s.base}/alldown`)).body.dump();
  const t0 = Date.now();
  const r = await request(`${s.base}/alldown`);
  assert.equal(r.statusCode, 503);
  assert.ok(Date.now() - t0 < 200);
  const p = (await r.body.json()) as { code: string; detail: string };
  assert.equal(p.code, 'no-backend');
  assert.equal(p.detail, 'no backend of api.alldown is available');
  const logged = s.logs.filter((l) => l.msg === 'override request failed' && l.route === 'api.alldown').at(-1);
  assert.match(String(logged?.detail), new RegExp(`${a!.url}/? breaker open, ${b!.url}/? breaker open`));
  const view = (await (await request(`http://127.0.0.1:${s.gw.adminPort}/backends`)).body.json()) as Array<{ routes: string[]; breaker: string }>;
  assert.deepEqual(
    view.filter((v) => v.routes.includes('api.alldown')).map((v) => v.breaker),
    ['open', 'open'],
  );
});

test('proxy: an upstream that answers early (401 before reading the body) is passed on, not counted as a failure', async () => {
  const [b] = await backends(1);
  b!.handler = (_req, res) => {
    res.statusCode = 401;
    res.end('who are you');
  };
  await putRoute(kv, s.gw, 'api.early', { upstreams: [{ url: b!.url }] });
  const r = await request(`${s.base}/early`, { method: 'POST', body: Buffer.alloc(200_000, 1) });
  assert.equal(r.statusCode, 401);
  assert.equal(await r.body.text(), 'who are you');
  assert.equal(upstreamOf('api.early', b!.url).failures, 0);
});

test('proxy: a backend that fails fast does not attract traffic from least-connections: ejection catches it', async () => {
  const [bad] = await backends(1, (_req, res) => {
    res.statusCode = 503;
    res.end();
  });
  const [good] = await backends(1, (_req, res) => setTimeout(() => res.end('ok'), 20));
  await putRoute(kv, s.gw, 'api.fastfail', {
    upstreams: [{ url: bad!.url }, { url: good!.url }],
    balancing: 'least-connections',
    retries: 1,
    passiveHealth: { consecutiveFailures: 3, baseEjectionMs: 30_000 },
  });
  const statuses: number[] = [];
  await Promise.all(
    Array.from({ length: 4 }, async () => {
      for (let i = 0; i < 25; i++) {
        const r = await request(`${s.base}/fastfail`);
        statuses.push(r.statusCode);
        await r.body.dump();
      }
    }),
  );
  // Up to three failures eject it; a few more may already be in flight from the other clients.
  assert.ok(bad!.hits <= 8, `the failing backend got ${bad!.hits} of 100`);
  assert.ok(upstreamOf('api.fastfail', bad!.url).isEjected(Date.now()), 'it is ejected');
  assert.ok(
    statuses.every((x) => x === 200),
    'retries hid its failures from clients',
  );
});

test('proxy: dot segments never take a request outside its route: normalised before matching and forwarding, or 400; nothing else reaches the backend', async () => {
  const [b] = await backends(1, (req, res) => res.end(`saw ${req.url}`));
  await putRoute(kv, s.gw, 'api.legacy2', { upstreams: [{ url: `${b!.url}/base` }], stripPrefix: true });
  const c = new RawSession(s.gw.port);
  for (const [target, expected] of [
    ['/legacy2/a/../b', 'saw /base/b'],
    ['/legacy2/./x/%2e/y', 'saw /base/x/y'],
    ['/legacy2/q?x=1', 'saw /base/q?x=1'],
  ] as const) {
    c.send(`GET ${target} HTTP/1.1\r\nHost: x\r\n\r\n`);
    const r = await c.read();
    assert.deepEqual([r.status, r.body], [200, expected], target);
  }
  c.close();
  const hits = b!.hits;
  for (const target of ['/legacy2/../../internal', '/legacy2/%2e%2e/%2e%2e/internal', '/legacy2/..%2f..%2finternal', '/legacy2/..\\..\\internal', '/legacy2/x%2F..%2F..']) {
    const r = parseOne(await rawText(`GET ${target} HTTP/1.1\r\nHost: x\r\n\r\n`));
    assert.equal(r.status, 400, target);
  }
  // Climbing out of the route but not above the root is just another path: not this route's.
  const elsewhere = parseOne(await rawText('GET /legacy2/../internal HTTP/1.1\r\nHost: x\r\n\r\n'));
  assert.equal(elsewhere.status, 503, 'api.internal is on NATS, where nobody listens');
  assert.equal(b!.hits, hits, 'the backend saw none of them');
});

test("proxy: failures the request itself causes are the client's: no breaker opens, no backend is ejected or counted, no retry budget is spent", async () => {
  let release: (() => void) | undefined;
  const [b] = await backends(1, (req, res) => {
    if (req.url === '/busy/hold') {
      // The head goes out at once, the body is held: the one connection stays busy.
      res.writeHead(200, { 'content-length': '4' });
      res.flushHeaders();
      release = () => res.end('held');
    } else res.end(`ok ${req.method} ${req.url}`);
  });
  await putRoute(kv, s.gw, 'api.busy', {
    upstreams: [{ url: b!.url }],
    preserveHost: true,
    maxConnections: 1,
    tryTimeoutMs: 200,
    timeoutMs: 5000,
    retries: 1,
    circuitBreaker: { failureThreshold: 2, openMs: 60_000 },
    passiveHealth: { consecutiveFailures: 2 },
  });
  const u = httpRoute(s.gw.routes, 'api.busy').upstreams[0]!;
  for (let i = 0; i < 5; i++) {
    assert.equal(parseOne(await rawText(`GET /busy/del HTTP/1.1\r\nHost: x\r\nX-V: a\x7fb\r\n\r\n`)).status, 400, 'DEL in a header value');
    assert.equal(parseOne(await rawText('GET /busy/host HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n')).status, 400, 'two Hosts on a preserveHost route');
    assert.equal(parseOne(await rawText('CONNECT /busy/tunnel HTTP/1.1\r\nHost: x\r\n\r\n')).status, 501, 'CONNECT');
    const nonAscii = parseOne(await rawText('GET /busy/\xc3\xbc HTTP/1.1\r\nHost: x\r\n\r\n'));
    assert.deepEqual([nonAscii.status, nonAscii.body], [200, 'ok GET /busy/%C3%BC'], 'a raw non-ASCII path is percent-encoded and served');
  }
  // Our own pool is full: the one connection is held.
  const held = request(`${s.base}/busy/hold`);
  await eventually(() => release !== undefined, 2000, 'the held request reached the backend');
  for (let i = 0; i < 5; i++) {
    const r = await request(`${s.base}/busy/queued/${i}`);
    assert.equal(r.statusCode, 503, 'our own queue: 503');
    assert.equal(((await r.body.json()) as { code: string }).code, 'upstream-busy');
  }
  release!();
  await (await held).body.dump();
  assert.equal(u.breaker!.state, 'closed');
  assert.deepEqual([u.failures, u.ejections, u.timeouts, u.retries], [0, 0, 0, 0]);
  const after = await request(`${s.base}/busy/after`);
  assert.equal(after.statusCode, 200);
  await after.body.dump();
});

test('proxy: a try given up in our full pool moves to another backend without spending the retry budget', async () => {
  let release: (() => void) | undefined;
  const [busy] = await backends(1, (_req, res) => {
    res.writeHead(200, { 'content-length': '4' });
    res.flushHeaders();
    release = () => res.end('held');
  });
  const [spare] = await backends(1, (req, res) => res.end(`spare ${req.method}`));
  await putRoute(kv, s.gw, 'api.nobudget', {
    upstreams: [
      { url: busy!.url, weight: 100 },
      { url: spare!.url, weight: 1 },
    ],
    balancing: 'round-robin',
    maxConnections: 1,
    tryTimeoutMs: 200,
    retries: 1,
    retryBudget: { percent: 0, minPerSecond: 0 }, // no retry budget at all
  });
  const held = request(`${s.base}/nobudget/hold`);
  await eventually(() => release !== undefined, 2000, 'busy holds its one connection');
  const moved = await request(`${s.base}/nobudget/post`, { method: 'POST', body: 'x' });
  assert.equal(moved.statusCode, 200);
  assert.equal(await moved.body.text(), 'spare POST');
  release!();
  await (await held).body.dump();
});

test('proxy: non-ASCII header bytes pass unchanged both ways; every Connection field from a backend counts', async () => {
  const [b] = await backends(1, (req, res) => {
    const raw = req.rawHeaders[req.rawHeaders.findIndex((h) => h.toLowerCase() === 'x-name') + 1]!;
    res.setHeader('x-seen', Buffer.from(raw, 'latin1').toString('hex'));
    res.setHeader('x-back', 'café ok'); // node:http writes header strings as UTF-8 bytes
    res.setHeader('connection', ['x-one', 'x-two']);
    res.setHeader('x-one', '1');
    res.setHeader('x-two', '2');
    res.setHeader('x-kept', '3');
    res.end('ok');
  });
  await putRoute(kv, s.gw, 'api.bytes', { upstreams: [{ url: b!.url }] });
  const text = await rawText('GET /bytes HTTP/1.1\r\nHost: x\r\nX-Name: Jos\xc3\xa9 \xe2\x82\xac ok\r\n\r\n');
  const r = parseOne(text);
  assert.equal(r.status, 200);
  assert.equal(r.headers['x-seen']?.[0], Buffer.from('José € ok', 'utf8').toString('hex'), "the backend got the client's bytes");
  assert.equal(r.headers['x-back']?.[0], Buffer.from('café ok', 'utf8').toString('latin1'), "the client got the backend's bytes");
  assert.equal(r.headers['x-one'], undefined);
  assert.equal(r.headers['x-two'], undefined);
  assert.deepEqual(r.headers['x-kept'], ['3']);
});

async function rawText(raw: string): Promise<string> {
  return (await rawRequest(s.gw.port, raw)).text;
}
function parseOne(text: string): { status: number; headers: Record<string, string[]>; body: string } {
  const [first] = parseResponsesOf(text);
  assert.ok(first, `a response: ${JSON.stringify(text.slice(0, 200))}`);
  return first;
}
