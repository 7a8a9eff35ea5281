/**
 * One request in a service, from its envelope to the last message of its
 * response: the adapter's sink (node-adapter.ts) and the service's side of
 * a v2 stream (PROTOCOL.md §7).
 *
 * The response leaves as one v1 reply when the handler ends it within the
 * event-loop turn of its first write and it fits one NATS message; otherwise
 * as a stream: a head, then data frames within the credit the gateway
 * grants. A streamed request body arrives in data frames; credit for it is
 * granted as the handler reads (`req`'s `_read`), so an upload never runs
 * ahead of the handler by more than the window.
 */
import type { Span } from '@opentelemetry/api';
import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  CAP_STREAM,
  DEFAULT_STREAM_WINDOW,
  encodeCancel,
  encodeCredit,
  encodeData,
  encodeReply,
  frameBodyLimit,
  PROBE_FRAME,
  PROTOCOL_VERSION,
  STREAM_VERSION,
  takeBytes,
  type Frame,
  type RequestEnvelope,
} from './protocol/index.js';
import { abandon, clientGone, feedBody, responseDrained, responseFinished, responseHead, type ResponseSink } from './node-adapter.js';

/** What a call needs from the service that runs it. */
export interface CallHost {
  readonly maxPayload: number;
  /** Publishes, never throws. */
  publish(subject: string, data: Uint8Array, reply?: string): void;
  /** Registers the call under a new stream key; returns its private inbox subject. */
  openStream(call: Call): string;
  /** The call is over: nothing more will be sent for it. */
  settle(call: Call): void;
  problem(call: Call, status: number, code: string, detail: string): void;
  log(level: 'error' | 'warn', obj: object, msg: string): void;
}

/**
 * `write()` returns false once this much is queued (node's sockets: 16 KiB).
 * Writes of one event-loop turn leave as one frame, so this is also the
 * usual frame size of a handler that honours backpressure: 64 KiB frames
 * measured 0.6× the throughput of 256 KiB ones.
 */
const HIGH_WATER_MARK = 256 * 1024;
const EMPTY_BODY = Buffer.alloc(0);

export class Call implements ResponseSink {
  /** Settled: nothing more is sent for this request. */
  done = false;
  req: IncomingMessage | undefined = undefined;
  res: ServerResponse | undefined = undefined;
  /** The handler must start its response (head) before this (ms since epoch). */
  deadline: number;
  /** Stream key and private inbox, once the call streams in either direction. */
  key = '';
  inbox = '';
  /** When a message for the gateway was last published (probes go out when it is old). */
  lastSentAt = Date.now();
  /** When the request arrived (performance.now()), for the service's stats. */
  readonly startedAt = performance.now();
  /** The status answered (0 until the head leaves). */
  status = 0;
  /** Why it failed, for the service's stats (`last_error`); unset when it did not. */
  failure: string | undefined = undefined;
  /** Its OpenTelemetry span, when the app registered a tracer provider (service-span.ts). */
  span: Span | undefined = undefined;

  private readonly streamable: boolean;
  private readonly frameLimit: number;
  // Response: collected until it streams, then queued within credit.
  private collected: Buffer[] = [];
  private collectedBytes = 0;
  private overflow = false;
  private flushScheduled = false;
  private streaming = false;
  private ended = false;
  private queue: Buffer[] = [];
  private queued = 0;
  private credit: number;
  private seq = 0;
  private blocked = false;
  private pumpScheduled = false;
  private readonly pumpLater = (): void => {
    this.pumpScheduled = false;
    this.pump();
  };
  // Request body (v2 request with more).
  private readonly bodyStreams: boolean;
  private bodyGranted = 0;
  private bodyReceived = 0;
  private bodySeq = 0;
  private bodyDone: boolean;

  constructor(
    private readonly host: CallHost,
    readonly reply: string,
    readonly env: RequestEnvelope,
    readonly timeoutMs: number,
    /** False when the reply subject takes exactly one message (a v1 gateway, an old hand-off). */
    canStream: boolean,
  ) {
    this.deadline = Date.now() + timeoutMs;
    this.streamable = canStream && (env.v === STREAM_VERSION || env.caps?.includes(CAP_STREAM) === true);
    this.frameLimit = frameBodyLimit(host.maxPayload);
    this.credit = this.streamable ? Math.max(0, env.credit ?? 0) : 0;
    this.bodyStreams = env.more === true;
    this.bodyDone = !this.bodyStreams;
  }

  /** A streamed request body: open the inbox and grant the first window. Call before the handler runs. */
  acceptBody(): void {
    if (!this.bodyStreams) return;
    this.inbox = this.host.openStream(this);
    this.bodyGranted = DEFAULT_STREAM_WINDOW;
    this.send(encodeCredit(DEFAULT_STREAM_WINDOW, this.inbox));
  }

  private send(data: Uint8Array): void {
    this.lastSentAt = Date.now();
    this.host.publish(this.reply, data, this.inbox === '' ? undefined : this.inbox);
  }

  /**
   * True while no handler deadline applies: the response head has left as a
   * stream (the gateway's idle limit governs from then on), or the request
   * body is still arriving.
   */
  get exempt(): boolean {
    return this.streaming || !this.bodyDone;
  }

  // ResponseSink

  onWrite(res: ServerResponse, chunk: Buffer): boolean {
    if (this.done) return false;
    if (this.streaming) {
      // Writes of one event-loop turn leave as one frame: a loop of small
      // writes costs one message, not one each.
      this.enqueue(chunk);
      this.schedulePump();
      if (this.queued >= HIGH_WATER_MARK) this.blocked = true;
      return !this.blocked;
    }
    this.collect(chunk);
    if (!this.streamable) return true;
    // Writes in one event-loop turn leave together; a turn's worth of at
    // least a frame starts the stream at once.
    if (this.collectedBytes >= this.frameLimit) this.startStream(res);
    else if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => {
        this.flushScheduled = false;
        if (!this.done && !this.streaming && !this.ended) this.startStream(res);
      });
    }
    return true;
  }

  onEnd(res: ServerResponse, chunk: Buffer | undefined): void {
    if (this.done) return;
    this.ended = true;
    if (this.streaming) {
      if (chunk !== undefined) this.enqueue(chunk);
      this.schedulePump();
      return;
    }
    if (chunk !== undefined) this.collect(chunk);
    // One message when it fits (the v1 reply, unchanged); a stream when it does not and the gateway takes one.
    if (this.streamable && this.collectedBytes > this.frameLimit) return this.startStream(res);
    this.sendWhole(res);
  }

  onBodyRead(): void {
    if (this.done || this.bodyDone || this.req === undefined) return;
    const outstanding = this.bodyGranted - this.bodyReceived;
    const free = DEFAULT_STREAM_WINDOW - outstanding - this.req.readableLength;
    if (free >= DEFAULT_STREAM_WINDOW / 4) {
      this.bodyGranted += free;
      this.send(encodeCredit(free));
    } else if (outstanding === 0) {
      // Readable calls _read once and waits for a push; with no credit out
      // no frame will push, so re-arm it: the next read below its high-water
      // mark asks again. (More than 3/4 of a window is buffered here, far
      // above that mark, so this cannot spin.)
      this.req.push(EMPTY_BODY);
    }
  }

  private collect(chunk: Buffer): void {
    this.collectedBytes += chunk.length;
    if (this.overflow) return;
    if (!this.streamable && this.collectedBytes > this.host.maxPayload) {
      // It can never be sent (one message only): stop holding it.
      this.overflow = true;
      this.collected = [];
      return;
    }
    this.collected.push(chunk);
  }

  private statusIsValid(status: number): boolean {
    if (Number.isInteger(status) && status >= 200 && status <= 599) return true;
    this.host.log('error', { subject: this.env.subject, requestId: this.env.id, status }, 'handler answered with a status outside 200-599');
    this.host.problem(this, 500, 'invalid-status', `the service for ${this.env.subject} answered with status ${status}`);
    return false;
  }

  private sendWhole(res: ServerResponse): void {
    const env = this.env;
    const { status, headers } = responseHead(res);
    this.status = status;
    if (this.overflow) {
      this.host.log('error', { subject: env.subject, requestId: env.id, bytes: this.collectedBytes, maxPayload: this.host.maxPayload }, 'response too large for one NATS message');
      return this.host.problem(this, 502, 'response-too-large', `the response from ${env.subject} (${this.collectedBytes} bytes) exceeds the NATS max_payload of ${this.host.maxPayload} bytes`);
    }
    if (!this.statusIsValid(status)) return;
    const body = this.collected.length === 1 ? this.collected[0]! : Buffer.concat(this.collected, this.collectedBytes);
    const data = encodeReply({ v: PROTOCOL_VERSION, status, headers, body });
    if (data.length > this.host.maxPayload && this.streamable) return this.startStream(res); // the headers tipped it over
    this.collected = [];
    if (data.length > this.host.maxPayload) {
      this.host.log('error', { subject: env.subject, requestId: env.id, bytes: data.length, maxPayload: this.host.maxPayload }, 'response too large for one NATS message');
      return this.host.problem(this, 502, 'response-too-large', `the response from ${env.subject} (${data.length} bytes) exceeds the NATS max_payload of ${this.host.maxPayload} bytes`);
    }
    this.send(data);
    this.finish(res);
  }

  /** Sends the head (with up to a frame of body), then the rest as credit allows. */
  private startStream(res: ServerResponse): void {
    const { status, headers } = responseHead(res);
    this.status = status;
    if (!this.statusIsValid(status)) return;
    this.streaming = true;
    if (this.inbox === '') this.inbox = this.host.openStream(this);
    const pending = this.collected;
    this.collected = [];
    this.collectedBytes = 0;
    for (const c of pending) this.enqueue(c);
    // The head carries headers too: a quarter of a frame of body leaves them room.
    const headBody = this.take(Math.min(this.queued, this.frameLimit >> 2));
    const body = headBody.length === 1 ? headBody[0]! : Buffer.concat(headBody);
    const last = this.ended && this.queued === 0;
    this.send(encodeReply({ v: STREAM_VERSION, status, headers, body, more: !last, inbox: this.inbox }));
    if (last) return this.finish(res);
    this.pump();
  }

  private schedulePump(): void {
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    setImmediate(this.pumpLater);
  }

  private enqueue(chunk: Buffer): void {
    this.queue.push(chunk);
    this.queued += chunk.length;
  }

  /** Removes `n` bytes from the front of the queue, as the buffers that hold them. */
  private take(n: number): Buffer[] {
    this.queued -= n;
    return takeBytes(this.queue, n);
  }

  /** Sends queued body within the credit; the last frame once ended and empty. */
  private pump(): void {
    while (!this.done && this.queued > 0 && this.credit > 0) {
      const n = Math.min(this.queued, this.credit, this.frameLimit);
      const parts = this.take(n);
      this.credit -= n;
      const last = this.ended && this.queued === 0;
      this.send(encodeData(++this.seq, parts, n, !last));
      if (last) return this.finish(this.res!);
    }
    if (this.done) return;
    if (this.ended && this.queued === 0) {
      this.send(encodeData(++this.seq, [], 0, false));
      return this.finish(this.res!);
    }
    if (this.blocked && this.queued < HIGH_WATER_MARK) {
      this.blocked = false;
      responseDrained(this.res!);
    }
  }

  private finish(res: ServerResponse): void {
    this.host.settle(this);
    responseFinished(res);
  }

  /** A frame from the gateway, on this call's inbox. */
  onFrame(frame: Frame): void {
    if (this.done) return;
    switch (frame.t) {
      case 'credit':
        if (!this.streamable || frame.n === 0) return; // a probe
        this.credit += frame.n;
        if (this.streaming) this.pump();
        return;
      case 'cancel':
        return this.gone(`the gateway cancelled the stream (${frame.reason})`, false);
      case 'data': {
        if (this.bodyDone || frame.seq !== this.bodySeq + 1 || this.bodyReceived + frame.body.length > this.bodyGranted) {
          return this.broken(`request body frame out of order or beyond the credit (seq ${frame.seq})`);
        }
        this.bodySeq = frame.seq;
        this.bodyReceived += frame.body.length;
        if (!frame.more) {
          this.bodyDone = true;
          // The handler's time to answer starts when it has the whole body.
          this.deadline = Date.now() + this.timeoutMs;
        }
        if (this.req !== undefined) feedBody(this.req, frame.body, !frame.more);
        return;
      }
    }
  }

  /** A message sent for this call found nobody (NATS no-responders): the gateway or its client is gone. */
  onPeerGone(): void {
    this.gone('the gateway is gone (no responders on its reply subject)', false);
  }

  /** Ends a call whose stream broke: the handler sees the client go away; the gateway is told unless it is the one gone. */
  gone(why: string, tellGateway: boolean): void {
    if (this.done) return;
    if (tellGateway) this.send(encodeCancel(why));
    this.host.settle(this);
    this.queue = [];
    this.queued = 0;
    if (this.req !== undefined) clientGone(this.req, this.res);
    else if (this.res !== undefined) abandon(this.res);
  }

  /** The gateway broke the protocol: give up and tell it. */
  broken(why: string): void {
    this.host.log('warn', { subject: this.env.subject, requestId: this.env.id, why }, 'stream broken');
    this.gone(why, true);
  }

  /** The handler threw or rejected; `err` is logged by the caller. */
  failed(): void {
    if (this.done) return;
    if (this.streaming) {
      this.failure ??= 'handler failed mid-stream';
      return this.gone('the handler failed mid-stream', true);
    }
    this.host.problem(this, 500, 'handler-error', `the service for ${this.env.subject} failed while handling the request`);
    if (this.res !== undefined) abandon(this.res);
  }

  /** Sends a probe when nothing went to the gateway for `intervalMs`. */
  probe(now: number, intervalMs: number): void {
    if (!this.done && this.inbox !== '' && now - this.lastSentAt >= intervalMs) this.send(PROBE_FRAME);
  }
}
