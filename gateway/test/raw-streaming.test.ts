/**
 * Streamed raw replies (PROTOCOL.md §12): a plain NATS responder answers
 * one HTTP response in several messages on the request's reply subject,
 * `Natsgw-More: 1` on every one but the last. Without credit in raw mode,
 * what waits for a slow client is bounded instead.
 */
import { connect as tcpConnect } from 'node:net';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { headers as natsHeaders, type Msg } from '@nats-io/transport-node';
import { request } from 'undici';
import { rawStreamBufferLimit } from '../src/nats/nats-stream.js';
import { putRoute, routesBucket } from './backends.js';
import { connectRaw } from '@natsgw/devkit';
import { eventually, protocolDoc, protocolHeaderBlock, startStack, type Stack } from './helpers.js';

const MORE = { 'Natsgw-More': '1' };

function send(m: Msg, body: string | Uint8Array, hs: Record<string, string> = {}): void {
  if (Object.keys(hs).length === 0) {
    m.respond(body);
    return;
  }
  const h = natsHeaders();
  for (const [k, v] of Object.entries(hs)) h.set(k, v);
  m.respond(body, { headers: h });
}

async function rawStack(flags: Record<string, unknown>, responder: (m: Msg) => void | Promise<void>): Promise<Stack> {
  const s = await startStack(flags);
  s.nc.subscribe('api.live.>', { callback: (_e, m) => void responder(m) });
  await s.nc.flush();
  await putRoute(await routesBucket(s.nc), s.gw, 'api.live', { target: 'nats-raw' });
  return s;
}

const cutOffLine = (s: Stack, requestId: unknown) => s.logs.find((l) => l.msg === 'request' && l.requestId === requestId)?.cutOff as string | undefined;

test('raw streaming: a reply with Natsgw-More: 1 goes on in the messages that follow; each piece reaches the client as it is sent', async () => {
  let release!: () => void;
  const released = new Promise<void>((r) => (release = r));
  const s = await rawStack({}, async (m) => {
    const what = m.subject.split('.')[2];
    if (what === 'ticks') {
      send(m, 'data: 1\n\n', { 'Natsgw-Status': '200', 'content-type': 'text/event-stream', ...MORE });
      await released; // the rest only once the client has read the first piece
      send(m, 'data: 2\n\n', MORE);
      send(m, 'data: 3\n\n');
    } else if (what === 'sized') {
      send(m, 'ab', { 'content-length': '6', ...MORE });
      send(m, 'cd', MORE);
      send(m, 'ef');
    } else if (what === 'empty-end') {
      send(m, 'all of it', { 'Natsgw-Status': '202', ...MORE });
      send(m, '');
    }
  });
  try {
    const r = await request(`${s.base}/live/ticks`);
    assert.deepEqual([r.statusCode, r.headers['content-type'], r.headers['natsgw-more'], r.headers['natsgw-status']], [200, 'text/event-stream', undefined, undefined]);
    const it = r.body[Symbol.asyncIterator]();
    const first = await Promise.race([it.next(), new Promise((_, reject) => setTimeout(() => reject(new Error('the first piece was held back')), 3000))]);
    assert.equal(Buffer.from((first as IteratorResult<Buffer>).value).toString(), 'data: 1\n\n');
    release();
    let rest = '';
    for (let n = await it.next(); !n.done; n = await it.next()) rest += Buffer.from(n.value as Buffer).toString();
    assert.equal(rest, 'data: 2\n\ndata: 3\n\n');

    const sized = await request(`${s.base}/live/sized`);
    assert.deepEqual([sized.headers['content-length'], await sized.body.text()], ['6', 'abcdef']);
    const empty = await request(`${s.base}/live/empty-end`);
    assert.deepEqual([empty.statusCode, await empty.body.text()], [202, 'all of it']);
    await eventually(() => s.gw.openStreams === 0, 2000, 'no stream left open');
  } finally {
    await s.close();
  }
});

test('raw streaming: a bad Natsgw-More is a 502 before the body and a cut-off after it; so are a service error mid-response and silence past --stream-idle-timeout', async () => {
  const s = await rawStack({ streamIdleTimeout: 500 }, (m) => {
    const what = m.subject.split('.')[2];
    if (what === 'bad-first') return send(m, 'x', { 'Natsgw-More': 'yes' });
    send(m, 'begun ', MORE);
    if (what === 'bad-later') send(m, 'x', { 'Natsgw-More': '2' });
    else if (what === 'error-later') send(m, '', { 'Nats-Service-Error-Code': '500', 'Nats-Service-Error': 'disk on fire' });
    // silent: nothing more
  });
  try {
    const bad = await request(`${s.base}/live/bad-first`);
    const problem = (await bad.body.json()) as { code: string; detail: string };
    assert.deepEqual([bad.statusCode, problem.code], [502, 'bad-reply']);
    assert.match(problem.detail, /Natsgw-More "yes" is not 1/);

    for (const [what, reason] of [
      ['bad-later', /Natsgw-More "2" is not 1/],
      ['error-later', /the service failed mid-response: disk on fire/],
      ['silent', /no message from the service for 500 ms/],
    ] as const) {
      const started = Date.now();
      const r = await request(`${s.base}/live/${what}`);
      assert.equal(r.statusCode, 200);
      await assert.rejects(r.body.text(), `${what}: the body is cut off, never ended as if complete`);
      await eventually(() => cutOffLine(s, r.headers['x-request-id']) !== undefined, 2000, 'the access line');
      assert.match(cutOffLine(s, r.headers['x-request-id'])!, reason);
      if (what === 'silent') assert.ok(Date.now() - started < 3000, 'cut off after the idle limit, not the 30 s timeout');
    }
  } finally {
    await s.close();
  }
});

test('raw streaming: a client that does not read is cut off once the bound of bytes waiting for it is passed; the gateway never buffers the rest', async () => {
  const piece = Buffer.alloc(512 * 1024, 7);
  const pieces = 64; // 32 MiB, far beyond the bound plus socket buffers
  let sent = 0;
  const s = await rawStack({}, (m) => {
    send(m, piece, MORE);
    for (sent = 1; sent < pieces - 1; sent++) send(m, piece, MORE);
    send(m, piece);
  });
  const socket = tcpConnect(s.gw.port, '127.0.0.1');
  try {
    await new Promise((r) => socket.once('connect', r));
    socket.pause(); // never reads
    socket.write('GET /live/flood HTTP/1.1\r\nhost: x\r\nx-request-id: flood-1\r\n\r\n');
    await eventually(() => cutOffLine(s, 'flood-1') !== undefined, 10_000, 'the slow client cut off');
    assert.match(cutOffLine(s, 'flood-1')!, new RegExp(`reads slower than the service sends: over ${rawStreamBufferLimit(1024 * 1024)} bytes waited`));
    assert.equal(sent, pieces - 1, 'the service sent everything (raw mode cannot slow it down)');
  } finally {
    socket.destroy();
    await s.close();
  }
});

test('raw streaming: the server-sent event example in PROTOCOL.md §12.1, sent byte for byte, gives the response it describes', async () => {
  const s = await rawStack({}, () => undefined);
  const raw = await connectRaw(s.ns.url);
  try {
    raw.subscribe('api.doc.>', (m) => {
      raw.publish(m.reply!, 'data: 1\n\n', { headerBlock: protocolHeaderBlock('Natsgw-More: 1\\r\\ncontent-type') });
      raw.publish(m.reply!, 'data: 2\n\n', { headerBlock: 'NATS/1.0\r\nNatsgw-More: 1\r\n\r\n' });
      raw.publish(m.reply!, 'data: 3\n\n');
    });
    await raw.flush();
    await putRoute(await routesBucket(s.nc), s.gw, 'api.doc', { target: 'nats-raw' });
    const r = await request(`${s.base}/doc/events`);
    assert.deepEqual([r.statusCode, r.headers['content-type'], await r.body.text()], [200, 'text/event-stream', 'data: 1\n\ndata: 2\n\ndata: 3\n\n']);
    assert.match(protocolDoc(), /`NATS\/1\.0\\r\\nNatsgw-More: 1\\r\\n\\r\\n` with\n`data: 2\\n\\n`/, 'the second message, as the text gives it');
  } finally {
    raw.close();
    await s.close();
  }
});
