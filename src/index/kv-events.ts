/**
 * KvEventIngest: keeps one PrefixIndex in step with the KV caches of vLLM replicas, from their KV events
 * (DESIGN §2, §8). In-thread mode: decoding, ordering and hashing run on the caller's thread, between
 * routing decisions; the index has this one writer for precise entries. Pooled mode
 * (src/host/ingest-pool.ts) runs this same class in worker threads with a RecordSink that writes the
 * records into a SharedArrayBuffer ring, and the routing thread applies them to the index in batches.
 *
 * Per replica slot: a ReplicaState (engine hash → router hash, reference counts, completeness) and one
 * Sequencer per data-parallel rank (vLLM publishes each rank on its own port with its own seqs). Frames
 * come from ZeroMQ (`subscribe`) or from the caller (`ingest`, for proxies that receive the events some
 * other way); both go through the same decode → sequence → apply path.
 *
 * Failure model: a malformed batch is rejected whole (a counter per reason) and its seq still counts,
 * so it never causes a replay loop; the rank is then incomplete (its events are lost). A gap is
 * replayed; a stream that cannot be repaired is wiped and marked unknown, and the replica is routed by
 * load alone for what was lost. Nothing here throws on input from the network.
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { DystroError, fail } from '../errors.js';
import { systemClock, type Clock } from '../clock.js';
import { DEFAULT_BLOCK_SIZE, PrefixHasher } from '../hashing/prefix.js';
import { checkInteger } from '../hashing/validate.js';
import { Registry as PromRegistry } from 'prom-client';
import type { KernelBackend } from '../kernels/abi.js';
import { loadKernelsSync } from '../kernels/select.js';
import { RecordBuffer } from './records.js';
import { ReplicaState, emptyOutcome, type ApplyOutcome, type ReplicaNamespace } from './replica-state.js';
import { Sequencer, realTimers, type ReplaySource, type SequencerEvent, type StreamState, type Timers } from './sequencer.js';
import { END_OF_REPLAY, REJECT_REASONS, decodeKvEventBatch, decodeSeq, type DecodeLimits, type DecodeResult, type RejectReason } from './vllm-events.js';
import { ZmqReplaySource, ZmqSubscriber } from './zmq-subscriber.js';

export type ReplicaIndexState = StreamState;

/**
 * Where the ingest's index records go (records.ts: 4 u32 words each, applied in order). A PrefixIndex
 * is one (in-thread mode); an ingest worker's ring producer is another (pooled mode).
 */
export interface RecordSink {
  apply(words: Uint32Array, count: number): void;
  /** Replica slots the sink accepts: 0 … replicaCapacity − 1. */
  readonly replicaCapacity: number;
  /** Hashing kernels when options.kernels is absent (a PrefixIndex has its own). */
  readonly kernels?: KernelBackend;
  /** Entries and bytes, for the index gauges (a sink without it gets none). */
  stats?(): { entries: number; bytes: number };
}

export interface ReplayOptions {
  /** Live frames held per stream during a replay (default 10,000, vLLM's replay buffer). */
  maxBuffered?: number;
  /** Attempts before a stream is given up as unknown (default 5). */
  maxAttempts?: number;
  /** First retry delay (ms, default 100), doubled per failure up to maxBackoffMs (default 5,000). */
  backoffMs?: number;
  maxBackoffMs?: number;
  /** Least time between two resyncs of one stream (ms, default 60,000). */
  resyncCooldownMs?: number;
  /** ZMQ replay: longest wait for each reply message (ms, default 2,000). */
  timeoutMs?: number;
}

export interface KvEventIngestOptions {
  /** The namespace (model, tenant) of the requests each replica serves: one for all, or per slot. */
  namespace: ReplicaNamespace | ((replica: number) => ReplicaNamespace);
  /** The router's block size in tokens (default 16, vLLM's); events with another are rejected. */
  blockSize?: number;
  /** Decoding limits (see DecodeLimits). */
  limits?: Omit<DecodeLimits, 'blockSize'>;
  /** Keys kept per replica (default 262,144; see replica-state.ts for the memory this bounds). */
  maxEntriesPerReplica?: number;
  loraNameOfId?: (id: number) => string | undefined;
  replay?: ReplayOptions;
  /** Replay for streams fed through `ingest` with seqs (ZMQ subscriptions bring their own). */
  replaySource?: (replica: number, dpRank: number) => ReplaySource | undefined;
  /** Metrics go here (prom-client); none when absent. */
  registry?: Registry;
  /** Metric name prefix (default "dystro_"), for two ingests on one registry. */
  metricsPrefix?: string;
  /** Kernels for hashing token blocks (default: the sink's, else the auto-selected backend). */
  kernels?: KernelBackend;
  clock?: Clock;
  timers?: Timers;
  /** A subscriber's socket error (it is recreated) or a failure applying its frames (logged, counted). */
  onError?: (replica: number, err: unknown) => void;
}

export interface IngestOptions {
  /** The batch's sequence number (a number, a bigint, or vLLM's 8-byte frame). Absent: applied as is, in call order. */
  seq?: number | bigint | Uint8Array;
  /** Data-parallel rank (default: the payload's data_parallel_rank, else 0). */
  dpRank?: number;
}

export type IngestResult = { ok: true } | { ok: false; reason: RejectReason; detail: string };

export interface SubscribeOptions {
  /** vLLM's PUB endpoint for this rank, e.g. tcp://10.0.0.7:5557 (the rank's port is base + rank). */
  endpoint: string;
  /** vLLM's ROUTER replay endpoint for this rank; without it gaps cannot be repaired. */
  replayEndpoint?: string;
  topic?: string;
  /** Data-parallel rank this endpoint publishes (default 0). */
  dpRank?: number;
}

type Item = DecodeResult;

interface Stream {
  replica: number;
  rank: number;
  /** Fed by batches without seqs (the sequencer never sees them): known once one is applied. */
  unsequenced: boolean;
  sequencer: Sequencer<Item>;
  source?: ReplaySource;
  subscriber?: ZmqSubscriber;
}

interface ReplicaSlot {
  state: ReplicaState;
  streams: Map<number, Stream>;
}

class Metrics {
  readonly batches: Counter;
  readonly events: Counter<'type'>;
  readonly blocks: Counter<'op'>;
  readonly rejected: Counter<'reason'>;
  readonly gaps: Counter;
  readonly replays: Counter<'outcome'>;
  readonly unrecoverable: Counter<'cause'>;
  readonly resyncs: Counter<'cause'>;
  readonly duplicates: Counter;
  readonly orphans: Counter;
  readonly unknownRemoved: Counter;
  readonly capEvictions: Counter;
  readonly lag: Histogram;
  readonly subscriberErrors: Counter;
  readonly storedEvents: Counter.Internal;
  readonly removedEvents: Counter.Internal;
  readonly clearedEvents: Counter.Internal;
  readonly storedBlocks: Counter.Internal;
  readonly removedBlocks: Counter.Internal;

  constructor(registry: Registry, p: string, ingest: KvEventIngest, index: RecordSink) {
    const registers = [registry];
    this.batches = new Counter({ name: `${p}kv_batches_applied_total`, help: 'KV event batches applied to the index', registers });
    this.events = new Counter({ name: `${p}kv_events_applied_total`, help: 'KV events applied, by type', labelNames: ['type'], registers });
    this.blocks = new Counter({ name: `${p}kv_blocks_applied_total`, help: 'Blocks stored or removed by applied events', labelNames: ['op'], registers });
    this.rejected = new Counter({ name: `${p}kv_batches_rejected_total`, help: 'Batches (or frames) rejected whole, by reason', labelNames: ['reason'], registers });
    this.gaps = new Counter({ name: `${p}kv_gaps_total`, help: 'Sequence gaps detected', registers });
    this.replays = new Counter({ name: `${p}kv_replays_total`, help: 'Replay requests, by outcome (started, ok, failed)', labelNames: ['outcome'], registers });
    this.unrecoverable = new Counter({ name: `${p}kv_unrecoverable_total`, help: 'Streams wiped and marked unknown, by cause (hole, overflow, attempts)', labelNames: ['cause'], registers });
    this.resyncs = new Counter({ name: `${p}kv_resyncs_total`, help: 'State rebuilds, by cause (unknown_parent, publisher_restart, refused)', labelNames: ['cause'], registers });
    this.duplicates = new Counter({ name: `${p}kv_duplicates_total`, help: 'Frames dropped as duplicates or as stale (an earlier publisher incarnation)', registers });
    this.orphans = new Counter({ name: `${p}kv_orphan_blocks_total`, help: 'Stored blocks whose parent was unknown (not indexed)', registers });
    this.unknownRemoved = new Counter({ name: `${p}kv_unknown_removals_total`, help: 'Removed blocks the router did not hold', registers });
    this.capEvictions = new Counter({ name: `${p}kv_replica_cap_evictions_total`, help: 'Keys evicted at the per-replica cap', registers });
    this.subscriberErrors = new Counter({ name: `${p}kv_subscriber_errors_total`, help: 'Subscriber socket errors (socket recreated) and failures applying received frames', registers });
    this.lag = new Histogram({
      name: `${p}kv_ingest_lag_seconds`,
      help: 'Time from a batch being published (its ts) to its application',
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120],
      registers,
    });
    new Gauge({
      name: `${p}kv_tracked_keys`,
      help: 'Engine block keys held by the ingest (all replicas)',
      registers,
      collect() {
        this.set(ingest.trackedKeys());
      },
    });
    const stats = index.stats?.bind(index);
    if (stats) registerIndexGauges(registry, p, stats);
    new Gauge({
      name: `${p}kv_replicas`,
      help: 'Replicas by index state (synced, replaying, unknown)',
      labelNames: ['state'],
      registers,
      collect() {
        const n = { synced: 0, replaying: 0, unknown: 0 };
        for (const r of ingest.replicas()) n[ingest.replicaState(r)]++;
        for (const [s, v] of Object.entries(n)) this.set({ state: s }, v);
      },
    });
    for (const reason of REJECT_REASONS) this.rejected.inc({ reason }, 0);
    this.storedEvents = this.events.labels({ type: 'BlockStored' });
    this.removedEvents = this.events.labels({ type: 'BlockRemoved' });
    this.clearedEvents = this.events.labels({ type: 'AllBlocksCleared' });
    this.storedBlocks = this.blocks.labels({ op: 'stored' });
    this.removedBlocks = this.blocks.labels({ op: 'removed' });
  }
}

/** The index gauges (entries, bytes), shared with the pooled ingest, whose index lives on the routing thread. */
export function registerIndexGauges(registry: Registry, p: string, stats: () => { entries: number; bytes: number }): void {
  const registers = [registry];
    new Gauge({
      name: `${p}index_entries`,
      help: 'Prefix index (block, replica) entries',
      registers,
      collect() {
        this.set(stats().entries);
      },
    });
    new Gauge({
      name: `${p}index_bytes`,
      help: 'Prefix index memory (bytes)',
      registers,
      collect() {
        this.set(stats().bytes);
      },
    });
}

/** Name, help and type of every metric an ingest registers (the pooled ingest mirrors its workers' metrics). */
export function describeIngestMetrics(prefix = 'dystro_'): { name: string; help: string; type: 'counter' | 'gauge' | 'histogram' }[] {
  const registry = new PromRegistry();
  // Collect callbacks never run here: the ingest and sink are only captured by them.
  new Metrics(registry, prefix, null as unknown as KvEventIngest, { apply() {}, replicaCapacity: 1 });
  return registry.getMetricsAsArray().map((m) => ({
    name: (m as unknown as { name: string }).name,
    help: (m as unknown as { help: string }).help,
    type: m instanceof Counter ? 'counter' : m instanceof Histogram ? 'histogram' : 'gauge',
  }));
}

export class KvEventIngest {
  /** Where the records go (the PrefixIndex in in-thread mode). */
  readonly index: RecordSink;
  readonly hasher: PrefixHasher;
  private readonly options: KvEventIngestOptions;
  private readonly limits: DecodeLimits;
  private readonly clock: Clock;
  private readonly timers: Timers;
  private readonly slots = new Map<number, ReplicaSlot>();
  private readonly records = new RecordBuffer(256);
  private readonly metrics?: Metrics;
  private closed = false;
  private readonly stateListeners = new Set<(replica: number, state: ReplicaIndexState) => void>();
  /** Last state reported per replica (absent: 'unknown', as replicaState() says of a slot it never saw). */
  private readonly reported = new Map<number, ReplicaIndexState>();
  /** Replicas whose state may have changed inside an async replay, refreshed at the next microtask. */
  private readonly touchedReplicas = new Set<number>();

  constructor(index: RecordSink, options: KvEventIngestOptions) {
    if (options === null || typeof options !== 'object') fail('DYSTRO_ERR_INVALID_CONFIG', 'options', 'an object with a namespace', options);
    if (typeof options.namespace !== 'function' && (options.namespace === null || typeof options.namespace !== 'object' || typeof options.namespace.model !== 'string')) {
      fail('DYSTRO_ERR_INVALID_CONFIG', 'options.namespace', 'a { model, tenant? } or a function of the replica slot returning one', options.namespace);
    }
    if (options.maxEntriesPerReplica !== undefined) checkInteger(options.maxEntriesPerReplica, 'options.maxEntriesPerReplica', 1, 2 ** 31, 'DYSTRO_ERR_INVALID_CONFIG');
    this.index = index;
    this.options = options;
    this.hasher = new PrefixHasher(options.kernels ?? index.kernels ?? loadKernelsSync().kernels, { blockSize: options.blockSize ?? DEFAULT_BLOCK_SIZE });
    this.limits = { ...options.limits, blockSize: this.hasher.blockSize };
    this.clock = options.clock ?? systemClock;
    this.timers = options.timers ?? realTimers;
    if (options.registry) this.metrics = new Metrics(options.registry, options.metricsPrefix ?? 'dystro_', this, index);
  }

  // ---------- public API ----------

  /**
   * One batch received some other way than `subscribe`. With `seq`, it is ordered and repaired like a
   * subscribed frame (replays through `options.replaySource`); without, it is applied at once. Returns
   * whether it decoded; a rejected batch is counted and leaves the index unchanged.
   */
  ingest(replica: number, payload: Uint8Array, opts: IngestOptions = {}): IngestResult {
    this.checkOpen();
    this.checkReplica(replica);
    const item = decodeKvEventBatch(payload, this.limits);
    const rank = opts.dpRank ?? (item.ok ? item.batch.dpRank : null) ?? 0;
    checkInteger(rank, 'dpRank', 0, 0xffff);
    if (opts.seq === undefined) {
      const slot = this.slot(replica);
      const stream = this.stream(replica, rank);
      this.apply(slot, stream, item, false);
      if (item.ok) stream.unsequenced = true;
      this.refresh(replica);
      return result(item);
    }
    const seq = seqOf(opts.seq);
    if (seq === undefined) {
      this.metrics?.rejected.inc({ reason: 'bad-sequence' });
      return { ok: false, reason: 'bad-sequence', detail: 'seq is not an integer in 0 … 2^53−1 or an 8-byte frame' };
    }
    const stream = this.stream(replica, rank);
    stream.unsequenced = false;
    stream.sequencer.push(seq, item);
    this.refresh(replica);
    return result(item);
  }

  /** Subscribes to one data-parallel rank of a replica over ZeroMQ. */
  subscribe(replica: number, options: SubscribeOptions): void {
    this.checkOpen();
    this.checkReplica(replica);
    if (options === null || typeof options !== 'object' || typeof options.endpoint !== 'string' || options.endpoint.length === 0) {
      fail('DYSTRO_ERR_INVALID_CONFIG', 'options.endpoint', 'a ZeroMQ endpoint such as tcp://host:5557', options?.endpoint);
    }
    const rank = checkInteger(options.dpRank ?? 0, 'options.dpRank', 0, 0xffff, 'DYSTRO_ERR_INVALID_CONFIG');
    const existing = this.slots.get(replica)?.streams.get(rank);
    if (existing?.subscriber) {
      throw new DystroError('DYSTRO_ERR_ALREADY_SUBSCRIBED', `Replica ${replica} rank ${rank} is already subscribed (to ${existing.subscriber.endpoint}); unsubscribe first`, { replica, rank });
    }
    const source = options.replayEndpoint ? new ZmqReplaySource({ endpoint: options.replayEndpoint, timeoutMs: this.options.replay?.timeoutMs }) : undefined;
    // A new subscription is a new stream: whatever an earlier one of this rank knew is dropped with it.
    if (existing) this.dropStream(replica, existing);
    const stream = this.stream(replica, rank, source);
    stream.subscriber = new ZmqSubscriber({
      endpoint: options.endpoint,
      topic: options.topic,
      onMessage: (frames) => this.onFrames(stream, frames),
      onError: (err) => {
        this.metrics?.subscriberErrors.inc();
        this.options.onError?.(replica, err);
      },
    });
    stream.subscriber.start();
    this.refresh(replica);
  }

  /** Stops the replica's subscriptions and forgets what it held (the index entries go too: without events they would go stale). */
  async unsubscribe(replica: number): Promise<void> {
    this.checkReplica(replica);
    const slot = this.slots.get(replica);
    if (!slot) return;
    this.slots.delete(replica);
    const closing: Promise<void>[] = [];
    for (const s of slot.streams.values()) {
      s.sequencer.close();
      if (s.subscriber) closing.push(s.subscriber.close());
    }
    this.records.clear();
    slot.state.wipe(this.records);
    this.flush();
    this.refresh(replica);
    await Promise.all(closing);
  }

  /**
   * A new incarnation of the replica (its engine restarted): everything it held is forgotten at once and
   * each rank expects seq 0 again. Subscriptions stay. Until new events arrive the replica has no credit.
   */
  restart(replica: number): void {
    this.checkOpen();
    this.checkReplica(replica);
    const slot = this.slot(replica);
    for (const s of slot.streams.values()) s.sequencer.restart(false);
    this.records.clear();
    slot.state.wipe(this.records);
    this.flush();
    this.metrics?.resyncs.inc({ cause: 'restart' });
    this.refresh(replica);
  }

  /** Changes a replica's namespace: its chains change, so this is a restart. */
  setNamespace(replica: number, ns: ReplicaNamespace): void {
    this.checkReplica(replica);
    this.slot(replica).state.setNamespace(ns);
    this.restart(replica);
  }

  /**
   * 'synced' (every batch since the start, or since a restart, applied; a stream fed without seqs once
   * one of its batches is applied), 'replaying' (a gap is being repaired) or 'unknown' (nothing heard
   * yet, or wiped after a loss and not heard from since).
   */
  replicaState(replica: number): ReplicaIndexState {
    const slot = this.slots.get(replica);
    if (!slot || slot.streams.size === 0) return 'unknown';
    let unknown = false;
    for (const s of slot.streams.values()) {
      const st = s.unsequenced ? 'synced' : s.sequencer.state;
      if (st === 'replaying') return 'replaying';
      if (st === 'unknown') unknown = true;
    }
    return unknown ? 'unknown' : 'synced';
  }

  /**
   * Calls `listener(replica, state)` whenever a replica's state changes (synchronously at the end of the
   * call that changed it; within a microtask for a change made by a replay). Returns an unsubscribe
   * function. The router uses it to route an 'unknown' replica by load only.
   */
  onReplicaState(listener: (replica: number, state: ReplicaIndexState) => void): () => void {
    this.stateListeners.add(listener);
    return () => this.stateListeners.delete(listener);
  }

  /** Replica slots with any state. */
  replicas(): number[] {
    return [...this.slots.keys()];
  }

  /** Engine keys held over all replicas (memory gauge). */
  trackedKeys(): number {
    let n = 0;
    for (const s of this.slots.values()) n += s.state.size;
    return n;
  }

  /** Resolves when no replay is running (tests; shutdown). */
  async settled(): Promise<void> {
    for (;;) {
      const waits: Promise<void>[] = [];
      for (const slot of this.slots.values()) for (const s of slot.streams.values()) waits.push(s.sequencer.idle());
      await Promise.all(waits);
      let running = false;
      for (const slot of this.slots.values()) for (const s of slot.streams.values()) if (s.sequencer.running) running = true;
      if (!running) return;
    }
  }

  /** Closes every subscription and stops replays. The index keeps its entries (it is the caller's). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const closing: Promise<void>[] = [];
    for (const slot of this.slots.values()) {
      for (const s of slot.streams.values()) {
        s.sequencer.close();
        if (s.subscriber) closing.push(s.subscriber.close());
      }
    }
    await Promise.all(closing);
  }

  // ---------- internals ----------

  private checkOpen(): void {
    if (this.closed) throw new DystroError('DYSTRO_ERR_INGEST_CLOSED', 'This KV event ingest was closed');
  }

  private checkReplica(replica: number): void {
    if (!Number.isInteger(replica) || replica < 0 || replica >= this.index.replicaCapacity) {
      fail('DYSTRO_ERR_UNKNOWN_REPLICA', 'replica', `a replica slot in 0 … ${this.index.replicaCapacity - 1}`, replica);
    }
  }

  private slot(replica: number): ReplicaSlot {
    let slot = this.slots.get(replica);
    if (!slot) {
      const ns = typeof this.options.namespace === 'function' ? this.options.namespace(replica) : this.options.namespace;
      if (ns === null || typeof ns !== 'object' || typeof ns.model !== 'string' || ns.model.length === 0) {
        fail('DYSTRO_ERR_INVALID_CONFIG', `namespace(${replica})`, 'a { model, tenant? } with a non-empty model', ns);
      }
      slot = {
        state: new ReplicaState({ replica, hasher: this.hasher, namespace: ns, maxEntries: this.options.maxEntriesPerReplica, loraNameOfId: this.options.loraNameOfId }),
        streams: new Map(),
      };
      this.slots.set(replica, slot);
    }
    return slot;
  }

  private stream(replica: number, rank: number, source?: ReplaySource): Stream {
    const slot = this.slot(replica);
    let s = slot.streams.get(rank);
    if (s) return s;
    const r = this.options.replay ?? {};
    const stream: Stream = { replica, rank, unsequenced: false, source: source ?? this.options.replaySource?.(replica, rank) } as Stream;
    stream.sequencer = new Sequencer<Item>(
      {
        decode: (payload) => decodeKvEventBatch(payload, this.limits),
        tsOf: (item) => (item.ok ? item.batch.ts : NaN),
        apply: (_seq, item) => {
          this.apply(slot, stream, item, true);
          this.touched(replica);
        },
        wipe: (fromStart) => {
          this.records.clear();
          slot.state.wipeRank(rank, this.records, fromStart);
          this.flush();
          this.touched(replica);
        },
        onEvent: (e) => {
          this.count(e);
          this.touched(replica);
        },
      },
      {
        replay: stream.source,
        timers: this.timers,
        clock: this.clock,
        maxBuffered: r.maxBuffered,
        maxAttempts: r.maxAttempts,
        backoffMs: r.backoffMs,
        maxBackoffMs: r.maxBackoffMs,
        resyncCooldownMs: r.resyncCooldownMs,
      },
    );
    slot.streams.set(rank, stream);
    s = stream;
    return s;
  }

  /** Reports the replica's state to the listeners when it differs from the last one reported. */
  private refresh(replica: number): void {
    if (this.stateListeners.size === 0) return;
    const now = this.replicaState(replica);
    if ((this.reported.get(replica) ?? 'unknown') === now) return;
    if (now === 'unknown') this.reported.delete(replica);
    else this.reported.set(replica, now);
    for (const l of this.stateListeners) l(replica, now);
  }

  /** A sequencer hook ran: its state settles after the hook returns, so look at it in a microtask. */
  private touched(replica: number): void {
    if (this.stateListeners.size === 0 || this.touchedReplicas.has(replica)) return;
    if (this.touchedReplicas.size === 0) {
      queueMicrotask(() => {
        const replicas = [...this.touchedReplicas];
        this.touchedReplicas.clear();
        for (const r of replicas) this.refresh(r);
      });
    }
    this.touchedReplicas.add(replica);
  }

  private dropStream(replica: number, stream: Stream): void {
    const slot = this.slot(replica);
    stream.sequencer.close();
    slot.streams.delete(stream.rank);
    this.records.clear();
    slot.state.wipeRank(stream.rank, this.records, true);
    this.flush();
  }

  private onFrames(stream: Stream, frames: Uint8Array[]): void {
    if (frames.length !== 3) {
      this.metrics?.rejected.inc({ reason: 'bad-frame' });
      return;
    }
    const seq = decodeSeq(frames[1]);
    if (seq === undefined || seq === END_OF_REPLAY) {
      this.metrics?.rejected.inc({ reason: 'bad-sequence' });
      return;
    }
    stream.sequencer.push(seq, decodeKvEventBatch(frames[2], this.limits));
    this.refresh(stream.replica);
  }

  /** Applies one batch in order (or counts its rejection). */
  private apply(slot: ReplicaSlot, stream: Stream, item: Item, sequenced: boolean): void {
    const m = this.metrics;
    if (!item.ok) {
      m?.rejected.inc({ reason: item.reason });
      // Its events are lost: later orphans in this rank are expected, not a reason to resync.
      slot.state.markIncomplete(stream.rank);
      return;
    }
    const outcome: ApplyOutcome = emptyOutcome();
    this.records.clear();
    slot.state.applyBatch(item.batch, stream.rank, this.records, outcome);
    this.flush();
    if (outcome.resync) {
      if (sequenced && stream.sequencer.requestResync()) {
        m?.resyncs.inc({ cause: 'unknown_parent' });
      } else {
        // No replay to rebuild from (or one just ran): keep what is known, expect more orphans.
        slot.state.markIncomplete(stream.rank);
        m?.resyncs.inc({ cause: 'refused' });
      }
    }
    if (!m) return;
    m.batches.inc();
    // Counted per batch, through label-bound children: prom-client's label handling per event cost
    // more than a block's worth of ingest work.
    let stored = 0;
    let removed = 0;
    const events = item.batch.events;
    for (let i = 0; i < events.length; i++) {
      const kind = events[i].kind;
      if (kind === 'stored') stored++;
      else if (kind === 'removed') removed++;
    }
    if (stored) m.storedEvents.inc(stored);
    if (removed) m.removedEvents.inc(removed);
    if (outcome.clears) m.clearedEvents.inc(outcome.clears);
    if (outcome.storedBlocks) m.storedBlocks.inc(outcome.storedBlocks);
    if (outcome.removedBlocks) m.removedBlocks.inc(outcome.removedBlocks);
    if (outcome.orphanBlocks) m.orphans.inc(outcome.orphanBlocks);
    if (outcome.unknownRemoved) m.unknownRemoved.inc(outcome.unknownRemoved);
    if (outcome.capEvictions) m.capEvictions.inc(outcome.capEvictions);
    // vLLM's ts is wall-clock seconds; the clock is milliseconds on the same (Unix) scale for systemClock.
    const lagS = this.clock.nowMs() / 1000 - item.batch.ts;
    if (Number.isFinite(lagS)) m.lag.observe(Math.max(0, lagS));
  }

  private flush(): void {
    if (this.records.count > 0) this.index.apply(this.records.words, this.records.count);
    this.records.clear();
  }

  private count(e: SequencerEvent): void {
    const m = this.metrics;
    if (!m) return;
    switch (e) {
      case 'duplicate':
      case 'stale':
        m.duplicates.inc();
        break;
      case 'gap':
        m.gaps.inc();
        break;
      case 'replay':
        m.replays.inc({ outcome: 'started' });
        break;
      case 'replay-ok':
        m.replays.inc({ outcome: 'ok' });
        break;
      case 'replay-failed':
        m.replays.inc({ outcome: 'failed' });
        break;
      case 'hole':
        m.unrecoverable.inc({ cause: 'hole' });
        break;
      case 'overflow':
        m.unrecoverable.inc({ cause: 'overflow' });
        break;
      case 'give-up':
        m.unrecoverable.inc({ cause: 'gave_up' });
        break;
      case 'reset':
        m.resyncs.inc({ cause: 'publisher_restart' });
        break;
      case 'resync':
        break;
    }
  }
}

function result(item: DecodeResult): IngestResult {
  return item.ok ? { ok: true } : { ok: false, reason: item.reason, detail: item.detail };
}

function seqOf(v: number | bigint | Uint8Array): number | undefined {
  if (v instanceof Uint8Array) {
    const s = decodeSeq(v);
    return s === END_OF_REPLAY ? undefined : s;
  }
  if (typeof v === 'bigint') return v >= 0n && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : undefined;
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 ? v : undefined;
}
