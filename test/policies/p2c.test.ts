/**
 * p2c without replacement (src/policies/baseline.ts): shares derived by hand, checked on 100,000 picks
 * (STYLE 7: Envoy's least_request simulation test does the same with its with-replacement figures).
 *
 * Derivation. d = 2 distinct replicas are drawn uniformly from n equally fast ones (equal pools, so the
 * speed weights are equal) and the lower load wins. Give the replicas distinct loads and rank them
 * 1 (least loaded) … n. Rank k wins exactly when it is in the pair and its partner ranks higher: n − k
 * of the C(n, 2) equally likely pairs. So P(k) = (n − k) / C(n, 2); for n = 8: 7/28, 6/28, …, 1/28, 0.
 * The busiest replica is never chosen — without replacement it cannot be paired with itself (Envoy's
 * with-replacement P2C picks it with probability 1/n², when it is drawn twice).
 * One busy replica among n − 1 idle ones: the busy one still gets 0; the idle ones tie, the first drawn
 * wins, and by symmetry each gets 1/(n − 1).
 * Tolerance: σ ≤ sqrt(0.25 · 0.75 / 100,000) = 0.0014; 0.006 is over 4σ.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { fixture, routeAndEnd, prompt, count, MODEL } from '../helpers/policy-fixture.ts';

const N = 100_000;
const P = prompt(1, 32);

test('distinct loads: rank k of 8 is chosen with probability (8 − k)/28; the busiest never', () => {
  const { router } = fixture({ replicas: 8, policy: 'p2c', speculative: false });
  // Engine-reported running counts (the router's own in-flight returns to 0: every ticket ends at once).
  const loads = [30, 70, 10, 80, 50, 20, 60, 40]; // r0 … r7
  loads.forEach((running, i) => router.updateLoad(`r${i}`, { running, waiting: 0 }));
  const seen = new Map<string, number>();
  for (let k = 0; k < N; k++) count(seen, routeAndEnd(router, { model: MODEL, prompt: P }).replica.id);
  const rankOf = (i: number) => [...loads].sort((a, b) => a - b).indexOf(loads[i]) + 1;
  for (let i = 0; i < 8; i++) {
    const want = (8 - rankOf(i)) / 28;
    const got = (seen.get(`r${i}`) ?? 0) / N;
    assert.ok(Math.abs(got - want) <= 0.006, `r${i} (load ${loads[i]}, rank ${rankOf(i)}): ${got} vs ${want}`);
  }
  assert.is(seen.get('r3') ?? 0, 0, 'the busiest replica is never chosen');
});

test('one busy replica among 8: it gets nothing, the 7 idle ones 1/7 each', () => {
  const { router } = fixture({ replicas: 8, policy: 'p2c', speculative: false });
  router.updateLoad('r5', { running: 100, waiting: 20 });
  const seen = new Map<string, number>();
  for (let k = 0; k < N; k++) count(seen, routeAndEnd(router, { model: MODEL, prompt: P }).replica.id);
  assert.is(seen.get('r5') ?? 0, 0);
  for (let i = 0; i < 8; i++) if (i !== 5) assert.ok(Math.abs((seen.get(`r${i}`) ?? 0) / N - 1 / 7) <= 0.006, `r${i}: ${(seen.get(`r${i}`) ?? 0) / N}`);
});

test.run();
