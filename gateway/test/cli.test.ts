import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { request } from 'undici';
import { startNatsServer } from '@natsgw/devkit';
import { OPTION_KEYS, flagName, envName } from '../src/config.js';
import { NATSGW_BIN, spawnGateway } from './helpers.js';

const BIN = NATSGW_BIN;
const run = (args: string[], env: Record<string, string> = {}) => spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 20_000 });

test('cli: --help documents every option with its environment variable', () => {
  const r = run(['serve', '--help']);
  assert.equal(r.status, 0);
  for (const key of OPTION_KEYS) {
    assert.match(r.stdout, new RegExp(`--${flagName(key)}\\b`), `--${flagName(key)} in help`);
    assert.match(r.stdout, new RegExp(envName(key).replace(/_/g, '_\\s*')), `${envName(key)} in help`);
  }
  assert.match(r.stdout, /--config/);
  assert.match(run(['--help']).stdout, /natsgw serve/);
});

test('cli: bad usage is one line on stderr and exit code 2', () => {
  const cases: Array<[string[], Record<string, string>, RegExp]> = [
    [['serve', '--port', 'abc'], {}, /^natsgw: invalid --port: must be integer \(got "abc"\)\n$/],
    [['serve', '--bogus', '1'], {}, /^natsgw: unknown option --bogus\n$/],
    [['serve', '--port'], {}, /^natsgw: --port needs a value\n$/],
    [['serve', '--port', '1', '--port', '2'], {}, /^natsgw: --port given more than once\n$/],
    [['serve', '--admin-host', '0.0.0.0'], {}, /^natsgw: --admin-host 0\.0\.0\.0 is not loopback: set --admin-token/],
    [['serve', '--admin-token', 'short'], {}, /^natsgw: invalid --admin-token: must be at least 16 characters\n$/],
    [['serve', '--subject', 'a.>'], {}, /^natsgw: invalid --subject: /],
    [['serve'], { NATSGW_MAX_BODY: 'lots' }, /^natsgw: invalid NATSGW_MAX_BODY: must be integer/],
    [['serve', '--config', '/nonexistent/natsgw.json'], {}, /^natsgw: cannot read config file \/nonexistent\/natsgw\.json: ENOENT\n$/],
    [['launch'], {}, /^natsgw: unknown command launch\n$/],
    [[], {}, /^natsgw: Name a command/],
  ];
  for (const [args, env, message] of cases) {
    const r = run(args, env);
    assert.equal(r.status, 2, `${args.join(' ')} exits 2`);
    assert.match(r.stderr, message, args.join(' '));
    assert.equal(r.stderr.trim().split('\n').length, 1, 'one line');
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  }
});

test('cli: a port already in use is a one-line runtime error, exit 1', async () => {
  const ns = await startNatsServer();
  try {
    const r = run(['serve', '--nats', ns.url, '--host', '127.0.0.1', '--port', String(ns.port), '--admin-port', '0']);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /^natsgw: cannot listen on 127\.0\.0\.1:\d+/);
  } finally {
    await ns.dispose();
  }
});

test('cli: serve runs the gateway and exits 0 on SIGTERM', async () => {
  const ns = await startNatsServer();
  const gw = await spawnGateway(['serve', '--nats', ns.url, '--host', '127.0.0.1', '--port', '0', '--admin-port', '0', '--subject', 'cli.test'], (out) => /listening on/.test(out) && out.includes('connected to NATS'));
  try {
    const port = Number(/listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(gw.output())![1]);
    const r = await request(`http://127.0.0.1:${port}/x`);
    assert.equal(r.statusCode, 503);
    assert.equal(((await r.body.json()) as { subject: string }).subject, 'cli.test.x');
    const exited = new Promise<number | null>((resolve) => gw.child.once('exit', resolve));
    gw.child.kill('SIGTERM');
    assert.equal(await exited, 0);
  } finally {
    gw.child.kill('SIGKILL');
    await ns.dispose();
  }
});

test('cli: credentials the server refuses are a one-line error, exit 1', async () => {
  const ns = await startNatsServer({ config: 'authorization { token: "right" }' });
  try {
    const r = run(['serve', '--nats', ns.url, '--token', 'wrong', '--host', '127.0.0.1', '--port', '0', '--admin-port', '0', '--log-level', 'silent']);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /^natsgw: cannot connect to NATS: .*(auth|Authorization)/i);
    assert.doesNotMatch(r.stderr, /wrong/, 'the token is not echoed');
  } finally {
    await ns.dispose();
  }
});

test('cli: says loudly at start-up when uWebSockets.js falls back to its pure-JS server', async () => {
  const ns = await startNatsServer();
  // The package's own switch to force its fallback, to check we notice it.
  const gw = await spawnGateway(['serve', '--nats', ns.url, '--host', '127.0.0.1', '--port', '0', '--admin-port', '0'], (out) => out.includes('listening on'), { ...process.env, UWS_USE_FALLBACK: 'true' });
  try {
    const warning = gw.output().split('\n').find((l) => l.includes('native binary NOT loaded'));
    assert.ok(warning, 'warning printed');
    assert.equal((JSON.parse(warning) as { level: number }).level, 40, 'at warn level');
  } finally {
    gw.child.kill('SIGKILL');
    await ns.dispose();
  }
});

test('cli: --log-format pretty writes lines for humans instead of JSON', async () => {
  const ns = await startNatsServer();
  const gw = await spawnGateway(['serve', '--nats', ns.url, '--host', '127.0.0.1', '--port', '0', '--admin-port', '0', '--log-format', 'pretty'], (out) => out.includes('connected to NATS'));
  try {
    const line = gw.output().split('\n').find((l) => l.includes('listening on'))!;
    assert.doesNotMatch(line, /^\{/, 'not JSON');
    assert.match(line, /^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: listening on http:\/\/127\.0\.0\.1:\d+/);
  } finally {
    gw.child.kill('SIGKILL');
    await ns.dispose();
  }
});
