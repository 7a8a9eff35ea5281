import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NodeConnectionOptions } from '@nats-io/transport-node';
import { request } from 'undici';
import { startNatsServer } from '@natsgw/devkit';
import { echo, eventually, respond, spawnGateway, startTestGateway } from './helpers.js';

async function roundTrip(natsOpts: NodeConnectionOptions, gatewayFlags: Record<string, unknown>): Promise<void> {
  const service = await connect(natsOpts);
  const { gw, base } = await startTestGateway(gatewayFlags);
  try {
    await gw.connected;
    await respond(service, 'api.secure', (req) => echo(req));
    const r = await request(`${base}/secure`);
    assert.equal(r.statusCode, 200);
    await r.body.dump();
  } finally {
    await gw.close(200);
    await service.close();
  }
}

test('auth: --token', async () => {
  const ns = await startNatsServer({ config: 'authorization { token: "s3cret-token" }' });
  try {
    await roundTrip({ servers: ns.url, token: 's3cret-token' }, { nats: ns.url, token: 's3cret-token' });
  } finally {
    await ns.dispose();
  }
});

test('auth: --user and --pass', async () => {
  const ns = await startNatsServer({ config: 'authorization { users: [ { user: "gw", password: "pw1" } ] }' });
  try {
    await roundTrip({ servers: ns.url, user: 'gw', pass: 'pw1' }, { nats: ns.url, user: 'gw', pass: 'pw1' });
  } finally {
    await ns.dispose();
  }
});

test('auth: wrong credentials make `connected` reject with the reason', async () => {
  const ns = await startNatsServer({ config: 'authorization { token: "right" }' });
  const { gw, base } = await startTestGateway({ nats: ns.url, token: 'wrong' });
  try {
    await assert.rejects(gw.connected, /auth|Authorization/i);
    const r = await request(`${base}/x`);
    assert.equal(r.statusCode, 503);
    await r.body.dump();
  } finally {
    await gw.close(100);
    await ns.dispose();
  }
});

test('auth: TLS with a client certificate (--tls-ca, --tls-cert, --tls-key)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'natsgw-tls-'));
  const f = (n: string) => join(dir, n);
  const ssl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'ignore' });
  ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=natsgw test CA', '-keyout', f('ca.key'), '-out', f('ca.pem'));
  for (const who of ['server', 'client']) {
    ssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${who}`, '-keyout', f(`${who}.key`), '-out', f(`${who}.csr`));
    execFileSync('sh', ['-c', `printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > ${f(`${who}.ext`)}`]);
    ssl('x509', '-req', '-in', f(`${who}.csr`), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-days', '1', '-extfile', f(`${who}.ext`), '-out', f(`${who}.pem`));
  }
  const ns = await startNatsServer({
    config: `tls { cert_file: "${f('server.pem')}", key_file: "${f('server.key')}", ca_file: "${f('ca.pem')}", verify: true }`,
  });
  const url = `tls://127.0.0.1:${ns.port}`;
  try {
    await roundTrip(
      { servers: url, tls: { caFile: f('ca.pem'), certFile: f('client.pem'), keyFile: f('client.key') } },
      { nats: url, tlsCa: f('ca.pem'), tlsCert: f('client.pem'), tlsKey: f('client.key') },
    );
  } finally {
    await ns.dispose();
  }
});

const users = (names: string[]) => `authorization { users: [ ${names.map((u) => `{ user: "${u}", password: "pw" }`).join(', ')} ] }`;

test('auth: a user revoked by a config reload — the gateway reports not live (/healthz 503) and natsgw exits 1 with one line', async () => {
  const ns = await startNatsServer({ jetstream: false, config: users(['gw', 'lib']) });
  const { gw } = await startTestGateway({ nats: ns.url, user: 'lib', pass: 'pw' });
  const cli = await spawnGateway(['serve', '--nats', ns.url, '--user', 'gw', '--pass', 'pw', '--host', '127.0.0.1', '--port', '0', '--admin-port', '0'], (out) => out.includes('connected to NATS'));
  try {
    await gw.connected;
    const health = `http://127.0.0.1:${gw.adminPort}/healthz`;
    assert.equal((await fetch(health)).status, 200);
    let stderr = '';
    cli.child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => cli.child.once('exit', resolve));
    await ns.reload(users(['someone-else']));
    const failure = await Promise.race([gw.failed, new Promise<Error>((_, reject) => setTimeout(() => reject(new Error('gw.failed never resolved')), 10_000))]);
    assert.match(failure.message, /Authorization Violation/);
    const r = await fetch(health);
    assert.equal(r.status, 503);
    assert.match(((await r.json()) as { reason: string }).reason, /closed for good: Authorization Violation/);
    const code = await Promise.race([exited, new Promise<string>((resolve) => setTimeout(() => resolve('still running'), 10_000))]);
    assert.equal(code, 1);
    assert.equal(stderr, 'natsgw: NATS connection closed for good: Authorization Violation; exiting\n');
  } finally {
    cli.child.kill('SIGKILL');
    await gw.close(100);
    await ns.dispose();
  }
});

test('auth: a user revoked by a config reload — a service whose connection serve() opened exits 1 with one line', async () => {
  const ns = await startNatsServer({ jetstream: false, config: users(['svc']) });
  const dir = mkdtempSync(join(tmpdir(), 'natsgw-svc-'));
  const script = join(dir, 'service.mjs');
  const sdk = new URL('../../../service-sdk/dist/src/index.js', import.meta.url).href;
  writeFileSync(
    script,
    `import { serve } from ${JSON.stringify(sdk)};\nawait serve((req, res) => res.end('hi'), { nats: { servers: ${JSON.stringify(ns.url)}, user: 'svc', pass: 'pw', reconnectTimeWait: 200 }, subject: 'api.svc' });\nconsole.log('ready');\n`,
  );
  const child = spawn(process.execPath, [script], { stdio: ['ignore', 'pipe', 'pipe'] });
  try {
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    await eventually(() => stdout.includes('ready'), 10_000, 'service ready');
    await ns.reload(users(['someone-else']));
    const code = await Promise.race([exited, new Promise<string>((resolve) => setTimeout(() => resolve('still running'), 10_000))]);
    assert.equal(code, 1);
    const lines = stderr.trim().split('\n');
    assert.equal(lines.length, 1, stderr);
    const line = JSON.parse(lines[0]!) as { level: string; msg: string };
    assert.equal(line.level, 'error');
    assert.match(line.msg, /NATS connection closed for good \(Authorization Violation\); api\.svc can no longer be served; exiting/);
  } finally {
    child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
    await ns.dispose();
  }
});
