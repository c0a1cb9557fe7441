/**
 * The emulator's KV events over real ZeroMQ on 127.0.0.1: its frames decode with the router's decoder
 * (src/index/vllm-events.ts) in both encodings; BlockStored carries the router's chained hashes of the
 * request's tokens, the parent hash, the token ids and the block size; fed to a KvEventIngest and a
 * PrefixIndex they give the index the router's hashes of the prompt, so a repeated prompt matches its
 * blocks; evictions publish BlockRemoved and the index forgets the blocks.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Unpackr } from 'msgpackr';
import { Registry } from 'prom-client';
import { startEngineEmulator, encodeEventBatch, KvPublisher, OutputSampler, type EngineEmulator, type EngineEmulatorOptions } from '../../src/emulator/index.ts';
import { ZmqReplaySource } from '../../src/index/zmq-subscriber.ts';
import { gptTokenizer } from '../../src/tokenize/index.ts';
import { jsBackend } from '../../src/kernels/js/index.ts';
import { PrefixIndex } from '../../src/index/prefix-index.ts';
import { KvEventIngest } from '../../src/index/kv-events.ts';
import type { BlockStoredEvent } from '../../src/index/vllm-events.ts';
import { createRng } from '../../src/rng.ts';
import { FrameTap, routerHashes, until, watchdog } from './harness.ts';

watchdog('emulator/kv-events');

const MODEL = 'llama-3-8b';
const rng = createRng(11);

/** A prompt of `n` random token ids (distinct prompts share no block). */
function randomPrompt(n: number): number[] {
  return Array.from({ length: n }, () => 1000 + rng.int(50_000));
}

async function complete(e: EngineEmulator, prompt: number[] | string, maxTokens: number, headers: Record<string, string> = {}) {
  const res = await fetch(`${e.url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ model: MODEL, prompt, max_tokens: maxTokens }),
  });
  if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
  return (await res.json()) as { choices: { text: string }[]; usage: { prompt_tokens: number; prompt_tokens_details: { cached_tokens: number } } };
}

function storedEvents(tap: FrameTap): BlockStoredEvent[] {
  return tap.frames.flatMap((f) => f.batch.events.filter((e): e is BlockStoredEvent => e.kind === 'stored'));
}

const hex = (a: ArrayLike<bigint>) => Array.from(a, (h) => h.toString(16));

function withIngest(e: EngineEmulator) {
  const registry = new Registry();
  const index = new PrefixIndex(jsBackend, { replicaCapacity: 4 });
  const ingest = new KvEventIngest(index, { namespace: { model: e.servedModelName }, blockSize: 16, registry, replay: { timeoutMs: 1000, backoffMs: 20 } });
  ingest.subscribe(0, { endpoint: e.eventsEndpoint!, replayEndpoint: e.replayEndpoint! });
  const depth = (prompt: Uint32Array) => {
    const hashes = routerHashes(prompt, e.servedModelName);
    return index.match(hashes, index.newMatchResult()).depthOf(0);
  };
  const count = async (name: string, labels: Record<string, string> = {}) =>
    (await registry.getSingleMetric(`dystro_${name}`)!.get()).values.filter((x) => Object.entries(labels).every(([k, v]) => x.labels[k] === v)).reduce((a, x) => a + x.value, 0);
  return { index, ingest, depth, count };
}

/** ZeroMQ subscriptions connect asynchronously: send small requests until the ingest has applied a batch. */
async function synced(e: EngineEmulator, ready: () => boolean): Promise<void> {
  await until('the subscriber to receive a batch', async () => {
    await complete(e, randomPrompt(20), 1);
    await e.eventsFlushed();
    return ready();
  });
}

const CONFIGS: EngineEmulatorOptions[] = [
  { encoding: 'array', hashFormat: 'int' },
  { encoding: 'map', hashFormat: 'int' },
  { encoding: 'map', hashFormat: 'bytes' },
];

for (const cfg of CONFIGS) {
  test(`${cfg.encoding}/${cfg.hashFormat}: BlockStored decodes with the router's decoder and carries the router's chain, parents and tokens`, async () => {
    const seed = 5;
    const e = await startEngineEmulator({ ...cfg, timeScale: 0.02, seed });
    const tap = new FrameTap(e.eventsEndpoint!);
    try {
      await synced(e, () => tap.frames.length > 0);
      const prompt = randomPrompt(70); // 4 full blocks and 6 tokens
      const maxTokens = 40; // the output completes blocks 5 and 6
      await complete(e, prompt, maxTokens);
      await e.eventsFlushed();
      const output = new OutputSampler(gptTokenizer(), seed).sample(Uint32Array.from(prompt), maxTokens);
      const all = Uint32Array.from([...prompt, ...output]);
      const want = routerHashes(all, MODEL);
      // Blocks are cached as their tokens are computed: the last token's KV never is (110 − 1 tokens → 6 blocks).
      const cachedBlocks = Math.floor((all.length - 1) / 16);
      // The chain's events, found by their tokens (bytes hashes are opaque ids to the router).
      const chainOf = () => {
        const out: BlockStoredEvent[] = [];
        let at = 0;
        for (const s of storedEvents(tap)) {
          const n = s.tokens.length;
          if (at + n <= all.length && s.tokens.every((t, i) => t === all[at + i])) {
            out.push(s);
            at += n;
          }
        }
        return { events: out, blocks: at / 16 };
      };
      await until('the chain to arrive', () => chainOf().blocks === cachedBlocks);
      assert.equal(tap.rejected, []);
      const chain = chainOf().events;
      const first = chain[0];
      assert.is(first.parent, null);
      for (let i = 1; i < chain.length; i++) assert.is(chain[i].parent, chain[i - 1].hashes[chain[i - 1].hashes.length - 1], 'each event names its parent');
      if (cfg.hashFormat === 'int') {
        // Integer hashes are the router's own: the chain concatenates to its hashes of prompt + output.
        assert.equal(hex(chain.flatMap((s) => Array.from(s.hashes))), hex(want.subarray(0, cachedBlocks)));
      }
      assert.is(first.hashes.length, 4, 'the prompt’s full blocks are stored in one event at the end of prefill');
      // Sequence numbers: consecutive from the first frame received.
      const seqs = tap.seqs();
      assert.equal(seqs, seqs.map((_, i) => seqs[0] + i));
    } finally {
      await tap.close();
      await e.close();
    }
  });
}

test('bytes hashes: 8 bytes big-endian on the wire, decoded by the router as opaque ids', async () => {
  const e = await startEngineEmulator({ timeScale: 0.02, hashFormat: 'bytes', encoding: 'array' });
  const tap = new FrameTap(e.eventsEndpoint!);
  try {
    await synced(e, () => tap.frames.length > 0);
    const raw = new Unpackr({ mapsAsObjects: false, useRecords: false, int64AsType: 'bigint' }).unpack(tap.frames[0].payload) as unknown[];
    const ev = (raw[1] as unknown[][]).find((x) => x[0] === 'BlockStored')!;
    const h = (ev[1] as Uint8Array[])[0];
    assert.ok(h instanceof Uint8Array);
    assert.is(h.length, 8);
  } finally {
    await tap.close();
    await e.close();
  }
});

test('a tenant salt travels as the first block’s extra_keys (vLLM’s cache_salt) and changes the chain', async () => {
  const e = await startEngineEmulator({ timeScale: 0.02, encoding: 'map' });
  const tap = new FrameTap(e.eventsEndpoint!);
  try {
    await synced(e, () => tap.frames.length > 0);
    const prompt = randomPrompt(33);
    await complete(e, prompt, 1, { 'x-dystro-tenant': 'acme' });
    await e.eventsFlushed();
    const want = routerHashes(Uint32Array.from(prompt), MODEL, 'acme');
    await until('the salted chain', () => storedEvents(tap).some((s) => s.hashes[0] === want[0]));
    const frame = tap.frames.find((f) => f.batch.events.some((x) => x.kind === 'stored' && x.hashes[0] === want[0]))!;
    const raw = new Unpackr({ mapsAsObjects: false, useRecords: false, int64AsType: 'bigint' }).unpack(frame.payload) as Map<string, unknown>;
    const ev = (raw.get('events') as Map<string, unknown>[]).find((x) => x.get('type') === 'BlockStored')!;
    assert.equal(ev.get('extra_keys'), [['acme'], null]);
    assert.is.not(want[0], routerHashes(Uint32Array.from(prompt), MODEL)[0]);
  } finally {
    await tap.close();
    await e.close();
  }
});

for (const encoding of ['array', 'map'] as const) {
  test(`${encoding}: KvEventIngest + PrefixIndex index a salted chain under its salt: found for that tenant only`, async () => {
    const e = await startEngineEmulator({ timeScale: 0.02, encoding });
    // The replica's configured namespace has no tenant: only the events' salts can put the chains under one.
    const { ingest, index } = withIngest(e);
    const depthAs = (prompt: number[], tenant?: string) => index.match(routerHashes(Uint32Array.from(prompt), MODEL, tenant), index.newMatchResult()).depthOf(0);
    try {
      await synced(e, () => ingest.replicaState(0) === 'synced');
      const salted = randomPrompt(70); // 4 full blocks
      await complete(e, salted, 1, { 'x-dystro-tenant': 'acme' });
      await e.eventsFlushed();
      await until('the salted chain in the index', () => depthAs(salted, 'acme') === 4);
      assert.is(depthAs(salted), 0, 'not under the empty tenant');
      assert.is(depthAs(salted, 'globex'), 0, 'not under another tenant');
      // An unsalted request: under the configured (empty) tenant, not under a salt.
      const plain = randomPrompt(50); // 3 full blocks
      await complete(e, plain, 1);
      await e.eventsFlushed();
      await until('the unsalted chain in the index', () => depthAs(plain) === 3);
      assert.is(depthAs(plain, 'acme'), 0);
      // The same prompt under a second tenant: its own chain, the first one's stays.
      await complete(e, salted, 1, { 'x-dystro-tenant': 'globex' });
      await e.eventsFlushed();
      await until('the second tenant’s chain', () => depthAs(salted, 'globex') === 4);
      assert.is(depthAs(salted, 'acme'), 4);
      assert.is(depthAs(salted), 0);
    } finally {
      await ingest.close();
      await e.close();
    }
  });
}

test('KvEventIngest + PrefixIndex: the index holds the router’s hashes of the prompt; a repeated prompt matches its blocks', async () => {
  const e = await startEngineEmulator({ timeScale: 0.02 });
  const { ingest, depth, index } = withIngest(e);
  try {
    await synced(e, () => ingest.replicaState(0) === 'synced');
    const text = 'The router and the engine agree on token ids because they share one tokenizer and one chat template, so a prompt that comes back is routed to the replica holding its blocks.';
    const ids = gptTokenizer().encode(text);
    const full = Math.floor(ids.length / 16);
    assert.ok(full >= 2);
    assert.is(depth(ids), 0);
    const first = await complete(e, text, 4);
    assert.is(first.usage.prompt_tokens, ids.length);
    await until('the index to hold the prompt', async () => {
      await ingest.settled();
      return depth(ids) === full;
    });
    // The repeat: the engine serves it from cache, and the router would have matched it here.
    const again = await complete(e, text, 4);
    assert.is(again.usage.prompt_tokens_details.cached_tokens, Math.floor((ids.length - 1) / 16) * 16);
    assert.ok(index.dump().every((x) => x.replica === 0 && x.tiers === 1));
  } finally {
    await ingest.close();
    await e.close();
  }
});

test('evictions publish BlockRemoved (LRU): the index forgets the oldest prompt and keeps the newest', async () => {
  // 40 blocks of 16 tokens. Each 100-token prompt with its output takes 7 blocks and leaves 6 cached; freed
  // blocks are reused least recently freed first, a request's own tail-first: by the 8th prompt the
  // first one's blocks (the 7 freed first) have all been reallocated.
  const e = await startEngineEmulator({ timeScale: 0.02, kvBlocks: 40 });
  const tap = new FrameTap(e.eventsEndpoint!);
  const { ingest, depth, count } = withIngest(e);
  try {
    await synced(e, () => ingest.replicaState(0) === 'synced' && tap.frames.length > 0);
    const prompts = Array.from({ length: 8 }, () => Uint32Array.from(randomPrompt(100)));
    for (const p of prompts) await complete(e, Array.from(p), 8);
    await e.eventsFlushed();
    const oldest = routerHashes(prompts[0], MODEL);
    await until('the oldest prompt to be forgotten and the newest indexed', async () => {
      await ingest.settled();
      return depth(prompts[0]) === 0 && depth(prompts[7]) === 6;
    });
    const removed = tap.frames.flatMap((f) => f.batch.events.flatMap((x) => (x.kind === 'removed' ? Array.from(x.hashes) : [])));
    assert.ok(oldest.every((h) => removed.includes(h)), 'every block of the oldest prompt was removed');
    assert.ok((await count('kv_blocks_applied_total', { op: 'removed' })) > 0);
    assert.is(await count('kv_unknown_removals_total'), 0, 'the router knew every block it was told to remove');
    assert.is(await count('kv_orphan_blocks_total'), 0);
    assert.is(ingest.replicaState(0), 'synced');
  } finally {
    await ingest.close();
    await tap.close();
    await e.close();
  }
});

test('restart: the router’s ingest takes seq 0 as a new incarnation, wipes the replica, then indexes the new cache', async () => {
  const e = await startEngineEmulator({ timeScale: 0.02 });
  const { ingest, depth, count, index } = withIngest(e);
  try {
    await synced(e, () => ingest.replicaState(0) === 'synced');
    const before = Uint32Array.from(randomPrompt(40));
    await complete(e, Array.from(before), 1);
    await until('the first prompt indexed', async () => {
      await ingest.settled();
      return depth(before) === 2;
    });
    e.restart();
    const after = Uint32Array.from(randomPrompt(40));
    // A restart closes idle keep-alive connections, as a dying process does: a request racing that
    // close fails before any response byte, and a client (the proxy) retries it.
    await complete(e, Array.from(after), 1).catch(() => complete(e, Array.from(after), 1));
    await e.eventsFlushed();
    await until('the new incarnation indexed, the old one forgotten', async () => {
      await ingest.settled();
      return depth(after) === 2 && depth(before) === 0;
    });
    assert.is(ingest.replicaState(0), 'synced');
    assert.is(index.dump().length, e.state().cachedBlocks);
    assert.ok((await count('kv_resyncs_total', { cause: 'publisher_restart' })) + (await count('kv_events_applied_total', { type: 'AllBlocksCleared' })) > 0);
  } finally {
    await ingest.close();
    await e.close();
  }
});

test('the replay buffer keeps the last 10,000 batches (vLLM’s buffer_steps)', async () => {
  const pub = new KvPublisher({ endpoint: 'tcp://127.0.0.1:*', replayEndpoint: 'tcp://127.0.0.1:*', rng: createRng(1) });
  await pub.start();
  try {
    pub.dropNext = 10_005; // buffered for replay, never sent on PUB
    for (let i = 0; i < 10_005; i++) pub.publish(encodeEventBatch(1_700_000_000 + i, [], 'array', 0));
    assert.is(pub.buffered, 10_000);
    const seqs: number[] = [];
    const source = new ZmqReplaySource({ endpoint: pub.replayEndpoint!, timeoutMs: 3000 });
    for await (const f of source.replay(0, new AbortController().signal)) seqs.push(f.seq);
    assert.is(seqs.length, 10_000);
    assert.equal([seqs[0], seqs.at(-1)], [5, 10_004], 'the oldest five are gone: a replay from 0 shows the hole');
    const tail: number[] = [];
    for await (const f of source.replay(10_002, new AbortController().signal)) tail.push(f.seq);
    assert.equal(tail, [10_002, 10_003, 10_004]);
    pub.reset();
    assert.is(pub.buffered, 0);
    assert.is(pub.seq, 0);
  } finally {
    await pub.close();
  }
});

test.run();
