/**
 * What hostile or broken input from NATS did to this gateway: counted for
 * /metrics, logged at most once a second per kind (a flood of bad messages
 * must not become a flood of log lines), never thrown.
 */
import type { NatsGuardEvents } from '@natsgw/service-sdk/nats-guard';
import type { Logger } from '../log.js';

export type FaultKind = 'callback-error' | 'malformed-headers' | 'internal-error';

export class NatsFaults {
  readonly counts: Record<FaultKind, number> = { 'callback-error': 0, 'malformed-headers': 0, 'internal-error': 0 };
  private readonly lastLoggedAt: Record<FaultKind, number> = { 'callback-error': 0, 'malformed-headers': 0, 'internal-error': 0 };
  private readonly suppressed: Record<FaultKind, number> = { 'callback-error': 0, 'malformed-headers': 0, 'internal-error': 0 };

  constructor(private readonly log: Logger) {}

  /** Counts one fault and logs it unless one of its kind was logged in the last second. */
  record(kind: FaultKind, fields: Record<string, unknown>, msg: string, level: 'error' | 'warn' = 'error'): void {
    this.counts[kind]++;
    const now = Date.now();
    if (now - this.lastLoggedAt[kind] < 1000) {
      this.suppressed[kind]++;
      return;
    }
    const suppressed = this.suppressed[kind];
    this.lastLoggedAt[kind] = now;
    this.suppressed[kind] = 0;
    try {
      this.log[level]({ ...fields, ...(suppressed > 0 ? { suppressedSinceLast: suppressed } : {}) }, msg);
    } catch {
      // Logging must never be the thing that throws.
    }
  }

  /** The listeners for guardConnection(). */
  readonly guardEvents: NatsGuardEvents = {
    onCallbackError: (subject, error) => this.record('callback-error', { subject, err: error }, 'a NATS message callback threw; the message was dropped, reading goes on'),
    onMalformedHeaders: (subject, droppedLines) => this.record('malformed-headers', { subject, droppedLines }, 'a NATS message had header lines that do not parse; they were dropped', 'warn'),
  };
}
