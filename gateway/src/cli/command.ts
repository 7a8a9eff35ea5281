/**
 * What every `natsgw` command shares: its two kinds of error, their exit
 * codes, and reading the configuration it was given. Exit codes: 0 success,
 * 1 runtime failure, 2 bad usage or configuration.
 */
import { ConfigError, loadConfig, optionKeys, type GatewayConfig } from '../config.js';

export const EXIT_USAGE = 2;
export const EXIT_FAILURE = 1;

/** Raised for bad usage; printed as one line, exit code 2. */
export class UsageError extends Error {}

export class CommandError extends Error {
  override name = 'CommandError';
  /** 1 runtime (not found, unreachable), 2 bad usage or invalid input. */
  constructor(
    message: string,
    readonly exitCode: 1 | 2,
  ) {
    super(message);
  }
}

/** Picks the options the user actually passed, keyed by schema name. */
export function passedFlags(argv: Record<string, unknown>, keys: readonly string[] = optionKeys()): Record<string, unknown> {
  const flags: Record<string, unknown> = {};
  for (const key of keys) {
    const v = argv[key];
    if (v !== undefined) flags[key] = v;
  }
  return flags;
}

/** The configuration from the options in `argv` (keyed by schema name, `config` for the file), the environment and the file; a bad one is a UsageError. */
export function configFrom(argv: Record<string, unknown>, keys: readonly string[] = optionKeys()): GatewayConfig {
  try {
    return loadConfig({ flags: passedFlags(argv, keys), env: process.env, file: argv.config as string | undefined });
  } catch (err) {
    if (err instanceof ConfigError) throw new UsageError(err.message);
    throw err;
  }
}

/** Says what went wrong on stderr, in one line, and sets the exit code it calls for. */
export function report(err: unknown): void {
  if (err instanceof UsageError) {
    process.stderr.write(`natsgw: ${err.message.split('\n')[0]}\n`);
    process.exitCode = EXIT_USAGE;
  } else if (err instanceof CommandError) {
    process.stderr.write(`natsgw: ${err.message}\n`);
    process.exitCode = err.exitCode;
  } else {
    process.stderr.write(`natsgw: ${(err as Error).message}\n`);
    process.exitCode = EXIT_FAILURE;
  }
}
