/**
 * The simulator end to end, driving the real Router: determinism, the hit-rate ceilings, a cache-aware
 * policy against the baselines on shared-prefix groups, queueing and shedding, failures (replica loss,
 * pool loss, cache flush, delayed and lost KV events), multi-turn answers hitting the cache, and the
 * worker-thread ceilings agreeing with the inline ones.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Simulation, simulate, type SimConfig, type SimResult } from '../../src/sim/index.ts';
import { multiTurn, sharedPrefix, zipfPrefixes } from '../../src/sim/workloads.ts';

const H100 = { accelerator: 'H100', model: 'llama-3-8b' } as const;

/** Everything but the wall-clock part. */
function deterministic(r: SimResult): Omit<SimResult, 'perf'> {
  const { perf, ...rest } = r;
  void perf;
  return rest;
}

const groups = (seed = 3, rate = 20) => sharedPrefix({ groups: 32, promptsPerGroup: 8, systemPromptTokens: 4000, questionTokens: 200, outputTokens: 64, ratePerS: rate, rounds: 2, seed });

test('same seed, same result object; another seed, another result', () => {
  const cfg = (seed: number): SimConfig => ({
    fleet: [{ ...H100, replicas: 4, kvCapacityBlocks: 3000 }],
    workload: zipfPrefixes({ prefixes: 30, prefixTokens: 1024, suffixTokens: 256, outputTokens: 40, requests: 400, ratePerS: 30, seed: 1 }),
    policy: 'predicted-ttft',
    seed,
    events: { delayMs: 20, lossProbability: 0.1 },
    load: { intervalMs: 50, stalenessMs: 30 },
  });
  const a = simulate(cfg(1));
  // The same workload given as plain data.
  const b = simulate({ ...cfg(1), workload: { kind: 'zipf-prefixes', prefixes: 30, prefixTokens: 1024, suffixTokens: 256, outputTokens: 40, requests: 400, ratePerS: 30, seed: 1 } });
  assert.equal(deterministic(a), deterministic(b));
  assert.is(a.requests.completed, 400);
  assert.ok(a.events.kvBatchesLost > 0, 'the loss draws are part of the seeded run');
  const c = simulate(cfg(2));
  assert.not.equal(deterministic(c), deterministic(a));
  const placed = simulate({ ...cfg(1), recordPlacements: true });
  assert.is(placed.placements!.length, 400);
  placed.perReplica.forEach((rep, i) => assert.is(placed.placements!.filter((p) => p === i).length, rep.requests));
  assert.is(a.placements, undefined);
});

test('hit rates never exceed the infinite-cache or the global-LRU ceiling', () => {
  const workloads = [groups(), zipfPrefixes({ prefixes: 200, exponent: 0.9, prefixTokens: 2048, suffixTokens: 128, outputTokens: 32, requests: 600, ratePerS: 40, seed: 2 })];
  for (const workload of workloads) {
    for (const policy of ['round-robin', 'random', 'least-request', 'predicted-ttft']) {
      const r = simulate({ fleet: [{ ...H100, replicas: 4, kvCapacityBlocks: 2500 }], workload, policy, seed: 5 });
      const c = r.prefix.ceilings!;
      assert.ok(r.prefix.hitRate <= c.infinite + 1e-12, `${workload.name} ${policy}: ${r.prefix.hitRate} > infinite ${c.infinite}`);
      assert.ok(r.prefix.hitRate <= c.globalLru + 1e-12, `${workload.name} ${policy}: ${r.prefix.hitRate} > global LRU ${c.globalLru}`);
      assert.ok(c.globalLru <= c.infinite + 1e-12);
      assert.is(c.promptTokens, r.prefix.promptTokens, 'every request completed: same denominators');
    }
  }
});

test('shared-prefix groups: predicted-ttft hits the cache more and has a lower TTFT p90 than round-robin and random', () => {
  // Loaded enough (30 req/s of 4,200-token prompts on 4 replicas) that misses queue up behind each other.
  const workload = groups(3, 30);
  const run = (policy: string) => simulate({ fleet: [{ ...H100, replicas: 4, kvCapacityBlocks: 4000 }], workload, policy, seed: 7 });
  const smart = run('predicted-ttft');
  for (const base of ['round-robin', 'random']) {
    const b = run(base);
    assert.ok(smart.prefix.hitRate > b.prefix.hitRate + 0.2, `hit rate ${smart.prefix.hitRate} vs ${base} ${b.prefix.hitRate}`);
    assert.ok(smart.ttftMs.p90 < 0.9 * b.ttftMs.p90, `TTFT p90 ${smart.ttftMs.p90} vs ${base} ${b.ttftMs.p90}`);
  }
  assert.ok(smart.prefix.hitRate > 0.7 * smart.prefix.ceilings!.infinite);
});

test('overload with an SLO class: requests queue in the router, some are shed, every request ends exactly once', () => {
  const workload = sharedPrefix({ groups: 100, promptsPerGroup: 2, systemPromptTokens: 6000, questionTokens: 500, outputTokens: 20, ratePerS: 400, seed: 4 });
  const r = simulate({
    fleet: [{ ...H100, replicas: 2 }],
    workload,
    seed: 1,
    admission: [{ name: 'interactive', ttftMs: 300, queueLimit: 20, queueTimeoutMs: 400 }],
  });
  assert.ok(r.requests.queued > 0, 'some waited in the router queue');
  assert.ok(r.requests.shed > 0, 'some were shed');
  assert.ok((r.requests.shedReasons['queue-full'] ?? 0) + (r.requests.shedReasons['queue-timeout'] ?? 0) > 0);
  assert.is(r.requests.completed + r.requests.shed + r.requests.failed, r.requests.total);
  assert.ok(r.queueWaitMs.count > 0 && r.queueWaitMs.max <= 400 + 50 + 1e-9, `queue waits end by the timeout (+ one tick): ${r.queueWaitMs.max}`);
  assert.equal(deterministic(r), deterministic(simulate({ fleet: [{ ...H100, replicas: 2 }], workload, seed: 1, admission: [{ name: 'interactive', ttftMs: 300, queueLimit: 20, queueTimeoutMs: 400 }] })));
});

test('the queue mirror agrees with the router: every queued decision resolves as the simulator accounted it', async () => {
  const workload = sharedPrefix({ groups: 100, promptsPerGroup: 2, systemPromptTokens: 6000, questionTokens: 500, outputTokens: 20, ratePerS: 400, seed: 4 });
  const sim = new Simulation({ fleet: [{ ...H100, replicas: 2 }], workload, seed: 1, admission: [{ name: 'interactive', ttftMs: 300, queueLimit: 20, queueTimeoutMs: 400 }] });
  const outcomes: string[] = [];
  const route = sim.router.route.bind(sim.router);
  sim.router.route = (req) => {
    const d = route(req);
    if (d.kind === 'queue') void d.ready.then((x) => outcomes.push(x.kind === 'shed' ? x.reason : x.kind));
    return d;
  };
  const r = sim.run();
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.is(outcomes.length, r.requests.queued, 'every queued decision resolved');
  assert.is(outcomes.filter((o) => o === 'route').length, r.queueWaitMs.count, 'routed from the queue');
  assert.is(outcomes.filter((o) => o === 'queue-timeout').length, r.requests.shedReasons['queue-timeout'] ?? 0, 'timed out in the queue');
});

test('replica loss: requests before their first token are retried elsewhere, streams fail, the router drops the replica', () => {
  const workload = groups(3, 40);
  // Round-robin keeps sending a quarter of the arrivals to the dead replica until the router learns of it.
  const base: SimConfig = { fleet: [{ ...H100, replicas: 4, kvCapacityBlocks: 4000 }], workload, seed: 2, policy: 'round-robin' };
  const healthy = simulate(base);
  const lost = simulate({ ...base, failures: [{ kind: 'replica-loss', atMs: 6000, replica: 1, detectAfterMs: 1000 }] });
  assert.is(healthy.requests.failed, 0);
  assert.ok(lost.requests.retries > 0, 'requests routed to it before detection were retried');
  assert.ok(lost.requests.failed > 0, 'streams in progress on it failed');
  assert.is(lost.requests.completed + lost.requests.failed + lost.requests.shed, lost.requests.total);
  assert.not.ok(lost.perReplica[1].alive);
  const after = lost.perReplica[1].requests;
  // Nothing reaches the dead replica's engine after it died.
  assert.ok(after < healthy.perReplica[1].requests);
  const unhealthy = simulate({ ...base, failures: [{ kind: 'replica-loss', atMs: 6000, replica: 'h100-tp1/1', action: 'unhealthy' }] });
  assert.is(unhealthy.requests.completed + unhealthy.requests.failed, unhealthy.requests.total);
});

test('pool loss: the other pool takes the traffic', () => {
  const workload = groups(3, 20);
  const r = simulate({
    fleet: [
      { ...H100, id: 'big', replicas: 2, kvCapacityBlocks: 4000 },
      { accelerator: 'A100', model: 'llama-3-8b', id: 'small', replicas: 2, kvCapacityBlocks: 4000 },
    ],
    workload,
    seed: 3,
    failures: [{ kind: 'pool-loss', atMs: 3000, pool: 'small', detectAfterMs: 100 }],
  });
  assert.ok(r.perReplica.filter((x) => x.pool === 'small').every((x) => !x.alive));
  assert.ok(r.requests.completed > 0.9 * r.requests.total, `completed ${r.requests.completed} of ${r.requests.total}`);
  const lastBuckets = r.timeline.buckets.slice(-2);
  assert.ok(lastBuckets.every((b) => b.failed === 0));
});

test('cache flush: hits drop right after it and recover; the router index learns of it (CLEAR)', () => {
  const workload = groups(3, 10);
  const base: SimConfig = { fleet: [{ ...H100, replicas: 4, kvCapacityBlocks: 4000 }], workload, seed: 2, timelineBucketMs: 5000 };
  const plain = simulate(base);
  const flushed = simulate({ ...base, failures: [{ kind: 'cache-flush', atMs: 25_000 }] });
  assert.ok(flushed.prefix.hitRate < plain.prefix.hitRate, `${flushed.prefix.hitRate} < ${plain.prefix.hitRate}`);
  const bucket = flushed.timeline.buckets[5]; // 25–30 s
  assert.ok(bucket.hitRate < plain.timeline.buckets[5].hitRate);
  assert.is(flushed.requests.completed, flushed.requests.total);
});

test('KV events delayed by seconds or lost: the router expects hits that are not there (or misses real ones)', () => {
  const workload = groups(3, 20);
  const base: SimConfig = { fleet: [{ ...H100, replicas: 4, kvCapacityBlocks: 1500 }], workload, seed: 2, router: { speculative: false } };
  const prompt = simulate(base);
  const late = simulate({ ...base, failures: [{ kind: 'event-delay', atMs: 0, durationMs: 1e9, delayMs: 5000 }] });
  const lossy = simulate({ ...base, events: { lossProbability: 0.5 } });
  assert.ok(lossy.events.kvBatchesLost > 0);
  // With prompt events the router's expectation matches what the engines deliver closely.
  const gap = (r: SimResult) => Math.abs(r.prefix.expectedHitRate - r.prefix.hitRate);
  assert.ok(gap(prompt) < 0.05, `prompt events: expected ${prompt.prefix.expectedHitRate} vs ${prompt.prefix.hitRate}`);
  assert.ok(late.prefix.hitRate < prompt.prefix.hitRate, `late events cost hits: ${late.prefix.hitRate} vs ${prompt.prefix.hitRate}`);
  assert.ok(gap(lossy) > gap(prompt) || lossy.prefix.hitRate < prompt.prefix.hitRate);
});

test('multi-turn sessions: later turns hit the blocks of the previous answer', () => {
  const workload = multiTurn({ sessions: 20, turns: 4, systemPromptTokens: 512, userTokens: 128, outputTokens: 96, sessionRatePerS: 2, thinkTimeMs: 3000, seed: 1 });
  const r = simulate({ fleet: [{ ...H100, replicas: 2 }], workload, policy: 'predicted-ttft', seed: 1 });
  // Turn k's prompt is 512 + k·224 + 128 tokens, of which 512 + k·224 (answers included) were seen.
  assert.ok(r.prefix.ceilings!.infinite > 0.6, `ceiling ${r.prefix.ceilings!.infinite}`);
  assert.ok(r.prefix.hitRate > 0.6, `hit rate ${r.prefix.hitRate}: answer blocks were cached by the engine`);
});

test('ceilings in a worker thread equal the inline ones', () => {
  const workload = groups();
  const base: SimConfig = { fleet: [{ ...H100, replicas: 4, kvCapacityBlocks: 2000 }], workload, seed: 1 };
  const inline = simulate({ ...base, ceilings: 'inline' });
  const thread = simulate({ ...base, ceilings: 'thread' });
  assert.equal(thread.prefix.ceilings, inline.prefix.ceilings);
  assert.equal(deterministic(thread), deterministic(inline));
  assert.is(simulate({ ...base, ceilings: false }).prefix.ceilings, null);
});

test('bad configuration is a typed error', () => {
  for (const bad of [{}, { fleet: [], workload: groups() }, { fleet: [{ ...H100, replicas: 1 }], workload: { kind: 'nope' } }, { fleet: [{ ...H100, replicas: 1 }], workload: groups(), events: { lossProbability: 2 } }]) {
    let code: string | undefined;
    try {
      simulate(bad as SimConfig);
    } catch (e) {
      code = (e as { code?: string }).code;
    }
    assert.is(code, 'DYSTRO_ERR_INVALID_CONFIG');
  }
});

test.run();
