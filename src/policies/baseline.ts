/**
 * Baseline policies: round-robin, random, least-request (Envoy's, counting at dispatch) and p2c (power
 * of d choices, Mitzenmacher; Envoy's least_request with choice_count). Ties never pin to the first
 * candidate: they break at random.
 */
import { numberParam } from './registry.js';
import type { PickContext, Policy, PolicyFactory } from '../router/types.js';

/** Index of the minimum of `value(i)` over candidates, ties broken uniformly at random (reservoir). */
export function argminRandomTie(ctx: PickContext, value: (i: number) => number): number {
  let best = -1;
  let bestV = Infinity;
  let ties = 0;
  for (let i = 0; i < ctx.n; i++) {
    const v = value(i);
    if (v < bestV) {
      bestV = v;
      best = i;
      ties = 1;
    } else if (v === bestV && best >= 0) {
      ties++;
      if (ctx.rng.int(ties) === 0) best = i;
    }
  }
  if (best < 0 && ctx.n > 0) best = ctx.rng.int(ctx.n); // every value was Infinity/NaN: still pick someone
  return best;
}

/** Requests in flight at a candidate: the router's count, or the engine's (running + waiting) if larger. */
export function inflightOf(ctx: PickContext, i: number): number {
  const slot = ctx.slots[i];
  const own = ctx.inflight.requests[slot];
  const running = ctx.load.running[slot];
  const waiting = ctx.load.waiting[slot];
  const reported = (Number.isFinite(running) ? running : 0) + (Number.isFinite(waiting) ? waiting : 0);
  return Math.max(own, reported);
}

export const roundRobin: PolicyFactory = {
  name: 'round-robin',
  description: 'Each eligible replica in turn (per model).',
  defaults: {},
  create(): Policy {
    const next = new Map<string, number>();
    return {
      name: 'round-robin',
      scoreOrder: 'none',
      pick(ctx) {
        const e = ctx.eligible;
        if (e.length === 0) return -1;
        const model = ctx.request.model;
        const start = next.get(model) ?? 0;
        for (let k = 0; k < e.length; k++) {
          const i = ctx.candidate(e[(start + k) % e.length]);
          if (i >= 0) {
            next.set(model, (start + k + 1) % e.length);
            return i;
          }
        }
        return -1;
      },
    };
  },
};

export const random: PolicyFactory = {
  name: 'random',
  description: 'A uniformly random eligible replica.',
  defaults: {},
  create(): Policy {
    return {
      name: 'random',
      scoreOrder: 'none',
      pick(ctx) {
        const e = ctx.eligible;
        for (let tries = 0; tries < 8 && e.length > 0; tries++) {
          const i = ctx.candidate(e[ctx.rng.int(e.length)]);
          if (i >= 0) return i;
        }
        return ctx.n > 0 ? ctx.rng.int(ctx.n) : -1;
      },
    };
  },
};

export const leastRequest: PolicyFactory = {
  name: 'least-request',
  description: 'Fewest requests in flight among the candidates (router-counted at dispatch); random tie-break.',
  defaults: {},
  create(): Policy {
    return {
      name: 'least-request',
      scoreOrder: 'lower-is-better',
      pick(ctx) {
        return argminRandomTie(ctx, (i) => (ctx.scores[i] = inflightOf(ctx, i)));
      },
    };
  },
};

export const p2c: PolicyFactory = {
  name: 'p2c',
  description: 'Power of d choices: d distinct candidates drawn in proportion to their pool’s prefill speed; the lowest load per unit of speed wins.',
  defaults: { choices: 2 },
  create(params): Policy {
    const d = numberParam('p2c', params, 'choices', 1, 64, true);
    const picked = new Int32Array(64);
    return {
      name: 'p2c',
      scoreOrder: 'lower-is-better',
      pick(ctx) {
        const n = ctx.n;
        if (n === 0) return -1;
        // Weighted sampling without replacement by pool speed (prefill tokens/s).
        let total = 0;
        for (let i = 0; i < n; i++) {
          const slot = ctx.slots[i];
          const pool = ctx.fleet.bySlot[slot]!.pool;
          ctx.scores[i] = ctx.predictor.ratesOf(pool).prefillTokensPerS; // weight, replaced by the score below
          total += ctx.scores[i];
        }
        const k = Math.min(d, n);
        let got = 0;
        while (got < k) {
          let r = ctx.rng.float() * total;
          let i = 0;
          for (; i < n - 1; i++) {
            if (ctx.scores[i] <= 0) continue;
            r -= ctx.scores[i];
            if (r < 0) break;
          }
          while (ctx.scores[i] <= 0) i = (i + 1) % n;
          total -= ctx.scores[i];
          picked[got++] = i;
          ctx.scores[i] = -ctx.scores[i]; // mark drawn, keep the weight for the score
        }
        let best = -1;
        let bestV = Infinity;
        for (let j = 0; j < n; j++) ctx.scores[j] = ctx.scores[j] < 0 ? (inflightOf(ctx, j) + 1) / -ctx.scores[j] : NaN;
        for (let j = 0; j < k; j++) {
          const i = picked[j];
          const v = ctx.scores[i];
          if (v < bestV || best < 0) {
            bestV = v;
            best = i;
          }
        }
        return best;
      },
    };
  },
};
