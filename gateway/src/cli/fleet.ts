/**
 * `natsgw status | backends | stats | circuits | routes`: what the gateways
 * are doing, from their admin views — every gateway on the cluster over NATS
 * (scatter-gather on natsgw.admin.<verb>), or one gateway's admin API over
 * HTTP (--gateway http://host:8081).
 */
import { headers as natsHeaders, type NatsConnection } from '@nats-io/transport-node';
import type { AdminVerb, BackendView, CircuitView, GatewayStatus, RoutesView, StatsView } from '../ops/admin-data.js';
import { ADMIN_SUBJECT_PREFIX } from '../ops/admin-nats.js';
import { CommandError } from './routes.js';
import { paint, table } from './table.js';

export interface FleetAnswer {
  /** The gateway's id (NATS) or admin URL (HTTP). */
  gateway: string;
  ok: boolean;
  data?: unknown;
  error?: string;
}

/** Asks every gateway on the cluster; collects answers until none comes for a moment. */
export async function askFleet(nc: NatsConnection, verb: AdminVerb, token: string | undefined, waitMs: number): Promise<FleetAnswer[]> {
  const h = natsHeaders();
  if (token) h.set('Authorization', `Bearer ${token}`);
  const answers: FleetAnswer[] = [];
  try {
    const replies = await nc.requestMany(`${ADMIN_SUBJECT_PREFIX}.${verb}`, '', { strategy: 'stall', stall: 300, maxWait: waitMs, headers: h });
    for await (const m of replies) {
      if (m.data.length === 0) continue; // a no-responders status
      const a = JSON.parse(Buffer.from(m.data).toString('utf8')) as { id: string; ok: boolean; data?: unknown; error?: string };
      answers.push({ gateway: a.id, ok: a.ok, ...(a.ok ? { data: a.data } : { error: a.error ?? 'error' }) });
    }
  } catch (err) {
    if (!/no responders/i.test((err as Error).message)) throw new CommandError(`asking the gateways failed: ${(err as Error).message}`, 1);
  }
  if (answers.length === 0) throw new CommandError(`no gateway answered on ${ADMIN_SUBJECT_PREFIX}.${verb} (is one running on this NATS?)`, 1);
  return answers.sort((a, b) => a.gateway.localeCompare(b.gateway));
}

/** Asks one gateway's admin API over HTTP. */
export async function askGateway(url: string, verb: AdminVerb, token: string | undefined, timeoutMs: number): Promise<FleetAnswer[]> {
  const base = url.replace(/\/+$/, '');
  let r: Response;
  try {
    r = await fetch(`${base}/${verb}`, { headers: token ? { authorization: `Bearer ${token}` } : {}, signal: AbortSignal.timeout(timeoutMs) });
  } catch (err) {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    throw new CommandError(`cannot reach the gateway admin API at ${base}: ${cause?.code ?? cause?.message ?? (err as Error).message}`, 1);
  }
  if (r.status === 401) throw new CommandError(`the gateway at ${base} refused: unauthorized (check --admin-token)`, 1);
  if (!r.ok) throw new CommandError(`the gateway at ${base} answered ${r.status} for /${verb}`, 1);
  return [{ gateway: base, ok: true, data: await r.json() }];
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
export function render(verb: AdminVerb, answers: FleetAnswer[], color: boolean): string {
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
      headers = ['GATEWAY', 'ROUTE', 'BACKEND', 'STATE', 'LAST PROBE', 'IN-FLIGHT', 'REQUESTS', 'FAILURES', 'EJECTIONS'];
      for (const a of ok) {
        for (const b of a.data as BackendView[]) {
          const state = b.available ? paint.green('up', color) : paint.red(!b.healthy ? 'unhealthy' : b.ejected ? 'ejected' : b.breaker === 'open' ? 'breaker open' : 'down', color);
          rows.push([a.gateway, b.route, b.url, state, b.lastProbe ? `${b.lastProbe.ok ? 'ok' : 'failed'} (${b.lastProbe.detail}) ${ago(b.lastProbe.at)}` : '-', String(b.inFlight), String(b.requests), String(b.failures), String(b.ejections)]);
        }
      }
      break;
    case 'circuits':
      headers = ['GATEWAY', 'ROUTE', 'BACKEND', 'STATE', 'FAILURES', 'TRIPS', 'NEXT TRIAL'];
      for (const a of ok) {
        for (const c of a.data as CircuitView[]) {
          const state = c.state === 'closed' ? paint.green(c.state, color) : c.state === 'open' ? paint.red(c.state, color) : paint.yellow(c.state, color);
          rows.push([a.gateway, c.route, c.url, state, String(c.consecutiveFailures), String(c.trips), ago(c.nextTrialAt)]);
        }
      }
      break;
    case 'stats':
      headers = ['GATEWAY', 'ROUTE', 'TARGET', 'REQUESTS', '2XX', '3XX', '4XX', '5XX', 'P50 MS', 'P90 MS', 'P99 MS', 'BYTES'];
      for (const a of ok) {
        for (const s of a.data as StatsView[]) {
          const c = s.byStatusClass;
          rows.push([a.gateway, s.route, s.target, String(s.requests), String(c['2xx']), String(c['3xx']), String(c['4xx']), String(c['5xx']), ms(s.latencyMs.p50), ms(s.latencyMs.p90), ms(s.latencyMs.p99), bytes(s.bytes)]);
        }
      }
      break;
    case 'routes':
      headers = ['GATEWAY', 'SUBJECT', 'REV', 'STATUS', 'ROUTE'];
      for (const a of ok) {
        const r = a.data as RoutesView;
        for (const x of r.applied) rows.push([a.gateway, x.subject, String(x.revision), paint.green('applied', color), `${x.upstreams.map((u) => (u.weight !== 1 ? `${u.url}=${u.weight}` : u.url)).join(' ')} (${x.balancing})`]);
        for (const x of r.rejected) rows.push([a.gateway, x.subject, String(x.revision), paint.red('rejected', color), x.reason]);
      }
      break;
  }
  const body = rows.length > 0 ? table(headers, rows, { color }) : `nothing to show (${ok.length} gateway${ok.length === 1 ? '' : 's'} answered)\n`;
  return body + failed.join('');
}
