/**
 * RFC 9457 problem details: the short JSON body every error response carries,
 * from the gateway and from services alike.
 */
import { STATUS_CODES } from 'node:http';

export const PROBLEM_CONTENT_TYPE = 'application/problem+json';

export interface Problem {
  /** HTTP status code. */
  status: number;
  /** Stable machine-readable code, e.g. `no-responders`. */
  code: string;
  /** One sentence saying what went wrong, naming the subject or upstream. */
  detail: string;
  /** The NATS subject the request was for, when there is one. */
  subject?: string;
  /** The request id, also sent as `x-request-id`. */
  requestId?: string;
}

/**
 * Serialises a problem as RFC 9457 JSON (type `about:blank`, so `title` is
 * the status phrase), with `code`, `subject` and `requestId` as extensions.
 * @example problemJson({ status: 504, code: 'timeout', detail: 'no reply from api.foo within 30000 ms' })
 */
export function problemJson(p: Problem): string {
  return JSON.stringify({
    type: 'about:blank',
    title: STATUS_CODES[p.status] ?? 'Error',
    status: p.status,
    code: p.code,
    detail: p.detail,
    ...(p.subject !== undefined ? { subject: p.subject } : {}),
    ...(p.requestId !== undefined ? { requestId: p.requestId } : {}),
  });
}
