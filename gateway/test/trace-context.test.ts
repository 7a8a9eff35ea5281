/**
 * W3C trace context without any tracer provider: what the gateway passes on
 * (envelope headers and NATS headers, raw routes, HTTP overrides), what it
 * drops, when it starts a trace itself (--trace-sampling), and the trace id
 * in the access log. Spans are in tracing-spans.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Msg } from '@nats-io/transport-node';
import { request } from 'undici';
import fc from 'fast-check';
import { normalizeTracestate, parseTraceparent, type RequestEnvelope } from '@natsgw/service-sdk/protocol';
import { putRoute, routesBucket, startBackends } from './backends.js';
import { connectRaw } from '@natsgw/devkit';
import { encodeReply } from '@natsgw/service-sdk/protocol';
import { protocolHeaderBlock, respond, startStack, type Stack } from './helpers.js';

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const PARENT = '00f067aa0ba902b7';
const VALID = `00-${TRACE}-${PARENT}-01`;

test('trace context: traceparent is parsed by the W3C rules; anything else is invalid', () => {
  assert.deepEqual(parseTraceparent(VALID), { traceId: TRACE, spanId: PARENT, flags: 1 });
  assert.deepEqual(parseTraceparent(`00-${TRACE}-${PARENT}-00`)?.flags, 0);
  // A later version is read by the version-00 layout, with anything after a '-'.
  assert.equal(parseTraceparent(`01-${TRACE}-${PARENT}-01-future-field`)?.traceId, TRACE);
  assert.equal(parseTraceparent(`01-${TRACE}-${PARENT}-01`)?.spanId, PARENT);
  const invalid = [
    '',
    `00-${TRACE}-${PARENT}-01-`, // version 00 is exactly 55 characters
    `00-${TRACE.toUpperCase()}-${PARENT}-01`, // upper-case hex
    `00-${'0'.repeat(32)}-${PARENT}-01`, // all-zero trace id
    `00-${TRACE}-${'0'.repeat(16)}-01`, // all-zero parent id
    `ff-${TRACE}-${PARENT}-01`, // version ff
    `01-${TRACE}-${PARENT}-01x`, // a later version continues with '-'
    `00_${TRACE}-${PARENT}-01`,
    `00-${TRACE}-${PARENT}-0g`,
    `00-${TRACE.slice(1)}-${PARENT}-011`,
  ];
  for (const v of invalid) assert.equal(parseTraceparent(v), undefined, JSON.stringify(v));
  fc.assert(
    fc.property(fc.string({ maxLength: 80 }), (s) => {
      const p = parseTraceparent(s);
      if (p !== undefined) assert.match(`${p.traceId}-${p.spanId}`, /^[0-9a-f]{32}-[0-9a-f]{16}$/);
    }),
    { numRuns: 2000 },
  );
});

test('trace context: tracestate is trimmed and bounded (32 members, 512 characters); an invalid one is dropped whole', () => {
  assert.equal(normalizeTracestate(' congo=t61rcWkgMzE ,, rojo=00f067aa0ba902b7 '), 'congo=t61rcWkgMzE,rojo=00f067aa0ba902b7');
  assert.equal(normalizeTracestate('tenant@vendor=a b'), 'tenant@vendor=a b');
  for (const bad of ['noequals', 'UPPER=1', 'k=', '=v', 'k=v,x=a=b', 'k=v\u0001', 'k=a\u007f']) assert.equal(normalizeTracestate(bad), undefined, bad);
  assert.equal(normalizeTracestate(''), undefined);
  const many = Array.from({ length: 33 }, (_, i) => `k${i}=v`).join(',');
  assert.equal(normalizeTracestate(many), undefined, 'more than 32 members');
  const long = Array.from({ length: 8 }, (_, i) => `k${i}=${'v'.repeat(100)}`).join(',');
  const kept = normalizeTracestate(long)!;
  assert.ok(kept.length <= 512 && kept.startsWith('k0=') && kept.split(',').length === 4, 'members past 512 characters are dropped from the end');
});

/** An envelope responder that keeps what it was sent: the envelope's headers and the NATS message's. */
async function recordingService(s: Stack, subject: string): Promise<Array<{ env: RequestEnvelope; msg: Msg }>> {
  const seen: Array<{ env: RequestEnvelope; msg: Msg }> = [];
  await respond(s.nc, subject, (env, msg) => {
    seen.push({ env, msg });
    return { status: 200, body: Buffer.from('ok') };
  });
  return seen;
}

const envHeader = (env: RequestEnvelope, name: string): string[] => env.headers.flatMap((v, i) => (i % 2 === 1 && env.headers[i - 1] === name ? [v] : []));

test('trace context: a client traceparent and tracestate reach the service in the envelope and as NATS headers; invalid or repeated ones are dropped', async () => {
  const s = await startStack();
  try {
    const seen = await recordingService(s, 'api.t.>');
    const ask = async (headers: Record<string, string | string[]>) => {
      const r = await request(`${s.base}/t/x`, { headers });
      assert.equal(r.statusCode, 200);
      await r.body.dump();
      return seen.at(-1)!;
    };

    const good = await ask({ traceparent: VALID, tracestate: 'congo=t61rcWkgMzE, rojo=1' });
    assert.deepEqual(envHeader(good.env, 'traceparent'), [VALID], 'no tracer here: the context goes on unchanged');
    assert.deepEqual(envHeader(good.env, 'tracestate'), ['congo=t61rcWkgMzE,rojo=1']);
    assert.equal(good.msg.headers?.get('traceparent'), VALID, 'as a NATS header too, for NATS tooling');
    assert.equal(good.msg.headers?.get('tracestate'), 'congo=t61rcWkgMzE,rojo=1');

    const flagged = `00-${TRACE}-${PARENT}-03`; // a flag besides sampled (level 2's random trace id)
    assert.deepEqual(envHeader((await ask({ traceparent: flagged })).env, 'traceparent'), [flagged], 'every flag bit is kept');
    const later = `01-${TRACE}-${PARENT}-01-extra`;
    assert.deepEqual(envHeader((await ask({ traceparent: later })).env, 'traceparent'), [VALID], 'a later version goes on as version 00');

    const none = await ask({});
    assert.deepEqual(envHeader(none.env, 'traceparent'), [], 'no tracer, default sampling: the gateway starts no trace');
    assert.equal(none.msg.headers, undefined, 'and sends no NATS headers');

    const invalid: Array<Record<string, string | string[]>> = [{ traceparent: VALID.toUpperCase() }, { traceparent: [VALID, VALID] }, { traceparent: 'garbage', tracestate: 'a=1' }];
    for (const bad of invalid) {
      const got = await ask(bad);
      assert.deepEqual([envHeader(got.env, 'traceparent'), envHeader(got.env, 'tracestate')], [[], []], `dropped: ${JSON.stringify(bad)}`);
    }
    const badState = await ask({ traceparent: VALID, tracestate: 'BAD STATE' });
    assert.deepEqual([envHeader(badState.env, 'traceparent'), envHeader(badState.env, 'tracestate')], [[VALID], []], 'an invalid tracestate alone is dropped');
  } finally {
    await s.close();
  }
});

test('trace context: --trace-sampling 1 starts a sampled trace for requests without one; its id is in the access log', async () => {
  const s = await startStack({ traceSampling: '1' });
  try {
    const seen = await recordingService(s, 'api.t.>');
    const r = await request(`${s.base}/t/y`);
    await r.body.dump();
    const tp = envHeader(seen[0]!.env, 'traceparent')[0]!;
    const parsed = parseTraceparent(tp);
    assert.ok(parsed !== undefined && parsed.flags === 1, `a fresh sampled traceparent: ${tp}`);
    assert.equal(seen[0]!.msg.headers?.get('traceparent'), tp);
    const line = s.logs.find((l) => l.msg === 'request' && l.requestId === r.headers['x-request-id']);
    assert.equal(line?.traceId, parsed.traceId);
    // Two requests, two traces.
    await (await request(`${s.base}/t/z`)).body.dump();
    assert.notEqual(envHeader(seen[1]!.env, 'traceparent')[0], tp);
  } finally {
    await s.close();
  }
});

test('trace context: raw routes get it as NATS headers, HTTP overrides as request headers', async () => {
  const s = await startStack();
  const [backend] = await startBackends(1);
  try {
    const kv = await routesBucket(s.nc);
    const rawSeen: Msg[] = [];
    s.nc.subscribe('api.raw.>', {
      callback: (_e, m) => {
        rawSeen.push(m);
        m.respond('raw');
      },
    });
    await s.nc.flush();
    await putRoute(kv, s.gw, 'api.raw', { target: 'nats-raw' });
    await putRoute(kv, s.gw, 'api.web', { upstreams: [{ url: backend!.url }] });

    const raw = await request(`${s.base}/raw/a`, { headers: { traceparent: VALID, tracestate: 'k=v' } });
    assert.equal(await raw.body.text(), 'raw');
    assert.deepEqual([rawSeen[0]!.headers?.get('traceparent'), rawSeen[0]!.headers?.get('tracestate')], [VALID, 'k=v']);

    const web = await request(`${s.base}/web/b`, { headers: { traceparent: VALID, tracestate: 'k=v' } });
    assert.equal(web.statusCode, 200);
    await web.body.dump();
    assert.deepEqual([backend!.requests[0]!.headers.traceparent, backend!.requests[0]!.headers.tracestate], [VALID, 'k=v']);
    const dropped = await request(`${s.base}/web/c`, { headers: { traceparent: 'not-a-traceparent' } });
    await dropped.body.dump();
    assert.equal(backend!.requests[1]!.headers.traceparent, undefined, 'an invalid one never reaches a backend');
  } finally {
    await backend!.stop();
    await s.close();
  }
});

test('trace context: the request header block in PROTOCOL.md §13 is what the gateway sends, byte for byte', async () => {
  const s = await startStack();
  const raw = await connectRaw(s.ns.url);
  try {
    const blocks: string[] = [];
    raw.subscribe('api.doc.>', (m) => {
      blocks.push(m.headers);
      raw.publish(m.reply!, encodeReply({ v: 1, status: 204, headers: [], body: Buffer.alloc(0) }));
    });
    await raw.flush();
    const r = await request(`${s.base}/doc/x`, { headers: { traceparent: VALID, tracestate: 'congo=t61rcWkgMzE' } });
    assert.equal(r.statusCode, 204);
    assert.deepEqual(blocks, [protocolHeaderBlock('traceparent')]);
  } finally {
    raw.close();
    await s.close();
  }
});
