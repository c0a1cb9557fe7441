/**
 * Prefix-index conformance: every loaded backend against the executable specification (the js backend,
 * src/kernels/js/prefix-index.ts) on seeded random operation streams. The index is deterministic down
 * to its layout (slot order, arena chunks, eviction sampler), so after every batch the dump (slot
 * order), the stats and the match output (block-0 holder order) must be identical, not merely
 * equivalent.
 *
 * The streams are built to reach every mechanism: eviction (small budgets), table growth (a large
 * budget), arena chunks of many classes (one block held by hundreds of replicas), epochs and sweeps
 * (one replica cleared 127+ times), speculative expiry (a FakeClock moving past the TTL, also across
 * the u32 wrap of the millisecond stamps), long probe runs and runs that wrap around the end of the
 * table (keys crafted to share a home slot, or to land on the last slot).
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { backends, reference } from '../helpers/backends.ts';
import { countCases } from '../helpers/cases.ts';
import { FakeClock } from '../../src/clock.ts';
import { createRng, type Rng } from '../../src/rng.ts';
import { Status, type KernelBackend, type PrefixIndexConfig, type PrefixIndexHandle } from '../../src/kernels/abi.ts';
import {
  MATCH_STRIDE,
  OP_CLEAR,
  OP_REMOVE,
  OP_SPECULATE,
  OP_STORE,
  RECORD_WORDS,
  STATS_LENGTH,
  STAT_NAMES,
} from '../../src/kernels/js/prefix-index.ts';
import { PrefixIndex } from '../../src/index/prefix-index.ts';

/** Multiplier of the kernel's Fibonacci hashing (home = imul(lo ^ hi, M) >>> shift). */
const FIB = 0x9e3779b1;

/** Inverse of FIB mod 2^32 (Newton's iteration doubles the correct low bits each step). */
function inverseOf(a: number): number {
  let x = a; // correct to 3 bits for odd a
  for (let i = 0; i < 5; i++) x = Math.imul(x, 2 - Math.imul(a, x));
  return x >>> 0;
}
const FIB_INV = inverseOf(FIB);

/** A block hash as its two u32 words and as a bigint. */
interface Block {
  lo: number;
  hi: number;
}

/**
 * Block hashes of three kinds: uniform (most), sharing one lo ^ hi (so one home slot at every table
 * size: long probe runs, backward shifts across them), or with a product just below 2^32 (home = the
 * last slot at every size: runs that wrap around to slot 0).
 */
function makeBlock(rng: Rng, sameHome: number): Block {
  const kind = rng.int(10);
  const hi = rng.u32();
  if (kind === 0) return { lo: (sameHome ^ hi) >>> 0, hi };
  if (kind === 1) {
    const product = (0xffffffff - rng.int(1 << 20)) >>> 0; // top 12 bits set: the last slot up to 4,096 slots
    return { lo: (Math.imul(product, FIB_INV) ^ hi) >>> 0, hi };
  }
  return { lo: rng.u32(), hi };
}

/** Prompts as block chains; later prompts often extend a prefix of an earlier one (shared chains). */
function makePrompts(rng: Rng, count: number, maxLen: number): Block[][] {
  const sameHome = rng.u32();
  const prompts: Block[][] = [];
  for (let p = 0; p < count; p++) {
    const len = 1 + rng.int(maxLen);
    const chain: Block[] = [];
    if (prompts.length > 0 && rng.int(2) === 0) {
      const base = prompts[rng.int(prompts.length)];
      const shared = Math.min(len, 1 + rng.int(base.length));
      for (let i = 0; i < shared; i++) chain.push(base[i]);
    }
    while (chain.length < len) chain.push(makeBlock(rng, sameHome));
    prompts.push(chain);
  }
  return prompts;
}

function hashesOf(chain: Block[]): BigUint64Array {
  return BigUint64Array.from(chain, (b) => (BigInt(b.hi) << 32n) | BigInt(b.lo));
}

/** Record builder (4 words a record: [op | tier << 8, replica, lo, hi]). */
class Records {
  words: number[] = [];
  get count(): number {
    return this.words.length / RECORD_WORDS;
  }
  push(op: number, tier: number, replica: number, b: Block): void {
    this.words.push(op | (tier << 8), replica, b.lo, b.hi);
  }
  array(): Uint32Array {
    return Uint32Array.from(this.words);
  }
}

function firstDifference(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

function sameWords(got: ArrayLike<number>, want: ArrayLike<number>, what: string): void {
  const at = firstDifference(got, want);
  if (at >= 0) {
    const show = (x: ArrayLike<number>) => Array.from({ length: Math.min(8, Math.max(0, x.length - at)) }, (_, i) => x[at + i]).join(',');
    assert.unreachable(`${what}: lengths ${got.length} / ${want.length}, first difference at word ${at}: got [${show(got)}], want [${show(want)}]`);
  }
}

/** The same index in a backend under test and in the reference, driven in lockstep. */
class Twin {
  readonly h: PrefixIndexHandle;
  readonly r: PrefixIndexHandle;
  private readonly sk = new Float64Array(STATS_LENGTH);
  private readonly sr = new Float64Array(STATS_LENGTH);
  cases = 0;

  constructor(
    readonly k: KernelBackend,
    readonly config: PrefixIndexConfig,
  ) {
    this.h = k.indexCreate(config);
    this.r = reference.indexCreate(config);
  }

  apply(records: Uint32Array, count: number, now: number, what: string): number {
    const got = this.k.indexApply(this.h, records, count, now);
    const want = reference.indexApply(this.r, records, count, now);
    assert.is(got, want, `${what}: apply result`);
    this.cases++;
    return got;
  }

  stats(what: string): Float64Array {
    this.k.indexStats(this.h, this.sk);
    reference.indexStats(this.r, this.sr);
    for (let i = 0; i < STATS_LENGTH; i++) assert.is(this.sk[i], this.sr[i], `${what}: stats.${STAT_NAMES[i]}`);
    this.cases++;
    return this.sr;
  }

  dump(now: number, what: string): number {
    const got = this.k.indexDump(this.h, now);
    const want = reference.indexDump(this.r, now);
    sameWords(got, want, `${what}: dump`);
    this.cases++;
    return want.length / 4;
  }

  /** Matches hashes[0 … count) with an output of `outWords` words; returns the reference's result. */
  match(hashes: BigUint64Array, count: number, now: number, outWords: number, what: string): number {
    const got = new Uint32Array(outWords);
    const want = new Uint32Array(outWords);
    const n = this.k.indexMatch(this.h, hashes, count, now, got);
    const m = reference.indexMatch(this.r, hashes, count, now, want);
    assert.is(n, m, `${what}: match result`);
    if (m > 0) sameWords(got.subarray(0, m * MATCH_STRIDE), want.subarray(0, m * MATCH_STRIDE), `${what}: match output`);
    this.cases++;
    return m;
  }

  free(): void {
    this.k.indexFree(this.h);
    reference.indexFree(this.r);
  }
}

interface StreamOptions {
  seed: number;
  config: PrefixIndexConfig;
  batches: number;
  prompts: number;
  maxLen: number;
  /** Largest batch (records). */
  maxBatch: number;
  /** Clock start (ms); near 2^32 to cross the wrap of the u32 stamps. */
  start?: number;
  /** Per-mille chance that a batch clears the sweep replica (0) many times. */
  sweepRate?: number;
  /** Full dump and stats every this many batches (matches run after every batch). */
  checkEvery?: number;
}

/** Runs one seeded stream and returns what it reached (for asserting that the mechanisms ran). */
function runStream(k: KernelBackend, o: StreamOptions): Float64Array {
  const rng = createRng(o.seed);
  const clock = new FakeClock(o.start ?? 1_000);
  const now = () => Math.floor(clock.nowMs()) >>> 0;
  const t = new Twin(k, o.config);
  const R = o.config.replicaCapacity;
  const prompts = makePrompts(rng, o.prompts, o.maxLen);
  const hot = prompts[0]; // stored by very many replicas: its blocks' holders climb the arena classes
  const replica = () => (rng.int(4) === 0 ? rng.int(Math.min(R, 4)) : rng.int(R));
  const outWords = R * MATCH_STRIDE;
  const what = (b: number) => `[${k.name}] seed ${o.seed} batch ${b}`;
  for (let b = 0; b < o.batches; b++) {
    const rec = new Records();
    const size = 1 + rng.int(o.maxBatch);
    while (rec.count < size) {
      const op = rng.int(100);
      if (op < 45) {
        // Engine events: a replica stored a prefix of a prompt on one tier.
        const chain = rng.int(8) === 0 ? hot : prompts[rng.int(prompts.length)];
        const n = 1 + rng.int(chain.length);
        const r = chain === hot ? rng.int(R) : replica();
        const tier = rng.int(3);
        for (let i = 0; i < n; i++) rec.push(OP_STORE, tier, r, chain[i]);
      } else if (op < 65) {
        const chain = prompts[rng.int(prompts.length)];
        const from = rng.int(chain.length);
        const n = 1 + rng.int(chain.length - from);
        const r = replica();
        const tier = rng.int(3);
        for (let i = from; i < from + n; i++) rec.push(OP_REMOVE, tier, r, chain[i]);
      } else if (op < 90) {
        // Routing decisions: the router sent a prompt to a replica.
        const chain = prompts[rng.int(prompts.length)];
        const n = 1 + rng.int(chain.length);
        const r = replica();
        for (let i = 0; i < n; i++) rec.push(OP_SPECULATE, 0, r, chain[i]);
      } else if (op < 92) {
        rec.push(OP_CLEAR, 0, replica(), { lo: rng.u32(), hi: rng.u32() });
      } else if (op < 92 + ((o.sweepRate ?? 0) > 0 && rng.int(1000) < (o.sweepRate ?? 0) ? 8 : 0)) {
        for (let i = 0; i < 20; i++) rec.push(OP_CLEAR, 0, 0, { lo: 0, hi: 0 });
      } else {
        // A random single block (mostly unknown): stores and removes of strays.
        const blk = makeBlock(rng, rng.u32());
        rec.push(rng.int(2) === 0 ? OP_STORE : OP_REMOVE, rng.int(3), replica(), blk);
      }
    }
    const words = rec.array();
    assert.is(t.apply(words, rec.count, now(), what(b)), rec.count, `${what(b)}: every record applied`);
    // Time moves: mostly a little, sometimes past the speculative TTL.
    clock.advance(rng.int(8) === 0 ? o.config.ttlMs + rng.int(o.config.ttlMs) : rng.int(Math.max(1, o.config.ttlMs >> 3)));
    if (b % (o.checkEvery ?? 1) === 0 || b === o.batches - 1) {
      t.stats(what(b));
      t.dump(now(), what(b));
    }
    for (let m = 0; m < 6; m++) {
      const chain = m === 0 ? hot : prompts[rng.int(prompts.length)];
      const hashes = hashesOf(chain);
      const count = rng.int(3) === 0 ? rng.int(hashes.length + 1) : hashes.length;
      t.match(hashes, count, now(), outWords, `${what(b)} match ${m}`);
    }
    t.match(BigUint64Array.of(rng.u64(), rng.u64()), 2, now(), outWords, `${what(b)} stray match`);
  }
  const final = Float64Array.from(t.stats(`${what(o.batches)} final`));
  t.free();
  countCases(k.name, t.cases);
  return final;
}

const S = Object.fromEntries(STAT_NAMES.map((n, i) => [n, i])) as Record<(typeof STAT_NAMES)[number], number>;

function indexSuite(k: KernelBackend) {
  const test = suite(`prefix index [${k.name}]`);

  test('small budgets: eviction of dead, speculative and precise holders, shared chains, many seeds', () => {
    for (let seed = 1; seed <= 12; seed++) {
      const st = runStream(k, {
        seed,
        config: { maxEntries: 40 + seed * 37, replicaCapacity: 1 + ((seed * 7) % 40), seed: seed === 3 ? 0 : (seed * 2654435761) >>> 0, ttlMs: 500 + seed * 50 },
        batches: 60,
        prompts: 30,
        maxLen: 24,
        maxBatch: 60,
      });
      assert.ok(st[S.evictions] > 0, `seed ${seed}: evictions ran`);
      assert.ok(st[S.deadRemoved] > 0, `seed ${seed}: dead holders were removed`);
    }
  });

  test('a budget of one entry, and one replica', () => {
    for (let seed = 20; seed < 24; seed++) {
      runStream(k, { seed, config: { maxEntries: 1, replicaCapacity: 1 + (seed % 2), seed, ttlMs: 100 }, batches: 40, prompts: 6, maxLen: 5, maxBatch: 12 });
    }
  });

  test('hundreds of replicas on one chain: holders climb the arena classes and come back inline', () => {
    for (const seed of [31, 32]) {
      const st = runStream(k, {
        seed,
        config: { maxEntries: 6_000, replicaCapacity: 300, seed, ttlMs: 3_000 },
        batches: 120,
        prompts: 20,
        maxLen: 12,
        maxBatch: 400,
        checkEvery: 4,
      });
      // Classes up to 2^8 pairs (≥ 129 holders on a block) were cut from the arena.
      assert.ok(st[S.arenaPairs] >= 512, `seed ${seed}: arena pairs ${st[S.arenaPairs]}`);
    }
  });

  test('growth: the table doubles up to the budget, the arena grows, no eviction until full', () => {
    const st = runStream(k, {
      seed: 41,
      config: { maxEntries: 60_000, replicaCapacity: 64, seed: 41, ttlMs: 60_000 },
      batches: 60,
      prompts: 2_000,
      maxLen: 64,
      maxBatch: 3_000,
      checkEvery: 6,
    });
    assert.ok(st[S.slots] >= 32_768, `slots ${st[S.slots]}`);
    // And the same budget overfilled: eviction at the largest table.
    const full = runStream(k, {
      seed: 42,
      config: { maxEntries: 9_000, replicaCapacity: 32, seed: 42, ttlMs: 60_000 },
      batches: 40,
      prompts: 3_000,
      maxLen: 64,
      maxBatch: 4_000,
      checkEvery: 5,
    });
    assert.is(full[S.slots], 16_384);
    assert.ok(full[S.evictions] > 0);
  });

  test('long chains (up to 400 blocks, many match pipeline chunks) on a table near its 3/4 load', () => {
    for (const seed of [91, 92, 93]) {
      const st = runStream(k, {
        seed,
        // 5,000 entries at most: the table stops at 8,192 slots, so probe runs often leave their line.
        config: { maxEntries: 5_000, replicaCapacity: 3 + (seed % 5), seed, ttlMs: 5_000 },
        batches: 50,
        prompts: 40,
        maxLen: 400,
        maxBatch: 1_500,
        checkEvery: 5,
      });
      assert.ok(st[S.blocks] > 2_000, `seed ${seed}: blocks ${st[S.blocks]}`);
    }
  });

  test('sweeps: one replica wiped 127+ times between stores', () => {
    for (const seed of [51, 52, 53]) {
      const st = runStream(k, {
        seed,
        config: { maxEntries: 3_000, replicaCapacity: 6, seed, ttlMs: 2_000 },
        batches: 150,
        prompts: 40,
        maxLen: 30,
        maxBatch: 120,
        sweepRate: 600,
        checkEvery: 2,
      });
      assert.ok(st[S.sweeps] >= 2, `seed ${seed}: sweeps ${st[S.sweeps]}`);
    }
  });

  test('stamps across the u32 wrap of the millisecond clock', () => {
    for (const seed of [61, 62]) {
      runStream(k, {
        seed,
        config: { maxEntries: 400, replicaCapacity: 10, seed, ttlMs: 1_000 },
        batches: 80,
        prompts: 25,
        maxLen: 16,
        maxBatch: 80,
        start: 2 ** 32 - 20_000,
      });
    }
  });

  test('match edge cases: empty chain, unknown block 0, OUT_TOO_SMALL at the exact boundary, count < length', () => {
    const t = new Twin(k, { maxEntries: 100, replicaCapacity: 8, seed: 9, ttlMs: 1_000 });
    const blocks: Block[] = [1, 2, 3, 4].map((i) => ({ lo: i * 0x1111, hi: i }));
    const rec = new Records();
    for (const r of [5, 2, 7]) for (let i = 0; i < 3; i++) rec.push(OP_STORE, r % 3, r, blocks[i]);
    rec.push(OP_SPECULATE, 0, 2, blocks[3]);
    assert.is(t.apply(rec.array(), rec.count, 10, 'edge'), rec.count);
    const hashes = hashesOf(blocks);
    assert.is(t.match(hashes, 0, 10, 40, 'count 0'), 0);
    assert.is(t.match(new BigUint64Array(0), 0, 10, 0, 'empty chain, empty out'), 0);
    assert.is(t.match(BigUint64Array.of(99n, hashes[1]), 2, 10, 40, 'unknown block 0'), 0);
    assert.is(t.match(BigUint64Array.of(99n), 1, 10, 0, 'unknown block 0, empty out'), 0);
    assert.is(t.match(hashes, 4, 10, 3 * MATCH_STRIDE - 1, 'out one word short'), Status.OUT_TOO_SMALL);
    assert.is(t.match(hashes, 4, 10, 0, 'no out'), Status.OUT_TOO_SMALL);
    assert.is(t.match(hashes, 4, 10, 3 * MATCH_STRIDE, 'out exact'), 3);
    assert.is(t.match(hashes, 4, 10, 8 * MATCH_STRIDE + 3, 'out larger than the replicas'), 3);
    assert.is(t.match(hashes, 2, 10, 40, 'count < length'), 3);
    const out = new Uint32Array(40);
    assert.is(k.indexMatch(t.h, hashes, 4, 10, out), 3);
    // Block-0 holder order, depth 4 for replica 2 (speculative 4th block), 3 for the others.
    assert.equal(Array.from(out.subarray(0, 15)), [5, 3, 0, 0, 3, 2, 4, 0, 0, 3, 7, 3, 0, 3, 0]);
    t.free();
  });

  test('runs of identical holder lists (a fleet-wide prefix): equal words, a differing tier, speculative, dead, reordered', () => {
    // 37 replicas store a 100-block chain block by block, so consecutive blocks have the same holder
    // words in the same order (the match's run fast path), on tiers r % 3; then the lists are made to
    // differ in ways where only a block-by-block walk gives the right answer.
    const R = 37;
    const t = new Twin(k, { maxEntries: 10_000, replicaCapacity: 64, seed: 5, ttlMs: 1_000 });
    const chain: Block[] = Array.from({ length: 100 }, (_, i) => ({ lo: (Math.imul(i + 1, 0x2545f491) ^ 0x5bd1e995) >>> 0, hi: i * 7 + 1 }));
    const apply = (rec: Records, now: number, what: string) => assert.is(t.apply(rec.array(), rec.count, now, what), rec.count);
    let rec = new Records();
    for (let r = 0; r < R; r++) for (let i = 0; i < 60; i++) rec.push(OP_STORE, r % 3, r, chain[i]);
    // Blocks 60 … 79: the same replicas appended in the reverse order.
    for (let r = R - 1; r >= 0; r--) for (let i = 60; i < 80; i++) rec.push(OP_STORE, r % 3, r, chain[i]);
    // Blocks 80 … 89: three holders (no whole group of 4 pairs); 90 … 99: two (an arena chunk of 2).
    for (const r of [0, 1, 2]) for (let i = 80; i < 90; i++) rec.push(OP_STORE, r % 3, r, chain[i]);
    for (const r of [0, 1]) for (let i = 90; i < 100; i++) rec.push(OP_STORE, 0, r, chain[i]);
    apply(rec, 1_000, 'fleet');
    const hashes = hashesOf(chain);
    const all = (what: string, now: number) => {
      for (const count of [1, 2, 9, 10, 11, 25, 26, 45, 46, 59, 60, 61, 79, 80, 81, 90, 100]) t.match(hashes, count, now, 64 * MATCH_STRIDE, `${what}, count ${count}`);
      for (const from of [1, 9, 10, 24, 26, 47]) t.match(hashes.slice(from), 100 - from, now, 64 * MATCH_STRIDE, `${what}, from block ${from}`);
    };
    all('identical lists', 1_000);
    const out = new Uint32Array(64 * MATCH_STRIDE);
    assert.is(k.indexMatch(t.h, hashes, 100, 1_000, out), R);
    assert.equal(Array.from(out.subarray(0, 3 * MATCH_STRIDE)), [0, 100, 100, 0, 0, 1, 100, 10, 90, 0, 2, 90, 0, 0, 90]);
    assert.equal(Array.from(out.subarray(3 * MATCH_STRIDE, 4 * MATCH_STRIDE)), [3, 80, 80, 0, 0]);
    // One differing tier: replica 3 also on CPU at block 10 (still counted GPU: the best tier).
    rec = new Records();
    rec.push(OP_STORE, 1, 3, chain[10]);
    rec.push(OP_STORE, 0, 4, chain[12]); // replica 4 (CPU): GPU too at block 12, counted GPU there
    apply(rec, 1_100, 'tiers');
    all('a differing tier', 1_100);
    // A dead epoch in the middle: replica 9 wiped and stored again on every block but 25; replica 11
    // loses block 45 (the last holder moves into its place: another order, one holder fewer).
    rec = new Records();
    rec.push(OP_CLEAR, 0, 9, chain[0]);
    for (let i = 0; i < 100; i++) if (i !== 25) rec.push(OP_STORE, 2, 9, chain[i]);
    rec.push(OP_REMOVE, 11 % 3, 11, chain[45]);
    apply(rec, 1_200, 'dead');
    all('a dead epoch at block 25, a removal at 45', 1_200);
    // Speculative holders with the same word on every block but different expiries: replica 50
    // speculates blocks 0 … 39 at 1,300 and again (renewing) blocks 0 … 14 and 20 … 39 at 1,800, so at
    // 2,400 its blocks 15 … 19 have expired though their words equal their neighbours'.
    rec = new Records();
    for (let i = 0; i < 40; i++) rec.push(OP_SPECULATE, 0, 50, chain[i]);
    apply(rec, 1_300, 'speculate');
    rec = new Records();
    for (let i = 0; i < 40; i++) if (i < 15 || i >= 20) rec.push(OP_SPECULATE, 0, 50, chain[i]);
    apply(rec, 1_800, 'speculate again');
    all('speculative, all live', 2_000);
    all('speculative, blocks 15 … 19 expired', 2_400);
    assert.is(k.indexMatch(t.h, hashes, 100, 2_400, out), R + 1);
    let spec = -1;
    for (let i = 0; i <= R; i++) if (out[i * MATCH_STRIDE] === 50) spec = i;
    assert.equal(Array.from(out.subarray(spec * MATCH_STRIDE, (spec + 1) * MATCH_STRIDE)), [50, 15, 0, 0, 0]);
    // Every replica wiped: no live holder left anywhere.
    rec = new Records();
    for (let r = 0; r < 64; r++) rec.push(OP_CLEAR, 0, r, chain[0]);
    apply(rec, 2_500, 'wipe');
    all('all wiped', 2_500);
    t.stats('fleet prefix');
    t.dump(2_500, 'fleet prefix');
    t.free();
  });

  test('bad records: BAD_ARG at the first bad op, tier or replica, with the records before it applied', () => {
    const R = 5;
    const bad: [string, number[]][] = [
      ['op 0', [0, 1]],
      ['op 5', [5, 1]],
      ['op 255', [255, 1]],
      ['tier 3', [OP_STORE | (3 << 8), 1]],
      ['tier 3 on a clear', [OP_CLEAR | (3 << 8), 1]],
      ['replica = capacity', [OP_STORE, R]],
      ['replica 2^31', [OP_SPECULATE, 0x80000000]],
    ];
    let seed = 70;
    for (const [name, [head, replica]] of bad) {
      const t = new Twin(k, { maxEntries: 50, replicaCapacity: R, seed: seed++, ttlMs: 1_000 });
      const rng = createRng(seed);
      const rec = new Records();
      for (let i = 0; i < 30; i++) rec.push(1 + rng.int(4), rng.int(3), rng.int(R), { lo: rng.int(40), hi: 3 });
      const words = [...rec.words, head, replica, 17, 3, OP_STORE, 1, 18, 3];
      assert.is(t.apply(Uint32Array.from(words), 32, 50, name), Status.BAD_ARG, name);
      t.stats(name);
      t.dump(50, name);
      // Records shorter than count · 4 words: nothing applied.
      assert.is(t.apply(Uint32Array.from(words.slice(0, 7)), 2, 60, `${name}: short records`), Status.BAD_ARG);
      assert.is(t.apply(new Uint32Array(0), 0, 60, `${name}: no records`), 0);
      t.stats(name);
      t.dump(60, name);
      t.free();
    }
  });

  test('front-end over this backend: same entries and stats as over the reference (FakeClock)', () => {
    const clock = new FakeClock(5_000);
    const a = new PrefixIndex(k, { maxEntries: 300, replicaCapacity: 12, speculativeTtlMs: 800, seed: 4, clock });
    const b = new PrefixIndex(reference, { maxEntries: 300, replicaCapacity: 12, speculativeTtlMs: 800, seed: 4, clock });
    const rng = createRng(80);
    const prompts = makePrompts(rng, 20, 20).map(hashesOf);
    const ra = a.newMatchResult();
    const rb = b.newMatchResult();
    for (let step = 0; step < 300; step++) {
      const r = rng.int(12);
      const p = prompts[rng.int(prompts.length)];
      const n = 1 + rng.int(p.length);
      const op = rng.int(10);
      for (const ix of [a, b]) {
        if (op < 5) ix.store(r, p.subarray(0, n), (['gpu', 'cpu', 'disk'] as const)[step % 3]);
        else if (op < 7) ix.remove(r, p.subarray(0, n), 'gpu');
        else if (op < 9) ix.speculate(r, p.subarray(0, n));
        else ix.clear(r);
      }
      clock.advance(rng.int(200));
      const q = prompts[rng.int(prompts.length)];
      a.match(q, ra);
      b.match(q, rb);
      assert.is(ra.count, rb.count);
      sameWords(ra.words.subarray(0, ra.count * MATCH_STRIDE), rb.words.subarray(0, rb.count * MATCH_STRIDE), `step ${step}`);
    }
    assert.equal(a.dump(), b.dump());
    assert.equal(a.stats(), b.stats());
    countCases(k.name, 301);
    a.free();
    b.free();
  });

  test.run();
}

for (const k of backends) indexSuite(k);
