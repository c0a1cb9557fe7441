/**
 * `compare` on a small workload (shared-prefix groups on two pools of two replicas, 128 requests, runs
 * inline): the report's structure and verdict, a control run (baseline = candidate) whose blast radius
 * is exactly nothing, blast-radius figures recomputed from independent simulate() runs, the knee
 * search, the text and Markdown renderings, and typed errors before anything runs.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { compare, renderCompare, SCENARIO_NAMES, type CompareOptions } from '../../src/sim/compare.ts';
import { simulate } from '../../src/sim/index.ts';
import { specAt } from '../../src/sim/sweep.ts';
import type { WorkloadSpec } from '../../src/sim/workloads.ts';
import type { PoolConfig } from '../../src/sim/sim.ts';

const workload: WorkloadSpec = { kind: 'shared-prefix', groups: 16, promptsPerGroup: 4, systemPromptTokens: 3000, questionTokens: 200, outputTokens: 64, ratePerS: 10, rounds: 2, seed: 1 };
const fleet: PoolConfig[] = [
  { id: 'h100', accelerator: 'H100', model: 'llama-3-8b', replicas: 2 },
  { id: 'a100', accelerator: 'A100', model: 'llama-3-8b', replicas: 2 },
];
const base: CompareOptions = { candidate: 'predicted-ttft', baselines: ['round-robin'], workload, fleet, rateScale: 3, threads: 0, sim: { timelineBucketMs: 1000 } };

test('a small compare: every section present, a verdict, figures within their ranges', async () => {
  const r = await compare({ ...base, baselines: ['cache-aware', 'round-robin'], seeds: [1, 2], capacity: [0.5, 1, 2] });
  assert.equal(r.what.baselines, ['cache-aware', 'round-robin']);
  assert.is(r.what.requests, 128);
  assert.is(r.what.rateScale, 3);
  assert.is(r.policies.length, 3);
  for (const p of r.policies) {
    assert.is(p.runs.length, 2, 'one run per seed');
    assert.equal(p.runs.map((x) => x.seed), [1, 2]);
    assert.ok(p.goodputRps.min <= p.goodputRps.mean && p.goodputRps.mean <= p.goodputRps.max);
    for (const run of p.runs) {
      assert.is(run.completed, 128);
      assert.ok(run.ceilings && run.hitRate <= run.ceilings.globalLru + 1e-12, `${p.policy}: hit rate within the ceiling`);
    }
    assert.is(p.perReplica.length, 4);
  }
  assert.is(r.versus.length, 2);
  for (const v of r.versus) {
    assert.ok(['deploy', 'canary', 'hold', 'reject'].includes(v.verdict.decision));
    assert.ok(v.verdict.line.startsWith(v.verdict.decision.toUpperCase()), v.verdict.line);
    assert.ok(v.verdict.line.includes('predicted-ttft') && v.verdict.line.includes(v.baseline));
    assert.is(v.gain.goodput.values.length, 2);
    assert.ok(v.blast.placementsMoved.min >= 0 && v.blast.placementsMoved.max <= 1);
    assert.is(v.scenarios.length, SCENARIO_NAMES.length);
  }
  // Every scenario ran for every policy (two pools: pool-loss is not skipped).
  assert.is(r.scenarios.length, SCENARIO_NAMES.length * 3);
  assert.is(r.what.skippedScenarios.length, 0);
  const poolLoss = r.scenarios.filter((s) => s.scenario === 'pool-loss');
  assert.ok(poolLoss.every((s) => s.vsHealthy < 1), 'losing half the fleet costs goodput');
  // The overall verdict is against the baseline with the highest goodput.
  const strongest = [...r.policies.slice(1)].sort((a, b) => b.goodputRps.mean - a.goodputRps.mean)[0].policy;
  assert.is(r.verdict.baseline, strongest);
  // Capacity: attainment never rises with load by much, round-robin's capacity is the lowest.
  assert.ok(r.capacity);
  assert.equal(r.capacity!.loads, [1.5, 3, 6]);
  const rr = r.capacity!.capacity.find((c) => c.policy === 'round-robin')!;
  assert.ok(r.capacity!.capacity.every((c) => c.rps >= rr.rps - 1e-9));
  // Chart data: a TTFT curve, per-replica busy rows and a hit-rate series per policy.
  assert.is(r.charts.ttft.length, 3);
  assert.ok(r.charts.ttft.every((t) => t.ms.length === t.percentiles.length && t.ms.length > 10));
  assert.ok(r.charts.replicaLoad.every((b) => b.busy.length > 0 && b.busy.every((row) => row.length === 4 && row.every((x) => x >= 0 && x <= 1))));
  assert.ok(r.charts.replicaLoad.every((b) => b.outstanding.length === b.busy.length && b.outstanding.every((row) => row.length === 4 && row.every((x) => x >= 0))));
  assert.ok(r.versus.every((v) => v.blast.peakLoad.candidate > 0 && v.blast.peakLoad.baseline > 0));
  assert.ok(r.charts.hitRate.every((h) => h.values.length === h.arrivals.length));
  assert.ok(r.charts.ceilings && r.charts.ceilings.globalLru > 0);
  // 3 policies × 2 seeds, 4 scenarios × 3 policies, capacity 2 extra loads × 3 policies (×1 reuses the main run).
  assert.is(r.what.runs, 6 + 12 + 6);
});

test('baseline = candidate: nothing moves, no gain, the verdict holds', async () => {
  const r = await compare({ ...base, baselines: ['predicted-ttft'], seeds: [1, 2], scenarios: ['cache-flush', 'replica-loss'] });
  const v = r.versus[0];
  assert.is(v.baseline, 'predicted-ttft (baseline 1)');
  assert.equal(v.blast.placementsMoved.values, [0, 0], 'the same policy and seed places every request on the same replica');
  assert.equal(v.gain.goodput.values, [0, 0]);
  assert.equal(v.gain.ttftP90Ratio.values, [1, 1]);
  assert.equal(v.gain.hitRateDelta.values, [0, 0]);
  assert.is(v.blast.worstReplica.busyIncrease, 0);
  assert.is(v.blast.peakLoad.candidate, v.blast.peakLoad.baseline);
  assert.ok(v.scenarios.every((s) => s.ratio === 1));
  assert.is(v.verdict.gain, 'unclear');
  assert.is(v.verdict.risk, 'low');
  assert.is(v.verdict.decision, 'hold');
});

test('blast radius agrees with independent simulate() runs of the same seed', async () => {
  const r = await compare({ ...base, seeds: [4], scenarios: [] });
  const run = (policy: string) => simulate({ fleet, workload: specAt(workload, 3, 4), policy, seed: 4, recordPlacements: true, timelineBucketMs: 1000 });
  const c = run('predicted-ttft');
  const b = run('round-robin');
  const moved = c.placements!.filter((p, i) => p !== b.placements![i]).length / c.placements!.length;
  const v = r.versus[0];
  assert.is(v.blast.placementsMoved.values[0], moved);
  const mean = b.perReplica.reduce((a, x) => a + x.busyS, 0) / b.perReplica.length;
  const incs = c.perReplica.map((x, j) => (x.busyS - b.perReplica[j].busyS) / mean);
  const worst = Math.max(...incs);
  assert.ok(Math.abs(v.blast.worstReplica.busyIncrease - worst) < 1e-12);
  assert.is(v.blast.worstReplica.id, c.perReplica[incs.indexOf(worst)].id);
  assert.ok(Math.abs(r.policies[0].goodputRps.values[0] - c.goodputRps) < 1e-4, 'the summary rounds to 4 decimals');
  assert.ok(Math.abs(v.gain.goodput.values[0] - (c.goodputRps / b.goodputRps - 1)) < 1e-12);
  // Requests per replica sum to the workload in both runs.
  assert.is(r.policies[0].perReplica.reduce((a, x) => a + x.requests, 0), 128);
});

test("knee: the reference's TTFT p90 misses the SLO at the knee and met it just below", async () => {
  const r = await compare({ ...base, rateScale: 'knee', knee: { grid: [1, 2, 4, 8, 16], refine: 1 }, seeds: [1], scenarios: [], threads: 0, slo: { ttftMs: 500, tpotMs: 100 } });
  const k = r.knee!;
  assert.ok(k.found);
  assert.is(k.reference, 'round-robin');
  assert.ok(k.p90Ms > 500, `p90 ${k.p90Ms} at ×${k.scale}`);
  assert.ok(k.below && k.below.p90Ms <= 500 && k.below.scale < k.scale);
  assert.is(r.what.rateScale, k.scale);
  const rr = r.policies.find((p) => p.policy === 'round-robin')!;
  assert.is(rr.ttftP90.values[0], k.p90Ms, 'the compared round-robin run is the knee run (same seed and load)');
});

test('text and Markdown renderings carry the tables and the verdict line', async () => {
  const r = await compare({ ...base, seeds: [1], scenarios: ['cache-flush'], capacity: [1, 2], command: 'dystro compare --test' });
  const text = renderCompare(r, 'text');
  for (const s of ['dystro compare: predicted-ttft (candidate) against round-robin', 'goodput req/s', 'placements moved', 'cache-flush', 'Capacity', 'verdict: ', 'command: dystro compare --test']) assert.ok(text.includes(s), s);
  assert.ok(text.includes(r.verdict.line));
  const md = renderCompare(r, 'markdown');
  assert.ok(md.startsWith('## dystro compare'));
  assert.ok(/\n\| policy \| goodput req\/s \|/.test(md));
  assert.ok(/\n\|---\|--:\|/.test(md), 'a Markdown alignment row');
  assert.ok(md.includes(`verdict: ${r.verdict.line}`));
});

test('bad options fail before any run, with typed errors', async () => {
  const code = async (o: Partial<CompareOptions>) => {
    try {
      await compare({ ...base, ...o });
    } catch (e) {
      return (e as { code?: string }).code;
    }
    return 'no error';
  };
  assert.is(await code({ candidate: 'predicted-tfft' }), 'DYSTRO_ERR_UNKNOWN_POLICY');
  assert.is(await code({ baselines: [{ name: 'cache-aware', params: { cacheTreshold: 0 } }] }), 'DYSTRO_ERR_POLICY_PARAMS');
  assert.is(await code({ baselines: [] }), 'DYSTRO_ERR_INVALID_CONFIG');
  assert.is(await code({ scenarios: ['meteor'] as never }), 'DYSTRO_ERR_INVALID_CONFIG');
  assert.is(await code({ seeds: [1, 1] }), 'DYSTRO_ERR_INVALID_CONFIG');
  assert.is(await code({ rateScale: -1 }), 'DYSTRO_ERR_INVALID_CONFIG');
});

test('one pool: pool-loss is skipped with the reason', async () => {
  const r = await compare({ ...base, fleet: [{ id: 'h100', accelerator: 'H100', model: 'llama-3-8b', replicas: 3 }], seeds: [1], scenarios: ['pool-loss', 'replica-loss'] });
  assert.equal(r.what.skippedScenarios.map((s) => s.name), ['pool-loss']);
  assert.equal([...new Set(r.scenarios.map((s) => s.scenario))], ['replica-loss']);
});

test.run();
