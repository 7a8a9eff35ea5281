import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from '@nats-io/transport-node';
import { request } from 'undici';
import { Packr } from 'msgpackr';
import { freePort, freePorts, startNatsServer } from '@natsgw/devkit';
import { encodeReply } from '@natsgw/service-sdk/protocol';
import { echo, eventually, startLoad, respond, startStack, startTestGateway } from './helpers.js';

const pack = (x: unknown) => new Packr({ useRecords: false }).pack(x);

test('nats: nobody subscribed → 503 at once, naming the subject', async () => {
  const s = await startStack({ timeout: 5000 });
  try {
    const t0 = Date.now();
    const r = await request(`${s.base}/nobody/here`);
    assert.equal(r.statusCode, 503);
    assert.ok(Date.now() - t0 < 1000, 'did not wait for the timeout');
    assert.equal(r.headers['content-type'], 'application/problem+json');
    const p = (await r.body.json()) as { code: string; subject: string; detail: string };
    assert.equal(p.code, 'no-responders');
    assert.equal(p.subject, 'api.nobody.here');
    assert.match(p.detail, /api\.nobody\.here/);
  } finally {
    await s.close();
  }
});

test('nats: no reply within --timeout → 504; the late reply is dropped and nothing leaks', async () => {
  const s = await startStack({ timeout: 300 });
  try {
    let late = 0;
    await respond(s.nc, 'api.sleepy', async () => {
      await new Promise((r) => setTimeout(r, 800));
      late++;
      return { status: 200, body: Buffer.from('too late') };
    });
    const t0 = Date.now();
    const r = await request(`${s.base}/sleepy`);
    const took = Date.now() - t0;
    assert.equal(r.statusCode, 504);
    assert.ok(took >= 280 && took < 800, `took ${took} ms`);
    const p = (await r.body.json()) as { code: string; detail: string };
    assert.equal(p.code, 'timeout');
    assert.match(p.detail, /api\.sleepy within 300 ms/);
    await eventually(() => late === 1, 2000, 'late reply sent');
    await new Promise((res) => setTimeout(res, 50));
    assert.equal(s.gw.inFlight, 0);
  } finally {
    await s.close();
  }
});

test('nats: an invalid reply → 502 with the reason; nothing invalid reaches the client; the gateway lives on', async () => {
  const s = await startStack();
  try {
    const bad: Record<string, Uint8Array> = {
      garbage: Buffer.from('this is not msgpack'),
      version: pack({ v: 9, status: 200, headers: [], body: Buffer.from('x') }),
      status: pack({ v: 1, status: 99, headers: [], body: Buffer.from('x') }),
      crlf: pack({ v: 1, status: 200, headers: ['x-ok', 'fine\r\nset-cookie: stolen=1'], body: Buffer.from('x') }),
      name: pack({ v: 1, status: 200, headers: ['bad name', 'v'], body: Buffer.from('x') }),
      never: Buffer.from([0xc1]), // the one byte msgpack never uses
      date: pack(new Date(0)),
    };
    await respond(s.nc, 'api.bad.*', (req) => bad[req.subject.split('.').pop()!]);
    const reasons: Record<string, RegExp> = {
      garbage: /not a msgpack map/,
      version: /unsupported protocol version 9/,
      status: /invalid status 99/,
      crlf: /illegal value/,
      name: /illegal header name/,
      never: /not a msgpack map/,
      date: /not a msgpack map/,
    };
    for (const kind of Object.keys(bad)) {
      const r = await request(`${s.base}/bad/${kind}`);
      assert.equal(r.statusCode, 502, kind);
      assert.equal(r.headers['set-cookie'], undefined, kind);
      assert.equal(r.headers['x-ok'], undefined, kind);
      const p = (await r.body.json()) as { code: string; detail: string };
      assert.equal(p.code, 'bad-reply');
      assert.match(p.detail, reasons[kind]!, kind);
      assert.match(p.detail, new RegExp(`api\\.bad\\.${kind}`));
    }
    const warnings = s.logs.filter((l) => l.msg === 'invalid reply from service');
    assert.equal(warnings.length, Object.keys(bad).length, 'each bad reply logged once');
    await respond(s.nc, 'api.good', (req) => echo(req));
    assert.equal((await request(`${s.base}/good`)).statusCode, 200);
  } finally {
    await s.close();
  }
});

test('nats: the gateway starts while NATS is down, answers 503, and serves once NATS appears', async () => {
  const port = await freePort();
  const url = `nats://127.0.0.1:${port}`;
  const { gw, base } = await startTestGateway({ nats: url });
  try {
    const r = await request(`${base}/foo`);
    assert.equal(r.statusCode, 503);
    assert.equal(((await r.body.json()) as { code: string }).code, 'nats-unavailable');
    const ns = await startNatsServer({ port });
    try {
      await gw.connected;
      const nc = await connect({ servers: url });
      await respond(nc, 'api.foo', (req) => echo(req));
      assert.equal((await request(`${base}/foo`)).statusCode, 200);
      await nc.close();
    } finally {
      await gw.close(500);
      await ns.dispose();
    }
  } catch (err) {
    await gw.close(100);
    throw err;
  }
});

test('nats: nats-server restarted under traffic → 503 while down, automatic recovery, no leak', async (t) => {
  const s = await startStack({ timeout: 5000 });
  const service = await connect({ servers: s.ns.url, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
  try {
    await respond(service, 'api.svc', (req) => echo(req));
    // A request in flight when the connection drops gets 503, not a 5 s timeout.
    await respond(service, 'api.hang', () => undefined);
    const hanging = request(`${s.base}/hang`);
    await new Promise((r) => setTimeout(r, 100));

    const outcomes: Array<{ status: number; ms: number }> = [];
    const load = startLoad(
      t,
      async () => {
        const t0 = Date.now();
        const r = await request(`${s.base}/svc`);
        await r.body.dump();
        outcomes.push({ status: r.statusCode, ms: Date.now() - t0 });
      },
      { pauseMs: 20 },
    );
    await eventually(() => outcomes.length > 5, 3000, 'traffic before the outage');
    await s.ns.stop();
    const h = await hanging;
    assert.equal(h.statusCode, 503);
    assert.equal(((await h.body.json()) as { code: string }).code, 'nats-connection-lost');
    await eventually(() => outcomes.some((o) => o.status === 503), 3000, '503 during the outage');
    await new Promise((r) => setTimeout(r, 500));
    await s.ns.restart();
    const mark = outcomes.length;
    await eventually(() => outcomes.slice(mark).some((o) => o.status === 200), 10_000, 'recovery after restart');
    await load.stop();
    assert.deepEqual(load.errors, []);
    const statuses = new Set(outcomes.map((o) => o.status));
    assert.deepEqual([...statuses].sort(), [200, 503], 'only successes and fast 503s');
    assert.ok(
      outcomes.every((o) => o.ms < 2000),
      'no request waited for the timeout',
    );
    await eventually(() => s.gw.inFlight === 0, 2000, 'nothing in flight');
  } finally {
    await service.close();
    await s.close();
  }
});

test('nats: a body larger than one message streams to a v2 service; a v1 service gets 413 with the reason; --max-body still applies', async () => {
  const s = await startStack({ maxBody: 100_000 }, { config: 'max_payload: 65536' });
  try {
    // A v1 service as PROTOCOL.md §7 asks: it refuses a version it does not speak.
    s.nc.subscribe('api.v1', {
      callback: (_e, msg) => {
        const req = new Packr({ useRecords: false }).unpack(msg.data) as { v: number; body: Uint8Array };
        const problem = { status: 400, code: 'unsupported-version' };
        msg.respond(
          req.v === 1
            ? encodeReply({ v: 1, status: 200, headers: [], body: Buffer.from(String(req.body.length)) })
            : encodeReply({ v: 1, status: 400, headers: [], body: Buffer.from(JSON.stringify(problem)) }),
        );
      },
    });
    await s.nc.flush();
    const small = await request(`${s.base}/v1`, { method: 'POST', body: Buffer.alloc(30_000, 1) });
    assert.equal(small.statusCode, 200);
    assert.equal(await small.body.text(), '30000');
    const big = await request(`${s.base}/v1`, { method: 'POST', body: Buffer.alloc(90_000, 1) });
    assert.equal(big.statusCode, 413);
    assert.match(((await big.body.json()) as { detail: string }).detail, /only up to one NATS message \(it speaks protocol v1\)/);
    // The SDK (v2) takes it, streamed.
    await s.serve(
      (req, res) => {
        let n = 0;
        req.on('data', (c: Buffer) => (n += c.length));
        req.on('end', () => res.end(String(n)));
      },
      { nats: s.ns.url, subject: 'api.v2' },
    );
    const streamed = await request(`${s.base}/v2`, { method: 'POST', body: Buffer.alloc(90_000, 1) });
    assert.equal(streamed.statusCode, 200);
    assert.equal(await streamed.body.text(), '90000');
    const tooBig = await request(`${s.base}/v2`, { method: 'POST', body: Buffer.alloc(100_001, 1) });
    assert.equal(tooBig.statusCode, 413);
    assert.match(((await tooBig.body.json()) as { detail: string }).detail, /exceeds the limit of 100000 bytes/);
  } finally {
    await s.close();
  }
});

test('nats: with --nats a,b the gateway fails over when its server dies', async () => {
  // Client and cluster ports chosen together, all distinct (a server picking its own client port could take b's cluster port).
  const [p1, p2, c1, c2] = (await freePorts(4)) as [number, number, number, number];
  const cluster = (me: number, other: number) => `cluster { name: natsgw-test, listen: "127.0.0.1:${me}", routes: ["nats-route://127.0.0.1:${other}"] }`;
  const a = await startNatsServer({ jetstream: false, port: p1, config: cluster(c1, c2) });
  const b = await startNatsServer({ jetstream: false, port: p2, config: cluster(c2, c1) });
  const { gw, base } = await startTestGateway({ nats: `${a.url},${b.url}`, timeout: 3000 });
  const service = await connect({ servers: [b.url, a.url], maxReconnectAttempts: -1, reconnectTimeWait: 100 });
  try {
    await gw.connected;
    await respond(service, 'api.ha', (req) => echo(req));
    await eventually(async () => (await request(`${base}/ha`)).statusCode === 200, 5000, 'cluster routes up');
    // Kill whichever server the gateway is on; the service stays on the other.
    const onA = gw.nats!.getServer().endsWith(`:${a.port}`);
    if (onA) await a.stop(true);
    else {
      await service.reconnect();
      await b.stop(true);
    }
    await eventually(async () => (await request(`${base}/ha`)).statusCode === 200, 10_000, 'served through the surviving server');
  } finally {
    await service.close();
    await gw.close(500);
    await a.dispose();
    await b.dispose();
  }
});
