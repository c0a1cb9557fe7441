/**
 * The two offline prefix hit-rate ceilings a run is compared with (DESIGN §6), computed from the same
 * request stream in arrival order, with the engine's own rule that at least one prompt token is
 * computed (so the three figures are comparable):
 *
 * - infinite cache: a block hits when any earlier request had it (no eviction, one shared cache);
 * - global LRU: one LRU cache of the fleet's total KV capacity in blocks, each request's blocks touched
 *   last-block-first so its first block is the most recent (the order vLLM frees them in). A fleet of
 *   separate caches, some of whose blocks are pinned by running requests, normally does worse; it is a
 *   reference point, not a theorem (LRU is not optimal, and partitioning can beat it on rare sequences).
 *
 * Both caches are prefix-closed — a chained hash stands for its whole prefix, every chain is inserted
 * with all its prefixes, and touching last-block-first keeps every block at least as recent as the
 * blocks after it in any chain, so LRU evicts descendants before ancestors — hence a request's hit
 * length is found by binary search, and the blocks after it are known to be absent.
 *
 * On a large workload (Mooncake: 9 M block touches) the ceilings cost as much as the rest of the
 * simulation, and depend on nothing simulated: `ThreadedCeilings` computes them in a worker thread fed
 * with the hash stream, and the simulator collects the result at the end.
 */
import { Worker } from 'node:worker_threads';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { BlockHashSet, LruBlockSet } from './block-table.js';

export interface CeilingResult {
  promptTokens: number;
  infiniteHitTokens: number;
  globalLruHitTokens: number;
  /** Token hit rate with an infinite shared cache. */
  infinite: number;
  /** Token hit rate with one LRU of the fleet's total capacity. */
  globalLru: number;
  globalLruCapacityBlocks: number;
}

export interface CeilingSink {
  /**
   * One request: `hashes` as (lo, hi) pairs, `blocks` of them (prompt blocks, then any known output
   * blocks, which are cached but cannot be hit by this request), `promptTokens` long.
   */
  observe(hashes: Uint32Array | Int32Array, blocks: number, promptTokens: number): void;
  result(): CeilingResult;
}

/** Length of the leading run of `hashes` present in a prefix-closed cache, by binary search. */
function leadingRun(has: (lo: number, hi: number) => boolean, hashes: Uint32Array | Int32Array, blocks: number): number {
  if (blocks === 0 || !has(hashes[0], hashes[1])) return 0;
  let lo = 1; // hashes[0 … lo−1] present
  let hi = blocks; // hashes[hi … ] absent (or past the end)
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (has(hashes[2 * mid], hashes[2 * mid + 1])) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

export class HitCeilings implements CeilingSink {
  private readonly seen = new BlockHashSet(1 << 16);
  private readonly lru: LruBlockSet;
  private readonly hasSeen = (lo: number, hi: number) => this.seen.has(lo, hi);
  private readonly hasLru = (lo: number, hi: number) => this.lru.has(lo, hi);
  promptTokens = 0;
  infiniteHitTokens = 0;
  lruHitTokens = 0;

  constructor(
    readonly blockSize: number,
    readonly lruCapacityBlocks: number,
  ) {
    this.lru = new LruBlockSet(Math.max(1, lruCapacityBlocks));
  }

  observe(hashes: Uint32Array | Int32Array, blocks: number, promptTokens: number): void {
    const bs = this.blockSize;
    const maxHit = Math.min(blocks, Math.floor((promptTokens - 1) / bs));
    this.promptTokens += promptTokens;
    const k = leadingRun(this.hasSeen, hashes, blocks);
    this.infiniteHitTokens += Math.min(k, maxHit) * bs;
    for (let j = k; j < blocks; j++) this.seen.add(hashes[2 * j], hashes[2 * j + 1]);
    const l = leadingRun(this.hasLru, hashes, blocks);
    this.lruHitTokens += Math.min(l, maxHit) * bs;
    // Last block first; blocks from l on are absent, so they are inserted without a lookup.
    for (let j = blocks - 1; j >= l; j--) this.lru.insert(hashes[2 * j], hashes[2 * j + 1]);
    for (let j = l - 1; j >= 0; j--) this.lru.touch(hashes[2 * j], hashes[2 * j + 1]);
  }

  result(): CeilingResult {
    const p = this.promptTokens;
    return {
      promptTokens: p,
      infiniteHitTokens: this.infiniteHitTokens,
      globalLruHitTokens: this.lruHitTokens,
      infinite: p ? this.infiniteHitTokens / p : 0,
      globalLru: p ? this.lruHitTokens / p : 0,
      globalLruCapacityBlocks: this.lruCapacityBlocks,
    };
  }
}

/**
 * The worker's first script. Built JavaScript is imported as it is. From TypeScript sources the worker
 * loads the module through tsx's in-thread CommonJS hook: a worker that inherited `--import tsx` would
 * need the main thread's loader to start, and the simulator's loop does not yield until it is done.
 */
const BOOTSTRAP = `
const { workerData } = require('node:worker_threads');
if (workerData.tsxApi) require(workerData.tsxApi).require(workerData.file, workerData.file);
else import(require('node:url').pathToFileURL(workerData.file).href);
`;

function workerModule(): { file: string; tsxApi: string | null } {
  const fromSources = import.meta.url.endsWith('.ts');
  const file = fileURLToPath(new URL(`./ceilings-worker${fromSources ? '.ts' : '.js'}`, import.meta.url));
  return { file, tsxApi: fromSources ? createRequire(import.meta.url).resolve('tsx/cjs/api') : null };
}

/** Words of one message to the worker: per request [blocks, promptTokens, lo0, hi0, lo1, hi1, …]. */
const CHUNK_WORDS = 1 << 18;
/** Longest the simulator waits for the worker's result, ms. */
const RESULT_TIMEOUT_MS = 600_000;

/** Shared state words: [started, done (1 ok, 2 failed)], then the result as doubles. */
const S_STARTED = 0;
const S_DONE = 1;

/**
 * The ceilings computed in a worker thread. Requests are appended to a chunk that is transferred (not
 * copied) when full; the result comes back through a SharedArrayBuffer, so `result()` stays synchronous
 * (Atomics.wait). Until the worker reports that it started, chunks are also kept here, and if it never
 * starts the ceilings are computed inline from them — a missing worker costs time, never the result.
 */
export class ThreadedCeilings implements CeilingSink {
  private readonly worker: Worker | null;
  private readonly flags: Int32Array;
  private readonly out: Float64Array;
  private chunk = new Int32Array(CHUNK_WORDS);
  private used = 0;
  private retained: Int32Array[] | null = [];
  private final: CeilingResult | null = null;

  constructor(
    readonly blockSize: number,
    readonly lruCapacityBlocks: number,
  ) {
    const shared = new SharedArrayBuffer(8 + 8 * 4);
    this.flags = new Int32Array(shared, 0, 2);
    this.out = new Float64Array(shared, 8, 4);
    let worker: Worker | null = null;
    try {
      worker = new Worker(BOOTSTRAP, { eval: true, execArgv: [], workerData: { ...workerModule(), blockSize, capacity: lruCapacityBlocks, shared } });
      worker.unref();
      worker.on('error', () => {});
    } catch {
      worker = null;
    }
    this.worker = worker;
  }

  observe(hashes: Uint32Array | Int32Array, blocks: number, promptTokens: number): void {
    const need = 2 + 2 * blocks;
    if (this.used + need > this.chunk.length) this.flush(need);
    const c = this.chunk;
    c[this.used] = blocks;
    c[this.used + 1] = promptTokens;
    c.set(hashes.subarray(0, 2 * blocks), this.used + 2);
    this.used += need;
  }

  private flush(nextNeed = 0): void {
    if (this.used > 0) {
      const part = this.chunk.subarray(0, this.used);
      if (this.retained && Atomics.load(this.flags, S_STARTED) === 1) this.retained = null;
      if (this.retained) this.retained.push(part.slice());
      this.worker?.postMessage({ kind: 'chunk', words: part }, this.retained ? [] : [part.buffer]);
      if (!this.retained) this.chunk = new Int32Array(Math.max(CHUNK_WORDS, nextNeed));
    }
    if (this.chunk.length < nextNeed) this.chunk = new Int32Array(nextNeed);
    this.used = 0;
  }

  result(): CeilingResult {
    if (this.final) return this.final;
    this.flush();
    this.worker?.postMessage({ kind: 'end' });
    let waited = 0;
    // Wait for the worker to start (up to 30 s), then for its result.
    while (this.worker && Atomics.load(this.flags, S_DONE) === 0 && waited < RESULT_TIMEOUT_MS) {
      if (Atomics.load(this.flags, S_STARTED) === 0 && waited >= 30_000) break;
      Atomics.wait(this.flags, S_DONE, 0, 100);
      waited += 100;
    }
    const done = Atomics.load(this.flags, S_DONE);
    if (done === 1) {
      const [p, inf, lru] = this.out;
      this.final = { promptTokens: p, infiniteHitTokens: inf, globalLruHitTokens: lru, infinite: p ? inf / p : 0, globalLru: p ? lru / p : 0, globalLruCapacityBlocks: this.lruCapacityBlocks };
    } else if (this.retained) {
      // The worker never started: compute here from the kept chunks.
      const inline = new HitCeilings(this.blockSize, this.lruCapacityBlocks);
      for (const words of this.retained) feed(inline, words);
      this.final = inline.result();
    } else {
      throw new Error(`The ceilings worker failed after it started (state ${done})`);
    }
    void this.worker?.terminate();
    this.retained = null;
    return this.final;
  }
}

/** Feeds one chunk of [blocks, promptTokens, hashes…] records to a sink. */
export function feed(sink: CeilingSink, words: Int32Array): void {
  let at = 0;
  while (at < words.length) {
    const blocks = words[at];
    const prompt = words[at + 1];
    sink.observe(words.subarray(at + 2, at + 2 + 2 * blocks), blocks, prompt);
    at += 2 + 2 * blocks;
  }
}

export const CEILING_FLAGS = { S_STARTED, S_DONE } as const;
