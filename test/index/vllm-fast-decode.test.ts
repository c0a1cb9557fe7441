/**
 * The byte-level fast path of the KV-event decoder against the general one (msgpackr + validation): for
 * every payload it must either decline (null) or return exactly what the general decoder returns. Inputs:
 * toy-engine batches in both encodings (every hash form vLLM sends), hand-made edge shapes, and every
 * single-byte mutation, truncation and extension of valid payloads — the mutations are what make a
 * decoder that skips a check return something the general one would reject.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Packr } from 'msgpackr';
import { createRng } from '../../src/rng.ts';
import { decodeKvEventBatch, decodeKvEventBatchGeneral, hashBytesXxh64, type DecodeLimits } from '../../src/index/vllm-events.ts';
import { decodeKvEventBatchFast } from '../../src/index/vllm-fast-decode.ts';
import { EngineSim } from '../helpers/engine-sim.ts';
import { encodeBatch, packValue, type EventSpec } from '../helpers/vllm-frames.ts';

const BS = 4;
const LIMITS: DecodeLimits = { blockSize: BS };

function fast(p: Uint8Array, limits = LIMITS) {
  return decodeKvEventBatchFast(p, limits, limits.hashBytes ?? hashBytesXxh64);
}

/** Fast declines, or agrees with the general decoder exactly (which must then accept). */
function agrees(p: Uint8Array, limits = LIMITS): 'fast' | 'general' {
  const f = fast(p, limits);
  if (f === null) return 'general';
  const g = decodeKvEventBatchGeneral(p, limits);
  if (!g.ok) throw new Error(`fast accepted what the general decoder rejects (${g.reason}: ${g.detail}); bytes ${Buffer.from(p).toString('hex').slice(0, 200)}`);
  assert.equal(f, g.batch);
  return 'fast';
}

/** extra_keys an engine may send with a stored event: a cache salt on the first block, other shapes, none. */
const EXTRA_KEYS: unknown[] = [undefined, [['tenant-a'], null], [['b', 'lora-x', 3], [1]], [[7], null], [null], [[], null], [['ünï'], null]];

function engineBatches(seed: number, n: number, encoding: 'array' | 'map', salted = false): Uint8Array[] {
  const rng = createRng(seed);
  const engine = new EngineSim(createRng(seed + 1), BS);
  const out: Uint8Array[] = [];
  for (let i = 0; i < n; i++) {
    const events: EventSpec[] = [];
    for (let k = 1 + rng.int(4); k > 0; k--) {
      const x = rng.int(10);
      const ev = x < 6 ? engine.store() : x < 9 ? (engine.remove() ?? engine.store()) : engine.clear();
      // Salts (extra_keys) on any stored event: the decoders keep one only where the parent is null.
      if (salted && ev.type === 'BlockStored') ev.extraKeys = EXTRA_KEYS[rng.int(EXTRA_KEYS.length - 1)];
      events.push(ev);
    }
    out.push(encodeBatch(1_700_000_000 + i / 7, events, encoding, rng.int(3) === 0 ? null : rng.int(4)));
  }
  return out;
}

test('toy-engine batches in both encodings: the fast path takes them all and agrees', () => {
  for (const encoding of ['array', 'map'] as const) {
    for (const p of engineBatches(encoding === 'array' ? 1 : 2, 400, encoding)) assert.is(agrees(p), 'fast', `a well-formed ${encoding} batch fell back`);
  }
});

test('salted batches (extra_keys of every shape) in both encodings: the fast path takes the ASCII ones and agrees', () => {
  let salts = 0;
  for (const encoding of ['array', 'map'] as const) {
    for (const p of engineBatches(encoding === 'array' ? 7 : 8, 300, encoding, true)) {
      assert.is(agrees(p), 'fast', `a well-formed salted ${encoding} batch fell back`);
      for (const e of fast(p)!.events) if (e.kind === 'stored' && e.salt !== null) salts++;
    }
  }
  assert.ok(salts > 50, `${salts} salts decoded`);
});

test('decodeKvEventBatch returns the same results through either path, payloads in SharedArrayBuffers too', () => {
  for (const p of engineBatches(3, 100, 'map')) {
    assert.equal(decodeKvEventBatch(p, LIMITS), decodeKvEventBatchGeneral(p, LIMITS));
    // A view at an offset into shared memory (the pooled ingest shares such payloads with its workers).
    const shared = new Uint8Array(new SharedArrayBuffer(p.length + 3)).subarray(3);
    shared.set(p);
    assert.equal(decodeKvEventBatchGeneral(shared, LIMITS), decodeKvEventBatchGeneral(p, LIMITS));
    assert.equal(decodeKvEventBatch(shared, LIMITS), decodeKvEventBatch(p, LIMITS));
  }
});

test('edge shapes: declined or equal (floats, wide ints, non-ASCII, odd keys, extra fields, limits)', () => {
  const packr = new Packr({ useRecords: false, variableMapSize: true });
  const cases: unknown[] = [
    [1, []],
    [1.5, [], null],
    [1, [], 3, 'extra', [1, 2]],
    [1, [['AllBlocksCleared', 1, 'x', null]]],
    [1, [['BlockStored', [1], null, [1, 2, 3, 4], 4, null, 'GPU', null, ['extra', 1], 2, 'full_attention', null]]],
    [1, [['BlockStored', [1], null, [1, 2, 3, 4], 4.0]]],
    [1, [['BlockStored', [2 ** 40], null, [1, 2, 3, 4], 4]]], // an integral float64 hash
    [1, [['BlockStored', [1], null, [1, 2, 3, 2 ** 32 - 1], 4, 7, 'cpu', 'ünïcode']]],
    [1, [['BlockStored', [1], null, [1, 2, 3, 4], 4, null, 'GPU', 'lora-a', null, 0x10000]]],
    [1, [['BlockStored', [1], null, [1, 2, 3, 4], 4, null, 'GPU', null, [['salt'], null]]]],
    [1, [['BlockStored', [1], 5, [1, 2, 3, 4], 4, null, 'GPU', null, [['salt'], null]]]],
    [1, [['BlockStored', [1], null, [1, 2, 3, 4], 4, null, 'GPU', null, [['ünï'], null]]]],
    [1, [['BlockStored', [1], null, [1, 2, 3, 4], 4, null, 'GPU', null, [[Uint8Array.of(1)], 'x']]]],
    [1, [['BlockStored', [1], null, [1, 2, 3, 4], 4, null, 'GPU', null, [[1.5, 'a'], [[[]]]]]]],
    [1, [['BlockStored', [1], null, [1, 2, 3, 4], 4, null, 'GPU', null, [new Map([['a', 'b']])]]]],
    [1, [['BlockStored', [1], null, [1, 2, 3, 4], 4, null, 'GPU', null, []]]],
    [1, [new Map<unknown, unknown>([['type', 'BlockStored'], ['extra_keys', [['first']]], ['block_hashes', [1]], ['token_ids', [1, 2, 3, 4]], ['block_size', 4], ['extra_keys', [['second']]]])]],
    [1, [new Map<unknown, unknown>([['type', 'BlockStored'], ['extra_keys', [['x']]], ['block_hashes', [1]], ['token_ids', [1, 2, 3, 4]], ['block_size', 4], ['parent_block_hash', 3]])]],
    [1, [['BlockStored', [-5], -6n, [65535, 65536, 255, 256], 4, -1, 'DISK']]],
    [1, [['BlockRemoved', [1], null, 3]]],
    [1, [['BlockStored', [Uint8Array.of(1, 2, 3)], Uint8Array.of(9), [0, 0, 0, 0], 4]]],
    [1, [['BlockStored', [new Uint8Array(2000)], null, [0, 0, 0, 0], 4]]],
    new Map<unknown, unknown>([['ts', 1], ['events', []], ['ts', 2]]),
    new Map<unknown, unknown>([['events', [['AllBlocksCleared']]], ['ts', 3], ['data_parallel_rank', null], ['other', { a: [1] }]]),
    new Map<unknown, unknown>([[1, 2], ['ts', 3], ['events', []]]),
    [1, [new Map<unknown, unknown>([['type', 'BlockStored'], ['block_hashes', [1]], ['token_ids', [1, 2, 3, 4]], ['block_size', 4], ['type', 'BlockRemoved']])]],
    [1, [new Map<unknown, unknown>([['block_size', 4], ['token_ids', [1, 2, 3, 4]], ['block_hashes', [1n << 63n]], ['type', 'BlockStored'], ['medium', null]])]],
    [1, [new Map<unknown, unknown>([['type', 'BlockStored'], ['block_hashes', [1]], ['token_ids', [1, 2, 3, 4]]])]],
    [1, [new Map<unknown, unknown>([['type', 'AllBlocksCleared'], ['junk', new Map([[1, 2]])]])]],
    [1, [['BlockStored', [1, 2, 3], null, new Array(12).fill(7), 4]]],
    new Date(0),
    'not a batch',
  ];
  for (const c of cases) agrees(packr.pack(c));
  // Limits are the general decoder's: over them the fast path declines.
  const three = packValue([1, [['BlockStored', [1, 2, 3], null, new Array(12).fill(7), 4]]]);
  for (const limits of [{ blockSize: 4, maxBlocksPerEvent: 2 }, { blockSize: 4, maxTokensPerEvent: 8 }, { blockSize: 4, maxEvents: 0 }, { blockSize: 8 }]) {
    assert.is(fast(three, limits), null);
    assert.is(agrees(three, limits), 'general');
  }
  // An injected bytes hash is used by both paths.
  const custom = { blockSize: 4, hashBytes: (b: Uint8Array) => BigInt(b.length) * 1000n };
  assert.is(agrees(packValue([1, [['BlockRemoved', [Uint8Array.of(1, 2)]]]]), custom), 'fast');
  assert.equal((fast(packValue([1, [['BlockRemoved', [Uint8Array.of(1, 2)]]]]), custom)!.events[0] as { hashes: BigUint64Array }).hashes[0], 2000n);
});

test('every truncation, one-byte mutation and trailing byte of valid payloads: declined or equal', () => {
  const rng = createRng(99);
  const samples = [...engineBatches(5, 12, 'array'), ...engineBatches(6, 12, 'map'), ...engineBatches(9, 6, 'array', true), ...engineBatches(10, 6, 'map', true)];
  let checked = 0;
  for (const p of samples) {
    for (let cut = 0; cut < p.length; cut++) {
      assert.is(fast(p.subarray(0, cut)), null, 'a truncated payload is never accepted');
    }
    assert.is(fast(Uint8Array.from([...p, 0])), null, 'bytes after the value are never accepted');
    for (let i = 0; i < p.length; i++) {
      for (const v of [p[i] ^ 1, p[i] ^ 0x80, rng.int(256), 0xc0, 0xc1, 0xcb, 0xcf, 0xd3, 0xdd]) {
        const m = Uint8Array.from(p);
        m[i] = v;
        agrees(m);
        checked++;
      }
    }
  }
  assert.ok(checked > 10_000, `${checked} mutations`);
});

test.run();
