/**
 * The emulator's fault knobs, by option, by method and through the authenticated control API: a 429 or
 * 503 fraction, restart (seq back to 0, AllBlocksCleared, empty cache, requests in flight cut), dropped
 * batches (a seq gap the replay socket fills, and the router's ingest repairs), stall, slow, and the
 * crash modes (close: connections refused; hang: no answer until closed).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import OpenAI from 'openai';
import { Registry } from 'prom-client';
import { startEngineEmulator, type EngineEmulator } from '../../src/emulator/index.ts';
import { ZmqReplaySource } from '../../src/index/zmq-subscriber.ts';
import { decodeKvEventBatch } from '../../src/index/vllm-events.ts';
import { jsBackend } from '../../src/kernels/js/index.ts';
import { PrefixIndex } from '../../src/index/prefix-index.ts';
import { KvEventIngest } from '../../src/index/kv-events.ts';
import { gptTokenizer } from '../../src/tokenize/index.ts';
import { createRng } from '../../src/rng.ts';
import { FrameTap, metric, routerHashes, until, watchdog } from './harness.ts';

watchdog('emulator/faults');

const MODEL = 'llama-3-8b';
const TOKEN = 'test-control-token';
const rng = createRng(3);

function randomPrompt(n: number): number[] {
  return Array.from({ length: n }, () => 1000 + rng.int(50_000));
}

async function post(e: EngineEmulator, path: string, body: unknown, token: string | null = TOKEN): Promise<Response> {
  return fetch(`${e.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
  });
}

async function complete(e: EngineEmulator, prompt: number[] | string, maxTokens: number): Promise<Response> {
  return post(e, '/v1/completions', { model: MODEL, prompt, max_tokens: maxTokens }, null);
}

/** ZeroMQ connects asynchronously: small requests until the tap has a frame. */
async function tapReady(e: EngineEmulator, tap: FrameTap): Promise<void> {
  await until('the tap to receive a batch', async () => {
    await complete(e, randomPrompt(20), 1);
    await e.eventsFlushed();
    return tap.frames.length > 0;
  });
}

test('the control API needs the bearer token', async () => {
  const e = await startEngineEmulator({ timeScale: 0.02, controlToken: TOKEN, eventsPort: null });
  try {
    assert.is((await post(e, '/control/restart', {}, null)).status, 401);
    assert.is((await post(e, '/control/restart', {}, 'wrong-token')).status, 401);
    assert.is(e.incarnation, 1);
    const state = await fetch(`${e.url}/control/state`, { headers: { authorization: `Bearer ${TOKEN}` } });
    assert.is(state.status, 200);
    assert.is(((await state.json()) as { incarnation: number }).incarnation, 1);
    const bad = await post(e, '/control/faults', { failFraction: 2 });
    assert.is(bad.status, 400);
    assert.match(((await bad.json()) as { error: { message: string } }).error.message, /failFraction/);
  } finally {
    await e.close();
  }
});

test('fail a fraction: 429 through the official client at 1.0, a seeded share at 0.5, 503 via the control API', async () => {
  const e = await startEngineEmulator({ timeScale: 0.02, controlToken: TOKEN, eventsPort: null, faults: { failFraction: 1, failStatus: 429 } });
  try {
    const client = new OpenAI({ baseURL: `${e.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    try {
      await client.completions.create({ model: MODEL, prompt: 'hi', max_tokens: 1 });
      assert.unreachable('a 429 was expected');
    } catch (err) {
      assert.instance(err, OpenAI.RateLimitError);
      assert.is((err as InstanceType<typeof OpenAI.APIError>).status, 429);
    }
    const r = await post(e, '/control/faults', { failFraction: 0.5, failStatus: 503 });
    assert.is(r.status, 200);
    assert.equal(((await r.json()) as { faults: { failFraction: number } }).faults.failFraction, 0.5);
    const statuses: number[] = [];
    for (let i = 0; i < 40; i++) {
      const res = await complete(e, 'hello', 1);
      statuses.push(res.status);
      if (res.status === 503) assert.is(res.headers.get('retry-after'), '1');
      await res.arrayBuffer();
    }
    const failed = statuses.filter((s) => s === 503).length;
    assert.ok(statuses.every((s) => s === 200 || s === 503));
    assert.ok(failed >= 10 && failed <= 30, `about half fail (${failed}/40)`);
    assert.is(await metric(e, 'dystro_emulator_refused_total', { status: '503' }), failed);
    e.setFaults({ failFraction: 0 });
    assert.is((await complete(e, 'hello', 1)).status, 200);
  } finally {
    await e.close();
  }
});

test('restart: seq starts again at 0 with AllBlocksCleared, the cache is empty, requests in flight are cut', async () => {
  const e = await startEngineEmulator({ timeScale: 0.05, controlToken: TOKEN });
  const tap = new FrameTap(e.eventsEndpoint!);
  try {
    await tapReady(e, tap);
    const prompt = randomPrompt(50);
    await (await complete(e, prompt, 2)).arrayBuffer();
    const warm = (await (await complete(e, prompt, 2)).json()) as { usage: { prompt_tokens_details: { cached_tokens: number } } };
    assert.is(warm.usage.prompt_tokens_details.cached_tokens, 48);
    await e.eventsFlushed();
    const before = e.state().nextSeq!;
    assert.ok(before > 2);
    // A long stream in flight when the engine restarts.
    const client = new OpenAI({ baseURL: `${e.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    const stream = await client.completions.create({ model: MODEL, prompt: 'a long answer', max_tokens: 5000, stream: true });
    const it = stream[Symbol.asyncIterator]();
    await it.next();
    const r = await post(e, '/control/restart', {});
    assert.equal(await r.json(), { incarnation: 2 });
    let cut = false;
    try {
      for (let n = 0; n < 6000; n++) if ((await it.next()).done) break;
    } catch {
      cut = true;
    }
    assert.ok(cut, 'the stream in flight ended with an error, not [DONE]');
    await until('the AllBlocksCleared batch at seq 0', () => tap.frames.some((f) => f.seq === 0 && f.batch.events.some((x) => x.kind === 'cleared')));
    const at = tap.frames.findIndex((f) => f.seq === 0 && f.batch.events.some((x) => x.kind === 'cleared'));
    assert.ok(at > 0 && tap.frames[at - 1].seq >= before - 1, 'the reset follows the old incarnation’s last batches');
    assert.equal(tap.frames[at].batch.events, [{ kind: 'cleared' }]);
    // A restart closed the idle keep-alive connections: a request racing that close is retried once.
    const cold = (await (await complete(e, prompt, 2).catch(() => complete(e, prompt, 2))).json()) as { usage: { prompt_tokens_details: { cached_tokens: number } } };
    assert.is(cold.usage.prompt_tokens_details.cached_tokens, 0, 'a new incarnation starts with an empty cache');
    assert.is(e.state().incarnation, 2);
    assert.is(await metric(e, 'dystro_emulator_incarnation'), 2);
    assert.is(await metric(e, 'vllm:request_success_total', { finished_reason: 'length' }), 1, 'counters start again at 0');
  } finally {
    await tap.close();
    await e.close();
  }
});

test('restart with down time: the port refuses connections, then the same port serves the new incarnation', async () => {
  const e = await startEngineEmulator({ timeScale: 0.02, controlToken: TOKEN });
  const tap = new FrameTap(e.eventsEndpoint!);
  try {
    await tapReady(e, tap);
    const url = e.url;
    assert.equal(await (await post(e, '/control/restart', { downMs: 300 })).json(), { incarnation: 2, downMs: 300 });
    await until('the port to close', () => e.state().down);
    let refused = false;
    try {
      await fetch(`${url}/health`);
    } catch {
      refused = true;
    }
    assert.ok(refused, 'connections are refused while down');
    await until('the port to listen again', async () => (await fetch(`${url}/health`).then((r) => r.status, () => 0)) === 200, 3000);
    assert.is(e.url, url);
    assert.is(e.state().incarnation, 2);
    await until('AllBlocksCleared at seq 0 once up', () => tap.frames.some((f) => f.seq === 0 && f.batch.events.some((x) => x.kind === 'cleared')));
    assert.is((await complete(e, 'back again', 2)).status, 200);
  } finally {
    await tap.close();
    await e.close();
  }
});

test('dropped batches: a seq gap on PUB that the replay socket fills', async () => {
  const e = await startEngineEmulator({ timeScale: 0.02, controlToken: TOKEN });
  const tap = new FrameTap(e.eventsEndpoint!);
  try {
    await tapReady(e, tap);
    // The last batch published so far, once the tap has it (frames can still be in flight).
    await e.eventsFlushed();
    const last = e.state().nextSeq! - 1;
    await until('the tap to catch up', () => tap.frames.some((f) => f.seq === last));
    const r = await post(e, '/control/faults', { dropNext: 2 });
    assert.is(((await r.json()) as { faults: { dropNext: number } }).faults.dropNext, 2);
    // Three requests of one block each: three batches, the first two dropped.
    for (let i = 0; i < 3; i++) await (await complete(e, randomPrompt(20), 1)).arrayBuffer();
    await e.eventsFlushed();
    await until('the batch after the dropped ones', () => tap.frames.at(-1)!.seq >= last + 3);
    assert.equal(tap.seqs().filter((s) => s > last), [last + 3], 'seqs last+1 and last+2 never arrived');
    assert.is(e.state().faults.dropNext, 0);
    const source = new ZmqReplaySource({ endpoint: e.replayEndpoint!, timeoutMs: 2000 });
    const replayed: number[] = [];
    for await (const f of source.replay(last + 1, new AbortController().signal)) {
      const d = decodeKvEventBatch(f.payload, { blockSize: 16 });
      assert.ok(d.ok && d.batch.events.some((x) => x.kind === 'stored'));
      replayed.push(f.seq);
    }
    assert.equal(replayed, [last + 1, last + 2, last + 3]);
    assert.is(await metric(e, 'dystro_emulator_kv_batches_dropped'), 2);
  } finally {
    await tap.close();
    await e.close();
  }
});

test('dropped batches under a fraction: the router’s ingest sees gaps, replays, and ends equal to the engine', async () => {
  const e = await startEngineEmulator({ timeScale: 0.02, kvBlocks: 64, faults: { dropFraction: 0.3 }, seed: 9 });
  const registry = new Registry();
  const index = new PrefixIndex(jsBackend, { replicaCapacity: 2 });
  const ingest = new KvEventIngest(index, { namespace: { model: MODEL }, blockSize: 16, registry, replay: { timeoutMs: 1000, backoffMs: 20 } });
  const count = async (name: string) => (await registry.getSingleMetric(`dystro_${name}`)!.get()).values.reduce((a, x) => a + x.value, 0);
  ingest.subscribe(1, { endpoint: e.eventsEndpoint!, replayEndpoint: e.replayEndpoint! });
  try {
    const prompts = Array.from({ length: 12 }, () => Uint32Array.from(randomPrompt(60)));
    for (const p of prompts) await (await complete(e, Array.from(p), 3)).arrayBuffer();
    e.setFaults({ dropFraction: 0 });
    // A final delivered batch tells the ingest the last seq.
    await (await complete(e, randomPrompt(20), 1)).arrayBuffer();
    await e.eventsFlushed();
    const depth = (p: Uint32Array) => index.match(routerHashes(p, MODEL), index.newMatchResult()).depthOf(1);
    const last = prompts.at(-1)!;
    // Index entries = blocks the engine caches, once every batch is applied.
    await until('the index to hold the newest prompt and equal the engine', async () => {
      await ingest.settled();
      return ingest.replicaState(1) === 'synced' && depth(last) === 3 && index.dump().length === e.state().cachedBlocks;
    });
    assert.ok((await metric(e, 'dystro_emulator_kv_batches_dropped')) > 0);
    assert.ok((await count('kv_gaps_total')) > 0, 'gaps were seen');
    assert.ok((await count('kv_replays_total')) > 0, 'and replayed');
    assert.is(await count('kv_unrecoverable_total'), 0);
    assert.is(await count('kv_orphan_blocks_total'), 0);
    assert.is(await count('kv_unknown_removals_total'), 0);
  } finally {
    await ingest.close();
    await e.close();
  }
});

/** Wall ms from sending a request to its first streamed byte of content and to its end. */
async function timed(e: EngineEmulator, prompt: string, maxTokens: number): Promise<{ ttftMs: number; totalMs: number }> {
  const t0 = performance.now();
  const res = await fetch(`${e.url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: MODEL, prompt, max_tokens: maxTokens, stream: true }),
  });
  const reader = res.body!.getReader();
  let ttftMs = NaN;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (Number.isNaN(ttftMs) && value.length > 0) ttftMs = performance.now() - t0;
  }
  return { ttftMs, totalMs: performance.now() - t0 };
}

test('stall holds generation for its wall milliseconds; slow multiplies step times', async () => {
  // 40 decode steps of Llama-3-8B on an H100 are ~0.3 s modeled: ~15 ms at timeScale 0.05.
  const e = await startEngineEmulator({ timeScale: 0.05, controlToken: TOKEN, eventsPort: null });
  try {
    const base = await timed(e, 'a baseline prompt', 40);
    assert.ok(base.totalMs < 150, `baseline ${base.totalMs.toFixed(1)} ms`);
    const stallAt = performance.now();
    assert.is((await post(e, '/control/stall', { ms: 300 })).status, 200);
    await timed(e, 'a stalled prompt', 40);
    const sinceStall = performance.now() - stallAt;
    assert.ok(sinceStall >= 299, `the request ended ${sinceStall.toFixed(1)} ms after the stall began`);
    assert.is(e.state().stalled, false);
    e.setFaults({ slowFactor: 30 });
    const slow = await timed(e, 'a slow prompt', 40);
    assert.ok(slow.totalMs > 5 * base.totalMs && slow.totalMs > 200, `slow ${slow.totalMs.toFixed(1)} ms vs ${base.totalMs.toFixed(1)} ms`);
    e.setFaults({ slowFactor: 1 });
    // TTFT as the engine reports it: the stalled request's shows in the histogram's sum.
    assert.ok((await metric(e, 'vllm:time_to_first_token_seconds_sum')) >= 0.25);
  } finally {
    await e.close();
  }
});

test('crash "close": every socket shuts and connections are refused; "hang": nothing answers until closed', async () => {
  const a = await startEngineEmulator({ timeScale: 0.02, controlToken: TOKEN });
  const url = a.url;
  assert.equal(await (await post(a, '/control/crash', { mode: 'close' })).json(), { crashing: 'close' });
  await a.closed;
  let refused = false;
  try {
    await fetch(`${url}/health`);
  } catch {
    refused = true;
  }
  assert.ok(refused, 'connection refused after a crash');

  const b = await startEngineEmulator({ timeScale: 0.02, crashMode: 'hang' });
  try {
    assert.is((await fetch(`${b.url}/health`)).status, 200);
    await b.crash();
    assert.is(b.state().crashed, 'hang');
    let timedOut = false;
    try {
      await fetch(`${b.url}/health`, { signal: AbortSignal.timeout(300) });
    } catch {
      timedOut = true;
    }
    assert.ok(timedOut, 'a hung engine accepts the connection and never answers');
    const pending = fetch(`${b.url}/v1/completions`, { method: 'POST', body: JSON.stringify({ model: MODEL, prompt: 'x', max_tokens: 1 }) }).then(
      () => 'answered',
      () => 'cut',
    );
    await new Promise((r) => setTimeout(r, 50));
    await b.close();
    assert.is(await pending, 'cut', 'closing cuts the requests held by the hang');
  } finally {
    await b.close();
  }
});

test('reset_prefix_cache (vLLM’s endpoint) publishes AllBlocksCleared and empties the cache; gptTokenizer ids hash alike', async () => {
  const e = await startEngineEmulator({ timeScale: 0.02, controlToken: TOKEN });
  const tap = new FrameTap(e.eventsEndpoint!);
  try {
    await tapReady(e, tap);
    const text = 'Some prompt long enough to fill two blocks of sixteen tokens each, with a few more words for good measure.';
    await (await complete(e, text, 1)).arrayBuffer();
    assert.ok(e.state().cachedBlocks >= 2);
    assert.is((await post(e, '/reset_prefix_cache', {})).status, 200);
    assert.is(e.state().cachedBlocks, 0);
    await e.eventsFlushed();
    await until('AllBlocksCleared', () => tap.frames.some((f) => f.batch.events.some((x) => x.kind === 'cleared')));
    assert.ok(tap.frames.at(-1)!.seq > 0, 'a cache reset is not a restart: seqs go on');
    const ids = gptTokenizer().encode(text);
    const want = routerHashes(ids, MODEL);
    assert.ok(tap.frames.some((f) => f.batch.events.some((x) => x.kind === 'stored' && x.hashes[0] === want[0])));
  } finally {
    await tap.close();
    await e.close();
  }
});

test.run();
