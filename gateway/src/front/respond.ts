/**
 * Writing responses with uWS: status lines, problem bodies, and the
 * workarounds it needs for bodyless responses.
 */
import { STATUS_CODES } from 'node:http';
import type { HttpResponse } from 'uWebSockets.js';
import { PROBLEM_CONTENT_TYPE, problemJson } from '@natsgw/service-sdk/protocol';
import { FAILURES, type FailureCode } from '../errors.js';
import type { Exchange } from './exchange.js';
import { writeExtraHeaders } from '../policy/response-policy.js';

export const STATUS_LINES: readonly string[] = Array.from({ length: 600 }, (_, s) => `${s} ${STATUS_CODES[s] ?? ''}`);

/** Response headers that never pass from a backend to the client: hop-by-hop (RFC 9110 §7.6.1) and those uWS writes itself (Date, Content-Length) or we write (x-request-id). */
export const RESPONSE_HEADER_SKIP: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'content-length',
  'date',
  'x-request-id',
]);

export const CONTENT_LENGTH_RE = /^\d{1,15}$/;

/** The header names a Connection header lists (RFC 9110 §7.6.1: they are hop-by-hop too). */
export function connectionNamed(value: string): Set<string> {
  return new Set(
    value
      .split(',')
      .map((t) => t.trim().toLowerCase())
      .filter(Boolean),
  );
}

/** Removes every field whose (lower-case) name `drop` picks from a flattened header list, in place. */
export function removeHeaders(headers: string[], drop: (name: string) => boolean): void {
  for (let i = headers.length - 2; i >= 0; i -= 2) if (drop(headers[i]!)) headers.splice(i, 2);
}

/**
 * Ends a HEAD response, announcing `length` when known (≥ 0). In uWS v20.30,
 * endWithoutBody(n) with n > 0 leaves the response pending (the connection is
 * then lost), endWithoutBody(0) writes its own Content-Length, and any
 * non-number writes a bogus one; only the argument-less form is safe, and it
 * behaves the same on v20.51 (the HEAD tests in http-front.test.ts). Without
 * its close flag, `close` becomes a Connection: close header the client honours.
 */
export function endHead(res: HttpResponse, length: number, close: boolean): void {
  if (length >= 0) res.writeHeader('content-length', String(length));
  if (close) res.writeHeader('connection', 'close');
  res.endWithoutBody();
}

/** Writes a problem response for `code` (the caller corks when outside a uWS callback). */
export function writeProblem(ex: Exchange, code: FailureCode, detail: string, close: boolean, status: number = FAILURES[code]): void {
  const body = problemJson({ status, code, detail, subject: ex.subject || undefined, requestId: ex.requestId || undefined });
  const res = ex.res;
  ex.status = status;
  ex.failure = code;
  ex.bytesOut = ex.method === 'HEAD' ? 0 : Buffer.byteLength(body);
  res.writeStatus(STATUS_LINES[status]!);
  res.writeHeader('content-type', PROBLEM_CONTENT_TYPE);
  if (ex.requestId) res.writeHeader('x-request-id', ex.requestId);
  writeExtraHeaders(res, ex);
  if (ex.method === 'HEAD') endHead(res, Buffer.byteLength(body), close);
  else res.end(body, close);
}
