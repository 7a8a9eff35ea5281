/**
 * The admin token check, shared by the HTTP and NATS admin endpoints:
 * `Authorization: Bearer <token>`, compared in constant time (SHA-256 of
 * both sides, so not even the length leaks).
 */
import { createHash, timingSafeEqual } from 'node:crypto';

export class AdminToken {
  private readonly digest: Buffer | undefined;

  constructor(token: string | undefined) {
    this.digest = token === undefined || token === '' ? undefined : createHash('sha256').update(token).digest();
  }

  get required(): boolean {
    return this.digest !== undefined;
  }

  /** True when no token is configured, or `authorization` carries the right one. */
  allows(authorization: string | undefined): boolean {
    if (this.digest === undefined) return true;
    const m = /^Bearer\s+(.+)$/i.exec(authorization ?? '');
    if (!m) return false;
    return timingSafeEqual(createHash('sha256').update(m[1]!).digest(), this.digest);
  }
}
