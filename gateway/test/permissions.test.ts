/**
 * The NATS trust model (RELIABILITY.md 29): a nats-server configured with the
 * least-privilege permission set this repository ships
 * (examples/nats-permissions/nats-server.conf, the very file) lets each role
 * do its job, and keeps a service or any other user from answering requests
 * it never received, forging mount announcements or hand-offs, reading
 * admin data or writing routes.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { request } from 'undici';
import { connectRaw, startNatsServer, type NatsServer } from '@natsgw/devkit';
import type { Service } from '@natsgw/service-sdk';
import { serve } from '@natsgw/service-sdk';
import type { Gateway } from '../src/gateway.js';
import WebSocket from 'ws';
import { eventually, runCli, startTestGateway } from './helpers.js';

const CONFIG = new URL('../../../examples/nats-permissions/nats-server.conf', import.meta.url);

let ns: NatsServer;
let gw: Gateway;
let base: string;
const services: Service[] = [];
const as = (user: string, pass: string, inboxPrefix: string) => ({ servers: ns.url, user, pass, inboxPrefix });

before(async () => {
  ns = await startNatsServer({ config: `authorization {\n${readFileSync(CONFIG, 'utf8')}\n}` });
  ({ gw, base } = await startTestGateway({ nats: ns.url, user: 'natsgw-gateway', pass: 'change-me-gateway', inboxPrefix: '_INBOX_gw' }));
  await gw.connected;
  const foo = (req: IncomingMessage, res: ServerResponse): void => {
    if (req.url === '/foo/events') {
      // A streamed response: 300 writes over as many event-loop turns.
      let i = 0;
      const next = (): void => {
        if (i === 300) return void res.end();
        res.write(`data: ${i++}\n\n`);
        setImmediate(next);
      };
      return next();
    }
    if (req.url === '/foo/upload') {
      let n = 0;
      req.on('data', (c: Buffer) => (n += c.length));
      return void req.on('end', () => res.end(`foo got ${n}`));
    }
    res.end(`foo ${req.url}`);
  };
  const fooService: Service = await serve(foo, {
    nats: as('svc-foo', 'change-me-foo', '_INBOX_foo'),
    subject: 'api.foo',
    // WebSockets: an echo that also joins the topic "room" and broadcasts to it.
    websocket: (ws) => {
      void ws.subscribe('room').then(() => ws.send('joined'));
      ws.on('message', (data) => {
        ws.send(`echo ${String(data)}`);
        fooService.broadcast('room', `room ${String(data)}`);
      });
    },
  });
  services.push(fooService);
  services.push(await serve((req, res) => res.end(`bar ${req.url}`), { nats: as('svc-bar', 'change-me-bar', '_INBOX_bar'), subject: 'api.bar' }));
  await eventually(() => gw.overrides.state === 'watching', 10_000, 'the gateway watches the routes bucket');
});
after(async () => {
  for (const s of services) await s.drain();
  await gw.close(100);
  await ns.dispose();
});

const routesEditor = ['--nats', '', '--user', 'routes-editor', '--pass', 'change-me-routes', '--inbox-prefix', '_INBOX_routes'];
const fleetReader = ['--nats', '', '--user', 'fleet-reader', '--pass', 'change-me-fleet', '--inbox-prefix', '_INBOX_fleet'];
const withUrl = (args: string[]) => args.map((a, i) => (i === 1 ? ns.url : a));

test('permissions: with the shipped least-privilege config every role does its job', async () => {
  for (const [path, by] of [
    ['/foo/x', 'foo /foo/x'],
    ['/bar/y', 'bar /bar/y'],
  ]) {
    const r = await request(`${base}${path}`);
    assert.deepEqual([r.statusCode, await r.body.text()], [200, by]);
  }
  // Streams both ways work within the permissions.
  const events = await (await request(`${base}/foo/events`)).body.text();
  assert.equal(events, Array.from({ length: 300 }, (_, i) => `data: ${i}\n\n`).join(''));
  const upload = await request(`${base}/foo/upload`, { method: 'POST', body: Buffer.alloc(5 * 1024 * 1024, 1) });
  assert.equal(await upload.body.text(), `foo got ${5 * 1024 * 1024}`);
  // WebSocket sessions and topics work within them too.
  const ws = new WebSocket(`${base.replace('http://', 'ws://')}/foo/ws`);
  const got: string[] = [];
  ws.on('message', (d: Buffer) => got.push(d.toString()));
  await eventually(() => got.includes('joined'), 5000, 'the socket joined its topic');
  ws.send('hi');
  await eventually(() => got.includes('echo hi') && got.includes('room hi'), 5000, `echo and broadcast arrived (got ${got.join(', ')})`);
  ws.close();
  const put = await runCli(['routes', 'put', 'api.legacy', '--upstream', 'http://127.0.0.1:9', ...withUrl(routesEditor)]);
  assert.equal(put.status, 0, put.stderr);
  await eventually(() => gw.routes.match('api.legacy') !== undefined, 5000, 'the gateway applied the route');
  for (const verb of [['ls'], ['get', 'api.legacy']]) {
    const r = await runCli(['routes', ...verb, ...withUrl(routesEditor)]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /api\.legacy/);
  }
  assert.equal((await runCli(['routes', 'rm', 'api.legacy', ...withUrl(routesEditor)])).status, 0);
  await eventually(() => gw.routes.match('api.legacy') === undefined, 5000, 'removed');
  const status = await runCli(['status', '--json', ...withUrl(fleetReader)]);
  assert.equal(status.status, 0, status.stderr);
  assert.equal((JSON.parse(status.stdout) as Array<{ gateway: string; ok: boolean }>)[0]!.gateway, gw.id);
  // Services answer NATS's service API within their permissions; the fleet reader and the gateway may ask.
  const services = await runCli(['services', '--json', '--wait', '1000', ...withUrl(fleetReader)]);
  assert.equal(services.status, 0, services.stderr);
  assert.deepEqual(
    (JSON.parse(services.stdout) as Array<{ name: string; instances: number }>).map((x) => [x.name, x.instances]),
    [
      ['api-bar', 1],
      ['api-foo', 1],
    ],
  );
  const viaAdmin = (await (await request(`http://127.0.0.1:${gw.adminPort}/services`)).body.json()) as { services: Array<{ name: string }> };
  assert.deepEqual(
    viaAdmin.services.map((x) => x.name),
    ['api-bar', 'api-foo'],
  );
});

test('permissions: two gateways share a fleet rate limit within the shipped config', async () => {
  const second = await startTestGateway({ nats: ns.url, user: 'natsgw-gateway', pass: 'change-me-gateway', inboxPrefix: '_INBOX_gw' });
  try {
    await second.gw.connected;
    await eventually(() => second.gw.overrides.state === 'watching', 10_000, 'the second gateway watches the routes bucket');
    const put = await runCli(['routes', 'put', 'api.bar', '--rate-limit', '1/h', '--burst', '2', '--rate-key', 'route', '--rate-fleet', ...withUrl(routesEditor)]);
    assert.equal(put.status, 0, put.stderr);
    await eventually(() => gw.routes.get('api.bar') !== undefined && second.gw.routes.get('api.bar') !== undefined, 5000, 'both applied the policy');
    const statuses: number[] = [];
    for (const b of [base, base]) statuses.push((await request(`${b}/bar/y`)).statusCode);
    await new Promise((r) => setTimeout(r, 400));
    statuses.push((await request(`${second.base}/bar/y`)).statusCode);
    assert.deepEqual(statuses, [200, 200, 429], 'the second gateway heard the first one’s takes');
  } finally {
    await runCli(['routes', 'rm', 'api.bar', ...withUrl(routesEditor)]);
    await second.gw.close(100);
  }
});

for (const [role, user, pass] of [
  ['a service (svc-bar)', 'svc-bar', 'change-me-bar'],
  ['any other user (app)', 'app', 'change-me-app'],
] as const) {
  test(`permissions: ${role} cannot answer another service's requests, forge announcements or hand-offs, read admin data or write routes`, async () => {
    const raw = await connectRaw(ns.url, { user, pass });
    try {
      const attempts: Array<[string, () => void]> = [
        ['take requests for api.foo', () => raw.subscribe('api.foo.>', () => undefined, 'natsgw')],
        ["sniff the gateway's replies", () => raw.subscribe('_INBOX_gw.>', () => undefined)],
        ['answer as the gateway to admin requests', () => raw.subscribe('natsgw.admin.>', () => undefined)],
        ["answer NATS's service API as api-foo", () => raw.subscribe('$SRV.INFO.api-foo', () => undefined)],
        ['drain fleet rate limits with a forged report', () => raw.publish('_NATSGW.ratelimit.api.foo', JSON.stringify({ g: 'x', k: [['', 1000]] }))],
        ["listen to the gateways' fleet reports", () => raw.subscribe('_NATSGW.ratelimit.>', () => undefined)],
        ['forge a mount announcement for api.foo', () => raw.publish('_NATSGW.mounts.announce.api.foo.deep', JSON.stringify({ v: 1, mount: 'api.foo.deep', id: 'x', state: 'up', ttlMs: 60_000 }))],
        ['hand a request to api.foo', () => raw.publish('_NATSGW.handoff.api.foo', 'x', { reply: 'app.reply' })],
        ["broadcast to api.foo's WebSocket topics", () => raw.publish('_NATSGW.topic.api.foo.room', 'forged')],
        ['read admin data', () => raw.publish('natsgw.admin.status', '', { reply: 'app.reply' })],
        ['write a route', () => raw.publish('$KV.natsgw-routes.api.evil', JSON.stringify({ upstreams: [{ url: 'http://127.0.0.1:9' }] }))],
        ['open the routes bucket', () => raw.publish('$JS.API.STREAM.INFO.KV_natsgw-routes', '', { reply: 'app.reply' })],
      ];
      for (const [what, attempt] of attempts) {
        const before = raw.errors.length;
        attempt();
        await raw.flush();
        assert.equal(raw.errors.length, before + 1, `refused: ${what}`);
        assert.match(raw.errors.at(-1)!, /Permissions Violation/, what);
      }
      // A service may publish to the gateway's inbox prefix (streams need
      // it), but without the 66 random bits of a reply subject it cannot
      // answer anything: a guessed reply is ignored.
      if (user === 'svc-bar') {
        const before = raw.errors.length;
        raw.publish('_INBOX_gw.guess.1_abcdefghijk', 'x');
        await raw.flush();
        assert.equal(raw.errors.length, before);
      }
      // And nothing of it had an effect.
      for (let i = 0; i < 20; i++) {
        const r = await request(`${base}/foo/${i}`);
        assert.equal(await r.body.text(), `foo /foo/${i}`, 'every request still reaches api.foo');
      }
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(gw.routes.match('api.evil'), undefined);
    } finally {
      raw.close();
    }
  });
}
