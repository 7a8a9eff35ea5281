import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { startNatsServer } from '@natsgw/devkit';
import { passedFlags } from '../src/cli/command.js';
import { buildParser } from '../src/cli/program.js';
import { plainServeArgs } from '../src/cli/serve-args.js';
import { eventually, spawnGateway } from './helpers.js';

/** What the full CLI (yargs) makes of a serve command line: the options by schema name, and the config file. */
async function yargsServe(args: string[]): Promise<Record<string, unknown>> {
  const argv = (await buildParser(args).parseAsync()) as Record<string, unknown>;
  assert.deepEqual(argv._, ['serve']);
  return { ...passedFlags(argv), ...(argv.config === undefined ? {} : { config: argv.config }) };
}

test('serve args: a plain serve command line means to the fast reader what it means to yargs', async () => {
  const lines: string[][] = [
    ['serve'],
    ['serve', '--port', '8080', '--subject=api.staging', '--host', '127.0.0.1'],
    ['serve', '--nats', 'nats://a:4222', '--nats=nats://b:4222'],
    ['serve', '--nats', 'nats://a:4222,nats://b:4222', '--trusted-proxies', '10.0.0.0/8'],
    ['serve', '--port', '1', '--port', '2'],
    ['serve', '--config', '/etc/natsgw.json', '--max-body', '65536', '--access-log', 'false'],
    ['serve', '--pass', '', '--user', 'u', '--log-level=debug'],
    ['serve', '--workers', 'auto', '--admin-port', '0', '--trace-sampling', '0.5'],
  ];
  for (const args of lines) {
    const fast = plainServeArgs(args);
    assert.ok(fast !== undefined, `${args.join(' ')} is plain`);
    assert.deepEqual(fast, await yargsServe(args), args.join(' '));
  }
});

test('serve args: anything but the plain form is left to yargs', async () => {
  const lines: string[][] = [
    ['serve', '--help'],
    ['serve', '-h'],
    ['serve', '--version'],
    ['serve', '--maxBody', '5'],
    ['serve', '--no-access-log'],
    ['serve', 'extra'],
    ['serve', '--bogus', '1'],
    ['serve', '--port'],
    ['serve', '--pass', '-secret'],
    ['serve', '--config', 'a.json', '--config', 'b.json'],
    ['serve', '--', '--port', '1'],
    ['--port', '1', 'serve'],
    ['routes', 'ls'],
    [],
  ];
  for (const args of lines) assert.equal(plainServeArgs(args), undefined, args.join(' '));
  // And yargs still reads the forms only it knows.
  assert.equal((await yargsServe(['serve', '--maxBody', '5'])).maxBody, '5');
});

test("serve args: a gateway started by natsgw serve loads neither yargs, TypeBox, Ajv's compiler nor the other commands", async (t) => {
  const ns = await startNatsServer();
  const dir = mkdtempSync(join(tmpdir(), 'natsgw-loaded-'));
  t.after(async () => {
    await ns.dispose();
    rmSync(dir, { recursive: true, force: true });
  });
  const file = join(dir, 'modules');
  const preload = pathToFileURL(new URL('./fixtures/loaded-modules.js', import.meta.url).pathname).href;
  const gw = await spawnGateway(['serve', '--nats', ns.url, '--host', '127.0.0.1', '--port', '0', '--admin-port', '0', '--log-format', 'json'], (out) => out.includes('listening on'), {
    ...process.env,
    NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --import=${preload}`,
    LOADED_MODULES_FILE: file,
  });
  t.after(() => gw.child.kill('SIGKILL'));
  const loaded = (): string[] => [...readFileSync(`${file}.esm`, 'utf8').split('\n'), ...readFileSync(`${file}.cjs`, 'utf8').split('\n')].filter((l) => l !== '');
  // The CommonJS list is written every 100 ms: wait until it has the NATS client, loaded before listening.
  await eventually(() => loaded().some((m) => m.includes('/@nats-io/nats-core/')), 5000, 'the module lists');
  const all = loaded();
  assert.ok(
    all.some((m) => m.endsWith('/dist/src/gateway.js')),
    'the list has the gateway itself',
  );
  assert.ok(
    all.some((m) => m.endsWith('/schema/validators/config.cjs')),
    'its options were checked by the validator compiled at build time',
  );
  for (const absent of [
    '/yargs/',
    '/@sinclair/typebox/',
    '/dist/src/cli/program.js',
    '/dist/src/cli/fleet.js',
    '/dist/src/schema-source/',
    '/ajv-formats/',
    '/ajv/dist/ajv.js',
    '/ajv/dist/core.js',
    '/ajv/dist/compile/',
  ]) {
    assert.deepEqual(
      all.filter((m) => m.includes(absent)),
      [],
      `${absent} is not loaded`,
    );
  }
});
