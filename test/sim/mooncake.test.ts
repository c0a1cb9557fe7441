/**
 * A slice of the Mooncake conversation trace on 16 H100 replicas through the real router: sanity of the
 * figures against the trace's published statistics, and the simulator's speed, printed (not timed: the
 * whole-trace figure comes from bench/sim-mooncake.ts).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { simulate } from '../../src/sim/index.ts';
import { loadMooncake, sliceWorkload } from '../../src/sim/workloads.ts';
import { availableBackends } from '../../src/kernels/select.ts';

const backend = availableBackends().loaded.some((b) => b.name === 'wasm') ? 'wasm' : 'js';

test('Mooncake slice (1,000 requests, 16 replicas): every request completes, hits within ceilings, speed printed', () => {
  const workload = sliceWorkload(loadMooncake({ seed: 1 }), 0, 1000);
  const r = simulate({ fleet: [{ accelerator: 'H100', model: 'llama-3-8b', replicas: 16 }], workload, policy: 'predicted-ttft', seed: 1, backend });
  assert.is(r.requests.completed, 1000);
  const c = r.prefix.ceilings!;
  assert.ok(r.prefix.hitRate <= c.infinite && r.prefix.hitRate <= c.globalLru, `${r.prefix.hitRate} within ${c.infinite}, ${c.globalLru}`);
  // Block 0 (a system prompt) is shared by every request: even the first thousand reuse a fifth of their tokens.
  assert.ok(c.infinite > 0.15 && c.infinite < 0.4, `infinite ceiling ${c.infinite}`);
  assert.ok(r.prefix.hitRate > 0.1, `hit rate ${r.prefix.hitRate}`);
  assert.ok(r.tpotMs.p50 > 5 && r.tpotMs.p50 < 30, `TPOT p50 ${r.tpotMs.p50} ms (roofline decode ≈ 8 ms at batch 1)`);
  console.log(
    `  mooncake slice: ${r.requests.total} requests, ${r.makespanS.toFixed(0)} s simulated in ${r.perf.wallMs} ms wall ` +
      `(${r.perf.eventsPerS} events/s, ${backend}); router decision p50 ${r.perf.decisionUs.p50} µs, p99 ${r.perf.decisionUs.p99} µs; ` +
      `hit ${(100 * r.prefix.hitRate).toFixed(1)}% vs ceilings ${(100 * c.globalLru).toFixed(1)}% (global LRU), ${(100 * c.infinite).toFixed(1)}% (infinite)`,
  );
});

test.run();
