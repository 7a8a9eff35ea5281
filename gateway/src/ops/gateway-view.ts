/**
 * What the admin API, the metrics and the fleet view read about a running
 * gateway. gateway.ts provides it; nothing here changes the gateway.
 */
import type { RouteTable } from '../routes/route-table.js';
import type { OverridesStatus, ReloadResult } from '../routes/routes-watcher.js';
import type { TrafficStats } from './traffic-stats.js';
import type { FaultKind } from '../nats/nats-faults.js';
import type { WsSnapshot } from '../ws/ws-stats.js';

export interface NatsState {
  connected: boolean;
  server: string | undefined;
  reconnects: number;
}

export interface GatewayView {
  readonly id: string;
  readonly version: string;
  readonly rootSubject: string;
  readonly startedAt: Date;
  readonly routes: RouteTable;
  readonly traffic: TrafficStats;
  readonly reloads: Record<ReloadResult, number>;
  /** Hostile or broken input from NATS, and internal errors, counted (nats-faults.ts). */
  readonly faults: Readonly<Record<FaultKind, number>>;
  inFlight(): number;
  /** Requests streaming over NATS right now (protocol v2). */
  openStreams(): number;
  /** Request-body bytes streamed uploads hold beyond their windows (nats/upload-overrun.ts). */
  uploadOverrunBytes(): number;
  /** WebSocket connections and their traffic (ws/ws-stats.ts). */
  websockets(): WsSnapshot;
  nats(): NatsState;
  overrides(): OverridesStatus;
  /** Listening, connected to NATS, not shutting down. */
  ready(): boolean;
  /** Why the gateway can no longer serve (its NATS connection closed for good); undefined while it can. */
  failure(): string | undefined;
  shuttingDown(): boolean;
}
