/**
 * The auth policy through a real gateway: JWTs (RS256, ES256, EdDSA, HS256;
 * inline keys and a JWKS URL that rotates), API keys, and the verified
 * identity as services (req.auth), raw routes and HTTP backends receive it,
 * never as a client sent it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, SignJWT, type JWK } from 'jose';
import { request } from 'undici';
import { putRoute, routesBucket, startBackends } from './backends.js';
import { startStack, type Stack } from './helpers.js';

type Alg = 'RS256' | 'ES256' | 'EdDSA';
type PrivateKey = Awaited<ReturnType<typeof generateKeyPair>>['privateKey'];
const keys = new Map<string, { priv: PrivateKey; jwk: JWK }>();
async function key(kid: string, alg: Alg): Promise<{ priv: PrivateKey; jwk: JWK }> {
  let k = keys.get(kid);
  if (k === undefined) {
    const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
    k = { priv: privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg } };
    keys.set(kid, k);
  }
  return k;
}

const nowSec = () => Math.floor(Date.now() / 1000);
async function token(kid: string, alg: Alg, claims: Record<string, unknown> = {}, opts: { exp?: number; nbf?: number; aud?: string; iss?: string } = {}): Promise<string> {
  const k = await key(kid, alg);
  const jwt = new SignJWT({ scope: 'read write', ...claims })
    .setProtectedHeader({ alg, kid })
    .setSubject('alice')
    .setIssuer(opts.iss ?? 'https://issuer.test')
    .setAudience(opts.aud ?? 'natsgw')
    .setIssuedAt()
    .setExpirationTime(opts.exp ?? nowSec() + 600);
  if (opts.nbf !== undefined) jwt.setNotBefore(opts.nbf);
  return jwt.sign(k.priv);
}

async function get(s: Stack, path: string, headers: Record<string, string> = {}, body?: string) {
  const r = await request(`${s.base}${path}`, { method: body === undefined ? 'GET' : 'POST', headers, body });
  const text = await r.body.text();
  return { status: r.statusCode, headers: r.headers, text };
}

/** A service on api.secure echoing what it saw of the identity. */
async function secureService(s: Stack): Promise<void> {
  await s.serve(
    (req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c));
      req.on('end', () =>
        res.end(JSON.stringify({ auth: req.auth ?? null, header: req.headers['natsgw-auth'] ?? null, credential: req.headers.authorization ?? req.headers['x-api-key'] ?? null, body })),
      );
    },
    { nats: s.nc, subject: 'api.secure' },
  );
}

test('auth jwt: valid RS256, ES256 and EdDSA tokens pass and the service gets the verified identity; a forged identity header never reaches it', async () => {
  const s = await startStack();
  try {
    await secureService(s);
    const jwks = [(await key('rsa', 'RS256')).jwk, (await key('ec', 'ES256')).jwk, (await key('ed', 'EdDSA')).jwk];
    await putRoute(await routesBucket(s.nc), s.gw, 'api.secure', {
      policy: { auth: { jwt: { keys: jwks, issuer: 'https://issuer.test', audience: 'natsgw', requiredScopes: ['read'] } } },
    });
    const forged = JSON.stringify({ method: 'jwt', sub: 'root', claims: { admin: true } });
    for (const [kid, alg] of [
      ['rsa', 'RS256'],
      ['ec', 'ES256'],
      ['ed', 'EdDSA'],
    ] as const) {
      const r = await get(s, '/secure/x', { authorization: `Bearer ${await token(kid, alg, { team: 'web' })}`, 'natsgw-auth': forged });
      assert.equal(r.status, 200, alg);
      const seen = JSON.parse(r.text);
      assert.equal(seen.auth.method, 'jwt');
      assert.equal(seen.auth.sub, 'alice');
      assert.equal(seen.auth.claims.team, 'web');
      assert.equal(seen.header, null, 'the client’s natsgw-auth header is dropped');
      assert.equal(seen.credential, null, 'the token itself stays at the gateway (forwardCredentials: false)');
    }
    // The same token again is served from the gateway's cache of verified tokens; a POST with a body waits for a first verification.
    const t = await token('rsa', 'RS256');
    const post = await get(s, '/secure/upload', { authorization: `Bearer ${t}`, 'content-type': 'text/plain' }, 'payload');
    assert.equal(post.status, 200);
    assert.equal(JSON.parse(post.text).body, 'payload');
    assert.equal((await get(s, '/secure/x', { authorization: `Bearer ${t}` })).status, 200);
    // Required claims: a valid token without them is refused (403), one with them passes.
    await putRoute(await routesBucket(s.nc), s.gw, 'api.secure', { policy: { auth: { jwt: { keys: jwks, requiredClaims: { team: 'ops', level: 3 } } } } });
    const web = await get(s, '/secure/x', { authorization: `Bearer ${await token('ec', 'ES256', { team: 'web', level: 3 })}` });
    assert.equal(web.status, 403);
    assert.match(web.text, /team claim does not have the required value/);
    assert.equal((await get(s, '/secure/x', { authorization: `Bearer ${await token('ec', 'ES256', { team: 'ops', level: 3 })}` })).status, 200);
    // No token at all: 401 with a Bearer challenge, and the service not called.
    const none = await get(s, '/secure/x', { 'natsgw-auth': forged });
    assert.equal(none.status, 401);
    assert.equal(none.headers['www-authenticate'], 'Bearer realm="api.secure"');
    assert.match(none.text, /"unauthorized"/);
  } finally {
    await s.close();
  }
});

test('auth jwt: expired, not yet valid, wrong audience, wrong issuer, wrong key, alg none, garbage → 401; a missing scope → 403; clock skew tolerated', async () => {
  const s = await startStack();
  try {
    await secureService(s);
    const good = await key('rsa', 'RS256');
    await putRoute(await routesBucket(s.nc), s.gw, 'api.secure', {
      policy: { auth: { jwt: { keys: [good.jwk], issuer: 'https://issuer.test', audience: 'natsgw', requiredScopes: ['admin'], clockSkewSec: 30 } } },
    });
    const attacker = await generateKeyPair('RS256');
    const forgedSig = await new SignJWT({ scope: 'admin' })
      .setProtectedHeader({ alg: 'RS256', kid: 'rsa' })
      .setSubject('alice')
      .setIssuer('https://issuer.test')
      .setAudience('natsgw')
      .setExpirationTime('10m')
      .sign(attacker.privateKey);
    const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const algNone = `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ sub: 'alice', scope: 'admin', iss: 'https://issuer.test', aud: 'natsgw', exp: nowSec() + 600 })}.`;
    const cases: [string, string, number, RegExp][] = [
      ['expired', await token('rsa', 'RS256', { scope: 'admin' }, { exp: nowSec() - 120 }), 401, /expired/],
      ['not yet valid', await token('rsa', 'RS256', { scope: 'admin' }, { nbf: nowSec() + 300 }), 401, /not valid yet/],
      ['wrong audience', await token('rsa', 'RS256', { scope: 'admin' }, { aud: 'someone-else' }), 401, /aud/],
      ['wrong issuer', await token('rsa', 'RS256', { scope: 'admin' }, { iss: 'https://evil.test' }), 401, /iss/],
      ['wrong key', forgedSig, 401, /signature/],
      ['alg none', algNone, 401, /algorithm|not a valid/],
      ['garbage', 'not.a.jwt', 401, /not a valid JWT/],
      ['missing scope', await token('rsa', 'RS256', { scope: 'read' }), 403, /lacks scope admin/],
      ['expired within the skew', await token('rsa', 'RS256', { scope: 'admin' }, { exp: nowSec() - 10 }), 200, /alice/],
    ];
    for (const [what, t, status, detail] of cases) {
      const r = await get(s, '/secure/x', { authorization: `Bearer ${t}` });
      assert.equal(r.status, status, what);
      assert.match(r.text, detail, what);
      if (status === 401) assert.match(String(r.headers['www-authenticate']), /^Bearer realm="api\.secure", error="invalid_token", error_description="/, what);
      if (status === 403) assert.match(String(r.headers['www-authenticate']), /error="insufficient_scope", error_description="[^"]*", scope="admin"/, what);
    }
    assert.equal((await get(s, '/secure/x', { authorization: 'Basic YTpi' })).status, 401);
  } finally {
    await s.close();
  }
});

test('auth jwt: keys from a JWKS URL, fetched again when the issuer rotates them; unreachable keys → 503; HS256 with an inline secret', async () => {
  let served: JWK[] = [(await key('k1', 'ES256')).jwk];
  let fetches = 0;
  const jwksServer: Server = createServer((_req, res) => {
    fetches++;
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ keys: served }));
  });
  await new Promise<void>((r) => jwksServer.listen(0, '127.0.0.1', r));
  const jwksUrl = `http://127.0.0.1:${(jwksServer.address() as AddressInfo).port}/jwks.json`;
  const s = await startStack();
  try {
    await secureService(s);
    const kv = await routesBucket(s.nc);
    await putRoute(kv, s.gw, 'api.secure', { policy: { auth: { jwt: { jwksUrl, jwksCooldownMs: 0, algorithms: ['ES256'] } } } });
    assert.equal((await get(s, '/secure/x', { authorization: `Bearer ${await token('k1', 'ES256')}` })).status, 200);
    assert.equal(fetches, 1);
    // The issuer rotates: k2 replaces k1. A k2 token makes the gateway fetch again; a new k1 token is refused.
    served = [(await key('k2', 'ES256')).jwk];
    assert.equal((await get(s, '/secure/x', { authorization: `Bearer ${await token('k2', 'ES256')}` })).status, 200);
    assert.equal(fetches, 2);
    const old = await get(s, '/secure/x', { authorization: `Bearer ${await token('k1', 'ES256', { n: 2 })}` });
    assert.equal(old.status, 401);
    assert.match(old.text, /no key of this route matches/);
    // Keys that cannot be fetched: the gateway cannot tell, so 503 rather than 401.
    await new Promise<void>((r) => jwksServer.close(() => r()));
    await putRoute(kv, s.gw, 'api.secure', { policy: { auth: { jwt: { jwksUrl, algorithms: ['ES256'] } } } });
    const down = await get(s, '/secure/x', { authorization: `Bearer ${await token('k2', 'ES256', { n: 3 })}` });
    assert.equal(down.status, 503);
    assert.match(down.text, /auth-unavailable/);

    const secret = Buffer.from('a shared secret of at least 32 bytes!!');
    await putRoute(kv, s.gw, 'api.secure', { policy: { auth: { jwt: { keys: [{ kty: 'oct', k: secret.toString('base64url') }], algorithms: ['HS256'] } } } });
    const hs = await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject('svc').setExpirationTime('5m').sign(secret);
    const r = await get(s, '/secure/x', { authorization: `Bearer ${hs}` });
    assert.equal(r.status, 200);
    assert.equal(JSON.parse(r.text).auth.sub, 'svc');
    assert.equal((await get(s, '/secure/x', { authorization: `Bearer ${await token('k2', 'ES256')}` })).status, 401, 'HS256 only on this route');
  } finally {
    jwksServer.close();
    await s.close();
  }
});

test('auth apiKeys: stored as hashes; the key’s id is the identity; raw routes get Natsgw-Auth, HTTP backends natsgw-auth, never the client’s; rate limits by claim', async () => {
  const s = await startStack();
  const [backend] = await startBackends(1, (b) => (req, res) => res.end(JSON.stringify({ backend: b.name, auth: req.headers['natsgw-auth'] ?? null })));
  try {
    await secureService(s);
    const sha = (k: string) => createHash('sha256').update(k).digest('hex');
    const auth = {
      apiKeys: {
        keys: [
          { id: 'ci-bot', sha256: sha('key-one') },
          { id: 'ops', sha256: sha('key-two') },
        ],
      },
    };
    const kv = await routesBucket(s.nc);
    await putRoute(kv, s.gw, 'api.secure', { policy: { auth, rateLimit: { rate: 1, per: 'hour', burst: 2, key: 'claim:sub' } } });
    const r = await get(s, '/secure/x', { 'x-api-key': 'key-one' });
    assert.equal(r.status, 200);
    assert.deepEqual(JSON.parse(r.text).auth, { method: 'api-key', sub: 'ci-bot', claims: { sub: 'ci-bot' } });
    const bad = await get(s, '/secure/x', { 'x-api-key': 'key-three' });
    assert.equal(bad.status, 401);
    assert.equal(bad.headers['www-authenticate'], 'ApiKey realm="api.secure", header="x-api-key"');
    // By claim: ci-bot has one request left, ops its own two.
    const statuses = [];
    for (const k of ['key-one', 'key-one', 'key-two', 'key-two', 'key-two']) statuses.push((await get(s, '/secure/x', { 'x-api-key': k })).status);
    assert.deepEqual(statuses, [200, 429, 200, 200, 429]);

    // forwardCredentials: the key itself reaches the service too.
    await putRoute(kv, s.gw, 'api.secure.fwd', { policy: { auth: { ...auth, forwardCredentials: true }, rateLimit: { rate: 10, burst: 10 } } });
    assert.equal(JSON.parse((await get(s, '/secure/fwd', { 'x-api-key': 'key-one' })).text).credential, 'key-one');

    // A raw route: the identity as the Natsgw-Auth NATS header.
    let rawSeen: string | undefined;
    s.nc.subscribe('api.rawsecure.>', {
      callback: (_e, m) => {
        rawSeen = m.headers?.get('Natsgw-Auth');
        m.respond('raw ok');
      },
    });
    await putRoute(kv, s.gw, 'api.rawsecure', { target: 'nats-raw', policy: { auth } });
    const raw = await get(s, '/rawsecure/x', { 'x-api-key': 'key-two', 'natsgw-auth': '{"forged":true}' });
    assert.equal(raw.text, 'raw ok');
    assert.deepEqual(JSON.parse(rawSeen!), { method: 'api-key', sub: 'ops', claims: { sub: 'ops' } });
    // An HTTP override: the backend gets natsgw-auth from the gateway only.
    await putRoute(kv, s.gw, 'api.legacy', { upstreams: [{ url: backend!.url }], policy: { auth } });
    const o = await get(s, '/legacy/x', { 'x-api-key': 'key-one', 'natsgw-auth': '{"forged":true}' });
    assert.equal(JSON.parse(JSON.parse(o.text).auth).sub, 'ci-bot');
    assert.equal((await get(s, '/legacy/x', { 'natsgw-auth': '{"forged":true}' })).status, 401);
  } finally {
    await backend!.stop();
    await s.close();
  }
});
