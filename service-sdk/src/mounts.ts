/**
 * Which more specific mounts are alive beneath this service's mount.
 *
 * All SDK services share one queue group, so NATS hands each request to
 * exactly one of them even when mounts overlap (`api.foo` and `api.foo.bar`
 * both match `api.foo.bar.x`): a request can never run twice. The one that
 * receives it may be the less specific mount; it then hands the request to
 * the most specific live mount it knows of (see serve.ts). This registry is
 * how it knows: services announce their mount on start, heartbeat, announce
 * again on drain, and answer queries from services that start later.
 *
 * Subjects (JSON payloads, see PROTOCOL.md "Overlapping mounts"):
 *   _NATSGW.mounts.announce   {"v":1,"mount":"api.foo","id":"…","state":"up"|"down","ttlMs":15000}
 *   _NATSGW.mounts.query      request; every service replies with its "up" announcement
 *   _NATSGW.handoff.<mount>   a request handed to that mount (queue group as above)
 */
import type { NatsConnection, Subscription } from '@nats-io/transport-node';

export const ANNOUNCE_SUBJECT = '_NATSGW.mounts.announce';
export const QUERY_SUBJECT = '_NATSGW.mounts.query';
export const HANDOFF_PREFIX = '_NATSGW.handoff.';

interface Announcement {
  v: 1;
  mount: string;
  id: string;
  state: 'up' | 'down';
  ttlMs: number;
}

export interface MountRegistryOptions {
  /** How often to re-announce, in ms; an entry expires after three missed beats. */
  heartbeatMs: number;
  /** How long to collect answers to the start-up query, in ms. */
  discoveryMs: number;
}

export class MountRegistry {
  /** mount → (instance id → expiry time), only for mounts below ours. */
  private readonly deeper = new Map<string, Map<string, number>>();
  private readonly subs: Subscription[] = [];
  private timer: NodeJS.Timeout | undefined;
  private readonly me: Announcement;

  constructor(
    private readonly nc: NatsConnection,
    private readonly mount: string,
    id: string,
    private readonly opts: MountRegistryOptions,
  ) {
    this.me = { v: 1, mount, id, state: 'up', ttlMs: opts.heartbeatMs * 3 };
  }

  /** Listens for announcements and learns the mounts already running. */
  async start(): Promise<void> {
    this.subs.push(this.nc.subscribe(ANNOUNCE_SUBJECT, { callback: (_e, m) => this.learn(m.data) }));
    this.subs.push(
      this.nc.subscribe(QUERY_SUBJECT, {
        callback: (_e, m) => {
          if (m.reply && this.me.state === 'up') m.respond(JSON.stringify(this.me));
        },
      }),
    );
    const inbox = `_INBOX.${this.me.id}.mounts`;
    const answers = this.nc.subscribe(inbox, { callback: (_e, m) => this.learn(m.data) });
    this.nc.publish(QUERY_SUBJECT, '', { reply: inbox });
    await this.nc.flush();
    await new Promise((r) => setTimeout(r, this.opts.discoveryMs));
    answers.unsubscribe();
  }

  /** Tells the others this instance serves its mount, and keeps telling them. */
  announceUp(): void {
    this.me.state = 'up';
    this.publish();
    this.timer = setInterval(() => this.publish(), this.opts.heartbeatMs);
    this.timer.unref();
  }

  /** Tells the others to stop handing requests to this instance. */
  announceDown(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.me.state = 'down';
    this.publish();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    for (const s of this.subs) if (!s.isClosed()) s.unsubscribe();
    this.subs.length = 0;
  }

  /**
   * The most specific live mount below ours that covers `subject`, if any.
   * @example registry.deeperMountFor('api.foo.bar.x') // 'api.foo.bar' while that mount runs
   */
  deeperMountFor(subject: string): string | undefined {
    if (this.deeper.size === 0) return undefined;
    const now = Date.now();
    let best: string | undefined;
    for (const [mount, instances] of this.deeper) {
      if (subject !== mount && !subject.startsWith(mount + '.')) continue;
      if (best !== undefined && mount.length <= best.length) continue;
      for (const [id, expires] of instances) if (expires < now) instances.delete(id);
      if (instances.size === 0) {
        this.deeper.delete(mount);
        continue;
      }
      best = mount;
    }
    return best;
  }

  /** Forgets a mount (a hand-off found nobody listening). */
  forget(mount: string): void {
    this.deeper.delete(mount);
  }

  private publish(): void {
    if (!this.nc.isClosed()) this.nc.publish(ANNOUNCE_SUBJECT, JSON.stringify(this.me));
  }

  private learn(data: Uint8Array): void {
    let a: Partial<Announcement>;
    try {
      a = JSON.parse(Buffer.from(data).toString('utf8')) as Partial<Announcement>;
    } catch {
      return;
    }
    if (a.v !== 1 || typeof a.mount !== 'string' || typeof a.id !== 'string') return;
    if (!a.mount.startsWith(this.mount + '.')) return; // only mounts below ours matter
    if (a.state === 'down') {
      const instances = this.deeper.get(a.mount);
      instances?.delete(a.id);
      if (instances?.size === 0) this.deeper.delete(a.mount);
      return;
    }
    const ttl = typeof a.ttlMs === 'number' && a.ttlMs > 0 ? a.ttlMs : this.opts.heartbeatMs * 3;
    let instances = this.deeper.get(a.mount);
    if (instances === undefined) this.deeper.set(a.mount, (instances = new Map()));
    instances.set(a.id, Date.now() + ttl);
  }
}
