#!/usr/bin/env node
// `npm test`: set up, lint, then run every compiled test file with node's
// test runner. Each test file starts its own nats-server(s) on free ports.
import { spawnSync } from 'node:child_process';
import { lint } from './lint.mjs';
import { ROOT, setup } from './setup.mjs';
import { testFiles } from './test-files.mjs';

setup();
if (!lint()) process.exit(1);
const result = spawnSync(process.execPath, ['--test', '--test-timeout=120000', ...testFiles()], { cwd: ROOT, stdio: 'inherit', env: process.env });
process.exit(result.status ?? 1);
