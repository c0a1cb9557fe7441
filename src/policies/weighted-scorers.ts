/**
 * `weighted-scorers`: llm-d's inference scheduler / the Gateway API Inference Extension endpoint picker
 * (kubernetes-sigs/gateway-api-inference-extension `pkg/epp/scheduling`, llm-d/llm-d-inference-scheduler):
 * independent scorers each give every endpoint a score in [0, 1], the scheduler sums weight × score,
 * and the max-score picker takes the highest total, breaking ties at random. Default profile weights
 * (llm-d's documented configuration, DESIGN §9): prefix 3, queue 2, KV-cache utilization 2.
 *
 * Scorers, per eligible replica (the EPP scores every endpoint that passed its filters, so every
 * eligible replica becomes a candidate):
 * - prefix = matched blocks / prompt blocks: the leading prompt blocks the router's index places on the
 *   replica (`ctx.cachedBlocks`: engine KV events, llm-d's precise prefix scorer, plus the router's
 *   speculative entries, its approximate one); 0 for a prompt shorter than a block;
 * - queue = (maxQ − q) / (maxQ − minQ) over the candidates, 1.0 when all are equal, with q = the
 *   engine's waiting-queue length (`ctx.load.waiting`), or the router's in-flight count for a replica
 *   that has never reported (in-flight ≥ the waiting requests this router caused, so the fallback
 *   does not flatter it);
 * - KV = 1 − KV-cache usage (`ctx.load.kvUsage`, a fraction), 0 when unknown.
 * total = prefixWeight·prefix + queueWeight·queue + kvWeight·kv.
 *
 * Unknown load never attracts traffic: a NaN or out-of-range queue or KV report (sanitized to unknown
 * by src/fleet/load.ts) and a report older than `staleAfterMs` score 0 on that scorer — the worst —
 * and stay out of the queue's min/max. (The EPP's own saturation detector treats metrics older than
 * 200 ms as saturated; its scorers read whatever its datastore holds. 5 s here matches the
 * predicted-ttft policy, for scrape intervals of a second or more.)
 *
 * The project's README warns that the max-score picker hot-spots a popular prefix: 3 points of prefix
 * outweigh the 2 + 2 a loaded replica can lose. That is faithful, and what the simulator compares.
 *
 * Parameters (defaults): prefixWeight 3, queueWeight 2, kvWeight 2, staleAfterMs 5000.
 */
import { numberParam } from './registry.js';
import { UNKNOWN_BIT } from '../fleet/load.js';
import type { PickContext, Policy, PolicyFactory } from '../router/types.js';

const NAME = 'weighted-scorers';

/** Index of the maximum of ctx.scores over the candidates, ties broken uniformly at random (reservoir). */
export function argmaxScoreRandomTie(ctx: PickContext): number {
  let best = -1;
  let bestV = -Infinity;
  let ties = 0;
  for (let i = 0; i < ctx.n; i++) {
    const v = ctx.scores[i];
    if (v > bestV) {
      bestV = v;
      best = i;
      ties = 1;
    } else if (v === bestV && best >= 0 && ctx.rng.int(++ties) === 0) best = i;
  }
  if (best < 0 && ctx.n > 0) best = ctx.rng.int(ctx.n);
  return best;
}

export const weightedScorers: PolicyFactory = {
  name: NAME,
  description: 'llm-d / Gateway API Inference Extension: 3 × prefix-match fraction + 2 × queue score + 2 × (1 − KV usage), max-score picker with random tie-break.',
  defaults: { prefixWeight: 3, queueWeight: 2, kvWeight: 2, staleAfterMs: 5000 },
  create(params): Policy {
    const wPrefix = numberParam(NAME, params, 'prefixWeight', 0, 1e6);
    const wQueue = numberParam(NAME, params, 'queueWeight', 0, 1e6);
    const wKv = numberParam(NAME, params, 'kvWeight', 0, 1e6);
    const staleAfterMs = numberParam(NAME, params, 'staleAfterMs', 0, 3_600_000);
    let queue = new Float64Array(64);
    return {
      name: NAME,
      scoreOrder: 'higher-is-better',
      pick(ctx) {
        const e = ctx.eligible;
        for (let k = 0; k < e.length; k++) ctx.candidate(e[k]);
        const n = ctx.n;
        if (n === 0) return -1;
        if (queue.length < n) queue = new Float64Array(Math.max(n, queue.length * 2));
        const load = ctx.load;
        // Pass 1: q per candidate (NaN = unknown), min and max over the known ones; the KV and
        // prefix parts of the total go into ctx.scores.
        let minQ = Infinity;
        let maxQ = -Infinity;
        for (let i = 0; i < n; i++) {
          const slot = ctx.slots[i];
          const updated = load.updatedAtMs[slot];
          const neverReported = Number.isNaN(updated);
          const fresh = !neverReported && ctx.nowMs - updated <= staleAfterMs;
          let q: number;
          if (fresh && (load.unknown[slot] & UNKNOWN_BIT.waiting) === 0) q = load.waiting[slot];
          else if (neverReported) q = ctx.inflight.requests[slot];
          else q = NaN;
          queue[i] = q;
          if (q === q) {
            if (q < minQ) minQ = q;
            if (q > maxQ) maxQ = q;
          }
          const kv = fresh && (load.unknown[slot] & UNKNOWN_BIT.kvUsage) === 0 ? 1 - load.kvUsage[slot] : 0;
          const prefix = ctx.promptBlocks > 0 ? Math.min(1, ctx.cachedBlocks[i] / ctx.promptBlocks) : 0;
          ctx.scores[i] = wPrefix * prefix + wKv * kv;
        }
        // Pass 2: the queue score, then the max-score picker.
        for (let i = 0; i < n; i++) {
          const q = queue[i];
          const s = q !== q ? 0 : maxQ === minQ ? 1 : (maxQ - q) / (maxQ - minQ);
          ctx.scores[i] += wQueue * s;
        }
        return argmaxScoreRandomTie(ctx);
      },
    };
  },
};
