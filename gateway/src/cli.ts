/**
 * The `natsgw` command line. The only file that reads argv, exits the process
 * or handles signals.
 *
 * Options are declared from the configuration schema (config.ts), so --help,
 * the environment variables and the config file can never disagree with what
 * the gateway validates. Exit codes: 0 success, 1 runtime failure, 2 bad usage
 * or configuration.
 */
import { readFileSync } from 'node:fs';
import yargs, { type Argv } from 'yargs';
import { ConfigError, envName, flagName, loadConfig, OPTION_KEYS, optionMeta } from './config.js';
import { startGateway } from './gateway.js';
import { createLogger } from './log.js';

const EXIT_USAGE = 2;
const EXIT_FAILURE = 1;

/** Grace period for requests in flight when a signal asks the gateway to stop. */
const SHUTDOWN_GRACE_MS = 10_000;

const VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

/** Raised for bad usage; printed as one line, exit code 2. */
class UsageError extends Error {}

function declareServeOptions(y: Argv): Argv {
  for (const key of OPTION_KEYS) {
    const meta = optionMeta(key);
    const def = meta.default === undefined ? undefined : Array.isArray(meta.default) ? meta.default.join(',') || '(none)' : String(meta.default);
    y.option(flagName(key), {
      // Everything arrives as text; the schema coerces and checks it.
      type: 'string',
      requiresArg: true,
      describe: `${meta.description}  [env ${envName(key)}]`,
      ...(def !== undefined ? { defaultDescription: def } : {}),
      ...(meta.placeholder ? { nargs: 1 } : {}),
    });
  }
  y.option('config', { type: 'string', requiresArg: true, describe: 'JSON config file with the same keys as these options in camelCase (e.g. {"maxBody": 65536})' });
  return y.epilogue(
    'Precedence: flag > environment variable > config file > default.\n' +
      'Example: natsgw serve --nats nats://127.0.0.1:4222 --subject api --port 8080',
  );
}

/** Picks the options the user actually passed, keyed by schema name. */
function passedFlags(argv: Record<string, unknown>): Record<string, unknown> {
  const flags: Record<string, unknown> = {};
  for (const key of OPTION_KEYS) {
    const v = argv[key];
    if (v !== undefined) flags[key] = v;
  }
  return flags;
}

async function serveCommand(argv: Record<string, unknown>): Promise<void> {
  let config;
  try {
    config = loadConfig({ flags: passedFlags(argv), env: process.env, file: argv.config as string | undefined });
  } catch (err) {
    if (err instanceof ConfigError) throw new UsageError(err.message);
    throw err;
  }
  const log = createLogger(config.logLevel);
  const gateway = await startGateway(config, { logger: log });
  // An unreachable server is retried forever (503 meanwhile), but a refusal
  // such as bad credentials will not fix itself: exit so it gets noticed.
  gateway.connected.catch((err: unknown) => {
    process.stderr.write(`natsgw: cannot connect to NATS: ${(err as Error).message}\n`);
    void gateway.close(0).finally(() => process.exit(EXIT_FAILURE));
  });
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) {
      log.warn({ signal }, 'second signal: exiting now');
      process.exit(EXIT_FAILURE);
    }
    stopping = true;
    log.info({ signal, inFlight: gateway.inFlight }, 'shutting down');
    gateway.close(SHUTDOWN_GRACE_MS).then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err }, 'error while shutting down');
        process.exit(EXIT_FAILURE);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

/** yargs says "Unknown argument: bogus"; name the flag as the user typed it. */
function friendly(msg: string, args: string[]): string {
  const unknown = /^Unknown arguments?: (.+)$/.exec(msg);
  if (unknown) {
    const names = unknown[1]!.split(', ');
    if (names.every((n) => args.includes(n))) return `unknown command ${names.join(' ')}`;
    return `unknown option ${names.map((a) => (a.length > 1 ? '--' : '-') + a).join(', ')}`;
  }
  const missing = /^Not enough arguments following: (.+)$/.exec(msg);
  if (missing) return `--${missing[1]} needs a value`;
  return msg;
}

/**
 * Runs the CLI with `args` (argv without node and script).
 * @example await main(['serve', '--port', '8080']);
 */
export async function main(args: string[]): Promise<void> {
  const parser = yargs(args)
    .scriptName('natsgw')
    .usage('natsgw <command> [options]\n\nHTTP on the front, NATS request/reply on the back.')
    .command('serve', 'Run the gateway: /a/b is sent to ROOT.a.b over NATS', declareServeOptions)
    .demandCommand(1, 'Name a command, e.g. natsgw serve')
    .strict()
    .version(VERSION)
    .help()
    .alias('h', 'help')
    .wrap(Math.min(110, process.stdout.columns || 100))
    // Anything yargs rejects is a usage error (exit 2); command failures are raised after parsing.
    .fail((msg, err) => {
      throw new UsageError(friendly(msg ?? err?.message ?? 'invalid usage', args));
    });

  let argv: Record<string, unknown>;
  try {
    argv = (await parser.parseAsync()) as Record<string, unknown>;
    const command = (argv._ as string[])[0];
    if (command === 'serve') await serveCommand(argv);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`natsgw: ${err.message.split('\n')[0]}\n`);
      process.exitCode = EXIT_USAGE;
      return;
    }
    process.stderr.write(`natsgw: ${(err as Error).message}\n`);
    process.exitCode = EXIT_FAILURE;
  }
}
