/** ReplicaState: router chains from token ids, engine-hash map, tiers, reference counts, wipes, the cap. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { jsBackend } from '../../src/kernels/js/index.ts';
import { PrefixHasher } from '../../src/hashing/prefix.ts';
import { ReplicaState, emptyOutcome } from '../../src/index/replica-state.ts';
import { OP_CLEAR, OP_REMOVE, OP_STORE, RECORD_WORDS, RecordBuffer, TIER_CPU, TIER_GPU } from '../../src/index/records.ts';
import type { KvEvent, KvEventBatch } from '../../src/index/vllm-events.ts';

const BS = 4;
const hasher = new PrefixHasher(jsBackend, { blockSize: BS });
const ns = { model: 'llama', tenant: 't1' };

function state(maxEntries?: number): ReplicaState {
  return new ReplicaState({ replica: 3, hasher, namespace: ns, maxEntries });
}

function batch(...events: KvEvent[]): KvEventBatch {
  return { ts: 1, dpRank: 0, events, blocks: 0 };
}

function stored(hashes: bigint[], parent: bigint | null, tokens: number[], extra: Partial<Extract<KvEvent, { kind: 'stored' }>> = {}): KvEvent {
  return { kind: 'stored', hashes: BigUint64Array.from(hashes), parent, tokens: Uint32Array.from(tokens), tier: TIER_GPU, loraName: null, loraId: null, group: 0, salt: null, ...extra };
}

function removed(hashes: bigint[], tier = TIER_GPU, group = 0): KvEvent {
  return { kind: 'removed', hashes: BigUint64Array.from(hashes), tier, group };
}

type Rec = [op: number, tier: number, replica: number, hash: bigint];
function recs(out: RecordBuffer): Rec[] {
  const r: Rec[] = [];
  for (let i = 0; i < out.count; i++) {
    const w = out.words.subarray(i * RECORD_WORDS, (i + 1) * RECORD_WORDS);
    r.push([w[0] & 0xff, w[0] >>> 8, w[1], (BigInt(w[3]) << 32n) | BigInt(w[2])]);
  }
  out.clear();
  return r;
}

const prompt = Array.from({ length: 16 }, (_, i) => (i * 7919) % 50_000);
const seed = hasher.namespaceSeed({ model: 'llama', lora: '', tenant: 't1' });
const chain = [...hasher.hashTokens(prompt, seed)];

test('a chain stored in pieces gets the same router hashes as the whole prompt hashed at request time', () => {
  const s = state();
  const out = new RecordBuffer();
  s.applyBatch(batch(stored([101n, 102n], null, prompt.slice(0, 8))), 0, out);
  s.applyBatch(batch(stored([103n], 102n, prompt.slice(8, 12)), stored([104n], 103n, prompt.slice(12, 16))), 0, out);
  assert.equal(recs(out), chain.map((h) => [OP_STORE, TIER_GPU, 3, h]));
  assert.is(s.routerHashOf(0, 0, 104n), chain[3]);
});

test('a chain’s cache salt is the tenant of its namespace seed; without one the configured tenant is', () => {
  const s = state();
  const out = new RecordBuffer();
  const under = (tenant: string, lora = '') => [...hasher.hashTokens(prompt.slice(0, 8), hasher.namespaceSeed({ model: 'llama', lora, tenant }))];
  s.applyBatch(batch(stored([1n, 2n], null, prompt.slice(0, 8), { salt: 'acme' })), 0, out);
  assert.equal(recs(out).map((r) => r[3]), under('acme'));
  // A continuation of the salted chain follows its parent's router hash (its own salt field is not consulted).
  s.applyBatch(batch(stored([3n], 2n, prompt.slice(8, 12), { salt: 'ignored' })), 0, out);
  assert.equal(recs(out).map((r) => r[3]), [hasher.hashTokens(prompt.slice(8, 12), under('acme')[1])[0]]);
  // No salt: the configured tenant; the empty salt is the empty tenant; salts per adapter.
  s.applyBatch(batch(stored([4n, 5n], null, prompt.slice(0, 8)), stored([6n, 7n], null, prompt.slice(0, 8), { salt: '' }), stored([8n, 9n], null, prompt.slice(0, 8), { salt: 'acme', loraName: 'sql' }), stored([10n, 11n], null, prompt.slice(0, 8), { salt: 'globex' })), 0, out);
  assert.equal(recs(out).map((r) => r[3]), [...under('t1'), ...under(''), ...under('acme', 'sql'), ...under('globex')]);
  // Cached seeds per (lora, tenant): a second round gives the same hashes (already stored: no new records).
  s.applyBatch(batch(stored([12n, 13n], null, prompt.slice(0, 8), { salt: 'acme' })), 0, out);
  assert.equal(s.routerHashOf(0, 0, 13n), under('acme')[1]);
});

test('the LoRA adapter is part of the namespace: lora_name, else lora_id (mapped, or its decimal string)', () => {
  const s = new ReplicaState({ replica: 0, hasher, namespace: ns, loraNameOfId: (id) => (id === 9 ? 'nine' : undefined) });
  const out = new RecordBuffer();
  s.applyBatch(batch(stored([1n], null, prompt.slice(0, 4), { loraName: 'sql', loraId: 9 }), stored([2n], null, prompt.slice(0, 4), { loraId: 9 }), stored([3n], null, prompt.slice(0, 4), { loraId: 4 })), 0, out);
  const first = (lora: string) => hasher.hashTokens(prompt.slice(0, 4), hasher.namespaceSeed({ model: 'llama', lora, tenant: 't1' }))[0];
  assert.equal(recs(out).map((r) => r[3]), [first('sql'), first('nine'), first('4')]);
});

test('BlockStored with an unknown parent: nothing indexed, orphans counted, resync asked only while complete', () => {
  const s = state();
  const out = new RecordBuffer();
  const o = s.applyBatch(batch(stored([5n, 6n], 99n, prompt.slice(0, 8))), 0, out);
  assert.is(o.orphanBlocks, 2);
  assert.is(o.resync, true);
  assert.is(out.count, 0);
  s.markIncomplete(0);
  const o2 = s.applyBatch(batch(stored([5n], 99n, prompt.slice(0, 4))), 0, out);
  assert.is(o2.orphanBlocks, 1);
  assert.is(o2.resync, false);
  // AllBlocksCleared makes the rank complete again.
  s.applyBatch(batch({ kind: 'cleared' }), 0, out);
  assert.is(s.isComplete(0), true);
});

test('tiers: CPU copy, GPU eviction keeps the CPU tier; removal of what is not held is counted', () => {
  const s = state();
  const out = new RecordBuffer();
  s.applyBatch(batch(stored([1n], null, prompt.slice(0, 4))), 0, out);
  s.applyBatch(batch(stored([1n], null, prompt.slice(0, 4), { tier: TIER_CPU })), 0, out);
  assert.equal(recs(out), [
    [OP_STORE, TIER_GPU, 3, chain[0]],
    [OP_STORE, TIER_CPU, 3, chain[0]],
  ]);
  const o = s.applyBatch(batch(removed([1n], TIER_GPU), removed([1n], TIER_GPU), removed([77n])), 0, out, emptyOutcome());
  assert.equal(recs(out), [[OP_REMOVE, TIER_GPU, 3, chain[0]]]);
  assert.is(o.removedBlocks, 1);
  assert.is(o.unknownRemoved, 2);
  assert.is(s.size, 1);
  s.applyBatch(batch(removed([1n], TIER_CPU)), 0, out);
  assert.equal(recs(out), [[OP_REMOVE, TIER_CPU, 3, chain[0]]]);
  assert.is(s.size, 0);
});

test('reference counts: a router block held by two ranks (or two groups) stays until the last key goes', () => {
  const s = state();
  const out = new RecordBuffer();
  s.applyBatch(batch(stored([1n], null, prompt.slice(0, 4))), 0, out);
  s.applyBatch(batch(stored([900n], null, prompt.slice(0, 4))), 1, out); // rank 1, another engine id
  s.applyBatch(batch(stored([1n], null, prompt.slice(0, 4), { group: 1 })), 0, out); // group 1, same id
  recs(out);
  s.applyBatch(batch(removed([1n])), 0, out);
  assert.equal(recs(out), []);
  s.applyBatch(batch(removed([900n])), 1, out);
  assert.equal(recs(out), []);
  s.applyBatch(batch(removed([1n], TIER_GPU, 1)), 0, out);
  assert.equal(recs(out), [[OP_REMOVE, TIER_GPU, 3, chain[0]]]);
});

test('an engine id reused for other content drops the old mapping first', () => {
  const s = state();
  const out = new RecordBuffer();
  s.applyBatch(batch(stored([1n], null, prompt.slice(0, 4))), 0, out);
  recs(out);
  s.applyBatch(batch(stored([1n], null, prompt.slice(4, 8))), 0, out);
  const other = hasher.hashTokens(prompt.slice(4, 8), seed)[0];
  assert.equal(recs(out), [
    [OP_REMOVE, TIER_GPU, 3, chain[0]],
    [OP_STORE, TIER_GPU, 3, other],
  ]);
});

test('wiping a rank: one CLEAR when it held everything, per-block REMOVEs when other ranks hold blocks', () => {
  const s = state();
  const out = new RecordBuffer();
  s.applyBatch(batch(stored([1n, 2n], null, prompt.slice(0, 8))), 0, out);
  s.applyBatch(batch(stored([7n], null, prompt.slice(0, 4))), 1, out);
  recs(out);
  s.wipeRank(0, out, true);
  assert.equal(recs(out), [[OP_REMOVE, TIER_GPU, 3, chain[1]]]); // chain[0] is still held by rank 1
  s.wipeRank(1, out, false);
  assert.equal(recs(out), [[OP_CLEAR, 0, 3, 0n]]);
  assert.is(s.isComplete(1), false);
  assert.is(s.size, 0);
  s.wipe(out);
  assert.equal(recs(out), [[OP_CLEAR, 0, 3, 0n]]);
  assert.is(s.isComplete(1), true);
});

test('the cap evicts the oldest key with its index entry and makes that rank incomplete', () => {
  const s = state(3);
  const out = new RecordBuffer();
  s.applyBatch(batch(stored([1n, 2n, 3n], null, prompt.slice(0, 12))), 0, out);
  recs(out);
  // Storing 1 again refreshes it: 2 is now the oldest.
  s.applyBatch(batch(stored([1n], null, prompt.slice(0, 4))), 0, out);
  recs(out);
  const o = s.applyBatch(batch(stored([4n], 3n, prompt.slice(12, 16))), 0, out);
  assert.is(o.capEvictions, 1);
  assert.equal(recs(out), [
    [OP_REMOVE, TIER_GPU, 3, chain[1]],
    [OP_STORE, TIER_GPU, 3, chain[3]],
  ]);
  assert.is(s.size, 3);
  assert.is(s.isComplete(0), false);
  assert.is(s.routerHashOf(0, 0, 2n), undefined);
});

test.run();
