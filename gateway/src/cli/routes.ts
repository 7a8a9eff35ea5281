/**
 * `natsgw routes …`: reads and writes the routes bucket. Validation is the
 * gateway's own schema, so what the CLI accepts the gateway accepts, and
 * `ls` shows which entries a gateway would reject and why.
 */
import { readFileSync } from 'node:fs';
import type { KV, KvEntry } from '@nats-io/kv';
import { isRouteKey, parseRoute, type RouteOptions } from '../routes/route-schema.js';

export class CommandError extends Error {
  override name = 'CommandError';
  /** 1 runtime (not found, unreachable), 2 bad usage or invalid input. */
  constructor(
    message: string,
    readonly exitCode: 1 | 2,
  ) {
    super(message);
  }
}

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
  file?: string;
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
    const other = Object.entries(f).find(([k, v]) => k !== 'natsRaw' && k !== 'maxBody' && v !== undefined && !(Array.isArray(v) && v.length === 0));
    if (other !== undefined) throw new CommandError(`--nats-raw takes only --max-body, not --${other[0].replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())}`, 2);
    route = { target: 'nats-raw', ...stripUndefined({ maxRequestBodyBytes: num(f.maxBody, 'max-body') }) };
  } else {
    if (!f.upstream || f.upstream.length === 0) throw new CommandError('give at least one --upstream URL[=WEIGHT], --nats-raw, or --file route.json', 2);
    route = { upstreams: f.upstream.map(parseUpstream) };
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
  const r = l.route!;
  if (r.target === 'nats-raw') return `NATS, raw  (max body ${r.maxRequestBodyBytes})`;
  const ups = (r.upstreams ?? []).map((u) => (u.weight && u.weight !== 1 ? `${u.url}=${u.weight}` : u.url)).join(' ');
  const extras = [r.balancing, r.healthCheck ? `health ${r.healthCheck.path}` : '', r.circuitBreaker ? 'breaker' : '', r.stripPrefix ? 'strip-prefix' : ''].filter(Boolean);
  return `${ups}  (${extras.join(', ')})`;
}
