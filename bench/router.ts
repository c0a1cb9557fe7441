/**
 * Routing decisions (group "router"). `route()` with the predicted-ttft policy, per backend in the same
 * run, hashing included (the prompt arrives as token ids and is hashed on every call):
 *
 * 1. Latency: an 8,192-token prompt, 1,000 replicas, a prefix index holding 10,000,000 (block, replica)
 *    entries — median and p99 of single calls (tinybench times each call; ending the ticket happens in
 *    `afterEach`, outside the timed window).
 * 2. Throughput: decisions per second for 2,048-token prompts across 1,000 replicas — a loop of
 *    route() + onFirstToken() + onEnd(), what a proxy pays per request.
 * 3. Scaling: median route() at 10,000 replicas ÷ at 1,000 (wasm), same index size and the same number
 *    of replicas holding the prompt's prefix, so only the fleet size differs. The candidate set is the
 *    prefix holders plus a constant sample, so the decision should not grow with the fleet.
 *
 * The index is filled through `PrefixIndex.apply` with store records (engine-event style, precise):
 * replicas in 100 groups of 10; half of each replica's blocks are its group's (held by 10 replicas,
 * like a shared system prompt: arena holders), half its own (inline holders). On top, the benchmark
 * prompts' real hash chains: a 4,096-token shared prefix held by 50 replicas, the whole 8,192 tokens of
 * a few prompts by 5. Prompts rotate over 64 distinct ones (same prefix, different tails), so calls
 * see hits, partial hits and the router's own speculative entries, not one cached answer.
 *
 * Caveat, stated in the output: the backends share one Router class in one process, so its call sites
 * see two or three kernel classes (polymorphic inline caches); an application uses one backend.
 */
import { Bench } from 'tinybench';
import type { KernelBackend } from '../src/kernels/abi.ts';
import { createRouter, type Router } from '../src/router/router.ts';
import type { Decision } from '../src/router/types.ts';
import { OP_STORE, RECORD_WORDS } from '../src/index/records.ts';
import { compileLoop, fmtInt, fmtNs, mdTable, median, rngFor, runTimings, section, type BenchConfig, type TaskSpec, type Timing } from './util.ts';

export const OP_ROUTE_8K = 'route(), 8,192 tokens, 1,000 replicas';
export const OP_ROUTE_2K = 'route() + onFirstToken + onEnd, 2,048 tokens, 1,000 replicas';
/** The 10,000-replica twin of OP_ROUTE_8K (wasm): the scaling ratio divides it by OP_ROUTE_8K's wasm figure. */
export const OP_ROUTE_8K_10K = 'route(), 8,192 tokens, 10,000 replicas';

/** (block, replica) entries in the index of the latency and scaling figures. */
export const INDEX_ENTRIES_FULL = 10_000_000;
/** --ci: the fill costs ~1 s (wasm) to ~4.5 s (js) per 10 M on the 2-core VM; 10 M keeps --ci within its budget. */
export const INDEX_ENTRIES_CI = 10_000_000;
const MODEL = 'llama-3-8b';
const PREFIX_HOLDERS = 50;
const FULL_HOLDERS = 5;
const PROMPTS = 64;
const SHARED_PREFIX_TOKENS = 4096;

export interface RouteLatency {
  readonly op: string;
  readonly backend: string;
  readonly replicas: number;
  readonly indexEntries: number;
  readonly promptTokens: number;
  /** Median over passes of each pass's median and p99 call time, ns. */
  readonly medianNs: number;
  readonly p99Ns: number;
  readonly passesMedianNs: number[];
  readonly passesP99Ns: number[];
  readonly samples: number;
  /** Mean candidates a decision looked at, and mean cached prompt tokens of the chosen replica. */
  readonly meanCandidates: number;
  readonly meanCachedTokens: number;
}

export interface RouterBuild {
  readonly backend: string;
  readonly replicas: number;
  readonly entries: number;
  readonly fillMs: number;
  readonly indexBytes: number;
}

export interface RouterBenchResult {
  readonly latency: RouteLatency[];
  readonly throughput: { backend: string; nsPerDecision: number; decisionsPerS: number; spread: number }[];
  /** Median route() at 10,000 replicas ÷ at 1,000 (wasm). */
  readonly scaleRatio?: number;
  readonly builds: RouterBuild[];
  readonly timings: Timing[];
  readonly notes: string[];
}

/** Token ids of the benchmark prompts: a shared prefix and a distinct tail each. */
function makePrompts(tokens: number, label: string): Uint32Array[] {
  const rng = rngFor(label);
  const shared = Uint32Array.from({ length: Math.min(SHARED_PREFIX_TOKENS, tokens / 2) }, () => rng.int(151_936));
  return Array.from({ length: PROMPTS }, () => {
    const p = new Uint32Array(tokens);
    p.set(shared);
    for (let i = shared.length; i < tokens; i++) p[i] = rng.int(151_936);
    return p;
  });
}

/** Two cheap 32-bit mixes of (owner, block) → a filler hash that cannot collide with a real chain by design of the test (64 random-looking bits). */
function fillerWords(owner: number, block: number, out: Uint32Array, at: number): void {
  let lo = Math.imul(owner ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(block + 1, 0xc2b2ae35);
  lo ^= lo >>> 15;
  lo = Math.imul(lo, 0x2c1b3c6d);
  lo ^= lo >>> 12;
  let hi = Math.imul(block ^ 0x27d4eb2f, 0x165667b1) ^ Math.imul(owner + 7, 0xd3a2646c);
  hi ^= hi >>> 13;
  hi = Math.imul(hi, 0x297a2d39);
  hi ^= hi >>> 16;
  out[at + 2] = lo >>> 0;
  out[at + 3] = hi >>> 0;
}

/**
 * A router over `replicas` replicas in two pools (H100 and H200), with `entries` filler entries plus
 * the prompts' chains, load reported for every replica. Returns it with its build figures.
 */
function buildRouter(kernels: KernelBackend, replicas: number, entries: number, prompts: Uint32Array[]): { router: Router; build: RouterBuild } {
  const capacity = Math.ceil(replicas / 1024) * 1024;
  const router = createRouter({
    kernels,
    seed: 1,
    capacity,
    policy: 'predicted-ttft',
    // Headroom above the fill for the router's own speculative entries: no eviction while measuring.
    index: { maxEntries: Math.ceil(entries * 1.1) + 1_000_000 },
    pools: [
      { id: 'h100', accelerator: 'H100', tensorParallel: 1, model: MODEL, kvCapacityBlocks: 40_000 },
      { id: 'h200', accelerator: 'H200', tensorParallel: 1, model: MODEL, kvCapacityBlocks: 80_000 },
    ],
    replicas: Array.from({ length: replicas }, (_, i) => ({ id: `r${i}`, pool: i % 4 === 0 ? 'h200' : 'h100', address: `http://10.${i >> 16}.${(i >> 8) & 255}.${i & 255}:8000` })),
  });
  const rng = rngFor(`router.load.${replicas}`);
  for (let i = 0; i < replicas; i++) router.updateLoad(`r${i}`, { running: rng.int(32), waiting: rng.int(4), prefillTokens: rng.int(8192), kvUsage: rng.float() * 0.9 });

  const t0 = performance.now();
  const batch = 65_536;
  const recs = new Uint32Array(batch * RECORD_WORDS);
  let k = 0;
  const flush = () => {
    if (k > 0) router.index.apply(recs, k);
    k = 0;
  };
  const perReplica = Math.floor(entries / replicas);
  for (let r = 0; r < replicas; r++) {
    const group = r % 100;
    for (let j = 0; j < perReplica; j++) {
      const at = k * RECORD_WORDS;
      recs[at] = OP_STORE; // tier GPU (0) in bits 8…
      recs[at + 1] = r;
      fillerWords(j < perReplica / 2 ? group : 1000 + r, j, recs, at);
      if (++k === batch) flush();
    }
  }
  flush();
  // The prompts' own chains: the shared prefix at PREFIX_HOLDERS replicas, whole prompts at FULL_HOLDERS.
  const hashes = new BigUint64Array(prompts[0].length / router.blockSize);
  const seed = router.hasher.namespaceSeed({ model: MODEL, lora: '', tenant: '' });
  const sharedBlocks = Math.min(SHARED_PREFIX_TOKENS, prompts[0].length / 2) / router.blockSize;
  const step = Math.floor(replicas / PREFIX_HOLDERS);
  router.hasher.hashTokens(prompts[0], seed, hashes);
  for (let h = 0; h < PREFIX_HOLDERS; h++) router.index.store(h * step + 3, hashes.subarray(0, sharedBlocks));
  for (let p = 0; p < FULL_HOLDERS; p++) {
    router.hasher.hashTokens(prompts[p], seed, hashes);
    router.index.store(p * step + 5, hashes);
  }
  const fillMs = performance.now() - t0;
  return { router, build: { backend: kernels.name, replicas, entries: router.index.stats().entries, fillMs, indexBytes: router.index.stats().bytes } };
}

interface LatencyTask {
  readonly op: string;
  readonly backend: string;
  readonly router: Router;
  readonly prompts: Uint32Array[];
  readonly replicas: number;
}

/**
 * Times single route() calls: `repeats` passes, every task once a pass (interleaved), tinybench timing
 * each call. Returns per task the median over passes of the per-pass median and p99, and what the
 * decisions looked like (candidates, cached tokens).
 */
function timeLatency(tasks: readonly LatencyTask[], cfg: BenchConfig): RouteLatency[] {
  const medians: number[][] = tasks.map(() => []);
  const p99s: number[][] = tasks.map(() => []);
  const samples = tasks.map(() => 0);
  const candidates = tasks.map(() => 0);
  const cached = tasks.map(() => 0);
  const decisions = tasks.map(() => 0);
  // Candidates of the last decision, read by a hook registered once per router (a closure call inside
  // the timed window: a few ns against microseconds).
  const lastN = new Map<Router, number>();
  for (const t of tasks) {
    if (lastN.has(t.router)) continue;
    lastN.set(t.router, 0);
    t.router.onDecision((ctx) => lastN.set(t.router, ctx.n));
  }
  for (let pass = 0; pass < cfg.repeats; pass++) {
    // Enough calls a pass for a p99 worth the name: at least 400 (js at ~1 ms a call gets its time budget).
    const bench = new Bench({ time: cfg.taskTimeMs * 2, warmupTime: cfg.warmupTimeMs, warmupIterations: 20, iterations: 400, throws: true });
    tasks.forEach((t, k) => {
      const reqs = t.prompts.map((prompt) => ({ model: MODEL, prompt }));
      let i = 0;
      let last: Decision | null = null;
      bench.add(`${t.op} | ${t.backend}`, () => {
        last = t.router.route(reqs[i++ & (PROMPTS - 1)]);
      }, {
        afterEach() {
          const d = last as Decision | null;
          if (d && d.kind === 'route') {
            candidates[k] += lastN.get(t.router)!;
            cached[k] += d.cachedTokens;
            decisions[k]++;
            d.ticket.onFirstToken();
            d.ticket.onEnd();
          }
        },
      });
    });
    bench.runSync();
    bench.tasks.forEach((task, k) => {
      const r = task.result;
      if (r.state !== 'completed') throw new Error(`bench task ${task.name} ended in state ${r.state}`);
      medians[k].push(r.latency.p50 * 1e6);
      p99s[k].push(r.latency.p99 * 1e6);
      samples[k] += r.latency.samplesCount;
    });
    process.stderr.write(`  router latency: pass ${pass + 1}/${cfg.repeats} done (${tasks.length} tasks)\n`);
  }
  return tasks.map((t, k) => ({
    op: t.op,
    backend: t.backend,
    replicas: t.replicas,
    indexEntries: t.router.index.stats().entries,
    promptTokens: t.prompts[0].length,
    medianNs: median(medians[k]),
    p99Ns: median(p99s[k]),
    passesMedianNs: medians[k],
    passesP99Ns: p99s[k],
    samples: samples[k],
    meanCandidates: candidates[k] / Math.max(1, decisions[k]),
    meanCachedTokens: cached[k] / Math.max(1, decisions[k]),
  }));
}

export function runRouter(backends: readonly KernelBackend[], cfg: BenchConfig): { result: RouterBenchResult; markdown: string } {
  const entries = cfg.ci ? INDEX_ENTRIES_CI : INDEX_ENTRIES_FULL;
  const wanted = backends.filter((k) => k.name === 'wasm' || k.name === 'js' || k.name === 'native');
  const prompts8k = makePrompts(8192, 'router.prompts.8k');
  const prompts2k = makePrompts(2048, 'router.prompts.2k');
  const builds: RouterBuild[] = [];
  const notes: string[] = [];
  const timings: Timing[] = [];

  // 1 and 3: latency per backend at 1,000 replicas, and wasm at 10,000, interleaved in the same passes.
  const routers: Router[] = [];
  const latencyTasks: LatencyTask[] = [];
  for (const k of wanted) {
    process.stderr.write(`  router: filling a ${fmtInt(entries)}-entry index over 1,000 replicas (${k.name}) …\n`);
    const { router, build } = buildRouter(k, 1000, entries, prompts8k);
    builds.push(build);
    routers.push(router);
    latencyTasks.push({ op: OP_ROUTE_8K, backend: k.name, router, prompts: prompts8k, replicas: 1000 });
  }
  const wasm = wanted.find((k) => k.name === 'wasm');
  if (wasm) {
    process.stderr.write(`  router: filling a ${fmtInt(entries)}-entry index over 10,000 replicas (wasm) …\n`);
    const { router, build } = buildRouter(wasm, 10_000, entries, prompts8k);
    builds.push(build);
    routers.push(router);
    latencyTasks.push({ op: OP_ROUTE_8K_10K, backend: 'wasm', router, prompts: prompts8k, replicas: 10_000 });
  } else {
    notes.push('wasm did not load: no scaling figure.');
  }
  const latency = timeLatency(latencyTasks, cfg);
  for (const l of latency) {
    timings.push({ group: 'router', op: l.op, impl: l.backend, kind: 'backend', unit: 'call', nsPerOp: l.medianNs, passesNs: l.passesMedianNs, spread: (Math.max(...l.passesMedianNs) - Math.min(...l.passesMedianNs)) / l.medianNs, innerCalls: 1 });
  }
  const s1k = latency.find((l) => l.op === OP_ROUTE_8K && l.backend === 'wasm');
  const s10k = latency.find((l) => l.op === OP_ROUTE_8K_10K);
  const scaleRatio = s1k && s10k ? s10k.medianNs / s1k.medianNs : undefined;
  for (const r of routers) r.index.free();
  routers.length = 0;

  // 2: decisions per second, 2,048-token prompts, 1,000 replicas (index: the filler at a tenth, the prompts' chains).
  const tasks: TaskSpec[] = [];
  const small: Router[] = [];
  for (const k of wanted) {
    const { router } = buildRouter(k, 1000, Math.min(entries, 1_000_000), prompts2k);
    small.push(router);
    const reqs = prompts2k.map((prompt) => ({ model: MODEL, prompt }));
    tasks.push({
      op: OP_ROUTE_2K,
      impl: k.name,
      kind: 'backend',
      unit: 'decision',
      unitsPerCall: 1,
      loop: compileLoop(`${OP_ROUTE_2K} ${k.name}`, 'const d = router.route(reqs[(base + i) & 63]); if (d.kind === "route") { d.ticket.onFirstToken(); d.ticket.onEnd(); } sink[i & 63] = d;', { router, reqs }),
    });
  }
  const tput = runTimings('router', tasks, cfg);
  timings.push(...tput);
  for (const r of small) r.index.free();
  const throughput = tput.map((t) => ({ backend: t.impl, nsPerDecision: t.nsPerOp, decisionsPerS: 1e9 / t.nsPerOp, spread: t.spread }));

  notes.push('One process runs every backend through the same Router class, so its call sites are polymorphic over two or three kernel classes; an application uses one backend and may be slightly faster.');

  let md = section('Routing decisions: route() with predicted-ttft, hashing included');
  md += `\nIndex: ${fmtInt(entries)} (block, replica) entries of filler plus the prompts' chains (4,096-token prefix at ${PREFIX_HOLDERS} replicas, whole prompts at ${FULL_HOLDERS}); ${PROMPTS} rotating prompts; load reported for every replica; latency of single calls timed by tinybench (ticket ended outside the timed window), median over ${cfg.repeats} interleaved passes of each pass's median and p99.\n\n`;
  md += mdTable(
    ['operation', 'backend', 'median', 'p99', 'samples', 'candidates', 'cached tokens'],
    latency.map((l) => [l.op, l.backend, fmtNs(l.medianNs), fmtNs(l.p99Ns), fmtInt(l.samples), l.meanCandidates.toFixed(1), fmtInt(l.meanCachedTokens)]),
    ['l', 'l', 'r', 'r', 'r', 'r', 'r'],
  );
  md += '\n\n';
  md += mdTable(
    ['operation', 'backend', 'per decision', 'decisions/s', 'spread'],
    throughput.map((t) => [OP_ROUTE_2K, t.backend, fmtNs(t.nsPerDecision), fmtInt(t.decisionsPerS), `${(t.spread * 100).toFixed(1)} %`]),
    ['l', 'l', 'r', 'r', 'r'],
  );
  md += '\n\n';
  md += mdTable(
    ['index build', 'replicas', 'entries', 'fill time', 'index bytes'],
    builds.map((b) => [b.backend, fmtInt(b.replicas), fmtInt(b.entries), `${(b.fillMs / 1000).toFixed(2)} s`, `${(b.indexBytes / 2 ** 20).toFixed(0)} MiB`]),
    ['l', 'r', 'r', 'r', 'r'],
  );
  md += `\n\nScaling (wasm): median route() at 10,000 replicas ÷ at 1,000 = ${scaleRatio === undefined ? '—' : `${scaleRatio.toFixed(2)}×`}.\n`;
  for (const n of notes) md += `\n${n}\n`;
  return { result: { latency, throughput, scaleRatio, builds, timings, notes }, markdown: md };
}
