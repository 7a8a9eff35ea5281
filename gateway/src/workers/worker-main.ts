/**
 * A worker thread of a `--workers` pool: one whole gateway (its own uWS
 * event loop on the shared port, NATS connection, reply mux and routes
 * watcher) without an admin API of its own. It answers the main thread's
 * questions, sends it its log lines, and closes when told.
 *
 * uWS in a worker thread: if the thread ends while uWS still has sockets
 * open, Node aborts the whole process (uv_loop_close with open handles).
 * So nothing may end this thread without closing uWS first: an uncaught
 * exception is caught here, uWS is closed, and only then does the thread
 * exit (1), for the main thread to start a new one. (Worker.terminate() has
 * no such hook; the pool never uses it.)
 */
import { parentPort, workerData } from 'node:worker_threads';
import { answer } from '../ops/admin-data.js';
import { startGateway, type Gateway } from '../gateway.js';
import { runPreload } from '../preload.js';
import { createBatchedLogger, flushLogs } from '../log.js';
import type { FromWorker, ToWorker, WorkerInit } from './worker-protocol.js';

const port = parentPort!;
const init = workerData as WorkerInit;
const send = (m: FromWorker) => port.postMessage(m);
const log = createBatchedLogger(init.config.logLevel, { write: (lines) => send({ t: 'log', lines }) }, { worker: init.worker });

let gateway: Gateway | undefined;
let exiting = false;

/** Ends the thread, uWS closed first (see above). */
function die(code: number): void {
  if (exiting) return;
  exiting = true;
  gateway?.closeNow();
  void flushLogs(log).finally(() => setImmediate(() => process.exit(code)));
}

process.on('uncaughtException', (err) => {
  log.fatal({ err }, 'worker crashed; closing it (the pool starts a new one)');
  die(1);
});
// process.exit() from anywhere in this thread: uWS must not outlive it.
process.on('exit', () => gateway?.closeNow());

port.on('message', (m: ToWorker) => {
  if (m.t === 'close') {
    void (async () => {
      await gateway?.close(m.graceMs);
      await flushLogs(log);
      send({ t: 'closed' });
      exiting = true;
      port.close();
    })();
    return;
  }
  if (m.t === 'hang') {
    const until = Number.POSITIVE_INFINITY;
    while (Date.now() < until) {
      // wedged, as an endless loop in a bug would be
    }
    return;
  }
  if (m.t === 'crash') {
    setImmediate(() => {
      throw new Error('crash requested');
    });
    return;
  }
  const gw = gateway;
  if (gw === undefined) return send({ t: 'answer', seq: m.seq, error: 'starting' });
  try {
    const v = gw.view;
    switch (m.q) {
      case 'traffic':
        return send({ t: 'answer', seq: m.seq, data: { routes: v.traffic.snapshot(), total: v.traffic.total, rate: v.traffic.ratePerSecond(Date.now()) } });
      case 'metrics':
        void gw.metrics.getMetricsAsJSON().then(
          (data) => send({ t: 'answer', seq: m.seq, data }),
          (err: Error) => send({ t: 'answer', seq: m.seq, error: err.message }),
        );
        return;
      case 'readiness':
        return send({ t: 'answer', seq: m.seq, data: { ready: v.ready(), shuttingDown: v.shuttingDown(), natsConnected: v.nats().connected } });
      case 'failure':
        return send({ t: 'answer', seq: m.seq, data: v.failure() ?? null });
      default:
        return send({ t: 'answer', seq: m.seq, data: answer(v, m.q) });
    }
  } catch (err) {
    send({ t: 'answer', seq: m.seq, error: (err as Error).message });
  }
});

try {
  await runPreload(init.config.preload);
  gateway = await startGateway(init.config, { logger: log, id: init.id, embedded: true });
} catch (err) {
  log.fatal({ err }, 'worker could not start');
  send({ t: 'connect-failed', message: (err as Error).message });
  die(1);
}
if (gateway !== undefined) {
  const gw = gateway;
  send({ t: 'listening', port: gw.port });
  gw.connected.then(
    () => send({ t: 'connected' }),
    (err: Error) => send({ t: 'connect-failed', message: err.message }),
  );
  void gw.failed.then((err) => send({ t: 'failed', message: err.message }));
  // In-flight count for the main thread's shutdown log; once a second is plenty.
  setInterval(() => send({ t: 'load', inFlight: gw.inFlight }), 1000).unref();
}
