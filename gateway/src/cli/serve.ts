/**
 * `natsgw serve`: runs the gateway (one, or a pool of worker threads) until
 * a signal, then shuts it down within the grace. The only place that
 * handles signals.
 */
import { startGateway } from '../gateway.js';
import { createLogger } from '../log.js';
import { runPreload } from '../preload.js';
import { startWorkerPool, WedgedWorkersError, type ServingGateway } from '../workers/worker-pool.js';
import { CommandError, configFrom, EXIT_FAILURE } from './command.js';
import { exitAfter } from './process-exit.js';

/** Serves with the options in `argv` (keyed by schema name; `config` names the file). */
export async function serveCommand(argv: Record<string, unknown>): Promise<void> {
  const config = configFrom(argv);
  const log = createLogger(config.logLevel, config.logFormat);
  // With workers, each worker thread imports it (worker-main.ts); this thread serves no HTTP.
  if (config.workers === 1) {
    try {
      await runPreload(config.preload);
    } catch (err) {
      throw new CommandError((err as Error).message, 2);
    }
  }
  const gateway: ServingGateway = config.workers > 1 ? await startWorkerPool(config, { logger: log }) : await startGateway(config, { logger: log });
  const exit = (code: number, err?: unknown) => exitAfter(log, code, err);
  // An unreachable server is retried forever (503 meanwhile), but a refusal
  // such as bad credentials will not fix itself: exit so it gets noticed.
  gateway.connected.catch((err: unknown) => {
    process.stderr.write(`natsgw: cannot connect to NATS: ${(err as Error).message}\n`);
    void gateway.close(0).then(
      () => exit(EXIT_FAILURE),
      (err: unknown) => exit(EXIT_FAILURE, err),
    );
  });
  // A connection nats.js gave up on (revoked or expired credentials) never
  // comes back: exit, so a supervisor restarts the gateway with what it has now.
  void gateway.failed.then((err) => {
    process.stderr.write(`natsgw: NATS connection closed for good: ${err.message}; exiting\n`);
    void gateway.close(0).then(
      () => exit(EXIT_FAILURE),
      (err: unknown) => exit(EXIT_FAILURE, err),
    );
  });
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) {
      log.warn({ signal }, 'second signal: exiting now');
      return exit(EXIT_FAILURE);
    }
    stopping = true;
    log.info({ signal, inFlight: gateway.inFlight, graceMs: config.shutdownGraceMs }, 'shutting down: not ready, finishing requests in flight');
    gateway.close(config.shutdownGraceMs).then(
      () => exit(0),
      (err: unknown) => {
        log.error({ err }, err instanceof WedgedWorkersError ? 'shutdown could not stop every worker; killing the process' : 'error while shutting down');
        exit(EXIT_FAILURE, err);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}
