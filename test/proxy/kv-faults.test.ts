/**
 * The proxy's view of an engine's KV cache when the event stream breaks, end to end on 127.0.0.1:
 * official OpenAI client → proxy (router and KV ingest inside) → engine emulators publishing vLLM's
 * KV events over ZeroMQ.
 *
 * Pass criteria:
 * - Engine restart with sequence reset (new incarnation, seq 0, AllBlocksCleared): within 5 s of the
 *   restart the restarted replica holds no precise index entry and a prompt it held before gets zero
 *   prefix credit (router and engine agree: 0 cached tokens) until new events arrive; traffic during
 *   the restart's down time is all answered (200, retried on the other replica); afterwards its
 *   precise index entries equal, hash for hash, what the engine holds.
 * - Event gap (30% of batches dropped on PUB at the emulator, thread and pooled ingest): the gaps are
 *   seen and replayed, none is unrecoverable, and the index then equals what the engine holds.
 *
 * "What the engine holds" is built from the engine's own complete event log (its replay socket from
 * seq 0: every batch of the current incarnation, none dropped), a reference independent of the proxy's
 * subscription, and cross-checked against the emulator's cached block count. Engine hashes are the
 * router's chained hashes of the same tokens in the same namespace (the emulator hashes with the
 * router's chain), so the two sets compare directly: every request here carries tenant A's salt, and
 * the replicas' KV events are declared as tenant A's (kvEvents.tenant).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { request } from 'undici';
import type { EngineEmulator } from '../../src/emulator/index.ts';
import type { Proxy } from '../../src/proxy/proxy.ts';
import { ZmqReplaySource } from '../../src/index/zmq-subscriber.ts';
import { decodeKvEventBatch } from '../../src/index/vllm-events.ts';
import { MODEL, SALT_A, baseConfig, inflightTotals, metricSum, openai, start, startEngines, text, until } from './helpers.ts';

// Open ZeroMQ sockets keep a process alive: whatever happens, this file ends within 60 s.
setTimeout(() => {
  console.error('kv-faults: watchdog fired (a socket was left open?)');
  process.exit(1);
}, 60_000).unref();

/** The engine's cache as its complete event log says: router hashes of the blocks it holds. */
async function engineHeld(e: EngineEmulator, log = { removed: 0 }): Promise<Set<bigint>> {
  await e.eventsFlushed();
  const held = new Set<bigint>();
  log.removed = 0;
  let expect = 0;
  for await (const f of new ZmqReplaySource({ endpoint: e.replayEndpoint!, timeoutMs: 3000 }).replay(0, new AbortController().signal)) {
    // A log that does not start at 0 or skips a seq would not be the whole story.
    if (f.seq !== expect++) throw new Error(`the replay log is not contiguous from 0 (got seq ${f.seq})`);
    const d = decodeKvEventBatch(f.payload, { blockSize: 16 });
    if (!d.ok) throw new Error(`the engine published a batch the router rejects: ${d.reason}`);
    for (const ev of d.batch.events) {
      if (ev.kind === 'cleared') held.clear();
      else if (ev.kind === 'stored') for (const h of ev.hashes) held.add(h);
      else {
        log.removed += ev.hashes.length;
        for (const h of ev.hashes) held.delete(h);
      }
    }
  }
  return held;
}

/** The router's precise (event-backed) GPU entries for a replica. */
function indexHeld(proxy: Proxy, id: string): Set<bigint> {
  const slot = proxy.router.fleet.snapshot().byId.get(id)!.slot;
  return new Set(proxy.router.index.dump().filter((x) => x.replica === slot && !x.speculative && (x.tiers & 1) !== 0).map((x) => x.hash));
}

function sameSet(a: Set<bigint>, b: Set<bigint>): boolean {
  if (a.size !== b.size) return false;
  for (const x of a) if (!b.has(x)) return false;
  return true;
}

/** Straight to the engine (no routing decision, so no speculative entry), as tenant A. */
async function direct(e: EngineEmulator, prompt: string, maxTokens = 2): Promise<number> {
  const r = await request(`${e.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-dystro-tenant': SALT_A }, body: JSON.stringify({ model: MODEL, prompt, max_tokens: maxTokens }) });
  const body = (await r.body.json()) as { usage?: { prompt_tokens_details?: { cached_tokens?: number } } };
  if (r.statusCode !== 200) throw new Error(`direct request: ${r.statusCode}`);
  return body.usage?.prompt_tokens_details?.cached_tokens ?? 0;
}

/** Until the proxy's stream from `id` is synced (a SUB socket still connecting misses batches). */
async function sync(proxy: Proxy, e: EngineEmulator, id: string): Promise<void> {
  const slot = proxy.router.fleet.snapshot().byId.get(id)!.slot;
  for (let i = 0; proxy.indexState(slot) !== 'synced'; i++) {
    if (i >= 100) throw new Error(`the KV event stream of ${id} never synced`);
    await direct(e, text(20, 5000 + i), 1);
    await new Promise((r) => setTimeout(r, 30));
  }
}

/** Prefix credit (cached tokens) the router's index gives a tenant-A prompt on a replica. */
function credit(proxy: Proxy, id: string, prompt: string): number {
  const r = proxy.router;
  const hashes = r.hasher.hashTokens(proxy.tokenizer.encode(prompt), r.hasher.namespaceSeed({ model: MODEL, tenant: SALT_A }));
  const slot = r.fleet.snapshot().byId.get(id)!.slot;
  return r.index.match(hashes, r.index.newMatchResult()).depthOf(slot) * r.blockSize;
}

function tenantAEvents(engines: EngineEmulator[], extra: Parameters<typeof baseConfig>[1] = {}) {
  const config = baseConfig(engines, extra);
  config.engines = config.engines!.map((e) => ({ ...e, kvEvents: { ...e.kvEvents!, tenant: SALT_A } }));
  return config;
}

async function assertIdle(proxy: Proxy): Promise<void> {
  await until('requests to finish', async () => (await metricSum(proxy, 'dystro_proxy_active_requests')) === 0);
  assert.equal(inflightTotals(proxy.router), { requests: 0, prefillTokens: 0, blocks: 0 }, 'router in-flight counts back to zero');
  assert.is(proxy.router.openTicketCount(), 0, 'no ticket left open');
}

test('engine restart with sequence reset: zero prefix credit until new events, requests during the down time served, then the index equals the engine', async () => {
  const engines = await startEngines(2, { seed: 3 });
  const proxy = await start(tenantAEvents(engines, { policy: 'predicted-ttft' }));
  try {
    await sync(proxy, engines[0], 'e0');
    await sync(proxy, engines[1], 'e1');
    const prompt = text(200, 91);
    const full = Math.floor(proxy.tokenizer.encode(prompt).length / 16) * 16;
    await direct(engines[0], prompt);
    await until('e0 to be credited with the prompt', () => credit(proxy, 'e0', prompt) === full);

    // Traffic keeps flowing (other prompts, tenant A) while e0 restarts with 300 ms of down time.
    const client = openai(proxy);
    let stop = false;
    const statuses: number[] = [];
    const traffic = (async () => {
      for (let i = 0; !stop; i++) {
        const r = await client.completions.create({ model: MODEL, prompt: text(40, 300 + i), max_tokens: 2 }).withResponse();
        statuses.push(r.response.status);
      }
    })();
    const t0 = performance.now();
    engines[0].restart(300);
    // The new incarnation's first batch (seq 0, AllBlocksCleared) wipes the replica.
    await until('the restart to wipe e0 in the index', () => credit(proxy, 'e0', prompt) === 0 && indexHeld(proxy, 'e0').size === 0 && !engines[0].down, 5_000);
    const wipedMs = performance.now() - t0;
    stop = true;
    await traffic;
    assert.ok(statuses.length > 0 && statuses.every((s) => s === 200), `every request during the restart answered 200 (${statuses.length}: ${[...new Set(statuses)]})`);

    // Until new events: no credit for the old prompt, on e0 or anywhere (drain e1 so e0 must serve it).
    proxy.drain('e1', true);
    assert.is(credit(proxy, 'e0', prompt), 0);
    const { data, response } = await client.completions.create({ model: MODEL, prompt, max_tokens: 2 }).withResponse();
    assert.is(response.headers.get('x-dystro-replica'), 'e0');
    assert.is(Number(response.headers.get('x-dystro-cached-tokens')), 0, 'the router gives the restarted replica no credit');
    assert.is(data.usage?.prompt_tokens_details?.cached_tokens, 0, 'and the engine indeed holds nothing of it');

    // The serve stored the prompt again: its events restore the credit, and the index equals the engine.
    await until('the new events to credit e0 again', () => credit(proxy, 'e0', prompt) === full);
    const again = await client.completions.create({ model: MODEL, prompt, max_tokens: 2 }).withResponse();
    assert.is(Number(again.response.headers.get('x-dystro-cached-tokens')), full);
    assert.ok((again.data.usage?.prompt_tokens_details?.cached_tokens ?? 0) >= full - 16);
    proxy.drain('e1', false);
    let held = new Set<bigint>();
    await until('the index to equal the engine', async () => {
      held = await engineHeld(engines[0]);
      return sameSet(indexHeld(proxy, 'e0'), held);
    });
    assert.is(held.size, engines[0].state().cachedBlocks, 'the reference agrees with the emulator’s own count');
    assert.ok(held.size >= full / 16);
    assert.is(proxy.indexState(proxy.router.fleet.snapshot().byId.get('e0')!.slot), 'synced');
    assert.is(await metricSum(proxy, 'dystro_kv_unrecoverable_total'), 0);
    console.log(`  restart: e0 wiped in the index ${wipedMs.toFixed(0)} ms after restart(300 ms down); ${statuses.length} requests during it, all 200`);
    await assertIdle(proxy);
  } finally {
    await proxy.close();
    await Promise.all(engines.map((e) => e.close()));
  }
});

for (const mode of ['thread', 'pool'] as const) {
  test(`event gap (${mode} ingest): batches dropped on PUB are replayed and the index equals the engine`, async () => {
    // A small cache (64 blocks of 16 tokens) so evictions (BlockRemoved) are among the dropped batches.
    const engines = await startEngines(1, { kvBlocks: 64, seed: 11 });
    const proxy = await start(tenantAEvents(engines, { ingest: { mode } }));
    try {
      await sync(proxy, engines[0], 'e0');
      engines[0].setFaults({ dropFraction: 0.3 });
      const client = openai(proxy);
      // Four clients, 60 prompts of 13 kinds: repeats (hits) and, in 64 blocks, evictions.
      await Promise.all(
        [0, 1, 2, 3].map(async (c) => {
          for (let i = 0; i < 15; i++) {
            const seed = (c * 10 + i) % 13;
            await client.completions.create({ model: MODEL, prompt: text(60 + 30 * (seed % 4), seed), max_tokens: 4 });
          }
        }),
      );
      const dropped = (await engines[0].metrics.registry.getSingleMetric('dystro_emulator_kv_batches_dropped')?.get())?.values.reduce((s, v) => s + v.value, 0) ?? 0;
      engines[0].setFaults({ dropFraction: 0 });
      // One delivered batch tells the ingest the last seq (a trailing gap is otherwise invisible).
      await direct(engines[0], text(20, 999), 1);
      let held = new Set<bigint>();
      const log = { removed: 0 };
      await until('the index to equal the engine after replay', async () => {
        held = await engineHeld(engines[0], log);
        return proxy.indexState(0) === 'synced' && sameSet(indexHeld(proxy, 'e0'), held);
      }, 10_000);
      assert.ok(dropped > 0, 'batches were dropped');
      assert.ok(log.removed > 0, 'the engine evicted blocks (BlockRemoved) too');
      assert.is(held.size, engines[0].state().cachedBlocks);
      assert.ok((await metricSum(proxy, 'dystro_kv_gaps_total')) > 0, 'gaps were seen');
      assert.ok((await metricSum(proxy, 'dystro_kv_replays_total')) > 0, 'and replayed');
      assert.is(await metricSum(proxy, 'dystro_kv_unrecoverable_total'), 0);
      console.log(`  gap (${mode}): ${dropped} batches dropped, ${await metricSum(proxy, 'dystro_kv_gaps_total')} gaps, index = engine (${held.size} blocks, ${log.removed} removed on the way)`);
      await assertIdle(proxy);
    } finally {
      await proxy.close();
      await Promise.all(engines.map((e) => e.close()));
    }
  });
}

test.run();
