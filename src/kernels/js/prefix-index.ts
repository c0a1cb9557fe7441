/**
 * The fleet prefix-cache index, TypeScript implementation. This file is the executable specification
 * of the index kernel: the wasm (assembly/prefix-index.ts) and native (native/prefix_index.cc) backends
 * implement exactly these data structures and steps, so that all three give identical results for the
 * same operation sequence, eviction included. (The simple, obviously correct model the tests compare
 * against is test/helpers/index-model.ts; this file is a backend.)
 *
 * What it stores: for each block hash (the router's own chained XXH64, u64), the replicas that hold the
 * block, each with a tier mask (GPU, CPU, disk, from engine events: precise) or a speculative flag
 * (inserted by the router when it routes a prompt, with an expiry), a stamp and the replica's epoch.
 *
 * Layout (DESIGN §3; ≤ 32 bytes per (block, replica) entry):
 * - Block table: open addressing with linear probing, `cap` slots (a power of two), 16 bytes each:
 *   key (u64: lo, hi), `a` and `b` (u32). Empty slot: a = EMPTY. Home slot of a key:
 *   imul(lo ^ hi, 0x9E3779B1) >>> (32 − log2 cap) (Fibonacci hashing). Deletion is by backward shift, so
 *   there are no tombstones and probe runs stay short.
 * - One holder inline (the common case, a block held by a single replica): a = holder word (top bit 0),
 *   b = stamp. Two or more: a = 0x80000000 | chunk (pair index into the arena), b = count | class << 24,
 *   and the holders live in an arena chunk of 2^class (word, stamp) pairs, in insertion order;
 *   removal moves the last holder into the gap. Back to one holder → inline again, chunk freed.
 * - Holder word: replica id (bits 0–19), tier mask (bits 20–22: GPU 1, CPU 2, disk 4), speculative
 *   (bit 23), epoch (bits 24–30) — the replica's epoch when written.
 * - Stamp (u32 milliseconds of the caller's clock, wrapping; compared as signed differences): for a
 *   precise entry the time it was last stored or touched (LRU); for a speculative one its expiry.
 * - Arena: u32 pairs; chunk classes 1 … 20 (2 … 2^20 pairs); freed chunks go on a LIFO free list per
 *   class (the first word of a free chunk holds the next free chunk + 1, 0 ends the list); otherwise
 *   chunks are cut from the top (`arenaTop`). The arena doubles when it runs out (contents kept).
 *
 * Liveness: a holder is live when its epoch equals the replica's current epoch and it has a tier bit,
 * or it is speculative and not expired (stamp − now > 0 as a signed 32-bit difference). Wiping a
 * replica (AllBlocksCleared, restart, sequence reset) bumps its epoch: O(1), every entry of the replica
 * is dead at once and is removed lazily (when its slot is written, or by eviction). After 127 wipes
 * without a sweep a full sweep removes the replica's dead entries so a 7-bit epoch never wraps onto
 * them.
 *
 * Memory budget: at most `maxEntries` holders are stored (dead ones included). A new holder when the
 * index is full first evicts one: sampled eviction (as Redis does): 16 probes at slots drawn from the
 * index's own xorshift32 generator, each scanning forward to the next occupied slot; among the holders
 * seen, the victim is the first of the best class — dead (stale epoch or expired speculative) >
 * speculative > precise — and within a class the oldest stamp (signed difference to now). The table
 * doubles when blocks would exceed 3/4 of cap (rehash in slot order), up to the size the budget needs.
 *
 * Records (`apply`): 4 u32 words each: [op | tier << 8, replica, hash lo, hash hi]; op STORE = 1,
 * REMOVE = 2, CLEAR (replica; hash ignored) = 3, SPECULATE = 4 (tier ignored; expiry = now + ttlMs).
 */
import { Status } from '../abi.js';

export const OP_STORE = 1;
export const OP_REMOVE = 2;
export const OP_CLEAR = 3;
export const OP_SPECULATE = 4;
export const RECORD_WORDS = 4;

export const TIER_GPU = 0;
export const TIER_CPU = 1;
export const TIER_DISK = 2;

/** Largest replica id + 1 (20 bits, 0xFFFFF reserved). */
export const MAX_REPLICAS = 0xfffff;
export const MATCH_STRIDE = 5; // [replica, depth, gpu, cpu, disk] per matched replica; spec = depth − the rest

const EMPTY = 0xffffffff;
const OVERFLOW = 0x80000000;
const REPLICA_MASK = 0xfffff;
const TIER_SHIFT = 20;
const SPEC_BIT = 1 << 23;
const EPOCH_SHIFT = 24;
const EPOCH_MASK = 0x7f;
const SAMPLES = 16;
const MAX_CLASS = 20;
const WIPES_BEFORE_SWEEP = 127;
const MIN_CAP = 1024;

export interface IndexConfig {
  /** Most (block, replica) holders stored; beyond it the index evicts. */
  maxEntries: number;
  /** Replica ids are 0 … replicaCapacity − 1. */
  replicaCapacity: number;
  /** Seed of the eviction sampler. */
  seed: number;
  /** Time to live of speculative entries (ms). */
  ttlMs: number;
}

/** Stats layout (Float64Array of STATS_LENGTH): see statNames. */
export const STAT_NAMES = ['entries', 'blocks', 'slots', 'arenaPairs', 'bytes', 'evictions', 'deadRemoved', 'sweeps', 'speculative'] as const;
export const STATS_LENGTH = STAT_NAMES.length;

function tierBits(w: number): number {
  return (w >>> TIER_SHIFT) & 7;
}

/** Signed 32-bit difference a − b of two wrapping millisecond stamps. */
function age(now: number, stamp: number): number {
  return (now - stamp) | 0;
}

export class JsPrefixIndex {
  readonly config: IndexConfig;
  private cap: number;
  private shift: number;
  private keyLo: Uint32Array;
  private keyHi: Uint32Array;
  private slotA: Uint32Array;
  private slotB: Uint32Array;
  private arena: Uint32Array;
  private arenaTop = 0;
  private readonly freeHead = new Uint32Array(MAX_CLASS + 1);
  private readonly epoch: Uint8Array;
  private readonly wipes: Uint8Array;
  private readonly maxCap: number;
  private rng: number;
  // match scratch: depth reached by replica r in the current match, valid when gen[r] === matchGen
  private readonly depth: Uint32Array;
  private readonly gen: Uint32Array;
  private readonly tierCount: Uint32Array; // 3 per replica
  private matchGen = 0;
  entries = 0;
  blocks = 0;
  evictions = 0;
  deadRemoved = 0;
  sweeps = 0;
  speculative = 0;

  constructor(config: IndexConfig) {
    this.config = config;
    // The table never needs more slots than the budget's holders at 3/4 load.
    this.maxCap = Math.max(MIN_CAP, 2 ** Math.ceil(Math.log2((config.maxEntries * 4) / 3 + 1)));
    this.cap = MIN_CAP;
    this.shift = 32 - Math.log2(this.cap);
    this.keyLo = new Uint32Array(this.cap);
    this.keyHi = new Uint32Array(this.cap);
    this.slotA = new Uint32Array(this.cap).fill(EMPTY);
    this.slotB = new Uint32Array(this.cap);
    this.arena = new Uint32Array(2048);
    this.epoch = new Uint8Array(config.replicaCapacity);
    this.wipes = new Uint8Array(config.replicaCapacity);
    this.depth = new Uint32Array(config.replicaCapacity);
    this.gen = new Uint32Array(config.replicaCapacity);
    this.tierCount = new Uint32Array(config.replicaCapacity * 3);
    this.rng = config.seed >>> 0 || 0x9e3779b9;
  }

  private home(lo: number, hi: number): number {
    return Math.imul(lo ^ hi, 0x9e3779b1) >>> this.shift;
  }

  /** Slot holding the key, or −1. */
  private find(lo: number, hi: number): number {
    const mask = this.cap - 1;
    let s = this.home(lo, hi);
    for (;;) {
      const a = this.slotA[s];
      if (a === EMPTY) return -1;
      if (this.keyLo[s] === lo && this.keyHi[s] === hi) return s;
      s = (s + 1) & mask;
    }
  }

  private nextRandom(): number {
    let x = this.rng;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.rng = x >>> 0;
    return this.rng;
  }

  private isLive(w: number, stamp: number, now: number): boolean {
    if (((w >>> EPOCH_SHIFT) & EPOCH_MASK) !== this.epoch[w & REPLICA_MASK]) return false;
    if (tierBits(w) !== 0) return true;
    return (w & SPEC_BIT) !== 0 && age(now, stamp) < 0;
  }

  private word(replica: number, tiers: number, spec: boolean): number {
    return (replica | (tiers << TIER_SHIFT) | (spec ? SPEC_BIT : 0) | (this.epoch[replica] << EPOCH_SHIFT)) >>> 0;
  }

  // ---------- arena ----------

  private allocChunk(cls: number): number {
    const head = this.freeHead[cls];
    if (head !== 0) {
      const chunk = head - 1;
      this.freeHead[cls] = this.arena[chunk * 2];
      return chunk;
    }
    const pairs = 1 << cls;
    while ((this.arenaTop + pairs) * 2 > this.arena.length) {
      const bigger = new Uint32Array(this.arena.length * 2);
      bigger.set(this.arena);
      this.arena = bigger;
    }
    const chunk = this.arenaTop;
    this.arenaTop += pairs;
    return chunk;
  }

  private freeChunk(chunk: number, cls: number): void {
    this.arena[chunk * 2] = this.freeHead[cls];
    this.freeHead[cls] = chunk + 1;
  }

  // ---------- holders of one slot ----------

  /** Number of holders in slot s. */
  private count(s: number): number {
    const a = this.slotA[s];
    return (a & OVERFLOW) === 0 ? 1 : this.slotB[s] & 0xffffff;
  }

  /** Position of replica r among the slot's holders, or −1. */
  private holderOf(s: number, r: number): number {
    const a = this.slotA[s];
    if ((a & OVERFLOW) === 0) return (a & REPLICA_MASK) === r ? 0 : -1;
    const chunk = a & ~OVERFLOW;
    const n = this.slotB[s] & 0xffffff;
    for (let i = 0; i < n; i++) if ((this.arena[(chunk + i) * 2] & REPLICA_MASK) === r) return i;
    return -1;
  }

  private getWord(s: number, i: number): number {
    const a = this.slotA[s];
    return (a & OVERFLOW) === 0 ? a : this.arena[((a & ~OVERFLOW) + i) * 2];
  }

  private getStamp(s: number, i: number): number {
    const a = this.slotA[s];
    return (a & OVERFLOW) === 0 ? this.slotB[s] : this.arena[((a & ~OVERFLOW) + i) * 2 + 1];
  }

  private setHolder(s: number, i: number, w: number, stamp: number): void {
    const a = this.slotA[s];
    if ((a & OVERFLOW) === 0) {
      this.slotA[s] = w;
      this.slotB[s] = stamp >>> 0;
    } else {
      const at = ((a & ~OVERFLOW) + i) * 2;
      this.arena[at] = w;
      this.arena[at + 1] = stamp >>> 0;
    }
  }

  /** Appends a holder to an occupied slot (inline → chunk of 2, full chunk → next class). */
  private appendHolder(s: number, w: number, stamp: number): void {
    const a = this.slotA[s];
    if ((a & OVERFLOW) === 0) {
      const chunk = this.allocChunk(1);
      this.arena[chunk * 2] = a;
      this.arena[chunk * 2 + 1] = this.slotB[s];
      this.arena[chunk * 2 + 2] = w;
      this.arena[chunk * 2 + 3] = stamp >>> 0;
      this.slotA[s] = (OVERFLOW | chunk) >>> 0;
      this.slotB[s] = (2 | (1 << 24)) >>> 0;
      return;
    }
    let chunk = a & ~OVERFLOW;
    const n = this.slotB[s] & 0xffffff;
    let cls = this.slotB[s] >>> 24;
    if (n === 1 << cls) {
      const bigger = this.allocChunk(cls + 1);
      this.arena.copyWithin(bigger * 2, chunk * 2, (chunk + n) * 2);
      this.freeChunk(chunk, cls);
      chunk = bigger;
      cls += 1;
      this.slotA[s] = (OVERFLOW | chunk) >>> 0;
    }
    this.arena[(chunk + n) * 2] = w;
    this.arena[(chunk + n) * 2 + 1] = stamp >>> 0;
    this.slotB[s] = ((n + 1) | (cls << 24)) >>> 0;
  }

  /** Removes holder i of slot s; removes the block (backward shift) when it was the last one. */
  private removeHolder(s: number, i: number): void {
    const w = this.getWord(s, i);
    if ((w & SPEC_BIT) !== 0 && tierBits(w) === 0) this.speculative--;
    this.entries--;
    const a = this.slotA[s];
    if ((a & OVERFLOW) === 0) {
      this.removeSlot(s);
      return;
    }
    const chunk = a & ~OVERFLOW;
    const n = this.slotB[s] & 0xffffff;
    const cls = this.slotB[s] >>> 24;
    const last = n - 1;
    if (i !== last) {
      this.arena[(chunk + i) * 2] = this.arena[(chunk + last) * 2];
      this.arena[(chunk + i) * 2 + 1] = this.arena[(chunk + last) * 2 + 1];
    }
    if (last === 1) {
      this.slotA[s] = this.arena[chunk * 2];
      this.slotB[s] = this.arena[chunk * 2 + 1];
      this.freeChunk(chunk, cls);
    } else {
      this.slotB[s] = (last | (cls << 24)) >>> 0;
    }
  }

  /** Empties slot s and shifts the following run back (linear-probing deletion without tombstones). */
  private removeSlot(s: number): void {
    const mask = this.cap - 1;
    this.blocks--;
    let hole = s;
    let j = s;
    for (;;) {
      j = (j + 1) & mask;
      if (this.slotA[j] === EMPTY) break;
      const h = this.home(this.keyLo[j], this.keyHi[j]);
      // Move j into the hole unless its home lies cyclically in (hole, j].
      const inRange = hole <= j ? hole < h && h <= j : hole < h || h <= j;
      if (inRange) continue;
      this.keyLo[hole] = this.keyLo[j];
      this.keyHi[hole] = this.keyHi[j];
      this.slotA[hole] = this.slotA[j];
      this.slotB[hole] = this.slotB[j];
      hole = j;
    }
    this.slotA[hole] = EMPTY;
  }

  /** Inserts a new block with one holder; the key must be absent. Returns its slot. */
  private insertSlot(lo: number, hi: number, w: number, stamp: number): number {
    if ((this.blocks + 1) * 4 > this.cap * 3 && this.cap < this.maxCap) this.grow();
    const mask = this.cap - 1;
    let s = this.home(lo, hi);
    while (this.slotA[s] !== EMPTY) s = (s + 1) & mask;
    this.keyLo[s] = lo;
    this.keyHi[s] = hi;
    this.slotA[s] = w;
    this.slotB[s] = stamp >>> 0;
    this.blocks++;
    return s;
  }

  private grow(): void {
    const oldLo = this.keyLo;
    const oldHi = this.keyHi;
    const oldA = this.slotA;
    const oldB = this.slotB;
    const oldCap = this.cap;
    this.cap *= 2;
    this.shift -= 1;
    this.keyLo = new Uint32Array(this.cap);
    this.keyHi = new Uint32Array(this.cap);
    this.slotA = new Uint32Array(this.cap).fill(EMPTY);
    this.slotB = new Uint32Array(this.cap);
    const mask = this.cap - 1;
    for (let i = 0; i < oldCap; i++) {
      if (oldA[i] === EMPTY) continue;
      let s = this.home(oldLo[i], oldHi[i]);
      while (this.slotA[s] !== EMPTY) s = (s + 1) & mask;
      this.keyLo[s] = oldLo[i];
      this.keyHi[s] = oldHi[i];
      this.slotA[s] = oldA[i];
      this.slotB[s] = oldB[i];
    }
  }

  // ---------- eviction ----------

  /** Class of a holder for eviction: 0 dead, 1 speculative, 2 precise. */
  private evictClass(w: number, stamp: number, now: number): number {
    if (!this.isLive(w, stamp, now)) return 0;
    return tierBits(w) === 0 ? 1 : 2;
  }

  /** Evicts one holder chosen by sampling (the index is not empty). */
  private evictOne(now: number): void {
    const mask = this.cap - 1;
    let bestSlot = -1;
    let bestIdx = -1;
    let bestClass = 3;
    let bestAge = 0;
    for (let k = 0; k < SAMPLES; k++) {
      let s = this.nextRandom() & mask;
      while (this.slotA[s] === EMPTY) s = (s + 1) & mask;
      const n = this.count(s);
      for (let i = 0; i < n; i++) {
        const w = this.getWord(s, i);
        const st = this.getStamp(s, i);
        const c = this.evictClass(w, st, now);
        const ag = age(now, st);
        if (c < bestClass || (c === bestClass && ag > bestAge)) {
          bestClass = c;
          bestAge = ag;
          bestSlot = s;
          bestIdx = i;
        }
      }
    }
    if (bestClass === 0) this.deadRemoved++;
    else this.evictions++;
    this.removeHolder(bestSlot, bestIdx);
  }

  /** Makes room for one more holder. */
  private reserve(now: number): void {
    while (this.entries >= this.config.maxEntries && this.entries > 0) this.evictOne(now);
  }

  // ---------- operations ----------

  private store(replica: number, tier: number, lo: number, hi: number, now: number): void {
    const bit = 1 << tier;
    let s = this.find(lo, hi);
    if (s >= 0) {
      const i = this.holderOf(s, replica);
      if (i >= 0) {
        const w = this.getWord(s, i);
        const st = this.getStamp(s, i);
        if (!this.isLive(w, st, now)) {
          if ((w & SPEC_BIT) !== 0 && tierBits(w) === 0) this.speculative--;
          this.deadRemoved++;
          this.setHolder(s, i, this.word(replica, bit, false), now);
        } else {
          if ((w & SPEC_BIT) !== 0 && tierBits(w) === 0) this.speculative--;
          this.setHolder(s, i, this.word(replica, tierBits(w) | bit, false), now);
        }
        return;
      }
    }
    this.reserve(now);
    this.entries++;
    s = this.find(lo, hi); // eviction may have moved or removed the block
    if (s < 0) this.insertSlot(lo, hi, this.word(replica, bit, false), now);
    else this.appendHolder(s, this.word(replica, bit, false), now);
  }

  private remove(replica: number, tier: number, lo: number, hi: number, now: number): void {
    const s = this.find(lo, hi);
    if (s < 0) return;
    const i = this.holderOf(s, replica);
    if (i < 0) return;
    const w = this.getWord(s, i);
    const st = this.getStamp(s, i);
    if (!this.isLive(w, st, now)) {
      this.deadRemoved++;
      this.removeHolder(s, i);
      return;
    }
    const left = tierBits(w) & ~(1 << tier);
    if (left === 0) this.removeHolder(s, i);
    else this.setHolder(s, i, this.word(replica, left, false), st);
  }

  private speculate(replica: number, lo: number, hi: number, now: number): void {
    const expiry = (now + this.config.ttlMs) >>> 0;
    let s = this.find(lo, hi);
    if (s >= 0) {
      const i = this.holderOf(s, replica);
      if (i >= 0) {
        const w = this.getWord(s, i);
        const st = this.getStamp(s, i);
        const live = this.isLive(w, st, now);
        if (live && tierBits(w) !== 0) {
          this.setHolder(s, i, w, now); // precise: a routing decision counts as a use (LRU)
        } else {
          if (!live) {
            this.deadRemoved++;
            if ((w & SPEC_BIT) === 0 || tierBits(w) !== 0) this.speculative++;
          }
          this.setHolder(s, i, this.word(replica, 0, true), expiry);
        }
        return;
      }
    }
    this.reserve(now);
    this.entries++;
    this.speculative++;
    s = this.find(lo, hi);
    if (s < 0) this.insertSlot(lo, hi, this.word(replica, 0, true), expiry);
    else this.appendHolder(s, this.word(replica, 0, true), expiry);
  }

  private clear(replica: number): void {
    this.epoch[replica] = (this.epoch[replica] + 1) & EPOCH_MASK;
    this.wipes[replica]++;
    if (this.wipes[replica] >= WIPES_BEFORE_SWEEP) this.sweep(replica);
  }

  /** Removes every dead holder of one replica (whole-table pass; rare: once per 127 wipes). */
  private sweep(replica: number): void {
    this.sweeps++;
    this.wipes[replica] = 0;
    const cur = this.epoch[replica];
    let s = 0;
    while (s < this.cap) {
      if (this.slotA[s] === EMPTY) {
        s++;
        continue;
      }
      let removed = false;
      const n = this.count(s);
      for (let i = n - 1; i >= 0; i--) {
        const w = this.getWord(s, i);
        if ((w & REPLICA_MASK) === replica && ((w >>> EPOCH_SHIFT) & EPOCH_MASK) !== cur) {
          this.deadRemoved++;
          const wasLast = this.count(s) === 1;
          this.removeHolder(s, i);
          if (wasLast) {
            removed = true;
            break;
          }
        }
      }
      // A backward shift may have moved a later block into s: look at s again.
      if (!removed) s++;
    }
  }

  /**
   * Applies `count` records (4 words each). Returns the number applied, or BAD_ARG when a record has
   * an unknown op, tier or an out-of-range replica (records before it stay applied; the host validates
   * records before they reach the kernel, so this only guards memory safety).
   */
  apply(records: Uint32Array, count: number, now: number): number {
    if (count * RECORD_WORDS > records.length) return Status.BAD_ARG;
    now >>>= 0;
    for (let k = 0; k < count; k++) {
      const at = k * RECORD_WORDS;
      const op = records[at] & 0xff;
      const tier = (records[at] >>> 8) & 0xff;
      const replica = records[at + 1];
      const lo = records[at + 2];
      const hi = records[at + 3];
      if (replica >= this.config.replicaCapacity || tier > TIER_DISK) return Status.BAD_ARG;
      if (op === OP_STORE) this.store(replica, tier, lo, hi, now);
      else if (op === OP_REMOVE) this.remove(replica, tier, lo, hi, now);
      else if (op === OP_CLEAR) this.clear(replica);
      else if (op === OP_SPECULATE) this.speculate(replica, lo, hi, now);
      else return Status.BAD_ARG;
    }
    return count;
  }

  /**
   * For each replica holding block 0 of the chain, the number of leading blocks it holds (live), and
   * how many of those it holds on GPU, CPU, disk (best tier of each block; the rest are speculative).
   * Writes MATCH_STRIDE words per replica into `out` (order unspecified) and returns the number of
   * replicas, or OUT_TOO_SMALL. Reads only: the hot path never mutates the index.
   */
  match(hashes: BigUint64Array, count: number, now: number, out: Uint32Array): number {
    now >>>= 0;
    if (count === 0) return 0;
    const s0 = this.find(Number(hashes[0] & 0xffffffffn), Number(hashes[0] >> 32n));
    if (s0 < 0) return 0;
    const gen = (this.matchGen = (this.matchGen + 1) >>> 0);
    if (gen === 0) {
      this.gen.fill(0);
      this.matchGen = 1;
    }
    const g = this.matchGen;
    // Block 0: every live holder starts with depth 1.
    let found = 0;
    const n0 = this.count(s0);
    for (let i = 0; i < n0; i++) {
      const w = this.getWord(s0, i);
      if (!this.isLive(w, this.getStamp(s0, i), now)) continue;
      const r = w & REPLICA_MASK;
      if ((found + 1) * MATCH_STRIDE > out.length) return Status.OUT_TOO_SMALL;
      out[found * MATCH_STRIDE] = r;
      found++;
      this.gen[r] = g;
      this.depth[r] = 1;
      this.tierCount[r * 3] = 0;
      this.tierCount[r * 3 + 1] = 0;
      this.tierCount[r * 3 + 2] = 0;
      this.countTier(r, tierBits(w));
    }
    // Blocks 1 …: a replica advances only if it held every block before; stop when nobody advances.
    let active = found;
    for (let b = 1; b < count && active > 0; b++) {
      const h = hashes[b];
      const s = this.find(Number(h & 0xffffffffn), Number(h >> 32n));
      if (s < 0) break;
      active = 0;
      const n = this.count(s);
      for (let i = 0; i < n; i++) {
        const w = this.getWord(s, i);
        const r = w & REPLICA_MASK;
        if (this.gen[r] !== g || this.depth[r] !== b) continue;
        if (!this.isLive(w, this.getStamp(s, i), now)) continue;
        this.depth[r] = b + 1;
        this.countTier(r, tierBits(w));
        active++;
      }
    }
    for (let k = 0; k < found; k++) {
      const r = out[k * MATCH_STRIDE];
      out[k * MATCH_STRIDE + 1] = this.depth[r];
      out[k * MATCH_STRIDE + 2] = this.tierCount[r * 3];
      out[k * MATCH_STRIDE + 3] = this.tierCount[r * 3 + 1];
      out[k * MATCH_STRIDE + 4] = this.tierCount[r * 3 + 2];
    }
    return found;
  }

  private countTier(r: number, tiers: number): void {
    if ((tiers & 1) !== 0) this.tierCount[r * 3]++;
    else if ((tiers & 2) !== 0) this.tierCount[r * 3 + 1]++;
    else if ((tiers & 4) !== 0) this.tierCount[r * 3 + 2]++;
  }

  /** Fills `out` (STATS_LENGTH doubles) with the counters named in STAT_NAMES. */
  stats(out: Float64Array): void {
    out[0] = this.entries;
    out[1] = this.blocks;
    out[2] = this.cap;
    out[3] = this.arenaTop;
    // Table 16 B a slot, arena 8 B a pair, per-replica arrays (epoch, wipes, depth, gen, 3 counts).
    out[4] = this.cap * 16 + this.arena.length * 4 + this.config.replicaCapacity * (2 + 4 + 4 + 12);
    out[5] = this.evictions;
    out[6] = this.deadRemoved;
    out[7] = this.sweeps;
    out[8] = this.speculative;
  }

  /**
   * Every live holder as 4 words [hash lo, hash hi, replica, tiers | speculative << 3], in slot order
   * then holder order (control path: tests and debugging).
   */
  dump(now: number): Uint32Array {
    now >>>= 0;
    const words: number[] = [];
    for (let s = 0; s < this.cap; s++) {
      if (this.slotA[s] === EMPTY) continue;
      const n = this.count(s);
      for (let i = 0; i < n; i++) {
        const w = this.getWord(s, i);
        if (!this.isLive(w, this.getStamp(s, i), now)) continue;
        words.push(this.keyLo[s], this.keyHi[s], w & REPLICA_MASK, tierBits(w) | ((w & SPEC_BIT) !== 0 && tierBits(w) === 0 ? 8 : 0));
      }
    }
    return Uint32Array.from(words);
  }
}
