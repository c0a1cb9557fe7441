/**
 * Where traffic goes when engines go bad, end to end on 127.0.0.1 (official OpenAI client → proxy →
 * engine emulators), under closed-loop load from several clients with distinct prompts (no prefix
 * affinity to hold traffic in place). Routing decisions are recorded with their wall time through the
 * router's decision hook.
 *
 * Pass criteria:
 * - Slow replica (slowFactor 40 on one of three, predicted-ttft): within 10 s of the fault, the slow
 *   replica's share of decisions over a 2 s window falls to at most 30% of its share over the 2 s
 *   before the fault (≥ 70% of its traffic moved away); no request fails.
 * - Fast 429s (one of three engines refuses every request at once): with fast 429s counted as
 *   failures (the default fast429Ms), the refusing engine is ejected after `consecutiveFailures` of
 *   them and receives at most that many plus the attempts already under way; with 429s neutral
 *   (fast429Ms 0) the same least-request policy sends it more than its fair third of first attempts
 *   (the black hole the rule prevents). Every client request is answered 200 (retried elsewhere).
 * - Pool loss (2 × H100 + 2 × H200, the H200 engines crash): every request started after the crash
 *   is answered 200 by the H100 pool (retries), both H200 replicas are ejected within 5 s, and after
 *   that every decision goes to the H100 pool.
 * The retry budget is sized for the clients (minConcurrency 6) where refusals come from every client
 * at once, so the criteria are about routing, not about the budget (tested in failures.test.ts).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type OpenAI from 'openai';
import type { EngineEmulator } from '../../src/emulator/index.ts';
import type { Proxy } from '../../src/proxy/proxy.ts';
import { MODEL, POOL, baseConfig, engineSpecs, inflightTotals, metricSum, openai, start, startEngines, text, until } from './helpers.ts';

// Whatever happens, this file ends within 90 s.
setTimeout(() => {
  console.error('steering: watchdog fired (a socket was left open?)');
  process.exit(1);
}, 90_000).unref();

interface Routed {
  atMs: number;
  replica: string;
}

/** Every routed decision of the proxy's router, with its wall time. */
function recordDecisions(proxy: Proxy): Routed[] {
  const out: Routed[] = [];
  proxy.router.onDecision((_ctx, d) => {
    if (d.kind === 'route') out.push({ atMs: performance.now(), replica: d.replica.id });
  });
  return out;
}

interface Answered {
  startMs: number;
  /** HTTP status, or −1 for a stream that failed after its first byte. */
  status: number;
}

/**
 * Closed-loop clients, each sending streamed requests with prompts of its own one after another until
 * stop() (every prompt distinct). Resolves to each request's start time and status.
 */
function closedLoop(client: OpenAI, clients: number, seed: number, maxTokens = 8): { stop: () => Promise<Answered[]> } {
  let stopped = false;
  const answered: Answered[] = [];
  const runs = Array.from({ length: clients }, async (_, c) => {
    for (let i = 0; !stopped; i++) {
      const startMs = performance.now();
      let status = -1;
      try {
        const { data, response } = await client.completions.create({ model: MODEL, prompt: text(30, seed + c * 100_000 + i), max_tokens: maxTokens, stream: true }).withResponse();
        status = response.status;
        for await (const _ of data);
      } catch (err) {
        status = (err as { status?: number }).status ?? -1;
      }
      answered.push({ startMs, status });
    }
  });
  return {
    stop: async () => {
      stopped = true;
      await Promise.all(runs);
      return answered;
    },
  };
}

const codes = (a: readonly Answered[]) => [...new Set(a.map((x) => x.status))].join(', ');

function share(ds: readonly Routed[], replica: string, fromMs: number, toMs: number): { share: number; n: number } {
  const w = ds.filter((d) => d.atMs >= fromMs && d.atMs < toMs);
  return { share: w.length ? w.filter((d) => d.replica === replica).length / w.length : NaN, n: w.length };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function assertIdle(proxy: Proxy): Promise<void> {
  await until('requests to finish', async () => (await metricSum(proxy, 'dystro_proxy_active_requests')) === 0);
  assert.equal(inflightTotals(proxy.router), { requests: 0, prefillTokens: 0, blocks: 0 }, 'router in-flight counts back to zero');
  assert.is(proxy.router.openTicketCount(), 0, 'no ticket left open');
}

test('slow replica: ≥ 70% of its traffic moves away within 10 s', async () => {
  const engines = await startEngines(3);
  const proxy = await start(baseConfig(engines, { policy: 'predicted-ttft' }));
  try {
    const decisions = recordDecisions(proxy);
    const load = closedLoop(openai(proxy), 6, 1);
    await sleep(2_000);
    const tFault = performance.now();
    const before = share(decisions, 'e0', 0, tFault);
    engines[0].setFaults({ slowFactor: 40 });
    // The first window (the last 2 s, or since the fault when shorter, but at least 1 s and 20
    // decisions) where e0's share is ≤ 30% of what it was.
    let movedAtMs = NaN;
    let after = { share: NaN, n: 0 };
    await until('e0’s share to fall', async () => {
      const now = performance.now();
      if (now - tFault < 1_000) return false;
      after = share(decisions, 'e0', Math.max(tFault, now - 2_000), now);
      if (after.n >= 20 && after.share <= 0.3 * before.share) movedAtMs = now - tFault;
      return !Number.isNaN(movedAtMs);
    }, 10_000);
    const answered = await load.stop();
    console.log(`  slow replica: e0 share ${(before.share * 100).toFixed(0)}% of ${before.n} before, ${(after.share * 100).toFixed(0)}% of ${after.n} in the window ending ${(movedAtMs / 1000).toFixed(2)} s after slowFactor 40`);
    assert.ok(before.share >= 0.15, `e0 had its share before the fault (${before.share})`);
    assert.ok(movedAtMs <= 10_000);
    assert.ok(answered.every((a) => a.status === 200), `every request answered 200 (${codes(answered)})`);
    engines[0].setFaults({ slowFactor: 1 });
    await assertIdle(proxy);
  } finally {
    await proxy.close();
    await Promise.all(engines.map((e) => e.close()));
  }
});

test('fast 429s are penalized (ejection), not rewarded (a least-request black hole when neutral)', async () => {
  const run = async (fast429Ms: number) => {
    const engines = await startEngines(3);
        // A retry budget for every client at once, so each refusal can be retried and clients see only 200s.
    const proxy = await start(baseConfig(engines, { policy: 'least-request', retry: { minConcurrency: 6 }, outlier: { consecutiveFailures: 5, maxEjectionPercent: 34, baseEjectionMs: 60_000, fast429Ms } }));
    try {
      engines[0].setFaults({ failFraction: 1, failStatus: 429 });
      const load = closedLoop(openai(proxy), 6, 7, 4);
      await until('120 requests answered', async () => (await metricSum(proxy, 'dystro_proxy_requests_total')) >= 120, 20_000);
      const answered = await load.stop();
      const attempts = (id: string) => metricSum(proxy, 'dystro_proxy_upstream_attempts_total', { replica: id });
      const requests = await metricSum(proxy, 'dystro_proxy_requests_total');
      const retried = await metricSum(proxy, 'dystro_proxy_retries_total', { outcome: 'retried' });
      const e0 = await attempts('e0');
      // Every attempt on e0 fails and is retried; first attempts are the requests.
      const out = { answered, requests, e0, e0FirstShare: e0 / requests, retried, ejected: proxy.outliers.ejected('e0') };
      await assertIdle(proxy);
      return out;
    } finally {
      await proxy.close();
      await Promise.all(engines.map((e) => e.close()));
    }
  };
  const penalized = await run(250);
  const neutral = await run(0);
  console.log(`  fast 429s: counted as failures → e0 got ${penalized.e0} of ${penalized.requests} requests' attempts (ejected: ${penalized.ejected}); neutral → ${neutral.e0} of ${neutral.requests} (${(neutral.e0FirstShare * 100).toFixed(0)}% of first attempts)`);
  for (const r of [penalized, neutral]) assert.ok(r.answered.every((a) => a.status === 200), `every request answered 200 (${codes(r.answered)})`);
  assert.ok(penalized.ejected, 'the refusing engine is ejected');
  // 5 failures eject it; requests already routed there when the fifth came back fail too (≤ 6 clients).
  assert.ok(penalized.e0 <= 5 + 6, `attempts on e0 once penalized: ${penalized.e0}`);
  assert.not.ok(neutral.ejected, 'neutral 429s never eject');
  assert.ok(neutral.e0FirstShare > 1 / 3, `neutral: e0 attracts more than a fair third (${neutral.e0FirstShare.toFixed(2)})`);
});

test('pool loss: the H200 engines crash, traffic spills over to the H100 pool, no request fails', async () => {
  const h100 = await startEngines(2, { accelerator: 'H100' });
  const h200 = await startEngines(2, { accelerator: 'H200', seed: 5 });
  const H200 = { ...POOL, id: 'h200', accelerator: 'H200' };
  const config = baseConfig([], { policy: 'predicted-ttft', pools: [POOL, H200], retry: { minConcurrency: 6 }, outlier: { consecutiveFailures: 3, maxEjectionPercent: 50, baseEjectionMs: 60_000 } });
  config.engines = [...engineSpecs(h100).map((e, i) => ({ ...e, id: `h100-${i}` })), ...engineSpecs(h200).map((e, i) => ({ ...e, id: `h200-${i}`, pool: 'h200' }))];
  const proxy = await start(config);
  try {
    const decisions = recordDecisions(proxy);
    const load = closedLoop(openai(proxy), 6, 11);
    await sleep(1_500);
    const tCrash = performance.now();
    const beforeH200 = share(decisions.map((d) => ({ ...d, replica: d.replica.slice(0, 4) })), 'h200', 0, tCrash);
    await Promise.all(h200.map((e) => e.crash('close')));
    await until('both H200 replicas ejected', () => proxy.outliers.effectiveEjected('h200-0') && proxy.outliers.effectiveEjected('h200-1'), 5_000);
    const ejectedAtMs = performance.now() - tCrash;
    const tEjected = performance.now();
    await sleep(1_500);
    const answered = await load.stop();
    const afterCrash = answered.filter((a) => a.startMs >= tCrash);
    const afterDecisions = decisions.filter((d) => d.atMs >= tEjected);
    console.log(`  pool loss: h200 took ${(beforeH200.share * 100).toFixed(0)}% of ${beforeH200.n} decisions before; both ejected ${ejectedAtMs.toFixed(0)} ms after the crash; then ${afterDecisions.length} decisions, all h100; ${afterCrash.length} requests started after the crash (${codes(afterCrash)}), ${answered.length - afterCrash.length} before (${codes(answered.filter((a) => a.startMs < tCrash))}), ${await metricSum(proxy, 'dystro_proxy_retries_total', { outcome: 'retried' })} retried`);
    assert.ok(beforeH200.share > 0.3, 'the H200 pool served its part before');
    // Requests streaming from an H200 engine when it died end in an error (no retry after the first
    // byte: the crash mid-stream case); every request started after the crash is answered 200.
    assert.ok(afterCrash.length > 20 && afterCrash.every((a) => a.status === 200), `every request after the crash answered 200 (${codes(afterCrash)})`);
    assert.ok(afterDecisions.length > 20);
    assert.ok(afterDecisions.every((d) => d.replica.startsWith('h100-')), 'after ejection every decision goes to the H100 pool');
    await assertIdle(proxy);
  } finally {
    await proxy.close();
    await Promise.all([...h100, ...h200].map((e) => e.close()));
  }
});

test.run();
