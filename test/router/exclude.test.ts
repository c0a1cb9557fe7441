/**
 * route(req, { exclude }): the replica ids a request must not go to (a proxy's retry after failing
 * there). Excluded replicas are never candidates — whatever the policy, even the replica holding the
 * whole prefix — a request with every replica excluded is shed as no-eligible-replica, and a queued
 * request keeps its exclusions when the class queue retries it. Other decisions are unaffected.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { QueuedDecision, RoutedDecision } from '../../src/router/types.ts';
import { inflightTotals, makeRouter, prompt } from './helpers.ts';

const ZERO = { requests: 0, prefillTokens: 0, blocks: 0 };

for (const policy of ['predicted-ttft', 'round-robin', 'consistent-hash', 'cache-aware']) {
  test(`${policy}: an excluded replica is never chosen, even when it holds the prefix`, () => {
    const { router } = makeRouter({ count: 4, policy });
    const ids = router.fleet.snapshot().replicas.map((r) => r.id);
    for (let i = 0; i < 40; i++) {
      const p = prompt(512, i % 5);
      const first = router.route({ model: 'm', prompt: p, sessionKey: `s${i % 3}` }) as RoutedDecision;
      assert.is(first.kind, 'route');
      first.ticket.onError('http');
      // The retry: the failed replica (and, every other time, a second one) is out.
      const exclude = i % 2 === 0 ? [first.replica.id] : [first.replica.id, ids[(ids.indexOf(first.replica.id) + 1) % ids.length]];
      const retry = router.route({ model: 'm', prompt: p, sessionKey: `s${i % 3}` }, { exclude }) as RoutedDecision;
      assert.is(retry.kind, 'route');
      assert.not.ok(exclude.includes(retry.replica.id), `${policy}: routed to excluded ${retry.replica.id}`);
      retry.ticket.onEnd();
    }
    assert.equal(inflightTotals(router), ZERO);
  });
}

test('every replica excluded: shed as no-eligible-replica; an empty list or unknown ids change nothing', () => {
  const { router } = makeRouter({ count: 3, policy: 'round-robin' });
  const ids = router.fleet.snapshot().replicas.map((r) => r.id);
  const d = router.route({ model: 'm', prompt: prompt(64, 1) }, { exclude: ids });
  assert.is(d.kind, 'shed');
  assert.is(d.kind === 'shed' && d.reason, 'no-eligible-replica');
  // Same seed, same calls: exclude [] and unknown ids give the decisions of plain route().
  const a = makeRouter({ count: 3, policy: 'predicted-ttft' }).router;
  const b = makeRouter({ count: 3, policy: 'predicted-ttft' }).router;
  for (let i = 0; i < 30; i++) {
    const req = { model: 'm', prompt: prompt(256, i % 4) };
    const da = a.route(req) as RoutedDecision;
    const db = b.route(req, { exclude: i % 2 ? [] : ['nobody'] }) as RoutedDecision;
    assert.is(db.replica.id, da.replica.id);
  }
});

test('a queued request keeps its exclusions: capacity freeing on the excluded replica does not place it there', async () => {
  const { router } = makeRouter({ count: 2, sloClasses: [{ name: 'c', ttftMs: 250, queueLimit: 4, queueTimeoutMs: 10_000 }] });
  // 2,000 tokens at 10k tokens/s = 200 ms each: one request per replica fills both for this SLO.
  const d0 = router.route({ model: 'm', prompt: prompt(2000, 1) }) as RoutedDecision;
  const d1 = router.route({ model: 'm', prompt: prompt(2000, 2) }) as RoutedDecision;
  assert.equal([d0.kind, d1.kind], ['route', 'route']);
  assert.is.not(d0.replica.id, d1.replica.id);
  const q = router.route({ model: 'm', prompt: prompt(2000, 3) }, { exclude: [d0.replica.id] }) as QueuedDecision;
  assert.is(q.kind, 'queue');
  let placed: RoutedDecision | null = null;
  void q.ready.then((d) => {
    placed = d.kind === 'route' ? d : null;
  });
  d0.ticket.onEnd(); // the excluded replica frees: the request stays queued
  await Promise.resolve();
  assert.is(placed, null);
  assert.is(router.admission.totalQueued(), 1);
  d1.ticket.onEnd(); // the other one frees: placed there
  const got = (await q.ready) as RoutedDecision;
  assert.is(got.kind, 'route');
  assert.is(got.replica.id, d1.replica.id);
  got.ticket.onEnd();
  assert.equal(inflightTotals(router), ZERO);
});

test.run();
