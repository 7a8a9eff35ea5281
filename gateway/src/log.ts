/**
 * Structured JSON logs (pino). One logger per gateway; components take a
 * child logger so every line says where it came from. On a terminal (or with
 * --log-format pretty) lines are formatted for humans by pino-pretty.
 */
import { pino, type Logger } from 'pino';
import pretty from 'pino-pretty';

export type { Logger };

export type LogFormat = 'auto' | 'json' | 'pretty';

/**
 * @example const log = createLogger('info'); log.info({ port: 8080 }, 'listening');
 */
export function createLogger(level: string, format: LogFormat = 'json', destination?: pino.DestinationStream): Logger {
  const options = { level, base: { app: 'natsgw' }, timestamp: pino.stdTimeFunctions.isoTime };
  if (destination !== undefined) return pino(options, destination);
  if (format === 'pretty' || (format === 'auto' && process.stdout.isTTY === true)) {
    return pino(options, pretty({ colorize: process.stdout.isTTY === true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'app,pid,hostname' }));
  }
  // Asynchronous: under load, lines written while a write is pending go out
  // together instead of one write() each. flushLogs() before exiting. The
  // buffer is capped: if whatever reads stdout falls 16 MiB behind, lines are
  // dropped rather than letting the gateway's memory grow without bound.
  return pino(options, pino.destination({ dest: 1, sync: false, maxLength: 16 * 1024 * 1024 }));
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
