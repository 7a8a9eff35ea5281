#!/usr/bin/env node
// Finds a nats-server binary, or obtains one from Debian's packages.
//
// Dependency-free on purpose: it runs before `npm install` on a fresh clone.
// Order of preference:
//   1. $NATS_SERVER (an explicit path),
//   2. `nats-server` on PATH,
//   3. a copy extracted earlier into the cache folder,
//   4. as root: `apt-get update` + `apt-get install -y nats-server`,
//      otherwise: `apt-get download nats-server` + `dpkg -x` into the cache
//      (with a private apt state folder, since apt-get update needs root).
//
// Run directly, it prints the path it found on stdout.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { homedir } from 'node:os';
import { delimiter, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const CACHE_DIR = resolve(process.env.NATSGW_CACHE_DIR ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'natsgw'));
// Debian installs the binary in /usr/sbin, which is not on a normal user's PATH.
const EXTRACTED_BIN = join(CACHE_DIR, 'nats-server', 'usr', 'sbin', 'nats-server');
const SYSTEM_DIRS = ['/usr/sbin', '/usr/local/sbin', '/usr/local/bin', '/usr/bin'];

function onPath(name) {
  for (const dir of [...(process.env.PATH ?? '').split(delimiter), ...SYSTEM_DIRS]) {
    if (dir && existsSync(join(dir, name))) return join(dir, name);
  }
  return undefined;
}

function run(cmd, args, opts = {}) {
  process.stderr.write(`natsgw setup: ${cmd} ${args.join(' ')}\n`);
  execFileSync(cmd, args, { stdio: ['ignore', 'inherit', 'inherit'], ...opts });
}

function downloadAndExtract() {
  const work = join(CACHE_DIR, 'apt');
  mkdirSync(join(work, 'lists', 'partial'), { recursive: true });
  mkdirSync(join(work, 'archives', 'partial'), { recursive: true });
  const debDir = join(work, 'debs');
  mkdirSync(debDir, { recursive: true });
  // Try with the system's package lists first; if they are empty, refresh a private copy.
  try {
    run('apt-get', ['download', 'nats-server'], { cwd: debDir });
  } catch {
    const privateState = ['-o', `Dir::State::Lists=${join(work, 'lists')}`, '-o', `Dir::Cache=${work}`, '-o', 'Debug::NoLocking=1'];
    run('apt-get', [...privateState, 'update']);
    run('apt-get', [...privateState, 'download', 'nats-server'], { cwd: debDir });
  }
  const deb = readdirSync(debDir).find((f) => f.startsWith('nats-server') && f.endsWith('.deb'));
  if (!deb) throw new Error('apt-get download produced no nats-server .deb');
  const target = join(CACHE_DIR, 'nats-server');
  rmSync(target, { recursive: true, force: true });
  run('dpkg', ['-x', join(debDir, deb), target]);
}

/**
 * Returns the path of a usable nats-server binary, obtaining one if needed.
 * @example
 *   const bin = ensureNatsServer(); // '/usr/bin/nats-server'
 */
export function ensureNatsServer() {
  const explicit = process.env.NATS_SERVER;
  if (explicit) {
    if (!existsSync(explicit)) throw new Error(`NATS_SERVER=${explicit} does not exist`);
    return explicit;
  }
  const found = onPath('nats-server') ?? (existsSync(EXTRACTED_BIN) ? EXTRACTED_BIN : undefined);
  if (found) return found;

  if (!onPath('apt-get')) {
    throw new Error('nats-server is not on PATH and apt-get is not available to obtain it; install nats-server (2.9+) and retry');
  }
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  if (isRoot) {
    run('apt-get', ['update', '-qq']);
    run('apt-get', ['install', '-y', '-qq', 'nats-server'], { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
    const installed = onPath('nats-server');
    if (installed) return installed;
    throw new Error('apt-get install nats-server finished but no nats-server binary was found');
  }
  downloadAndExtract();
  if (existsSync(EXTRACTED_BIN)) return EXTRACTED_BIN;
  throw new Error(`extracted the nats-server package but ${EXTRACTED_BIN} is missing`);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    process.stdout.write(ensureNatsServer() + '\n');
  } catch (err) {
    process.stderr.write(`natsgw setup: ${err.message}\n`);
    process.exit(1);
  }
}
