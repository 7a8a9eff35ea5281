import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NodeConnectionOptions } from '@nats-io/transport-node';
import { request } from 'undici';
import { startNatsServer } from '@natsgw/devkit';
import { echo, respond, startTestGateway } from './helpers.js';

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
