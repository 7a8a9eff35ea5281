import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

test('example: flipping a path between NATS and HTTP under traffic fails no request', () => {
  const script = fileURLToPath(new URL('../src/flip-demo.js', import.meta.url));
  const r = spawnSync(process.execPath, [script], { encoding: 'utf8', env: { ...process.env, FLIP_SECONDS: '3' }, timeout: 60_000 });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  const total = /total: (\d+) answered by NATS, (\d+) by HTTP, (\d+) failed/.exec(r.stdout);
  assert.ok(total, r.stdout);
  assert.ok(Number(total[1]) > 0 && Number(total[2]) > 0, 'both answered');
  assert.equal(total[3], '0');
});
