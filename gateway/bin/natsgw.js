#!/usr/bin/env node
// Entry point of the `natsgw` command; the CLI itself is compiled TypeScript.
import { existsSync } from 'node:fs';

const cli = new URL('../dist/src/cli/cli.js', import.meta.url);
if (!existsSync(cli)) {
  process.stderr.write('natsgw: not built yet; run `npm run build` at the repository root\n');
  process.exit(1);
}
const { main } = await import(cli.href);
await main(process.argv.slice(2));
