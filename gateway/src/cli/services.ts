/**
 * `natsgw services`: every NATS micro service on the account — natsgw
 * mounts and any other (Go, Python, nats.js micro services) — as a table or
 * `--json` (micro-discovery.ts does the asking and the checking).
 */
import type { ServiceView } from '../ops/micro-discovery.js';
import { printableDeep } from './safe-text.js';
import { table } from './table.js';

const ms = (x: number | null) => (x === null ? '-' : x < 10 ? x.toFixed(2) : x.toFixed(1));

/** The table `natsgw services` prints. */
export function renderServices(raw: ServiceView[], color: boolean): string {
  if (raw.length === 0) return 'no micro service answered on $SRV.INFO\n';
  const services = printableDeep(raw);
  return table(
    ['NAME', 'VERSION', 'INSTANCES', 'ENDPOINTS', 'REQUESTS', 'ERRORS', 'AVG MS', 'NATSGW'],
    services.map((s) => [
      s.name,
      s.versions.join(' '),
      String(s.instances),
      s.endpoints.length <= 3 ? s.endpoints.join(' ') : `${s.endpoints.slice(0, 3).join(' ')} (+${s.endpoints.length - 3})`,
      String(s.requests),
      String(s.errors),
      ms(s.averageLatencyMs),
      s.natsgw ? 'yes' : '-',
    ]),
    { color },
  );
}
