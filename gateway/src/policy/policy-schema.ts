/**
 * The `policy` of a routes-bucket entry: edge policies for a subject tree
 * (README "Policies"). Part of the one route schema (route-schema.ts), so the
 * CLI, the gateway and route.schema.json agree on every field.
 *
 * Blocks combine along the subject tree: each block comes whole from the
 * most specific key that sets it (`api` sets cors for everything, `api.admin`
 * adds auth and keeps the cors of `api`); a block is never merged field by
 * field.
 */
// The schema itself is in schema-source/policy.ts (TypeBox, build-time); the
// gateway checks policies against its JSON (route-schema.ts).
import type { PolicyConfig } from '../schema-source/policy.js';

export type { PolicyConfig, CorsConfig, RateLimitConfig, AuthConfig, JwtConfig, CompressionConfig, LimitsConfig } from '../schema-source/policy.js';

export const POLICY_BLOCKS = ['cors', 'rateLimit', 'auth', 'compression', 'limits'] as const;
export type PolicyBlock = (typeof POLICY_BLOCKS)[number];

/** Checks what the schema cannot say; returns the reason a policy is rejected, or undefined. */
export function checkPolicy(p: PolicyConfig): string | undefined {
  if (Object.keys(p).length === 0) return 'policy: sets no block';
  const c = p.cors;
  if (c?.credentials === true) {
    if (c.origins.includes('*')) return 'policy.cors: origins * cannot be used with credentials (the Fetch standard refuses it)';
    if (c.methods?.includes('*') || c.allowHeaders?.includes('*')) return 'policy.cors: * in methods or allowHeaders means any only without credentials';
  }
  const a = p.auth;
  if (a !== undefined) {
    if (a.jwt === undefined && a.apiKeys === undefined) return 'policy.auth: needs jwt, apiKeys or both';
    const j = a.jwt;
    if (j !== undefined) {
      if ((j.keys === undefined) === (j.jwksUrl === undefined)) return 'policy.auth.jwt: give keys or jwksUrl (one of them)';
      const keys = j.keys ?? [];
      if (keys.some((k) => k.kty === 'oct') && !j.algorithms!.includes('HS256')) return 'policy.auth.jwt.keys: an oct key (a shared secret) needs HS256 in algorithms';
      if (keys.length > 1 && keys.some((k) => typeof (k as { kid?: unknown }).kid !== 'string')) return 'policy.auth.jwt.keys: with several keys each needs a kid';
    }
    if (a.apiKeys !== undefined) {
      const ids = new Set<string>();
      for (const k of a.apiKeys.keys) {
        if (ids.has(k.sha256)) return 'policy.auth.apiKeys: the same key hash appears twice';
        ids.add(k.sha256);
      }
    }
  }
  return undefined;
}

/** A copy of a policy for showing (admin API, `routes ls`): shared secrets (HS256 keys) redacted. */
export function redactPolicy(p: PolicyConfig): PolicyConfig {
  const keys = p.auth?.jwt?.keys;
  if (keys === undefined || !keys.some((k) => k.kty === 'oct')) return p;
  return { ...p, auth: { ...p.auth!, jwt: { ...p.auth!.jwt!, keys: keys.map((k) => (k.kty === 'oct' ? { ...k, k: '[redacted]' } : k)) } } };
}
