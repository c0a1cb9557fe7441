/**
 * PrefixIndex: the fleet-wide map from block hash to the replicas holding that block (DESIGN §3),
 * over any kernel backend. Validation happens here (control path); `match` is the hot path: it reads the
 * index, writes into a reusable result and allocates nothing.
 *
 * Single writer: records are applied by the thread that routes, between decisions, so `match` never
 * races with a write and needs no lock.
 */
import { DystroError, fail } from '../errors.js';
import { Status, type KernelBackend, type PrefixIndexHandle } from '../kernels/abi.js';
import { MATCH_STRIDE, MAX_REPLICAS, STATS_LENGTH, STAT_NAMES } from '../kernels/js/prefix-index.js';
import { systemClock, type Clock } from '../clock.js';
import { checkInteger, checkU64 } from '../hashing/validate.js';
import { OP_CLEAR, OP_REMOVE, OP_SPECULATE, OP_STORE, RECORD_WORDS, RecordBuffer, TIER_CPU, TIER_DISK, TIER_GPU } from './records.js';

/** Bytes a (block, replica) entry costs at worst in the kernel's layout: 16-byte slot at 3/4 load, or an 8-byte arena pair at 1/2 use. */
export const BYTES_PER_ENTRY_BUDGET = 24;

/**
 * Most entries an index may be configured for: 2^28 keeps every slot index inside 31 bits in all three
 * backends (a 32-bit WebAssembly memory runs out near 90 M entries first and reports NO_MEMORY).
 */
export const MAX_INDEX_ENTRIES = 2 ** 28;

export interface PrefixIndexOptions {
  /** Most (block, replica) entries kept (default 4,000,000); or give maxBytes. */
  maxEntries?: number;
  /** Memory budget in bytes; converted to entries at BYTES_PER_ENTRY_BUDGET bytes each. */
  maxBytes?: number;
  /** Replica slots (ids 0 … replicaCapacity − 1; default 4,096; at most 1,048,575). */
  replicaCapacity?: number;
  /** Lifetime of speculative entries inserted from routing decisions (ms, default 120,000 as Dynamo). */
  speculativeTtlMs?: number;
  /** Seed of the eviction sampler (default 1). */
  seed?: number;
  clock?: Clock;
}

export type IndexStats = Record<(typeof STAT_NAMES)[number], number>;

export interface IndexEntry {
  hash: bigint;
  replica: number;
  /** Bit mask: 1 GPU, 2 CPU, 4 disk; 0 for a speculative entry. */
  tiers: number;
  speculative: boolean;
}

/** One match's result, reused across calls: entries 0 … count−1 are valid until the next match. */
export class MatchResult {
  count = 0;
  /** MATCH_STRIDE words per replica: [replica, depth, gpu, cpu, disk]. */
  words: Uint32Array;
  constructor(capacity: number) {
    this.words = new Uint32Array(capacity * MATCH_STRIDE);
  }
  replica(i: number): number {
    return this.words[i * MATCH_STRIDE];
  }
  /** Leading blocks held (any tier, speculative included). */
  depth(i: number): number {
    return this.words[i * MATCH_STRIDE + 1];
  }
  gpu(i: number): number {
    return this.words[i * MATCH_STRIDE + 2];
  }
  cpu(i: number): number {
    return this.words[i * MATCH_STRIDE + 3];
  }
  disk(i: number): number {
    return this.words[i * MATCH_STRIDE + 4];
  }
  /** Blocks of the leading run held only speculatively. */
  speculative(i: number): number {
    return this.depth(i) - this.gpu(i) - this.cpu(i) - this.disk(i);
  }
  /** Depth for a replica id (0 when it matched nothing). O(count): for tests and explanations. */
  depthOf(replica: number): number {
    for (let i = 0; i < this.count; i++) if (this.replica(i) === replica) return this.depth(i);
    return 0;
  }
}

export class PrefixIndex {
  readonly kernels: KernelBackend;
  readonly replicaCapacity: number;
  readonly maxEntries: number;
  readonly speculativeTtlMs: number;
  private readonly clock: Clock;
  private handle: PrefixIndexHandle | null;
  private readonly scratch = new RecordBuffer(64);
  private readonly statsBuf = new Float64Array(STATS_LENGTH);

  constructor(kernels: KernelBackend, options: PrefixIndexOptions = {}) {
    this.kernels = kernels;
    if (options.maxEntries !== undefined && options.maxBytes !== undefined) {
      fail('DYSTRO_ERR_INVALID_CONFIG', 'options', 'either maxEntries or maxBytes, not both', options);
    }
    const maxEntries =
      options.maxBytes !== undefined
        ? Math.floor(checkInteger(options.maxBytes, 'options.maxBytes', 1024, 2 ** 40, 'DYSTRO_ERR_INVALID_CONFIG') / BYTES_PER_ENTRY_BUDGET)
        : checkInteger(options.maxEntries ?? 4_000_000, 'options.maxEntries', 1, MAX_INDEX_ENTRIES, 'DYSTRO_ERR_INVALID_CONFIG');
    if (maxEntries > MAX_INDEX_ENTRIES) fail('DYSTRO_ERR_INVALID_CONFIG', 'options.maxBytes', `at most ${MAX_INDEX_ENTRIES * BYTES_PER_ENTRY_BUDGET} bytes`, options.maxBytes);
    this.maxEntries = maxEntries;
    this.replicaCapacity = checkInteger(options.replicaCapacity ?? 4096, 'options.replicaCapacity', 1, MAX_REPLICAS, 'DYSTRO_ERR_INVALID_CONFIG');
    this.speculativeTtlMs = checkInteger(options.speculativeTtlMs ?? 120_000, 'options.speculativeTtlMs', 1, 2 ** 31 - 1, 'DYSTRO_ERR_INVALID_CONFIG');
    const seed = checkInteger(options.seed ?? 1, 'options.seed', 0, 0xffffffff, 'DYSTRO_ERR_INVALID_CONFIG');
    this.clock = options.clock ?? systemClock;
    this.handle = kernels.indexCreate({ maxEntries, replicaCapacity: this.replicaCapacity, seed, ttlMs: this.speculativeTtlMs });
  }

  private live(): PrefixIndexHandle {
    if (!this.handle) throw new DystroError('DYSTRO_ERR_TABLE_FREED', 'This prefix index was freed');
    return this.handle;
  }

  /** The clock reading the kernel sees: wrapping u32 milliseconds. */
  nowStamp(): number {
    return Math.floor(this.clock.nowMs()) >>> 0;
  }

  private checkReplica(replica: number): void {
    if (!Number.isInteger(replica) || replica < 0 || replica >= this.replicaCapacity) {
      fail('DYSTRO_ERR_UNKNOWN_REPLICA', 'replica', `a replica slot in 0 … ${this.replicaCapacity - 1}`, replica);
    }
  }

  /**
   * Applies `count` records (4 words each, see records.ts). Records come from our own ingestion; an
   * invalid one (bad op, tier or replica) is a typed error and the records before it stay applied.
   */
  apply(records: Uint32Array, count = records.length / RECORD_WORDS): void {
    if (count === 0) return;
    const r = this.kernels.indexApply(this.live(), records, count, this.nowStamp());
    if (r === Status.NO_MEMORY) {
      throw new DystroError('DYSTRO_ERR_OUT_OF_MEMORY', `The ${this.kernels.name} index could not grow its memory (maxEntries ${this.maxEntries}); records before the failing one were applied. Lower maxEntries or maxBytes.`, { status: r });
    }
    if (r !== count) {
      throw new DystroError('DYSTRO_ERR_INVALID_RECORD', `The index refused a record batch (status ${r}): ops are 1…4, tiers 0…2, replicas < ${this.replicaCapacity}`, { status: r });
    }
  }

  private one(op: number, tier: number, replica: number, hashes: ArrayLike<bigint>): void {
    this.checkReplica(replica);
    this.scratch.clear();
    for (let i = 0; i < hashes.length; i++) this.scratch.push(op, tier, replica, checkU64(hashes[i], `hashes[${i}]`));
    this.apply(this.scratch.words, this.scratch.count);
  }

  /** Records that `replica` holds these blocks on `tier` (precise, from engine events). */
  store(replica: number, hashes: ArrayLike<bigint>, tier: 'gpu' | 'cpu' | 'disk' = 'gpu'): void {
    this.one(OP_STORE, tier === 'gpu' ? TIER_GPU : tier === 'cpu' ? TIER_CPU : TIER_DISK, replica, hashes);
  }

  remove(replica: number, hashes: ArrayLike<bigint>, tier: 'gpu' | 'cpu' | 'disk' = 'gpu'): void {
    this.one(OP_REMOVE, tier === 'gpu' ? TIER_GPU : tier === 'cpu' ? TIER_CPU : TIER_DISK, replica, hashes);
  }

  /** The router sent these blocks to `replica`: speculative entries until events confirm or they expire. */
  speculate(replica: number, hashes: ArrayLike<bigint>): void {
    this.one(OP_SPECULATE, 0, replica, hashes);
  }

  /** Forgets everything `replica` holds (AllBlocksCleared, restart, sequence reset): O(1). */
  clear(replica: number): void {
    this.one(OP_CLEAR, 0, replica, [0n]);
  }

  /** Hot path: leading blocks each replica holds for this chain. Allocates nothing. */
  match(hashes: BigUint64Array, out: MatchResult, count = hashes.length): MatchResult {
    const n = this.kernels.indexMatch(this.live(), hashes, count, this.nowStamp(), out.words);
    if (n === Status.OUT_TOO_SMALL) {
      // A result sized below the replica capacity: grow it once (control-path allocation) and retry.
      out.words = new Uint32Array(this.replicaCapacity * MATCH_STRIDE);
      return this.match(hashes, out, count);
    }
    out.count = n < 0 ? 0 : n;
    return out;
  }

  /** A result buffer large enough for any match of this index. */
  newMatchResult(): MatchResult {
    return new MatchResult(this.replicaCapacity);
  }

  stats(): IndexStats {
    this.kernels.indexStats(this.live(), this.statsBuf);
    const s = {} as IndexStats;
    STAT_NAMES.forEach((name, i) => (s[name] = this.statsBuf[i]));
    return s;
  }

  /** Every live entry, sorted by hash then replica (control path). */
  dump(): IndexEntry[] {
    const w = this.kernels.indexDump(this.live(), this.nowStamp());
    const out: IndexEntry[] = [];
    for (let i = 0; i < w.length; i += 4) {
      out.push({ hash: (BigInt(w[i + 1]) << 32n) | BigInt(w[i]), replica: w[i + 2], tiers: w[i + 3] & 7, speculative: (w[i + 3] & 8) !== 0 });
    }
    return out.sort((a, b) => (a.hash < b.hash ? -1 : a.hash > b.hash ? 1 : a.replica - b.replica));
  }

  free(): void {
    if (this.handle) this.kernels.indexFree(this.handle);
    this.handle = null;
  }
}
