/**
 * The `natsgw` command line's entry. The only file that reads argv; exit
 * codes are command.ts's.
 *
 * A plain `natsgw serve` (serve-args.ts) starts the gateway without loading
 * the rest of the CLI: yargs and the admin, routes and services commands
 * would otherwise stay in a long-running gateway's memory. Every other
 * command line, help and mistakes included, goes to the full CLI
 * (program.ts).
 */
import { report } from './command.js';
import { serveCommand } from './serve.js';
import { plainServeArgs } from './serve-args.js';

/**
 * Runs the CLI with `args` (argv without node and script).
 * @example await main(['serve', '--port', '8080']);
 */
export async function main(args: string[]): Promise<void> {
  const serve = plainServeArgs(args);
  if (serve === undefined) return (await import('./program.js')).runProgram(args);
  try {
    await serveCommand(serve);
  } catch (err) {
    report(err);
  }
}
