/**
 * Hot spot: one prefix is half of all traffic over 16 replicas. predicted-ttft must keep the
 * time-averaged in-flight load even (max/mean ≤ 1.25) while its prefix-cache hit rate stays within
 * 10% of an unconstrained longest-prefix oracle (which piles the hot prefix on one replica).
 *
 * Simulation (FakeClock, lifecycle tickets, seeded): Poisson arrivals at 400 requests/s for 8 s.
 * Half the requests are a 2,048-token hot system prompt + a unique 128-token suffix; the other half
 * one of 200 warm 1,024-token prefixes (uniform) + a unique 128-token suffix; 128 output tokens each.
 * Each replica is an H100 running Llama-3-8B, modelled with the project's roofline (src/model): a FIFO
 * prefill server whose service time is prefillS(uncached, cached) plus one decode step of the running
 * batch per 2,048-token chunk (chunked prefill rides along the decodes), then onFirstToken; decode
 * lasts 128 steps of decodeStepS(running batch) at first token, then onEnd. In-flight = the router's
 * count per replica, sampled at every arrival and averaged over the run. Hit rate = Σ cached prompt
 * tokens / Σ prompt tokens of the decisions. Nothing else reports: the index learns from the router's
 * speculative inserts, the load from its own counts.
 *
 * Expectations: the oracle's hit rate is the ceiling (≈ 0.88: every hot request after the first hits
 * 2,048 of 2,176 tokens, warm ones 1,024 of 1,152 after their first visit) and its max/mean in-flight
 * is far above 1 (one replica takes half the traffic) — checked so the scenario is a real hot spot.
 *
 * Balance. Without a cap, predicted-ttft balances prefill work, not concurrency: it splits the fleet into
 * replicas holding the hot prefix (cheap 128-token prefills, so each takes ~35% more requests) and
 * replicas serving the rest — 1.09–1.35 max/mean over seeds and run lengths. Its bounded-load gate
 * (default c = 1.25 on in-flight counts) brings these three seeds to 1.12, 1.17 and 1.24 with hit rates
 * 0.856–0.861 against the oracle's 0.884. The cap is ceil(c · (m + 1) / n) on whole requests, so at ~2
 * requests a replica it allows 3 (1.5× the mean) at the moment of a decision; the time average stays
 * under 1.25 but not by much. The target holds here; it is not evidence of a wide margin.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createRouter } from '../../src/router/router.ts';
import { FakeClock } from '../../src/clock.ts';
import { createRng } from '../../src/rng.ts';
import { engineModel } from '../../src/model/roofline.ts';
import { PolicyRegistry } from '../../src/policies/registry.ts';
import { defaultRegistry } from '../../src/policies/index.ts';
import { js } from '../helpers/policy-fixture.ts';
import type { PolicyFactory, RoutedDecision } from '../../src/router/types.ts';

const REPLICAS = 16;
const RATE_PER_S = 400;
const SECONDS = 8;
const OUTPUT_TOKENS = 128;
const MODEL = 'llama-3-8b';
const SEEDS = [1, 2, 3];

/** The unconstrained longest-prefix oracle: most cached blocks wins, ties at random, load ignored. */
const longestPrefix: PolicyFactory = {
  name: 'longest-prefix-oracle',
  description: 'test oracle',
  defaults: {},
  create: () => ({
    name: 'longest-prefix-oracle',
    scoreOrder: 'higher-is-better',
    pick(ctx) {
      for (let k = 0; k < ctx.eligible.length; k++) ctx.candidate(ctx.eligible[k]);
      let best = -1;
      let bestV = -1;
      let ties = 0;
      for (let i = 0; i < ctx.n; i++) {
        const v = ctx.cachedBlocks[i];
        if (v > bestV) {
          bestV = v;
          best = i;
          ties = 1;
        } else if (v === bestV && ctx.rng.int(++ties) === 0) best = i;
      }
      return best;
    },
  }),
};

const registry = new PolicyRegistry();
for (const name of defaultRegistry.names()) registry.register(defaultRegistry.get(name)!);
registry.register(longestPrefix);

/** A binary min-heap of timed callbacks. */
class Events {
  private t: number[] = [];
  private f: (() => void)[] = [];
  get size(): number {
    return this.t.length;
  }
  push(time: number, fn: () => void): void {
    this.t.push(time);
    this.f.push(fn);
    let i = this.t.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (this.t[p] <= this.t[i]) break;
      this.swap(p, i);
      i = p;
    }
  }
  pop(): [number, () => void] {
    const top: [number, () => void] = [this.t[0], this.f[0]];
    const lt = this.t.pop()!;
    const lf = this.f.pop()!;
    if (this.t.length > 0) {
      this.t[0] = lt;
      this.f[0] = lf;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < this.t.length && this.t[l] < this.t[m]) m = l;
        if (r < this.t.length && this.t[r] < this.t[m]) m = r;
        if (m === i) break;
        this.swap(m, i);
        i = m;
      }
    }
    return top;
  }
  private swap(a: number, b: number): void {
    [this.t[a], this.t[b]] = [this.t[b], this.t[a]];
    [this.f[a], this.f[b]] = [this.f[b], this.f[a]];
  }
}

interface Outcome {
  hitRate: number;
  maxOverMean: number;
  requests: number;
}

function simulate(policy: string, seed: number): Outcome {
  const clock = new FakeClock(0);
  const router = createRouter({
    kernels: js,
    clock,
    seed,
    registry,
    policy,
    pools: [{ id: 'h100', accelerator: 'H100', tensorParallel: 1, model: MODEL, kvCapacityBlocks: 26_000 }],
    replicas: Array.from({ length: REPLICAS }, (_, i) => ({ id: `r${i}`, pool: 'h100', address: `http://10.0.0.${i}:8000` })),
  });
  const engine = engineModel(MODEL, 'H100', 1);
  const rng = createRng(seed * 7919 + 1);
  const hot = Uint32Array.from({ length: 2048 }, (_, i) => 1_000_000 + i);
  const warm = Array.from({ length: 200 }, (_, w) => Uint32Array.from({ length: 1024 }, (_, i) => 2_000_000 + w * 4096 + i));
  const events = new Events();
  for (let t = 0; ; ) {
    t += (-Math.log(1 - rng.float()) / RATE_PER_S) * 1000;
    if (t > SECONDS * 1000) break;
    events.push(t, () => arrive());
  }
  const prefillFreeAtMs = new Float64Array(REPLICAS);
  const inflightSum = new Float64Array(REPLICAS);
  let samples = 0;
  let cachedTokens = 0;
  let promptTokens = 0;
  let serial = 0;

  function arrive(): void {
    const head = rng.float() < 0.5 ? hot : warm[rng.int(warm.length)];
    const prompt = new Uint32Array(head.length + 128);
    prompt.set(head);
    for (let i = 0; i < 128; i++) prompt[head.length + i] = 3_000_000 + serial * 131 + i;
    serial++;
    for (let s = 0; s < REPLICAS; s++) inflightSum[s] += router.inflight.requests[s];
    samples++;
    const d = router.route({ model: MODEL, prompt, expectedOutputTokens: OUTPUT_TOKENS });
    assert.is(d.kind, 'route');
    const r = d as RoutedDecision;
    cachedTokens += r.cachedTokens;
    promptTokens += r.promptTokens;
    const slot = r.replica.slot;
    const now = clock.nowMs();
    const uncached = r.promptTokens - r.cachedTokens;
    const running = router.inflight.requests[slot] - 1;
    const serviceS = engine.prefillS(uncached, r.cachedTokens) + Math.ceil(Math.max(1, uncached) / 2048) * engine.decodeStepS(running, running * 2200);
    const firstTokenAt = Math.max(now, prefillFreeAtMs[slot]) + serviceS * 1000;
    prefillFreeAtMs[slot] = firstTokenAt;
    events.push(firstTokenAt, () => {
      r.ticket.onFirstToken();
      const batch = router.inflight.requests[slot];
      events.push(clock.nowMs() + OUTPUT_TOKENS * engine.decodeStepS(batch, batch * 2200) * 1000, () => r.ticket.onEnd());
    });
  }

  while (events.size > 0) {
    const [t, fn] = events.pop();
    if (t > clock.nowMs()) clock.set(t);
    fn();
  }
  assert.is(router.inflight.total(), 0, 'every ticket ended');
  let sum = 0;
  let max = 0;
  for (let s = 0; s < REPLICAS; s++) {
    const avg = inflightSum[s] / samples;
    sum += avg;
    max = Math.max(max, avg);
  }
  return { hitRate: cachedTokens / promptTokens, maxOverMean: max / (sum / REPLICAS), requests: samples };
}

for (const seed of SEEDS) {
  test(`seed ${seed}: predicted-ttft keeps max/mean in-flight ≤ 1.25 and its hit rate within 10% of the longest-prefix oracle`, () => {
    const oracle = simulate('longest-prefix-oracle', seed);
    const ours = simulate('predicted-ttft', seed);
    console.log(
      `  seed ${seed}: ${ours.requests} requests; oracle hit ${oracle.hitRate.toFixed(3)} max/mean ${oracle.maxOverMean.toFixed(2)}; ` +
        `predicted-ttft hit ${ours.hitRate.toFixed(3)} max/mean ${ours.maxOverMean.toFixed(3)}`,
    );
    assert.ok(oracle.maxOverMean > 4, 'the oracle shows the hot spot');
    assert.ok(ours.hitRate >= 0.9 * oracle.hitRate, `hit rate ${ours.hitRate} against the oracle's ${oracle.hitRate}`);
    assert.ok(ours.maxOverMean <= 1.25, `max/mean in-flight ${ours.maxOverMean}`);
  });
}

test.run();
