/**
 * Policies as the gateway applies them: each entry's blocks compiled once
 * per version (CompiledPolicy), and a path's effective policy (each block
 * from the most specific key that sets it) made once per table change and
 * shared by every request on that path. A request keeps the effective
 * policy it started with, so a change never alters a request in flight.
 */
import { AuthPolicy } from './auth.js';
import { CompressionPolicy } from './compression.js';
import { CorsPolicy } from './cors.js';
import { POLICY_BLOCKS, type LimitsConfig, type PolicyBlock, type PolicyConfig } from './policy-schema.js';
import { RateLimiter } from './rate-limiter.js';

export interface LimitsPolicy {
  readonly timeoutMs?: number;
  readonly maxRequestBodyBytes?: number;
  readonly methods?: ReadonlySet<string>;
  /** The Allow field of a 405. */
  readonly allow: string;
}

/** The blocks one entry sets, compiled. */
export interface CompiledPolicy {
  readonly cors?: CorsPolicy;
  readonly rateLimit?: RateLimiter;
  readonly auth?: AuthPolicy;
  readonly compression?: CompressionPolicy;
  readonly limits?: LimitsPolicy;
  /** Each block's JSON text, to keep a block's state (buckets, verified tokens, fetched keys) across versions that leave it alone. */
  readonly texts: Readonly<Partial<Record<PolicyBlock, string>>>;
}

/** A path's policy: each block, and the key it comes from. */
export interface EffectivePolicy {
  readonly cors?: CorsPolicy;
  readonly rateLimit?: RateLimiter;
  readonly auth?: AuthPolicy;
  readonly compression?: CompressionPolicy;
  readonly limits?: LimitsPolicy;
  readonly sources: Readonly<Partial<Record<PolicyBlock, string>>>;
}

/**
 * Compiles an entry's policy. Blocks whose text equals the previous
 * version's keep their compiled object: a rate limit keeps its buckets when
 * only the cors block changed; a changed block starts afresh.
 */
export function compilePolicy(config: PolicyConfig, key: string, previous: CompiledPolicy | undefined, fleetDirty?: Set<RateLimiter>): CompiledPolicy {
  const texts: Partial<Record<PolicyBlock, string>> = {};
  const out: { -readonly [K in keyof CompiledPolicy]: CompiledPolicy[K] } = { texts };
  for (const block of POLICY_BLOCKS) {
    const c = config[block];
    if (c === undefined) continue;
    const text = JSON.stringify(c);
    texts[block] = text;
    if (previous?.texts[block] === text && previous[block] !== undefined) {
      (out as Record<string, unknown>)[block] = previous[block];
      continue;
    }
    switch (block) {
      case 'cors':
        out.cors = new CorsPolicy(config.cors as never);
        break;
      case 'rateLimit':
        out.rateLimit = new RateLimiter(config.rateLimit as never, key, fleetDirty);
        break;
      case 'auth':
        out.auth = new AuthPolicy(config.auth!, key);
        break;
      case 'compression':
        out.compression = new CompressionPolicy(config.compression as never);
        break;
      case 'limits':
        out.limits = limitsOf(config.limits!);
        break;
    }
  }
  return out;
}

function limitsOf(l: LimitsConfig): LimitsPolicy {
  const methods = l.methods === undefined ? undefined : new Set(l.methods);
  return { timeoutMs: l.timeoutMs, maxRequestBodyBytes: l.maxRequestBodyBytes, methods, allow: l.methods?.join(', ') ?? '' };
}

/**
 * Combines the policies of a path's keys, most specific first: each block
 * from the first that sets it. Undefined when none sets any.
 */
export function combinePolicies(chain: readonly { key: string; policy: CompiledPolicy | undefined }[]): EffectivePolicy | undefined {
  let out: { -readonly [K in keyof EffectivePolicy]: EffectivePolicy[K] } | undefined;
  for (const { key, policy } of chain) {
    if (policy === undefined) continue;
    for (const block of POLICY_BLOCKS) {
      const b = policy[block];
      if (b === undefined) continue;
      out ??= { sources: {} };
      if (out[block] !== undefined) continue;
      (out as Record<string, unknown>)[block] = b;
      (out.sources as Record<string, string>)[block] = key;
    }
  }
  return out;
}
