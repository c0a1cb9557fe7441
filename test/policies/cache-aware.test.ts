/**
 * cache-aware (SGLang cache_aware): the balance switch trips exactly when both thresholds do, the
 * match-rate threshold is strict, ties rotate by (load, processed, slot), the prompt is inserted under
 * whoever was chosen, the budget evicts least recently inserted first, and engine metrics are ignored.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { fixture, routeAndEnd, routed, prompt, concat, hashesOf, setInflight, slotOf, capturingRegistry, MODEL } from '../helpers/policy-fixture.ts';
import { cacheAware, type CacheAwarePolicy } from '../../src/policies/cache-aware.ts';
import type { Router } from '../../src/router/router.ts';

function setup(replicas: number, params: Record<string, unknown> = {}) {
  let policy!: CacheAwarePolicy;
  const registry = capturingRegistry<CacheAwarePolicy>(cacheAware, (p) => (policy = p));
  const f = fixture({ replicas, registry, policy: { name: 'cache-aware', params }, speculative: false });
  return { ...f, policy: () => policy };
}

/** Depth of the policy's own tree match for this prompt at a replica. */
function treeDepth(router: Router, policy: CacheAwarePolicy, tokens: Uint32Array, id: string): number {
  const index = policy.tree(MODEL)!;
  const hashes = hashesOf(router, tokens);
  return index.match(hashes, index.newMatchResult()).depthOf(slotOf(router, id));
}

const TEN_BLOCKS = prompt(1, 160); // 10 blocks of 16 tokens

test('defaults are SGLang’s CLI defaults, the budget is 2^26 characters at 4 a token in 16-token blocks', () => {
  assert.equal(cacheAware.defaults, { cacheThreshold: 0.3, balanceAbsThreshold: 64, balanceRelThreshold: 1.5, maxTreeSize: 2 ** 26 });
  const { policy } = setup(2);
  assert.is(policy().maxEntries, 2 ** 26 / (4 * 16));
});

test('balanced and nothing matched: min load, ties by processed count then slot — a rotation, never pinned', () => {
  const { router } = setup(4);
  const order = Array.from({ length: 8 }, (_, k) => routeAndEnd(router, { model: MODEL, prompt: prompt(100 + k, 64) }).replica.id);
  assert.equal(order, ['r0', 'r1', 'r2', 'r3', 'r0', 'r1', 'r2', 'r3']);
  // Loads first: r2 has one in flight, so the next two go to the others in (processed, slot) order.
  const { router: r2 } = setup(3);
  setInflight(r2, 'r0', 1);
  assert.is(routed(r2.route({ model: MODEL, prompt: prompt(7, 64) })).replica.id, 'r1');
  assert.is(routed(r2.route({ model: MODEL, prompt: prompt(8, 64) })).replica.id, 'r2');
});

test('match rate must exceed cache_threshold: 3 of 10 blocks (0.3) goes to min load, 4 of 10 (0.4) to the match', () => {
  const { router } = setup(4);
  assert.is(routeAndEnd(router, { model: MODEL, prompt: TEN_BLOCKS }).replica.id, 'r0');
  // r0: processed 1; the others 0 → min load is r1.
  const three = concat(TEN_BLOCKS.subarray(0, 48), prompt(2, 112));
  assert.is(routeAndEnd(router, { model: MODEL, prompt: three }).replica.id, 'r1');
  const four = concat(TEN_BLOCKS.subarray(0, 64), prompt(3, 96));
  assert.is(routeAndEnd(router, { model: MODEL, prompt: four }).replica.id, 'r0', 'r0 matches 4 blocks, r1 only 3');
  // The full prompt again: match rate 1.
  assert.is(routeAndEnd(router, { model: MODEL, prompt: TEN_BLOCKS }).replica.id, 'r0');
  // A partial trailing block never counts: 10 full blocks + 8 tokens still match 10 of 10.
  assert.is(routeAndEnd(router, { model: MODEL, prompt: concat(TEN_BLOCKS, prompt(4, 8)) }).replica.id, 'r0');
});

test('imbalance needs both thresholds: (max − min) > 64 AND max > 1.5 × min; then min load, prompt still inserted', () => {
  // r0 holds the prompt (match rate 1). Loads (r0, r1) and the expected choice, derived by hand:
  const cases: [number, number, string, string][] = [
    [130, 65, 'r1', 'diff 65 > 64 and 130 > 97.5: imbalanced'],
    [129, 65, 'r0', 'diff 64 is not > 64: balanced, follow the match'],
    [65, 0, 'r1', 'diff 65 > 64 and 65 > 0'],
    [64, 0, 'r0', 'diff 64: balanced'],
    [201, 134, 'r0', 'diff 67 > 64 but 201 > 201 is false: balanced'],
    [202, 134, 'r1', 'diff 68 and 202 > 201: imbalanced'],
    [0, 65, 'r0', 'imbalanced, and r0 is also the min-load worker'],
  ];
  for (const [l0, l1, want, why] of cases) {
    const { router, policy } = setup(2);
    assert.is(routeAndEnd(router, { model: MODEL, prompt: TEN_BLOCKS }).replica.id, 'r0');
    setInflight(router, 'r0', l0);
    setInflight(router, 'r1', l1);
    const d = routed(router.route({ model: MODEL, prompt: TEN_BLOCKS }));
    assert.is(d.replica.id, want, `(${l0}, ${l1}): ${why}`);
    assert.is(treeDepth(router, policy(), TEN_BLOCKS, want), 10, 'the prompt is inserted under the chosen worker');
  }
});

test('equally deep matches break by (load, processed, slot)', () => {
  const { router } = setup(3);
  routeAndEnd(router, { model: MODEL, prompt: TEN_BLOCKS }); // → r0
  setInflight(router, 'r0', 70); // imbalanced (70 − 0 > 64, 70 > 0): the next copy goes to min load r1
  assert.is(routeAndEnd(router, { model: MODEL, prompt: TEN_BLOCKS }).replica.id, 'r1');
  setInflight(router, 'r0', 3);
  setInflight(router, 'r1', 2);
  setInflight(router, 'r2', 0);
  // Balanced (diff 3); r0 and r1 match all 10 blocks; r1 has the lower load. r2 matches nothing.
  assert.is(routed(router.route({ model: MODEL, prompt: TEN_BLOCKS })).replica.id, 'r1');
});

test('the budget evicts the least recently inserted prompts first and is never exceeded', () => {
  // Budget: maxTreeSize 2,048 characters / (4 characters a token · 16 tokens a block) = 32 entries.
  // 16 prompts of 4 blocks (64 entries) inserted 1 s apart: the index evicts by sampled LRU (16
  // probes per eviction, oldest insertion first), so the early prompts go and the latest survive.
  const { router, clock, policy } = setup(2, { maxTreeSize: 2048 });
  assert.is(policy().maxEntries, 32);
  const prompts = Array.from({ length: 16 }, (_, k) => prompt(200 + k, 64));
  const owner: string[] = [];
  for (const p of prompts) {
    owner.push(routeAndEnd(router, { model: MODEL, prompt: p }).replica.id);
    clock.advance(1000);
  }
  const index = policy().tree(MODEL)!;
  assert.ok(index.stats().entries <= 32, `entries ${index.stats().entries}`);
  const depth = (k: number) => treeDepth(router, policy(), prompts[k], owner[k]);
  assert.is(depth(15), 4, 'the latest prompt is whole');
  const early = depth(0) + depth(1) + depth(2) + depth(3);
  const late = depth(12) + depth(13) + depth(14) + depth(15);
  assert.ok(early <= 2 && late >= 14, `early ${early}, late ${late} blocks of 16 survive`);
});

test('a removed or restarted replica leaves the tree', () => {
  const { router, policy } = setup(3);
  assert.is(routeAndEnd(router, { model: MODEL, prompt: TEN_BLOCKS }).replica.id, 'r0');
  assert.is(treeDepth(router, policy(), TEN_BLOCKS, 'r0'), 10);
  router.restart('r0');
  assert.is(treeDepth(router, policy(), TEN_BLOCKS, 'r0'), 0);
  const d = routeAndEnd(router, { model: MODEL, prompt: TEN_BLOCKS }); // nothing matches now: min load
  assert.is(treeDepth(router, policy(), TEN_BLOCKS, d.replica.id), 10);
  const slot = d.replica.slot;
  router.remove(d.replica.id);
  router.upsertReplica({ id: 'r9', pool: 'h100', address: 'http://10.0.0.9:8000' }); // reuses the freed slot
  assert.is(slotOf(router, 'r9'), slot);
  assert.is(treeDepth(router, policy(), TEN_BLOCKS, 'r9'), 0, 'the new replica in the old slot inherits nothing');
});

test('NaN or stale engine metrics do not change a single decision (loads are the router’s own counts)', () => {
  const run = (poison: boolean) => {
    const { router, clock } = setup(4);
    if (poison) {
      router.updateLoad('r0', { running: NaN, waiting: NaN, kvUsage: NaN });
      router.updateLoad('r1', { running: 0, waiting: 0, kvUsage: 0 });
      clock.advance(120_000); // r1's report is now stale too
    }
    const ids: string[] = [];
    for (let k = 0; k < 60; k++) {
      const d = routed(router.route({ model: MODEL, prompt: concat(prompt(k % 5, 64), prompt(500 + k, 32)) }));
      ids.push(d.replica.id);
      if (k % 3 !== 0) d.ticket.onEnd();
    }
    return ids;
  };
  assert.equal(run(true), run(false));
});

test('text prompts match on byte blocks', () => {
  const { router } = setup(3);
  const doc = 'You are a helpful assistant. '.repeat(20);
  const first = routeAndEnd(router, { model: MODEL, prompt: `${doc} Question one?` }).replica.id;
  for (let k = 0; k < 5; k++) assert.is(routeAndEnd(router, { model: MODEL, prompt: `${doc} Another question ${k}?` }).replica.id, first);
});

test.run();
