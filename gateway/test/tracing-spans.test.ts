/**
 * OpenTelemetry spans with a tracer provider registered (the real SDK's
 * in-memory exporter): the gateway's server span and the service's span
 * share one trace as parent and child, the handler runs with its span
 * active, and errors and unsampled traces come out as the conventions say.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { context, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connect } from '@nats-io/transport-node';
import { startNatsServer } from '@natsgw/devkit';
import { encodeReply } from '@natsgw/service-sdk/protocol';
import { request } from 'undici';
import { putRoute, routesBucket, startBackends } from './backends.js';
import { eventually, runCli, spawnGateway, startStack, type Stack } from './helpers.js';

const exporter = new InMemorySpanExporter();
trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }));
context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const CLIENT_SPAN = '00f067aa0ba902b7';
const quiet = { error() {}, warn() {}, info() {} };

/** A service on api.shop whose handler reports what it saw: its headers and the span active while it ran. */
async function shop(s: Stack, status = 200): Promise<Array<{ traceparent: string | undefined; active: string | undefined }>> {
  const seen: Array<{ traceparent: string | undefined; active: string | undefined }> = [];
  await s.serve(
    async (req, res) => {
      await new Promise((r) => setTimeout(r, 5)); // the context survives an await
      const active = trace.getActiveSpan()?.spanContext().spanId;
      seen.push({ traceparent: req.headers.traceparent as string | undefined, active });
      // The app's own span lands below the service's.
      trace.getTracer('app').startActiveSpan('load cart', (span) => span.end());
      res.statusCode = status;
      res.end('cart');
    },
    { nats: s.nc, subject: 'api.shop', logger: quiet },
  );
  return seen;
}

async function spansOf(traceId: string, n: number): Promise<ReadableSpan[]> {
  await eventually(() => exporter.getFinishedSpans().filter((x) => x.spanContext().traceId === traceId).length >= n, 5000, `${n} spans`);
  return exporter.getFinishedSpans().filter((x) => x.spanContext().traceId === traceId);
}

const byName = (spans: ReadableSpan[], name: string): ReadableSpan => {
  const found = spans.find((x) => x.name === name);
  assert.ok(found, `span ${name} among ${spans.map((x) => x.name).join(', ')}`);
  return found;
};

test("spans: the client's trace continues through the gateway's server span to the service's span, parent and child, with the handler's spans below", async () => {
  const s = await startStack();
  try {
    const seen = await shop(s);
    const r = await request(`${s.base}/shop/cart?x=1`, { headers: { traceparent: `00-${TRACE}-${CLIENT_SPAN}-01`, tracestate: 'congo=t61rcWkgMzE' } });
    assert.equal(await r.body.text(), 'cart');
    const spans = await spansOf(TRACE, 3);
    const gateway = byName(spans, 'GET');
    const service = byName(spans, 'GET api.shop');
    const app = byName(spans, 'load cart');

    assert.equal(gateway.kind, SpanKind.SERVER);
    assert.equal(gateway.parentSpanContext?.spanId, CLIENT_SPAN, "the gateway's span is the client span's child");
    assert.equal(gateway.spanContext().traceState?.get('congo'), 't61rcWkgMzE');
    assert.equal(service.kind, SpanKind.SERVER);
    assert.equal(service.parentSpanContext?.spanId, gateway.spanContext().spanId, "the service's span is the gateway span's child");
    assert.equal(app.parentSpanContext?.spanId, service.spanContext().spanId, 'spans the app makes in its handler are children of the service span');
    assert.deepEqual(seen[0], { traceparent: `00-${TRACE}-${gateway.spanContext().spanId}-01`, active: service.spanContext().spanId });

    for (const span of [gateway, service]) {
      assert.equal(span.attributes['messaging.system'], 'nats');
      assert.equal(span.attributes['messaging.destination.name'], 'api.shop.cart');
      assert.equal(span.attributes['http.request.method'], 'GET');
      assert.equal(span.attributes['http.response.status_code'], 200);
      assert.equal(span.attributes['natsgw.request_id'], r.headers['x-request-id']);
      assert.equal(span.status.code, SpanStatusCode.UNSET);
    }
    assert.equal(gateway.attributes['url.path'], '/shop/cart');
    const line = s.logs.find((l) => l.msg === 'request' && l.requestId === r.headers['x-request-id']);
    assert.equal(line?.traceId, TRACE, 'the access log line carries the trace id');
  } finally {
    await s.close();
  }
});

test('spans: without a client traceparent the gateway starts the trace (auto sampling with a provider); 5xx and gateway failures are errors', async () => {
  const s = await startStack();
  try {
    await shop(s, 503);
    const r = await request(`${s.base}/shop/a`);
    await r.body.dump();
    const line = s.logs.find((l) => l.msg === 'request' && l.requestId === r.headers['x-request-id']);
    const traceId = line?.traceId as string;
    assert.match(traceId, /^[0-9a-f]{32}$/);
    const spans = await spansOf(traceId, 3);
    const gateway = byName(spans, 'GET');
    assert.equal(gateway.parentSpanContext, undefined, "the gateway's span is the root");
    assert.equal(byName(spans, 'GET api.shop').parentSpanContext?.spanId, gateway.spanContext().spanId);
    for (const span of [gateway, byName(spans, 'GET api.shop')]) {
      assert.deepEqual([span.attributes['http.response.status_code'], span.attributes['error.type'], span.status.code], [503, '503', SpanStatusCode.ERROR]);
    }

    const nobody = await request(`${s.base}/nobody/here`);
    assert.equal(nobody.statusCode, 503);
    await nobody.body.dump();
    const nobodyTrace = s.logs.find((l) => l.msg === 'request' && l.requestId === nobody.headers['x-request-id'])?.traceId as string;
    const [failed] = await spansOf(nobodyTrace, 1);
    assert.deepEqual([failed!.attributes['error.type'], failed!.attributes['messaging.destination.name'], failed!.status.code], ['no-responders', 'api.nobody.here', SpanStatusCode.ERROR]);

    const bad = await request(`${s.base}/shop/%zz`);
    assert.equal(bad.statusCode, 400);
    await bad.body.dump();
    const badTrace = s.logs.find((l) => l.msg === 'request' && l.requestId === bad.headers['x-request-id'])?.traceId as string;
    const [refused] = await spansOf(badTrace, 1);
    assert.deepEqual([refused!.attributes['http.response.status_code'], refused!.status.code], [400, SpanStatusCode.UNSET], "a 4xx is the client's error, not the server's");
  } finally {
    await s.close();
  }
});

test('spans: an unsampled client trace records nothing (parent-based sampling) and goes on unsampled', async () => {
  const s = await startStack();
  try {
    const seen = await shop(s);
    const before = exporter.getFinishedSpans().length;
    const unsampled = 'aaaabbbbccccddddeeeeffff00001111';
    const r = await request(`${s.base}/shop/b`, { headers: { traceparent: `00-${unsampled}-${CLIENT_SPAN}-00` } });
    await r.body.dump();
    await eventually(() => seen.length === 1, 2000, 'the handler ran');
    const tp = seen[0]!.traceparent!;
    assert.match(tp, new RegExp(`^00-${unsampled}-[0-9a-f]{16}-00$`));
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(exporter.getFinishedSpans().length, before, 'no span recorded');
  } finally {
    await s.close();
  }
});

test('spans: --preload registers a tracer provider in every thread that serves HTTP, --workers threads included; a preload that fails is exit 2', async () => {
  const ns = await startNatsServer();
  const nc = await connect({ servers: ns.url });
  const dir = mkdtempSync(join(tmpdir(), 'natsgw-spans-'));
  const file = join(dir, 'spans.jsonl');
  const preload = fileURLToPath(new URL('./fixtures/otel-preload.js', import.meta.url));
  try {
    nc.subscribe('api.who.>', {
      callback: (_e, m) => {
        m.respond(encodeReply({ v: 1, status: 200, headers: [], body: Buffer.from('me') }));
      },
    });
    await nc.flush();
    const gw = await spawnGateway(
      ['serve', '--nats', ns.url, '--port', '0', '--admin-port', '0', '--host', '127.0.0.1', '--workers', '2', '--log-format', 'json', '--preload', preload],
      (out) => /with 2 workers/.test(out) && (out.match(/connected to NATS/g)?.length ?? 0) === 2,
      { ...process.env, NATSGW_TEST_SPANS: file },
    );
    try {
      const port = Number(/listening on http:\/\/127\.0\.0\.1:(\d+) with 2 workers/.exec(gw.output())![1]);
      // New connections, so both workers take some (the kernel spreads them).
      for (let i = 0; i < 40; i++) {
        const r = await request(`http://127.0.0.1:${port}/who/${i}`, { reset: true, headers: { traceparent: `00-${TRACE}-${CLIENT_SPAN}-01` } });
        assert.equal(await r.body.text(), 'me');
      }
      await eventually(() => existsSync(file) && readFileSync(file, 'utf8').trim().split('\n').length >= 40, 5000, '40 spans written');
      const spans = readFileSync(file, 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { name: string; traceId: string; parent: string; threadId: number });
      assert.ok(
        spans.every((x) => x.name === 'GET' && x.traceId === TRACE && x.parent === CLIENT_SPAN),
        'server spans of the client trace',
      );
      assert.ok(spans.every((x) => x.threadId !== 0) && new Set(spans.map((x) => x.threadId)).size === 2, `made in both worker threads: ${[...new Set(spans.map((x) => x.threadId))]}`);
    } finally {
      gw.child.kill('SIGTERM');
      await new Promise((r) => gw.child.once('exit', r));
    }
    const bad = await runCli(['serve', '--nats', ns.url, '--port', '0', '--admin-port', '0', '--preload', join(dir, 'missing.mjs')]);
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /--preload .*missing\.mjs failed: Cannot find module/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
    await nc.close();
    await ns.dispose();
  }
});

test('spans: an HTTP override request is a server span named by its route, with its backend and no NATS messaging attributes', async () => {
  const s = await startStack();
  const [backend] = await startBackends(1);
  try {
    await putRoute(await routesBucket(s.nc), s.gw, 'api.web', { upstreams: [{ url: backend!.url }] });
    const r = await request(`${s.base}/web/page`);
    assert.equal(r.statusCode, 200);
    await r.body.dump();
    const traceId = s.logs.find((l) => l.msg === 'request' && l.requestId === r.headers['x-request-id'])?.traceId as string;
    const [span] = await spansOf(traceId, 1);
    assert.equal(span!.name, 'GET api.web');
    assert.deepEqual([span!.attributes['natsgw.route'], span!.attributes['natsgw.upstream'], span!.attributes['http.response.status_code']], ['api.web', backend!.url + '/', 200]);
    assert.equal(span!.attributes['messaging.system'], undefined);
    assert.equal(span!.attributes['messaging.destination.name'], undefined);
    assert.equal(backend!.requests[0]!.headers.traceparent, `00-${traceId}-${span!.spanContext().spanId}-01`, "the backend's parent is the gateway's span");
  } finally {
    await backend!.stop();
    await s.close();
  }
});
