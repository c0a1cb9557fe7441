/**
 * `predicted-ttft`, Dystro's own policy (DESIGN §4): argmin over candidates of the predicted time to
 * first token — prefill work queued ahead at the replica ÷ its pool's prefill rate, plus this request's
 * uncached prefill on that pool (from the index match), plus decode interference, times the replica's
 * online calibration factor (src/router/predict.ts). A cache hit wins only when it pays for the queue
 * in front of it, and long prompts go where they prefill fastest. Candidates whose load is unknown or
 * stale get a penalty so they never attract traffic on missing data.
 */
import { numberParam } from './registry.js';
import { argminRandomTie } from './baseline.js';
import type { Policy, PolicyFactory } from '../router/types.js';

export const predictedTtft: PolicyFactory = {
  name: 'predicted-ttft',
  description: 'Least predicted TTFT from the calibrated roofline model: queued prefill ÷ pool rate + uncached prefill + decode interference.',
  defaults: { staleAfterMs: 5000, unknownPenaltyMs: 1000, tieToleranceMs: 0.5 },
  create(params): Policy {
    const staleAfterMs = numberParam('predicted-ttft', params, 'staleAfterMs', 0, 3_600_000);
    const unknownPenaltyMs = numberParam('predicted-ttft', params, 'unknownPenaltyMs', 0, 3_600_000);
    const tol = numberParam('predicted-ttft', params, 'tieToleranceMs', 0, 1000);
    return {
      name: 'predicted-ttft',
      scoreOrder: 'lower-is-better',
      pick(ctx) {
        return argminRandomTie(ctx, (i) => {
          const slot = ctx.slots[i];
          let v = ctx.predictedTtftMs[i];
          const updated = ctx.load.updatedAtMs[slot];
          // No report yet is fine (router counts suffice); a report gone stale or a NaN one is not.
          if (ctx.load.unknown[slot] !== 15 && (ctx.load.unknown[slot] !== 0 || ctx.nowMs - updated > staleAfterMs)) v += unknownPenaltyMs;
          // Quantize so near-equal predictions tie (and break at random instead of pinning one replica).
          v = tol > 0 ? Math.round(v / tol) * tol : v;
          ctx.scores[i] = v;
          return v;
        });
      },
    };
  },
};
