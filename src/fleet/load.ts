/**
 * Load vectors and their sanitizing (DESIGN §5: metrics from outside are sanitized so comparisons stay a
 * strict weak ordering). Engines and scrapers report running and waiting requests, in-flight prefill
 * tokens and KV-cache usage; any of them can be NaN, ±Infinity, negative, a percentage where a fraction
 * was meant, or missing. Each field is either a clean number or marked unknown; an unknown load is
 * stored as +Infinity so that no "least loaded" comparison ever prefers it, and its bit is set in
 * `unknown` so policies can tell "unknown" from "very busy".
 */

export interface LoadReport {
  /** Requests running on the engine (decoding or prefilling). */
  running?: number;
  /** Requests queued on the engine. */
  waiting?: number;
  /** Prompt tokens admitted but not yet prefilled. */
  prefillTokens?: number;
  /** Fraction of KV-cache blocks in use, 0 … 1. */
  kvUsage?: number;
}

export const LOAD_FIELDS = ['running', 'waiting', 'prefillTokens', 'kvUsage'] as const;
export type LoadField = (typeof LOAD_FIELDS)[number];

/** Bits of the `unknown` mask, one per field. */
export const UNKNOWN_BIT: Record<LoadField, number> = { running: 1, waiting: 2, prefillTokens: 4, kvUsage: 8 };

export interface SanitizeOutcome {
  /** Fields that came in unusable (NaN, ±Infinity, wrong type) and are now unknown. */
  unknown: LoadField[];
  /** Fields that were out of range and were clamped. */
  clamped: LoadField[];
}

/** Largest count we accept before calling a report absurd (a replica with a billion queued requests). */
const MAX_COUNT = 1e9;

/**
 * Sanitizes one field. Counts: finite and ≥ 0 (fractions rounded down), negatives clamped to 0, values
 * above MAX_COUNT unknown. kvUsage: a fraction in [0, 1]; slightly outside (rounding, ≤ 5%) clamped;
 * anything else (a percentage like 85, a negative) unknown — guessing the unit would be a silent error.
 */
export function sanitizeField(field: LoadField, value: unknown): { value: number; state: 'ok' | 'clamped' | 'unknown' } {
  if (typeof value !== 'number' || !Number.isFinite(value)) return { value: Infinity, state: 'unknown' };
  if (field === 'kvUsage') {
    if (value >= 0 && value <= 1) return { value, state: 'ok' };
    if (value >= -0.05 && value < 0) return { value: 0, state: 'clamped' };
    if (value > 1 && value <= 1.05) return { value: 1, state: 'clamped' };
    return { value: Infinity, state: 'unknown' };
  }
  if (value < 0) return { value: 0, state: 'clamped' };
  if (value > MAX_COUNT) return { value: Infinity, state: 'unknown' };
  return { value: Math.floor(value), state: Number.isInteger(value) ? 'ok' : 'clamped' };
}

/**
 * Per-replica load, one typed array per field indexed by replica slot (struct of arrays: the hot path
 * scans a field across candidates). Written in place by the control path (single writer); policies
 * read it between writes.
 */
export class LoadTable {
  running: Float64Array;
  waiting: Float64Array;
  prefillTokens: Float64Array;
  kvUsage: Float64Array;
  /** Clock time (ms) of the last report per slot; NaN before the first. */
  updatedAtMs: Float64Array;
  /** Bit mask of unknown fields per slot (UNKNOWN_BIT). Everything is unknown before the first report. */
  unknown: Uint8Array;

  constructor(capacity: number) {
    this.running = new Float64Array(capacity).fill(Infinity);
    this.waiting = new Float64Array(capacity).fill(Infinity);
    this.prefillTokens = new Float64Array(capacity).fill(Infinity);
    this.kvUsage = new Float64Array(capacity).fill(Infinity);
    this.updatedAtMs = new Float64Array(capacity).fill(NaN);
    this.unknown = new Uint8Array(capacity).fill(15);
  }

  get capacity(): number {
    return this.running.length;
  }

  /** Resets a slot to "nothing known" (a new or restarted replica). */
  reset(slot: number): void {
    this.running[slot] = Infinity;
    this.waiting[slot] = Infinity;
    this.prefillTokens[slot] = Infinity;
    this.kvUsage[slot] = Infinity;
    this.updatedAtMs[slot] = NaN;
    this.unknown[slot] = 15;
  }

  /**
   * Applies a report to a slot: fields present are sanitized and written; fields absent keep their
   * previous value. Returns what was marked unknown or clamped.
   */
  apply(slot: number, report: LoadReport, nowMs: number): SanitizeOutcome {
    const outcome: SanitizeOutcome = { unknown: [], clamped: [] };
    for (const field of LOAD_FIELDS) {
      if (!(field in report)) continue;
      const { value, state } = sanitizeField(field, (report as Record<string, unknown>)[field]);
      this[field][slot] = value;
      if (state === 'unknown') {
        this.unknown[slot] |= UNKNOWN_BIT[field];
        outcome.unknown.push(field);
      } else {
        this.unknown[slot] &= ~UNKNOWN_BIT[field];
        if (state === 'clamped') outcome.clamped.push(field);
      }
    }
    this.updatedAtMs[slot] = nowMs;
    return outcome;
  }

  /** A copy of one slot's load (control path, tests). */
  read(slot: number): Required<LoadReport> & { updatedAtMs: number; unknown: LoadField[] } {
    return {
      running: this.running[slot],
      waiting: this.waiting[slot],
      prefillTokens: this.prefillTokens[slot],
      kvUsage: this.kvUsage[slot],
      updatedAtMs: this.updatedAtMs[slot],
      unknown: LOAD_FIELDS.filter((f) => (this.unknown[slot] & UNKNOWN_BIT[f]) !== 0),
    };
  }
}
