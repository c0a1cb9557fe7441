/**
 * Injected time (STYLE 8): everything that reads the time takes a Clock, so tests drive a FakeClock
 * and replay exactly (as linkerd's EWMA reads `get_at(now)`).
 */
export interface Clock {
  /** Milliseconds on a monotonic scale (origin arbitrary). */
  nowMs(): number;
}

export const systemClock: Clock = {
  nowMs: () => performance.timeOrigin + performance.now(),
};

/** A clock that moves only when told to. */
export class FakeClock implements Clock {
  constructor(private t = 0) {}
  nowMs(): number {
    return this.t;
  }
  advance(ms: number): number {
    if (!Number.isFinite(ms) || ms < 0) throw new RangeError(`Expected \`ms\` to be a finite number ≥ 0, got \`${ms}\``);
    this.t += ms;
    return this.t;
  }
  set(ms: number): void {
    this.t = ms;
  }
}
