/** Timers driven by a FakeClock (STYLE 8): callbacks run only when the test advances time. */
import { FakeClock } from '../../src/clock.ts';
import type { Timers } from '../../src/index/sequencer.ts';

interface Scheduled {
  id: number;
  due: number;
  fn: () => void;
}

export class ManualTimers implements Timers {
  private next = 1;
  private queue: Scheduled[] = [];

  constructor(readonly clock: FakeClock) {}

  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.next++;
    this.queue.push({ id, due: this.clock.nowMs() + ms, fn });
    return id;
  }

  clearTimeout(handle: unknown): void {
    this.queue = this.queue.filter((s) => s.id !== handle);
  }

  /** Timers scheduled and not yet run. */
  get pending(): number {
    return this.queue.length;
  }

  /** Delay of the earliest pending timer from now (ms), or undefined. */
  nextDelay(): number | undefined {
    if (this.queue.length === 0) return undefined;
    return Math.min(...this.queue.map((s) => s.due)) - this.clock.nowMs();
  }

  /** Moves the clock by `ms`, running every timer that falls due, in due order. */
  advance(ms: number): void {
    const end = this.clock.nowMs() + ms;
    for (;;) {
      const due = this.queue.filter((s) => s.due <= end).sort((a, b) => a.due - b.due || a.id - b.id)[0];
      if (!due) break;
      this.queue = this.queue.filter((s) => s !== due);
      if (due.due > this.clock.nowMs()) this.clock.set(due.due);
      due.fn();
    }
    this.clock.set(end);
  }
}
