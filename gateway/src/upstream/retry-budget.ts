/**
 * Caps retries so a failing cluster is not hammered: over the last 10 s,
 * retries may add at most `percent` % of the requests, plus `minPerSecond`
 * per second regardless (so a quiet route can still retry). Counted in
 * one-second buckets; no timer.
 */
const WINDOW_S = 10;

export class RetryBudget {
  private readonly requests = new Uint32Array(WINDOW_S);
  private readonly retries = new Uint32Array(WINDOW_S);
  private lastSecond = 0;

  constructor(public settings: { percent: number; minPerSecond: number }) {}

  private roll(nowMs: number): number {
    const second = Math.floor(nowMs / 1000);
    if (second !== this.lastSecond) {
      const gap = Math.min(second - this.lastSecond, WINDOW_S);
      for (let i = 1; i <= gap; i++) {
        const slot = (this.lastSecond + i) % WINDOW_S;
        this.requests[slot] = 0;
        this.retries[slot] = 0;
      }
      this.lastSecond = second;
    }
    return second % WINDOW_S;
  }

  /** Counts a first try. */
  recordRequest(nowMs: number): void {
    this.requests[this.roll(nowMs)]!++;
  }

  /** Takes one retry from the budget if there is one left. */
  tryAcquire(nowMs: number): boolean {
    const slot = this.roll(nowMs);
    let requests = 0;
    let retries = 0;
    for (let i = 0; i < WINDOW_S; i++) {
      requests += this.requests[i]!;
      retries += this.retries[i]!;
    }
    const allowed = Math.max((requests * this.settings.percent) / 100, this.settings.minPerSecond * WINDOW_S);
    if (retries >= allowed) return false;
    this.retries[slot]!++;
    return true;
  }
}
