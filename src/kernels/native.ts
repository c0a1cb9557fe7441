/**
 * The native backend: the N-API addon built from `native/` by `npm run build:native`, adapted to
 * {@link KernelBackend}.
 *
 * The addon exports the flat functions of ABI_EXPORTS and INDEX_EXPORTS (signatures listed at the top of
 * native/addon.cc) and works on the caller's typed arrays in place, so a table here is nothing but the
 * typed arrays the host built, held in a small class and passed back on every call (the prefix index is
 * the exception: it lives in C++ memory behind an opaque handle, see NativeIndex). Nothing is copied and
 * the hot-path methods are single calls that allocate nothing on the JS heap. The tables are held as DataViews over
 * those arrays, made once on the control path: the addon accepts either, and N-API decodes a DataView
 * in ~9 ns against 23–35 ns for a typed array (it has to find the typed array's element type), which
 * halves the cost of a single ring or rendezvous lookup. The addon is optional: it is only
 * there when a C++ toolchain was present at build time, and {@link loadNativeBackend} throws an Error
 * saying why when it is not (select.ts turns that into a fallback).
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import {
  ABI_EXPORTS,
  ABI_VERSION,
  INDEX_EXPORTS,
  MAX_MAGLEV_SIZE,
  Status,
  type KernelBackend,
  type KernelTable,
  type PrefixIndexConfig,
  type PrefixIndexHandle,
} from './abi.js';

/** A table argument: the typed array, or a DataView over it (see the top of the file). */
type Table<T extends ArrayBufferView> = T | DataView;

/** The flat functions of native/addon.cc. Counts and statuses are numbers; 64-bit values are bigints. */
interface NativeAddon {
  abiVersion(): number;
  /** The hash, or a negative status (a number) when the arguments have the wrong types. */
  xxh64(bytes: Uint8Array, seed: bigint): bigint | number;
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
  ringLookup(points: Table<Uint32Array>, nodes: Table<Int32Array>, index: Table<Uint32Array>, bits: number, key: bigint): number;
  ringLookupBatch(
    points: Table<Uint32Array>,
    nodes: Table<Int32Array>,
    index: Table<Uint32Array>,
    bits: number,
    keys: BigUint64Array,
    out: Int32Array,
  ): number;
  ringAssignBounded(
    points: Table<Uint32Array>,
    nodes: Table<Int32Array>,
    index: Table<Uint32Array>,
    bits: number,
    nodeCount: number,
    keys: BigUint64Array,
    loads: Uint32Array,
    shares: Float64Array,
    c: number,
    out: Int32Array,
  ): number;
  maglevBuild(offsets: Uint32Array, skips: Uint32Array, weights: Uint32Array, size: number, tableOut: Int32Array): number;
  maglevLookup(table: Table<Int32Array>, key: bigint): number;
  maglevLookupBatch(table: Table<Int32Array>, keys: BigUint64Array, out: Int32Array): number;
  maglevAssignBounded(
    table: Table<Int32Array>,
    nodeCount: number,
    keys: BigUint64Array,
    loads: Uint32Array,
    shares: Float64Array,
    c: number,
    out: Int32Array,
  ): number;
  rendezvousLookup(nodeHashes: Table<BigUint64Array>, weights: Table<Float64Array>, key: bigint): number;
  rendezvousLookupBatch(
    nodeHashes: Table<BigUint64Array>,
    weights: Table<Float64Array>,
    keys: BigUint64Array,
    out: Int32Array,
  ): number;

  /** An external wrapping the C++ index (native/prefix_index.h), or a negative status. */
  indexCreate(maxEntries: number, replicaCapacity: number, seed: number, ttlMs: number): NativeIndexRef | number;
  indexApply(index: NativeIndexRef, records: Uint32Array, count: number, nowMs: number): number;
  indexMatch(index: NativeIndexRef, hashes: BigUint64Array, count: number, nowMs: number, out: Uint32Array): number;
  /** OK, or BAD_ARG (wrong types, freed index). */
  indexStats(index: NativeIndexRef, out: Float64Array): number;
  /** The live holders, or a negative status (BAD_ARG, NO_MEMORY). */
  indexDump(index: NativeIndexRef, nowMs: number): Uint32Array | number;
  /** OK, or BAD_ARG when the handle is not a live index. */
  indexFree(index: NativeIndexRef): number;
}

/** The addon's handle to a C++ index: an opaque N-API external (freed by indexFree, or by the GC). */
type NativeIndexRef = object;

type TypedArrayClass<T> = abstract new (length: number) => T;

/**
 * A DataView over the same memory as `array` (no copy), when `array` is of the expected class. Anything
 * else is passed through unchanged so that the addon's type check answers BAD_ARG on the hot path, as
 * it would for the bare argument, instead of this control-path code throwing.
 */
function viewOf<T extends ArrayBufferView>(array: T, cls: TypedArrayClass<T>): Table<T> {
  return array instanceof cls ? new DataView(array.buffer, array.byteOffset, array.byteLength) : array;
}

/** A ring: the host's sorted points, their node ids and the radix index, viewed in place (not copied). */
class NativeRing implements KernelTable {
  readonly backend = 'native' as const;
  readonly kind = 'ring' as const;
  readonly size: number;
  readonly points: Table<Uint32Array>;
  readonly nodes: Table<Int32Array>;
  readonly index: Table<Uint32Array>;
  constructor(
    points: Uint32Array,
    nodes: Int32Array,
    index: Uint32Array,
    readonly bits: number,
    readonly nodeCount: number,
  ) {
    this.size = points.length;
    this.points = viewOf(points, Uint32Array);
    this.nodes = viewOf(nodes, Int32Array);
    this.index = viewOf(index, Uint32Array);
  }
}

/** A Maglev lookup table (entry → node id), allocated here on the control path and filled by the addon. */
class NativeMaglev implements KernelTable {
  readonly backend = 'native' as const;
  readonly kind = 'maglev' as const;
  readonly size: number;
  readonly view: Table<Int32Array>;
  constructor(
    readonly entries: Int32Array,
    readonly nodeCount: number,
  ) {
    this.size = entries.length;
    this.view = viewOf(entries, Int32Array);
  }
}

/** Rendezvous needs no table beyond the node hashes and weights, viewed in place. */
class NativeRendezvous implements KernelTable {
  readonly backend = 'native' as const;
  readonly kind = 'rendezvous' as const;
  readonly nodeCount: number;
  readonly size: number;
  readonly nodeHashes: Table<BigUint64Array>;
  readonly weights: Table<Float64Array>;
  constructor(nodeHashes: BigUint64Array, weights: Float64Array) {
    this.nodeCount = nodeHashes.length;
    this.size = nodeHashes.length;
    this.nodeHashes = viewOf(nodeHashes, BigUint64Array);
    this.weights = viewOf(weights, Float64Array);
  }
}

/**
 * A prefix index living in C++ memory. `ref` is the addon's external; the garbage collector frees the
 * C++ index if the host drops the handle without calling indexFree.
 */
class NativeIndex implements PrefixIndexHandle {
  readonly backend = 'native' as const;
  constructor(
    readonly config: Readonly<PrefixIndexConfig>,
    readonly ref: NativeIndexRef,
  ) {}
}

/** Where native/build.mjs (node-gyp --directory native) leaves the addon; the same from src/ and dist/. */
const ADDON_URL = new URL('../../native/build/Release/dystro.node', import.meta.url);

let loaded: KernelBackend | undefined;

function requireAddon(): NativeAddon {
  const path = fileURLToPath(ADDON_URL);
  if (!existsSync(path)) {
    throw new Error(
      `The native addon is not built: ${path} does not exist. Run \`npm run build:native\` (needs a C++17 compiler, make and Python 3).`,
    );
  }
  let mod: unknown;
  try {
    mod = createRequire(import.meta.url)(path);
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw new Error(`The native addon at ${path} failed to load: ${why}. Rebuild it with \`npm run build:native\`.`, {
      cause: err,
    });
  }
  const addon = mod as Record<string, unknown>;
  // INDEX_EXPORTS may already be part of ABI_EXPORTS (ABI version 2); a name checked twice costs nothing.
  const missing = [...ABI_EXPORTS, ...INDEX_EXPORTS].filter((name) => typeof addon[name] !== 'function');
  if (missing.length > 0) {
    throw new Error(`The native addon at ${path} lacks ${missing.join(', ')}. Rebuild it with \`npm run build:native\`.`);
  }
  const version = (addon as unknown as NativeAddon).abiVersion();
  if (version !== ABI_VERSION) {
    throw new Error(
      `The native addon at ${path} reports ABI version ${String(version)}; this host expects ${ABI_VERSION}. Rebuild it with \`npm run build:native\`.`,
    );
  }
  return addon as unknown as NativeAddon;
}

function adapt(addon: NativeAddon): KernelBackend {
  return {
    name: 'native',
    abiVersion: () => addon.abiVersion(),

    xxh64(bytes, seed) {
      const h = addon.xxh64(bytes, seed);
      if (typeof h !== 'bigint') {
        throw new TypeError(`xxh64 expects a Uint8Array and a bigint seed (the native kernel returned status ${h})`);
      }
      return h;
    },
    hashTokens: (tokens, blockSize, seed, out) => addon.hashTokens(tokens, blockSize, seed, out),
    hashBytes: (bytes, blockSize, seed, out) => addon.hashBytes(bytes, blockSize, seed, out),
    hashTokensBatch: (tokens, offsets, seeds, blockSize, out, outOffsets) =>
      addon.hashTokensBatch(tokens, offsets, seeds, blockSize, out, outOffsets),

    jump: (key, buckets) => addon.jump(key, buckets),
    jumpBatch: (keys, buckets, out) => addon.jumpBatch(keys, buckets, out),

    ringCreate: (points, nodes, index, bits, nodeCount) => new NativeRing(points, nodes, index, bits, nodeCount),
    ringLookup(table, key) {
      const t = table as NativeRing;
      return addon.ringLookup(t.points, t.nodes, t.index, t.bits, key);
    },
    ringLookupBatch(table, keys, out) {
      const t = table as NativeRing;
      return addon.ringLookupBatch(t.points, t.nodes, t.index, t.bits, keys, out);
    },
    ringAssignBounded(table, keys, loads, shares, c, out) {
      const t = table as NativeRing;
      return addon.ringAssignBounded(t.points, t.nodes, t.index, t.bits, t.nodeCount, keys, loads, shares, c, out);
    },

    maglevBuild(offsets, skips, weights, size) {
      // Checked before allocating the table (up to 2^26 entries, 256 MiB); the addon re-checks everything.
      if (!Number.isInteger(size) || size < 1 || size > MAX_MAGLEV_SIZE) return Status.BAD_ARG;
      let entries: Int32Array;
      try {
        entries = new Int32Array(size);
      } catch {
        return Status.NO_MEMORY;
      }
      const status = addon.maglevBuild(offsets, skips, weights, size, entries);
      return status < 0 ? status : new NativeMaglev(entries, offsets.length);
    },
    maglevEntries: (table) => (table as NativeMaglev).entries.slice(),
    maglevLookup: (table, key) => addon.maglevLookup((table as NativeMaglev).view, key),
    maglevLookupBatch: (table, keys, out) => addon.maglevLookupBatch((table as NativeMaglev).view, keys, out),
    maglevAssignBounded(table, keys, loads, shares, c, out) {
      const t = table as NativeMaglev;
      return addon.maglevAssignBounded(t.view, t.nodeCount, keys, loads, shares, c, out);
    },

    rendezvousCreate: (nodeHashes, weights) => new NativeRendezvous(nodeHashes, weights),
    rendezvousLookup(table, key) {
      const t = table as NativeRendezvous;
      return addon.rendezvousLookup(t.nodeHashes, t.weights, key);
    },
    rendezvousLookupBatch(table, keys, out) {
      const t = table as NativeRendezvous;
      return addon.rendezvousLookupBatch(t.nodeHashes, t.weights, keys, out);
    },

    // The tables are ordinary typed arrays owned by the JS heap; the garbage collector frees them.
    free() {},

    indexCreate(config) {
      const ref = addon.indexCreate(config.maxEntries, config.replicaCapacity, config.seed, config.ttlMs);
      if (typeof ref === 'number') {
        // Control path: the host validated the config, so this is memory (or a host bug).
        throw ref === Status.NO_MEMORY
          ? new RangeError('The native prefix index could not allocate its memory')
          : new RangeError(`The native prefix index refused its configuration (status ${ref}): ${JSON.stringify(config)}`);
      }
      return new NativeIndex({ ...config }, ref);
    },
    indexApply: (index, records, count, nowMs) => addon.indexApply((index as NativeIndex).ref, records, count, nowMs),
    indexMatch: (index, hashes, count, nowMs, out) =>
      addon.indexMatch((index as NativeIndex).ref, hashes, count, nowMs, out),
    indexStats(index, out) {
      addon.indexStats((index as NativeIndex).ref, out);
    },
    indexDump(index, nowMs) {
      const words = addon.indexDump((index as NativeIndex).ref, nowMs);
      if (typeof words === 'number') {
        throw words === Status.NO_MEMORY
          ? new RangeError('Not enough memory to dump the native prefix index')
          : new TypeError(`indexDump expects a live native prefix index (the native kernel returned status ${words})`);
      }
      return words;
    },
    indexFree(index) {
      addon.indexFree((index as NativeIndex).ref);
    },
  };
}

/**
 * Loads native/build/Release/dystro.node and checks its exports and ABI version. Throws an Error
 * saying why when the addon is missing, fails to load (wrong platform, Node ABI, corrupt file) or is
 * stale. The backend is created once per process.
 */
export function loadNativeBackend(): KernelBackend {
  if (loaded === undefined) loaded = adapt(requireAddon());
  return loaded;
}
