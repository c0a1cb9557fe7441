/** Decoding vLLM KV-event payloads: golden bytes, both encodings, every rejection reason. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import xxhash from 'xxhash-wasm';
import { REJECT_REASONS, decodeKvEventBatch, decodeSeq, encodeSeq, engineHashOf, END_OF_REPLAY, type KvEventBatch, type RejectReason } from '../../src/index/vllm-events.ts';
import { TIER_CPU, TIER_GPU } from '../../src/index/records.ts';
import { encodeBatch, packValue, type EventSpec } from '../helpers/vllm-frames.ts';

const { h64Raw } = await xxhash();
const hex = (s: string) => Uint8Array.from(s.match(/../g)!.map((b) => parseInt(b, 16)));
const limits = { blockSize: 4 };

function ok(payload: Uint8Array, l = limits): KvEventBatch {
  const r = decodeKvEventBatch(payload, l);
  if (!r.ok) throw new Error(`rejected: ${r.reason} (${r.detail})`);
  return r.batch;
}

function rejects(payload: Uint8Array, reason: RejectReason, l: Parameters<typeof decodeKvEventBatch>[1] = limits): void {
  const r = decodeKvEventBatch(payload, l);
  assert.is(r.ok, false, `expected a rejection (${reason})`);
  if (!r.ok) assert.is(r.reason, reason, r.detail);
}

test('golden array_like payload, bytes written by hand as msgspec lays them out', () => {
  // [1700000000.5, [["BlockStored", [2^64−1 (uint64), −2 (negative fixint), b"\x01\x02"], None,
  //   [1 … 12], 4, None, "GPU", None]], 0]
  const b = ok(hex('93cb41d954fc402000009198ab426c6f636b53746f72656493cffffffffffffffffffec4020102c09c0102030405060708090a0b0c04c0a3475055c000'));
  assert.is(b.ts, 1700000000.5);
  assert.is(b.dpRank, 0);
  assert.is(b.blocks, 3);
  const e = b.events[0];
  assert.is(e.kind, 'stored');
  if (e.kind !== 'stored') return;
  assert.equal([...e.hashes], [2n ** 64n - 1n, 2n ** 64n - 2n, h64Raw(Uint8Array.of(1, 2), 0n)]);
  assert.is(e.parent, null);
  assert.equal([...e.tokens], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
  assert.is(e.tier, TIER_GPU);
  assert.is(e.loraName, null);
  assert.is(e.loraId, null);
  assert.is(e.group, 0);
});

test('golden tagged-map payload (recent vLLM): {ts, events: [{type: BlockRemoved, …}], data_parallel_rank}', () => {
  const b = ok(hex('83a27473cb3ff4000000000000a66576656e74739183a474797065ac426c6f636b52656d6f766564ac626c6f636b5f6861736865739105a66d656469756da3435055b2646174615f706172616c6c656c5f72616e6b01'));
  assert.is(b.ts, 1.25);
  assert.is(b.dpRank, 1);
  assert.equal(b.events, [{ kind: 'removed', hashes: BigUint64Array.of(5n), tier: TIER_CPU, group: 0 }]);
});

const stored: EventSpec = { type: 'BlockStored', hashes: [11, 2n ** 63n + 5n], parent: -7n, tokens: [1, 2, 3, 4, 5, 6, 7, 8], blockSize: 4, loraId: 3, medium: 'CPU', loraName: 'sql', groupIdx: 2 };
const removed: EventSpec = { type: 'BlockRemoved', hashes: [Uint8Array.of(9, 9, 9)], medium: null, groupIdx: 2 };

test('both encodings of the same batch decode to the same events; unknown map keys are ignored', () => {
  const events: EventSpec[] = [stored, removed, { type: 'AllBlocksCleared' }];
  const a = ok(encodeBatch(10.5, events, 'array', 3));
  const m = ok(encodeBatch(10.5, events, 'map', 3));
  assert.equal(a, m);
  assert.equal(a.events[0], {
    kind: 'stored',
    hashes: BigUint64Array.of(11n, 2n ** 63n + 5n),
    parent: 2n ** 64n - 7n,
    tokens: Uint32Array.of(1, 2, 3, 4, 5, 6, 7, 8),
    tier: TIER_CPU,
    loraName: 'sql',
    loraId: 3,
    group: 2,
    salt: null,
  });
  assert.equal(a.events[1], { kind: 'removed', hashes: BigUint64Array.of(h64Raw(Uint8Array.of(9, 9, 9), 0n)), tier: TIER_GPU, group: 2 });
  assert.equal(a.events[2], { kind: 'cleared' });
  const extra = packValue(
    new Map<string, unknown>([
      ['ts', 1],
      ['events', [new Map<string, unknown>([['type', 'AllBlocksCleared'], ['future_field', [1, 2]]])]],
      ['something_new', 'x'],
    ]),
  );
  assert.equal(ok(extra).events, [{ kind: 'cleared' }]);
});

test('a chain’s first block carries its cache salt in extra_keys[0][0], in both encodings; other shapes are ignored', () => {
  const base = { type: 'BlockStored' as const, hashes: [1, 2], tokens: [1, 2, 3, 4, 5, 6, 7, 8], blockSize: 4 };
  const saltOfEvent = (spec: EventSpec, encoding: 'array' | 'map') => {
    const b = ok(encodeBatch(1, [spec], encoding));
    const e = b.events[0];
    if (e.kind !== 'stored') throw new Error('not stored');
    return e.salt;
  };
  for (const encoding of ['array', 'map'] as const) {
    assert.is(saltOfEvent({ ...base, parent: null, extraKeys: [['tenant-a'], null] }, encoding), 'tenant-a');
    assert.is(saltOfEvent({ ...base, parent: null, extraKeys: [['tenant-a'], null], groupIdx: 1 }, encoding), 'tenant-a');
    assert.is(saltOfEvent({ ...base, parent: null, extraKeys: [['s', 'more', 3], [1]] }, encoding), 's');
    assert.is(saltOfEvent({ ...base, parent: null, extraKeys: [[''], null] }, encoding), '');
    assert.is(saltOfEvent({ ...base, parent: null, extraKeys: [['ünïcode'], null] }, encoding), 'ünïcode');
    // A parent: the salt is not this event's (only a chain's first block seeds the namespace).
    assert.is(saltOfEvent({ ...base, parent: 9, extraKeys: [['tenant-a'], null] }, encoding), null);
    assert.is(saltOfEvent({ ...base, parent: null }, encoding), null);
    // Shapes that are not a salt: ignored, the batch still decodes.
    for (const extraKeys of [[null, null], [[7], null], [[null, 'x'], null], [[], null], [], 'x', 5, [['x'.repeat(3)].map((x) => Uint8Array.of(x.length))], [[['nested']]], [new Map([['a', 1]])], new Map([['a', 'b']])]) {
      assert.is(saltOfEvent({ ...base, parent: null, extraKeys }, encoding), null, JSON.stringify(extraKeys, (_, v) => (v instanceof Map ? [...v] : v)));
    }
  }
  // Both encodings decode to the same events, salt included.
  const events: EventSpec[] = [{ ...base, parent: null, extraKeys: [['acme'], null] }, { ...base, hashes: [3], tokens: [9, 9, 9, 9], parent: 2, extraKeys: [null] }];
  assert.equal(ok(encodeBatch(2, events, 'array')), ok(encodeBatch(2, events, 'map')));
  assert.equal(
    ok(encodeBatch(2, events, 'array')).events.map((e) => (e.kind === 'stored' ? e.salt : undefined)),
    ['acme', null],
  );
});

test('older positional layouts: tails absent (no lora_name, no medium, no lora_id); rank absent', () => {
  const b = ok(packValue([2, [['BlockStored', [1], null, [0, 0, 0, 0], 4], ['BlockStored', [2], 1, [1, 1, 1, 1], 4, null, 'GPU'], ['BlockRemoved', [1]]]]));
  assert.is(b.dpRank, null);
  assert.is(b.events.length, 3);
  assert.is(b.events[1].kind === 'stored' && b.events[1].parent, 1n);
  // Fields appended by a later vLLM are ignored, up to MAX_EVENT_FIELDS.
  ok(packValue([2, [['AllBlocksCleared', 'future', 1]]]));
});

test('integer hashes keep their low 64 bits; negatives are two’s complement; bytes are XXH64 seed 0', () => {
  assert.is(engineHashOf(5), 5n);
  assert.is(engineHashOf(-1), 2n ** 64n - 1n);
  assert.is(engineHashOf(-(2n ** 63n)), 2n ** 63n);
  assert.is(engineHashOf(2n ** 64n + 3n), 3n);
  assert.is(engineHashOf(new Uint8Array(32)), h64Raw(new Uint8Array(32), 0n));
  assert.is(engineHashOf(1.5), undefined);
  assert.is(engineHashOf(2 ** 60), undefined); // a float too large to be an exact integer
  assert.is(engineHashOf('12'), undefined);
  assert.is(engineHashOf(null), undefined);
});

test('each malformation rejects the whole batch with its reason', () => {
  const good = encodeBatch(1, [stored]);
  rejects(good.subarray(0, good.length - 5), 'truncated');
  rejects(Uint8Array.of(0xdd, 0xff, 0xff, 0xff, 0xff, 1), 'truncated'); // array32 declaring 2^32−1 elements
  rejects(Uint8Array.of(0xc1), 'malformed');
  const trailing = new Uint8Array(good.length + 1);
  trailing.set(good);
  rejects(trailing, 'malformed');
  rejects(good, 'payload-too-large', { blockSize: 4, maxPayloadBytes: good.length - 1 });
  rejects(packValue('hello'), 'payload-shape');
  rejects(packValue([1]), 'payload-shape');
  rejects(packValue(['now', []]), 'payload-shape');
  rejects(packValue([1, {}]), 'payload-shape');
  rejects(packValue([1, [], -1]), 'payload-shape');
  rejects(packValue([1, [['AllBlocksCleared'], ['AllBlocksCleared']]]), 'too-many-events', { blockSize: 4, maxEvents: 1 });
  rejects(packValue([1, [5]]), 'event-shape');
  rejects(packValue([1, [[7, [1]]]]), 'event-shape');
  rejects(packValue([1, [['BlockStored', [1], null]]]), 'event-arity');
  rejects(packValue([1, [['BlockRemoved']]]), 'event-arity');
  rejects(packValue([1, [['AllBlocksCleared', ...new Array(40).fill(0)]]]), 'event-arity');
  rejects(packValue([1, [['BlockEvicted', [1]]]]), 'unknown-event-type');
  rejects(packValue([1, [new Map([['type', 'Mystery']])]]), 'unknown-event-type');
  rejects(packValue([1, [['BlockStored', [1.5], null, [0, 0, 0, 0], 4]]]), 'non-integer-hash');
  rejects(packValue([1, [['BlockStored', ['ab'], null, [0, 0, 0, 0], 4]]]), 'non-integer-hash');
  rejects(packValue([1, [['BlockStored', [1], 'parent', [0, 0, 0, 0], 4]]]), 'non-integer-hash');
  rejects(packValue([1, [['BlockRemoved', [null]]]]), 'non-integer-hash');
  rejects(packValue([1, [['BlockStored', [1], null, [0, 0, -1, 0], 4]]]), 'bad-token');
  rejects(packValue([1, [['BlockStored', [1], null, [0, 0, 0.5, 0], 4]]]), 'bad-token');
  rejects(packValue([1, [['BlockStored', [1], null, [0, 0, 0], 4]]]), 'token-count');
  rejects(packValue([1, [['BlockStored', [1], null, [0, 0, 0, 0, 0, 0, 0, 0], 8]]]), 'block-size');
  rejects(packValue([1, [['BlockStored', [1], null, [0, 0, 0, 0], 4, null, 'TPU']]]), 'bad-medium');
  rejects(packValue([1, [['BlockRemoved', [1], 3]]]), 'bad-medium');
  rejects(packValue([1, [['BlockStored', [1], null, [0, 0, 0, 0], 4, null, 'GPU', 5]]]), 'event-shape');
  rejects(packValue([1, [['BlockStored', [1], null, [0, 0, 0, 0], 4, null, 'GPU', null, null, -3]]]), 'event-shape');
  rejects(packValue([1, [['BlockStored', [1], null, 'tokens', 4]]]), 'event-shape');
  rejects(packValue([1, [['BlockStored', 1, null, [0, 0, 0, 0], 4]]]), 'event-shape');
  rejects(packValue([1, [['BlockRemoved', [1, 2, 3]]]]), 'too-many-blocks', { blockSize: 4, maxBlocksPerEvent: 2 });
  // One bad event spoils the batch even after good ones.
  rejects(packValue([1, [['AllBlocksCleared'], ['BlockStored', [1], null, [0, 0, 0], 4]]]), 'token-count');
});

test('a huge token array is refused by its length before its elements are validated', () => {
  const tokens = new Array(2_000_001).fill(0);
  const p = packValue([1, [['BlockStored', [1], null, tokens, 4]]]);
  const t0 = performance.now();
  rejects(p, 'too-many-tokens', { blockSize: 4, maxTokensPerEvent: 1_000_000 });
  rejects(p, 'too-many-tokens'); // default limit 1,048,576
  assert.ok(performance.now() - t0 < 2000);
});

test('every reason is a distinct stable string', () => {
  assert.is(new Set(REJECT_REASONS).size, REJECT_REASONS.length);
  for (const r of REJECT_REASONS) assert.match(r, /^[a-z]+(-[a-z]+)*$/);
});

test('sequence frames: 8 bytes big-endian; −1 is the replay end; anything else is refused', () => {
  assert.equal([...encodeSeq(258)], [0, 0, 0, 0, 0, 0, 1, 2]);
  assert.is(decodeSeq(encodeSeq(0)), 0);
  assert.is(decodeSeq(encodeSeq(Number.MAX_SAFE_INTEGER)), Number.MAX_SAFE_INTEGER);
  assert.is(decodeSeq(new Uint8Array(8).fill(0xff)), END_OF_REPLAY);
  assert.is(decodeSeq(new Uint8Array(7)), undefined);
  assert.is(decodeSeq(new Uint8Array(9)), undefined);
  assert.is(decodeSeq(Uint8Array.of(0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)), undefined); // > 2^53 − 1
  const view = new Uint8Array(12);
  view.set(encodeSeq(77), 4);
  assert.is(decodeSeq(view.subarray(4)), 77); // an unaligned view into a larger buffer
});

test.run();
