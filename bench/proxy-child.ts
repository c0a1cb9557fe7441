/**
 * The two child processes of the proxy benchmark (bench/proxy.ts), forked with an IPC channel so that
 * neither shares the proxy's event loop:
 *
 *   engines  engine emulators (time-scaled so that they are never the bottleneck) and, beside each, a
 *            synthetic KV event publisher: vLLM-format batches of BlockStored events (16-token
 *            blocks, fresh random chains) at a total rate in blocks/s set by the parent, each batch
 *            also removing the oldest blocks once a publisher holds `cacheBlocks`, as an engine at
 *            capacity evicts (so the proxy's index stays bounded). The emulators' own KV events are
 *            off: what the engines publish is exactly the synthetic stream at the rate asked.
 *   load     an open-loop load generator: request i is sent at start + i / rate whatever happened to
 *            the earlier ones (no coordinated omission), streamed /v1/completions with a distinct
 *            prompt of token ids; TTFB is measured from the send to the first byte of the response
 *            body (the first token: the proxy sends its headers with it, an engine flushes its
 *            headers before it, so the body's first byte is what both paths have in common).
 *
 * Messages are plain objects over process.send; every time is wall milliseconds.
 */
import { Pool } from 'undici';
import { EngineEmulator } from '../src/emulator/server.ts';
import { KvPublisher, encodeEventBatch, type KvEventSpec } from '../src/emulator/kv-publisher.ts';
import { createRng, type Rng } from '../src/rng.ts';

export interface EnginesInit {
  count: number;
  timeScale: number;
  accelerator: string;
  /** Blocks a synthetic publisher holds before it evicts its oldest chains. */
  cacheBlocks: number;
}

export interface EnginesReady {
  type: 'ready';
  urls: string[];
  events: { endpoint: string; replayEndpoint: string }[];
}

export interface LoadRun {
  type: 'run';
  id: number;
  /** Base URLs, used round-robin. */
  targets: string[];
  headers: Record<string, string>;
  model: string;
  ratePerS: number;
  durationMs: number;
  promptTokens: number;
  maxTokens: number;
  /** Distinct prompts across runs. */
  firstRequest: number;
}

export interface LoadResult {
  type: 'result';
  id: number;
  ttfbMs: number[];
  sent: number;
  errors: number;
  /** Requests sent ÷ the run's wall seconds. */
  achievedPerS: number;
  /** Longest lateness of a send behind its schedule (ms): the generator keeping up. */
  maxSendLagMs: number;
}

const BLOCK = 16;
const BLOCKS_PER_EVENT = 16;
/** Blocks per batch: 8 BlockStored events of 16 blocks, about one engine step's worth. */
const BATCH_BLOCKS = 128;
/** Publish period of a synthetic publisher (ms); each tick sends the whole batches the rate owes. */
const TICK_MS = 5;

/**
 * One engine's synthetic KV event stream. The payloads are encoded up front (generating and packing
 * 100,000 random blocks a second would take ~15% of a core in this process, on a 2-core machine
 * shared with the proxy being measured): a ring of chunks of BATCH_BLOCKS fresh blocks, one batch per
 * chunk, and, once `cacheBlocks` are held, the same batch plus the removal of the chunk stored
 * `cacheBlocks` earlier. The ring is longer than the cache, so a chunk is always evicted before it is
 * stored again: every store is a new block to the index. The timestamp is written into each payload
 * as it goes out (the router drops a batch whose ts is older than the last one applied).
 */
class SyntheticEvents {
  private readonly fresh: Uint8Array[] = [];
  private readonly steady: Uint8Array[] = [];
  private readonly cacheChunks: number;
  private published = 0;
  private owed = 0;
  blocksPerS = 0;

  constructor(
    readonly pub: KvPublisher,
    rng: Rng,
    cacheBlocks: number,
  ) {
    this.cacheChunks = Math.max(1, Math.round(cacheBlocks / BATCH_BLOCKS));
    const ring = Math.ceil(this.cacheChunks * 1.25) + 1;
    const u64 = () => (BigInt(rng.int(0x1_0000_0000)) << 32n) | BigInt(rng.int(0x1_0000_0000));
    const chunks = Array.from({ length: ring }, () => {
      const events: KvEventSpec[] = [];
      for (let b = 0; b < BATCH_BLOCKS; b += BLOCKS_PER_EVENT) {
        const hashes = Array.from({ length: BLOCKS_PER_EVENT }, u64);
        const tokens = Array.from({ length: BLOCKS_PER_EVENT * BLOCK }, () => rng.int(128_000));
        events.push({ type: 'BlockStored', hashes, parent: null, tokens, blockSize: BLOCK, extraKeys: null });
      }
      return events;
    });
    const allHashes = (events: KvEventSpec[]) => events.flatMap((e) => (e.type === 'BlockStored' ? e.hashes : []));
    for (let j = 0; j < ring; j++) {
      // 0.5: a placeholder that msgpack writes as a float64 (an integer would be packed smaller).
      this.fresh.push(encodeEventBatch(0.5, chunks[j], 'array', 0));
      const evicted = chunks[(j - this.cacheChunks + ring) % ring];
      this.steady.push(encodeEventBatch(0.5, [{ type: 'BlockRemoved', hashes: allHashes(evicted) }, ...chunks[j]], 'array', 0));
    }
  }

  get storedBlocks(): number {
    return this.published * BATCH_BLOCKS;
  }

  tick(elapsedMs: number): void {
    if (this.blocksPerS <= 0) return;
    this.owed += (this.blocksPerS * elapsedMs) / 1000;
    const ts = Date.now() / 1000;
    for (; this.owed >= BATCH_BLOCKS; this.owed -= BATCH_BLOCKS) {
      const j = this.published % this.fresh.length;
      const template = this.published < this.cacheChunks ? this.fresh[j] : this.steady[j];
      // A copy: the publisher keeps each payload for replays. [0x93 array(3), 0xcb float64 ts, …].
      const payload = template.slice();
      new DataView(payload.buffer, payload.byteOffset).setFloat64(2, ts, false);
      this.pub.publish(payload);
      this.published++;
    }
  }
}

async function engines(init: EnginesInit): Promise<void> {
  const emulators: EngineEmulator[] = [];
  const streams: SyntheticEvents[] = [];
  for (let i = 0; i < init.count; i++) {
    emulators.push(await EngineEmulator.start({ servedModelName: 'llama-3-8b', accelerator: init.accelerator, timeScale: init.timeScale, seed: i, eventsPort: null, replayPort: null, tokenizer: 'bytes' }));
    const pub = new KvPublisher({ endpoint: 'tcp://127.0.0.1:*', replayEndpoint: 'tcp://127.0.0.1:*', rng: createRng(100 + i) });
    await pub.start();
    streams.push(new SyntheticEvents(pub, createRng(200 + i), init.cacheBlocks));
  }
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    for (const s of streams) s.tick(now - last);
    last = now;
  }, TICK_MS);
  process.on('message', async (m: { type: string; blocksPerS?: number }) => {
    if (m.type === 'events') {
      for (const s of streams) s.blocksPerS = (m.blocksPerS ?? 0) / streams.length;
      process.send!({ type: 'events-set' });
    } else if (m.type === 'stats') {
      process.send!({ type: 'stats', storedBlocks: streams.reduce((a, s) => a + s.storedBlocks, 0) });
    } else if (m.type === 'stop') {
      clearInterval(timer);
      await Promise.all([...emulators.map((e) => e.close()), ...streams.map((s) => s.pub.close())]);
      process.exit(0);
    }
  });
  const ready: EnginesReady = { type: 'ready', urls: emulators.map((e) => e.url), events: streams.map((s) => ({ endpoint: s.pub.endpoint, replayEndpoint: s.pub.replayEndpoint! })) };
  process.send!(ready);
}

async function run(r: LoadRun, pools: Map<string, Pool>): Promise<LoadResult> {
  const clients = r.targets.map((t) => {
    let p = pools.get(t);
    if (!p) pools.set(t, (p = new Pool(t, { connections: 256, pipelining: 1 })));
    return p;
  });
  const total = Math.floor((r.ratePerS * r.durationMs) / 1000);
  const ttfb: number[] = [];
  let errors = 0;
  let sent = 0;
  let maxLag = 0;
  const pending: Promise<void>[] = [];
  const headers = { 'content-type': 'application/json', ...r.headers };
  const one = async (i: number): Promise<void> => {
    const n = r.firstRequest + i;
    let ids = '';
    for (let k = 0; k < r.promptTokens; k++) ids += `${k ? ',' : ''}${(n * 7919 + k * 104_729) % 100_000}`;
    const body = `{"model":"${r.model}","prompt":[${ids}],"max_tokens":${r.maxTokens},"stream":true}`;
    const t0 = performance.now();
    try {
      const res = await clients[i % clients.length].request({ path: '/v1/completions', method: 'POST', headers, body });
      let first = NaN;
      for await (const _ of res.body) if (Number.isNaN(first)) first = performance.now() - t0;
      if (res.statusCode === 200 && !Number.isNaN(first)) ttfb.push(first);
      else errors++;
    } catch {
      errors++;
    }
  };
  const start = performance.now();
  await new Promise<void>((resolve) => {
    const tick = () => {
      const now = performance.now();
      while (sent < total && start + (sent * 1000) / r.ratePerS <= now) {
        maxLag = Math.max(maxLag, now - (start + (sent * 1000) / r.ratePerS));
        pending.push(one(sent++));
      }
      if (sent >= total) {
        clearInterval(timer);
        resolve();
      }
    };
    const timer = setInterval(tick, 1);
  });
  const wallS = (performance.now() - start) / 1000;
  await Promise.all(pending);
  return { type: 'result', id: r.id, ttfbMs: ttfb, sent, errors, achievedPerS: sent / wallS, maxSendLagMs: maxLag };
}

function load(): void {
  const pools = new Map<string, Pool>();
  process.on('message', async (m: LoadRun | { type: 'stop' }) => {
    if (m.type === 'run') process.send!(await run(m, pools));
    else if (m.type === 'stop') {
      await Promise.all([...pools.values()].map((p) => p.close()));
      process.exit(0);
    }
  });
  process.send!({ type: 'ready' });
}

const role = process.argv[2];
if (role === 'engines') void engines(JSON.parse(process.argv[3]) as EnginesInit);
else if (role === 'load') load();
else {
  console.error(`bench/proxy-child.ts: unknown role "${role}" (engines | load)`);
  process.exit(2);
}
