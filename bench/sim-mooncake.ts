/**
 * Simulator speed check (printed, never gated): the whole Mooncake conversation trace (12,031 requests,
 * 3,537 s of arrivals) on 16 Llama-3-8B / H100 replicas through the real router.
 *
 *   node --import tsx bench/sim-mooncake.ts [--backend wasm|native|js] [--policy NAME] [--profile] [--limit N] [--no-ceilings]
 *
 * Prints wall time (the figure), process CPU time (main thread and the ceilings worker together: on a
 * shared machine the wall time moves with the neighbours, the CPU time much less), events, the router's
 * decision time, and with --profile where the main thread's time goes (timers around each part add a
 * few percent).
 */
import { simulate } from '../src/sim/index.ts';
import { loadMooncake, sliceWorkload } from '../src/sim/workloads.ts';
import type { BackendChoice } from '../src/kernels/select.ts';
import { cpus, loadavg } from 'node:os';

const args = process.argv.slice(2);
const opt = (name: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
};
const backend = (opt('backend') ?? 'wasm') as BackendChoice;
const policy = opt('policy') ?? 'predicted-ttft';
const profile = args.includes('--profile');
const limit = opt('limit') ? Number(opt('limit')) : undefined;
const ceilings = !args.includes('--no-ceilings');

const t0 = performance.now();
let workload = loadMooncake({ seed: 1 });
if (limit !== undefined) workload = sliceWorkload(workload, 0, limit);
const loadMs = performance.now() - t0;
const cpu0 = process.cpuUsage();
const w0 = performance.now();
const r = simulate({ fleet: [{ accelerator: 'H100', model: 'llama-3-8b', replicas: 16 }], workload, policy, seed: 1, backend, profile, ceilings: ceilings ? 'auto' : false });
const wallMs = performance.now() - w0;
const cpu = process.cpuUsage(cpu0);

const pct = (x: number) => `${(100 * x).toFixed(2)}%`;
console.log(`Node ${process.version}, ${cpus().length} CPUs (${cpus()[0]?.model ?? '?'}), load average ${loadavg().map((x) => x.toFixed(1)).join(' ')}`);
console.log(`workload: ${r.workload}, ${r.requests.total} requests (trace parsed in ${loadMs.toFixed(0)} ms); 16 × H100 Llama-3-8B; policy ${r.policy}; backend ${r.backend}`);
console.log(`simulated ${r.makespanS.toFixed(0)} s in ${(wallMs / 1000).toFixed(2)} s wall, ${((cpu.user + cpu.system) / 1e6).toFixed(2)} s CPU (user ${(cpu.user / 1e6).toFixed(2)}, sys ${(cpu.system / 1e6).toFixed(2)}; includes the ceilings worker)`);
console.log(`events: ${r.events.simEvents} (${r.perf.eventsPerS}/s), engine steps ${r.engine.steps} (decode runs fast-forwarded), KV records applied ${r.events.kvRecordsApplied}, load reports ${r.events.loadReports}`);
console.log(`router decision (route() as called): p50 ${r.perf.decisionUs.p50} µs, p99 ${r.perf.decisionUs.p99} µs, mean ${r.perf.decisionUs.mean} µs over ${r.perf.decisionUs.count}`);
const c = r.prefix.ceilings;
console.log(`prefix hit ${pct(r.prefix.hitRate)} (router expected ${pct(r.prefix.expectedHitRate)}); ceilings: global LRU ${c ? pct(c.globalLru) : '—'}, infinite ${c ? pct(c.infinite) : '—'}`);
console.log(`TTFT p50/p90/p99 ${r.ttftMs.p50}/${r.ttftMs.p90}/${r.ttftMs.p99} ms; TPOT p50/p99 ${r.tpotMs.p50}/${r.tpotMs.p99} ms; goodput ${r.goodputRps.toFixed(2)} req/s (SLO attainment ${pct(r.sloAttainment)}); skew ${r.skew.requests.toFixed(2)} (requests), ${r.skew.busy.toFixed(2)} (busy)`);
if (r.perf.breakdownMs) {
  const total = Object.values(r.perf.breakdownMs).reduce((a, b) => a + b, 0);
  console.log(`main thread, ms (timed parts ${total} of ${r.perf.wallMs} wall; the rest is the event loop, tickets and bookkeeping):`);
  for (const [k, v] of Object.entries(r.perf.breakdownMs).sort((a, b) => b[1] - a[1])) console.log(`  ${k.padEnd(12)} ${String(v).padStart(7)}`);
}
