/**
 * The simulation runner and sweeps: jobs run in piscina worker threads give exactly the results of the
 * same jobs run inline (the simulator is deterministic; only wall-clock figures differ), progress
 * reaches every run's end, capacities are read off attainment curves as documented, and a typo in a
 * policy fails in this thread before any worker starts.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { SimRunner, capacityOf, renderSweep, runAll, sweep, type SimJob } from '../../src/sim/sweep.ts';
import type { SimResult } from '../../src/sim/sim.ts';
import type { WorkloadSpec } from '../../src/sim/workloads.ts';

const workload: WorkloadSpec = { kind: 'zipf-prefixes', prefixes: 20, prefixTokens: 1024, suffixTokens: 256, outputTokens: 32, requests: 200, ratePerS: 40, seed: 1 };
const fleet = [{ id: 'h100', accelerator: 'H100', model: 'llama-3-8b', replicas: 3 }];

function deterministic(r: SimResult): Omit<SimResult, 'perf'> {
  const { perf, ...rest } = r;
  void perf;
  return rest;
}

test('worker threads and inline runs give identical results; progress reaches the end of every run', async () => {
  const jobs: SimJob[] = ['round-robin', 'predicted-ttft', 'kv-cost'].map((policy, i) => ({ fleet, workload: { ...workload, rateScale: 1 + i }, policy, seed: 3, recordPlacements: true, detail: true }));
  const pooled = new SimRunner({ threads: 2 });
  const fractions: number[] = [];
  let pooledResults: SimResult[];
  try {
    pooledResults = await runAll(pooled, jobs, (f, done, total) => {
      fractions.push(f);
      assert.ok(done <= total);
    });
  } finally {
    await pooled.close();
  }
  const inline = await runAll(new SimRunner({ threads: 0 }), jobs);
  assert.equal(pooledResults.map(deterministic), inline.map(deterministic));
  assert.is(fractions[fractions.length - 1], 1);
  assert.ok(fractions.every((f, i) => i === 0 || f >= fractions[i - 1]), 'progress never goes back');
  assert.ok(pooled.describe().includes('2 worker threads'));
});

test('a sweep: policies × loads, capacities at the attainment target', async () => {
  const r = await sweep({ policies: ['round-robin', 'predicted-ttft'], loads: [4, 1, 2], workload, fleet, threads: 2, slo: { ttftMs: 300, tpotMs: 100 } });
  assert.is(r.points.length, 6);
  assert.equal(r.what.loads, [1, 2, 4], 'loads sorted');
  assert.ok(r.what.runner.includes('worker'));
  for (const p of r.points) {
    assert.is(p.summary.requests, 200);
    assert.ok(Math.abs(p.summary.offeredRps - r.what.baseRatePerS * p.load) < 1e-3);
  }
  for (const c of r.capacity) {
    const att = r.what.loads.map((l) => r.points.find((p) => p.policy === c.policy && p.load === l)!.summary.sloAttainment);
    assert.equal({ load: c.load, bound: c.bound }, capacityOf(r.what.loads, att, 0.9));
    assert.ok(Math.abs(c.rps - c.load * r.what.baseRatePerS) < 1e-9);
  }
  const text = renderSweep(r);
  assert.ok(text.includes('capacity at ≥ 90% SLO attainment'));
  assert.ok(renderSweep(r, 'markdown').includes('| policy | load |'));
});

test('capacityOf: interpolation and bounds', () => {
  const c = capacityOf([1, 2, 4], [1, 0.95, 0.5], 0.9);
  assert.is(c.bound, "interpolated");
  assert.ok(Math.abs(c.load - (2 + (0.05 / 0.45) * 2)) < 1e-12);
  assert.equal(capacityOf([1, 2, 4], [1, 1, 0.95], 0.9), { load: 4, bound: 'at-least' });
  assert.equal(capacityOf([1, 2, 4], [0.8, 0.7, 0.5], 0.9), { load: 1, bound: 'below' });
  assert.equal(capacityOf([2, 1], [0.5, 0.9], 0.9), { load: 1, bound: 'interpolated' });
});

test('a bad policy fails in this thread with the registry error, before any worker runs', async () => {
  let code: string | undefined;
  try {
    await sweep({ policies: ['round-robin', 'kv-cots'], loads: [1], workload, fleet, threads: 2 });
  } catch (e) {
    code = (e as { code?: string }).code;
  }
  assert.is(code, 'DYSTRO_ERR_UNKNOWN_POLICY');
});

test.run();
