/**
 * Action streams (fast-check commands, pinned seed) against KvEventIngest + PrefixIndex (js backend, no
 * eviction), compared after every step with the reference model (test/helpers/index-model.ts) built from
 * the complete ordered log.
 *
 * The world: replica 0 with two data-parallel ranks, replicas 1 and 2 with one (replica 2 in another
 * tenant, so it never shares credit). Each rank is a toy engine (test/helpers/engine-sim.ts) with a
 * publisher and vLLM's replay buffer. Transport faults: a dropped batch (gap), a held batch delivered
 * after the next one (reorder), a batch delivered again (duplicate). Engine faults: an announced restart
 * of the replica (restart()), a silent publisher restart (seqs from 0 again). Router actions: speculative
 * inserts, clock advances past the speculative TTL, and matches.
 *
 * The log the model sees is the one the router can know: a batch enters it when a later (or the same)
 * batch of its stream is delivered — the router then has everything up to it, replayed if need be — in
 * seq order. A silent restart's wipe enters with the new incarnation's first batch. So after every step
 * (replays settled) the index must equal the model exactly.
 *
 * Not generated here (each has its unit test): lost replays, holes, a silent restart whose first
 * batches are all lost (indistinguishable from an ordinary gap when their count lines up).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import { Registry } from 'prom-client';
import { FakeClock } from '../../src/clock.ts';
import { createRng } from '../../src/rng.ts';
import { jsBackend } from '../../src/kernels/js/index.ts';
import { PrefixIndex } from '../../src/index/prefix-index.ts';
import { KvEventIngest } from '../../src/index/kv-events.ts';
import { ManualTimers } from '../helpers/fake-timers.ts';
import { EngineSim } from '../helpers/engine-sim.ts';
import { IndexModel, loadModelHasher } from '../helpers/index-model.ts';
import { MemoryPublisher, encodeBatch, type EventSpec } from '../helpers/vllm-frames.ts';
import type { ReplayFrame } from '../../src/index/sequencer.ts';

await loadModelHasher();

const FC = { seed: 20260611, numRuns: 100 };
const BS = 4;
const TTL_MS = 1000;
const NAMESPACES = [{ model: 'm' }, { model: 'm' }, { model: 'm', tenant: 'other' }];
const STREAMS: [replica: number, rank: number][] = [
  [0, 0],
  [0, 1],
  [1, 0],
  [2, 0],
];

interface StreamSim {
  replica: number;
  rank: number;
  engine: EngineSim;
  pub: MemoryPublisher;
  /** Published, not yet known to the router (and so not in the model), by seq. */
  unseen: { seq: number; events: EventSpec[]; wipeFirst: boolean }[];
  delivered: ReplayFrame[];
  dropNext: boolean;
  holdNext: boolean;
  held: ReplayFrame | null;
  /** The router has seen a frame of this stream since its last announced restart. */
  routerSaw: boolean;
  /** A silent restart happened; its first frame must reach the router (see the header). */
  mustDeliver: boolean;
  wipeOnNext: boolean;
}

class World {
  readonly clock = new FakeClock(5_000_000);
  readonly timers = new ManualTimers(this.clock);
  readonly index = new PrefixIndex(jsBackend, { maxEntries: 1 << 22, replicaCapacity: 4, clock: this.clock, speculativeTtlMs: TTL_MS });
  readonly model = new IndexModel(BS, TTL_MS, (r) => NAMESPACES[r]);
  readonly registry = new Registry();
  readonly streams: StreamSim[];
  readonly ingest: KvEventIngest;
  readonly rng;
  ts = 1_700_000_000;
  steps = 0;

  constructor(seed: number) {
    this.rng = createRng(seed);
    this.streams = STREAMS.map(([replica, rank]) => ({
      replica,
      rank,
      engine: new EngineSim(createRng(seed * 31 + replica * 7 + rank), BS),
      pub: new MemoryPublisher(),
      unseen: [],
      delivered: [],
      dropNext: false,
      holdNext: false,
      held: null,
      routerSaw: false,
      mustDeliver: false,
      wipeOnNext: false,
    }));
    this.ingest = new KvEventIngest(this.index, {
      namespace: (r) => NAMESPACES[r],
      blockSize: BS,
      clock: this.clock,
      timers: this.timers,
      registry: this.registry,
      replaySource: (replica, rank) => this.streams.find((s) => s.replica === replica && s.rank === rank)!.pub,
    });
  }

  now(): number {
    return Math.floor(this.clock.nowMs());
  }

  publish(s: StreamSim, events: EventSpec[], encoding: 'array' | 'map'): void {
    const f = s.pub.publish(encodeBatch((this.ts += 0.001), events, encoding, s.rank));
    s.unseen.push({ seq: f.seq, events, wipeFirst: s.wipeOnNext });
    s.wipeOnNext = false;
    if (s.mustDeliver) {
      s.mustDeliver = false;
      this.deliver(s, f);
    } else if (s.dropNext) {
      s.dropNext = false;
    } else if (s.holdNext && s.held === null) {
      s.holdNext = false;
      s.held = f;
    } else {
      this.deliver(s, f);
    }
  }

  deliver(s: StreamSim, f: ReplayFrame): void {
    this.ingest.ingest(s.replica, f.payload, { seq: f.seq, dpRank: s.rank });
    s.delivered.push(f);
    s.routerSaw = true;
    // Everything up to this seq is now known to the router, in order.
    const now = this.now();
    for (const u of s.unseen.filter((x) => x.seq <= f.seq)) {
      if (u.wipeFirst) this.model.wipeRank(s.replica, s.rank, now);
      this.model.batch(s.replica, s.rank, u.events, now);
    }
    s.unseen = s.unseen.filter((x) => x.seq > f.seq);
    if (s.held && s.held !== f) {
      const h = s.held;
      s.held = null;
      this.deliver(s, h);
    }
  }

  /** The replica's engines restart and the orchestrator says so. */
  restart(replica: number): void {
    for (const s of this.streams.filter((x) => x.replica === replica)) {
      s.engine.restart();
      s.pub.restart();
      Object.assign(s, { unseen: [], delivered: [], held: null, dropNext: false, holdNext: false, routerSaw: false, mustDeliver: false, wipeOnNext: false });
    }
    this.ingest.restart(replica);
    this.model.restart(replica);
  }

  /** One rank's engine restarts and nobody says so: its seqs start from 0 again. */
  silentRestart(s: StreamSim): void {
    s.engine.restart();
    s.pub.restart();
    Object.assign(s, { unseen: [], delivered: [], held: null, dropNext: false, holdNext: false });
    if (s.routerSaw) {
      s.mustDeliver = true;
      s.wipeOnNext = true;
    }
  }

  /** A prompt: a cached chain of some engine of the replica, or random tokens. */
  promptHashes(replica: number, pick: number): bigint[] {
    const blocks = this.streams.filter((s) => s.replica === replica).flatMap((s) => s.engine.blocks);
    const ns = NAMESPACES[replica];
    if (blocks.length === 0 || pick % 4 === 0) {
      const tokens = Array.from({ length: BS * (1 + (pick % 5)) }, () => this.rng.int(2));
      return this.model.chain(tokens, this.model.nsSeed(ns.model, '', ns.tenant ?? ''));
    }
    const p = this.streams[0].engine.promptTo(blocks[pick % blocks.length]);
    return this.model.chain(p.tokens, this.model.nsSeed(ns.model, p.lora, ns.tenant ?? ''));
  }

  async check(what: string): Promise<void> {
    await this.ingest.settled();
    this.steps++;
    const now = this.now();
    const got = this.index.dump();
    const want = this.model.dump(now);
    if (JSON.stringify(got, big) !== JSON.stringify(want, big)) {
      throw new Error(`after ${what} (step ${this.steps}): index ≠ model\n index ${JSON.stringify(got, big)}\n model ${JSON.stringify(want, big)}`);
    }
    assert.is(this.model.orphans, 0, 'the engine simulator never names an unknown parent');
  }
}

const big = (_: string, v: unknown) => (typeof v === 'bigint' ? v.toString(16) : v);

type Cmd = fc.AsyncCommand<object, World>;

class Publish implements Cmd {
  constructor(
    readonly stream: number,
    readonly kind: 'store' | 'remove' | 'clear',
    readonly encoding: 'array' | 'map',
  ) {}
  check = () => true;
  async run(_: object, w: World) {
    const s = w.streams[this.stream];
    const e = this.kind === 'clear' ? s.engine.clear() : this.kind === 'remove' ? (s.engine.remove() ?? s.engine.store()) : s.engine.store();
    // Sometimes two events in one batch.
    const events: EventSpec[] = [e];
    if (w.rng.int(4) === 0) events.push(s.engine.store());
    w.publish(s, events, this.encoding);
    await w.check(this.toString());
  }
  toString = () => `publish(${this.stream}, ${this.kind}, ${this.encoding})`;
}

class Fault implements Cmd {
  constructor(
    readonly stream: number,
    readonly fault: 'gap' | 'reorder' | 'duplicate' | 'silent-restart',
    readonly pick: number,
  ) {}
  check = () => true;
  async run(_: object, w: World) {
    const s = w.streams[this.stream];
    if (this.fault === 'gap') s.dropNext = true;
    else if (this.fault === 'reorder') s.holdNext = true;
    else if (this.fault === 'silent-restart') w.silentRestart(s);
    else if (s.delivered.length > 0) w.ingest.ingest(s.replica, s.delivered[this.pick % s.delivered.length].payload, { seq: s.delivered[this.pick % s.delivered.length].seq, dpRank: s.rank });
    await w.check(this.toString());
  }
  toString = () => `${this.fault}(${this.stream}, ${this.pick})`;
}

class Restart implements Cmd {
  constructor(readonly replica: number) {}
  check = () => true;
  async run(_: object, w: World) {
    const prompts = [1, 2, 3, 5, 6].map((p) => w.promptHashes(this.replica, p));
    w.restart(this.replica);
    await w.check(this.toString());
    // An engine restart leaves the replica without credit until new events arrive.
    const m = w.index.newMatchResult();
    for (const h of prompts) assert.is(w.index.match(BigUint64Array.from(h), m).depthOf(this.replica), 0);
  }
  toString = () => `restart(${this.replica})`;
}

class Speculate implements Cmd {
  constructor(
    readonly replica: number,
    readonly pick: number,
  ) {}
  check = () => true;
  async run(_: object, w: World) {
    const hashes = w.promptHashes(this.replica, this.pick);
    w.index.speculate(this.replica, hashes);
    w.model.speculate(this.replica, hashes, w.now());
    await w.check(this.toString());
  }
  toString = () => `speculate(${this.replica}, ${this.pick})`;
}

class Advance implements Cmd {
  constructor(readonly ms: number) {}
  check = () => true;
  async run(_: object, w: World) {
    w.timers.advance(this.ms);
    await w.check(this.toString());
  }
  toString = () => `advance(${this.ms})`;
}

class Match implements Cmd {
  constructor(
    readonly replica: number,
    readonly pick: number,
  ) {}
  check = () => true;
  async run(_: object, w: World) {
    const hashes = w.promptHashes(this.replica, this.pick);
    const m = w.index.match(BigUint64Array.from(hashes), w.index.newMatchResult());
    const got = new Map<number, number[]>();
    for (let i = 0; i < m.count; i++) got.set(m.replica(i), [m.depth(i), m.gpu(i), m.cpu(i), m.disk(i)]);
    const want = new Map([...w.model.match(hashes, w.now())].map(([r, x]) => [r, [x.depth, x.gpu, x.cpu, x.disk]]));
    assert.equal(new Map([...got].sort()), new Map([...want].sort()), this.toString());
    await w.check(this.toString());
  }
  toString = () => `match(${this.replica}, ${this.pick})`;
}

const stream = fc.integer({ min: 0, max: STREAMS.length - 1 });
const replica = fc.integer({ min: 0, max: 2 });
const pick = fc.nat({ max: 1000 });
const encoding = fc.constantFrom<'array' | 'map'>('array', 'map');
const commands = fc.commands(
  [
    fc.tuple(stream, encoding).map(([s, e]) => new Publish(s, 'store', e)),
    fc.tuple(stream, encoding).map(([s, e]) => new Publish(s, 'store', e)),
    fc.tuple(stream, encoding).map(([s, e]) => new Publish(s, 'store', e)),
    fc.tuple(stream, encoding).map(([s, e]) => new Publish(s, 'remove', e)),
    fc.tuple(stream, encoding).map(([s, e]) => new Publish(s, 'remove', e)),
    fc.tuple(stream, encoding).map(([s, e]) => new Publish(s, 'clear', e)),
    fc.tuple(stream, fc.constantFrom('gap', 'reorder', 'duplicate', 'silent-restart') as fc.Arbitrary<Fault['fault']>, pick).map(([s, f, p]) => new Fault(s, f, p)),
    fc.tuple(stream, fc.constantFrom('gap', 'reorder', 'duplicate') as fc.Arbitrary<Fault['fault']>, pick).map(([s, f, p]) => new Fault(s, f, p)),
    replica.map((r) => new Restart(r)),
    fc.tuple(replica, pick).map(([r, p]) => new Speculate(r, p)),
    fc.tuple(replica, pick).map(([r, p]) => new Speculate(r, p)),
    fc.integer({ min: 0, max: 1500 }).map((ms) => new Advance(ms)),
    fc.tuple(replica, pick).map(([r, p]) => new Match(r, p)),
  ],
  { maxCommands: 120, size: 'max' },
);

const COUNTED: [string, Record<string, string>][] = [
  ['kv_batches_applied_total', {}],
  ['kv_gaps_total', {}],
  ['kv_replays_total', { outcome: 'ok' }],
  ['kv_duplicates_total', {}],
  ['kv_resyncs_total', { cause: 'publisher_restart' }],
  ['kv_resyncs_total', { cause: 'restart' }],
];

test('index after every action equals the reference model built from the complete ordered log', async () => {
  let steps = 0;
  const totals = new Map<string, number>();
  await fc.assert(
    fc.asyncProperty(fc.nat(), commands, async (seed, cmds) => {
      const w = new World(seed);
      try {
        await fc.asyncModelRun(() => ({ model: {}, real: w }), cmds);
      } finally {
        steps += w.steps;
        await w.ingest.close();
        for (const [name, labels] of COUNTED) {
          const m = (await w.registry.getSingleMetric(`dystro_${name}`)!.get()).values;
          const v = m.filter((x) => Object.entries(labels).every(([k, val]) => x.labels[k] === val)).reduce((a, x) => a + x.value, 0);
          const key = `${name.replace(/^kv_|_total$/g, '')}${Object.values(labels).map((l) => `:${l}`).join('')}`;
          totals.set(key, (totals.get(key) ?? 0) + v);
        }
      }
    }),
    FC,
  );
  console.log(`  ${FC.numRuns} action streams, ${steps} steps compared; ${[...totals].map(([k, v]) => `${k} ${v}`).join(', ')}`);
});

test.run();
