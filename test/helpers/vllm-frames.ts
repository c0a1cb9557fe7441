/**
 * Builds vLLM KV-event payloads the way vLLM's msgspec encoder lays them out (DESIGN §8), with msgpackr:
 * `array` is the array_like encoding (tag first, fields in declaration order, trailing fields still at
 * their default omitted), `map` the tagged-map encoding (a "type" key, fields still at their default
 * omitted). lora_id, medium and lora_name have no default in vLLM, so both encodings always carry them.
 *
 * Also an in-memory publisher with vLLM's replay buffer, usable as a ReplaySource.
 */
import { Packr } from 'msgpackr';
import type { ReplayFrame, ReplaySource } from '../../src/index/sequencer.ts';

/** A block id as it goes on the wire: an int (number or bigint, possibly negative) or bytes. */
export type WireHash = number | bigint | Uint8Array;

export interface StoredSpec {
  type: 'BlockStored';
  hashes: WireHash[];
  parent: WireHash | null;
  tokens: number[];
  blockSize: number;
  loraId?: number | null;
  medium?: string | null;
  loraName?: string | null;
  /** extra_keys as sent (vLLM: one entry per block; a cache salt is in the first block's entry). */
  extraKeys?: unknown;
  groupIdx?: number | null;
}

export interface RemovedSpec {
  type: 'BlockRemoved';
  hashes: WireHash[];
  medium?: string | null;
  groupIdx?: number | null;
}

export interface ClearedSpec {
  type: 'AllBlocksCleared';
}

export type EventSpec = StoredSpec | RemovedSpec | ClearedSpec;
export type Encoding = 'array' | 'map';

const packr = new Packr({ useRecords: false, variableMapSize: true });

function storedFields(e: StoredSpec): [string, unknown][] {
  const f: [string, unknown][] = [
    ['block_hashes', e.hashes],
    ['parent_block_hash', e.parent],
    ['token_ids', e.tokens],
    ['block_size', e.blockSize],
    ['lora_id', e.loraId ?? null],
    ['medium', e.medium === undefined ? 'GPU' : e.medium],
    ['lora_name', e.loraName ?? null],
  ];
  const extra = e.extraKeys ?? null;
  if (e.groupIdx !== undefined && e.groupIdx !== null) f.push(['extra_keys', extra], ['group_idx', e.groupIdx]);
  else if (extra !== null) f.push(['extra_keys', extra]);
  return f;
}

function removedFields(e: RemovedSpec): [string, unknown][] {
  const f: [string, unknown][] = [
    ['block_hashes', e.hashes],
    ['medium', e.medium === undefined ? 'GPU' : e.medium],
  ];
  if (e.groupIdx !== undefined && e.groupIdx !== null) f.push(['group_idx', e.groupIdx]);
  return f;
}

export function eventValue(e: EventSpec, encoding: Encoding): unknown {
  const fields = e.type === 'BlockStored' ? storedFields(e) : e.type === 'BlockRemoved' ? removedFields(e) : [];
  if (encoding === 'array') return [e.type, ...fields.map(([, v]) => v)];
  // msgspec omits defaults in map mode too; `extra_keys` is only positional padding.
  return new Map<string, unknown>([['type', e.type], ...fields.filter(([k, v]) => !(k === 'extra_keys' && v === null))]);
}

/** One payload: `[ts, events, rank]` (array) or `{ts, events, data_parallel_rank}` (map). */
export function encodeBatch(ts: number, events: EventSpec[], encoding: Encoding = 'array', dpRank: number | null = 0): Uint8Array {
  const evs = events.map((e) => eventValue(e, encoding));
  if (encoding === 'array') return packr.pack(dpRank === null ? [ts, evs] : [ts, evs, dpRank]);
  const m = new Map<string, unknown>([
    ['ts', ts],
    ['events', evs],
  ]);
  if (dpRank !== null) m.set('data_parallel_rank', dpRank);
  return packr.pack(m);
}

export function packValue(v: unknown): Uint8Array {
  return packr.pack(v);
}

/**
 * A publisher's seq counter and replay buffer (vLLM keeps the last 10,000 batches). `replay` streams the
 * buffered batches with seq ≥ from, as vLLM's ROUTER does; `failReplays` makes the next replays throw.
 */
export class MemoryPublisher implements ReplaySource {
  seq = 0;
  buffer: ReplayFrame[] = [];
  failReplays = 0;
  replaysServed = 0;

  constructor(readonly bufferSteps = 10_000) {}

  publish(payload: Uint8Array): ReplayFrame {
    const f = { seq: this.seq++, payload };
    this.buffer.push(f);
    if (this.buffer.length > this.bufferSteps) this.buffer.shift();
    return f;
  }

  /** A new incarnation: seqs from 0, an empty buffer. */
  restart(): void {
    this.seq = 0;
    this.buffer = [];
  }

  async *replay(fromSeq: number, signal: AbortSignal): AsyncIterable<ReplayFrame> {
    this.replaysServed++;
    await Promise.resolve();
    if (this.failReplays > 0) {
      this.failReplays--;
      throw new Error('replay refused (test)');
    }
    // A snapshot, as the ROUTER answers from the buffer at the time of the request.
    for (const f of this.buffer.slice()) {
      if (signal.aborted) return;
      if (f.seq >= fromSeq) yield f;
      await Promise.resolve();
    }
  }
}
