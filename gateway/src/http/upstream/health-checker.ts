/**
 * Active health checks: GET `path` on a backend every `intervalMs` (jittered
 * ±10 % so a fleet of gateways does not probe in step), more often
 * (`unhealthyIntervalMs`) while it is down. `unhealthyThreshold` failed probes
 * in a row mark it unhealthy, `healthyThreshold` good ones healthy again:
 * rise/fall thresholds stop a flapping backend from oscillating in and out.
 */
import type { Dispatcher, Pool } from 'undici';
import type { Upstream } from './upstream.js';

/**
 * One GET on `pool`, its body read and dropped; resolves with the status.
 * Through `dispatch`, as the proxy sends: undici's request() API lives in
 * the part of undici the gateway does not load (see upstream.ts).
 */
function get(pool: Pool, path: string, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    let status = 0;
    // undici takes a handler without onRequestStart for its older handler API.
    const handler: Dispatcher.DispatchHandler = {
      onRequestStart() {},
      onResponseData() {},
      onResponseStart(_c, statusCode) {
        status = statusCode;
      },
      onResponseEnd() {
        resolve(status);
      },
      onResponseError(_c, err) {
        reject(err);
      },
    };
    pool.dispatch({ path, method: 'GET', headersTimeout: timeoutMs, bodyTimeout: timeoutMs, headers: { 'user-agent': 'natsgw-health-check' } }, handler);
  });
}

export interface HealthCheckSettings {
  path: string;
  intervalMs: number;
  unhealthyIntervalMs: number;
  timeoutMs: number;
  unhealthyThreshold: number;
  healthyThreshold: number;
  expectedStatus: { min: number; max: number };
}

export class HealthChecker {
  private timer: NodeJS.Timeout | undefined;
  private goodInARow = 0;
  private badInARow = 0;
  private stopped = false;

  constructor(
    private readonly upstream: Upstream,
    public settings: HealthCheckSettings,
  ) {}

  start(): void {
    this.upstream.probed = true;
    this.schedule(Math.random() * Math.min(this.settings.intervalMs, 1000));
  }

  stop(): void {
    this.stopped = true;
    this.upstream.probed = false;
    if (this.timer) clearTimeout(this.timer);
  }

  private schedule(delayMs?: number): void {
    if (this.stopped) return;
    const base = this.upstream.healthy ? this.settings.intervalMs : this.settings.unhealthyIntervalMs;
    const delay = delayMs ?? base * (0.9 + Math.random() * 0.2);
    this.timer = setTimeout(() => void this.probe(), delay);
    this.timer.unref();
  }

  private async probe(): Promise<void> {
    const s = this.settings;
    const u = this.upstream;
    let ok = false;
    let detail: string;
    try {
      const status = await get(u.pool, u.basePath + s.path, s.timeoutMs);
      ok = status >= s.expectedStatus.min && status <= s.expectedStatus.max;
      detail = `status ${status}`;
    } catch (err) {
      detail = (err as { code?: string }).code ?? (err as Error).message;
    }
    if (this.stopped) return;
    u.lastProbe = { at: Date.now(), ok, detail };
    if (ok) {
      this.badInARow = 0;
      if (!u.healthy && ++this.goodInARow >= s.healthyThreshold) {
        this.goodInARow = 0;
        u.ejectedUntil = 0; // passing probes end an ejection early
        u.setHealthy(true);
      }
    } else {
      this.goodInARow = 0;
      if (u.healthy && ++this.badInARow >= s.unhealthyThreshold) {
        this.badInARow = 0;
        u.setHealthy(false);
      }
    }
    this.schedule();
  }
}
