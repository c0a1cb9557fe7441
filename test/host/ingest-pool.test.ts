/**
 * The pooled ingest (src/host/ingest-pool.ts): worker threads decode and hash, the routing thread
 * drains records. Checked here: the same index (dump), replica states and metrics as the in-thread
 * KvEventIngest on the same batches (duplicates, malformed batches, publisher restarts, two ranks,
 * unsequenced batches, two shards); bounded drains; the router wiring (route() drains first, restart and
 * unsubscribe through fleet changes, fenced in-flight records, 'unknown' replicas routed by load only);
 * aggregated metrics; a process that ends by itself after close(). Gaps and replays over real ZeroMQ
 * are in test/e2e/kv-zmq-pool.test.ts.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Registry } from 'prom-client';
import { FakeClock } from '../../src/clock.ts';
import { createRng } from '../../src/rng.ts';
import { loadKernelsSync } from '../../src/kernels/select.ts';
import { PrefixIndex } from '../../src/index/prefix-index.ts';
import { KvEventIngest } from '../../src/index/kv-events.ts';
import { IngestPool } from '../../src/host/ingest-pool.ts';
import { PrefixHasher } from '../../src/hashing/prefix.ts';
import { EngineSim } from '../helpers/engine-sim.ts';
import { encodeBatch, type EventSpec } from '../helpers/vllm-frames.ts';
import { makeRouter } from '../router/helpers.ts';
import type { RoutedDecision } from '../../src/router/types.ts';

const here = dirname(fileURLToPath(import.meta.url));
const kernels = loadKernelsSync().kernels;
const BS = 4;
const big = (_: string, v: unknown) => (typeof v === 'bigint' ? v.toString(16) : v);
const dumpOf = (index: PrefixIndex) => JSON.stringify(index.dump(), big);

// Worker threads keep a process alive if a pool is left open: whatever happens, this file ends in 20 s.
setTimeout(() => {
  console.error('ingest-pool: watchdog fired (a pool was left open)');
  process.exit(1);
}, 20_000).unref();

async function metricSum(registry: Registry, name: string, labels: Record<string, string> = {}): Promise<number> {
  const m = registry.getSingleMetric(`dystro_${name}`);
  if (!m) throw new Error(`no metric ${name}`);
  return (await m.get()).values.filter((x) => Object.entries(labels).every(([k, v]) => x.labels[k] === v)).reduce((a, x) => a + x.value, 0);
}

test('pooled and in-thread ingests build the same index, states and counts from the same batches', async () => {
  const clock = new FakeClock(1_000_000);
  const a = new PrefixIndex(kernels, { replicaCapacity: 8, clock });
  const b = new PrefixIndex(kernels, { replicaCapacity: 8, clock });
  const ra = new Registry();
  const rb = new Registry();
  // No replay source on either side (a gap would then depend on timing): these streams have none.
  const ns = (slot: number) => ({ model: 'm', tenant: slot === 2 ? 'other' : undefined });
  const inThread = new KvEventIngest(a, { namespace: ns, blockSize: BS, registry: ra, clock });
  const pool = new IngestPool(b, { namespace: ns, blockSize: BS, registry: rb, shards: 2 });
  try {
    const rng = createRng(11);
    // Streams: (replica, rank) with their own engine and seq counter; replica 3 sends without seqs.
    const streams = [
      { replica: 0, rank: 0 },
      { replica: 0, rank: 1 },
      { replica: 1, rank: 0 },
      { replica: 2, rank: 0 },
      { replica: 3, rank: 0 },
    ].map((s, i) => ({ ...s, engine: new EngineSim(createRng(100 + i), BS), seq: 0, last: null as Uint8Array | null, lastSeq: -1 }));
    let ts = 1_700_000_000;
    const results: Promise<unknown>[] = [];
    const send = (replica: number, payload: Uint8Array, seq: number | undefined, rank: number) => {
      const want = inThread.ingest(replica, payload, { seq, dpRank: rank });
      results.push(pool.ingest(replica, payload.slice(), { seq, dpRank: rank }).then((got) => assert.equal(got, want)));
    };
    for (let i = 0; i < 900; i++) {
      const s = streams[rng.int(streams.length)];
      const k = rng.int(100);
      const sequenced = s.replica !== 3;
      if (k < 4 && s.last && sequenced) {
        send(s.replica, s.last, s.lastSeq, s.rank); // a duplicate
        continue;
      }
      if (k < 5 && sequenced && rng.int(3) === 0) {
        // The publisher restarts: seqs from 0 with a newer ts, its engine cache empty.
        s.engine.restart();
        s.seq = 0;
      }
      const events: EventSpec[] = [];
      for (let n = 1 + rng.int(3); n > 0; n--) {
        const x = rng.int(40);
        events.push(x < 28 ? s.engine.store() : x < 39 ? (s.engine.remove() ?? s.engine.store()) : s.engine.clear());
      }
      let payload = encodeBatch((ts += 0.01), events, rng.int(2) ? 'array' : 'map', s.rank);
      if (k >= 97) payload = payload.subarray(0, payload.length - 2); // malformed (truncated)
      const seq = sequenced ? s.seq++ : undefined;
      send(s.replica, payload, seq, s.rank);
      s.last = payload;
      s.lastSeq = seq ?? -1;
    }
    await Promise.all(results);
    await pool.settled();
    assert.ok(a.dump().length > 100, `${a.dump().length} entries`);
    assert.is(dumpOf(b), dumpOf(a));
    for (let r = 0; r < 8; r++) assert.is(pool.replicaState(r), inThread.replicaState(r), `replica ${r}`);
    assert.is(await pool.trackedKeys(), inThread.trackedKeys());
    for (const [name, labels] of [
      ['kv_batches_applied_total', {}],
      ['kv_blocks_applied_total', { op: 'stored' }],
      ['kv_blocks_applied_total', { op: 'removed' }],
      ['kv_batches_rejected_total', { reason: 'truncated' }],
      ['kv_duplicates_total', {}],
      ['kv_resyncs_total', {}],
      ['kv_orphan_blocks_total', {}],
      ['kv_replicas', { state: 'synced' }],
      ['kv_tracked_keys', {}],
      ['index_entries', {}],
    ] as const) {
      assert.is(await metricSum(rb, name, labels), await metricSum(ra, name, labels), name);
    }
    assert.ok((await metricSum(ra, 'kv_batches_rejected_total', { reason: 'truncated' })) > 0);
    assert.ok((await metricSum(ra, 'kv_duplicates_total')) > 0);
    assert.match(await rb.metrics(), /dystro_kv_ring_staleness_seconds_count [1-9]/, 'staleness is measured');
    const stats = pool.drainStats();
    assert.ok(stats.records > 0 && stats.staleness.samples > 0 && stats.maxPauseMs > 0);
  } finally {
    await inThread.close();
    await pool.close();
  }
});

test('drain() applies at most its bound and never waits; without the loop nothing is applied by itself', async () => {
  const index = new PrefixIndex(kernels, { replicaCapacity: 4 });
  const pool = new IngestPool(index, { namespace: { model: 'm' }, blockSize: BS, drainIntervalMs: false, drainMaxRecords: 100 });
  try {
    const tokens = Array.from({ length: 400 * BS }, (_, i) => i % 5000);
    const hashes = Array.from({ length: 400 }, (_, i) => i + 1);
    const r = await pool.ingest(1, encodeBatch(1, [{ type: 'BlockStored', hashes, parent: null, tokens, blockSize: BS }]));
    assert.equal(r, { ok: true });
    // The worker answered after pushing its records: they wait in the ring until drained.
    assert.is(pool.pendingRecords(), 400);
    assert.is(index.dump().length, 0);
    assert.is(pool.drain(), 100, 'the default bound');
    assert.is(pool.drain(index, 250), 250);
    assert.is(index.dump().length, 350);
    assert.is(pool.drain(index, 1000), 50);
    assert.is(pool.drain(index, 1000), 0);
    assert.is(pool.replicaState(1), 'synced');
  } finally {
    await pool.close();
  }
});

test('through the router: route() drains first, fleet restarts and removals reach the workers, in-flight records are fenced', async () => {
  const { router } = makeRouter({ count: 3, capacity: 8 });
  const pool = new IngestPool(router.index, { namespace: { model: 'm' }, drainIntervalMs: false });
  const errors: unknown[] = [];
  router.attachIngest(pool, { onError: (_slot, e) => errors.push(e) });
  try {
    const hasher = new PrefixHasher(kernels);
    const promptTokens = Array.from({ length: 64 }, (_, i) => 1000 + i);
    const stored = (hashes: number[], parent: number | null, tokens: number[]): EventSpec => ({ type: 'BlockStored', hashes, parent, tokens, blockSize: 16 });
    const slot = router.fleet.snapshot().bySlot.findIndex((r) => r?.id === 'p-0');
    assert.is(router.indexUnknown[slot], 1, 'nothing heard yet: unknown');
    // Replica p-0 caches the whole prompt; the worker has processed it when the promise resolves.
    await pool.ingest(slot, encodeBatch(1, [stored([11, 12, 13, 14], null, promptTokens)]), { seq: 0 });
    assert.is(router.index.dump().length, 0, 'records wait in the ring');
    const d = router.route({ model: 'm', prompt: promptTokens }) as RoutedDecision;
    assert.is(d.kind, 'route');
    assert.is(d.replica.id, 'p-0', 'route() drained the records first and saw the cache');
    assert.is(d.cachedTokens, 64);
    assert.is(router.indexUnknown[slot], 0, 'synced');
    d.ticket.onEnd();

    // Batches in flight, then a restart: none of them may reach the index afterwards.
    const inflight = [];
    for (let i = 1; i <= 20; i++) inflight.push(pool.ingest(slot, encodeBatch(1 + i, [stored([100 + i], 14, promptTokens.slice(0, 16))]), { seq: i }));
    router.restart('p-0');
    const owned = () => router.index.dump().filter((e) => e.replica === slot);
    assert.is(owned().length, 0, 'cleared at once');
    await Promise.all(inflight);
    await pool.settled();
    assert.is(owned().length, 0, 'records produced before the restart were fenced');
    // The worker forgot the engine-hash map: a block naming an old parent is an orphan, not indexed.
    await pool.ingest(slot, encodeBatch(30, [stored([200], 14, promptTokens.slice(16, 32))]), { seq: 0 });
    await pool.settled();
    assert.is(owned().length, 0);
    // A new chain from the root is indexed again.
    await pool.ingest(slot, encodeBatch(31, [stored([300], null, promptTokens.slice(0, 16))]), { seq: 1 });
    await pool.settled();
    assert.equal(owned().map((e) => e.hash), [hasher.hashTokens(promptTokens.slice(0, 16), hasher.namespaceSeed({ model: 'm' }))[0]]);

    // Removal unsubscribes the slot in its worker: its state is gone, the slot reads unknown.
    router.remove('p-0');
    await pool.settled();
    assert.not.ok((await pool.replicas()).includes(slot));
    assert.is(pool.replicaState(slot), 'unknown');
    pool.drain();
    assert.is(router.indexUnknown[slot], 1);
    assert.is(owned().length, 0);
    assert.equal(errors, []);
  } finally {
    await pool.close();
  }
});

test('in-thread ingest through the router: unknown replicas get no prefix credit; restart and removal reach it', async () => {
  const { router } = makeRouter({ count: 2, capacity: 4 });
  const ingest = new KvEventIngest(router.index, { namespace: { model: 'm' } });
  assert.throws(() => router.attachIngest(new KvEventIngest(new PrefixIndex(kernels, { replicaCapacity: 4 }), { namespace: { model: 'm' } })), /router's own index/);
  const detach = router.attachIngest(ingest);
  const promptTokens = Array.from({ length: 64 }, (_, i) => 500 + i);
  const slot0 = router.fleet.snapshot().bySlot.findIndex((r) => r?.id === 'p-0');
  // Speculative entries from routing exist, but with an ingest attached nobody is known yet: no credit.
  const first = router.route({ model: 'm', prompt: promptTokens }) as RoutedDecision;
  first.ticket.onEnd();
  const second = router.route({ model: 'm', prompt: promptTokens }) as RoutedDecision;
  assert.is(second.cachedTokens, 0, 'an unknown replica is routed by load only');
  second.ticket.onEnd();
  ingest.ingest(slot0, encodeBatch(1, [{ type: 'BlockStored', hashes: [1, 2, 3, 4], parent: null, tokens: promptTokens, blockSize: 16 }]), { seq: 0 });
  assert.is(router.indexUnknown[slot0], 0, 'the listener ran synchronously');
  const third = router.route({ model: 'm', prompt: promptTokens }) as RoutedDecision;
  assert.is(third.replica.slot, slot0);
  assert.is(third.cachedTokens, 64);
  third.ticket.onEnd();
  router.restart('p-0');
  assert.is(ingest.trackedKeys(), 0, 'the restart reached the ingest');
  router.remove('p-0');
  await Promise.resolve();
  assert.equal(ingest.replicas(), []);
  assert.is(router.indexUnknown[slot0], 1);
  detach();
  assert.is(router.indexUnknown[slot0], 0, 'detached: no ingest, no unknown replicas');
  await ingest.close();
});

test('a process with a pool (two shards, a subscription to nobody, coalesced ingests) ends by itself after close()', () => {
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(here, 'fixtures', 'pool-exit.ts')], { encoding: 'utf8', timeout: 15_000 });
  assert.is(r.error, undefined, `did not exit in 15 s: ${r.error}`);
  assert.is(r.status, 0, r.stderr);
  assert.match(r.stdout, /closed: 2 shards, 40 results/);
});

test.run();
