/**
 * What the pooled ingest's routing thread (ingest-pool.ts) and its workers (ingest-worker.ts) share:
 * the task messages, the layout of the shared memory beside each record ring, and the stamp log that
 * measures how late records are applied.
 */
import type { IngestOptions, IngestResult, ReplicaIndexState, SubscribeOptions } from '../index/kv-events.js';
import type { ReplicaNamespace } from '../index/replica-state.js';
import type { DecodeLimits } from '../index/vllm-events.js';
import type { BackendChoice } from '../kernels/select.js';

/**
 * A record op that never reaches the index: "every record this worker produced for `replica` before a
 * restart or unsubscribe is now in the ring". Records words: [OP_FENCE, replica, 0, 0]. The routing
 * thread drops a fenced replica's records until its marker arrives (ingest-pool.ts, fences).
 */
export const OP_FENCE = 0xff;

/** Replica index states as bytes in the shared state array (0 is what a slot nobody wrote reads as). */
export const STATE_UNKNOWN = 0;
export const STATE_SYNCED = 1;
export const STATE_REPLAYING = 2;
export const STATE_NAMES: readonly ReplicaIndexState[] = ['unknown', 'synced', 'replaying'];
export function stateCode(s: ReplicaIndexState): number {
  return s === 'synced' ? STATE_SYNCED : s === 'replaying' ? STATE_REPLAYING : STATE_UNKNOWN;
}

/** Options a worker's KvEventIngest is built from (plain data: functions cannot cross threads). */
export interface WorkerIngestConfig {
  blockSize?: number;
  limits?: Omit<DecodeLimits, 'blockSize' | 'hashBytes'>;
  maxEntriesPerReplica?: number;
  loraNames?: Record<number, string>;
  replay?: {
    maxBuffered?: number;
    maxAttempts?: number;
    backoffMs?: number;
    maxBackoffMs?: number;
    resyncCooldownMs?: number;
    timeoutMs?: number;
  };
  metricsPrefix: string;
  backend?: BackendChoice;
  /** Longest a producer waits for ring space before it spills records to its own memory (ms). */
  ringWaitMs: number;
  /** Spilled records beyond which the producer waits for space however long it takes. */
  maxSpillRecords: number;
}

export interface WorkerData {
  shard: number;
  replicaCapacity: number;
  ring: SharedArrayBuffer;
  stamps: SharedArrayBuffer;
  /** One byte per replica slot (STATE_*), written by the shard that owns the slot. */
  states: SharedArrayBuffer;
  /** Int32 per shard: bumped after each change of the shard's state bytes. */
  stateChanges: SharedArrayBuffer;
  config: WorkerIngestConfig;
}

export interface IngestItem {
  replica: number;
  payload: Uint8Array;
  seq?: IngestOptions['seq'];
  dpRank?: number;
  /** The replica's namespace, sent with the first message about it (and after an unsubscribe). */
  ns?: ReplicaNamespace;
}

export type WorkerTask =
  | { op: 'init'; port: import('node:worker_threads').MessagePort }
  | { op: 'ingest'; items: IngestItem[] }
  | { op: 'subscribe'; replica: number; ns?: ReplicaNamespace; options: SubscribeOptions }
  | { op: 'unsubscribe'; replica: number }
  | { op: 'restart'; replica: number; ns?: ReplicaNamespace }
  | { op: 'setNamespace'; replica: number; ns: ReplicaNamespace }
  | { op: 'replicas' }
  | { op: 'trackedKeys' }
  | { op: 'settled' }
  | { op: 'metrics' }
  | { op: 'close' };

/** A typed error thrown in a worker, carried back as data (structured clone keeps no custom fields). */
export interface WorkerError {
  error: { code?: string; message: string; details?: unknown };
}

export type IngestResults = IngestResult[];

/** What a worker posts on its event port. */
export type WorkerEvent = { kind: 'error'; replica: number; code?: string; message: string };

/**
 * Enqueue times of ring positions, written by the producer after each push and read by the consumer
 * after each drain: staleness = (time applied) − (time the records became visible in the ring). A ring
 * of STAMPS entries; the producer never waits on it (a consumer that falls a whole ring behind skips
 * the stamps it lost). Layout: Int32 [written], then u32 ring positions, then f64 times (ms).
 */
export const STAMPS = 4096;
const STAMP_HEADER_BYTES = 16;

export class StampLog {
  readonly buffer: SharedArrayBuffer;
  private readonly header: Int32Array;
  private readonly ends: Uint32Array;
  private readonly times: Float64Array;
  /** Consumer side: stamps already looked at. */
  private read = 0;

  constructor(buffer?: SharedArrayBuffer) {
    this.buffer = buffer ?? new SharedArrayBuffer(STAMP_HEADER_BYTES + STAMPS * 4 + STAMPS * 8);
    this.header = new Int32Array(this.buffer, 0, 4);
    this.ends = new Uint32Array(this.buffer, STAMP_HEADER_BYTES, STAMPS);
    this.times = new Float64Array(this.buffer, STAMP_HEADER_BYTES + STAMPS * 4, STAMPS);
  }

  /** Producer: the records before ring position `end` were visible from `timeMs` on. */
  record(end: number, timeMs: number): void {
    const n = Atomics.load(this.header, 0) >>> 0;
    const i = n & (STAMPS - 1);
    this.ends[i] = end;
    this.times[i] = timeMs;
    Atomics.store(this.header, 0, (n + 1) | 0);
  }

  /**
   * Consumer: calls `sample(staleMs)` for every stamp whose records are all consumed (ring position
   * ≤ `consumed`), in order. Returns how many.
   */
  consume(consumed: number, nowMs: number, sample: (staleMs: number) => void): number {
    const written = Atomics.load(this.header, 0) >>> 0;
    if (((written - this.read) >>> 0) > STAMPS) this.read = (written - STAMPS) >>> 0; // lapped
    let n = 0;
    while (this.read !== written) {
      const i = this.read & (STAMPS - 1);
      // Not yet applied when the stamp's end lies after the consumed position (u32 wrap-around).
      if (((consumed - this.ends[i]) | 0) < 0) break;
      sample(nowMs - this.times[i]);
      this.read = (this.read + 1) >>> 0;
      n++;
    }
    return n;
  }
}

/** Wall-clock milliseconds with sub-millisecond precision, comparable across threads. */
export function nowMs(): number {
  return performance.timeOrigin + performance.now();
}
