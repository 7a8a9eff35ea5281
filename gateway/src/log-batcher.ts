/**
 * Where the gateway's log lines wait before they are written: bytes in a
 * buffer, handed on as one chunk at most MAX_DELAY_MS after the first of
 * them or once BATCH_BYTES are waiting (nginx's `access_log … buffer=64k
 * flush=1s`, with a shorter delay).
 *
 * Why: pino's destination (SonicBoom) writes asynchronously, one fs.write
 * per chunk, and an fs.write is a libuv thread-pool job. Measured here, one
 * costs 45-50 µs of process CPU whatever its size (one 250-byte line: 48 µs;
 * 60 lines: 78 µs). Written as they came, or once per event-loop turn (a few
 * lines), that was 15-20 µs per request on the NATS path, a third of its
 * throughput. Lines are kept as bytes, not strings, so the access log can
 * write its line straight into the buffer (access-log.ts) and nothing is
 * concatenated or converted again on the way out.
 */
import type { pino } from 'pino';

/** Where the batches go: SonicBoom in buffer mode, or a worker's post to its main thread. */
export interface BatchOut {
  write(chunk: Buffer): unknown;
  flush?(cb: (err?: Error) => void): void;
  flushSync?(): void;
}

const BATCH_BYTES = 64 * 1024;
const MAX_DELAY_MS = 100;

export class LogBatcher implements pino.DestinationStream {
  /** The bytes waiting are buffer[0, pos). */
  buffer: Buffer = Buffer.allocUnsafe(BATCH_BYTES);
  pos = 0;
  /** Where the batches go (for flushLogs, which waits for it). */
  readonly destination: BatchOut;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly out: BatchOut) {
    this.destination = out;
    // What is still waiting when the process (or worker thread) exits is
    // written synchronously, as pino does for its own destination.
    process.once('exit', () => {
      this.handOver();
      try {
        this.out.flushSync?.();
      } catch {
        // stdout is gone or busy: nothing more can be done at exit.
      }
    });
  }

  /** A line from pino. */
  write(line: string): void {
    this.reserve(line.length * 3);
    if (this.buffer.length - this.pos < line.length * 3) {
      // Longer than a whole batch: on its own.
      this.out.write(Buffer.from(line, 'utf8'));
      return;
    }
    this.commit(this.pos + this.buffer.write(line, this.pos, 'utf8'));
  }

  /** Whole lines from elsewhere (a worker thread's batch), in order after what waits. */
  writeBytes(chunk: Uint8Array): void {
    this.handOver();
    this.out.write(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
  }

  /**
   * Makes room for `maxBytes` at `pos` in `buffer` (handing over what waits
   * when it does not fit), for a writer that builds a line in place and then
   * calls commit(). A line larger than a batch does not fit: the caller checks.
   */
  reserve(maxBytes: number): void {
    if (this.buffer.length - this.pos < maxBytes) this.handOver();
  }

  /** The line written in place ends at `end`. */
  commit(end: number): void {
    this.pos = end;
    if (end >= BATCH_BYTES / 2) this.handOver();
    else if (this.timer === undefined) {
      // unref: waiting lines never keep the process alive; they are written at exit.
      this.timer = setTimeout(this.onTimer, MAX_DELAY_MS);
      this.timer.unref();
    }
  }

  /** pino's logger.flush(cb) calls this. */
  flush(cb: (err?: Error) => void): void {
    this.handOver();
    if (this.out.flush !== undefined) this.out.flush(cb);
    else cb();
  }

  private readonly onTimer = (): void => {
    this.timer = undefined;
    this.handOver();
  };

  private handOver(): void {
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    if (this.pos === 0) return;
    // The receiver keeps the chunk until it is written: a new buffer for what comes next.
    const chunk = this.buffer.subarray(0, this.pos);
    this.buffer = Buffer.allocUnsafe(BATCH_BYTES);
    this.pos = 0;
    this.out.write(chunk);
  }
}
