/**
 * The WebAssembly backend: `KernelBackend` on top of the flat exports of dist/wasm/dystro.wasm (built
 * from assembly/ by `npm run build:wasm`).
 *
 * The module allocates nothing; this host owns every byte of linear memory above `heapBase()`:
 * - a small first-fit allocator ({@link LinearHeap}) hands out persistent regions for tables (ring
 *   points/nodes/index, Maglev entries, rendezvous hashes/weights), released by `free(table)`;
 * - one scratch region, reused by every call for its inputs and outputs and grown geometrically, so a
 *   steady-state call copies in with `TypedArray.set`, calls the kernel, copies out with a plain loop,
 *   and allocates nothing on the JS heap (no closures, no subarray views, no arrays).
 * Growing memory detaches every view of the old buffer (TOOLCHAIN.md §4), so the views are rebuilt
 * right after each `memory.grow`, the only place the buffer changes. The prefix index grows (table and
 * arena doubling): its kernels call back into this allocator through the imports `env.hostAlloc` and
 * `env.hostFree`, so memory may grow *during* an index call; the views are rebuilt inside that callback
 * and every method reads `this.u32` & co. afresh after a kernel call, never a view saved before it.
 *
 * Plain `WebAssembly.instantiate` on raw exports (no @assemblyscript/loader): an i64 result comes back
 * as a signed BigInt and is mapped to u64 with `BigInt.asUintN(64, …)`; bigint arguments wrap mod 2^64
 * on the way in, which is the reference's `key & (2^64 − 1)`.
 */
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import {
  ABI_EXPORTS,
  ABI_VERSION,
  INDEX_EXPORTS,
  MAX_MAGLEV_SIZE,
  MAX_RING_INDEX_BITS,
  NO_NODE,
  Status,
  type KernelBackend,
  type KernelTable,
  type PrefixIndexConfig,
  type PrefixIndexHandle,
} from './abi.js';
import { MATCH_STRIDE, RECORD_WORDS, STATS_LENGTH } from './js/prefix-index.js';

/** The compiled module; the same relative path works from src/kernels/ (tsx) and dist/kernels/ (tsc). */
const WASM_URL = new URL('../../dist/wasm/dystro.wasm', import.meta.url);

/** Bytes in one WebAssembly page. */
const PAGE_BYTES = 65536;
/** Every allocation starts on a 16-byte boundary (u64/f64 loads are naturally aligned). */
const ALIGN_BYTES = 16;
/** Smallest scratch region (bytes); it then doubles as needed. */
const MIN_SCRATCH_BYTES = 64 * 1024;
/** Memory grows at least by the current size, capped at this many pages (16 MiB) beyond what is needed. */
const MAX_EXTRA_GROW_PAGES = 256;
/** Largest bucket count jump() accepts (abi.ts: at most 2^31 − 1, the i32 range of the kernel). */
const MAX_JUMP_BUCKETS = 0x7fffffff;
/** Records copied into scratch per indexApply kernel call (16 bytes each: 256 KiB of scratch at most). */
const APPLY_CHUNK_RECORDS = 16384;
/** Batches up to this many words are copied with a loop rather than through a subarray view. */
const SMALL_COPY_WORDS = 64;

/**
 * The part of the WebAssembly JS API used here, declared locally: the project compiles against the
 * ES2022 library and @types/node, neither of which declares the WebAssembly namespace, and the global
 * may be absent altogether (node --jitless).
 */
interface WasmMemory {
  readonly buffer: ArrayBuffer;
  grow(deltaPages: number): number;
}
interface WasmInstance {
  readonly exports: Record<string, unknown>;
}
interface WasmRuntime {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => WasmInstance;
  Memory: abstract new (...args: never[]) => WasmMemory;
  compile(bytes: Uint8Array): Promise<object>;
  instantiate(module: object, imports: object): Promise<WasmInstance>;
}

/** The raw exports of dystro.wasm (pointers are byte offsets into `memory`; i64 travel as bigint). */
interface WasmExports {
  readonly memory: WasmMemory;
  abiVersion(): number;
  heapBase(): number;
  xxh64(ptr: number, len: number, seed: bigint): bigint;
  hashTokens(tokensPtr: number, tokenCount: number, blockSize: number, seed: bigint, outPtr: number, outCap: number): number;
  hashBytes(bytesPtr: number, byteCount: number, blockSize: number, seed: bigint, outPtr: number, outCap: number): number;
  hashTokensBatch(
    tokensPtr: number,
    tokenCount: number,
    offsetsPtr: number,
    offsetsCount: number,
    seedsPtr: number,
    seedCount: number,
    blockSize: number,
    outPtr: number,
    outCap: number,
    outOffsetsPtr: number,
    outOffsetsCount: number,
  ): number;
  jump(key: bigint, buckets: number): number;
  jumpBatch(keysPtr: number, count: number, buckets: number, outPtr: number, outCap: number): number;
  ringLookup(pointsPtr: number, nodesPtr: number, n: number, indexPtr: number, bits: number, key: bigint): number;
  ringLookupBatch(
    pointsPtr: number,
    nodesPtr: number,
    n: number,
    indexPtr: number,
    bits: number,
    keysPtr: number,
    count: number,
    outPtr: number,
    outCap: number,
  ): number;
  ringAssignBounded(
    pointsPtr: number,
    nodesPtr: number,
    n: number,
    indexPtr: number,
    bits: number,
    nodeCount: number,
    keysPtr: number,
    count: number,
    loadsPtr: number,
    loadsCount: number,
    sharesPtr: number,
    sharesCount: number,
    c: number,
    outPtr: number,
    outCap: number,
  ): number;
  maglevBuild(
    offsetsPtr: number,
    skipsPtr: number,
    weightsPtr: number,
    n: number,
    size: number,
    posScratchPtr: number,
    creditScratchPtr: number,
    tablePtr: number,
  ): number;
  maglevLookup(tablePtr: number, size: number, key: bigint): number;
  maglevLookupBatch(tablePtr: number, size: number, keysPtr: number, count: number, outPtr: number, outCap: number): number;
  maglevAssignBounded(
    tablePtr: number,
    size: number,
    nodeCount: number,
    keysPtr: number,
    count: number,
    loadsPtr: number,
    loadsCount: number,
    sharesPtr: number,
    sharesCount: number,
    c: number,
    outPtr: number,
    outCap: number,
  ): number;
  rendezvousLookup(hashesPtr: number, weightsPtr: number, n: number, key: bigint): number;
  rendezvousLookupBatch(hashesPtr: number, weightsPtr: number, n: number, keysPtr: number, count: number, outPtr: number, outCap: number): number;
  /** Returns the state pointer, or 0 (replicaCapacity > 0xFFFFF or no memory). */
  indexCreate(maxEntries: number, replicaCapacity: number, seed: number, ttlMs: number): number;
  indexApply(statePtr: number, recordsPtr: number, count: number, now: number): number;
  indexMatch(statePtr: number, hashesPtr: number, count: number, now: number, outPtr: number, outCap: number): number;
  indexStats(statePtr: number, outPtr: number): number;
  /** Writes up to capHolders holders (4 words each); returns the number of live holders. */
  indexDump(statePtr: number, now: number, outPtr: number, capHolders: number): number;
  indexFree(statePtr: number): number;
}

/**
 * The module's imports. The allocator they call is created after the instance (it needs the instance's
 * memory), so they go through `heap`, set by the backend's constructor.
 */
interface HostLink {
  heap: LinearHeap | null;
}

function hostImports(link: HostLink): object {
  return {
    env: {
      // 0 means "no memory" to the kernel: heapBase > 0, so no region ever starts at 0.
      hostAlloc: (bytes: number): number => {
        const ptr = link.heap === null ? -1 : link.heap.alloc(bytes >>> 0);
        return ptr < 0 ? 0 : ptr;
      },
      hostFree: (ptr: number): void => {
        link.heap?.free(ptr >>> 0);
      },
    },
  };
}

function alignUp(bytes: number, to: number): number {
  return Math.ceil(bytes / to) * to;
}

/**
 * First-fit allocator over [heapBase, end of memory), growing the memory when no free block fits.
 * Used on the control path only (tables, scratch growth): its bookkeeping may allocate JS objects.
 * Free blocks are kept sorted by address and coalesced, so freed tables and old scratch regions are
 * reused by later allocations.
 */
class LinearHeap {
  /** Free blocks as parallel arrays, ascending by start (bytes). */
  private readonly freeStart: number[] = [];
  private readonly freeBytes: number[] = [];
  /** Live allocations: start → size (bytes). */
  private readonly live = new Map<number, number>();

  constructor(
    private readonly memory: WasmMemory,
    base: number,
    private readonly onGrow: () => void,
  ) {
    const start = alignUp(base, ALIGN_BYTES);
    const end = memory.buffer.byteLength;
    if (end > start) this.release(start, end - start);
  }

  /** Start of a region of at least `bytes` bytes (16-byte aligned), or −1 when memory cannot grow. */
  alloc(bytes: number): number {
    const size = Math.max(ALIGN_BYTES, alignUp(bytes, ALIGN_BYTES));
    let at = this.fit(size);
    if (at < 0 && this.grow(size)) at = this.fit(size);
    if (at < 0) return -1;
    const start = this.freeStart[at];
    const left = this.freeBytes[at] - size;
    if (left === 0) {
      this.freeStart.splice(at, 1);
      this.freeBytes.splice(at, 1);
    } else {
      this.freeStart[at] = start + size;
      this.freeBytes[at] = left;
    }
    this.live.set(start, size);
    return start;
  }

  /** Releases a region returned by alloc (unknown or already freed starts are ignored). */
  free(start: number): void {
    const size = this.live.get(start);
    if (size === undefined) return;
    this.live.delete(start);
    this.release(start, size);
  }

  private fit(size: number): number {
    for (let i = 0; i < this.freeStart.length; i++) if (this.freeBytes[i] >= size) return i;
    return -1;
  }

  /** Inserts [start, start + size) into the free list, merging with the neighbours it touches. */
  private release(start: number, size: number): void {
    let i = 0;
    while (i < this.freeStart.length && this.freeStart[i] < start) i++;
    this.freeStart.splice(i, 0, start);
    this.freeBytes.splice(i, 0, size);
    if (i + 1 < this.freeStart.length && start + size === this.freeStart[i + 1]) {
      this.freeBytes[i] += this.freeBytes[i + 1];
      this.freeStart.splice(i + 1, 1);
      this.freeBytes.splice(i + 1, 1);
    }
    if (i > 0 && this.freeStart[i - 1] + this.freeBytes[i - 1] === start) {
      this.freeBytes[i - 1] += this.freeBytes[i];
      this.freeStart.splice(i, 1);
      this.freeBytes.splice(i, 1);
    }
  }

  /**
   * Grows memory so that a block of `size` bytes fits at its end (extending a free block that ends
   * there). Tries a geometric step first (fewer grows, fewer view rebuilds), then the exact need.
   */
  private grow(size: number): boolean {
    const end = this.memory.buffer.byteLength;
    const last = this.freeStart.length - 1;
    const tail = last >= 0 && this.freeStart[last] + this.freeBytes[last] === end ? this.freeBytes[last] : 0;
    const needPages = Math.ceil((size - tail) / PAGE_BYTES);
    const curPages = end / PAGE_BYTES;
    for (const pages of [needPages + Math.min(curPages, MAX_EXTRA_GROW_PAGES), needPages]) {
      try {
        this.memory.grow(pages);
      } catch {
        continue; // RangeError: over the engine's or the module's maximum
      }
      this.release(end, pages * PAGE_BYTES);
      this.onGrow();
      return true;
    }
    return false;
  }
}

/**
 * A table living in this backend's linear memory. Pointers are private to this file; `n` is the live
 * element count, set to 0 by free() so a freed table behaves as an empty one (NO_NODE) instead of
 * reading memory that now belongs to something else.
 */
class WasmTable implements KernelTable {
  readonly backend = 'wasm' as const;
  constructor(
    readonly kind: KernelTable['kind'],
    readonly nodeCount: number,
    readonly size: number,
    /** The backend whose memory holds the table. */
    readonly owner: WasmBackend,
    /** Start of the table's single allocation (what free() releases). */
    readonly base: number,
    /** ring: points u32[n]; maglev: entries i32[M]; rendezvous: node hashes u64[n]. */
    readonly a: number,
    /** ring: nodes i32[n]; rendezvous: weights f64[n]; maglev: unused. */
    readonly b: number,
    /** ring: index u32[2^bits + 1]; otherwise unused. */
    readonly c: number,
    /** ring: index bits, 0 when the search runs without the index. */
    readonly bits: number,
    /** Live element count (points, entries or nodes); 0 once freed. */
    public n: number,
  ) {}

  /** False once free() released the memory (a second free must not release a reused region). */
  live = true;
}

/**
 * A prefix index living in this backend's linear memory: `state` is the kernel's state pointer (its
 * regions are allocated and released by the kernel through the host imports), 0 once freed.
 */
class WasmIndex implements PrefixIndexHandle {
  readonly backend = 'wasm' as const;
  /** Most match output words the kernel can write (one stride per replica). */
  readonly maxOutWords: number;
  constructor(
    readonly config: Readonly<PrefixIndexConfig>,
    readonly owner: WasmBackend,
    public state: number,
  ) {
    this.maxOutWords = config.replicaCapacity * MATCH_STRIDE;
  }
}

/** True when `index` is exactly the accelerator abi.ts defines for sorted `points` and `bits`. */
function indexMatches(points: Uint32Array, index: Uint32Array, bits: number): boolean {
  const buckets = 2 ** bits;
  if (index.length !== buckets + 1) return false;
  for (let i = 1; i < points.length; i++) if (points[i - 1] > points[i]) return false;
  const step = 2 ** (32 - bits); // ring positions per index bucket
  let i = 0;
  for (let p = 0; p < buckets; p++) {
    const lowest = p * step;
    while (i < points.length && points[i] < lowest) i++;
    if (index[p] !== i) return false;
  }
  return index[buckets] === points.length;
}

class WasmBackend implements KernelBackend {
  readonly name = 'wasm' as const;
  private readonly x: WasmExports;
  private readonly heap: LinearHeap;

  // Views of linear memory, rebuilt by refreshViews() after every memory.grow.
  private u8!: Uint8Array;
  private u32!: Uint32Array;
  private i32!: Int32Array;
  private u64!: BigUint64Array;
  private f64!: Float64Array;

  private scratchPtr = 0;
  private scratchBytes = 0;

  // The 32-bit words of the last BigUint64Array output, so u64 results are copied without making a
  // BigInt per element (and without a new view per call when the caller reuses its output array).
  private wordsSource: BigUint64Array | null = null;
  private words: Int32Array = new Int32Array(0);

  // The last partial chain view indexMatch made (count < hashes.length), reused while the caller
  // passes the same array and count.
  private hashesSource: BigUint64Array | null = null;
  private hashesView: BigUint64Array = new BigUint64Array(0);

  constructor(exports: WasmExports, link: HostLink) {
    this.x = exports;
    this.refreshViews();
    this.heap = new LinearHeap(exports.memory, exports.heapBase() >>> 0, () => this.refreshViews());
    link.heap = this.heap;
    if (this.growScratch(MIN_SCRATCH_BYTES) < 0) throw new Error('dystro wasm: could not reserve the scratch region');
  }

  private refreshViews(): void {
    const buf = this.x.memory.buffer;
    this.u8 = new Uint8Array(buf);
    this.u32 = new Uint32Array(buf);
    this.i32 = new Int32Array(buf);
    this.u64 = new BigUint64Array(buf);
    this.f64 = new Float64Array(buf);
  }

  /** The scratch region, at least `bytes` long; −1 when memory cannot grow that far. */
  private scratch(bytes: number): number {
    return bytes <= this.scratchBytes ? this.scratchPtr : this.growScratch(bytes);
  }

  private growScratch(bytes: number): number {
    // Allocate the new region before releasing the old one so a failure leaves the old scratch usable.
    const want = alignUp(Math.max(bytes, 2 * this.scratchBytes, MIN_SCRATCH_BYTES), PAGE_BYTES);
    let ptr = this.heap.alloc(want);
    let got = want;
    if (ptr < 0) {
      ptr = this.heap.alloc(bytes);
      got = alignUp(bytes, ALIGN_BYTES);
    }
    if (ptr < 0) return -1;
    if (this.scratchBytes > 0) this.heap.free(this.scratchPtr);
    this.scratchPtr = ptr;
    this.scratchBytes = got;
    return ptr;
  }

  private wordsOf(out: BigUint64Array): Int32Array {
    if (out !== this.wordsSource || this.words.length !== out.length * 2) {
      this.wordsSource = out;
      this.words = new Int32Array(out.buffer, out.byteOffset, out.length * 2);
    }
    return this.words;
  }

  /** Copies `count` u64 results at `ptr` into `out` as 32-bit words (no BigInt per element). */
  private copyU64Out(ptr: number, count: number, out: BigUint64Array): void {
    const words = this.wordsOf(out);
    const src = this.i32;
    const from = ptr >>> 2;
    for (let w = 0; w < 2 * count; w++) words[w] = src[from + w];
  }

  private copyI32Out(ptr: number, count: number, out: Int32Array): void {
    const src = this.i32;
    const from = ptr >>> 2;
    for (let i = 0; i < count; i++) out[i] = src[from + i];
  }

  private copyU32Out(ptr: number, count: number, out: Uint32Array): void {
    const src = this.u32;
    const from = ptr >>> 2;
    for (let i = 0; i < count; i++) out[i] = src[from + i];
  }

  /** A persistent region for a table; throws on failure (table creation is on the control path). */
  private allocTable(bytes: number): number {
    const ptr = this.heap.alloc(bytes);
    if (ptr < 0) throw new RangeError(`dystro wasm: out of memory allocating a ${bytes}-byte table`);
    return ptr;
  }

  private own(table: KernelTable): WasmTable | null {
    return (table as WasmTable).owner === this ? (table as WasmTable) : null;
  }

  abiVersion(): number {
    return this.x.abiVersion();
  }

  xxh64(bytes: Uint8Array, seed: bigint): bigint {
    const ptr = this.scratch(bytes.length);
    if (ptr < 0) throw new RangeError(`dystro wasm: out of memory hashing ${bytes.length} bytes`);
    this.u8.set(bytes, ptr);
    return BigInt.asUintN(64, this.x.xxh64(ptr, bytes.length, seed));
  }

  hashTokens(tokens: Uint32Array, blockSize: number, seed: bigint, out: BigUint64Array): number {
    // A non-integer (or beyond int32) block size would be truncated/wrapped on its way into an i32.
    if ((blockSize | 0) !== blockSize) return Status.BLOCK_SIZE;
    const count = tokens.length;
    // Room for at most the blocks there can be; the kernel still sees a short `out` as too small.
    const cap = Math.min(out.length, blockSize >= 1 ? Math.floor(count / blockSize) : 0);
    const inBytes = alignUp(count * 4, 8);
    const ptr = this.scratch(inBytes + cap * 8);
    if (ptr < 0) return Status.NO_MEMORY;
    this.u32.set(tokens, ptr >>> 2);
    const r = this.x.hashTokens(ptr, count, blockSize, seed, ptr + inBytes, cap);
    if (r > 0) this.copyU64Out(ptr + inBytes, r, out);
    return r;
  }

  hashBytes(bytes: Uint8Array, blockSize: number, seed: bigint, out: BigUint64Array): number {
    if ((blockSize | 0) !== blockSize) return Status.BLOCK_SIZE;
    const count = bytes.length;
    const cap = Math.min(out.length, blockSize >= 1 ? Math.floor(count / blockSize) : 0);
    const inBytes = alignUp(count, 8);
    const ptr = this.scratch(inBytes + cap * 8);
    if (ptr < 0) return Status.NO_MEMORY;
    this.u8.set(bytes, ptr);
    const r = this.x.hashBytes(ptr, count, blockSize, seed, ptr + inBytes, cap);
    if (r > 0) this.copyU64Out(ptr + inBytes, r, out);
    return r;
  }

  hashTokensBatch(
    tokens: Uint32Array,
    offsets: Uint32Array,
    seeds: BigUint64Array,
    blockSize: number,
    out: BigUint64Array,
    outOffsets: Uint32Array,
  ): number {
    if ((blockSize | 0) !== blockSize) return Status.BLOCK_SIZE;
    const count = tokens.length;
    // Prompts are disjoint slices of tokens, so there are at most floor(count / blockSize) blocks.
    const cap = Math.min(out.length, blockSize >= 1 ? Math.floor(count / blockSize) : 0);
    const tokensAt = 0;
    const offsetsAt = tokensAt + alignUp(count * 4, 8);
    const seedsAt = offsetsAt + alignUp(offsets.length * 4, 8);
    const outOffsetsAt = seedsAt + seeds.length * 8;
    const outAt = outOffsetsAt + alignUp(outOffsets.length * 4, 8);
    const ptr = this.scratch(outAt + cap * 8);
    if (ptr < 0) return Status.NO_MEMORY;
    this.u32.set(tokens, (ptr + tokensAt) >>> 2);
    this.u32.set(offsets, (ptr + offsetsAt) >>> 2);
    this.u64.set(seeds, (ptr + seedsAt) >>> 3);
    const r = this.x.hashTokensBatch(
      ptr + tokensAt,
      count,
      ptr + offsetsAt,
      offsets.length,
      ptr + seedsAt,
      seeds.length,
      blockSize,
      ptr + outAt,
      cap,
      ptr + outOffsetsAt,
      outOffsets.length,
    );
    // Like the reference, outOffsets is filled once the arguments are well-formed, even when out is
    // then found too small.
    if (r >= 0 || r === Status.OUT_TOO_SMALL) this.copyU32Out(ptr + outOffsetsAt, outOffsets.length, outOffsets);
    if (r > 0) this.copyU64Out(ptr + outAt, r, out);
    return r;
  }

  jump(key: bigint, buckets: number): number {
    if (!(buckets >= 1)) return Status.EMPTY;
    if (buckets > MAX_JUMP_BUCKETS) return Status.BAD_ARG;
    // Bucket indices are integers, so `j < buckets` is `j < ceil(buckets)`: same result as the
    // reference for a fractional count, which an i32 argument would otherwise truncate.
    return this.x.jump(key, Math.ceil(buckets));
  }

  jumpBatch(keys: BigUint64Array, buckets: number, out: Int32Array): number {
    if (!(buckets >= 1)) return Status.EMPTY;
    if (buckets > MAX_JUMP_BUCKETS) return Status.BAD_ARG;
    const count = keys.length;
    const cap = Math.min(out.length, count);
    const ptr = this.scratch(count * 8 + cap * 4);
    if (ptr < 0) return Status.NO_MEMORY;
    this.u64.set(keys, ptr >>> 3);
    const r = this.x.jumpBatch(ptr, count, Math.ceil(buckets), ptr + count * 8, cap);
    if (r > 0) this.copyI32Out(ptr + count * 8, r, out);
    return r;
  }

  ringCreate(points: Uint32Array, nodes: Int32Array, index: Uint32Array, bits: number, nodeCount: number): KernelTable {
    const n = points.length;
    // The index only accelerates; one that is not exactly abi.ts's (or a bits value out of range) is
    // dropped and the kernel searches the whole ring, which gives the reference's answer regardless.
    const useIndex =
      Number.isInteger(bits) && bits >= 1 && bits <= MAX_RING_INDEX_BITS && n > 0 && indexMatches(points, index, bits);
    const indexLen = useIndex ? index.length : 0;
    const base = this.allocTable(n * 4 + n * 4 + indexLen * 4);
    const a = base;
    const b = a + n * 4;
    const c = b + n * 4;
    this.u32.set(points, a >>> 2);
    if (nodes.length === n) {
      this.i32.set(nodes, b >>> 2);
    } else {
      // Mismatched arrays are a caller bug; points without a node own nothing (NO_NODE).
      this.i32.fill(NO_NODE, b >>> 2, (b >>> 2) + n);
      this.i32.set(nodes.subarray(0, Math.min(n, nodes.length)), b >>> 2);
    }
    if (useIndex) this.u32.set(index, c >>> 2);
    return new WasmTable('ring', nodeCount, n, this, base, a, b, c, useIndex ? bits : 0, n);
  }

  ringLookup(table: KernelTable, key: bigint): number {
    const t = this.own(table);
    if (t === null) return Status.BAD_ARG;
    return this.x.ringLookup(t.a, t.b, t.n, t.c, t.bits, key);
  }

  ringLookupBatch(table: KernelTable, keys: BigUint64Array, out: Int32Array): number {
    const t = this.own(table);
    if (t === null) return Status.BAD_ARG;
    const count = keys.length;
    const cap = Math.min(out.length, count);
    const ptr = this.scratch(count * 8 + cap * 4);
    if (ptr < 0) return Status.NO_MEMORY;
    this.u64.set(keys, ptr >>> 3);
    const r = this.x.ringLookupBatch(t.a, t.b, t.n, t.c, t.bits, ptr, count, ptr + count * 8, cap);
    if (r > 0) this.copyI32Out(ptr + count * 8, r, out);
    return r;
  }

  /** Where stageBounded put the loads, shares and output of a bounded-load call (scratch addresses). */
  private boundedLoadsPtr = 0;
  private boundedSharesPtr = 0;
  private boundedOutPtr = 0;

  /**
   * Stages a bounded-load call's inputs in scratch — keys, then loads (8-byte aligned), shares, then room
   * for the output — shared by the ring and Maglev variants. Returns the keys' address, or −1.
   */
  private stageBounded(keys: BigUint64Array, loads: Uint32Array, shares: Float64Array, out: Int32Array): number {
    const count = keys.length;
    const loadsAt = count * 8;
    const sharesAt = loadsAt + alignUp(loads.length * 4, 8);
    const outAt = sharesAt + shares.length * 8;
    const ptr = this.scratch(outAt + Math.min(out.length, count) * 4);
    if (ptr < 0) return -1;
    this.u64.set(keys, ptr >>> 3);
    this.u32.set(loads, (ptr + loadsAt) >>> 2);
    this.f64.set(shares, (ptr + sharesAt) >>> 3);
    this.boundedLoadsPtr = ptr + loadsAt;
    this.boundedSharesPtr = ptr + sharesAt;
    this.boundedOutPtr = ptr + outAt;
    return ptr;
  }

  ringAssignBounded(
    table: KernelTable,
    keys: BigUint64Array,
    loads: Uint32Array,
    shares: Float64Array,
    c: number,
    out: Int32Array,
  ): number {
    const t = this.own(table);
    if (t === null) return Status.BAD_ARG;
    const ptr = this.stageBounded(keys, loads, shares, out);
    if (ptr < 0) return Status.NO_MEMORY;
    const r = this.x.ringAssignBounded(
      t.a,
      t.b,
      t.n,
      t.c,
      t.bits,
      t.nodeCount,
      ptr,
      keys.length,
      this.boundedLoadsPtr,
      loads.length,
      this.boundedSharesPtr,
      shares.length,
      c,
      this.boundedOutPtr,
      Math.min(out.length, keys.length),
    );
    if (r >= 0) {
      this.copyI32Out(this.boundedOutPtr, keys.length, out);
      this.copyU32Out(this.boundedLoadsPtr, loads.length, loads);
    }
    return r;
  }

  maglevBuild(offsets: Uint32Array, skips: Uint32Array, weights: Uint32Array, size: number): KernelTable | number {
    const n = offsets.length;
    // The kernel takes one n and a u32 size: check the shapes and the size before allocating M entries.
    if (n === 0 || skips.length !== n || weights.length !== n) return Status.BAD_ARG;
    if (!Number.isInteger(size) || size < n || size > MAX_MAGLEV_SIZE) return Status.BAD_ARG;
    const base = this.heap.alloc(size * 4);
    if (base < 0) return Status.NO_MEMORY;
    const skipsAt = n * 4;
    const weightsAt = skipsAt + n * 4;
    const posAt = weightsAt + n * 4;
    const creditAt = alignUp(posAt + n * 4, 8);
    const ptr = this.scratch(creditAt + n * 8);
    if (ptr < 0) {
      this.heap.free(base);
      return Status.NO_MEMORY;
    }
    this.u32.set(offsets, ptr >>> 2);
    this.u32.set(skips, (ptr + skipsAt) >>> 2);
    this.u32.set(weights, (ptr + weightsAt) >>> 2);
    const r = this.x.maglevBuild(ptr, ptr + skipsAt, ptr + weightsAt, n, size, ptr + posAt, ptr + creditAt, base);
    if (r < 0) {
      this.heap.free(base);
      return r;
    }
    return new WasmTable('maglev', n, size, this, base, base, 0, 0, 0, size);
  }

  maglevEntries(table: KernelTable): Int32Array {
    const t = this.own(table);
    if (t === null) return new Int32Array(0);
    return this.i32.slice(t.a >>> 2, (t.a >>> 2) + t.n);
  }

  maglevLookup(table: KernelTable, key: bigint): number {
    const t = this.own(table);
    if (t === null) return Status.BAD_ARG;
    return this.x.maglevLookup(t.a, t.n, key);
  }

  maglevLookupBatch(table: KernelTable, keys: BigUint64Array, out: Int32Array): number {
    const t = this.own(table);
    if (t === null) return Status.BAD_ARG;
    const count = keys.length;
    const cap = Math.min(out.length, count);
    const ptr = this.scratch(count * 8 + cap * 4);
    if (ptr < 0) return Status.NO_MEMORY;
    this.u64.set(keys, ptr >>> 3);
    const r = this.x.maglevLookupBatch(t.a, t.n, ptr, count, ptr + count * 8, cap);
    if (r > 0) this.copyI32Out(ptr + count * 8, r, out);
    return r;
  }

  maglevAssignBounded(
    table: KernelTable,
    keys: BigUint64Array,
    loads: Uint32Array,
    shares: Float64Array,
    c: number,
    out: Int32Array,
  ): number {
    const t = this.own(table);
    if (t === null) return Status.BAD_ARG;
    const ptr = this.stageBounded(keys, loads, shares, out);
    if (ptr < 0) return Status.NO_MEMORY;
    const r = this.x.maglevAssignBounded(
      t.a,
      t.n,
      t.nodeCount,
      ptr,
      keys.length,
      this.boundedLoadsPtr,
      loads.length,
      this.boundedSharesPtr,
      shares.length,
      c,
      this.boundedOutPtr,
      Math.min(out.length, keys.length),
    );
    if (r >= 0) {
      this.copyI32Out(this.boundedOutPtr, keys.length, out);
      this.copyU32Out(this.boundedLoadsPtr, loads.length, loads);
    }
    return r;
  }

  rendezvousCreate(nodeHashes: BigUint64Array, weights: Float64Array): KernelTable {
    const n = nodeHashes.length;
    const base = this.allocTable(n * 16);
    const b = base + n * 8;
    this.u64.set(nodeHashes, base >>> 3);
    if (weights.length === n) {
      this.f64.set(weights, b >>> 3);
    } else {
      // Mismatched arrays are a caller bug; a node without a weight scores NaN and never wins,
      // as in the reference.
      this.f64.fill(NaN, b >>> 3, (b >>> 3) + n);
      this.f64.set(weights.subarray(0, Math.min(n, weights.length)), b >>> 3);
    }
    return new WasmTable('rendezvous', n, n, this, base, base, b, 0, 0, n);
  }

  rendezvousLookup(table: KernelTable, key: bigint): number {
    const t = this.own(table);
    if (t === null) return Status.BAD_ARG;
    return this.x.rendezvousLookup(t.a, t.b, t.n, key);
  }

  rendezvousLookupBatch(table: KernelTable, keys: BigUint64Array, out: Int32Array): number {
    const t = this.own(table);
    if (t === null) return Status.BAD_ARG;
    const count = keys.length;
    const cap = Math.min(out.length, count);
    const ptr = this.scratch(count * 8 + cap * 4);
    if (ptr < 0) return Status.NO_MEMORY;
    this.u64.set(keys, ptr >>> 3);
    const r = this.x.rendezvousLookupBatch(t.a, t.b, t.n, ptr, count, ptr + count * 8, cap);
    if (r > 0) this.copyI32Out(ptr + count * 8, r, out);
    return r;
  }

  free(table: KernelTable): void {
    const t = this.own(table);
    if (t === null || !t.live) return;
    this.heap.free(t.base);
    t.live = false;
    t.n = 0; // a freed table now reads as empty (NO_NODE), never as someone else's memory
  }

  // ---------- prefix index ----------

  /** The index when it lives in this backend and is not freed. */
  private ownIndex(index: PrefixIndexHandle): WasmIndex | null {
    const h = index as WasmIndex;
    return h.owner === this && h.state !== 0 ? h : null;
  }

  indexCreate(config: PrefixIndexConfig): PrefixIndexHandle {
    const cfg = { ...config };
    // The host validated the config (integers in range); u32 arguments as the kernel takes them.
    const state = this.x.indexCreate(cfg.maxEntries >>> 0, cfg.replicaCapacity >>> 0, cfg.seed >>> 0, cfg.ttlMs >>> 0) >>> 0;
    if (state === 0) {
      throw new RangeError(`dystro wasm: could not create a prefix index for ${cfg.replicaCapacity} replicas (out of memory, or more than 0xFFFFF replicas)`);
    }
    return new WasmIndex(cfg, this, state);
  }

  indexApply(index: PrefixIndexHandle, records: Uint32Array, count: number, nowMs: number): number {
    const h = this.ownIndex(index);
    if (h === null) return Status.BAD_ARG;
    if (!Number.isInteger(count) || count < 0 || count * RECORD_WORDS > records.length) return Status.BAD_ARG;
    const now = nowMs >>> 0;
    // In slices, so a large batch needs no large scratch; the kernel stops at the first bad record,
    // and so does this loop, so the result is the one a single call would give.
    for (let done = 0; done < count; ) {
      const n = Math.min(count - done, APPLY_CHUNK_RECORDS);
      const words = n * RECORD_WORDS;
      const ptr = this.scratch(words * 4);
      if (ptr < 0) return Status.NO_MEMORY;
      const from = done * RECORD_WORDS;
      if (from === 0 && words === records.length) {
        this.u32.set(records, ptr >>> 2);
      } else if (words <= SMALL_COPY_WORDS) {
        const dst = this.u32;
        const at = ptr >>> 2;
        for (let i = 0; i < words; i++) dst[at + i] = records[from + i];
      } else {
        // A view per slice of a larger buffer (apply runs per batch of events, not per routing
        // decision; one small object per 16,384 records is cheaper than a word-by-word copy).
        this.u32.set(records.subarray(from, from + words), ptr >>> 2);
      }
      const r = this.x.indexApply(h.state, ptr, n, now);
      if (r !== n) return r;
      done += n;
    }
    return count;
  }

  indexMatch(index: PrefixIndexHandle, hashes: BigUint64Array, count: number, nowMs: number, out: Uint32Array): number {
    const h = this.ownIndex(index);
    if (h === null) return Status.BAD_ARG;
    if (count === 0) return 0;
    if (!(count > 0 && count <= hashes.length && Number.isInteger(count))) return Status.BAD_ARG;
    // At most one stride per replica is ever written, so a longer out needs no more scratch; a shorter
    // one is passed as is and gives OUT_TOO_SMALL exactly when the reference does.
    const cap = Math.min(out.length, h.maxOutWords);
    const outAt = count * 8;
    const ptr = this.scratch(outAt + cap * 4);
    if (ptr < 0) return Status.NO_MEMORY;
    this.u64.set(count === hashes.length ? hashes : this.prefixOf(hashes, count), ptr >>> 3);
    const r = this.x.indexMatch(h.state, ptr, count, nowMs >>> 0, ptr + outAt, cap);
    if (r > 0) this.copyU32Out(ptr + outAt, r * MATCH_STRIDE, out);
    return r;
  }

  /** hashes[0 … count) as a view, cached for the next call with the same array and count. */
  private prefixOf(hashes: BigUint64Array, count: number): BigUint64Array {
    if (hashes !== this.hashesSource || this.hashesView.length !== count) {
      this.hashesSource = hashes;
      this.hashesView = hashes.subarray(0, count);
    }
    return this.hashesView;
  }

  indexStats(index: PrefixIndexHandle, out: Float64Array): void {
    const h = this.ownIndex(index);
    const n = Math.min(out.length, STATS_LENGTH);
    const ptr = h === null ? -1 : this.scratch(STATS_LENGTH * 8);
    if (h === null || ptr < 0 || this.x.indexStats(h.state, ptr) !== Status.OK) {
      out.fill(0, 0, n);
      return;
    }
    const src = this.f64;
    for (let i = 0; i < n; i++) out[i] = src[(ptr >>> 3) + i];
  }

  indexDump(index: PrefixIndexHandle, nowMs: number): Uint32Array {
    const h = this.ownIndex(index);
    if (h === null) return new Uint32Array(0);
    const now = nowMs >>> 0;
    // Control path: one pass to count the live holders, one to write them.
    const ptr0 = this.scratch(16);
    if (ptr0 < 0) throw new RangeError('dystro wasm: out of memory dumping a prefix index');
    const total = this.x.indexDump(h.state, now, ptr0, 0);
    if (total <= 0) return new Uint32Array(0);
    const ptr = this.scratch(total * 16);
    if (ptr < 0) throw new RangeError(`dystro wasm: out of memory dumping ${total} index entries`);
    const written = this.x.indexDump(h.state, now, ptr, total);
    return this.u32.slice(ptr >>> 2, (ptr >>> 2) + Math.min(written, total) * 4);
  }

  indexFree(index: PrefixIndexHandle): void {
    const h = this.ownIndex(index);
    if (h === null) return;
    this.x.indexFree(h.state);
    h.state = 0; // a freed index now refuses every call instead of reading reused memory
  }
}

function webAssembly(): WasmRuntime {
  const api = (globalThis as { WebAssembly?: WasmRuntime }).WebAssembly;
  if (api === undefined) throw new Error('WebAssembly is not available in this runtime (for example under node --jitless)');
  return api;
}

function wasmPath(): string {
  return fileURLToPath(WASM_URL);
}

function missingModule(err: unknown): Error {
  const why = err instanceof Error ? err.message : String(err);
  return new Error(`dystro wasm module not readable at ${wasmPath()} (run npm run build:wasm): ${why}`);
}

let compiled: object | undefined;

/** Checks the exports and the ABI version, then wraps the instance. */
function adopt(api: WasmRuntime, instance: WasmInstance, link: HostLink): KernelBackend {
  const ex = instance.exports;
  const missing = [...ABI_EXPORTS, ...INDEX_EXPORTS, 'heapBase'].filter((name) => typeof ex[name] !== 'function');
  if (!(ex.memory instanceof api.Memory)) missing.push('memory');
  if (missing.length > 0) throw new Error(`dystro wasm module lacks exports: ${missing.join(', ')} (rebuild with npm run build:wasm)`);
  const exports = ex as unknown as WasmExports;
  const version = exports.abiVersion();
  if (version !== ABI_VERSION) {
    throw new Error(`dystro wasm module reports ABI version ${version}; this host expects ${ABI_VERSION} (rebuild with npm run build:wasm)`);
  }
  return new WasmBackend(exports, link);
}

/**
 * Loads the WebAssembly backend (a fresh instance with its own memory; the compiled module is cached).
 * Throws when WebAssembly is unavailable, the module is missing, or its ABI version differs.
 */
export async function loadWasmBackend(): Promise<KernelBackend> {
  const api = webAssembly();
  if (compiled === undefined) {
    let bytes: Uint8Array;
    try {
      bytes = await readFile(wasmPath());
    } catch (err) {
      throw missingModule(err);
    }
    compiled = await api.compile(bytes);
  }
  const link: HostLink = { heap: null };
  return adopt(api, await api.instantiate(compiled, hostImports(link)), link);
}

/** Synchronous variant of {@link loadWasmBackend} (compiling the ~17 KB module takes about a millisecond). */
export function loadWasmBackendSync(): KernelBackend {
  const api = webAssembly();
  if (compiled === undefined) {
    let bytes: Uint8Array;
    try {
      bytes = readFileSync(wasmPath());
    } catch (err) {
      throw missingModule(err);
    }
    compiled = new api.Module(bytes);
  }
  const link: HostLink = { heap: null };
  return adopt(api, new api.Instance(compiled, hostImports(link)), link);
}
