/**
 * `natsgw serve --workers N`: N worker threads, each a whole gateway with its
 * own uWS event loop on the same port (SO_REUSEPORT: the kernel spreads new
 * connections over them), its own NATS connection and reply mux. This, the
 * main thread, owns what the process has once: the admin API (HTTP and over
 * NATS, on a NATS connection of its own), one metrics view with the
 * workers' counters summed, and the log (workers send their lines here).
 * A worker that crashes is replaced; the others keep serving.
 */
import { createServer } from 'node:net';
import { Worker } from 'node:worker_threads';
import { connect, nuid, type NatsConnection, type Subscription } from '@nats-io/transport-node';
import { AggregatorRegistry, collectDefaultMetrics, Registry } from 'prom-client';
import { guardConnection } from '@natsgw/service-sdk/nats-guard';
import type { GatewayConfig } from '../config.js';
import type { Gateway } from '../gateway.js';
import { VERSION } from '../gateway.js';
import { createLogger, writeLogLines, type Logger } from '../log.js';
import { natsConnectionOptions } from '../nats/nats-options.js';
import { NatsFaults } from '../nats/nats-faults.js';
import type { AdminVerb, BackendView, CircuitView, GatewayStatus, RoutesView } from '../ops/admin-data.js';
import { startAdminServer, type AdminServer } from '../ops/admin-http.js';
import { mergeBackends, mergeCircuits, mergeRoutes, mergeStats, mergeStatus, type WorkerTraffic } from '../ops/admin-merge.js';
import { serveAdminOverNats } from '../ops/admin-nats.js';
import { servicesOver, type AdminSource, type Readiness } from '../ops/admin-source.js';
import { AdminToken } from '../ops/admin-token.js';
import type { FromWorker, ToWorker, WorkerInit, WorkerQuestion } from './worker-protocol.js';

/** What the CLI needs of a running gateway, one thread or a pool. */
export type ServingGateway = Pick<Gateway, 'id' | 'port' | 'adminPort' | 'connected' | 'failed' | 'inFlight' | 'close'>;

export interface WorkerPool extends ServingGateway {
  /** Worker threads asked for. */
  readonly workers: number;
  /** Worker index (1-based) → thread id, for the workers serving now. */
  readonly threads: Record<number, number>;
  /** Workers started again after a crash, since start. */
  readonly restarts: number;
  /** Makes worker `index` (1-based) throw an uncaught exception, as a bug would: for tests of the crash path. */
  crash(index: number): void;
  /** Wedges worker `index`'s event loop for good: for tests of the shutdown bound. */
  hang(index: number): void;
}

/**
 * close() could not stop these workers: their event loops are wedged. The
 * process can still end, but only by a signal: Node aborts (SIGABRT, a core
 * dump) when it exits normally with such a thread running (exitAfter in
 * cli/process-exit.ts).
 */
export class WedgedWorkersError extends Error {
  override name = 'WedgedWorkersError';
  constructor(readonly workers: number[]) {
    super(`worker${workers.length === 1 ? '' : 's'} ${workers.join(', ')} did not stop (event loop wedged)`);
  }
}

/** How long past its grace period a closing worker may take (closing NATS, flushing its log) before it is terminated. */
const CLOSE_MARGIN_MS = 3000;

/** A worker that does not answer within this long is left out of that admin answer. */
const ASK_TIMEOUT_MS = 2000;
/** Crash-loop backoff: 200 ms, doubling per crash in the last minute, at most 30 s. */
const RESTART_BASE_MS = 200;
const RESTART_MAX_MS = 30_000;
/** V8's young generation per worker: 3 × 2 MiB semi-spaces, as bin/natsgw.js gives the main thread (V8's default grows to 3 × 16 MiB). */
const WORKER_YOUNG_GEN_MB = 6;

interface Slot {
  index: number;
  worker: Worker;
  listening: boolean;
  inFlight: number;
  pending: Map<number, (r: { data?: unknown; error?: string }) => void>;
}

async function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, host, () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/**
 * @example const pool = await startWorkerPool(loadConfig({ flags: { workers: '2' } })); await pool.connected;
 */
export async function startWorkerPool(config: GatewayConfig, deps: { logger?: Logger } = {}): Promise<WorkerPool> {
  const log = deps.logger ?? createLogger(config.logLevel, config.logFormat);
  const id = nuid.next();
  const n = config.workers;
  // Port 0: every worker must listen on the same port, so pick it here.
  const port = config.port === 0 ? await freePort(config.host) : config.port;
  const workerConfig: GatewayConfig = { ...config, port };
  const slots = new Map<number, Slot>();
  let seq = 0;
  let stopping = false;
  let restarts = 0;
  const crashes: number[] = [];
  /** Workers that did not stop at close. */
  const wedged: number[] = [];
  let failure: string | undefined;
  let reportFailure!: (err: Error) => void;
  const failed = new Promise<Error>((resolve) => (reportFailure = resolve));
  const fail = (message: string) => {
    if (failure !== undefined) return;
    failure = message;
    reportFailure(new Error(message));
  };
  let connectedCount = 0;
  let settleConnected!: (err?: Error) => void;
  const connected = new Promise<void>((resolve, reject) => (settleConnected = (err) => (err ? reject(err) : resolve())));
  connected.catch(() => undefined);

  const start = (index: number, first: { resolve(): void; reject(e: Error): void } | undefined): void => {
    const init: WorkerInit = { config: workerConfig, id, worker: index };
    const worker = new Worker(new URL('./worker-main.js', import.meta.url), { workerData: init, resourceLimits: { maxYoungGenerationSizeMb: WORKER_YOUNG_GEN_MB } });
    const slot: Slot = { index, worker, listening: false, inFlight: 0, pending: new Map() };
    slots.set(index, slot);
    let everConnected = false;
    worker.on('message', (m: FromWorker) => {
      switch (m.t) {
        case 'log':
          // To the same destination as this thread's own lines.
          writeLogLines(log, m.lines);
          return;
        case 'listening':
          slot.listening = true;
          first?.resolve();
          return;
        case 'connected':
          if (!everConnected && first !== undefined && ++connectedCount === n) settleConnected();
          everConnected = true;
          return;
        case 'connect-failed':
          if (first !== undefined && !everConnected) {
            settleConnected(new Error(m.message));
            first.reject(new Error(m.message));
          }
          return;
        case 'failed':
          fail(m.message);
          return;
        case 'answer':
          slot.pending.get(m.seq)?.(m);
          slot.pending.delete(m.seq);
          return;
        case 'load':
          slot.inFlight = m.inFlight;
          return;
        case 'closed':
          return;
      }
    });
    worker.on('error', (err) => log.error({ err, worker: index }, 'worker thread error'));
    worker.on('exit', (code) => {
      slots.delete(index);
      for (const answer of slot.pending.values()) answer({ error: 'worker exited' });
      first?.reject(new Error(`worker ${index} exited (${code}) while starting`));
      if (stopping) return;
      const now = Date.now();
      crashes.push(now);
      while (crashes[0]! < now - 60_000) crashes.shift();
      const delay = Math.min(RESTART_MAX_MS, RESTART_BASE_MS * 2 ** (crashes.length - 1));
      log.error({ worker: index, code, restartInMs: delay }, `worker ${index} stopped (exit code ${code}); starting a new one`);
      setTimeout(() => {
        if (stopping) return;
        restarts++;
        start(index, undefined);
      }, delay).unref();
    });
  };

  const ask = (slot: Slot, q: WorkerQuestion): Promise<{ data?: unknown; error?: string }> =>
    new Promise((resolve) => {
      const s = ++seq;
      const timer = setTimeout(() => {
        slot.pending.delete(s);
        resolve({ error: 'no answer' });
      }, ASK_TIMEOUT_MS);
      slot.pending.set(s, (r) => {
        clearTimeout(timer);
        resolve(r);
      });
      slot.worker.postMessage({ t: 'ask', seq: s, q } satisfies ToWorker);
    });
  /** The answers of every serving worker that gave one. */
  const askAll = async <T>(q: WorkerQuestion): Promise<T[]> => {
    const live = [...slots.values()].filter((s) => s.listening);
    const answers = await Promise.all(live.map((s) => ask(s, q)));
    return answers.filter((a) => a.error === undefined).map((a) => a.data as T);
  };

  const processMetrics = new Registry();
  collectDefaultMetrics({ register: processMetrics });
  const gauge = (name: string, help: string, value: () => number, aggregator: 'sum' | 'max' = 'sum') =>
    processMetrics.registerMetric({ name, help, type: 'gauge', aggregator, get: async () => ({ name, help, type: 'gauge', aggregator, values: [{ labels: {}, value: value() }] }) } as never);
  gauge('natsgw_workers', 'Worker threads serving HTTP (--workers).', () => [...slots.values()].filter((s) => s.listening).length);
  gauge('natsgw_worker_restarts', 'Worker threads started again after a crash, since start.', () => restarts);

  /** This thread's own NATS connection (admin over NATS, GET /services), once connected. */
  let nc: NatsConnection | undefined;
  const source: AdminSource = {
    id,
    services: () => servicesOver(nc),
    async answer(verb: AdminVerb): Promise<unknown> {
      switch (verb) {
        case 'status': {
          const [all, traffic] = await Promise.all([askAll<GatewayStatus>('status'), askAll<WorkerTraffic>('traffic')]);
          if (all.length === 0) throw new Error('no worker is serving');
          return { ...mergeStatus(all, traffic, n), version: VERSION, pid: process.pid, shuttingDown: stopping || all.some((s) => s.shuttingDown) };
        }
        case 'routes': {
          const all = await askAll<RoutesView>('routes');
          if (all.length === 0) throw new Error('no worker is serving');
          return mergeRoutes(all);
        }
        case 'backends':
          return mergeBackends(await askAll<BackendView[]>('backends'));
        case 'circuits':
          return mergeCircuits(await askAll<CircuitView[]>('circuits'));
        case 'stats':
          return mergeStats(await askAll<WorkerTraffic>('traffic'));
      }
    },
    async metrics() {
      const all = await askAll<unknown[]>('metrics');
      const registry = AggregatorRegistry.aggregate([...all, await processMetrics.getMetricsAsJSON()] as never);
      return { contentType: registry.contentType, text: await registry.metrics() };
    },
    async failure() {
      if (failure !== undefined) return failure;
      const all = await askAll<string | null>('failure');
      return all.find((f) => f !== null) ?? undefined;
    },
    async readiness(): Promise<Readiness> {
      const all = await askAll<Readiness>('readiness');
      return {
        // Every worker asked for is serving and ready: a pool short of one is taken out of rotation until it is whole.
        ready: !stopping && all.length === n && all.every((r) => r.ready),
        shuttingDown: stopping,
        natsConnected: all.length > 0 && all.every((r) => r.natsConnected),
      };
    },
  };

  // The workers first: the port is open once every one listens.
  try {
    await Promise.all(Array.from({ length: n }, (_, i) => new Promise<void>((resolve, reject) => start(i + 1, { resolve, reject }))));
  } catch (err) {
    stopping = true;
    await Promise.all([...slots.values()].map((s) => closeWorker(s, 0)));
    throw err;
  }
  const token = new AdminToken(config.admin.token);
  let admin: AdminServer;
  try {
    admin = await startAdminServer(config.admin.host, config.admin.port, token, source);
  } catch (err) {
    stopping = true;
    await Promise.all([...slots.values()].map((s) => closeWorker(s, 0)));
    throw err;
  }
  log.info(
    { id, host: config.host, port, adminPort: admin.port, subject: config.rootSubject, workers: n },
    `listening on http://${config.host}:${port} with ${n} workers, root subject ${config.rootSubject}, admin on http://${config.admin.host}:${admin.port}`,
  );

  // Admin over NATS, on this thread's own connection.
  const faults = new NatsFaults(log);
  let adminSubs: Subscription[] = [];
  void (async () => {
    try {
      nc = await connect(natsConnectionOptions(config, `natsgw ${config.rootSubject} ${id} admin`));
    } catch (err) {
      log.error({ err }, 'admin over NATS unavailable: cannot connect');
      return;
    }
    guardConnection(nc, faults.guardEvents);
    if (stopping) return void nc.close();
    adminSubs = serveAdminOverNats(nc, source, token, faults);
    const err = await nc.closed();
    if (!stopping) fail(`the admin NATS connection closed for good${err ? `: ${err.message}` : ''}`);
  })();

  /**
   * Asks a worker to finish its requests within `graceMs` and stop. One that
   * has not exited CLOSE_MARGIN_MS after that (its event loop is wedged: an
   * endless loop, a stuck native call) is terminated, so shutdown always ends.
   */
  function closeWorker(slot: Slot, graceMs: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        // Worker.terminate() cannot help: Node aborts the whole process when a
        // thread ends with uWS's handles open. The thread is left to the exit.
        wedged.push(slot.index);
        log.error({ worker: slot.index, graceMs }, `worker ${slot.index} did not stop within ${graceMs + CLOSE_MARGIN_MS} ms: its event loop is wedged`);
        resolve();
      }, graceMs + CLOSE_MARGIN_MS);
      slot.worker.once('exit', () => {
        clearTimeout(timer);
        resolve();
      });
      slot.worker.postMessage({ t: 'close', graceMs } satisfies ToWorker);
    });
  }

  return {
    id,
    port,
    adminPort: admin.port,
    connected,
    failed,
    workers: n,
    get threads() {
      return Object.fromEntries([...slots.values()].filter((s) => s.listening).map((s) => [s.index, s.worker.threadId]));
    },
    get restarts() {
      return restarts;
    },
    crash(index: number) {
      slots.get(index)?.worker.postMessage({ t: 'crash' } satisfies ToWorker);
    },
    hang(index: number) {
      slots.get(index)?.worker.postMessage({ t: 'hang' } satisfies ToWorker);
    },
    get inFlight() {
      let sum = 0;
      for (const s of slots.values()) sum += s.inFlight;
      return sum;
    },
    async close(graceMs = config.shutdownGraceMs) {
      if (stopping) return;
      stopping = true;
      // Every worker stops listening at once and finishes its requests within the grace period.
      await Promise.all([...slots.values()].map((s) => closeWorker(s, graceMs)));
      for (const s of adminSubs) if (!s.isClosed()) s.unsubscribe();
      if (nc !== undefined && !nc.isClosed()) await nc.drain().catch(() => nc?.close());
      await admin.close();
      if (wedged.length > 0) throw new WedgedWorkersError(wedged);
      log.info('gateway stopped');
    },
  };
}
