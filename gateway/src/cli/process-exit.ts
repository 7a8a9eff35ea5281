/**
 * How the `natsgw` process ends: its log flushed first, then the exit code.
 * After a shutdown that left a wedged worker thread (WedgedWorkersError),
 * a normal exit would make Node abort on the thread's open uWS handles
 * (SIGABRT and a core dump, after the logs): the process kills itself
 * instead, so it ends at once with one clear log line before it.
 */
import type { Logger } from 'pino';
import { flushLogs } from '../log.js';
import { WedgedWorkersError } from '../workers/worker-pool.js';

export function exitAfter(log: Logger, code: number, err?: unknown): void {
  void flushLogs(log).finally(() => {
    if (err instanceof WedgedWorkersError) process.kill(process.pid, 'SIGKILL');
    else process.exit(code);
  });
}
