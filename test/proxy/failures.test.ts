/**
 * The proxy when engines fail: a crash mid-stream (a clean error for the client, no retry after the
 * first byte, in-flight counts back to zero), retries before the first byte (5xx, 429, refused
 * connections) on another replica and within the retry budget, what is never retried (timeouts,
 * bodies over the retry limit, an exhausted budget), outlier ejection with its panic rule, and a client
 * that goes away mid-stream.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createServer } from 'node:net';
import { APIError } from 'openai';
import type { EngineEmulator } from '../../src/emulator/index.ts';
import type { Proxy } from '../../src/proxy/proxy.ts';
import { MODEL, baseConfig, engineSpecs, engineSuccesses, inflightTotals, metricSum, openai, post, start, startEngines, text, until } from './helpers.ts';

async function assertIdle(proxy: Proxy): Promise<void> {
  await until('requests to finish', async () => (await metricSum(proxy, 'dystro_proxy_active_requests')) === 0);
  assert.equal(inflightTotals(proxy.router), { requests: 0, prefillTokens: 0, blocks: 0 }, 'router in-flight counts back to zero');
  assert.is(proxy.router.openTicketCount(), 0, 'no ticket left open');
  assert.is(proxy.budget.activeRetries, 0, 'no retry slot held');
}

async function closeAll(proxy: Proxy, engines: EngineEmulator[]): Promise<void> {
  await proxy.close();
  await Promise.all(engines.map((e) => e.close()));
}

/** A port nothing listens on (bound, then closed). */
async function deadPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

test('an engine crashing mid-stream: the client gets a clean error, nothing is retried, counts return to zero', async () => {
  // Real time: 200 tokens at ~8 ms a step leave plenty of stream to cut.
  const engines = await startEngines(2, { timeScale: 1 });
  const proxy = await start(baseConfig(engines));
  try {
    const { data: stream, response } = await openai(proxy).completions.create({ model: MODEL, prompt: text(50), max_tokens: 200, stream: true }).withResponse();
    const served = response.headers.get('x-dystro-replica')!;
    const victim = engines[Number(served.slice(1))];
    const survivor = engines[1 - Number(served.slice(1))];
    let chunks = 0;
    let crashed = false;
    let error: unknown = null;
    try {
      for await (const ch of stream) {
        if (ch.choices[0]?.text) chunks++;
        if (chunks === 3 && !crashed) {
          crashed = true;
          void victim.crash('close');
        }
      }
    } catch (err) {
      error = err;
    }
    assert.ok(chunks >= 3, `chunks before the crash: ${chunks}`);
    assert.instance(error, APIError, 'the stream ends in an APIError, not a hang or a silent truncation');
    assert.match((error as APIError).message, /engine failed/);
    assert.is(await metricSum(proxy, 'dystro_proxy_upstream_attempts_total', { outcome: 'midstream' }), 1);
    assert.is(await metricSum(proxy, 'dystro_proxy_upstream_attempts_total'), 1, 'one attempt: no retry after the first byte');
    assert.is(await metricSum(proxy, 'dystro_proxy_retries_total'), 0);
    assert.is(await engineSuccesses(survivor), 0, 'the other engine never saw it');
    await assertIdle(proxy);
  } finally {
    await closeAll(proxy, engines);
  }
});

test('5xx, fast 429 and refused connections before the first byte are retried on another replica', async () => {
  const engines = await startEngines(2);
  const port = await deadPort();
  const proxy = await start(baseConfig(engines, { policy: 'round-robin', outlier: { consecutiveFailures: 1000 } }));
  try {
    const client = openai(proxy);
    const run = async (n: number) => {
      const replicas: string[] = [];
      for (let i = 0; i < n; i++) {
        const { data, response } = await client.completions.create({ model: MODEL, prompt: text(30, i), max_tokens: 3 }).withResponse();
        assert.is(data.usage?.completion_tokens, 3);
        replicas.push(`${response.headers.get('x-dystro-replica')}/${response.headers.get('x-dystro-attempts')}`);
      }
      return replicas;
    };
    engines[0].setFaults({ failFraction: 1, failStatus: 503 });
    const r503 = await run(4);
    assert.ok(r503.every((x) => x.startsWith('e1/')), r503.join(' '));
    assert.ok(r503.includes('e1/2'), `some were retried: ${r503.join(' ')}`);
    const retried503 = r503.filter((x) => x === 'e1/2').length;
    assert.is(await metricSum(proxy, 'dystro_proxy_upstream_attempts_total', { replica: 'e0', outcome: 'http_5xx' }), retried503);

    engines[0].setFaults({ failFraction: 1, failStatus: 429 });
    const r429 = await run(4);
    assert.ok(r429.every((x) => x.startsWith('e1/')), r429.join(' '));
    assert.ok(await metricSum(proxy, 'dystro_proxy_upstream_attempts_total', { replica: 'e0', outcome: 'http_429' }) > 0);

    engines[0].setFaults({ failFraction: 0 });
    // An engine whose port refuses connections.
    proxy.drain('e0', true);
    await proxy.registerEngine({ id: 'dead', pool: 'h100', address: `http://127.0.0.1:${port}` }, false);
    const rdead = await run(4);
    assert.ok(rdead.every((x) => x.startsWith('e1/')), rdead.join(' '));
    assert.ok(await metricSum(proxy, 'dystro_proxy_upstream_attempts_total', { replica: 'dead', outcome: 'connect' }) > 0);
    const retries = await metricSum(proxy, 'dystro_proxy_retries_total', { outcome: 'retried' });
    assert.is(retries, (await metricSum(proxy, 'dystro_proxy_upstream_attempts_total')) - 12, 'one retry per failed attempt');
    await assertIdle(proxy);
  } finally {
    await closeAll(proxy, engines);
  }
});

test('not retried: an exhausted budget, a body over the retry limit, maxRetries 0, a timeout', async () => {
  const engines = await startEngines(2);
  const cases: [Record<string, number>, string][] = [
    [{ budgetRatio: 0, minConcurrency: 0 }, 'budget'],
    [{ maxBodyBytes: 16 }, 'body_too_large'],
    [{ maxRetries: 0 }, 'max_retries'],
  ];
  try {
    engines[0].setFaults({ failFraction: 1, failStatus: 503 });
    for (const [retry, outcome] of cases) {
      const proxy = await start(baseConfig(engines, { policy: 'round-robin', retry, outlier: { consecutiveFailures: 1000 } }));
      try {
        // Round-robin: one of two consecutive requests goes to the failing e0 first.
        const statuses: number[] = [];
        for (let i = 0; i < 2; i++) {
          const r = await post(proxy, '/v1/completions', JSON.stringify({ model: MODEL, prompt: text(20, i), max_tokens: 2 }));
          statuses.push(r.status);
          if (r.status === 503) {
            assert.is(r.headers['retry-after'], '1', "the engine's Retry-After is relayed");
            assert.is(r.headers['x-dystro-replica'], 'e0');
          }
        }
        assert.equal(statuses.sort(), [200, 503], `${outcome}: ${statuses}`);
        assert.is(await metricSum(proxy, 'dystro_proxy_retries_total', { outcome }), 1, outcome);
        assert.is(await metricSum(proxy, 'dystro_proxy_retries_total', { outcome: 'retried' }), 0);
        await assertIdle(proxy);
      } finally {
        await proxy.close();
      }
    }
    // A timeout is not retried: the engine may still be working on it.
    engines[0].setFaults({ failFraction: 0 });
    engines[0].stall(2_000);
    const proxy = await start(baseConfig(engines, { policy: 'round-robin', limits: { upstreamHeadersTimeoutMs: 200 } }));
    try {
      const statuses: number[] = [];
      for (let i = 0; i < 2; i++) statuses.push((await post(proxy, '/v1/completions', JSON.stringify({ model: MODEL, prompt: text(20, 5 + i), max_tokens: 2 }))).status);
      assert.equal(statuses.sort(), [200, 504]);
      assert.is(await metricSum(proxy, 'dystro_proxy_upstream_attempts_total', { outcome: 'timeout' }), 1);
      assert.is(await metricSum(proxy, 'dystro_proxy_retries_total'), 0);
      await assertIdle(proxy);
    } finally {
      await proxy.close();
    }
  } finally {
    await Promise.all(engines.map((e) => e.close()));
  }
});

test('the retry budget: with one retry slot in use, the next failure is not retried', async () => {
  // e1 decodes in real time, so a retry that lands there holds the budget's only slot for a while.
  const engines = [...(await startEngines(1)), ...(await startEngines(1, { timeScale: 1, seed: 1 }))];
  const proxy = await start(baseConfig(engines, { policy: 'round-robin', retry: { budgetRatio: 0, minConcurrency: 1 }, outlier: { consecutiveFailures: 1000 } }));
  try {
    engines[0].setFaults({ failFraction: 1, failStatus: 503 });
    const client = openai(proxy);
    // First request: e0 (503), retried on e1, where it decodes 100 tokens (~0.8 s).
    const first = client.completions.create({ model: MODEL, prompt: text(20, 1), max_tokens: 100 }).withResponse();
    await until('the first retry to hold the slot', () => proxy.budget.activeRetries === 1);
    // Second: e0 again (round-robin), 503, and no slot left.
    const second = await post(proxy, '/v1/completions', JSON.stringify({ model: MODEL, prompt: text(20, 2), max_tokens: 2 }));
    assert.is(second.status, 503);
    assert.is(second.headers['x-dystro-attempts'], '1');
    assert.is(await metricSum(proxy, 'dystro_proxy_retries_total', { outcome: 'budget' }), 1);
    const { response } = await first;
    assert.is(response.headers.get('x-dystro-replica'), 'e1');
    assert.is(response.headers.get('x-dystro-attempts'), '2');
    await assertIdle(proxy);
  } finally {
    await closeAll(proxy, engines);
  }
});

test('outlier ejection: N consecutive failures eject, at most 10% (one) at a time; a lone replica is never ejected (panic)', async () => {
  const engines = await startEngines(3);
  const proxy = await start(baseConfig(engines, { policy: 'round-robin', outlier: { consecutiveFailures: 3, baseEjectionMs: 60_000 } }));
  try {
    engines[0].setFaults({ failFraction: 1, failStatus: 503 });
    engines[1].setFaults({ failFraction: 1, failStatus: 503 });
    const client = openai(proxy);
    for (let i = 0; i < 12; i++) await client.completions.create({ model: MODEL, prompt: text(10, i), max_tokens: 2 });
    const snap = () => Object.fromEntries(proxy.router.fleet.snapshot().replicas.map((r) => [r.id, r.health]));
    const ejected = ['e0', 'e1'].filter((id) => proxy.outliers.effectiveEjected(id));
    assert.is(ejected.length, 1, `one ejected (cap 10% of 3, at least one): ${JSON.stringify(snap())}`);
    assert.is(snap()[ejected[0]], 'unhealthy');
    assert.is(snap().e2, 'healthy');
    assert.is(await metricSum(proxy, 'dystro_proxy_ejections_total'), 1);
    assert.is(await metricSum(proxy, 'dystro_proxy_ejected', { replica: ejected[0] }), 1);
    // No traffic reaches the ejected replica any more.
    const before = await metricSum(proxy, 'dystro_proxy_upstream_attempts_total', { replica: ejected[0] });
    for (let i = 0; i < 6; i++) await client.completions.create({ model: MODEL, prompt: text(10, 50 + i), max_tokens: 2 });
    assert.is(await metricSum(proxy, 'dystro_proxy_upstream_attempts_total', { replica: ejected[0] }), before);
    await assertIdle(proxy);
  } finally {
    await closeAll(proxy, engines);
  }

  // One replica for the model: ejecting it would leave none, so the panic rule keeps it in service.
  const [lone] = await startEngines(1);
  const p2 = await start(baseConfig([lone], { outlier: { consecutiveFailures: 2 } }));
  try {
    lone.setFaults({ failFraction: 1, failStatus: 503 });
    for (let i = 0; i < 5; i++) assert.is((await post(p2, '/v1/completions', JSON.stringify({ model: MODEL, prompt: text(10, i), max_tokens: 2 }))).status, 503);
    assert.is(p2.outliers.ejected('e0'), true, 'ejected by the detector');
    assert.is(p2.outliers.effectiveEjected('e0'), false, 'but not applied');
    assert.is(p2.router.fleet.snapshot().byId.get('e0')!.health, 'healthy');
    assert.is(await metricSum(p2, 'dystro_proxy_panic', { model: MODEL }), 1);
    lone.setFaults({ failFraction: 0 });
    assert.is((await post(p2, '/v1/completions', JSON.stringify({ model: MODEL, prompt: text(10, 9), max_tokens: 2 }))).status, 200);
    await assertIdle(p2);
  } finally {
    await closeAll(p2, [lone]);
  }
});

test('a client that goes away mid-stream cancels the engine request; all engines down is a fast 503', async () => {
  const engines = await startEngines(1, { timeScale: 1 });
  const proxy = await start(baseConfig(engines));
  try {
    const ac = new AbortController();
    const stream = await openai(proxy).completions.create({ model: MODEL, prompt: text(30), max_tokens: 300, stream: true }, { signal: ac.signal });
    let chunks = 0;
    try {
      for await (const ch of stream) {
        if (ch.choices[0]?.text) chunks++;
        if (chunks === 2) ac.abort();
      }
    } catch {
      // the client's own abort
    }
    await until('the cancellation to reach the router', async () => (await metricSum(proxy, 'dystro_proxy_upstream_attempts_total', { outcome: 'cancelled' })) === 1);
    await assertIdle(proxy);
    await until('the engine to drop the request', () => engines[0].state().running === 0);
    assert.is(await engineSuccesses(engines[0]), 0, 'it never finished');
    assert.is(await metricSum(proxy, 'dystro_proxy_retries_total'), 0);
  } finally {
    await closeAll(proxy, engines);
  }

  // Every engine refuses connections: each attempt fails in about a millisecond, the retries run out,
  // and the client hears 503 with Retry-After at once.
  const ports = [await deadPort(), await deadPort(), await deadPort()];
  const p2 = await start({ ...baseConfig([]), engines: ports.map((port, i) => ({ id: `d${i}`, pool: 'h100', address: `http://127.0.0.1:${port}` })) });
  try {
    const body = JSON.stringify({ model: MODEL, prompt: text(20), max_tokens: 2 });
    await post(p2, '/v1/completions', body);
    const t0 = performance.now();
    const r = await post(p2, '/v1/completions', body);
    const ms = performance.now() - t0;
    assert.is(r.status, 503);
    assert.is(r.headers['retry-after'], '1');
    assert.is(r.headers['x-dystro-attempts'], '3', 'the first attempt and two retries, on three replicas');
    assert.ok(ms < 50, `answered in ${ms.toFixed(1)} ms`);
    await assertIdle(p2);
  } finally {
    await p2.close();
  }
  void engineSpecs;
});

test.run();
