/**
 * What the reports read from a run: `detail` (per-replica busy share and outstanding requests per
 * timeline bucket, the TTFT quantile curve), `onProgress`, fleet files, and the load ramp of the
 * validation workload. Detail and progress change nothing else in the result.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { simulate, type SimResult } from '../../src/sim/index.ts';
import { rampRate, sharedPrefix, workloadFromSpec } from '../../src/sim/workloads.ts';
import { describeFleet, loadFleet, parseFleet, shippedFleets } from '../../src/sim/fleet-config.ts';

const workload = sharedPrefix({ groups: 10, promptsPerGroup: 4, systemPromptTokens: 2000, questionTokens: 200, outputTokens: 64, ratePerS: 10, rounds: 2, seed: 1 });
const fleet = [{ accelerator: 'H100', model: 'llama-3-8b', replicas: 3 }];

function core(r: SimResult): unknown {
  const { perf, ttftCurve, ...rest } = r;
  void perf;
  void ttftCurve;
  return { ...rest, timeline: { bucketMs: rest.timeline.bucketMs, buckets: rest.timeline.buckets } };
}

test('detail: busy shares in 0 … 1 and outstanding requests per bucket and replica; a monotone TTFT curve; nothing else changes', () => {
  const calls: [number, number][] = [];
  const plain = simulate({ fleet, workload, seed: 1, timelineBucketMs: 2000 });
  const r = simulate({ fleet, workload, seed: 1, timelineBucketMs: 2000, detail: true, onProgress: (d, t) => calls.push([d, t]) });
  assert.equal(core(r), core(plain));
  assert.is(plain.timeline.replicas, undefined);
  assert.is(plain.ttftCurve, undefined);
  const rep = r.timeline.replicas!;
  assert.ok(rep.busy.length >= r.timeline.buckets.length);
  assert.ok(rep.busy.every((row) => row.length === 3 && row.every((x) => x >= 0 && x <= 1)));
  assert.ok(rep.outstanding.every((row) => row.length === 3 && row.every((x) => x >= 0)));
  assert.ok(rep.busy.some((row) => row.some((x) => x > 0)), 'the engines worked');
  const c = r.ttftCurve!;
  assert.is(c.percentiles.length, c.ms.length);
  assert.ok(c.ms.every((v, i) => i === 0 || v >= c.ms[i - 1]));
  assert.is(c.ms[c.percentiles.indexOf(50)], r.ttftMs.p50);
  assert.is(c.ms[c.percentiles.indexOf(90)], r.ttftMs.p90);
  assert.equal(calls[calls.length - 1], [80, 80], 'the last progress call is the end');
});

test('rampRate: stages of equal request count, gaps divided by each stage factor', () => {
  const w = rampRate(workload, [1, 2, 4, 8]);
  assert.is(w.requests.length, 80);
  assert.is(w.requests[0].arrivalMs, workload.requests[0].arrivalMs);
  for (let i = 1; i < 80; i++) {
    const gap = w.requests[i].arrivalMs - w.requests[i - 1].arrivalMs;
    const orig = workload.requests[i].arrivalMs - workload.requests[i - 1].arrivalMs;
    assert.ok(Math.abs(gap - orig / [1, 2, 4, 8][Math.floor(i / 20)]) < 1e-9);
  }
  assert.equal(w.prompt(7), workload.prompt(7));
  const spec = workloadFromSpec({ kind: 'shared-prefix', groups: 10, promptsPerGroup: 4, systemPromptTokens: 2000, questionTokens: 200, outputTokens: 64, ratePerS: 10, rounds: 2, seed: 1, rateScale: 2, rateRamp: [1, 3] });
  assert.ok(Math.abs(spec.requests[79].arrivalMs - (workload.requests[39].arrivalMs / 2 + (workload.requests[79].arrivalMs - workload.requests[39].arrivalMs) / 6)) < 1e-6);
  let code: string | undefined;
  try {
    rampRate(workload, [1, 0]);
  } catch (e) {
    code = (e as { code?: string }).code;
  }
  assert.is(code, 'DYSTRO_ERR_INVALID_CONFIG');
});

test('fleet files: the shipped ones load, typos name the nearest key, one model per fleet', () => {
  assert.ok(shippedFleets().includes('h100-h200'));
  for (const name of shippedFleets()) {
    const f = loadFleet(name);
    assert.ok(f.pools.length > 0 && f.pools.every((p) => p.replicas > 0), name);
    simulate({ fleet: f.pools, workload: { kind: 'shared-prefix', groups: 2, promptsPerGroup: 2, systemPromptTokens: 512, questionTokens: 64, outputTokens: 8, ratePerS: 5, seed: 1 }, seed: 1, ceilings: false });
  }
  assert.is(describeFleet(loadFleet('h100-h200').pools), '8 × H100 (TP1) + 8 × H200 (TP1), llama-3-8b');
  const error = (data: unknown) => {
    try {
      parseFleet(data);
    } catch (e) {
      return `${(e as { code?: string }).code}: ${(e as Error).message}`;
    }
    return 'no error';
  };
  assert.match(error({ model: 'llama-3-8b', pools: [{ accelerator: 'H100', replica: 2 }] }), /DYSTRO_ERR_INVALID_CONFIG: Unknown key `replica`.*did you mean "replicas"/);
  assert.match(error({ model: 'llama-3-8b', pools: [{ accelerator: 'H10', replicas: 2 }] }), /did you mean "H100"/);
  assert.match(error({ pools: [{ accelerator: 'H100', replicas: 2 }] }), /model/);
  assert.match(error({ pools: [{ accelerator: 'H100', replicas: 2, model: 'llama-3-8b' }, { accelerator: 'H200', replicas: 1, model: 'llama-3-70b' }] }), /one model/);
  assert.match(error({ model: 'llama-3-8b', pools: [{ id: 'a', accelerator: 'H100', replicas: 1 }, { id: 'a', accelerator: 'H200', replicas: 1 }] }), /unique pool ids/);
  assert.equal(parseFleet([{ accelerator: 'H200', model: 'llama-3-8b', replicas: 2, tensorParallel: 2 }]).pools, [{ id: 'h200-tp2', accelerator: 'H200', tensorParallel: 2, model: 'llama-3-8b', replicas: 2 }]);
});

test.run();
