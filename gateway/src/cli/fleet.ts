/**
 * `natsgw status | backends | stats | circuits | routes`: what the gateways
 * are doing, from their admin views — every gateway on the cluster over NATS
 * (scatter-gather on natsgw.admin.<verb>), or one gateway's admin API over
 * HTTP (--gateway http://host:8081).
 */
import { createInbox, headers as natsHeaders, type Msg, type NatsConnection } from '@nats-io/transport-node';
import type { AdminVerb, BackendView, CircuitView, GatewayStatus, RoutesView, StatsView } from '../ops/admin-data.js';
import { ADMIN_SUBJECT_PREFIX } from '../ops/admin-nats.js';
import { checkAdminAnswer, checkAdminView } from '../ops/admin-schema.js';
import { ADMIN_AUTH_HEADER, signAdminRequest } from '../ops/admin-token.js';
import { CommandError } from './command.js';
import { printable, printableDeep, withoutTrailingSlashes } from './safe-text.js';
import { paint, table } from './table.js';

export interface FleetAnswer {
  /** The gateway's id (NATS) or admin URL (HTTP). */
  gateway: string;
  ok: boolean;
  data?: unknown;
  error?: string;
}

export interface FleetResult {
  answers: FleetAnswer[];
  /** Answers that were not a gateway's (garbage, wrong shape, a second answer from one id), with why. */
  skipped: string[];
}

/** How long to wait after the last answer before deciding every gateway has answered. */
const STALL_MS = 300;
/** Largest answer read; a bigger one is skipped unparsed. */
const MAX_ANSWER_BYTES = 16 * 1024 * 1024;

/**
 * Asks every gateway on the cluster; collects answers until none comes for
 * a moment (or `waitMs` pass). Anyone who may publish on NATS can answer,
 * so each answer is checked against the admin schema and skipped, with the
 * reason, when it is not a gateway's. With a token the request is signed
 * (admin-token.ts): the token is never sent.
 */
export async function askFleet(nc: NatsConnection, verb: AdminVerb, token: string | undefined, waitMs: number): Promise<FleetResult> {
  const subject = `${ADMIN_SUBJECT_PREFIX}.${verb}`;
  const inbox = createInbox((nc as { options?: { inboxPrefix?: string } }).options?.inboxPrefix);
  const answers: FleetAnswer[] = [];
  const skipped: string[] = [];
  const seen = new Set<string>();
  let noResponders = false;
  let done!: () => void;
  const finished = new Promise<void>((resolve) => (done = resolve));
  let stall: NodeJS.Timeout | undefined;
  const deadline = setTimeout(() => done(), waitMs);
  const onAnswer = (m: Msg): void => {
    if (m.data.length === 0) {
      if (m.headers?.code === 503) noResponders = true;
      return done();
    }
    if (m.data.length > MAX_ANSWER_BYTES) return void skipped.push(`an answer of ${m.data.length} bytes`);
    let parsed: unknown;
    try {
      parsed = JSON.parse(Buffer.from(m.data).toString('utf8'));
    } catch {
      return void skipped.push('an answer that is not JSON');
    }
    const a = checkAdminAnswer(verb, parsed);
    if (typeof a === 'string') return void skipped.push(`an answer that is ${a}`);
    if (seen.has(a.id)) return void skipped.push(`a second answer from ${a.id}`);
    seen.add(a.id);
    answers.push({ gateway: a.id, ok: a.ok, ...(a.ok ? { data: a.data } : { error: a.error }) });
  };
  const sub = nc.subscribe(inbox, {
    callback: (_err, m) => {
      try {
        onAnswer(m);
      } catch {
        skipped.push('an answer that could not be read');
      }
      clearTimeout(stall);
      stall = setTimeout(() => done(), STALL_MS);
    },
  });
  try {
    const h = natsHeaders();
    if (token) h.set(ADMIN_AUTH_HEADER, signAdminRequest(token, subject, inbox));
    nc.publish(subject, '', { reply: inbox, headers: h });
    await finished;
  } catch (err) {
    throw new CommandError(`asking the gateways failed: ${(err as Error).message}`, 1);
  } finally {
    clearTimeout(stall);
    clearTimeout(deadline);
    sub.unsubscribe();
  }
  if (answers.length === 0) {
    const why = noResponders ? 'is one running on this NATS?' : skipped.length > 0 ? `${skipped.length} answer(s) skipped: ${skipped[0]}` : 'is one running on this NATS?';
    throw new CommandError(`no gateway answered on ${subject} (${printable(why)})`, 1);
  }
  return { answers: answers.sort((a, b) => a.gateway.localeCompare(b.gateway)), skipped };
}

/** Asks one gateway's admin API over HTTP. */
export async function askGateway(url: string, verb: AdminVerb, token: string | undefined, timeoutMs: number): Promise<FleetResult> {
  const base = withoutTrailingSlashes(url);
  let r: Response;
  try {
    r = await fetch(`${base}/${verb}`, { headers: token ? { authorization: `Bearer ${token}` } : {}, signal: AbortSignal.timeout(timeoutMs) });
  } catch (err) {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    throw new CommandError(`cannot reach the gateway admin API at ${base}: ${cause?.code ?? cause?.message ?? (err as Error).message}`, 1);
  }
  if (r.status === 401) throw new CommandError(`the gateway at ${base} refused: unauthorized (check --admin-token)`, 1);
  if (!r.ok) throw new CommandError(`the gateway at ${base} answered ${r.status} for /${verb}`, 1);
  let data: unknown;
  try {
    data = await r.json();
  } catch {
    throw new CommandError(`the gateway at ${base} answered /${verb} with something that is not JSON`, 1);
  }
  const bad = checkAdminView(verb, data);
  if (bad !== undefined) throw new CommandError(`the answer from ${base} is not a gateway's: ${printable(bad)}`, 1);
  return { answers: [{ gateway: base, ok: true, data }], skipped: [] };
}

const ago = (iso: string | null | undefined) => {
  if (!iso) return '-';
  const s = Math.round((Date.now() - Date.parse(iso)) / 1000);
  return s >= 0 ? `${s}s ago` : `in ${-s}s`;
};
const duration = (s: number) => (s < 90 ? `${s}s` : s < 5400 ? `${Math.round(s / 60)}m` : s < 172_800 ? `${Math.round(s / 3600)}h` : `${Math.round(s / 86400)}d`);
const ms = (x: number | null) => (x === null ? '-' : x < 10 ? x.toFixed(2) : x.toFixed(0));
const bytes = (n: number) => (n < 1024 ? `${n}B` : n < 1_048_576 ? `${(n / 1024).toFixed(1)}K` : n < 1_073_741_824 ? `${(n / 1_048_576).toFixed(1)}M` : `${(n / 1_073_741_824).toFixed(1)}G`);

/** Human tables for each verb; one row per gateway (status) or per item. */
/** A backend's name in a table: its URL, with its settings id when the same URL appears with other settings. */
function backendNames(list: ReadonlyArray<{ url: string; settings: string }>): (b: { url: string; settings: string }) => string {
  const variants = new Map<string, number>();
  for (const b of list) variants.set(b.url, (variants.get(b.url) ?? 0) + 1);
  return (b) => ((variants.get(b.url) ?? 0) > 1 ? `${b.url} (settings ${b.settings})` : b.url);
}

/** "api.a api.b" or "api.a api.b … (+9,998)": the routes a backend serves, the first few of them. */
function routeList(b: { routes: string[]; routeCount: number }): string {
  const shown = b.routes.slice(0, 3);
  const more = b.routeCount - shown.length;
  return shown.join(' ') + (more > 0 ? ` (+${more.toLocaleString('en-US')})` : '');
}

export function render(verb: AdminVerb, raw: FleetAnswer[], color: boolean): string {
  // Answers come from the network: nothing in them may act on the terminal.
  const answers = printableDeep(raw);
  const failed = answers.filter((a) => !a.ok).map((a) => `${a.gateway}: ${a.error}\n`);
  const ok = answers.filter((a) => a.ok);
  const rows: string[][] = [];
  let headers: string[];
  switch (verb) {
    case 'status':
      headers = ['GATEWAY', 'ROOT', 'UPTIME', 'REQ/S', 'IN-FLIGHT', 'NATS', 'OVERRIDES', 'READY'];
      for (const a of ok) {
        const s = a.data as GatewayStatus;
        rows.push([
          s.id,
          s.rootSubject,
          duration(s.uptimeS),
          String(s.requestsPerSecond),
          String(s.inFlight),
          s.nats.connected ? paint.green(s.nats.server ?? 'connected', color) : paint.red('disconnected', color),
          s.overrides.available ? `${s.overrides.routes} routes${s.overrides.rejected ? `, ${s.overrides.rejected} rejected` : ''}` : paint.yellow(s.overrides.state, color),
          s.shuttingDown ? paint.yellow('shutting down', color) : s.ready ? paint.green('yes', color) : paint.red('no', color),
        ]);
      }
      break;
    case 'backends':
      headers = ['GATEWAY', 'BACKEND', 'ROUTES', 'STATE', 'LAST PROBE', 'IN-FLIGHT', 'REQUESTS', 'FAILURES', 'EJECTIONS'];
      for (const a of ok) {
        const list = a.data as BackendView[];
        const name = backendNames(list);
        for (const b of list) {
          const state = b.available ? paint.green('up', color) : paint.red(!b.healthy ? 'unhealthy' : b.ejected ? 'ejected' : b.breaker === 'open' ? 'breaker open' : 'down', color);
          rows.push([
            a.gateway,
            name(b),
            routeList(b),
            state,
            b.lastProbe ? `${b.lastProbe.ok ? 'ok' : 'failed'} (${b.lastProbe.detail}) ${ago(b.lastProbe.at)}` : '-',
            String(b.inFlight),
            String(b.requests),
            String(b.failures),
            String(b.ejections),
          ]);
        }
      }
      break;
    case 'circuits':
      headers = ['GATEWAY', 'BACKEND', 'ROUTES', 'STATE', 'FAILURES', 'TRIPS', 'NEXT TRIAL'];
      for (const a of ok) {
        const list = a.data as CircuitView[];
        const name = backendNames(list);
        for (const c of list) {
          const state = c.state === 'closed' ? paint.green(c.state, color) : c.state === 'open' ? paint.red(c.state, color) : paint.yellow(c.state, color);
          rows.push([a.gateway, name(c), routeList(c), state, String(c.consecutiveFailures), String(c.trips), ago(c.nextTrialAt)]);
        }
      }
      break;
    case 'stats':
      headers = ['GATEWAY', 'ROUTE', 'TARGET', 'REQUESTS', '2XX', '3XX', '4XX', '5XX', 'P50 MS', 'P90 MS', 'P99 MS', 'BYTES'];
      for (const a of ok) {
        for (const s of a.data as StatsView[]) {
          const c = s.byStatusClass;
          rows.push([
            a.gateway,
            s.route,
            s.target,
            String(s.requests),
            String(c['2xx']),
            String(c['3xx']),
            String(c['4xx']),
            String(c['5xx']),
            ms(s.latencyMs.p50),
            ms(s.latencyMs.p90),
            ms(s.latencyMs.p99),
            bytes(s.bytes),
          ]);
        }
      }
      break;
    case 'routes':
      headers = ['GATEWAY', 'SUBJECT', 'REV', 'STATUS', 'ROUTE'];
      for (const a of ok) {
        const r = a.data as RoutesView;
        for (const x of r.applied)
          rows.push([
            a.gateway,
            x.subject,
            String(x.revision),
            paint.green('applied', color),
            (x as { target?: string }).target === 'nats-raw' ? 'NATS, raw' : `${x.upstreams.map((u) => (u.weight !== 1 ? `${u.url}=${u.weight}` : u.url)).join(' ')} (${x.balancing})`,
          ]);
        for (const x of r.rejected) rows.push([a.gateway, x.subject, String(x.revision), paint.red('rejected', color), x.reason]);
      }
      break;
  }
  const body = rows.length > 0 ? table(headers, rows, { color }) : `nothing to show (${ok.length} gateway${ok.length === 1 ? '' : 's'} answered)\n`;
  return body + failed.join('');
}
