/**
 * Shadow evaluation and canaries (src/router/rollout.ts): the shadow decides beside the live policy
 * without changing a single live decision, and its agreement and predicted-TTFT deltas match what an
 * independent computation from the explanations gives; a canary routes its seeded share, rolls back
 * when its guard trips (and says why), stays when it does not, and promotes or aborts on request.
 * Seeded, FakeClock, js backend, a modeled engine.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import client from 'prom-client';
import { DystroError } from '../../src/errors.ts';
import { PolicyRegistry } from '../../src/policies/registry.ts';
import { defaultRegistry } from '../../src/policies/index.ts';
import { RouterMetrics } from '../../src/router/metrics.ts';
import { quantileOf } from '../../src/router/rollout.ts';
import type { CanaryEvent } from '../../src/router/rollout.ts';
import type { Policy, PolicyFactory, RoutedDecision } from '../../src/router/types.ts';
import type { Router } from '../../src/router/router.ts';
import { EventQueue, ModeledEngine, createRng, inflightTotals, makeRouter, pool, prompt, quantile, replicas } from './helpers.ts';

/** Test policies: "worst" picks the highest predicted TTFT; "spy" counts the hooks it receives. */
const hooks = { routed: 0, done: 0, picks: 0 };
const worst: PolicyFactory = {
  name: 'worst',
  description: 'Highest predicted TTFT (a deliberately bad policy).',
  defaults: {},
  create(): Policy {
    return {
      name: 'worst',
      scoreOrder: 'higher-is-better',
      pick(ctx) {
        let best = -1;
        for (let i = 0; i < ctx.n; i++) if (best < 0 || ctx.predictedTtftMs[i] > ctx.predictedTtftMs[best]) best = i;
        return best;
      },
    };
  },
};
const spy: PolicyFactory = {
  name: 'spy',
  description: 'Picks a random eligible replica (adding candidates) and counts its hooks.',
  defaults: {},
  create(): Policy {
    return {
      name: 'spy',
      scoreOrder: 'none',
      pick(ctx) {
        hooks.picks++;
        for (let i = 0; i < ctx.n; i++) ctx.scores[i] = -1; // scribbles on the scratch scores
        return ctx.candidate(ctx.eligible[ctx.rng.int(ctx.eligible.length)]);
      },
      onRouted() {
        hooks.routed++;
      },
      onDone() {
        hooks.done++;
      },
    };
  },
};
function registry(): PolicyRegistry {
  const r = new PolicyRegistry();
  for (const name of defaultRegistry.names()) r.register(defaultRegistry.get(name)!);
  return r.register(worst).register(spy);
}

test('a shadow changes no live decision: same replicas, predictions and explanations with and without it', () => {
  const run = (withShadow: boolean) => {
    const { router } = makeRouter({ count: 40, sampleCandidates: 4, registry: registry() });
    if (withShadow) router.shadow('spy');
    const rng = createRng(5);
    const out: string[] = [];
    const open: RoutedDecision[] = [];
    for (let i = 0; i < 400; i++) {
      const d = router.route({ model: 'm', prompt: prompt(256 + rng.int(512), rng.int(12), rng), explain: true });
      if (d.kind !== 'route') throw new Error('expected a route');
      out.push(JSON.stringify([d.replica.id, d.predictedTtftMs, d.cachedTokens, d.explanation]));
      open.push(d);
      if (rng.int(3) === 0) open.splice(rng.int(open.length), 1)[0].ticket.onEnd();
    }
    for (const d of open) d.ticket.onEnd();
    return { out, router };
  };
  hooks.picks = hooks.routed = hooks.done = 0;
  const plain = run(false);
  const shadowed = run(true);
  assert.equal(shadowed.out, plain.out);
  assert.is(hooks.picks, 400, 'the shadow picked on every decision');
  assert.is(hooks.routed, 0, 'the shadow never hears onRouted');
  assert.is(hooks.done, 0, 'nor onDone');
  assert.is(shadowed.router.shadowReport().decisions, 400);
});

test('identical deterministic policies agree on every decision with zero deltas', () => {
  const { router } = makeRouter({ count: 6, policy: 'round-robin' });
  router.shadow('round-robin');
  for (let i = 0; i < 300; i++) {
    const d = router.route({ model: 'm', prompt: prompt(300, i) }) as RoutedDecision;
    d.ticket.onEnd();
  }
  const r = router.shadowReport();
  assert.is(r.active, true);
  assert.is(r.policy, 'round-robin');
  assert.is(r.decisions, 300);
  assert.is(r.agreements, 300);
  assert.is(r.agreementRate, 1);
  assert.equal(r.deltaMs, { mean: 0, p50: 0, p90: 0, samples: 300 });
});

test('agreement and TTFT deltas equal an independent computation from the live explanations', () => {
  const { router } = makeRouter({ count: 12, registry: registry(), policy: 'predicted-ttft' });
  router.shadow('worst');
  const rng = createRng(9);
  const deltas: number[] = [];
  let agree = 0;
  const open: RoutedDecision[] = [];
  for (let i = 0; i < 500; i++) {
    const d = router.route({ model: 'm', prompt: prompt(200 + rng.int(2000), rng.int(30), rng), explain: true }) as RoutedDecision;
    const c = d.explanation!.candidates;
    // "worst" sees the same candidates: the first highest prediction.
    let w = 0;
    for (let k = 1; k < c.length; k++) if (c[k].predictedTtftMs > c[w].predictedTtftMs) w = k;
    deltas.push(c[w].predictedTtftMs - c[d.explanation!.chosen].predictedTtftMs);
    if (w === d.explanation!.chosen || c[w].replica === d.replica.id) agree++;
    open.push(d);
    if (open.length > 8) open.shift()!.ticket.onEnd();
  }
  const r = router.stopShadow();
  assert.is(r.active, false);
  assert.is(r.decisions, 500);
  assert.is(r.agreements, agree);
  assert.ok(Math.abs(r.agreementRate - agree / 500) < 1e-12);
  const mean = deltas.reduce((a, b) => a + b, 0) / deltas.length;
  assert.ok(Math.abs(r.deltaMs.mean - mean) < 1e-9, `mean ${r.deltaMs.mean} vs ${mean}`);
  assert.ok(Math.abs(r.deltaMs.p50 - quantile(deltas, 0.5)) < 1e-9);
  assert.ok(Math.abs(r.deltaMs.p90 - quantile(deltas, 0.9)) < 1e-9);
  assert.ok(r.deltaMs.p90 > 0, 'the worst policy predicts slower TTFTs');
  // Stopped: decisions are no longer counted; the last report stays readable.
  (router.route({ model: 'm', prompt: prompt(300, 1) }) as RoutedDecision).ticket.onEnd();
  assert.is(router.shadowReport().decisions, 500);
  for (const d of open) d.ticket.onEnd();
  assert.equal(inflightTotals(router), { requests: 0, prefillTokens: 0, blocks: 0 });
});

test('quantileOf is the nearest-rank quantile', () => {
  const rng = createRng(3);
  for (let n = 1; n < 200; n += 7) {
    const v = Array.from({ length: n }, () => Math.floor(rng.float() * 50));
    for (const q of [0.5, 0.9, 0.99]) assert.is(quantileOf(Float64Array.from(v), n, q), quantile(v, q));
  }
});

/** Two pools: fast (20,000 prompt tokens/s) and slow (2,000): any policy that spreads evenly is far slower at p90. */
function twoPoolRouter(seed = 7) {
  const reg = registry();
  const { router, clock } = makeRouter({
    seed,
    registry: reg,
    pools: [pool('fast'), pool('slow')],
    replicas: [...replicas('fast', 2), ...replicas('slow', 2)],
    poolRates: { fast: { prefillTokensPerS: 20_000, decodeStepS: 0 }, slow: { prefillTokensPerS: 2_000, decodeStepS: 0 } },
  });
  const events = new EventQueue(clock);
  const engine = new ModeledEngine(events, 100);
  return { router, clock, events, engine };
}

/** One request every `gapMs` for `count` requests, through the modeled engine. */
function drive(router: Router, events: EventQueue, engine: ModeledEngine, count: number, gapMs = 60, from = 0): void {
  for (let i = 0; i < count; i++) {
    events.runUntil(events.clock.nowMs() + gapMs);
    engine.handle(router.route({ model: 'm', prompt: prompt(1000, from + i + 1000) }));
  }
}

test('canary rolls back when the TTFT p90 ratio guard trips, and says why', () => {
  const { router, events, engine } = twoPoolRouter();
  const seen: CanaryEvent[] = [];
  const off = router.onCanaryEvent((e) => seen.push(e));
  router.canary('round-robin', {}, 0.2, { metric: 'ttft-p90-ratio', max: 1.2, windowMs: 60_000, minSamples: 50 });
  assert.is(router.canaryStatus().state, 'running');
  drive(router, events, engine, 2000);
  const st = router.canaryStatus();
  assert.is(st.state, 'rolled-back');
  assert.equal(seen.map((e) => e.type), ['started', 'rolled-back']);
  const ev = seen[1];
  assert.is(ev.policy, 'round-robin');
  assert.match(ev.reason, /^ttft-p90-ratio \d+\.\d+ > max 1\.2: canary "round-robin" p90 .* baseline "predicted-ttft" p90/);
  const reading = ev.status.readings[0];
  assert.ok(reading.tripped && reading.ratio > 1.2 && reading.canarySamples >= 50 && reading.baselineSamples >= 50, JSON.stringify(reading));
  // It tripped as soon as it could: within a few evaluations after the canary's 50th sample.
  assert.ok(reading.canarySamples <= 60, `tripped late, at ${reading.canarySamples} canary samples`);
  // Independently: the observed p90 of each policy's requests from the modeled engine.
  const p90c = quantile(engine.byPolicy.get('round-robin')!, 0.9);
  const p90b = quantile(engine.byPolicy.get('predicted-ttft')!, 0.9);
  assert.ok(p90c / p90b > 1.2, `engine-side p90s ${p90c} vs ${p90b}`);
  // After the rollback every decision is the live policy's, and the counts drain to zero.
  const after = router.route({ model: 'm', prompt: prompt(100, 1) });
  assert.is(after.policy, 'predicted-ttft');
  if (after.kind === 'route') after.ticket.onEnd();
  events.drain();
  assert.equal(inflightTotals(router), { requests: 0, prefillTokens: 0, blocks: 0 });
  off();
  assert.is(router.rollout.listenerCount('canary'), 0);
});

test('canary stays when the guard holds, routes its seeded fraction, and promotes', () => {
  const { router, events, engine } = twoPoolRouter();
  router.canary('predicted-ttft', { tieToleranceMs: 0.1 }, 0.25, { metric: 'ttft-p90-ratio', max: 1.2, windowMs: 60_000, minSamples: 50 }, { seed: 42 });
  drive(router, events, engine, 3000);
  const st = router.canaryStatus();
  assert.is(st.state, 'running', st.reason ?? '');
  const n = st.routed.canary + st.routed.baseline;
  assert.is(n, 3000);
  // Binomial(3000, 0.25): sd ≈ 23.7 decisions; 4 sd.
  assert.ok(Math.abs(st.routed.canary - 750) <= 95, `canary routed ${st.routed.canary}`);
  assert.ok(Math.abs(st.routedFraction - 0.25) < 0.032);
  assert.ok(st.readings[0].ratio <= 1.2 && st.readings[0].canarySamples >= 50, JSON.stringify(st.readings[0]));
  // Same seed, same draws: a second router draws the same canary decisions.
  const again = twoPoolRouter();
  again.router.canary('predicted-ttft', { tieToleranceMs: 0.1 }, 0.25, undefined, { seed: 42 });
  drive(again.router, again.events, again.engine, 3000);
  assert.is(again.router.canaryStatus().routed.canary, st.routed.canary);
  // Promotion: the canary's instance becomes the live policy.
  const seen: string[] = [];
  router.onCanaryEvent((e) => seen.push(`${e.type}:${e.policy}`));
  router.promoteCanary();
  assert.equal(seen, ['promoted:predicted-ttft']);
  assert.equal(router.currentPolicy(), { name: 'predicted-ttft', params: { tieToleranceMs: 0.1 } });
  assert.is(router.canaryStatus().state, 'promoted');
  events.drain();
  assert.equal(inflightTotals(router), { requests: 0, prefillTokens: 0, blocks: 0 });
});

test('the canary’s own onRouted/onDone hear exactly its requests; abort and setPolicy end it', () => {
  hooks.routed = hooks.done = hooks.picks = 0;
  const { router } = makeRouter({ count: 4, registry: registry() });
  router.canary('spy', {}, 0.5, { metric: 'ttft-p50-ratio', max: 2 });
  const ds: RoutedDecision[] = [];
  for (let i = 0; i < 200; i++) ds.push(router.route({ model: 'm', prompt: prompt(64, i) }) as RoutedDecision);
  const bySpy = ds.filter((d) => d.policy === 'spy').length;
  assert.is(hooks.routed, bySpy);
  assert.is(router.canaryStatus().routed.canary, bySpy);
  const events: string[] = [];
  router.onCanaryEvent((e) => events.push(`${e.type}: ${e.reason}`));
  router.abortCanary('enough');
  assert.is(router.canaryStatus().state, 'aborted');
  // Requests the canary routed still tell it they ended, after the abort.
  for (const d of ds) d.ticket.onEnd();
  assert.is(hooks.done, bySpy);
  router.canary('spy', {}, 0.5);
  router.setPolicy('least-request');
  assert.is(router.canaryStatus().state, 'aborted');
  assert.equal(events, ['aborted: enough', 'started: canary of "spy" on 50.00 % of decisions against "predicted-ttft"', 'aborted: the live policy was replaced by "least-request" (setPolicy)']);
  assert.is(router.abortCanary().state, 'aborted', 'aborting nothing is a no-op');
  assert.throws(() => router.promoteCanary(), (e: unknown) => e instanceof DystroError && e.code === 'DYSTRO_ERR_INVALID_ARGUMENT');
});

test('bad canary or shadow arguments throw typed errors and leave the live policy and the running canary in place', () => {
  const { router } = makeRouter({ count: 3 });
  router.canary('least-request', {}, 0.1, { metric: 'ttft-p90-ratio', max: 1.2 });
  const bad: [() => unknown, string][] = [
    [() => router.canary('least-requests', {}, 0.1), 'DYSTRO_ERR_UNKNOWN_POLICY'],
    [() => router.canary('p2c', { choice: 2 }, 0.1), 'DYSTRO_ERR_POLICY_PARAMS'],
    [() => router.canary('p2c', { choices: 0 }, 0.1), 'DYSTRO_ERR_POLICY_PARAMS'],
    [() => router.canary('p2c', {}, 0), 'DYSTRO_ERR_INVALID_CONFIG'],
    [() => router.canary('p2c', {}, 1), 'DYSTRO_ERR_INVALID_CONFIG'],
    [() => router.canary('p2c', {}, NaN), 'DYSTRO_ERR_INVALID_CONFIG'],
    [() => router.canary('p2c', {}, 0.1, { metric: 'ttft-p95-ratio' as 'ttft-p90-ratio', max: 1.2 }), 'DYSTRO_ERR_INVALID_CONFIG'],
    [() => router.canary('p2c', {}, 0.1, { metric: 'ttft-p90-ratio', max: -1 }), 'DYSTRO_ERR_INVALID_CONFIG'],
    [() => router.canary('p2c', {}, 0.1, { metric: 'ttft-p90-ratio', max: 1.2, minSamples: 0 }), 'DYSTRO_ERR_INVALID_CONFIG'],
    [() => router.canary('p2c', {}, 0.1, { metric: 'ttft-p90-ratio', max: 1.2, windowMs: 0 }), 'DYSTRO_ERR_INVALID_CONFIG'],
    [() => router.shadow('nope'), 'DYSTRO_ERR_UNKNOWN_POLICY'],
    [() => router.setPolicy('p2c', { choices: 1.5 }), 'DYSTRO_ERR_POLICY_PARAMS'],
    [() => router.setPolicy('round_robin'), 'DYSTRO_ERR_UNKNOWN_POLICY'],
  ];
  for (const [fn, code] of bad) {
    assert.throws(fn, (e: unknown) => e instanceof DystroError && e.code === code, code);
    assert.is(router.policyId, 'predicted-ttft');
    const st = router.canaryStatus();
    assert.is(st.state, 'running');
    assert.is(st.policy, 'least-request');
  }
  let err: unknown;
  try {
    router.setPolicy('round_robin');
  } catch (e) {
    err = e;
  }
  assert.match((err as Error).message, /did you mean "round-robin"/);
});

test('metrics: shadow agreement, canary state, routed fraction and rollbacks on the injected registry', async () => {
  const registry = new client.Registry();
  const metrics = new RouterMetrics(registry);
  const { router, events, engine } = (() => {
    const reg = new PolicyRegistry();
    for (const name of defaultRegistry.names()) reg.register(defaultRegistry.get(name)!);
    const made = makeRouter({
      metrics,
      registry: reg,
      pools: [pool('fast'), pool('slow')],
      replicas: [...replicas('fast', 2), ...replicas('slow', 2)],
      poolRates: { fast: { prefillTokensPerS: 20_000, decodeStepS: 0 }, slow: { prefillTokensPerS: 2_000, decodeStepS: 0 } },
    });
    const ev = new EventQueue(made.clock);
    return { router: made.router, events: ev, engine: new ModeledEngine(ev, 100) };
  })();
  router.shadow('predicted-ttft');
  router.canary('round-robin', {}, 0.2, { metric: 'ttft-p90-ratio', max: 1.2, minSamples: 50 });
  drive(router, events, engine, 100);
  let text = await registry.metrics();
  assert.match(text, /dystro_shadow_agreement_ratio\{shadow="predicted-ttft"\} 0?\.\d+|dystro_shadow_agreement_ratio\{shadow="predicted-ttft"\} 1/);
  assert.match(text, /dystro_shadow_decisions_total\{shadow="predicted-ttft",outcome="agree"\} \d+/);
  assert.match(text, /dystro_shadow_predicted_ttft_delta_ms\{shadow="predicted-ttft",stat="p90"\} -?\d/);
  assert.match(text, /dystro_canary_state\{policy="round-robin",state="running"\} 1/);
  assert.match(text, /dystro_canary_state\{policy="round-robin",state="idle"\} 0/);
  const frac = Number(/dystro_canary_routed_fraction\{policy="round-robin"\} ([\d.e-]+)/.exec(text)?.[1]);
  assert.ok(Math.abs(frac - router.canaryStatus().routedFraction) < 1e-12 && frac > 0.05 && frac < 0.4, `fraction ${frac}`);
  drive(router, events, engine, 2000, 60, 100);
  text = await registry.metrics();
  assert.match(text, /dystro_canary_state\{policy="round-robin",state="rolled-back"\} 1/);
  assert.match(text, /dystro_canary_rollbacks_total\{policy="round-robin",metric="ttft-p90-ratio"\} 1/);
  assert.not.match(text, /dystro_canary_routed_fraction\{/);
  router.stopShadow();
  text = await registry.metrics();
  assert.not.match(text, /dystro_shadow_agreement_ratio\{/);
  events.drain();
});

test.run();
