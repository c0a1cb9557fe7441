/**
 * Consistent hashing front-ends (DESIGN §3): jump hash, a ketama-style ring, Maglev and weighted
 * rendezvous, plus bounded loads over the ring and Maglev. Each table is an immutable snapshot: the
 * constructor validates and builds (control path), lookups only read (hot path). A membership change
 * builds a new table and swaps the reference (STYLE 1).
 *
 * Keys are unsigned 64-bit bigints (for example a session id or a prefix block hash from
 * PrefixHasher); `keyOf()` hashes a string key with XXH64 (seed 0).
 */
import { createHash } from 'node:crypto';
import { DystroError, fail } from '../errors.js';
import { MAX_MAGLEV_SIZE, MAX_RING_INDEX_BITS, NO_NODE, Status, type KernelBackend, type KernelTable } from '../kernels/abi.js';
import { checkInteger, checkLoadFactor, checkNodeNames, checkU64, checkWeight, isPrime, nextPrime } from './validate.js';

const encoder = new TextEncoder();

/** Upper bound on ring points (2^25 points ≈ 256 MiB of points, ids and index): beyond it, use Maglev. */
export const MAX_RING_POINTS = 1 << 25;

export type NodeSpec = string | { name: string; weight?: number };

interface NormalizedNodes {
  names: string[];
  weights: number[];
}

function normalizeNodes(nodes: unknown): NormalizedNodes {
  if (!Array.isArray(nodes)) fail('DYSTRO_ERR_INVALID_ARGUMENT', 'nodes', 'an array of node names or { name, weight }', nodes);
  const names: string[] = [];
  const weights: number[] = [];
  nodes.forEach((n, i) => {
    if (typeof n === 'string') {
      names.push(n);
      weights.push(1);
    } else if (n !== null && typeof n === 'object') {
      const spec = n as { name?: unknown; weight?: unknown };
      names.push(spec.name as string);
      weights.push(spec.weight === undefined ? 1 : checkWeight(spec.weight, `nodes[${i}].weight`));
    } else {
      fail('DYSTRO_ERR_INVALID_ARGUMENT', `nodes[${i}]`, 'a node name or { name, weight }', n);
    }
  });
  checkNodeNames(names);
  return { names, weights };
}

function sharesOf(weights: readonly number[]): Float64Array {
  const total = weights.reduce((a, b) => a + b, 0);
  return Float64Array.from(weights, (w) => w / total);
}

/** XXH64 (seed 0) of a string's UTF-8 bytes: the 64-bit key of a session id or any string key. */
export function keyOf(kernels: KernelBackend, key: string): bigint {
  if (typeof key !== 'string') fail('DYSTRO_ERR_INVALID_ARGUMENT', 'key', 'a string', key);
  return kernels.xxh64(encoder.encode(key), 0n);
}

/** Jump consistent hash (Lamping & Veach 2014): bucket in 0 … buckets−1, no table, no memory. */
export function jumpHash(kernels: KernelBackend, key: bigint, buckets: number): number {
  checkU64(key, 'key');
  checkInteger(buckets, 'buckets', 1, 0x7fffffff, 'DYSTRO_ERR_EMPTY_NODES');
  return kernels.jump(key, buckets);
}

export function jumpHashBatch(kernels: KernelBackend, keys: BigUint64Array, buckets: number, out: Int32Array = new Int32Array(keys.length)): Int32Array {
  checkInteger(buckets, 'buckets', 1, 0x7fffffff, 'DYSTRO_ERR_EMPTY_NODES');
  checkBatch(keys, out);
  kernels.jumpBatch(keys, buckets, out);
  return out;
}

function checkBatch(keys: unknown, out: unknown): void {
  if (!(keys instanceof BigUint64Array)) fail('DYSTRO_ERR_INVALID_ARGUMENT', 'keys', 'a BigUint64Array', keys);
  if (!(out instanceof Int32Array)) fail('DYSTRO_ERR_INVALID_ARGUMENT', 'out', 'an Int32Array', out);
  if (out.length < keys.length) fail('DYSTRO_ERR_OUTPUT_TOO_SMALL', 'out.length', `at least ${keys.length}`, out.length);
}

function checkLoads(loads: unknown, nodeCount: number): Uint32Array {
  if (!(loads instanceof Uint32Array) || loads.length !== nodeCount) {
    fail('DYSTRO_ERR_INVALID_LOADS', 'loads', `a Uint32Array with one entry per node (${nodeCount})`, loads);
  }
  return loads;
}

/**
 * Sorts ring points ascending with their node ids: a stable LSD radix sort (two 16-bit passes), so equal
 * points keep insertion order — the node inserted first wins a tie, as with hashring's stable sort.
 */
function sortPoints(pts: Uint32Array, ids: Int32Array): { points: Uint32Array; nodeIds: Int32Array } {
  const n = pts.length;
  let srcP: Uint32Array = pts;
  let srcI: Int32Array = ids;
  let dstP: Uint32Array = new Uint32Array(n);
  let dstI: Int32Array = new Int32Array(n);
  const count = new Uint32Array(65537);
  for (const shift of [0, 16]) {
    count.fill(0);
    for (let i = 0; i < n; i++) count[((srcP[i] >>> shift) & 0xffff) + 1]++;
    for (let b = 1; b <= 65536; b++) count[b] += count[b - 1];
    for (let i = 0; i < n; i++) {
      const to = count[(srcP[i] >>> shift) & 0xffff]++;
      dstP[to] = srcP[i];
      dstI[to] = srcI[i];
    }
    [srcP, dstP] = [dstP, srcP];
    [srcI, dstI] = [dstI, srcI];
  }
  return { points: srcP, nodeIds: srcI };
}

const finalizer = new FinalizationRegistry<{ kernels: KernelBackend; table: KernelTable }>((h) => h.kernels.free(h.table));

/** Shared life cycle of a table held by a backend: explicit free(), and a finalizer as a safety net. */
abstract class BackendTable {
  protected table: KernelTable;
  readonly names: readonly string[];
  readonly weights: readonly number[];
  protected readonly shares: Float64Array;
  private freed = false;

  protected constructor(readonly kernels: KernelBackend, table: KernelTable, nodes: NormalizedNodes) {
    this.table = table;
    this.names = nodes.names;
    this.weights = nodes.weights;
    this.shares = sharesOf(nodes.weights);
    finalizer.register(this, { kernels, table }, this);
  }

  get nodeCount(): number {
    return this.names.length;
  }

  /** The node name for an id returned by a lookup (undefined for NO_NODE). */
  nameOf(id: number): string | undefined {
    return id >= 0 ? this.names[id] : undefined;
  }

  /** Releases the backend's memory now (wasm tables live outside the JS heap). */
  free(): void {
    if (this.freed) return;
    this.freed = true;
    finalizer.unregister(this);
    this.kernels.free(this.table);
  }

  protected live(): KernelTable {
    if (this.freed) throw new DystroError('DYSTRO_ERR_TABLE_FREED', `This ${this.table.kind} table was freed; build a new one`);
    return this.table;
  }

  protected assign(
    fn: (t: KernelTable, k: BigUint64Array, l: Uint32Array, s: Float64Array, c: number, o: Int32Array) => number,
    keys: BigUint64Array,
    loads: Uint32Array,
    c: number,
    out: Int32Array,
  ): { out: Int32Array; refused: number } {
    checkBatch(keys, out);
    checkLoads(loads, this.nodeCount);
    checkLoadFactor(c);
    const refused = fn(this.live(), keys, loads, this.shares, c, out);
    if (refused < 0) throw new DystroError('DYSTRO_ERR_KERNEL', `The ${this.kernels.name} bounded-load kernel returned ${refused}`, { status: refused });
    return { out, refused };
  }
}

export interface RingOptions {
  /**
   * How ring points are derived from node names:
   * - `ketama-md5` (default): hashring/ketama compatible — for node s and i < vnodes·n·w_s/W,
   *   md5(`${s}-${i}`) gives 4 points (bytes 4j+3 … 4j, big-endian per group); a string key's position
   *   is the first 4 md5 bytes read little-endian. Same placement as the `hashring` npm package.
   * - `xxh64`: round(4 · vnodes · weight) points for node s (weights are absolute: 1 → 160 points), point
   *   i being the low 32 bits of XXH64(`${s}-${i}`). Membership changes never move keys between the
   *   nodes that stay; faster to build.
   */
  hash?: 'ketama-md5' | 'xxh64';
  /** Digests per node at equal weight, 4 points each (ketama: 40, i.e. 160 points a node). */
  vnodes?: number;
}

/**
 * A ketama-style ring: sorted u32 points with their node, looked up by lower bound (with wrap). An index
 * of 2^bits buckets over the top bits of the position narrows the search to ~1 point, so lookups stay
 * O(1) in practice whatever the ring size.
 */
export class HashRing extends BackendTable {
  readonly hash: 'ketama-md5' | 'xxh64';
  readonly pointCount: number;
  /** Bytes the table holds in the backend: points and node ids (8 B a point) plus the index. */
  readonly bytes: number;

  constructor(kernels: KernelBackend, nodes: readonly NodeSpec[], options: RingOptions = {}) {
    const norm = normalizeNodes(nodes);
    const hash = options.hash ?? 'ketama-md5';
    if (hash !== 'ketama-md5' && hash !== 'xxh64') fail('DYSTRO_ERR_INVALID_ARGUMENT', 'options.hash', '"ketama-md5" or "xxh64"', hash);
    const vnodes = checkInteger(options.vnodes ?? 40, 'options.vnodes', 1, 1 << 16);
    const { points, nodeIds } = HashRing.buildPoints(kernels, norm, hash, vnodes);
    const bits = Math.min(MAX_RING_INDEX_BITS, Math.max(1, Math.ceil(Math.log2(Math.max(2, points.length)))));
    const index = HashRing.buildIndex(points, bits);
    super(kernels, kernels.ringCreate(points, nodeIds, index, bits, norm.names.length), norm);
    this.hash = hash;
    this.pointCount = points.length;
    this.bytes = points.byteLength + nodeIds.byteLength + index.byteLength;
  }

  private static buildPoints(kernels: KernelBackend, norm: NormalizedNodes, hash: RingOptions['hash'], vnodes: number) {
    const n = norm.names.length;
    const total = norm.weights.reduce((a, b) => a + b, 0);
    // Points per node. ketama-md5 follows hashring's (and libketama's) rule: floor(share · vnodes · n)
    // digests of 4 points; counts derive from relative shares, so a membership change can shift another
    // node's count by one digest (floating-point rounding) — kept as is for placement compatibility.
    // xxh64 uses absolute weights: round(4 · vnodes · weight) points, independent of the other nodes, so
    // adding or removing a node never moves keys between the nodes that stay.
    const counts = norm.weights.map((w) => (hash === 'ketama-md5' ? 4 * Math.floor((w / total) * vnodes * n) : Math.max(1, Math.round(4 * vnodes * w))));
    const planned = counts.reduce((a, b) => a + b, 0);
    if (planned > MAX_RING_POINTS) fail('DYSTRO_ERR_TABLE_SIZE', 'ring points (nodes × vnodes × 4 × weight)', `at most ${MAX_RING_POINTS}`, planned);
    const pts = new Uint32Array(planned);
    const ids = new Int32Array(planned);
    let at = 0;
    norm.names.forEach((name, id) => {
      if (hash === 'ketama-md5') {
        for (let i = 0; i < counts[id] / 4; i++) {
          const d = createHash('md5').update(`${name}-${i}`).digest();
          for (let j = 0; j < 4; j++) {
            pts[at] = (d[3 + j * 4] << 24) | (d[2 + j * 4] << 16) | (d[1 + j * 4] << 8) | d[j * 4];
            ids[at++] = id;
          }
        }
      } else {
        for (let i = 0; i < counts[id]; i++) {
          pts[at] = Number(kernels.xxh64(encoder.encode(`${name}-${i}`), 0n) & 0xffffffffn);
          ids[at++] = id;
        }
      }
    });
    return sortPoints(pts, ids);
  }

  private static buildIndex(points: Uint32Array, bits: number): Uint32Array {
    const buckets = 1 << bits;
    const index = new Uint32Array(buckets + 1);
    const shift = 32 - bits;
    let i = 0;
    for (let p = 0; p < buckets; p++) {
      const start = p * 2 ** shift;
      while (i < points.length && points[i] < start) i++;
      index[p] = i;
    }
    index[buckets] = points.length;
    return index;
  }

  /** The 64-bit key of a string, positioned as this ring's hash mode places keys. */
  keyOf(key: string): bigint {
    if (this.hash === 'xxh64') return keyOf(this.kernels, key);
    if (typeof key !== 'string') fail('DYSTRO_ERR_INVALID_ARGUMENT', 'key', 'a string', key);
    const d = createHash('md5').update(key).digest();
    return BigInt(((d[3] << 24) | (d[2] << 16) | (d[1] << 8) | d[0]) >>> 0);
  }

  /** Node id for a key (its position is the key's low 32 bits); NO_NODE (-1) when the ring is empty. */
  lookup(key: bigint): number {
    return this.kernels.ringLookup(this.live(), checkU64(key, 'key'));
  }

  lookupBatch(keys: BigUint64Array, out: Int32Array = new Int32Array(keys.length)): Int32Array {
    checkBatch(keys, out);
    this.kernels.ringLookupBatch(this.live(), keys, out);
    return out;
  }

  /**
   * Bounded loads (Mirrokni, Thorup & Zadimoghaddam 2018): each key goes to the first node clockwise
   * from its position whose load stays ≤ ceil(c · m · share) with m the total load including this key.
   * `loads` (one count per node) is updated in place.
   */
  assignBounded(keys: BigUint64Array, loads: Uint32Array, c: number, out: Int32Array = new Int32Array(keys.length)) {
    return this.assign((t, k, l, s, cc, o) => this.kernels.ringAssignBounded(t, k, l, s, cc, o), keys, loads, c, out);
  }
}

export interface MaglevOptions {
  /** Table size M: a prime ≥ the node count (default: the smallest prime ≥ max(65,537, 100 · nodes)). */
  size?: number;
}

/**
 * Maglev hashing (Eisenbud et al., NSDI 2016 §3.4): each node walks its own permutation of the M slots
 * (offset, skip from two hashes of its name) and the nodes take turns claiming their next free slot,
 * so every node gets ⌊M/n⌋ or ⌈M/n⌉ slots (exactly, at equal weights). Lookup is table[key mod M].
 */
export class Maglev extends BackendTable {
  readonly size: number;
  /** Bytes the table holds in the backend (4 B a slot). */
  readonly bytes: number;

  constructor(kernels: KernelBackend, nodes: readonly NodeSpec[], options: MaglevOptions = {}) {
    const norm = normalizeNodes(nodes);
    const n = norm.names.length;
    const size = options.size ?? nextPrime(Math.max(65537, 100 * n));
    if (typeof size !== 'number' || !Number.isInteger(size) || !isPrime(size) || size < n || size > MAX_MAGLEV_SIZE) {
      fail('DYSTRO_ERR_TABLE_SIZE', 'options.size', `a prime in ${n} … ${MAX_MAGLEV_SIZE}`, size);
    }
    const offsets = new Uint32Array(n);
    const skips = new Uint32Array(n);
    const M = BigInt(size);
    norm.names.forEach((name, i) => {
      const bytes = encoder.encode(name);
      offsets[i] = Number(kernels.xxh64(bytes, MAGLEV_OFFSET_SEED) % M);
      skips[i] = Number(kernels.xxh64(bytes, MAGLEV_SKIP_SEED) % (M - 1n)) + 1;
    });
    super(kernels, Maglev.build(kernels, offsets, skips, Maglev.turnWeights(norm.weights), size), norm);
    this.size = size;
    this.bytes = size * 4;
  }

  /** Builds from explicit offsets and skips (the paper's worked example uses these directly). */
  static fromPermutations(kernels: KernelBackend, names: readonly string[], offsets: Uint32Array, skips: Uint32Array, size: number, weights?: readonly number[]): Maglev {
    const m = Object.create(Maglev.prototype) as Maglev;
    const norm = normalizeNodes(names.map((name, i) => ({ name, weight: weights?.[i] ?? 1 })));
    if (!isPrime(size)) fail('DYSTRO_ERR_TABLE_SIZE', 'size', 'a prime', size);
    const table = Maglev.build(kernels, offsets, skips, Maglev.turnWeights(norm.weights), size);
    Object.assign(m, { kernels, table, names: norm.names, weights: norm.weights, shares: sharesOf(norm.weights), freed: false, size, bytes: size * 4 });
    finalizer.register(m, { kernels, table }, m);
    return m;
  }

  /** Weights as whole turns per round: the heaviest node gets 2^20 credits, the others in proportion. */
  private static turnWeights(weights: readonly number[]): Uint32Array {
    const wmax = Math.max(...weights);
    return Uint32Array.from(weights, (w) => Math.max(1, Math.round((w / wmax) * (1 << 20))));
  }

  private static build(kernels: KernelBackend, offsets: Uint32Array, skips: Uint32Array, weights: Uint32Array, size: number): KernelTable {
    const t = kernels.maglevBuild(offsets, skips, weights, size);
    if (typeof t === 'number') {
      throw new DystroError('DYSTRO_ERR_TABLE_SIZE', `The ${kernels.name} Maglev build refused its arguments (status ${t}): offsets must be < M and 1 ≤ skip < M`, { status: t });
    }
    return t;
  }

  /** A copy of the lookup table: entry j is the node id that owns slot j. */
  entries(): Int32Array {
    return this.kernels.maglevEntries(this.live());
  }

  lookup(key: bigint): number {
    return this.kernels.maglevLookup(this.live(), checkU64(key, 'key'));
  }

  lookupBatch(keys: BigUint64Array, out: Int32Array = new Int32Array(keys.length)): Int32Array {
    checkBatch(keys, out);
    this.kernels.maglevLookupBatch(this.live(), keys, out);
    return out;
  }

  /** Bounded loads over the table: from slot key mod M, the first slot whose node is under its cap. */
  assignBounded(keys: BigUint64Array, loads: Uint32Array, c: number, out: Int32Array = new Int32Array(keys.length)) {
    return this.assign((t, k, l, s, cc, o) => this.kernels.maglevAssignBounded(t, k, l, s, cc, o), keys, loads, c, out);
  }
}

/** Seeds of the two name hashes that give a Maglev node its offset and skip ("maglev-o", "maglev-s"). */
export const MAGLEV_OFFSET_SEED = 0x6d61676c65762d6fn;
export const MAGLEV_SKIP_SEED = 0x6d61676c65762d73n;

/**
 * Weighted rendezvous hashing (highest random weight): every node scores the key, the best score wins.
 * Removing a node moves only the keys it owned; cost is O(n) a lookup, so it suits small sets (a
 * replica's pool, a shortlist of candidates) rather than a whole fleet.
 */
export class Rendezvous extends BackendTable {
  constructor(kernels: KernelBackend, nodes: readonly NodeSpec[]) {
    const norm = normalizeNodes(nodes);
    const hashes = BigUint64Array.from(norm.names, (name) => kernels.xxh64(encoder.encode(name), 0n));
    super(kernels, kernels.rendezvousCreate(hashes, Float64Array.from(norm.weights)), norm);
  }

  lookup(key: bigint): number {
    return this.kernels.rendezvousLookup(this.live(), checkU64(key, 'key'));
  }

  lookupBatch(keys: BigUint64Array, out: Int32Array = new Int32Array(keys.length)): Int32Array {
    checkBatch(keys, out);
    this.kernels.rendezvousLookupBatch(this.live(), keys, out);
    return out;
  }
}

export { NO_NODE, Status };
