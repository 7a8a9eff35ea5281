import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from '@natsgw/devkit';
import { routesBucket, httpRoute } from './backends.js';
import { eventually, startStack } from './helpers.js';

const BIN = fileURLToPath(new URL('../../bin/natsgw.js', import.meta.url));
const cli = (args: string[]) => spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 20_000 });

test('cli routes: put/get/ls/rm against a running gateway, validated by the gateway schema', async () => {
  const s = await startStack();
  const nats = ['--nats', s.ns.url];
  try {
    const put = cli([
      'routes',
      'put',
      'api.legacy',
      ...nats,
      '--upstream',
      'http://127.0.0.1:9=3',
      '--upstream',
      'http://127.0.0.1:10',
      '--balancing',
      'round-robin',
      '--health-path',
      '/health',
      '--strip-prefix',
    ]);
    assert.equal(put.status, 0, put.stderr);
    assert.match(put.stdout, /^put api\.legacy \(revision \d+\): http:\/\/127\.0\.0\.1:9=3 http:\/\/127\.0\.0\.1:10 {2}\(round-robin, health \/health, strip-prefix\)\n$/);
    await eventually(() => s.gw.routes.match('api.legacy') !== undefined, 3000, 'the gateway applied it');
    const applied = httpRoute(s.gw.routes, 'api.legacy');
    assert.equal(applied.config.balancing, 'round-robin');
    assert.deepEqual(
      applied.upstreams.map((_, i) => applied.weight(i)),
      [3, 1],
    );

    // The stored value is what the user said; defaults stay implicit.
    const kv = await routesBucket(s.nc);
    assert.deepEqual(JSON.parse(Buffer.from((await kv.get('api.legacy'))!.value).toString()), {
      upstreams: [{ url: 'http://127.0.0.1:9', weight: 3 }, { url: 'http://127.0.0.1:10' }],
      balancing: 'round-robin',
      healthCheck: { path: '/health' },
      stripPrefix: true,
    });

    const get = cli(['routes', 'get', 'api.legacy', ...nats, '--json']);
    assert.equal(get.status, 0);
    const listing = JSON.parse(get.stdout) as { valid: boolean; route: { retries: number } };
    assert.equal(listing.valid, true);
    assert.equal(listing.route.retries, 1, 'defaults shown');

    // An entry written by another tool that the gateway rejects: ls shows it with the same reason.
    await kv.put('api.broken', JSON.stringify({ upstreams: [{ url: 'http://x' }], balancing: 'fastest' }));
    await eventually(() => s.gw.routes.rejected.has('api.broken'), 3000, 'the gateway rejected it');
    const ls = cli(['routes', 'ls', ...nats]);
    assert.equal(ls.status, 0);
    const lines = ls.stdout.trim().split('\n');
    assert.match(lines[0]!, /^SUBJECT\s+REV\s+STATUS\s+ROUTE$/);
    assert.match(ls.stdout, /api\.broken\s+\d+\s+invalid\s+INVALID: balancing: must be one of p2c, round-robin, least-connections, random/);
    assert.ok(ls.stdout.includes(`INVALID: ${s.gw.routes.rejected.get('api.broken')!.reason}`), 'same reason as the gateway');
    const lsJson = JSON.parse(cli(['routes', 'ls', ...nats, '--json']).stdout) as Array<{ subject: string; valid: boolean }>;
    assert.deepEqual(
      lsJson.map((l) => [l.subject, l.valid]),
      [
        ['api.broken', false],
        ['api.legacy', true],
      ],
    );

    const rm = cli(['routes', 'rm', 'api.legacy', ...nats]);
    assert.equal(rm.status, 0);
    await eventually(() => s.gw.routes.match('api.legacy') === undefined, 3000, 'the gateway dropped it');
  } finally {
    await s.close();
  }
});

test('cli routes: invalid input is exit 2 and writes nothing; missing routes and unreachable NATS are exit 1', async () => {
  const s = await startStack();
  const nats = ['--nats', s.ns.url];
  const dir = mkdtempSync(join(tmpdir(), 'natsgw-cli-'));
  try {
    const cases: Array<[string[], number, RegExp]> = [
      [['routes', 'put', 'api.x', ...nats, '--upstream', 'ftp://nope'], 2, /^natsgw: invalid route: upstreams\.0\.url/],
      [['routes', 'put', 'api.x', ...nats, '--upstream', 'http://a', '--retries', 'many'], 2, /^natsgw: --retries must be a whole number/],
      [['routes', 'put', 'api.x', ...nats, '--upstream', 'http://a', '--balancing', 'fastest'], 2, /^natsgw: Invalid values/],
      [['routes', 'put', 'api.*', ...nats, '--upstream', 'http://a'], 2, /^natsgw: invalid subject "api\.\*"/],
      [['routes', 'put', '/legacy', ...nats, '--upstream', 'http://a'], 2, /not paths/],
      [['routes', 'put', 'api.x', ...nats], 2, /give at least one --upstream/],
      [['routes', 'put', 'api.x', ...nats, '--file', join(dir, 'missing.json')], 2, /cannot read .*missing\.json: ENOENT/],
      [['routes', 'get', 'api.none', ...nats], 1, /^natsgw: no route for api\.none$/],
      [['routes', 'rm', 'api.none', ...nats], 1, /^natsgw: no route for api\.none$/],
      [['routes', 'ls', '--nats', `nats://127.0.0.1:${await freePort()}`], 1, /^natsgw: cannot connect to NATS at nats:\/\/127\.0\.0\.1:\d+: /],
      [['routes', 'frob'], 2, /^natsgw: unknown command frob$/],
    ];
    for (const [args, code, message] of cases) {
      const r = cli(args);
      assert.equal(r.status, code, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr.trim(), message, args.join(' '));
      assert.equal(r.stderr.trim().split('\n').length, 1);
    }
    const kv = await routesBucket(s.nc);
    const keys: string[] = [];
    for await (const k of await kv.keys()) keys.push(k);
    assert.deepEqual(keys, [], 'nothing was written');

    const file = join(dir, 'route.json');
    writeFileSync(file, JSON.stringify({ upstreams: [{ url: 'http://127.0.0.1:9' }], retries: 0 }));
    assert.equal(cli(['routes', 'put', 'api.file', ...nats, '--file', file]).status, 0);
    const both = cli(['routes', 'put', 'api.file', ...nats, '--file', file, '--upstream', 'http://a']);
    assert.equal(both.status, 2);
    assert.match(both.stderr, /--file cannot be combined with --upstream/);
  } finally {
    await s.close();
  }
});

test('cli routes: watch prints changes as they happen and stops on SIGINT', async () => {
  const s = await startStack();
  const watch = spawn(process.execPath, [BIN, 'routes', 'watch', '--nats', s.ns.url, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  try {
    const lines: Array<{ subject: string; operation: string; valid?: boolean }> = [];
    let buffer = '';
    watch.stdout.on('data', (d: Buffer) => {
      buffer += d.toString();
      let nl: number;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        lines.push(JSON.parse(buffer.slice(0, nl)) as (typeof lines)[number]);
        buffer = buffer.slice(nl + 1);
      }
    });
    const kv = await routesBucket(s.nc);
    let stderr = '';
    watch.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    await eventually(() => stderr.includes('watching routes bucket natsgw-routes'), 10_000, 'the watcher is up');
    await kv.put('api.w', JSON.stringify({ upstreams: [{ url: 'http://127.0.0.1:9' }] }));
    await kv.put('api.w', '{"upstreams": 1}');
    await kv.delete('api.w');
    await eventually(() => lines.length >= 3, 5000, 'three changes printed');
    assert.deepEqual(
      lines.map((l) => [l.subject, l.operation, l.valid]),
      [
        ['api.w', 'PUT', true],
        ['api.w', 'PUT', false],
        ['api.w', 'DEL', undefined],
      ],
    );
    const exited = new Promise<number | null>((resolve) => watch.once('exit', resolve));
    watch.kill('SIGINT');
    assert.equal(await exited, 0);
  } finally {
    watch.kill('SIGKILL');
    await s.close();
  }
});

test('cli routes: policy flags build each block (API keys stored as hashes), ls shows policies, explain shows each block with the key it comes from', async () => {
  const s = await startStack();
  const nats = ['--nats', s.ns.url];
  const dir = mkdtempSync(join(tmpdir(), 'natsgw-jwk-'));
  try {
    const root = cli([
      'routes',
      'put',
      'api',
      ...nats,
      '--cors',
      'https://app.example.com',
      '--cors',
      'https://*.example.org',
      '--cors-credentials',
      '--rate-limit',
      '100/s',
      '--burst',
      '200',
      '--compress',
    ]);
    assert.equal(root.status, 0, root.stderr);
    assert.match(
      root.stdout,
      /^put api \(revision \d+\): NATS {2}policy: cors https:\/\/app\.example\.com https:\/\/\*\.example\.org \+credentials, rateLimit 100\/second burst 200 by client, compression br\|gzip\n$/,
    );
    const jwk = join(dir, 'key.json');
    writeFileSync(jwk, JSON.stringify({ kty: 'EC', crv: 'P-256', x: 'f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU', y: 'x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0', kid: 'k1' }));
    const admin = cli([
      'routes',
      'put',
      'api.admin',
      ...nats,
      '--jwt-key-file',
      jwk,
      '--jwt-issuer',
      'https://issuer.test',
      '--jwt-scope',
      'admin',
      '--api-key',
      'ci=s3cret',
      '--methods',
      'GET,DELETE',
      '--timeout',
      '5000',
    ]);
    assert.equal(admin.status, 0, admin.stderr);
    const kv = await routesBucket(s.nc);
    const stored = JSON.parse(Buffer.from((await kv.get('api.admin'))!.value).toString());
    assert.deepEqual(stored.policy.auth.apiKeys.keys, [{ id: 'ci', sha256: createHash('sha256').update('s3cret').digest('hex') }], 'only the hash is stored');
    assert.deepEqual(stored.policy.limits, { methods: ['GET', 'DELETE'], timeoutMs: 5000 });
    assert.equal(stored.policy.auth.jwt.keys[0].kid, 'k1');
    assert.ok(!JSON.stringify(stored).includes('s3cret'));

    const ls = cli(['routes', 'ls', ...nats]);
    assert.equal(ls.status, 0, ls.stderr);
    assert.match(ls.stdout, /api\.admin .*NATS {2}policy: auth jwt\|api-key \(1\), limits GET\|DELETE timeout 5000ms/);

    const explain = cli(['routes', 'explain', '/admin/users/7', ...nats]);
    assert.equal(explain.status, 0, explain.stderr);
    assert.equal(
      explain.stdout,
      [
        '/admin/users/7 → api.admin.users.7',
        '  target       NATS (envelope) on api.admin.users.7',
        '  cors         cors https://app.example.com https://*.example.org +credentials  (from api)',
        '  rateLimit    rateLimit 100/second burst 200 by client  (from api)',
        '  auth         auth jwt|api-key (1)  (from api.admin)',
        '  compression  compression br|gzip  (from api)',
        '  limits       limits GET|DELETE timeout 5000ms  (from api.admin)',
        '',
      ].join('\n'),
    );
    // An override below takes the target; its policies combine with those above. A rejected entry on the way is named.
    assert.equal(cli(['routes', 'put', 'api.admin.legacy', ...nats, '--upstream', 'http://127.0.0.1:9', '--methods', 'GET']).status, 0);
    await kv.put('api.admin.legacy.broken', '{"policy":{}}');
    const ex = cli(['routes', 'explain', '/admin/legacy/broken/x', ...nats, '--json']);
    const e = JSON.parse(ex.stdout);
    assert.deepEqual(e.target, { kind: 'http', key: 'api.admin.legacy', summary: 'http://127.0.0.1:9  (p2c)' });
    assert.deepEqual(
      e.policy.map((p: { block: string; key: string }) => `${p.block}:${p.key}`),
      ['cors:api', 'rateLimit:api', 'auth:api.admin', 'compression:api', 'limits:api.admin.legacy'],
    );
    assert.deepEqual(e.rejected, [{ key: 'api.admin.legacy.broken', reason: 'policy: sets no block' }]);
    // Under another root nothing applies.
    const other = JSON.parse(cli(['routes', 'explain', '/admin', ...nats, '--subject', 'web', '--json']).stdout);
    assert.deepEqual([other.subject, other.target.kind, other.policy], ['web.admin', 'nats', []]);

    // Usage errors: exit 2, nothing written.
    for (const [args, msg] of [
      [['--rate-limit', 'fast'], /--rate-limit must be RATE\/UNIT/],
      [['--burst', '3'], /need --rate-limit/],
      [['--cors-credentials'], /need at least one --cors/],
      [['--api-key', 'nokey'], /--api-key must be ID=KEY/],
      [['--cors', '*', '--cors-credentials'], /credentials/],
      [['--balancing', 'p2c'], /configures HTTP backends: give --upstream/],
      [[], /give at least one --upstream/],
    ] as const) {
      const r = cli(['routes', 'put', 'api.bad', ...nats, ...args]);
      assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, msg);
    }
    assert.equal(await kv.get('api.bad'), null);
  } finally {
    await s.close();
  }
});
