/**
 * SDK mounts are NATS micro services (ADR-32): they answer $SRV.PING, INFO
 * and STATS with the JSON NATS's tooling validates (checked here against
 * the schemas `nats micro` uses), with stats that are true for asynchronous
 * and streaming handlers.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createInbox, type NatsConnection } from '@nats-io/transport-node';
import { Ajv } from 'ajv';
import addFormats from 'ajv-formats';
import { request } from 'undici';
import type { RequestListener } from '@natsgw/service-sdk';
import { runCli, startStack } from './helpers.js';

const ajv = new Ajv({ strict: false });
(addFormats as unknown as (a: Ajv) => void)(ajv);
const schema = (name: string) => ajv.compile(JSON.parse(readFileSync(new URL(`../../schema/nats-micro-v1/${name}.json`, import.meta.url), 'utf8')) as object);
const valid = { PING: schema('ping_response'), INFO: schema('info_response'), STATS: schema('stats_response') };

/** Every answer to `subject` within `ms`, parsed, each checked against the schema of `verb`. */
async function ask(nc: NatsConnection, subject: string, ms = 300): Promise<Array<Record<string, unknown>>> {
  const verb = subject.split('.')[1] as keyof typeof valid;
  const inbox = createInbox();
  const answers: Array<Record<string, unknown>> = [];
  const sub = nc.subscribe(inbox, {
    callback: (_e, m) => {
      if (m.headers?.code !== 503) answers.push(m.json()); // 503: nobody listens (no responders)
    },
  });
  nc.publish(subject, new Uint8Array(0), { reply: inbox });
  await new Promise((r) => setTimeout(r, ms));
  sub.unsubscribe();
  for (const a of answers) assert.ok(valid[verb](a), `${subject}: ${JSON.stringify(valid[verb].errors)} in ${JSON.stringify(a)}`);
  return answers;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('micro: a mount answers $SRV.PING, INFO and STATS (bare, by name, by id) with what NATS tooling validates', async () => {
  const s = await startStack();
  try {
    const handler: RequestListener = (_req, res) => res.end('ok');
    const one = await s.serve(handler, { nats: s.nc, subject: 'api.shop', name: 'shop', version: '1.4.2', description: 'the shop', metadata: { team: 'web' } });
    const two = await s.serve(handler, { nats: s.ns.url, subject: 'api.shop', name: 'shop', version: '1.4.2' });
    await s.serve(handler, { nats: s.nc, subject: 'api.cart' });

    const pings = await ask(s.nc, '$SRV.PING');
    assert.deepEqual(pings.map((p) => p.name).sort(), ['api-cart', 'shop', 'shop'], 'every instance answers the bare subject; the name defaults to the mount');
    assert.equal((await ask(s.nc, '$SRV.PING.shop')).length, 2);
    const byId = await ask(s.nc, `$SRV.INFO.shop.${one.micro.id}`);
    assert.equal(byId.length, 1);
    assert.notEqual(one.micro.id, two.micro.id);
    const info = byId[0]!;
    assert.deepEqual(
      { ...info, id: undefined },
      {
        type: 'io.nats.micro.v1.info_response',
        name: 'shop',
        id: undefined,
        version: '1.4.2',
        description: 'the shop',
        metadata: { team: 'web', 'natsgw.mount': 'api.shop', 'natsgw.protocol': '2' },
        endpoints: [
          { name: 'mount', subject: 'api.shop', queue_group: 'natsgw', metadata: null },
          { name: 'tree', subject: 'api.shop.>', queue_group: 'natsgw', metadata: null },
        ],
      },
    );
    const cart = (await ask(s.nc, '$SRV.INFO.api-cart'))[0]!;
    assert.deepEqual([cart.version, cart.description], ['0.0.0', 'natsgw mount api.cart']);
    const stats = (await ask(s.nc, `$SRV.STATS.shop.${two.micro.id}`))[0]!;
    assert.equal(stats.type, 'io.nats.micro.v1.stats_response');
    assert.ok(Date.parse(stats.started as string) <= Date.now());

    // A drained service stops answering.
    await two.drain();
    assert.equal((await ask(s.nc, '$SRV.PING.shop')).length, 1);
  } finally {
    await s.close();
  }
});

test('micro: stats count a request from arrival to the end of its response; 5xx and thrown handlers are errors with last_error', async () => {
  const s = await startStack();
  try {
    const handler: RequestListener = async (req, res) => {
      if (req.url === '/stats/slow') {
        await sleep(150);
        res.end('late');
      } else if (req.url === '/stats/stream') {
        res.write('a');
        setTimeout(() => res.write('b'), 100);
        setTimeout(() => res.end('c'), 200);
      } else if (req.url === '/stats/unavailable') {
        res.statusCode = 503;
        res.end('down');
      } else if (req.url === '/stats/throws') {
        throw new Error('database exploded');
      } else if (req.url === '/stats/missing') {
        res.statusCode = 404;
        res.end('no');
      } else {
        res.end('root');
      }
    };
    const svc = await s.serve(handler, { nats: s.nc, subject: 'api.stats', logger: { error() {}, warn() {}, info() {} } });
    const get = async (path: string) => {
      const r = await request(`${s.base}${path}`);
      return [r.statusCode, await r.body.text()] as const;
    };
    assert.deepEqual(await get('/stats'), [200, 'root']);
    assert.deepEqual(await get('/stats/slow'), [200, 'late']);
    assert.deepEqual(await get('/stats/stream'), [200, 'abc']);
    assert.equal((await get('/stats/missing'))[0], 404);
    assert.equal((await get('/stats/unavailable'))[0], 503);
    assert.equal((await get('/stats/throws'))[0], 500);

    const stats = (await ask(s.nc, `$SRV.STATS.api-stats.${svc.micro.id}`))[0]! as { endpoints: Array<Record<string, number | string>> };
    const [mount, tree] = stats.endpoints as [Record<string, number | string>, Record<string, number | string>];
    assert.deepEqual([mount.name, mount.subject, mount.num_requests, mount.num_errors], ['mount', 'api.stats', 1, 0]);
    assert.deepEqual([tree.name, tree.subject, tree.num_requests, tree.num_errors], ['tree', 'api.stats.>', 5, 2], '404 is no error; 503 and the throw are');
    assert.match(String(tree.last_error), /database exploded/);
    // slow (≥ 150 ms) and stream (≥ 200 ms) counted until their response ended: ≥ 350 ms of 5 requests.
    assert.ok(Number(tree.processing_time) >= 350e6, `processing_time ${tree.processing_time} ns`);
    assert.equal(tree.average_processing_time, Math.round(Number(tree.processing_time) / 5));
  } finally {
    await s.close();
  }
});

test('micro: invalid name or version is refused by serve(); serviceApi: false answers nothing', async () => {
  const s = await startStack();
  try {
    const handler: RequestListener = (_req, res) => res.end('ok');
    await assert.rejects(s.serve(handler, { nats: s.nc, subject: 'api.x', name: 'has.dot' }), /name "has.dot" must be/);
    await assert.rejects(s.serve(handler, { nats: s.nc, subject: 'api.x', version: '1.2' }), /version "1.2" must be a semantic version/);
    await assert.rejects(s.serve(handler, { nats: s.nc, subject: 'api.x', metadata: { n: 1 as unknown as string } }), /metadata "n" must be a string/);
    await s.serve(handler, { nats: s.nc, subject: 'api.quiet', serviceApi: false });
    assert.deepEqual(await ask(s.nc, '$SRV.PING.api-quiet'), []);
    assert.equal((await request(`${s.base}/quiet`)).statusCode, 200, 'it still serves');
  } finally {
    await s.close();
  }
});

/** A micro service not written with the SDK (as a Go or Python one would answer), on a plain nats.js connection. */
function foreignService(nc: NatsConnection, id: string, requests: number): () => void {
  const base = { name: 'billing', id, version: '2.0.1', metadata: { lang: 'go' } };
  const answers: Record<string, object> = {
    INFO: { type: 'io.nats.micro.v1.info_response', ...base, description: 'billing in Go', endpoints: [{ name: 'charge', subject: 'billing.charge', queue_group: 'q', metadata: null }] },
    STATS: {
      type: 'io.nats.micro.v1.stats_response',
      ...base,
      started: new Date().toISOString(),
      endpoints: [
        {
          name: 'charge',
          subject: 'billing.charge',
          queue_group: 'q',
          num_requests: requests,
          num_errors: 1,
          last_error: 'card declined',
          processing_time: requests * 2_000_000,
          average_processing_time: 2_000_000,
        },
      ],
    },
  };
  const subs = (['INFO', 'STATS'] as const).map((verb) => nc.subscribe(`$SRV.${verb}`, { callback: (_e, m) => void m.respond(JSON.stringify(answers[verb])) }));
  return () => {
    for (const s of subs) s.unsubscribe();
  };
}

test('micro: natsgw services and GET /services list every micro service on the account, ours and others; hostile answers are skipped', async () => {
  const s = await startStack();
  const stop: Array<() => void> = [];
  try {
    const handler: RequestListener = (_req, res) => res.end('ok');
    await s.serve(handler, { nats: s.nc, subject: 'api.shop', name: 'shop', version: '1.4.2' });
    await s.serve(handler, { nats: s.ns.url, subject: 'api.shop', name: 'shop', version: '1.5.0' });
    stop.push(foreignService(s.nc, 'go1', 10), foreignService(s.nc, 'go2', 30));
    for (let i = 0; i < 4; i++) assert.equal((await request(`${s.base}/shop/x`)).statusCode, 200);
    // Anyone may answer: garbage, a wrong shape, a version made to hurt a regex, a second answer from one id.
    const hostile = s.nc.subscribe('$SRV.INFO', {
      callback: (_e, m) => {
        m.respond('not json');
        if (m.reply) {
          s.nc.publish(m.reply, JSON.stringify({ type: 'io.nats.micro.v1.info_response', name: 'x y', id: 'h1', version: '1.0.0', description: '' }));
          s.nc.publish(m.reply, JSON.stringify({ type: 'io.nats.micro.v1.info_response', name: 'evil', id: 'h2', version: `1.0.0-${'1'.repeat(50_000)}!`, description: '' }));
          const dup = JSON.stringify({ type: 'io.nats.micro.v1.info_response', name: 'dup', id: 'h3', version: '9.9.9', description: '\u001b[31mred' });
          s.nc.publish(m.reply, dup);
          s.nc.publish(m.reply, dup);
        }
      },
    });
    stop.push(() => hostile.unsubscribe());

    const t0 = Date.now();
    const json = await runCli(['services', '--nats', s.ns.url, '--json', '--wait', '1500']);
    assert.equal(json.status, 0, json.stderr);
    assert.ok(Date.now() - t0 < 5000);
    const list = JSON.parse(json.stdout) as Array<Record<string, unknown>>;
    assert.deepEqual(
      list.map((x) => [x.name, x.versions, x.instances, x.endpoints, x.requests, x.errors, x.natsgw]),
      [
        ['billing', ['2.0.1'], 2, ['billing.charge'], 40, 2, false],
        ['dup', ['9.9.9'], 1, [], 0, 0, false],
        ['shop', ['1.4.2', '1.5.0'], 2, ['api.shop', 'api.shop.>'], 4, 0, true],
      ],
    );
    assert.doesNotMatch(json.stdout, /\u001b/, 'control characters from answers are escaped');
    assert.equal(list[0]!.averageLatencyMs, 2);
    assert.match(json.stderr, /skipped 4 answers that are not a micro service's: .*not JSON.*does not fit its schema.*version of 50\d+ characters.*second INFO answer from h3/);

    const tableOut = await runCli(['services', '--nats', s.ns.url, '--wait', '1500']);
    assert.equal(tableOut.status, 0);
    const lines = tableOut.stdout.trim().split('\n');
    assert.match(lines[0]!, /^NAME\s+VERSION\s+INSTANCES\s+ENDPOINTS\s+REQUESTS\s+ERRORS\s+AVG MS\s+NATSGW$/);
    assert.match(lines[1]!, /^billing\s+2\.0\.1\s+2\s+billing\.charge\s+40\s+2\s+2\.00\s+-$/);
    assert.match(lines[2]!, /^dup\s+9\.9\.9\s+1\s+0\s+0\s+-\s+-$/);
    assert.match(lines[3]!, /^shop\s+1\.4\.2 1\.5\.0\s+2\s+api\.shop api\.shop\.>\s+4\s+0\s+\d+\.\d+\s+yes$/);

    const admin = await request(`http://127.0.0.1:${s.gw.adminPort}/services`);
    assert.equal(admin.statusCode, 200);
    const view = (await admin.body.json()) as { services: Array<{ name: string; instances: number }>; skipped: string[] };
    assert.deepEqual(
      view.services.map((x) => [x.name, x.instances]),
      [
        ['billing', 2],
        ['dup', 1],
        ['shop', 2],
      ],
    );
    assert.equal(view.skipped.length, 4);
  } finally {
    for (const f of stop) f();
    await s.close();
  }
});
