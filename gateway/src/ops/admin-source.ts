/**
 * What the admin API (HTTP and NATS) asks of a running gateway. One
 * gateway answers from its own view (viewSource); a gateway with --workers
 * answers by asking every worker thread and merging (workers/worker-pool.ts).
 */
import type { NatsConnection } from '@nats-io/transport-node';
import type { Registry } from 'prom-client';
import { answer, type AdminVerb } from './admin-data.js';
import type { GatewayView } from './gateway-view.js';
import type { ServicesResult } from './micro-discovery.js';

/** How long GET /services collects answers from the account's micro services. */
const SERVICES_WAIT_MS = 1000;

/** Every micro service on the account, asked over `nc` (null: not connected to NATS). */
export async function servicesOver(nc: NatsConnection | undefined): Promise<ServicesResult | null> {
  if (nc === undefined || nc.isClosed()) return null;
  // Imported when first asked: discovery and its schema checks (ajv-formats) are for GET /services only.
  const { discoverServices } = await import('./micro-discovery.js');
  return discoverServices(nc, SERVICES_WAIT_MS);
}

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
  /** Every NATS micro service on the account (GET /services); null while not connected to NATS. */
  services(): Promise<ServicesResult | null>;
}

/** The admin source of a gateway running in one thread. */
export function viewSource(view: GatewayView, metrics?: Registry, nats: () => NatsConnection | undefined = () => undefined): AdminSource {
  return {
    id: view.id,
    answer: async (verb) => answer(view, verb),
    metrics: async () => {
      if (metrics === undefined) throw new Error('no metrics registry');
      return { contentType: metrics.contentType, text: await metrics.metrics() };
    },
    failure: async () => view.failure(),
    readiness: async () => ({ ready: view.ready(), shuttingDown: view.shuttingDown(), natsConnected: view.nats().connected }),
    services: () => servicesOver(nats()),
  };
}
