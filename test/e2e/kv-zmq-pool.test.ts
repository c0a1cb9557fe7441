/**
 * The pooled ingest end to end over real ZeroMQ on 127.0.0.1: two vLLM-style publishers
 * (test/helpers/zmq-publisher.ts) drop batches on purpose; an IngestPool with two shards subscribes in
 * its workers (replicas 1 and 2 land on different shards) while an in-thread KvEventIngest subscribes to
 * the same publishers. Both repair the gaps by replay and must end with the same index, equal to the
 * reference model of everything published. Waits are bounded polls on real time.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Registry } from 'prom-client';
import { createRng } from '../../src/rng.ts';
import { loadKernelsSync } from '../../src/kernels/select.ts';
import { PrefixIndex } from '../../src/index/prefix-index.ts';
import { KvEventIngest } from '../../src/index/kv-events.ts';
import { IngestPool } from '../../src/host/ingest-pool.ts';
import { EngineSim } from '../helpers/engine-sim.ts';
import { IndexModel, loadModelHasher } from '../helpers/index-model.ts';
import { encodeBatch, type EventSpec } from '../helpers/vllm-frames.ts';
import { TestPublisher, until } from '../helpers/zmq-publisher.ts';

await loadModelHasher();

setTimeout(() => {
  console.error('kv-zmq-pool: watchdog fired (a socket or worker was left open)');
  process.exit(1);
}, 20_000).unref();

const BS = 4;
const NS = { model: 'llama-3-8b', tenant: 'e2e' };
const big = (_: string, v: unknown) => (typeof v === 'bigint' ? v.toString(16) : v);

test('gaps repaired by replay in the workers: the pooled index equals the in-thread one and the model', async () => {
  const kernels = loadKernelsSync().kernels;
  const a = new PrefixIndex(kernels, { replicaCapacity: 4 });
  const b = new PrefixIndex(kernels, { replicaCapacity: 4 });
  const registry = new Registry();
  const replay = { timeoutMs: 1000, backoffMs: 20 };
  const inThread = new KvEventIngest(a, { namespace: NS, blockSize: BS, replay });
  const pool = new IngestPool(b, { namespace: NS, blockSize: BS, replay, shards: 2, registry });
  const model = new IndexModel(BS, 120_000, () => NS);
  const pubs = [new TestPublisher('kv'), new TestPublisher('kv')];
  const replicas = [1, 2];
  try {
    for (const p of pubs) await p.start();
    for (const [i, p] of pubs.entries()) {
      const opts = { endpoint: p.endpoint, replayEndpoint: p.replayEndpoint, topic: 'kv' };
      inThread.subscribe(replicas[i], opts);
      await pool.subscribe(replicas[i], opts);
    }
    const rng = createRng(17);
    const engines = [new EngineSim(createRng(18), BS), new EngineSim(createRng(19), BS)];
    let ts = 1_700_000_000;
    const send = async (i: number, events: EventSpec[], drop = false) => {
      await pubs[i].publish(encodeBatch((ts += 0.001), events, rng.int(2) ? 'array' : 'map', 0), drop);
      model.batch(replicas[i], 0, events, 0);
    };
    // Both subscriptions connect asynchronously: until both have, batches are lost (repaired from seq 0).
    await until('both ingests to hear both publishers', async () => {
      for (let i = 0; i < 2; i++) await send(i, []);
      await pool.settled();
      return replicas.every((r) => inThread.replicaState(r) !== 'unknown' && pool.replicaState(r) !== 'unknown');
    });
    for (let n = 0; n < 300; n++) {
      const i = rng.int(2);
      const e = engines[i];
      const k = rng.int(10);
      const ev = k < 6 ? e.store() : k < 9 ? (e.remove() ?? e.store()) : rng.int(4) === 0 ? e.clear() : e.store();
      await send(i, [ev], rng.int(100) < 15);
    }
    for (let i = 0; i < 2; i++) await send(i, []); // delivered: each stream learns its last seq
    const want = JSON.stringify(model.dump(0), big);
    await until('both indexes to equal the model', async () => {
      await inThread.settled();
      await pool.settled();
      const synced = replicas.every((r) => inThread.replicaState(r) === 'synced' && pool.replicaState(r) === 'synced');
      return synced && JSON.stringify(a.dump(), big) === want && JSON.stringify(b.dump(), big) === want;
    });
    assert.ok(b.dump().length > 0);
    const text = await registry.metrics();
    // Summed over labels; a labelled counter never incremented has no line at all (0).
    const value = (name: string) => [...text.matchAll(new RegExp(`^dystro_${name}(?:\\{[^}]*\\})? (\\d+)$`, 'gm'))].reduce((n, m) => n + Number(m[1]), 0);
    assert.ok(value('kv_gaps_total') > 0, 'the workers saw gaps');
    assert.is(value('kv_unrecoverable_total'), 0);
    assert.ok(pubs.every((p) => p.replays > 0), 'both publishers served replays');
  } finally {
    await inThread.close();
    await pool.close();
    for (const p of pubs) await p.close();
  }
});

test.run();
