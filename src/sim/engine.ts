/**
 * A simulated vLLM engine (one replica), paced by the roofline performance model (DESIGN §5–§6).
 *
 * What it reproduces, after vLLM V1's scheduler and KV cache manager (vllm/v1/core/sched/scheduler.py,
 * vllm/v1/core/kv_cache_manager.py, vllm/v1/core/block_pool.py — the behaviour, not the code):
 *
 * - Continuous batching with chunked prefill: every step has a token budget (max_num_batched_tokens,
 *   default 2,048 here); running requests are scheduled first, in admission order, a decode costing one
 *   token and a prefill a chunk of what is left; then waiting requests FCFS while budget, KV blocks and
 *   max_num_seqs (256) allow. A waiting request may start with a partial chunk.
 * - Automatic prefix caching over blocks of the router's block size, keyed by the router's chained block
 *   hashes (the driver hashes the request's tokens with the router's PrefixHasher chain, so the engine's
 *   cache keys are exactly the hashes its KV events carry). On admission the longest run of cached
 *   leading blocks is reused, capped so that at least one prompt token is computed (vLLM recomputes the
 *   last token of a full hit to get logits). A block enters the cache once its tokens are computed.
 * - Blocks no request references sit in a free queue, least recently freed first; allocation pops the
 *   head and evicts its hash. A finished or preempted request returns its blocks tail-first, so the end
 *   of a prompt (least likely to be shared) is evicted before its beginning.
 * - Preemption by recompute: when a running request needs a block and none is free, the most recently
 *   admitted running request is preempted (its blocks freed, its progress reset, back to the head of the
 *   waiting queue); no waiting request is admitted in a step that preempted.
 *
 * It emits index records (records.ts: STORE when a block enters the cache, REMOVE when a cached block is
 * evicted, CLEAR when the cache is reset) into `records`, which the driver drains after each step and
 * delivers to the router's index with the configured delay, loss and batching.
 *
 * Units: token counts, blocks, milliseconds of simulated time; step model in seconds.
 */
import * as roofline from '../model/roofline.js';
import type { EngineModel } from '../model/roofline.js';
import * as records from '../index/records.js';
import type { LoadReport } from '../fleet/load.js';

// Module-local copies of imported constants and functions: an imported binding read in a hot loop can
// cost a getter call per read when the module is transpiled to CommonJS (tsx): a third of the engine's time.
const OP_STORE = records.OP_STORE;
const OP_REMOVE = records.OP_REMOVE;
const OP_CLEAR = records.OP_CLEAR;
const RECORD_WORDS = records.RECORD_WORDS;
const TIER_GPU = records.TIER_GPU;
const prefillEfficiency = roofline.prefillEfficiency;
const stepOverheadS = roofline.stepOverheadS;

/** vLLM's max_num_batched_tokens for chunked prefill (the brief's default; vLLM's own varies by version and usage). */
export const DEFAULT_MAX_BATCHED_TOKENS = 2048;
/** vLLM's long-standing max_num_seqs default. */
export const DEFAULT_MAX_NUM_SEQS = 256;

/** Time of one forward pass. */
export interface StepModel {
  /**
   * Seconds for one step: `nPrefill` prefill chunks (news[i] new tokens on cached[i] already in KV) and
   * `decodeBatch` decodes holding `decodeContextTokens` KV tokens in all.
   */
  stepS(news: Float64Array, cached: Float64Array, nPrefill: number, decodeBatch: number, decodeContextTokens: number): number;
}

/**
 * The roofline model of one mixed step (DESIGN §5), as one forward pass: weights are read once, every
 * sequence's KV is read, prefill FLOPs run at eff(Σn) of peak and decode FLOPs at 0.5 of peak:
 *   t = max((W + C·kv) / (TP·BW·0.70), F_prefill / (TP·peak·eff(Σn)) + F_decode / (TP·peak·0.5)) + overhead
 * With no prefill it equals EngineModel.decodeStepS; with no decode and a compute-bound chunk it equals
 * EngineModel.prefillStepS (a tiny chunk becomes memory-bound, as it is on the hardware).
 */
export function rooflineStepModel(engine: EngineModel): StepModel {
  const m = engine.model;
  const tp = engine.tp;
  const peak = tp * engine.chip.peakFlops;
  const bandwidth = tp * engine.chip.hbmBandwidth * 0.7;
  const attentionPerToken = 4 * m.layers * m.heads * m.headDim;
  return {
    stepS(news, cached, nPrefill, decodeBatch, decodeContextTokens) {
      let prefillFlops = 0;
      let prefillTokens = 0;
      let contextTokens = decodeContextTokens;
      for (let i = 0; i < nPrefill; i++) {
        prefillFlops += engine.prefillFlops(news[i], cached[i]);
        prefillTokens += news[i];
        contextTokens += cached[i] + news[i];
      }
      const memoryS = (m.weightBytes + contextTokens * m.kvBytesPerToken) / bandwidth;
      let computeS = 0;
      if (prefillTokens > 0) computeS += prefillFlops / (peak * prefillEfficiency(prefillTokens));
      if (decodeBatch > 0) computeS += (2 * m.linearParams * decodeBatch + attentionPerToken * decodeContextTokens) / (peak * 0.5);
      return Math.max(memoryS, computeS) + stepOverheadS(m, tp, nPrefill + decodeBatch);
    },
  };
}

/** One request inside an engine. The driver creates it; the engine advances it. */
export class EngineRequest {
  /** Tokens the engine must hold: prompt plus tokens generated so far (vLLM's num_tokens). */
  numTokens: number;
  /** Tokens whose KV is computed (vLLM's num_computed_tokens). */
  computed = 0;
  /** Output tokens sampled so far. */
  generated = 0;
  /** Block ids held, in sequence order (entries 0 … nBlocks−1). */
  blocks: Int32Array;
  nBlocks = 0;
  /** Leading blocks of this request that are known to the cache (hit or registered by it). */
  cachedUpTo = 0;
  /** Prompt tokens served from the prefix cache at the first admission (−1 before it). */
  hitTokens = -1;
  preemptions = 0;
  admittedAtMs = NaN;
  firstTokenMs = NaN;
  finishedMs = NaN;
  /** Tokens scheduled in the current step. */
  scheduled = 0;
  /** Set when the request left the engine (finished or failed). */
  gone = false;

  /**
   * @param hashes the chained block hashes as u32 pairs (lo, hi) over prompt (+ known output ids), the
   *   router's chain; `hashBlocks` of them are valid.
   * @param tag the driver's handle (opaque to the engine).
   */
  constructor(
    readonly promptTokens: number,
    readonly outputTokens: number,
    readonly hashes: Uint32Array,
    readonly hashBlocks: number,
    readonly tag: unknown,
  ) {
    this.numTokens = promptTokens;
    this.blocks = new Int32Array(8);
  }

  /** Blocks needed to hold `tokens` tokens of KV. */
  static blocksFor(tokens: number, blockSize: number): number {
    return Math.ceil(tokens / blockSize);
  }
}

export interface EngineOptions {
  id: string;
  /** The router's replica slot (index records carry it). */
  slot: number;
  blockSize: number;
  /** KV cache capacity in blocks. */
  kvBlocks: number;
  stepModel: StepModel;
  maxBatchedTokens?: number;
  maxNumSeqs?: number;
  /**
   * Simulate a run of pure-decode steps as one event (default true). Exact for what the router sees
   * (first tokens, finishes, STORE records, load counts) except that blocks the run needs are taken at
   * its end, so REMOVE records for the blocks they evict are published up to that run's length late,
   * and a load report during the run sees its starting KV usage.
   */
  fastForward?: boolean;
}

/** Words per block in SimEngine's pool, and their offsets. */
const BLK = 8;
const REF = 0;
const HASHED = 1;
const KLO = 2;
const KHI = 3;
const FPREV = 4;
const FNEXT = 5;
const CNEXT = 6;

/** Longest run of decode steps simulated as one event. */
const MAX_RUN_STEPS = 4096;

/** Callbacks into the driver at the end of a step. */
export interface EngineListener {
  firstToken(r: EngineRequest, nowMs: number): void;
  finished(r: EngineRequest, nowMs: number): void;
}

/** A FIFO with O(1) push, shift and unshift (waiting queues grow to thousands under overload). */
class Deque<T> {
  private items: (T | undefined)[] = new Array(16);
  private head = 0;
  length = 0;

  private grow(): void {
    const n = this.items.length;
    const next: (T | undefined)[] = new Array(n * 2);
    for (let i = 0; i < this.length; i++) next[i] = this.items[(this.head + i) & (n - 1)];
    this.items = next;
    this.head = 0;
  }
  push(x: T): void {
    if (this.length === this.items.length) this.grow();
    this.items[(this.head + this.length) & (this.items.length - 1)] = x;
    this.length++;
  }
  unshift(x: T): void {
    if (this.length === this.items.length) this.grow();
    this.head = (this.head - 1) & (this.items.length - 1);
    this.items[this.head] = x;
    this.length++;
  }
  peek(): T {
    return this.items[this.head] as T;
  }
  shift(): T {
    const x = this.items[this.head] as T;
    this.items[this.head] = undefined;
    this.head = (this.head + 1) & (this.items.length - 1);
    this.length--;
    return x;
  }
  at(i: number): T {
    return this.items[(this.head + i) & (this.items.length - 1)] as T;
  }
  clear(): T[] {
    const out: T[] = [];
    while (this.length > 0) out.push(this.shift());
    return out;
  }
}

export interface EngineStats {
  steps: number;
  /** Simulated time spent stepping, ms. */
  busyMs: number;
  preemptions: number;
  /** Cached blocks evicted to make room. */
  evictions: number;
  /** Blocks that entered the cache. */
  stored: number;
  admitted: number;
  finished: number;
}

export class SimEngine {
  readonly id: string;
  readonly slot: number;
  readonly blockSize: number;
  readonly kvBlocks: number;
  readonly maxBatchedTokens: number;
  readonly maxNumSeqs: number;
  private readonly stepModel: StepModel;

  /**
   * Block pool: BLK words per block id in one array — reference count, cached flag, hash (lo, hi),
   * free-queue links and prefix-cache chain link — so the block an allocation or eviction touches costs
   * one cache line, not one per field (the engines spend most of their time here).
   */
  private readonly blk: Int32Array;
  /**
   * The prefix cache: a chained hash table threaded through the blocks — bucket heads here, each
   * block's successor in its bucket in the block's own words. A lookup touches a bucket word and a
   * block; an eviction unlinks a block from a (nearly always one-long) chain, without the probing and
   * shifting of an open-addressing table.
   */
  private readonly buckets: Int32Array;
  private readonly bucketShift: number;
  private cacheSize = 0;
  /** Free queue: blocks no request references, least recently freed at the head. */
  private freeHead = -1;
  private freeTail = -1;
  /** Blocks in the free queue (cached or not). */
  freeCount = 0;

  readonly waiting = new Deque<EngineRequest>();
  running: EngineRequest[] = [];
  /** Requests of the step in flight (parallel to running's scheduled ones). */
  private stepReqs: EngineRequest[] = [];
  private news = new Float64Array(64);
  private cachedCtx = new Float64Array(64);
  private hitScratch = new Int32Array(256);
  private finishedScratch: EngineRequest[] = [];
  /** True between beginStep and endStep. */
  stepping = false;
  readonly fastForward: boolean;
  /** Decode steps in the event in flight (1 unless fast-forwarding), its start, batch and context. */
  private runSteps = 1;
  private runStartMs = 0;
  private runBatch = 0;
  private runCtx0 = 0;
  private runEndMs = 0;
  private readonly noPrefill = new Float64Array(0);
  /** False once killed: it accepts nothing more. */
  alive = true;

  /** Index records emitted since the driver last drained them (RECORD_WORDS words each). */
  records = new Uint32Array(256 * RECORD_WORDS);
  recordCount = 0;

  readonly stats: EngineStats = { steps: 0, busyMs: 0, preemptions: 0, evictions: 0, stored: 0, admitted: 0, finished: 0 };
  private readonly report: Required<LoadReport> = { running: 0, waiting: 0, prefillTokens: 0, kvUsage: 0 };

  constructor(options: EngineOptions) {
    this.id = options.id;
    this.slot = options.slot;
    this.blockSize = options.blockSize;
    this.kvBlocks = options.kvBlocks;
    this.maxBatchedTokens = options.maxBatchedTokens ?? DEFAULT_MAX_BATCHED_TOKENS;
    this.maxNumSeqs = options.maxNumSeqs ?? DEFAULT_MAX_NUM_SEQS;
    this.stepModel = options.stepModel;
    this.fastForward = options.fastForward ?? true;
    const n = this.kvBlocks;
    this.blk = new Int32Array(n * BLK);
    for (let b = 0; b < n; b++) this.blk[b * BLK + CNEXT] = -1;
    let bits = 4;
    while (1 << bits < n) bits++;
    this.buckets = new Int32Array(1 << bits).fill(-1);
    this.bucketShift = 32 - bits;
    for (let b = 0; b < n; b++) this.freeAppend(b);
  }

  // ------------------------------------------------------------ block pool

  private freeAppend(b: number): void {
    this.blk[b * BLK + FPREV] = this.freeTail;
    this.blk[b * BLK + FNEXT] = -1;
    if (this.freeTail >= 0) this.blk[this.freeTail * BLK + FNEXT] = b;
    else this.freeHead = b;
    this.freeTail = b;
    this.freeCount++;
  }

  private freeUnlink(b: number): void {
    const p = this.blk[b * BLK + FPREV];
    const n = this.blk[b * BLK + FNEXT];
    if (p >= 0) this.blk[p * BLK + FNEXT] = n;
    else this.freeHead = n;
    if (n >= 0) this.blk[n * BLK + FPREV] = p;
    else this.freeTail = p;
    this.freeCount--;
  }

  private emit(op: number, lo: number, hi: number): void {
    if ((this.recordCount + 1) * RECORD_WORDS > this.records.length) {
      const bigger = new Uint32Array(this.records.length * 2);
      bigger.set(this.records);
      this.records = bigger;
    }
    const at = this.recordCount * RECORD_WORDS;
    this.records[at] = op | (TIER_GPU << 8);
    this.records[at + 1] = this.slot;
    this.records[at + 2] = lo;
    this.records[at + 3] = hi;
    this.recordCount++;
  }

  private bucketOf(lo: number, hi: number): number {
    return Math.imul(lo ^ Math.imul(hi, 0x85ebca6b), 0x9e3779b1) >>> this.bucketShift;
  }

  /** The block caching a hash, or −1. */
  private cached(lo: number, hi: number): number {
    const l = lo | 0;
    const h = hi | 0;
    const blk = this.blk;
    let b = this.buckets[this.bucketOf(l, h)];
    while (b >= 0) {
      if (blk[b * BLK + KLO] === l && blk[b * BLK + KHI] === h) return b;
      b = blk[b * BLK + CNEXT];
    }
    return -1;
  }

  private cacheBlock(b: number, lo: number, hi: number): void {
    const l = lo | 0;
    const h = hi | 0;
    const blk = this.blk;
    blk[b * BLK + KLO] = l;
    blk[b * BLK + KHI] = h;
    blk[b * BLK + HASHED] = 1;
    const at = this.bucketOf(l, h);
    blk[b * BLK + CNEXT] = this.buckets[at];
    this.buckets[at] = b;
    this.cacheSize++;
  }

  private uncache(b: number): void {
    const blk = this.blk;
    const at = this.bucketOf(blk[b * BLK + KLO], blk[b * BLK + KHI]);
    let x = this.buckets[at];
    if (x === b) this.buckets[at] = blk[b * BLK + CNEXT];
    else {
      while (blk[x * BLK + CNEXT] !== b) x = blk[x * BLK + CNEXT];
      blk[x * BLK + CNEXT] = blk[b * BLK + CNEXT];
    }
    blk[b * BLK + CNEXT] = -1;
    blk[b * BLK + HASHED] = 0;
    this.cacheSize--;
  }

  /** Takes a block from the head of the free queue, evicting its hash. Caller checked freeCount > 0. */
  private allocateBlock(): number {
    const b = this.freeHead;
    this.freeUnlink(b);
    if (this.blk[b * BLK + HASHED] !== 0) {
      this.uncache(b);
      this.stats.evictions++;
      this.emit(OP_REMOVE, this.blk[b * BLK + KLO], this.blk[b * BLK + KHI]);
    }
    this.blk[b * BLK + REF] = 1;
    return b;
  }

  private pushBlock(r: EngineRequest, b: number): void {
    if (r.nBlocks === r.blocks.length) {
      const bigger = new Int32Array(r.blocks.length * 2);
      bigger.set(r.blocks);
      r.blocks = bigger;
    }
    r.blocks[r.nBlocks++] = b;
  }

  /** Returns a request's blocks tail-first (vLLM frees in reverse so prompt ends are evicted first). */
  private release(r: EngineRequest): void {
    for (let i = r.nBlocks - 1; i >= 0; i--) {
      const b = r.blocks[i];
      if (--this.blk[b * BLK + REF] === 0) this.freeAppend(b);
    }
    r.nBlocks = 0;
    r.cachedUpTo = 0;
  }

  /** Grows a running request's blocks to hold `tokens`; false (nothing changed) when blocks are short. */
  private grow(r: EngineRequest, tokens: number): boolean {
    const need = EngineRequest.blocksFor(tokens, this.blockSize) - r.nBlocks;
    if (need <= 0) return true;
    if (need > this.freeCount) return false;
    for (let i = 0; i < need; i++) this.pushBlock(r, this.allocateBlock());
    return true;
  }

  /** Leading cached blocks of `r` (ids into hitScratch), capped so one token is left to compute. */
  private lookup(r: EngineRequest): number {
    const maxBlocks = Math.min(r.hashBlocks, Math.floor((r.numTokens - 1) / this.blockSize));
    if (this.hitScratch.length < maxBlocks) this.hitScratch = new Int32Array(Math.max(maxBlocks, this.hitScratch.length * 2));
    const h = r.hashes;
    let k = 0;
    for (; k < maxBlocks; k++) {
      const b = this.cached(h[2 * k], h[2 * k + 1]);
      if (b < 0) break;
      this.hitScratch[k] = b;
    }
    return k;
  }

  /** Registers the request's blocks whose tokens are now computed (STORE records). */
  private register(r: EngineRequest): void {
    const bs = this.blockSize;
    const full = Math.min(r.hashBlocks, Math.floor(r.computed / bs), r.nBlocks);
    const h = r.hashes;
    for (let k = r.cachedUpTo; k < full; k++) {
      const b = r.blocks[k];
      const lo = h[2 * k];
      const hi = h[2 * k + 1];
      // The same content computed twice concurrently (two requests admitted before either finished the
      // block): keep the first copy, as the index would only see a duplicate STORE.
      if (this.blk[b * BLK + HASHED] === 0 && this.cached(lo, hi) < 0) {
        this.cacheBlock(b, lo, hi);
        this.stats.stored++;
        this.emit(OP_STORE, lo, hi);
      }
    }
    if (full > r.cachedUpTo) r.cachedUpTo = full;
  }

  // ------------------------------------------------------------ driver interface

  /** Whether a request can ever fit (prompt + output within the KV capacity). */
  fits(promptTokens: number, outputTokens: number): boolean {
    return EngineRequest.blocksFor(promptTokens + outputTokens, this.blockSize) <= this.kvBlocks;
  }

  /** Queues a request (FCFS). The driver starts a step when the engine is idle. */
  submit(r: EngineRequest): void {
    this.waiting.push(r);
  }

  get idle(): boolean {
    return !this.stepping;
  }

  /** Has work to schedule. */
  get hasWork(): boolean {
    return this.running.length > 0 || this.waiting.length > 0;
  }

  private preempt(victim: EngineRequest): void {
    this.release(victim);
    victim.computed = 0;
    victim.preemptions++;
    this.stats.preemptions++;
    this.waiting.unshift(victim);
  }

  /**
   * Schedules one step (vLLM's schedule()) and returns its duration in ms, or 0 when there is nothing
   * to run (the engine goes idle until the next submit).
   */
  beginStep(nowMs: number): number {
    if (!this.alive || this.stepping) return 0;
    let budget = this.maxBatchedTokens;
    const step = this.stepReqs;
    step.length = 0;
    let preempted = false;
    // Running requests first, in admission order.
    const running = this.running;
    for (let i = 0; i < running.length && budget > 0; i++) {
      const r = running[i];
      const n = Math.min(r.numTokens - r.computed, budget);
      if (n <= 0) continue;
      let ok = true;
      while (!this.grow(r, r.computed + n)) {
        const victim = running.pop()!;
        this.preempt(victim);
        preempted = true;
        if (victim === r) {
          ok = false;
          break;
        }
      }
      if (!ok) break;
      r.scheduled = n;
      step.push(r);
      budget -= n;
    }
    // Then waiting requests, FCFS, unless this step had to preempt.
    if (!preempted) {
      while (this.waiting.length > 0 && budget > 0 && running.length < this.maxNumSeqs) {
        const r = this.waiting.peek();
        let hitBlocks = 0;
        let reusable = 0;
        if (r.computed === 0) {
          hitBlocks = this.lookup(r);
          for (let k = 0; k < hitBlocks; k++) if (this.blk[this.hitScratch[k] * BLK + REF] === 0) reusable++;
        }
        const start = hitBlocks * this.blockSize;
        const n = Math.min(r.numTokens - start, budget);
        const need = EngineRequest.blocksFor(start + n, this.blockSize) - hitBlocks;
        // Hit blocks sitting in the free queue leave it when touched: they are not free for new blocks.
        if (need > this.freeCount - reusable) break;
        this.waiting.shift();
        for (let k = 0; k < hitBlocks; k++) {
          const b = this.hitScratch[k];
          if (this.blk[b * BLK + REF] === 0) this.freeUnlink(b);
          this.blk[b * BLK + REF]++;
          this.pushBlock(r, b);
        }
        r.computed = start;
        r.cachedUpTo = hitBlocks;
        if (r.hitTokens < 0) {
          r.hitTokens = start;
          r.admittedAtMs = nowMs;
          this.stats.admitted++;
        }
        for (let i = 0; i < need; i++) this.pushBlock(r, this.allocateBlock());
        r.scheduled = n;
        running.push(r);
        step.push(r);
        budget -= n;
      }
    }
    if (step.length === 0) return 0;
    // Step time from the model: decodes (one token after the first sample) versus prefill chunks.
    if (this.news.length < step.length) {
      this.news = new Float64Array(step.length * 2);
      this.cachedCtx = new Float64Array(step.length * 2);
    }
    let nPrefill = 0;
    let decodes = 0;
    let decodeCtx = 0;
    for (const r of step) {
      if (r.scheduled === 1 && r.generated > 0 && r.computed === r.numTokens - 1) {
        decodes++;
        decodeCtx += r.computed + 1;
      } else {
        this.news[nPrefill] = r.scheduled;
        this.cachedCtx[nPrefill] = r.computed;
        nPrefill++;
      }
    }
    this.stepping = true;
    this.runSteps = 1;
    if (this.fastForward && nPrefill === 0 && this.waiting.length === 0) {
      const k = this.runLength(step);
      if (k > 1) return this.startRun(nowMs, k, decodes, decodeCtx);
    }
    const ms = Math.max(1e-6, this.stepModel.stepS(this.news, this.cachedCtx, nPrefill, decodes, decodeCtx) * 1000);
    this.stats.steps++;
    this.stats.busyMs += ms;
    this.runStartMs = nowMs;
    this.runEndMs = nowMs + ms;
    return ms;
  }

  /**
   * How many pure-decode steps can run as one event: until the first request finishes, until some
   * request completes a block that would enter the cache, and while the free blocks cover every
   * request's growth (so no step of the run would preempt or admit).
   */
  private runLength(step: readonly EngineRequest[]): number {
    const bs = this.blockSize;
    let k = MAX_RUN_STEPS;
    for (const r of step) {
      k = Math.min(k, r.outputTokens - r.generated);
      if (r.cachedUpTo < r.hashBlocks) k = Math.min(k, (r.cachedUpTo + 1) * bs - r.computed);
    }
    if (k <= 1) return 1;
    const need = (steps: number) => {
      let blocks = 0;
      for (const r of step) blocks += Math.max(0, EngineRequest.blocksFor(r.computed + steps, bs) - r.nBlocks);
      return blocks;
    };
    if (need(k) <= this.freeCount) return k;
    let lo = 1;
    let hi = k;
    while (hi - lo > 1) {
      const mid = (lo + hi) >> 1;
      if (need(mid) <= this.freeCount) lo = mid;
      else hi = mid;
    }
    return lo;
  }

  /** Duration of the first `steps` steps of a run, ms (context grows by the batch every step). */
  private runMs(steps: number, batch: number, ctx0: number, untilMs = Infinity): { ms: number; steps: number } {
    let ms = 0;
    for (let i = 0; i < steps; i++) {
      ms += Math.max(1e-6, this.stepModel.stepS(this.noPrefill, this.noPrefill, 0, batch, ctx0 + i * batch) * 1000);
      if (this.runStartMs + ms >= untilMs) return { ms, steps: i + 1 };
    }
    return { ms, steps };
  }

  private startRun(nowMs: number, k: number, batch: number, ctx0: number): number {
    this.runStartMs = nowMs;
    this.runBatch = batch;
    this.runCtx0 = ctx0;
    const { ms } = this.runMs(k, batch, ctx0);
    this.runSteps = k;
    this.runEndMs = nowMs + ms;
    this.stats.steps += k;
    this.stats.busyMs += ms;
    return ms;
  }

  /**
   * Something arrived during a fast-forwarded run: cut the run after the step in progress at `nowMs`.
   * Returns the run's new end time, or −1 when the end does not change.
   */
  interrupt(nowMs: number): number {
    if (!this.stepping || this.runSteps <= 1) return -1;
    const { ms, steps } = this.runMs(this.runSteps, this.runBatch, this.runCtx0, nowMs);
    if (steps >= this.runSteps) return -1;
    this.stats.steps -= this.runSteps - steps;
    this.stats.busyMs -= this.runEndMs - (this.runStartMs + ms);
    this.runSteps = steps;
    this.runEndMs = this.runStartMs + ms;
    return this.runEndMs;
  }

  /** Applies the step's computation: caches full blocks, samples tokens, finishes requests. */
  endStep(nowMs: number, listener: EngineListener): void {
    this.stepping = false;
    if (!this.alive) return;
    const finished = this.finishedScratch;
    finished.length = 0;
    const run = this.runSteps;
    this.runSteps = 1;
    for (const r of this.stepReqs) {
      if (r.gone || r.scheduled === 0) continue;
      if (run > 1) {
        // A fast-forwarded run of decodes: run − 1 tokens sampled and computed before the last step.
        this.grow(r, r.computed + run);
        r.computed += run - 1;
        r.generated += run - 1;
        r.numTokens += run - 1;
      }
      r.computed += r.scheduled;
      r.scheduled = 0;
      this.register(r);
      if (r.computed < r.numTokens) continue;
      // Caught up with every token: sample the next one.
      r.generated++;
      r.numTokens++;
      if (r.generated === 1 && Number.isNaN(r.firstTokenMs)) {
        r.firstTokenMs = nowMs;
        listener.firstToken(r, nowMs);
      }
      if (r.generated >= r.outputTokens) {
        r.gone = true;
        r.finishedMs = nowMs;
        this.release(r);
        this.stats.finished++;
        finished.push(r);
      }
    }
    this.stepReqs.length = 0;
    if (finished.length > 0) {
      this.running = this.running.filter((r) => !r.gone);
      for (const r of finished) listener.finished(r, nowMs);
    }
  }

  /** Drains the index records emitted so far into `out` order; returns them as a copy. */
  takeRecords(): Uint32Array | null {
    if (this.recordCount === 0) return null;
    const out = this.records.slice(0, this.recordCount * RECORD_WORDS);
    this.recordCount = 0;
    return out;
  }

  /**
   * Resets the prefix cache (vLLM's reset_prefix_cache → AllBlocksCleared): every block forgets its
   * hash; blocks in use stay allocated to their requests. Emits CLEAR.
   */
  flushCache(): void {
    for (let b = 0; b < this.kvBlocks; b++) {
      this.blk[b * BLK + HASHED] = 0;
      this.blk[b * BLK + CNEXT] = -1;
    }
    this.buckets.fill(-1);
    this.cacheSize = 0;
    for (const r of this.running) r.cachedUpTo = r.nBlocks;
    this.recordCount = 0; // records not yet published describe a cache that no longer exists
    this.emit(OP_CLEAR, 0, 0);
  }

  /** The process dies: returns every request it held (running first); it accepts nothing more. */
  kill(): EngineRequest[] {
    this.alive = false;
    const out = [...this.running, ...this.waiting.clear()];
    for (const r of out) r.gone = true;
    this.running = [];
    this.stepReqs.length = 0;
    this.recordCount = 0;
    return out;
  }

  /**
   * A request leaves before it finished (its client went away: vLLM aborts it). Its blocks go back to
   * the free queue; blocks it cached stay cached. False when it had already left. A request in the step
   * in flight is skipped by endStep (it is `gone`). Used by the engine emulator (src/emulator/).
   */
  abort(r: EngineRequest): boolean {
    if (r.gone || !this.alive) return false;
    r.gone = true;
    const at = this.running.indexOf(r);
    if (at >= 0) this.running.splice(at, 1);
    else for (const w of this.waiting.clear()) if (w !== r) this.waiting.push(w);
    this.release(r);
    return true;
  }

  /** The load vector as the engine would report it (one reused object: copy if kept). */
  loadReport(): Required<LoadReport> {
    let prefill = 0;
    for (const r of this.running) if (r.generated === 0) prefill += r.numTokens - r.computed;
    for (let i = 0; i < this.waiting.length; i++) {
      const r = this.waiting.at(i);
      prefill += r.numTokens - r.computed;
    }
    this.report.running = this.running.length;
    this.report.waiting = this.waiting.length;
    this.report.prefillTokens = prefill;
    this.report.kvUsage = (this.kvBlocks - this.freeCount) / this.kvBlocks;
    return this.report;
  }

  /** Blocks currently in the prefix cache (referenced or not). */
  cachedBlocks(): number {
    return this.cacheSize;
  }

  /** Whether a hash is cached (tests). */
  isCached(lo: number, hi: number): boolean {
    return this.cached(lo, hi) >= 0;
  }
}
