/**
 * Counts per second over the last `seconds` seconds, in a ring of one-second
 * slots: no timer, no allocation; slots that passed are zeroed when next
 * touched.
 */
export class SecondWindow {
  private readonly slots: Float64Array;
  private lastSecond = 0;

  constructor(readonly seconds: number) {
    this.slots = new Float64Array(seconds);
  }

  /** Adds one to the current second. */
  add(nowMs: number): void {
    this.slots[this.roll(nowMs)]!++;
  }

  /** The total over the window, without the second in progress when `completeOnly`. */
  sum(nowMs: number, completeOnly = false): number {
    const current = this.roll(nowMs);
    let sum = 0;
    for (let i = 0; i < this.seconds; i++) if (!completeOnly || i !== current) sum += this.slots[i]!;
    return sum;
  }

  /** Zeroes the slots of the seconds that passed since the last call; returns the current slot. */
  private roll(nowMs: number): number {
    const second = Math.floor(nowMs / 1000);
    if (second !== this.lastSecond) {
      const gap = Math.min(second - this.lastSecond, this.seconds);
      for (let i = 1; i <= gap; i++) this.slots[(this.lastSecond + i) % this.seconds] = 0;
      this.lastSecond = second;
    }
    return second % this.seconds;
  }
}
