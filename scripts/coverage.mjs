#!/usr/bin/env node
// `npm run coverage`: the whole suite under c8 (V8's own coverage, mapped
// back to the TypeScript through the build's source maps; it also covers the
// gateway processes the tests start), then line and branch coverage per
// package and the least covered files. Full report: coverage/lcov.info.
// There is no floor: the report is for finding untested code. (Node 20's
// built-in --experimental-test-coverage fails on these source maps: "Cannot
// read properties of undefined (reading 'line')".)
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, setup } from './setup.mjs';
import { testFiles } from './test-files.mjs';

setup();
const dir = join(ROOT, 'coverage');
rmSync(dir, { recursive: true, force: true });
const c8 = join(ROOT, 'node_modules', 'c8', 'bin', 'c8.js');
const run = spawnSync(
  process.execPath,
  [c8, '--reporter=lcovonly', `--report-dir=${dir}`, `--temp-directory=${join(dir, 'tmp')}`, '--', process.execPath, '--test', '--test-timeout=120000', '--test-reporter=dot', ...testFiles()],
  { cwd: ROOT, stdio: 'inherit', env: process.env },
);

/** Per file: lines found/hit, branches found/hit, from lcov's LF/LH/BRF/BRH records. */
const files = [];
let current;
for (const line of readFileSync(join(dir, 'lcov.info'), 'utf8').split('\n')) {
  if (line.startsWith('SF:')) current = { file: line.slice(3), lf: 0, lh: 0, brf: 0, brh: 0 };
  else if (current && /^(LF|LH|BRF|BRH):/.test(line)) current[line.slice(0, line.indexOf(':')).toLowerCase()] = Number(line.slice(line.indexOf(':') + 1));
  else if (line === 'end_of_record' && current) {
    // The product's code only: not the tests, the bench or the examples.
    if (/^(gateway|service-sdk|devkit)\/src\//.test(current.file)) files.push(current);
    current = undefined;
  }
}
const pct = (hit, found) => (found === 0 ? '    -  ' : `${((hit / found) * 100).toFixed(1).padStart(5)} %`);
console.log('\ncoverage of src/ per package');
for (const pkg of ['service-sdk', 'gateway', 'devkit']) {
  const mine = files.filter((f) => f.file.startsWith(`${pkg}/`));
  const sum = (k) => mine.reduce((a, f) => a + f[k], 0);
  console.log(`  ${pkg.padEnd(12)} lines ${pct(sum('lh'), sum('lf'))}   branches ${pct(sum('brh'), sum('brf'))}   (${mine.length} files)`);
}
console.log('\nleast covered files (by lines):');
for (const f of [...files].sort((a, b) => a.lh / (a.lf || 1) - b.lh / (b.lf || 1)).slice(0, 12)) {
  console.log(`  lines ${pct(f.lh, f.lf)}   branches ${pct(f.brh, f.brf)}   ${f.file}`);
}
console.log('\n  full report: coverage/lcov.info');
process.exit(run.status ?? 1);
