/**
 * The engine emulator's scheduler loop: the simulator's vLLM engine model (src/sim/engine.ts: continuous
 * batching, chunked prefill, block-level prefix cache with LRU eviction, preemption) run against the
 * wall clock instead of an event queue, and its index records turned into vLLM KV events.
 *
 * Time. The engine lives in simulated milliseconds; a step of `d` simulated ms takes `d · timeScale` wall
 * ms (timeScale 1 is real time, 0.01 runs 100× fast). Simulated time is wall time since the incarnation
 * began, minus time spent stalled, divided by timeScale. Steps run back to back while there is work;
 * a timer wakes the loop when the step in flight ends, and a tick that finds it behind runs every step
 * due (up to MAX_STEPS_PER_TICK) before it yields, so pacing stays exact on average even when one step is
 * shorter than a timer's millisecond. Requests arriving during a step join the next one (vLLM's
 * scheduler also only admits between steps).
 *
 * Events. Each scheduler iteration (the end of one step and the start of the next) drains the engine's
 * records into one batch: consecutive stores of one chain become one BlockStored with its parent hash,
 * token ids and block size; evictions become BlockRemoved; a cache reset AllBlocksCleared. The engine's
 * cache keys are the router's chained block hashes of the request's tokens (prompt, then the known
 * synthetic output), so the engine hashes in the events are the router's hashes of the same tokens.
 *
 * Faults here: `slowFactor` (every step takes that many times longer), `stall(ms)` (no step progresses for
 * that many wall ms), `restart()` (every request dies, a new empty engine) and `stop()`.
 */
import { EngineRequest, SimEngine, rooflineStepModel, type EngineListener, type StepModel } from '../sim/engine.js';
import { OP_CLEAR, OP_REMOVE, OP_STORE, RECORD_WORDS } from '../index/records.js';
import type { EngineModel } from '../model/roofline.js';
import type { Clock } from '../clock.js';
import type { BlockRemovedSpec, BlockStoredSpec, KvEventSpec } from './kv-publisher.js';

/** Most steps one timer tick runs before yielding to I/O. */
const MAX_STEPS_PER_TICK = 512;

/** A request as the loop serves it. Callbacks run synchronously inside the loop. */
export interface LoopRequest {
  /** Prompt then output ids (the output is synthetic and known up front). */
  readonly tokens: Uint32Array;
  readonly promptTokens: number;
  readonly outputTokens: number;
  /** The router's chained hashes of every full block of `tokens`, in the request's namespace. */
  readonly hashes: BigUint64Array;
  /** Tenant salt ('' for none): the first block's extra key in BlockStored, as vLLM reports a cache_salt. */
  readonly salt: string;
  /** Output tokens [from, to) were sampled. */
  onTokens(from: number, to: number): void;
  /** First admission: prompt tokens served from the prefix cache. */
  onAdmitted(hitTokens: number): void;
  /** The last output token was sampled (after its onTokens). */
  onFinish(): void;
  /** The engine died under it (restart, crash, stop). */
  onKilled(): void;
}

export interface EngineLoopOptions {
  engineModel: EngineModel;
  blockSize: number;
  /** KV cache capacity in blocks. */
  kvBlocks: number;
  maxBatchedTokens?: number;
  maxNumSeqs?: number;
  /** Wall ms per simulated ms (> 0). */
  timeScale: number;
  clock: Clock;
  /** One scheduler iteration's KV events, in order (only called with at least one event). */
  onEvents(events: KvEventSpec[]): void;
  /** Preemptions since the last call (metrics). */
  onPreemptions?(n: number): void;
  /** A request callback threw (default: logged). The loop goes on: one bad response must not stop the engine. */
  onError?(err: unknown): void;
}

interface Live {
  q: LoopRequest;
  er: EngineRequest;
  /** Output tokens handed to onTokens. */
  sent: number;
  admitted: boolean;
}

interface BlockMeta {
  parent: bigint | null;
  tokens: number[];
  /** Live requests whose chain holds this block. */
  refs: number;
  salt: string;
}

export class EngineLoop {
  readonly blockSize: number;
  readonly kvBlocks: number;
  readonly timeScale: number;
  /** Every step takes this many times its modeled time (fault knob, ≥ 0.01). */
  slowFactor = 1;
  private engine: SimEngine;
  private readonly stepModel: StepModel;
  private readonly clock: Clock;
  private readonly live = new Set<Live>();
  /** Engine hash → what BlockStored needs (parent, tokens), for blocks of live requests or in the cache. */
  private readonly metas = new Map<bigint, BlockMeta>();
  private readonly finished: EngineRequest[] = [];
  private readonly listener: EngineListener;
  private originRealMs: number;
  private pausedRealMs = 0;
  private stallStartRealMs = NaN;
  private stallEndRealMs = NaN;
  private stepEndSimMs = NaN;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private stallTimer: ReturnType<typeof setTimeout> | null = null;
  private admittedSeen = 0;
  private preemptionsSeen = 0;
  private stopped = false;
  /** Stores whose block the loop did not know (a bug if ever non-zero). */
  unknownStores = 0;

  constructor(private readonly options: EngineLoopOptions) {
    if (!(options.timeScale > 0) || !Number.isFinite(options.timeScale)) throw new RangeError(`Expected \`timeScale\` to be a finite number > 0, got \`${options.timeScale}\``);
    this.blockSize = options.blockSize;
    this.kvBlocks = options.kvBlocks;
    this.timeScale = options.timeScale;
    this.clock = options.clock;
    const model = rooflineStepModel(options.engineModel);
    this.stepModel = { stepS: (news, cached, n, b, ctx) => model.stepS(news, cached, n, b, ctx) * this.slowFactor };
    this.listener = { firstToken: () => {}, finished: (r) => this.finished.push(r) };
    this.engine = this.newEngine();
    this.originRealMs = this.clock.nowMs();
  }

  private newEngine(): SimEngine {
    const o = this.options;
    // Decode runs are not fast-forwarded: every token is delivered at its own step's end.
    return new SimEngine({ id: 'emulator', slot: 0, blockSize: o.blockSize, kvBlocks: o.kvBlocks, stepModel: this.stepModel, maxBatchedTokens: o.maxBatchedTokens, maxNumSeqs: o.maxNumSeqs, fastForward: false });
  }

  /** Simulated ms since this incarnation began (frozen while stalled). */
  simNowMs(): number {
    const real = Number.isNaN(this.stallStartRealMs) ? this.clock.nowMs() : this.stallStartRealMs;
    return (real - this.originRealMs - this.pausedRealMs) / this.timeScale;
  }

  get stalled(): boolean {
    return !Number.isNaN(this.stallStartRealMs);
  }

  /** Whether a request of this size can ever be held (prompt + output within the KV capacity). */
  fits(promptTokens: number, outputTokens: number): boolean {
    return this.engine.fits(promptTokens, outputTokens);
  }

  /** Queues a request; it is scheduled at the next step. Returns a handle for abort(). */
  submit(q: LoopRequest): object {
    if (this.stopped) throw new Error('EngineLoop: stopped');
    const nBlocks = Math.min(q.hashes.length, Math.floor(q.tokens.length / this.blockSize));
    for (let k = 0; k < nBlocks; k++) {
      const h = q.hashes[k];
      let m = this.metas.get(h);
      if (!m) {
        m = { parent: k === 0 ? null : q.hashes[k - 1], tokens: Array.from(q.tokens.subarray(k * this.blockSize, (k + 1) * this.blockSize)), refs: 0, salt: k === 0 ? q.salt : '' };
        this.metas.set(h, m);
      }
      m.refs++;
    }
    // The engine reads the chain as (lo, hi) u32 pairs: the hashes' own little-endian words.
    const words = new Uint32Array(q.hashes.buffer, q.hashes.byteOffset, 2 * nBlocks);
    const live: Live = { q, er: null as unknown as EngineRequest, sent: 0, admitted: false };
    live.er = new EngineRequest(q.promptTokens, q.outputTokens, words, nBlocks, live);
    this.live.add(live);
    this.engine.submit(live.er);
    this.kick();
    return live;
  }

  /** The client went away: the request leaves the engine (its cached blocks stay cached). */
  abort(handle: object): void {
    const live = handle as Live;
    if (!this.live.has(live)) return;
    this.engine.abort(live.er);
    this.live.delete(live);
    this.release(live);
    this.kick();
  }

  /** No step progresses for `ms` wall ms (extends a stall in progress). */
  stall(ms: number): void {
    if (this.stopped || !(ms > 0)) return;
    const now = this.clock.nowMs();
    if (!this.stalled) this.stallStartRealMs = now;
    this.stallEndRealMs = Math.max(Number.isNaN(this.stallEndRealMs) ? 0 : this.stallEndRealMs, now + ms);
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.stallTimer) clearTimeout(this.stallTimer);
    this.stallTimer = setTimeout(() => this.endStall(), this.stallEndRealMs - now);
  }

  private endStall(): void {
    this.stallTimer = null;
    if (!this.stalled) return;
    this.pausedRealMs += this.clock.nowMs() - this.stallStartRealMs;
    this.stallStartRealMs = NaN;
    this.stallEndRealMs = NaN;
    if (this.engine.stepping) this.arm();
    else this.kick();
  }

  /** A new incarnation: every request is killed, the cache is empty, simulated time starts again at 0. */
  restart(): void {
    this.killAll();
    this.engine = this.newEngine();
    this.originRealMs = this.clock.nowMs();
    this.pausedRealMs = 0;
  }

  /** Kills every request and stops stepping for good. */
  stop(): void {
    this.stopped = true;
    this.killAll();
  }

  /** Resets the prefix cache (vLLM's reset_prefix_cache): AllBlocksCleared goes out at once. */
  resetPrefixCache(): void {
    if (this.stopped) return;
    this.engine.flushCache();
    this.flushRecords();
  }

  private killAll(): void {
    if (this.timer) clearTimeout(this.timer);
    if (this.stallTimer) clearTimeout(this.stallTimer);
    this.timer = this.stallTimer = null;
    this.stallStartRealMs = this.stallEndRealMs = this.stepEndSimMs = NaN;
    this.engine.kill();
    const dying = [...this.live];
    this.live.clear();
    this.metas.clear();
    this.admittedSeen = this.preemptionsSeen = 0;
    for (const l of dying) this.call(() => l.q.onKilled());
  }

  /** Requests running and waiting, KV usage (0 … 1), cached blocks. */
  load(): { running: number; waiting: number; kvUsage: number; cachedBlocks: number; prefillTokens: number } {
    const r = this.engine.loadReport();
    return { running: r.running, waiting: r.waiting, kvUsage: r.kvUsage, prefillTokens: r.prefillTokens, cachedBlocks: this.engine.cachedBlocks() };
  }

  /** Engine counters (steps, evictions, stored blocks, …) of this incarnation. */
  get engineStats(): SimEngine['stats'] {
    return this.engine.stats;
  }

  /** Block metadata entries held (bounded by live requests' blocks plus the cache). */
  get trackedBlocks(): number {
    return this.metas.size;
  }

  // ------------------------------------------------------------ stepping

  private kick(): void {
    if (this.stopped || this.stalled || this.engine.stepping || !this.engine.hasWork) return;
    this.startStep(this.simNowMs());
    this.flushRecords();
    if (this.engine.stepping) this.arm();
  }

  /** Schedules a step at `atSimMs`; false when nothing could be scheduled (the engine idles). */
  private startStep(atSimMs: number): boolean {
    const ms = this.engine.beginStep(atSimMs);
    this.noteAdmissions();
    if (ms <= 0) {
      this.stepEndSimMs = NaN;
      return false;
    }
    this.stepEndSimMs = atSimMs + ms;
    return true;
  }

  private arm(): void {
    if (this.timer) clearTimeout(this.timer);
    const delayMs = Math.max(0, (this.stepEndSimMs - this.simNowMs()) * this.timeScale);
    this.timer = setTimeout(this.onTimer, delayMs);
  }

  private readonly onTimer = (): void => {
    this.timer = null;
    if (this.stopped || this.stalled || !this.engine.stepping) return;
    const now = this.simNowMs();
    for (let n = 0; n < MAX_STEPS_PER_TICK && this.engine.stepping && this.stepEndSimMs <= now; n++) {
      const end = this.stepEndSimMs;
      this.finishStep(end);
      if (this.engine.hasWork) this.startStep(end);
      this.flushRecords();
      if (this.stopped || this.stalled) return; // a callback stopped or stalled the engine
    }
    if (this.engine.stepping) this.arm();
    else this.kick();
  };

  private finishStep(atSimMs: number): void {
    this.finished.length = 0;
    this.engine.endStep(atSimMs, this.listener);
    for (const r of this.engine.running) this.deliver(r.tag as Live);
    for (const r of this.finished) {
      const live = r.tag as Live;
      this.deliver(live);
      this.live.delete(live);
      this.release(live);
      this.call(() => live.q.onFinish());
    }
    const p = this.engine.stats.preemptions;
    if (p !== this.preemptionsSeen) {
      this.options.onPreemptions?.(p - this.preemptionsSeen);
      this.preemptionsSeen = p;
    }
  }

  private deliver(live: Live): void {
    const to = Math.min(live.er.generated, live.q.outputTokens);
    if (to <= live.sent) return;
    const from = live.sent;
    live.sent = to;
    this.call(() => live.q.onTokens(from, to));
  }

  private noteAdmissions(): void {
    if (this.engine.stats.admitted === this.admittedSeen) return;
    this.admittedSeen = this.engine.stats.admitted;
    for (const r of this.engine.running) {
      const live = r.tag as Live;
      if (live.admitted || r.hitTokens < 0) continue;
      live.admitted = true;
      const hit = r.hitTokens;
      this.call(() => live.q.onAdmitted(hit));
    }
  }

  private call(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      if (this.options.onError) this.options.onError(err);
      else console.error('engine emulator: a request callback failed:', err);
    }
  }

  /** A request left: its blocks' metadata goes unless another request or the cache still holds them. */
  private release(live: Live): void {
    const words = live.er.hashes;
    for (let k = 0; k < live.er.hashBlocks; k++) {
      const h = live.q.hashes[k];
      const m = this.metas.get(h);
      if (!m || --m.refs > 0) continue;
      if (!this.engine.isCached(words[2 * k], words[2 * k + 1])) this.metas.delete(h);
    }
  }

  // ------------------------------------------------------------ events

  /** Turns the engine's pending records into one batch of vLLM events. */
  private flushRecords(): void {
    const recs = this.engine.takeRecords();
    if (!recs) return;
    const events: KvEventSpec[] = [];
    let stored: BlockStoredSpec | null = null;
    let removed: BlockRemovedSpec | null = null;
    for (let at = 0; at < recs.length; at += RECORD_WORDS) {
      const op = recs[at] & 0xff;
      const h = (BigInt(recs[at + 3]) << 32n) | BigInt(recs[at + 2]);
      if (op === OP_STORE) {
        removed = null;
        const m = this.metas.get(h);
        if (!m) {
          this.unknownStores++;
          stored = null;
          continue;
        }
        if (stored !== null && stored.hashes[stored.hashes.length - 1] === m.parent) {
          stored.hashes.push(h);
          for (const t of m.tokens) stored.tokens.push(t);
          stored.extraKeys?.push(null);
        } else {
          stored = { type: 'BlockStored', hashes: [h], parent: m.parent, tokens: m.tokens.slice(), blockSize: this.blockSize, extraKeys: m.salt ? [[m.salt]] : null };
          events.push(stored);
        }
      } else if (op === OP_REMOVE) {
        stored = null;
        if (removed === null) {
          removed = { type: 'BlockRemoved', hashes: [] };
          events.push(removed);
        }
        removed.hashes.push(h);
        const m = this.metas.get(h);
        if (m && m.refs === 0) this.metas.delete(h);
      } else if (op === OP_CLEAR) {
        stored = removed = null;
        events.push({ type: 'AllBlocksCleared' });
        for (const [k, m] of this.metas) if (m.refs === 0) this.metas.delete(k);
      }
    }
    if (events.length > 0) this.options.onEvents(events);
  }
}
