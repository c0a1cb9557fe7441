/**
 * The fleet prefix-cache index over linear memory: the same data structures and steps as the executable
 * specification, src/kernels/js/prefix-index.ts (read that file for the why of each rule), so that any
 * operation sequence gives the same slots, arena chunks, free lists, growth points, eviction choices,
 * match output, stats and dump as the reference. Only the memory layout of the bookkeeping and the
 * order of *reads* differ: the hot loops touch upcoming cache lines early (see "Memory-level
 * parallelism" below), which changes no result.
 *
 * Memory: unlike the other kernels, an index grows (table doubling, arena doubling), so the module
 * imports the host's allocator (`env.hostAlloc`, `env.hostFree`, src/kernels/wasm.ts). An index is
 * three host regions:
 * - meta: the {@link State} struct, the arena free-list heads (u32 per class 0 … 20), the per-replica
 *   match scratch (REPLICA_BYTES each: gen, depth, gpu, cpu, disk counts, u32), the per-replica epochs
 *   (u8) and wipe counters (u8) — 22 bytes a replica, the reference's stats formula;
 * - table: `cap` slots of 16 bytes [key u64 (lo, hi), a u32, b u32], 64-byte aligned so that a cache
 *   line holds exactly the 4 slots s & ~3 … s | 3 (the match pipeline reasons in lines);
 * - arena: `arenaWords` u32 words, holder pairs [word, stamp].
 * A slot's (a, b) words have the layout of an arena pair, so an inline holder is read as "one pair at
 * slot + 8" and every holder walk is a loop over pairs.
 *
 * Memory-level parallelism: WebAssembly has no prefetch instruction, so a "touch" is a plain load whose
 * value is folded into `touchSink` (a global, so the loads are not dead code). Unlike a prefetch, such
 * a load holds its place in the CPU's reorder buffer until its line arrives, so touches are issued in
 * dense loops of a few instructions each (many misses then fit in the window at once), and code only
 * branches on a line that has had time to arrive (a branch on a missing line is resolved late and
 * discards the loads issued after it). match runs a three-stage pipeline (see indexMatch); eviction
 * draws its 16 sample positions first and touches them all, then their holder chunks; apply touches
 * the home slots of the next records. Touches only read, so every result is the reference's.
 *
 * Failure: the reference cannot fail; here a host allocation can. A grow that cannot get memory makes
 * the operation return NO_MEMORY with the index consistent (the record is not applied; records before
 * it stay applied, evictions made to make room for it stay made).
 */
import { BAD_ARG, NO_MEMORY, OK, OUT_TOO_SMALL } from './status';
import { inMemory, overlaps } from './guard';

/** Start of a host region of at least `bytes` bytes (16-byte aligned), or 0 when memory cannot grow. */
// @ts-ignore: decorator
@external('env', 'hostAlloc')
declare function hostAlloc(bytes: u32): usize;

/** Releases a region returned by hostAlloc. */
// @ts-ignore: decorator
@external('env', 'hostFree')
declare function hostFree(ptr: usize): void;

// ---------- constants of the specification (js/prefix-index.ts) ----------

const OP_STORE: u32 = 1;
const OP_REMOVE: u32 = 2;
const OP_CLEAR: u32 = 3;
const OP_SPECULATE: u32 = 4;
const TIER_DISK: u32 = 2;
/** Largest replica capacity (replica ids are 20 bits). */
const MAX_REPLICAS: u32 = 0xfffff;
/** Words per matched replica in match output: replica, depth, gpu, cpu, disk. */
const MATCH_STRIDE: u32 = 5;

const EMPTY: u32 = 0xffffffff;
const OVERFLOW: u32 = 0x80000000;
const REPLICA_MASK: u32 = 0xfffff;
const TIER_SHIFT: u32 = 20;
const SPEC_BIT: u32 = 1 << 23;
const EPOCH_SHIFT: u32 = 24;
const EPOCH_MASK: u32 = 0x7f;
/** Slots examined per eviction. */
const SAMPLES: u32 = 16;
/** Largest arena chunk class (2^20 pairs). */
const MAX_CLASS: u32 = 20;
const WIPES_BEFORE_SWEEP: u8 = 127;
/** Smallest table (slots). */
const MIN_CAP: u32 = 1024;
/** Arena size at creation (u32 words), as the reference's `new Uint32Array(2048)`. */
const INITIAL_ARENA_WORDS: u32 = 2048;
const COUNT_MASK: u32 = 0xffffff;
const CLASS_SHIFT: u32 = 24;
/** Counters written by indexStats (STAT_NAMES). */
const STATS_LENGTH: u32 = 9;

// ---------- layout ----------

/** Bytes per table slot: key u64, a u32, b u32. */
const SLOT_SHIFT: usize = 4;
/** Offset of the (a, b) pair in a slot. */
const SLOT_PAIR: usize = 8;
/** Cache line size assumed by the match pipeline (bytes): 4 slots. */
const LINE_BYTES: usize = 64;
/** Bytes per arena pair: word u32, stamp u32. */
const PAIR_SHIFT: usize = 3;
/** Bytes of per-replica match scratch: gen, depth, gpu, cpu, disk (u32 each). */
const REPLICA_BYTES: usize = 20;
/** Bytes reserved for the free-list heads (MAX_CLASS + 1 u32), rounded to 16. */
const FREE_HEADS_BYTES: usize = 96;
/** Marks a live State (cleared by indexFree, so a stale handle reads as BAD_ARG). */
const MAGIC: u32 = 0x58444950; // "PIDX"
/** Largest single host allocation the kernel asks for (bytes; the hostAlloc argument is a u32). */
const MAX_ALLOC_BYTES: u64 = 0xffff0000;
/** Largest table: 2^31 slots (unreachable in a 4 GiB memory; keeps `cap` in a u32). */
const MAX_CAP_LIMIT: u64 = 0x80000000;
/** allocChunk's failure value (a chunk index never reaches it: the arena is < 2^29 pairs). */
const NO_CHUNK: u32 = 0xffffffff;

/** Blocks per match pipeline stage (a power of two): their lines are touched as one batch of misses. */
const MATCH_CHUNK: u32 = 32;
/** Ring of located blocks: two chunks live at once (one being located, one being walked). */
const RING_MASK: u32 = 2 * MATCH_CHUNK - 1;
/** Ring entry of a block the index does not have. */
const ABSENT: u32 = 0xffffffff;
/** Ring entry flag: the probe run continues at this slot (the first of the next line). */
const CONTINUE: u32 = 0x80000000;
/** Slots per cache line. */
const SLOTS_PER_LINE: u32 = 4;
/** Holder-word bits that identify a replica in its current epoch (lone-mode compare). */
const LONE_MASK: u32 = REPLICA_MASK | (EPOCH_MASK << EPOCH_SHIFT);
/** Records whose home slots apply touches together. */
const APPLY_CHUNK: u32 = 16;

/** The match pipeline's ring of located blocks (RING_MASK + 1 entries, see locate()). */
const RING: usize = memory.data(<i32>((RING_MASK + 1) << 2), 16);
/** Slots sampled by the current eviction. */
const SAMPLE_SLOTS: usize = memory.data(<i32>(SAMPLES << 2), 16);

/** Receives the touch loads (a global write is an observable effect, so the loads stay). */
let touchSink: u32 = 0;

/** The index's state, at the start of its meta region. Counters are those of the reference. */
// @ts-ignore: decorator
@unmanaged
class State {
  magic: u32;
  /** Slots (a power of two, ≥ MIN_CAP). */
  cap: u32;
  /** 32 − log2(cap): the home slot is the top log2(cap) bits of the Fibonacci product. */
  shift: u32;
  /** Largest cap the budget needs (≥ MIN_CAP). */
  maxCap: u32;
  /** Slot 0 (64-byte aligned). */
  table: usize;
  /** The table's host region (what hostFree releases). */
  tableRegion: usize;
  arena: usize;
  /** Arena length in u32 words (the reference's `arena.length`). */
  arenaWords: u32;
  /** Pairs cut from the top of the arena so far. */
  arenaTop: u32;
  maxEntries: u32;
  replicaCapacity: u32;
  /** Time to live of speculative entries (ms). */
  ttlMs: u32;
  /** xorshift32 state of the eviction sampler (never 0). */
  rng: u32;
  matchGen: u32;
  entries: u32;
  blocks: u32;
  speculative: u32;
  /** Bytes of the meta region (for the overlap checks). */
  metaBytes: u32;
  freeHeads: usize;
  replicas: usize;
  epochs: usize;
  wipes: usize;
  evictions: u64;
  deadRemoved: u64;
  sweeps: u64;
}

// @ts-ignore: decorator
@inline
function stateOf(ptr: usize): State {
  return changetype<State>(ptr);
}

/** True when `ptr` is a live index made by indexCreate (a host bug must not make the kernel trap). */
function validState(ptr: usize): bool {
  return ptr != 0 && (ptr & 7) == 0 && inMemory(ptr, offsetof<State>()) && load<u32>(ptr) == MAGIC;
}

/** True when the host region [ptr, ptr + bytes) overlaps one of the index's own regions. */
function overlapsIndex(st: State, ptr: usize, bytes: u64): bool {
  return (
    overlaps(ptr, bytes, changetype<usize>(st), u64(st.metaBytes)) ||
    overlaps(ptr, bytes, st.tableRegion, (u64(st.cap) << SLOT_SHIFT) + LINE_BYTES) ||
    overlaps(ptr, bytes, st.arena, u64(st.arenaWords) << 2)
  );
}

// ---------- words, stamps, liveness ----------

// @ts-ignore: decorator
@inline
function tierBits(w: u32): u32 {
  return (w >>> TIER_SHIFT) & 7;
}

/** Speculative and never confirmed by an engine event. */
// @ts-ignore: decorator
@inline
function specOnly(w: u32): bool {
  return (w & SPEC_BIT) != 0 && tierBits(w) == 0;
}

/** Signed 32-bit difference now − stamp of two wrapping millisecond stamps. */
// @ts-ignore: decorator
@inline
function age(now: u32, stamp: u32): i32 {
  return <i32>(now - stamp);
}

/** Current epoch of the replica, tier bits and current epoch — or speculative and not expired. */
// @ts-ignore: decorator
@inline
function isLive(epochs: usize, w: u32, stamp: u32, now: u32): bool {
  if (((w >>> EPOCH_SHIFT) & EPOCH_MASK) != <u32>load<u8>(epochs + <usize>(w & REPLICA_MASK))) return false;
  if (tierBits(w) != 0) return true;
  return (w & SPEC_BIT) != 0 && age(now, stamp) < 0;
}

// @ts-ignore: decorator
@inline
function makeWord(st: State, replica: u32, tiers: u32, spec: bool): u32 {
  return replica | (tiers << TIER_SHIFT) | (spec ? SPEC_BIT : 0) | (<u32>load<u8>(st.epochs + <usize>replica) << EPOCH_SHIFT);
}

// ---------- table ----------

/** Fibonacci hashing of lo ^ hi: the top log2(cap) bits of imul(lo ^ hi, 0x9E3779B1). */
// @ts-ignore: decorator
@inline
function home(key: u64, shift: u32): u32 {
  return ((<u32>key ^ <u32>(key >>> 32)) * 0x9e3779b1) >>> shift;
}

// @ts-ignore: decorator
@inline
function slotPtr(table: usize, s: u32): usize {
  return table + (<usize>s << SLOT_SHIFT);
}

/** Slot holding the key, or −1. */
function find(st: State, key: u64): i32 {
  const table = st.table;
  const mask = st.cap - 1;
  let s = home(key, st.shift);
  let p = slotPtr(table, s);
  let a = load<u32>(p, SLOT_PAIR);
  while (a != EMPTY && load<u64>(p) != key) {
    s = (s + 1) & mask;
    p = slotPtr(table, s);
    a = load<u32>(p, SLOT_PAIR);
  }
  return a == EMPTY ? -1 : <i32>s;
}

/** First holder pair of slot p: the slot's own (a, b) when inline, else its arena chunk. */
// @ts-ignore: decorator
@inline
function holdersAt(arena: usize, p: usize): usize {
  const a = load<u32>(p, SLOT_PAIR);
  return (a & OVERFLOW) == 0 ? p + SLOT_PAIR : arena + (<usize>(a & ~OVERFLOW) << PAIR_SHIFT);
}

/** Number of holders of slot p. */
// @ts-ignore: decorator
@inline
function holderCount(p: usize): u32 {
  return (load<u32>(p, SLOT_PAIR) & OVERFLOW) == 0 ? 1 : load<u32>(p, SLOT_PAIR + 4) & COUNT_MASK;
}

/** Position of replica r among the holders of slot s, or −1. */
function holderOf(st: State, s: u32, r: u32): i32 {
  const p = slotPtr(st.table, s);
  const hp = holdersAt(st.arena, p);
  const n = holderCount(p);
  for (let i: u32 = 0; i < n; i++) {
    if ((load<u32>(hp + (<usize>i << PAIR_SHIFT)) & REPLICA_MASK) == r) return <i32>i;
  }
  return -1;
}

// @ts-ignore: decorator
@inline
function getWord(st: State, s: u32, i: u32): u32 {
  return load<u32>(holdersAt(st.arena, slotPtr(st.table, s)) + (<usize>i << PAIR_SHIFT));
}

// @ts-ignore: decorator
@inline
function getStamp(st: State, s: u32, i: u32): u32 {
  return load<u32>(holdersAt(st.arena, slotPtr(st.table, s)) + (<usize>i << PAIR_SHIFT), 4);
}

// @ts-ignore: decorator
@inline
function setHolder(st: State, s: u32, i: u32, w: u32, stamp: u32): void {
  const at = holdersAt(st.arena, slotPtr(st.table, s)) + (<usize>i << PAIR_SHIFT);
  store<u32>(at, w);
  store<u32>(at, stamp, 4);
}

/**
 * A table of `cap` empty slots: its host region (0 when memory is short); slot 0 at alignTable(region).
 * Every a = EMPTY (the keys of empty slots are never read).
 */
function allocTable(cap: u32): usize {
  const bytes = (u64(cap) << SLOT_SHIFT) + LINE_BYTES; // room to align slot 0 to a line
  if (bytes > MAX_ALLOC_BYTES) return 0;
  const region = hostAlloc(<u32>bytes);
  if (region != 0) memory.fill(alignTable(region), 0xff, <usize>cap << SLOT_SHIFT);
  return region;
}

// @ts-ignore: decorator
@inline
function alignTable(region: usize): usize {
  return (region + LINE_BYTES - 1) & ~(LINE_BYTES - 1);
}

/** Doubles the table, rehashing in old slot order. False (nothing changed) when memory is short. */
function grow(st: State): bool {
  const oldTable = st.table;
  const oldCap = st.cap;
  const cap = oldCap << 1;
  const region = allocTable(cap);
  if (region == 0) return false;
  const table = alignTable(region);
  const shift = st.shift - 1;
  const mask = cap - 1;
  for (let i: u32 = 0; i < oldCap; i++) {
    const q = slotPtr(oldTable, i);
    if (load<u32>(q, SLOT_PAIR) == EMPTY) continue;
    const key = load<u64>(q);
    let s = home(key, shift);
    while (load<u32>(slotPtr(table, s), SLOT_PAIR) != EMPTY) s = (s + 1) & mask;
    const p = slotPtr(table, s);
    store<u64>(p, key);
    store<u64>(p, load<u64>(q, SLOT_PAIR), SLOT_PAIR);
  }
  hostFree(st.tableRegion);
  st.tableRegion = region;
  st.table = table;
  st.cap = cap;
  st.shift = shift;
  return true;
}

/** Inserts a new block with one holder (the key is absent). Returns its slot, or −1 when a needed grow failed. */
function insertSlot(st: State, key: u64, w: u32, stamp: u32): i32 {
  if ((u64(st.blocks) + 1) * 4 > u64(st.cap) * 3 && st.cap < st.maxCap) {
    if (!grow(st)) return -1;
  }
  const table = st.table;
  const mask = st.cap - 1;
  let s = home(key, st.shift);
  while (load<u32>(slotPtr(table, s), SLOT_PAIR) != EMPTY) s = (s + 1) & mask;
  const p = slotPtr(table, s);
  store<u64>(p, key);
  store<u32>(p, w, SLOT_PAIR);
  store<u32>(p, stamp, SLOT_PAIR + 4);
  st.blocks++;
  return <i32>s;
}

/** Empties slot s and shifts the following run back (linear-probing deletion without tombstones). */
function removeSlot(st: State, s: u32): void {
  const table = st.table;
  const mask = st.cap - 1;
  const shift = st.shift;
  st.blocks--;
  let hole = s;
  let j = s;
  for (;;) {
    j = (j + 1) & mask;
    const pj = slotPtr(table, j);
    if (load<u32>(pj, SLOT_PAIR) == EMPTY) break;
    const h = home(load<u64>(pj), shift);
    // j stays unless its home lies cyclically in (hole, j].
    const inRange = hole <= j ? hole < h && h <= j : hole < h || h <= j;
    if (inRange) continue;
    const ph = slotPtr(table, hole);
    store<u64>(ph, load<u64>(pj));
    store<u64>(ph, load<u64>(pj, SLOT_PAIR), SLOT_PAIR);
    hole = j;
  }
  store<u32>(slotPtr(table, hole), EMPTY, SLOT_PAIR);
}

// ---------- arena ----------

/** A chunk of 2^cls pairs: the class's free list first (LIFO), else cut from the top; NO_CHUNK when memory is short. */
function allocChunk(st: State, cls: u32): u32 {
  const headAt = st.freeHeads + (<usize>cls << 2);
  const head = load<u32>(headAt);
  if (head != 0) {
    const chunk = head - 1;
    store<u32>(headAt, load<u32>(st.arena + (<usize>chunk << PAIR_SHIFT)));
    return chunk;
  }
  const pairs = <u32>1 << cls;
  const need = (u64(st.arenaTop) + pairs) << 1; // words
  if (need > u64(st.arenaWords)) {
    // Double until it fits, as the reference does (one allocation for all the doublings).
    let words = u64(st.arenaWords);
    while (need > words) words <<= 1;
    if (words << 2 > MAX_ALLOC_BYTES) return NO_CHUNK;
    const arena = hostAlloc(<u32>(words << 2));
    if (arena == 0) return NO_CHUNK;
    // Only pairs below arenaTop hold anything (chunks and free-list links).
    memory.copy(arena, st.arena, <usize>st.arenaTop << PAIR_SHIFT);
    hostFree(st.arena);
    st.arena = arena;
    st.arenaWords = <u32>words;
  }
  const chunk = st.arenaTop;
  st.arenaTop += pairs;
  return chunk;
}

// @ts-ignore: decorator
@inline
function freeChunk(st: State, chunk: u32, cls: u32): void {
  const headAt = st.freeHeads + (<usize>cls << 2);
  store<u32>(st.arena + (<usize>chunk << PAIR_SHIFT), load<u32>(headAt));
  store<u32>(headAt, chunk + 1);
}

// ---------- holders of one slot ----------

/** Appends a holder (inline → chunk of 2, full chunk → next class). False (nothing changed) when memory is short. */
function appendHolder(st: State, s: u32, w: u32, stamp: u32): bool {
  const p = slotPtr(st.table, s); // the table does not move here, only the arena may
  const a = load<u32>(p, SLOT_PAIR);
  if ((a & OVERFLOW) == 0) {
    const chunk = allocChunk(st, 1);
    if (chunk == NO_CHUNK) return false;
    const q = st.arena + (<usize>chunk << PAIR_SHIFT);
    store<u64>(q, load<u64>(p, SLOT_PAIR)); // the inline holder becomes pair 0
    store<u32>(q, w, 8);
    store<u32>(q, stamp, 12);
    store<u32>(p, OVERFLOW | chunk, SLOT_PAIR);
    store<u32>(p, 2 | (1 << CLASS_SHIFT), SLOT_PAIR + 4);
    return true;
  }
  let chunk = a & ~OVERFLOW;
  const b = load<u32>(p, SLOT_PAIR + 4);
  const n = b & COUNT_MASK;
  let cls = b >>> CLASS_SHIFT;
  if (n == <u32>1 << cls) {
    if (cls >= MAX_CLASS) return false; // unreachable: a block has < 2^20 holders (one per replica)
    const bigger = allocChunk(st, cls + 1);
    if (bigger == NO_CHUNK) return false;
    const arena = st.arena;
    memory.copy(arena + (<usize>bigger << PAIR_SHIFT), arena + (<usize>chunk << PAIR_SHIFT), <usize>n << PAIR_SHIFT);
    freeChunk(st, chunk, cls);
    chunk = bigger;
    cls += 1;
    store<u32>(p, OVERFLOW | chunk, SLOT_PAIR);
  }
  const q = st.arena + (<usize>(chunk + n) << PAIR_SHIFT);
  store<u32>(q, w);
  store<u32>(q, stamp, 4);
  store<u32>(p, (n + 1) | (cls << CLASS_SHIFT), SLOT_PAIR + 4);
  return true;
}

/** Removes holder i of slot s; removes the block (backward shift) when it was the last one. */
function removeHolder(st: State, s: u32, i: u32): void {
  if (specOnly(getWord(st, s, i))) st.speculative--;
  st.entries--;
  const p = slotPtr(st.table, s);
  const a = load<u32>(p, SLOT_PAIR);
  if ((a & OVERFLOW) == 0) {
    removeSlot(st, s);
    return;
  }
  const chunk = a & ~OVERFLOW;
  const b = load<u32>(p, SLOT_PAIR + 4);
  const cls = b >>> CLASS_SHIFT;
  const last = (b & COUNT_MASK) - 1;
  const base = st.arena + (<usize>chunk << PAIR_SHIFT);
  if (i != last) store<u64>(base + (<usize>i << PAIR_SHIFT), load<u64>(base + (<usize>last << PAIR_SHIFT)));
  if (last == 1) {
    store<u64>(p, load<u64>(base), SLOT_PAIR); // back inline, then the chunk's first word becomes a link
    freeChunk(st, chunk, cls);
  } else {
    store<u32>(p, last | (cls << CLASS_SHIFT), SLOT_PAIR + 4);
  }
}

// ---------- eviction ----------

/** Class of a holder for eviction: 0 dead, 1 speculative, 2 precise. */
// @ts-ignore: decorator
@inline
function evictClass(epochs: usize, w: u32, stamp: u32, now: u32): u32 {
  if (!isLive(epochs, w, stamp, now)) return 0;
  return tierBits(w) == 0 ? 1 : 2;
}

/** Evicts one holder chosen by sampling (the index is not empty). */
function evictOne(st: State, now: u32): void {
  const table = st.table;
  const mask = st.cap - 1;
  const arena = st.arena;
  const epochs = st.epochs;
  // The 16 sample positions depend only on the generator: draw them all and touch their slots so the
  // misses overlap, then scan forward to occupied slots and touch their holder chunks.
  let x = st.rng;
  let sink: u32 = 0;
  for (let k: u32 = 0; k < SAMPLES; k++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    const s = x & mask;
    store<u32>(SAMPLE_SLOTS + (<usize>k << 2), s);
    sink ^= load<u32>(slotPtr(table, s), SLOT_PAIR);
  }
  st.rng = x;
  for (let k: u32 = 0; k < SAMPLES; k++) {
    let s = load<u32>(SAMPLE_SLOTS + (<usize>k << 2));
    while (load<u32>(slotPtr(table, s), SLOT_PAIR) == EMPTY) s = (s + 1) & mask;
    store<u32>(SAMPLE_SLOTS + (<usize>k << 2), s);
    sink ^= load<u32>(holdersAt(arena, slotPtr(table, s)));
  }
  touchSink ^= sink;
  let bestSlot: u32 = 0;
  let bestIdx: u32 = 0;
  let bestClass: u32 = 3;
  let bestAge: i32 = 0;
  for (let k: u32 = 0; k < SAMPLES; k++) {
    const s = load<u32>(SAMPLE_SLOTS + (<usize>k << 2));
    const p = slotPtr(table, s);
    const hp = holdersAt(arena, p);
    const n = holderCount(p);
    for (let i: u32 = 0; i < n; i++) {
      const w = load<u32>(hp + (<usize>i << PAIR_SHIFT));
      const stamp = load<u32>(hp + (<usize>i << PAIR_SHIFT), 4);
      const c = evictClass(epochs, w, stamp, now);
      const ag = age(now, stamp);
      if (c < bestClass || (c == bestClass && ag > bestAge)) {
        bestClass = c;
        bestAge = ag;
        bestSlot = s;
        bestIdx = i;
      }
    }
  }
  if (bestClass == 0) st.deadRemoved++;
  else st.evictions++;
  removeHolder(st, bestSlot, bestIdx);
}

/** Makes room for one more holder. True when it evicted (slots may have moved). */
function reserve(st: State, now: u32): bool {
  let evicted = false;
  while (st.entries >= st.maxEntries && st.entries > 0) {
    evictOne(st, now);
    evicted = true;
  }
  return evicted;
}

// ---------- operations ----------

/** Adds a new holder after reserve() (`s`: the block's slot before reserve, or −1). OK or NO_MEMORY. */
function addHolder(st: State, key: u64, s: i32, evicted: bool, w: u32, stamp: u32): i32 {
  if (evicted) s = find(st, key); // eviction may have moved or removed the block
  if (s < 0) return insertSlot(st, key, w, stamp) < 0 ? NO_MEMORY : OK;
  return appendHolder(st, <u32>s, w, stamp) ? OK : NO_MEMORY;
}

function storeOp(st: State, replica: u32, tier: u32, key: u64, now: u32): i32 {
  const bit: u32 = 1 << tier;
  const s = find(st, key);
  if (s >= 0) {
    const i = holderOf(st, <u32>s, replica);
    if (i >= 0) {
      const w = getWord(st, <u32>s, <u32>i);
      const stamp = getStamp(st, <u32>s, <u32>i);
      if (specOnly(w)) st.speculative--;
      if (!isLive(st.epochs, w, stamp, now)) {
        st.deadRemoved++;
        setHolder(st, <u32>s, <u32>i, makeWord(st, replica, bit, false), now);
      } else {
        setHolder(st, <u32>s, <u32>i, makeWord(st, replica, tierBits(w) | bit, false), now);
      }
      return OK;
    }
  }
  const evicted = reserve(st, now);
  st.entries++;
  const r = addHolder(st, key, s, evicted, makeWord(st, replica, bit, false), now);
  if (r != OK) st.entries--;
  return r;
}

function removeOp(st: State, replica: u32, tier: u32, key: u64, now: u32): void {
  const s = find(st, key);
  if (s < 0) return;
  const i = holderOf(st, <u32>s, replica);
  if (i < 0) return;
  const w = getWord(st, <u32>s, <u32>i);
  const stamp = getStamp(st, <u32>s, <u32>i);
  if (!isLive(st.epochs, w, stamp, now)) {
    st.deadRemoved++;
    removeHolder(st, <u32>s, <u32>i);
    return;
  }
  const left = tierBits(w) & ~(<u32>1 << tier);
  if (left == 0) removeHolder(st, <u32>s, <u32>i);
  else setHolder(st, <u32>s, <u32>i, makeWord(st, replica, left, false), stamp);
}

function speculateOp(st: State, replica: u32, key: u64, now: u32): i32 {
  const expiry = now + st.ttlMs;
  const s = find(st, key);
  if (s >= 0) {
    const i = holderOf(st, <u32>s, replica);
    if (i >= 0) {
      const w = getWord(st, <u32>s, <u32>i);
      const stamp = getStamp(st, <u32>s, <u32>i);
      const live = isLive(st.epochs, w, stamp, now);
      if (live && tierBits(w) != 0) {
        setHolder(st, <u32>s, <u32>i, w, now); // precise: a routing decision counts as a use (LRU)
      } else {
        if (!live) {
          st.deadRemoved++;
          if (!specOnly(w)) st.speculative++;
        }
        setHolder(st, <u32>s, <u32>i, makeWord(st, replica, 0, true), expiry);
      }
      return OK;
    }
  }
  const evicted = reserve(st, now);
  st.entries++;
  st.speculative++;
  const r = addHolder(st, key, s, evicted, makeWord(st, replica, 0, true), expiry);
  if (r != OK) {
    st.entries--;
    st.speculative--;
  }
  return r;
}

function clearOp(st: State, replica: u32): void {
  const at = st.epochs + <usize>replica;
  store<u8>(at, (load<u8>(at) + 1) & <u8>EPOCH_MASK);
  const wipesAt = st.wipes + <usize>replica;
  const wipes = load<u8>(wipesAt) + 1;
  store<u8>(wipesAt, wipes);
  if (wipes >= WIPES_BEFORE_SWEEP) sweep(st, replica);
}

/** Removes every dead holder of one replica (whole-table pass; once per 127 wipes). */
function sweep(st: State, replica: u32): void {
  st.sweeps++;
  store<u8>(st.wipes + <usize>replica, 0);
  const cur = <u32>load<u8>(st.epochs + <usize>replica);
  let s: u32 = 0;
  while (s < st.cap) {
    if (load<u32>(slotPtr(st.table, s), SLOT_PAIR) == EMPTY) {
      s++;
      continue;
    }
    let removed = false;
    const n = holderCount(slotPtr(st.table, s));
    for (let i = <i32>n - 1; i >= 0; i--) {
      const w = getWord(st, s, <u32>i);
      if ((w & REPLICA_MASK) == replica && ((w >>> EPOCH_SHIFT) & EPOCH_MASK) != cur) {
        st.deadRemoved++;
        const wasLast = holderCount(slotPtr(st.table, s)) == 1;
        removeHolder(st, s, <u32>i);
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

// ---------- exports ----------

/**
 * Creates an empty index; returns its state pointer, or 0 (replicaCapacity > 0xFFFFF, or no memory).
 * maxEntries: most holders stored; seed: eviction sampler seed (0 means 0x9E3779B9); ttlMs: lifetime
 * of speculative entries (ms).
 */
export function indexCreate(maxEntries: u32, replicaCapacity: u32, seed: u32, ttlMs: u32): usize {
  if (replicaCapacity > MAX_REPLICAS) return 0;
  const stateBytes = (offsetof<State>() + 15) & ~15;
  const replicasAt = stateBytes + FREE_HEADS_BYTES;
  const epochsAt = replicasAt + <usize>replicaCapacity * REPLICA_BYTES;
  const wipesAt = epochsAt + <usize>replicaCapacity;
  const metaBytes = wipesAt + <usize>replicaCapacity;
  const meta = hostAlloc(<u32>metaBytes);
  if (meta == 0) return 0;
  const tableRegion = allocTable(MIN_CAP);
  if (tableRegion == 0) {
    hostFree(meta);
    return 0;
  }
  const arena = hostAlloc(INITIAL_ARENA_WORDS << 2);
  if (arena == 0) {
    hostFree(tableRegion);
    hostFree(meta);
    return 0;
  }
  memory.fill(meta, 0, metaBytes);
  // The table never needs more slots than the budget's holders at 3/4 load: the reference's
  // 2^ceil(log2(maxEntries · 4/3 + 1)) is the smallest power of two p ≥ (4 · maxEntries + 3) / 3,
  // computed here in integers (that quotient is never a power of two, so the float form is exact too).
  const need = (u64(maxEntries) << 2) + 3;
  let maxCap: u64 = 1;
  while (maxCap * 3 < need) maxCap <<= 1;
  if (maxCap < u64(MIN_CAP)) maxCap = MIN_CAP;
  if (maxCap > MAX_CAP_LIMIT) maxCap = MAX_CAP_LIMIT;
  const st = stateOf(meta);
  st.cap = MIN_CAP;
  st.shift = 32 - 10; // log2(MIN_CAP) = 10
  st.maxCap = <u32>maxCap;
  st.tableRegion = tableRegion;
  st.table = alignTable(tableRegion);
  st.arena = arena;
  st.arenaWords = INITIAL_ARENA_WORDS;
  st.arenaTop = 0;
  st.maxEntries = maxEntries;
  st.replicaCapacity = replicaCapacity;
  st.ttlMs = ttlMs;
  st.rng = seed != 0 ? seed : 0x9e3779b9;
  st.metaBytes = <u32>metaBytes;
  st.freeHeads = meta + stateBytes;
  st.replicas = meta + replicasAt;
  st.epochs = meta + epochsAt;
  st.wipes = meta + wipesAt;
  st.magic = MAGIC;
  return meta;
}

/**
 * Applies `count` records of 16 bytes [op | tier << 8, replica, hash lo, hash hi] at `recordsPtr`.
 * Returns count; BAD_ARG at the first record with a replica ≥ capacity, a tier > 2 or an unknown op
 * (records before it stay applied; also for a bad state or region); NO_MEMORY when the index could not
 * grow for a record (that record not applied).
 */
export function indexApply(statePtr: usize, recordsPtr: usize, count: u32, now: u32): i32 {
  if (!validState(statePtr)) return BAD_ARG;
  if (count > <u32>i32.MAX_VALUE || !inMemory(recordsPtr, u64(count) << 4)) return BAD_ARG;
  const st = stateOf(statePtr);
  for (let k: u32 = 0; k < count; k++) {
    const at = recordsPtr + (<usize>k << 4);
    if ((k & (APPLY_CHUNK - 1)) == 0) {
      // Touch the home slots of the next records so their misses overlap (a CLEAR's hash is ignored;
      // touching it is harmless). The table may grow meanwhile: then a touch was merely wasted.
      const table = st.table;
      const shift = st.shift;
      const end = min(count - k, APPLY_CHUNK);
      let sink: u32 = 0;
      for (let j: u32 = 0; j < end; j++) {
        sink ^= load<u32>(slotPtr(table, home(load<u64>(at + (<usize>j << 4), 8), shift)), SLOT_PAIR);
      }
      touchSink ^= sink;
    }
    const head = load<u32>(at);
    const op = head & 0xff;
    const tier = (head >>> 8) & 0xff;
    const replica = load<u32>(at, 4);
    const key = load<u64>(at, 8);
    if (replica >= st.replicaCapacity || tier > TIER_DISK) return BAD_ARG;
    let r = OK;
    if (op == OP_STORE) r = storeOp(st, replica, tier, key, now);
    else if (op == OP_REMOVE) removeOp(st, replica, tier, key, now);
    else if (op == OP_CLEAR) clearOp(st, replica);
    else if (op == OP_SPECULATE) r = speculateOp(st, replica, key, now);
    else return BAD_ARG;
    if (r != OK) return r;
  }
  return <i32>count;
}

/** Counts one block of a replica's run on its best tier (gpu > cpu > disk; none: speculative). */
// @ts-ignore: decorator
@inline
function countTier(rp: usize, w: u32): void {
  const t = tierBits(w);
  if (t == 0) return;
  const at = rp + 8 + (<usize>((t & 1) != 0 ? 0 : (t & 2) != 0 ? 1 : 2) << 2);
  store<u32>(at, load<u32>(at) + 1);
}

/**
 * Whether the holders at q (n pairs) have the same words as those at p, in the same order, each with a
 * tier bit — so that each one's liveness depends on its word and the epochs alone, never on its stamp
 * (see isLive). Stamps are not compared: a pair is read as one u64 whose low half is the word, four
 * pairs per check, so a differing list is rejected within its first group.
 */
function sameCleanWords(p: usize, q: usize, n: u32): bool {
  if (load<u32>(p) != load<u32>(q)) return false;
  const TIER_MASK: u64 = u64(7) << TIER_SHIFT;
  let i: u32 = 0;
  for (; i + 4 <= n; i += 4) {
    const pp = p + (<usize>i << PAIR_SHIFT);
    const qp = q + (<usize>i << PAIR_SHIFT);
    const b0 = load<u64>(qp);
    const b1 = load<u64>(qp, 8);
    const b2 = load<u64>(qp, 16);
    const b3 = load<u64>(qp, 24);
    const diff = (load<u64>(pp) ^ b0) | (load<u64>(pp, 8) ^ b1) | (load<u64>(pp, 16) ^ b2) | (load<u64>(pp, 24) ^ b3);
    const untiered = <u32>((b0 & TIER_MASK) == 0) | <u32>((b1 & TIER_MASK) == 0) | <u32>((b2 & TIER_MASK) == 0) | <u32>((b3 & TIER_MASK) == 0);
    if ((<u32>diff | untiered) != 0) return false;
  }
  for (; i < n; i++) {
    const w = load<u32>(q + (<usize>i << PAIR_SHIFT));
    if (load<u32>(p + (<usize>i << PAIR_SHIFT)) != w || tierBits(w) == 0) return false;
  }
  return true;
}

/**
 * The end of a run of blocks whose holder words equal those of block `refBlock` (at refHp, refN pairs):
 * each replica that advanced at refBlock — (gen, depth) = (g, refBlock + 1) and a live word there, the
 * test the block-by-block walk makes — advanced at each of the `run` blocks too, on the same tier.
 * At most `active` (the number that advanced at refBlock) replicas match, so the pass stops there.
 */
function flushRun(reps: usize, epochs: usize, refHp: usize, refN: u32, g: u32, refBlock: u32, run: u32, active: u32, now: u32): void {
  const want = u64(g) | (u64(refBlock + 1) << 32);
  const moved = u64(g) | (u64(refBlock + 1 + run) << 32);
  let done: u32 = 0;
  for (let i: u32 = 0; i < refN && done < active; i++) {
    const w = load<u32>(refHp + (<usize>i << PAIR_SHIFT));
    const rp = reps + <usize>(w & REPLICA_MASK) * REPLICA_BYTES;
    if (load<u64>(rp) != want) continue;
    if (!isLive(epochs, w, load<u32>(refHp + (<usize>i << PAIR_SHIFT), 4), now)) continue;
    store<u64>(rp, moved);
    const t = tierBits(w);
    if (t != 0) {
      const at = rp + 8 + (<usize>((t & 1) != 0 ? 0 : (t & 2) != 0 ? 1 : 2) << 2);
      store<u32>(at, load<u32>(at) + run);
    }
    done++;
  }
}

/** Touches the home slots of blocks [from, to) of the chain (one batch of independent misses). */
// @ts-ignore: decorator
@inline
function touchHomes(hashesPtr: usize, from: u32, to: u32, table: usize, shift: u32): void {
  let sink: u32 = 0;
  for (let j = from; j < to; j++) sink ^= load<u32>(slotPtr(table, home(load<u64>(hashesPtr + (<usize>j << 3)), shift)), SLOT_PAIR);
  touchSink ^= sink;
}

/**
 * Locates blocks [from, to) within their home lines (touched a stage earlier) and records each in the
 * ring: its slot, ABSENT, or CONTINUE | the first slot of the next line when the probe run leaves the
 * home line — that line is touched now, as is the holder chunk of a block found with several holders,
 * so the walk a stage later finds both in cache. Returns the first absent block, or `to`.
 */
function locate(hashesPtr: usize, from: u32, to: u32, table: usize, shift: u32, mask: u32, arena: usize): u32 {
  let sink: u32 = 0;
  let j = from;
  for (; j < to; j++) {
    const key = load<u64>(hashesPtr + (<usize>j << 3));
    let s = home(key, shift);
    const last = s | (SLOTS_PER_LINE - 1); // last slot of the home line (cap is a multiple of 4)
    let state: u32 = ABSENT;
    for (;;) {
      const p = slotPtr(table, s);
      const a = load<u32>(p, SLOT_PAIR);
      if (a == EMPTY) {
        state = ABSENT;
        break;
      }
      if (load<u64>(p) == key) {
        state = s;
        if ((a & OVERFLOW) != 0) sink ^= load<u32>(arena + (<usize>(a & ~OVERFLOW) << PAIR_SHIFT));
        break;
      }
      if (s == last) {
        state = CONTINUE | ((last + 1) & mask);
        sink ^= load<u32>(slotPtr(table, (last + 1) & mask), SLOT_PAIR);
        break;
      }
      s++;
    }
    store<u32>(RING + (<usize>(j & RING_MASK) << 2), state);
    if (state == ABSENT) break;
  }
  touchSink ^= sink;
  return j;
}

/**
 * Leading-block match of a chain of `count` u64 hashes at `hashesPtr`: for each replica holding block 0
 * (live), in block 0's holder order, 5 u32 words [replica, depth, gpu, cpu, disk] at `outPtr` (room for
 * `outCap` words). Returns the number of replicas, OUT_TOO_SMALL, or BAD_ARG (bad state or region).
 * Reads the index only (its match scratch aside).
 *
 * Blocks 1 … go through a three-stage pipeline over chunks of MATCH_CHUNK blocks: while chunk i is
 * walked, chunk i + 1 is located (its home lines are in cache by then) and the home lines of chunk
 * i + 2 are touched. The walk itself is the reference's, in the reference's order; only reads move
 * earlier. Once a single replica is still advancing (the usual case after the first blocks: one
 * replica holds the rest of the prompt), the walk runs a lean loop for it: one masked compare finds
 * that replica's holder in its current epoch, and its depth and counts stay in locals.
 */
export function indexMatch(statePtr: usize, hashesPtr: usize, count: u32, now: u32, outPtr: usize, outCap: u32): i32 {
  if (!validState(statePtr)) return BAD_ARG;
  if (count == 0) return 0;
  const st = stateOf(statePtr);
  const outBytes = u64(outCap) << 2;
  if (!inMemory(hashesPtr, u64(count) << 3) || !inMemory(outPtr, outBytes) || overlapsIndex(st, outPtr, outBytes)) return BAD_ARG;
  const s0 = find(st, load<u64>(hashesPtr));
  if (s0 < 0) return 0;

  const table = st.table;
  const shift = st.shift;
  const mask = st.cap - 1;
  const arena = st.arena;
  const epochs = st.epochs;
  const reps = st.replicas;
  // Stage "touch" for chunk 0 runs while block 0's holders are read.
  let touched = min(count, 1 + MATCH_CHUNK);
  touchHomes(hashesPtr, 1, touched, table, shift);

  let g = st.matchGen + 1;
  if (g == 0) {
    for (let r: u32 = 0; r < st.replicaCapacity; r++) store<u32>(reps + <usize>r * REPLICA_BYTES, 0);
    g = 1;
  }
  st.matchGen = g;

  // Block 0: every live holder starts with depth 1.
  let found: u32 = 0;
  let lastReplica: u32 = 0; // the replica that advanced last (the lone one when one advanced)
  {
    const p = slotPtr(table, <u32>s0);
    const hp = holdersAt(arena, p);
    const n = holderCount(p);
    for (let i: u32 = 0; i < n; i++) {
      const w = load<u32>(hp + (<usize>i << PAIR_SHIFT));
      if (!isLive(epochs, w, load<u32>(hp + (<usize>i << PAIR_SHIFT), 4), now)) continue;
      const r = w & REPLICA_MASK;
      if ((found + 1) * MATCH_STRIDE > outCap) return OUT_TOO_SMALL;
      store<u32>(outPtr + <usize>found * (MATCH_STRIDE << 2), r);
      found++;
      lastReplica = r;
      const rp = reps + <usize>r * REPLICA_BYTES;
      store<u64>(rp, u64(g) | (u64(1) << 32)); // gen, depth 1
      store<u64>(rp, 0, 8);
      store<u32>(rp, 0, 16);
      countTier(rp, w);
    }
  }

  // Blocks 1 …: a replica advances only if it held every block before; stop when nobody advances
  // or at the first block the index does not have.
  let active = found;
  // Runs of identical holder lists (a prefix the fleet stored block by block: each block's holders in
  // the same order, with the same tiers and epochs): when block j's holder words equal those of the
  // last block walked one by one (ref), all with a tier bit, each holder is live at j exactly when it
  // was at ref, so the replicas advancing at j are those that advanced at ref, on the same tier, and
  // `active` stays. Such blocks are only counted (`run`); flushRun applies them before the next block
  // walked one by one (whose candidates need their true depth), before lone mode, and at the end.
  let refHp: usize = holdersAt(arena, slotPtr(table, <u32>s0));
  let refN: u32 = holderCount(slotPtr(table, <u32>s0));
  let refBlock: u32 = 0;
  let run: u32 = 0;
  // Lone mode (active = 1): the replica, its word bits that must match (id and current epoch), its
  // depth and tier counts (written back to its record at the end).
  let lone = false;
  let loneRp: usize = 0;
  let loneKey: u32 = 0;
  let loneDepth: u32 = 0;
  let loneGpu: u32 = 0;
  let loneCpu: u32 = 0;
  let loneDisk: u32 = 0;
  let stopAt = count; // first block known to be absent (or count)
  let located: u32 = 1;
  if (active > 0 && count > 1) {
    const next = min(count, touched + MATCH_CHUNK);
    touchHomes(hashesPtr, touched, next, table, shift);
    touched = next;
    located = min(count, 1 + MATCH_CHUNK);
    stopAt = locate(hashesPtr, 1, located, table, shift, mask, arena);
    if (stopAt == located) stopAt = count;
  }
  let b: u32 = 1;
  while (active > 0 && b < stopAt) {
    const end = min(stopAt, b + MATCH_CHUNK);
    if (touched < stopAt) {
      const next = min(stopAt, touched + MATCH_CHUNK);
      touchHomes(hashesPtr, touched, next, table, shift);
      touched = next;
    }
    if (located < stopAt) {
      const next = min(stopAt, located + MATCH_CHUNK);
      const at = locate(hashesPtr, located, next, table, shift, mask, arena);
      if (at < next) stopAt = at;
      located = next;
    }
    let j = b;
    for (; j < end; j++) {
      if (active == 1 && !lone) {
        // From here on only this replica can advance (the advancing set never grows).
        if (run != 0) {
          flushRun(reps, epochs, refHp, refN, g, refBlock, run, active, now);
          run = 0;
        }
        lone = true;
        loneRp = reps + <usize>lastReplica * REPLICA_BYTES;
        loneKey = lastReplica | (<u32>load<u8>(epochs + <usize>lastReplica) << EPOCH_SHIFT);
        loneDepth = load<u32>(loneRp, 4);
        loneGpu = load<u32>(loneRp, 8);
        loneCpu = load<u32>(loneRp, 12);
        loneDisk = load<u32>(loneRp, 16);
      }
      let s = load<u32>(RING + (<usize>(j & RING_MASK) << 2));
      let p: usize;
      let a: u32;
      if ((s & CONTINUE) != 0) {
        // The probe run left the home line: finish it (its next line was touched by locate).
        const key = load<u64>(hashesPtr + (<usize>j << 3));
        s &= ~CONTINUE;
        p = slotPtr(table, s);
        a = load<u32>(p, SLOT_PAIR);
        while (a != EMPTY && load<u64>(p) != key) {
          s = (s + 1) & mask;
          p = slotPtr(table, s);
          a = load<u32>(p, SLOT_PAIR);
        }
        if (a == EMPTY) break; // absent: nobody advances past j
      } else {
        p = slotPtr(table, s);
        a = load<u32>(p, SLOT_PAIR);
      }
      if (lone) {
        // The lone replica's holder in its current epoch (a replica holds a block at most once).
        let w = a;
        let stamp = load<u32>(p, SLOT_PAIR + 4);
        if ((a & OVERFLOW) != 0) {
          const hp = arena + (<usize>(a & ~OVERFLOW) << PAIR_SHIFT);
          const n = load<u32>(p, SLOT_PAIR + 4) & COUNT_MASK;
          let i: u32 = 0;
          while (i < n && (load<u32>(hp + (<usize>i << PAIR_SHIFT)) & LONE_MASK) != loneKey) i++;
          if (i == n) break;
          w = load<u32>(hp + (<usize>i << PAIR_SHIFT));
          stamp = load<u32>(hp + (<usize>i << PAIR_SHIFT), 4);
        } else if ((a & LONE_MASK) != loneKey) {
          break;
        }
        const t = tierBits(w);
        if (t == 0 && !((w & SPEC_BIT) != 0 && age(now, stamp) < 0)) break; // expired speculative
        loneDepth = j + 1;
        // countTier without branches: the best tier of the block.
        loneGpu += t & 1;
        loneCpu += (t >>> 1) & ~t & 1;
        loneDisk += (t >>> 2) & ~(t | (t >>> 1)) & 1;
        continue;
      }
      const hp = (a & OVERFLOW) == 0 ? p + SLOT_PAIR : arena + (<usize>(a & ~OVERFLOW) << PAIR_SHIFT);
      const n: u32 = (a & OVERFLOW) == 0 ? 1 : load<u32>(p, SLOT_PAIR + 4) & COUNT_MASK;
      if (n == refN && sameCleanWords(refHp, hp, n)) {
        run++; // as ref: the same replicas advance, on the same tiers
        continue;
      }
      if (run != 0) {
        flushRun(reps, epochs, refHp, refN, g, refBlock, run, active, now);
        run = 0;
      }
      refHp = hp;
      refN = n;
      refBlock = j;
      const want = u64(g) | (u64(j) << 32); // gen of this match, depth j (held blocks 0 … j−1)
      let advanced: u32 = 0;
      for (let i: u32 = 0; i < n; i++) {
        const w = load<u32>(hp + (<usize>i << PAIR_SHIFT));
        const r = w & REPLICA_MASK;
        const rp = reps + <usize>r * REPLICA_BYTES;
        if (load<u64>(rp) != want) continue;
        if (!isLive(epochs, w, load<u32>(hp + (<usize>i << PAIR_SHIFT), 4), now)) continue;
        // One u64 store (gen, depth j + 1): the next block's u64 check then forwards from the store
        // buffer; a u32 store of the depth alone would stall that wider load on every block.
        store<u64>(rp, want + (u64(1) << 32));
        countTier(rp, w);
        advanced++;
        lastReplica = r;
      }
      active = advanced;
      if (advanced == 0) break;
    }
    if (j < end) break; // stopped inside the chunk: nobody advanced past j, or block j is absent
    b = end;
  }
  if (run != 0) flushRun(reps, epochs, refHp, refN, g, refBlock, run, active, now);
  if (lone) {
    store<u32>(loneRp, loneDepth, 4);
    store<u32>(loneRp, loneGpu, 8);
    store<u32>(loneRp, loneCpu, 12);
    store<u32>(loneRp, loneDisk, 16);
  }

  for (let k: u32 = 0; k < found; k++) {
    const at = outPtr + <usize>k * (MATCH_STRIDE << 2);
    const rp = reps + <usize>load<u32>(at) * REPLICA_BYTES;
    store<u64>(at, load<u64>(rp, 4), 4); // depth, gpu
    store<u64>(at, load<u64>(rp, 12), 12); // cpu, disk
  }
  return <i32>found;
}

/**
 * Writes the counters of STAT_NAMES (9 f64: entries, blocks, slots, arenaPairs, bytes, evictions,
 * deadRemoved, sweeps, speculative) at `outPtr`. Returns OK or BAD_ARG.
 */
export function indexStats(statePtr: usize, outPtr: usize): i32 {
  if (!validState(statePtr)) return BAD_ARG;
  const st = stateOf(statePtr);
  const bytes = u64(STATS_LENGTH) << 3;
  if (!inMemory(outPtr, bytes) || overlapsIndex(st, outPtr, bytes)) return BAD_ARG;
  store<f64>(outPtr, f64(st.entries));
  store<f64>(outPtr, f64(st.blocks), 8);
  store<f64>(outPtr, f64(st.cap), 16);
  store<f64>(outPtr, f64(st.arenaTop), 24);
  // The reference's estimate: table 16 B a slot, arena 4 B a word, 22 B a replica (epoch, wipes,
  // depth, gen, 3 counts) — also this backend's regions, but for the fixed header of the meta region.
  store<f64>(outPtr, f64(st.cap) * 16 + f64(st.arenaWords) * 4 + f64(st.replicaCapacity) * 22, 32);
  store<f64>(outPtr, f64(st.evictions), 40);
  store<f64>(outPtr, f64(st.deadRemoved), 48);
  store<f64>(outPtr, f64(st.sweeps), 56);
  store<f64>(outPtr, f64(st.speculative), 64);
  return OK;
}

/**
 * Every live holder as 4 u32 words [hash lo, hash hi, replica, tiers | speculative << 3], in slot order
 * then holder order, at `outPtr` (room for `capHolders` holders; the rest are counted, not written).
 * Returns the number of live holders, or BAD_ARG. Call with capHolders = 0 to size the buffer.
 */
export function indexDump(statePtr: usize, now: u32, outPtr: usize, capHolders: u32): i32 {
  if (!validState(statePtr)) return BAD_ARG;
  const st = stateOf(statePtr);
  const outBytes = u64(capHolders) << 4;
  if (!inMemory(outPtr, outBytes) || overlapsIndex(st, outPtr, outBytes)) return BAD_ARG;
  const table = st.table;
  const arena = st.arena;
  const epochs = st.epochs;
  let total: u32 = 0;
  for (let s: u32 = 0; s < st.cap; s++) {
    const p = slotPtr(table, s);
    if (load<u32>(p, SLOT_PAIR) == EMPTY) continue;
    const hp = holdersAt(arena, p);
    const n = holderCount(p);
    for (let i: u32 = 0; i < n; i++) {
      const w = load<u32>(hp + (<usize>i << PAIR_SHIFT));
      if (!isLive(epochs, w, load<u32>(hp + (<usize>i << PAIR_SHIFT), 4), now)) continue;
      if (total < capHolders) {
        const at = outPtr + (<usize>total << 4);
        store<u64>(at, load<u64>(p));
        store<u32>(at, w & REPLICA_MASK, 8);
        store<u32>(at, tierBits(w) | (specOnly(w) ? 8 : 0), 12);
      }
      total++;
    }
  }
  return <i32>total;
}

/** Releases the index's regions; a later call with the same pointer returns BAD_ARG (until reused). */
export function indexFree(statePtr: usize): i32 {
  if (!validState(statePtr)) return BAD_ARG;
  const st = stateOf(statePtr);
  hostFree(st.tableRegion);
  hostFree(st.arena);
  st.magic = 0;
  hostFree(statePtr);
  return OK;
}
