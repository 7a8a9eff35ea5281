import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { connect as netConnect } from 'node:net';
import { fileURLToPath } from 'node:url';
import { freePorts } from '@natsgw/devkit';

const DEMO = fileURLToPath(new URL('../src/demo.js', import.meta.url));

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = netConnect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

const hasCurl = (() => {
  try {
    execFileSync('curl', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

test('demo: starts everything, its curl lines work, Ctrl-C stops everything', { skip: !hasCurl && 'curl is not installed' }, async () => {
  const [port, adminPort] = (await freePorts(2)) as [number, number];
  const demo = spawn(process.execPath, [DEMO], { env: { ...process.env, PORT: String(port), ADMIN_PORT: String(adminPort) }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  demo.stdout.on('data', (d: Buffer) => (out += d.toString()));
  demo.stderr.on('data', (d: Buffer) => (out += d.toString()));
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`demo did not come up:\n${out}`)), 30_000);
      demo.stdout.on('data', () => {
        if (out.includes('Ctrl-C stops everything.')) {
          clearTimeout(timer);
          resolve();
        }
      });
      demo.once('exit', (code) => reject(new Error(`demo exited ${code}:\n${out}`)));
    });
    const natsPort = Number(/nats-server\s+nats:\/\/127\.0\.0\.1:(\d+)/.exec(out)?.[1]);
    const curls = out
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l.startsWith('curl '));
    assert.ok(curls.length >= 5, `printed curl lines:\n${out}`);
    for (const line of curls) {
      const command = line.replace(/\s+#.*$/, '');
      const result = execFileSync('sh', ['-c', command], { encoding: 'utf8' });
      if (line.includes('/nobody/')) assert.match(result, /^HTTP\/1\.1 503 /, command);
      else if (line.includes('/clock')) assert.equal(result.match(/^data: \{"time":"[^"]+","tick":\d\}$/gm)?.length, 3, `${command} → ${result}`);
      else if (line.includes('/download')) assert.equal(result.trim(), `${200 * 1024 * 1024} bytes`, command);
      else assert.match(result, /^\{.*\}$/s, `${command} → ${result}`);
    }
    assert.match(execFileSync('sh', ['-c', curls.find((c) => c.includes('/bar/sum'))!.replace(/\s+#.*$/, '')], { encoding: 'utf8' }), /"sum":6/);
    // The chat room's command line (run from the repository root, as printed).
    const chat = out
      .split('\n')
      .map((l) => l.trim())
      .find((l) => l.startsWith('echo hello | node'));
    assert.ok(chat !== undefined, `printed a chat line:\n${out}`);
    const said = execFileSync('sh', ['-c', chat], { encoding: 'utf8', cwd: fileURLToPath(new URL('../../../', import.meta.url)) });
    assert.match(said, /^\* you are guest-\w+ in lobby$/m, said);
    assert.match(said, /^guest-\w+: hello$/m, said);
    assert.match(said, /^\[closed 1000\]$/m, said);
    // The override balances between both legacy servers.
    const legacy = curls.find((c) => c.includes('/legacy/'))!.replace(/\s+#.*$/, '');
    const from = new Set(Array.from({ length: 4 }, () => (JSON.parse(execFileSync('sh', ['-c', legacy], { encoding: 'utf8' })) as { from: string }).from));
    assert.deepEqual([...from].sort(), ['legacy-1', 'legacy-2']);

    const exited = new Promise<number | null>((resolve) => demo.once('exit', resolve));
    demo.kill('SIGINT');
    assert.equal(await exited, 0, out);
    assert.equal(await portOpen(port), false, 'gateway stopped');
    assert.equal(await portOpen(natsPort), false, 'nats-server stopped');
  } finally {
    // After a failure, stop it the way Ctrl-C does, so it stops its children
    // (each runs detached, in its own process group) before it goes.
    if (demo.exitCode === null && demo.signalCode === null) {
      const gone = new Promise((resolve) => demo.once('exit', resolve));
      demo.kill('SIGINT');
      await Promise.race([gone, new Promise((resolve) => setTimeout(resolve, 10_000))]);
    }
    demo.kill('SIGKILL');
  }
});
