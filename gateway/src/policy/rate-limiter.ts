/**
 * The rateLimit block: token buckets (rate, burst) by key, kept in an LRU
 * of at most maxKeys buckets, so a flood of distinct clients costs bounded
 * memory (a key pushed out comes back with a full bucket: the limit gets
 * more lenient under such a flood, never stricter for anyone).
 *
 * In fleet mode every gateway keeps its own replica of each bucket and
 * tells the others, every FLEET_SYNC_MS, what it took (fleet-limits.ts);
 * what others took is taken here too, so a bucket may go below zero and
 * refills before it admits again. Over time the fleet admits the rate; in a
 * burst, before they hear each other, N gateways may admit up to
 * (N − 1) × (burst + rate × sync interval) more than one would.
 */
import type { RateLimitConfig } from './policy-schema.js';

const PER_MS = { second: 1000, minute: 60_000, hour: 3_600_000 } as const;
/** Longest key kept (a longer header value is cut: its bucket is shared with those of the same first bytes). */
export const MAX_LIMIT_KEY = 256;

interface Bucket {
  tokens: number;
  at: number;
}

export interface Verdict {
  allowed: boolean;
  /** Whole tokens left after this request. */
  remaining: number;
  /** Seconds until the bucket is full again. */
  resetSec: number;
  /** On a refusal: seconds until one token is there. */
  retryAfterSec: number;
}

export class RateLimiter {
  /** Tokens per ms. */
  readonly rate: number;
  readonly burst: number;
  readonly by: 'client' | 'route' | 'header' | 'claim';
  /** Header name (lower case) or claim name for header: and claim: keys. */
  readonly keyName: string;
  readonly fleet: boolean;
  /** The RateLimit-Policy field value, the same on every response. */
  readonly policyHeader: string;
  private readonly name: string;
  private readonly buckets = new Map<string, Bucket>();
  /** Fleet mode: what this gateway took since the last sync, by key. */
  taken = new Map<string, number>();
  private readonly verdict: Verdict = { allowed: true, remaining: 0, resetSec: 0, retryAfterSec: 0 };

  constructor(
    readonly config: RateLimitConfig,
    /** The entry that set the block: names the policy and its fleet subject. */
    readonly sourceKey: string,
    /** Fleet mode: where this limiter says it took tokens since the last report (its table's; fleet-limits.ts). */
    private readonly dirty?: Set<RateLimiter>,
  ) {
    this.rate = config.rate / PER_MS[config.per];
    this.burst = config.burst;
    const colon = config.key.indexOf(':');
    this.by = (colon === -1 ? config.key : config.key.slice(0, colon)) as RateLimiter['by'];
    this.keyName = colon === -1 ? '' : config.key.slice(colon + 1);
    if (this.by === 'header') this.keyName = this.keyName.toLowerCase();
    this.fleet = config.mode === 'fleet';
    this.name = `"${sourceKey}"`;
    // draft-ietf-httpapi-ratelimit-headers: quota q over window w seconds; a full bucket refills in burst / rate.
    this.policyHeader = `${this.name};q=${this.burst};w=${Math.max(1, Math.ceil(this.burst / this.rate / 1000))}`;
  }

  /** Buckets held now. */
  get size(): number {
    return this.buckets.size;
  }

  /** Takes a token for `key` at `now` (ms); the verdict object is reused by the next call. */
  take(key: string, now: number): Verdict {
    const b = this.bucket(key, now);
    const v = this.verdict;
    if (b.tokens >= 1) {
      b.tokens -= 1;
      v.allowed = true;
      v.retryAfterSec = 0;
      if (this.fleet) {
        this.taken.set(key, (this.taken.get(key) ?? 0) + 1);
        this.dirty?.add(this);
      }
    } else {
      v.allowed = false;
      v.retryAfterSec = Math.max(1, Math.ceil((1 - b.tokens) / this.rate / 1000));
    }
    v.remaining = Math.max(0, Math.floor(b.tokens));
    v.resetSec = Math.ceil((this.burst - b.tokens) / this.rate / 1000);
    return v;
  }

  /** The RateLimit field value for a verdict. */
  header(v: Verdict): string {
    return `${this.name};r=${v.remaining};t=${v.resetSec}`;
  }

  /** Fleet mode: another gateway took `n` tokens for `key`. */
  takenElsewhere(key: string, n: number, now: number): void {
    const b = this.bucket(key, now);
    // Debt is bounded: a bucket never owes more than one burst beyond empty.
    b.tokens = Math.max(-this.burst, b.tokens - n);
  }

  /** Fleet mode: what was taken since the last call, emptied. */
  drainTaken(): Map<string, number> | undefined {
    if (this.taken.size === 0) return undefined;
    const t = this.taken;
    this.taken = new Map();
    return t;
  }

  private bucket(key: string, now: number): Bucket {
    const buckets = this.buckets;
    let b = buckets.get(key);
    if (b === undefined) {
      if (buckets.size >= this.config.maxKeys) buckets.delete(buckets.keys().next().value!);
      b = { tokens: this.burst, at: now };
    } else {
      // Moved to the end: the Map's order is the LRU order.
      buckets.delete(key);
      const refill = (now - b.at) * this.rate;
      if (refill > 0) {
        b.tokens = Math.min(this.burst, b.tokens + refill);
        b.at = now;
      }
    }
    buckets.set(key, b);
    return b;
  }
}
