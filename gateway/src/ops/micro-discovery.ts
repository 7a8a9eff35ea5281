/**
 * Every NATS micro service on the account (ADR-32), ours and others':
 * `$SRV.INFO` and `$SRV.STATS` are sent to all instances at once, their
 * answers collected until none comes for a moment, checked, joined by
 * instance id and summed by service name. What `natsgw services` and the
 * admin API's `GET /services` show.
 *
 * Any NATS user may answer, so every answer is hostile: bounded in size and
 * count, checked against the schemas NATS's own tooling uses
 * (gateway/schema/nats-micro-v1/), and skipped with the reason when it does
 * not fit.
 */
import { readFileSync } from 'node:fs';
import { createInbox, type Msg, type NatsConnection } from '@nats-io/transport-node';
import { MAX_VERSION_LENGTH, MICRO_PREFIX, type InfoResponse, type StatsResponse } from '@natsgw/service-sdk/protocol';
import { Ajv } from 'ajv';
import addFormats from 'ajv-formats';

export interface ServiceView {
  name: string;
  /** Versions its instances run, sorted. */
  versions: string[];
  instances: number;
  /** Endpoint subjects, sorted. */
  endpoints: string[];
  requests: number;
  errors: number;
  /** Mean processing time over every request of every instance, ms; null before the first. */
  averageLatencyMs: number | null;
  description: string;
  /** Mounted with natsgw's SDK (its metadata names the mount). */
  natsgw: boolean;
}

export interface ServicesResult {
  services: ServiceView[];
  /** Answers that were not a micro service's, with why. */
  skipped: string[];
}

/** Quiet time after the last answer before the collection ends. */
const STALL_MS = 300;
const MAX_ANSWER_BYTES = 1024 * 1024;
const MAX_ANSWERS = 10_000;

type Check = ((x: unknown) => boolean) & { errors?: Array<{ instancePath?: string; message?: string }> | null };
let checks: { info: Check; stats: Check } | undefined;
/** Compiled on first use: a gateway nobody asks about services never pays for it. */
function schemaChecks(): { info: Check; stats: Check } {
  if (checks === undefined) {
    const ajv = new Ajv({ strict: false, allErrors: false });
    (addFormats as unknown as (a: Ajv, formats: string[]) => void)(ajv, ['date-time']);
    const load = (name: string) => ajv.compile(JSON.parse(readFileSync(new URL(`../../../schema/nats-micro-v1/${name}.json`, import.meta.url), 'utf8')) as object) as Check;
    checks = { info: load('info_response'), stats: load('stats_response') };
  }
  return checks;
}

/** Answers to `subject` until STALL_MS pass without one (at most `waitMs`). */
async function collect(nc: NatsConnection, subject: string, waitMs: number): Promise<Msg[]> {
  const inbox = createInbox((nc as { options?: { inboxPrefix?: string } }).options?.inboxPrefix);
  const got: Msg[] = [];
  let done!: () => void;
  const finished = new Promise<void>((resolve) => (done = resolve));
  let stall = setTimeout(() => done(), Math.min(waitMs, STALL_MS * 2));
  const deadline = setTimeout(() => done(), waitMs);
  const sub = nc.subscribe(inbox, {
    callback: (_err, m) => {
      if (m.headers?.code === 503) return done(); // nobody listens
      if (got.length < MAX_ANSWERS) got.push(m);
      clearTimeout(stall);
      stall = setTimeout(() => done(), STALL_MS);
    },
  });
  try {
    nc.publish(subject, '', { reply: inbox });
    await finished;
  } finally {
    clearTimeout(stall);
    clearTimeout(deadline);
    sub.unsubscribe();
  }
  return got;
}

/** The answer as `T`, or why it is not one. */
function read<T extends { id: string; version: string }>(m: Msg, check: Check, what: string): T | string {
  if (m.data.length > MAX_ANSWER_BYTES) return `${what} of ${m.data.length} bytes`;
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(m.data).toString('utf8'));
  } catch {
    return `${what} that is not JSON`;
  }
  // The schema's semver pattern is only run on strings of a sane length.
  const version = (parsed as { version?: unknown } | null)?.version;
  if (typeof version === 'string' && version.length > MAX_VERSION_LENGTH) return `${what} with a version of ${version.length} characters`;
  if (!check(parsed)) return `${what} that does not fit its schema (${check.errors?.[0]?.instancePath || 'answer'} ${check.errors?.[0]?.message ?? ''})`;
  return parsed as T;
}

/** The answers that are what they claim, by instance id (a second one from an id is skipped). */
function byId<T extends { id: string; version: string }>(msgs: Msg[], check: Check, verb: string, skipped: string[]): Map<string, T> {
  const out = new Map<string, T>();
  for (const m of msgs) {
    const a = read<T>(m, check, `a${verb === 'INFO' ? 'n' : ''} ${verb} answer`);
    if (typeof a === 'string') skipped.push(a);
    else if (out.has(a.id)) skipped.push(`a second ${verb} answer from ${a.id}`);
    else out.set(a.id, a);
  }
  return out;
}

/**
 * @example const { services } = await discoverServices(nc, 2000);
 */
export async function discoverServices(nc: NatsConnection, waitMs: number): Promise<ServicesResult> {
  const { info: infoCheck, stats: statsCheck } = schemaChecks();
  const [infoMsgs, statsMsgs] = await Promise.all([collect(nc, `${MICRO_PREFIX}.INFO`, waitMs), collect(nc, `${MICRO_PREFIX}.STATS`, waitMs)]);
  const skipped: string[] = [];
  const infos = byId<InfoResponse>(infoMsgs, infoCheck, 'INFO', skipped);
  const stats = byId<StatsResponse>(statsMsgs, statsCheck, 'STATS', skipped);
  const byName = new Map<string, { view: ServiceView; versions: Set<string>; endpoints: Set<string>; ns: number }>();
  for (const info of infos.values()) {
    const s = stats.get(info.id);
    if (s !== undefined && s.name !== info.name) {
      skipped.push(`a STATS answer from ${info.id} naming another service`);
      continue;
    }
    let entry = byName.get(info.name);
    if (entry === undefined) {
      entry = {
        view: { name: info.name, versions: [], instances: 0, endpoints: [], requests: 0, errors: 0, averageLatencyMs: null, description: info.description, natsgw: false },
        versions: new Set(),
        endpoints: new Set(),
        ns: 0,
      };
      byName.set(info.name, entry);
    }
    entry.view.instances++;
    entry.versions.add(info.version);
    if (info.metadata?.['natsgw.mount'] !== undefined) entry.view.natsgw = true;
    for (const e of info.endpoints ?? []) entry.endpoints.add(e.subject);
    for (const e of s?.endpoints ?? []) {
      entry.view.requests += e.num_requests;
      entry.view.errors += e.num_errors;
      entry.ns += e.processing_time;
    }
  }
  const services = [...byName.values()].map(({ view, versions, endpoints, ns }) => ({
    ...view,
    versions: [...versions].sort(),
    endpoints: [...endpoints].sort(),
    averageLatencyMs: view.requests === 0 ? null : Math.round((ns / view.requests / 1e6) * 1000) / 1000,
  }));
  return { services: services.sort((a, b) => a.name.localeCompare(b.name)), skipped };
}
