/**
 * Structured JSON logs (pino). One logger per gateway; components take a
 * child logger so every line says where it came from.
 */
import { pino, type Logger } from 'pino';

export type { Logger };

/**
 * @example const log = createLogger('info'); log.info({ port: 8080 }, 'listening');
 */
export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino({ level, base: { app: 'natsgw' }, timestamp: pino.stdTimeFunctions.isoTime }, destination);
}
