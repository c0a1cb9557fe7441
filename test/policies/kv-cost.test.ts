/**
 * kv-cost (Dynamo KV router): the cost arithmetic on a worked example with every term, the tier
 * weights, the active-request weight, temperature sampling against hand-computed probabilities, and
 * uniform choice among equal costs.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { fixture, routed, routeAndEnd, prompt, hashesOf, setInflight, slotOf, count, MODEL } from '../helpers/policy-fixture.ts';
import { kvCost } from '../../src/policies/kv-cost.ts';
import type { Router } from '../../src/router/router.ts';

const PROMPT = prompt(1, 128); // 8 blocks of 16 tokens

/**
 * The worked example (block size 16, prompt 128 tokens = 8 blocks, this request's blocks = 8):
 *
 * | replica | cached (tier)              | assigned prefill | active blocks | prefill_blocks | adjusted               | cost            |
 * | r0      | blocks 0–1 GPU             | 64 tokens        | 10            | (64+128)/16 = 12 | 12 − 2 = 10          | 10 + 10 + 8 = 28 |
 * | r1      | 0–2 GPU, 3–4 CPU           | 0                | 20            | 8                | 8 − 3 − 0.75·2 = 3.5 | 3.5 + 20 + 8 = 31.5 |
 * | r2      | 0–7 disk                   | 160 tokens       | 0             | 18               | 18 − 0.25·8 = 16     | 16 + 0 + 8 = 24 |
 * | r3      | 0–3 speculative (= device) | 0                | 16            | 8                | 8 − 4 = 4            | 4 + 16 + 8 = 28 |
 *
 * argmin → r2 (24). With activeRequestWeight 2 and in-flight requests (1, 1, 5, 1): r0 30, r1 33.5,
 * r2 34, r3 30 → r0 or r3 at random.
 */
function workedExample(params: Record<string, unknown> = {}, replicas = 4): Router {
  const { router } = fixture({ replicas, policy: { name: 'kv-cost', params }, speculative: false });
  const h = hashesOf(router, PROMPT);
  router.index.store(slotOf(router, 'r0'), h.subarray(0, 2), 'gpu');
  router.index.store(slotOf(router, 'r1'), h.subarray(0, 3), 'gpu');
  router.index.store(slotOf(router, 'r1'), h.subarray(3, 5), 'cpu');
  router.index.store(slotOf(router, 'r2'), h.subarray(0, 8), 'disk');
  setInflight(router, 'r0', 1, 64, 10);
  setInflight(router, 'r1', 1, 0, 20);
  setInflight(router, 'r2', 5, 160, 0);
  if (replicas > 3) {
    router.index.speculate(slotOf(router, 'r3'), h.subarray(0, 4));
    setInflight(router, 'r3', 1, 0, 16);
  }
  return router;
}

function costs(router: Router): Record<string, number> {
  const d = routed(router.route({ model: MODEL, prompt: PROMPT, explain: true }));
  d.ticket.onEnd();
  return Object.fromEntries(d.explanation!.candidates.map((c) => [c.replica, c.score]));
}

test('defaults are Dynamo’s', () => {
  assert.equal(kvCost.defaults, { overlapCredit: 1, prefillScale: 1, activeRequestWeight: 0, hostTierWeight: 0.75, diskTierWeight: 0.25, temperature: 0 });
});

test('worked example: every term of the cost, in blocks, and the argmin', () => {
  const router = workedExample();
  const c = costs(router);
  assert.equal(c, { r0: 28, r1: 31.5, r2: 24, r3: 28 });
  for (let k = 0; k < 20; k++) assert.is(routeAndEnd(router, { model: MODEL, prompt: PROMPT }).replica.id, 'r2');
});

test('active-request weight and prefill scale enter linearly', () => {
  assert.equal(costs(workedExample({ activeRequestWeight: 2 })), { r0: 30, r1: 33.5, r2: 34, r3: 30 });
  // prefillScale 2 doubles only the adjusted prefill: r0 2·10 + 18 = 38, r1 2·3.5 + 28 = 35, r2 2·16 + 8 = 40, r3 2·4 + 24 = 32.
  assert.equal(costs(workedExample({ prefillScale: 2 })), { r0: 38, r1: 35, r2: 40, r3: 32 });
  // No overlap credit: pure load: r0 12 + 18 = 30, r1 8 + 28 = 36, r2 18 + 8 = 26, r3 8 + 24 = 32.
  assert.equal(costs(workedExample({ overlapCredit: 0, hostTierWeight: 0, diskTierWeight: 0 })), { r0: 30, r1: 36, r2: 26, r3: 32 });
  // The adjusted prefill never goes negative: r2 with a disk weight of 10: max(0, 18 − 80) = 0 → cost 8.
  assert.is(costs(workedExample({ diskTierWeight: 10 })).r2, 8);
  // Equal-cost tie r0/r3 under activeRequestWeight 2 breaks at random: both are chosen.
  const router = workedExample({ activeRequestWeight: 2 });
  const seen = new Map<string, number>();
  for (let k = 0; k < 200; k++) count(seen, routeAndEnd(router, { model: MODEL, prompt: PROMPT }).replica.id);
  assert.equal([...seen.keys()].sort(), ['r0', 'r3']);
  assert.ok(seen.get('r0')! > 60 && seen.get('r3')! > 60, JSON.stringify([...seen]));
});

test('temperature: p_i ∝ exp(−c′_i / T) with c′ = (c − min)/(max − min), checked on 20,000 picks', () => {
  // r0..r2 of the worked example: costs 28, 31.5, 24; c′ = 4/7.5, 1, 0; weights e^−0.5333 = 0.58665,
  // e^−1 = 0.36788, 1; p = 0.30015, 0.18822, 0.51163. Binomial σ ≤ 0.0036 at N = 20,000; tolerance 0.015.
  const router = workedExample({ temperature: 1 }, 3);
  const N = 20_000;
  const seen = new Map<string, number>();
  for (let k = 0; k < N; k++) count(seen, routeAndEnd(router, { model: MODEL, prompt: PROMPT }).replica.id);
  const w = [Math.exp(-4 / 7.5), Math.exp(-1), 1];
  const total = w[0] + w[1] + w[2];
  ['r0', 'r1', 'r2'].forEach((id, i) => {
    const got = (seen.get(id) ?? 0) / N;
    assert.ok(Math.abs(got - w[i] / total) <= 0.015, `${id}: ${got} vs ${w[i] / total}`);
  });
  // A very low temperature is argmin in practice: e^(−0.533/0.01) ≈ 6e−24.
  const cold = workedExample({ temperature: 0.01 }, 3);
  for (let k = 0; k < 200; k++) assert.is(routeAndEnd(cold, { model: MODEL, prompt: PROMPT }).replica.id, 'r2');
});

test('equal costs: uniform at temperature 0 (random tie-break) and above 0 — ties never pin the first replica', () => {
  // 4 identical empty replicas, 8,000 picks: share 0.25, σ = 0.0048, tolerance 4σ ≈ 0.02.
  for (const temperature of [0, 0.5]) {
    const { router } = fixture({ replicas: 4, policy: { name: 'kv-cost', params: { temperature } }, speculative: false });
    const seen = new Map<string, number>();
    for (let k = 0; k < 8000; k++) count(seen, routeAndEnd(router, { model: MODEL, prompt: prompt(k, 64) }).replica.id);
    assert.is(seen.size, 4);
    for (const [id, c] of seen) assert.ok(Math.abs(c / 8000 - 0.25) <= 0.02, `T = ${temperature}: ${id} ${c / 8000}`);
  }
});

test('in-flight requests this router sent raise the cost (load balancing without any engine report)', () => {
  // Requests that never finish: each adds its uncached prompt (128 tokens = 8 blocks of prefill) and
  // its blocks (ceil((128 + 256) / 16) = 24 active) to its replica, so 4 empty replicas fill evenly.
  const { router } = fixture({ replicas: 4, policy: 'kv-cost', speculative: false });
  for (let k = 0; k < 40; k++) routed(router.route({ model: MODEL, prompt: prompt(1000 + k, 128) }));
  for (const id of ['r0', 'r1', 'r2', 'r3']) assert.is(router.inflight.requests[slotOf(router, id)], 10, id);
});

test('NaN or stale engine metrics change nothing: the cost uses only the router’s counts and the index', () => {
  const clean = costs(workedExample());
  const router = workedExample();
  router.updateLoad('r1', { running: NaN, waiting: NaN, kvUsage: NaN, prefillTokens: NaN });
  router.updateLoad('r2', { running: 0, waiting: 0, kvUsage: 0, prefillTokens: 0 });
  assert.equal(costs(router), clean);
});

test.run();
