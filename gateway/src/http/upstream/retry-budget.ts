/**
 * Caps retries so a failing cluster is not hammered: over the last 10 s,
 * retries may add at most `percent` % of the requests, plus `minPerSecond`
 * per second regardless (so a quiet route can still retry). Counted in
 * one-second buckets; no timer.
 */
import { SecondWindow } from '../../timing/second-window.js';

const WINDOW_S = 10;

export class RetryBudget {
  private readonly requests = new SecondWindow(WINDOW_S);
  private readonly retries = new SecondWindow(WINDOW_S);

  constructor(public settings: { percent: number; minPerSecond: number }) {}

  /** Counts a first try. */
  recordRequest(nowMs: number): void {
    this.requests.add(nowMs);
  }

  /** Takes one retry from the budget if there is one left. */
  tryAcquire(nowMs: number): boolean {
    const allowed = Math.max((this.requests.sum(nowMs) * this.settings.percent) / 100, this.settings.minPerSecond * WINDOW_S);
    if (this.retries.sum(nowMs) >= allowed) return false;
    this.retries.add(nowMs);
    return true;
  }
}
