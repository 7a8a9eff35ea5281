#!/usr/bin/env -S node --max-semi-space-size=2 --heap-growing-percent=50
// Entry point of the `natsgw` command; the CLI itself is compiled TypeScript.
// --max-semi-space-size=2: V8 grows its young generation to 3 × 16 MiB by
// default, and a gateway's garbage is small and short-lived; at 2 MiB the
// gateway's RSS is 20-30 MB lower with no throughput cost measured here.
// --heap-growing-percent=50: under load, requests in flight outlive that
// small young generation and die in the old one, which V8 lets grow to up
// to 4 × what is live before collecting it (with the ArrayBuffers those
// dead requests still hold): a gateway with 12 MiB live sat at 97 MiB after
// load and peaked at 112-117 MiB in a 1,000-connection burst; with the old
// generation collected at 1.5 × what is live, 76 and 85-87 MiB, at the same
// CPU per request (README, "Performance"). Run as `node natsgw.js`, the
// flags are not applied.
import { existsSync } from 'node:fs';

const cli = new URL('../dist/src/cli/cli.js', import.meta.url);
if (!existsSync(cli)) {
  process.stderr.write('natsgw: not built yet; run `npm run build` at the repository root\n');
  process.exit(1);
}
const { main } = await import(cli.href);
await main(process.argv.slice(2));
