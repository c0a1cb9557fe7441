/**
 * End to end over real ZeroMQ sockets on 127.0.0.1 (random free ports): a publisher that behaves the way
 * vLLM's ZmqEventPublisher does (test/helpers/zmq-publisher.ts: PUB frames (topic, seq, payload); a
 * ROUTER answering a replay request (empty, start_seq) with (empty, seq, payload) for every buffered
 * seq ≥ start and then (empty, −1, empty); 10,000 batches kept), a toy engine behind it, and a
 * KvEventIngest subscribed to it.
 * The publisher drops batches on purpose; the index must repair itself and equal the reference model of
 * everything published. Waits are bounded polls on real time, never fixed sleeps.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Registry } from 'prom-client';
import { FakeClock } from '../../src/clock.ts';
import { createRng } from '../../src/rng.ts';
import { jsBackend } from '../../src/kernels/js/index.ts';
import { PrefixIndex } from '../../src/index/prefix-index.ts';
import { KvEventIngest } from '../../src/index/kv-events.ts';
import { EngineSim } from '../helpers/engine-sim.ts';
import { IndexModel, loadModelHasher } from '../helpers/index-model.ts';
import { encodeBatch, packValue, type EventSpec } from '../helpers/vllm-frames.ts';
import { TestPublisher, until } from '../helpers/zmq-publisher.ts';

await loadModelHasher();

// Open ZeroMQ sockets keep a process alive: whatever happens, this file ends within 20 s.
setTimeout(() => {
  console.error('kv-zmq: watchdog fired (a socket was left open)');
  process.exit(1);
}, 20_000).unref();

const BS = 4;
const NS = { model: 'llama-3-8b', tenant: 'e2e' };

const big = (_: string, v: unknown) => (typeof v === 'bigint' ? v.toString(16) : v);

function setup(onError?: (replica: number, err: unknown) => void) {
  const clock = new FakeClock(1_000_000);
  const registry = new Registry();
  const index = new PrefixIndex(jsBackend, { maxEntries: 1 << 22, replicaCapacity: 4, clock });
  const ingest = new KvEventIngest(index, { namespace: NS, blockSize: BS, registry, replay: { timeoutMs: 1000, backoffMs: 20 }, onError });
  const model = new IndexModel(BS, 120_000, () => NS);
  const metric = async (name: string, labels: Record<string, string> = {}) =>
    (await registry.getSingleMetric(`dystro_${name}`)!.get()).values.filter((x) => Object.entries(labels).every(([k, v]) => x.labels[k] === v)).reduce((a, x) => a + x.value, 0);
  return { clock, registry, index, ingest, model, metric };
}

test('a publisher that drops batches: the index repairs itself by replay and equals the reference', async () => {
  const { index, ingest, model, metric } = setup();
  const pub = new TestPublisher();
  await pub.start();
  try {
    ingest.subscribe(1, { endpoint: pub.endpoint, replayEndpoint: pub.replayEndpoint, topic: 'kv' });
    const rng = createRng(7);
    const engine = new EngineSim(createRng(8), BS);
    let ts = 1_700_000_000;
    const send = async (events: EventSpec[], drop = false) => {
      await pub.publish(encodeBatch((ts += 0.001), events, rng.int(2) ? 'array' : 'map', 0), drop);
      model.batch(1, 0, events, 0);
    };
    // The subscription connects asynchronously: until it has, batches are lost (repaired from seq 0).
    await until('the subscriber to receive a batch', async () => {
      await send([]);
      return ingest.replicaState(1) !== 'unknown';
    });
    for (let i = 0; i < 400; i++) {
      const k = rng.int(10);
      const e = k < 6 ? engine.store() : k < 9 ? (engine.remove() ?? engine.store()) : rng.int(4) === 0 ? engine.clear() : engine.store();
      await send([e], rng.int(100) < 15);
    }
    await send([]); // delivered: the router learns the last seq
    const want = JSON.stringify(model.dump(0), big);
    await until('the index to equal the model', async () => {
      await ingest.settled();
      return ingest.replicaState(1) === 'synced' && JSON.stringify(index.dump(), big) === want;
    });
    assert.ok(index.dump().length > 0);
    assert.ok((await metric('kv_gaps_total')) > 0, 'gaps were seen');
    assert.ok(pub.replays > 0, 'replays were served');
    assert.is(await metric('kv_unrecoverable_total'), 0);
    assert.is(await metric('kv_orphan_blocks_total'), 0);
  } finally {
    await ingest.close();
    await pub.close();
  }
});

test('malformed frames on the wire are rejected per reason; the index is unchanged and the subscriber keeps running', async () => {
  const errors: unknown[] = [];
  const { index, ingest, model, metric } = setup((_, e) => errors.push(e));
  const pub = new TestPublisher('');
  await pub.start();
  try {
    ingest.subscribe(2, { endpoint: pub.endpoint, replayEndpoint: pub.replayEndpoint });
    const tokens = Array.from({ length: 8 }, (_, i) => 40 + i);
    const stored: EventSpec = { type: 'BlockStored', hashes: [1, 2], parent: null, tokens, blockSize: BS, medium: 'GPU' };
    await until('the subscriber to apply the first batch', async () => {
      await pub.publish(encodeBatch(1, [stored]));
      await ingest.settled();
      return index.dump().length === 2;
    });
    const before = index.dump();
    const good = encodeBatch(2, [{ type: 'BlockStored', hashes: [3], parent: 2, tokens: [1, 2, 3, 4], blockSize: BS, medium: 'GPU' }]);
    // Transport-level: a 7-byte sequence frame, a message with two frames. No seq is consumed.
    await pub.sendRaw(['', new Uint8Array(7), good]);
    await pub.sendRaw(['', good]);
    // Payload-level, each with its own seq (and so in the replay buffer too).
    await pub.publish(good.subarray(0, good.length - 4));
    await pub.publish(packValue([3, [['BlockStored', [3], 2]]]));
    await pub.publish(packValue([3, [['BlockStored', ['x'], 2, [1, 2, 3, 4], BS]]]));
    await pub.publish(packValue([3, [['BlockMoved', [3]]]]));
    await pub.publish(packValue([3, [['BlockStored', [3], 2, new Array(1_100_000).fill(1), BS]]]));
    const expected: Record<string, number> = { 'bad-sequence': 1, 'bad-frame': 1, truncated: 1, 'event-arity': 1, 'non-integer-hash': 1, 'unknown-event-type': 1, 'too-many-tokens': 1 };
    await until('every bad frame to be counted', async () => {
      for (const [reason, n] of Object.entries(expected)) if ((await metric('kv_batches_rejected_total', { reason })) !== n) return false;
      return true;
    });
    assert.equal(index.dump(), before);
    // Still running: the next good batch is applied.
    await pub.publish(good);
    model.batch(2, 0, [stored], 0);
    model.batch(2, 0, [{ type: 'BlockStored', hashes: [3], parent: 2, tokens: [1, 2, 3, 4], blockSize: BS, medium: 'GPU' }], 0);
    await until('the good batch after the bad ones', async () => {
      await ingest.settled();
      return index.dump().length === 3;
    });
    // Earlier batches may have been repeated while the subscription connected; the model counts each once.
    assert.is(JSON.stringify(index.dump(), big), JSON.stringify(model.dump(0), big));
    // (A gap is possible: batches sent before the subscription connected are replayed from seq 0.)
    assert.is(await metric('kv_unrecoverable_total'), 0);
    // A failure applying a frame (here: the index freed under the ingest) is reported, not thrown.
    index.free();
    await pub.publish(encodeBatch(4, [{ type: 'AllBlocksCleared' }]));
    await until('the apply failure to be counted', async () => (await metric('kv_subscriber_errors_total')) === 1);
    assert.equal(errors.map((e) => (e as { code?: string }).code), ['DYSTRO_ERR_TABLE_FREED']);
  } finally {
    await ingest.close();
    await pub.close();
  }
});

test.run();
