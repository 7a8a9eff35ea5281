/**
 * Structured JSON logs (pino). One logger per gateway; components take a
 * child logger so every line says where it came from. On a terminal (or with
 * --log-format pretty) lines are formatted for humans by pino-pretty.
 */
import { createRequire } from 'node:module';
import { pino, type Logger } from 'pino';
import type pretty from 'pino-pretty';
import { LogBatcher, type BatchOut } from './log-batcher.js';

export type { Logger };

export type LogFormat = 'auto' | 'json' | 'pretty';

/**
 * @example const log = createLogger('info'); log.info({ port: 8080 }, 'listening');
 */
export function createLogger(level: string, format: LogFormat = 'json', destination?: pino.DestinationStream): Logger {
  const options = { level, base: { app: 'natsgw' }, timestamp: pino.stdTimeFunctions.isoTime };
  if (destination !== undefined) return pino(options, destination);
  if (format === 'pretty' || (format === 'auto' && process.stdout.isTTY === true)) {
    // Loaded only for humans: a gateway logging JSON never needs it.
    const prettyStream = createRequire(import.meta.url)('pino-pretty') as typeof pretty;
    return pino(options, prettyStream({ colorize: process.stdout.isTTY === true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'app,pid,hostname' }));
  }
  // Asynchronous, and batched (log-batcher.ts). The buffer is capped: if
  // whatever reads stdout falls 16 MiB behind, lines are dropped rather than
  // letting the gateway's memory grow without bound.
  return createBatchedLogger(level, pino.destination({ dest: 1, sync: false, maxLength: 16 * 1024 * 1024, contentMode: 'buffer' }) as unknown as BatchOut);
}

/**
 * A JSON logger whose lines wait in a LogBatcher before going to `out`:
 * stdout's SonicBoom for the gateway, the main thread for a `--workers`
 * thread (`bindings` then say which worker).
 */
export function createBatchedLogger(level: string, out: BatchOut, bindings: Record<string, unknown> = {}): Logger {
  return pino({ level, base: { app: 'natsgw', ...bindings }, timestamp: pino.stdTimeFunctions.isoTime }, new LogBatcher(out));
}

/** Hands whole log lines from elsewhere (a worker thread's batch) to `log`'s destination, in order. */
export function writeLogLines(log: Logger, chunk: Uint8Array): void {
  const stream = (log as unknown as Record<symbol, { write(s: string): unknown }>)[pino.symbols.streamSym]!;
  if (stream instanceof LogBatcher) stream.writeBytes(chunk);
  else stream.write(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength).toString('utf8'));
}

/** Writes out buffered log lines (call before process.exit). */
export function flushLogs(log: Logger): Promise<void> {
  return new Promise<void>((resolve) => {
    try {
      log.flush(() => resolve());
    } catch {
      resolve();
    }
  }).then(() => settled((log as unknown as Record<symbol, unknown>)[pino.symbols.streamSym]));
}

/** Longest wait for a write already on its way to stdout. */
const SETTLE_MS = 1000;

/**
 * Resolves once an asynchronous destination has written everything it was
 * given. pino's flush(cb) does not wait for that: sonic-boom with
 * minLength 0 calls cb at once, while its last write may still be in
 * flight, and a process that then kills itself (exitAfter) loses the lines.
 */
function settled(stream: unknown): Promise<void> {
  const out = (stream instanceof LogBatcher ? stream.destination : stream) as { _writing?: boolean; _len?: number; once?(event: string, fn: () => void): void } | undefined;
  if (out?.once === undefined || (out._writing !== true && out._len === 0)) return Promise.resolve();
  return new Promise((resolve) => {
    const until = Date.now() + SETTLE_MS;
    const check = (): void => {
      if ((out._writing !== true && out._len === 0) || Date.now() > until) return resolve();
      setTimeout(check, 5);
    };
    check();
  });
}
