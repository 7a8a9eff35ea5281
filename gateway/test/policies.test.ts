/**
 * Route policies (README "Policies"): cors, rateLimit, limits and
 * compression through a real gateway, nats-server, SDK services and an
 * override backend; how blocks combine along the subject tree; live
 * changes under traffic. Auth has its own file (policy-auth.test.ts).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import WebSocket from 'ws';
import { gunzipSync, brotliDecompressSync } from 'node:zlib';
import { request } from 'undici';
import { putRoute, routesBucket, startBackends } from './backends.js';
import { launchChromium, NO_CHROMIUM } from './chromium.js';
import { eventually, startStack, startTestGateway, type Stack } from './helpers.js';

async function withStack(fn: (s: Stack) => Promise<void>, flags: Record<string, unknown> = {}): Promise<void> {
  const s = await startStack(flags);
  try {
    await fn(s);
  } finally {
    await s.close();
  }
}

/** A service on api.app answering what it saw (method, path, headers that matter here). */
async function appService(s: Stack): Promise<{ calls: () => number }> {
  let calls = 0;
  await s.serve(
    (req, res) => {
      calls++;
      res.setHeader('content-type', 'application/json');
      if (req.url?.includes('acao')) res.setHeader('access-control-allow-origin', '*');
      res.end(JSON.stringify({ method: req.method, url: req.url }));
    },
    { nats: s.nc, subject: 'api.app' },
  );
  return { calls: () => calls };
}

test('cors: preflight answered by the gateway; allowed origins (exact and *.pattern) get the fields, others none; Vary: Origin', async () => {
  await withStack(async (s) => {
    const svc = await appService(s);
    const kv = await routesBucket(s.nc);
    await putRoute(kv, s.gw, 'api.app', {
      policy: {
        cors: {
          origins: ['https://app.example.com', 'https://*.example.org'],
          methods: ['GET', 'PUT', 'DELETE'],
          allowHeaders: ['X-Trace', 'Content-Type'],
          exposeHeaders: ['X-Request-Id'],
          credentials: true,
          maxAgeSec: 120,
        },
      },
    });
    const pre = await request(`${s.base}/app/items/1`, {
      method: 'OPTIONS',
      headers: { origin: 'https://app.example.com', 'access-control-request-method': 'PUT', 'access-control-request-headers': 'x-trace, content-type' },
    });
    assert.equal(pre.statusCode, 204);
    await pre.body.text();
    assert.equal(pre.headers['access-control-allow-origin'], 'https://app.example.com');
    assert.equal(pre.headers['access-control-allow-methods'], 'PUT');
    assert.equal(pre.headers['access-control-allow-headers'], 'x-trace, content-type');
    assert.equal(pre.headers['access-control-allow-credentials'], 'true');
    assert.equal(pre.headers['access-control-max-age'], '120');
    assert.match(String(pre.headers.vary), /Origin/);
    assert.equal(svc.calls(), 0, 'the preflight never reaches the service');

    // A pattern matches one or more labels, never the bare domain or a look-alike.
    for (const [origin, ok] of [
      ['https://a.example.org', true],
      ['https://a.b.example.org', true],
      ['https://example.org', false],
      ['https://evilexample.org', false],
      ['http://a.example.org', false],
      ['https://a.example.org.evil.com', false],
    ] as const) {
      const r = await request(`${s.base}/app/x`, { method: 'OPTIONS', headers: { origin, 'access-control-request-method': 'GET' } });
      await r.body.text();
      assert.equal(r.statusCode, ok ? 204 : 403, origin);
      assert.equal(r.headers['access-control-allow-origin'], ok ? origin : undefined, origin);
    }
    // A method or header the policy does not list: refused, without CORS fields.
    for (const headers of [{ 'access-control-request-method': 'PATCH' }, { 'access-control-request-method': 'PUT', 'access-control-request-headers': 'x-other' }]) {
      const r = await request(`${s.base}/app/x`, { method: 'OPTIONS', headers: { origin: 'https://app.example.com', ...headers } });
      assert.equal(r.statusCode, 403);
      assert.match(await r.body.text(), /cors-refused/);
      assert.equal(r.headers['access-control-allow-origin'], undefined);
    }
    // Actual requests: the allowed origin is echoed (credentials), the service's own CORS fields are replaced.
    const ok = await request(`${s.base}/app/acao`, { headers: { origin: 'https://app.example.com' } });
    await ok.body.text();
    assert.equal(ok.headers['access-control-allow-origin'], 'https://app.example.com');
    assert.equal(ok.headers['access-control-expose-headers'], 'X-Request-Id');
    assert.match(String(ok.headers.vary), /Origin/);
    const bad = await request(`${s.base}/app/acao`, { headers: { origin: 'https://evil.com' } });
    await bad.body.text();
    assert.equal(bad.statusCode, 200, 'CORS leaves the request alone: the browser withholds the response');
    assert.equal(bad.headers['access-control-allow-origin'], undefined, 'a disallowed origin gets no CORS field (not even the service’s)');
    assert.match(String(bad.headers.vary), /Origin/);
    // An OPTIONS without Access-Control-Request-Method is an ordinary request.
    const plain = await request(`${s.base}/app/x`, { method: 'OPTIONS', headers: { origin: 'https://app.example.com' } });
    assert.equal(JSON.parse(await plain.body.text()).method, 'OPTIONS');
  });
});

test('limits: methods (405 with Allow), body size (413) and timeout (504) per route; the preflight still answered', async () => {
  await withStack(async (s) => {
    await s.serve(
      (req, res) => {
        if (req.url?.includes('/slow')) setTimeout(() => res.end('late'), 1500);
        else req.resume().on('end', () => res.end('ok'));
      },
      { nats: s.nc, subject: 'api.lim' },
    );
    await putRoute(await routesBucket(s.nc), s.gw, 'api.lim', {
      policy: { limits: { methods: ['GET', 'POST'], maxRequestBodyBytes: 10, timeoutMs: 300 }, cors: { origins: ['*'] } },
    });
    const del = await request(`${s.base}/lim/a`, { method: 'DELETE' });
    assert.equal(del.statusCode, 405);
    assert.equal(del.headers.allow, 'GET, POST');
    assert.match(await del.body.text(), /method-not-allowed/);
    const small = await request(`${s.base}/lim/a`, { method: 'POST', body: '0123456789' });
    assert.equal(await small.body.text(), 'ok');
    const big = await request(`${s.base}/lim/a`, { method: 'POST', body: '0123456789x' });
    assert.equal(big.statusCode, 413);
    await big.body.text();
    const t0 = performance.now();
    const slow = await request(`${s.base}/lim/slow`);
    assert.equal(slow.statusCode, 504);
    assert.match(await slow.body.text(), /within 300 ms/);
    assert.ok(performance.now() - t0 < 1200, 'the route timeout, not --timeout');
    const pre = await request(`${s.base}/lim/a`, { method: 'OPTIONS', headers: { origin: 'https://x.test', 'access-control-request-method': 'GET' } });
    assert.equal(pre.statusCode, 204, 'OPTIONS is not in methods, but a preflight is answered before them');
    assert.equal(pre.headers['access-control-allow-origin'], '*');
    await pre.body.text();
  });
});

test('rateLimit: a burst gets exactly burst answers, then 429 with Retry-After and the RateLimit fields; keys by client, header and route', async () => {
  await withStack(async (s) => {
    await s.serve((_req, res) => res.end('ok'), { nats: s.nc, subject: 'api.rl' });
    const kv = await routesBucket(s.nc);
    await putRoute(kv, s.gw, 'api.rl', { policy: { rateLimit: { rate: 1, per: 'minute', burst: 5 } } });
    const statuses: number[] = [];
    let last: Awaited<ReturnType<typeof request>> | undefined;
    for (let i = 0; i < 8; i++) {
      last = await request(`${s.base}/rl/x`);
      statuses.push(last.statusCode);
      if (i === 0) {
        assert.equal(last.headers['ratelimit-policy'], '"api.rl";q=5;w=300');
        assert.equal(last.headers.ratelimit, '"api.rl";r=4;t=60');
      }
      await last.body.text();
    }
    assert.deepEqual(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
    const retry = Number(last!.headers['retry-after']);
    assert.ok(retry >= 55 && retry <= 60, `Retry-After ${retry}: a token comes back within a minute`);
    assert.match(String(last!.headers.ratelimit), /^"api\.rl";r=0;t=\d+$/);

    // By header: each key its own bucket; the same client is not limited under another key.
    await putRoute(kv, s.gw, 'api.rl', { policy: { rateLimit: { rate: 1, per: 'hour', burst: 2, key: 'header:X-Tenant' } } });
    const by = async (tenant: string) => {
      const r = await request(`${s.base}/rl/y`, { headers: { 'x-tenant': tenant } });
      await r.body.text();
      return r.statusCode;
    };
    assert.deepEqual([await by('a'), await by('a'), await by('a'), await by('b'), await by('b'), await by('b')], [200, 200, 429, 200, 200, 429]);
  });
});

test('rateLimit: client addresses come from X-Forwarded-For only behind --trusted-proxies; keys are bounded by maxKeys', async () => {
  await withStack(
    async (s) => {
      await s.serve((_req, res) => res.end('ok'), { nats: s.nc, subject: 'api.rl' });
      await putRoute(await routesBucket(s.nc), s.gw, 'api.rl', { policy: { rateLimit: { rate: 1, per: 'hour', burst: 1, maxKeys: 100 } } });
      const from = async (xff: string) => {
        const r = await request(`${s.base}/rl/x`, { headers: { 'x-forwarded-for': xff } });
        await r.body.text();
        return r.statusCode;
      };
      // Behind the trusted proxy (loopback), each forwarded client has its own bucket; what a client wrote further left does not count.
      assert.deepEqual([await from('203.0.113.1'), await from('203.0.113.1'), await from('203.0.113.2'), await from('1.1.1.1, 203.0.113.2')], [200, 429, 200, 429]);
      // A flood of distinct addresses: memory stays at maxKeys buckets.
      for (let i = 0; i < 300; i++) await from(`198.51.100.${i % 250}, 10.9.${i >> 8}.${i & 255}`);
      const limiter = s.gw.routes.resolve('api.rl')!.policy!.rateLimit!;
      assert.equal(limiter.size, 100);
    },
    { trustedProxies: '127.0.0.1' },
  );
});

test('compression: gzip or br by q-values, min size and content types, never for no-transform or encoded bodies; streamed replies compressed as they stream', async () => {
  await withStack(async (s) => {
    const big = 'natsgw '.repeat(1000);
    await s.serve(
      (req, res) => {
        const u = (req.url ?? '').replace(/^\/z/, '');
        if (u.startsWith('/stream')) {
          res.setHeader('content-type', 'text/event-stream');
          let n = 0;
          const t = setInterval(() => {
            res.write(`data: ${n}\n\n`);
            if (++n === 5) {
              clearInterval(t);
              res.end();
            }
          }, 30);
          return;
        }
        res.setHeader('content-type', u.startsWith('/png') ? 'image/png' : 'text/plain; charset=utf-8');
        res.setHeader('etag', '"v1"');
        if (u.startsWith('/nt')) res.setHeader('cache-control', 'public, no-transform');
        if (u.startsWith('/enc')) res.setHeader('content-encoding', 'gzip');
        res.end(u.startsWith('/small') ? 'tiny' : big);
      },
      { nats: s.nc, subject: 'api.z' },
    );
    await putRoute(await routesBucket(s.nc), s.gw, 'api.z', { policy: { compression: {} } });
    const get = async (path: string, ae: string) => {
      const r = await request(`${s.base}/z${path}`, { headers: { 'accept-encoding': ae } });
      return { r, body: Buffer.from(await r.body.arrayBuffer()) };
    };
    const br = await get('/a', 'gzip, br');
    assert.equal(br.r.headers['content-encoding'], 'br', 'br preferred when both weigh the same');
    assert.equal(brotliDecompressSync(br.body).toString(), big);
    assert.ok(br.body.length < big.length / 10);
    assert.equal(br.r.headers.etag, 'W/"v1"', 'the compressed body has a weak tag');
    assert.match(String(br.r.headers.vary), /Accept-Encoding/);
    const gz = await get('/a', 'br;q=0.5, gzip;q=0.9');
    assert.equal(gz.r.headers['content-encoding'], 'gzip');
    assert.equal(gunzipSync(gz.body).toString(), big);
    for (const [path, ae] of [
      ['/a', 'identity'],
      ['/a', 'gzip;q=0, br;q=0'],
      ['/small', 'gzip'],
      ['/png', 'gzip'],
      ['/nt', 'gzip'],
    ]) {
      const r = await get(path!, ae!);
      assert.equal(r.r.headers['content-encoding'], undefined, `${path} ${ae}`);
    }
    const none = await get('/a', 'identity');
    assert.equal(none.body.toString(), big);
    assert.match(String(none.r.headers.vary), /Accept-Encoding/, 'caches learn the response varies');
    const enc = await get('/enc', 'br');
    assert.equal(enc.r.headers['content-encoding'], 'gzip', 'an encoded body passes as it is');

    // A streamed reply: each event arrives compressed before the next is written (never buffered whole).
    const r = await request(`${s.base}/z/stream`, { headers: { 'accept-encoding': 'gzip' } });
    assert.equal(r.headers['content-encoding'], 'gzip');
    const arrivals: number[] = [];
    const parts: Buffer[] = [];
    for await (const c of r.body) {
      parts.push(c as Buffer);
      arrivals.push(performance.now());
    }
    assert.equal(gunzipSync(Buffer.concat(parts)).toString(), [0, 1, 2, 3, 4].map((n) => `data: ${n}\n\n`).join(''));
    assert.ok(arrivals.length >= 3, `the body came in ${arrivals.length} pieces, as it was written`);
  });
});

test('compression and cors on an HTTP override: the backend’s response is compressed as it streams, and CORS fields added', async () => {
  await withStack(async (s) => {
    const text = 'override body '.repeat(500);
    let slow = false;
    const [b] = await startBackends(1, () => (_req, res) => {
      if (slow) return void setTimeout(() => res.end('late'), 1500);
      res.setHeader('content-type', 'application/json');
      res.setHeader('content-length', String(text.length + 2));
      res.end(JSON.stringify(text));
    });
    try {
      await putRoute(await routesBucket(s.nc), s.gw, 'api.legacy', { upstreams: [{ url: b!.url }], policy: { compression: { encodings: ['gzip'] }, cors: { origins: ['https://app.test'] } } });
      const r = await request(`${s.base}/legacy/x`, { headers: { 'accept-encoding': 'br, gzip', origin: 'https://app.test' } });
      assert.equal(r.statusCode, 200);
      assert.equal(r.headers['content-encoding'], 'gzip', 'only gzip is offered on this route');
      assert.equal(r.headers['content-length'], undefined);
      assert.equal(r.headers['access-control-allow-origin'], 'https://app.test');
      assert.equal(JSON.parse(gunzipSync(Buffer.from(await r.body.arrayBuffer())).toString()), text);

      // limits and rateLimit apply to the override too: its own timeoutMs (30 s) is replaced, methods and a bucket checked first.
      await putRoute(await routesBucket(s.nc), s.gw, 'api.legacy', {
        upstreams: [{ url: b!.url }],
        retries: 0,
        policy: { limits: { timeoutMs: 300, methods: ['GET'] }, rateLimit: { rate: 1, per: 'hour', burst: 1, key: 'route' } },
      });
      slow = true;
      const t0 = performance.now();
      const late = await request(`${s.base}/legacy/slow`);
      assert.equal(late.statusCode, 504);
      await late.body.text();
      assert.ok(performance.now() - t0 < 1200, 'the policy timeout, not the override’s');
      const post = await request(`${s.base}/legacy/x`, { method: 'POST', body: 'x' });
      assert.equal(post.statusCode, 405);
      await post.body.text();
      const third = await request(`${s.base}/legacy/x`);
      assert.equal(third.statusCode, 429, 'the 405 took no token, the 504 the only one');
      await third.body.text();
    } finally {
      await b!.stop();
    }
  });
});

test('policies combine along the subject tree: each block from the most specific key that sets it; a policy-only key keeps the target above it', async () => {
  await withStack(async (s) => {
    await appService(s);
    const kv = await routesBucket(s.nc);
    await putRoute(kv, s.gw, 'api', { policy: { cors: { origins: ['https://root.test'] }, limits: { methods: ['GET'] } } });
    await putRoute(kv, s.gw, 'api.app.admin', { policy: { limits: { methods: ['GET', 'DELETE'] } } });
    const del = async (path: string) => {
      const r = await request(`${s.base}${path}`, { method: 'DELETE', headers: { origin: 'https://root.test' } });
      await r.body.text();
      return [r.statusCode, r.headers['access-control-allow-origin']];
    };
    assert.deepEqual(await del('/app/x'), [405, 'https://root.test'], 'api’s limits and cors');
    assert.deepEqual(await del('/app/admin/x'), [200, 'https://root.test'], 'api.app.admin’s limits, api’s cors');
    const p = s.gw.routes.resolve('api.app.admin.users')!.policy!;
    assert.deepEqual(p.sources, { cors: 'api', limits: 'api.app.admin' });
  });
});

test('live change under traffic: a request in flight finishes under the policy it started with; new ones get the new one within a second', async () => {
  await withStack(async (s) => {
    await s.serve(
      (req, res) => {
        res.setHeader('content-type', 'text/plain');
        setTimeout(() => res.end('done'), req.url?.includes('slow') ? 1500 : req.url?.includes('late') ? 300 : 0);
      },
      { nats: s.nc, subject: 'api.live' },
    );
    const status = async (path: string) => {
      const r = await request(`${s.base}${path}`);
      await r.body.text();
      return r.statusCode;
    };
    const kv = await routesBucket(s.nc);
    await putRoute(kv, s.gw, 'api.live', { policy: { cors: { origins: ['https://old.test'] } } });
    const origin = { origin: 'https://old.test' };
    const inFlight = request(`${s.base}/live/slow`, { headers: origin });
    await new Promise((r) => setTimeout(r, 200));
    // Traffic keeps flowing while the policy changes.
    let stop = false;
    const seen: string[] = [];
    const load = (async () => {
      while (!stop) {
        const r = await request(`${s.base}/live/x`, { headers: origin });
        await r.body.text();
        seen.push(`${r.statusCode}:${r.headers['access-control-allow-origin'] ?? '-'}`);
      }
    })();
    const putAt = performance.now();
    await kv.put('api.live', JSON.stringify({ policy: { cors: { origins: ['https://new.test'] }, limits: { methods: ['POST'] } } }));
    await eventually(async () => {
      const r = await request(`${s.base}/live/x`, { headers: origin });
      await r.body.text();
      return r.statusCode === 405;
    }, 3000);
    const tookMs = performance.now() - putAt;
    stop = true;
    await load;
    const old = await inFlight;
    assert.equal(old.statusCode, 200);
    assert.equal(old.headers['access-control-allow-origin'], 'https://old.test', 'the old policy’s answer');
    assert.equal(await old.body.text(), 'done');
    assert.ok(tookMs < 1000, `applied in ${Math.round(tookMs)} ms`);
    assert.ok(seen.length > 0 && seen.every((x) => x === '200:https://old.test' || x === '405:-'), `every answer is the old policy's or the new one's: ${[...new Set(seen)].join(' ')}`);

    // Each block in turn, live: the next request that sees the new version behaves by it, within a second of the put.
    const sha = createHash('sha256').update('k').digest('hex');
    const steps: [object, () => Promise<boolean>][] = [
      [{ auth: { apiKeys: { keys: [{ id: 'a', sha256: sha }] } } }, async () => (await status('/live/x')) === 401],
      // One token: the first request under it takes it, the next is refused.
      [{ rateLimit: { rate: 1, per: 'hour', burst: 1, key: 'route' } }, async () => (await status('/live/x')) === 429],
      [
        { compression: { minBytes: 0, contentTypes: ['text/*'] } },
        async () => {
          const r = await request(`${s.base}/live/text`, { headers: { 'accept-encoding': 'gzip' } });
          await r.body.arrayBuffer();
          return r.headers['content-encoding'] === 'gzip';
        },
      ],
      // /live/late answers after 300 ms: a check sent just before the new version applies waits that long, not 1.5 s.
      [{ limits: { timeoutMs: 100 } }, async () => (await status('/live/late')) === 504],
    ];
    for (const [policy, check] of steps) {
      const at = performance.now();
      await kv.put('api.live', JSON.stringify({ policy }));
      // When the request that saw the new version was sent: one sent a moment
      // before the gateway applied it is answered under the old one, however
      // long that takes, and is not the gateway being late.
      let sentAt = 0;
      await eventually(
        async () => {
          const t = performance.now();
          const ok = await check();
          if (ok) sentAt = t;
          return ok;
        },
        3000,
        JSON.stringify(policy),
      );
      assert.ok(sentAt - at < 1000, `${Object.keys(policy)[0]} applied within a second (the first request to see it was sent ${Math.round(sentAt - at)} ms after the put)`);
    }
  });
});

test('invalid policy entries are rejected with their reason while the last good version serves', async () => {
  await withStack(async (s) => {
    await appService(s);
    const kv = await routesBucket(s.nc);
    await putRoute(kv, s.gw, 'api.app', { policy: { limits: { methods: ['GET'] } } });
    for (const [value, reason] of [
      [{ policy: {} }, /sets no block/],
      [{ policy: { cors: { origins: ['*'], credentials: true } } }, /credentials/],
      [{ policy: { cors: { origins: ['ftp://x'] } } }, /policy\.cors\.origins/],
      [{ policy: { rateLimit: { rate: 0, burst: 1 } } }, /rate/],
      [{ policy: { auth: {} } }, /needs jwt, apiKeys/],
      [{ policy: { auth: { jwt: { keys: [{ kty: 'oct', k: 'c2VjcmV0' }] } } } }, /HS256/],
      [{ policy: { limits: { methods: ['GET'] } }, timeoutMs: 5 }, /only a policy takes no other field/],
      [{ policy: { bogus: {} } }, /unknown field bogus/],
    ] as const) {
      await putRoute(kv, s.gw, 'api.app', value);
      assert.match(s.gw.routes.rejected.get('api.app')!.reason, reason, JSON.stringify(value));
      const r = await request(`${s.base}/app/x`, { method: 'POST' });
      await r.body.text();
      assert.equal(r.statusCode, 405, 'the last good version serves');
    }
  });
});

test('rateLimit fleet: two gateways share one limit over NATS (exact counts once they have heard each other); per gateway by default; hostile reports dropped', async () => {
  await withStack(async (s) => {
    const other = await startTestGateway({ nats: s.ns.url });
    try {
      await other.gw.connected;
      await s.serve((_req, res) => res.end('ok'), { nats: s.nc, subject: 'api.fl' });
      const kv = await routesBucket(s.nc);
      const put = async (value: unknown) => {
        const rev = await putRoute(kv, s.gw, 'api.fl', value);
        await eventually(() => other.gw.routes.get('api.fl')?.revision === rev, 5000, 'the other gateway applied it');
      };
      const hit = async (base: string, n: number) => {
        const out: number[] = [];
        for (let i = 0; i < n; i++) {
          const r = await request(`${base}/fl/x`);
          await r.body.text();
          out.push(r.statusCode);
        }
        return out;
      };
      const sync = () => new Promise((r) => setTimeout(r, 400));
      await put({ policy: { rateLimit: { rate: 1, per: 'hour', burst: 6, key: 'route', mode: 'fleet' } } });
      assert.deepEqual(await hit(s.base, 3), [200, 200, 200]);
      await sync();
      assert.deepEqual(await hit(other.base, 4), [200, 200, 200, 429], 'the other gateway knows 3 of 6 are gone');
      await sync();
      assert.deepEqual(await hit(s.base, 1), [429], 'and this one that the other took 3');

      // Hostile reports on the fleet subject change nothing and stop nothing.
      const fresh = { policy: { rateLimit: { rate: 1, per: 'hour', burst: 2, key: 'route', mode: 'fleet' } } };
      await put(fresh);
      for (const payload of ['not json', '{"g":"x"}', '{"g":"x","k":[["",1e9]]}', '{"g":"x","k":[[1,1]]}', '[]', 'null', JSON.stringify({ g: 'x', k: [['', 1.5]] })]) {
        s.nc.publish('_NATSGW.ratelimit.api.fl', payload);
      }
      await s.nc.flush();
      await sync();
      assert.deepEqual(await hit(s.base, 3), [200, 200, 429]);

      // Per gateway (the default): each counts alone.
      await put({ policy: { rateLimit: { rate: 1, per: 'hour', burst: 2, key: 'route' } } });
      assert.deepEqual(await hit(s.base, 3), [200, 200, 429]);
      await sync();
      assert.deepEqual(await hit(other.base, 3), [200, 200, 429]);
    } finally {
      await other.gw.close(500);
    }
  });
});

test('cors from a browser (headless Chromium): a page from an allowed origin makes a preflighted request; one from another origin is refused by the browser', { skip: NO_CHROMIUM }, async (t) => {
  const s = await startStack();
  t.after(() => s.close());
  let reached = 0;
  await s.serve(
    (req, res) => {
      reached++;
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ method: req.method, trace: req.headers['x-trace'] }));
    },
    { nats: s.nc, subject: 'api.app' },
  );
  // Two pages on two origins (ports), neither the gateway's.
  const pages = await Promise.all(
    [0, 1].map(
      () =>
        new Promise<Server>((resolve) => {
          const srv = createServer((_req, res) => res.end('<!doctype html><title>page</title>'));
          srv.listen(0, '127.0.0.1', () => resolve(srv));
        }),
    ),
  );
  t.after(() => {
    for (const p of pages) p.close();
  });
  const [allowed, other] = pages.map((p) => `http://127.0.0.1:${(p.address() as AddressInfo).port}`);
  await putRoute(await routesBucket(s.nc), s.gw, 'api.app', {
    policy: { cors: { origins: [allowed!], methods: ['PUT'], allowHeaders: ['X-Trace', 'Content-Type'], exposeHeaders: ['X-Request-Id'] } },
  });
  const browser = await launchChromium(t);
  const call = `fetch('${s.base}/app/items/1', { method: 'PUT', headers: { 'x-trace': 't1', 'content-type': 'application/json' }, body: '{}' })
    .then(async (r) => ({ status: r.status, body: await r.json(), requestId: r.headers.get('x-request-id') !== null }), (e) => ({ error: String(e) }))`;
  await browser.navigate(`${allowed}/`);
  assert.deepEqual(await browser.evaluate(call), { status: 200, body: { method: 'PUT', trace: 't1' }, requestId: true }, browser.events.join('\n'));
  assert.equal(reached, 1, 'the preflight was the gateway’s, the PUT the service’s');
  await browser.navigate(`${other}/`);
  const refused = (await browser.evaluate(call)) as { error?: string };
  assert.match(String(refused.error), /TypeError/, 'the browser refuses what the preflight did not allow');
  assert.equal(reached, 1, 'and the PUT never left it');
});

test('policies on WebSocket upgrades: auth and the cors origin check apply before the service sees the upgrade', async () => {
  await withStack(async (s) => {
    let opened = 0;
    await s.serve((_req, res) => res.end(), {
      nats: s.nc,
      subject: 'api.live',
      websocket: (ws) => {
        opened++;
        ws.send(`hello ${ws.protocol}`);
      },
    });
    const sha = createHash('sha256').update('k').digest('hex');
    await putRoute(await routesBucket(s.nc), s.gw, 'api.live', { policy: { cors: { origins: ['https://app.test'] }, auth: { apiKeys: { keys: [{ id: 'bot', sha256: sha }] } } } });
    const url = `${s.base.replace('http://', 'ws://')}/live/socket`;
    const status = (headers: Record<string, string>) =>
      new Promise<number>((resolve) => {
        const ws = new WebSocket(url, { headers });
        ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
        ws.on('open', () =>
          ws.once('message', () => {
            ws.close();
            resolve(101);
          }),
        );
        ws.on('error', () => undefined);
      });
    assert.equal(await status({ origin: 'https://app.test' }), 401);
    assert.equal(await status({ origin: 'https://evil.test', 'x-api-key': 'k' }), 403);
    assert.equal(await status({ origin: 'https://app.test', 'x-api-key': 'k' }), 101);
    assert.equal(await status({ 'x-api-key': 'k' }), 101, 'a client without Origin is no browser');
    assert.equal(opened, 2);
  });
});
