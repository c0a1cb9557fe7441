/**
 * Block-hash tables for the simulator: a map from a 64-bit block hash (as its two u32 halves) to an int,
 * and an LRU set of block hashes built on it. The simulated engines' prefix caches and the offline
 * hit-rate ceilings hold millions of hashes; a JS Map keyed by bigint (or by doubles above 2^31, which
 * V8 boxes) costs several times the memory and time of this open-addressing table over a typed array.
 *
 * Open addressing with linear probing and backward-shift deletion (Knuth, TAOCP vol. 3, §6.4,
 * Algorithm R), so there are no tombstones and a long run of inserts and deletes (an engine's cache
 * churning for an hour of trace) never degrades the probe lengths. Load factor at most 1/2. Each slot
 * is three consecutive words [lo, hi, value + 1] (0 = empty), so a probe touches one cache line, not
 * one per field: the tables are far larger than the CPU caches and misses are their whole cost.
 */

const STRIDE = 3;

/** Fibonacci hashing of the two halves (Knuth's multiplicative method): good spread even for small test hashes. */
function slotOf(lo: number, hi: number, shift: number): number {
  return Math.imul(lo ^ Math.imul(hi, 0x85ebca6b), 0x9e3779b1) >>> shift;
}

export class BlockHashTable {
  /** STRIDE words per slot: key lo, key hi (as int32), value + 1 (0 marks an empty slot). */
  private words: Int32Array;
  private mask: number;
  private shift: number;
  /** Entries stored. */
  size = 0;

  /** `expected`: entries it should hold without growing. */
  constructor(expected = 1024) {
    let bits = 4;
    while (1 << bits < expected * 2) bits++;
    this.words = new Int32Array((1 << bits) * STRIDE);
    this.mask = (1 << bits) - 1;
    this.shift = 32 - bits;
  }

  /** The value stored for a hash, or −1. */
  get(lo: number, hi: number): number {
    const w = this.words;
    const mask = this.mask;
    const l = lo | 0;
    const h = hi | 0;
    let i = slotOf(l, h, this.shift);
    for (;;) {
      const at = i * STRIDE;
      const v = w[at + 2];
      if (v === 0) return -1;
      if (w[at] === l && w[at + 1] === h) return v - 1;
      i = (i + 1) & mask;
    }
  }

  /** Inserts or overwrites. `value` must be in 0 … 2^31 − 2. */
  set(lo: number, hi: number, value: number): void {
    if ((this.size + 1) * 2 > this.mask + 1) this.grow();
    const w = this.words;
    const mask = this.mask;
    const l = lo | 0;
    const h = hi | 0;
    let i = slotOf(l, h, this.shift);
    for (;;) {
      const at = i * STRIDE;
      if (w[at + 2] === 0) {
        w[at] = l;
        w[at + 1] = h;
        w[at + 2] = value + 1;
        this.size++;
        return;
      }
      if (w[at] === l && w[at + 1] === h) {
        w[at + 2] = value + 1;
        return;
      }
      i = (i + 1) & mask;
    }
  }

  /**
   * Inserts `value` unless the hash is present; returns the value already stored, or −1 when it
   * inserted (one probe where get-then-set takes two).
   */
  insertIfAbsent(lo: number, hi: number, value: number): number {
    if ((this.size + 1) * 2 > this.mask + 1) this.grow();
    const w = this.words;
    const mask = this.mask;
    const l = lo | 0;
    const h = hi | 0;
    let i = slotOf(l, h, this.shift);
    for (;;) {
      const at = i * STRIDE;
      const v = w[at + 2];
      if (v === 0) {
        w[at] = l;
        w[at + 1] = h;
        w[at + 2] = value + 1;
        this.size++;
        return -1;
      }
      if (w[at] === l && w[at + 1] === h) return v - 1;
      i = (i + 1) & mask;
    }
  }

  /** Removes a hash; returns its value or −1 when absent. */
  delete(lo: number, hi: number): number {
    const w = this.words;
    const mask = this.mask;
    const shift = this.shift;
    const l = lo | 0;
    const h = hi | 0;
    let i = slotOf(l, h, shift);
    for (;;) {
      const at = i * STRIDE;
      if (w[at + 2] === 0) return -1;
      if (w[at] === l && w[at + 1] === h) break;
      i = (i + 1) & mask;
    }
    const removed = w[i * STRIDE + 2] - 1;
    // Backward shift: pull later entries of the probe run into the hole when their home slot allows it.
    let hole = i;
    let j = i;
    for (;;) {
      j = (j + 1) & mask;
      const at = j * STRIDE;
      if (w[at + 2] === 0) break;
      const home = slotOf(w[at], w[at + 1], shift);
      // Entry j may move to the hole unless its home lies cyclically in (hole, j].
      const stays = hole <= j ? hole < home && home <= j : hole < home || home <= j;
      if (stays) continue;
      const to = hole * STRIDE;
      w[to] = w[at];
      w[to + 1] = w[at + 1];
      w[to + 2] = w[at + 2];
      hole = j;
    }
    w[hole * STRIDE + 2] = 0;
    this.size--;
    return removed;
  }

  /** Empties the table (keeps its memory). */
  clear(): void {
    this.words.fill(0);
    this.size = 0;
  }

  private grow(): void {
    const old = this.words;
    const n = (this.mask + 1) * 2;
    this.words = new Int32Array(n * STRIDE);
    this.mask = n - 1;
    this.shift--;
    this.size = 0;
    for (let at = 0; at < old.length; at += STRIDE) if (old[at + 2] !== 0) this.set(old[at], old[at + 1], old[at + 2] - 1);
  }
}

/**
 * An insert-only set of block hashes (the infinite-cache ceiling): two words per slot, (0, 0) marking an
 * empty slot and the hash (0, 0) itself kept in a flag. Two thirds of BlockHashTable's memory, which
 * matters at millions of distinct blocks.
 */
export class BlockHashSet {
  private words: Int32Array;
  private mask: number;
  private shift: number;
  private hasZero = false;
  size = 0;

  constructor(expected = 1024) {
    let bits = 4;
    while (1 << bits < expected * 2) bits++;
    this.words = new Int32Array((1 << bits) * 2);
    this.mask = (1 << bits) - 1;
    this.shift = 32 - bits;
  }

  has(lo: number, hi: number): boolean {
    const l = lo | 0;
    const h = hi | 0;
    if (l === 0 && h === 0) return this.hasZero;
    const w = this.words;
    const mask = this.mask;
    let i = slotOf(l, h, this.shift);
    for (;;) {
      const a = w[2 * i];
      const b = w[2 * i + 1];
      if (a === 0 && b === 0) return false;
      if (a === l && b === h) return true;
      i = (i + 1) & mask;
    }
  }

  add(lo: number, hi: number): void {
    const l = lo | 0;
    const h = hi | 0;
    if (l === 0 && h === 0) {
      if (!this.hasZero) this.size++;
      this.hasZero = true;
      return;
    }
    if ((this.size + 1) * 2 > this.mask + 1) this.grow();
    const w = this.words;
    const mask = this.mask;
    let i = slotOf(l, h, this.shift);
    for (;;) {
      const a = w[2 * i];
      const b = w[2 * i + 1];
      if (a === 0 && b === 0) {
        w[2 * i] = l;
        w[2 * i + 1] = h;
        this.size++;
        return;
      }
      if (a === l && b === h) return;
      i = (i + 1) & mask;
    }
  }

  private grow(): void {
    const old = this.words;
    const n = (this.mask + 1) * 2;
    this.words = new Int32Array(n * 2);
    this.mask = n - 1;
    this.shift--;
    const zero = this.hasZero;
    this.size = 0;
    this.hasZero = false;
    for (let at = 0; at < old.length; at += 2) if (old[at] !== 0 || old[at + 1] !== 0) this.add(old[at], old[at + 1]);
    if (zero) this.add(0, 0);
  }
}

/** Words per LRU node: key lo, key hi, previous node, next node. */
const NODE = 4;

/**
 * A set of block hashes with least-recently-used eviction at a fixed capacity (in blocks). The
 * offline "one global LRU with the fleet's total KV capacity" ceiling runs the request stream through it.
 */
export class LruBlockSet {
  private readonly table: BlockHashTable;
  /** NODE words per node; the recency list is doubly linked through them, head = least recent, −1 = none. */
  private readonly nodes: Int32Array;
  private head = -1;
  private tail = -1;
  private used = 0;
  evictions = 0;

  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`Expected \`capacity\` to be an integer ≥ 1, got \`${capacity}\``);
    this.table = new BlockHashTable(capacity);
    this.nodes = new Int32Array(capacity * NODE);
  }

  get size(): number {
    return this.used;
  }

  has(lo: number, hi: number): boolean {
    return this.table.get(lo, hi) >= 0;
  }

  /** Marks a hash most recently used, inserting it (and evicting the least recent at capacity). */
  touch(lo: number, hi: number): void {
    const node = this.table.get(lo, hi);
    if (node >= 0) {
      if (node === this.tail) return;
      this.unlink(node);
      this.append(node);
      return;
    }
    this.insert(lo, hi);
  }

  /** Inserts a hash known to be absent as the most recent (evicting the least recent at capacity). */
  insert(lo: number, hi: number): void {
    let node: number;
    const n = this.nodes;
    if (this.used < this.capacity) node = this.used++;
    else {
      node = this.head;
      this.unlink(node);
      this.table.delete(n[node * NODE], n[node * NODE + 1]);
      this.evictions++;
    }
    n[node * NODE] = lo;
    n[node * NODE + 1] = hi;
    this.table.set(lo, hi, node);
    this.append(node);
  }

  private unlink(node: number): void {
    const n = this.nodes;
    const p = n[node * NODE + 2];
    const x = n[node * NODE + 3];
    if (p >= 0) n[p * NODE + 3] = x;
    else this.head = x;
    if (x >= 0) n[x * NODE + 2] = p;
    else this.tail = p;
  }

  private append(node: number): void {
    const n = this.nodes;
    n[node * NODE + 2] = this.tail;
    n[node * NODE + 3] = -1;
    if (this.tail >= 0) n[this.tail * NODE + 3] = node;
    else this.head = node;
    this.tail = node;
  }
}
