/**
 * WebSockets at the gateway (PROTOCOL.md §14): the uWS WebSocket behaviour,
 * the accept that turns an upgrade request into a session, and the sessions
 * of this gateway (probes, shutdown, topics, counts, the close log line).
 *
 * The upgrade request itself travels like any request (http-front.ts): the
 * service answers 101 to accept, anything else is the response the client
 * gets instead of a WebSocket.
 */
import type { HttpResponse, TemplatedApp, WebSocketBehavior } from 'uWebSockets.js';
import { connectionNamed, RESPONSE_HEADER_SKIP } from '../front/respond.js';
import type { Exchange } from '../front/exchange.js';
import type { NatsConnection } from '@nats-io/transport-node';
import type { ReplyEnvelope } from '@natsgw/service-sdk/protocol';
import { WsSession, type WsLimits, type WsSessionOwner, type WsUserData } from './ws-session.js';
import { WsStats } from './ws-stats.js';
import { WsTopics } from './ws-topics.js';
import type { CorkAnchor } from './cork-anchor.js';

export interface WsOptions {
  /** Largest message either way (--ws-max-message). */
  maxMessageBytes: number;
  /** A connection with no message or pong for this long is closed; uWS pings before that (--ws-idle-timeout). */
  idleTimeoutMs: number;
  /** Most open connections (--ws-max-connections); upgrades beyond get 503. */
  maxConnections: number;
  /** Credit granted to services for messages to the client. */
  window: number;
}

/**
 * How far beyond --ws-max-message uWS reads a message before it gives up.
 * uWS cuts a client off without a close frame (the client sees 1006, and
 * clients typically reconnect and resend) when a message exceeds its own
 * maxPayloadLength; it offers no way to refuse with a code before it has
 * buffered the message. So its limit sits this far above ours: a message
 * up to here is read and refused with 1009, a larger one gets uWS's cut-off.
 */
export const WS_READ_MARGIN_BYTES = 16 * 1024 * 1024;

/** Response headers of a 101 that belong to the gateway's handshake, never the service's. */
const HANDSHAKE_HEADERS = new Set(['sec-websocket-accept', 'sec-websocket-extensions', 'sec-websocket-protocol', 'sec-websocket-version']);

export interface WsEvents {
  badFrame(ex: Exchange, reason: string): void;
  closed(ex: Exchange, session: WsSession, code: number, reason: string, durationMs: number): void;
  topicRefused(subject: string, reason: string): void;
}

/** What the front learned about an upgrade request while it was in the uWS handler. */
export interface UpgradeRequest {
  key: string;
  version: string;
  /** Subprotocols the client offered, in its order. */
  protocols: string[];
  context: unknown;
}

export class WsFront implements WsSessionOwner {
  readonly stats = new WsStats();
  readonly topics: WsTopics;
  private readonly sessions = new Set<WsSession>();
  private readonly timer: NodeJS.Timeout;
  private readonly limits: WsLimits;
  /** The NATS side: frames, the reply subject, and a connection for topic subscriptions. */
  link: { queueFrame(ex: Exchange, inbox: string, data: Uint8Array): void; release(ex: Exchange): void; hold(ex: Exchange): void; nc: NatsConnection } | undefined = undefined;

  constructor(
    app: TemplatedApp,
    private readonly opts: WsOptions,
    private readonly events: WsEvents,
    maxPayload: () => number,
    private readonly anchor: CorkAnchor,
  ) {
    this.limits = {
      maxMessageBytes: opts.maxMessageBytes,
      window: opts.window,
      get maxPayload() {
        return maxPayload();
      },
    };
    this.topics = new WsTopics(app, this.stats, opts.maxMessageBytes, { refused: (s, r) => events.topicRefused(s, r) });
    this.timer = setInterval(() => this.tick(), 1000);
    this.timer.unref();
  }

  /** The uWS behaviour for every path; `upgrade` is the front's handler. */
  behavior(upgrade: WebSocketBehavior<WsUserData>['upgrade']): WebSocketBehavior<WsUserData> {
    return {
      upgrade,
      maxPayloadLength: this.opts.maxMessageBytes + WS_READ_MARGIN_BYTES,
      // uWS's resolution is 4 s; 0 would disable it.
      idleTimeout: Math.max(8, Math.round(this.opts.idleTimeoutMs / 1000)),
      sendPingsAutomatically: true,
      // Direct sends are held to the credit (at most about 1.5 windows buffered); the rest is room for topic messages.
      maxBackpressure: 2 * this.opts.window + this.opts.maxMessageBytes,
      // A client too slow for its topics is closed rather than silently skipped.
      closeOnBackpressureLimit: true,
      open: (ws) => {
        const session = ws.getUserData().session;
        session.ws = ws;
        this.sessions.add(session);
        this.stats.open++;
        this.stats.opened++;
      },
      message: (ws, message, isBinary) => ws.getUserData().session.fromClient(message, isBinary, performance.now()),
      drain: (ws) => ws.getUserData().session.onDrain(),
      pong: (ws, message) => ws.getUserData().session.onPong(message),
      close: (ws, code, message) => ws.getUserData().session.clientClosed(code, Buffer.from(message).toString('utf8')),
    };
  }

  /** Credit granted to services for messages to the client. */
  get window(): number {
    return this.opts.window;
  }

  /** True when another connection would exceed --ws-max-connections. */
  get full(): boolean {
    return this.stats.open >= this.opts.maxConnections;
  }

  get open(): number {
    return this.stats.open;
  }

  /**
   * The service accepted (101): completes the handshake with the client and
   * starts the session. Returns a reason instead when the accept is invalid
   * (a subprotocol the client did not offer), for a 502.
   */
  accept(ex: Exchange, up: UpgradeRequest, reply: ReplyEnvelope, now: number): string | undefined {
    const link = this.link;
    if (link === undefined) return 'the NATS connection was lost';
    const h = reply.headers;
    let protocol = '';
    let connection: string | undefined;
    for (let i = 0; i < h.length; i += 2) {
      const name = h[i]!.toLowerCase();
      if (name === 'sec-websocket-protocol') {
        if (protocol !== '' || !up.protocols.includes(h[i + 1]!)) return `the service chose the subprotocol ${JSON.stringify(h[i + 1]!.slice(0, 64))}, which the client did not offer`;
        protocol = h[i + 1]!;
      } else if (name === 'connection') connection = connection === undefined ? h[i + 1]! : connection + ',' + h[i + 1]!;
    }
    const skip = connection === undefined ? undefined : connectionNamed(connection);
    const session = new WsSession(ex, reply.inbox!, reply.credit!, this, this.limits, this.stats, now);
    ex.session = session;
    link.hold(ex);
    const res: HttpResponse = ex.res;
    ex.responding = true;
    // Not res.cork(): see cork-anchor.ts.
    this.anchor.upgrade(res, () => {
      res.writeStatus('101 Switching Protocols');
      for (let i = 0; i < h.length; i += 2) {
        const lower = h[i]!.toLowerCase();
        if (RESPONSE_HEADER_SKIP.has(lower) || HANDSHAKE_HEADERS.has(lower) || skip?.has(lower)) continue;
        res.writeHeader(h[i]!, h[i + 1]!);
      }
      res.writeHeader('x-request-id', ex.requestId);
      // uWS calls open() from inside upgrade(), so the session has its socket before any frame can arrive.
      res.upgrade<WsUserData>({ session }, up.key, protocol, '', up.context as never);
    });
    ex.status = 101;
    return undefined;
  }

  // WsSessionOwner

  publishFrame(ex: Exchange, inbox: string, data: Uint8Array): boolean {
    const link = this.link;
    if (link === undefined) return false;
    link.queueFrame(ex, inbox, data);
    return true;
  }

  subscribe(session: WsSession, topic: string): Promise<void> {
    const p = this.topics.add(this.link?.nc, session, topic);
    p.catch((err: Error) => this.events.topicRefused(topic, `subscription failed: ${err.message}`));
    return p;
  }

  unsubscribe(session: WsSession, topic: string): void {
    this.topics.remove(session, topic);
  }

  ended(session: WsSession, code: number, reason: string): void {
    if (this.sessions.delete(session)) this.stats.closed(code);
    for (const topic of session.topics) this.topics.remove(session, topic);
    session.topics.clear();
    this.link?.release(session.ex);
    this.events.closed(session.ex, session, code, reason, performance.now() - session.openedAt);
  }

  badFrame(session: WsSession, reason: string): void {
    this.events.badFrame(session.ex, reason);
  }

  /** Closes every session with `code` (1001 at shutdown, 1011 when NATS is lost), telling the services. */
  closeAll(code: number, reason: string): void {
    for (const s of [...this.sessions]) s.closeBoth(code, reason);
  }

  private tick(): void {
    const now = performance.now();
    for (const s of this.sessions) s.tick(now);
  }

  close(): void {
    clearInterval(this.timer);
    this.topics.close();
    this.anchor.close();
  }
}
