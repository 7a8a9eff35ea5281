/**
 * Protocol v2 against hand-written peers (PROTOCOL.md §7), so the
 * specification, not the SDK, is what the gateway is held to: a v2
 * responder written from the document streams through; one that breaks the
 * rules (a lost frame, more than its credit, a hostile inbox, a cancel) is
 * cut off with the outcome §5 names.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import type { Msg } from '@nats-io/transport-node';
import { request } from 'undici';
import { decodeFrame, decodeRequest, encodeCancel, encodeData, encodeReply, encodeRequest, type Frame } from '@natsgw/service-sdk/protocol';
import { eventually, startStack, type Stack } from './helpers.js';

async function stack(t: TestContext): Promise<Stack> {
  const s = await startStack({ timeout: 5000, accessLog: false, streamIdleTimeout: 1000 });
  t.after(() => s.close());
  return s;
}

/** A hand-written v2 responder: `script` gets the request and a `send` for messages to the gateway; frames from the gateway are collected. */
async function responder(s: Stack, subject: string, script: (send: (data: Uint8Array) => void, inbox: string, credit: number, frames: Frame[]) => Promise<void>): Promise<Frame[]> {
  const frames: Frame[] = [];
  const inbox = `_INBOX.handwritten.${subject}`;
  s.nc.subscribe(inbox, {
    callback: (_e, m: Msg) => {
      const f = decodeFrame(m.data);
      if (typeof f !== 'string') frames.push(f);
    },
  });
  s.nc.subscribe(subject, {
    callback: (_e, m: Msg) => {
      const req = decodeRequest(m.data);
      assert.deepEqual(req.caps, ['stream']);
      void script((data) => s.nc.publish(m.reply!, data, { reply: inbox }), inbox, req.credit!, frames).catch(() => undefined);
    },
  });
  await s.nc.flush();
  return frames;
}

const head = (inbox: string, body: string, headers: string[] = []) => encodeReply({ v: 2, status: 200, headers, body: Buffer.from(body), more: true, inbox });
const data = (seq: number, body: string, more: boolean) => encodeData(seq, [Buffer.from(body)], Buffer.byteLength(body), more);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function bodyOutcome(url: string): Promise<{ status: number; text: string; cut: boolean }> {
  const r = await request(url);
  let text = '';
  try {
    for await (const c of r.body) text += Buffer.from(c as Buffer).toString();
    return { status: r.statusCode, text, cut: false };
  } catch {
    return { status: r.statusCode, text, cut: true };
  }
}

test('v2: a responder written from PROTOCOL.md streams through; the gateway tops its credit up', async (t) => {
  const s = await stack(t);
  const frames = await responder(s, 'api.hand.ok', async (send, inbox, credit) => {
    assert.equal(credit, 1024 * 1024);
    send(head(inbox, 'a', ['content-type', 'text/plain']));
    const chunk = 'x'.repeat(200 * 1024);
    for (let seq = 1; seq <= 8; seq++) {
      send(data(seq, chunk, true)); // 1.6 MiB in all: more than the first window
      await sleep(5);
    }
    send(data(9, 'z', false));
  });
  const out = await bodyOutcome(`${s.base}/hand/ok`);
  assert.equal(out.status, 200);
  assert.equal(out.cut, false);
  assert.equal(out.text.length, 1 + 8 * 200 * 1024 + 1);
  assert.ok(
    frames.some((f) => f.t === 'credit' && f.n > 0),
    'the gateway granted more credit as the client read',
  );
});

test('v2: a lost data frame (seq gap), a cancel, or a second head cut the stream off', async (t) => {
  const s = await stack(t);
  await responder(s, 'api.hand.gap', async (send, inbox) => {
    send(head(inbox, 'a'));
    send(data(1, 'b', true));
    send(data(3, 'd', false)); // 2 never came
  });
  await responder(s, 'api.hand.cancel', async (send, inbox) => {
    send(head(inbox, 'a'));
    await sleep(20);
    send(encodeCancel('the handler failed'));
  });
  await responder(s, 'api.hand.twice', async (send, inbox) => {
    send(head(inbox, 'a'));
    send(head(inbox, 'b'));
  });
  for (const path of ['gap', 'cancel', 'twice']) {
    const out = await bodyOutcome(`${s.base}/hand/${path}`);
    assert.equal(out.status, 200, path);
    assert.equal(out.cut, true, `${path}: the client sees the body cut off`);
    assert.ok(out.text.startsWith('a'), path);
  }
  await eventually(() => s.gw.inFlight === 0 && s.gw.openStreams === 0, 2000, 'nothing left in flight');
});

test('v2: a stream head naming a hostile inbox is a 502; frames before the head are a 502; a silent service is cut off after the idle limit', async (t) => {
  const s = await stack(t);
  s.nc.subscribe('api.hand.evil', {
    callback: (_e, m: Msg) => void m.respond(encodeReply({ v: 2, status: 200, headers: [], body: Buffer.alloc(0), more: true, inbox: '$JS.API.STREAM.DELETE.KV_natsgw-routes' })),
  });
  s.nc.subscribe('api.hand.early', { callback: (_e, m: Msg) => void m.respond(data(1, 'x', true)) });
  await responder(s, 'api.hand.silent', async (send, inbox) => {
    send(head(inbox, 'a'));
    // and nothing more, though it has credit
  });
  for (const path of ['evil', 'early']) {
    const r = await request(`${s.base}/hand/${path}`);
    assert.equal(r.statusCode, 502, path);
    assert.equal(((await r.body.json()) as { code: string }).code, 'bad-reply', path);
  }
  const t0 = Date.now();
  const silent = await bodyOutcome(`${s.base}/hand/silent`);
  assert.equal(silent.cut, true);
  assert.ok(Date.now() - t0 >= 900 && Date.now() - t0 < 3000, `cut off after --stream-idle-timeout 1000 (${Date.now() - t0} ms)`);
});

test('v2: a frame for a request that is over is answered with a cancel to its sender', async (t) => {
  const s = await stack(t);
  const frames = await responder(s, 'api.hand.late', async (send, inbox) => {
    send(head(inbox, 'a'));
    await sleep(300); // the client is gone by now
    send(data(1, 'b', true));
  });
  const r = await request(`${s.base}/hand/late`);
  r.body.destroy();
  // One cancel when the client went away, one more answering the late frame.
  await eventually(() => frames.filter((f) => f.t === 'cancel').length >= 2, 3000, 'a cancel answers the late frame');
});

test('v2: the SDK ends a request body stream whose sender goes beyond its credit, and tells it', async (t) => {
  const s = await stack(t);
  let closed = false;
  await s.serve(
    (req, res) => {
      // Never reads the body: no credit beyond the first window is granted.
      req.on('close', () => (closed = true));
      req.on('error', () => undefined);
      void res;
    },
    { nats: s.ns.url, subject: 'api.greedy' },
  );
  const g = `_INBOX.handwritten.gateway`;
  const frames: Frame[] = [];
  s.nc.subscribe(g, {
    callback: (_e, m: Msg) => {
      const f = decodeFrame(m.data);
      if (typeof f !== 'string') frames.push(f);
    },
  });
  const head = encodeRequest({
    v: 2,
    id: 'greedy1',
    method: 'POST',
    path: '/greedy',
    query: '',
    headers: ['transfer-encoding', 'chunked'],
    body: Buffer.alloc(0),
    remote: '127.0.0.1',
    scheme: 'http',
    host: 'x',
    root: 'api',
    subject: 'api.greedy',
    timeoutMs: 5000,
    caps: ['stream'],
    credit: 1024 * 1024,
    more: true,
  });
  s.nc.publish('api.greedy', head, { reply: g });
  await eventually(() => frames.some((f) => f.t === 'credit' && f.inbox !== undefined), 2000, 'the service grants a first window, naming its inbox');
  const credit = frames.find((f) => f.t === 'credit') as { n: number; inbox: string };
  const half = Math.ceil(credit.n / 2) + 1;
  s.nc.publish(credit.inbox, encodeData(1, [Buffer.alloc(half)], half, true), { reply: g });
  s.nc.publish(credit.inbox, encodeData(2, [Buffer.alloc(half)], half, true), { reply: g }); // 2 bytes beyond the credit
  await eventually(() => frames.some((f) => f.t === 'cancel'), 2000, 'the service cancels the stream');
  await eventually(() => closed, 2000, 'and its handler sees close');
});

test('v2: a frame on a reply subject nobody was given gets no answer: the gateway cannot be made to publish elsewhere', async (t) => {
  const s = await stack(t);
  // Learn the gateway's reply prefix from one ordinary request.
  let replySubject = '';
  s.nc.subscribe('api.learn', {
    callback: (_e, m: Msg) => {
      replySubject = m.reply!;
      m.respond(encodeReply({ v: 1, status: 200, headers: [], body: Buffer.from('ok') }));
    },
  });
  await s.nc.flush();
  assert.equal((await request(`${s.base}/learn`)).statusCode, 200);
  const prefix = replySubject.slice(0, replySubject.lastIndexOf('.') + 1);
  let reflected = 0;
  s.nc.subscribe('app.victim', {
    callback: () => {
      reflected++;
    },
  });
  s.nc.publish(prefix + '7_guessedkeyx', data(1, 'x', true), { reply: 'app.victim' });
  s.nc.publish(replySubject, data(1, 'x', true), { reply: 'app.victim' }); // answered already: not a stream that ended early
  await s.nc.flush();
  await sleep(300);
  assert.equal(reflected, 0);
});

test('v2: a service that sends beyond its credit while the client is not reading is cut off and told why; nothing past the window waits in the gateway', async (t) => {
  const s = await stack(t);
  const piece = Buffer.alloc(512 * 1024, 1);
  let sent = 0;
  const frames = await responder(s, 'api.hand.greedy', async (send, inbox) => {
    send(head(inbox, ''));
    // Ignores its credit altogether: 40 × 512 KiB as fast as NATS takes them.
    for (let seq = 1; seq <= 40; seq++) {
      send(encodeData(seq, [piece], piece.length, seq < 40));
      sent += piece.length;
    }
  });
  const socket = connect(s.gw.port, '127.0.0.1');
  t.after(() => socket.destroy());
  await new Promise((r) => socket.once('connect', r));
  socket.pause(); // never reads: the gateway's writes meet backpressure, so no more credit is granted
  socket.write('GET /hand/greedy HTTP/1.1\r\nhost: x\r\n\r\n');
  await eventually(() => frames.some((f) => f.t === 'cancel'), 10_000, 'a cancel to the service');
  const cancel = frames.find((f) => f.t === 'cancel') as { reason: string };
  assert.match(cancel.reason, /sent more than its credit/);
  await eventually(() => s.gw.openStreams === 0, 2000, 'the stream is gone');
  t.diagnostic(`the service sent ${sent / 1024 / 1024} MiB; the gateway cut it off at its credit`);
});
