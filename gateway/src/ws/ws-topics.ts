/**
 * Topics across the fleet (PROTOCOL.md §14.5): a service subscribes a
 * connection to a topic, publishes to it once on the topic's NATS subject,
 * and every gateway with a connection subscribed delivers it to all of them.
 *
 * Per topic a gateway holds one NATS subscription, however many of its
 * connections are subscribed, and fans a message out with uWS's own pub/sub
 * (one app.publish, the topic's subject as the uWS topic). The subscription
 * goes when its last connection leaves.
 */
import { isUtf8 } from 'node:buffer';
import type { Msg, NatsConnection, Subscription } from '@nats-io/transport-node';
import type { TemplatedApp } from 'uWebSockets.js';
import { TOPIC_BINARY_HEADER, topicSubject } from '@natsgw/service-sdk/protocol';
import type { WsSession } from './ws-session.js';
import type { WsStats } from './ws-stats.js';

interface TopicEntry {
  sub: Subscription;
  sessions: number;
  /** Resolves once the server has the subscription (a flush after it). */
  ready: Promise<void>;
}

export interface TopicEvents {
  /** A topic message the gateway did not deliver (too large, text that is not UTF-8). */
  refused(subject: string, reason: string): void;
}

export class WsTopics {
  private readonly topics = new Map<string, TopicEntry>();

  constructor(
    private readonly app: TemplatedApp,
    private readonly stats: WsStats,
    private readonly maxMessageBytes: number,
    private readonly events: TopicEvents,
  ) {}

  /** Topics with a NATS subscription right now. */
  get size(): number {
    return this.topics.size;
  }

  add(nc: NatsConnection | undefined, session: WsSession, topic: string): Promise<void> {
    const subject = topicSubject(topic);
    const ws = session.ws;
    if (ws === undefined) return Promise.reject(new Error('the connection is closed'));
    // (uWS's subscribe() answers true either way: ask first.)
    if (ws.isSubscribed(subject)) return this.topics.get(subject)?.ready ?? Promise.resolve();
    ws.subscribe(subject);
    let entry = this.topics.get(subject);
    if (entry === undefined) {
      if (nc === undefined) return Promise.reject(new Error('not connected to NATS'));
      const sub = nc.subscribe(subject, { callback: (_err, msg) => this.deliver(subject, msg) });
      entry = { sub, sessions: 0, ready: nc.flush() };
      this.topics.set(subject, entry);
    }
    entry.sessions++;
    return entry.ready;
  }

  remove(session: WsSession, topic: string): void {
    const subject = topicSubject(topic);
    // After a close uWS has dropped the connection's subscriptions itself.
    if (session.ws !== undefined) session.ws.unsubscribe(subject);
    const entry = this.topics.get(subject);
    if (entry === undefined) return;
    if (--entry.sessions > 0) return;
    this.topics.delete(subject);
    if (!entry.sub.isClosed()) entry.sub.unsubscribe();
  }

  private deliver(subject: string, msg: Msg): void {
    try {
      const data = msg.data;
      const bin = msg.headers?.get(TOPIC_BINARY_HEADER) === '1';
      if (data.length > this.maxMessageBytes) return this.events.refused(subject, `message of ${data.length} bytes exceeds --ws-max-message`);
      if (!bin && !isUtf8(data)) return this.events.refused(subject, 'text message that is not UTF-8');
      const n = this.app.numSubscribers(subject);
      if (n === 0) return;
      this.app.publish(subject, data, bin);
      this.stats.messagesOut += n;
      this.stats.bytesOut += n * data.length;
    } catch (err) {
      this.events.refused(subject, `delivery failed: ${(err as Error).message}`);
    }
  }

  close(): void {
    for (const e of this.topics.values()) if (!e.sub.isClosed()) e.sub.unsubscribe();
    this.topics.clear();
  }
}
