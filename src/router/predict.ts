/**
 * TTFT prediction per candidate (DESIGN §4, `predicted-ttft`): the prefill work queued ahead of the
 * request at the replica, plus this request's uncached prefill, at the replica's pool's prefill rate
 * from the roofline model (DESIGN §5), plus decode interference (chunked prefill shares every step with
 * the running decodes), times a per-replica calibration factor learned online from observed TTFTs
 * (EWMA of observed / predicted).
 */
import { EngineModel, engineModel } from '../model/roofline.js';
import type { FleetSnapshot, PoolView } from '../fleet/fleet.js';
import type { LoadTable } from '../fleet/load.js';
import type { InflightTracker } from './inflight.js';

/** Prefill tokens per engine step with chunked prefill (vLLM's max_num_batched_tokens default). */
export const CHUNK_TOKENS = 2048;
/** EWMA weight of a new TTFT observation. */
export const CALIBRATION_ALPHA = 0.2;
/** The calibration factor stays within [1/4, 4]: one wild observation cannot poison a replica. */
const FACTOR_MIN = 0.25;
const FACTOR_MAX = 4;
/** Context tokens assumed per running request when estimating decode interference. */
const CONTEXT_PER_RUNNING = 2048;

export interface PoolRates {
  engine: EngineModel | null;
  /** Fallback prefill rate (tokens/s) when the pool's hardware is not in the model tables. */
  prefillTokensPerS: number;
  /** Fallback decode step time per running request (s). */
  decodeStepS: number;
}

export class TtftPredictor {
  private readonly rates = new Map<string, PoolRates>();
  /** Calibration factor per slot (1 = trust the model). */
  readonly factor: Float64Array;

  constructor(
    capacity: number,
    private readonly load: LoadTable,
    private readonly inflight: InflightTracker,
    private readonly overrides: Readonly<Record<string, Partial<Pick<PoolRates, 'prefillTokensPerS' | 'decodeStepS'>>>> = {},
  ) {
    this.factor = new Float64Array(capacity).fill(1);
  }

  /** (Re)builds the per-pool rates from a fleet snapshot (control path). */
  onFleet(snapshot: FleetSnapshot): void {
    for (const pool of snapshot.pools) {
      if (this.rates.has(pool.id)) continue;
      let engine: EngineModel | null = null;
      try {
        engine = engineModel(pool.model, pool.accelerator, pool.tensorParallel);
      } catch {
        engine = null;
      }
      const o = this.overrides[pool.id] ?? {};
      this.rates.set(pool.id, {
        engine,
        prefillTokensPerS: o.prefillTokensPerS ?? (engine ? engine.prefillTokensPerS(CHUNK_TOKENS) : 10_000),
        decodeStepS: o.decodeStepS ?? (engine ? engine.decodeStepS(1, CONTEXT_PER_RUNNING) : 0.02),
      });
    }
  }

  ratesOf(pool: PoolView): PoolRates {
    let r = this.rates.get(pool.id);
    if (!r) {
      this.onFleet({ pools: [pool] } as unknown as FleetSnapshot);
      r = this.rates.get(pool.id)!;
    }
    return r;
  }

  /** Prefill tokens queued ahead at a slot: the router's own count, or the engine's report if larger. */
  queuedPrefillTokens(slot: number): number {
    const own = this.inflight.prefillTokens[slot];
    const reported = this.load.prefillTokens[slot];
    return Number.isFinite(reported) && reported > own ? reported : own;
  }

  /** Requests decoding at a slot (engine report when known, else the router's in-flight count). */
  running(slot: number): number {
    const r = this.load.running[slot];
    return Number.isFinite(r) ? Math.max(r, this.inflight.requests[slot]) : this.inflight.requests[slot];
  }

  /**
   * Predicted time to first token in ms for a request with `uncached` prompt tokens to prefill after
   * `cached` tokens hit the cache, at replica `slot` of `pool`.
   */
  predictMs(slot: number, pool: PoolView, uncached: number, cached: number): number {
    const r = this.ratesOf(pool);
    const ahead = this.queuedPrefillTokens(slot);
    const running = this.running(slot);
    let prefillS: number;
    let stepS: number;
    if (r.engine && !this.overrides[pool.id]?.prefillTokensPerS) {
      prefillS = ahead / r.prefillTokensPerS + (uncached > 0 ? r.engine.prefillS(uncached, cached) : 0);
      stepS = running > 0 ? r.engine.decodeStepS(running, running * CONTEXT_PER_RUNNING) : 0;
    } else {
      prefillS = (ahead + uncached) / r.prefillTokensPerS;
      stepS = running > 0 ? r.decodeStepS : 0;
    }
    const steps = Math.ceil((ahead + uncached) / CHUNK_TOKENS);
    return (prefillS + steps * stepS) * 1000 * this.factor[slot];
  }

  /** Online calibration from an observed TTFT (ms) of a request predicted at `predictedMs`. */
  observe(slot: number, predictedMs: number, observedMs: number): void {
    if (!(predictedMs > 0) || !Number.isFinite(observedMs) || observedMs < 0) return;
    const raw = this.factor[slot] * (observedMs / predictedMs);
    const ratio = Math.min(FACTOR_MAX, Math.max(FACTOR_MIN, raw));
    this.factor[slot] = (1 - CALIBRATION_ALPHA) * this.factor[slot] + CALIBRATION_ALPHA * ratio;
  }

  reset(slot: number): void {
    this.factor[slot] = 1;
  }
}
