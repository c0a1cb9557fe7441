/**
 * Outlier ejection and the retry budget: the two guards that keep one bad engine, or one bad minute,
 * from turning into a fleet-wide failure. Both follow Envoy's semantics (outlier_detection
 * consecutive_5xx, max_ejection_percent, the panic threshold; retry_budget budget_percent and
 * min_retry_concurrency), re-derived here for an LLM fleet.
 *
 * Ejection. After `consecutiveFailures` failures in a row (5xx, connect errors, resets, timeouts, and
 * fast 429s) a replica is ejected for baseEjectionMs × k, where k is its ejection count (decaying by one
 * per baseEjectionMs spent un-ejected), at most maxEjectionMs. Why fast 429s count: an engine that
 * refuses in a millisecond looks, to any least-loaded or fastest-first policy, like the best replica
 * in the fleet (the "black hole": it attracts traffic because it fails fast), so it must be penalized,
 * never rewarded; a 429 that took long (the engine queued the request before refusing) says nothing
 * about the replica's health and is neutral. A success resets the run; 4xx other than 429 are the
 * client's and neutral.
 *
 * Caps. At most maxEjectionPercent of a model's replicas are ejected at once (but always at least one,
 * as Envoy: 10% of three replicas would otherwise never eject). Panic: when fewer than
 * panicThresholdPercent of a model's non-drained replicas would be left un-ejected, ejection is
 * ignored for that model (every ejected replica is routed again): with most of the fleet looking bad
 * the likelier cause is a shared dependency or an overload, and concentrating all traffic on the few
 * survivors would finish them off.
 *
 * The detector only decides; the proxy applies `effectiveEjected` to the router's health (onChange).
 */
import type { Clock } from '../clock.js';

export interface OutlierOptions {
  /** Failures in a row that eject a replica (default 5). */
  consecutiveFailures?: number;
  /** Largest share of a model's replicas ejected at once, percent (default 10; at least one replica). */
  maxEjectionPercent?: number;
  /** First ejection's length, ms (default 30,000); the k-th lasts k times as long. */
  baseEjectionMs?: number;
  /** Longest ejection, ms (default 300,000). */
  maxEjectionMs?: number;
  /** Below this share of un-ejected replicas (percent of the non-drained), ejection is ignored (default 50). */
  panicThresholdPercent?: number;
  /** A 429 answered faster than this (ms) is a failure; slower, neutral (default 250). */
  fast429Ms?: number;
}

export const OUTLIER_DEFAULTS: Required<OutlierOptions> = {
  consecutiveFailures: 5,
  maxEjectionPercent: 10,
  baseEjectionMs: 30_000,
  maxEjectionMs: 300_000,
  panicThresholdPercent: 50,
  fast429Ms: 250,
};

export interface OutlierListeners {
  /** A replica's effective ejection changed (ejected and its model not in panic): apply it. */
  onChange(id: string, ejected: boolean): void;
  /** A replica was ejected for durationMs (whether or not panic lets it apply). */
  onEject?(id: string, durationMs: number): void;
  /** A model entered or left panic. */
  onPanic?(group: string, panic: boolean): void;
}

interface Member {
  id: string;
  group: string;
  drained: boolean;
  failures: number;
  ejectedUntilMs: number;
  /** Ejections so far, decayed by one per baseEjectionMs spent un-ejected. */
  ejections: number;
  unejectedAtMs: number;
  /** What was last published through onChange. */
  effective: boolean;
}

export class OutlierDetector {
  readonly options: Required<OutlierOptions>;
  private readonly members = new Map<string, Member>();
  private readonly panicking = new Set<string>();

  constructor(
    options: OutlierOptions,
    private readonly clock: Clock,
    private readonly listeners: OutlierListeners,
  ) {
    this.options = { ...OUTLIER_DEFAULTS, ...options };
  }

  /** Adds or updates a replica (its model is its group). */
  upsert(id: string, group: string, drained = false): void {
    const m = this.members.get(id);
    if (m) {
      const old = m.group;
      m.group = group;
      m.drained = drained;
      this.refresh(old);
    } else {
      this.members.set(id, { id, group, drained, failures: 0, ejectedUntilMs: 0, ejections: 0, unejectedAtMs: 0, effective: false });
    }
    this.refresh(group);
  }

  remove(id: string): void {
    const m = this.members.get(id);
    if (!m) return;
    this.members.delete(id);
    this.refresh(m.group);
  }

  success(id: string): void {
    const m = this.members.get(id);
    if (m) m.failures = 0;
  }

  /** A failed attempt; ejects when the run reaches the threshold and the cap allows. Returns whether it ejected. */
  failure(id: string): boolean {
    const m = this.members.get(id);
    if (!m) return false;
    const now = this.clock.nowMs();
    if (m.ejectedUntilMs > now) return false; // already out (traffic reaches it only in panic)
    if (++m.failures < this.options.consecutiveFailures) return false;
    if (this.ejectedIn(m.group, now) >= this.cap(m.group)) return false;
    const decay = m.unejectedAtMs > 0 ? Math.floor((now - m.unejectedAtMs) / this.options.baseEjectionMs) : 0;
    m.ejections = Math.max(0, m.ejections - decay) + 1;
    const durationMs = Math.min(this.options.maxEjectionMs, this.options.baseEjectionMs * m.ejections);
    m.ejectedUntilMs = now + durationMs;
    m.failures = 0;
    this.listeners.onEject?.(id, durationMs);
    this.refresh(m.group);
    return true;
  }

  /** A 429 after `elapsedMs`: fast ones are failures, slow ones neutral. */
  tooManyRequests(id: string, elapsedMs: number): void {
    if (elapsedMs < this.options.fast429Ms) this.failure(id);
  }

  /** Returns ejected replicas whose time is up (call periodically). */
  tick(): void {
    const now = this.clock.nowMs();
    const groups = new Set<string>();
    for (const m of this.members.values()) {
      if (m.ejectedUntilMs !== 0 && m.ejectedUntilMs <= now) {
        m.ejectedUntilMs = 0;
        m.unejectedAtMs = now;
        groups.add(m.group);
      }
    }
    for (const g of groups) this.refresh(g);
  }

  /** Ejected now (whether or not panic overrides it). */
  ejected(id: string): boolean {
    const m = this.members.get(id);
    return m !== undefined && m.ejectedUntilMs > this.clock.nowMs();
  }

  /** Ejected and applied (its model is not in panic). */
  effectiveEjected(id: string): boolean {
    return this.members.get(id)?.effective ?? false;
  }

  panic(group: string): boolean {
    return this.panicking.has(group);
  }

  private cap(group: string): number {
    let n = 0;
    for (const m of this.members.values()) if (m.group === group) n++;
    return Math.max(1, Math.floor((n * this.options.maxEjectionPercent) / 100));
  }

  private ejectedIn(group: string, now: number): number {
    let n = 0;
    for (const m of this.members.values()) if (m.group === group && m.ejectedUntilMs > now) n++;
    return n;
  }

  /** Recomputes a model's panic state and each member's effective ejection; publishes changes. */
  private refresh(group: string): void {
    const now = this.clock.nowMs();
    let serving = 0;
    let ejected = 0;
    for (const m of this.members.values()) {
      if (m.group !== group || m.drained) continue;
      serving++;
      if (m.ejectedUntilMs > now) ejected++;
    }
    const panic = serving > 0 && ((serving - ejected) * 100) / serving < this.options.panicThresholdPercent;
    if (panic !== this.panicking.has(group)) {
      if (panic) this.panicking.add(group);
      else this.panicking.delete(group);
      this.listeners.onPanic?.(group, panic);
    }
    for (const m of this.members.values()) {
      if (m.group !== group) continue;
      const eff = !panic && m.ejectedUntilMs > now;
      if (eff !== m.effective) {
        m.effective = eff;
        this.listeners.onChange(m.id, eff);
      }
    }
  }
}

export interface RetryBudgetOptions {
  /** Retries in flight may be at most this share of the requests in flight (default 0.2). */
  ratio?: number;
  /** …but never fewer than this many (default 3), so a quiet proxy can still retry. */
  minConcurrency?: number;
}

/**
 * Envoy's retry budget: retries in flight ≤ max(minConcurrency, ratio × requests in flight). A fixed
 * per-request retry count multiplies load by (1 + retries) exactly when engines are failing; a budget
 * bounds the extra load at `ratio` of the traffic however many requests fail.
 */
export class RetryBudget {
  readonly ratio: number;
  readonly minConcurrency: number;
  private active = 0;
  private retrying = 0;

  constructor(options: RetryBudgetOptions = {}) {
    this.ratio = options.ratio ?? 0.2;
    this.minConcurrency = options.minConcurrency ?? 3;
  }

  requestStarted(): void {
    this.active++;
  }
  requestFinished(): void {
    this.active--;
  }

  /** Takes a retry slot if the budget has one; the caller returns it with retryFinished(). */
  tryRetry(): boolean {
    if (this.retrying >= Math.max(this.minConcurrency, this.ratio * this.active)) return false;
    this.retrying++;
    return true;
  }
  retryFinished(): void {
    this.retrying--;
  }

  get activeRequests(): number {
    return this.active;
  }
  get activeRetries(): number {
    return this.retrying;
  }
}
