#!/usr/bin/env node
// `npm test`: set up, then run every compiled test file with node's test
// runner. Each test file starts its own nats-server(s) on free ports.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, setup } from './setup.mjs';

setup();

const PACKAGES = ['service-sdk', 'gateway', 'examples'];
function testFiles(dir) {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? testFiles(join(dir, e.name)) : e.name.endsWith('.test.js') ? [join(dir, e.name)] : [],
  );
}
// Arguments narrow the run: `npm test -- gateway/dist/test/cli.test.js`.
const files = process.argv.length > 2 ? process.argv.slice(2) : PACKAGES.flatMap((p) => testFiles(join(ROOT, p, 'dist', 'test')));
const result = spawnSync(process.execPath, ['--test', '--test-timeout=120000', ...files], { cwd: ROOT, stdio: 'inherit', env: process.env });
process.exit(result.status ?? 1);
