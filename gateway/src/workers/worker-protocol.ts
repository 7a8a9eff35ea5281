/**
 * Messages between a `--workers` pool's main thread and its worker threads
 * (postMessage, structured clone). Defined once, used by both sides.
 */
import type { GatewayConfig } from '../config.js';
import type { AdminVerb } from '../ops/admin-data.js';
import type { Readiness } from '../ops/admin-source.js';

/** What a worker thread starts with (workerData). */
export interface WorkerInit {
  config: GatewayConfig;
  /** The pool's fleet id: one gateway to the fleet, however many threads. */
  id: string;
  /** 1-based, in every log line the worker writes. */
  worker: number;
}

/** What main asks a worker: an admin verb, its raw traffic (for merged percentiles), its metrics, its readiness. */
export type WorkerQuestion = AdminVerb | 'traffic' | 'metrics' | 'readiness' | 'failure';

export type ToWorker =
  | { t: 'ask'; seq: number; q: WorkerQuestion }
  | { t: 'close'; graceMs: number }
  /** Throw an uncaught exception, as a bug would (tests of the crash path). */
  | { t: 'crash' }
  /** Block the thread's event loop for good, as an endless loop in a bug would (tests of the shutdown bound). */
  | { t: 'hang' };

export type FromWorker =
  | { t: 'listening'; port: number }
  | { t: 'connected' }
  | { t: 'connect-failed'; message: string }
  | { t: 'failed'; message: string }
  | { t: 'answer'; seq: number; data?: unknown; error?: string }
  /** Whole log lines, as the worker's LogBatcher hands them over. */
  | { t: 'log'; lines: Uint8Array }
  | { t: 'load'; inFlight: number }
  | { t: 'closed' };

export type { Readiness };
