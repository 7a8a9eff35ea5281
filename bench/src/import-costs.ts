/**
 * Prints, as JSON, the RSS of this process after importing each of the
 * gateway's dependencies and then the gateway itself, in the order the
 * gateway loads them: what each part costs before any request. Run by the
 * bench with the gateway's V8 flags and the gateway package as cwd.
 */
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';

const resolve = createRequire(pathToFileURL(process.cwd() + '/package.json')).resolve;
const steps: Array<[string, string]> = [
  ['node', ''],
  ['@nats-io/transport-node', '@nats-io/transport-node'],
  ['uWebSockets.js', 'uWebSockets.js'],
  ['pino', 'pino'],
  ['@nats-io/kv', '@nats-io/kv'],
  ['undici', 'undici'],
  ['prom-client', 'prom-client'],
  // The entry `natsgw serve` runs: neither TypeBox (build-time), Ajv's compiler (the validators are compiled at build time) nor yargs (only for other command lines) is loaded.
  ['natsgw (gateway + serve entry)', './dist/src/cli/cli.js'],
];
const out: Array<{ module: string; rssMiB: number }> = [];
for (const [name, spec] of steps) {
  if (spec !== '') {
    await import(spec.startsWith('.') ? pathToFileURL(process.cwd() + '/' + spec).href : pathToFileURL(resolve(spec)).href);
  }
  out.push({ module: name, rssMiB: Math.round((process.memoryUsage().rss / 1048576) * 10) / 10 });
}
process.stdout.write(JSON.stringify(out) + '\n');
