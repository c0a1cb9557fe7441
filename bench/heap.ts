/**
 * Group 4: memory retained by the hot path. Each hot-path call is run a million times (fewer for
 * batches and for the slow js reference, stated in the table), between two full garbage collections;
 * what the JS heap and the external memory (ArrayBuffers, wasm memory, addon allocations) grew by is
 * what the calls kept. Transient garbage (a BigInt read from a typed array, a small result object) is
 * collected and does not count: the point is leaks and caches that grow per call.
 *
 * Needs `--expose-gc` (run.ts re-spawns itself with it). The first row is an empty loop: its delta is
 * the noise floor of the method. The second leaks on purpose: the method must see it.
 */
import type { KernelBackend } from '../src/kernels/abi.ts';
import { HashRing, Maglev, jumpHashBatch } from '../src/hashing/consistent.ts';
import { PrefixHasher } from '../src/hashing/prefix.ts';
import { compileLoop, fmtBytes, fmtInt, mdTable, median, randomKeys, randomTokens, section, type BenchConfig } from './util.ts';

/** The heap-growth budget of the gate: 1 KiB per million calls (applied to whatever count was run). */
export const HEAP_BUDGET_BYTES = 1024;

export interface HeapRow {
  readonly backend: string;
  readonly op: string;
  readonly calls: number;
  /**
   * JS heap retained by the calls (bytes), readings after full collections: the median growth of
   * {@link SEGMENTS} equal segments, times the segment count.
   */
  readonly heapDeltaBytes: number;
  /** The same for process.memoryUsage().external: ArrayBuffers, wasm memory, addon allocations. */
  readonly externalDeltaBytes: number;
  /** Heap after the last segment − before the first (the raw figure, one-off events included). */
  readonly rawHeapDeltaBytes: number;
  readonly ms: number;
}

export interface HeapResult {
  readonly rows: HeapRow[];
  /** An empty loop: what the method reports when nothing is retained. */
  readonly control: HeapRow;
  /** A loop that leaks on purpose: proof that the method sees a leak. */
  readonly leakControl: HeapRow;
}

type Gc = () => void;

function collect(gc: Gc): NodeJS.MemoryUsage {
  // Two passes: the first may only promote what the second then frees (weak callbacks, finalizers).
  gc();
  gc();
  return process.memoryUsage();
}

/** Each measurement is split into this many equal segments, with a full GC and a reading between them. */
const SEGMENTS = 8;

/** Runs `calls` calls as many short loop invocations (≥ 100 of them), as a real caller makes them. */
function runChunked(loop: (inner: number) => unknown, calls: number): void {
  const chunk = Math.max(1, Math.min(10_000, Math.floor(calls / 100)));
  for (let done = 0; done < calls; done += chunk) loop(Math.min(chunk, calls - done));
}

function measure(gc: Gc, backend: string, op: string, calls: number, loop: (inner: number) => unknown): HeapRow {
  // Warm up first with the same chunked calls, so the loop and everything it calls is fully optimised
  // (not just on-stack-replaced) before the baseline: code and feedback the JIT allocates is not growth.
  runChunked(loop, Math.max(1, Math.floor(calls / 5)));
  // Readings go into preallocated arrays and the usage objects are dropped at once, so the
  // measurement itself retains nothing between readings.
  const heapAt = new Float64Array(SEGMENTS + 1);
  const externalAt = new Float64Array(SEGMENTS + 1);
  let usage = collect(gc);
  heapAt[0] = usage.heapUsed;
  externalAt[0] = usage.external;
  let runMs = 0;
  for (let s = 1; s <= SEGMENTS; s++) {
    const ts = performance.now();
    runChunked(loop, Math.floor(calls / SEGMENTS));
    runMs += performance.now() - ts;
    usage = collect(gc);
    heapAt[s] = usage.heapUsed;
    externalAt[s] = usage.external;
  }
  const heap = Array.from({ length: SEGMENTS }, (_, s) => heapAt[s + 1] - heapAt[s]);
  const external = Array.from({ length: SEGMENTS }, (_, s) => externalAt[s + 1] - externalAt[s]);
  if (process.env.DYSTRO_BENCH_DEBUG) process.stderr.write(`    heap segments ${backend} ${op}: ${heap.join(' ')}\n`);
  // A leak grows in every segment; a one-off event (a compilation-cache entry aged out, a late
  // optimisation) lands in one. The median segment times the segment count estimates what the whole
  // run retained without letting one event decide the gate; the raw total is reported beside it.
  return {
    backend,
    op,
    calls: Math.floor(calls / SEGMENTS) * SEGMENTS,
    heapDeltaBytes: median(heap) * SEGMENTS,
    externalDeltaBytes: median(external) * SEGMENTS,
    rawHeapDeltaBytes: heapAt[SEGMENTS] - heapAt[0],
    ms: runMs,
  };
}

export const HEAP_OPS = {
  hash: 'hashTokens 2,048 tok → preallocated out',
  jump: 'jump 1,000 buckets (kernels.jump)',
  ring: 'ring 1,000×160 lookup',
  maglev: 'Maglev 1,000 lookup',
  jumpBatch: 'jump batch 1,024 keys',
  ringBatch: 'ring batch 1,024 keys',
  maglevBatch: 'Maglev batch 1,024 keys',
} as const;

export function runHeap(backends: readonly KernelBackend[], cfg: BenchConfig): { result: HeapResult; markdown: string } {
  const gc = (globalThis as { gc?: Gc }).gc;
  if (!gc) throw new Error('heap group needs --expose-gc (run.ts re-spawns itself with it)');
  const tokens = randomTokens(2048, 'heap.tokens');
  const out = new BigUint64Array(2048 / 16);
  const keys = randomKeys(1024, 'heap.keys');
  const keyList = Array.from(keys);
  const ids = new Int32Array(1024);
  const names = Array.from({ length: 1000 }, (_, i) => `node-${i}`);
  const rows: HeapRow[] = [];

  const control = measure(gc, '—', 'empty loop (noise floor)', cfg.heapCalls, compileLoop('heap control', 'sink[i & 63] = i;', {}));
  // Positive control: a deliberate leak of one small object every 1,024 calls must show up.
  const leak: unknown[] = [];
  const leakRow = measure(
    gc,
    '—',
    'positive control: keeps one { i } per 1,024 calls',
    cfg.heapCalls,
    compileLoop('heap leak control', 'if (((base + i) & 1023) === 0) leak.push({ i: base + i }); sink[i & 63] = i;', { leak }),
  );
  leak.length = 0;

  for (const k of backends) {
    const js = k.name === 'js';
    const hasher = new PrefixHasher(k);
    const ring = new HashRing(k, names);
    const m = new Maglev(k, names, { size: 65537 });
    const env = { k, hasher, tokens, out, keys, keyList, ids, ring, m, seed: 42n, jumpHashBatch };
    const single = cfg.heapCalls;
    const batches = js ? cfg.heapBatchCallsJs : cfg.heapBatchCalls;
    const cases: [string, number, string][] = [
      [HEAP_OPS.hash, js ? cfg.heapCallsJsHashing : single, 'sink[i & 63] = hasher.hashTokens(tokens, seed, out);'],
      [HEAP_OPS.jump, single, 'sink[i & 63] = k.jump(keyList[(base + i) & 1023], 1000);'],
      [HEAP_OPS.ring, single, 'sink[i & 63] = ring.lookup(keyList[(base + i) & 1023]);'],
      [HEAP_OPS.maglev, single, 'sink[i & 63] = m.lookup(keyList[(base + i) & 1023]);'],
      [HEAP_OPS.jumpBatch, batches, 'sink[i & 63] = jumpHashBatch(k, keys, 1000, ids);'],
      [HEAP_OPS.ringBatch, batches, 'sink[i & 63] = ring.lookupBatch(keys, ids);'],
      [HEAP_OPS.maglevBatch, batches, 'sink[i & 63] = m.lookupBatch(keys, ids);'],
    ];
    for (const [op, calls, statement] of cases) {
      rows.push(measure(gc, k.name, op, calls, compileLoop(`heap ${op} ${k.name}`, statement, env)));
    }
    ring.free();
    m.free();
    process.stderr.write(`  heap: ${k.name} done\n`);
  }

  let md = section('4. Heap growth on the hot path (after full GCs)');
  md += `\nJS heap and external memory retained by N calls, read after full GCs between ${SEGMENTS} equal segments: "heap Δ" is the median segment's growth × ${SEGMENTS} (a leak grows in every segment, a one-off JIT or cache event in one), "raw heap Δ" the plain after − before. Budget: ${fmtBytes(HEAP_BUDGET_BYTES)} per million calls, applied to the count run. Batches are 1,024 keys a call; the js reference runs fewer hashing and batch calls (it is ~100× slower).\n\n`;
  md += mdTable(
    ['backend', 'hot-path call', 'calls', 'heap Δ', 'bytes/call', 'external Δ', 'raw heap Δ', 'time'],
    [control, leakRow, ...rows].map((r) => [
      r.backend,
      r.op,
      fmtInt(r.calls),
      fmtBytes(r.heapDeltaBytes),
      (r.heapDeltaBytes / r.calls).toFixed(4),
      fmtBytes(r.externalDeltaBytes),
      fmtBytes(r.rawHeapDeltaBytes),
      `${(r.ms / 1000).toFixed(2)} s`,
    ]),
    ['l', 'l', 'r', 'r', 'r', 'r', 'r', 'r'],
  );
  return { result: { rows, control, leakControl: leakRow }, markdown: md + '\n' };
}
