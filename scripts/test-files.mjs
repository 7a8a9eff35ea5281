// The compiled test files `npm test` and `npm run coverage` run: every
// *.test.js under each package's dist/test, or the paths given as arguments.
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from './setup.mjs';

export const PACKAGES = ['service-sdk', 'gateway', 'examples'];

function testFilesIn(dir) {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? testFilesIn(join(dir, e.name)) : e.name.endsWith('.test.js') ? [join(dir, e.name)] : []));
}

/** `npm test -- gateway/dist/test/cli.test.js` narrows a run to those files. */
export function testFiles(args = process.argv.slice(2)) {
  return args.length > 0 ? args : PACKAGES.flatMap((p) => testFilesIn(join(ROOT, p, 'dist', 'test')));
}
