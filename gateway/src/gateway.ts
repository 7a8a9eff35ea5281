/**
 * Assembles a gateway: the uWS listener, the NATS connection (kept in the
 * background, reconnecting forever), the reply mux between them, the
 * overrides watcher, and the operations side (admin API over HTTP and NATS,
 * metrics, access log).
 */
import { readFileSync } from 'node:fs';
import { connect, nuid, type NatsConnection, type Subscription } from '@nats-io/transport-node';
import type { us_listen_socket } from 'uWebSockets.js';
import type { GatewayConfig } from './config.js';
import { HttpFront, type Exchange, type NatsLink } from './front/http-front.js';
import { createLogger, type Logger } from './log.js';
import { natsConnectionOptions } from './nats/nats-options.js';
import { startAdminServer, type AdminServer } from './ops/admin-http.js';
import { serveAdminOverNats } from './ops/admin-nats.js';
import { AdminToken } from './ops/admin-token.js';
import type { GatewayView } from './ops/gateway-view.js';
import { createAccessLog } from './ops/access-log.js';
import { createMetrics } from './ops/metrics.js';
import { viewSource } from './ops/admin-source.js';
import type { Registry } from 'prom-client';
import { TrafficStats } from './ops/traffic-stats.js';
import { RouteTable } from './routes/route-table.js';
import { FleetLimits } from './policy/fleet-limits.js';
import { RoutesWatcher, type OverridesStatus, type ReloadResult } from './routes/routes-watcher.js';
import { NatsFaults } from './nats/nats-faults.js';
import { ReplyMux } from './nats/reply-mux.js';
import { guardConnection } from '@natsgw/service-sdk/nats-guard';
import { loadUws, uwsHeadLimitBytes } from './front/uws.js';
import { WsFront } from './ws/ws-front.js';
import { CorkAnchor } from './ws/cork-anchor.js';
import { DEFAULT_STREAM_WINDOW, WS_CLOSE } from '@natsgw/service-sdk/protocol';

export const VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

export interface Gateway {
  /** This gateway's id on the fleet (NATS admin subjects use it). */
  readonly id: string;
  /** The port actually listened on (useful with port 0). */
  readonly port: number;
  /** The admin API's port. */
  readonly adminPort: number;
  /** Resolves once the first NATS connection is up. */
  readonly connected: Promise<void>;
  /** Requests accepted and not yet answered. */
  readonly inFlight: number;
  /** Requests whose body or response is streaming over NATS right now (protocol v2). */
  readonly openStreams: number;
  /** The NATS connection, once established. */
  readonly nats: NatsConnection | undefined;
  /** The effective overrides. */
  readonly routes: RouteTable;
  /** Whether overrides are being followed (JetStream reachable). */
  readonly overrides: OverridesStatus;
  /** What the admin API and metrics read. */
  readonly view: GatewayView;
  /** This gateway's Prometheus registry. */
  readonly metrics: Registry;
  /**
   * Resolves (never rejects) with the reason when the gateway can no longer
   * serve and will not recover by itself: its NATS connection closed for
   * good (nats.js gives up after repeated authorization errors: revoked
   * user, expired JWT, rotated credentials). /healthz answers 503 from then
   * on; the CLI exits 1 so a supervisor restarts it.
   */
  readonly failed: Promise<Error>;
  /**
   * Stops accepting requests (readiness goes false at once), lets those in
   * flight finish for up to `graceMs`, then closes connections and drains NATS.
   */
  close(graceMs?: number): Promise<void>;
  /** Closes the listener and every HTTP connection at once, synchronously (a worker thread about to end: uWS must not outlive it). */
  closeNow(): void;
}

export interface GatewayDeps {
  logger?: Logger;
  /** The fleet id to use (a worker thread takes its pool's). */
  id?: string;
  /**
   * A worker thread of a `--workers` pool: no admin API of its own (the
   * pool's main thread serves one for all), no process-wide metrics.
   */
  embedded?: boolean;
}

/**
 * Starts a gateway with a validated configuration.
 * @example
 *   const gw = await startGateway(loadConfig({ flags: { port: 0 } }));
 *   await gw.connected;
 *   // ... fetch(`http://127.0.0.1:${gw.port}/foo`)
 *   await gw.close();
 */
export async function startGateway(config: GatewayConfig, deps: GatewayDeps = {}): Promise<Gateway> {
  const log = deps.logger ?? createLogger(config.logLevel, config.logFormat);
  const uWS = loadUws(config.maxHeaderBytes);
  if (uwsHeadLimitBytes < config.maxHeaderBytes) {
    log.warn(
      { maxHeaderSize: config.maxHeaderBytes, uwsLimit: uwsHeadLimitBytes },
      'request heads are limited to UWS_HTTP_MAX_HEADERS_SIZE bytes, fixed when uWebSockets.js loaded; larger ones get 431 from uWS',
    );
  }
  const id = deps.id ?? nuid.next();
  const embedded = deps.embedded === true;
  const startedAt = new Date();
  const traffic = new TrafficStats();
  const reloads: Record<ReloadResult, number> = { applied: 0, rejected: 0, removed: 0 };
  const faults = new NatsFaults(log);
  const natsState = { connected: false, server: undefined as string | undefined, reconnects: 0 };
  let listening = false;
  let stopping = false;
  let failure: Error | undefined;
  let reportFailure!: (err: Error) => void;
  const failed = new Promise<Error>((resolve) => (reportFailure = resolve));

  const routes = new RouteTable(config.rootSubject, {
    onBreakerChange: (u, from, to) => log.warn({ upstream: u.url, from, to }, `circuit breaker ${to}`),
    onEjected: (u, forMs) => log.warn({ upstream: u.url, forMs, ejections: u.ejections }, 'backend ejected after consecutive failures'),
    onHealthChange: (u, healthy) => (healthy ? log.info({ upstream: u.url }, 'backend healthy') : log.warn({ upstream: u.url, lastProbe: u.lastProbe }, 'backend unhealthy')),
  });
  const access = config.accessLog ? createAccessLog(log) : undefined;
  // WebSocket closes are rare next to requests: pino's own path is fine for them.
  const accessLine = access !== undefined ? log.child({ kind: 'access' }) : undefined;
  const front = new HttpFront({
    rootSubject: config.rootSubject,
    timeoutMs: config.timeoutMs,
    maxBodyBytes: config.maxBodyBytes,
    maxHeaderBytes: config.maxHeaderBytes,
    streamIdleMs: config.streamIdleMs,
    maxUploadBufferBytes: config.maxUploadBufferBytes,
    trustedProxies: config.trustedProxies,
    traceSampling: config.traceSampling,
    version: VERSION,
    routes,
    traffic,
    onEvent(event) {
      if (event.type === 'bad-reply') log.warn({ subject: event.subject, requestId: event.requestId, reason: event.reason }, 'invalid reply from service');
      else if (event.type === 'service-error') log.debug({ subject: event.subject, requestId: event.requestId, code: event.code, text: event.text }, 'service error reply');
      else if (event.type === 'upstream-try') {
        if (event.outcome !== 'success') log.debug({ route: event.route, upstream: event.upstream, outcome: event.outcome, detail: event.detail, requestId: event.requestId }, 'upstream try');
      } else if (event.type === 'upstream-failed') {
        // What the client is not told (backend addresses, OS errors, breaker states); /backends shows the same.
        log.debug({ route: event.route, code: event.code, detail: event.detail, requestId: event.requestId }, 'override request failed');
      } else faults.record('internal-error', { err: event.error, requestId: event.requestId }, 'internal error while handling a request');
    },
    onComplete: access,
  });

  let watcher: RoutesWatcher | undefined;
  const view: GatewayView = {
    id,
    version: VERSION,
    rootSubject: config.rootSubject,
    startedAt,
    routes,
    traffic,
    reloads,
    faults: faults.counts,
    inFlight: () => front.inFlight,
    openStreams: () => front.openStreams,
    uploadOverrunBytes: () => front.uploadOverrun.heldBytes,
    websockets: () => ws.stats.snapshot(ws.topics.size),
    nats: () => ({ ...natsState }),
    overrides: () => watcher?.status ?? { state: 'starting', bucket: config.routesBucket, since: startedAt.toISOString() },
    ready: () => listening && natsState.connected && !stopping,
    failure: () => failure?.message,
    shuttingDown: () => stopping,
  };
  const token = new AdminToken(config.admin.token);
  const metrics = createMetrics(view, !embedded);

  const app = uWS.App();
  const anchor = new CorkAnchor(uWS);
  const ws = new WsFront(
    app,
    { ...config.ws, window: DEFAULT_STREAM_WINDOW },
    {
      badFrame: (ex, reason) => log.warn({ subject: ex.subject, requestId: ex.requestId, reason }, 'invalid WebSocket frame from service'),
      closed: (ex, session, code, reason, durationMs) =>
        accessLine?.info(
          {
            requestId: ex.requestId,
            path: ex.path,
            subject: ex.subject,
            ws: 'close',
            code,
            ...(reason !== '' ? { reason } : {}),
            durationMs: Math.round(durationMs),
            messagesIn: session.messagesIn,
            messagesOut: session.messagesOut,
            bytesIn: session.bytesIn,
            bytesOut: session.bytesOut,
          },
          'websocket closed',
        ),
      topicRefused: (subject, reason) => log.warn({ subject, reason }, 'WebSocket topic message not delivered'),
    },
    () => link?.maxPayload ?? 1024 * 1024,
    anchor,
  );
  front.ws = ws;
  // Upgrade requests (GET with Upgrade: websocket) land here; every other request in front.handle.
  app.ws('/*', ws.behavior(front.handleUpgrade));
  app.any('/*', front.handle);
  const listenSocket = await new Promise<us_listen_socket>((resolve, reject) => {
    app.listen(config.host, config.port, (socket) => {
      if (socket) resolve(socket);
      else reject(new Error(`cannot listen on ${config.host}:${config.port} (address in use or not available)`));
    });
  });
  const port = uWS.us_socket_local_port(listenSocket);
  // Only once listening: a gateway that cannot listen must leave nothing open behind it.
  await anchor.start();
  // Each closed once: closing a uWS listen socket twice is not safe.
  let listenerOpen = true;
  let appOpen = true;
  const closeListener = () => {
    if (listenerOpen) uWS.us_listen_socket_close(listenSocket);
    listenerOpen = false;
  };
  const closeUws = () => {
    closeListener();
    if (appOpen) app.close();
    appOpen = false;
  };
  let admin: AdminServer | undefined;
  let nc: NatsConnection | undefined;
  try {
    if (!embedded)
      admin = await startAdminServer(
        config.admin.host,
        config.admin.port,
        token,
        viewSource(view, metrics, () => nc),
      );
  } catch (err) {
    anchor.close();
    closeUws();
    throw err;
  }
  listening = true;
  log.info(
    { id, host: config.host, port, adminPort: admin?.port, subject: config.rootSubject, nats: config.natsServers },
    `listening on http://${config.host}:${port}, root subject ${config.rootSubject}` + (admin !== undefined ? `, admin on http://${config.admin.host}:${admin.port}` : ''),
  );

  let link: NatsLink | undefined;
  let adminSubs: Subscription[] = [];
  let fleetLimits: FleetLimits | undefined;

  const connected = (async () => {
    log.info({ servers: config.natsServers }, 'connecting to NATS');
    nc = await connect(natsConnectionOptions(config, `natsgw ${config.rootSubject} ${id}`));
    // Before any subscription: no message may stop this connection's reader.
    if (!guardConnection(nc, faults.guardEvents)) log.warn('this nats.js has no message dispatch to guard: a malformed message could stall the connection');
    if (stopping) {
      await nc.close();
      return;
    }
    const mux = new ReplyMux<Exchange>(nc, front, config.timeoutMs);
    link = { mux, maxPayload: nc.info?.max_payload ?? 1024 * 1024 };
    front.link = link;
    ws.link = { queueFrame: (ex, inbox, data) => mux.queueFrame(ex, inbox, data), release: (ex) => front.release(ex), hold: (ex) => mux.hold(ex), nc };
    natsState.connected = true;
    natsState.server = nc.getServer();
    log.info({ server: nc.getServer(), maxPayload: link.maxPayload }, 'connected to NATS');
    void watchStatus(nc);
    void watchClosed(nc);
    if (!embedded)
      adminSubs = serveAdminOverNats(
        nc,
        viewSource(view, metrics, () => nc),
        token,
        faults,
      );
    fleetLimits = new FleetLimits(nc, routes, id);
    watcher = new RoutesWatcher(nc, config.routesBucket, routes, log, (result) => reloads[result]++, config.routesReplicas);
    void watcher.run();
  })();
  connected.catch((err: unknown) => log.error({ err }, 'NATS connection failed'));

  /** A connection that closes while we are not stopping will not come back: say so, once. */
  async function watchClosed(conn: NatsConnection): Promise<void> {
    const err = await conn.closed();
    if (stopping) return;
    failure = err ?? new Error('the connection was closed');
    natsState.connected = false;
    front.link = undefined;
    link?.mux.failAll();
    log.fatal({ err: failure }, `NATS connection closed for good (${failure.message}); this gateway cannot serve until it is restarted`);
    reportFailure(failure);
  }

  async function watchStatus(conn: NatsConnection): Promise<void> {
    for await (const s of conn.status()) {
      if (s.type === 'disconnect') {
        front.link = undefined;
        natsState.connected = false;
        link?.mux.failAll();
        log.warn({ server: s.server }, 'disconnected from NATS; answering 503 while reconnecting');
      } else if (s.type === 'reconnect') {
        if (link !== undefined) {
          link.maxPayload = conn.info?.max_payload ?? link.maxPayload;
          front.link = link;
        }
        natsState.connected = true;
        natsState.server = conn.getServer();
        natsState.reconnects++;
        log.info({ server: s.server }, 'reconnected to NATS');
        // The routes watch may have been served by the server we lost.
        watcher?.restart();
      } else if (s.type === 'error') {
        log.warn({ err: s.error }, 'NATS error');
      }
    }
  }

  return {
    id,
    port,
    adminPort: admin?.port ?? 0,
    metrics,
    connected,
    failed,
    view,
    get inFlight() {
      return front.inFlight;
    },
    get openStreams() {
      return front.openStreams;
    },
    get nats() {
      return nc;
    },
    routes,
    get overrides() {
      return view.overrides();
    },
    closeNow() {
      stopping = true;
      front.closing = true;
      anchor.close();
      closeUws();
    },
    async close(graceMs = config.shutdownGraceMs) {
      if (stopping) return;
      // Readiness goes false first, so a load balancer stops sending traffic.
      stopping = true;
      front.closing = true;
      closeListener();
      const until = Date.now() + graceMs;
      // WebSocket connections may end by themselves within the grace period too; the rest get 1001 (going away).
      while ((front.inFlight > 0 || ws.open > 0) && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
      if (front.inFlight > 0) log.warn({ inFlight: front.inFlight, graceMs }, 'grace period over; closing with requests still in flight');
      if (ws.open > 0) log.info({ websockets: ws.open }, 'grace period over; closing WebSocket connections with 1001');
      ws.closeAll(WS_CLOSE.goingAway, 'the gateway is shutting down');
      // Drops the keep-alive connections that are left.
      closeUws();
      front.link = undefined;
      await watcher?.stop();
      routes.clear();
      link?.mux.close();
      front.close();
      ws.close();
      for (const s of adminSubs) if (!s.isClosed()) s.unsubscribe();
      fleetLimits?.close();
      if (nc !== undefined && !nc.isClosed()) await nc.drain().catch(() => nc?.close());
      await admin?.close();
      log.info('gateway stopped');
    },
  };
}
