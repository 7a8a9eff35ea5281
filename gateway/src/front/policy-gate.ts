/**
 * Applies a path's policies to a request before it goes anywhere, in this
 * order: a CORS preflight is answered (browsers send it without
 * credentials); the limits' methods (405); the rate limit unless it counts
 * by claim (429, before any token is checked, so a flood of bad tokens is
 * limited too); auth (401/403; a token not seen before is verified
 * asynchronously while the body arrives); a rate limit by claim. What the
 * policies add to the response (CORS, RateLimit fields) lands in
 * ex.extraHeaders, written by whatever answers.
 */
import type { HttpResponse } from 'uWebSockets.js';
import type { FailureCode } from '../errors.js';
import { isRefusal, type AuthOutcome, type Identity } from '../policy/auth.js';
import type { EffectivePolicy } from '../policy/route-policy.js';
import { MAX_LIMIT_KEY, type RateLimiter } from '../policy/rate-limiter.js';
import type { Exchange } from './exchange.js';
import type { ForwardingPolicy } from './forwarding.js';
import { removeHeaders } from './respond.js';

export interface GateResponder {
  /** Answers with a problem from inside the route handler. */
  fail(ex: Exchange, code: FailureCode, detail: string, close: boolean): void;
  /** Answers with a problem from any other callback. */
  failCorked(ex: Exchange, code: FailureCode, detail: string, close: boolean, status?: number): void;
  /** The exchange is answered. */
  finish(ex: Exchange): void;
}

/** The value of request header `name` (lower case), the first if repeated. */
export function headerOf(ex: Exchange, name: string): string | undefined {
  const h = ex.headers;
  for (let i = 0; i < h.length; i += 2) if (h[i] === name) return h[i + 1];
  return undefined;
}

export class PolicyGate {
  constructor(
    private readonly responder: GateResponder,
    private readonly forwarding: ForwardingPolicy,
  ) {}

  /**
   * Runs the synchronous part of the policies. Returns true when the request
   * was answered (preflight, refusal); else it goes on, with ex.authPending
   * set while a token is verified.
   */
  admit(ex: Exchange, p: EffectivePolicy, hasBody: boolean, now: number): boolean {
    ex.policy = p;
    const cors = p.cors;
    if (cors !== undefined) {
      const origin = headerOf(ex, 'origin');
      const asked = origin === undefined || ex.method !== 'OPTIONS' ? undefined : headerOf(ex, 'access-control-request-method');
      if (asked !== undefined) return this.preflight(ex, origin!, asked, hasBody);
      ex.extraHeaders = cors.responseHeaders(origin);
      // Browsers do not apply CORS to WebSockets: a page from a foreign origin could open one with the user's cookies.
      if (ex.upgrade !== undefined && origin !== undefined && !cors.allows(origin)) {
        this.responder.fail(ex, 'cors-refused', `origin ${JSON.stringify(origin.slice(0, 100))} may not open a WebSocket here`, true);
        return true;
      }
    }
    const limits = p.limits;
    if (limits?.methods !== undefined && !limits.methods.has(ex.method)) {
      (ex.extraHeaders ??= []).push('allow', limits.allow);
      this.responder.fail(ex, 'method-not-allowed', `${ex.method.slice(0, 32)} is not allowed here (allowed: ${limits.allow})`, hasBody);
      return true;
    }
    const rl = p.rateLimit;
    if (rl !== undefined && rl.by !== 'claim' && !this.withinLimit(ex, rl, this.limitKey(ex, rl), now, hasBody, false)) return true;
    if (p.auth !== undefined) {
      const outcome = p.auth.check(headerOf(ex, 'authorization'), p.auth.keyHeader === '' ? undefined : headerOf(ex, p.auth.keyHeader), now);
      if (outcome instanceof Promise) {
        ex.authPending = outcome;
        return false;
      }
      return !this.authorized(ex, outcome, hasBody, false, now);
    }
    if (rl?.by === 'claim') return !this.withinLimit(ex, rl, '', now, hasBody, false);
    if (p.compression !== undefined) negotiate(ex, p);
    return false;
  }

  /**
   * Applies an auth outcome (and then a rate limit by claim). Returns false
   * when the request was refused. `corked`: called outside uWS's handler.
   */
  authorized(ex: Exchange, outcome: AuthOutcome, hasBody: boolean, corked: boolean, now: number): boolean {
    if (isRefusal(outcome)) {
      if (outcome.challenges.length > 0) {
        const extra = (ex.extraHeaders ??= []);
        for (const c of outcome.challenges) extra.push('www-authenticate', c);
      }
      const code: FailureCode = outcome.status === 401 ? 'unauthorized' : outcome.status === 403 ? 'forbidden' : 'auth-unavailable';
      if (corked) this.responder.failCorked(ex, code, outcome.detail, hasBody);
      else this.responder.fail(ex, code, outcome.detail, hasBody);
      return false;
    }
    ex.identity = outcome;
    const p = ex.policy!;
    // The service gets the identity; the secret stays here unless the route says otherwise.
    if (p.auth!.config.forwardCredentials !== true) {
      const credential = outcome.method === 'jwt' ? 'authorization' : p.auth!.keyHeader;
      removeHeaders(ex.headers, (name) => name === credential);
    }
    const rl = p.rateLimit;
    if (rl?.by === 'claim' && !this.withinLimit(ex, rl, claimKey(outcome, rl.keyName), now, hasBody, corked)) return false;
    if (p.compression !== undefined) negotiate(ex, p);
    return true;
  }

  private preflight(ex: Exchange, origin: string, method: string, hasBody: boolean): boolean {
    const answer = ex.policy!.cors!.preflight(origin, method, headerOf(ex, 'access-control-request-headers'));
    ex.extraHeaders = answer.headers;
    if (!answer.ok) {
      this.responder.fail(ex, 'cors-refused', `CORS preflight refused: ${answer.reason}`, hasBody);
      return true;
    }
    const res: HttpResponse = ex.res;
    if (!ex.aborted) {
      res.writeStatus('204 No Content');
      const h = answer.headers;
      for (let i = 0; i < h.length; i += 2) res.writeHeader(h[i]!, h[i + 1]!);
      res.writeHeader('x-request-id', ex.requestId);
      // (endWithoutBody takes no close flag safely; see endHead in respond.ts.)
      if (hasBody) res.writeHeader('connection', 'close');
      res.endWithoutBody();
    }
    ex.status = 204;
    this.responder.finish(ex);
    return true;
  }

  private limitKey(ex: Exchange, rl: RateLimiter): string {
    switch (rl.by) {
      case 'client':
        return this.forwarding.clientAddress(ex, ex.clientAddress());
      case 'header': {
        const v = headerOf(ex, rl.keyName) ?? '';
        return v.length > MAX_LIMIT_KEY ? v.slice(0, MAX_LIMIT_KEY) : v;
      }
      default:
        return '';
    }
  }

  private withinLimit(ex: Exchange, rl: RateLimiter, key: string, now: number, hasBody: boolean, corked: boolean): boolean {
    const v = rl.take(key, now);
    const extra = (ex.extraHeaders ??= []);
    extra.push('ratelimit-policy', rl.policyHeader, 'ratelimit', rl.header(v));
    if (v.allowed) return true;
    extra.push('retry-after', String(v.retryAfterSec));
    const detail = `over the rate limit of ${rl.config.rate} per ${rl.config.per} (burst ${rl.burst}); retry in ${v.retryAfterSec} s`;
    if (corked) this.responder.failCorked(ex, 'rate-limited', detail, hasBody);
    else this.responder.fail(ex, 'rate-limited', detail, hasBody);
    return false;
  }
}

/** A claim's value as a bucket key: strings and numbers as they are; anything else (or none) shares the '' bucket. */
function claimKey(id: Identity, name: string): string {
  const v = id.claims[name];
  const s = typeof v === 'string' ? v : typeof v === 'number' ? String(v) : '';
  return s.length > MAX_LIMIT_KEY ? s.slice(0, MAX_LIMIT_KEY) : s;
}

function negotiate(ex: Exchange, p: EffectivePolicy): void {
  ex.acceptEncoding = headerOf(ex, 'accept-encoding');
  ex.encoding = p.compression!.negotiate(ex.acceptEncoding);
}
