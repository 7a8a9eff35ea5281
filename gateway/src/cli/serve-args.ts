/**
 * `natsgw serve`'s command line read without yargs. A gateway runs for
 * months, and whatever it imports stays loaded: yargs and the 40 modules it
 * brings (help layout, string widths, locales) cost ≈ 3 MiB of RSS for a
 * parse done once. So the plain form is read here with node's parseArgs:
 * `serve`, then known options as `--flag value` or `--flag=value`, each
 * possibly repeated. Anything else (--help, --version, camelCase or --no-
 * forms, a positional, an unknown or valueless flag) returns undefined, and
 * the full CLI (program.ts) reads the line, with its help and its messages:
 * both readers give any command line the same meaning (a test compares them).
 */
import { parseArgs } from 'node:util';
import { flagName, optionKeys } from '../config.js';

/**
 * The options of a plain `serve` command line, keyed by schema name as yargs
 * gives them (a string, or an array when repeated; `config` for the file),
 * or undefined when the line is not plain.
 * @example plainServeArgs(['serve', '--port', '8080']) // { port: '8080' }
 */
export function plainServeArgs(args: readonly string[]): Record<string, unknown> | undefined {
  if (args[0] !== 'serve') return undefined;
  const byFlag = new Map<string, string>([['config', 'config']]);
  for (const key of optionKeys()) byFlag.set(flagName(key), key);
  const options: Record<string, { type: 'string'; multiple: true }> = {};
  for (const flag of byFlag.keys()) options[flag] = { type: 'string', multiple: true };
  let values: Record<string, string[] | undefined>;
  try {
    values = parseArgs({ args: args.slice(1), options, strict: true, allowPositionals: false }).values as Record<string, string[] | undefined>;
  } catch {
    return undefined;
  }
  const argv: Record<string, unknown> = {};
  for (const [flag, given] of Object.entries(values)) {
    if (given === undefined) continue;
    // yargs keeps only the last of several --config; let it say so itself.
    if (flag === 'config' && given.length > 1) return undefined;
    argv[byFlag.get(flag)!] = given.length === 1 ? given[0] : given;
  }
  return argv;
}
