/**
 * KV event ingest (group "ingest"): vLLM-format msgpack batches of BlockStored events with 16-token
 * blocks, end to end — decode → engine-hash map → block hashing → records → ring → drain → apply — in
 * blocks per second, measured from the first batch handed over to the last record applied to the index
 * (the drain included, not just the enqueue).
 *
 * Workload: 16 toy engines, each publishing batches of 16 BlockStored events × 16 blocks (256 blocks, a
 * busy engine step) in vLLM's newer map encoding, u64 engine hashes, token ids below 151,936; a chain
 * continues the engine's previous one 7 times in 8. The base set is replayed to further groups of 16
 * replica slots (new to each, so every block is a new key and a new index entry): no block is cached
 * twice.
 *
 * Both modes start from an index whose block table was grown beforehand (a deployed router's steady
 * state; the one-off doublings of an index filling up are reported apart), warm up on one group and
 * time the others.
 * - in-thread: KvEventIngest on this thread, doing nothing else (reference);
 * - pooled: IngestPool with one worker (this machine has 2 cores: one for the worker, one for routing).
 *   Batches reach the worker as coalesced `ingest()` tasks sent from this thread, views into one
 *   SharedArrayBuffer (a proxy that subscribes in the worker would not even pay that). Meanwhile this
 *   thread is the router at 50,000 decisions a second: each a `drain()` (bounded, as route() does) and
 *   a timed `PrefixIndex.match` of an 8,192-token prompt held by 10 replicas, sleeping between timer
 *   ticks. The match p99 under ingest is compared with its idle p99 on the same index (measured just
 *   before, same loop, nothing to drain). The pool's own drain loop runs as configured by default.
 * Reported with it: staleness (records visible in the ring → applied) p50/p99/max, the longest single
 * drain (the event-loop pause one batch apply causes), and a single-thread breakdown of where the time
 * of one block goes (decode with the fast path and with msgpackr, engine-hash map + hashing, hashing
 * alone, ring push + drain, index apply).
 */
import { Packr } from 'msgpackr';
import { loadKernelsSync } from '../src/kernels/select.ts';
import { PrefixIndex, type MatchResult } from '../src/index/prefix-index.ts';
import { KvEventIngest } from '../src/index/kv-events.ts';
import { IngestPool } from '../src/host/ingest-pool.ts';
import { RecordRing } from '../src/host/record-ring.ts';
import { PrefixHasher } from '../src/hashing/prefix.ts';
import { ReplicaState, emptyOutcome } from '../src/index/replica-state.ts';
import { OP_STORE, RecordBuffer } from '../src/index/records.ts';
import { decodeKvEventBatch, decodeKvEventBatchGeneral, type KvEventBatch } from '../src/index/vllm-events.ts';
import { fmtInt, mdTable, rngFor, section, type BenchConfig } from './util.ts';

export interface IngestBenchResult {
  readonly blocksPerBatch: number;
  readonly bytesPerBlock: number;
  /** Median over passes of each pass's blocks per second, and every pass. */
  readonly inThread: { blocks: number; blocksPerS: number; passes: number[] };
  readonly pooled: {
    shards: number;
    blocks: number;
    blocksPerS: number;
    passes: number[];
    records: number;
    drains: number;
    /** Drain durations (event-loop pauses), every drain that applied records. */
    pauseP99Ms: number;
    pauseP999Ms: number;
    maxDrainPauseMs: number;
    stalenessP50Ms: number;
    stalenessP99Ms: number;
    stalenessMaxMs: number;
    stalenessSamples: number;
  };
  readonly match: { idleP50Ns: number; idleP99Ns: number; loadedP50Ns: number; loadedP99Ns: number; p99Ratio: number; idleSamples: number; loadedSamples: number };
  /** The longest apply while the index grew before the run (a block-table doubling), and its size then. */
  readonly indexGrowth: { longestApplyMs: number; atEntries: number };
  /** Single-thread cost of each stage, ns per block (apply and ring: per record, one record a block here). */
  readonly breakdown: { decodeFastNs: number; decodeMsgpackrNs: number; stateAndHashNs: number; hashNs: number; ringNs: number; applyNs: number };
}

const ENGINES = 16;
const EVENTS_PER_BATCH = 16;
const BLOCKS_PER_EVENT = 16;
const BLOCK_TOKENS = 16;
const VOCAB = 151_936;
const MATCH_BLOCKS = 512;
const MATCH_HOLDERS = 10;
/** Batches handed to the worker and not yet answered, at most (64k blocks). */
const IN_FLIGHT = 256;
/**
 * Decisions a second the routing loop makes (a busy proxy): each turn it catches up with this rate,
 * then sleeps until the next timer tick, as a proxy waiting for requests does. A loop that matched
 * flat out would take a whole core, which no proxy does and which would starve the worker of the
 * second core on a 2-core machine.
 */
const ROUTE_RATE_PER_S = 50_000;

interface Workload {
  /** Per engine, its batches in order. */
  batches: Uint8Array[][];
  blocksPerBatch: number;
  bytes: number;
}

/**
 * Every batch as a view into one SharedArrayBuffer: handed to the pool they are shared with the worker,
 * neither copied nor transferred, so this thread (the router) pays no copy and no garbage for feeding.
 */
function buildWorkload(batchesPerEngine: number): Workload {
  const rng = rngFor('ingest workload');
  const packr = new Packr({ useRecords: false, variableMapSize: true });
  const batches: Uint8Array[][] = [];
  let bytes = 0;
  let ts = 1_700_000_000;
  for (let e = 0; e < ENGINES; e++) {
    const mine: Uint8Array[] = [];
    let last: bigint | null = null;
    for (let b = 0; b < batchesPerEngine; b++) {
      const events: Map<string, unknown>[] = [];
      for (let k = 0; k < EVENTS_PER_BATCH; k++) {
        const hashes: bigint[] = [];
        for (let i = 0; i < BLOCKS_PER_EVENT; i++) hashes.push(rng.u64() | 1n); // u64 on the wire
        const tokens: number[] = [];
        for (let i = 0; i < BLOCKS_PER_EVENT * BLOCK_TOKENS; i++) tokens.push(rng.int(VOCAB));
        const parent = last !== null && rng.int(8) !== 0 ? last : null;
        events.push(
          new Map<string, unknown>([
            ['type', 'BlockStored'],
            ['block_hashes', hashes],
            ['parent_block_hash', parent],
            ['token_ids', tokens],
            ['block_size', BLOCK_TOKENS],
            ['lora_id', null],
            ['medium', 'GPU'],
            ['lora_name', null],
          ]),
        );
        last = hashes[hashes.length - 1];
      }
      const payload = packr.pack(
        new Map<string, unknown>([
          ['ts', (ts += 0.001)],
          ['events', events],
          ['data_parallel_rank', 0],
        ]),
      );
      // Own buffers for now (Packr returns views into one reused buffer).
      const own = new Uint8Array(payload);
      bytes += own.length;
      mine.push(own);
    }
    batches.push(mine);
  }
  const shared = new Uint8Array(new SharedArrayBuffer(bytes));
  let at = 0;
  const inShared = batches.map((mine) =>
    mine.map((p) => {
      shared.set(p, at);
      at += p.length;
      return shared.subarray(at - p.length, at);
    }),
  );
  return { batches: inShared, blocksPerBatch: EVENTS_PER_BATCH * BLOCKS_PER_EVENT, bytes };
}

function quantile(sorted: Float64Array, p: number): number {
  return sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
}

/** A prompt chain held by MATCH_HOLDERS replicas (slots beyond the workload's), as precise entries. */
function seedMatchChain(index: PrefixIndex, firstSlot: number): BigUint64Array {
  const rng = rngFor('ingest match chain');
  const chain = new BigUint64Array(MATCH_BLOCKS);
  for (let i = 0; i < MATCH_BLOCKS; i++) chain[i] = rng.u64();
  for (let r = 0; r < MATCH_HOLDERS; r++) index.store(firstSlot + r, chain);
  return chain;
}

/**
 * One turn of the routing thread: the decisions due since `startMs` at ROUTE_RATE_PER_S (at most 1,000
 * at once), each a bounded drain (as route() does) and then a timed match.
 */
function routeSlice(pool: IngestPool, index: PrefixIndex, chain: BigUint64Array, out: MatchResult, samples: number[], startMs: number, done: { n: number }): void {
  const due = Math.min(done.n + 1000, Math.floor(((performance.now() - startMs) * ROUTE_RATE_PER_S) / 1000));
  for (; done.n < due; done.n++) {
    pool.drain();
    const t0 = performance.now();
    index.match(chain, out);
    samples.push(performance.now() - t0);
  }
}

const tick = () => new Promise<void>((r) => setTimeout(r, 1));

const turn = () => new Promise<void>((r) => setImmediate(r));

/**
 * Grows the index's block table before the timed run, so the run sees a deployed router's steady state
 * rather than the one-off table doublings of an index filling up (each rehashes every entry on the
 * routing thread; their cost is reported apart). Fills a background replica with distinct blocks until
 * the table (it doubles when its blocks would pass 3/4 of its slots) has room for `incoming` more.
 * Returns the longest single apply seen (a doubling) and the entries at that moment.
 */
function presize(index: PrefixIndex, slot: number, incoming: number): { longestApplyMs: number; atEntries: number } {
  const chunk = 65_536;
  const recs = new Uint32Array(chunk * 4);
  let longestApplyMs = 0;
  let atEntries = 0;
  for (let c = 0; ; c++) {
    const st = index.stats();
    if (st.blocks + incoming <= 0.75 * st.slots) break;
    for (let i = 0; i < chunk; i++) recs.set([OP_STORE, slot, Math.imul(c * chunk + i + 1, 0x9e3779b1) >>> 0, 0xb0000000 | c], i * 4);
    const t = performance.now();
    index.apply(recs, chunk);
    const ms = performance.now() - t;
    if (ms > longestApplyMs) {
      longestApplyMs = ms;
      atEntries = st.entries;
    }
  }
  return { longestApplyMs, atEntries };
}

export async function runIngestBench(cfg: BenchConfig): Promise<{ result: IngestBenchResult; markdown: string }> {
  const kernels = loadKernelsSync().kernels;
  // --ci: 3 passes of 524,288 blocks in each mode (the group stays under ~15 s); full: 5 of 786,432.
  const batchesPerEngine = cfg.ci ? 32 : 64;
  const passes = cfg.ci ? 3 : 5;
  const groupsPerPass = cfg.ci ? 4 : 3;
  const groups = 1 + passes * groupsPerPass;
  const w = buildWorkload(batchesPerEngine);
  const baseBlocks = ENGINES * batchesPerEngine * w.blocksPerBatch;
  const bytesPerBlock = w.bytes / baseBlocks;
  const replicaCapacity = ENGINES * groups + MATCH_HOLDERS + 1;
  const ns = { model: 'llama-3-8b' };
  process.stderr.write(`bench: ingest: ${fmtInt(baseBlocks)} blocks a group, ${groups} groups\n`);

  // ---- single-thread breakdown (ns per block) ----
  const all = w.batches.flat();
  const limits = { blockSize: BLOCK_TOKENS };
  const bestNs = (reps: number, fn: () => void, per: number) => {
    let best = Infinity;
    for (let i = 0; i < reps; i++) {
      const t = performance.now();
      fn();
      best = Math.min(best, performance.now() - t);
    }
    return (best * 1e6) / per;
  };
  const sample = all.slice(0, Math.min(all.length, 256));
  const sampleBlocks = sample.length * w.blocksPerBatch;
  const decodeFastNs = bestNs(5, () => sample.forEach((p) => decodeKvEventBatch(p, limits)), sampleBlocks);
  const decodeMsgpackrNs = bestNs(3, () => sample.forEach((p) => decodeKvEventBatchGeneral(p, limits)), sampleBlocks);
  const decoded: KvEventBatch[] = sample.map((p) => {
    const d = decodeKvEventBatch(p, limits);
    if (!d.ok) throw new Error(`bench workload batch rejected: ${d.reason}`);
    return d.batch;
  });
  const hasher = new PrefixHasher(kernels, { blockSize: BLOCK_TOKENS });
  const records = new RecordBuffer(1 << 12);
  const applyState = (batches: KvEventBatch[]) => {
    const states = Array.from({ length: ENGINES }, (_, r) => new ReplicaState({ replica: r, hasher, namespace: ns }));
    batches.forEach((b, i) => {
      records.clear();
      states[Math.floor(i / batchesPerEngine) % ENGINES].applyBatch(b, 0, records, emptyOutcome());
    });
  };
  const stateAndHashNs = bestNs(3, () => applyState(decoded), sampleBlocks);
  const seed = hasher.namespaceSeed(ns);
  const hashOut = new BigUint64Array(BLOCKS_PER_EVENT);
  const hashNs = bestNs(5, () => decoded.forEach((b) => b.events.forEach((e) => e.kind === 'stored' && hasher.hashTokens(e.tokens, seed, hashOut))), sampleBlocks);
  decoded.length = 0; // garbage before the timed runs
  const ring = new RecordRing(1 << 16);
  const recs = new Uint32Array(4096 * 4);
  for (let i = 0; i < 4096; i++) recs.set([OP_STORE, i & 7, i * 2654435761, i], i * 4);
  const drained = new Uint32Array(4096 * 4);
  const ringNs = bestNs(5, () => {
    for (let i = 0; i < 64; i++) {
      ring.push(recs, 4096, 0);
      ring.drain(drained, 4096);
    }
  }, 64 * 4096);
  const applyIndex = new PrefixIndex(kernels, { replicaCapacity: 64, maxEntries: 1 << 22 });
  const applyRecs = new Uint32Array(4096 * 4);
  const applyNs = bestNs(1, () => {
    for (let chunk = 0; chunk < 256; chunk++) {
      for (let i = 0; i < 4096; i++) applyRecs.set([OP_STORE, i & 63, Math.imul(chunk * 4096 + i, 2654435761) >>> 0, chunk], i * 4);
      applyIndex.apply(applyRecs, 4096);
    }
  }, 256 * 4096);
  applyIndex.free();

  // Both modes: group 0 warms up (JIT, tables, worker); then `passes` timed passes of groupsPerPass
  // groups each (fresh replica slots every time), on an index pre-grown for all of them (presize).
  const bgSlot = replicaCapacity - 1;
  const maxEntries = 4 * (groups + 1) * baseBlocks;
  const passBlocks = groupsPerPass * baseBlocks;
  const groupsOf = (pass: number) => Array.from({ length: groupsPerPass }, (_, k) => 1 + pass * groupsPerPass + k);
  const order = (group: number, fn: (slot: number, payload: Uint8Array) => void) => {
    for (let b = 0; b < batchesPerEngine; b++) for (let e = 0; e < ENGINES; e++) fn(group * ENGINES + e, w.batches[e][b]);
  };
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

  // ---- in-thread reference: this thread decodes, hashes and applies everything, nothing else ----
  const inThreadPasses = await (async () => {
    // In a function of its own: its ingest state (every replica's tables) is garbage when it returns,
    // not something the pooled run's garbage collections must trace.
    const refIndex = new PrefixIndex(kernels, { replicaCapacity, maxEntries });
    presize(refIndex, bgSlot, groups * baseBlocks);
    const ref = new KvEventIngest(refIndex, { namespace: ns, blockSize: BLOCK_TOKENS });
    order(0, (slot, p) => ref.ingest(slot, p));
    const rates: number[] = [];
    for (let pass = 0; pass < passes; pass++) {
      const t0 = performance.now();
      for (const g of groupsOf(pass)) order(g, (slot, p) => ref.ingest(slot, p));
      rates.push(passBlocks / ((performance.now() - t0) / 1000));
    }
    await ref.close();
    refIndex.free();
    return rates;
  })();
  const inThread = { blocks: passes * passBlocks, blocksPerS: median(inThreadPasses), passes: inThreadPasses };
  (globalThis as { gc?: () => void }).gc?.();

  // ---- pooled ----
  const index = new PrefixIndex(kernels, { replicaCapacity, maxEntries });
  const growth = presize(index, bgSlot, groups * baseBlocks);
  const pool = new IngestPool(index, { namespace: ns, blockSize: BLOCK_TOKENS, shards: 1 });
  const chain = seedMatchChain(index, ENGINES * groups);
  const out = index.newMatchResult();
  const send = async (group: number) => {
    // Interleaved across engines, one batch per engine at a time: the order an event loop sees them.
    // At most IN_FLIGHT batches wait in the worker's queue; a turn of the event loop after every
    // 4 rounds, as batches arriving from the network would come.
    const pending: Promise<unknown>[] = [];
    for (let b = 0; b < batchesPerEngine; b++) {
      for (let e = 0; e < ENGINES; e++) pending.push(pool.ingest(group * ENGINES + e, w.batches[e][b]));
      if (pending.length >= IN_FLIGHT) await Promise.all(pending.splice(0, IN_FLIGHT / 2));
      if (b % 4 === 3) await turn();
    }
    await Promise.all(pending);
  };
  await send(0);
  await pool.settled();
  pool.drainStats(true);

  // Idle match p99: the same loop as under load (drain, then a timed match), nothing to drain.
  const idle: number[] = [];
  const idleStart = performance.now();
  const idleDone = { n: 0 };
  while (performance.now() < idleStart + (cfg.ci ? 1000 : 2000)) {
    routeSlice(pool, index, chain, out, idle, idleStart, idleDone);
    await tick();
  }
  const depthIdle = out.count;

  // Under ingest: each pass's groups go through the worker while this thread routes; a pass ends when
  // its last record is applied (settled: the worker has pushed everything and the ring is drained).
  const loaded: number[] = [];
  const pooledPasses: number[] = [];
  let feeding = true;
  const feeder = (async () => {
    for (let pass = 0; pass < passes; pass++) {
      const t0 = performance.now();
      for (const g of groupsOf(pass)) await send(g);
      await pool.settled();
      pooledPasses.push(passBlocks / ((performance.now() - t0) / 1000));
    }
    feeding = false;
  })();
  const loadedStart = performance.now();
  const loadedDone = { n: 0 };
  while (feeding) {
    routeSlice(pool, index, chain, out, loaded, loadedStart, loadedDone);
    await tick();
  }
  await feeder;
  const stats = pool.drainStats();
  await pool.close();
  const entries = index.stats().entries;
  index.free();
  const blocks = passes * passBlocks;

  const sortNs = (xs: number[]) => Float64Array.from(xs, (ms) => ms * 1e6).sort();
  const idleSorted = sortNs(idle);
  const loadedSorted = sortNs(loaded);
  const result: IngestBenchResult = {
    blocksPerBatch: w.blocksPerBatch,
    bytesPerBlock,
    inThread,
    pooled: {
      shards: pool.shardCount,
      blocks,
      blocksPerS: median(pooledPasses),
      passes: pooledPasses,
      records: stats.records,
      drains: stats.drains,
      pauseP99Ms: stats.pause.p99Ms,
      pauseP999Ms: stats.pause.p999Ms,
      maxDrainPauseMs: stats.maxPauseMs,
      stalenessP50Ms: stats.staleness.p50Ms,
      stalenessP99Ms: stats.staleness.p99Ms,
      stalenessMaxMs: stats.staleness.maxMs,
      stalenessSamples: stats.staleness.samples,
    },
    match: {
      idleP50Ns: quantile(idleSorted, 0.5),
      idleP99Ns: quantile(idleSorted, 0.99),
      loadedP50Ns: quantile(loadedSorted, 0.5),
      loadedP99Ns: quantile(loadedSorted, 0.99),
      p99Ratio: quantile(loadedSorted, 0.99) / quantile(idleSorted, 0.99),
      idleSamples: idle.length,
      loadedSamples: loaded.length,
    },
    indexGrowth: growth,
    breakdown: { decodeFastNs, decodeMsgpackrNs, stateAndHashNs, hashNs, ringNs, applyNs },
  };

  const f1 = (x: number) => x.toFixed(1);
  const f2 = (x: number) => x.toFixed(2);
  const us = (ns: number) => `${(ns / 1000).toFixed(2)} µs`;
  const rates = (xs: number[]) => xs.map((x) => fmtInt(Math.round(x / 1000))).join(', ');
  let md = section('KV event ingest (group ingest)');
  md += `\n${ENGINES} engines × batches of ${EVENTS_PER_BATCH} BlockStored events × ${BLOCKS_PER_EVENT} blocks of ${BLOCK_TOKENS} tokens (map encoding, u64 engine hashes, ${f1(bytesPerBlock)} bytes a block); `;
  md += `${passes} timed passes of ${fmtInt(passBlocks)} blocks per mode; index ${fmtInt(entries)} entries at the end. Match: ${MATCH_BLOCKS}-block prompt held by ${depthIdle} replicas.\n\n`;
  md += mdTable(
    ['', 'figure'],
    [
      ['pooled (1 worker), end to end incl. drain + apply, median of passes', `**${fmtInt(Math.round(result.pooled.blocksPerS))} blocks/s** (passes: ${rates(pooledPasses)} thousand)`],
      ['in-thread (reference: this thread does everything, nothing else)', `${fmtInt(Math.round(inThread.blocksPerS))} blocks/s (passes: ${rates(inThreadPasses)} thousand)`],
      ['staleness, ring → applied: p50 / p99 / max', `${f2(result.pooled.stalenessP50Ms)} / ${f2(result.pooled.stalenessP99Ms)} / ${f2(result.pooled.stalenessMaxMs)} ms (${fmtInt(result.pooled.stalenessSamples)} batches)`],
      ['drain duration (event-loop pause): p99 / p99.9 / max', `${f2(result.pooled.pauseP99Ms)} / ${f2(result.pooled.pauseP999Ms)} / ${f2(result.pooled.maxDrainPauseMs)} ms (${fmtInt(result.pooled.drains)} drains, ${fmtInt(result.pooled.records)} records)`],
      ['match p50 / p99, idle', `${us(result.match.idleP50Ns)} / ${us(result.match.idleP99Ns)} (${fmtInt(idle.length)} samples)`],
      ['match p50 / p99, under ingest (between drains)', `${us(result.match.loadedP50Ns)} / ${us(result.match.loadedP99Ns)} (${fmtInt(loaded.length)} samples)`],
      ['match p99 under ingest ÷ idle', `${f2(result.match.p99Ratio)}×`],
      ['(before the run) longest apply while the index grew: a table doubling', `${f2(growth.longestApplyMs)} ms at ${fmtInt(growth.atEntries)} entries`],
    ],
    ['l', 'r'],
  );
  md += '\nWhere a block\'s time goes, one thread, ns per block (records: one per block here):\n\n';
  md += mdTable(
    ['stage', 'ns/block'],
    [
      ['decode, fast path (byte-level)', f1(decodeFastNs)],
      ['decode, msgpackr + validation (the general path)', f1(decodeMsgpackrNs)],
      ['engine-hash map + block hashing (ReplicaState.applyBatch)', f1(stateAndHashNs)],
      ['  of which block hashing (wasm XXH64 chain)', f1(hashNs)],
      ['ring push + drain (per record)', f1(ringNs)],
      ['index apply (per STORE record, wasm)', f1(applyNs)],
    ],
    ['l', 'r'],
  );
  return { result, markdown: md + '\n' };
}
