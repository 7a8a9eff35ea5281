/**
 * One interval timer for many deadlines.
 *
 * Members join a Set and are looked at on each tick, so a limit fires at
 * most one tick late; nothing is armed or cleared per request. The timer
 * runs only while something is registered and never keeps the process alive.
 */
export interface Ticking {
  /** Called once per tick; returns false when it needs no more ticks. */
  tick(now: number): boolean;
}

export class CoarseTicker<T extends Ticking> {
  private readonly items = new Set<T>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly tickMs: number) {}

  add(item: T): void {
    this.items.add(item);
    if (this.timer === undefined) {
      this.timer = setInterval(this.sweep, this.tickMs);
      this.timer.unref();
    }
  }

  delete(item: T): void {
    this.items.delete(item);
  }

  get size(): number {
    return this.items.size;
  }

  private readonly sweep = (): void => {
    const now = Date.now();
    // Deleting the current entry while iterating a Set is well defined.
    for (const item of this.items) if (!item.tick(now)) this.items.delete(item);
    if (this.items.size === 0) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  };
}
