/**
 * The service's side of a WebSocket session (PROTOCOL.md §14): an object
 * with the shape of the `ws` package's server-side WebSocket, whose frames
 * travel over NATS to the gateway that holds the client's connection.
 *
 * Code written for `wss.on('connection', (ws, req) => …)` runs unchanged:
 * `send`, `close`, `terminate`, `ping`, `pause`/`resume`, `readyState`,
 * `bufferedAmount`, `protocol`, `binaryType`, and the `message` (data,
 * isBinary), `close` (code, reason), `error` and `pong` events. Added:
 * `subscribe`/`unsubscribe` to topics that reach every gateway (§14.5).
 *
 * Flow control: `send()` never blocks and never drops. What the gateway has
 * no credit for waits here and counts in `bufferedAmount` (check it, as with
 * `ws`); past `maxBufferedBytes` the client is too slow to keep, and the
 * connection is closed with 1013. Incoming messages are credited back once
 * the `message` listeners have run, or, while `pause()`d, on `resume()`.
 */
import { EventEmitter } from 'node:events';
import {
  DEFAULT_STREAM_WINDOW,
  encodeCancel,
  encodeClose,
  encodeControl,
  encodeCredit,
  encodeMsg,
  encodeTopicFrame,
  frameBodyLimit,
  isSendableCloseCode,
  isValidTopic,
  MAX_CLOSE_REASON_BYTES,
  MESSAGE_TOO_BIG,
  MessageReceiver,
  PROBE_FRAME,
  WS_CLOSE,
  type Frame,
} from './protocol/index.js';

/** What a socket needs from the service that accepted it. */
export interface SocketHost {
  readonly maxPayload: number;
  /** Publishes to the gateway's reply subject with the socket's inbox as reply subject; false when the connection refused it (closed). Never throws. */
  publishFrame(subject: string, data: Uint8Array, reply: string): boolean;
  /** The session is over: forget the socket. */
  socketEnded(socket: ServiceWebSocket): void;
  log(level: 'error' | 'warn', obj: object, msg: string): void;
}

type SendCallback = (err?: Error) => void;
type Data = string | Buffer | ArrayBuffer | ArrayBufferView | readonly Buffer[];

interface Outgoing {
  data: Buffer;
  bin: boolean;
  offset: number;
  cb: SendCallback | undefined;
}

export interface SocketLimits {
  /** Most bytes `send()` may have waiting for credit before the connection is closed with 1013. */
  maxBufferedBytes: number;
  /** Largest incoming message assembled from pieces; larger closes with 1009. */
  maxMessageBytes: number;
}

const NO_REASON = Buffer.alloc(0);

export class ServiceWebSocket extends EventEmitter {
  static readonly CONNECTING = 0;
  static readonly OPEN = 1;
  static readonly CLOSING = 2;
  static readonly CLOSED = 3;
  readonly CONNECTING = 0;
  readonly OPEN = 1;
  readonly CLOSING = 2;
  readonly CLOSED = 3;
  readyState: 0 | 1 | 2 | 3 = 1;
  /** The subprotocol the service chose ('' for none). */
  readonly protocol: string;
  /** Extensions are negotiated by the gateway with the client, never by the service. */
  readonly extensions = '';
  /** How `message` hands over data: Buffer (default), ArrayBuffer, or the pieces as Buffers. */
  binaryType: 'nodebuffer' | 'arraybuffer' | 'fragments' = 'nodebuffer';
  /** The id of the upgrade request, for logs. */
  readonly requestId: string;
  /** When a message last went to the gateway (Date.now()), for probes. */
  lastSentAt = Date.now();

  private readonly frameLimit: number;
  private credit: number;
  private outSeq = 0;
  private readonly out: Outgoing[] = [];
  private queued = 0;
  private closing: { code: number; reason: string } | undefined;
  private closeTimer: NodeJS.Timeout | undefined;

  private readonly receiver: MessageReceiver;
  /** Bytes taken from the gateway and not credited back yet. */
  private owed = 0;
  private paused = false;
  private readonly held: Array<{ data: Buffer; bin: boolean; last: number }> = [];

  private readonly topics = new Map<string, { ready: Promise<void>; resolve: () => void }>();

  constructor(
    private readonly host: SocketHost,
    /** The gateway's reply subject of the upgrade (G). */
    private readonly gateway: string,
    /** This socket's private inbox (S). */
    readonly inbox: string,
    /** The service's mount: topics are named under it. */
    private readonly mount: string,
    credit: number,
    protocol: string,
    requestId: string,
    private readonly limits: SocketLimits,
  ) {
    super();
    this.credit = credit;
    this.protocol = protocol;
    this.requestId = requestId;
    this.frameLimit = frameBodyLimit(host.maxPayload);
    this.receiver = new MessageReceiver(DEFAULT_STREAM_WINDOW, limits.maxMessageBytes);
  }

  /** Bytes `send()` has queued that the gateway has not been sent yet (no credit). */
  get bufferedAmount(): number {
    return this.queued;
  }

  get isPaused(): boolean {
    return this.paused;
  }

  /** Sends a message: text for a string (unless `binary`), binary otherwise, as `ws` does. */
  send(data: Data, options?: { binary?: boolean } | SendCallback, cb?: SendCallback): void {
    if (typeof options === 'function') {
      cb = options;
      options = undefined;
    }
    if (this.readyState !== 1 || this.closing !== undefined) {
      const err = new Error(`WebSocket is not open: readyState ${this.readyState}`);
      if (cb !== undefined) process.nextTick(cb, err);
      return;
    }
    const bin = options?.binary ?? typeof data !== 'string';
    const buf = toBuffer(data);
    if (this.queued + buf.length > this.limits.maxBufferedBytes) {
      if (cb !== undefined) process.nextTick(cb, new Error('WebSocket closed: the client is not keeping up'));
      this.end(WS_CLOSE.tryAgainLater, 'the client is not keeping up', true);
      return;
    }
    this.out.push({ data: buf, bin, offset: 0, cb });
    this.queued += buf.length;
    this.pump();
  }

  /** Closes the connection with a code (default 1000) and reason, after what `send()` has queued. */
  close(code: number = WS_CLOSE.normal, reason: string | Buffer = ''): void {
    if (this.readyState === 3 || this.closing !== undefined) return;
    if (!isSendableCloseCode(code)) throw new TypeError(`invalid close code ${code}: use 1000-1003, 1007-1014 or 3000-4999`);
    const text = Buffer.isBuffer(reason) ? reason.toString('utf8') : reason;
    if (Buffer.byteLength(text) > MAX_CLOSE_REASON_BYTES) throw new RangeError(`close reason must be at most ${MAX_CLOSE_REASON_BYTES} bytes`);
    this.readyState = 2;
    this.closing = { code, reason: text };
    // A client that never takes the queued messages does not hold the close forever.
    this.closeTimer = setTimeout(() => this.end(code, text, true), 30_000);
    this.closeTimer.unref();
    this.pump();
  }

  /** Drops the connection at once, without a close frame (the client sees 1006). */
  terminate(): void {
    this.end(WS_CLOSE.abnormal, '', true);
  }

  /** Sends a ping; a `pong` event follows when the client answers (the gateway keeps idle connections alive by itself). */
  ping(data?: Data, _mask?: boolean, cb?: SendCallback): void {
    if (this.readyState !== 1) {
      if (cb !== undefined) process.nextTick(cb, new Error('WebSocket is not open'));
      return;
    }
    this.publish(encodeControl('ping', data === undefined ? NO_REASON : toBuffer(data)));
    if (cb !== undefined) process.nextTick(cb);
  }

  /** Stops `message` events (and credit to the gateway, so the client is held back) until resume(). */
  pause(): void {
    this.paused = true;
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    while (this.held.length > 0 && !this.paused && this.readyState === 1) {
      const m = this.held.shift()!;
      this.deliver(m.data, m.bin, m.last);
    }
  }

  /**
   * Subscribes this connection to `topic` (named under the mount: topic
   * `room1` of mount `api.chat` is `api.chat.room1`) on whichever gateway
   * holds it. Resolves once that gateway delivers the topic's messages.
   */
  subscribe(topic: string): Promise<void> {
    const full = this.mount + '.' + topic;
    if (!isValidTopic(full)) return Promise.reject(new TypeError(`topic ${JSON.stringify(topic.slice(0, 80))} must be tokens of A-Z a-z 0-9 - _ separated by dots`));
    const known = this.topics.get(full);
    if (known !== undefined) return known.ready;
    let resolve!: () => void;
    const ready = new Promise<void>((r) => (resolve = r));
    this.topics.set(full, { ready, resolve });
    this.publish(encodeTopicFrame('sub', full));
    return ready;
  }

  unsubscribe(topic: string): void {
    const full = this.mount + '.' + topic;
    const t = this.topics.get(full);
    if (t === undefined) return;
    this.topics.delete(full);
    t.resolve();
    if (this.readyState === 1) this.publish(encodeTopicFrame('unsub', full));
  }

  isSubscribed(topic: string): boolean {
    return this.topics.has(this.mount + '.' + topic);
  }

  /** Topics this connection is subscribed to, as passed to subscribe(). */
  getTopics(): string[] {
    return [...this.topics.keys()].map((t) => t.slice(this.mount.length + 1));
  }

  // From the gateway.

  onFrame(frame: Frame): void {
    if (this.readyState === 3) return;
    switch (frame.t) {
      case 'msg':
        return this.onMsg(frame.seq, frame.body, frame.bin, frame.more);
      case 'credit':
        if (frame.n === 0) return; // a probe
        this.credit += frame.n;
        return this.pump();
      case 'close':
        // Answered in kind, as a WebSocket close handshake: the gateway ignores
        // it, and a mount relaying this session (a hand-off) ends its relay on it.
        this.publish(encodeClose(frame.code, ''));
        return this.ended(frame.code, frame.reason);
      case 'cancel':
        return this.ended(WS_CLOSE.abnormal, frame.reason);
      case 'subscribed':
        this.topics.get(frame.topic)?.resolve();
        return;
      case 'pong':
        this.emit('pong', Buffer.from(frame.body));
        return;
      default:
        return this.broken(`unexpected ${frame.t} frame in a WebSocket session`);
    }
  }

  private onMsg(seq: number, body: Buffer, bin: boolean, more: boolean): void {
    const message = this.receiver.take(seq, body, bin, more);
    if (typeof message === 'string') return message === MESSAGE_TOO_BIG ? this.end(WS_CLOSE.tooBig, 'message too big', true) : this.broken(message);
    if (message === undefined) {
      // Pieces of a message larger than the window are credited as they arrive, or it could never complete.
      this.owed += body.length;
      return this.grant();
    }
    // Listeners may keep what they are given: a view into the NATS message is copied.
    const data = message === body ? Buffer.from(body) : message;
    if (this.paused) this.held.push({ data, bin, last: body.length });
    else this.deliver(data, bin, body.length);
  }

  private deliver(data: Buffer, bin: boolean, last: number): void {
    if (this.binaryType === 'fragments') this.emit('message', [data], bin);
    else this.emit('message', this.binaryType === 'arraybuffer' ? data.buffer.slice(data.byteOffset, data.byteOffset + data.length) : data, bin);
    // Only the last piece is owed here; earlier pieces were credited as they came.
    this.owed += last;
    this.grant();
  }

  /** Tops up the gateway's credit once a quarter window was taken (not per message). */
  private grant(): void {
    if (this.paused || this.readyState !== 1 || this.owed < DEFAULT_STREAM_WINDOW / 4) return;
    this.receiver.grant(this.owed);
    this.publish(encodeCredit(this.owed));
    this.owed = 0;
  }

  /** The gateway is gone (no-responders on its reply subject). */
  peerGone(): void {
    this.ended(WS_CLOSE.abnormal, 'the gateway went away');
  }

  /** The gateway broke the protocol: it is told (cancel), the socket closes with 1006. */
  broken(reason: string): void {
    if (this.readyState === 3) return;
    this.host.log('warn', { requestId: this.requestId, reason }, 'WebSocket session broken by the gateway');
    this.publish(encodeCancel(reason));
    this.ended(WS_CLOSE.abnormal, reason);
    if (this.listenerCount('error') > 0) this.emit('error', new Error(reason));
  }

  /** Sends a probe when nothing went to the gateway for `intervalMs`. */
  probe(now: number, intervalMs: number): void {
    if (this.readyState !== 3 && now - this.lastSentAt >= intervalMs) this.publish(PROBE_FRAME);
  }

  /** Ends the session from this side: the gateway is told with `code` (1006: no close frame to the client). */
  end(code: number, reason: string, tell: boolean): void {
    if (this.readyState === 3) return;
    if (tell) this.publish(encodeClose(code, reason));
    this.ended(code, reason);
  }

  private pump(): void {
    while (this.out.length > 0) {
      const head = this.out[0]!;
      const left = head.data.length - head.offset;
      const take = Math.min(left, this.credit, this.frameLimit);
      if (take === 0 && left > 0) return;
      const more = take < left;
      this.credit -= take;
      this.publish(encodeMsg(++this.outSeq, head.data.subarray(head.offset, head.offset + take), head.bin, more));
      head.offset += take;
      this.queued -= take;
      if (more) continue;
      this.out.shift();
      if (head.cb !== undefined) process.nextTick(head.cb);
    }
    if (this.closing !== undefined) this.end(this.closing.code, this.closing.reason, true);
  }

  private publish(data: Uint8Array): void {
    this.lastSentAt = Date.now();
    // A connection closed for good: the session cannot go on (ended() publishes nothing).
    if (!this.host.publishFrame(this.gateway, data, this.inbox)) this.ended(WS_CLOSE.abnormal, 'the NATS connection is closed');
  }

  /** The session is over: `close` once, queued sends fail, topics are forgotten. */
  private ended(code: number, reason: string): void {
    if (this.readyState === 3) return;
    this.readyState = 3;
    clearTimeout(this.closeTimer);
    const err = new Error('WebSocket closed before the message was sent');
    for (const o of this.out) if (o.cb !== undefined) process.nextTick(o.cb, err);
    this.out.length = 0;
    this.queued = 0;
    for (const t of this.topics.values()) t.resolve();
    this.topics.clear();
    this.host.socketEnded(this);
    this.emit('close', code, Buffer.from(reason));
  }
}

function toBuffer(data: Data): Buffer {
  if (typeof data === 'string') return Buffer.from(data, 'utf8');
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data as Buffer[]);
  if (data instanceof ArrayBuffer) return Buffer.from(data);
  const view = data as ArrayBufferView;
  return Buffer.from(view.buffer, view.byteOffset, view.byteLength);
}
