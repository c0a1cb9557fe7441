/**
 * Prefix block hashing conformance: every backend that loads, against an independent XXH64
 * (xxhash-wasm) block by block, and against the JS reference on seeded random prompts.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import xxhash from 'xxhash-wasm';
import { backends, reference } from '../helpers/backends.ts';
import { PrefixHasher, namespaceBytes } from '../../src/hashing/prefix.ts';
import { Status, type KernelBackend } from '../../src/kernels/abi.ts';
import { DystroError } from '../../src/errors.ts';
import { createRng } from '../../src/rng.ts';
import { countCases } from '../helpers/cases.ts';

const oracle = await xxhash();

function randomTokens(rng: ReturnType<typeof createRng>, n: number): Uint32Array {
  const t = new Uint32Array(n);
  for (let i = 0; i < n; i++) t[i] = rng.u32() % (rng.float() < 0.1 ? 0xffffffff : 200_000);
  return t;
}

/** Expected chain computed with the oracle, from the definition in abi.ts. */
function oracleChain(bytes: Uint8Array, blockBytes: number, seed: bigint): bigint[] {
  const out: bigint[] = [];
  let h = seed;
  for (let at = 0; at + blockBytes <= bytes.length; at += blockBytes) {
    h = oracle.h64Raw(bytes.subarray(at, at + blockBytes), h);
    out.push(h);
  }
  return out;
}

function leBytes(tokens: Uint32Array): Uint8Array {
  const b = new Uint8Array(tokens.length * 4);
  const v = new DataView(b.buffer);
  tokens.forEach((t, i) => v.setUint32(i * 4, t, true));
  return b;
}

function hashingSuite(k: KernelBackend) {
  const test = suite(`hashing [${k.name}]`);

  test('xxh64 one-shot equals xxhash-wasm for lengths 0…300 and edge seeds', () => {
    const rng = createRng(11);
    for (let len = 0; len <= 300; len++) {
      const bytes = new Uint8Array(len).map(() => rng.u32() & 255);
      for (const seed of [0n, 1n, 0x9e3779b185ebca87n, (1n << 64n) - 1n, rng.u64()]) {
        assert.is(k.xxh64(bytes, seed), oracle.h64Raw(bytes, seed), `len ${len} seed ${seed}`);
        countCases(k.name, 1);
      }
    }
  });

  test('token chains equal the oracle block by block (block sizes 1…1024, lengths around block edges)', () => {
    const rng = createRng(7);
    for (const B of [1, 2, 3, 7, 8, 15, 16, 17, 31, 32, 64, 100, 256, 1024]) {
      for (const len of [0, B - 1, B, B + 1, 2 * B, 5 * B + 3, Math.min(8192, 40 * B)]) {
        if (len < 0) continue;
        const tokens = randomTokens(rng, len);
        const seed = rng.u64();
        const out = new BigUint64Array(Math.floor(len / B) + 2).fill(0xabcdn);
        const n = k.hashTokens(tokens, B, seed, out);
        const want = oracleChain(leBytes(tokens), 4 * B, seed);
        assert.is(n, want.length, `B=${B} len=${len}`);
        assert.equal(Array.from(out.subarray(0, n)), want, `B=${B} len=${len}`);
        // Nothing past the blocks is touched.
        assert.is(out[n], 0xabcdn);
        countCases(k.name, want.length);
      }
    }
  });

  test('byte chains equal the oracle', () => {
    const rng = createRng(8);
    for (const B of [1, 5, 16, 64, 128, 1024]) {
      for (const len of [0, B, 3 * B + 1, 4096]) {
        const bytes = new Uint8Array(len).map(() => rng.u32() & 255);
        const seed = rng.u64();
        const out = new BigUint64Array(Math.floor(len / B));
        const n = k.hashBytes(bytes, B, seed, out);
        assert.equal(Array.from(out.subarray(0, n)), oracleChain(bytes, B, seed));
        countCases(k.name, n);
      }
    }
  });

  test('8,192-token prompt (512 blocks of 16) equals the oracle', () => {
    const rng = createRng(9);
    const tokens = randomTokens(rng, 8192);
    const out = new BigUint64Array(512);
    assert.is(k.hashTokens(tokens, 16, 42n, out), 512);
    assert.equal(Array.from(out), oracleChain(leBytes(tokens), 64, 42n));
    countCases(k.name, 512);
  });

  test('batch equals one call per prompt, offsets as specified', () => {
    const rng = createRng(10);
    for (let trial = 0; trial < 30; trial++) {
      const count = 1 + rng.int(12);
      const prompts = Array.from({ length: count }, () => randomTokens(rng, rng.int(300)));
      const seeds = BigUint64Array.from(prompts, () => rng.u64());
      const B = [1, 4, 16, 33][rng.int(4)];
      const offsets = new Uint32Array(count + 1);
      prompts.forEach((p, i) => (offsets[i + 1] = offsets[i] + p.length));
      const tokens = new Uint32Array(offsets[count]);
      prompts.forEach((p, i) => tokens.set(p, offsets[i]));
      const total = prompts.reduce((s, p) => s + Math.floor(p.length / B), 0);
      const out = new BigUint64Array(total);
      const outOffsets = new Uint32Array(count + 1);
      assert.is(k.hashTokensBatch(tokens, offsets, seeds, B, out, outOffsets), total);
      prompts.forEach((p, i) => {
        const single = new BigUint64Array(Math.floor(p.length / B));
        k.hashTokens(p, B, seeds[i], single);
        assert.equal(Array.from(out.subarray(outOffsets[i], outOffsets[i + 1])), Array.from(single));
      });
      countCases(k.name, total);
    }
  });

  test('bad arguments give status codes, never a trap', () => {
    const t = new Uint32Array(64);
    const out = new BigUint64Array(64);
    for (const B of [0, -1, 1025, 1.5, NaN]) assert.is(k.hashTokens(t, B, 0n, out), Status.BLOCK_SIZE, `B=${B}`);
    assert.is(k.hashTokens(t, 16, 0n, new BigUint64Array(3)), Status.OUT_TOO_SMALL);
    assert.is(k.hashBytes(new Uint8Array(10), 0, 0n, out), Status.BLOCK_SIZE);
    assert.is(k.hashBytes(new Uint8Array(10), 2, 0n, new BigUint64Array(4)), Status.OUT_TOO_SMALL);
    const seeds = BigUint64Array.of(1n, 2n);
    assert.is(k.hashTokensBatch(t, Uint32Array.of(0, 10), seeds, 4, out, new Uint32Array(3)), Status.BAD_ARG, 'offsets length');
    assert.is(k.hashTokensBatch(t, Uint32Array.of(0, 10, 5), seeds, 4, out, new Uint32Array(3)), Status.BAD_ARG, 'decreasing');
    assert.is(k.hashTokensBatch(t, Uint32Array.of(0, 10, 65), seeds, 4, out, new Uint32Array(3)), Status.BAD_ARG, 'past end');
    assert.is(k.hashTokensBatch(t, Uint32Array.of(0, 32, 64), seeds, 4, new BigUint64Array(15), new Uint32Array(3)), Status.OUT_TOO_SMALL);
    // Empty inputs are fine: zero blocks.
    assert.is(k.hashTokens(new Uint32Array(0), 16, 0n, new BigUint64Array(0)), 0);
    assert.is(k.hashTokensBatch(new Uint32Array(0), Uint32Array.of(0), new BigUint64Array(0), 16, new BigUint64Array(0), new Uint32Array(1)), 0);
  });

  test('seeded differential against the JS reference (random sizes, block sizes, seeds)', () => {
    const rng = createRng(12345);
    let cases = 0;
    for (let trial = 0; trial < 400; trial++) {
      const B = 1 + rng.int(rng.float() < 0.5 ? 32 : 1024);
      const tokens = randomTokens(rng, rng.int(2048));
      const seed = rng.u64();
      const a = new BigUint64Array(Math.floor(tokens.length / B));
      const b = new BigUint64Array(a.length);
      assert.is(k.hashTokens(tokens, B, seed, a), reference.hashTokens(tokens, B, seed, b));
      assert.equal(a, b, `trial ${trial}`);
      cases += a.length;
    }
    countCases(k.name, cases);
  });

  test('PrefixHasher: namespaces are framed, tenants never share a chain', () => {
    const h = new PrefixHasher(k);
    const a = h.namespaceSeed({ model: 'm', lora: 'org_1', tenant: '2345' });
    const b = h.namespaceSeed({ model: 'm', lora: 'org_12345', tenant: '' });
    const c = h.namespaceSeed({ model: 'm', lora: 'org_1', tenant: '2345' });
    assert.is.not(a, b);
    assert.is(a, c);
    assert.is(h.namespaceSeed({ model: 'm' }), h.namespaceSeed({ model: 'm', lora: '', tenant: '' }));
    assert.is(a, oracle.h64Raw(namespaceBytes({ model: 'm', lora: 'org_1', tenant: '2345' }), 0n));
    const tokens = Uint32Array.from({ length: 64 }, (_, i) => i);
    const t1 = h.hashTokens(tokens, h.namespaceSeed({ model: 'm', tenant: 'alice' }));
    const t2 = h.hashTokens(tokens, h.namespaceSeed({ model: 'm', tenant: 'bob' }));
    assert.is(t1.length, 4);
    for (let i = 0; i < 4; i++) assert.is.not(t1[i], t2[i]);
    // Shared prefixes give shared leading hashes within a namespace.
    const longer = Uint32Array.from({ length: 80 }, (_, i) => (i < 48 ? i : 999));
    const t3 = h.hashTokens(longer, h.namespaceSeed({ model: 'm', tenant: 'alice' }));
    assert.equal(Array.from(t3.subarray(0, 3)), Array.from(t1.subarray(0, 3)));
    assert.is.not(t3[3], t1[3]);
  });

  test('PrefixHasher: text mode hashes UTF-8 bytes; typed errors on bad input', () => {
    const h = new PrefixHasher(k, { blockSize: 8 });
    const seed = h.namespaceSeed({ model: 'm' });
    const text = 'héllo wörld — ünïcode prompt with emoji 🚀 and more text';
    const bytes = new TextEncoder().encode(text);
    assert.equal(Array.from(h.hashText(text, seed)), oracleChain(bytes, 8, seed));
    const code = (fn: () => unknown) => {
      try {
        fn();
      } catch (e) {
        assert.instance(e, DystroError);
        return (e as DystroError).code;
      }
      assert.unreachable('expected a DystroError');
    };
    assert.is(code(() => h.hashTokens([1, 2, -3], seed)), 'DYSTRO_ERR_INVALID_TOKENS');
    assert.is(code(() => h.hashTokens([1, 2.5], seed)), 'DYSTRO_ERR_INVALID_TOKENS');
    assert.is(code(() => h.hashTokens([1, 2 ** 32], seed)), 'DYSTRO_ERR_INVALID_TOKENS');
    assert.is(code(() => h.hashTokens('abc' as never, seed)), 'DYSTRO_ERR_INVALID_TOKENS');
    assert.is(code(() => h.hashTokens([1], -1n)), 'DYSTRO_ERR_INVALID_SEED');
    assert.is(code(() => h.hashTokens([1], 1n << 64n)), 'DYSTRO_ERR_INVALID_SEED');
    assert.is(code(() => h.hashTokens([1], 5 as never)), 'DYSTRO_ERR_INVALID_SEED');
    assert.is(code(() => h.hashTokens(new Uint32Array(64), seed, new BigUint64Array(2))), 'DYSTRO_ERR_OUTPUT_TOO_SMALL');
    assert.is(code(() => new PrefixHasher(k, { blockSize: 0 })), 'DYSTRO_ERR_BLOCK_SIZE');
    assert.is(code(() => new PrefixHasher(k, { blockSize: 2048 })), 'DYSTRO_ERR_BLOCK_SIZE');
    assert.is(code(() => h.namespaceSeed({ model: '' })), 'DYSTRO_ERR_INVALID_ARGUMENT');
    assert.is(code(() => h.hashBatch([[1, 2]], [])), 'DYSTRO_ERR_INVALID_ARGUMENT');
    const batch = h.hashBatch([Uint32Array.from({ length: 20 }, (_, i) => i), [7, 7, 7, 7, 7, 7, 7, 7]], [seed, 3n]);
    assert.equal(Array.from(batch.offsets), [0, 2, 3]);
    assert.equal(Array.from(batch.hashes.subarray(0, 2)), Array.from(h.hashTokens(Uint32Array.from({ length: 20 }, (_, i) => i), seed)));
  });

  test.run();
}

for (const k of backends) hashingSuite(k);
