import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { parseRoute as parse, type RouteConfig } from '../src/routes/route-schema.js';
import { PUBLISHED_SCHEMAS } from '../src/schema-source/published.js';
import { COMPILED_VALIDATORS } from '../src/schema-source/validators.js';

/** parseRoute for HTTP overrides, typed as one (the raw NATS routes' tests use parse). */
const parseRoute = (v: unknown) => parse(v) as { ok: true; config: RouteConfig } | { ok: false; reason: string };

// The gateway and the CLI validate with the files, so a file that differs from its source is a schema the code was not written for.
for (const [name, build] of Object.entries(PUBLISHED_SCHEMAS)) {
  test(`schema files: gateway/schema/${name} is the one its TypeBox source defines`, () => {
    const published = JSON.parse(readFileSync(new URL(`../../schema/${name}`, import.meta.url), 'utf8')) as object;
    assert.deepEqual(published, build(), `run \`npm run schema\` after changing gateway/src/schema-source/`);
  });
}
// The gateway validates with the compiled files only, so a file compiled from an older schema (or an older Ajv) would check something else.
for (const [name, compile] of Object.entries(COMPILED_VALIDATORS)) {
  test(`schema files: gateway/schema/validators/${name} is what Ajv compiles from its schema`, () => {
    const written = readFileSync(new URL(`../../schema/validators/${name}`, import.meta.url), 'utf8');
    assert.ok(written === compile(), `gateway/schema/validators/${name} is stale: run \`npm run schema\``);
  });
}

test('route schema: a minimal route gets every default', () => {
  const r = parseRoute('{"upstreams":[{"url":"http://10.0.0.5:8080"}]}');
  assert.ok(r.ok);
  const c = r.config;
  assert.deepEqual(c.upstreams, [{ url: 'http://10.0.0.5:8080', weight: 1 }]);
  assert.equal(c.balancing, 'p2c');
  assert.equal(c.healthCheck, undefined);
  assert.equal(c.circuitBreaker, undefined);
  assert.deepEqual(c.passiveHealth, { consecutiveFailures: 5, baseEjectionMs: 10_000, maxEjectionMs: 300_000, maxEjectionPercent: 50, failureStatuses: [502, 503, 504] });
  assert.equal(c.timeoutMs, 30_000);
  assert.equal(c.connectTimeoutMs, 5_000);
  assert.equal(c.retries, 1);
  assert.deepEqual(c.retryBudget, { percent: 20, minPerSecond: 5 });
  assert.equal(c.maxRequestBodyBytes, 1024 * 1024);
  assert.equal(c.stripPrefix, false);
  assert.equal(c.preserveHost, false);
  assert.deepEqual(c.requestHeaders, { set: {}, remove: [] });
  assert.ok(Object.isFrozen(c) && Object.isFrozen(c.upstreams[0]));
  const hc = parseRoute({ upstreams: [{ url: 'http://a:1' }], healthCheck: {}, circuitBreaker: {} });
  assert.ok(hc.ok);
  assert.deepEqual(hc.config.healthCheck, {
    path: '/health',
    intervalMs: 5000,
    unhealthyIntervalMs: 1000,
    timeoutMs: 2000,
    unhealthyThreshold: 3,
    healthyThreshold: 2,
    expectedStatus: { min: 200, max: 399 },
  });
  assert.deepEqual(hc.config.circuitBreaker, { failureThreshold: 5, successThreshold: 2, openMs: 10_000, maxOpenMs: 120_000, halfOpenRequests: 1 });
});

test('route schema: invalid values are rejected with a reason that names the field', () => {
  const cases: Array<[unknown, RegExp]> = [
    ['not json', /^not JSON/],
    ['[1,2]', /must be a JSON object/],
    [{}, /upstreams: required for an HTTP override/],
    [{ upstreams: [] }, /upstreams: must NOT have fewer than 1 items/],
    [{ upstreams: [{ url: 'ftp://x' }] }, /upstreams\.0\.url: must be an http/],
    [{ upstreams: [{ url: 'http://user:pw@x' }] }, /upstreams\.0\.url/],
    [{ upstreams: [{ url: 'http://x?q=1' }] }, /upstreams\.0\.url/],
    [{ upstreams: [{ url: 'http://x', weight: 0 }] }, /upstreams\.0\.weight: must be >= 1/],
    [{ upstreams: [{ url: 'http://x' }, { url: 'http://x/' }] }, /same URL appears twice/],
    [{ upstreams: [{ url: 'http://x' }], balancing: 'fastest' }, /balancing: must be one of p2c, round-robin, least-connections, random/],
    [{ upstreams: [{ url: 'http://x' }], retries: 11 }, /retries: must be <= 10/],
    [{ upstreams: [{ url: 'http://x' }], timeoutMs: '5s' }, /timeoutMs: must be integer/],
    [{ upstreams: [{ url: 'http://x' }], colour: 'red' }, /route: unknown field colour/],
    [{ upstreams: [{ url: 'http://x' }], healthCheck: { path: 'health' } }, /healthCheck\.path/],
    [{ upstreams: [{ url: 'http://x' }], healthCheck: { expectedStatus: { min: 300, max: 200 } } }, /min is above max/],
    [{ upstreams: [{ url: 'http://x' }], circuitBreaker: { openMs: 5000, maxOpenMs: 100 } }, /openMs is above maxOpenMs/],
    [{ upstreams: [{ url: 'http://x' }], requestHeaders: { set: { 'bad name': 'v' } } }, /requestHeaders\.set/],
    [{ upstreams: [{ url: 'http://x' }], requestHeaders: { set: { 'x-a': 'line\r\nbreak' } } }, /requestHeaders\.set/],
    [{ upstreams: [{ url: 'http://x' }], passiveHealth: { failureStatuses: [404] } }, /failureStatuses/],
    [{ upstreams: [{ url: 'http://x' }], requestHeaders: { set: { 'Transfer-Encoding': 'chunked' } } }, /requestHeaders\.set: transfer-encoding cannot be set/],
    [{ upstreams: [{ url: 'http://x' }], requestHeaders: { set: { expect: '100-continue' } } }, /requestHeaders\.set: expect cannot be set/],
    [{ upstreams: [{ url: 'http://x' }], responseHeaders: { set: { 'content-length': '5' } } }, /responseHeaders\.set: content-length cannot be set/],
    [{ upstreams: [{ url: 'http://x' }], requestHeaders: { set: { connection: 'close' } } }, /connection cannot be set/],
  ];
  for (const [value, reason] of cases) {
    const r = parseRoute(typeof value === 'string' ? value : JSON.stringify(value));
    assert.equal(r.ok, false, JSON.stringify(value));
    if (!r.ok) assert.match(r.reason, reason, JSON.stringify(value));
  }
});

test('route schema: blocks left at their defaults are one shared frozen object; other blocks are the route own; a caller object is not changed', () => {
  const a = parseRoute('{"upstreams":[{"url":"http://10.0.0.5:8080"}]}');
  const b = parseRoute(Buffer.from('{"upstreams":[{"url":"http://10.0.0.6:8080"}],"retryBudget":{"percent":20,"minPerSecond":5}}'));
  const c = parseRoute({ upstreams: [{ url: 'http://10.0.0.7:8080' }], passiveHealth: { consecutiveFailures: 2 } });
  assert.ok(a.ok && b.ok && c.ok);
  assert.equal(a.config.passiveHealth, b.config.passiveHealth, 'defaults: one object');
  assert.equal(a.config.retryBudget, b.config.retryBudget, 'a block written out equal to its default is shared too');
  assert.equal(a.config.requestHeaders, c.config.requestHeaders);
  assert.notEqual(c.config.passiveHealth, a.config.passiveHealth);
  assert.equal(c.config.passiveHealth.consecutiveFailures, 2);
  assert.equal(a.config.passiveHealth.consecutiveFailures, 5, 'the shared default is untouched');
  assert.ok(Object.isFrozen(a.config) && Object.isFrozen(a.config.passiveHealth) && Object.isFrozen(c.config.passiveHealth.failureStatuses));
  const mine = { upstreams: [{ url: 'http://10.0.0.8:8080' }] };
  assert.ok(parseRoute(mine).ok);
  assert.deepEqual(mine, { upstreams: [{ url: 'http://10.0.0.8:8080' }] }, 'defaults were not written into the caller object');
  const twice = parseRoute('{"upstreams":[{"url":"http://10.0.0.5:8080"},{"url":"http://10.0.0.5:8080/"}]}');
  assert.deepEqual(twice, { ok: false, reason: 'upstreams: the same URL appears twice' });
});

test('route schema: values of the same text share one config; distinct values share their equal blocks', () => {
  const text = '{"upstreams":[{"url":"http://10.0.0.9:8080"}],"stripPrefix":true}';
  const a = parseRoute(text);
  const b = parseRoute(Buffer.from(text));
  assert.ok(a.ok && b.ok);
  assert.equal(a.config, b.config, 'one config for one text');
  const t1 = parseRoute('{"upstreams":[{"url":"http://10.0.0.9:8080"}],"requestHeaders":{"set":{"x-tenant":"t1"}}}');
  const t2 = parseRoute('{"upstreams":[{"url":"http://10.0.0.9:8080"}],"requestHeaders":{"set":{"x-tenant":"t2"}}}');
  assert.ok(t1.ok && t2.ok);
  assert.notEqual(t1.config, t2.config);
  assert.equal(t1.config.upstreams, t2.config.upstreams, 'the same upstreams block: one object');
  assert.equal(t1.config.upstreams, a.config.upstreams);
  assert.deepEqual([t1.config.requestHeaders.set, t2.config.requestHeaders.set], [{ 'x-tenant': 't1' }, { 'x-tenant': 't2' }]);
  // A rejected text stays rejected, however often it comes.
  for (let i = 0; i < 2; i++) assert.deepEqual(parseRoute('{"upstreams":[]}'), { ok: false, reason: 'upstreams: must NOT have fewer than 1 items' });
});
