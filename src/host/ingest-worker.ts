/**
 * One ingest shard's worker thread (ingest-pool.ts): a whole KvEventIngest — decoding, sequencing and
 * replays, the replicas' engine-hash maps, block hashing with its own kernels — whose RecordSink is the
 * producer end of this shard's SharedArrayBuffer ring. ZeroMQ subscriptions live here too, so live
 * frames never reach the routing thread; it only drains compact records.
 *
 * Piscina runs the default export for each task, in the order sent (one thread per shard: a replica's
 * batches are applied in order). Several tasks may be queued here at once (concurrentTasksPerWorker), so
 * the worker never idles waiting for the routing thread's event loop to hand it the next one; every
 * task's work that touches state runs synchronously before its first await, so the order holds. The
 * `atomics: 'disabled'` option keeps this thread's event loop free for ZeroMQ sockets and replay timers.
 */
import { workerData, type MessagePort } from 'node:worker_threads';
import { Counter, Registry } from 'prom-client';
import { DystroError } from '../errors.js';
import { KvEventIngest, type RecordSink } from '../index/kv-events.js';
import type { ReplicaNamespace } from '../index/replica-state.js';
import { RECORD_WORDS } from '../index/records.js';
import { loadKernelsSync } from '../kernels/select.js';
import { RecordRing } from './record-ring.js';
import { OP_FENCE, StampLog, nowMs, stateCode, type WorkerData, type WorkerError, type WorkerEvent, type WorkerTask } from './ingest-shared.js';

const data = workerData as WorkerData;
const config = data.config;
const ring = new RecordRing(data.ring);
const stamps = new StampLog(data.stamps);
const states = new Uint8Array(data.states);
const stateChanges = new Int32Array(data.stateChanges);
const registry = new Registry();
const spilledTotal = new Counter({
  name: `${config.metricsPrefix}kv_ring_spilled_records_total`,
  help: 'Index records an ingest worker held in its own memory because the ring to the routing thread was full',
  registers: [registry],
});
let events: MessagePort | null = null;

/**
 * The producer end of the ring. A push waits up to `ringWaitMs` for space (the routing thread drains
 * every millisecond or so); what still does not fit is spilled to this thread's memory in order and
 * pushed first later, so a routing thread that stalls delays records but never loses them. Beyond
 * `maxSpillRecords` spilled records the producer waits for space however long it takes (bounded memory;
 * only this worker stalls, and ZeroMQ then queues or drops frames, which the sequencer repairs).
 */
class RingSink implements RecordSink {
  readonly replicaCapacity = data.replicaCapacity;
  private spill: Uint32Array[] = [];
  private spilled = 0;
  private flushTimer: ReturnType<typeof setTimeout> | null = null;

  apply(words: Uint32Array, count: number): void {
    if (this.spilled > 0) this.flushSpill(0);
    if (this.spilled === 0) {
      const n = ring.push(words, count, config.ringWaitMs);
      if (n > 0) stamps.record(ring.written(), nowMs());
      if (n === count) return;
      words = words.subarray(n * RECORD_WORDS);
      count -= n;
    }
    this.spill.push(words.slice(0, count * RECORD_WORDS));
    this.spilled += count;
    spilledTotal.inc(count);
    if (this.spilled > config.maxSpillRecords) this.flushSpill(Infinity);
    else this.scheduleFlush();
  }

  /** Pushes spilled records in order, waiting up to `waitMs` in total. */
  flushSpill(waitMs: number): void {
    const deadline = Date.now() + waitMs;
    while (this.spill.length > 0) {
      const chunk = this.spill[0];
      const count = chunk.length / RECORD_WORDS;
      const left = Math.max(0, deadline - Date.now());
      const n = ring.push(chunk, count, Number.isFinite(left) ? left : 1000);
      if (n > 0) stamps.record(ring.written(), nowMs());
      this.spilled -= n;
      if (n === count) {
        this.spill.shift();
        continue;
      }
      this.spill[0] = chunk.subarray(n * RECORD_WORDS);
      if (Date.now() >= deadline) break;
    }
    if (this.spilled > 0) this.scheduleFlush();
  }

  private scheduleFlush(): void {
    if (this.flushTimer !== null) return;
    this.flushTimer = setTimeout(() => {
      this.flushTimer = null;
      this.flushSpill(0);
    }, 1);
  }

  /** Marks the end of a replica's records before a restart or unsubscribe (see OP_FENCE). */
  fence(replica: number): void {
    this.apply(Uint32Array.of(OP_FENCE, replica, 0, 0), 1);
  }

  /** Pushes everything spilled, however long it takes (settled, close). */
  flushAll(): void {
    this.flushSpill(Infinity);
  }
}

const sink = new RingSink();
const namespaces = new Map<number, ReplicaNamespace>();
const loraNames = config.loraNames;
const ingest = new KvEventIngest(sink, {
  // The routing thread resolves namespaces (a function cannot cross threads) and sends each with the
  // first message about its replica.
  namespace: (replica) => namespaces.get(replica) as ReplicaNamespace,
  blockSize: config.blockSize,
  limits: config.limits,
  maxEntriesPerReplica: config.maxEntriesPerReplica,
  loraNameOfId: loraNames ? (id) => loraNames[id] : undefined,
  replay: config.replay,
  registry,
  metricsPrefix: config.metricsPrefix,
  kernels: loadKernelsSync({ backend: config.backend }).kernels,
  onError: (replica, err) => post({ kind: 'error', replica, ...errorFields(err) }),
});
ingest.onReplicaState((replica, state) => {
  Atomics.store(states, replica, stateCode(state));
  Atomics.add(stateChanges, data.shard, 1);
});

function post(e: WorkerEvent): void {
  events?.postMessage(e);
}

function errorFields(err: unknown): { code?: string; message: string } {
  if (err instanceof DystroError) return { code: err.code, message: err.message };
  return { message: err instanceof Error ? err.message : String(err) };
}

function asError(err: unknown): WorkerError {
  return { error: { ...errorFields(err), details: err instanceof DystroError ? err.details : undefined } };
}

function learn(replica: number, ns: ReplicaNamespace | undefined): void {
  if (ns) namespaces.set(replica, ns);
}

export default async function handle(task: WorkerTask): Promise<unknown> {
  try {
    switch (task.op) {
      case 'init':
        events = task.port;
        events.unref();
        return true;
      case 'ingest': {
        const out = [];
        for (const item of task.items) {
          learn(item.replica, item.ns);
          out.push(ingest.ingest(item.replica, item.payload, { seq: item.seq, dpRank: item.dpRank }));
        }
        return out;
      }
      case 'subscribe':
        learn(task.replica, task.ns);
        ingest.subscribe(task.replica, task.options);
        return true;
      case 'unsubscribe': {
        // The replica is forgotten synchronously (its sockets close after): fence now, so records of a
        // task that runs while the sockets close are not mistaken for the old incarnation's.
        let closing: Promise<void> = Promise.resolve();
        try {
          closing = ingest.unsubscribe(task.replica);
        } finally {
          namespaces.delete(task.replica);
          sink.fence(task.replica);
        }
        await closing;
        return true;
      }
      case 'restart':
        try {
          learn(task.replica, task.ns);
          ingest.restart(task.replica);
        } finally {
          sink.fence(task.replica);
        }
        return true;
      case 'setNamespace':
        try {
          learn(task.replica, task.ns);
          ingest.setNamespace(task.replica, task.ns);
        } finally {
          sink.fence(task.replica);
        }
        return true;
      case 'replicas':
        return ingest.replicas();
      case 'trackedKeys':
        return ingest.trackedKeys();
      case 'settled':
        await ingest.settled();
        sink.flushAll();
        return true;
      case 'metrics':
        return await registry.getMetricsAsJSON();
      case 'close':
        await ingest.close();
        sink.flushAll();
        return true;
    }
  } catch (err) {
    return asError(err);
  }
}
