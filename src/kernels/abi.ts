/**
 * The kernel ABI: one contract, three implementations (wasm, native, js).
 *
 * Every backend implements {@link KernelBackend} with bit-identical results. The WebAssembly module
 * (`assembly/index.ts`) and the N-API addon (`native/addon.cc`) export the same flat function names
 * listed in {@link ABI_EXPORTS}; `src/kernels/wasm.ts` and `src/kernels/native.ts` adapt them to this
 * interface, `src/kernels/js/` is the readable reference (the oracle).
 *
 * Conventions shared by every backend:
 * - 64-bit values (hashes, keys, seeds) are unsigned and travel as `bigint` or `BigUint64Array`.
 * - Expected failures on the hot path return a negative {@link Status}; nothing throws and nothing traps.
 *   Validation with typed errors happens one level up, on the control path (`src/hashing/`).
 * - Outputs are written into caller-provided typed arrays; hot-path calls allocate nothing.
 * - Lookups that find no node write {@link NO_NODE} (-1).
 *
 * Kernel semantics (the normative text; the js reference implements exactly this):
 *
 * XXH64: the standard 64-bit xxHash (Collet), little-endian input, 64-bit seed.
 *
 * Prefix block hashing (token mode): tokens are u32; block b covers tokens [b·B, (b+1)·B), only full
 * blocks are hashed (n = floor(len / B)); its bytes are the tokens in little-endian order (4·B bytes).
 * h[0] = XXH64(bytes(block 0), seed); h[b] = XXH64(bytes(block b), h[b−1]). Byte mode: the same over a
 * byte array, B bytes a block. 1 ≤ B ≤ 1024 (else BLOCK_SIZE); out.length ≥ n (else OUT_TOO_SMALL).
 * Returns n.
 *
 * Batch: prompt i is tokens[offsets[i], offsets[i+1]) for i < seeds.length (offsets has seeds.length + 1
 * entries, non-decreasing, last ≤ tokens.length; else BAD_ARG); its chain is seeded with seeds[i] and
 * written at out[outOffsets[i] ..], with outOffsets[0] = 0 and outOffsets[i+1] = outOffsets[i] + n_i
 * (outOffsets has seeds.length + 1 entries, else BAD_ARG). Returns the total number of blocks. When out
 * is too small nothing is guaranteed about out except that nothing past its end is written.
 *
 * Jump consistent hash (Lamping & Veach 2014, reference C++): b = −1, j = 0; while j < buckets:
 * b = j; key = key·2862933555777941757 + 1 (mod 2^64); j = floor((b + 1) · (2^31 / ((key >> 33) + 1)))
 * in IEEE double arithmetic, in exactly that order of operations. buckets ≥ 1 (else EMPTY); above
 * 2^31 − 1 the result is unspecified (the host refuses such counts). Returns b.
 *
 * Ring (ketama style): points u32[n] sorted ascending (ties in any order the host chose), nodes i32[n]
 * (the node id of each point), index u32[2^bits + 1] with index[p] = first i with points[i] ≥ p·2^(32−bits)
 * (index[2^bits] = n), 1 ≤ bits ≤ 24. A key's ring position is h = low 32 bits of the key. Lookup returns
 * nodes[i] for the first i with points[i] ≥ h, wrapping to nodes[0] when there is none. n = 0 → NO_NODE.
 * The index only accelerates the search: the result must equal a plain lower-bound binary search.
 *
 * Maglev (Eisenbud et al., NSDI 2016, §3.4 Pseudocode 1, with weighted turns): M (table size, prime,
 * n ≤ M ≤ 2^26), per node offset[i] < M, 1 ≤ skip[i] < M, weight[i] ≥ 1 (u32). pos[i] = offset[i],
 * credit[i] = 0, entry[*] = −1, wmax = max weight, filled = 0. Repeat rounds until filled = M; in a round
 * for i = 0 … n−1: credit[i] += weight[i]; if credit[i] ≥ wmax: credit[i] −= wmax; while entry[pos[i]] ≥ 0:
 * pos[i] = (pos[i] + skip[i]) mod M; entry[pos[i]] = i; pos[i] = (pos[i] + skip[i]) mod M; filled += 1;
 * stop as soon as filled = M. A node whose walk makes M probes without finding a free slot (possible
 * only when M is not prime) makes the build return BAD_ARG. Returns M, or BAD_ARG (n = 0, M < n, M > 2^26, offset/skip/weight out of
 * range; primality is the host's check). Lookup: table[key mod M] (u64 modulo).
 *
 * Weighted rendezvous (HRW, Thaler & Ravishankar; weights after Schindelhauer & Schomaker's logarithmic
 * method): for node i, x = mix64(key XOR nodeHash[i]); k = x >> 12 (52 bits); u = (2k + 1) · 2^−53
 * (0 < u < 1); score = weight[i] / (0 − lnp(u)). The node with the largest score wins; ties go to the
 * lowest index (strict >). n = 0 → NO_NODE. mix64 is the SplitMix64 finalizer:
 *   z ^= z >> 30; z *= 0xbf58476d1ce4e5b9; z ^= z >> 27; z *= 0x94d049bb133111eb; z ^= z >> 31.
 * lnp is a portable natural logarithm so every backend gets the same bits (Math.log, libm and the
 * AssemblyScript std differ in the last ulp): for a positive normal double x with unbiased exponent e
 * and mantissa m in [1, 2) (exponent bits replaced by 1023): if m > 1.4142135623730951 { m = m · 0.5;
 * e = e + 1 }; s = (m − 1) / (m + 1); z = s · s; p = C[11]; for k = 10 … 0: p = p · z + C[k], where
 * C[k] = 1.0 / (2k + 1) (IEEE division); return e · 0.6931471805599453 + 2 · s · p — each step one IEEE
 * operation in that order (no fused multiply-add).
 *
 * Prefix index (ABI 2): see src/kernels/js/prefix-index.ts, the executable specification. On any
 * negative status nothing is guaranteed about `out` (the reference may have written part of it).
 * indexApply may also return NO_MEMORY when a compiled backend cannot grow; the records before the
 * failing one stay applied and the index stays consistent.
 *
 * Return values: single lookups return a node id, NO_NODE for an empty table, or EMPTY (jump with
 * buckets < 1). Batch lookups return keys.length, or OUT_TOO_SMALL when out is shorter than keys (and
 * EMPTY for jumpBatch with buckets < 1). When several statuses apply, the first check in the reference
 * wins. Table shapes (ring index length, node ids in range, one weight per node hash) are the host's
 * guarantee; compiled backends may return BAD_ARG for malformed tables rather than read out of bounds.
 * 64-bit arguments are taken mod 2^64 (the host refuses values outside 0 … 2^64−1).
 *
 * Bounded loads (Mirrokni, Thorup & Zadimoghaddam 2018) over a ring or a Maglev table: loads u32[nodes]
 * (updated in place), shares f64[nodes] (node i's share of capacity; 1/nodes when unweighted), c > 1.
 * total = Σ loads (as a double) at the start. For each key in order: m = total + 1; walk from the
 * key's home slot (ring: the lookup's point index; Maglev: key mod M) forward with wrap-around, at most
 * one full turn (n points or M entries); the first slot whose node j has loads[j] + 1 ≤ ceil(c · m ·
 * shares[j]) (computed as ceil((c · m) · shares[j])) takes the key: out[k] = j, loads[j] += 1,
 * total += 1. If no slot qualifies, out[k] = NO_NODE and nothing changes. Returns the number of keys
 * that got NO_NODE (≥ 0), or a negative status: BAD_ARG when loads or shares do not have nodeCount
 * entries or c is not a finite number > 1; OUT_TOO_SMALL when out is shorter than keys.
 */

/** Bumped whenever any kernel's semantics or signature changes; every backend must report the same. */
export const ABI_VERSION = 2;

/** Negative status codes shared by all backends (assembly/status.ts and native/kernels.h mirror them). */
export const Status = {
  OK: 0,
  BLOCK_SIZE: -1,
  OUT_TOO_SMALL: -2,
  EMPTY: -3,
  BAD_ARG: -4,
  NO_MEMORY: -5,
} as const;
export type StatusCode = (typeof Status)[keyof typeof Status];

/** Written to lookup outputs when no node qualifies. */
export const NO_NODE = -1;

export const MIN_BLOCK_SIZE = 1;
export const MAX_BLOCK_SIZE = 1024;
export const MAX_MAGLEV_SIZE = 1 << 26;
export const MAX_RING_INDEX_BITS = 24;

export type BackendName = 'wasm' | 'native' | 'js';

/** A table living in a backend (for wasm: in its linear memory). Opaque outside the backend. */
export interface KernelTable {
  readonly backend: BackendName;
  readonly kind: 'ring' | 'maglev' | 'rendezvous';
  /** Number of distinct nodes (ids 0 … nodeCount−1). */
  readonly nodeCount: number;
  /** Points on the ring, entries of the Maglev table, or nodes for rendezvous. */
  readonly size: number;
}

/** The flat names every compiled backend exports (wasm and native alike). */
export const ABI_EXPORTS = [
  'abiVersion',
  'xxh64',
  'hashTokens',
  'hashBytes',
  'hashTokensBatch',
  'jump',
  'jumpBatch',
  'ringLookup',
  'ringLookupBatch',
  'ringAssignBounded',
  'maglevBuild',
  'maglevLookup',
  'maglevLookupBatch',
  'maglevAssignBounded',
  'rendezvousLookup',
  'rendezvousLookupBatch',
  // ABI version 2: the prefix index.
  'indexCreate',
  'indexApply',
  'indexMatch',
  'indexStats',
  'indexDump',
  'indexFree',
] as const;

/** The prefix-index exports (part of ABI_EXPORTS since ABI version 2; kept for the loaders' checks). */
export const INDEX_EXPORTS = ['indexCreate', 'indexApply', 'indexMatch', 'indexStats', 'indexDump', 'indexFree'] as const;

/**
 * Prefix-index configuration (see src/kernels/js/prefix-index.ts, the executable specification of the
 * index kernel, for the layout and every step).
 */
export interface PrefixIndexConfig {
  /** Most (block, replica) holders stored; beyond it the index evicts (≥ 1). */
  maxEntries: number;
  /** Replica ids are 0 … replicaCapacity − 1 (≤ 0xFFFFF). */
  replicaCapacity: number;
  /** Seed of the eviction sampler (u32). */
  seed: number;
  /** Time to live of speculative entries, ms (u32). */
  ttlMs: number;
}

/** An index living in a backend. Opaque outside the backend. */
export interface PrefixIndexHandle {
  readonly backend: BackendName;
  readonly config: Readonly<PrefixIndexConfig>;
}

export interface KernelBackend {
  readonly name: BackendName;
  abiVersion(): number;

  /** One-shot XXH64 (control path; allocates its bigint result). */
  xxh64(bytes: Uint8Array, seed: bigint): bigint;
  hashTokens(tokens: Uint32Array, blockSize: number, seed: bigint, out: BigUint64Array): number;
  hashBytes(bytes: Uint8Array, blockSize: number, seed: bigint, out: BigUint64Array): number;
  hashTokensBatch(
    tokens: Uint32Array,
    offsets: Uint32Array,
    seeds: BigUint64Array,
    blockSize: number,
    out: BigUint64Array,
    outOffsets: Uint32Array,
  ): number;

  jump(key: bigint, buckets: number): number;
  jumpBatch(keys: BigUint64Array, buckets: number, out: Int32Array): number;

  /** Copies (wasm) or keeps (js, native) the ring arrays; the caller must not mutate them afterwards. */
  ringCreate(points: Uint32Array, nodes: Int32Array, index: Uint32Array, bits: number, nodeCount: number): KernelTable;
  ringLookup(table: KernelTable, key: bigint): number;
  ringLookupBatch(table: KernelTable, keys: BigUint64Array, out: Int32Array): number;
  ringAssignBounded(
    table: KernelTable,
    keys: BigUint64Array,
    loads: Uint32Array,
    shares: Float64Array,
    c: number,
    out: Int32Array,
  ): number;

  /** Builds the table; returns a negative Status instead of a table on bad arguments. */
  maglevBuild(offsets: Uint32Array, skips: Uint32Array, weights: Uint32Array, size: number): KernelTable | number;
  /** A copy of the built table (tests, quality reports). */
  maglevEntries(table: KernelTable): Int32Array;
  maglevLookup(table: KernelTable, key: bigint): number;
  maglevLookupBatch(table: KernelTable, keys: BigUint64Array, out: Int32Array): number;
  maglevAssignBounded(
    table: KernelTable,
    keys: BigUint64Array,
    loads: Uint32Array,
    shares: Float64Array,
    c: number,
    out: Int32Array,
  ): number;

  rendezvousCreate(nodeHashes: BigUint64Array, weights: Float64Array): KernelTable;
  rendezvousLookup(table: KernelTable, key: bigint): number;
  rendezvousLookupBatch(table: KernelTable, keys: BigUint64Array, out: Int32Array): number;

  /** Releases a table's memory (wasm); a no-op elsewhere. Using a freed table is a caller bug. */
  free(table: KernelTable): void;

  /** Creates an empty prefix index (control path; the host validated the config). */
  indexCreate(config: PrefixIndexConfig): PrefixIndexHandle;
  /** Applies `count` records of 4 u32 words; returns count, or BAD_ARG at the first invalid record. */
  indexApply(index: PrefixIndexHandle, records: Uint32Array, count: number, nowMs: number): number;
  /** Leading-block match of a chain; 5 words per matched replica into out; returns replicas or OUT_TOO_SMALL. */
  indexMatch(index: PrefixIndexHandle, hashes: BigUint64Array, count: number, nowMs: number, out: Uint32Array): number;
  /** Counters in the order of STAT_NAMES (js/prefix-index.ts). */
  indexStats(index: PrefixIndexHandle, out: Float64Array): void;
  /**
   * Every live holder as 4 words [hash lo, hash hi, replica, tiers | speculative << 3], in slot order
   * (control path, tests).
   */
  indexDump(index: PrefixIndexHandle, nowMs: number): Uint32Array;
  /** Releases the index's memory. Using a freed index is a caller bug. */
  indexFree(index: PrefixIndexHandle): void;
}
