import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { startNatsServer } from '@natsgw/devkit';
import { optionKeys, flagName, envName } from '../src/config.js';
import { eventually, NATSGW_BIN, spawnGateway } from './helpers.js';

const BIN = NATSGW_BIN;
const run = (args: string[], env: Record<string, string> = {}) => spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 20_000 });

test('cli: --help documents every option with its environment variable', () => {
  const r = run(['serve', '--help']);
  assert.equal(r.status, 0);
  for (const key of optionKeys()) {
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
  const gw = await spawnGateway(
    ['serve', '--nats', ns.url, '--host', '127.0.0.1', '--port', '0', '--admin-port', '0', '--subject', 'cli.test'],
    (out) => /listening on/.test(out) && out.includes('connected to NATS'),
  );
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

test('cli: a uWebSockets.js native binary that cannot load is one clear line and exit 1, not a slow fallback', () => {
  // Simulate a platform without a matching binary: every native addon load fails.
  const dir = mkdtempSync(join(tmpdir(), 'natsgw-nonative-'));
  const preload = join(dir, 'no-native.cjs');
  writeFileSync(preload, "process.dlopen = () => { throw new Error('simulated: no binary for this platform'); };\n");
  try {
    const r = spawnSync(process.execPath, ['--require', preload, NATSGW_BIN, 'serve', '--nats', 'nats://127.0.0.1:1', '--port', '0', '--admin-port', '0'], { encoding: 'utf8', timeout: 20_000 });
    assert.equal(r.status, 1, r.stderr);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0]!, /^natsgw: cannot load the uWebSockets\.js native binary for Node v\d+.*ABI \d+.*simulated: no binary/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("cli: responses carry no uWebSockets header; --max-header-size (default 16 KiB) is the limit clients meet, not uWS's 4 KiB", async () => {
  const ns = await startNatsServer();
  const gw = await spawnGateway(['serve', '--nats', ns.url, '--host', '127.0.0.1', '--port', '0', '--admin-port', '0'], (out) => out.includes('connected to NATS'));
  try {
    const port = Number(/"port":(\d+)/.exec(gw.output())![1]);
    const r = await fetch(`http://127.0.0.1:${port}/nobody`);
    assert.equal(r.status, 503);
    await r.text();
    assert.equal(r.headers.get('uwebsockets'), null);
    const twelveK = await fetch(`http://127.0.0.1:${port}/nobody`, { headers: { 'x-big': 'a'.repeat(12 * 1024) } });
    assert.equal(twelveK.status, 503, 'a 12 KiB header passes the front');
    await twelveK.text();
    const twentyK = await fetch(`http://127.0.0.1:${port}/nobody`, { headers: { 'x-big': 'a'.repeat(20 * 1024) } });
    assert.equal(twentyK.status, 431);
    assert.equal(((await twentyK.json()) as { code: string }).code, 'headers-too-large');
  } finally {
    gw.child.kill('SIGKILL');
    await ns.dispose();
  }
});

test('cli: --log-format pretty writes lines for humans instead of JSON', async () => {
  const ns = await startNatsServer();
  const gw = await spawnGateway(['serve', '--nats', ns.url, '--host', '127.0.0.1', '--port', '0', '--admin-port', '0', '--log-format', 'pretty'], (out) => out.includes('connected to NATS'));
  try {
    const line = gw
      .output()
      .split('\n')
      .find((l) => l.includes('listening on'))!;
    assert.doesNotMatch(line, /^\{/, 'not JSON');
    assert.match(line, /^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: listening on http:\/\/127\.0\.0\.1:\d+/);
  } finally {
    gw.child.kill('SIGKILL');
    await ns.dispose();
  }
});

// The memory figures in the README are the `natsgw` command's, whose V8 flags (a small young generation, an old
// generation collected at 1.5 × what is live) are in its #! line: run as a program, node must accept and apply them.
test('cli: the natsgw command runs as a program with the V8 flags of its #! line', async () => {
  const version = spawnSync(BIN, ['--version'], { encoding: 'utf8', timeout: 20_000 });
  assert.equal(version.status, 0, version.stderr);
  assert.match(version.stdout, /^\d+\.\d+\.\d+\n$/);
  const ns = await startNatsServer();
  const child = spawn(BIN, ['serve', '--nats', ns.url, '--host', '127.0.0.1', '--port', '0', '--admin-port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  try {
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    await eventually(() => out.includes('connected to NATS'), 15_000, 'the gateway to connect to NATS');
    const argv = readFileSync(`/proc/${child.pid}/cmdline`, 'utf8').split('\0');
    assert.ok(argv.includes('--max-semi-space-size=2') && argv.includes('--heap-growing-percent=50'), `node ran as ${argv.join(' ')}`);
  } finally {
    child.kill('SIGKILL');
    await ns.dispose();
  }
});
