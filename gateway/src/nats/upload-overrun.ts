/**
 * Request-body bytes a front holds beyond its streams' windows, across all
 * of them, and the most it may hold.
 *
 * A streamed upload pauses the client's socket once a window of body waits
 * for the service's credit (nats-stream.ts). uWebSockets.js v20.51 goes on
 * reading a paused socket for as long as each read fills its 512 KiB buffer
 * (uSockets loop.c `read_more`, there since February 2024, master too), and
 * onData lends each piece only for the call, so what arrives then has to be
 * copied and kept. One resume can bring in a whole TCP receive buffer (up to
 * `net.ipv4.tcp_rmem`'s maximum: 6 MiB by default, 32 MiB on this machine)
 * plus what the client sends while those reads last: a client that keeps up
 * with them (a busy gateway core) can bring in most of its body, so nothing
 * bounds a stream's overrun but this limit. Each stream charges what
 * it holds beyond its window here; a piece that takes the total past the
 * limit cuts its stream off (upload-buffer-full), so many fast clients cannot
 * make the gateway hold a receive buffer each.
 */
export class UploadOverrun {
  /** Bytes held beyond the windows right now. */
  heldBytes = 0;

  constructor(readonly limitBytes: number) {}

  /** A stream's charge grows (or, negative, shrinks) by `bytes`. */
  add(bytes: number): void {
    this.heldBytes += bytes;
  }

  /** The streams hold more than the limit. */
  get exceeded(): boolean {
    return this.heldBytes > this.limitBytes;
  }
}
