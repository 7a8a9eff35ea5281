/**
 * The gateway's side of one WebSocket session (PROTOCOL.md §14): a client
 * connection held by uWS on one side, the one service instance that
 * accepted the upgrade on the other (its private inbox).
 *
 * Flow control both ways is credit in message bytes, as for streams:
 * - client → service: the service grants a window in its accept and tops it
 *   up as its handler takes messages; client messages beyond it wait here.
 *   uWS.js cannot stop reading a WebSocket (its WebSocket has no pause; see
 *   the README), so what waits is bounded: past one window plus one message
 *   the client is closed with 1013 (try again later) instead of buffered.
 * - service → client: the gateway grants a window in the upgrade request and
 *   tops it up only while the client's socket takes the bytes (uWS
 *   bufferedAmount below half a window), so a slow client stops the service.
 *
 * Every frame to the service is published with the upgrade's reply subject:
 * when the service is gone, NATS answers no-responders there and the client
 * gets 1011 at once; quiet sessions get a probe every 2 s for the same reason.
 */
import { isUtf8 } from 'node:buffer';
import type { WebSocket } from 'uWebSockets.js';
import {
  encodeCancel,
  encodeClose,
  encodeControl,
  encodeCredit,
  encodeMsg,
  encodeTopicFrame,
  frameBodyLimit,
  isSendableCloseCode,
  MESSAGE_TOO_BIG,
  MessageReceiver,
  PROBE_FRAME,
  PROBE_INTERVAL_MS,
  WS_CLOSE,
  type Frame,
} from '@natsgw/service-sdk/protocol';
import type { Exchange } from '../front/exchange.js';
import type { WsStats } from './ws-stats.js';

/** What a session needs from the gateway. */
export interface WsSessionOwner {
  /** Publishes a frame to the service's inbox with the upgrade's reply subject, at the end of this event-loop turn; false when there is no NATS connection. */
  publishFrame(ex: Exchange, inbox: string, data: Uint8Array): boolean;
  /** Subscribes the connection to a topic; resolves once the gateway's NATS subscription is in place. */
  subscribe(session: WsSession, topic: string): Promise<void>;
  unsubscribe(session: WsSession, topic: string): void;
  /** The session is over (either side closed): release its reply subject, count and log it. */
  ended(session: WsSession, code: number, reason: string): void;
  /** The service broke the protocol (logged as a bad reply). */
  badFrame(session: WsSession, reason: string): void;
}

export interface WsLimits {
  /** Largest message either way, in bytes (larger: close 1009). */
  maxMessageBytes: number;
  /** Credit the gateway grants the service, and the most a client's socket may hold before it stops granting. */
  window: number;
  maxPayload: number;
}

/** Most topics one connection may be subscribed to (PROTOCOL.md §14.5). */
export const MAX_TOPICS_PER_CONNECTION = 256;

export interface WsUserData {
  session: WsSession;
}

export class WsSession {
  ws: WebSocket<WsUserData> | undefined = undefined;
  readonly openedAt: number;
  lastSentAt: number;
  readonly topics = new Set<string>();
  messagesIn = 0;
  messagesOut = 0;
  bytesIn = 0;
  bytesOut = 0;
  /** Either side closed: nothing more is sent anywhere. */
  closed = false;
  private readonly frameLimit: number;

  // client → service
  private upCredit: number;
  private upSeq = 0;
  private readonly upQueue: Array<{ data: Buffer; bin: boolean; offset: number }> = [];
  private upQueued = 0;

  // service → client
  private readonly receiver: MessageReceiver;
  /** Bytes taken from the service and not credited back yet. */
  private owed = 0;
  /** Pings the service asked for whose pongs it has not had. */
  private pingsAsked = 0;

  constructor(
    readonly ex: Exchange,
    readonly inbox: string,
    credit: number,
    private readonly owner: WsSessionOwner,
    private readonly limits: WsLimits,
    private readonly stats: WsStats,
    now: number,
  ) {
    this.upCredit = credit;
    this.receiver = new MessageReceiver(limits.window, limits.maxMessageBytes);
    this.openedAt = now;
    this.lastSentAt = now;
    this.frameLimit = frameBodyLimit(limits.maxPayload);
  }

  // From the client (uWS callbacks).

  /** A client message (its ArrayBuffer is valid only during the callback). */
  fromClient(message: ArrayBuffer, isBinary: boolean, now: number): void {
    if (this.closed) return;
    const n = message.byteLength;
    if (n > this.limits.maxMessageBytes) return this.closeBoth(WS_CLOSE.tooBig, `message of ${n} bytes exceeds the limit of ${this.limits.maxMessageBytes}`);
    this.messagesIn++;
    this.bytesIn += n;
    this.stats.messagesIn++;
    this.stats.bytesIn += n;
    if (this.upQueue.length === 0 && n <= this.upCredit && n <= this.frameLimit) {
      // The common case: the whole message in one frame, now (encodeMsg copies it).
      this.upCredit -= n;
      this.send(encodeMsg(++this.upSeq, new Uint8Array(message), isBinary, false), now);
      return;
    }
    if (this.upQueued + n > this.limits.window + this.limits.maxMessageBytes) {
      return this.closeBoth(WS_CLOSE.tryAgainLater, 'the service is not keeping up with this connection');
    }
    this.upQueue.push({ data: Buffer.from(new Uint8Array(message)), bin: isBinary, offset: 0 });
    this.upQueued += n;
    this.pump(now);
  }

  /** Sends queued client messages within the credit, cut into frames where needed. */
  private pump(now: number): void {
    while (this.upQueue.length > 0 && !this.closed) {
      const head = this.upQueue[0]!;
      const left = head.data.length - head.offset;
      const take = Math.min(left, this.upCredit, this.frameLimit);
      if (take === 0 && left > 0) return; // wait for credit
      const more = take < left;
      this.upCredit -= take;
      this.send(encodeMsg(++this.upSeq, head.data.subarray(head.offset, head.offset + take), head.bin, more), now);
      head.offset += take;
      this.upQueued -= take;
      if (!more) this.upQueue.shift();
    }
  }

  /** The client closed (or uWS closed it: timeout, backpressure, our own end()). */
  clientClosed(code: number, reason: string): void {
    this.ws = undefined;
    if (this.closed) return;
    this.closed = true;
    // 1005 (no code) and 1006 (dropped) tell the service what happened; they are never sent to a client.
    this.send(encodeClose(code >= 1000 && code <= 4999 ? code : WS_CLOSE.abnormal, reason), 0);
    this.owner.ended(this, code, reason);
  }

  /** uWS's send buffer for the client drained: credit for what it took. */
  onDrain(): void {
    this.maybeGrant(true);
  }

  /** The client answered a ping. */
  onPong(body: ArrayBuffer): void {
    if (this.pingsAsked === 0 || this.closed) return;
    this.pingsAsked--;
    this.send(encodeControl('pong', new Uint8Array(body)), performance.now());
  }

  // From the service (frames on the reply subject).

  onFrame(frame: Frame, now: number): void {
    if (this.closed) return;
    switch (frame.t) {
      case 'msg':
        return this.onMsg(frame.seq, frame.body, frame.bin, frame.more);
      case 'credit':
        if (frame.n === 0) return; // a probe
        this.upCredit += frame.n;
        return this.pump(now);
      case 'close':
        if (frame.code === WS_CLOSE.abnormal) return this.dropClient(); // terminate(): no close frame
        // A code the client may not be sent is the service's bug: the client learns only that it failed.
        return isSendableCloseCode(frame.code) ? this.closeClient(frame.code, frame.reason) : this.broken(`close frame with code ${frame.code}, which may not be sent to a client`);
      case 'cancel':
        return this.closeClient(WS_CLOSE.internalError, 'the service gave up on the connection');
      case 'sub':
        // Each topic may cost the gateway a NATS subscription: a service cannot make it hold without bound.
        if (!this.topics.has(frame.topic) && this.topics.size >= MAX_TOPICS_PER_CONNECTION) return this.broken(`more than ${MAX_TOPICS_PER_CONNECTION} topics on one connection`);
        this.topics.add(frame.topic);
        this.owner.subscribe(this, frame.topic).then(
          () => {
            if (!this.closed && this.topics.has(frame.topic)) this.send(encodeTopicFrame('subscribed', frame.topic), performance.now());
          },
          () => undefined, // the session closed, or NATS refused it (logged by the owner)
        );
        return;
      case 'unsub':
        if (this.topics.delete(frame.topic)) this.owner.unsubscribe(this, frame.topic);
        return;
      case 'ping':
        this.pingsAsked = Math.min(this.pingsAsked + 1, 16);
        this.ws?.ping(frame.body);
        return;
      default:
        return this.broken(`unexpected ${frame.t} frame in a WebSocket session`);
    }
  }

  private onMsg(seq: number, body: Buffer, bin: boolean, more: boolean): void {
    const message = this.receiver.take(seq, body, bin, more);
    if (typeof message === 'string') {
      if (message === MESSAGE_TOO_BIG) return this.closeBoth(WS_CLOSE.tooBig, `the service sent a message larger than ${this.limits.maxMessageBytes} bytes`);
      return this.broken(message);
    }
    // Pieces are credited as they come (what they hold is bounded by
    // --ws-max-message), or a message larger than the window never completes.
    this.owed += body.length;
    if (message === undefined) return this.maybeGrant(false);
    // A text message that is not UTF-8 would make the client fail the connection (RFC 6455 §8.1).
    if (!bin && !isUtf8(message)) return this.broken('a text message that is not UTF-8');
    this.messagesOut++;
    this.bytesOut += message.length;
    this.stats.messagesOut++;
    this.stats.bytesOut += message.length;
    const ws = this.ws;
    if (ws === undefined) return;
    ws.cork(() => ws.send(message, bin));
    this.maybeGrant(false);
  }

  /**
   * Grants the service credit for what the client's socket took: once a
   * quarter window is owed (one credit frame per quarter window, not per
   * message), and only while uWS holds less than half a window for the client.
   */
  private maybeGrant(drained: boolean): void {
    const ws = this.ws;
    if (this.closed || ws === undefined || this.owed === 0) return;
    if (!drained && this.owed < this.limits.window / 4) return;
    if (ws.getBufferedAmount() >= this.limits.window / 2) return; // the drain handler comes back
    this.receiver.grant(this.owed);
    this.send(encodeCredit(this.owed), performance.now());
    this.owed = 0;
  }

  // Ends.

  /** Closes the client with `code` (the service asked, or it is gone); the service is not told. */
  closeClient(code: number, reason: string): void {
    if (this.closed) return;
    this.closed = true;
    const ws = this.ws;
    this.ws = undefined;
    this.owner.ended(this, code, reason);
    if (ws !== undefined) ws.cork(() => ws.end(code, reason));
  }

  /** Drops the client's connection without a close frame (the service called terminate()). */
  private dropClient(): void {
    if (this.closed) return;
    this.closed = true;
    const ws = this.ws;
    this.ws = undefined;
    this.owner.ended(this, WS_CLOSE.abnormal, 'terminated by the service');
    ws?.close();
  }

  /** Closes both sides with `code`: the gateway ends the session (too big, overload, shutdown). */
  closeBoth(code: number, reason: string): void {
    if (this.closed) return;
    this.send(encodeClose(code, reason), 0);
    this.closeClient(code, reason);
  }

  /** The service broke the protocol: it is told (cancel), the client gets 1011. */
  broken(reason: string): void {
    this.owner.badFrame(this, reason);
    if (this.closed) return;
    this.send(encodeCancel(reason), 0);
    this.closeClient(WS_CLOSE.internalError, 'the service broke the protocol');
  }

  /** No-responders on the service's inbox: it is gone. */
  peerGone(): void {
    this.closeClient(WS_CLOSE.internalError, 'the service went away');
  }

  /** Called about every second: a probe when nothing went to the service for 2 s. */
  tick(now: number): void {
    if (!this.closed && now - this.lastSentAt >= PROBE_INTERVAL_MS) this.send(PROBE_FRAME, now);
  }

  private send(data: Uint8Array, now: number): void {
    if (now !== 0) this.lastSentAt = now;
    if (!this.owner.publishFrame(this.ex, this.inbox, data) && !this.closed) this.closeClient(WS_CLOSE.internalError, 'the gateway lost its NATS connection');
  }
}
