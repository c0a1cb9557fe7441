/**
 * Ticket lifecycle: the router's in-flight counts (requests, prefill tokens, KV blocks) per replica
 * return to zero whichever way requests end — end, error, cancel, repeated calls, a timeout through
 * tick(), the replica removed or restarted mid-request — and 1,000 policy swaps under load or a drain
 * in mid-traffic leave nothing behind. Seeded, FakeClock, js backend.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createRng, inflightTotals, makeRouter, prompt } from './helpers.ts';
import type { RoutedDecision, Ticket } from '../../src/router/types.ts';
import type { Router } from '../../src/router/router.ts';

function route(router: Router, tokens = 256, family = 0): RoutedDecision {
  const d = router.route({ model: 'm', prompt: prompt(tokens, family) });
  assert.is(d.kind, 'route');
  return d as RoutedDecision;
}

function assertZero(router: Router, where = ''): void {
  const t = inflightTotals(router);
  assert.equal(t, { requests: 0, prefillTokens: 0, blocks: 0 }, `in-flight totals not zero ${where}`);
}

test('end, error and cancel each return the counts; a second call of any kind is a no-op', () => {
  const { router } = makeRouter({ count: 3 });
  const ends: ((t: Ticket) => void)[] = [(t) => t.onEnd(10), (t) => t.onError('http'), (t) => t.onCancel()];
  for (const [k, end] of ends.entries()) {
    const d = route(router, 512, 100 + k); // a new prefix each time: nothing cached
    const slot = d.replica.slot;
    assert.is(router.inflight.requests[slot], 1);
    assert.is(router.inflight.prefillTokens[slot], 512);
    assert.is(router.inflight.activeBlocks[slot], Math.ceil((512 + 256) / 16));
    end(d.ticket);
    assert.ok(d.ticket.done);
    assertZero(router);
    // Repeats and mixtures after the end change nothing.
    d.ticket.onEnd();
    d.ticket.onError('engine');
    d.ticket.onCancel();
    d.ticket.onFirstToken();
    assertZero(router);
  }
});

test('first token returns the prefill tokens, the end returns the rest; a repeated first token is ignored', () => {
  const { router } = makeRouter({ count: 2 });
  const a = route(router, 400, 1);
  const b = route(router, 800, 2);
  a.ticket.onFirstToken();
  a.ticket.onFirstToken();
  const t = inflightTotals(router);
  assert.is(t.requests, 2);
  assert.is(t.prefillTokens, 800 - b.cachedTokens);
  a.ticket.onEnd();
  b.ticket.onCancel(); // cancelled before its first token: its prefill tokens go too
  assertZero(router);
});

test('a ticket never ended times out through tick() after requestTimeoutMs; later calls are no-ops', () => {
  const { router, clock } = makeRouter({ count: 2, requestTimeoutMs: 30_000 });
  const old = [route(router, 256, 1), route(router, 256, 2)];
  clock.advance(20_000);
  const young = route(router, 256, 3);
  router.tick();
  assert.is(router.openTicketCount(), 3, 'nothing is due yet');
  clock.advance(10_000);
  router.tick();
  assert.ok(old.every((d) => d.ticket.done));
  assert.not.ok(young.ticket.done);
  assert.is(inflightTotals(router).requests, 1);
  old[0].ticket.onEnd();
  old[1].ticket.onFirstToken();
  assert.is(inflightTotals(router).requests, 1, 'a late call of a timed-out ticket returns nothing twice');
  clock.advance(20_000);
  router.tick();
  assert.ok(young.ticket.done);
  assertZero(router);
  assert.is(router.openTicketCount(), 0);
});

test('replica removed mid-request: its counts go, its tickets become no-ops, even when the id comes back on the same slot', () => {
  const { router } = makeRouter({ count: 2 });
  const ds = Array.from({ length: 6 }, (_, i) => route(router, 256, i));
  const victim = ds[0].replica;
  router.remove(victim.id);
  assert.is(router.inflight.requests[victim.slot], 0);
  // The same id returns and reuses the freed slot; new work lands there.
  const back = router.upsertReplica({ id: victim.id, pool: 'p', address: 'http://back:8000' });
  assert.is(back.slot, victim.slot);
  router.drain(ds.find((d) => d.replica.id !== victim.id)!.replica.id);
  const fresh = route(router, 256, 99);
  assert.is(fresh.replica.id, victim.id);
  assert.is(router.inflight.requests[victim.slot], 1);
  // The old tickets of that id must not return the new request's counts.
  for (const d of ds) if (d.replica.id === victim.id) d.ticket.onEnd();
  assert.is(router.inflight.requests[victim.slot], 1);
  for (const d of ds) d.ticket.onError();
  fresh.ticket.onEnd();
  assertZero(router);
});

test('replica restarted mid-request: old-incarnation tickets are no-ops, new ones count', () => {
  const { router } = makeRouter({ count: 1 });
  const before = [route(router, 256, 1), route(router, 256, 2)];
  router.restart('p-0');
  assertZero(router);
  const after = route(router, 256, 3);
  before[0].ticket.onFirstToken();
  before[0].ticket.onEnd();
  before[1].ticket.onCancel();
  assert.is(inflightTotals(router).requests, 1);
  after.ticket.onEnd();
  assertZero(router);
});

test('seeded action stream: per-replica in-flight equals the open tickets routed since its last removal or restart', () => {
  for (const seed of [1, 2, 3]) {
    const rng = createRng(seed);
    const { router, clock } = makeRouter({ count: 6, requestTimeoutMs: 5_000 });
    const ids = router.fleet.snapshot().replicas.map((r) => r.id);
    let nextId = 6;
    interface Open {
      d: RoutedDecision;
      void: boolean;
    }
    const open: Open[] = [];
    const check = (step: number) => {
      const expect = new Map<string, number>();
      for (const o of open) if (!o.void && !o.d.ticket.done) expect.set(o.d.replica.id, (expect.get(o.d.replica.id) ?? 0) + 1);
      for (const r of router.fleet.snapshot().replicas) {
        assert.is(router.inflight.requests[r.slot], expect.get(r.id) ?? 0, `seed ${seed} step ${step}: replica ${r.id}`);
      }
    };
    for (let step = 0; step < 3000; step++) {
      const a = rng.int(100);
      const live = router.fleet.snapshot().replicas;
      if (a < 40) {
        const d = router.route({ model: 'm', prompt: prompt(64 + rng.int(1024), rng.int(20)) });
        if (d.kind === 'route') open.push({ d, void: false });
      } else if (a < 75 && open.length > 0) {
        const o = open[rng.int(open.length)];
        const k = rng.int(5);
        if (k === 0) o.d.ticket.onFirstToken();
        else if (k === 1) o.d.ticket.onEnd();
        else if (k === 2) o.d.ticket.onError('engine');
        else if (k === 3) o.d.ticket.onCancel();
        else {
          o.d.ticket.onEnd();
          o.d.ticket.onEnd();
        }
      } else if (a < 78 && live.length > 2) {
        const r = live[rng.int(live.length)];
        router.remove(r.id);
        for (const o of open) if (o.d.replica.id === r.id) o.void = true;
      } else if (a < 81) {
        const id = rng.int(3) === 0 && ids.length > 0 ? ids[rng.int(ids.length)] : `p-${nextId++}`;
        if (!router.fleet.snapshot().byId.has(id)) router.upsertReplica({ id, pool: 'p', address: `http://${id}` });
      } else if (a < 84 && live.length > 0) {
        const r = live[rng.int(live.length)];
        router.restart(r.id);
        for (const o of open) if (o.d.replica.id === r.id) o.void = true;
      } else if (a < 88 && live.length > 0) {
        const r = live[rng.int(live.length)];
        router.drain(r.id, !r.drained);
      } else if (a < 92) {
        clock.advance(rng.int(2000));
        router.tick();
      }
      if (step % 50 === 0) check(step);
    }
    check(3000);
    for (const o of open) o.d.ticket.onEnd();
    assertZero(router, `seed ${seed}`);
    assert.is(router.openTicketCount(), 0);
  }
});

test('1,000 policy swaps under load leave no leaked state', () => {
  const { router, clock } = makeRouter({ count: 8 });
  const rng = createRng(11);
  const fleetListeners = (router.fleet as unknown as { listeners: Set<unknown> }).listeners.size;
  const names = router.registry.names();
  const open: RoutedDecision[] = [];
  let swaps = 0;
  const seen = new Set<string>();
  for (let i = 0; i < 1000; i++) {
    for (let k = 0; k < 3; k++) {
      const d = router.route({ model: 'm', prompt: prompt(128 + rng.int(512), rng.int(8)), sessionKey: `s${rng.int(50)}` });
      if (d.kind === 'route') open.push(d);
      seen.add(d.policy);
    }
    // End about as many as were routed, in random order and ways.
    for (let k = 0; k < 3 && open.length > 0; k++) {
      const j = rng.int(open.length);
      const d = open[j];
      open[j] = open[open.length - 1];
      open.pop();
      if (rng.int(2) === 0) d.ticket.onFirstToken();
      [() => d.ticket.onEnd(), () => d.ticket.onError(), () => d.ticket.onCancel()][rng.int(3)]();
    }
    router.setPolicy(names[rng.int(names.length)]);
    swaps++;
    if (i % 100 === 10) router.shadow(names[rng.int(names.length)]);
    if (i % 100 === 60) router.stopShadow();
    if (i % 150 === 20) router.canary(names[rng.int(names.length)], {}, 0.3, { metric: 'ttft-p90-ratio', max: 1.5, minSamples: 5 });
    clock.advance(5);
  }
  assert.is(swaps, 1000);
  for (const d of open) d.ticket.onEnd();
  assertZero(router);
  assert.is(router.openTicketCount(), 0);
  assert.is(router.admission.totalQueued(), 0);
  assert.is((router.fleet as unknown as { listeners: Set<unknown> }).listeners.size, fleetListeners, 'policies must not subscribe to the fleet');
  assert.is(router.rollout.listenerCount('canary'), 0);
  assert.ok(seen.size >= Math.min(names.length, 3), `decisions came from ${[...seen].join(', ')}`);
  // The router still routes.
  const d = route(router, 256, 1);
  d.ticket.onEnd();
  assertZero(router);
});

test('drain mid-traffic: no new requests reach the drained replica, its in-flight ones finish and return their counts', () => {
  const { router } = makeRouter({ count: 4 });
  const open: RoutedDecision[] = [];
  for (let i = 0; i < 200; i++) open.push(route(router, 256, i % 10));
  const victim = open[0].replica;
  const before = router.inflight.requests[victim.slot];
  assert.ok(before > 0);
  router.drain(victim.id);
  for (let i = 0; i < 400; i++) {
    const d = route(router, 256, i % 10);
    assert.is.not(d.replica.id, victim.id, 'a drained replica received a request');
    d.ticket.onEnd();
  }
  assert.is(router.inflight.requests[victim.slot], before, 'in-flight requests on the drained replica are untouched');
  for (const d of open) if (d.replica.id === victim.id) d.ticket.onEnd();
  assert.is(router.inflight.requests[victim.slot], 0);
  for (const d of open) d.ticket.onEnd();
  assertZero(router);
  router.drain(victim.id, false);
  const seen = new Set(Array.from({ length: 100 }, (_, i) => route(router, 256, i)).map((d) => (d.ticket.onEnd(), d.replica.id)));
  assert.ok(seen.has(victim.id), 'undrained replica receives traffic again');
});

test.run();
