/**
 * Runtime policy evaluation (DESIGN §4): a shadow policy that decides beside the live one without
 * acting, and a canary that routes a seeded fraction of decisions and rolls back on its own when a
 * guard trips. This is the "is this change worth the deploy risk?" question asked of live traffic
 * instead of the simulator.
 *
 * Division of labour with the Router: the router owns the pick scratch and runs the shadow's pick on
 * it (it alone can undo the candidates a pick adds); this module keeps the state, the statistics and
 * the decisions about them. Both sides are synchronous and run in the routing thread, between or
 * inside decisions, so nothing here needs a lock.
 *
 * Isolation rules, and why:
 * - The shadow gets its own policy instance and its own seeded Rng: its pick must not advance the live
 *   draw sequence, or merely observing a policy would change what the live one decides.
 * - The shadow's onRouted and onDone are never called: it routed nothing, and a policy with memory of
 *   its own assignments (an SGLang-style tree, a bounded-load counter) would learn from requests it
 *   never placed.
 * - The canary gets its own instance too; its onRouted and onDone are called for the requests it
 *   routed (it acts), and only for those.
 */
import { EventEmitter } from 'node:events';
import { fail } from '../errors.js';
import { createRng, type Rng } from '../rng.js';
import type { Clock } from '../clock.js';
import type { FleetSnapshot } from '../fleet/fleet.js';
import type { Policy, PolicyParams } from './types.js';

/** Which policy decided a request: no canary running, the live policy while one runs, or the canary. */
export const ARM_LIVE = 0;
export const ARM_BASELINE = 1;
export const ARM_CANARY = 2;
export type Arm = typeof ARM_LIVE | typeof ARM_BASELINE | typeof ARM_CANARY;

/** Shadow TTFT deltas kept for the quantiles (the mean covers every comparison). */
export const SHADOW_DELTA_WINDOW = 65_536;
/** TTFT samples kept per canary arm inside the guard window (the newest win beyond that). */
export const CANARY_SAMPLE_CAPACITY = 4096;

export type CanaryMetric = 'ttft-p50-ratio' | 'ttft-p90-ratio' | 'ttft-p99-ratio';
export const CANARY_METRICS: readonly CanaryMetric[] = ['ttft-p50-ratio', 'ttft-p90-ratio', 'ttft-p99-ratio'];
const METRIC_QUANTILE: Record<CanaryMetric, number> = { 'ttft-p50-ratio': 0.5, 'ttft-p90-ratio': 0.9, 'ttft-p99-ratio': 0.99 };

/**
 * A rollback condition: the TTFT quantile of canary-routed requests ÷ the same quantile of
 * baseline-routed requests, both observed (ticket routed → onFirstToken, router clock) within the last
 * `windowMs`, trips when above `max` once both arms have `minSamples` in the window.
 */
export interface CanaryGuard {
  metric: CanaryMetric;
  /** Largest acceptable ratio (e.g. 1.2: the canary may be 20 % slower at that quantile). */
  max: number;
  /** Sliding window, ms (default 60,000). */
  windowMs?: number;
  /** Samples each arm needs in the window before the guard may trip (default 50). */
  minSamples?: number;
}

export interface CanaryOptions {
  /** Seed of the draw that picks the canary's decisions (default: derived from the router's seed). */
  seed?: number;
}

export type CanaryState = 'idle' | 'running' | 'promoted' | 'rolled-back' | 'aborted';

export interface QuantilesMs {
  p50: number;
  p90: number;
  p99: number;
}

export interface GuardReading {
  metric: CanaryMetric;
  max: number;
  windowMs: number;
  minSamples: number;
  canarySamples: number;
  baselineSamples: number;
  /** Quantile of each arm in the window, ms (NaN without samples). */
  canaryMs: number;
  baselineMs: number;
  /** canaryMs ÷ baselineMs (NaN until both arms have minSamples). */
  ratio: number;
  tripped: boolean;
}

export interface CanaryStatus {
  state: CanaryState;
  /** The candidate policy (null when no canary ever ran). */
  policy: string | null;
  params: PolicyParams;
  /** The live policy it is compared with. */
  baseline: string | null;
  /** Share of decisions drawn for the canary. */
  fraction: number;
  guards: readonly Required<CanaryGuard>[];
  startedAtMs: number;
  endedAtMs: number;
  /** Why it ended (rollback, abort, promotion), in words. */
  reason: string | null;
  /** Decisions drawn per arm, and requests routed per arm. */
  decisions: { canary: number; baseline: number };
  routed: { canary: number; baseline: number };
  /** routed.canary ÷ (routed.canary + routed.baseline); NaN before the first routed request. */
  routedFraction: number;
  /** Requests that ended in an error or a timeout, per arm. */
  errors: { canary: number; baseline: number };
  /** Observed TTFT in the widest guard window, per arm. */
  ttftMs: { canary: QuantilesMs; baseline: QuantilesMs };
  readings: GuardReading[];
}

export interface CanaryEvent {
  type: 'started' | 'promoted' | 'rolled-back' | 'aborted';
  policy: string;
  reason: string;
  atMs: number;
  status: CanaryStatus;
}

export interface ShadowReport {
  active: boolean;
  policy: string | null;
  params: PolicyParams;
  startedAtMs: number;
  /** Decisions evaluated (those with at least one candidate). */
  decisions: number;
  /** Decisions where both picked the same replica (or both refused). */
  agreements: number;
  /** agreements ÷ decisions (NaN before the first). */
  agreementRate: number;
  /** Decisions where one side refused (returned −1) and the other picked. */
  liveRefused: number;
  shadowRefused: number;
  /**
   * Predicted TTFT of the shadow's candidate − the live's, ms, over decisions where both picked (the
   * mean over all of them; p50 and p90 over the latest SHADOW_DELTA_WINDOW). Negative: the shadow
   * would have been faster by the router's own model.
   */
  deltaMs: { mean: number; p50: number; p90: number; samples: number };
}

/** Source of the rollout figures for the metrics' collect callbacks. */
export interface RolloutSource {
  shadowReport(): ShadowReport;
  canaryStatus(): CanaryStatus;
}

/**
 * k-th smallest of a[0 … n−1] (0-based), reordering a. Quickselect with a median-of-three pivot:
 * O(n) expected, so the guard can be evaluated often without sorting the window each time.
 */
export function selectKth(a: Float64Array, n: number, k: number): number {
  let lo = 0;
  let hi = n - 1;
  while (hi > lo) {
    const mid = (lo + hi) >>> 1;
    // Median of three into a[mid].
    if (a[mid] < a[lo]) swap(a, mid, lo);
    if (a[hi] < a[lo]) swap(a, hi, lo);
    if (a[hi] < a[mid]) swap(a, hi, mid);
    const pivot = a[mid];
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (a[i] < pivot) i++;
      while (a[j] > pivot) j--;
      if (i <= j) {
        swap(a, i, j);
        i++;
        j--;
      }
    }
    if (k <= j) hi = j;
    else if (k >= i) lo = i;
    else return a[k];
  }
  return a[k];
}

function swap(a: Float64Array, i: number, j: number): void {
  const t = a[i];
  a[i] = a[j];
  a[j] = t;
}

/** Nearest-rank quantile q of a[0 … n−1] (reorders a); NaN when n = 0. */
export function quantileOf(a: Float64Array, n: number, q: number): number {
  if (n === 0) return NaN;
  return selectKth(a, n, Math.min(n - 1, Math.max(0, Math.ceil(q * n) - 1)));
}

/** Time-stamped samples in arrival order (the router clock is monotonic), newest CANARY_SAMPLE_CAPACITY kept. */
class SampleRing {
  readonly atMs = new Float64Array(CANARY_SAMPLE_CAPACITY);
  readonly value = new Float64Array(CANARY_SAMPLE_CAPACITY);
  /** Index of the oldest sample, and how many are held. */
  head = 0;
  size = 0;

  push(atMs: number, value: number): void {
    const cap = CANARY_SAMPLE_CAPACITY;
    const at = (this.head + this.size) % cap;
    this.atMs[at] = atMs;
    this.value[at] = value;
    if (this.size < cap) this.size++;
    else this.head = (this.head + 1) % cap;
  }

  /** Drops samples older than `sinceMs`. */
  prune(sinceMs: number): void {
    while (this.size > 0 && this.atMs[this.head] < sinceMs) {
      this.head = (this.head + 1) % CANARY_SAMPLE_CAPACITY;
      this.size--;
    }
  }

  /** Copies the values stamped at or after `sinceMs` into out; returns how many. */
  copySince(sinceMs: number, out: Float64Array): number {
    let n = 0;
    for (let k = 0; k < this.size; k++) {
      const i = (this.head + k) % CANARY_SAMPLE_CAPACITY;
      if (this.atMs[i] >= sinceMs) out[n++] = this.value[i];
    }
    return n;
  }

  clear(): void {
    this.head = 0;
    this.size = 0;
  }
}

function checkGuard(g: unknown, where: string): Required<CanaryGuard> {
  if (g === null || typeof g !== 'object') fail('DYSTRO_ERR_INVALID_CONFIG', where, 'an object { metric, max, windowMs?, minSamples? }', g);
  const x = g as Partial<CanaryGuard>;
  if (!CANARY_METRICS.includes(x.metric as CanaryMetric)) fail('DYSTRO_ERR_INVALID_CONFIG', `${where}.metric`, `one of ${CANARY_METRICS.join(', ')}`, x.metric);
  if (typeof x.max !== 'number' || !Number.isFinite(x.max) || x.max <= 0) fail('DYSTRO_ERR_INVALID_CONFIG', `${where}.max`, 'a finite number > 0', x.max);
  const windowMs = x.windowMs ?? 60_000;
  if (typeof windowMs !== 'number' || !Number.isFinite(windowMs) || windowMs <= 0) fail('DYSTRO_ERR_INVALID_CONFIG', `${where}.windowMs`, 'a finite number > 0', windowMs);
  const minSamples = x.minSamples ?? 50;
  if (typeof minSamples !== 'number' || !Number.isInteger(minSamples) || minSamples < 1 || minSamples > CANARY_SAMPLE_CAPACITY) {
    fail('DYSTRO_ERR_INVALID_CONFIG', `${where}.minSamples`, `an integer in 1 … ${CANARY_SAMPLE_CAPACITY}`, minSamples);
  }
  return { metric: x.metric as CanaryMetric, max: x.max, windowMs, minSamples };
}

/** Validates the canary's fraction and guards (control path; typed errors, nothing changes on failure). */
export function checkCanaryArgs(fraction: unknown, guard: unknown): { fraction: number; guards: Required<CanaryGuard>[] } {
  if (typeof fraction !== 'number' || !Number.isFinite(fraction) || fraction <= 0 || fraction >= 1) {
    fail('DYSTRO_ERR_INVALID_CONFIG', 'canary fraction', 'a number in the open interval (0, 1)', fraction);
  }
  const list = guard === undefined || guard === null ? [] : Array.isArray(guard) ? guard : [guard];
  return { fraction, guards: list.map((g, i) => checkGuard(g, Array.isArray(guard) ? `guard[${i}]` : 'guard')) };
}

const NO_QUANTILES: QuantilesMs = { p50: NaN, p90: NaN, p99: NaN };

export class Rollout extends EventEmitter<{ canary: [CanaryEvent] }> implements RolloutSource {
  // ------------------------------------------------------------------ shadow
  /** The shadow's own instance and draw (null: no shadow). Read by the router on every decision. */
  shadowPolicy: Policy | null = null;
  shadowRng: Rng;
  private shadowParams: PolicyParams = {};
  private shadowStartedAtMs = NaN;
  private shadowDecisions = 0;
  private shadowAgreements = 0;
  private shadowLiveRefused = 0;
  private shadowShadowRefused = 0;
  private deltaSum = 0;
  private deltaCount = 0;
  private readonly deltas = new Float64Array(SHADOW_DELTA_WINDOW);
  private lastShadowReport: ShadowReport | null = null;

  // ------------------------------------------------------------------ canary
  /** The canary's own instance (null: none running). Read by the router on every decision. */
  canaryPolicy: Policy | null = null;
  /** Bumped whenever a canary starts or ends: tickets of an earlier one no longer feed its statistics. */
  canaryEpoch = 0;
  private canaryRng: Rng;
  private fraction = 0;
  private guards: Required<CanaryGuard>[] = [];
  private state: CanaryState = 'idle';
  private canaryName: string | null = null;
  private canaryParams: PolicyParams = {};
  private baselineName: string | null = null;
  private startedAtMs = NaN;
  private endedAtMs = NaN;
  private reason: string | null = null;
  private readonly drawn = new Float64Array(3);
  private readonly routed = new Float64Array(3);
  private readonly errors = new Float64Array(3);
  private readonly samples = [new SampleRing(), new SampleRing(), new SampleRing()];
  private readonly scratch = new Float64Array(CANARY_SAMPLE_CAPACITY);
  /** First-token samples since the last guard evaluation. */
  private sinceEval = 0;
  private evalEvery = 1;
  private canaries = 0;
  private lastReadings: GuardReading[] = [];

  constructor(
    private readonly clock: Clock,
    private readonly seed: number,
    private readonly hooks: { rolledBack?: (policy: string, metric: string) => void } = {},
  ) {
    super();
    this.shadowRng = createRng(seed ^ 0x5ad0);
    this.canaryRng = createRng(seed ^ 0xca7a);
  }

  // ------------------------------------------------------------------ shadow

  startShadow(policy: Policy, params: PolicyParams, seed?: number): void {
    this.shadowPolicy = policy;
    this.shadowParams = params;
    this.shadowRng = createRng(seed ?? (this.seed ^ 0x5ad0));
    this.shadowStartedAtMs = this.clock.nowMs();
    this.shadowDecisions = 0;
    this.shadowAgreements = 0;
    this.shadowLiveRefused = 0;
    this.shadowShadowRefused = 0;
    this.deltaSum = 0;
    this.deltaCount = 0;
    this.lastShadowReport = null;
  }

  /** Ends the shadow; returns its final report. */
  stopShadow(): ShadowReport {
    const report = { ...this.shadowReport(), active: false };
    this.lastShadowReport = this.shadowPolicy ? report : this.lastShadowReport;
    this.shadowPolicy = null;
    return report;
  }

  /**
   * One decision seen by both: the live (acting) pick's replica slot and predicted TTFT, and the
   * shadow's (slot −1: refused). Hot path: no allocation.
   */
  recordShadow(liveSlot: number, liveMs: number, shadowSlot: number, shadowMs: number): boolean {
    this.shadowDecisions++;
    const agreed = liveSlot === shadowSlot;
    if (agreed) this.shadowAgreements++;
    if (liveSlot < 0 && shadowSlot >= 0) this.shadowLiveRefused++;
    else if (shadowSlot < 0 && liveSlot >= 0) this.shadowShadowRefused++;
    else if (liveSlot >= 0 && shadowSlot >= 0) {
      const d = shadowMs - liveMs;
      if (Number.isFinite(d)) {
        this.deltas[this.deltaCount % SHADOW_DELTA_WINDOW] = d;
        this.deltaCount++;
        this.deltaSum += d;
      }
    }
    return agreed;
  }

  shadowReport(): ShadowReport {
    if (!this.shadowPolicy) {
      return this.lastShadowReport ?? {
        active: false,
        policy: null,
        params: {},
        startedAtMs: NaN,
        decisions: 0,
        agreements: 0,
        agreementRate: NaN,
        liveRefused: 0,
        shadowRefused: 0,
        deltaMs: { mean: NaN, p50: NaN, p90: NaN, samples: 0 },
      };
    }
    const kept = Math.min(this.deltaCount, SHADOW_DELTA_WINDOW);
    const tmp = this.deltas.slice(0, kept);
    return {
      active: true,
      policy: this.shadowPolicy.name,
      params: this.shadowParams,
      startedAtMs: this.shadowStartedAtMs,
      decisions: this.shadowDecisions,
      agreements: this.shadowAgreements,
      agreementRate: this.shadowDecisions > 0 ? this.shadowAgreements / this.shadowDecisions : NaN,
      liveRefused: this.shadowLiveRefused,
      shadowRefused: this.shadowShadowRefused,
      deltaMs: {
        mean: this.deltaCount > 0 ? this.deltaSum / this.deltaCount : NaN,
        p50: quantileOf(tmp, kept, 0.5),
        p90: quantileOf(tmp, kept, 0.9),
        samples: this.deltaCount,
      },
    };
  }

  // ------------------------------------------------------------------ canary

  /** Starts a canary (arguments already validated and the policy built: nothing here can fail). */
  startCanary(policy: Policy, params: PolicyParams, baseline: string, fraction: number, guards: Required<CanaryGuard>[], options: CanaryOptions = {}): void {
    if (this.canaryPolicy) this.end('aborted', `replaced by a canary of "${policy.name}"`);
    this.canaries++;
    this.canaryEpoch++;
    this.canaryPolicy = policy;
    this.canaryName = policy.name;
    this.canaryParams = params;
    this.baselineName = baseline;
    this.fraction = fraction;
    this.guards = guards;
    this.canaryRng = createRng(options.seed ?? ((this.seed ^ 0xca7a) + this.canaries) | 0);
    this.state = 'running';
    this.startedAtMs = this.clock.nowMs();
    this.endedAtMs = NaN;
    this.reason = null;
    this.drawn.fill(0);
    this.routed.fill(0);
    this.errors.fill(0);
    for (const s of this.samples) s.clear();
    this.sinceEval = 0;
    this.lastReadings = [];
    // Evaluate about ten times per minSamples of new observations: often enough to trip early, rarely
    // enough that the quickselects stay a small share of the routing thread.
    this.evalEvery = Math.max(1, Math.ceil(Math.min(...guards.map((g) => g.minSamples), 50) / 10));
    this.notify('started', `canary of "${policy.name}" on ${(fraction * 100).toFixed(2)} % of decisions against "${baseline}"`);
  }

  /** The arm of the next decision: a seeded draw while a canary runs. Hot path. */
  drawArm(): Arm {
    if (this.canaryPolicy === null) return ARM_LIVE;
    const arm = this.canaryRng.float() < this.fraction ? ARM_CANARY : ARM_BASELINE;
    this.drawn[arm]++;
    return arm;
  }

  /** A request of `arm` was routed (committed). */
  routedOn(arm: Arm): void {
    this.routed[arm]++;
  }

  /** A first token was seen for a request of `arm` routed under canary epoch `epoch`, after `ttftMs`. */
  observeFirstToken(arm: Arm, epoch: number, ttftMs: number): void {
    if (arm === ARM_LIVE || epoch !== this.canaryEpoch || this.canaryPolicy === null) return;
    this.samples[arm].push(this.clock.nowMs(), ttftMs);
    if (++this.sinceEval >= this.evalEvery) this.evaluate();
  }

  /** A request of `arm` ended in an error or timed out. */
  observeError(arm: Arm, epoch: number): void {
    if (arm === ARM_LIVE || epoch !== this.canaryEpoch || this.canaryPolicy === null) return;
    this.errors[arm]++;
  }

  /** Reads every guard over its window; rolls back when one trips. Returns whether it rolled back. */
  evaluate(): boolean {
    this.sinceEval = 0;
    if (this.canaryPolicy === null || this.guards.length === 0) return false;
    const readings = this.read();
    this.lastReadings = readings;
    const tripped = readings.find((r) => r.tripped);
    if (!tripped) return false;
    const q = tripped.metric.slice(5, 8);
    const reason =
      `${tripped.metric} ${tripped.ratio.toFixed(3)} > max ${tripped.max}: canary "${this.canaryName}" ${q} ${tripped.canaryMs.toFixed(1)} ms over ${tripped.canarySamples} requests, ` +
      `baseline "${this.baselineName}" ${q} ${tripped.baselineMs.toFixed(1)} ms over ${tripped.baselineSamples}, window ${tripped.windowMs} ms`;
    this.hooks.rolledBack?.(this.canaryName!, tripped.metric);
    this.end('rolled-back', reason);
    return true;
  }

  private read(): GuardReading[] {
    const now = this.clock.nowMs();
    const widest = Math.max(...this.guards.map((g) => g.windowMs));
    this.samples[ARM_CANARY].prune(now - widest);
    this.samples[ARM_BASELINE].prune(now - widest);
    return this.guards.map((g) => {
      const q = METRIC_QUANTILE[g.metric];
      const nc = this.samples[ARM_CANARY].copySince(now - g.windowMs, this.scratch);
      const canaryMs = quantileOf(this.scratch, nc, q);
      const nb = this.samples[ARM_BASELINE].copySince(now - g.windowMs, this.scratch);
      const baselineMs = quantileOf(this.scratch, nb, q);
      const enough = nc >= g.minSamples && nb >= g.minSamples;
      // A baseline quantile of 0 ms (an engine that answers instantly) makes any slower canary infinitely worse.
      const ratio = !enough ? NaN : baselineMs > 0 ? canaryMs / baselineMs : canaryMs > 0 ? Infinity : 1;
      return { metric: g.metric, max: g.max, windowMs: g.windowMs, minSamples: g.minSamples, canarySamples: nc, baselineSamples: nb, canaryMs, baselineMs, ratio, tripped: enough && ratio > g.max };
    });
  }

  /** Ends the running canary (promoted, rolled back or aborted). The router swaps policies itself. */
  end(state: 'promoted' | 'rolled-back' | 'aborted', reason: string): void {
    if (this.canaryPolicy === null) return;
    const name = this.canaryName!;
    if (this.state === 'running' && this.guards.length > 0 && state !== 'rolled-back') this.lastReadings = this.read();
    this.state = state;
    this.reason = reason;
    this.endedAtMs = this.clock.nowMs();
    this.canaryPolicy = null;
    this.canaryEpoch++;
    this.notify(state, reason, name);
  }

  canaryStatus(): CanaryStatus {
    const windowMs = this.guards.length > 0 ? Math.max(...this.guards.map((g) => g.windowMs)) : Infinity;
    const running = this.canaryPolicy !== null;
    const quantiles = (arm: Arm): QuantilesMs => {
      if (!running) return NO_QUANTILES;
      const n = this.samples[arm].copySince(this.clock.nowMs() - windowMs, this.scratch);
      return { p50: quantileOf(this.scratch, n, 0.5), p90: quantileOf(this.scratch, n, 0.9), p99: quantileOf(this.scratch, n, 0.99) };
    };
    const rc = this.routed[ARM_CANARY];
    const rb = this.routed[ARM_BASELINE];
    return {
      state: this.state,
      policy: this.canaryName,
      params: this.canaryParams,
      baseline: this.baselineName,
      fraction: this.fraction,
      guards: this.guards,
      startedAtMs: this.startedAtMs,
      endedAtMs: this.endedAtMs,
      reason: this.reason,
      decisions: { canary: this.drawn[ARM_CANARY], baseline: this.drawn[ARM_BASELINE] },
      routed: { canary: rc, baseline: rb },
      routedFraction: rc + rb > 0 ? rc / (rc + rb) : NaN,
      errors: { canary: this.errors[ARM_CANARY], baseline: this.errors[ARM_BASELINE] },
      ttftMs: { canary: quantiles(ARM_CANARY), baseline: quantiles(ARM_BASELINE) },
      readings: running && this.guards.length > 0 ? this.read() : this.lastReadings,
    };
  }

  /** Membership changed: the shadow and canary instances rebuild their tables like the live one. */
  onFleet(snapshot: FleetSnapshot): void {
    this.shadowPolicy?.onFleet?.(snapshot);
    this.canaryPolicy?.onFleet?.(snapshot);
  }

  private notify(type: CanaryEvent['type'], reason: string, policy = this.canaryName ?? ''): void {
    const event: CanaryEvent = { type, policy, reason, atMs: this.clock.nowMs(), status: this.canaryStatus() };
    try {
      this.emit('canary', event);
    } catch (err) {
      // A throwing listener must not break the decision or the ticket callback that tripped the
      // guard (the rollback itself has happened); surface it the way Node surfaces async errors.
      queueMicrotask(() => {
        throw err;
      });
    }
  }
}
