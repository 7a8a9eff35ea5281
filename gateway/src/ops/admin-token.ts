/**
 * The admin token, shared by the HTTP and NATS admin endpoints.
 *
 * HTTP: `Authorization: Bearer <token>`, compared in constant time (SHA-256
 * of both sides, so not even the length leaks), parsed by hand in one pass
 * (a regular expression like /^Bearer\s+(.+)$/ takes quadratic time on
 * "Bearer" + spaces + U+2028: 2 s for 40 KB here).
 *
 * NATS: admin requests are broadcast to every gateway, so whoever may
 * subscribe to `natsgw.admin.>` would read a bearer token sent with them.
 * Requests are signed instead (`Natsgw-Admin-Auth` header):
 *
 *   NATSGW-HMAC-SHA256 ts=<unix ms>,nonce=<32 hex>,sig=<64 hex>
 *   sig = hex(HMAC-SHA256(token, "natsgw-admin-v1\n" + subject + "\n" + reply + "\n" + ts + "\n" + nonce))
 *
 * A reader of the subject learns no token and cannot reuse a signature:
 * it covers the reply subject (a replay with another reply fails the check;
 * one with the same reply answers the original requester), the subject (so
 * the verb and, for one gateway, its id), and a timestamp valid for
 * {@link SIGNATURE_WINDOW_MS} either way; each nonce is accepted once.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/** How far a signed request's timestamp may be from the gateway's clock. */
export const SIGNATURE_WINDOW_MS = 30_000;
/** The NATS header carrying a signed admin request's credentials. */
export const ADMIN_AUTH_HEADER = 'Natsgw-Admin-Auth';
const SCHEME = 'NATSGW-HMAC-SHA256';
/** Nonces remembered (each for the signature window); beyond it, signed requests are refused until some expire. */
const MAX_NONCES = 100_000;

function isSpace(c: number): boolean {
  return c === 0x20 || c === 0x09;
}

/**
 * The token of an `Authorization: Bearer <token>` value (RFC 6750 §2.1:
 * the scheme is case-insensitive, one or more spaces, then the token;
 * trailing white space is ignored), or undefined. Linear in the input.
 * @example bearerToken('Bearer abc') // 'abc'
 */
export function bearerToken(authorization: string | undefined): string | undefined {
  if (authorization === undefined || authorization.length < 8) return undefined;
  if (authorization.slice(0, 6).toLowerCase() !== 'bearer' || !isSpace(authorization.charCodeAt(6))) return undefined;
  let start = 7;
  while (start < authorization.length && isSpace(authorization.charCodeAt(start))) start++;
  let end = authorization.length;
  while (end > start && isSpace(authorization.charCodeAt(end - 1))) end--;
  return end > start ? authorization.slice(start, end) : undefined;
}

function signature(token: string, subject: string, reply: string, ts: string, nonce: string): string {
  return createHmac('sha256', token).update(`natsgw-admin-v1\n${subject}\n${reply}\n${ts}\n${nonce}`).digest('hex');
}

/**
 * The value of the {@link ADMIN_AUTH_HEADER} for a request on `subject`
 * whose answers go to `reply` (the CLI's side).
 * @example headers.set(ADMIN_AUTH_HEADER, signAdminRequest(token, 'natsgw.admin.status', inbox));
 */
export function signAdminRequest(token: string, subject: string, reply: string, now = Date.now()): string {
  const ts = String(now);
  const nonce = randomBytes(16).toString('hex');
  return `${SCHEME} ts=${ts},nonce=${nonce},sig=${signature(token, subject, reply, ts, nonce)}`;
}

/** Parses `ts=…,nonce=…,sig=…` after the scheme; undefined unless exactly well formed. */
function parseSigned(value: string): { ts: string; nonce: string; sig: string } | undefined {
  if (value.length > 200 || !value.startsWith(SCHEME + ' ')) return undefined;
  const fields: Record<string, string> = {};
  for (const part of value.slice(SCHEME.length + 1).split(',')) {
    const eq = part.indexOf('=');
    if (eq < 0) return undefined;
    fields[part.slice(0, eq).trim()] = part.slice(eq + 1).trim();
  }
  const { ts, nonce, sig } = fields;
  if (ts === undefined || nonce === undefined || sig === undefined) return undefined;
  if (!/^\d{1,16}$/.test(ts) || !/^[0-9a-f]{32}$/.test(nonce) || !/^[0-9a-f]{64}$/.test(sig)) return undefined;
  return { ts, nonce, sig };
}

export class AdminToken {
  private readonly token: string | undefined;
  private readonly digest: Buffer | undefined;
  /** nonce → when it may be forgotten. */
  private readonly nonces = new Map<string, number>();

  constructor(token: string | undefined) {
    this.token = token === undefined || token === '' ? undefined : token;
    this.digest = this.token === undefined ? undefined : createHash('sha256').update(this.token).digest();
  }

  get required(): boolean {
    return this.digest !== undefined;
  }

  /** HTTP: true when no token is configured, or `authorization` is `Bearer <the token>`. */
  allows(authorization: string | undefined): boolean {
    if (this.digest === undefined) return true;
    const presented = bearerToken(authorization);
    if (presented === undefined) return false;
    return timingSafeEqual(createHash('sha256').update(presented).digest(), this.digest);
  }

  /**
   * NATS: true when no token is configured, or `auth` (the
   * {@link ADMIN_AUTH_HEADER} value) signs this subject and reply with the
   * token, within the window, with a nonce not seen before.
   */
  allowsSigned(auth: string | undefined, subject: string, reply: string, now = Date.now()): boolean {
    if (this.token === undefined) return true;
    const p = auth === undefined ? undefined : parseSigned(auth);
    if (p === undefined) return false;
    if (Math.abs(now - Number(p.ts)) > SIGNATURE_WINDOW_MS) return false;
    const expected = Buffer.from(signature(this.token, subject, reply, p.ts, p.nonce), 'hex');
    if (!timingSafeEqual(expected, Buffer.from(p.sig, 'hex'))) return false;
    this.forgetExpired(now);
    if (this.nonces.has(p.nonce) || this.nonces.size >= MAX_NONCES) return false;
    this.nonces.set(p.nonce, now + 2 * SIGNATURE_WINDOW_MS);
    return true;
  }

  private forgetExpired(now: number): void {
    // Insertion order is expiry order: stop at the first one still needed.
    for (const [nonce, until] of this.nonces) {
      if (until > now) return;
      this.nonces.delete(nonce);
    }
  }
}
