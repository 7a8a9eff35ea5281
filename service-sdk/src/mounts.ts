/**
 * Which mounts overlap this service's mount, and whether they know of it.
 *
 * All SDK services share one queue group, so NATS hands each request to
 * exactly one of them even when mounts overlap (`api.foo` and `api.foo.bar`
 * both match `api.foo.bar.x`): a request can never run twice. The one that
 * receives it may be the less specific mount; it then hands the request to
 * the most specific live mount it knows of (see serve.ts). This registry is
 * how it knows.
 *
 * Subjects carry the mount, so NATS permissions can confine each service to
 * its own (PROTOCOL.md §6, examples/nats-permissions/):
 *   _NATSGW.mounts.announce.<mount>   {"v":1,"mount":"<mount>","id":"…","state":"up"|"down","ttlMs":…}
 *                                     heard by the mounts above it; an "up" sent as a request is acknowledged
 *   _NATSGW.mounts.query.<mount>      request from a starting mount; every overlapping mount answers with its "up"
 *   _NATSGW.handoff.<mount>           a request handed to that mount (queue group as above)
 *
 * Everything that arrives here is untrusted: an announcement counts only
 * when its subject and payload name the same valid mount, TTLs are clamped,
 * and the table is bounded and pruned on every heartbeat.
 */
import { createInbox, type Msg, type NatsConnection, type Subscription } from '@nats-io/transport-node';
import { isValidRoot } from './protocol/subject.js';

export const ANNOUNCE_PREFIX = '_NATSGW.mounts.announce.';
export const QUERY_PREFIX = '_NATSGW.mounts.query.';
export const HANDOFF_PREFIX = '_NATSGW.handoff.';

/** Shortest and longest time an announcement may ask to be remembered. */
export const MIN_TTL_MS = 1_000;
export const MAX_TTL_MS = 60_000;
/** Most deeper mounts, and instances per mount, remembered; more are ignored until some expire. */
export const MAX_MOUNTS = 1_024;
export const MAX_INSTANCES_PER_MOUNT = 256;

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
  /** Longest wait for the mounts above to acknowledge this one, in ms (serve() resolves by then). */
  readyTimeoutMs: number;
  /** Told about announcements refused (forged, malformed, over a bound). */
  onRefused?: (subject: string, why: string) => void;
}

/** The mounts strictly above `mount`: `api.foo.bar` → `api`, `api.foo`. */
function ancestors(mount: string): string[] {
  const out: string[] = [];
  for (let i = mount.indexOf('.'); i !== -1; i = mount.indexOf('.', i + 1)) out.push(mount.slice(0, i));
  return out;
}

const ID_RE = /^[A-Za-z0-9_-]{1,64}$/;

/** A new inbox under the connection's own prefix (its NATS user may read only those). */
function inboxOf(nc: NatsConnection): string {
  return createInbox((nc as { options?: { inboxPrefix?: string } }).options?.inboxPrefix);
}

export class MountRegistry {
  /** mount → (instance id → expiry time), only for mounts below ours. */
  private readonly deeper = new Map<string, Map<string, number>>();
  private readonly subs: Subscription[] = [];
  private timer: NodeJS.Timeout | undefined;
  private readonly me: Announcement;
  /** Instances of the mounts above ours found at start: they must acknowledge us before we serve. */
  private readonly outer = new Set<string>();

  constructor(
    private readonly nc: NatsConnection,
    private readonly mount: string,
    id: string,
    private readonly opts: MountRegistryOptions,
  ) {
    // 'down' until announceUp: nobody is told of this instance before it listens.
    this.me = { v: 1, mount, id, state: 'down', ttlMs: opts.heartbeatMs * 3 };
  }

  /** Listens for the mounts around ours and learns the ones already running. */
  async start(): Promise<void> {
    const answer = (m: Msg): void => {
      if (m.reply && this.me.state === 'up') m.respond(JSON.stringify(this.me));
    };
    // Deeper mounts announce themselves to us and ask us about themselves.
    this.subs.push(this.nc.subscribe(`${ANNOUNCE_PREFIX}${this.mount}.>`, { callback: (_e, m) => this.contained(m, () => this.onAnnounce(m)) }));
    this.subs.push(this.nc.subscribe(`${QUERY_PREFIX}${this.mount}.>`, { callback: (_e, m) => this.contained(m, () => answer(m)) }));
    // Mounts above ours ask too: they need to know us.
    for (const a of ancestors(this.mount)) this.subs.push(this.nc.subscribe(`${QUERY_PREFIX}${a}`, { callback: (_e, m) => this.contained(m, () => answer(m)) }));

    const inbox = inboxOf(this.nc);
    const answers = this.nc.subscribe(inbox, { callback: (_e, m) => this.contained(m, () => this.onQueryAnswer(m)) });
    this.nc.publish(`${QUERY_PREFIX}${this.mount}`, '', { reply: inbox });
    await this.nc.flush();
    await new Promise((r) => setTimeout(r, this.opts.discoveryMs));
    answers.unsubscribe();
    this.timer = setInterval(() => this.tick(), this.opts.heartbeatMs);
    this.timer.unref();
  }

  /**
   * Announces this instance, and resolves once every instance of the mounts
   * above ours found at start has acknowledged it (so none of them runs a
   * request meant for us any more), or after readyTimeoutMs. Returns the
   * instances that did not acknowledge in time.
   */
  async announceUp(): Promise<string[]> {
    this.me.state = 'up';
    const waiting = new Set(this.outer);
    if (waiting.size === 0) {
      this.publish();
      await this.nc.flush();
      return [];
    }
    const inbox = inboxOf(this.nc);
    let done!: () => void;
    const all = new Promise<void>((r) => (done = r));
    const acks = this.nc.subscribe(inbox, {
      callback: (_e, m) =>
        this.contained(m, () => {
          if (m.data.length === 0) return;
          const id = (JSON.parse(Buffer.from(m.data).toString('utf8')) as { id?: unknown }).id;
          if (typeof id === 'string') waiting.delete(id);
          if (waiting.size === 0) done();
        }),
    });
    const timeout = setTimeout(done, this.opts.readyTimeoutMs);
    try {
      this.nc.publish(ANNOUNCE_PREFIX + this.mount, JSON.stringify(this.me), { reply: inbox });
      await all;
    } finally {
      clearTimeout(timeout);
      acks.unsubscribe();
    }
    return [...waiting];
  }

  /** Tells the others to stop handing requests to this instance. */
  announceDown(): void {
    this.me.state = 'down';
    this.publish();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
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
      if (this.prune(mount, instances, now)) best = mount;
    }
    return best;
  }

  /** Forgets a mount (a hand-off found nobody listening). */
  forget(mount: string): void {
    this.deeper.delete(mount);
  }

  /** How many deeper mounts are remembered (for tests and stats). */
  get size(): number {
    return this.deeper.size;
  }

  /** Re-announces, and drops what expired, for every mount, requested or not. */
  private tick(): void {
    if (this.me.state === 'up') this.publish();
    const now = Date.now();
    for (const [mount, instances] of this.deeper) this.prune(mount, instances, now);
  }

  /** Drops expired instances; false (and the mount forgotten) when none is left. */
  private prune(mount: string, instances: Map<string, number>, now: number): boolean {
    for (const [id, expires] of instances) if (expires < now) instances.delete(id);
    if (instances.size > 0) return true;
    this.deeper.delete(mount);
    return false;
  }

  private publish(): void {
    if (!this.nc.isClosed()) this.nc.publish(ANNOUNCE_PREFIX + this.mount, JSON.stringify(this.me));
  }

  /** Runs a callback of ours inside nats.js's reader: whatever goes wrong is a refused message, never a throw. */
  private contained(m: Msg, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.opts.onRefused?.(m.subject, (err as Error).message);
    }
  }

  /** An announcement from a deeper mount: learn it, and acknowledge an "up" that asks. */
  private onAnnounce(m: Msg): void {
    const a = this.parse(m, m.subject.slice(ANNOUNCE_PREFIX.length));
    if (a === undefined) return;
    this.learn(a, m.subject);
    if (a.state === 'up' && m.reply) m.respond(JSON.stringify({ id: this.me.id }));
  }

  /** An answer to our start-up query: a deeper mount to learn, or an outer instance that must know us. */
  private onQueryAnswer(m: Msg): void {
    if (m.data.length === 0) return; // "no responders": nobody else overlaps us
    const a = this.parse(m, undefined);
    if (a === undefined || a.state !== 'up') return;
    if (a.mount.startsWith(this.mount + '.')) this.learn(a, m.subject);
    else if (this.mount.startsWith(a.mount + '.')) this.outer.add(a.id);
  }

  /** A checked announcement, or undefined (reported) when it is not one a service sends. */
  private parse(m: Msg, subjectMount: string | undefined): Announcement | undefined {
    let a: Partial<Announcement>;
    try {
      a = JSON.parse(Buffer.from(m.data).toString('utf8')) as Partial<Announcement>;
    } catch {
      this.opts.onRefused?.(m.subject, 'not JSON');
      return undefined;
    }
    const ok =
      a !== null &&
      typeof a === 'object' &&
      a.v === 1 &&
      typeof a.mount === 'string' &&
      isValidRoot(a.mount) &&
      (subjectMount === undefined || a.mount === subjectMount) &&
      typeof a.id === 'string' &&
      ID_RE.test(a.id) &&
      (a.state === 'up' || a.state === 'down');
    if (!ok) {
      this.opts.onRefused?.(m.subject, subjectMount !== undefined && a?.mount !== subjectMount ? 'its mount is not the one its subject names' : 'not a mount announcement');
      return undefined;
    }
    return a as Announcement;
  }

  private learn(a: Announcement, subject: string): void {
    if (!a.mount.startsWith(this.mount + '.')) return; // only mounts below ours matter
    if (a.state === 'down') {
      const instances = this.deeper.get(a.mount);
      instances?.delete(a.id);
      if (instances?.size === 0) this.deeper.delete(a.mount);
      return;
    }
    const ttl = Math.min(MAX_TTL_MS, Math.max(MIN_TTL_MS, typeof a.ttlMs === 'number' && Number.isFinite(a.ttlMs) ? a.ttlMs : this.opts.heartbeatMs * 3));
    let instances = this.deeper.get(a.mount);
    if (instances === undefined) {
      if (this.deeper.size >= MAX_MOUNTS) return this.opts.onRefused?.(subject, `more than ${MAX_MOUNTS} mounts below ${this.mount}`);
      this.deeper.set(a.mount, (instances = new Map()));
    }
    if (!instances.has(a.id) && instances.size >= MAX_INSTANCES_PER_MOUNT) return this.opts.onRefused?.(subject, `more than ${MAX_INSTANCES_PER_MOUNT} instances of ${a.mount}`);
    instances.set(a.id, Date.now() + ttl);
  }
}
