/**
 * The TypeBox source of a route entry's `policy` (README "Policies"): the
 * types the gateway is written against, and the JSON Schema written into
 * gateway/schema/route.schema.json (`npm run schema`). Build-time only: the
 * gateway validates with the JSON file, so it never loads TypeBox (its 200
 * modules cost ≈ 3.5 MiB of RSS at start).
 */
import { Type, type Static } from '@sinclair/typebox';

const TOKEN = "^[!#$%&'*+\\-.^_`|~0-9A-Za-z]+$";
/** An origin (scheme://host[:port]) or a pattern whose host starts with `*.`; `*` alone is any origin. */
export const ORIGIN_PATTERN = '^(\\*|https?://(\\*\\.)?[A-Za-z0-9.-]+(:[0-9]{1,5})?)$';

const Cors = Type.Object(
  {
    origins: Type.Array(Type.String({ pattern: ORIGIN_PATTERN }), {
      minItems: 1,
      maxItems: 256,
      description:
        'Allowed origins: exact (https://app.example.com), a pattern (https://*.example.com: one or more labels in place of *, never the bare domain), or * (any origin; without credentials only).',
    }),
    methods: Type.Array(Type.String({ pattern: TOKEN }), {
      default: ['GET', 'HEAD', 'POST'],
      maxItems: 64,
      description: 'Methods a preflight may allow (case-sensitive, as the Fetch standard compares them); * is any (without credentials). Default GET, HEAD, POST.',
    }),
    allowHeaders: Type.Array(Type.String({ pattern: TOKEN }), {
      default: [],
      maxItems: 128,
      description: 'Request headers a preflight may allow (case-insensitive); * is any but Authorization (without credentials). Default none beyond the CORS-safelisted ones.',
    }),
    exposeHeaders: Type.Array(Type.String({ pattern: TOKEN }), { default: [], maxItems: 128, description: 'Response headers scripts may read (Access-Control-Expose-Headers). Default none.' }),
    credentials: Type.Boolean({ default: false, description: 'Allow cookies and Authorization (Access-Control-Allow-Credentials: true). Default false.' }),
    maxAgeSec: Type.Integer({ minimum: 0, maximum: 86_400, default: 600, description: 'How long browsers may cache a preflight (Access-Control-Max-Age). Default 600.' }),
  },
  { additionalProperties: false, description: 'CORS (Fetch standard): preflights answered by the gateway, Access-Control-* on responses to allowed origins, none for others.' },
);

const RateLimit = Type.Object(
  {
    rate: Type.Number({ exclusiveMinimum: 0, maximum: 1_000_000, description: 'Tokens added per `per` (requests allowed on average).' }),
    per: Type.Unsafe<'second' | 'minute' | 'hour'>({ type: 'string', enum: ['second', 'minute', 'hour'], default: 'second', description: 'The unit of rate. Default second.' }),
    burst: Type.Integer({ minimum: 1, maximum: 1_000_000, description: 'Bucket size: requests allowed at once after a quiet time.' }),
    key: Type.String({
      pattern: "^(client|route|header:[!#$%&'*+\\-.^_`|~0-9A-Za-z]+|claim:[A-Za-z0-9_.:-]{1,64})$",
      default: 'client',
      description:
        'What one bucket counts: client (the client address, after --trusted-proxies), route (everyone together), header:NAME (a request header; requests without it share one bucket), claim:NAME (a claim of the verified identity, e.g. claim:sub; needs auth). Default client.',
    }),
    mode: Type.Unsafe<'gateway' | 'fleet'>({
      type: 'string',
      enum: ['gateway', 'fleet'],
      default: 'gateway',
      description: 'gateway (default): each gateway (each worker) counts alone. fleet: the gateways alive share the limit over NATS (README: error bound).',
    }),
    maxKeys: Type.Integer({ minimum: 1, maximum: 1_000_000, default: 10_000, description: 'Buckets kept, least recently used dropped first (a dropped key starts full again). Default 10000.' }),
  },
  { additionalProperties: false, description: 'Token-bucket rate limit: 429 with Retry-After; RateLimit and RateLimit-Policy headers on every response.' },
);

const Jwk = Type.Object(
  { kty: Type.String({ enum: ['RSA', 'EC', 'OKP', 'oct'] }) },
  { additionalProperties: true, description: 'A JWK (RFC 7517): public keys; for HS256 an oct key (a shared secret, redacted when shown).' },
);

const Auth = Type.Object(
  {
    jwt: Type.Optional(
      Type.Object(
        {
          keys: Type.Optional(Type.Array(Jwk, { minItems: 1, maxItems: 32, description: 'Verification keys inline (with kid when more than one).' })),
          jwksUrl: Type.Optional(
            Type.String({ pattern: '^https?://[^\\s]+$', description: 'A JWKS endpoint, fetched on first use, cached, and fetched again for an unknown kid (at most every jwksCooldownMs).' }),
          ),
          jwksCacheMs: Type.Integer({ minimum: 1000, maximum: 86_400_000, default: 600_000, description: 'Longest a fetched key set is used before it is fetched again. Default 600000.' }),
          jwksCooldownMs: Type.Integer({ minimum: 0, maximum: 3_600_000, default: 30_000, description: 'Shortest time between two fetches. Default 30000.' }),
          algorithms: Type.Array(Type.Unsafe<string>({ type: 'string', enum: ['RS256', 'ES256', 'EdDSA', 'HS256'] }), {
            default: ['RS256', 'ES256', 'EdDSA'],
            minItems: 1,
            description: 'Algorithms accepted (never none). Default RS256, ES256, EdDSA; HS256 only when listed.',
          }),
          issuer: Type.Optional(Type.String({ minLength: 1, description: 'Required iss.' })),
          audience: Type.Optional(Type.String({ minLength: 1, description: 'Required aud (one of the token’s).' })),
          clockSkewSec: Type.Integer({ minimum: 0, maximum: 3600, default: 30, description: 'Tolerance for exp and nbf. Default 30.' }),
          requiredScopes: Type.Array(Type.String({ pattern: '^[\\x21\\x23-\\x5b\\x5d-\\x7e]+$' }), {
            default: [],
            maxItems: 64,
            description: 'Scopes the token must hold (in scope, space-separated, or scp, an array); else 403.',
          }),
          requiredClaims: Type.Record(Type.String({ minLength: 1, maxLength: 64 }), Type.Union([Type.String(), Type.Number(), Type.Boolean()]), {
            default: {},
            description: 'Claims the token must carry with exactly these values; else 403.',
          }),
        },
        { additionalProperties: false, description: 'Bearer JWTs (Authorization: Bearer …), verified with jose.' },
      ),
    ),
    apiKeys: Type.Optional(
      Type.Object(
        {
          header: Type.String({ pattern: TOKEN, default: 'x-api-key', description: 'The request header that carries the key. Default x-api-key.' }),
          keys: Type.Array(
            Type.Object(
              {
                id: Type.String({ pattern: '^[A-Za-z0-9_.:@-]{1,64}$', description: 'Who the key belongs to: the identity’s sub.' }),
                sha256: Type.String({ pattern: '^[0-9a-f]{64}$', description: 'SHA-256 of the key, lower-case hex (natsgw routes put --api-key ID=KEY computes it).' }),
              },
              { additionalProperties: false },
            ),
            { minItems: 1, maxItems: 10_000 },
          ),
        },
        { additionalProperties: false, description: 'API keys, stored only as hashes.' },
      ),
    ),
    forwardCredentials: Type.Boolean({
      default: false,
      description:
        'Pass the credential itself (the Authorization header, or the API key header) on to the service. Default false: the service gets the verified identity, not the secret (as Envoy’s jwt_authn does).',
    }),
  },
  { additionalProperties: false, description: 'Authentication: a request needs a valid JWT or API key (either, when both are set); 401 with WWW-Authenticate, 403 for missing scopes or claims.' },
);

const Compression = Type.Object(
  {
    encodings: Type.Array(Type.Unsafe<'br' | 'gzip'>({ type: 'string', enum: ['br', 'gzip'] }), {
      default: ['br', 'gzip'],
      minItems: 1,
      description: 'Encodings offered, preferred first when the client weighs them equally. Default br, gzip.',
    }),
    minBytes: Type.Integer({ minimum: 0, default: 1024, description: 'Smaller bodies (by Content-Length) go as they are. Default 1024.' }),
    contentTypes: Type.Array(Type.String({ pattern: '^[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+*-]+$' }), {
      default: ['text/*', 'application/json', 'application/javascript', 'application/xml', 'application/*+json', 'application/*+xml', 'image/svg+xml'],
      maxItems: 64,
      description: 'Media types compressed (type/*, type/*+suffix patterns). Default text, JSON, JavaScript, XML, SVG.',
    }),
  },
  { additionalProperties: false, description: 'Response compression (gzip, brotli), negotiated from Accept-Encoding; streamed responses are compressed as they stream.' },
);

const Limits = Type.Object(
  {
    timeoutMs: Type.Optional(Type.Integer({ minimum: 1, maximum: 3_600_000, description: 'Longest wait for the response (replaces --timeout, or an override’s timeoutMs).' })),
    maxRequestBodyBytes: Type.Optional(
      Type.Integer({ minimum: 0, maximum: 1024 * 1024 * 1024, description: 'Largest request body; larger → 413 (replaces --max-body, or an override’s maxRequestBodyBytes).' }),
    ),
    methods: Type.Optional(Type.Array(Type.String({ pattern: TOKEN }), { minItems: 1, maxItems: 64, description: 'Methods allowed; others → 405 with Allow. A CORS preflight is answered first.' })),
  },
  { additionalProperties: false, description: 'Per-route limits.' },
);

export const PolicySchema = Type.Object(
  { cors: Type.Optional(Cors), rateLimit: Type.Optional(RateLimit), auth: Type.Optional(Auth), compression: Type.Optional(Compression), limits: Type.Optional(Limits) },
  { additionalProperties: false, description: 'Edge policies for this subject and everything below it; each block from the most specific key that sets it (README "Policies").' },
);

export type PolicyConfig = Static<typeof PolicySchema>;
export type CorsConfig = Required<NonNullable<PolicyConfig['cors']>>;
export type RateLimitConfig = Required<NonNullable<PolicyConfig['rateLimit']>>;
export type AuthConfig = NonNullable<PolicyConfig['auth']>;
export type JwtConfig = NonNullable<AuthConfig['jwt']>;
export type CompressionConfig = Required<NonNullable<PolicyConfig['compression']>>;
export type LimitsConfig = NonNullable<PolicyConfig['limits']>;
