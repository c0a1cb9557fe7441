/**
 * `kv-cost`: the NVIDIA Dynamo KV router's cost (ai-dynamo/dynamo, lib/kv-router `scheduling/selector.rs`
 * DefaultWorkerSelector, and docs/router: "logit = kv_overlap_score_weight × potential_prefill_blocks +
 * potential_active_blocks"), with its defaults (DESIGN §9).
 *
 * Per eligible replica (Dynamo scores every worker, so every eligible replica becomes a candidate):
 *
 *   prefill_blocks = (prompt tokens already assigned to the worker and not yet prefilled
 *                     + this request's prompt tokens) / block_size
 *   adjusted       = max(0, prefill_blocks − credit·device_overlap − hostWeight·host_overlap
 *                                          − diskWeight·disk_overlap)
 *   cost           = scale·adjusted + (worker's active KV blocks + this request's blocks)
 *                    + w·active_requests
 *
 * Units are KV blocks of `blockSize` tokens. Sources of each term here: assigned prompt tokens =
 * `ctx.inflight.prefillTokens` (the uncached tokens of requests this router sent that have not
 * reached their first token: Dynamo's per-worker prefill-token tracking); overlaps = the leading
 * prompt blocks the index places on each tier (`ctx.gpuBlocks`, `cpuBlocks`, `diskBlocks`; speculative
 * blocks — the router's own routing history, Dynamo's approximate mode — count as device); active KV
 * blocks = `ctx.inflight.activeBlocks` (blocks of the in-flight requests, which this router counts at
 * dispatch as prompt + expected output, where Dynamo grows them as tokens decode); this request's
 * blocks = ceil(prompt tokens / block_size) (Dynamo's `isl.div_ceil(block_size)`); active_requests =
 * the router's in-flight count. Only the router's own counts and the index enter the cost, so NaN or
 * stale engine metrics cannot attract traffic.
 *
 * Picker: temperature 0 → argmin, equal costs broken uniformly at random; temperature T > 0 →
 * normalize c' = (c − min)/(max − min) and sample p_i ∝ exp(−c'_i / T) with ctx.rng; when every cost
 * is equal, uniform. (Dynamo's softmax over normalized logits.)
 *
 * Parameters (defaults, Dynamo's): overlapCredit 1.0 (kv_overlap_score_weight), prefillScale 1,
 * activeRequestWeight 0, hostTierWeight 0.75, diskTierWeight 0.25, temperature 0 (router_temperature).
 * Dynamo's overlap-credit decay defaults to 0 and is not modelled; its speculative-entry TTL (120 s)
 * is the router index's `speculativeTtlMs` default.
 */
import { numberParam } from './registry.js';
import { argminRandomTie } from './baseline.js';
import type { PickContext, Policy, PolicyFactory } from '../router/types.js';

const NAME = 'kv-cost';

export interface KvCostWeights {
  overlapCredit: number;
  prefillScale: number;
  activeRequestWeight: number;
  hostTierWeight: number;
  diskTierWeight: number;
}

/** The cost of candidate i in KV blocks (exported for tests and explanations). */
export function kvCostOf(ctx: PickContext, i: number, w: KvCostWeights): number {
  const slot = ctx.slots[i];
  const B = ctx.blockSize;
  const prefillBlocks = (ctx.inflight.prefillTokens[slot] + ctx.promptTokens) / B;
  const host = ctx.cpuBlocks[i];
  const disk = ctx.diskBlocks[i];
  const device = ctx.cachedBlocks[i] - host - disk; // GPU plus speculative
  const adjusted = Math.max(0, prefillBlocks - w.overlapCredit * device - w.hostTierWeight * host - w.diskTierWeight * disk);
  const decodeBlocks = ctx.inflight.activeBlocks[slot] + Math.ceil(ctx.promptTokens / B);
  return w.prefillScale * adjusted + decodeBlocks + w.activeRequestWeight * ctx.inflight.requests[slot];
}

export const kvCost: PolicyFactory = {
  name: NAME,
  description: 'Dynamo KV router cost in blocks: scale × (queued + new prefill blocks − tier-weighted overlap credit) + active KV blocks + this request’s blocks; argmin or softmax sampling at a temperature.',
  defaults: { overlapCredit: 1, prefillScale: 1, activeRequestWeight: 0, hostTierWeight: 0.75, diskTierWeight: 0.25, temperature: 0 },
  create(params): Policy {
    const w: KvCostWeights = {
      overlapCredit: numberParam(NAME, params, 'overlapCredit', 0, 1e6),
      prefillScale: numberParam(NAME, params, 'prefillScale', 0, 1e6),
      activeRequestWeight: numberParam(NAME, params, 'activeRequestWeight', 0, 1e9),
      hostTierWeight: numberParam(NAME, params, 'hostTierWeight', 0, 1e6),
      diskTierWeight: numberParam(NAME, params, 'diskTierWeight', 0, 1e6),
    };
    const temperature = numberParam(NAME, params, 'temperature', 0, 1e6);
    return {
      name: NAME,
      scoreOrder: 'lower-is-better',
      pick(ctx) {
        const e = ctx.eligible;
        for (let k = 0; k < e.length; k++) ctx.candidate(e[k]);
        const n = ctx.n;
        if (n === 0) return -1;
        if (temperature === 0) return argminRandomTie(ctx, (i) => (ctx.scores[i] = kvCostOf(ctx, i, w)));
        let min = Infinity;
        let max = -Infinity;
        for (let i = 0; i < n; i++) {
          const c = (ctx.scores[i] = kvCostOf(ctx, i, w));
          if (c < min) min = c;
          if (c > max) max = c;
        }
        if (!(max > min)) return ctx.rng.int(n); // all equal: uniform
        const span = max - min;
        let total = 0;
        for (let i = 0; i < n; i++) total += Math.exp(-(ctx.scores[i] - min) / span / temperature);
        let r = ctx.rng.float() * total;
        let last = 0;
        for (let i = 0; i < n; i++) {
          const p = Math.exp(-(ctx.scores[i] - min) / span / temperature);
          if (p > 0) last = i;
          r -= p;
          if (r < 0) return i;
        }
        return last; // rounding left r ≥ 0: the mass ran out at the last candidate with any
      },
    };
  },
};
