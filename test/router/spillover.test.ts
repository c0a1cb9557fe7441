/**
 * Pool spillover order (PoolSpec.spilloverRank): requests go to the lowest-ranked pool that has a replica
 * predicted to meet the TTFT SLO, and spill to the next rank only when that pool is full (no replica can
 * meet the SLO) or down. Modeled rates: pool "near" prefills 10,000 tokens/s, "far" 10,000 tokens/s; a
 * 2,000-token prompt takes 200 ms alone, so with a 1,000 ms SLO a replica holds about 5 such prompts in
 * its queue before it is "full".
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeRouter, pool, prompt, replicas } from './helpers.ts';
import type { RoutedDecision } from '../../src/router/types.ts';

const SLO = [{ name: 'interactive', ttftMs: 1_000, queueLimit: 0, routeOverSlo: true }];

function setup(nearRank = 0, farRank = 1) {
  return makeRouter({
    pools: [pool('near', { spilloverRank: nearRank }), pool('far', { spilloverRank: farRank })],
    replicas: [...replicas('near', 2), ...replicas('far', 2)],
    sloClasses: SLO,
  });
}

test('the preferred pool takes everything while it can meet the SLO, then the next rank takes the rest', () => {
  const { router } = setup();
  const pools: string[] = [];
  for (let i = 0; i < 20; i++) {
    const d = router.route({ model: 'm', prompt: prompt(2000, 100 + i) }) as RoutedDecision;
    assert.is(d.kind, 'route');
    pools.push(d.pool.id);
  }
  // 2 near replicas × 5 prompts of 200 ms fit under 1,000 ms; the rest spill to "far".
  const near = pools.filter((p) => p === 'near').length;
  assert.ok(near >= 8 && near <= 10, `near took ${near}`);
  assert.equal(pools.slice(0, 8), Array(8).fill('near'), 'nothing spills while the preferred pool has room');
  assert.ok(pools.slice(12).every((p) => p === 'far'), `after the near pool filled: ${pools.slice(12).join(',')}`);
});

test('a pool that is down spills at once; back up, it is preferred again', () => {
  const { router } = setup();
  router.setHealth('near-0', 'unhealthy');
  router.setHealth('near-1', 'unhealthy');
  const down = router.route({ model: 'm', prompt: prompt(500, 1) }) as RoutedDecision;
  assert.is(down.pool.id, 'far');
  down.ticket.onEnd();
  router.setHealth('near-0', 'healthy');
  const up = router.route({ model: 'm', prompt: prompt(500, 2) }) as RoutedDecision;
  assert.is(up.pool.id, 'near');
});

test('equal ranks (the default) keep every pool on the same footing; the order follows the ranks, not the config order', () => {
  const same = makeRouter({ pools: [pool('near'), pool('far')], replicas: [...replicas('near', 2), ...replicas('far', 2)], sloClasses: SLO, policy: 'round-robin' }).router;
  const seen = new Set<string>();
  for (let i = 0; i < 8; i++) seen.add((same.route({ model: 'm', prompt: prompt(200, i) }) as RoutedDecision).pool.id);
  assert.equal([...seen].sort(), ['far', 'near']);
  const { router } = setup(1, 0);
  assert.is((router.route({ model: 'm', prompt: prompt(500, 3) }) as RoutedDecision).pool.id, 'far');
});

test('policies that pick outside the sample (round-robin, consistent-hash) are held to the chosen rank', () => {
  for (const policy of ['round-robin', 'consistent-hash', 'random']) {
    const { router } = makeRouter({ pools: [pool('near', { spilloverRank: 0 }), pool('far', { spilloverRank: 1 })], replicas: [...replicas('near', 2), ...replicas('far', 2)], sloClasses: SLO, policy });
    for (let i = 0; i < 6; i++) {
      const d = router.route({ model: 'm', prompt: prompt(200, i), sessionKey: `s${i}` }) as RoutedDecision;
      assert.is(d.pool.id, 'near', `${policy} request ${i}`);
      d.ticket.onEnd();
    }
  }
});

test('a bad rank is a typed configuration error', () => {
  let code: string | undefined;
  try {
    setup(-1, 0);
  } catch (e) {
    code = (e as { code?: string }).code;
  }
  assert.is(code, 'DYSTRO_ERR_INVALID_CONFIG');
});

test.run();
