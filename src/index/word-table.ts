/**
 * An open-addressing hash table from a key of three u32 words to a dense id, on typed arrays: the
 * engine-hash map and the reference counts of ReplicaState. It replaces `Map<bigint, …>` on the ingest
 * path, where building a bigint key (three allocations), hashing it and allocating an entry object cost
 * about a microsecond a block (bench/ingest.ts); here a lookup is a few integer multiplies and probes.
 *
 * Ids are dense (0 … idCapacity − 1, freed ids reused), so a caller keeps its values in parallel typed
 * arrays indexed by id and grows them when `idCapacity` grows. Linear probing at a load factor ≤ 1/2
 * with backward-shift deletion (no tombstones: a long-lived table with constant churn never degrades).
 */

const EMPTY = -1;
const MIN_IDS = 64;

export class WordTable {
  /** Keys by id. */
  k0: Uint32Array;
  k1: Uint32Array;
  k2: Uint32Array;
  /** Live ids. */
  size = 0;
  private slots: Int32Array;
  private mask: number;
  /** Freed ids, reused before new ones. */
  private free: Int32Array;
  private freeCount = 0;
  /** Ids handed out at least once (ids ≥ this were never used). */
  private highWater = 0;

  constructor(initialIds = MIN_IDS) {
    const ids = 2 ** Math.ceil(Math.log2(Math.max(MIN_IDS, initialIds)));
    this.k0 = new Uint32Array(ids);
    this.k1 = new Uint32Array(ids);
    this.k2 = new Uint32Array(ids);
    this.free = new Int32Array(ids);
    this.slots = new Int32Array(ids * 2).fill(EMPTY);
    this.mask = ids * 2 - 1;
  }

  /** Ids the parallel arrays must be able to hold. */
  get idCapacity(): number {
    return this.k0.length;
  }

  private home(a: number, b: number, c: number): number {
    // Engine hashes can be small sequential integers (tests, some engines): mix every word.
    let h = Math.imul(a ^ Math.imul(b, 0x9e3779b1) ^ Math.imul(c, 0x85ebca6b), 0xcc9e2d51);
    h ^= h >>> 15;
    h = Math.imul(h, 0x1b873593);
    h ^= h >>> 13;
    return h & this.mask;
  }

  /** The id of a key, or −1. */
  find(a: number, b: number, c: number): number {
    const slots = this.slots;
    const mask = this.mask;
    for (let i = this.home(a, b, c); ; i = (i + 1) & mask) {
      const id = slots[i];
      if (id === EMPTY) return -1;
      if (this.k0[id] === a && this.k1[id] === b && this.k2[id] === c) return id;
    }
  }

  /** Inserts a key that is not present (the caller found −1) and returns its new id. */
  insert(a: number, b: number, c: number): number {
    if ((this.size + 1) * 2 > this.slots.length) this.grow();
    const id = this.freeCount > 0 ? this.free[--this.freeCount] : this.highWater++;
    this.k0[id] = a;
    this.k1[id] = b;
    this.k2[id] = c;
    const mask = this.mask;
    let i = this.home(a, b, c);
    while (this.slots[i] !== EMPTY) i = (i + 1) & mask;
    this.slots[i] = id;
    this.size++;
    return id;
  }

  /** Removes a live id (backward-shift deletion: later entries of the probe run move up). */
  remove(id: number): void {
    const slots = this.slots;
    const mask = this.mask;
    let i = this.home(this.k0[id], this.k1[id], this.k2[id]);
    while (slots[i] !== id) i = (i + 1) & mask;
    for (let j = (i + 1) & mask; slots[j] !== EMPTY; j = (j + 1) & mask) {
      const other = slots[j];
      const k = this.home(this.k0[other], this.k1[other], this.k2[other]);
      // `other` may move back to i only if its home is not cyclically within (i, j].
      const between = i <= j ? i < k && k <= j : i < k || k <= j;
      if (between) continue;
      slots[i] = other;
      i = j;
    }
    slots[i] = EMPTY;
    this.free[this.freeCount++] = id;
    this.size--;
  }

  /** Forgets every key; the capacity stays. */
  clear(): void {
    this.slots.fill(EMPTY);
    this.size = 0;
    this.freeCount = 0;
    this.highWater = 0;
  }

  private grow(): void {
    const ids = this.k0.length * 2;
    const k0 = new Uint32Array(ids);
    const k1 = new Uint32Array(ids);
    const k2 = new Uint32Array(ids);
    k0.set(this.k0);
    k1.set(this.k1);
    k2.set(this.k2);
    const free = new Int32Array(ids);
    free.set(this.free.subarray(0, this.freeCount));
    this.k0 = k0;
    this.k1 = k1;
    this.k2 = k2;
    this.free = free;
    const old = this.slots;
    this.slots = new Int32Array(ids * 2).fill(EMPTY);
    this.mask = ids * 2 - 1;
    for (let s = 0; s < old.length; s++) {
      const id = old[s];
      if (id === EMPTY) continue;
      let i = this.home(k0[id], k1[id], k2[id]);
      while (this.slots[i] !== EMPTY) i = (i + 1) & this.mask;
      this.slots[i] = id;
    }
  }
}
