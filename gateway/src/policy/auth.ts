/**
 * The auth block: a bearer JWT (verified with jose) or an API key (stored
 * as its SHA-256). The verified identity travels to the service as the
 * envelope's `auth` field (PROTOCOL.md §15), to raw routes and HTTP
 * backends as the `Natsgw-Auth` header; the gateway drops any such header a
 * client sends, so only the gateway ever sets it.
 *
 * Tokens are verified once and then kept, with their identity, until they
 * expire (at most VERIFIED_KEEP_MS, at most VERIFIED_MAX of them): clients
 * send the same token for its whole life, and a signature check costs
 * tens of microseconds and a promise. A changed policy starts with none.
 */
import { createHash } from 'node:crypto';
import type { JWTPayload, JWTVerifyGetKey } from 'jose';
import type { AuthConfig, JwtConfig } from './policy-schema.js';

/** Who a request is, as the gateway verified it. */
export interface Identity {
  method: 'jwt' | 'api-key';
  sub: string;
  /** Claims for rateLimit's claim: keys (the JWT payload; for an API key, sub). */
  claims: Readonly<Record<string, unknown>>;
  /** The identity as sent on: JSON, ASCII only (a header value). */
  json: string;
}

/** Why a request is refused: 401 (no or bad credentials), 403 (valid but not enough), 503 (keys unreachable). */
export interface AuthRefusal {
  status: 401 | 403 | 503;
  detail: string;
  /** WWW-Authenticate values (one field each). */
  challenges: string[];
}

export type AuthOutcome = Identity | AuthRefusal;

export const isRefusal = (o: AuthOutcome): o is AuthRefusal => (o as AuthRefusal).status !== undefined;

const VERIFIED_MAX = 10_000;
const VERIFIED_KEEP_MS = 300_000;
/** Longer Authorization values are refused before any parsing. */
const MAX_TOKEN = 8192;

let jose: typeof import('jose') | undefined;
/** jose is loaded on the first policy that needs it (a gateway without JWT policies never pays for it). */
async function loadJose(): Promise<typeof import('jose')> {
  jose ??= await import('jose');
  return jose;
}

export class AuthPolicy {
  private readonly apiKeys: ReadonlyMap<string, Identity> | undefined;
  private readonly apiKeyHeader: string;
  private readonly jwt: JwtConfig | undefined;
  private keySet: JWTVerifyGetKey | undefined;
  private keySetLoading: Promise<JWTVerifyGetKey> | undefined;
  /** Verified Authorization values (the whole header), with their identity and how long it holds. */
  private readonly verified = new Map<string, { identity: Identity; until: number }>();
  /** API keys as sent that proved valid. */
  private readonly keysSeen = new Map<string, Identity>();
  private readonly realm: string;

  constructor(
    readonly config: AuthConfig,
    sourceKey: string,
  ) {
    this.realm = `realm="${sourceKey}"`;
    this.jwt = config.jwt;
    this.apiKeyHeader = config.apiKeys?.header.toLowerCase() ?? '';
    if (config.apiKeys !== undefined) {
      this.apiKeys = new Map(config.apiKeys.keys.map((k) => [k.sha256, identityOf('api-key', k.id, { sub: k.id })]));
    }
  }

  /** The header API keys come in (lower case), or '' without API keys. */
  get keyHeader(): string {
    return this.apiKeyHeader;
  }

  /**
   * Checks a request's credentials: its Authorization value and its API key
   * header value. Synchronous when it can be (an API key, a token seen
   * before, nothing to check); a promise when a signature must be verified.
   */
  check(authorization: string | undefined, apiKey: string | undefined, now: number): AuthOutcome | Promise<AuthOutcome> {
    if (apiKey !== undefined && this.apiKeys !== undefined) {
      // Valid keys are remembered as sent (at most one entry per configured key), so a client pays for one hash only.
      const known = this.keysSeen.get(apiKey);
      if (known !== undefined) return known;
      const id = this.apiKeys.get(createHash('sha256').update(apiKey).digest('hex'));
      if (id === undefined) return this.refuse(401, 'the API key is not valid', 'invalid_token');
      if (this.keysSeen.size < this.apiKeys.size) this.keysSeen.set(apiKey, id);
      return id;
    }
    if (authorization === undefined || this.jwt === undefined) return this.refuse(401, this.jwt === undefined ? `an API key is required (header ${this.apiKeyHeader})` : 'a bearer token is required');
    // Looked up by the header value as sent: no copy of the token per request.
    const seen = this.verified.get(authorization);
    if (seen !== undefined) {
      if (seen.until > now) return seen.identity;
      this.verified.delete(authorization);
    }
    if (authorization.length > MAX_TOKEN || !/^bearer /i.test(authorization)) return this.refuse(401, 'the Authorization header is not a bearer token', 'invalid_request');
    return this.verify(authorization, authorization.slice(7).trim(), now);
  }

  private async verify(authorization: string, token: string, now: number): Promise<AuthOutcome> {
    const j = this.jwt!;
    let payload: JWTPayload;
    try {
      const { jwtVerify } = await loadJose();
      const keys = this.keySet ?? (await this.loadKeys());
      ({ payload } = await jwtVerify(token, keys, { algorithms: j.algorithms, issuer: j.issuer, audience: j.audience, clockTolerance: j.clockSkewSec }));
    } catch (err) {
      const code = (err as { code?: string }).code ?? '';
      if (code === 'ERR_JWKS_TIMEOUT' || (err as Error).name === 'TypeError' || (code === 'ERR_JOSE_GENERIC' && /fetch/i.test((err as Error).message))) {
        return { status: 503, detail: 'the keys to verify the token could not be fetched', challenges: [] };
      }
      return this.refuse(401, tokenProblem(err), 'invalid_token');
    }
    const scopes = scopesOf(payload);
    const missing = j.requiredScopes!.filter((s) => !scopes.includes(s));
    if (missing.length > 0) return this.refuse(403, `the token lacks scope ${missing.join(' ')}`, 'insufficient_scope', j.requiredScopes!.join(' '));
    for (const [name, want] of Object.entries(j.requiredClaims!)) {
      if ((payload as Record<string, unknown>)[name] !== want) return this.refuse(403, `the token's ${name} claim does not have the required value`, 'insufficient_scope');
    }
    const identity = identityOf('jwt', typeof payload.sub === 'string' ? payload.sub : '', payload);
    const until = Math.min(now + VERIFIED_KEEP_MS, typeof payload.exp === 'number' ? payload.exp * 1000 + j.clockSkewSec! * 1000 : Number.POSITIVE_INFINITY);
    if (this.verified.size >= VERIFIED_MAX) this.verified.delete(this.verified.keys().next().value!);
    this.verified.set(authorization, { identity, until });
    return identity;
  }

  private loadKeys(): Promise<JWTVerifyGetKey> {
    this.keySetLoading ??= loadJose().then(async (j) => {
      const c = this.jwt!;
      if (c.keys === undefined) {
        this.keySet = j.createRemoteJWKSet(new URL(c.jwksUrl!), { cacheMaxAge: c.jwksCacheMs!, cooldownDuration: c.jwksCooldownMs!, timeoutDuration: 5000 }) as JWTVerifyGetKey;
        return this.keySet;
      }
      // jose's key sets take no shared secrets: HS256 keys are picked here, by kid.
      const asymmetric = c.keys.filter((k) => k.kty !== 'oct');
      const local = asymmetric.length > 0 ? (j.createLocalJWKSet({ keys: asymmetric as never }) as JWTVerifyGetKey) : undefined;
      const secrets = await Promise.all(c.keys.filter((k) => k.kty === 'oct').map(async (k) => ({ kid: (k as { kid?: string }).kid, key: await j.importJWK(k as never, 'HS256') })));
      this.keySet = ((header, token) => {
        if (header.alg === 'HS256') {
          const secret = secrets.find((k) => header.kid === undefined || k.kid === undefined || k.kid === header.kid);
          if (secret !== undefined) return secret.key;
        } else if (local !== undefined) return local(header, token);
        throw new j.errors.JWKSNoMatchingKey();
      }) as JWTVerifyGetKey;
      return this.keySet;
    });
    return this.keySetLoading;
  }

  private refuse(status: 401 | 403, detail: string, error?: string, scope?: string): AuthRefusal {
    const challenges: string[] = [];
    if (this.jwt !== undefined) {
      let c = `Bearer ${this.realm}`;
      if (error !== undefined) c += `, error="${error}", error_description="${detail.replace(/["\\]/g, "'")}"`;
      if (scope !== undefined) c += `, scope="${scope}"`;
      challenges.push(c);
    }
    if (this.apiKeys !== undefined && status === 401) challenges.push(`ApiKey ${this.realm}, header="${this.apiKeyHeader}"`);
    return { status, detail, challenges };
  }
}

function scopesOf(p: JWTPayload): string[] {
  const scope = (p as { scope?: unknown }).scope;
  const scp = (p as { scp?: unknown }).scp;
  if (typeof scope === 'string') return scope.split(' ').filter(Boolean);
  if (Array.isArray(scp)) return scp.filter((s): s is string => typeof s === 'string');
  if (typeof scp === 'string') return scp.split(' ').filter(Boolean);
  return [];
}

function identityOf(method: Identity['method'], sub: string, claims: Record<string, unknown>): Identity {
  // ASCII only, so the same text can be a header value.
  const json = JSON.stringify({ method, sub, claims }).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  return { method, sub, claims, json };
}

/** What a client is told about a token jose refused (never the key material). */
function tokenProblem(err: unknown): string {
  const e = err as { code?: string; claim?: string; reason?: string };
  switch (e.code) {
    case 'ERR_JWT_EXPIRED':
      return 'the token has expired';
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
      return e.claim === 'nbf' ? 'the token is not valid yet' : `the token's ${e.claim ?? 'claims'} claim is not accepted`;
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED':
      return 'the token signature does not verify';
    case 'ERR_JOSE_ALG_NOT_ALLOWED':
      return 'the token is signed with an algorithm this route does not accept';
    case 'ERR_JWKS_NO_MATCHING_KEY':
    case 'ERR_JWKS_MULTIPLE_MATCHING_KEYS':
      return 'no key of this route matches the token';
    default:
      return 'the token is not a valid JWT';
  }
}
