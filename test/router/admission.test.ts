/**
 * Admission under failure and overload (DESIGN §4): pool loss spills to the other pool; everything down
 * sheds with retryAfterMs; a request is never shed while some replica could serve it within its SLO
 * and is shed as queue-full only when none can and the class queue is full; class queues are bounded
 * and time out through tick(); one tenant at 10× its quota cannot push another past its TTFT SLO.
 * Seeded, FakeClock, js backend, a modeled engine.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { EventQueue, ModeledEngine, createRng, inflightTotals, makeRouter, pool, prompt, quantile, replicas } from './helpers.ts';
import type { Decision, QueuedDecision, RoutedDecision, ShedDecision } from '../../src/router/types.ts';

const ZERO = { requests: 0, prefillTokens: 0, blocks: 0 };

test('pool loss: traffic spills to the other pool and comes back; in-flight on the lost pool drains', () => {
  const { router } = makeRouter({ pools: [pool('a'), pool('b')], replicas: [...replicas('a', 3), ...replicas('b', 3)] });
  const open: RoutedDecision[] = [];
  for (let i = 0; i < 60; i++) open.push(router.route({ model: 'm', prompt: prompt(512, i) }) as RoutedDecision);
  assert.ok(open.some((d) => d.pool.id === 'a') && open.some((d) => d.pool.id === 'b'));
  // Pool a lost: one replica removed, one unhealthy, one drained.
  router.remove('a-0');
  router.setHealth('a-1', 'unhealthy');
  router.drain('a-2');
  for (let i = 0; i < 200; i++) {
    const d = router.route({ model: 'm', prompt: prompt(512, 100 + i) });
    assert.is(d.kind, 'route');
    assert.is((d as RoutedDecision).pool.id, 'b');
    (d as RoutedDecision).ticket.onEnd();
  }
  for (const d of open) d.ticket.onEnd();
  assert.equal(inflightTotals(router), ZERO);
  router.setHealth('a-1', 'healthy');
  const back = Array.from({ length: 50 }, (_, i) => router.route({ model: 'm', prompt: prompt(512, 500 + i) }) as RoutedDecision);
  assert.ok(back.some((d) => d.replica.id === 'a-1'), 'a recovered replica takes traffic again');
});

test('everything down sheds with retryAfterMs, for every policy; nothing is counted in flight', () => {
  const { router } = makeRouter({ count: 4 });
  for (const id of ['p-0', 'p-1']) router.setHealth(id, 'unhealthy');
  router.drain('p-2');
  router.remove('p-3');
  for (const name of router.registry.names()) {
    router.setPolicy(name);
    const d = router.route({ model: 'm', prompt: prompt(256, 1) });
    assert.is(d.kind, 'shed', name);
    const s = d as ShedDecision;
    assert.is(s.reason, 'no-eligible-replica');
    assert.ok(Number.isInteger(s.retryAfterMs) && s.retryAfterMs > 0);
  }
  // A model no pool serves is the same answer.
  const other = router.route({ model: 'other', prompt: prompt(256, 1) }) as ShedDecision;
  assert.is(other.kind, 'shed');
  assert.is(other.reason, 'no-eligible-replica');
  assert.equal(inflightTotals(router), ZERO);
});

test('never shed while some replica can serve in time, even one outside the sampled candidates', () => {
  // 64 replicas, 2 random candidates a decision: the one idle replica is almost never sampled.
  const { router } = makeRouter({ count: 64, sampleCandidates: 2, sloClasses: [{ name: 'interactive', ttftMs: 200, queueLimit: 0 }] });
  const idle = 'p-37';
  // Every replica but one is loaded far past the SLO (engine-reported prefill backlog: 1 s at 10k tok/s).
  for (const r of router.fleet.snapshot().replicas) router.updateLoad(r.id, { running: 4, waiting: 8, prefillTokens: r.id === idle ? 0 : 10_000, kvUsage: 0.5 });
  for (let i = 0; i < 20; i++) {
    const d = router.route({ model: 'm', prompt: prompt(512, i), priority: 'interactive' });
    assert.is(d.kind, 'route', `request ${i} was ${d.kind}`);
    const r = d as RoutedDecision;
    assert.is(r.replica.id, idle);
    assert.ok(r.predictedTtftMs <= 200);
    r.ticket.onEnd();
  }
});

test('seeded random loads: shed only when no eligible replica meets the SLO, and queue-full only when the queue is full', () => {
  const rng = createRng(17);
  let sheds = 0;
  let routes = 0;
  let queued = 0;
  for (let trial = 0; trial < 300; trial++) {
    const { router } = makeRouter({ count: 24, sampleCandidates: 3, sloClasses: [{ name: 'c', ttftMs: 150, queueLimit: 2, queueTimeoutMs: 1000 }] });
    for (const r of router.fleet.snapshot().replicas) router.updateLoad(r.id, { running: 1, waiting: 0, prefillTokens: rng.int(4) === 0 ? rng.int(1500) : 1000 + rng.int(5000), kvUsage: 0.3 });
    if (rng.int(3) === 0) router.setHealth('p-' + rng.int(24), 'unhealthy');
    for (let k = 0; k < 4; k++) {
      const tokens = 64 + rng.int(1500);
      const d = router.route({ model: 'm', prompt: prompt(tokens, trial * 10 + k, rng), priority: 'c' });
      // The oracle: every healthy replica's prediction for this request, computed apart from the router.
      const snap = router.fleet.snapshot();
      const best = Math.min(...snap.replicas.filter((r) => r.health === 'healthy').map((r) => router.predictor.predictMs(r.slot, r.pool, tokens, 0)));
      if (d.kind === 'shed') {
        sheds++;
        assert.ok(best > 150, `shed although a replica predicts ${best} ms`);
        assert.is(d.reason, 'queue-full');
        assert.is(router.admission.queueLength(router.admission.classOf('c')), 2);
        assert.ok(d.retryAfterMs >= 1);
      } else if (d.kind === 'queue') {
        queued++;
        assert.ok(best > 150, `queued although a replica predicts ${best} ms`);
      } else {
        routes++;
        assert.ok(d.predictedTtftMs <= 150 || best > 150);
        d.ticket.onEnd();
      }
    }
  }
  assert.ok(sheds > 20 && routes > 100 && queued > 20, `sheds ${sheds}, routes ${routes}, queued ${queued}`);
});

test('bounded class queues: FIFO by priority, placed when capacity frees, shed at the queue timeout via tick()', async () => {
  const { router, clock } = makeRouter({
    count: 1,
    sloClasses: [
      { name: 'batch', ttftMs: 250, queueLimit: 2, queueTimeoutMs: 5_000, priority: 0 },
      { name: 'interactive', ttftMs: 250, queueLimit: 1, queueTimeoutMs: 1_000, priority: 10 },
    ],
  });
  // 2,000 tokens at 10k tok/s = 200 ms each: the second request would wait 400 ms > 250 ms.
  const first = router.route({ model: 'm', prompt: prompt(2000, 1), priority: 'batch' }) as RoutedDecision;
  assert.is(first.kind, 'route');
  const q1 = router.route({ model: 'm', prompt: prompt(2000, 2), priority: 'batch' }) as QueuedDecision;
  const q2 = router.route({ model: 'm', prompt: prompt(2000, 3), priority: 'batch' }) as QueuedDecision;
  const full = router.route({ model: 'm', prompt: prompt(2000, 4), priority: 'batch' }) as ShedDecision;
  const qi = router.route({ model: 'm', prompt: prompt(2000, 5), priority: 'interactive' }) as QueuedDecision;
  const fullI = router.route({ model: 'm', prompt: prompt(2000, 6), priority: 'interactive' }) as ShedDecision;
  assert.equal([q1.kind, q2.kind, full.kind, qi.kind, fullI.kind], ['queue', 'queue', 'shed', 'queue', 'shed']);
  assert.equal([q1.position, q2.position, qi.position], [1, 2, 1]);
  assert.is(full.reason, 'queue-full');
  assert.ok(full.retryAfterMs > 0 && fullI.retryAfterMs > 0);
  // Capacity frees: the interactive request (higher priority) goes first.
  first.ticket.onEnd();
  const gotI = await qi.ready;
  assert.is(gotI.kind, 'route');
  // Batch requests keep waiting; the interactive deadline is irrelevant now, the batch one passes at 5 s.
  clock.advance(4_999);
  router.tick();
  let settled = 0;
  q1.ready.then(() => settled++);
  await Promise.resolve();
  assert.is(settled, 0);
  clock.advance(1);
  router.tick();
  const [r1, r2] = await Promise.all([q1.ready, q2.ready]);
  assert.equal([r1.kind, r2.kind], ['shed', 'shed']);
  assert.is((r1 as ShedDecision).reason, 'queue-timeout');
  assert.is(router.admission.totalQueued(), 0);
  (gotI as RoutedDecision).ticket.onEnd();
  assert.equal(inflightTotals(router), ZERO);
});

/**
 * Fairness: 4 replicas × 5,000 prompt tokens/s = 20,000 tokens/s. Tenants "noisy" and "calm" have a
 * quota of 2,000 tokens/s each; noisy sends 20,000 (10×), calm 2,000 (its quota), 1,000-token prompts,
 * Poisson arrivals, 60 s. Offered load is 22,000 tokens/s, above capacity. The modeled engine reports
 * each first token at the predicted time.
 */
function fairness(withQuotas: boolean) {
  const { router, clock } = makeRouter({
    count: 4,
    prefillTokensPerS: 5_000,
    sloClasses: [{ name: 'interactive', ttftMs: 1_000, queueLimit: 0 }],
  });
  if (withQuotas) {
    router.admission.setQuota('noisy', { tokensPerS: 2_000 });
    router.admission.setQuota('calm', { tokensPerS: 2_000 });
  }
  const events = new EventQueue(clock);
  const engine = new ModeledEngine(events, 200);
  const rng = createRng(23);
  const shed = { noisy: 0, calm: 0 };
  const sent = { noisy: 0, calm: 0 };
  const t0 = clock.nowMs();
  const arrivals: { at: number; tenant: 'noisy' | 'calm' }[] = [];
  for (const [tenant, perS] of [['noisy', 20], ['calm', 2]] as const) {
    let t = t0;
    for (;;) {
      t += (-Math.log(1 - rng.float()) / perS) * 1000;
      if (t > t0 + 60_000) break;
      arrivals.push({ at: t, tenant });
    }
  }
  arrivals.sort((a, b) => a.at - b.at);
  for (const a of arrivals) {
    events.runUntil(a.at);
    sent[a.tenant]++;
    const d: Decision = router.route({ model: 'm', tenant: a.tenant, priority: 'interactive', prompt: prompt(1000, sent.noisy + sent.calm, rng) });
    engine.handle(d, a.tenant, () => shed[a.tenant]++);
  }
  events.drain();
  assert.equal(inflightTotals(router), ZERO);
  return { shed, sent, calm: engine.observed.get('calm') ?? [], noisy: engine.observed.get('noisy') ?? [] };
}

test('a tenant at 10× its quota cannot push another past its TTFT SLO', () => {
  const r = fairness(true);
  assert.is(r.shed.calm, 0, `calm shed ${r.shed.calm} of ${r.sent.calm}`);
  assert.is(r.calm.length, r.sent.calm);
  assert.ok(Math.max(...r.calm) <= 1_000 + 1e-6, `calm max TTFT ${Math.max(...r.calm)} ms`);
  // The noisy tenant is refused under contention and still gets the spare capacity (work-conserving):
  // more than its quota of 2 requests a second, less than it asked for.
  const servedNoisyPerS = r.noisy.length / 60;
  assert.ok(r.shed.noisy > 0 && servedNoisyPerS > 2 && servedNoisyPerS < 20, `noisy served ${servedNoisyPerS.toFixed(1)}/s, shed ${r.shed.noisy}`);
  // 1e-6 ms: the fake clock's float arithmetic (now − start) can land a hair above a TTFT predicted at exactly the SLO.
  assert.ok(Math.max(...r.noisy) <= 1_000 + 1e-6, `what the noisy tenant gets is within the SLO too (max ${Math.max(...r.noisy)} ms)`);
  // Control: without quotas the same traffic does push the calm tenant out.
  const control = fairness(false);
  console.log(`  fairness: with quotas calm shed ${r.shed.calm}/${r.sent.calm}, calm max TTFT ${Math.max(...r.calm).toFixed(0)} ms, noisy served ${servedNoisyPerS.toFixed(1)}/s (shed ${r.shed.noisy}/${r.sent.noisy}); without quotas calm shed ${control.shed.calm}/${control.sent.calm}`);
  assert.ok(control.shed.calm > 0, `without quotas calm was shed ${control.shed.calm} times`);
});

test.run();
