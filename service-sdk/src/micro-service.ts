/**
 * Makes a mount a NATS micro service (ADR-32): it answers `$SRV.PING`,
 * `$SRV.INFO` and `$SRV.STATS` (bare, by name, by name and id), so `nats
 * micro ls|info|stats` and any other NATS service tooling see it.
 *
 * Implemented here rather than with `@nats-io/services`: that package has
 * only prereleases (3.0.0-25 is its `latest`), and the protocol is three
 * request subjects with fixed JSON answers. Stats are the SDK's own: a
 * request counts from its arrival to the end of its response (the last
 * frame of a stream), not until the handler function returns.
 */
import type { Msg, NatsConnection, Subscription } from '@nats-io/transport-node';
import {
  INFO_RESPONSE,
  MICRO_VERBS,
  microSubjects,
  PING_RESPONSE,
  STATS_RESPONSE,
  type InfoResponse,
  type MicroEndpointStats,
  type MicroIdentity,
  type MicroVerb,
  type PingResponse,
  type StatsResponse,
} from './protocol/micro.js';

export interface MicroEndpoint {
  name: string;
  subject: string;
  queue: string;
}

class EndpointCounters {
  requests = 0;
  errors = 0;
  lastError = '';
  /** Nanoseconds, summed. */
  processingNs = 0;
}

/** Longest last_error kept (a handler's error message may be anything). */
const MAX_ERROR_TEXT = 512;

export class MicroResponder {
  private readonly subs: Subscription[] = [];
  private readonly counters: EndpointCounters[];
  private readonly started = new Date().toISOString();
  private readonly encoder = new TextEncoder();

  constructor(
    private readonly nc: NatsConnection,
    private readonly identity: MicroIdentity,
    private readonly description: string,
    private readonly endpoints: readonly MicroEndpoint[],
    private readonly onError: (err: unknown, subject: string) => void,
  ) {
    this.counters = endpoints.map(() => new EndpointCounters());
  }

  start(): void {
    for (const verb of MICRO_VERBS) {
      for (const subject of microSubjects(verb, this.identity.name, this.identity.id)) {
        this.subs.push(this.nc.subscribe(subject, { callback: (_err, msg) => this.contained(verb, msg) }));
      }
    }
  }

  stop(): void {
    for (const s of this.subs) if (!s.isClosed()) s.unsubscribe();
    this.subs.length = 0;
  }

  /**
   * One request handled on endpoint `i`, taking `ms`; `error` says why it
   * failed (a 5xx answer, a handler that threw, a timeout), if it did.
   */
  record(i: number, ms: number, error: string | undefined): void {
    const c = this.counters[i]!;
    c.requests++;
    c.processingNs += Math.round(ms * 1e6);
    if (error !== undefined) {
      c.errors++;
      c.lastError = error.length > MAX_ERROR_TEXT ? error.slice(0, MAX_ERROR_TEXT) : error;
    }
  }

  /** Runs inside nats.js's socket reader: must not throw. */
  private contained(verb: MicroVerb, msg: Msg): void {
    try {
      if (!msg.reply) return;
      this.nc.publish(msg.reply, this.encoder.encode(JSON.stringify(this.answer(verb))));
    } catch (err) {
      try {
        this.onError(err, msg.subject);
      } catch {
        // nowhere left to report it
      }
    }
  }

  answer(verb: MicroVerb): PingResponse | InfoResponse | StatsResponse {
    const { name, id, version, metadata } = this.identity;
    switch (verb) {
      case 'PING':
        return { type: PING_RESPONSE, name, id, version, metadata };
      case 'INFO':
        return {
          type: INFO_RESPONSE,
          name,
          id,
          version,
          metadata,
          description: this.description,
          endpoints: this.endpoints.map((e) => ({ name: e.name, subject: e.subject, queue_group: e.queue, metadata: null })),
        };
      case 'STATS':
        return {
          type: STATS_RESPONSE,
          name,
          id,
          version,
          metadata,
          started: this.started,
          endpoints: this.endpoints.map((e, i): MicroEndpointStats => {
            const c = this.counters[i]!;
            return {
              name: e.name,
              subject: e.subject,
              queue_group: e.queue,
              num_requests: c.requests,
              num_errors: c.errors,
              last_error: c.lastError,
              processing_time: c.processingNs,
              average_processing_time: c.requests === 0 ? 0 : Math.round(c.processingNs / c.requests),
            };
          }),
        };
    }
  }
}
