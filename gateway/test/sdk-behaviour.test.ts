import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { connect } from '@nats-io/transport-node';
import { request } from 'undici';
import type { RequestListener, Service, ServiceLogger } from '@natsgw/service-sdk';
import { decodeReply, encodeRequest } from '@natsgw/service-sdk/protocol';
import { eventually, startLoad, startStack, type Stack } from './helpers.js';

function recordingLogger(): ServiceLogger & { lines: Array<{ level: string; msg: string; obj: object }> } {
  const lines: Array<{ level: string; msg: string; obj: object }> = [];
  return {
    lines,
    error: (obj, msg) => lines.push({ level: 'error', msg, obj }),
    warn: (obj, msg) => lines.push({ level: 'warn', msg, obj }),
    info: (obj, msg) => lines.push({ level: 'info', msg, obj }),
  };
}

async function withStack(flags: Record<string, unknown>, natsConfig: string | undefined, fn: (s: Stack) => Promise<void>): Promise<void> {
  const s = await startStack(flags, natsConfig ? { config: natsConfig } : {});
  try {
    await fn(s);
  } finally {
    await s.close();
  }
}

const text = (res: ServerResponse, status: number, body: string) => {
  res.statusCode = status;
  res.setHeader('content-type', 'text/plain');
  res.end(body);
};

test('sdk: a handler that throws or rejects → 500, logged, and the service keeps running', async () => {
  await withStack({}, undefined, async (s) => {
    const log = recordingLogger();
    const handler: RequestListener = (req, res) => {
      if (req.url === '/svc/throw') throw new Error('sync failure');
      if (req.url === '/svc/reject') return Promise.reject(new Error('async failure'));
      text(res, 200, 'fine');
      return undefined;
    };
    const svc = await s.serve(handler, { nats: s.ns.url, subject: 'api.svc', logger: log });
    for (const [path, message] of [
      ['/svc/throw', 'sync failure'],
      ['/svc/reject', 'async failure'],
    ] as const) {
      const r = await request(`${s.base}${path}`);
      assert.equal(r.statusCode, 500, path);
      const p = (await r.body.json()) as { code: string; subject: string };
      assert.equal(p.code, 'handler-error');
      assert.equal(p.subject, `api.svc.${path.split('/')[2]}`);
      assert.ok(
        log.lines.some((l) => l.level === 'error' && (l.obj as { err: Error }).err.message === message),
        `logged ${message}`,
      );
    }
    const ok = await request(`${s.base}/svc/ok`);
    assert.equal(ok.statusCode, 200);
    assert.equal(await ok.body.text(), 'fine');
    await svc.drain();
  });
});

test('sdk: a handler that never starts its response is freed after the SDK timeout with 504', async () => {
  await withStack({ timeout: 5000 }, undefined, async (s) => {
    let closed = false;
    const svc = await s.serve(
      (_req: IncomingMessage, res: ServerResponse) => {
        res.on('close', () => (closed = true));
        // and never writes
      },
      { nats: s.ns.url, subject: 'api.stuck', timeoutMs: 300, logger: recordingLogger() },
    );
    const t0 = Date.now();
    const r = await request(`${s.base}/stuck`);
    assert.equal(r.statusCode, 504);
    assert.ok(Date.now() - t0 < 2000, 'the SDK answered before the gateway timeout');
    assert.equal(((await r.body.json()) as { code: string }).code, 'handler-timeout');
    await eventually(() => closed, 1000, 'close emitted to the handler');
    assert.equal(svc.inFlight, 0);
    await svc.drain();
  });
});

test('sdk: a handler that stops writing mid-response is cut off after --stream-idle-timeout, and sees close', async () => {
  await withStack({ timeout: 5000, streamIdleTimeout: 600 }, undefined, async (s) => {
    let closed = false;
    const svc = await s.serve(
      (_req: IncomingMessage, res: ServerResponse) => {
        res.on('close', () => (closed = true));
        res.write('partial'); // and never ends
      },
      { nats: s.ns.url, subject: 'api.stalls', logger: recordingLogger() },
    );
    const t0 = Date.now();
    const r = await request(`${s.base}/stalls`);
    assert.equal(r.statusCode, 200, 'the head left with the first write');
    const got: Buffer[] = [];
    await assert.rejects(
      (async () => {
        for await (const chunk of r.body) got.push(chunk as Buffer);
      })(),
      'the body is cut off, not ended',
    );
    const took = Date.now() - t0;
    assert.equal(Buffer.concat(got).toString(), 'partial');
    assert.ok(took >= 500 && took < 3000, `cut off after the idle limit (${took} ms)`);
    await eventually(() => closed, 2000, 'the handler sees close (the gateway cancelled the stream)');
    const access = s.logs.find((l) => l.msg === 'request' && l.subject === 'api.stalls');
    assert.match(String(access?.cutOff), /no message from the service for 600 ms/, 'the access log says why the response was cut off');
    assert.equal(svc.inFlight, 0);
    await eventually(() => s.gw.inFlight === 0, 1000, 'nothing left in flight at the gateway');
    await svc.drain();
  });
});

test('sdk: a response larger than one NATS message streams through, bytes intact; a v1-only gateway gets a clear 502', async () => {
  await withStack({ timeout: 5000 }, 'max_payload: 65536', async (s) => {
    const log = recordingLogger();
    const huge = Buffer.alloc(200_000);
    for (let i = 0; i < huge.length; i++) huge[i] = (i * 7) & 0xff;
    const svc = await s.serve((req, res) => res.end(req.url === '/big/huge' ? huge : 'y'.repeat(65_500)), { nats: s.ns.url, subject: 'api.big', logger: log });
    for (const [path, expected] of [
      ['/big/huge', huge],
      ['/big/just-over', Buffer.from('y'.repeat(65_500))],
    ] as const) {
      const r = await request(`${s.base}${path}`);
      assert.equal(r.statusCode, 200, path);
      assert.ok(Buffer.from(await r.body.arrayBuffer()).equals(expected), `${path}: bytes intact`);
    }
    // A gateway that does not offer streaming (no caps: a v1 gateway) gets one reply, bounded by max_payload.
    const v1 = encodeRequest({
      v: 1,
      id: 'v1gw',
      method: 'GET',
      path: '/big/huge',
      query: '',
      headers: [],
      body: Buffer.alloc(0),
      remote: '127.0.0.1',
      scheme: 'http',
      host: 'x',
      root: 'api',
      subject: 'api.big.huge',
      timeoutMs: 5000,
    });
    const answer = decodeReply((await s.nc.request('api.big.huge', v1, { timeout: 5000 })).data);
    assert.ok(typeof answer !== 'string');
    assert.equal(answer.v, 1);
    assert.equal(answer.status, 502);
    const p = JSON.parse(Buffer.from(answer.body).toString()) as { code: string; detail: string };
    assert.equal(p.code, 'response-too-large');
    assert.match(p.detail, /max_payload of 65536 bytes/);
    assert.equal(log.lines.filter((l) => l.msg === 'response too large for one NATS message').length, 1);
    await svc.drain();
  });
});

test('sdk: a status outside 200-599 becomes a 500 rather than a broken reply', async () => {
  await withStack({}, undefined, async (s) => {
    const svc = await s.serve((_req, res) => text(res, 700, 'nonsense'), { nats: s.ns.url, subject: 'api.odd', logger: recordingLogger() });
    const r = await request(`${s.base}/odd`);
    assert.equal(r.statusCode, 500);
    assert.equal(((await r.body.json()) as { code: string }).code, 'invalid-status');
    await svc.drain();
  });
});

test("sdk: req.url is the full path by default, or relative to the mount with url: 'relative'", async () => {
  await withStack({}, undefined, async (s) => {
    const echoUrl: RequestListener = (req, res) => text(res, 200, req.url ?? '');
    const full = await s.serve(echoUrl, { nats: s.ns.url, subject: 'api.full' });
    const rel = await s.serve(echoUrl, { nats: s.ns.url, subject: 'api.rel.deeper', url: 'relative' });
    const get = async (p: string) => (await request(`${s.base}${p}`)).body.text();
    assert.equal(await get('/full/users/7?a=1'), '/full/users/7?a=1');
    assert.equal(await get('/rel/deeper/users/7?a=1'), '/users/7?a=1');
    assert.equal(await get('/rel/deeper'), '/');
    assert.equal(await get('/rel/deeper/a%2Fb'), '/a%2Fb');
    await full.drain();
    await rel.drain();
  });
});

test('sdk: an envelope it cannot read, or one with an illegal header, method or path, gets a 400 and a log line and never reaches the handler', async () => {
  await withStack({}, undefined, async (s) => {
    let calls = 0;
    const logger = recordingLogger();
    const svc = await s.serve(
      (_req, res) => {
        calls++;
        text(res, 200, 'ok');
      },
      { nats: s.ns.url, subject: 'api.strict', logger },
    );
    const good = {
      v: 1,
      id: 'r',
      method: 'GET',
      path: '/strict',
      query: '',
      headers: ['host', 'h'],
      body: new Uint8Array(0),
      remote: '',
      scheme: 'http',
      host: '',
      root: 'api',
      subject: 'api.strict',
      timeoutMs: 1000,
    };
    const bad = [
      Buffer.from('not an envelope'),
      encodeRequest({ ...good, headers: ['x-a', 'v\r\nset-cookie: x=1'] }),
      encodeRequest({ ...good, headers: ['bad name', 'v'] }),
      encodeRequest({ ...good, method: 'GET /x HTTP/1.1\r\n' }),
      encodeRequest({ ...good, path: '/a b' }),
    ];
    for (const data of bad) {
      const reply = await s.nc.request('api.strict', data, { timeout: 2000 });
      const r = decodeReply(reply.data);
      assert.notEqual(typeof r, 'string');
      assert.equal((r as { status: number }).status, 400);
    }
    assert.equal(calls, 0, 'the handler never saw them');
    assert.equal(logger.lines.filter((l) => l.msg === 'rejected a request that is not a v1 envelope').length, bad.length, 'each logged');
    assert.equal((await request(`${s.base}/strict`)).statusCode, 200);
    await svc.drain();
  });
});

test('sdk: copies of a service in the queue group share the load', async () => {
  await withStack({}, undefined, async (s) => {
    const hits = [0, 0];
    const copies = await Promise.all(
      [0, 1].map((i) =>
        s.serve(
          (_req, res) => {
            hits[i] = hits[i]! + 1;
            text(res, 200, String(i));
          },
          { nats: s.ns.url, subject: 'api.shared' },
        ),
      ),
    );
    for (let i = 0; i < 60; i++) assert.equal((await request(`${s.base}/shared/${i}`)).statusCode, 200);
    assert.equal(hits[0]! + hits[1]!, 60);
    assert.ok(hits[0]! > 5 && hits[1]! > 5, `both copies served: ${hits.join('/')}`);
    for (const c of copies) await c.drain();
  });
});

/** Serves a mount that counts each request id it executes, by mount. */
function counting(mount: string, executed: Map<string, string[]>): RequestListener {
  return (req, res) => {
    const id = req.headers['x-request-id'] as string;
    executed.set(id, [...(executed.get(id) ?? []), mount]);
    text(res, 200, mount);
  };
}

async function postMany(base: string, path: string, n: number): Promise<Array<{ id: string; status: number; by: string }>> {
  const out: Array<{ id: string; status: number; by: string }> = [];
  await Promise.all(
    Array.from({ length: n }, async (_, i) => {
      const id = `${path.replace(/\//g, '_')}-${i}-${Math.random()}`;
      const r = await request(`${base}${path}`, { method: 'POST', body: 'x', headers: { 'x-request-id': id } });
      out.push({ id, status: r.statusCode, by: await r.body.text() });
    }),
  );
  return out;
}

for (const order of ['outer first', 'inner first'] as const) {
  test(`sdk: overlapping mounts (${order}) — each request runs exactly once, on the most specific mount`, async () => {
    await withStack({}, undefined, async (s) => {
      const executed = new Map<string, string[]>();
      const start = (mount: string) => s.serve(counting(mount, executed), { nats: s.ns.url, subject: mount, heartbeatMs: 200 });
      const mounts: Service[] = [];
      if (order === 'outer first') mounts.push(await start('api.ov'), await start('api.ov.deep'));
      else mounts.push(await start('api.ov.deep'), await start('api.ov'));
      // Two copies of the outer mount make it likely that requests land there first.
      mounts.push(await start('api.ov'));

      const deep = await postMany(s.base, '/ov/deep/item', 60);
      const shallow = await postMany(s.base, '/ov/other', 30);
      const exact = await postMany(s.base, '/ov/deep', 10);
      for (const r of [...deep, ...shallow, ...exact]) assert.equal(r.status, 200);
      for (const r of [...deep, ...exact]) {
        assert.equal(r.by, 'api.ov.deep');
        assert.deepEqual(executed.get(r.id), ['api.ov.deep'], `ran once, on the inner mount: ${r.id}`);
      }
      for (const r of shallow) assert.deepEqual(executed.get(r.id), ['api.ov'], 'ran once, on the outer mount');
      assert.equal(executed.size, 100, 'no extra executions');
      for (const m of mounts) await m.drain();
    });
  });
}

test('sdk: when the inner mount dies without draining, the outer one takes over — still exactly once', async () => {
  await withStack({}, undefined, async (s) => {
    const executed = new Map<string, string[]>();
    const outer = await s.serve(counting('api.ov', executed), { nats: s.ns.url, subject: 'api.ov', heartbeatMs: 5000 });
    const innerConn = await connect({ servers: s.ns.url });
    await s.serve(counting('api.ov.deep', executed), { nats: innerConn, subject: 'api.ov.deep', heartbeatMs: 5000 });
    const before = await postMany(s.base, '/ov/deep/x', 10);
    assert.ok(before.every((r) => r.by === 'api.ov.deep'));
    await innerConn.close(); // a crash: no "down" announcement, the registry still lists it
    const afterCrash = await postMany(s.base, '/ov/deep/x', 20);
    for (const r of afterCrash) {
      assert.equal(r.status, 200);
      assert.equal(r.by, 'api.ov');
      assert.deepEqual(executed.get(r.id), ['api.ov']);
    }
    await outer.drain();
  });
});

test('sdk: restarting one of two copies under steady traffic fails no request', async (t) => {
  await withStack({ timeout: 10_000 }, undefined, async (s) => {
    const handler: RequestListener = (_req, res) => {
      // A little work in flight, so draining has something to finish.
      setTimeout(() => text(res, 200, 'ok'), 5);
    };
    let a = await s.serve(handler, { nats: s.ns.url, subject: 'api.steady' });
    const b = await s.serve(handler, { nats: s.ns.url, subject: 'api.steady' });
    const failures: string[] = [];
    const load = startLoad(
      t,
      async () => {
        const r = await request(`${s.base}/steady/work`);
        const body = await r.body.text();
        if (r.statusCode !== 200) failures.push(`${r.statusCode} ${body}`);
      },
      { workers: 8 },
    );
    await eventually(() => load.done > 100, 5000, 'traffic flowing');
    await a.drain(); // stop copy A while B carries the load
    const mark = load.done;
    a = await s.serve(handler, { nats: s.ns.url, subject: 'api.steady' }); // start it again
    await eventually(() => load.done > mark + 100, 5000, 'traffic after restart');
    await load.stop();
    assert.deepEqual([...failures, ...load.errors.map(String)], [], `no failed requests out of ${load.done}`);
    await a.drain();
    await b.drain();
  });
});
