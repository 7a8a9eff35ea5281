/**
 * The access log: one JSON line per finished request, in the same shape and
 * to the same destination as the gateway's pino lines
 * (`{"level":30,"time":…,"app":"natsgw","kind":"access",…,"msg":"request"}`).
 *
 * Why not `logger.info({...})`: that call costs an object per line, pino's
 * generic serialiser walking it, an ISO timestamp formatted per line, and
 * strings concatenated and converted to bytes again on the way out. Here
 * the line's bytes are written straight into the LogBatcher's buffer
 * (log-batcher.ts): constant parts copied, the timestamp reused while the
 * millisecond does not change, a string checked as it is copied and passed
 * through JSON.stringify only when it holds a character JSON must escape or
 * one outside printable ASCII. The
 * 16 MiB cap on a slow stdout (log.ts) holds for these lines too.
 */
import { pino, type Logger } from 'pino';
import type { Exchange } from '../front/exchange.js';
import { LogBatcher } from '../log-batcher.js';

/** Copies an ASCII string; returns the end. */
function ascii(buf: Buffer, p: number, s: string): number {
  for (let i = 0; i < s.length; i++) buf[p++] = s.charCodeAt(i);
  return p;
}

/**
 * Writes `s` as a JSON string; returns the end. Printable ASCII other than
 * " and \\ is copied as it is checked (one pass); a string with anything else
 * is written as JSON.stringify writes it.
 */
function jsonString(buf: Buffer, p: number, s: string): number {
  buf[p] = 0x22;
  let q = p + 1;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c > 0x7e || c === 0x22 || c === 0x5c) return p + buf.write(JSON.stringify(s), p, 'utf8');
    buf[q++] = c;
  }
  buf[q++] = 0x22;
  return q;
}

/** Writes a non-negative safe integer in decimal; returns the end. */
function digits(buf: Buffer, p: number, n: number): number {
  let length = 1;
  for (let x = n; x >= 10; x = Math.floor(x / 10)) length++;
  let q = p + length;
  do {
    buf[--q] = 0x30 + (n % 10);
    n = Math.floor(n / 10);
  } while (n > 0);
  return p + length;
}

/**
 * Returns the function that logs a finished request, or undefined when the
 * logger would drop info lines anyway.
 * @example const access = createAccessLog(log); access?.(ex, 1.25, false);
 */
export function createAccessLog(log: Logger): ((ex: Exchange, durationMs: number, aborted: boolean) => void) | undefined {
  if (!log.isLevelEnabled('info')) return undefined;
  const child = log.child({ kind: 'access' });
  const generic = (ex: Exchange, durationMs: number, aborted: boolean) => child.info(accessFields(ex, durationMs, aborted), 'request');
  const batcher = (log as unknown as Record<symbol, unknown>)[pino.symbols.streamSym];
  // Not the gateway's batched destination (pretty output, a test's stream): the generic path.
  if (!(batcher instanceof LogBatcher)) return generic;
  // The line pino would write for `log.child({ kind: 'access' }).info(...)`, bindings included.
  const head = `{"level":${log.levels.values.info},"time":"`;
  const bindings = `",${JSON.stringify({ ...log.bindings(), kind: 'access' }).slice(1, -1)},"requestId":`;
  let lastMs = -1;
  let lastTime = '';
  return (ex, durationMs, aborted) => {
    const route = ex.route?.key;
    const failure = ex.streamFailure;
    // JSON escapes take at most 6 bytes per UTF-16 unit.
    const max = 560 + 6 * (ex.requestId.length + ex.method.length + ex.path.length + ex.subject.length + (route?.length ?? 0) + ex.upstream.length + (failure?.length ?? 0));
    batcher.reserve(max);
    const buf = batcher.buffer;
    if (buf.length - batcher.pos < max) return generic(ex, durationMs, aborted); // larger than a batch
    const now = Date.now();
    if (now !== lastMs) {
      lastMs = now;
      lastTime = new Date(now).toISOString();
    }
    let p = ascii(buf, batcher.pos, head);
    p = ascii(buf, p, lastTime);
    p = ascii(buf, p, bindings);
    p = jsonString(buf, p, ex.requestId);
    if (ex.traceId !== '') {
      // 32 hex digits, checked or made by trace-start.ts.
      p = ascii(buf, p, ',"traceId":"');
      p = ascii(buf, p, ex.traceId);
      buf[p++] = 0x22;
    }
    p = ascii(buf, p, ',"method":');
    p = jsonString(buf, p, ex.method);
    p = ascii(buf, p, ',"path":');
    p = jsonString(buf, p, ex.path);
    if (route !== undefined) {
      p = ascii(buf, p, ',"route":');
      p = jsonString(buf, p, route);
      if (ex.upstream !== '') {
        p = ascii(buf, p, ',"upstream":');
        p = jsonString(buf, p, ex.upstream);
      }
    } else if (ex.subject !== '') {
      p = ascii(buf, p, ',"subject":');
      p = jsonString(buf, p, ex.subject);
    }
    p = ascii(buf, p, ',"status":');
    p = digits(buf, p, aborted ? 499 : ex.status);
    p = ascii(buf, p, ',"durationMs":');
    p = ascii(buf, p, String(Math.round(durationMs * 100) / 100));
    p = ascii(buf, p, ',"bytes":');
    p = digits(buf, p, ex.bytesOut);
    if (aborted) p = ascii(buf, p, ',"aborted":true');
    if (failure !== undefined) {
      p = ascii(buf, p, ',"cutOff":');
      p = jsonString(buf, p, failure);
    }
    p = ascii(buf, p, ',"msg":"request"}\n');
    batcher.commit(p);
  };
}

/** The same fields as an object (the generic path, and what the template above must match). */
export function accessFields(ex: Exchange, durationMs: number, aborted: boolean): Record<string, unknown> {
  return {
    requestId: ex.requestId,
    ...(ex.traceId !== '' ? { traceId: ex.traceId } : {}),
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
