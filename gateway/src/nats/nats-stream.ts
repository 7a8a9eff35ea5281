/**
 * The gateway's side of one v2 stream (PROTOCOL.md §7): a request body
 * larger than one NATS message going up, a response written over time coming
 * down, or both, between one HTTP client and the one service instance that
 * took the request (its private inbox).
 *
 * Flow control both ways is credit in bytes:
 * - up: the service grants credit as its handler reads; what the client sends
 *   beyond it waits here, and uWS stops reading the socket (pause) once a
 *   window's worth waits (uWS reads on past a pause while its reads fill its
 *   buffer: what that brings in beyond the window is charged to the front's
 *   UploadOverrun, upload-overrun.ts, and past its limit the stream is cut off);
 * - down: the gateway grants the service one window up front (the request's
 *   `credit`) and tops it up as uWS takes the bytes; while the client's
 *   socket has backpressure nothing is granted.
 * So a stream holds about one window in each direction (plus what uWS
 * buffered after a write that reported backpressure, and an upload's overrun).
 *
 * Every frame to the service is published with the request's reply subject:
 * when the service is gone, NATS answers no-responders there and the stream
 * ends at once. Quiet streams get a probe every PROBE_INTERVAL_MS for the
 * same reason; a stream where it is the service's turn and nothing comes for
 * the idle limit is cut off.
 */
import { DEFAULT_STREAM_WINDOW, encodeCancel, encodeCredit, encodeData, frameBodyLimit, PROBE_FRAME, PROBE_INTERVAL_MS, takeBytes, type Frame, type ReplyEnvelope } from '@natsgw/service-sdk/protocol';
import type { FailureCode } from '../errors.js';
import type { Exchange } from '../front/exchange.js';
import { endHead } from '../front/respond.js';
import type { UploadOverrun } from './upload-overrun.js';

/** What a stream needs from the front and the NATS link. */
export interface StreamOwner {
  /** Publishes a frame to the service's inbox with the request's reply subject; false when NATS refused it. */
  publishFrame(ex: Exchange, inbox: string, data: Uint8Array): boolean;
  /** Writes the response head (status and headers, corked by the caller); returns the Content-Length the service announced, or -1. */
  writeHead(ex: Exchange, reply: ReplyEnvelope): number;
  /** The response is complete: count it once, release the request. */
  finish(ex: Exchange): void;
  /** Ends the exchange with a problem response (before the head only). */
  failCorked(ex: Exchange, code: FailureCode, detail: string, close: boolean): void;
  /** Forgets the exchange's reply subject. */
  release(ex: Exchange): void;
  /** What the front's uploads hold beyond their windows, and its limit. */
  readonly uploadOverrun: UploadOverrun;
}

/** What a streamed raw reply may have waiting for a slow client: two messages, or two windows, whichever is more. */
export const rawStreamBufferLimit = (maxPayload: number): number => 2 * Math.max(maxPayload, DEFAULT_STREAM_WINDOW);

export class NatsStream {
  /** The service's private inbox, once it named it. */
  inbox = '';
  /** Last time the service sent something other than a probe, or was given something to do (ms, performance clock). */
  idleSince: number;
  lastSentAt: number;
  readonly frameLimit: number;

  // Up: the request body.
  /** The request body streams (v2 head with more). */
  readonly uploading: boolean;
  private upQueue: Buffer[] = [];
  private upQueued = 0;
  /** What this stream has charged to the owner's UploadOverrun: upQueued beyond one window. */
  private overrun = 0;
  private upCredit = 0;
  private upSeq = 0;
  /** The client has sent the whole body. */
  upEnded = false;
  /** The last body frame is out. */
  upDone = false;
  /** When upDone became true: the head timeout counts from there. */
  upDoneAt = 0;
  private paused = false;

  // Down: the response body.
  headWritten = false;
  private downSeq = 0;
  private granted: number;
  private received = 0;
  private consumed = 0;
  /** Content-Length announced by the service (tryEnd mode), or -1 (chunked). */
  private total = -1;
  private written = 0;
  /** The client's socket has backpressure: nothing is granted until uWS reports it writable. */
  private backpressure = false;
  private writableHooked = false;
  /** tryEnd mode: body waiting for the client's socket, in order (at most about a window). */
  private downQueue: Buffer[] = [];
  private downQueued = 0;
  private over = false;
  /**
   * Raw mode (a streamed raw reply, PROTOCOL.md §12): no credit, no inbox,
   * so nothing slows the service down; what waits for a slow client is
   * bounded by this many bytes instead, and beyond it the response is cut off.
   */
  private readonly raw: boolean;
  private readonly rawBufferLimit: number;

  constructor(
    private readonly ex: Exchange,
    private readonly owner: StreamOwner,
    maxPayload: number,
    uploading: boolean,
    now: number,
    raw = false,
  ) {
    this.frameLimit = frameBodyLimit(maxPayload);
    this.uploading = uploading;
    this.upDone = !uploading;
    // A raw service has no credit to stay within.
    this.raw = raw;
    this.granted = raw ? Number.POSITIVE_INFINITY : DEFAULT_STREAM_WINDOW;
    this.rawBufferLimit = raw ? rawStreamBufferLimit(maxPayload) : Number.POSITIVE_INFINITY;
    this.idleSince = now;
    this.lastSentAt = now;
  }

  /** True once the stream ended one way or another. */
  get ended(): boolean {
    return this.over;
  }

  private send(data: Uint8Array, now: number): boolean {
    if (this.inbox === '') return true;
    this.lastSentAt = now;
    return this.owner.publishFrame(this.ex, this.inbox, data);
  }

  // Up

  /** A chunk of the request body from uWS (already copied). */
  onBody(chunk: Buffer, last: boolean, now: number): void {
    this.onBodyView(chunk, last, now, false);
  }

  /**
   * A chunk of the request body as uWS lends it (valid only during its
   * onData callback): what the credit allows leaves at once, straight from
   * it; only the rest is copied to wait. `owned` chunks are kept as they are.
   */
  onBodyView(view: Uint8Array, last: boolean, now: number, borrowed = true): void {
    if (this.over) return;
    let offset = 0;
    if (this.upQueued === 0 && this.inbox !== '') {
      while (offset < view.length && this.upCredit > 0) {
        const n = Math.min(view.length - offset, this.upCredit, this.frameLimit);
        const end = offset + n === view.length;
        this.upCredit -= n;
        if (!this.send(encodeData(++this.upSeq, [view.subarray(offset, offset + n)], n, !(last && end)), now)) return this.lost();
        offset += n;
        if (last && end) this.markUpDone(now);
      }
    }
    if (offset < view.length) {
      const rest = view.subarray(offset);
      this.upQueue.push(borrowed ? Buffer.from(rest) : (rest as Buffer));
      this.upQueued += rest.length;
    }
    if (last) this.upEnded = true;
    this.pumpUp(now);
    if (this.over) return;
    const overrun = this.owner.uploadOverrun;
    if (this.overrun > 0 && overrun.exceeded) {
      return this.broken('upload-buffer-full', `uploads read past their pause hold over ${overrun.limitBytes} bytes (--max-upload-buffer)`, true, now);
    }
    if (!this.paused && !this.upEnded && this.upQueued >= DEFAULT_STREAM_WINDOW) {
      // A window waits for credit: stop reading the client (uWS also stops its idle timer).
      this.paused = true;
      this.ex.res.pause();
    } else if (this.paused && !last) {
      // This was read past the pause, and uWS, counting it as the client's
      // progress, re-armed its 10 s idle timer (every 160 KiB, HttpContext.h):
      // had the stream then waited longer than that for credit, uWS would have
      // closed the connection as idle. pause() disarms the timer again; while
      // paused, --stream-idle-timeout is what watches the service.
      this.ex.res.pause();
    }
  }

  private pumpUp(now: number): void {
    while (!this.over && this.inbox !== '' && this.upQueued > 0 && this.upCredit > 0) {
      const n = Math.min(this.upQueued, this.upCredit, this.frameLimit);
      const parts = takeBytes(this.upQueue, n);
      this.upQueued -= n;
      this.upCredit -= n;
      const last = this.upEnded && this.upQueued === 0;
      if (!this.send(encodeData(++this.upSeq, parts, n, !last), now)) return this.lost();
      if (last) this.markUpDone(now);
    }
    if (!this.over && this.inbox !== '' && this.upEnded && this.upQueued === 0 && !this.upDone) {
      if (!this.send(encodeData(++this.upSeq, [], 0, false), now)) return this.lost();
      this.markUpDone(now);
    }
    if (this.paused && this.upQueued < DEFAULT_STREAM_WINDOW / 2) {
      this.paused = false;
      this.ex.res.resume();
    }
    this.chargeOverrun();
  }

  /** Keeps this stream's charge to the owner's UploadOverrun at what waits beyond one window. */
  private chargeOverrun(): void {
    const excess = this.upQueued > DEFAULT_STREAM_WINDOW ? this.upQueued - DEFAULT_STREAM_WINDOW : 0;
    if (excess === this.overrun) return;
    this.owner.uploadOverrun.add(excess - this.overrun);
    this.overrun = excess;
  }

  /** The stream is over: what waits for the service is dropped, and its charge returned. */
  private dropUpload(): void {
    this.upQueue = [];
    this.upQueued = 0;
    this.chargeOverrun();
  }

  private markUpDone(now: number): void {
    this.upDone = true;
    this.upDoneAt = now;
  }

  // Down

  /** The v2 head with `more`: writes status and headers and the head's body (corked by the caller). */
  onHead(reply: ReplyEnvelope, now: number): void {
    if (reply.inbox !== undefined) this.inbox = reply.inbox;
    this.idleSince = now;
    this.headWritten = true;
    const length = this.owner.writeHead(this.ex, reply);
    const ex = this.ex;
    if (ex.method === 'HEAD' || ex.status === 204 || ex.status === 304) {
      // No body is sent for these (RFC 9110 §9.3.2, §8.6): tell the service to stop.
      if (ex.method === 'HEAD') endHead(ex.res, length, !this.upDone);
      else ex.res.endWithoutBody();
      this.send(encodeCancel('the response has no body'), now);
      return this.complete();
    }
    this.total = length;
    const body = Buffer.from(reply.body.buffer, reply.body.byteOffset, reply.body.length);
    // (In raw mode the head's body counts as received, so what waits on the client is counted whole.)
    if (this.raw) this.received += body.length;
    this.writeChunk(body, false, now);
  }

  /** A frame from the service (corked by the caller when it writes). */
  onFrame(frame: Frame, now: number): void {
    if (this.over) return;
    switch (frame.t) {
      case 'credit':
        if (frame.inbox !== undefined && this.inbox === '') this.inbox = frame.inbox;
        if (frame.n === 0) return; // a probe
        this.idleSince = now;
        this.upCredit += frame.n;
        return this.pumpUp(now);
      case 'cancel':
        return this.broken('stream-broken', `the service cancelled the stream: ${frame.reason || 'no reason given'}`, false, now);
      case 'data': {
        if (!this.headWritten) return this.broken('bad-reply', 'a data frame arrived before the response head', true, now);
        if (frame.seq !== this.downSeq + 1) return this.broken('stream-broken', `data frame ${frame.seq} arrived after ${this.downSeq} (a message was lost: slow consumer?)`, true, now);
        if (this.received + frame.body.length > this.granted) return this.broken('bad-reply', 'the service sent more than its credit', true, now);
        this.downSeq = frame.seq;
        return this.onChunk(frame.body, !frame.more, now);
      }
    }
  }

  /** A later message of a streamed raw reply: its payload is the next piece of the body (corked by the caller). */
  onRawChunk(body: Buffer, last: boolean, now: number): void {
    if (this.over) return;
    this.onChunk(body, last, now);
    if (this.over) return;
    const waiting = this.total >= 0 ? this.downQueued : this.received - this.consumed;
    if (waiting > this.rawBufferLimit) {
      this.broken('stream-broken', `the client reads slower than the service sends: over ${this.rawBufferLimit} bytes waited (a raw reply has no flow control)`, false, now);
    }
  }

  private onChunk(body: Buffer, last: boolean, now: number): void {
    this.received += body.length;
    this.idleSince = now;
    this.writeChunk(body, last, now);
  }

  private writeChunk(chunk: Buffer, last: boolean, now: number): void {
    const res = this.ex.res;
    if (this.total >= 0) {
      if (this.written + chunk.length > this.total) return this.broken('bad-reply', `the service sent more than its Content-Length of ${this.total}`, true, now);
      if (last && this.written + chunk.length < this.total) return this.broken('bad-reply', `the service ended the body before its Content-Length of ${this.total}`, true, now);
      this.written += chunk.length;
      this.ex.bytesOut = this.written;
      if (this.total === 0) {
        res.end(undefined, !this.upDone);
        return this.complete();
      }
      if (chunk.length === 0) return;
      // tryEnd does not buffer what the socket does not take: chunks wait
      // here, in order, until uWS reports the socket writable.
      this.downQueue.push(chunk);
      this.downQueued += chunk.length;
      if (!this.backpressure) this.flushDown(now);
      return;
    }
    // A compressed response (the compression policy) goes chunked, each chunk flushed as it comes.
    const comp = this.ex.compressor;
    const out = comp === undefined ? chunk : last ? comp.end(chunk) : chunk.length > 0 ? comp.push(chunk) : chunk;
    if (out.length > 0) {
      // write() buffers what the socket does not take; no credit is granted until it drains.
      const ok = res.write(out);
      this.written += chunk.length;
      this.ex.bytesOut += out.length;
      if (!ok) {
        this.backpressure = true;
        this.hookWritable();
      } else if (!this.backpressure) this.consumed += chunk.length;
    }
    if (last) {
      // A body that did not end up here cannot be left for the next request's parser: close.
      res.end(undefined, !this.upDone);
      return this.complete();
    }
    this.grant(now);
  }

  /** tryEnd mode: writes queued chunks until the socket pushes back or the body is complete. */
  private flushDown(now: number): void {
    const res = this.ex.res;
    while (this.downQueue.length > 0) {
      const chunk = this.downQueue[0]!;
      const before = res.getWriteOffset();
      const [ok, done] = res.tryEnd(chunk, this.total);
      if (done) {
        this.downQueue = [];
        this.downQueued = 0;
        return this.complete();
      }
      if (!ok) {
        const taken = res.getWriteOffset() - before;
        this.downQueue[0] = chunk.subarray(taken);
        this.downQueued -= taken;
        this.consumed += taken;
        this.backpressure = true;
        this.hookWritable();
        return;
      }
      this.downQueue.shift();
      this.downQueued -= chunk.length;
      this.consumed += chunk.length;
    }
    this.backpressure = false;
    this.grant(now);
  }

  private hookWritable(): void {
    if (this.writableHooked) return;
    this.writableHooked = true;
    this.ex.res.onWritable(() => this.onWritable());
  }

  /** uWS: the client's socket takes data again. Runs inside uWS (corked). */
  private onWritable(): boolean {
    if (this.over || !this.backpressure) return true;
    const now = performance.now();
    // The client was the one holding things up: the service gets a fresh idle period.
    this.idleSince = now;
    if (this.total >= 0) {
      this.flushDown(now);
      return !this.backpressure;
    }
    this.backpressure = false;
    this.consumed = this.received;
    this.grant(now);
    return true;
  }

  /** Tops the service's credit up to a window beyond what uWS took. */
  private grant(now: number): void {
    if (this.over || this.backpressure || this.inbox === '') return;
    const outstanding = this.granted - this.consumed;
    if (outstanding > DEFAULT_STREAM_WINDOW / 2) return;
    const n = this.consumed + DEFAULT_STREAM_WINDOW - this.granted;
    if (n <= 0) return;
    this.granted += n;
    if (!this.send(encodeCredit(n), now)) this.lost();
  }

  /**
   * The service answered with one complete reply while this stream was open
   * (it did not need the rest of the upload, or answered after reading it):
   * the front writes that reply; this only stops the upload.
   */
  endedByReply(): void {
    this.complete();
  }

  // Ends

  /** A paused socket is neither read nor written by uWS: let the last response and the close through. */
  private unpause(): void {
    if (!this.paused) return;
    this.paused = false;
    if (!this.ex.aborted) this.ex.res.resume();
  }

  private complete(): void {
    if (this.over) return;
    this.over = true;
    this.dropUpload();
    this.unpause();
    if (!this.upDone && this.inbox !== '') this.owner.publishFrame(this.ex, this.inbox, encodeCancel('the response ended before the request body'));
    this.owner.release(this.ex);
    this.owner.finish(this.ex);
  }

  /** NATS refused a publish (connection closed): treat as the service gone. */
  private lost(): void {
    this.broken('stream-broken', 'the NATS connection refused a stream frame', false, performance.now());
  }

  /**
   * Ends a stream that cannot go on: before the head, a problem response;
   * after it, the connection is closed so the client sees a cut-off body
   * (no terminating chunk, or fewer bytes than the Content-Length).
   */
  broken(code: FailureCode, detail: string, tellService: boolean, now: number): void {
    if (this.over) return;
    this.over = true;
    this.dropUpload();
    this.unpause();
    this.ex.streamFailure = detail;
    this.ex.failure = code;
    if (tellService && this.inbox !== '') this.send(encodeCancel(detail), now);
    this.owner.release(this.ex);
    if (!this.headWritten) return this.owner.failCorked(this.ex, code, detail, !this.upDone);
    this.owner.finish(this.ex);
    if (!this.ex.aborted) this.ex.res.close();
  }

  /** The service is gone (no-responders on its inbox). */
  peerGone(now: number): void {
    this.broken('stream-broken', 'the service went away mid-stream (NATS no-responders on its inbox)', false, now);
  }

  /** The client went away: tell the service, forget the stream. */
  clientGone(now: number): void {
    if (this.over) return;
    this.over = true;
    this.dropUpload();
    this.send(encodeCancel('the client went away'), now);
    this.owner.release(this.ex);
  }

  /**
   * Called about every half second: probes a quiet service, and cuts off a
   * stream whose service has had its turn for longer than `idleMs`, or whose
   * head has not come `headTimeoutMs` after the upload ended.
   */
  tick(now: number, idleMs: number, headTimeoutMs: number): void {
    if (this.over) return;
    if (!this.headWritten && this.upDone && now - Math.max(this.upDoneAt, this.idleSince) > headTimeoutMs) {
      return this.broken('timeout', `no response head within ${headTimeoutMs} ms of the request body`, true, now);
    }
    if (this.servicesTurn() && now - this.idleSince > idleMs) {
      return this.broken('stream-idle', `no message from the service for ${idleMs} ms`, true, now);
    }
    if (this.inbox !== '' && now - this.lastSentAt >= PROBE_INTERVAL_MS) {
      if (!this.send(PROBE_FRAME, now)) this.lost();
    }
  }

  /** True when the stream waits on the service (not on the client). */
  private servicesTurn(): boolean {
    if (!this.upDone && this.upQueued > 0 && this.upCredit === 0) return true; // credit for the body
    if (this.headWritten && !this.backpressure) return true; // more of the response
    return false;
  }
}
