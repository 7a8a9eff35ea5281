/**
 * NATS's standard service error headers (Nats-Service-Error-Code,
 * Nats-Service-Error) become HTTP errors; the SDK sets them on the 5xx
 * problems it sends itself, for NATS-native requesters.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { headers as natsHeaders } from '@nats-io/transport-node';
import { request } from 'undici';
import { decodeReply, encodeRequest } from '@natsgw/service-sdk/protocol';
import { answerWithProtocolBlock, protocolDoc, startStack } from './helpers.js';

const problemOf = async (r: Awaited<ReturnType<typeof request>>) => [r.statusCode, r.headers['content-type'], (await r.body.json()) as { status: number; code: string; detail: string }] as const;

test('service errors: a reply with Nats-Service-Error-Code answers that status (400–599, else 502) with a problem whose detail is the error text', async () => {
  const s = await startStack();
  try {
    // A hand-written micro-style responder: no SDK, no envelope in its answers.
    const cases: Record<string, [code: string, text: string, lowerCase?: boolean]> = {
      missing: ['404', 'order 7 not found'],
      conflict: ['409', 'order 7 was changed meanwhile', true],
      busy: ['503', 'x'.repeat(5000)],
      ok: ['200', 'not an error code'],
      garbage: ['abc', 'code is not a number'],
      huge: ['99999', 'too many digits'],
      silent: ['500', ''],
    };
    s.nc.subscribe('api.orders.>', {
      callback: (_e, m) => {
        const [code, text, lower] = cases[m.subject.split('.')[2]!]!;
        const h = natsHeaders();
        h.set(lower ? 'nats-service-error-code' : 'Nats-Service-Error-Code', code);
        h.set(lower ? 'nats-service-error' : 'Nats-Service-Error', text);
        m.respond('{"anything": "a micro service answers"}', { headers: h });
      },
    });
    await s.nc.flush();
    const ask = async (name: string) => problemOf(await request(`${s.base}/orders/${name}`));

    const [status, type, p] = await ask('missing');
    assert.deepEqual([status, type, p.status, p.code, p.detail], [404, 'application/problem+json', 404, 'service-error', 'order 7 not found']);
    assert.deepEqual((await ask('conflict')).slice(0, 1), [409], 'header names are matched case-insensitively');
    const busy = await ask('busy');
    assert.deepEqual([busy[0], busy[2].detail.length], [503, 1024], 'the error text is bounded');
    for (const name of ['ok', 'garbage', 'huge']) assert.equal((await ask(name))[0], 502, `${name}: a code that is no 4xx/5xx status → 502`);
    const silent = await ask('silent');
    assert.deepEqual([silent[0], silent[2].detail], [500, 'api.orders.silent answered with service error 500']);
  } finally {
    await s.close();
  }
});

test('service errors: the SDK sets both headers on its own 5xx problems (not on a handler 5xx); through the gateway its problem is unchanged', async () => {
  const s = await startStack();
  try {
    await s.serve(
      (req, res) => {
        if (req.url === '/sdk/throw') throw new Error('boom');
        res.statusCode = 503;
        res.end('the app said so');
      },
      { nats: s.nc, subject: 'api.sdk', logger: { error() {}, warn() {}, info() {} } },
    );
    const envelope = (path: string, subject: string) =>
      encodeRequest({ v: 1, id: 'native', method: 'GET', path, query: '', headers: [], body: Buffer.alloc(0), remote: '127.0.0.1', scheme: 'http', host: 'x', root: 'api', subject, timeoutMs: 5000 });
    const thrown = await s.nc.request('api.sdk.throw', envelope('/sdk/throw', 'api.sdk.throw'), { timeout: 5000 });
    assert.equal(thrown.headers?.get('Nats-Service-Error-Code'), '500');
    assert.match(thrown.headers?.get('Nats-Service-Error') ?? '', /failed while handling the request/);
    const decoded = decodeReply(thrown.data);
    assert.ok(typeof decoded !== 'string' && decoded.status === 500);
    const app503 = await s.nc.request('api.sdk.x', envelope('/sdk/x', 'api.sdk.x'), { timeout: 5000 });
    assert.equal(app503.headers?.get('Nats-Service-Error-Code') ?? '', '', "a handler's own 503 is its answer, not the SDK's error");

    const [status, , p] = await problemOf(await request(`${s.base}/sdk/throw`));
    assert.deepEqual([status, p.code], [500, 'handler-error'], "the SDK's problem passes through as it is");
    const r = await request(`${s.base}/sdk/x`);
    assert.deepEqual([r.statusCode, await r.body.text()], [503, 'the app said so']);
  } finally {
    await s.close();
  }
});

test('service errors: the header block in PROTOCOL.md, sent byte for byte by a raw NATS client, gives the answer PROTOCOL.md shows', async () => {
  const s = await startStack();
  try {
    await answerWithProtocolBlock(s, 'api.orders.>', 'Nats-Service-Error-Code', '');
    const shown = /answers `404` with `([^`]*)`/.exec(protocolDoc())![1]!.replace(/\s*\n\s*/g, '');
    const r = await request(`${s.base}/orders/7`);
    assert.equal(r.statusCode, 404);
    const body = (await r.body.json()) as Record<string, unknown>;
    assert.deepEqual({ ...body, requestId: '…' }, JSON.parse(shown));
  } finally {
    await s.close();
  }
});
