/**
 * Shared machinery of the benchmark suite: run configuration, the timing engine (tinybench underneath,
 * medians over repeats), seeded inputs and Markdown formatting.
 *
 * How a time is measured, and why:
 * - Each task is a loop of `inner` calls timed as one tinybench sample. Sub-100 ns calls need 100–1000
 *   calls a sample or the timer's own cost dominates (TOOLCHAIN.md, tinybench gotcha); `inner` is
 *   calibrated per task so a sample lasts ~{@link TARGET_SAMPLE_NS}.
 * - A run is `repeats` passes over every task of a group, interleaved (task A, B, C, then A, B, C …), and
 *   a task's figure is the median over passes of its per-pass median sample. The machines are shared and
 *   noisy: interleaving spreads a slow spell over every task, the median drops the pass it hit hardest,
 *   and ratios are only ever taken between tasks of the same run.
 * - Every task gets its own compiled copy of its loop ({@link compileLoop}). Closures made from one
 *   function literal share V8's type feedback, so a loop written once and reused for wasm, native and js
 *   would see three receivers at its call site and run polymorphic for whichever backend came second; an
 *   application uses one backend, so each task must be monomorphic on its own.
 */
import { Bench } from 'tinybench';
import { createRng, type Rng } from '../src/rng.ts';

export interface BenchConfig {
  /** Short run for CI (`--ci`): fewer sizes, fewer repeats, shorter samples; gates decide the exit code. */
  readonly ci: boolean;
  /** Passes over every task of a group; the reported figure is the median over passes. */
  readonly repeats: number;
  /** tinybench time budget per task and pass (ms). */
  readonly taskTimeMs: number;
  /** tinybench warm-up budget per task and pass (ms). */
  readonly warmupTimeMs: number;
  /** Minimum samples per task and pass. */
  readonly minSamples: number;
  /** Random keys behind the balance and churn figures of the quality report. */
  readonly qualityKeys: number;
  /** Rendezvous is O(nodes) a key: at 1,000 nodes it gets fewer keys to stay within the time budget. */
  readonly qualityKeysRendezvous1000: number;
  /** Also build the 10,000-node ring (≈2 s a backend plus ≈2 s for hashring) and the 4,096-points-a-node ring at 1,000 nodes. */
  readonly largeRings: boolean;
  /** Hot-path calls per backend in the heap-growth group (single calls; batched calls get fewer). */
  readonly heapCalls: number;
  readonly heapBatchCalls: number;
  /** The js reference is ~100× slower; its heap runs are shortened to keep the run inside its budget. */
  readonly heapCallsJsHashing: number;
  readonly heapBatchCallsJs: number;
  /** Only run groups whose name contains one of these (empty: all). */
  readonly only: readonly string[];
}

export function parseConfig(argv: readonly string[]): BenchConfig {
  const ci = argv.includes('--ci');
  const only = argv.filter((a) => a.startsWith('--only=')).flatMap((a) => a.slice(7).split(',')).filter(Boolean);
  const unknown = argv.filter((a) => a !== '--ci' && !a.startsWith('--only='));
  if (unknown.length) throw new Error(`Unknown argument(s) ${unknown.join(' ')}; usage: bench/run.ts [--ci] [--only=hashing,lookup,quality,heap,index,router]`);
  return ci
    ? {
        ci,
        repeats: 3,
        taskTimeMs: 40,
        warmupTimeMs: 10,
        minSamples: 10,
        qualityKeys: 250_000,
        qualityKeysRendezvous1000: 20_000,
        largeRings: false,
        heapCalls: 1_000_000,
        heapBatchCalls: 10_000,
        heapCallsJsHashing: 2_000,
        heapBatchCallsJs: 200,
        only,
      }
    : {
        ci,
        repeats: 5,
        taskTimeMs: 150,
        warmupTimeMs: 40,
        minSamples: 20,
        qualityKeys: 1_000_000,
        qualityKeysRendezvous1000: 100_000,
        largeRings: true,
        heapCalls: 1_000_000,
        heapBatchCalls: 100_000,
        heapCallsJsHashing: 10_000,
        heapBatchCallsJs: 1_000,
        only,
      };
}

/** Median of a non-empty list (mean of the two middle values for an even count). */
export function median(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

// ---------------------------------------------------------------------------------------------------
// Timing

/** A sample should last about this long: long enough to bury the timer's cost, short enough for many samples. */
const TARGET_SAMPLE_NS = 25_000;
/** At most this many calls a sample (TOOLCHAIN.md: 100–1000 for sub-100 ns operations). */
const MAX_INNER_CALLS = 1000;

export type ImplKind = 'backend' | 'peer';

export interface TaskSpec {
  /** Operation measured, identical across the implementations compared with each other. */
  readonly op: string;
  /** Backend name ('wasm' | 'native' | 'js') or peer package label. */
  readonly impl: string;
  readonly kind: ImplKind;
  /** What one "op" is in the reported ns/op: a call, a key of a batch, a prompt … */
  readonly unit: string;
  /** Units of work in one call of the loop body (1,024 for a batch reported per key). */
  readonly unitsPerCall: number;
  /** Runs the body `inner` times. */
  readonly loop: (inner: number) => unknown;
  /** Bytes one op processes (for the GB/s column), when meaningful. */
  readonly bytesPerOp?: number;
}

export interface Timing {
  readonly group: string;
  readonly op: string;
  readonly impl: string;
  readonly kind: ImplKind;
  readonly unit: string;
  /** Median over passes of the per-pass median sample, per unit. */
  readonly nsPerOp: number;
  /** Per-pass figures (ns per unit), in pass order. */
  readonly passesNs: number[];
  /** (max − min) / median of the passes: how much the machine moved during the run. */
  readonly spread: number;
  readonly innerCalls: number;
  readonly bytesPerOp?: number;
}

const SINK = new Array<unknown>(64).fill(0);

/**
 * Compiles `statement` (JavaScript, run once per iteration) into a fresh function `(inner) => sink`.
 * In scope: the names of `env`; `i`, the iteration; `base`, where the previous call stopped, so
 * `keys[(base + i) & 1023]` walks on through the inputs from call to call instead of replaying the
 * first `inner` keys every sample (a slow call with few iterations a sample would otherwise see the
 * same handful of keys, and the branch predictor would learn them); `sink`, a 64-slot array that keeps
 * results observable so no call can be optimised away. `tag` makes the source unique, so V8's
 * compilation cache cannot hand two tasks the same function (and with it the same type feedback).
 */
export function compileLoop(tag: string, statement: string, env: Record<string, unknown>): (inner: number) => unknown {
  const names = Object.keys(env);
  const src = `/* dystro bench: ${tag.replace(/\*\//g, '* /')} */
"use strict";
let cursor = 0;
return function loop(inner) {
  const base = cursor;
  for (let i = 0; i < inner; i++) {
    ${statement}
  }
  cursor = (base + inner) | 0;
  return sink;
};`;
  // eslint-disable-next-line @typescript-eslint/no-implied-eval
  const factory = new Function('sink', ...names, src) as (...args: unknown[]) => (inner: number) => unknown;
  return factory(SINK, ...names.map((n) => env[n]));
}

function nowNs(): number {
  return performance.now() * 1e6;
}

/**
 * Calls per sample so one sample lasts ~TARGET_SAMPLE_NS. The loop is warmed up first (≥ 5 ms of
 * calls) and timed over three ≥ 0.5 ms windows: a cold loop runs in the interpreter, and an estimate taken there
 * would be many times too slow and would leave fast calls with a handful of calls a sample, where the
 * timer's own cost dominates.
 */
function calibrateInner(loop: (inner: number) => unknown): number {
  let n = 1;
  let calls = 0;
  const warmStart = nowNs();
  while (nowNs() - warmStart < 5e6 && calls < 200_000) {
    loop(n);
    calls += n;
    n = Math.min(n * 2, MAX_INNER_CALLS);
  }
  // The fastest of three ≥ 0.5 ms windows: a GC or a late optimisation in one window must not
  // shrink the batch for good.
  let perCall = Infinity;
  for (let w = 0; w < 3; w++) {
    let reps = 0;
    const t0 = nowNs();
    let dt = 0;
    do {
      loop(n);
      reps++;
      dt = nowNs() - t0;
    } while (dt < 5e5);
    perCall = Math.min(perCall, Math.max(dt / (reps * n), 0.1));
  }
  return Math.max(1, Math.min(MAX_INNER_CALLS, Math.round(TARGET_SAMPLE_NS / perCall)));
}

/**
 * Times every task `cfg.repeats` times, interleaved, and returns one Timing per task. Progress goes to
 * stderr so stdout stays clean Markdown.
 */
export function runTimings(group: string, tasks: readonly TaskSpec[], cfg: BenchConfig): Timing[] {
  const inner = tasks.map((t) => calibrateInner(t.loop));
  const passes: number[][] = tasks.map(() => []);
  for (let pass = 0; pass < cfg.repeats; pass++) {
    const bench = new Bench({
      time: cfg.taskTimeMs,
      warmupTime: cfg.warmupTimeMs,
      warmupIterations: 2,
      iterations: cfg.minSamples,
      throws: true,
    });
    tasks.forEach((t, k) => {
      const n = inner[k];
      bench.add(`${t.op} | ${t.impl}`, () => {
        t.loop(n);
      });
    });
    bench.runSync();
    bench.tasks.forEach((task, k) => {
      const r = task.result;
      if (r.state !== 'completed') throw new Error(`bench task ${task.name} ended in state ${r.state}${'error' in r ? `: ${String(r.error)}` : ''}`);
      const sampleNs = r.latency.p50 * 1e6;
      passes[k].push(sampleNs / (inner[k] * tasks[k].unitsPerCall));
    });
    process.stderr.write(`  ${group}: pass ${pass + 1}/${cfg.repeats} done (${tasks.length} tasks)\n`);
  }
  return tasks.map((t, k) => {
    const m = median(passes[k]);
    return {
      group,
      op: t.op,
      impl: t.impl,
      kind: t.kind,
      unit: t.unit,
      nsPerOp: m,
      passesNs: passes[k],
      spread: (Math.max(...passes[k]) - Math.min(...passes[k])) / m,
      innerCalls: inner[k],
      bytesPerOp: t.bytesPerOp,
    };
  });
}

/** Wall time of `fn` in ms, median over `repeats` runs (for things too slow or too stateful for tinybench). */
export function medianWallMs(repeats: number, fn: () => void): { ms: number; passesMs: number[] } {
  const passesMs: number[] = [];
  for (let r = 0; r < repeats; r++) {
    const t0 = performance.now();
    fn();
    passesMs.push(performance.now() - t0);
  }
  return { ms: median(passesMs), passesMs };
}

// ---------------------------------------------------------------------------------------------------
// Inputs

export const BENCH_SEED = 0x5eed_d157;

export function rngFor(label: string): Rng {
  // One stream per input, derived from the label, so adding an input never shifts another's values.
  let h = BENCH_SEED;
  for (let i = 0; i < label.length; i++) h = Math.imul(h ^ label.charCodeAt(i), 0x01000193);
  return createRng(h | 0);
}

/** `count` random u64 keys, filled 32 bits at a time (a BigInt per key would cost ~0.2 s a million). */
export function randomKeys(count: number, label: string): BigUint64Array {
  const keys = new BigUint64Array(count);
  const words = new Uint32Array(keys.buffer);
  const rng = rngFor(label);
  for (let i = 0; i < words.length; i++) words[i] = rng.u32();
  return keys;
}

/** Random token ids below a realistic vocabulary size (Qwen2's 151,936). */
export function randomTokens(count: number, label: string): Uint32Array {
  const rng = rngFor(label);
  return Uint32Array.from({ length: count }, () => rng.int(151_936));
}

export function nodeNames(count: number, prefix = 'node'): string[] {
  return Array.from({ length: count }, (_, i) => `${prefix}-${i}`);
}

// ---------------------------------------------------------------------------------------------------
// Formatting

export function fmtNs(ns: number): string {
  if (!Number.isFinite(ns)) return '—';
  if (ns >= 1e6) return `${(ns / 1e6).toFixed(2)} ms`;
  if (ns >= 1e4) return `${(ns / 1e3).toFixed(1)} µs`;
  if (ns >= 1e3) return `${(ns / 1e3).toFixed(2)} µs`;
  if (ns >= 100) return `${ns.toFixed(0)} ns`;
  if (ns >= 10) return `${ns.toFixed(1)} ns`;
  return `${ns.toFixed(2)} ns`;
}

/** A "how many times faster" figure: 1.0× means equal. */
export function fmtTimes(x: number | undefined): string {
  if (x === undefined || !Number.isFinite(x)) return '—';
  if (x >= 100) return `${x.toFixed(0)}×`;
  if (x >= 10) return `${x.toFixed(1)}×`;
  return `${x.toFixed(2)}×`;
}

export function fmtPct(x: number, digits = 1): string {
  return Number.isFinite(x) ? `${(x * 100).toFixed(digits)} %` : '—';
}

export function fmtBytes(bytes: number): string {
  const a = Math.abs(bytes);
  if (a >= 1 << 20) return `${(bytes / (1 << 20)).toFixed(2)} MiB`;
  if (a >= 1 << 10) return `${(bytes / (1 << 10)).toFixed(1)} KiB`;
  return `${Math.round(bytes)} B`;
}

export function fmtInt(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}

/** A Markdown table; numbers are expected pre-formatted. `align` takes 'l' or 'r' per column. */
export function mdTable(header: readonly string[], rows: readonly (readonly string[])[], align?: readonly ('l' | 'r')[]): string {
  const esc = (s: string) => s.replace(/\|/g, '\\|');
  const sep = header.map((_, i) => ((align?.[i] ?? 'l') === 'r' ? '---:' : '---'));
  return [header, sep, ...rows].map((r, k) => `| ${(k === 1 ? r : r.map(esc)).join(' | ')} |`).join('\n');
}

export function section(title: string): string {
  return `\n## ${title}\n`;
}

/** Looks a timing up by operation and implementation. */
export function findTiming(timings: readonly Timing[], op: string, impl: string): Timing | undefined {
  return timings.find((t) => t.op === op && t.impl === impl);
}

/** Selects the peer timings that do the same job as an operation (by default: peers of the same op). */
export type PeerSelector = (op: string) => (t: Timing) => boolean;
export const samePeerOp: PeerSelector = (op) => (t) => t.op === op;

/** The fastest peer (lowest ns/op) among those `select` accepts. */
export function bestPeer(timings: readonly Timing[], select: (t: Timing) => boolean): Timing | undefined {
  let best: Timing | undefined;
  for (const t of timings) {
    if (t.kind !== 'peer' || !select(t)) continue;
    if (!best || t.nsPerOp < best.nsPerOp) best = t;
  }
  return best;
}

/**
 * One table per group: operation, implementation, ns/op, spread over passes, and how many times faster
 * than the js reference and than the fastest peer for the same job.
 */
export function timingTable(timings: readonly Timing[], peersOf: PeerSelector = samePeerOp, withThroughput = false): string {
  const header = ['operation', 'implementation', 'ns/op', 'unit', 'spread', 'vs js', 'vs best peer'];
  if (withThroughput) header.splice(4, 0, 'GB/s');
  const rows = timings.map((t) => {
    const js = findTiming(timings, t.op, 'js');
    const peer = bestPeer(timings, peersOf(t.op));
    const row = [
      t.op,
      t.impl,
      fmtNs(t.nsPerOp),
      t.unit,
      fmtPct(t.spread, 1),
      t.kind === 'backend' && js && t.impl !== 'js' ? fmtTimes(js.nsPerOp / t.nsPerOp) : '—',
      t.kind === 'backend' && peer ? `${fmtTimes(peer.nsPerOp / t.nsPerOp)} (${peer.impl})` : '—',
    ];
    if (withThroughput) row.splice(4, 0, t.bytesPerOp ? (t.bytesPerOp / t.nsPerOp).toFixed(2) : '—');
    return row;
  });
  const align: ('l' | 'r')[] = ['l', 'l', 'r', 'l', 'r', 'r', 'l'];
  if (withThroughput) align.splice(4, 0, 'r');
  return mdTable(header, rows, align);
}
