#!/usr/bin/env node
// Everything `npm test`, `npm run demo` and `npm run bench` need on a fresh
// clone, done only when missing: dependencies, the TypeScript build, and a
// nats-server binary. Dependency-free: it runs before `npm install`.
import { execFileSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ensureNatsServer } from './nats-server.mjs';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';

function say(msg) {
  process.stderr.write(`natsgw setup: ${msg}\n`);
}

function dependenciesStale() {
  // npm records the installed tree in node_modules/.package-lock.json.
  const installed = join(ROOT, 'node_modules', '.package-lock.json');
  if (!existsSync(installed)) return true;
  return statSync(join(ROOT, 'package-lock.json')).mtimeMs > statSync(installed).mtimeMs;
}

/** Installs, builds and finds nats-server; returns its path. */
export function setup() {
  if (dependenciesStale()) {
    say('installing dependencies (npm ci)');
    execFileSync(npm, ['ci', '--no-audit', '--no-fund'], { cwd: ROOT, stdio: 'inherit' });
  }
  // tsc -b is incremental: a no-op when nothing changed.
  execFileSync(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-b'], { cwd: ROOT, stdio: 'inherit' });
  const natsServer = ensureNatsServer();
  process.env.NATS_SERVER = natsServer;
  return { natsServer };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    const { natsServer } = setup();
    say(`ready (nats-server: ${natsServer})`);
  } catch (err) {
    say(err.message);
    process.exit(1);
  }
}
