/**
 * Structured JSON logs (pino). One logger per gateway; components take a
 * child logger so every line says where it came from. On a terminal (or with
 * --log-format pretty) lines are formatted for humans by pino-pretty.
 */
import { createRequire } from 'node:module';
import { pino, type Logger } from 'pino';
import type pretty from 'pino-pretty';

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
  // Asynchronous, and batched per event-loop turn (TurnBatched). The buffer
  // is capped: if whatever reads stdout falls 16 MiB behind, lines are
  // dropped rather than letting the gateway's memory grow without bound.
  return pino(options, new TurnBatched(pino.destination({ dest: 1, sync: false, maxLength: 16 * 1024 * 1024 })));
}

/**
 * The logger of a `--workers` thread: JSON lines, batched per turn like the
 * main thread's, handed to `post` (the pool's main thread writes them to its
 * own destination, so the process has one log). Every line says which worker.
 */
export function createWorkerLogger(level: string, worker: number, post: (lines: string) => void): Logger {
  return pino({ level, base: { app: 'natsgw', worker }, timestamp: pino.stdTimeFunctions.isoTime }, new TurnBatched({ write: post }));
}

/** Where TurnBatched hands its lines: pino's SonicBoom, or a worker's post to its main thread. */
interface LineOut {
  write(data: string): unknown;
  flush?(cb: (err?: Error) => void): void;
  flushSync?(): void;
}

/**
 * Collects the lines written during one event-loop turn and hands them to
 * SonicBoom as one string at the end of it. Without this, SonicBoom starts an
 * fs.write (a libuv thread-pool job: two thread wake-ups) for nearly every
 * access line, since each write finishes before the next request does; that
 * cost the NATS path about a fifth of its throughput. A turn's lines go out
 * early once they reach BATCH_BYTES, so one busy turn cannot hold much.
 */
class TurnBatched implements pino.DestinationStream {
  private static readonly BATCH_BYTES = 64 * 1024;
  private pending = '';
  private scheduled = false;

  constructor(private readonly out: LineOut) {
    // What is still pending when the process exits is written synchronously
    // (pino does the same for its own destination).
    process.once('exit', () => {
      this.handOver();
      try {
        this.out.flushSync?.();
      } catch {
        // stdout is gone or busy: nothing more can be done at exit.
      }
    });
  }

  write(line: string): void {
    this.pending += line;
    if (this.pending.length >= TurnBatched.BATCH_BYTES) this.handOver();
    else if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(this.endOfTurn);
    }
  }

  /** pino's logger.flush(cb) calls this. */
  flush(cb: (err?: Error) => void): void {
    this.handOver();
    if (this.out.flush !== undefined) this.out.flush(cb);
    else cb();
  }

  private readonly endOfTurn = (): void => {
    this.scheduled = false;
    this.handOver();
  };

  private handOver(): void {
    if (this.pending === '') return;
    const lines = this.pending;
    this.pending = '';
    this.out.write(lines);
  }
}

/** Writes out buffered log lines (call before process.exit). */
export function flushLogs(log: Logger): Promise<void> {
  return new Promise((resolve) => {
    try {
      log.flush(() => resolve());
    } catch {
      resolve();
    }
  });
}
