/**
 * A per-backend circuit breaker.
 *
 *   closed ──failureThreshold failures in a row──▶ open
 *   open ──after openMs──▶ half-open (admits halfOpenRequests trials at a time)
 *   half-open ──successThreshold successes──▶ closed (openMs back to its base)
 *   half-open ──a failed trial──▶ open again, openMs doubled (up to maxOpenMs)
 *
 * Only backend failures are reported here: 4xx answers and clients that go
 * away are neither successes nor failures (see Upstream).
 */
export interface BreakerSettings {
  failureThreshold: number;
  successThreshold: number;
  openMs: number;
  maxOpenMs: number;
  halfOpenRequests: number;
}

export type BreakerState = 'closed' | 'open' | 'half-open';
/** Prometheus encoding of the state (issue: 0 closed, 1 open, 2 half-open). */
export const BREAKER_STATE_VALUE: Record<BreakerState, number> = { closed: 0, open: 1, 'half-open': 2 };

export class CircuitBreaker {
  state: BreakerState = 'closed';
  consecutiveFailures = 0;
  halfOpenSuccesses = 0;
  trialsInFlight = 0;
  openedAt = 0;
  currentOpenMs: number;
  /** Times the breaker has opened. */
  trips = 0;

  constructor(
    public settings: BreakerSettings,
    private readonly onChange?: (from: BreakerState, to: BreakerState) => void,
  ) {
    this.currentOpenMs = settings.openMs;
  }

  /**
   * The state as of `now`, without changing anything: an open breaker whose
   * wait is over reports half-open (canAccept makes that move on the next
   * request). For admin views and metrics, which must not alter the breaker.
   */
  stateAt(now: number): BreakerState {
    return this.state === 'open' && now >= this.openedAt + this.currentOpenMs ? 'half-open' : this.state;
  }

  /** When the next trial is allowed (for display); 0 unless open. */
  nextTrialAt(): number {
    return this.state === 'open' ? this.openedAt + this.currentOpenMs : 0;
  }

  /** Whether a request would be admitted at `now`, changing nothing (for views and messages; see stateAt). */
  admitsAt(now: number): boolean {
    const state = this.stateAt(now);
    if (state !== 'half-open') return state === 'closed';
    // Still 'open' here means the wait just ended: every trial slot is free.
    return this.state === 'open' || this.trialsInFlight < this.settings.halfOpenRequests;
  }

  /** Whether a request may go to this backend now (no side effect but the open → half-open move). */
  canAccept(now: number): boolean {
    if (this.state === 'open' && now >= this.openedAt + this.currentOpenMs) {
      this.move('half-open');
      this.halfOpenSuccesses = 0;
      this.trialsInFlight = 0;
    }
    return this.admitsAt(now);
  }

  /** A request was sent (after canAccept said yes). */
  acquire(): void {
    if (this.state === 'half-open') this.trialsInFlight++;
  }

  onSuccess(): void {
    if (this.state === 'half-open') {
      this.trialsInFlight = Math.max(0, this.trialsInFlight - 1);
      if (++this.halfOpenSuccesses >= this.settings.successThreshold) {
        this.consecutiveFailures = 0;
        this.currentOpenMs = this.settings.openMs;
        this.move('closed');
      }
      return;
    }
    this.consecutiveFailures = 0;
  }

  onFailure(now: number): void {
    if (this.state === 'half-open') {
      this.trialsInFlight = Math.max(0, this.trialsInFlight - 1);
      this.currentOpenMs = Math.min(this.currentOpenMs * 2, this.settings.maxOpenMs);
      this.open(now);
      return;
    }
    if (this.state === 'closed' && ++this.consecutiveFailures >= this.settings.failureThreshold) {
      this.currentOpenMs = this.settings.openMs;
      this.open(now);
    }
  }

  /** A request ended without a verdict (client went away): frees its trial slot. */
  onAbandon(): void {
    if (this.state === 'half-open') this.trialsInFlight = Math.max(0, this.trialsInFlight - 1);
  }

  private open(now: number): void {
    this.openedAt = now;
    this.trips++;
    this.move('open');
  }

  private move(to: BreakerState): void {
    const from = this.state;
    if (from === to) return;
    this.state = to;
    this.onChange?.(from, to);
  }
}
