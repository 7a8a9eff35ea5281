/**
 * Raw NATS routes: a routes-bucket entry with target nats-raw keeps its
 * subject tree on NATS without the envelope, so a plain NATS responder
 * (no SDK) answers HTTP: the body is the payload, the request line and
 * headers are NATS headers, the reply's headers and Natsgw-Status are the
 * response's.
 */
import { Readable } from 'node:stream';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { headers as natsHeaders, type Msg } from '@nats-io/transport-node';
import { request } from 'undici';
import { connectRaw } from '@natsgw/devkit';
import { parseRoute } from '../src/routes/route-schema.js';
import { deleteRoute, putRoute, routesBucket } from './backends.js';
import { answerWithProtocolBlock, runCli, startStack } from './helpers.js';

const reply = (m: Msg, body: string, hs: Record<string, string | string[]>) => {
  const h = natsHeaders();
  for (const [k, v] of Object.entries(hs)) for (const x of Array.isArray(v) ? v : [v]) h.append(k, x);
  m.respond(body, { headers: h });
};

test('raw routes: a plain NATS responder answers HTTP; request line and headers arrive as NATS headers, the reply headers and Natsgw-Status are the response', async () => {
  const s = await startStack();
  try {
    const seen: Msg[] = [];
    s.nc.subscribe('api.raw.>', {
      callback: (_e, m) => {
        seen.push(m);
        reply(m, `made ${m.data.length} bytes`, { 'Natsgw-Status': '201', 'content-type': 'text/plain', 'set-cookie': ['a=1', 'b=2'], 'x-custom': 'yes', 'Natsgw-Other': 'not for the client' });
      },
    });
    await s.nc.flush();
    await putRoute(await routesBucket(s.nc), s.gw, 'api.raw', { target: 'nats-raw' });

    const body = Buffer.from([0, 1, 2, 255, 10, 13]);
    const r = await request(`${s.base}/raw/orders/7?x=1&y=%20`, { method: 'POST', body, headers: { 'x-client': 'c1', 'natsgw-method': 'FAKE', 'nats-service-error-code': '500' } });
    assert.equal(r.statusCode, 201);
    assert.equal(await r.body.text(), 'made 6 bytes');
    assert.deepEqual(r.headers['set-cookie'], ['a=1', 'b=2'], 'repeated headers stay repeated');
    assert.equal(r.headers['x-custom'], 'yes');
    assert.equal(r.headers['natsgw-status'], undefined);
    assert.equal(r.headers['natsgw-other'], undefined, 'the gateway keeps its own names to itself');

    const m = seen[0]!;
    assert.equal(m.subject, 'api.raw.orders.7');
    assert.deepEqual(Buffer.from(m.data), body, 'the body is the payload, byte for byte');
    const h = m.headers!;
    assert.deepEqual(
      ['Natsgw-Method', 'Natsgw-Path', 'Natsgw-Query', 'Natsgw-Remote', 'Natsgw-Scheme', 'x-client', 'content-length'].map((k) => h.get(k)),
      ['POST', '/raw/orders/7', 'x=1&y=%20', '127.0.0.1', 'http', 'c1', '6'],
    );
    assert.equal(h.get('Natsgw-Request-Id'), r.headers['x-request-id']);
    assert.match(h.get('Natsgw-Host'), /^127\.0\.0\.1:\d+$/);
    assert.deepEqual(h.values('Natsgw-Method'), ['POST'], "a client's Natsgw-* header is dropped, never passed");
    assert.equal(h.get('nats-service-error-code'), '', "nor a client's Nats-*");

    // Removing the entry sends the subject tree back to the envelope path.
    await deleteRoute(await routesBucket(s.nc), s.gw, 'api.raw');
    await s.serve((_req, res) => res.end('envelope'), { nats: s.nc, subject: 'api.env' });
    assert.equal(await (await request(`${s.base}/env`)).body.text(), 'envelope');
  } finally {
    await s.close();
  }
});

test('raw routes: no responders 503, timeout 504, an invalid status or header from the service 502, service errors mapped, body limit 413', async () => {
  const s = await startStack({ timeout: 600 });
  try {
    s.nc.subscribe('api.svc.>', {
      callback: (_e, m) => {
        const what = m.subject.split('.')[2];
        if (what === 'silent') return;
        if (what === 'status') return reply(m, 'x', { 'Natsgw-Status': '99' });
        if (what === 'header') return reply(m, 'x', { 'bad@name': 'v' });
        if (what === 'error') return reply(m, 'ignored', { 'Nats-Service-Error-Code': '404', 'Nats-Service-Error': 'no such thing' });
        reply(m, `len ${m.data.length}`, {});
      },
    });
    await s.nc.flush();
    const kv = await routesBucket(s.nc);
    await putRoute(kv, s.gw, 'api.svc', { target: 'nats-raw', maxRequestBodyBytes: 1000 });
    await putRoute(kv, s.gw, 'api.nobody', { target: 'nats-raw' });
    const status = async (path: string, init: Parameters<typeof request>[1] = {}) => {
      const r = await request(`${s.base}${path}`, init);
      return [r.statusCode, (await r.body.text()).slice(0, 300)] as const;
    };
    assert.equal((await status('/nobody/home'))[0], 503);
    assert.equal((await status('/svc/silent'))[0], 504);
    const [badStatus, why] = await status('/svc/status');
    assert.equal(badStatus, 502);
    assert.match(why, /Natsgw-Status \\"99\\" is not a status/);
    assert.equal((await status('/svc/header'))[0], 502);
    // nats.js will not send a control character in a header value; another NATS user's client may.
    const raw = await connectRaw(s.ns.url);
    s.track({ drain: async () => raw.close() });
    raw.subscribe('api.ctl.>', (m) => raw.publish(m.reply!, 'x', { headerBlock: 'NATS/1.0\r\nx-evil: a\u0001b\r\n\r\n' }));
    await raw.flush();
    await putRoute(kv, s.gw, 'api.ctl', { target: 'nats-raw' });
    const [ctl, ctlWhy] = await status('/ctl/x');
    assert.equal(ctl, 502, 'a control character in a reply header value never reaches the client');
    assert.match(ctlWhy, /control character/);
    const [errStatus, errBody] = await status('/svc/error');
    assert.equal(errStatus, 404);
    assert.match(errBody, /"code":"service-error","detail":"no such thing"/);
    assert.deepEqual(await status('/svc/ok', { method: 'POST', body: Buffer.alloc(1000, 1) }), [200, 'len 1000']);
    assert.equal((await status('/svc/ok', { method: 'POST', body: Buffer.alloc(1001, 1) }))[0], 413);
    // A chunked body arrives whole, as one payload.
    const chunked = await status('/svc/ok', {
      method: 'POST',
      body: Readable.from([Buffer.alloc(300), Buffer.alloc(400)]),
    });
    assert.deepEqual(chunked, [200, 'len 700']);
  } finally {
    await s.close();
  }
});

test('raw routes: one schema says what a raw entry may hold; the CLI writes one with --nats-raw', async () => {
  assert.deepEqual(parseRoute({ target: 'nats-raw' }), { ok: true, config: { target: 'nats-raw', maxRequestBodyBytes: 1048576 } });
  for (const [value, reason] of [
    [{ target: 'nats-raw', upstreams: [{ url: 'http://x' }] }, /upstreams: a nats-raw route takes only maxRequestBodyBytes/],
    [{ target: 'nats-raw', retries: 2 }, /retries: a nats-raw route takes only maxRequestBodyBytes/],
    [{ target: 'nats' }, /target: must be one of http, nats-raw/],
    [{ balancing: 'p2c' }, /upstreams: required for an HTTP override/],
  ] as const) {
    const r = parseRoute(value);
    assert.ok(!r.ok && reason.test(r.reason), `${JSON.stringify(value)}: ${JSON.stringify(r)}`);
  }

  const s = await startStack();
  try {
    const nats = ['--nats', s.ns.url];
    const put = await runCli(['routes', 'put', 'api.native', '--nats-raw', '--max-body', '4096', ...nats]);
    assert.equal(put.status, 0, put.stderr);
    assert.match(put.stdout, /^put api\.native \(revision \d+\): NATS, raw {2}\(max body 4096\)\n$/);
    const ls = await runCli(['routes', 'ls', ...nats]);
    assert.match(ls.stdout, /api\.native\s+\d+\s+.*NATS, raw/);
    const both = await runCli(['routes', 'put', 'api.native', '--nats-raw', '--upstream', 'http://127.0.0.1:9', ...nats]);
    assert.deepEqual([both.status, both.stderr], [2, 'natsgw: --nats-raw keeps the subject on NATS: it takes no --upstream\n']);
    const retries = await runCli(['routes', 'put', 'api.native', '--nats-raw', '--retries', '2', ...nats]);
    assert.deepEqual([retries.status, retries.stderr], [2, 'natsgw: --nats-raw takes only --max-body and policy options, not --retries\n']);
    const fleet = await runCli(['routes', '--gateway', `http://127.0.0.1:${s.gw.adminPort}`]);
    assert.match(fleet.stdout, /api\.native\s+\d+\s+applied\s+NATS, raw/);
  } finally {
    await s.close();
  }
});

test('raw routes: the reply header block in PROTOCOL.md §12, sent byte for byte, gives the response it describes', async () => {
  const s = await startStack();
  try {
    await answerWithProtocolBlock(s, 'api.doc.>', 'Natsgw-Status', 'made');
    await putRoute(await routesBucket(s.nc), s.gw, 'api.doc', { target: 'nats-raw' });
    const r = await request(`${s.base}/doc/x`);
    assert.deepEqual([r.statusCode, r.headers['content-type'], r.headers['set-cookie'], await r.body.text()], [201, 'text/plain', ['a=1', 'b=2'], 'made']);
  } finally {
    await s.close();
  }
});
