/**
 * A single-producer single-consumer ring of index records (4 u32 words each) in a SharedArrayBuffer:
 * an ingest worker writes, the routing thread reads (DESIGN §2). No locks: the producer publishes with
 * an Atomics.store of `head` after writing the words, the consumer frees space with an Atomics.store of
 * `tail` after copying them, and each side reads the other's index with Atomics.load (sequentially
 * consistent, so the words are visible before the index that covers them).
 *
 * Only the producer ever waits (Atomics.wait, when the ring is full, with a timeout): the routing
 * thread never blocks — it drains what is there, up to a bound, and goes on.
 */
import { RECORD_WORDS } from '../index/records.js';

/** A module-local copy for the per-record loops (an imported binding can be a getter call per read). */
const WORDS = RECORD_WORDS;
const HEAD = 0; // records written (u32, wrapping)
const TAIL = 1; // records consumed (u32, wrapping)
const CAPACITY = 2; // records the ring holds (a power of two)
const HEADER_INTS = 16; // 64 bytes: the indices get their own cache line

export class RecordRing {
  readonly buffer: SharedArrayBuffer;
  readonly capacity: number;
  private readonly header: Int32Array;
  private readonly words: Uint32Array;
  private readonly mask: number;

  /** Creates a ring of `capacityRecords` (rounded up to a power of two), or attaches to `buffer`. */
  constructor(capacityRecordsOrBuffer: number | SharedArrayBuffer) {
    if (typeof capacityRecordsOrBuffer === 'number') {
      const cap = 2 ** Math.ceil(Math.log2(Math.max(16, capacityRecordsOrBuffer)));
      this.buffer = new SharedArrayBuffer(HEADER_INTS * 4 + cap * RECORD_WORDS * 4);
      this.header = new Int32Array(this.buffer, 0, HEADER_INTS);
      Atomics.store(this.header, CAPACITY, cap);
    } else {
      this.buffer = capacityRecordsOrBuffer;
      this.header = new Int32Array(this.buffer, 0, HEADER_INTS);
    }
    this.capacity = Atomics.load(this.header, CAPACITY);
    this.mask = this.capacity - 1;
    this.words = new Uint32Array(this.buffer, HEADER_INTS * 4, this.capacity * RECORD_WORDS);
  }

  /** Records ever published by the producer (u32, wrapping): a position in the record stream. */
  written(): number {
    return Atomics.load(this.header, HEAD) >>> 0;
  }

  /** Records ever consumed (u32, wrapping): everything before this position has been drained. */
  consumed(): number {
    return Atomics.load(this.header, TAIL) >>> 0;
  }

  /** Records waiting to be consumed. */
  size(): number {
    return (Atomics.load(this.header, HEAD) - Atomics.load(this.header, TAIL)) >>> 0;
  }

  /**
   * Producer: appends `count` records from `records`, waiting up to `timeoutMs` in total for space when
   * the ring is full. Returns the number written (less than count only on timeout).
   */
  push(records: Uint32Array, count: number, timeoutMs = 1000): number {
    let written = 0;
    const deadline = Date.now() + timeoutMs;
    while (written < count) {
      const head = Atomics.load(this.header, HEAD) >>> 0;
      const tail = Atomics.load(this.header, TAIL) >>> 0;
      const free = this.capacity - ((head - tail) >>> 0);
      if (free === 0) {
        const left = deadline - Date.now();
        if (left <= 0) break;
        // Sleep until the consumer moves the tail (or a short while: it never notifies on every drain).
        Atomics.wait(this.header, TAIL, tail | 0, Math.min(left, 5));
        continue;
      }
      const n = Math.min(free, count - written);
      for (let i = 0; i < n; i++) {
        const dst = ((head + i) & this.mask) * WORDS;
        const src = (written + i) * WORDS;
        this.words[dst] = records[src];
        this.words[dst + 1] = records[src + 1];
        this.words[dst + 2] = records[src + 2];
        this.words[dst + 3] = records[src + 3];
      }
      Atomics.store(this.header, HEAD, (head + n) | 0);
      written += n;
    }
    return written;
  }

  /**
   * Consumer: copies up to `max` records into `out` (which must hold max · 4 words) and frees their
   * space. Never blocks. Returns the number copied.
   */
  drain(out: Uint32Array, max: number): number {
    const head = Atomics.load(this.header, HEAD) >>> 0;
    const tail = Atomics.load(this.header, TAIL) >>> 0;
    const n = Math.min((head - tail) >>> 0, max, Math.floor(out.length / WORDS));
    for (let i = 0; i < n; i++) {
      const src = ((tail + i) & this.mask) * WORDS;
      const dst = i * WORDS;
      out[dst] = this.words[src];
      out[dst + 1] = this.words[src + 1];
      out[dst + 2] = this.words[src + 2];
      out[dst + 3] = this.words[src + 3];
    }
    if (n > 0) {
      Atomics.store(this.header, TAIL, (tail + n) | 0);
      Atomics.notify(this.header, TAIL);
    }
    return n;
  }
}
