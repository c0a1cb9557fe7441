/**
 * Pooled KV event ingest (DESIGN §2): decoding, ordering and hashing of vLLM KV events run in worker
 * threads; the routing thread only applies compact index records, in bounded batches, between
 * decisions.
 *
 *   engines ─ ZMQ ─▶ shard worker (KvEventIngest → RingSink) ─ SharedArrayBuffer ring ─▶ drain() ─▶ PrefixIndex
 *
 * Shards. `shards` piscina instances of exactly one thread each (minThreads = maxThreads = 1), so one
 * thread handles all of a replica's batches, in order; replica slot s belongs to shard s mod shards.
 * Each shard has its own ring (single producer, single consumer) and its own worker state: engine-hash
 * maps, sequencers, ZeroMQ sockets, kernels. The default is one shard: on a 2-core machine that leaves
 * one core for the routing thread.
 *
 * Applying. `drain(index, maxRecords)` copies up to maxRecords records out of the rings and applies
 * them; the router calls it at the start of every route() (bounded, so a decision never waits for a
 * backlog), and a self-driven drain loop applies records when no request comes: every
 * `drainIntervalMs` it drains slices of `timerSliceRecords`, yielding to the event loop between slices
 * (setImmediate) while records remain.
 *
 * Staleness bound (how late a record is applied): a record becomes visible in its ring when its batch has
 * been processed; it is applied by the first drain after that which reaches it. With the loop alone:
 *   staleness ≤ drainIntervalMs + event-loop delay + ⌈backlog / timerSliceRecords⌉ · (slice time + turn)
 * where the backlog ahead of it is at most the ring's capacity (the producer waits, then spills, when it
 * is full). While the routing thread keeps up (applying is ~0.1–0.3 µs a record, so one core applies
 * several million records a second) the backlog stays small and the bound is about one interval plus
 * the event-loop delay; README "Event ingest" has the measured p50/p99.
 *
 * Longest pause: one drain applies at most maxRecords (route path, default 1,024) or timerSliceRecords
 * (loop, default 2,048) records, so one apply holds the event loop for at most that many records times
 * the per-record apply cost (~0.15–0.2 µs in wasm: ~0.2 ms on the route path, ~0.4 ms in the loop).
 * Two things sit outside that bound: a doubling of the index's block table while it fills up (a rehash
 * of every entry, tens of ms at millions of entries, once per doubling) and the thread being preempted.
 * bench/ingest.ts reports the drain-duration p99 / p99.9 / max and the longest doubling.
 *
 * Restart and unsubscribe. The slot's index entries are cleared at once on the routing thread, but the
 * ring may still hold records the worker produced for the old incarnation. So the slot is fenced: its
 * records are dropped until the worker's fence marker (OP_FENCE, pushed after it has forgotten the
 * replica) comes out of the ring. A reused slot never inherits stale entries, subscriptions or maps.
 *
 * Replica states ('synced', 'replaying', 'unknown') are bytes in shared memory written by the workers,
 * so replicaState() is synchronous; listeners hear changes at the next drain.
 */
import { MessageChannel } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import { AggregatorRegistry, Counter, Gauge, Histogram, type MetricObjectWithValues, type MetricValue, type Registry } from 'prom-client';
import { DystroError, fail } from '../errors.js';
import { checkInteger } from '../hashing/validate.js';
import { describeIngestMetrics, registerIndexGauges, type IngestOptions, type IngestResult, type KvEventIngestOptions, type ReplicaIndexState, type SubscribeOptions } from '../index/kv-events.js';
import type { PrefixIndex } from '../index/prefix-index.js';
import type { ReplicaNamespace } from '../index/replica-state.js';
import { OP_CLEAR, RECORD_WORDS } from '../index/records.js';
import type { BackendChoice } from '../kernels/select.js';
import type { AttachableIngest } from '../router/router.js';
import { RecordRing } from './record-ring.js';
import { OP_FENCE, STATE_NAMES, StampLog, nowMs, type IngestItem, type WorkerData, type WorkerError, type WorkerEvent, type WorkerTask } from './ingest-shared.js';

export interface IngestPoolOptions {
  /** The namespace (model, tenant) of each replica: one for all, or per slot (resolved on this thread). */
  namespace: KvEventIngestOptions['namespace'];
  blockSize?: number;
  limits?: KvEventIngestOptions['limits'];
  maxEntriesPerReplica?: number;
  /** LoRA adapter names by the deprecated lora_id (a plain object: a function cannot reach the workers). */
  loraNames?: Record<number, string>;
  replay?: KvEventIngestOptions['replay'];
  /** Worker threads (default 1); replica slot s goes to shard s mod shards. */
  shards?: number;
  /** Records each shard's ring holds (default 65,536: 1 MiB). */
  ringRecords?: number;
  /** Records one drain() applies at most when no bound is given (default 1,024: the route path). */
  drainMaxRecords?: number;
  /** Period of the self-driven drain loop (ms, default 1); false: no loop, the caller drains. */
  drainIntervalMs?: number | false;
  /** Records one slice of the drain loop applies at most (default 2,048). */
  timerSliceRecords?: number;
  /** Longest a worker waits for ring space before spilling to its own memory (ms, default 20). */
  ringWaitMs?: number;
  /** Spilled records per worker beyond which it waits for space however long (default 4,194,304: 64 MiB). */
  maxSpillRecords?: number;
  /** Kernel backend of the workers (default auto, or DYSTRO_BACKEND). */
  backend?: BackendChoice;
  /** Metrics: the workers' ingest metrics (aggregated on scrape) and the pool's own. */
  registry?: Registry;
  metricsPrefix?: string;
  /** A worker's subscriber or apply error, or a worker failure (replica −1). */
  onError?: (replica: number, err: DystroError | Error) => void;
}

export interface DrainQuantiles {
  samples: number;
  p50Ms: number;
  p99Ms: number;
  p999Ms: number;
  maxMs: number;
}

export interface DrainStats {
  records: number;
  drains: number;
  maxPauseMs: number;
  pause: DrainQuantiles;
  staleness: DrainQuantiles;
}

interface Shard {
  id: number;
  pool: Piscina<WorkerTask, unknown>;
  ring: RecordRing;
  stamps: StampLog;
  /** Coalesced ingest() calls, sent as one task at the next turn of the event loop. */
  pending: IngestItem[];
  transfer: ArrayBuffer[];
  waiting: { resolve: (r: IngestResult) => void; reject: (e: unknown) => void }[];
  flushScheduled: boolean;
  lastStateChanges: number;
}

/** Staleness samples kept for quantiles (the newest this many). */
const STALENESS_SAMPLES = 1 << 16;
/** ingest() calls coalesced into one task at most. */
const MAX_ITEMS_PER_TASK = 512;
/** Tasks a worker may hold queued (they run in order; see ingest-worker.ts). */
const TASKS_IN_WORKER = 64;

const WORKER_FILE = fileURLToPath(new URL(`./ingest-worker${import.meta.url.endsWith('.ts') ? '.ts' : '.js'}`, import.meta.url));

export class IngestPool implements AttachableIngest {
  readonly index: PrefixIndex;
  readonly shardCount: number;
  readonly drainMaxRecords: number;
  private readonly options: IngestPoolOptions;
  private readonly shards: Shard[];
  private readonly states: Uint8Array;
  private readonly stateChanges: Int32Array;
  /** Last state each slot was reported in (listeners hear differences). */
  private readonly reportedStates: Uint8Array;
  private readonly stateListeners = new Set<(replica: number, state: ReplicaIndexState) => void>();
  /** Namespace already sent to the slot's worker. */
  private readonly nsSent: Uint8Array;
  /** Outstanding fences per slot, and their total (0: the drain applies without looking at records). */
  private readonly fences: Int32Array;
  private fenced = 0;
  private scratch: Uint32Array;
  private readonly filtered: Uint32Array;
  private nextShard = 0;
  private closed = false;
  private loopTimer: ReturnType<typeof setTimeout> | null = null;
  private loopImmediate: ReturnType<typeof setImmediate> | null = null;
  private readonly timerSliceRecords: number;
  private readonly drainIntervalMs: number | false;
  private readonly events: MessageChannel[] = [];
  private metricsCache: { at: number; registry: Promise<Registry> } | null = null;
  private readonly own?: { staleness: Histogram; pause: Histogram; applied: Counter };
  // Figures for benchmarks and diagnostics (drainStats()).
  private appliedRecords = 0;
  private drains = 0;
  private maxPauseMs = 0;
  private readonly staleMs = new Float64Array(STALENESS_SAMPLES);
  private staleCount = 0;
  private readonly pauseMs = new Float64Array(STALENESS_SAMPLES);
  private pauseCount = 0;

  constructor(index: PrefixIndex, options: IngestPoolOptions) {
    if (index === null || typeof index !== 'object' || typeof (index as PrefixIndex).apply !== 'function') fail('DYSTRO_ERR_INVALID_CONFIG', 'index', 'a PrefixIndex', index);
    if (options === null || typeof options !== 'object') fail('DYSTRO_ERR_INVALID_CONFIG', 'options', 'an object with a namespace', options);
    const ns = options.namespace;
    if (typeof ns !== 'function' && (ns === null || typeof ns !== 'object' || typeof ns.model !== 'string')) {
      fail('DYSTRO_ERR_INVALID_CONFIG', 'options.namespace', 'a { model, tenant? } or a function of the replica slot returning one', ns);
    }
    this.index = index;
    this.options = options;
    this.shardCount = checkInteger(options.shards ?? 1, 'options.shards', 1, 64, 'DYSTRO_ERR_INVALID_CONFIG');
    const ringRecords = checkInteger(options.ringRecords ?? 65_536, 'options.ringRecords', 16, 1 << 26, 'DYSTRO_ERR_INVALID_CONFIG');
    this.drainMaxRecords = checkInteger(options.drainMaxRecords ?? 1024, 'options.drainMaxRecords', 1, 1 << 24, 'DYSTRO_ERR_INVALID_CONFIG');
    this.timerSliceRecords = checkInteger(options.timerSliceRecords ?? 2048, 'options.timerSliceRecords', 1, 1 << 24, 'DYSTRO_ERR_INVALID_CONFIG');
    const interval = options.drainIntervalMs ?? 1;
    this.drainIntervalMs = interval === false ? false : checkInteger(interval, 'options.drainIntervalMs', 0, 60_000, 'DYSTRO_ERR_INVALID_CONFIG');
    const capacity = index.replicaCapacity;
    const prefix = options.metricsPrefix ?? 'dystro_';
    const states = new SharedArrayBuffer(capacity);
    const stateChanges = new SharedArrayBuffer(4 * this.shardCount);
    this.states = new Uint8Array(states);
    this.stateChanges = new Int32Array(stateChanges);
    this.reportedStates = new Uint8Array(capacity);
    this.nsSent = new Uint8Array(capacity);
    this.fences = new Int32Array(capacity);
    this.scratch = new Uint32Array(Math.max(this.drainMaxRecords, this.timerSliceRecords) * RECORD_WORDS);
    this.filtered = new Uint32Array(this.scratch.length);
    this.shards = [];
    for (let id = 0; id < this.shardCount; id++) {
      const ring = new RecordRing(ringRecords);
      const stamps = new StampLog();
      const workerData: WorkerData = {
        shard: id,
        replicaCapacity: capacity,
        ring: ring.buffer,
        stamps: stamps.buffer,
        states,
        stateChanges,
        config: {
          blockSize: options.blockSize,
          limits: options.limits,
          maxEntriesPerReplica: options.maxEntriesPerReplica,
          loraNames: options.loraNames,
          replay: options.replay,
          metricsPrefix: prefix,
          backend: options.backend,
          ringWaitMs: checkInteger(options.ringWaitMs ?? 20, 'options.ringWaitMs', 0, 60_000, 'DYSTRO_ERR_INVALID_CONFIG'),
          maxSpillRecords: checkInteger(options.maxSpillRecords ?? 1 << 22, 'options.maxSpillRecords', 0, 2 ** 31, 'DYSTRO_ERR_INVALID_CONFIG'),
        },
      };
      // atomics 'disabled': an idle worker waits on its message port, not in Atomics.wait, so its event
      // loop keeps serving ZeroMQ sockets and replay timers between tasks.
      // concurrentTasksPerWorker: tasks are queued in the worker itself rather than handed over one at a
      // time when this thread's event loop comes round (a busy routing thread would starve the worker).
      const pool = new Piscina<WorkerTask, unknown>({
        filename: WORKER_FILE,
        minThreads: 1,
        maxThreads: 1,
        idleTimeout: Infinity,
        atomics: 'disabled',
        concurrentTasksPerWorker: TASKS_IN_WORKER,
        workerData,
        name: 'default',
      });
      pool.on('error', (err: unknown) => options.onError?.(-1, err instanceof Error ? err : new Error(String(err))));
      const channel = new MessageChannel();
      channel.port1.on('message', (e: WorkerEvent) => this.onWorkerEvent(e));
      channel.port1.unref();
      this.events.push(channel);
      void pool.run({ op: 'init', port: channel.port2 }, { transferList: [channel.port2] });
      this.shards.push({ id, pool, ring, stamps, pending: [], transfer: [], waiting: [], flushScheduled: false, lastStateChanges: 0 });
    }
    if (options.registry) this.own = this.registerMetrics(options.registry, prefix);
    this.schedule(this.drainIntervalMs === false ? false : this.drainIntervalMs);
  }

  // ---------------------------------------------------------------- the KvEventIngest API

  /**
   * One batch received some other way than `subscribe` (see KvEventIngest.ingest). Calls made in one
   * turn of the event loop travel to their worker as one task. The payload's ArrayBuffer is transferred
   * (detached here) when the payload spans it exactly; a payload in a SharedArrayBuffer is shared as is
   * (leave those bytes alone until the promise settles); otherwise the bytes are copied. Without a
   * subscription there is no replay source: a gap in seqs leaves the stream 'unknown' until it recovers.
   */
  ingest(replica: number, payload: Uint8Array, opts: IngestOptions = {}): Promise<IngestResult> {
    this.checkOpen();
    this.checkReplica(replica);
    if (!(payload instanceof Uint8Array)) fail('DYSTRO_ERR_INVALID_ARGUMENT', 'payload', 'a Uint8Array', payload);
    const shard = this.shardOf(replica);
    let bytes = payload;
    const shared = payload.buffer instanceof SharedArrayBuffer;
    if (!shared && (payload.byteOffset !== 0 || payload.byteLength !== payload.buffer.byteLength)) bytes = new Uint8Array(payload); // a copy (Buffer#slice would be a view)
    const item: IngestItem = { replica, payload: bytes, seq: opts.seq, dpRank: opts.dpRank };
    if (this.nsSent[replica] === 0) {
      item.ns = this.namespaceOf(replica);
      this.nsSent[replica] = 1;
    }
    shard.pending.push(item);
    if (!shared) shard.transfer.push(bytes.buffer as ArrayBuffer);
    const done = new Promise<IngestResult>((resolve, reject) => shard.waiting.push({ resolve, reject }));
    if (shard.pending.length >= MAX_ITEMS_PER_TASK) this.flushIngest(shard);
    else if (!shard.flushScheduled) {
      shard.flushScheduled = true;
      setImmediate(() => this.flushIngest(shard));
    }
    return done;
  }

  /** Subscribes one data-parallel rank of a replica over ZeroMQ, in the replica's worker. */
  async subscribe(replica: number, options: SubscribeOptions): Promise<void> {
    this.checkOpen();
    this.checkReplica(replica);
    if (options === null || typeof options !== 'object' || typeof options.endpoint !== 'string' || options.endpoint.length === 0) {
      fail('DYSTRO_ERR_INVALID_CONFIG', 'options.endpoint', 'a ZeroMQ endpoint such as tcp://host:5557', options?.endpoint);
    }
    this.nsSent[replica] = 1;
    await this.run(replica, { op: 'subscribe', replica, ns: this.namespaceOf(replica), options: { ...options } });
  }

  /**
   * Stops the replica's subscriptions and forgets what it held: its index entries are cleared now, and
   * records still in flight for it are dropped (fenced) until the worker confirms.
   */
  async unsubscribe(replica: number): Promise<void> {
    this.checkReplica(replica);
    if (this.closed) return;
    this.fence(replica);
    this.nsSent[replica] = 0;
    await this.run(replica, { op: 'unsubscribe', replica });
  }

  /** A new incarnation of the replica (its engine restarted): see KvEventIngest.restart. */
  async restart(replica: number): Promise<void> {
    this.checkOpen();
    this.checkReplica(replica);
    this.fence(replica);
    this.nsSent[replica] = 1;
    await this.run(replica, { op: 'restart', replica, ns: this.namespaceOf(replica) });
  }

  /** Changes a replica's namespace (a restart). */
  async setNamespace(replica: number, ns: ReplicaNamespace): Promise<void> {
    this.checkOpen();
    this.checkReplica(replica);
    if (ns === null || typeof ns !== 'object' || typeof ns.model !== 'string' || ns.model.length === 0) fail('DYSTRO_ERR_INVALID_CONFIG', 'namespace', 'a { model, tenant? } with a non-empty model', ns);
    this.fence(replica);
    this.nsSent[replica] = 1;
    await this.run(replica, { op: 'setNamespace', replica, ns: { model: ns.model, tenant: ns.tenant } });
  }

  /** The replica's index state, as its worker last wrote it (synchronous: shared memory). */
  replicaState(replica: number): ReplicaIndexState {
    this.checkReplica(replica);
    return STATE_NAMES[Atomics.load(this.states, replica)] ?? 'unknown';
  }

  /** Calls `listener(replica, state)` on each change, from the next drain() after a worker wrote it. */
  onReplicaState(listener: (replica: number, state: ReplicaIndexState) => void): () => void {
    this.stateListeners.add(listener);
    return () => this.stateListeners.delete(listener);
  }

  /** Replica slots with state in any worker. */
  async replicas(): Promise<number[]> {
    const all = await Promise.all(this.shards.map((s) => this.runOn(s, { op: 'replicas' }) as Promise<number[]>));
    return all.flat().sort((a, b) => a - b);
  }

  /** Engine keys held over all workers. */
  async trackedKeys(): Promise<number> {
    const all = await Promise.all(this.shards.map((s) => this.runOn(s, { op: 'trackedKeys' }) as Promise<number>));
    return all.reduce((a, b) => a + b, 0);
  }

  /**
   * Resolves when every call made before it has been processed, no replay is running, and every record
   * produced so far has been applied to the index (tests; shutdown).
   */
  async settled(): Promise<void> {
    for (const s of this.shards) this.flushIngest(s);
    await Promise.all(this.shards.map((s) => this.runOn(s, { op: 'settled' })));
    // In slices, yielding between them: settling must not hold the event loop longer than the loop does.
    while (this.drain(this.index, this.timerSliceRecords) > 0) await new Promise<void>((r) => setImmediate(r));
  }

  // ---------------------------------------------------------------- applying records

  /**
   * Applies up to `maxRecords` pending records (from every shard) to `index`, never waiting. Called by
   * the routing thread between decisions (Router does it at the start of route()) and by the drain loop.
   * Returns the number of records taken from the rings.
   */
  drain(index: PrefixIndex = this.index, maxRecords: number = this.drainMaxRecords): number {
    if (this.closed) return 0;
    let total = 0;
    let t0 = -1;
    const n = this.shards.length;
    for (let k = 0; k < n && total < maxRecords; k++) {
      const shard = this.shards[(this.nextShard + k) % n];
      if (shard.ring.size() === 0) continue;
      if (t0 < 0) t0 = performance.now();
      while (total < maxRecords) {
        const want = Math.min(maxRecords - total, this.scratch.length / RECORD_WORDS);
        const got = shard.ring.drain(this.scratch, want);
        if (got === 0) break;
        this.applyRecords(index, got);
        total += got;
      }
      shard.stamps.consume(shard.ring.consumed(), nowMs(), this.sampleStaleness);
    }
    this.nextShard = (this.nextShard + 1) % n;
    if (t0 >= 0) {
      const pauseMs = performance.now() - t0;
      this.drains++;
      this.appliedRecords += total;
      if (pauseMs > this.maxPauseMs) this.maxPauseMs = pauseMs;
      this.pauseMs[this.pauseCount++ & (STALENESS_SAMPLES - 1)] = pauseMs;
      if (this.own) {
        this.own.pause.observe(pauseMs / 1000);
        this.own.applied.inc(total);
      }
    }
    this.checkStates();
    return total;
  }

  /**
   * Figures since the start (or the last reset): records applied, drains that applied any, the longest
   * and the p99/p99.9 drain durations (event-loop pauses), staleness quantiles (the newest 65,536
   * samples of each).
   */
  drainStats(reset = false): DrainStats {
    const quantiles = (samples: Float64Array, count: number) => {
      const n = Math.min(count, STALENESS_SAMPLES);
      const sorted = samples.slice(0, n).sort();
      const q = (p: number) => (n === 0 ? NaN : sorted[Math.min(n - 1, Math.floor(p * n))]);
      return { samples: n, p50Ms: q(0.5), p99Ms: q(0.99), p999Ms: q(0.999), maxMs: n ? sorted[n - 1] : NaN };
    };
    const out = { records: this.appliedRecords, drains: this.drains, maxPauseMs: this.maxPauseMs, pause: quantiles(this.pauseMs, this.pauseCount), staleness: quantiles(this.staleMs, this.staleCount) };
    if (reset) {
      this.appliedRecords = 0;
      this.drains = 0;
      this.maxPauseMs = 0;
      this.staleCount = 0;
      this.pauseCount = 0;
    }
    return out;
  }

  /** Records waiting in the rings. */
  pendingRecords(): number {
    let n = 0;
    for (const s of this.shards) n += s.ring.size();
    return n;
  }

  private readonly sampleStaleness = (ms: number): void => {
    this.staleMs[this.staleCount++ & (STALENESS_SAMPLES - 1)] = ms;
    this.own?.staleness.observe(Math.max(0, ms) / 1000);
  };

  private applyRecords(index: PrefixIndex, count: number): void {
    const words = this.scratch;
    try {
      if (this.fenced === 0) {
        index.apply(words, count);
        return;
      }
      // Some slot is fenced: drop its records, and its fence marker ends the fence.
      const out = this.filtered;
      let k = 0;
      for (let i = 0; i < count; i++) {
        const at = i * RECORD_WORDS;
        const op = words[at] & 0xff;
        const slot = words[at + 1];
        if (op === OP_FENCE) {
          if (this.fences[slot] > 0) {
            this.fences[slot]--;
            this.fenced--;
          }
          continue;
        }
        if (this.fences[slot] > 0) continue;
        out[k * RECORD_WORDS] = words[at];
        out[k * RECORD_WORDS + 1] = slot;
        out[k * RECORD_WORDS + 2] = words[at + 2];
        out[k * RECORD_WORDS + 3] = words[at + 3];
        k++;
      }
      index.apply(out, k);
    } catch (err) {
      // Never thrown into route(): an index freed under the pool, or a bug. Reported, records dropped.
      this.options.onError?.(-1, err instanceof Error ? err : new Error(String(err)));
    }
  }

  private fence(replica: number): void {
    // What the worker still has in flight for the old incarnation must not reach the index.
    this.fences[replica]++;
    this.fenced++;
    const clear = Uint32Array.of(OP_CLEAR, replica, 0, 0);
    this.index.apply(clear, 1);
  }

  private checkStates(): void {
    if (this.stateListeners.size === 0) return;
    for (const s of this.shards) {
      const c = Atomics.load(this.stateChanges, s.id);
      if (c === s.lastStateChanges) continue;
      s.lastStateChanges = c;
      for (let slot = s.id; slot < this.states.length; slot += this.shardCount) {
        const now = Atomics.load(this.states, slot);
        if (now === this.reportedStates[slot]) continue;
        this.reportedStates[slot] = now;
        const name = STATE_NAMES[now] ?? 'unknown';
        for (const l of this.stateListeners) l(slot, name);
      }
    }
  }

  private schedule(delayMs: number | false): void {
    if (this.closed || delayMs === false) return;
    const tick = () => {
      this.loopTimer = null;
      this.loopImmediate = null;
      this.drain(this.index, this.timerSliceRecords);
      // A backlog is worked off in slices, one per turn of the event loop; then back to the period. The
      // immediate stays ref'd: Node lets the poll phase block past unref'd immediates (they would then
      // run only when something else wakes the loop). The period's timer is unref'd.
      if (this.pendingRecords() > 0) this.loopImmediate = setImmediate(tick);
      else this.schedule(this.drainIntervalMs);
    };
    this.loopTimer = setTimeout(tick, delayMs);
    this.loopTimer.unref?.();
  }

  // ---------------------------------------------------------------- metrics

  /**
   * The workers' metrics summed (prom-client's AggregatorRegistry.aggregate over each worker's
   * getMetricsAsJSON), as a registry. Scrapes within 100 ms share one round trip to the workers.
   */
  workerMetrics(): Promise<Registry> {
    const now = Date.now();
    if (this.metricsCache && now - this.metricsCache.at < 100) return this.metricsCache.registry;
    const registry = Promise.all(this.shards.map((s) => this.runOn(s, { op: 'metrics' }) as Promise<MetricObjectWithValues<MetricValue<string>>[]>)).then(
      (parts) => AggregatorRegistry.aggregate(parts as Parameters<typeof AggregatorRegistry.aggregate>[0]) as Registry,
    );
    this.metricsCache = { at: now, registry };
    registry.catch(() => (this.metricsCache = null));
    return registry;
  }

  private registerMetrics(registry: Registry, p: string): { staleness: Histogram; pause: Histogram; applied: Counter } {
    const workers = [...describeIngestMetrics(p).filter((m) => !m.name.startsWith(`${p}index_`)), { name: `${p}kv_ring_spilled_records_total`, help: 'Index records an ingest worker held in its own memory because the ring to the routing thread was full', type: 'counter' as const }];
    for (const m of workers) {
      // A stand-in registered in the caller's registry: its value is the workers' sum at scrape time.
      registry.registerMetric({
        name: m.name,
        help: m.help,
        type: m.type,
        aggregator: 'sum',
        get: async () => {
          const agg = await this.workerMetrics();
          const got = agg.getSingleMetric(m.name);
          return got ? await got.get() : { name: m.name, help: m.help, type: m.type, values: [], aggregator: 'sum' };
        },
        reset: () => {},
      } as unknown as Parameters<Registry['registerMetric']>[0]);
    }
    registerIndexGauges(registry, p, () => this.index.stats());
    const registers = [registry];
    const pool = this;
    new Gauge({
      name: `${p}kv_ring_records`,
      help: 'Index records waiting in the ingest rings to be applied by the routing thread',
      registers,
      collect() {
        this.set(pool.pendingRecords());
      },
    });
    return {
      staleness: new Histogram({
        name: `${p}kv_ring_staleness_seconds`,
        help: 'Time from records becoming visible in an ingest ring to their application to the index',
        buckets: [0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 1],
        registers,
      }),
      pause: new Histogram({
        name: `${p}kv_drain_pause_seconds`,
        help: 'Duration of one drain of the ingest rings on the routing thread (event-loop pause)',
        buckets: [0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01],
        registers,
      }),
      applied: new Counter({ name: `${p}kv_ring_applied_records_total`, help: 'Index records drained from the ingest rings', registers }),
    };
  }

  // ---------------------------------------------------------------- lifecycle

  /** Closes the workers' subscriptions, applies what they produced, and ends the threads. */
  async close(): Promise<void> {
    if (this.closed) return;
    for (const s of this.shards) this.flushIngest(s);
    await Promise.all(this.shards.map((s) => this.runOn(s, { op: 'close' }).catch(() => undefined)));
    while (this.drain(this.index, this.timerSliceRecords) > 0) await new Promise<void>((r) => setImmediate(r));
    this.closed = true;
    if (this.loopTimer) clearTimeout(this.loopTimer);
    if (this.loopImmediate) clearImmediate(this.loopImmediate);
    await Promise.all(this.shards.map((s) => s.pool.destroy()));
    for (const c of this.events) c.port1.close();
  }

  // ---------------------------------------------------------------- internals

  private checkOpen(): void {
    if (this.closed) throw new DystroError('DYSTRO_ERR_INGEST_CLOSED', 'This KV event ingest pool was closed');
  }

  private checkReplica(replica: number): void {
    if (!Number.isInteger(replica) || replica < 0 || replica >= this.index.replicaCapacity) {
      fail('DYSTRO_ERR_UNKNOWN_REPLICA', 'replica', `a replica slot in 0 … ${this.index.replicaCapacity - 1}`, replica);
    }
  }

  private shardOf(replica: number): Shard {
    return this.shards[replica % this.shardCount];
  }

  private namespaceOf(replica: number): ReplicaNamespace {
    const ns = typeof this.options.namespace === 'function' ? this.options.namespace(replica) : this.options.namespace;
    if (ns === null || typeof ns !== 'object' || typeof ns.model !== 'string' || ns.model.length === 0) {
      fail('DYSTRO_ERR_INVALID_CONFIG', `namespace(${replica})`, 'a { model, tenant? } with a non-empty model', ns);
    }
    return { model: ns.model, tenant: ns.tenant };
  }

  private flushIngest(shard: Shard): void {
    shard.flushScheduled = false;
    if (shard.pending.length === 0) return;
    const items = shard.pending;
    const transfer = shard.transfer;
    const waiting = shard.waiting;
    shard.pending = [];
    shard.transfer = [];
    shard.waiting = [];
    shard.pool.run({ op: 'ingest', items }, { transferList: transfer }).then(
      (r) => {
        if (isWorkerError(r)) {
          const err = toError(r);
          for (const w of waiting) w.reject(err);
          return;
        }
        const results = r as IngestResult[];
        waiting.forEach((w, i) => w.resolve(results[i]));
      },
      (err: unknown) => {
        for (const w of waiting) w.reject(err);
      },
    );
  }

  /** Runs a control task on the replica's shard, after its coalesced ingest() calls (order is kept). */
  private run(replica: number, task: WorkerTask): Promise<unknown> {
    const shard = this.shardOf(replica);
    this.flushIngest(shard);
    return this.runOn(shard, task);
  }

  private async runOn(shard: Shard, task: WorkerTask): Promise<unknown> {
    const r = await shard.pool.run(task);
    if (isWorkerError(r)) throw toError(r);
    return r;
  }

  private onWorkerEvent(e: WorkerEvent): void {
    if (e.kind === 'error') {
      const err = e.code ? new DystroError(e.code as never, e.message) : new Error(e.message);
      this.options.onError?.(e.replica, err);
    }
  }
}

function isWorkerError(r: unknown): r is WorkerError {
  return r !== null && typeof r === 'object' && 'error' in r && !Array.isArray(r);
}

function toError(r: WorkerError): Error {
  const { code, message, details } = r.error;
  return code ? new DystroError(code as never, message, details as never) : new Error(message);
}
