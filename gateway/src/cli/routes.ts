/**
 * `natsgw routes …`: reads and writes the routes bucket. Validation is the
 * gateway's own schema, so what the CLI accepts the gateway accepts, and
 * `ls` shows which entries a gateway would reject and why.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { KV, KvEntry } from '@nats-io/kv';
import { normalizePath, pathToSubject } from '@natsgw/service-sdk/protocol';
import { POLICY_BLOCKS, type PolicyBlock, type PolicyConfig } from '../policy/policy-schema.js';
import { keyChain } from '../routes/route-table.js';
import { CommandError } from './command.js';
import { isRouteKey, parseRoute, redactRoute, type AnyRouteConfig, type RouteOptions } from '../routes/route-schema.js';

export function checkKey(subject: string): string {
  if (subject.startsWith('/')) throw new CommandError(`route keys are subjects, not paths: for ${subject} use ROOT${subject.replace(/\//g, '.')} (e.g. api.legacy)`, 2);
  if (!isRouteKey(subject)) throw new CommandError(`invalid subject ${JSON.stringify(subject)}: tokens of A-Z a-z 0-9 - _ = separated by dots, no wildcards`, 2);
  return subject;
}

/** The `routes put` flags that describe a route (yargs' camelCase names). */
export const ROUTE_FLAG_KEYS = [
  'natsRaw',
  'upstream',
  'balancing',
  'healthPath',
  'healthInterval',
  'healthTimeout',
  'healthyThreshold',
  'unhealthyThreshold',
  'breaker',
  'breakerFailures',
  'breakerOpenMs',
  'timeout',
  'connectTimeout',
  'retries',
  'maxBody',
  'stripPrefix',
  'addPrefix',
  'preserveHost',
  'cors',
  'corsMethods',
  'corsHeaders',
  'corsExpose',
  'corsCredentials',
  'corsMaxAge',
  'rateLimit',
  'burst',
  'rateKey',
  'rateFleet',
  'jwksUrl',
  'jwtKeyFile',
  'jwtIssuer',
  'jwtAudience',
  'jwtScope',
  'jwtAlg',
  'apiKey',
  'apiKeyHeader',
  'forwardCredentials',
  'compress',
  'compressMin',
  'methods',
  'file',
] as const;

/** Flags of `routes put` that describe a route. */
export interface RouteFlags {
  upstream?: string[];
  balancing?: string;
  healthPath?: string;
  healthInterval?: string;
  healthTimeout?: string;
  healthyThreshold?: string;
  unhealthyThreshold?: string;
  breaker?: boolean;
  breakerFailures?: string;
  breakerOpenMs?: string;
  timeout?: string;
  connectTimeout?: string;
  retries?: string;
  maxBody?: string;
  stripPrefix?: boolean;
  addPrefix?: string;
  preserveHost?: boolean;
  natsRaw?: boolean;
  cors?: string[];
  corsMethods?: string;
  corsHeaders?: string;
  corsExpose?: string;
  corsCredentials?: boolean;
  corsMaxAge?: string;
  rateLimit?: string;
  burst?: string;
  rateKey?: string;
  rateFleet?: boolean;
  jwksUrl?: string;
  jwtKeyFile?: string[];
  jwtIssuer?: string;
  jwtAudience?: string;
  jwtScope?: string[];
  jwtAlg?: string[];
  apiKey?: string[];
  apiKeyHeader?: string;
  forwardCredentials?: boolean;
  compress?: boolean;
  compressMin?: string;
  methods?: string;
  file?: string;
}

/** The flags that describe a policy block (the rest describe the target). */
const POLICY_FLAGS: ReadonlySet<string> = new Set(ROUTE_FLAG_KEYS.slice(ROUTE_FLAG_KEYS.indexOf('cors'), ROUTE_FLAG_KEYS.indexOf('file')));

const list = (v: string | undefined): string[] | undefined =>
  v === undefined
    ? undefined
    : v
        .split(',')
        .map((x) => x.trim())
        .filter(Boolean);

/** `10/s`, `100/minute`, `5000/h`: a rate and its unit. */
function parseRate(v: string): { rate: number; per: 'second' | 'minute' | 'hour' } {
  const m = /^(\d{1,7}(?:\.\d{1,6})?)\/(s|sec|second|m|min|minute|h|hour)$/.exec(v);
  if (m === null) throw new CommandError(`--rate-limit must be RATE/UNIT, e.g. 10/s, 100/minute, 5000/h (got ${JSON.stringify(v)})`, 2);
  const unit = m[2]!;
  return { rate: Number(m[1]), per: unit.startsWith('h') ? 'hour' : unit.startsWith('m') ? 'minute' : 'second' };
}

/** A JWK or JWKS file's keys. */
function readKeys(file: string): object[] {
  let v: { keys?: object[] } & object;
  try {
    v = JSON.parse(readFileSync(file, 'utf8')) as { keys?: object[] };
  } catch (err) {
    throw new CommandError(`cannot read a JWK from ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, 2);
  }
  return Array.isArray(v.keys) ? v.keys : [v];
}

/** The policy the flags describe, or undefined when none is given. */
function policyFromFlags(f: RouteFlags, bodyLimits: { timeout?: number; maxBody?: number }): PolicyConfig | undefined {
  const p: Record<string, unknown> = {};
  if (f.cors !== undefined || f.corsMethods !== undefined || f.corsHeaders !== undefined || f.corsExpose !== undefined || f.corsCredentials !== undefined || f.corsMaxAge !== undefined) {
    if (f.cors === undefined || f.cors.length === 0) throw new CommandError('--cors-* options need at least one --cors ORIGIN', 2);
    p.cors = stripUndefined({
      origins: f.cors,
      methods: list(f.corsMethods),
      allowHeaders: list(f.corsHeaders),
      exposeHeaders: list(f.corsExpose),
      credentials: f.corsCredentials,
      maxAgeSec: num(f.corsMaxAge, 'cors-max-age'),
    });
  }
  if (f.rateLimit !== undefined || f.burst !== undefined || f.rateKey !== undefined || f.rateFleet !== undefined) {
    if (f.rateLimit === undefined) throw new CommandError('--burst, --rate-key and --rate-fleet need --rate-limit RATE/UNIT', 2);
    const r = parseRate(f.rateLimit);
    p.rateLimit = stripUndefined({ ...r, burst: num(f.burst, 'burst') ?? Math.max(1, Math.ceil(r.rate)), key: f.rateKey, mode: f.rateFleet ? 'fleet' : undefined });
  }
  const jwtGiven = [f.jwksUrl, f.jwtKeyFile, f.jwtIssuer, f.jwtAudience, f.jwtScope, f.jwtAlg].some((v) => v !== undefined);
  if (jwtGiven || f.apiKey !== undefined || f.apiKeyHeader !== undefined) {
    const auth: Record<string, unknown> = {};
    if (jwtGiven) {
      auth.jwt = stripUndefined({
        jwksUrl: f.jwksUrl,
        keys: f.jwtKeyFile?.flatMap(readKeys),
        issuer: f.jwtIssuer,
        audience: f.jwtAudience,
        requiredScopes: f.jwtScope,
        algorithms: f.jwtAlg,
      });
    }
    if (f.apiKey !== undefined || f.apiKeyHeader !== undefined) {
      if (f.apiKey === undefined || f.apiKey.length === 0) throw new CommandError('--api-key-header needs at least one --api-key ID=KEY', 2);
      const keys = f.apiKey.map((spec) => {
        const eq = spec.indexOf('=');
        if (eq < 1 || eq === spec.length - 1) throw new CommandError(`--api-key must be ID=KEY (got ${JSON.stringify(spec.slice(0, 20))}…)`, 2);
        // Only the hash is stored; the key itself never reaches the bucket.
        return {
          id: spec.slice(0, eq),
          sha256: createHash('sha256')
            .update(spec.slice(eq + 1))
            .digest('hex'),
        };
      });
      auth.apiKeys = stripUndefined({ header: f.apiKeyHeader, keys });
    }
    if (f.forwardCredentials) auth.forwardCredentials = true;
    p.auth = auth;
  } else if (f.forwardCredentials) throw new CommandError('--forward-credentials needs --jwks-url, --jwt-key-file or --api-key', 2);
  if (f.compress !== undefined || f.compressMin !== undefined) p.compression = stripUndefined({ minBytes: num(f.compressMin, 'compress-min') });
  const limits = stripUndefined({ methods: list(f.methods), timeoutMs: bodyLimits.timeout, maxRequestBodyBytes: bodyLimits.maxBody });
  if (Object.keys(limits).length > 0) p.limits = limits;
  return Object.keys(p).length === 0 ? undefined : (p as PolicyConfig);
}

const num = (v: string | undefined, flag: string): number | undefined => {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v)) throw new CommandError(`--${flag} must be a whole number (got ${JSON.stringify(v)})`, 2);
  return Number(v);
};

/** `URL` or `URL=WEIGHT`. */
export function parseUpstream(spec: string): { url: string; weight?: number } {
  const m = /^(.*)=(\d+)$/.exec(spec);
  return m ? { url: m[1]!, weight: Number(m[2]) } : { url: spec };
}

/**
 * Builds the route a user described with flags or a file: the value to store
 * and, as the gateway will read it, with defaults filled in. Throws a
 * CommandError naming the problem when the schema rejects it.
 * @example routeFromFlags({ upstream: ['http://10.0.0.5:8080=3', 'http://10.0.0.6:8080'], balancing: 'round-robin' })
 */
export function routeFromFlags(f: RouteFlags): { value: Record<string, unknown>; config: RouteOptions } {
  let route: Record<string, unknown>;
  if (f.file !== undefined) {
    const others = Object.entries(f).filter(([k, v]) => k !== 'file' && v !== undefined && !(Array.isArray(v) && v.length === 0));
    if (others.length > 0) throw new CommandError(`--file cannot be combined with --${others[0]![0].replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())}`, 2);
    let text: string;
    try {
      text = readFileSync(f.file, 'utf8');
    } catch (err) {
      throw new CommandError(`cannot read ${f.file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, 2);
    }
    try {
      route = JSON.parse(text) as Record<string, unknown>;
    } catch (err) {
      throw new CommandError(`${f.file} is not valid JSON: ${(err as Error).message}`, 2);
    }
  } else if (f.natsRaw) {
    if (f.upstream && f.upstream.length > 0) throw new CommandError('--nats-raw keeps the subject on NATS: it takes no --upstream', 2);
    const other = Object.entries(f).find(([k, v]) => k !== 'natsRaw' && k !== 'maxBody' && !POLICY_FLAGS.has(k) && v !== undefined && !(Array.isArray(v) && v.length === 0));
    if (other !== undefined) throw new CommandError(`--nats-raw takes only --max-body and policy options, not --${other[0].replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())}`, 2);
    const policy = policyFromFlags(f, {});
    route = { target: 'nats-raw', ...stripUndefined({ maxRequestBodyBytes: num(f.maxBody, 'max-body'), policy }) };
  } else if (!f.upstream || f.upstream.length === 0) {
    // No target: a policy for a subject tree that stays on NATS; --timeout and --max-body become its limits.
    const other = Object.entries(f).find(([k, v]) => k !== 'timeout' && k !== 'maxBody' && !POLICY_FLAGS.has(k) && v !== undefined && !(Array.isArray(v) && v.length === 0));
    if (other !== undefined) throw new CommandError(`--${other[0].replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())} configures HTTP backends: give --upstream too`, 2);
    const policy = policyFromFlags(f, { timeout: num(f.timeout, 'timeout'), maxBody: num(f.maxBody, 'max-body') });
    if (policy === undefined)
      throw new CommandError('give at least one --upstream URL[=WEIGHT], --nats-raw, a policy option (--cors, --rate-limit, --jwks-url, --api-key, --compress, --methods …), or --file route.json', 2);
    route = { policy };
  } else {
    route = { upstreams: f.upstream.map(parseUpstream) };
    const policy = policyFromFlags(f, {});
    if (policy !== undefined) route.policy = policy;
    if (f.balancing !== undefined) route.balancing = f.balancing;
    const hc = {
      path: f.healthPath,
      intervalMs: num(f.healthInterval, 'health-interval'),
      timeoutMs: num(f.healthTimeout, 'health-timeout'),
      healthyThreshold: num(f.healthyThreshold, 'healthy-threshold'),
      unhealthyThreshold: num(f.unhealthyThreshold, 'unhealthy-threshold'),
    };
    if (Object.values(hc).some((v) => v !== undefined)) route.healthCheck = stripUndefined(hc);
    const cb = { failureThreshold: num(f.breakerFailures, 'breaker-failures'), openMs: num(f.breakerOpenMs, 'breaker-open-ms') };
    if (f.breaker || Object.values(cb).some((v) => v !== undefined)) route.circuitBreaker = stripUndefined(cb);
    Object.assign(
      route,
      stripUndefined({
        timeoutMs: num(f.timeout, 'timeout'),
        connectTimeoutMs: num(f.connectTimeout, 'connect-timeout'),
        retries: num(f.retries, 'retries'),
        maxRequestBodyBytes: num(f.maxBody, 'max-body'),
        stripPrefix: f.stripPrefix,
        addPrefix: f.addPrefix,
        preserveHost: f.preserveHost,
      }),
    );
  }
  const checked = parseRoute(route);
  if (!checked.ok) throw new CommandError(`invalid route: ${checked.reason}`, 2);
  return { value: route, config: checked.config as RouteOptions };
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

export interface RouteListing {
  subject: string;
  revision: number;
  created: string;
  valid: boolean;
  /** Why a gateway rejects it (when not valid). */
  reason?: string;
  /** The route with defaults filled in (when valid). */
  route?: RouteOptions;
  /** The value as stored. */
  raw: string;
}

export function describeEntry(e: KvEntry): RouteListing {
  const raw = Buffer.from(e.value).toString('utf8');
  const parsed = parseRoute(raw);
  return {
    subject: e.key,
    revision: e.revision,
    created: e.created.toISOString(),
    valid: parsed.ok,
    ...(parsed.ok ? { route: parsed.config as RouteOptions } : { reason: parsed.reason }),
    raw,
  };
}

export async function putRoute(kv: KV, subject: string, route: Record<string, unknown>): Promise<number> {
  return kv.put(checkKey(subject), JSON.stringify(route));
}

export async function getRoute(kv: KV, subject: string): Promise<RouteListing> {
  const e = await kv.get(checkKey(subject));
  if (e === null || e.operation !== 'PUT') throw new CommandError(`no route for ${subject}`, 1);
  return describeEntry(e);
}

export async function listRoutes(kv: KV): Promise<RouteListing[]> {
  const keys: string[] = [];
  for await (const k of await kv.keys()) keys.push(k);
  keys.sort();
  const out: RouteListing[] = [];
  for (const k of keys) {
    const e = await kv.get(k);
    if (e !== null && e.operation === 'PUT') out.push(describeEntry(e));
  }
  return out;
}

export async function removeRoute(kv: KV, subject: string): Promise<void> {
  const e = await kv.get(checkKey(subject));
  if (e === null || e.operation !== 'PUT') throw new CommandError(`no route for ${subject}`, 1);
  await kv.delete(subject);
}

/** One line of summary for tables and watch output. */
export function summarize(l: Pick<RouteListing, 'valid' | 'reason' | 'route'>): string {
  if (!l.valid) return `INVALID: ${l.reason}`;
  const r = l.route! as RouteOptions | AnyRouteConfig;
  const policy = r.policy === undefined ? '' : `  policy: ${summarizePolicy(r.policy)}`;
  if (r.target === 'policy') return `NATS${policy}`;
  if (r.target === 'nats-raw') return `NATS, raw  (max body ${r.maxRequestBodyBytes})${policy}`;
  const o = r as RouteOptions;
  const ups = (o.upstreams ?? []).map((u) => (u.weight && u.weight !== 1 ? `${u.url}=${u.weight}` : u.url)).join(' ');
  const extras = [o.balancing, o.healthCheck ? `health ${o.healthCheck.path}` : '', o.circuitBreaker ? 'breaker' : '', o.stripPrefix ? 'strip-prefix' : ''].filter(Boolean);
  return `${ups}  (${extras.join(', ')})${policy}`;
}

/** One block in a few words, for tables. */
export function summarizeBlock(block: PolicyBlock, p: PolicyConfig): string {
  switch (block) {
    case 'cors':
      return `cors ${p.cors!.origins.join(' ')}${p.cors!.credentials ? ' +credentials' : ''}`;
    case 'rateLimit': {
      const r = p.rateLimit!;
      return `rateLimit ${r.rate}/${r.per ?? 'second'} burst ${r.burst} by ${r.key ?? 'client'}${r.mode === 'fleet' ? ' (fleet)' : ''}`;
    }
    case 'auth':
      return `auth ${[p.auth!.jwt ? 'jwt' : '', p.auth!.apiKeys ? `api-key (${p.auth!.apiKeys.keys.length})` : ''].filter(Boolean).join('|')}`;
    case 'compression':
      return `compression ${(p.compression!.encodings ?? ['br', 'gzip']).join('|')}`;
    case 'limits': {
      const l = p.limits!;
      return `limits${l.methods ? ` ${l.methods.join('|')}` : ''}${l.timeoutMs !== undefined ? ` timeout ${l.timeoutMs}ms` : ''}${l.maxRequestBodyBytes !== undefined ? ` body ≤${l.maxRequestBodyBytes}` : ''}`;
    }
  }
}

export function summarizePolicy(p: PolicyConfig): string {
  return POLICY_BLOCKS.filter((b) => p[b] !== undefined)
    .map((b) => summarizeBlock(b, p))
    .join(', ');
}

export interface Explanation {
  path: string;
  subject: string;
  /** Where requests go, and the key that says so (none: NATS, the envelope). */
  target: { kind: 'nats' | 'http' | 'nats-raw'; key?: string; summary: string };
  /** Each block in effect, the key it comes from, and the block (secrets redacted). */
  policy: { block: PolicyBlock; key: string; summary: string; config: unknown }[];
  /** Entries on the way that a gateway rejects (they do not apply; their last good version may, on a running gateway). */
  rejected: { key: string; reason: string }[];
}

/**
 * What applies to `path` under `root`, from the bucket's entries: the walk a
 * gateway makes (RouteTable.resolve, through the same keyChain), over the
 * validated values.
 */
export function explainPath(root: string, path: string, listings: readonly RouteListing[]): Explanation {
  const normalized = normalizePath(path);
  if (normalized.charCodeAt(0) !== 47) throw new CommandError(`invalid path ${JSON.stringify(path.slice(0, 100))}: ${normalized}`, 2);
  const subject = pathToSubject(root, normalized);
  if (subject === 'bad-percent-encoding' || subject === 'too-many-segments' || subject === 'subject-too-long') throw new CommandError(`${path} has no subject: ${subject}`, 2);
  const byKey = new Map(listings.map((l) => [l.subject, l]));
  const chain = keyChain(subject, root.length, (k) => byKey.get(k));
  const rejected = chain.filter((l) => !l.valid).map((l) => ({ key: l.subject, reason: l.reason ?? '' }));
  const valid = chain.filter((l) => l.valid).map((l) => ({ key: l.subject, config: l.route as unknown as AnyRouteConfig }));
  const t = valid.find((l) => l.config.target !== 'policy');
  const target: Explanation['target'] =
    t === undefined
      ? { kind: 'nats', summary: `NATS (envelope) on ${subject}` }
      : { kind: t.config.target as 'http' | 'nats-raw', key: t.key, summary: summarize({ valid: true, route: { ...t.config, policy: undefined } as never }) };
  const policy: Explanation['policy'] = [];
  for (const block of POLICY_BLOCKS) {
    const from = valid.find((l) => l.config.policy?.[block] !== undefined);
    if (from === undefined) continue;
    const shown = redactRoute({ policy: from.config.policy! }).policy!;
    policy.push({ block, key: from.key, summary: summarizeBlock(block, shown), config: shown[block] });
  }
  return { path: normalized, subject, target, policy, rejected };
}
