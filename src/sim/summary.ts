/**
 * Compact, plain-data views of simulation results for reports (compare, sweep, the CLI's --json), and
 * the small statistics they need: a spread over seeds, text and Markdown tables.
 */
import type { PolicyParams } from '../router/types.js';
import type { SimResult } from './sim.js';

/** A policy as the reports name it: a registered name, or a name with parameters and an optional label. */
export type PolicyRef = string | { name: string; params?: PolicyParams; label?: string };

export function policyName(p: PolicyRef): string {
  return typeof p === 'string' ? p : p.name;
}

/** "cache-aware", or "cache-aware{cacheThreshold:0}" when parameters are given (unless labelled). */
export function policyLabel(p: PolicyRef): string {
  if (typeof p === 'string') return p;
  if (p.label) return p.label;
  const entries = Object.entries(p.params ?? {});
  return entries.length ? `${p.name}{${entries.map(([k, v]) => `${k}:${typeof v === 'string' ? v : JSON.stringify(v)}`).join(',')}}` : p.name;
}

export function policyConfig(p: PolicyRef): string | { name: string; params?: PolicyParams } {
  return typeof p === 'string' ? p : { name: p.name, params: p.params };
}

/** One run, in the figures reports print. */
export interface RunSummary {
  policy: string;
  seed: number;
  /** Rate scale of the workload (1 = its own arrival rate). */
  rateScale: number;
  /** Offered load, requests/s. */
  offeredRps: number;
  requests: number;
  completed: number;
  failed: number;
  shed: number;
  retries: number;
  goodputRps: number;
  sloAttainment: number;
  ttftMs: { p50: number; p90: number; p99: number; mean: number };
  tpotMs: { p50: number; p90: number; p99: number };
  hitRate: number;
  expectedHitRate: number;
  ceilings: { globalLru: number; infinite: number } | null;
  skew: { requests: number; busy: number };
  preemptions: number;
  makespanS: number;
  wallMs: number;
  backend: string;
}

export function summarize(r: SimResult, rateScale: number, offeredRps: number, label = r.policy): RunSummary {
  return {
    policy: label,
    seed: r.seed,
    rateScale,
    offeredRps: round(offeredRps, 4),
    requests: r.requests.total,
    completed: r.requests.completed,
    failed: r.requests.failed,
    shed: r.requests.shed,
    retries: r.requests.retries,
    goodputRps: round(r.goodputRps, 4),
    sloAttainment: round(r.sloAttainment, 5),
    ttftMs: { p50: r.ttftMs.p50, p90: r.ttftMs.p90, p99: r.ttftMs.p99, mean: r.ttftMs.mean },
    tpotMs: { p50: r.tpotMs.p50, p90: r.tpotMs.p90, p99: r.tpotMs.p99 },
    hitRate: round(r.prefix.hitRate, 5),
    expectedHitRate: round(r.prefix.expectedHitRate, 5),
    ceilings: r.prefix.ceilings ? { globalLru: round(r.prefix.ceilings.globalLru, 5), infinite: round(r.prefix.ceilings.infinite, 5) } : null,
    skew: { requests: round(r.skew.requests, 4), busy: round(r.skew.busy, 4) },
    preemptions: r.engine.preemptions,
    makespanS: r.makespanS,
    wallMs: r.perf.wallMs,
    backend: r.backend,
  };
}

/** Mean, extremes and the values themselves (one per seed). */
export interface Spread {
  mean: number;
  min: number;
  max: number;
  values: number[];
}

export function spread(values: readonly number[]): Spread {
  if (values.length === 0) return { mean: NaN, min: NaN, max: NaN, values: [] };
  let sum = 0;
  let min = Infinity;
  let max = -Infinity;
  for (const v of values) {
    sum += v;
    if (v < min) min = v;
    if (v > max) max = v;
  }
  return { mean: sum / values.length, min, max, values: [...values] };
}

export function round(x: number, digits: number): number {
  if (!Number.isFinite(x)) return x;
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

// ---------------------------------------------------------------- formatting

export const pct = (x: number, digits = 1) => (Number.isFinite(x) ? `${(100 * x).toFixed(digits)}%` : '—');
/** A signed percentage change: +4.1%, −2.0%. */
export const signedPct = (x: number, digits = 1) => (Number.isFinite(x) ? `${x >= 0 ? '+' : '−'}${Math.abs(100 * x).toFixed(digits)}%` : '—');
export const ms = (x: number) => (!Number.isFinite(x) ? '—' : x >= 10_000 ? `${(x / 1000).toFixed(1)} s` : x >= 100 ? `${x.toFixed(0)} ms` : `${x.toFixed(1)} ms`);
export const times = (x: number, digits = 2) => (Number.isFinite(x) ? `${x.toFixed(digits)}×` : '—');
export const num = (x: number, digits = 2) => (Number.isFinite(x) ? x.toFixed(digits) : '—');

/** "+4.1% (+2.9 … +5.3%)" for a spread of fractional changes; the range only with more than one value. */
export function spreadPct(s: Spread, digits = 1): string {
  if (s.values.length <= 1) return signedPct(s.mean, digits);
  return `${signedPct(s.mean, digits)} (${signedPct(s.min, digits)} … ${signedPct(s.max, digits)})`;
}

/** A fixed-width text table; numbers (and cells starting with a digit, sign or ×) right-aligned. */
export function textTable(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = headers.map((h, c) => Math.max(width(h), ...rows.map((r) => width(r[c] ?? ''))));
  const right = headers.map((_, c) => rows.length > 0 && rows.every((r) => /^[-+−0-9.—×<>≥≤(]/.test(r[c] ?? '')));
  const line = (cells: readonly string[]) => cells.map((cell, c) => (right[c] ? pad(cell, widths[c], true) : pad(cell, widths[c], false))).join('  ').trimEnd();
  return [line(headers), widths.map((w) => '─'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

export function markdownTable(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const right = headers.map((_, c) => rows.length > 0 && rows.every((r) => /^[-+−0-9.—×<>≥≤(]/.test(r[c] ?? '')));
  const esc = (s: string) => s.replace(/\|/g, '\\|');
  return [`| ${headers.map(esc).join(' | ')} |`, `|${right.map((r) => (r ? '--:' : '---')).join('|')}|`, ...rows.map((r) => `| ${r.map(esc).join(' | ')} |`)].join('\n');
}

/** Display width: code points (the tables use only narrow characters). */
function width(s: string): number {
  return [...s].length;
}

function pad(s: string, w: number, right: boolean): string {
  const fill = ' '.repeat(Math.max(0, w - width(s)));
  return right ? fill + s : s + fill;
}
