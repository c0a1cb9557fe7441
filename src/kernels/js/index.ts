/**
 * The TypeScript reference backend: every kernel of abi.ts written as plainly as possible, with BigInt
 * for 64-bit arithmetic. It is the oracle the wasm and native backends are compared with, and the
 * fallback that always loads (for example under `node --jitless`). Speed is not its job.
 */
import {
  ABI_VERSION,
  MAX_BLOCK_SIZE,
  MAX_MAGLEV_SIZE,
  MAX_RING_INDEX_BITS,
  MIN_BLOCK_SIZE,
  NO_NODE,
  Status,
  type KernelBackend,
  type KernelTable,
  type PrefixIndexConfig,
  type PrefixIndexHandle,
} from '../abi.js';
import { JsPrefixIndex } from './prefix-index.js';
import { xxh64, xxh64Range } from './xxh64.js';

const M64 = (1n << 64n) - 1n;
const JUMP_MULT = 2862933555777941757n;

function validBlockSize(b: number): boolean {
  return Number.isInteger(b) && b >= MIN_BLOCK_SIZE && b <= MAX_BLOCK_SIZE;
}

/** Chains XXH64 over the full blocks of `bytes[start, start+len)`, `blockBytes` bytes each. */
function chain(bytes: Uint8Array, start: number, len: number, blockBytes: number, seed: bigint, out: BigUint64Array, at: number): number {
  const n = Math.floor(len / blockBytes);
  let h = seed & M64;
  for (let b = 0; b < n; b++) {
    h = xxh64Range(bytes, start + b * blockBytes, blockBytes, h);
    out[at + b] = h;
  }
  return n;
}

/** The little-endian bytes of a token array (u32 each). */
function tokenBytes(tokens: Uint32Array): Uint8Array {
  const bytes = new Uint8Array(tokens.length * 4);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < tokens.length; i++) view.setUint32(i * 4, tokens[i], true);
  return bytes;
}

export function jumpHash(key: bigint, buckets: number): number {
  if (!(buckets >= 1)) return Status.EMPTY;
  let b = -1;
  let j = 0;
  key &= M64;
  while (j < buckets) {
    b = j;
    key = (key * JUMP_MULT + 1n) & M64;
    j = Math.floor((b + 1) * (2147483648 / (Number(key >> 33n) + 1)));
  }
  return b;
}

/** First index i with points[i] ≥ h (plain binary search), or points.length. */
function lowerBound(points: Uint32Array, h: number): number {
  let lo = 0;
  let hi = points.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (points[mid] < h) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function mix64(z: bigint): bigint {
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & M64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & M64;
  return z ^ (z >> 31n);
}

const lnScratch = new DataView(new ArrayBuffer(8));
const LN_C: number[] = [];
for (let k = 0; k <= 11; k++) LN_C.push(1.0 / (2 * k + 1));

/** The portable natural logarithm of abi.ts, for positive normal doubles. */
export function lnPortable(x: number): number {
  lnScratch.setFloat64(0, x);
  const hi = lnScratch.getUint32(0);
  let e = ((hi >>> 20) & 0x7ff) - 1023;
  lnScratch.setUint32(0, (hi & 0x000fffff) | 0x3ff00000);
  let m = lnScratch.getFloat64(0);
  if (m > 1.4142135623730951) {
    m = m * 0.5;
    e = e + 1;
  }
  const s = (m - 1) / (m + 1);
  const z = s * s;
  let p = LN_C[11];
  for (let k = 10; k >= 0; k--) p = p * z + LN_C[k];
  return e * 0.6931471805599453 + 2 * s * p;
}

function rendezvousScore(key: bigint, nodeHash: bigint, weight: number): number {
  const x = mix64((key ^ nodeHash) & M64);
  const k = Number(x >> 12n);
  const u = (2 * k + 1) * 2 ** -53;
  return weight / (0 - lnPortable(u));
}

class JsTable implements KernelTable {
  readonly backend = 'js' as const;
  constructor(
    readonly kind: KernelTable['kind'],
    readonly nodeCount: number,
    readonly size: number,
    readonly a: Uint32Array | Int32Array | BigUint64Array,
    readonly b: Int32Array | Float64Array | null,
  ) {}
}

function ringLookupIn(t: JsTable, key: bigint): number {
  const points = t.a as Uint32Array;
  if (points.length === 0) return NO_NODE;
  const i = lowerBound(points, Number(key & 0xffffffffn));
  return (t.b as Int32Array)[i === points.length ? 0 : i];
}

function validBoundedArgs(t: KernelTable, keys: BigUint64Array, loads: Uint32Array, shares: Float64Array, c: number, out: Int32Array): number {
  if (loads.length !== t.nodeCount || shares.length !== t.nodeCount) return Status.BAD_ARG;
  if (!Number.isFinite(c) || !(c > 1)) return Status.BAD_ARG;
  if (out.length < keys.length) return Status.OUT_TOO_SMALL;
  return Status.OK;
}

/**
 * The bounded-loads walk shared by ring and Maglev: from `home`, try slots home, home+1, … (mod
 * slotCount) and give the key to the first node still under its capacity ceil(c · m · share).
 */
function assignBounded(
  keys: BigUint64Array,
  home: (key: bigint) => number,
  slotNode: (slot: number) => number,
  slotCount: number,
  loads: Uint32Array,
  shares: Float64Array,
  c: number,
  out: Int32Array,
): number {
  let total = 0;
  for (let i = 0; i < loads.length; i++) total += loads[i];
  let refused = 0;
  for (let k = 0; k < keys.length; k++) {
    const m = total + 1;
    const start = home(keys[k]);
    let chosen = NO_NODE;
    for (let step = 0; step < slotCount; step++) {
      const j = slotNode((start + step) % slotCount);
      if (loads[j] + 1 <= Math.ceil(c * m * shares[j])) {
        chosen = j;
        break;
      }
    }
    out[k] = chosen;
    if (chosen === NO_NODE) refused++;
    else {
      loads[chosen]++;
      total += 1;
    }
  }
  return refused;
}

export const jsBackend: KernelBackend = {
  name: 'js',
  abiVersion: () => ABI_VERSION,

  xxh64: (bytes, seed) => xxh64(bytes, seed),

  hashTokens(tokens, blockSize, seed, out) {
    if (!validBlockSize(blockSize)) return Status.BLOCK_SIZE;
    const n = Math.floor(tokens.length / blockSize);
    if (out.length < n) return Status.OUT_TOO_SMALL;
    return chain(tokenBytes(tokens), 0, n * blockSize * 4, blockSize * 4, seed, out, 0);
  },

  hashBytes(bytes, blockSize, seed, out) {
    if (!validBlockSize(blockSize)) return Status.BLOCK_SIZE;
    const n = Math.floor(bytes.length / blockSize);
    if (out.length < n) return Status.OUT_TOO_SMALL;
    return chain(bytes, 0, n * blockSize, blockSize, seed, out, 0);
  },

  hashTokensBatch(tokens, offsets, seeds, blockSize, out, outOffsets) {
    if (!validBlockSize(blockSize)) return Status.BLOCK_SIZE;
    const count = seeds.length;
    if (offsets.length !== count + 1 || outOffsets.length !== count + 1) return Status.BAD_ARG;
    for (let i = 0; i < count; i++) if (offsets[i] > offsets[i + 1]) return Status.BAD_ARG;
    if (offsets[count] > tokens.length) return Status.BAD_ARG;
    let total = 0;
    outOffsets[0] = 0;
    for (let i = 0; i < count; i++) {
      total += Math.floor((offsets[i + 1] - offsets[i]) / blockSize);
      outOffsets[i + 1] = total;
    }
    if (out.length < total) return Status.OUT_TOO_SMALL;
    const bytes = tokenBytes(tokens);
    for (let i = 0; i < count; i++) {
      chain(bytes, offsets[i] * 4, (offsets[i + 1] - offsets[i]) * 4, blockSize * 4, seeds[i], out, outOffsets[i]);
    }
    return total;
  },

  jump: jumpHash,

  jumpBatch(keys, buckets, out) {
    if (!(buckets >= 1)) return Status.EMPTY;
    if (out.length < keys.length) return Status.OUT_TOO_SMALL;
    for (let i = 0; i < keys.length; i++) out[i] = jumpHash(keys[i], buckets);
    return keys.length;
  },

  ringCreate(points, nodes, _index, _bits, nodeCount) {
    // The reference ignores the index accelerator on purpose: its plain binary search is what the
    // accelerated backends must agree with.
    void _index;
    void MAX_RING_INDEX_BITS;
    return new JsTable('ring', nodeCount, points.length, points, nodes);
  },

  ringLookup: (table, key) => ringLookupIn(table as JsTable, key),

  ringLookupBatch(table, keys, out) {
    if (out.length < keys.length) return Status.OUT_TOO_SMALL;
    for (let i = 0; i < keys.length; i++) out[i] = ringLookupIn(table as JsTable, keys[i]);
    return keys.length;
  },

  ringAssignBounded(table, keys, loads, shares, c, out) {
    const t = table as JsTable;
    const bad = validBoundedArgs(t, keys, loads, shares, c, out);
    if (bad !== Status.OK) return bad;
    const points = t.a as Uint32Array;
    const nodes = t.b as Int32Array;
    if (points.length === 0) {
      out.fill(NO_NODE, 0, keys.length);
      return keys.length;
    }
    const home = (key: bigint) => {
      const i = lowerBound(points, Number(key & 0xffffffffn));
      return i === points.length ? 0 : i;
    };
    return assignBounded(keys, home, (s) => nodes[s], points.length, loads, shares, c, out);
  },

  maglevBuild(offsets, skips, weights, size) {
    const n = offsets.length;
    if (n === 0 || skips.length !== n || weights.length !== n) return Status.BAD_ARG;
    if (!Number.isInteger(size) || size < n || size > MAX_MAGLEV_SIZE) return Status.BAD_ARG;
    let wmax = 0;
    for (let i = 0; i < n; i++) {
      if (offsets[i] >= size || skips[i] < 1 || skips[i] >= size || weights[i] < 1) return Status.BAD_ARG;
      wmax = Math.max(wmax, weights[i]);
    }
    const entry = new Int32Array(size).fill(-1);
    const pos = Array.from(offsets);
    const credit = new Array<number>(n).fill(0);
    let filled = 0;
    // Eisenbud et al. 2016, §3.4 Pseudocode 1: nodes take turns claiming their next preferred empty
    // slot; a node of weight w gets w/wmax turns a round (the heaviest node one every round).
    while (filled < size) {
      for (let i = 0; i < n && filled < size; i++) {
        credit[i] += weights[i];
        if (credit[i] < wmax) continue;
        credit[i] -= wmax;
        // A prime M makes every permutation visit each slot once; a non-prime M (the host's check) could
        // cycle without finding a free slot, so the walk gives up after M probes.
        let probes = 0;
        while (entry[pos[i]] >= 0) {
          pos[i] = (pos[i] + skips[i]) % size;
          if (++probes === size) return Status.BAD_ARG;
        }
        entry[pos[i]] = i;
        pos[i] = (pos[i] + skips[i]) % size;
        filled++;
      }
    }
    return new JsTable('maglev', n, size, entry, null);
  },

  maglevEntries: (table) => Int32Array.from((table as JsTable).a as Int32Array),

  maglevLookup(table, key) {
    const t = table as JsTable;
    return (t.a as Int32Array)[Number((key & M64) % BigInt(t.size))];
  },

  maglevLookupBatch(table, keys, out) {
    if (out.length < keys.length) return Status.OUT_TOO_SMALL;
    for (let i = 0; i < keys.length; i++) out[i] = jsBackend.maglevLookup(table, keys[i]);
    return keys.length;
  },

  maglevAssignBounded(table, keys, loads, shares, c, out) {
    const t = table as JsTable;
    const bad = validBoundedArgs(t, keys, loads, shares, c, out);
    if (bad !== Status.OK) return bad;
    const entry = t.a as Int32Array;
    const size = BigInt(t.size);
    return assignBounded(keys, (key) => Number(key % size), (s) => entry[s], t.size, loads, shares, c, out);
  },

  rendezvousCreate(nodeHashes, weights) {
    return new JsTable('rendezvous', nodeHashes.length, nodeHashes.length, nodeHashes, weights);
  },

  rendezvousLookup(table, key) {
    const t = table as JsTable;
    const hashes = t.a as BigUint64Array;
    const weights = t.b as Float64Array;
    let best = NO_NODE;
    let bestScore = -Infinity;
    for (let i = 0; i < hashes.length; i++) {
      const s = rendezvousScore(key & M64, hashes[i], weights[i]);
      if (s > bestScore) {
        bestScore = s;
        best = i;
      }
    }
    return best;
  },

  rendezvousLookupBatch(table, keys, out) {
    if (out.length < keys.length) return Status.OUT_TOO_SMALL;
    for (let i = 0; i < keys.length; i++) out[i] = jsBackend.rendezvousLookup(table, keys[i]);
    return keys.length;
  },

  free() {},

  indexCreate(config) {
    return new JsIndexHandle({ ...config });
  },
  indexApply: (h, records, count, nowMs) => (h as JsIndexHandle).index.apply(records, count, nowMs),
  indexMatch: (h, hashes, count, nowMs, out) => (h as JsIndexHandle).index.match(hashes, count, nowMs, out),
  indexStats: (h, out) => (h as JsIndexHandle).index.stats(out),
  indexDump: (h, nowMs) => (h as JsIndexHandle).index.dump(nowMs),
  indexFree() {},
};

class JsIndexHandle implements PrefixIndexHandle {
  readonly backend = 'js' as const;
  readonly index: JsPrefixIndex;
  constructor(readonly config: Readonly<PrefixIndexConfig>) {
    this.index = new JsPrefixIndex(config);
  }
}
