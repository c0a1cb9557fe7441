/**
 * Validation against published behaviour (the simulator issue, part 8), kept small:
 *
 * 1. llm-d's precise prefix-cache routing profile — shared-prefix groups of 5 users, 6,000-token shared
 *    context, 1,200-token questions, 1,000 output tokens, load ramped in stages — where llm-d reports
 *    precise cache-aware ≫ approximate ≫ load-only ≈ random on TTFT p90. Here with 30 groups instead of
 *    150 (each prompt sent 4 times, 600 requests), on 4 Llama-3-8B / H100 replicas whose KV cache is cut
 *    to 8,000 blocks (128k tokens) so that, as in the full profile at its higher rates, the cache cannot
 *    hold every group's context and every running request at once; arrivals ramp from 2 to 12 req/s in
 *    six stages. The four arms, as llm-d configures them:
 *    - precise: weighted-scorers (llm-d's prefix 3 / queue 2 / KV 2) on the index fed by the engines' KV
 *      events only (no speculative entries from routing decisions);
 *    - approximate: SGLang's cache_aware, an approximate tree of the prompts it routed, no engine events;
 *    - load-only: weighted-scorers without the prefix scorer (queue and KV utilisation);
 *    - random.
 *    Checked on three seeds: p90(approximate) ≥ 2 × p90(precise), p90(load-only) ≥ 10 × p90(approximate),
 *    load-only and random within 25% of each other. (weighted-scorers on the router's speculative index
 *    without events is printed too: in this model it is close to precise, see the README.)
 * 2. Hit rates never exceed the offline ceilings, in every run above.
 * 3. The Mooncake conversation trace (first 600 requests) on 16 replicas: pure longest-prefix routing
 *    without a load cap (cache_aware with its balance check and threshold disabled) sends every request
 *    to one replica, as the trace's offline analysis found (skew 16); with SGLang's default balance
 *    thresholds or predicted-ttft's bounded-load cap the skew stays below 1.6.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { simulate, type SimConfig, type SimResult } from '../../src/sim/index.ts';
import { loadMooncake, rampRate, sharedPrefix, sliceWorkload } from '../../src/sim/workloads.ts';

const ARMS: { name: string; config: Partial<SimConfig> }[] = [
  { name: 'precise', config: { policy: 'weighted-scorers', router: { speculative: false } } },
  { name: 'approximate', config: { policy: 'cache-aware' } },
  { name: 'load-only', config: { policy: { name: 'weighted-scorers', params: { prefixWeight: 0 } } } },
  { name: 'random', config: { policy: 'random' } },
  { name: '(ws, speculative only)', config: { policy: 'weighted-scorers', events: { lossProbability: 1 } } },
];

function withinCeilings(r: SimResult, what: string): void {
  const c = r.prefix.ceilings!;
  assert.ok(r.prefix.hitRate <= c.globalLru + 1e-12 && r.prefix.hitRate <= c.infinite + 1e-12, `${what}: hit rate ${r.prefix.hitRate} above a ceiling (${c.globalLru}, ${c.infinite})`);
}

test('llm-d precise-routing profile, load ramped: precise ≫ approximate ≫ load-only ≈ random on TTFT p90', () => {
  const lines: string[] = [];
  for (const seed of [1, 2, 3]) {
    const workload = rampRate(sharedPrefix({ groups: 30, promptsPerGroup: 5, systemPromptTokens: 6000, questionTokens: 1200, outputTokens: 1000, ratePerS: 2, rounds: 4, seed }), [1, 2, 3, 4, 5, 6]);
    const p90: Record<string, number> = {};
    const cells: string[] = [];
    for (const arm of ARMS) {
      const r = simulate({ fleet: [{ accelerator: 'H100', model: 'llama-3-8b', replicas: 4, kvCapacityBlocks: 8000 }], workload, seed, ...arm.config });
      assert.is(r.requests.completed, 600);
      withinCeilings(r, `seed ${seed} ${arm.name}`);
      p90[arm.name] = r.ttftMs.p90;
      cells.push(`${arm.name} ${r.ttftMs.p90.toFixed(0)} ms (hit ${(100 * r.prefix.hitRate).toFixed(0)}%)`);
    }
    lines.push(`  seed ${seed}: ${cells.join(', ')}`);
    assert.ok(p90.approximate >= 2 * p90.precise, `seed ${seed}: approximate ${p90.approximate} vs precise ${p90.precise}`);
    assert.ok(p90['load-only'] >= 10 * p90.approximate, `seed ${seed}: load-only ${p90['load-only']} vs approximate ${p90.approximate}`);
    const ratio = p90['load-only'] / p90.random;
    assert.ok(ratio > 0.75 && ratio < 1.25, `seed ${seed}: load-only ÷ random = ${ratio}`);
  }
  console.log(`  TTFT p90 (ms) on the small llm-d profile:\n${lines.join('\n')}`);
});

test('Mooncake conversation trace: pure longest-prefix without a load cap piles onto one replica', () => {
  const workload = sliceWorkload(loadMooncake({ seed: 1 }), 0, 600);
  const fleet = [{ accelerator: 'H100', model: 'llama-3-8b', replicas: 16 }];
  const pure = simulate({ fleet, workload, seed: 1, policy: { name: 'cache-aware', params: { cacheThreshold: 0, balanceAbsThreshold: 1e9, balanceRelThreshold: 1e9 } } });
  withinCeilings(pure, 'pure longest-prefix');
  // Block 0 is a system prompt shared by every request: the first replica to hold it matches everything.
  assert.is(Math.max(...pure.perReplica.map((r) => r.requests)), 600);
  assert.is(pure.skew.requests, 16);
  const capped = ['cache-aware', 'predicted-ttft'].map((policy) => simulate({ fleet, workload, seed: 1, policy }));
  for (const r of capped) {
    withinCeilings(r, r.policy);
    assert.ok(r.skew.requests < 1.6, `${r.policy}: skew ${r.skew.requests}`);
    assert.ok(r.ttftMs.p90 < pure.ttftMs.p90 / 10, `${r.policy}: TTFT p90 ${r.ttftMs.p90} vs ${pure.ttftMs.p90}`);
  }
  console.log(`  Mooncake 600 requests, 16 replicas: pure longest-prefix skew ${pure.skew.requests.toFixed(2)}, TTFT p90 ${(pure.ttftMs.p90 / 1000).toFixed(0)} s; ` + capped.map((r) => `${r.policy} skew ${r.skew.requests.toFixed(2)}, p90 ${r.ttftMs.p90.toFixed(0)} ms`).join('; '));
});

test.run();
