/**
 * Simulation metrics (DESIGN §6): latency percentiles, prefix hit rate against two offline ceilings,
 * goodput under SLO, load skew.
 *
 * Percentiles come from HdrHistogram (hdr-histogram-js; Gil Tene's HdrHistogram: 3 significant digits,
 * so a percentile is within 0.1% of the exact order statistic) over integer microseconds, exact means
 * from running sums.
 * The hit-rate ceilings are in ceilings.ts.
 */
import * as hdr from 'hdr-histogram-js';

export interface Percentiles {
  count: number;
  mean: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

const round3 = (x: number) => Math.round(x * 1000) / 1000;

/** A latency histogram in milliseconds with microsecond resolution. */
export class LatencyHistogram {
  private readonly h = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 2, numberOfSignificantValueDigits: 3, autoResize: true, useWebAssembly: false });
  private sum = 0;
  private n = 0;
  private maxMs = 0;

  record(ms: number): void {
    if (!(ms >= 0) || !Number.isFinite(ms)) return;
    this.h.recordValue(Math.max(1, Math.round(ms * 1000)));
    this.sum += ms;
    this.n++;
    if (ms > this.maxMs) this.maxMs = ms;
  }

  get count(): number {
    return this.n;
  }

  /** Percentile in ms (0 with no samples). */
  at(percentile: number): number {
    return this.n === 0 ? 0 : this.h.getValueAtPercentile(percentile) / 1000;
  }

  summary(): Percentiles {
    return { count: this.n, mean: round3(this.n ? this.sum / this.n : 0), p50: round3(this.at(50)), p90: round3(this.at(90)), p99: round3(this.at(99)), max: round3(this.maxMs) };
  }
}

/** A histogram of durations in nanoseconds (the router's decision time); summary in microseconds. */
export class NanosHistogram {
  private readonly h = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 2, numberOfSignificantValueDigits: 3, autoResize: true, useWebAssembly: false });
  n = 0;
  record(ns: number): void {
    if (!(ns >= 0) || !Number.isFinite(ns)) return;
    this.h.recordValue(Math.max(1, Math.round(ns)));
    this.n++;
  }
  summaryUs(): { count: number; p50: number; p99: number; mean: number } {
    if (this.n === 0) return { count: 0, p50: 0, p99: 0, mean: 0 };
    return { count: this.n, p50: round3(this.h.getValueAtPercentile(50) / 1000), p99: round3(this.h.getValueAtPercentile(99) / 1000), mean: round3(this.h.mean / 1000) };
  }
}

/** max / mean of the positive-length list (1 = perfectly even; 0 for an empty or all-zero list). */
export function maxOverMean(values: readonly number[]): number {
  if (values.length === 0) return 0;
  let max = 0;
  let sum = 0;
  for (const v of values) {
    sum += v;
    if (v > max) max = v;
  }
  return sum > 0 ? max / (sum / values.length) : 0;
}
