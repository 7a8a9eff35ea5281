#!/usr/bin/env node
// `npm run lint` (and the first step of `npm test`): Biome checks lint rules
// and formatting over the whole repository (biome.json says which rules and
// why). Exit 1 with Biome's report on any error.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ROOT } from './setup.mjs';

/** Runs Biome on the repository; true when it found nothing to report as an error. */
export function lint(args = []) {
  const bin = join(ROOT, 'node_modules', '@biomejs', 'biome', 'bin', 'biome');
  if (!existsSync(bin)) {
    process.stderr.write('natsgw lint: Biome is not installed (npm ci installs it)\n');
    return false;
  }
  const r = spawnSync(process.execPath, [bin, 'check', '--error-on-warnings', ...args, '.'], { cwd: ROOT, stdio: 'inherit' });
  return r.status === 0;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.exit(lint(process.argv.slice(2)) ? 0 : 1);
}
