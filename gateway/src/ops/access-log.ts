/**
 * The access log: one JSON line per finished request, in the same shape and
 * to the same destination as the gateway's pino lines
 * (`{"level":30,"time":…,"app":"natsgw","kind":"access",…,"msg":"request"}`).
 *
 * Why not `logger.info({...})`: on the NATS path that call cost the gateway
 * about a fifth of its throughput (bench, issue 10): an object per line,
 * pino's generic serialiser walking it, and an ISO timestamp formatted per
 * line. Here the line is one template over fields whose types are known; the
 * timestamp string is reused while the millisecond does not change; only
 * strings that can hold characters JSON must escape go through
 * JSON.stringify. The write goes to pino's own destination, so the 16 MiB cap
 * on a slow stdout (log.ts) holds for these lines too.
 */
import { pino, type Logger } from 'pino';
import type { Exchange } from '../front/exchange.js';

/** What a destination must offer: pino's SonicBoom, pino-pretty's stream, or a test's `{ write }`. */
interface LineSink {
  write(line: string): unknown;
}

/** Characters a JSON string must escape, and anything outside printable ASCII (kept exact by JSON.stringify). A single class: no backtracking. */
const NEEDS_ESCAPE = /["\\\x00-\x1f\x7f-\uffff]/;

function jsonString(s: string): string {
  return NEEDS_ESCAPE.test(s) ? JSON.stringify(s) : '"' + s + '"';
}

/**
 * Returns the function that logs a finished request, or undefined when the
 * logger would drop info lines anyway.
 * @example const access = createAccessLog(log); access?.(ex, 1.25, false);
 */
export function createAccessLog(log: Logger): ((ex: Exchange, durationMs: number, aborted: boolean) => void) | undefined {
  if (!log.isLevelEnabled('info')) return undefined;
  const sink = (log as unknown as Record<symbol, LineSink>)[pino.symbols.streamSym];
  if (sink === undefined || typeof sink.write !== 'function') {
    // Not a pino logger with a stream (a test double): the generic path.
    const child = log.child({ kind: 'access' });
    return (ex, durationMs, aborted) => child.info(accessFields(ex, durationMs, aborted), 'request');
  }
  // The prefix pino would write for `log.child({ kind: 'access' }).info(...)`, bindings included.
  const bindings = JSON.stringify({ ...log.bindings(), kind: 'access' }).slice(1, -1);
  const level = log.levels.values.info;
  let lastMs = -1;
  let lastTime = '';
  return (ex, durationMs, aborted) => {
    const now = Date.now();
    if (now !== lastMs) {
      lastMs = now;
      lastTime = new Date(now).toISOString();
    }
    let line = `{"level":${level},"time":"${lastTime}",${bindings},"requestId":${jsonString(ex.requestId)},"method":${jsonString(ex.method)},"path":${jsonString(ex.path)}`;
    if (ex.route !== undefined) {
      line += `,"route":${jsonString(ex.route.key)}`;
      if (ex.upstream !== '') line += `,"upstream":${jsonString(ex.upstream)}`;
    } else if (ex.subject !== '') line += `,"subject":${jsonString(ex.subject)}`;
    line += `,"status":${aborted ? 499 : ex.status},"durationMs":${Math.round(durationMs * 100) / 100},"bytes":${ex.bytesOut}`;
    if (aborted) line += ',"aborted":true';
    if (ex.streamFailure !== undefined) line += `,"cutOff":${jsonString(ex.streamFailure)}`;
    sink.write(line + ',"msg":"request"}\n');
  };
}

/** The same fields as an object (the generic path, and what the template above must match). */
export function accessFields(ex: Exchange, durationMs: number, aborted: boolean): Record<string, unknown> {
  return {
    requestId: ex.requestId,
    method: ex.method,
    path: ex.path,
    ...(ex.route !== undefined ? { route: ex.route.key, upstream: ex.upstream || undefined } : { subject: ex.subject || undefined }),
    status: aborted ? 499 : ex.status,
    durationMs: Math.round(durationMs * 100) / 100,
    bytes: ex.bytesOut,
    ...(aborted ? { aborted: true } : {}),
    ...(ex.streamFailure !== undefined ? { cutOff: ex.streamFailure } : {}),
  };
}
