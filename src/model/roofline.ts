/**
 * Roofline step-time model of an inference engine (DESIGN §5), from Vidur's profiles, BLIS coefficients
 * and the vendors' specifications. It predicts how long one engine step takes — a prefill of n new
 * tokens on top of p cached ones, or a decode step of a batch — and how many KV tokens a replica holds.
 *
 *   prefill FLOPs = 2·P_lin·Σn_i + Σ 4·L·H·hd·n_i·(p_i + n_i/2)
 *   t_prefill     = FLOPs / (TP · peak · eff(Σn)),    eff(n) = 0.66 · n / (n + 150)
 *   t_decode      = max((W + C·kv) / (TP · BW · 0.70), (2·P_lin·B + 4·L·H·hd·C) / (TP · peak · 0.5))
 *   t_overhead    = 32 µs·L + 126 µs + 4.4 µs·B  (+ 2·L all-reduces of 30 µs when TP > 1)
 *   KV capacity   = (TP · HBM · 0.90 − W) / kv   tokens
 *
 * Units: seconds, bytes, FLOP/s, tokens. The efficiency factors were fitted on H100s; TPU and
 * Trainium figures reuse them and are marked `calibrated: false` — treat them as rough.
 */
import { fail } from '../errors.js';

export interface ChipSpec {
  name: string;
  /** Dense BF16 peak, FLOP/s. */
  peakFlops: number;
  /** HBM capacity, bytes. */
  hbmBytes: number;
  /** HBM bandwidth, bytes/s. */
  hbmBandwidth: number;
  /** Whether the efficiency factors were fitted on this kind of chip. */
  calibrated: boolean;
}

export interface ModelShape {
  name: string;
  layers: number;
  dModel: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  /** Parameters in linear layers (the 2·P FLOPs per token), count. */
  linearParams: number;
  /** Weight bytes at the serving precision. */
  weightBytes: number;
  /** KV-cache bytes per token (2 · layers · kvHeads · headDim · bytes per element). */
  kvBytesPerToken: number;
}

const TB = 1e12;
const GB = 1e9;

export const CHIPS: Readonly<Record<string, ChipSpec>> = Object.freeze({
  A100: { name: 'A100 SXM', peakFlops: 312 * TB, hbmBytes: 80 * GB, hbmBandwidth: 2.039 * TB, calibrated: true },
  H100: { name: 'H100 SXM', peakFlops: 989 * TB, hbmBytes: 80 * GB, hbmBandwidth: 3.35 * TB, calibrated: true },
  H200: { name: 'H200', peakFlops: 989 * TB, hbmBytes: 141 * GB, hbmBandwidth: 4.8 * TB, calibrated: true },
  B200: { name: 'B200', peakFlops: 2250 * TB, hbmBytes: 180 * GB, hbmBandwidth: 8 * TB, calibrated: true },
  'TPU v5e': { name: 'TPU v5e', peakFlops: 197 * TB, hbmBytes: 16 * GB, hbmBandwidth: 0.819 * TB, calibrated: false },
  'TPU v5p': { name: 'TPU v5p', peakFlops: 459 * TB, hbmBytes: 95 * GB, hbmBandwidth: 2.765 * TB, calibrated: false },
  'TPU v6e': { name: 'TPU v6e', peakFlops: 918 * TB, hbmBytes: 32 * GB, hbmBandwidth: 1.638 * TB, calibrated: false },
  Trainium2: { name: 'Trainium2', peakFlops: 667 * TB, hbmBytes: 96 * 2 ** 30, hbmBandwidth: 2.9 * TB, calibrated: false },
});

export const MODELS: Readonly<Record<string, ModelShape>> = Object.freeze({
  'llama-3-8b': { name: 'Llama-3-8B', layers: 32, dModel: 4096, heads: 32, kvHeads: 8, headDim: 128, linearParams: 6.98e9, weightBytes: 16.1 * GB, kvBytesPerToken: 131072 },
  'llama-3-70b': { name: 'Llama-3-70B', layers: 80, dModel: 8192, heads: 64, kvHeads: 8, headDim: 128, linearParams: 68.45e9, weightBytes: 141.1 * GB, kvBytesPerToken: 327680 },
});

/** Prefill efficiency: the share of peak a prefill of n tokens reaches. */
export function prefillEfficiency(tokens: number): number {
  return (0.66 * tokens) / (tokens + 150);
}

/** Fixed per-step cost in seconds (kernel launches, scheduling; all-reduces with TP > 1). */
export function stepOverheadS(model: ModelShape, tp: number, batch: number): number {
  const base = 32e-6 * model.layers + 126e-6 + 4.4e-6 * batch;
  return tp > 1 ? base + 2 * model.layers * 30e-6 : base;
}

/** One engine's hardware: a model on TP chips of one kind. */
export class EngineModel {
  constructor(
    readonly model: ModelShape,
    readonly chip: ChipSpec,
    readonly tp: number,
  ) {
    if (!Number.isInteger(tp) || tp < 1) fail('DYSTRO_ERR_INVALID_CONFIG', 'tensorParallel', 'an integer ≥ 1', tp);
    if (this.kvCapacityTokens() <= 0) {
      fail('DYSTRO_ERR_INVALID_CONFIG', `${model.name} on ${tp}× ${chip.name}`, 'a configuration whose weights fit in 90% of HBM', `${model.weightBytes} B of weights`);
    }
  }

  /** Tokens of KV cache a replica holds. */
  kvCapacityTokens(): number {
    return Math.floor((this.tp * this.chip.hbmBytes * 0.9 - this.model.weightBytes) / this.model.kvBytesPerToken);
  }

  /** FLOPs of prefilling `newTokens` after `cachedTokens` already in the KV cache. */
  prefillFlops(newTokens: number, cachedTokens: number): number {
    const m = this.model;
    return 2 * m.linearParams * newTokens + 4 * m.layers * m.heads * m.headDim * newTokens * (cachedTokens + newTokens / 2);
  }

  /**
   * Time of one prefill step over several sequences (chunked prefill batches them): `news[i]` new
   * tokens on `cached[i]` cached ones. Includes the step overhead.
   */
  prefillStepS(news: readonly number[], cached: readonly number[]): number {
    let flops = 0;
    let total = 0;
    for (let i = 0; i < news.length; i++) {
      flops += this.prefillFlops(news[i], cached[i] ?? 0);
      total += news[i];
    }
    if (total === 0) return 0;
    return flops / (this.tp * this.chip.peakFlops * prefillEfficiency(total)) + stepOverheadS(this.model, this.tp, news.length);
  }

  /** Time to prefill one prompt alone: `newTokens` uncached after `cachedTokens` cached. */
  prefillS(newTokens: number, cachedTokens = 0): number {
    return this.prefillStepS([newTokens], [cachedTokens]);
  }

  /** Prefill throughput (tokens/s) for prompts of `tokens` tokens with nothing cached. */
  prefillTokensPerS(tokens: number): number {
    return tokens / this.prefillS(tokens, 0);
  }

  /** One decode step: `batch` sequences holding `contextTokens` KV tokens in all. */
  decodeStepS(batch: number, contextTokens: number): number {
    if (batch <= 0) return 0;
    const m = this.model;
    const memory = (m.weightBytes + contextTokens * m.kvBytesPerToken) / (this.tp * this.chip.hbmBandwidth * 0.7);
    const compute = (2 * m.linearParams * batch + 4 * m.layers * m.heads * m.headDim * contextTokens) / (this.tp * this.chip.peakFlops * 0.5);
    return Math.max(memory, compute) + stepOverheadS(m, this.tp, batch);
  }
}

/** Looks up a chip and a model by name (case-insensitive) and builds the engine model. */
export function engineModel(modelName: string, chipName: string, tp: number): EngineModel {
  const m = Object.entries(MODELS).find(([k, v]) => k === modelName.toLowerCase() || v.name.toLowerCase() === modelName.toLowerCase())?.[1];
  if (!m) fail('DYSTRO_ERR_INVALID_CONFIG', 'model', `one of ${Object.keys(MODELS).join(', ')} (or a ModelShape)`, modelName);
  const c = Object.entries(CHIPS).find(([k, v]) => k.toLowerCase() === chipName.toLowerCase() || v.name.toLowerCase() === chipName.toLowerCase())?.[1];
  if (!c) fail('DYSTRO_ERR_INVALID_CONFIG', 'accelerator', `one of ${Object.keys(CHIPS).join(', ')} (or a ChipSpec)`, chipName);
  return new EngineModel(m, c, tp);
}
