/**
 * weighted-scorers (llm-d / Gateway API Inference Extension): the three scores and the weighted total
 * on a worked example, the max-score picker's random tie-break, the hot spot its README warns about,
 * and unknown, NaN or stale load that never attracts traffic.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { fixture, routed, routeAndEnd, prompt, hashesOf, setInflight, slotOf, count, MODEL } from '../helpers/policy-fixture.ts';
import { weightedScorers } from '../../src/policies/weighted-scorers.ts';
import type { Router } from '../../src/router/router.ts';

const PROMPT = prompt(1, 128); // 8 blocks

function scores(router: Router): Record<string, number> {
  const d = routed(router.route({ model: MODEL, prompt: PROMPT, explain: true }));
  d.ticket.onEnd();
  return Object.fromEntries(d.explanation!.candidates.map((c) => [c.replica, c.score]));
}

function close(got: Record<string, number>, want: Record<string, number>): void {
  assert.equal(Object.keys(got).sort(), Object.keys(want).sort());
  for (const k of Object.keys(want)) assert.ok(Math.abs(got[k] - want[k]) <= 1e-12, `${k}: ${got[k]} vs ${want[k]}`);
}

test('defaults are llm-d’s profile weights', () => {
  assert.equal(weightedScorers.defaults, { prefixWeight: 3, queueWeight: 2, kvWeight: 2, staleAfterMs: 5000 });
});

test('worked example: prefix, queue and KV scores and the weighted total', () => {
  // | replica | cached | waiting | KV  | prefix | queue (maxQ 10, minQ 0) | KV score | total                   |
  // | r0      | 8 of 8 | 10      | 0.9 | 1      | (10 − 10)/10 = 0        | 0.1      | 3 + 0 + 0.2 = 3.2       |
  // | r1      | 0      | 0       | 0.1 | 0      | 1                       | 0.9      | 0 + 2 + 1.8 = 3.8       |
  // | r2      | 4 of 8 | 5       | 0.5 | 0.5    | 0.5                     | 0.5      | 1.5 + 1 + 1 = 3.5       |
  // max score → r1.
  const { router } = fixture({ replicas: 3, policy: 'weighted-scorers', speculative: false });
  const h = hashesOf(router, PROMPT);
  router.index.store(slotOf(router, 'r0'), h, 'gpu');
  router.index.store(slotOf(router, 'r2'), h.subarray(0, 4), 'gpu');
  router.updateLoad('r0', { waiting: 10, kvUsage: 0.9 });
  router.updateLoad('r1', { waiting: 0, kvUsage: 0.1 });
  router.updateLoad('r2', { waiting: 5, kvUsage: 0.5 });
  close(scores(router), { r0: 3.2, r1: 3.8, r2: 3.5 });
  for (let k = 0; k < 20; k++) assert.is(routeAndEnd(router, { model: MODEL, prompt: PROMPT }).replica.id, 'r1');
  // Weights are parameters: prefix 10 makes the full match win (10 + 0 + 0.2 against 5 + 1 + 1).
  router.setPolicy('weighted-scorers', { prefixWeight: 10 });
  close(scores(router), { r0: 10.2, r1: 3.8, r2: 7 });
});

test('the hot spot the llm-d README warns about: a full prefix match outweighs a long queue', () => {
  // r0 holds the prompt with 40 waiting and KV 0.5: 3 + 0 + 1 = 4; r1 is idle with KV 0.1: 0 + 2 + 1.8 = 3.8.
  const { router } = fixture({ replicas: 2, policy: 'weighted-scorers', speculative: false });
  router.index.store(slotOf(router, 'r0'), hashesOf(router, PROMPT), 'gpu');
  router.updateLoad('r0', { waiting: 40, kvUsage: 0.5 });
  router.updateLoad('r1', { waiting: 0, kvUsage: 0.1 });
  close(scores(router), { r0: 4, r1: 3.8 });
});

test('all equal: queue score 1.0 for everyone and a uniform random tie-break (never the first replica only)', () => {
  // 4 replicas, same reports, nothing cached; 8,000 picks: share 0.25, σ = 0.0048, tolerance 0.02.
  const { router } = fixture({ replicas: 4, policy: 'weighted-scorers', speculative: false });
  for (const id of ['r0', 'r1', 'r2', 'r3']) router.updateLoad(id, { waiting: 3, kvUsage: 0.25 });
  close(scores(router), { r0: 3.5, r1: 3.5, r2: 3.5, r3: 3.5 });
  const seen = new Map<string, number>();
  for (let k = 0; k < 8000; k++) count(seen, routeAndEnd(router, { model: MODEL, prompt: prompt(k + 10, 64) }).replica.id);
  for (const [id, c] of seen) assert.ok(Math.abs(c / 8000 - 0.25) <= 0.02, `${id} ${c / 8000}`);
});

test('NaN, out-of-range and stale reports score 0 on queue and KV and never attract traffic', () => {
  // r0: NaN queue and KV; r1: a percentage where a fraction was meant (unknown) and NaN waiting;
  // r2: a perfect report that goes stale (older than 5 s); r3, r4: fresh, waiting 3, KV 0.6 → queue
  // 1.0 (min = max among known), KV 0.4: 2 + 0.8 = 2.8. r0, r1, r2 score 0.
  const { router, clock } = fixture({ replicas: 5, policy: 'weighted-scorers', speculative: false });
  router.updateLoad('r2', { waiting: 0, kvUsage: 0 });
  clock.advance(6000);
  router.updateLoad('r0', { waiting: NaN, kvUsage: NaN, running: NaN });
  router.updateLoad('r1', { waiting: Infinity, kvUsage: 85 });
  router.updateLoad('r3', { waiting: 3, kvUsage: 0.6 });
  router.updateLoad('r4', { waiting: 3, kvUsage: 0.6 });
  close(scores(router), { r0: 0, r1: 0, r2: 0, r3: 2.8, r4: 2.8 });
  const seen = new Map<string, number>();
  for (let k = 0; k < 2000; k++) count(seen, routeAndEnd(router, { model: MODEL, prompt: prompt(k + 10, 64) }).replica.id);
  assert.equal([...seen.keys()].sort(), ['r3', 'r4']);
  // A fresh report brings r2 back: waiting 0 makes it the best queue (maxQ 3): 2·1 + 2·1 = 4 against r3, r4: 0 + 0.8.
  router.updateLoad('r2', { waiting: 0, kvUsage: 0 });
  close(scores(router), { r0: 0, r1: 0, r2: 4, r3: 0.8, r4: 0.8 });
});

test('a replica that never reported falls back to the router’s in-flight count for its queue, KV unknown (0)', () => {
  const { router } = fixture({ replicas: 3, policy: 'weighted-scorers', speculative: false });
  router.updateLoad('r1', { waiting: 2, kvUsage: 0.5 });
  router.updateLoad('r2', { waiting: 2, kvUsage: 0.5 });
  setInflight(router, 'r0', 5); // q = 5 = maxQ → queue 0, KV 0: total 0; r1, r2: queue 1, KV 0.5: 3
  close(scores(router), { r0: 0, r1: 3, r2: 3 });
  setInflight(router, 'r0', 1); // q = 1 = minQ → queue 1, KV 0: total 2; r1, r2: queue 0: 1
  close(scores(router), { r0: 2, r1: 1, r2: 1 });
});

test.run();
