/**
 * Orders the batches of one event stream — one (replica, data-parallel rank) publisher — and repairs
 * its gaps (DESIGN §8). PUB/SUB drops messages at the high-water mark, on late subscription and across
 * restarts, so gaps are normal: each is detected from the sequence numbers, repaired by a replay from
 * the publisher's buffer, and the batches are applied exactly once, in order.
 *
 * Rules, with `last` the last applied seq (−1 before any):
 * - seq = last + 1 is applied at once; seq ≤ last is a duplicate, dropped and counted.
 * - seq > last + 1 is a gap: the frame is buffered and a replay is requested. Live frames that arrive
 *   during the replay are buffered (at most `maxBuffered`) and applied after it, duplicates ignored.
 *   The first frame of a stream with seq > 0 is a gap from 0.
 * - A replay starts at `last` itself, not last + 1: the publisher sends that batch again and its `ts`
 *   must equal the one applied. A different ts means the publisher restarted and its seqs now name
 *   other batches (a restart can otherwise pass for an ordinary gap when its first frames were lost).
 * - A restarted publisher counts from 0 again. A live frame with seq ≤ the highest seen is a restart,
 *   not a duplicate, when its ts is newer than every batch seen (for seq 0: unless its ts is not newer;
 *   vLLM's ts is the wall clock at publication and a duplicate carries its original ts). A live frame
 *   with seq > last but a ts older than the last applied batch is from an earlier incarnation: dropped.
 *   A restart wipes the stream's state and starts over at seq 0.
 * - A replay that fails (error, timeout, no replay source) is retried with exponential backoff on the
 *   injected timers; the live path never waits for it. After `maxAttempts` failures, when the buffer
 *   overflows, or when the replay shows a hole (its first batch is newer than the one asked for: the
 *   publisher no longer holds it), the stream cannot be recovered: its state is wiped, the stream is
 *   marked unknown, and the batches at hand are applied as new events. The replica is then routed by
 *   load only for what was lost; it is unknown until the next batch is applied.
 * - The owner can ask for a resync (a BlockStored with an unknown parent in a complete state): the state
 *   is wiped and rebuilt by a replay from seq 0. Granted at most once per `resyncCooldownMs`, so a batch
 *   that is inconsistent in itself cannot loop.
 *
 * State: 'unknown' until the first batch is applied and after an unrecoverable loss until the next
 * one; 'replaying' while a repair runs; 'synced' otherwise (an announced restart is 'synced': the new
 * incarnation's cache is empty, as its index entries now are).
 *
 * Single-threaded: the replay runs as an async task; between its awaits the live path only buffers.
 */
import { systemClock, type Clock } from '../clock.js';

export interface ReplayFrame {
  seq: number;
  payload: Uint8Array;
}

/** A publisher's replay buffer: the batches with seq ≥ fromSeq it still holds, in order; throws on failure. */
export interface ReplaySource {
  replay(fromSeq: number, signal: AbortSignal): AsyncIterable<ReplayFrame>;
}

/** Injected timers (STYLE 8), so backoff is driven by a fake scheduler in tests. */
export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const realTimers: Timers = {
  setTimeout: (fn, ms) => {
    const t = setTimeout(fn, ms);
    // A pending retry must not keep the process alive on its own.
    t.unref?.();
    return t;
  },
  clearTimeout: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
};

export type StreamState = 'synced' | 'replaying' | 'unknown';

/** What happened, for metrics. */
export type SequencerEvent =
  | 'duplicate'
  | 'stale'
  | 'gap'
  | 'replay'
  | 'replay-ok'
  | 'replay-failed'
  | 'hole'
  | 'overflow'
  | 'give-up'
  | 'reset'
  | 'resync';

export interface SequencerHooks<T> {
  /** Decodes a replayed payload (live frames arrive decoded). */
  decode(payload: Uint8Array): T;
  /** The batch's publisher timestamp, NaN when unknown (a rejected batch). */
  tsOf(item: T): number;
  /** Applies one batch, in order. May call requestResync(). */
  apply(seq: number, item: T): void;
  /** Wipes the stream's state; `fromStart`: the batches that follow start at the publisher's seq 0. */
  wipe(fromStart: boolean): void;
  /** Metrics. */
  onEvent?(event: SequencerEvent): void;
}

export interface SequencerOptions {
  replay?: ReplaySource;
  timers?: Timers;
  clock?: Clock;
  /** Live frames held while a replay runs (default 10,000, vLLM's replay buffer). */
  maxBuffered?: number;
  /** Replay attempts before giving up (default 5). */
  maxAttempts?: number;
  /** First retry delay (ms, default 100), doubled per failure up to maxBackoffMs (default 5,000). */
  backoffMs?: number;
  maxBackoffMs?: number;
  /** Least time between two granted resyncs (ms, default 60,000). */
  resyncCooldownMs?: number;
}

interface Pending<T> {
  seq: number;
  item: T;
}

export class Sequencer<T> {
  private readonly hooks: SequencerHooks<T>;
  private readonly source?: ReplaySource;
  private readonly timers: Timers;
  private readonly clock: Clock;
  private readonly maxBuffered: number;
  private readonly maxAttempts: number;
  private readonly backoffMs: number;
  private readonly maxBackoffMs: number;
  private readonly resyncCooldownMs: number;

  /** Last applied seq (−1: none since the start or the last restart). */
  private last = -1;
  private lastTs = NaN;
  /** Newest ts of any batch seen (applied or buffered) in this incarnation. */
  private maxTs = -Infinity;
  /** Highest seq seen in this incarnation (a resync sets `last` back to −1; a give-up resumes after this). */
  private highWater = -1;
  /** Live frames waiting for a repair, sorted by seq. */
  private pending: Pending<T>[] = [];
  private readonly pendingSeqs = new Set<number>();
  private repairing = false;
  /** Nothing known yet, or wiped after an unrecoverable loss; cleared by the next applied batch. */
  private unknown = true;
  private attempts = 0;
  /** Bumped by every restart and close: a task from an older generation stops touching state. */
  private gen = 0;
  private abort: AbortController | null = null;
  private timer: unknown = null;
  private task: Promise<void> | null = null;
  private resyncWanted = false;
  private lastResyncMs = -Infinity;
  private closed = false;

  constructor(hooks: SequencerHooks<T>, options: SequencerOptions = {}) {
    this.hooks = hooks;
    this.source = options.replay;
    this.timers = options.timers ?? realTimers;
    this.clock = options.clock ?? systemClock;
    this.maxBuffered = options.maxBuffered ?? 10_000;
    this.maxAttempts = options.maxAttempts ?? 5;
    this.backoffMs = options.backoffMs ?? 100;
    this.maxBackoffMs = options.maxBackoffMs ?? 5_000;
    this.resyncCooldownMs = options.resyncCooldownMs ?? 60_000;
  }

  get state(): StreamState {
    if (this.repairing) return 'replaying';
    return this.unknown ? 'unknown' : 'synced';
  }

  /** Last applied seq, −1 when none. */
  get lastSeq(): number {
    return this.last;
  }

  /** Live frames waiting for a repair. */
  get buffered(): number {
    return this.pending.length;
  }

  /** A live frame. Never waits: during a repair it is buffered. */
  push(seq: number, item: T): void {
    if (this.closed) return;
    const ts = this.hooks.tsOf(item);
    if (this.isRestart(seq, ts)) {
      this.emit('reset');
      this.restartStream();
    } else if (seq > this.last && ts < this.lastTs) {
      this.emit('stale');
      return;
    }
    if (!this.repairing) {
      if (seq === this.last + 1) {
        this.applyOne(seq, item);
        if (this.resyncWanted) this.beginResync();
        return;
      }
      if (seq <= this.last) {
        this.emit('duplicate');
        return;
      }
      this.emit('gap');
      this.insert(seq, item);
      this.startRepair();
      return;
    }
    if (seq <= this.last || this.pendingSeqs.has(seq)) {
      this.emit('duplicate');
      return;
    }
    if (this.pending.length >= this.maxBuffered) {
      this.insert(seq, item);
      this.giveUp('overflow');
      return;
    }
    this.insert(seq, item);
  }

  /**
   * Asks for the state to be rebuilt from seq 0 (called from `apply`). Returns false when it cannot be
   * (no replay source, or one was granted less than resyncCooldownMs ago).
   */
  requestResync(): boolean {
    if (!this.source || this.closed) return false;
    const now = this.clock.nowMs();
    if (now - this.lastResyncMs < this.resyncCooldownMs) return false;
    this.lastResyncMs = now;
    this.resyncWanted = true;
    return true;
  }

  /**
   * A new incarnation announced by the owner: stops any repair, drops buffered frames, wipes the state
   * through the wipe hook (unless the owner wipes it itself: `wipe` false) and expects seq 0 next.
   */
  restart(wipe = true): void {
    this.restartStream(wipe);
  }

  /** A replay task is running (a retry waiting on a timer is not). */
  get running(): boolean {
    return this.task !== null;
  }

  /** Resolves when no replay task is running (a retry waiting on a timer does not count). */
  async idle(): Promise<void> {
    while (this.task) await this.task;
  }

  close(): void {
    this.closed = true;
    this.gen++;
    this.abort?.abort();
    this.abort = null;
    if (this.timer !== null) this.timers.clearTimeout(this.timer);
    this.timer = null;
    this.pending = [];
    this.pendingSeqs.clear();
    this.repairing = false;
  }

  // ---------- internals ----------

  private emit(e: SequencerEvent): void {
    this.hooks.onEvent?.(e);
  }

  private highestSeen(): number {
    return this.pending.length > 0 ? Math.max(this.last, this.pending[this.pending.length - 1].seq) : this.last;
  }

  private isRestart(seq: number, ts: number): boolean {
    const highest = this.highestSeen();
    if (highest < 0 || seq > highest) return false;
    // seq went back: a duplicate carries its original (older) ts; a restarted publisher a newer one.
    if (seq === 0) return !(ts <= this.maxTs);
    return ts > this.maxTs;
  }

  private restartStream(wipe = true): void {
    this.gen++;
    this.abort?.abort();
    this.abort = null;
    if (this.timer !== null) this.timers.clearTimeout(this.timer);
    this.timer = null;
    this.pending = [];
    this.pendingSeqs.clear();
    this.repairing = false;
    this.resyncWanted = false;
    this.attempts = 0;
    this.last = -1;
    this.lastTs = NaN;
    this.maxTs = -Infinity;
    this.highWater = -1;
    this.unknown = false;
    if (wipe) this.hooks.wipe(true);
  }

  private insert(seq: number, item: T): void {
    const ts = this.hooks.tsOf(item);
    if (ts > this.maxTs) this.maxTs = ts;
    if (seq > this.highWater) this.highWater = seq;
    const p = this.pending;
    let i = p.length;
    while (i > 0 && p[i - 1].seq > seq) i--;
    p.splice(i, 0, { seq, item });
    this.pendingSeqs.add(seq);
  }

  private takeFirst(): Pending<T> {
    const p = this.pending.shift()!;
    this.pendingSeqs.delete(p.seq);
    return p;
  }

  private applyOne(seq: number, item: T): void {
    this.hooks.apply(seq, item);
    const ts = this.hooks.tsOf(item);
    this.last = seq;
    this.lastTs = ts;
    if (ts > this.maxTs) this.maxTs = ts;
    if (seq > this.highWater) this.highWater = seq;
    this.unknown = false;
  }

  /** Applies buffered frames that follow `last` without a hole; drops those at or below it. */
  private drain(): void {
    while (this.pending.length > 0 && !this.resyncWanted) {
      const p = this.pending[0];
      if (p.seq <= this.last) {
        this.takeFirst();
        this.emit('duplicate');
        continue;
      }
      if (p.seq !== this.last + 1) return;
      this.takeFirst();
      this.applyOne(p.seq, p.item);
    }
  }

  private startRepair(): void {
    this.repairing = true;
    this.attempts = 0;
    this.runReplay();
  }

  private runReplay(): void {
    this.timer = null;
    const gen = this.gen;
    const p = this.replayOnce(gen).catch(() => undefined);
    this.task = p;
    void p.finally(() => {
      if (this.task === p) this.task = null;
    });
  }

  private async replayOnce(gen: number): Promise<void> {
    if (!this.source) {
      this.emit('replay-failed');
      this.giveUp('give-up');
      return;
    }
    this.emit('replay');
    const ac = new AbortController();
    this.abort = ac;
    // Start at `last` to see that batch again and check the publisher's incarnation by its ts.
    const from = this.last >= 0 ? this.last : 0;
    let progressed = false;
    let failed = false;
    let restarted = false;
    let restartTs = NaN;
    try {
      for await (const f of this.source.replay(from, ac.signal)) {
        if (gen !== this.gen) return;
        if (f.seq < from) continue;
        if (this.last >= 0 && f.seq === this.last) {
          const ts = this.hooks.tsOf(this.hooks.decode(f.payload));
          if (!Number.isNaN(ts) && !Number.isNaN(this.lastTs) && ts !== this.lastTs) {
            restarted = true;
            restartTs = ts;
            break;
          }
          continue;
        }
        if (f.seq <= this.last) continue;
        const item = this.hooks.decode(f.payload);
        if (f.seq > this.last + 1) {
          // The publisher no longer holds what we need: what was lost stays lost.
          this.emit('hole');
          this.lose();
        }
        this.applyOne(f.seq, item);
        progressed = true;
        if (this.resyncWanted) break;
      }
    } catch {
      failed = true;
    } finally {
      if (this.abort === ac) this.abort = null;
      ac.abort();
    }
    if (gen !== this.gen) return;
    if (restarted) {
      this.emit('reset');
      const held = this.pending;
      this.restartStream();
      // Buffered frames (all with seq > the old last) belong to the new incarnation exactly when they
      // are newer than its batch at that seq; the old incarnation's are all older.
      for (const p of held) if (this.hooks.tsOf(p.item) > restartTs) this.push(p.seq, p.item);
      if (!this.repairing) this.startRepair();
      return;
    }
    if (this.resyncWanted) {
      this.beginResync();
      return;
    }
    this.drain();
    if (this.resyncWanted) {
      this.beginResync();
      return;
    }
    if (!failed && this.pending.length === 0) {
      this.emit('replay-ok');
      this.repairing = false;
      this.attempts = 0;
      return;
    }
    if (progressed && !failed) {
      // It moved forward but live frames ran ahead again: another round, at once.
      this.attempts = 0;
      this.runReplay();
      return;
    }
    this.emit('replay-failed');
    this.attempts++;
    if (this.attempts >= this.maxAttempts) {
      this.giveUp('give-up');
      return;
    }
    const delay = Math.min(this.maxBackoffMs, this.backoffMs * 2 ** (this.attempts - 1));
    this.timer = this.timers.setTimeout(() => {
      if (gen === this.gen) this.runReplay();
    }, delay);
  }

  /** Marks what came before as lost: wipe, unknown. */
  private lose(): void {
    this.hooks.wipe(false);
    this.unknown = true;
  }

  /**
   * The stream cannot be repaired (`give-up`: attempts exhausted or no replay source; `overflow`: the
   * live buffer filled): wipe, mark unknown, apply what is at hand in order as new events.
   */
  private giveUp(cause: 'overflow' | 'give-up'): void {
    this.emit(cause);
    // A replay still running (an overflow from the live path) must not touch the state any more.
    this.gen++;
    this.abort?.abort();
    this.abort = null;
    if (this.timer !== null) this.timers.clearTimeout(this.timer);
    this.timer = null;
    this.lose();
    this.repairing = false;
    this.attempts = 0;
    while (this.pending.length > 0 && !this.resyncWanted) {
      const p = this.takeFirst();
      if (p.seq <= this.last) continue;
      this.applyOne(p.seq, p.item);
    }
    if (this.resyncWanted) {
      this.beginResync();
      return;
    }
    // What was seen and lost stays lost: the next live frame after it is in order.
    if (this.highWater > this.last) {
      this.last = this.highWater;
      this.lastTs = NaN;
    }
  }

  /** Wipe and rebuild from seq 0; live frames stay buffered and are applied after the replay. */
  private beginResync(): void {
    this.resyncWanted = false;
    this.emit('resync');
    this.gen++;
    this.abort?.abort();
    this.abort = null;
    if (this.timer !== null) this.timers.clearTimeout(this.timer);
    this.timer = null;
    this.hooks.wipe(true);
    this.last = -1;
    this.lastTs = NaN;
    this.unknown = false;
    this.startRepair();
  }
}
