/**
 * Prefix-index benchmark (issue: fleet-wide prefix-cache index): per backend, build an index of N
 * (block, replica) entries over 1,000 replicas, then time `match` for a fully cached 8,192-token prompt
 * (512 blocks) and for a prompt no replica holds, report bytes per entry (the kernel's own accounting
 * and the process's resident growth), apply throughput, and the same against a plain
 * `Map<bigint, Set<number>>` index in TypeScript built from the same entries.
 *
 * Layout of the entries (close to the Mooncake conversation trace, where block 0 is a system prompt held
 * everywhere): every replica holds the same 16-block system prefix, then its own chains of 512 blocks
 * until it holds N / 1,000 entries. The matched prompt is the system prefix followed by replica 0's
 * first chain, which replica 1 also holds: 1,000 replicas match 16 blocks, two match all 512.
 */
import { PrefixIndex, MatchResult } from '../src/index/prefix-index.ts';
import { FakeClock } from '../src/clock.ts';
import type { KernelBackend } from '../src/kernels/abi.ts';
import { fmtBytes, fmtInt, fmtNs, mdTable, median, section, type BenchConfig } from './util.ts';

export interface IndexBenchRow {
  backend: string;
  entries: number;
  buildMs: number;
  applyRecordsPerS: number;
  kernelBytesPerEntry: number;
  rssBytesPerEntry: number;
  matchFullMedianNs: number;
  matchFullP99Ns: number;
  matchMissMedianNs: number;
  matchMissP99Ns: number;
  matchedReplicas: number;
  fullDepth: number;
}

export interface IndexBenchResult {
  replicas: number;
  rows: IndexBenchRow[];
}

const REPLICAS = 1000;
const SYSTEM_BLOCKS = 16;
const CHAIN = 512;

/** Deterministic 64-bit block hash of (replica, chain, position) as two u32 words (SplitMix-style). */
function words(replica: number, chain: number, pos: number, out: Uint32Array, at: number): void {
  let a = Math.imul(replica + 1, 0x9e3779b1) ^ Math.imul(chain + 7, 0x85ebca6b) ^ Math.imul(pos + 13, 0xc2b2ae35);
  a = Math.imul(a ^ (a >>> 16), 0x7feb352d);
  a = Math.imul(a ^ (a >>> 15), 0x846ca68b);
  let b = Math.imul(a ^ 0x27d4eb2f, 0x165667b1) ^ pos;
  b = Math.imul(b ^ (b >>> 13), 0xc2b2ae35);
  out[at] = (a ^ (a >>> 16)) >>> 0;
  out[at + 1] = (b ^ (b >>> 16)) >>> 0;
}

/** Records (STORE, GPU) for `entries` entries, streamed in batches through `sink`. */
function forEachBatch(entries: number, sink: (records: Uint32Array, count: number) => void): void {
  const perReplica = Math.max(SYSTEM_BLOCKS + 1, Math.floor(entries / REPLICAS));
  const batch = new Uint32Array(4096 * 4);
  let k = 0;
  const flush = () => {
    if (k > 0) sink(batch, k);
    k = 0;
  };
  const tmp = new Uint32Array(2);
  for (let r = 0; r < REPLICAS; r++) {
    for (let i = 0; i < perReplica; i++) {
      // The system prefix is chain −1 of replica "−1" for everyone; own chains follow. Replica 1 holds
      // replica 0's first chain instead of its own first one.
      if (i < SYSTEM_BLOCKS) words(-1, -1, i, tmp, 0);
      else {
        const j = i - SYSTEM_BLOCKS;
        const chain = Math.floor(j / CHAIN);
        const owner = r === 1 && chain === 0 ? 0 : r;
        words(owner, chain, SYSTEM_BLOCKS + (j % CHAIN), tmp, 0);
      }
      batch[k * 4] = 1; // OP_STORE, GPU tier
      batch[k * 4 + 1] = r;
      batch[k * 4 + 2] = tmp[0];
      batch[k * 4 + 3] = tmp[1];
      if (++k === 4096) flush();
    }
  }
  flush();
}

function promptHashes(miss: boolean): BigUint64Array {
  const h = new BigUint64Array(CHAIN);
  const tmp = new Uint32Array(2);
  for (let i = 0; i < CHAIN; i++) {
    if (miss) words(5_000_000, 3, i, tmp, 0);
    else if (i < SYSTEM_BLOCKS) words(-1, -1, i, tmp, 0);
    else words(0, 0, i, tmp, 0);
    h[i] = (BigInt(tmp[1]) << 32n) | BigInt(tmp[0]);
  }
  return h;
}

/** Per-call times of `fn` (ns), `calls` calls after a warm-up; returns [median, p99]. */
function perCall(calls: number, fn: () => void): [number, number] {
  for (let i = 0; i < Math.min(2000, calls); i++) fn();
  const t = new Float64Array(calls);
  for (let i = 0; i < calls; i++) {
    const t0 = performance.now();
    fn();
    t[i] = (performance.now() - t0) * 1e6;
  }
  t.sort();
  return [t[Math.floor(calls / 2)], t[Math.floor(calls * 0.99)]];
}

function gcNow(): void {
  (globalThis as { gc?: () => void }).gc?.();
}

function benchBackend(k: KernelBackend, entries: number, calls: number): IndexBenchRow {
  gcNow();
  const rss0 = process.memoryUsage().rss;
  const clock = new FakeClock(1000);
  const index = new PrefixIndex(k, { maxEntries: entries + 1000, replicaCapacity: REPLICAS, clock });
  const t0 = performance.now();
  let applied = 0;
  forEachBatch(entries, (recs, count) => {
    index.apply(recs, count);
    applied += count;
  });
  const buildMs = performance.now() - t0;
  gcNow();
  const stats = index.stats();
  const rss1 = process.memoryUsage().rss;
  const full = promptHashes(false);
  const miss = promptHashes(true);
  const out: MatchResult = index.newMatchResult();
  const [fullMed, fullP99] = perCall(calls, () => index.match(full, out));
  index.match(full, out);
  const matched = out.count;
  let depth = 0;
  for (let i = 0; i < out.count; i++) depth = Math.max(depth, out.depth(i));
  const [missMed, missP99] = perCall(calls * 4, () => index.match(miss, out));
  index.free();
  return {
    backend: k.name,
    entries: stats.entries,
    buildMs,
    applyRecordsPerS: applied / (buildMs / 1000),
    kernelBytesPerEntry: stats.bytes / stats.entries,
    rssBytesPerEntry: (rss1 - rss0) / stats.entries,
    matchFullMedianNs: fullMed,
    matchFullP99Ns: fullP99,
    matchMissMedianNs: missMed,
    matchMissP99Ns: missP99,
    matchedReplicas: matched,
    fullDepth: depth,
  };
}

/** The plain-TypeScript baseline: Map<bigint, Set<number>>, matched block by block with an active set. */
function benchBaseline(entries: number, calls: number): IndexBenchRow {
  gcNow();
  const heap0 = process.memoryUsage().heapUsed;
  const rss0 = process.memoryUsage().rss;
  const map = new Map<bigint, Set<number>>();
  const t0 = performance.now();
  let applied = 0;
  forEachBatch(entries, (recs, count) => {
    for (let i = 0; i < count; i++) {
      const h = (BigInt(recs[i * 4 + 3]) << 32n) | BigInt(recs[i * 4 + 2]);
      let s = map.get(h);
      if (!s) map.set(h, (s = new Set()));
      s.add(recs[i * 4 + 1]);
    }
    applied += count;
  });
  const buildMs = performance.now() - t0;
  gcNow();
  const heapBytes = process.memoryUsage().heapUsed - heap0;
  const rss1 = process.memoryUsage().rss;
  const depth = new Int32Array(REPLICAS);
  let matched = 0;
  let best = 0;
  const match = (hashes: BigUint64Array) => {
    const first = map.get(hashes[0]);
    if (!first) return 0;
    const active: number[] = [];
    for (const r of first) {
      depth[r] = 1;
      active.push(r);
    }
    let alive = active.length;
    for (let b = 1; b < hashes.length && alive > 0; b++) {
      const s = map.get(hashes[b]);
      if (!s) break;
      alive = 0;
      for (const r of active) {
        if (depth[r] === b && s.has(r)) {
          depth[r] = b + 1;
          alive++;
        }
      }
    }
    return active.length;
  };
  const full = promptHashes(false);
  const miss = promptHashes(true);
  const [fullMed, fullP99] = perCall(Math.max(200, calls / 10), () => match(full));
  matched = match(full);
  for (let r = 0; r < REPLICAS; r++) best = Math.max(best, depth[r]);
  const [missMed, missP99] = perCall(calls, () => match(miss));
  const result: IndexBenchRow = {
    backend: 'Map<bigint, Set<number>>',
    entries: applied,
    buildMs,
    applyRecordsPerS: applied / (buildMs / 1000),
    kernelBytesPerEntry: heapBytes / applied,
    rssBytesPerEntry: (rss1 - rss0) / applied,
    matchFullMedianNs: fullMed,
    matchFullP99Ns: fullP99,
    matchMissMedianNs: missMed,
    matchMissP99Ns: missP99,
    matchedReplicas: matched,
    fullDepth: best,
  };
  map.clear();
  return result;
}

export function runIndexBench(backends: readonly KernelBackend[], cfg: BenchConfig): { result: IndexBenchResult; markdown: string } {
  const sizes = cfg.ci ? [1_000_000] : [1_000_000, 10_000_000];
  const calls = cfg.ci ? 2_000 : 10_000;
  const rows: IndexBenchRow[] = [];
  for (const n of sizes) {
    for (const k of backends) {
      if (k.name === 'js' && n > 1_000_000) continue; // the reference is a typed-array port: slow to fill at 10M
      process.stderr.write(`  index: ${k.name} at ${fmtInt(n)} entries …\n`);
      rows.push(benchBackend(k, n, calls));
    }
    if (n <= 1_000_000 || !cfg.ci) {
      process.stderr.write(`  index: Map baseline at ${fmtInt(n)} entries …\n`);
      rows.push(benchBaseline(n, calls));
    }
  }
  const md =
    section('Prefix index: match and memory (1,000 replicas)') +
    mdTable(
      ['impl', 'entries', 'build (apply)', 'bytes/entry (kernel / RSS)', 'match 512 cached: median / p99', 'match miss: median / p99', 'matched replicas, best depth'],
      rows.map((r) => [
        r.backend,
        fmtInt(r.entries),
        `${(r.buildMs / 1000).toFixed(2)} s (${fmtInt(Math.round(r.applyRecordsPerS))}/s)`,
        `${r.kernelBytesPerEntry.toFixed(1)} / ${r.rssBytesPerEntry.toFixed(1)}`,
        `${fmtNs(r.matchFullMedianNs)} / ${fmtNs(r.matchFullP99Ns)}`,
        `${fmtNs(r.matchMissMedianNs)} / ${fmtNs(r.matchMissP99Ns)}`,
        `${r.matchedReplicas}, ${r.fullDepth}`,
      ]),
    ) +
    `\nBytes per entry: the kernel's own accounting (table, arena, per-replica arrays) and the growth of the process's resident set over the build (${fmtBytes(0)} means the allocator reused memory). The Map row's "kernel" figure is its JS heap growth.\n`;
  return { result: { replicas: REPLICAS, rows }, markdown: md + '\n' };
}

export { median };
