/**
 * Compact index records: what event ingestion produces and `PrefixIndex.apply` consumes, 4 u32 words a
 * record — [op | tier << 8, replica, hash lo, hash hi] — so batches travel through a SharedArrayBuffer
 * ring between threads without serialization (DESIGN §2).
 */
import { OP_CLEAR, OP_REMOVE, OP_SPECULATE, OP_STORE, RECORD_WORDS, TIER_CPU, TIER_DISK, TIER_GPU } from '../kernels/js/prefix-index.js';

export { OP_CLEAR, OP_REMOVE, OP_SPECULATE, OP_STORE, RECORD_WORDS, TIER_CPU, TIER_DISK, TIER_GPU };

/** A module-local copy for the per-record paths (an imported binding can be a getter call per read). */
const WORDS = 4;
if (WORDS !== RECORD_WORDS) throw new Error('records.ts: RECORD_WORDS changed');

export type Tier = 'gpu' | 'cpu' | 'disk';
export const TIERS: readonly Tier[] = ['gpu', 'cpu', 'disk'];

/** Maps vLLM's `medium` strings to tiers (GPU when absent; unknown media are rejected by the adapter). */
export function tierOfMedium(medium: unknown): number | undefined {
  if (medium === undefined || medium === null) return TIER_GPU;
  if (typeof medium !== 'string') return undefined;
  const m = medium.toLowerCase();
  if (m === 'gpu' || m === 'cuda' || m === 'hbm' || m === 'device') return TIER_GPU;
  if (m === 'cpu' || m === 'host' || m === 'dram') return TIER_CPU;
  if (m === 'disk' || m === 'ssd' || m === 'nvme' || m === 'storage') return TIER_DISK;
  return undefined;
}

/** A growable record buffer (control path and ingest; the hot path never builds records). */
export class RecordBuffer {
  words: Uint32Array;
  count = 0;

  constructor(initialRecords = 256) {
    this.words = new Uint32Array(initialRecords * RECORD_WORDS);
  }

  private ensure(extra: number): void {
    const need = (this.count + extra) * RECORD_WORDS;
    if (need <= this.words.length) return;
    let len = this.words.length * 2;
    while (len < need) len *= 2;
    const bigger = new Uint32Array(len);
    bigger.set(this.words.subarray(0, this.count * RECORD_WORDS));
    this.words = bigger;
  }

  push(op: number, tier: number, replica: number, hash: bigint): void {
    this.ensure(1);
    const at = this.count * RECORD_WORDS;
    this.words[at] = op | (tier << 8);
    this.words[at + 1] = replica;
    this.words[at + 2] = Number(hash & 0xffffffffn);
    this.words[at + 3] = Number((hash >> 32n) & 0xffffffffn);
    this.count++;
  }

  /** The same record with the hash as its two u32 halves (no bigint on the ingest path). */
  pushWords(op: number, tier: number, replica: number, lo: number, hi: number): void {
    if ((this.count + 1) * WORDS > this.words.length) this.ensure(1);
    const at = this.count * WORDS;
    this.words[at] = op | (tier << 8);
    this.words[at + 1] = replica;
    this.words[at + 2] = lo;
    this.words[at + 3] = hi;
    this.count++;
  }

  /** Appends one record per hash. */
  pushAll(op: number, tier: number, replica: number, hashes: ArrayLike<bigint>, from = 0, to = hashes.length): void {
    this.ensure(to - from);
    for (let i = from; i < to; i++) this.push(op, tier, replica, hashes[i]);
  }

  clear(): void {
    this.count = 0;
  }

  /** The records as a view (valid until the next push). */
  view(): Uint32Array {
    return this.words.subarray(0, this.count * RECORD_WORDS);
  }
}
