/**
 * What the admin API (HTTP and NATS) asks of a running gateway. One
 * gateway answers from its own view (viewSource); a gateway with --workers
 * answers by asking every worker thread and merging (workers/worker-pool.ts).
 */
import type { Registry } from 'prom-client';
import { answer, type AdminVerb } from './admin-data.js';
import type { GatewayView } from './gateway-view.js';

export interface Readiness {
  ready: boolean;
  shuttingDown: boolean;
  natsConnected: boolean;
}

export interface AdminSource {
  /** The gateway's id on the fleet. */
  readonly id: string;
  answer(verb: AdminVerb): Promise<unknown>;
  /** Prometheus text and its content type. */
  metrics(): Promise<{ contentType: string; text: string }>;
  /** Why the gateway can no longer serve; undefined while it can. */
  failure(): Promise<string | undefined>;
  readiness(): Promise<Readiness>;
}

/** The admin source of a gateway running in one thread. */
export function viewSource(view: GatewayView, metrics?: Registry): AdminSource {
  return {
    id: view.id,
    answer: async (verb) => answer(view, verb),
    metrics: async () => {
      if (metrics === undefined) throw new Error('no metrics registry');
      return { contentType: metrics.contentType, text: await metrics.metrics() };
    },
    failure: async () => view.failure(),
    readiness: async () => ({ ready: view.ready(), shuttingDown: view.shuttingDown(), natsConnected: view.nats().connected }),
  };
}
