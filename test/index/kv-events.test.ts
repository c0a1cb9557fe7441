/** KvEventIngest over a PrefixIndex: golden frames, malformed batches, restarts, repairs, metrics, API errors. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Registry } from 'prom-client';
import { FakeClock } from '../../src/clock.ts';
import { DystroError } from '../../src/errors.ts';
import { jsBackend } from '../../src/kernels/js/index.ts';
import { PrefixHasher } from '../../src/hashing/prefix.ts';
import { PrefixIndex } from '../../src/index/prefix-index.ts';
import { KvEventIngest, type KvEventIngestOptions } from '../../src/index/kv-events.ts';
import { encodeSeq } from '../../src/index/vllm-events.ts';
import { ManualTimers } from '../helpers/fake-timers.ts';
import { MemoryPublisher, encodeBatch, packValue, type EventSpec } from '../helpers/vllm-frames.ts';

const BS = 4;
const NS = { model: 'qwen', tenant: 'acme' };
const hasher = new PrefixHasher(jsBackend, { blockSize: BS });
const prompt = Array.from({ length: 16 }, (_, i) => 1000 + i);
const chain = hasher.hashTokens(prompt, hasher.namespaceSeed({ model: 'qwen', tenant: 'acme' }));

class Setup {
  readonly clock = new FakeClock(1_700_000_000_000);
  readonly timers = new ManualTimers(this.clock);
  readonly registry = new Registry();
  readonly index = new PrefixIndex(jsBackend, { maxEntries: 1 << 20, replicaCapacity: 8, clock: this.clock, speculativeTtlMs: 1000 });
  readonly pubs = new Map<string, MemoryPublisher>();
  readonly ingest: KvEventIngest;
  ts = 1_700_000_000;

  constructor(options: Partial<KvEventIngestOptions> = {}) {
    this.ingest = new KvEventIngest(this.index, {
      namespace: NS,
      blockSize: BS,
      registry: this.registry,
      clock: this.clock,
      timers: this.timers,
      replaySource: (r, rank) => this.pub(r, rank),
      ...options,
    });
  }

  pub(replica: number, rank = 0): MemoryPublisher {
    const k = `${replica}/${rank}`;
    let p = this.pubs.get(k);
    if (!p) this.pubs.set(k, (p = new MemoryPublisher()));
    return p;
  }

  /** Publishes a batch on (replica, rank); delivers it through ingest() unless dropped. */
  send(replica: number, events: EventSpec[], opts: { rank?: number; drop?: boolean; encoding?: 'array' | 'map' } = {}) {
    const rank = opts.rank ?? 0;
    const f = this.pub(replica, rank).publish(encodeBatch(this.ts++, events, opts.encoding ?? 'array', rank));
    if (opts.drop) return { ok: true as const };
    return this.ingest.ingest(replica, f.payload, { seq: f.seq, dpRank: rank });
  }

  depth(replica: number, hashes = chain): number {
    return this.index.match(hashes, this.index.newMatchResult()).depthOf(replica);
  }

  async metric(name: string, labels: Record<string, string> = {}): Promise<number> {
    const m = this.registry.getSingleMetric(`dystro_${name}`);
    if (!m) throw new Error(`no metric ${name}`);
    const v = (await m.get()).values.find((x) => Object.entries(labels).every(([k, val]) => x.labels[k] === val));
    return v?.value ?? 0;
  }
}

const store = (hashes: (number | bigint)[], parent: number | bigint | null, tokens: number[], medium: string | null = 'GPU'): EventSpec => ({ type: 'BlockStored', hashes, parent, tokens, blockSize: BS, medium });

test('golden frames in both encodings feed the index: depth, tiers, metrics', async () => {
  const s = new Setup();
  assert.equal(s.send(1, [store([11, 12], null, prompt.slice(0, 8))], { encoding: 'array' }), { ok: true });
  assert.equal(s.send(1, [store([13, 14n], 12, prompt.slice(8, 16))], { encoding: 'map' }), { ok: true });
  s.send(1, [store([13], 12, prompt.slice(8, 12), 'CPU'), { type: 'BlockRemoved', hashes: [13], medium: 'GPU' }], { encoding: 'map' });
  const m = s.index.match(chain, s.index.newMatchResult());
  assert.is(m.count, 1);
  assert.equal([m.replica(0), m.depth(0), m.gpu(0), m.cpu(0)], [1, 4, 3, 1]);
  assert.is(s.ingest.replicaState(1), 'synced');
  assert.is(await s.metric('kv_batches_applied_total'), 3);
  assert.is(await s.metric('kv_events_applied_total', { type: 'BlockStored' }), 3);
  assert.is(await s.metric('kv_blocks_applied_total', { op: 'stored' }), 5);
  assert.is(await s.metric('kv_blocks_applied_total', { op: 'removed' }), 1);
  assert.is(await s.metric('index_entries'), 4);
  assert.ok((await s.metric('index_bytes')) > 0);
  assert.is(await s.metric('kv_tracked_keys'), 4);
  assert.is(await s.metric('kv_replicas', { state: 'synced' }), 1);
  const text = await s.registry.metrics();
  assert.match(text, /dystro_kv_ingest_lag_seconds_count 3/);
  assert.match(text, /dystro_kv_batches_rejected_total\{reason="truncated"\} 0/);
});

test('ingest lag is the clock minus the batch ts (seconds)', async () => {
  const s = new Setup();
  s.clock.set((s.ts + 2) * 1000); // the batch below is published 2 s before it is applied
  s.send(0, [store([1], null, prompt.slice(0, 4))]);
  const text = await s.registry.metrics();
  assert.match(text, /dystro_kv_ingest_lag_seconds_sum 2\n/);
});

test('malformed batches are rejected whole, per reason; the index is unchanged and the stream goes on', async () => {
  const s = new Setup();
  s.send(2, [store([1, 2], null, prompt.slice(0, 8))]);
  const before = s.index.dump();
  const pub = s.pub(2);
  const good = encodeBatch(s.ts++, [store([3], 2, prompt.slice(8, 12))]);
  const cases: [string, Uint8Array][] = [
    ['truncated', good.subarray(0, good.length - 3)],
    ['event-arity', packValue([s.ts++, [['BlockStored', [3], 2]]])],
    ['non-integer-hash', packValue([s.ts++, [['BlockStored', [3.25], 2, prompt.slice(8, 12), BS]]])],
    ['unknown-event-type', packValue([s.ts++, [['BlockTeleported', [3]]]])],
    ['too-many-tokens', packValue([s.ts++, [['BlockStored', [3], 2, new Array(2_000_000).fill(1), BS]]])],
    // Good events before a bad one are not applied either.
    ['token-count', packValue([s.ts++, [['BlockStored', [3], 2, prompt.slice(8, 12), BS], ['BlockStored', [4], 3, [1, 2], BS]]])],
    ['block-size', packValue([s.ts++, [['BlockStored', [3], 2, prompt.slice(8, 16), 8]]])],
    ['bad-medium', packValue([s.ts++, [['BlockRemoved', [1], 'TAPE']]])],
  ];
  for (const [reason, payload] of cases) {
    const f = pub.publish(payload);
    const r = s.ingest.ingest(2, f.payload, { seq: f.seq });
    assert.is(r.ok, false, reason);
    assert.is(!r.ok && r.reason, reason);
    assert.equal(s.index.dump(), before, reason);
    assert.is(await s.metric('kv_batches_rejected_total', { reason }), 1, reason);
  }
  // A 7-byte sequence frame: refused before decoding, nothing applied, nothing consumed.
  const r7 = s.ingest.ingest(2, good, { seq: new Uint8Array(7) });
  assert.equal(r7.ok ? '' : r7.reason, 'bad-sequence');
  assert.is(await s.metric('kv_batches_rejected_total', { reason: 'bad-sequence' }), 1);
  assert.equal(s.index.dump(), before);
  // The stream continues: the rejected batches used their seqs, so the next batch is in order.
  const f = pub.publish(good);
  assert.equal(s.ingest.ingest(2, f.payload, { seq: encodeSeq(f.seq) }), { ok: true });
  assert.is(s.depth(2), 3);
  assert.is(await s.metric('kv_gaps_total'), 0);
  assert.is(s.ingest.replicaState(2), 'synced');
});

test('an engine restart gives the replica zero prefix credit until new events arrive', async () => {
  const s = new Setup();
  s.send(3, [store([1, 2, 3, 4], null, prompt)]);
  s.send(4, [store([1, 2, 3, 4], null, prompt)]);
  s.index.speculate(3, [chain[0]]);
  assert.is(s.depth(3), 4);
  s.ingest.restart(3);
  assert.is(s.depth(3), 0);
  assert.is(s.depth(4), 4); // others keep theirs
  assert.equal(s.index.dump().filter((e) => e.replica === 3), []); // speculative entries too
  // The new incarnation publishes from seq 0 again.
  s.pub(3).restart();
  s.send(3, [store([50], null, prompt.slice(0, 4))]);
  assert.is(s.depth(3), 1);
  assert.is(s.ingest.replicaState(3), 'synced');
});

test('a publisher that restarts silently (seq back to 0) is detected and wiped', async () => {
  const s = new Setup();
  s.send(0, [store([1, 2, 3, 4], null, prompt)]);
  s.send(0, [store([9], null, [7, 7, 7, 7])]);
  assert.is(s.depth(0), 4);
  s.pub(0).restart();
  s.send(0, [store([70], null, prompt.slice(0, 4))]);
  assert.is(s.depth(0), 1);
  assert.is(await s.metric('kv_resyncs_total', { cause: 'publisher_restart' }), 1);
});

test('gaps are replayed; a replica whose stream cannot be repaired is wiped and unknown, then recovers', async () => {
  const s = new Setup({ replay: { maxAttempts: 2, backoffMs: 50 } });
  s.send(5, [store([1, 2], null, prompt.slice(0, 8))]);
  s.send(5, [store([3], 2, prompt.slice(8, 12))], { drop: true });
  s.send(5, [store([4], 3, prompt.slice(12, 16))]);
  assert.is(s.ingest.replicaState(5), 'replaying');
  await s.ingest.settled();
  assert.is(s.depth(5), 4);
  assert.is(await s.metric('kv_gaps_total'), 1);
  assert.is(await s.metric('kv_replays_total', { outcome: 'ok' }), 1);
  // Now the replay fails for good.
  s.pub(5).failReplays = 10;
  s.send(5, [{ type: 'BlockRemoved', hashes: [4] }], { drop: true });
  s.send(5, [store([5], 3, [1, 1, 1, 1])]);
  await s.ingest.settled();
  assert.is(s.ingest.replicaState(5), 'replaying');
  assert.is(s.depth(5), 4); // still the old view while retrying
  s.timers.advance(1000);
  await s.ingest.settled();
  // Given up: wiped, and the frame at hand applied as a new event (an orphan here: its parent was wiped).
  assert.is(s.depth(5), 0);
  assert.is(await s.metric('kv_unrecoverable_total', { cause: 'gave_up' }), 1);
  assert.is(await s.metric('kv_orphan_blocks_total'), 1);
  assert.is(s.ingest.replicaState(5), 'synced');
  s.send(5, [store([6], null, prompt.slice(0, 4))]);
  assert.is(s.depth(5), 1);
});

test('an unknown parent in a complete stream triggers a resync from seq 0 that rebuilds the same view', async () => {
  const s = new Setup();
  s.send(6, [store([1, 2], null, prompt.slice(0, 8))]);
  const before = s.index.dump();
  // The engine (wrongly) names a parent it never announced.
  s.send(6, [store([99], 12345, [5, 5, 5, 5])]);
  await s.ingest.settled();
  assert.is(await s.metric('kv_resyncs_total', { cause: 'unknown_parent' }), 1);
  assert.equal(s.index.dump(), before);
  assert.is(s.ingest.replicaState(6), 'synced');
  // The replay met the same orphan again: refused this time (cooldown), counted, no loop.
  assert.is(await s.metric('kv_resyncs_total', { cause: 'refused' }), 1);
  assert.is(await s.metric('kv_orphan_blocks_total'), 2);
});

test('data-parallel ranks are separate streams; a block both hold stays until both drop it', async () => {
  const s = new Setup();
  s.send(7, [store([1, 2, 3, 4], null, prompt)], { rank: 0 });
  s.send(7, [store([8, 9], null, prompt.slice(0, 8))], { rank: 1 });
  s.send(7, [{ type: 'AllBlocksCleared' }], { rank: 0 });
  assert.is(s.depth(7), 2);
  s.send(7, [{ type: 'BlockRemoved', hashes: [9] }], { rank: 1 });
  assert.is(s.depth(7), 1);
});

test('seq-less ingest applies in call order; an orphan there is counted, not resynced', async () => {
  const s = new Setup();
  assert.equal(s.ingest.ingest(0, encodeBatch(1, [store([1], null, prompt.slice(0, 4))])), { ok: true });
  s.ingest.ingest(0, encodeBatch(2, [store([2], 77, prompt.slice(4, 8))]));
  assert.is(s.depth(0), 1);
  assert.is(await s.metric('kv_orphan_blocks_total'), 1);
  assert.is(await s.metric('kv_resyncs_total', { cause: 'refused' }), 1);
});

test('API misuse is a typed error: bad replica, bad namespace, double subscribe, use after close', async () => {
  const s = new Setup();
  const code = (fn: () => unknown) => {
    try {
      fn();
    } catch (e) {
      return (e as DystroError).code;
    }
    return 'none';
  };
  assert.is(code(() => s.ingest.ingest(8, new Uint8Array())), 'DYSTRO_ERR_UNKNOWN_REPLICA');
  assert.is(code(() => s.ingest.restart(-1)), 'DYSTRO_ERR_UNKNOWN_REPLICA');
  assert.is(code(() => new KvEventIngest(s.index, { namespace: { model: 1 } as never })), 'DYSTRO_ERR_INVALID_CONFIG');
  assert.is(code(() => s.ingest.subscribe(0, { endpoint: '' })), 'DYSTRO_ERR_INVALID_CONFIG');
  // ZeroMQ connects lazily: nothing needs to listen on this port for subscribe() to succeed.
  s.ingest.subscribe(0, { endpoint: 'tcp://127.0.0.1:9', replayEndpoint: 'tcp://127.0.0.1:9' });
  assert.is(code(() => s.ingest.subscribe(0, { endpoint: 'tcp://127.0.0.1:9' })), 'DYSTRO_ERR_ALREADY_SUBSCRIBED');
  s.ingest.subscribe(0, { endpoint: 'tcp://127.0.0.1:9', dpRank: 1 });
  await s.ingest.unsubscribe(0);
  s.ingest.subscribe(0, { endpoint: 'tcp://127.0.0.1:9' });
  await s.ingest.close();
  assert.is(code(() => s.ingest.ingest(0, new Uint8Array())), 'DYSTRO_ERR_INGEST_CLOSED');
  assert.instance(new DystroError('DYSTRO_ERR_INGEST_CLOSED', 'x'), Error);
});

test.run();
