/**
 * Admin data over NATS, where anyone who may subscribe or publish on the
 * admin subjects is a possible attacker: the token never travels, a signed
 * request cannot be reused, secrets never leave the routes bucket, and the
 * fleet CLI survives rogue answers without printing raw control characters.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createInbox, headers as natsHeaders, type Msg } from '@nats-io/transport-node';
import { request } from 'undici';
import { connectRaw } from '@natsgw/devkit';
import { ADMIN_AUTH_HEADER, bearerToken, signAdminRequest } from '../src/ops/admin-token.js';
import { openRoutesBucket } from '../src/routes/routes-bucket.js';
import { startBackends } from './backends.js';
import { eventually, runCli, startStack } from './helpers.js';

const TOKEN = 'a-long-admin-token-0123456789';

test('admin: over NATS the token never travels; a signed request seen on the subject cannot be replayed, to another reply or the same one', async () => {
  const s = await startStack({ adminToken: TOKEN });
  try {
    // An eavesdropper on the admin subjects.
    const seen: Msg[] = [];
    const spy = s.nc.subscribe('natsgw.admin.>', { callback: (_e, m) => void seen.push(m) });
    await s.nc.flush();
    const ok = await runCli(['status', '--nats', s.ns.url, '--admin-token', TOKEN, '--json']);
    assert.equal(ok.status, 0, ok.stderr);
    assert.equal((JSON.parse(ok.stdout) as Array<{ ok: boolean }>)[0]!.ok, true);
    await eventually(() => seen.length === 1, 2000, 'request seen');
    const captured = seen[0]!;
    const wire = JSON.stringify([...(captured.headers?.keys() ?? []).map((k) => [k, captured.headers!.values(k)])]) + Buffer.from(captured.data).toString();
    assert.ok(!wire.includes(TOKEN), 'the token is not on the wire');
    const auth = captured.headers!.get(ADMIN_AUTH_HEADER);
    assert.match(auth, /^NATSGW-HMAC-SHA256 ts=\d+,nonce=[0-9a-f]{32},sig=[0-9a-f]{64}$/);

    const ask = async (subject: string, headerValue: string | undefined, reply = createInbox()): Promise<{ ok: boolean; error?: string } | undefined> => {
      const answers: Array<{ ok: boolean; error?: string }> = [];
      const sub = s.nc.subscribe(reply, { callback: (_e, m) => void answers.push(m.json()) });
      const h = natsHeaders();
      if (headerValue !== undefined) h.set(ADMIN_AUTH_HEADER, headerValue);
      s.nc.publish(subject, '', { reply, headers: h });
      await s.nc.flush();
      await new Promise((r) => setTimeout(r, 200));
      sub.unsubscribe();
      return answers[0];
    };
    // Replayed to the attacker's own inbox: the signature covers the reply subject.
    assert.deepEqual(await ask('natsgw.admin.status', auth), { id: s.gw.id, ok: false, error: 'unauthorized' });
    // Replayed with the original reply subject: that nonce was used.
    assert.deepEqual(await ask('natsgw.admin.status', auth, captured.reply!), { id: s.gw.id, ok: false, error: 'unauthorized' });
    // Moved to another verb: the signature covers the subject.
    assert.equal((await ask('natsgw.admin.routes', auth))?.ok, false);
    // A bearer token over NATS is no longer accepted, nor a stale signature, nor one made with another token.
    assert.equal((await ask('natsgw.admin.status', `Bearer ${TOKEN}`))?.ok, false);
    const stale = createInbox();
    assert.equal((await ask('natsgw.admin.status', signAdminRequest(TOKEN, 'natsgw.admin.status', stale, Date.now() - 60_000), stale))?.ok, false);
    const other = createInbox();
    assert.equal((await ask('natsgw.admin.status', signAdminRequest('another-token-of-16+', 'natsgw.admin.status', other), other))?.ok, false);
    // A fresh, correct one works.
    const fresh = createInbox();
    assert.equal((await ask('natsgw.admin.status', signAdminRequest(TOKEN, 'natsgw.admin.status', fresh), fresh))?.ok, true);
    spy.unsubscribe();
  } finally {
    await s.close();
  }
});

test('admin: the bearer token is parsed in linear time; "Bearer" + 1 MB of spaces + U+2028 is refused at once', () => {
  assert.equal(bearerToken('Bearer abc'), 'abc');
  assert.equal(bearerToken('bearer   abc  '), 'abc');
  assert.equal(bearerToken('Bearer'), undefined);
  assert.equal(bearerToken('Bearer    '), undefined);
  assert.equal(bearerToken('Basic abc'), undefined);
  assert.equal(bearerToken('Bearerabc'), undefined);
  const t0 = performance.now();
  // /^Bearer\s+(.+)$/i took 2.1 s on 40 KB of this here; 1 MB would take about 20 minutes.
  assert.equal(bearerToken('Bearer' + ' '.repeat(1024 * 1024) + '\u2028'), '\u2028');
  assert.ok(performance.now() - t0 < 1000, `took ${performance.now() - t0} ms`);
});

test('admin: without --admin-token, requestHeaders.set values (backend API keys) are redacted in /routes, over NATS, and in natsgw routes ls', async () => {
  const s = await startStack();
  const [backend] = await startBackends(1);
  try {
    const kv = await openRoutesBucket(s.nc);
    await kv.put('api.secret', JSON.stringify({ upstreams: [{ url: backend!.url }], requestHeaders: { set: { 'x-api-key': 'sk-live-SECRET-123' } } }));
    await eventually(() => s.gw.routes.match('api.secret') !== undefined, 5000, 'applied');
    const http = await (await request(`http://127.0.0.1:${s.gw.adminPort}/routes`)).body.text();
    const nats = Buffer.from((await s.nc.request('natsgw.admin.routes', '', { timeout: 1000 })).data).toString();
    const ls = await runCli(['routes', 'ls', '--nats', s.ns.url, '--json']);
    const fleet = await runCli(['routes', '--nats', s.ns.url, '--json']);
    for (const [where, text] of [
      ['/routes', http],
      ['NATS', nats],
      ['routes ls', ls.stdout],
      ['routes (fleet)', fleet.stdout],
    ] as const) {
      assert.ok(text.includes('x-api-key'), `${where} names the header`);
      assert.ok(!text.includes('sk-live-SECRET-123'), `${where} hides its value`);
      assert.ok(text.includes('[redacted]'), `${where} says it is redacted`);
    }
    // The backend still receives it.
    const r = await request(`${s.base}/secret/x`);
    assert.equal(r.statusCode, 200);
    await r.body.dump();
    assert.equal(backend!.requests.at(-1)?.headers['x-api-key'], 'sk-live-SECRET-123');
  } finally {
    await backend!.stop();
    await s.close();
  }
});

test('fleet CLI: rogue and garbage answers are skipped and named; control characters from answers or KV values are never printed raw', async () => {
  const s = await startStack();
  const raw = await connectRaw(s.ns.url);
  try {
    const real = JSON.parse(Buffer.from((await s.nc.request('natsgw.admin.status', '', { timeout: 1000 })).data).toString()) as { data: Record<string, unknown> };
    raw.subscribe('natsgw.admin.status', (m) => {
      raw.publish(m.reply!, 'not json at all');
      raw.publish(m.reply!, JSON.stringify({ id: 'rogue1', ok: true, data: { id: 'rogue1' } })); // wrong shape
      raw.publish(m.reply!, JSON.stringify({ id: s.gw.id, ok: true, data: real.data })); // a second answer for the real id
      raw.publish(m.reply!, JSON.stringify({ id: 'x\u001b[2J', ok: false, error: 'e' })); // an id no gateway has
      raw.publish(m.reply!, JSON.stringify({ id: 'painted', ok: true, data: { ...real.data, id: 'painted', rootSubject: 'api\u001b[31m\u009b2J\u202e' } }));
    });
    await raw.flush();
    const table = await runCli(['status', '--nats', s.ns.url]);
    assert.equal(table.status, 0, table.stderr);
    assert.match(table.stderr, /^natsgw: skipped 4 answers that are not a gateway's: .*not JSON.*expected shape.*second answer.*not an admin answer/);
    const lines = table.stdout.trim().split('\n');
    assert.equal(lines.length, 3, table.stdout); // header, the real gateway, the well-formed rogue one
    const painted = lines.find((l) => l.startsWith('painted'))!;
    assert.ok(painted.includes('api\\u001b[31m\\u009b2J\\u202e'), painted);
    for (const out of [table.stdout, table.stderr]) assert.ok(!/[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u202e]/.test(out), 'no raw control characters');
    const json = await runCli(['status', '--nats', s.ns.url, '--json']);
    assert.ok(!/[\u007f-\u009f\u202e]/.test(json.stdout), 'JSON escapes them');
    assert.equal(
      (JSON.parse(json.stdout) as Array<{ data: { rootSubject: string } }>).find((a) => (a as unknown as { gateway: string }).gateway === 'painted')!.data.rootSubject,
      'api\u001b[31m\u009b2J\u202e',
      'the same data for a JSON reader',
    );

    // A value in the routes bucket with terminal escapes in it.
    const kv = await openRoutesBucket(s.nc);
    await kv.put('api.evil', '{"upstreams": "\u001b]0;pwned\u0007\u009b"}');
    for (const args of [
      ['routes', 'get', 'api.evil'],
      ['routes', 'ls'],
      ['routes', 'ls', '--json'],
    ]) {
      const r = await runCli([...args, '--nats', s.ns.url]);
      assert.ok(!/[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/.test(r.stdout + r.stderr), `${args.join(' ')}: no raw control characters in ${JSON.stringify(r.stdout)}`);
    }
  } finally {
    raw.close();
    await s.close();
  }
});
