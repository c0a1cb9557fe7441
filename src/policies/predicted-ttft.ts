/**
 * `predicted-ttft`, Dystro's own policy (DESIGN §4): argmin over candidates of the predicted time to
 * first token — prefill work queued ahead at the replica ÷ its pool's prefill rate, plus this request's
 * uncached prefill on that pool (from the index match), plus decode interference, times the replica's
 * online calibration factor (src/router/predict.ts). A cache hit wins only when it pays for the queue
 * in front of it, and long prompts go where they prefill fastest. Candidates whose load is unknown or
 * stale get a penalty so they never attract traffic on missing data.
 *
 * Bounded load (`boundedLoad`, default 1.25; 0 turns it off): the TTFT model balances prefill work, not
 * concurrency, so under a hot prefix it would crowd the replicas holding it (each cheap prefill invites
 * the next). A candidate is acceptable only while its in-flight requests stay ≤ ceil(c · (m + 1) / n),
 * m the router's in-flight total and n the eligible replicas (Mirrokni, Thorup & Zadimoghaddam's cap on
 * requests). When the fastest candidate is over the cap, the fastest one under it wins if its predicted
 * TTFT is within `capSlackRatio` × best + `capSlackMs` (defaults 1.2 and 10 ms): the cap evens out
 * near-equal choices but never sends a request somewhere much slower, and never decides admission.
 */
import { numberParam } from './registry.js';
import { argminRandomTie } from './baseline.js';
import type { Policy, PolicyFactory } from '../router/types.js';

export const predictedTtft: PolicyFactory = {
  name: 'predicted-ttft',
  description: 'Least predicted TTFT from the calibrated roofline model: queued prefill ÷ pool rate + uncached prefill + decode interference.',
  defaults: { staleAfterMs: 5000, unknownPenaltyMs: 1000, tieToleranceMs: 0.5, boundedLoad: 1.25, capSlackRatio: 1.2, capSlackMs: 10 },
  create(params): Policy {
    const staleAfterMs = numberParam('predicted-ttft', params, 'staleAfterMs', 0, 3_600_000);
    const unknownPenaltyMs = numberParam('predicted-ttft', params, 'unknownPenaltyMs', 0, 3_600_000);
    const tol = numberParam('predicted-ttft', params, 'tieToleranceMs', 0, 1000);
    const c = numberParam('predicted-ttft', params, 'boundedLoad', 0, 100);
    const capSlackRatio = numberParam('predicted-ttft', params, 'capSlackRatio', 1, 100);
    const capSlackMs = numberParam('predicted-ttft', params, 'capSlackMs', 0, 3_600_000);
    if (c !== 0 && c <= 1) numberParam('predicted-ttft', { boundedLoad: c }, 'boundedLoad', 1.000001, 100);
    return {
      name: 'predicted-ttft',
      scoreOrder: 'lower-is-better',
      pick(ctx) {
        const cap = c > 0 && ctx.eligible.length > 0 ? Math.ceil((c * (ctx.inflight.totalRequests + 1)) / ctx.eligible.length) : Infinity;
        const score = (i: number) => {
          const slot = ctx.slots[i];
          let v = ctx.predictedTtftMs[i];
          const updated = ctx.load.updatedAtMs[slot];
          // No report yet is fine (router counts suffice); a report gone stale or a NaN one is not.
          if (ctx.load.unknown[slot] !== 15 && (ctx.load.unknown[slot] !== 0 || ctx.nowMs - updated > staleAfterMs)) v += unknownPenaltyMs;
          // Quantize so near-equal predictions tie (and break at random instead of pinning one replica).
          v = tol > 0 ? Math.round(v / tol) * tol : v;
          ctx.scores[i] = v;
          return v;
        };
        const best = argminRandomTie(ctx, score);
        if (cap === Infinity || best < 0 || ctx.inflight.requests[ctx.slots[best]] + 1 <= cap) return best;
        // The fastest candidate is over the cap: take the fastest one under it, unless that costs more
        // than the slack (the cap evens out near-equal choices; it must not send a request somewhere
        // much slower).
        let under = -1;
        for (let i = 0; i < ctx.n; i++) {
          if (ctx.inflight.requests[ctx.slots[i]] + 1 > cap) continue;
          if (under < 0 || ctx.scores[i] < ctx.scores[under]) under = i;
        }
        if (under >= 0 && ctx.scores[under] <= ctx.scores[best] * capSlackRatio + capSlackMs) return under;
        return best;
      },
    };
  },
};
