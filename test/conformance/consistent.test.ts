/**
 * Consistent hashing conformance: golden vectors from the reference implementations and the papers,
 * peer packages as independent oracles, and seeded differential tests against the JS reference.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createRequire } from 'node:module';
import { backends, reference } from '../helpers/backends.ts';
import { countCases } from '../helpers/cases.ts';
import { HashRing, Maglev, Rendezvous, jumpHash, jumpHashBatch, keyOf } from '../../src/hashing/consistent.ts';
import { lnPortable } from '../../src/kernels/js/index.ts';
import { NO_NODE, Status, type KernelBackend } from '../../src/kernels/abi.ts';
import { DystroError } from '../../src/errors.ts';
import { createRng } from '../../src/rng.ts';
import { code } from '../helpers/errors.ts';

const require = createRequire(import.meta.url);
const HashRingPeer = require('hashring');
const subspace = require('@subspace/jump-consistent-hash');

function randomKeys(seed: number, n: number): BigUint64Array {
  const rng = createRng(seed);
  return BigUint64Array.from({ length: n }, () => rng.u64());
}


function consistentSuite(k: KernelBackend) {
  const test = suite(`consistent hashing [${k.name}]`);

  test('jump: vectors generated from the reference C++ code (go-jump)', () => {
    // dgryski/go-jump jump_test.go: Hash(key, b) for b = 1 … 19 (and 20 for key 0).
    const vectors: [bigint, number[]][] = [
      [0n, Array(20).fill(0)],
      [1n, [0, 0, 0, 0, 0, 0, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 17, 17]],
      [0xdeadbeefn, [0, 1, 2, 3, 3, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 16, 16, 16]],
      [0x0ddc0ffeebadf00dn, [0, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 15, 15, 15, 15]],
    ];
    for (const [key, want] of vectors) {
      assert.equal(want.map((_, i) => k.jump(key, i + 1)), want, `key ${key}`);
      countCases(k.name, want.length);
    }
  });

  test('jump: agrees with @subspace/jump-consistent-hash and with the reference on 200k seeded keys', () => {
    const rng = createRng(3);
    for (let i = 0; i < 2000; i++) {
      const key = rng.u64();
      const buckets = 1 + rng.int(10000);
      const be = new Uint8Array(8);
      new DataView(be.buffer).setBigUint64(0, key);
      assert.is(k.jump(key, buckets), subspace.jumpConsistentHash(be, buckets));
    }
    const keys = randomKeys(4, 200_000);
    for (const buckets of [1, 7, 1000, 65536, 2 ** 31 - 1]) {
      const out = new Int32Array(keys.length);
      const ref = new Int32Array(keys.length);
      const n = buckets === 1000 ? keys.length : 20_000;
      assert.is(k.jumpBatch(keys.subarray(0, n), buckets, out), n);
      reference.jumpBatch(keys.subarray(0, n), buckets, ref);
      assert.equal(out.subarray(0, n), ref.subarray(0, n), `buckets ${buckets}`);
      for (let i = 0; i < n; i++) assert.ok(out[i] >= 0 && out[i] < buckets);
      countCases(k.name, n);
    }
    assert.is(k.jump(1n, 0), Status.EMPTY);
    assert.is(k.jumpBatch(keys, 0, new Int32Array(keys.length)), Status.EMPTY);
    assert.is(k.jumpBatch(keys, 10, new Int32Array(3)), Status.OUT_TOO_SMALL);
  });

  test('ring: same placement as the hashring package (ketama md5), equal and unequal weights', () => {
    const names = Array.from({ length: 12 }, (_, i) => `10.0.${i >> 2}.${i}:11211`);
    const weights = names.map((_, i) => 1 + (i % 4));
    for (const weighted of [false, true]) {
      const peer = weighted ? new HashRingPeer(Object.fromEntries(names.map((n, i) => [n, weights[i]]))) : new HashRingPeer(names);
      const ours = new HashRing(k, weighted ? names.map((name, i) => ({ name, weight: weights[i] })) : names);
      assert.is(ours.pointCount, peer.ring.length);
      for (let i = 0; i < 20_000; i++) {
        const key = `user:${i}:session`;
        assert.is(ours.nameOf(ours.lookup(ours.keyOf(key))), peer.get(key), key);
      }
      countCases(k.name, 20_000);
      ours.free();
    }
  });

  test('ring: index-accelerated lookups equal the reference binary search; single equals batch', () => {
    const rng = createRng(5);
    for (const n of [1, 2, 16, 300]) {
      const nodes = Array.from({ length: n }, (_, i) => ({ name: `node-${i}`, weight: 0.5 + rng.float() }));
      const vnodes = 10 + rng.int(50);
      const ring = new HashRing(k, nodes, { hash: 'xxh64', vnodes });
      const refRing = new HashRing(reference, nodes, { hash: 'xxh64', vnodes });
      const keys = randomKeys(6 + n, 25_000);
      const out = ring.lookupBatch(keys);
      assert.equal(out, refRing.lookupBatch(keys));
      for (let i = 0; i < keys.length; i += 97) assert.is(ring.lookup(keys[i]), out[i]);
      countCases(k.name, keys.length);
      ring.free();
      refRing.free();
    }
  });

  test('ring: differential against the JS reference with identical tables', () => {
    const rng = createRng(15);
    for (let trial = 0; trial < 6; trial++) {
      const n = 1 + rng.int(200);
      const nodes = Array.from({ length: n }, (_, i) => ({ name: `r${trial}-${i}`, weight: 0.25 + 2 * rng.float() }));
      const vnodes = 5 + rng.int(60);
      const a = new HashRing(k, nodes, { hash: 'xxh64', vnodes });
      const b = new HashRing(reference, nodes, { hash: 'xxh64', vnodes });
      const keys = randomKeys(100 + trial, 20_000);
      // Keys on and next to ring points exercise the lower-bound edges.
      const edge = new BigUint64Array(2000);
      for (let i = 0; i < edge.length; i++) edge[i] = BigInt((rng.u32() + (i % 3) - 1) >>> 0);
      for (const ks of [keys, edge]) {
        assert.equal(a.lookupBatch(ks), b.lookupBatch(ks));
        countCases(k.name, ks.length);
      }
      a.free();
      b.free();
    }
  });

  test('maglev: the paper’s M = 7 example (Eisenbud et al. 2016, Table 1), then B1 removed', () => {
    // Offsets/skips from the paper: B0 (3, 4), B1 (0, 2), B2 (3, 1). Permutations 3 0 4 1 5 2 6,
    // 0 2 4 6 1 3 5 and 3 4 5 6 0 1 2; lookup table B1 B0 B1 B0 B2 B2 B0.
    const m = Maglev.fromPermutations(k, ['B0', 'B1', 'B2'], Uint32Array.of(3, 0, 3), Uint32Array.of(4, 2, 1), 7);
    assert.equal(Array.from(m.entries(), (i) => m.nameOf(i)), ['B1', 'B0', 'B1', 'B0', 'B2', 'B2', 'B0']);
    // Without B1, B0 and B2 keep their permutations: slots 0 and 2 (B1's) go to B0, and slot 6 moves
    // from B0 to B2 — Maglev trades a little disruption for its even spread.
    const after = Maglev.fromPermutations(k, ['B0', 'B2'], Uint32Array.of(3, 3), Uint32Array.of(4, 1), 7);
    assert.equal(Array.from(after.entries(), (i) => after.nameOf(i)), ['B0', 'B0', 'B0', 'B0', 'B2', 'B2', 'B2']);
    for (let key = 0n; key < 50n; key++) assert.is(m.nameOf(m.lookup(key)), ['B1', 'B0', 'B1', 'B0', 'B2', 'B2', 'B0'][Number(key % 7n)]);
    countCases(k.name, 64);
    m.free();
    after.free();
  });

  test('maglev: tables and lookups equal the reference (sizes, weights), every node gets ⌊M/n⌋ or ⌈M/n⌉ slots', () => {
    const rng = createRng(21);
    for (const [n, size] of [[1, 7], [3, 13], [10, 65537], [257, 65537], [1000, 100003]] as const) {
      const names = Array.from({ length: n }, (_, i) => `backend-${i}`);
      const a = new Maglev(k, names, { size });
      const b = new Maglev(reference, names, { size });
      const ea = a.entries();
      assert.equal(ea, b.entries());
      const counts = new Int32Array(n);
      for (const e of ea) counts[e]++;
      for (const c of counts) assert.ok(c === Math.floor(size / n) || c === Math.ceil(size / n), `${c} slots`);
      const keys = randomKeys(22 + n, 20_000);
      assert.equal(a.lookupBatch(keys), b.lookupBatch(keys));
      for (let i = 0; i < 100; i++) assert.is(a.lookup(keys[i]), b.lookup(keys[i]));
      countCases(k.name, size + keys.length);
      a.free();
      b.free();
    }
    const weighted = Array.from({ length: 50 }, (_, i) => ({ name: `w${i}`, weight: 1 + rng.int(4) }));
    const wa = new Maglev(k, weighted, { size: 10007 });
    const wb = new Maglev(reference, weighted, { size: 10007 });
    assert.equal(wa.entries(), wb.entries());
    countCases(k.name, 10007);
    wa.free();
    wb.free();
  });

  test('maglev: invalid builds return BAD_ARG from the kernel and typed errors from the host', () => {
    assert.is(k.maglevBuild(new Uint32Array(0), new Uint32Array(0), new Uint32Array(0), 7), Status.BAD_ARG);
    assert.is(k.maglevBuild(Uint32Array.of(7), Uint32Array.of(1), Uint32Array.of(1), 7), Status.BAD_ARG, 'offset ≥ M');
    assert.is(k.maglevBuild(Uint32Array.of(0), Uint32Array.of(0), Uint32Array.of(1), 7), Status.BAD_ARG, 'skip 0');
    assert.is(k.maglevBuild(Uint32Array.of(0), Uint32Array.of(7), Uint32Array.of(1), 7), Status.BAD_ARG, 'skip ≥ M');
    assert.is(k.maglevBuild(Uint32Array.of(0), Uint32Array.of(1), Uint32Array.of(0), 7), Status.BAD_ARG, 'weight 0');
    assert.is(k.maglevBuild(Uint32Array.of(0, 1), Uint32Array.of(1, 1), Uint32Array.of(1, 1), 1), Status.BAD_ARG, 'M < n');
    assert.is(k.maglevBuild(Uint32Array.of(0), Uint32Array.of(1), Uint32Array.of(1), 2 ** 26 + 1), Status.BAD_ARG, 'M too big');
    assert.is(code(() => new Maglev(k, ['a', 'b'], { size: 100 })), 'DYSTRO_ERR_TABLE_SIZE');
    assert.is(code(() => new Maglev(k, ['a', 'b', 'c'], { size: 2 })), 'DYSTRO_ERR_TABLE_SIZE');
    assert.is(code(() => new Maglev(k, [])), 'DYSTRO_ERR_EMPTY_NODES');
    assert.is(code(() => new Maglev(k, ['a', 'a'])), 'DYSTRO_ERR_DUPLICATE_NODE');
    assert.is(code(() => new Maglev(k, [{ name: 'a', weight: NaN }])), 'DYSTRO_ERR_INVALID_WEIGHT');
    assert.is(code(() => new HashRing(k, [{ name: 'a', weight: -1 }])), 'DYSTRO_ERR_INVALID_WEIGHT');
    assert.is(code(() => new Rendezvous(k, [{ name: 'a', weight: Infinity }])), 'DYSTRO_ERR_INVALID_WEIGHT');
    assert.is(code(() => new HashRing(k, [])), 'DYSTRO_ERR_EMPTY_NODES');
    assert.is(code(() => jumpHash(k, 1n, 0)), 'DYSTRO_ERR_EMPTY_NODES');
    assert.is(code(() => jumpHash(k, -1n, 3)), 'DYSTRO_ERR_INVALID_SEED');
    assert.is(code(() => jumpHashBatch(k, new BigUint64Array(4), 3, new Int32Array(2))), 'DYSTRO_ERR_OUTPUT_TOO_SMALL');
    const m = new Maglev(k, ['a']);
    m.free();
    assert.is(code(() => m.lookup(1n)), 'DYSTRO_ERR_TABLE_FREED');
  });

  test('rendezvous: the portable ln agrees with Math.log to 1e-15 relative', () => {
    const rng = createRng(31);
    for (let i = 0; i < 20_000; i++) {
      const x = (2 * Math.floor(rng.float() * 2 ** 52) + 1) * 2 ** -53;
      const want = Math.log(x);
      assert.ok(Math.abs(lnPortable(x) - want) <= 1e-15 * Math.max(1, Math.abs(want)), `ln(${x})`);
    }
  });

  test('rendezvous: winners equal an independent Math.log implementation and the reference', () => {
    const rng = createRng(32);
    for (const n of [1, 2, 5, 40]) {
      const nodes = Array.from({ length: n }, (_, i) => ({ name: `hrw-${i}`, weight: 0.5 + 3 * rng.float() }));
      const a = new Rendezvous(k, nodes);
      const b = new Rendezvous(reference, nodes);
      const keys = randomKeys(33 + n, n === 40 ? 10_000 : 30_000);
      const out = a.lookupBatch(keys);
      assert.equal(out, b.lookupBatch(keys));
      // Independent check from the definition with Math.log, skipping near-ties (relative gap < 1e-12).
      const hashes = nodes.map((nd) => keyOf(reference, nd.name));
      const M64 = (1n << 64n) - 1n;
      const mix = (z: bigint) => {
        z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & M64;
        z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & M64;
        return z ^ (z >> 31n);
      };
      for (let i = 0; i < keys.length; i += 7) {
        const scores = hashes.map((h, j) => nodes[j].weight / -Math.log((2 * Number(mix(keys[i] ^ h) >> 12n) + 1) * 2 ** -53));
        const sorted = [...scores].sort((x, y) => y - x);
        if (n > 1 && (sorted[0] - sorted[1]) / sorted[0] < 1e-12) continue;
        assert.is(out[i], scores.indexOf(sorted[0]));
      }
      for (let i = 0; i < 50; i++) assert.is(a.lookup(keys[i]), out[i]);
      countCases(k.name, keys.length);
      a.free();
      b.free();
    }
  });

  test('bounded loads: equal to the reference, never above ceil(c · m · share), c ≤ 1 refused', () => {
    const rng = createRng(41);
    for (const kind of ['ring', 'maglev'] as const) {
      for (const c of [1.01, 1.25, 2]) {
        const n = 20 + rng.int(60);
        const nodes = Array.from({ length: n }, (_, i) => ({ name: `b${i}`, weight: kind === 'ring' ? 1 : 1 + (i % 3) }));
        const make = (kk: KernelBackend) => (kind === 'ring' ? new HashRing(kk, nodes, { hash: 'xxh64' }) : new Maglev(kk, nodes, { size: 10007 }));
        const a = make(k);
        const b = make(reference);
        // A skewed key stream: a tenth of the keys are one hot key.
        const keys = randomKeys(42, 5000);
        for (let i = 0; i < keys.length; i += 10) keys[i] = 12345n;
        const startLoads = Uint32Array.from({ length: n }, () => rng.int(5));
        const la = startLoads.slice();
        const lb = startLoads.slice();
        const ra = a.assignBounded(keys, la, c);
        const rb = b.assignBounded(keys, lb, c);
        assert.equal(ra.out, rb.out);
        assert.equal(la, lb);
        assert.is(ra.refused, rb.refused);
        assert.is(ra.refused, 0);
        // Replay and check the bound after every assignment.
        const total = weightsTotal(nodes);
        const loads = startLoads.slice();
        let m = loads.reduce((s, x) => s + x, 0);
        for (let i = 0; i < keys.length; i++) {
          const j = ra.out[i];
          m += 1;
          loads[j] += 1;
          assert.ok(loads[j] <= Math.ceil(c * m * (nodes[j].weight / total)) + 1e-9, `node ${j} over its cap`);
        }
        assert.equal(loads, la);
        countCases(k.name, keys.length);
        a.free();
        b.free();
      }
    }
    const m = new Maglev(k, ['a', 'b']);
    assert.is(code(() => m.assignBounded(new BigUint64Array(1), new Uint32Array(2), 1)), 'DYSTRO_ERR_LOAD_FACTOR');
    assert.is(code(() => m.assignBounded(new BigUint64Array(1), new Uint32Array(2), NaN)), 'DYSTRO_ERR_LOAD_FACTOR');
    assert.is(code(() => m.assignBounded(new BigUint64Array(1), new Uint32Array(3), 1.5)), 'DYSTRO_ERR_INVALID_LOADS');
    m.free();
  });

  test('kernels refuse bad bounded-load arguments with BAD_ARG; empty ring gives NO_NODE', () => {
    const ring = k.ringCreate(new Uint32Array(0), new Int32Array(0), new Uint32Array(3), 1, 0);
    assert.is(k.ringLookup(ring, 5n), NO_NODE);
    const out = new Int32Array(2);
    assert.is(k.ringLookupBatch(ring, BigUint64Array.of(1n, 2n), out), 2);
    assert.equal(Array.from(out), [NO_NODE, NO_NODE]);
    k.free(ring);
    const m = k.maglevBuild(Uint32Array.of(0, 1), Uint32Array.of(1, 2), Uint32Array.of(1, 1), 7);
    assert.ok(typeof m !== 'number');
    if (typeof m === 'number') return;
    const keys = BigUint64Array.of(1n, 2n, 3n);
    for (const c of [1, 0.5, NaN, Infinity]) assert.is(k.maglevAssignBounded(m, keys, new Uint32Array(2), Float64Array.of(0.5, 0.5), c, new Int32Array(3)), Status.BAD_ARG, `c=${c}`);
    assert.is(k.maglevAssignBounded(m, keys, new Uint32Array(3), Float64Array.of(0.5, 0.5), 1.5, new Int32Array(3)), Status.BAD_ARG);
    assert.is(k.maglevAssignBounded(m, keys, new Uint32Array(2), Float64Array.of(0.5, 0.5), 1.5, new Int32Array(2)), Status.OUT_TOO_SMALL);
    k.free(m);
  });

  test.run();
}

function weightsTotal(nodes: { weight: number }[]): number {
  return nodes.reduce((s, n) => s + n.weight, 0);
}

for (const k of backends) consistentSuite(k);
