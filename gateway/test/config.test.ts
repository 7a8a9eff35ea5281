import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ajv } from 'ajv';
import { ConfigError, configSchema, DEFAULT_MAX_BODY_BYTES, DEFAULT_TIMEOUT_MS, loadConfig } from '../src/config.js';

const dir = mkdtempSync(join(tmpdir(), 'natsgw-config-'));
function file(name: string, content: string): string {
  const p = join(dir, name);
  writeFileSync(p, content);
  return p;
}

test('config: defaults come from the schema', () => {
  const c = loadConfig({});
  assert.deepEqual(c.natsServers, ['nats://127.0.0.1:4222']);
  assert.equal(c.rootSubject, 'api');
  assert.equal(c.port, 8080);
  assert.equal(c.timeoutMs, DEFAULT_TIMEOUT_MS);
  assert.equal(c.maxBodyBytes, DEFAULT_MAX_BODY_BYTES);
  assert.ok(Object.isFrozen(c));
});

test('config: flag > environment > file > default', () => {
  const f = file('layers.json', JSON.stringify({ port: 1111, timeout: 1111, maxBody: 1111, subject: 'fromfile' }));
  const env = { NATSGW_TIMEOUT: '2222', NATSGW_MAX_BODY: '2222' };
  const c = loadConfig({ file: f, env, flags: { maxBody: '3333' } });
  assert.equal(c.port, 1111); // file only
  assert.equal(c.rootSubject, 'fromfile');
  assert.equal(c.timeoutMs, 2222); // env beats file
  assert.equal(c.maxBodyBytes, 3333); // flag beats env
});

test('config: a file may name its schema with "$schema" (for editors): the published schema allows it, serve ignores it', () => {
  const named = { $schema: './node_modules/natsgw/gateway/schema/config.schema.json', port: 1234 };
  const c = loadConfig({ file: file('with-schema.json', JSON.stringify(named)) });
  assert.equal(c.port, 1234);
  const validate = new Ajv({ strict: false }).compile(configSchema());
  assert.equal(validate(named), true, JSON.stringify(validate.errors));
  assert.equal(validate({ ...named, colour: 'blue' }), false, 'other unknown keys are still refused');
});

test('config: lists accept commas and repeats', () => {
  const c = loadConfig({ flags: { nats: ['nats://a:4222,nats://b:4222', 'nats://c:4222'] }, env: { NATSGW_TRUSTED_PROXIES: '10.0.0.0/8, 192.168.1.1' } });
  assert.deepEqual(c.natsServers, ['nats://a:4222', 'nats://b:4222', 'nats://c:4222']);
  assert.deepEqual(c.trustedProxies, ['10.0.0.0/8', '192.168.1.1']);
});

test('config: every bad value is one line naming where it came from', () => {
  const cases: Array<[Parameters<typeof loadConfig>[0], RegExp]> = [
    [{ flags: { port: 'abc' } }, /^invalid --port: must be integer \(got "abc"\)$/],
    [{ flags: { port: '70000' } }, /^invalid --port: must be <= 65535/],
    [{ env: { NATSGW_TIMEOUT: '0' } }, /^invalid NATSGW_TIMEOUT: must be >= 1/],
    [{ flags: { subject: 'api.*' } }, /^invalid --subject: must be one or more tokens/],
    [{ flags: { subject: 'api..x' } }, /^invalid --subject/],
    [{ flags: { nats: 'not a url' } }, /^invalid --nats: must be URLs/],
    [{ flags: { logLevel: 'loud' } }, /^invalid --log-level: must be one of fatal, error/],
    [{ flags: { maxBody: '-1' } }, /^invalid --max-body: must be >= 0/],
    [{ flags: { maxUploadBuffer: '-1' } }, /^invalid --max-upload-buffer: must be >= 0/],
    [{ env: { NATSGW_MAX_UPLOAD_BUFFER: 'lots' } }, /^invalid NATSGW_MAX_UPLOAD_BUFFER: must be integer/],
    [{ file: file('bad-value.json', '{"timeout": "soon"}') }, /^invalid timeout in .*bad-value\.json: must be integer/],
    [{ file: file('unknown.json', '{"colour": "blue"}') }, /^unknown option colour in .*unknown\.json$/],
    [{ file: file('broken.json', '{"port": ') }, /is not valid JSON/],
    [{ file: file('array.json', '[1]') }, /must hold a JSON object/],
    [{ file: file('schema-number.json', '{"$schema": 7}') }, /^"\$schema" in config file .*schema-number\.json must be a string/],
    [{ file: join(dir, 'missing.json') }, /^cannot read config file .*missing\.json: ENOENT$/],
    [{ flags: { user: 'u' } }, /^--user needs --pass/],
    [{ flags: { user: 'u', pass: 'p', token: 't' } }, /^choose one NATS authentication method/],
    [{ flags: { tlsCert: file('c.pem', 'x') } }, /needs --tls-key as well/],
    [{ flags: { creds: join(dir, 'nope.creds') } }, /^invalid --creds: file .*nope\.creds does not exist$/],
    [{ flags: { trustedProxies: '10.0.0.0/33' } }, /^invalid --trusted-proxies: "10\.0\.0\.0\/33" is not an IP address or CIDR$/],
    [{ flags: { trustedProxies: 'example.com' } }, /is not an IP address or CIDR/],
  ];
  for (const [sources, message] of cases) {
    assert.throws(
      () => loadConfig(sources),
      (err: unknown) => err instanceof ConfigError && message.test(err.message) && !err.message.includes('\n'),
      `${JSON.stringify(sources)} → ${message}`,
    );
  }
});

test('config: secrets are never echoed in errors', () => {
  assert.throws(
    () => loadConfig({ flags: { user: 'u', pass: 12 as unknown as string, token: 'secret-token' } }),
    (err: unknown) => {
      return err instanceof ConfigError && !err.message.includes('secret-token');
    },
  );
});

test('config: --stream-idle-timeout and --max-body for streamed bodies', () => {
  const d = loadConfig({});
  assert.equal(d.streamIdleMs, 60_000);
  assert.equal(d.maxBodyBytes, 1024 * 1024 * 1024, 'streamed bodies: 1 GiB by default');
  assert.equal(loadConfig({ env: { NATSGW_STREAM_IDLE_TIMEOUT: '2500' } }).streamIdleMs, 2500);
  assert.equal(d.maxUploadBufferBytes, 256 * 1024 * 1024, 'uploads may hold 256 MiB past their pauses by default');
  assert.equal(loadConfig({ env: { NATSGW_MAX_UPLOAD_BUFFER: '0' } }).maxUploadBufferBytes, 0);
  assert.equal(loadConfig({ flags: { maxBody: String(8 * 1024 ** 3) } }).maxBodyBytes, 8 * 1024 ** 3, 'beyond max_payload: bodies stream');
  assert.throws(
    () => loadConfig({ flags: { streamIdleTimeout: '50' } }),
    (e: unknown) => e instanceof ConfigError && /stream-idle-timeout/.test(e.message),
  );
  assert.throws(() => loadConfig({ env: { NATSGW_STREAM_IDLE_TIMEOUT: 'soon' } }), ConfigError);
});

test('config: --trace-sampling takes auto or a ratio from 0 to 1; --preload is made absolute', () => {
  assert.equal(loadConfig({}).traceSampling, 'auto');
  assert.equal(loadConfig({ flags: { traceSampling: '0.25' } }).traceSampling, 0.25);
  assert.equal(loadConfig({ env: { NATSGW_TRACE_SAMPLING: '.5' } }).traceSampling, 0.5);
  assert.equal(loadConfig({ flags: { traceSampling: '1' } }).traceSampling, 1);
  assert.equal(loadConfig({ flags: { traceSampling: '0' } }).traceSampling, 0);
  for (const bad of ['2', '-0.1', '0.1234567', 'half', '', '1.5', '01', '0.5 ']) {
    assert.throws(() => loadConfig({ flags: { traceSampling: bad } }), /^ConfigError: invalid --trace-sampling: must be a number from 0 to 1/, JSON.stringify(bad));
  }
  assert.equal(loadConfig({ flags: { preload: 'otel.mjs' } }).preload, join(process.cwd(), 'otel.mjs'));
  assert.equal(loadConfig({}).preload, undefined);
});

test('config: the WebSocket limits have defaults and bounds, from flags, environment or file', () => {
  assert.deepEqual(loadConfig({}).ws, { maxMessageBytes: 1024 * 1024, idleTimeoutMs: 120_000, maxConnections: 10_000 });
  assert.deepEqual(loadConfig({ flags: { wsMaxMessage: '4096', wsIdleTimeout: '8000' }, env: { NATSGW_WS_MAX_CONNECTIONS: '5' } }).ws, {
    maxMessageBytes: 4096,
    idleTimeoutMs: 8000,
    maxConnections: 5,
  });
  // Below uWS's 8 s resolution, or a message too small for a control frame's 125 bytes: refused, never rounded.
  assert.throws(() => loadConfig({ flags: { wsIdleTimeout: '1000' } }), /^ConfigError: invalid --ws-idle-timeout/);
  assert.throws(() => loadConfig({ flags: { wsMaxMessage: '100' } }), /^ConfigError: invalid --ws-max-message/);
  assert.throws(() => loadConfig({ env: { NATSGW_WS_MAX_CONNECTIONS: 'many' } }), /^ConfigError: invalid NATSGW_WS_MAX_CONNECTIONS/);
});
