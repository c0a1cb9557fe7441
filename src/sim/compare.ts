/**
 * `compare` (DESIGN §6): is a policy change worth its deploy risk? A candidate policy and one or more
 * baselines run on the same workload, fleet and seeds, and the report gives
 *
 * - the modelled gain: goodput (requests/s meeting both SLOs) and TTFT p90 of the candidate against each
 *   baseline, seed by seed, with the spread over seeds;
 * - the blast radius: the share of requests whose replica changes (same seed, request by request), the
 *   worst per-replica load increase (engine busy time, as a share of an average replica's), the peak
 *   busy share any replica reaches, and the behaviour under failure scenarios (one replica lost, a pool
 *   lost, every cache flushed, KV events delayed by seconds) against the baseline under the same failure;
 * - optionally the capacity of each policy (the highest load at which ≥ 90% of requests meet both SLOs,
 *   DistServe's definition of goodput) from a sweep of load levels;
 * - a one-line verdict for a deploy decision: deploy, canary, hold or reject, from the gain and the risk.
 *
 * The compared load is a rate scale of the workload, or `knee`: the lowest load at which a reference
 * policy (round-robin) misses the TTFT SLO at p90, found by a scan of load levels refined by bisection.
 *
 * Every run is a SimJob (plain data) run by a SimRunner: in a piscina pool of worker threads, or inline.
 */
import { availableParallelism, cpus } from 'node:os';
import { fail } from '../errors.js';
import type { FailureScenario, PoolConfig, SimResult } from './sim.js';
import { maxOverMean } from './metrics.js';
import type { WorkloadSpec } from './workloads.js';
import { describeFleet } from './fleet-config.js';
import { SimRunner, baseRate, capacityOf, checkJob, runAll, specAt, type PolicyCapacity, type SimExtras, type SimJob } from './sweep.js';
import { markdownTable, ms, num, pct, policyConfig, policyLabel, signedPct, spread, spreadPct, summarize, textTable, times, type PolicyRef, type RunSummary, type Spread } from './summary.js';

export const SCENARIO_NAMES = ['replica-loss', 'pool-loss', 'cache-flush', 'event-delay'] as const;
export type ScenarioName = (typeof SCENARIO_NAMES)[number];

export interface CompareOptions {
  candidate: PolicyRef;
  baselines: readonly PolicyRef[];
  workload: WorkloadSpec;
  fleet: readonly PoolConfig[];
  fleetName?: string;
  /** Seeds (workload jitter and token ids, router draws); every policy runs every seed (default [1, 2]). */
  seeds?: readonly number[];
  slo?: { ttftMs: number; tpotMs: number };
  /** Rate scale of the compared runs (default 1), or 'knee' (see `knee`). */
  rateScale?: number | 'knee';
  knee?: {
    /** The policy whose TTFT p90 defines the knee (default round-robin). */
    reference?: PolicyRef;
    /** Rate scales scanned upward (default 1, 1.5, 2, 3, 4, 6, 8, 12, 16, 24, 32). */
    grid?: readonly number[];
    /** Bisection rounds between the last load that met the SLO and the first that missed (default 2). */
    refine?: number;
  };
  /** Failure scenarios to run, each for every policy on the first seed (default all four; [] none). */
  scenarios?: readonly ScenarioName[];
  scenarioOptions?: {
    /** When the failure strikes, as a share of the arrival span (default 1/3). */
    atFraction?: number;
    /** Replica and pool losses: the router learns after this long (ms, default 2,000). */
    detectAfterMs?: number;
    /** event-delay: KV events take this much longer (ms, default 5,000) … */
    eventDelayMs?: number;
    /** … for this share of the arrival span (default 1/3). */
    durationFraction?: number;
    /** pool-loss: the pool lost (default the first). */
    pool?: string;
  };
  /** Capacity sweep: load levels as multiples of the compared rate scale (e.g. [0.5, 1, 1.5, 2, 3]); default none. */
  capacity?: readonly number[] | false;
  /** SLO attainment the capacity sweep requires (default 0.9). */
  attainmentTarget?: number;
  sim?: SimExtras;
  runner?: SimRunner;
  threads?: number;
  /** Progress over all runs of a phase (0 … 1), with the phase's name ('knee search', 'runs'). */
  onProgress?: (fraction: number, runsDone: number, runsTotal: number, phase: string) => void;
  /** Free text recorded in the report (the CLI puts the command line here). */
  command?: string;
}

export interface PolicyStats {
  policy: string;
  runs: RunSummary[];
  goodputRps: Spread;
  sloAttainment: Spread;
  ttftP50: Spread;
  ttftP90: Spread;
  ttftP99: Spread;
  tpotP90: Spread;
  hitRate: Spread;
  /** Hit rate ÷ the global-LRU ceiling of the same seed. */
  hitOfLru: Spread;
  skewRequests: Spread;
  skewBusy: Spread;
  /** First seed: requests and busy seconds per replica. */
  perReplica: { id: string; pool: string; requests: number; busyS: number }[];
  /** First seed: share of the requests served by each pool (a heterogeneous fleet need not split evenly). */
  poolShare: Record<string, number>;
  /** max / mean of requests per replica within each pool, the worst pool, per seed (skew that heterogeneity does not explain). */
  skewWithinPools: Spread;
}

export type Decision = 'deploy' | 'canary' | 'hold' | 'reject';

export interface Verdict {
  decision: Decision;
  gain: 'better' | 'worse' | 'unclear';
  risk: 'low' | 'medium' | 'high';
  /** The one line for a deploy decision. */
  line: string;
  reasons: string[];
}

export interface Versus {
  baseline: string;
  gain: {
    /** Candidate goodput ÷ baseline goodput − 1, per seed. */
    goodput: Spread;
    /** Candidate TTFT p90 ÷ baseline TTFT p90, per seed. */
    ttftP90Ratio: Spread;
    /** Candidate hit rate − baseline hit rate, per seed. */
    hitRateDelta: Spread;
  };
  blast: {
    /** Share of requests served by another replica than under the baseline, per seed. */
    placementsMoved: Spread;
    /** The replica whose busy time grows most, as a share of an average replica's busy time under the baseline (worst seed). */
    worstReplica: { id: string; pool: string; busyIncrease: number; requestsIncrease: number; seed: number };
    /**
     * Highest load of any replica in any timeline bucket, as the mean requests running or waiting in its
     * engine over the bucket (first seed). (Busy share saturates: under load every engine steps all the
     * time, so queue depth is what shows a replica being piled on.)
     */
    peakLoad: { candidate: number; baseline: number };
  };
  /** Goodput under each failure scenario, candidate ÷ baseline (first seed). */
  scenarios: { scenario: ScenarioName; candidateGoodputRps: number; baselineGoodputRps: number; ratio: number }[];
  verdict: Verdict;
}

export interface ScenarioRun {
  scenario: ScenarioName;
  description: string;
  policy: string;
  goodputRps: number;
  sloAttainment: number;
  /** Goodput ÷ the same policy's goodput without the failure (first seed). */
  vsHealthy: number;
  ttftP90Ms: number;
  failed: number;
  retries: number;
  shed: number;
  hitRate: number;
}

export interface KneeResult {
  reference: string;
  /** The lowest rate scale found at which the reference's TTFT p90 exceeds the SLO. */
  scale: number;
  p90Ms: number;
  /** The highest scale tried below it that met the SLO (null if even the lowest tried missed). */
  below: { scale: number; p90Ms: number } | null;
  tried: { scale: number; p90Ms: number; sloAttainment: number }[];
  /** False when the reference met the SLO at every scale tried (the comparison then runs at the highest). */
  found: boolean;
}

export interface CompareCharts {
  /** TTFT quantile curves, first seed. */
  ttft: { policy: string; percentiles: number[]; ms: number[] }[];
  /** Busy share per replica over time, first seed. */
  /** Per replica over time, first seed: busy share and mean requests running or waiting. */
  replicaLoad: { policy: string; bucketMs: number; replicas: string[]; pools: string[]; busy: number[][]; outstanding: number[][] }[];
  /** Token hit rate per timeline bucket, first seed. */
  hitRate: { policy: string; bucketMs: number; values: number[]; arrivals: number[] }[];
  ceilings: { globalLru: number; infinite: number } | null;
}

export interface CompareResult {
  what: {
    candidate: string;
    baselines: string[];
    workload: string;
    requests: number;
    /** Offered request rate at rate scale 1, requests/s. */
    baseRatePerS: number;
    rateScale: number;
    offeredRps: number;
    /** Arrival span at the compared rate, s. */
    spanS: number;
    fleet: string;
    fleetName: string;
    replicas: number;
    seeds: number[];
    slo: { ttftMs: number; tpotMs: number };
    scenarios: { name: ScenarioName; description: string }[];
    skippedScenarios: { name: ScenarioName; reason: string }[];
    capacityLoads: number[];
    runs: number;
    runner: string;
    backend: string;
    node: string;
    machine: string;
    wallMs: number;
    command?: string;
  };
  knee: KneeResult | null;
  policies: PolicyStats[];
  versus: Versus[];
  scenarios: ScenarioRun[];
  capacity: {
    target: number;
    loads: number[];
    /** Per policy, SLO attainment and goodput at each load (first seed). */
    curves: { policy: string; attainment: number[]; goodputRps: number[]; ttftP90Ms: number[] }[];
    capacity: PolicyCapacity[];
  } | null;
  /** Against the strongest baseline (highest mean goodput, then lowest TTFT p90). */
  verdict: Verdict & { baseline: string };
  charts: CompareCharts;
}

// ---------------------------------------------------------------- verdict rules

/**
 * Thresholds of the verdict. A gain counts when goodput is no worse in any seed (beyond noise) and
 * either goodput rises on average or TTFT p90 falls in every seed; risk grows with the load a single
 * replica picks up and with losses under failures relative to the baseline under the same failure.
 */
const RULES = {
  /** Goodput changes smaller than this are noise (a fraction). */
  goodputNoise: 0.005,
  /** Mean goodput gain that counts as better. */
  goodputGain: 0.01,
  /** TTFT p90 ratio at or below which (in every seed) the candidate is better on latency. */
  ttftBetter: 0.9,
  /** … at or above which (in every seed, with no goodput gain) it is worse. */
  ttftWorse: 1.1,
  /** Worst replica's extra busy time, as a share of an average replica's: medium / high risk. */
  replicaMedium: 0.2,
  replicaHigh: 0.5,
  /** Goodput under a failure, candidate ÷ baseline: below these, medium / high risk. */
  scenarioMedium: 0.97,
  scenarioHigh: 0.9,
  /** Share of placements moved above which a deploy reshuffles most caches (medium risk). */
  movedMedium: 0.5,
} as const;

function judge(candidate: string, baseline: string, gain: Versus['gain'], blast: Versus['blast'], scenarios: Versus['scenarios']): Verdict {
  const reasons: string[] = [];
  const g = gain.goodput;
  const q = gain.ttftP90Ratio;
  const noWorse = g.min >= -RULES.goodputNoise;
  let verdictGain: Verdict['gain'] = 'unclear';
  if (noWorse && (g.mean >= RULES.goodputGain || q.max <= RULES.ttftBetter)) verdictGain = 'better';
  else if (g.max < -RULES.goodputNoise || g.mean <= -RULES.goodputGain || (q.min >= RULES.ttftWorse && g.mean < RULES.goodputGain)) verdictGain = 'worse';
  reasons.push(`goodput ${spreadPct(g)} over ${g.values.length} seed${g.values.length === 1 ? '' : 's'}; TTFT p90 ${times(q.mean)}${q.values.length > 1 ? ` (${times(q.min)} … ${times(q.max)})` : ''}`);

  let risk: Verdict['risk'] = 'low';
  const raise = (to: Verdict['risk'], why: string) => {
    reasons.push(why);
    if (to === 'high' || (to === 'medium' && risk === 'low')) risk = to;
  };
  const w = blast.worstReplica;
  if (w.busyIncrease > RULES.replicaHigh) raise('high', `replica ${w.id} takes ${signedPct(w.busyIncrease, 0)} of an average replica's busy time`);
  else if (w.busyIncrease > RULES.replicaMedium) raise('medium', `replica ${w.id} takes ${signedPct(w.busyIncrease, 0)} of an average replica's busy time`);
  for (const s of scenarios) {
    if (!Number.isFinite(s.ratio)) continue;
    if (s.ratio < RULES.scenarioHigh) raise('high', `under ${s.scenario} goodput is ${times(s.ratio)} the baseline's`);
    else if (s.ratio < RULES.scenarioMedium) raise('medium', `under ${s.scenario} goodput is ${times(s.ratio)} the baseline's`);
  }
  if (blast.placementsMoved.mean > RULES.movedMedium) raise('medium', `${pct(blast.placementsMoved.mean, 0)} of requests change replica (caches re-warm after a deploy)`);

  const decision: Decision = verdictGain === 'worse' ? 'reject' : verdictGain === 'unclear' ? 'hold' : risk === 'low' ? 'deploy' : risk === 'medium' ? 'canary' : 'hold';
  const worstScenario = scenarios.filter((s) => Number.isFinite(s.ratio)).sort((a, b) => a.ratio - b.ratio)[0];
  const riskParts = [`${pct(blast.placementsMoved.mean, 0)} of placements move`, `worst replica ${signedPct(w.busyIncrease, 0)} busy`];
  if (worstScenario) riskParts.push(`worst failure ${worstScenario.scenario} ${times(worstScenario.ratio)} baseline`);
  const line =
    `${decision.toUpperCase()} ${candidate} over ${baseline}: gain ${verdictGain} (goodput ${spreadPct(g)}, TTFT p90 ${times(q.mean)}), ` +
    `risk ${risk} (${riskParts.join(', ')})`;
  return { decision, gain: verdictGain, risk, line, reasons };
}

// ---------------------------------------------------------------- scenarios

function scenarioFailures(name: ScenarioName, o: CompareOptions, fleet: readonly PoolConfig[], spanMs: number): { failures: FailureScenario[]; description: string } | { skip: string } {
  const so = o.scenarioOptions ?? {};
  const atMs = Math.round(spanMs * (so.atFraction ?? 1 / 3));
  const detect = so.detectAfterMs ?? 2000;
  const at = `${(atMs / 1000).toFixed(0)} s`;
  const poolIds = fleet.filter((p) => p.replicas > 0).map((p, i) => p.id ?? `pool-${i}`);
  switch (name) {
    case 'replica-loss': {
      const first = fleet.find((p) => p.replicas > 0)!;
      return { failures: [{ kind: 'replica-loss', atMs, replica: 0, detectAfterMs: detect }], description: `replica ${first.id ?? 'pool-0'}/0 dies at ${at}, the router learns ${detect / 1000} s later` };
    }
    case 'pool-loss': {
      if (poolIds.length < 2) return { skip: 'one pool only: losing it leaves nothing to compare' };
      const pool = so.pool ?? poolIds[0];
      if (!poolIds.includes(pool)) fail('DYSTRO_ERR_INVALID_CONFIG', 'scenarioOptions.pool', `one of ${poolIds.join(', ')}`, pool);
      const n = fleet.find((p) => p.id === pool)!.replicas;
      return { failures: [{ kind: 'pool-loss', atMs, pool, detectAfterMs: detect }], description: `pool ${pool} (${n} replicas) dies at ${at}, the router learns ${detect / 1000} s later` };
    }
    case 'cache-flush':
      return { failures: [{ kind: 'cache-flush', atMs }], description: `every replica's prefix cache is flushed at ${at}` };
    case 'event-delay': {
      const delay = so.eventDelayMs ?? 5000;
      const dur = Math.round(spanMs * (so.durationFraction ?? 1 / 3));
      return { failures: [{ kind: 'event-delay', atMs, durationMs: dur, delayMs: delay }], description: `KV events reach the router ${delay / 1000} s late from ${at} for ${(dur / 1000).toFixed(0)} s` };
    }
  }
}

// ---------------------------------------------------------------- knee

const DEFAULT_KNEE_GRID = [1, 1.5, 2, 3, 4, 6, 8, 12, 16, 24, 32];

const r2 = (x: number) => Math.round(x * 100) / 100;

async function findKnee(o: CompareOptions, runner: SimRunner, fleet: PoolConfig[], slo: { ttftMs: number; tpotMs: number }, seed: number): Promise<KneeResult> {
  const ref = o.knee?.reference ?? 'round-robin';
  const grid = [...(o.knee?.grid ?? DEFAULT_KNEE_GRID)].sort((a, b) => a - b);
  if (grid.length === 0 || grid.some((g) => !(g > 0) || !Number.isFinite(g))) fail('DYSTRO_ERR_INVALID_CONFIG', 'knee.grid', 'rate scales > 0', grid);
  const refine = o.knee?.refine ?? 2;
  const tried: KneeResult['tried'] = [];
  const batch = Math.max(1, runner.threads);
  let runs = 0;
  const tryScales = async (scales: number[]) => {
    const jobs: SimJob[] = scales.map((s) => ({ ...o.sim, fleet, workload: specAt(o.workload, s, seed), policy: policyConfig(ref), seed, slo, ceilings: false }));
    const results = await runAll(runner, jobs, (f) => o.onProgress?.(f, runs, runs + jobs.length, `knee search (${policyLabel(ref)} at ×${scales.join(', ×')})`));
    runs += jobs.length;
    results.forEach((r, k) => tried.push({ scale: scales[k], p90Ms: r.ttftMs.p90, sloAttainment: r.sloAttainment }));
    return results.map((r) => r.ttftMs.p90);
  };
  let lo: { scale: number; p90Ms: number } | null = null;
  let hi: { scale: number; p90Ms: number } | null = null;
  for (let i = 0; i < grid.length && !hi; i += batch) {
    const scales = grid.slice(i, i + batch);
    const p90 = await tryScales(scales);
    for (let k = 0; k < scales.length; k++) {
      if (p90[k] > slo.ttftMs) {
        hi = { scale: scales[k], p90Ms: p90[k] };
        break;
      }
      lo = { scale: scales[k], p90Ms: p90[k] };
    }
  }
  if (!hi) {
    const last = tried[tried.length - 1];
    return { reference: policyLabel(ref), scale: last.scale, p90Ms: last.p90Ms, below: null, tried, found: false };
  }
  // Missed already at the lowest scale: halve until it meets (at most 4 times).
  for (let k = 0; k < 4 && !lo; k++) {
    const s = r2(hi.scale / 2);
    const [p] = await tryScales([s]);
    if (p > slo.ttftMs) hi = { scale: s, p90Ms: p };
    else lo = { scale: s, p90Ms: p };
  }
  // Refine: interior points spaced geometrically, as many per round as the runner runs at once.
  for (let round = 0; round < refine && lo; round++) {
    const from: number = lo.scale;
    const to: number = hi.scale;
    const ratio: number = to / from;
    const points: number[] = Array.from({ length: batch }, (_, k) => r2(from * ratio ** ((k + 1) / (batch + 1)))).filter((s, k, a) => s > from && s < to && a.indexOf(s) === k);
    if (points.length === 0) break;
    const p90 = await tryScales(points);
    for (let k = 0; k < points.length; k++) {
      if (p90[k] > slo.ttftMs) {
        hi = { scale: points[k], p90Ms: p90[k] };
        break;
      }
      lo = { scale: points[k], p90Ms: p90[k] };
    }
  }
  return { reference: policyLabel(ref), scale: hi.scale, p90Ms: hi.p90Ms, below: lo, tried, found: true };
}

// ---------------------------------------------------------------- compare

function statsOf(label: string, runs: SimResult[], summaries: RunSummary[]): PolicyStats {
  const f = (g: (s: RunSummary) => number) => spread(summaries.map(g));
  const first = runs[0];
  return {
    policy: label,
    runs: summaries,
    goodputRps: f((s) => s.goodputRps),
    sloAttainment: f((s) => s.sloAttainment),
    ttftP50: f((s) => s.ttftMs.p50),
    ttftP90: f((s) => s.ttftMs.p90),
    ttftP99: f((s) => s.ttftMs.p99),
    tpotP90: f((s) => s.tpotMs.p90),
    hitRate: f((s) => s.hitRate),
    hitOfLru: f((s) => (s.ceilings && s.ceilings.globalLru > 0 ? s.hitRate / s.ceilings.globalLru : NaN)),
    skewRequests: f((s) => s.skew.requests),
    skewBusy: f((s) => s.skew.busy),
    perReplica: first.perReplica.map((r) => ({ id: r.id, pool: r.pool, requests: r.requests, busyS: r.busyS })),
    poolShare: poolShares(first),
    skewWithinPools: spread(runs.map(skewWithinPools)),
  };
}

function skewWithinPools(r: SimResult): number {
  const byPool = new Map<string, number[]>();
  for (const x of r.perReplica) (byPool.get(x.pool) ?? byPool.set(x.pool, []).get(x.pool)!).push(x.requests);
  return Math.max(...[...byPool.values()].map(maxOverMean));
}

function poolShares(r: SimResult): Record<string, number> {
  const out: Record<string, number> = {};
  let total = 0;
  for (const x of r.perReplica) {
    out[x.pool] = (out[x.pool] ?? 0) + x.requests;
    total += x.requests;
  }
  for (const k of Object.keys(out)) out[k] = total ? out[k] / total : 0;
  return out;
}

function placementsMoved(a: readonly number[] | undefined, b: readonly number[] | undefined): number {
  if (!a || !b || a.length !== b.length) return NaN;
  let moved = 0;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) moved++;
  return a.length ? moved / a.length : 0;
}

function peakLoad(r: SimResult): number {
  let peak = 0;
  for (const row of r.timeline.replicas?.outstanding ?? []) for (const v of row) if (v > peak) peak = v;
  return peak;
}

export async function compare(o: CompareOptions): Promise<CompareResult> {
  const t0 = performance.now();
  if (!o || typeof o !== 'object') fail('DYSTRO_ERR_INVALID_CONFIG', 'compare options', 'an object', o);
  if (!Array.isArray(o.baselines) || o.baselines.length === 0) fail('DYSTRO_ERR_INVALID_CONFIG', 'baselines', 'at least one baseline policy', o.baselines);
  const seeds = [...(o.seeds ?? [1, 2])];
  if (seeds.length === 0 || seeds.some((s) => !Number.isInteger(s)) || new Set(seeds).size !== seeds.length) fail('DYSTRO_ERR_INVALID_CONFIG', 'seeds', 'distinct integers, at least one', seeds);
  const slo = o.slo ?? { ttftMs: 2000, tpotMs: 100 };
  const fleet = [...o.fleet];
  const refs = [o.candidate, ...o.baselines];
  const labels = refs.map(policyLabel);
  if (new Set(labels).size !== labels.length) {
    // The same policy twice (baseline = candidate is a legitimate control run): keep the labels apart.
    labels.forEach((l, i) => {
      if (labels.indexOf(l) !== i) labels[i] = `${l} (baseline ${i})`;
    });
  }
  for (const p of refs) checkJob({ ...o.sim, fleet, workload: o.workload, policy: policyConfig(p), slo });
  const scenarioNames = [...(o.scenarios ?? SCENARIO_NAMES)];
  for (const s of scenarioNames) if (!SCENARIO_NAMES.includes(s)) fail('DYSTRO_ERR_INVALID_CONFIG', 'scenarios', `names from ${SCENARIO_NAMES.join(', ')}`, s);
  const capacityFactors = o.capacity ? [...o.capacity].sort((a, b) => a - b) : [];
  if (capacityFactors.some((c) => !(c > 0) || !Number.isFinite(c))) fail('DYSTRO_ERR_INVALID_CONFIG', 'capacity', 'load multiples > 0', o.capacity);
  const target = o.attainmentTarget ?? 0.9;
  const base = baseRate(o.workload);
  const runner = o.runner ?? new SimRunner({ threads: o.threads });
  let totalRuns = 0;
  try {
    // 1. The load: given, or the knee of the reference policy.
    let knee: KneeResult | null = null;
    let scale: number;
    if (o.rateScale === 'knee') {
      knee = await findKnee(o, runner, fleet, slo, seeds[0]);
      totalRuns += knee.tried.length;
      scale = knee.scale;
    } else {
      scale = o.rateScale ?? 1;
      if (!(scale > 0) || !Number.isFinite(scale)) fail('DYSTRO_ERR_INVALID_CONFIG', 'rateScale', "a number > 0 or 'knee'", o.rateScale);
    }
    const spanMs = (base.spanS * 1000) / scale;

    // 2. Every other run at once: policies × seeds, scenarios × policies, capacity loads × policies.
    const jobs: SimJob[] = [];
    const mainIdx: number[][] = refs.map(() => []);
    refs.forEach((p, i) => {
      for (const seed of seeds) {
        mainIdx[i].push(jobs.length);
        // The ceilings do not depend on the policy: the candidate's runs compute them for every seed.
        jobs.push({ ...o.sim, fleet, workload: specAt(o.workload, scale, seed), policy: policyConfig(p), seed, slo, recordPlacements: true, detail: true, ceilings: i === 0 ? 'inline' : false });
      }
    });
    const scenarios: { name: ScenarioName; description: string; failures: FailureScenario[] }[] = [];
    const skipped: { name: ScenarioName; reason: string }[] = [];
    for (const name of scenarioNames) {
      const s = scenarioFailures(name, o, fleet, spanMs);
      if ('skip' in s) skipped.push({ name, reason: s.skip });
      else scenarios.push({ name, ...s });
    }
    const scenarioIdx: number[][] = scenarios.map(() => []);
    scenarios.forEach((s, k) => {
      refs.forEach((p) => {
        scenarioIdx[k].push(jobs.length);
        jobs.push({ ...o.sim, fleet, workload: specAt(o.workload, scale, seeds[0]), policy: policyConfig(p), seed: seeds[0], slo, failures: s.failures, ceilings: false });
      });
    });
    const capacityIdx: number[][] = refs.map(() => []);
    refs.forEach((p, i) => {
      for (const f of capacityFactors) {
        if (f === 1) {
          capacityIdx[i].push(mainIdx[i][0]);
          continue;
        }
        capacityIdx[i].push(jobs.length);
        jobs.push({ ...o.sim, fleet, workload: specAt(o.workload, scale * f, seeds[0]), policy: policyConfig(p), seed: seeds[0], slo, ceilings: false });
      }
    });
    const results = await runAll(runner, jobs, (f, d, t) => o.onProgress?.(f, d, t, 'runs'));
    totalRuns += jobs.length;

    // 3. Figures.
    const mainRuns = mainIdx.map((idx) => idx.map((k) => results[k]));
    const ceilingsBySeed = mainRuns[0].map((r) => r.prefix.ceilings);
    const summaries = mainRuns.map((runs, i) =>
      runs.map((r, s) => {
        const sum = summarize(r, scale, base.ratePerS * scale, labels[i]);
        const c = ceilingsBySeed[s];
        if (!sum.ceilings && c) sum.ceilings = { globalLru: c.globalLru, infinite: c.infinite };
        return sum;
      }),
    );
    const policies = mainRuns.map((runs, i) => statsOf(labels[i], runs, summaries[i]));
    const scenarioRuns: ScenarioRun[] = [];
    scenarios.forEach((s, k) => {
      refs.forEach((_, i) => {
        const r = results[scenarioIdx[k][i]];
        const healthy = mainRuns[i][0].goodputRps;
        scenarioRuns.push({
          scenario: s.name,
          description: s.description,
          policy: labels[i],
          goodputRps: r.goodputRps,
          sloAttainment: r.sloAttainment,
          vsHealthy: healthy > 0 ? r.goodputRps / healthy : NaN,
          ttftP90Ms: r.ttftMs.p90,
          failed: r.requests.failed,
          retries: r.requests.retries,
          shed: r.requests.shed,
          hitRate: r.prefix.hitRate,
        });
      });
    });
    const cand = mainRuns[0];
    const versus: Versus[] = refs.slice(1).map((_, b) => {
      const bi = b + 1;
      const baseRuns = mainRuns[bi];
      const ratio = (x: number, y: number) => (y > 0 ? x / y : NaN);
      const gain = {
        goodput: spread(seeds.map((_, s) => ratio(cand[s].goodputRps, baseRuns[s].goodputRps) - 1)),
        ttftP90Ratio: spread(seeds.map((_, s) => ratio(cand[s].ttftMs.p90, baseRuns[s].ttftMs.p90))),
        hitRateDelta: spread(seeds.map((_, s) => cand[s].prefix.hitRate - baseRuns[s].prefix.hitRate)),
      };
      let worst = { id: '', pool: '', busyIncrease: -Infinity, requestsIncrease: 0, seed: seeds[0] };
      seeds.forEach((seed, s) => {
        const cb = cand[s].perReplica;
        const bb = baseRuns[s].perReplica;
        const meanBusy = bb.reduce((a, r) => a + r.busyS, 0) / Math.max(1, bb.length);
        const meanReq = bb.reduce((a, r) => a + r.requests, 0) / Math.max(1, bb.length);
        cb.forEach((r, j) => {
          const inc = meanBusy > 0 ? (r.busyS - bb[j].busyS) / meanBusy : 0;
          if (inc > worst.busyIncrease) worst = { id: r.id, pool: r.pool, busyIncrease: inc, requestsIncrease: meanReq > 0 ? (r.requests - bb[j].requests) / meanReq : 0, seed };
        });
      });
      const blast = {
        placementsMoved: spread(seeds.map((_, s) => placementsMoved(cand[s].placements, baseRuns[s].placements))),
        worstReplica: worst,
        peakLoad: { candidate: peakLoad(cand[0]), baseline: peakLoad(baseRuns[0]) },
      };
      const sc = scenarios.map((s, k) => {
        const c = results[scenarioIdx[k][0]].goodputRps;
        const bgp = results[scenarioIdx[k][bi]].goodputRps;
        return { scenario: s.name, candidateGoodputRps: c, baselineGoodputRps: bgp, ratio: bgp > 0 ? c / bgp : NaN };
      });
      return { baseline: labels[bi], gain, blast, scenarios: sc, verdict: judge(labels[0], labels[bi], gain, blast, sc) };
    });
    // The strongest baseline: highest mean goodput, then lowest mean TTFT p90.
    const strongest = versus
      .map((v, b) => ({ v, p: policies[b + 1] }))
      .sort((a, b) => b.p.goodputRps.mean - a.p.goodputRps.mean || a.p.ttftP90.mean - b.p.ttftP90.mean)[0];
    let capacity: CompareResult['capacity'] = null;
    if (capacityFactors.length > 0) {
      const loads = capacityFactors.map((f) => r2(scale * f));
      const curves = refs.map((_, i) => {
        const rs = capacityIdx[i].map((k) => results[k]);
        return { policy: labels[i], attainment: rs.map((r) => r.sloAttainment), goodputRps: rs.map((r) => r.goodputRps), ttftP90Ms: rs.map((r) => r.ttftMs.p90) };
      });
      capacity = {
        target,
        loads,
        curves,
        capacity: curves.map((c) => {
          const x = capacityOf(loads, c.attainment, target);
          return { policy: c.policy, load: x.load, rps: x.load * base.ratePerS, bound: x.bound };
        }),
      };
    }
    const charts: CompareCharts = {
      ttft: mainRuns.map((runs, i) => ({ policy: labels[i], percentiles: runs[0].ttftCurve?.percentiles ?? [], ms: runs[0].ttftCurve?.ms ?? [] })),
      replicaLoad: mainRuns.map((runs, i) => ({
        policy: labels[i],
        bucketMs: runs[0].timeline.bucketMs,
        replicas: runs[0].perReplica.map((r) => r.id),
        pools: runs[0].perReplica.map((r) => r.pool),
        busy: runs[0].timeline.replicas?.busy ?? [],
        outstanding: runs[0].timeline.replicas?.outstanding ?? [],
      })),
      hitRate: mainRuns.map((runs, i) => ({ policy: labels[i], bucketMs: runs[0].timeline.bucketMs, values: runs[0].timeline.buckets.map((b) => b.hitRate), arrivals: runs[0].timeline.buckets.map((b) => b.arrivals) })),
      ceilings: ceilingsBySeed[0] ? { globalLru: ceilingsBySeed[0].globalLru, infinite: ceilingsBySeed[0].infinite } : null,
    };
    const cpu = cpus();
    return {
      what: {
        candidate: labels[0],
        baselines: labels.slice(1),
        workload: base.name,
        requests: base.requests,
        baseRatePerS: base.ratePerS,
        rateScale: scale,
        offeredRps: base.ratePerS * scale,
        spanS: spanMs / 1000,
        fleet: describeFleet(fleet),
        fleetName: o.fleetName ?? 'fleet',
        replicas: fleet.reduce((a, p) => a + p.replicas, 0),
        seeds,
        slo,
        scenarios: scenarios.map((s) => ({ name: s.name, description: s.description })),
        skippedScenarios: skipped,
        capacityLoads: capacity?.loads ?? [],
        runs: totalRuns,
        runner: runner.describe(),
        backend: cand[0].backend,
        node: process.version,
        machine: `${availableParallelism()} CPUs (${cpu[0]?.model?.trim() ?? 'unknown'})`,
        wallMs: Math.round(performance.now() - t0),
        command: o.command,
      },
      knee,
      policies,
      versus,
      scenarios: scenarioRuns,
      capacity,
      verdict: { ...strongest.v.verdict, baseline: strongest.v.baseline },
      charts,
    };
  } finally {
    if (!o.runner) await runner.close();
  }
}

// ---------------------------------------------------------------- text and Markdown

/** The baseline with the highest capacity (a lower bound counts at its value). */
export function bestCapacity(caps: readonly PolicyCapacity[]): PolicyCapacity | undefined {
  return [...caps].sort((a, b) => b.rps - a.rps)[0];
}

/**
 * A capacity ÷ another, honest about bounds: "≥ 1.4×" when only the numerator is a lower bound,
 * "≤ 0.8×" when only the denominator is, "—" when both are lower bounds of the same sweep.
 */
export function capacityRatio(x: PolicyCapacity, best: PolicyCapacity | undefined): string {
  if (!best || !(best.rps > 0)) return '—';
  const r = x.rps / best.rps;
  const xLow = x.bound === 'at-least';
  const bLow = best.bound === 'at-least';
  const xHigh = x.bound === 'below';
  const bHigh = best.bound === 'below';
  if ((xLow && bLow) || (xHigh && bHigh)) return x === best ? '1.00×' : '—';
  if (xLow || bHigh) return `≥ ${times(r)}`;
  if (bLow || xHigh) return `≤ ${times(r)}`;
  return times(r);
}

/** The report as a terminal table (text) or Markdown. */
export function renderCompare(r: CompareResult, format: 'text' | 'markdown' = 'text'): string {
  const md = format === 'markdown';
  const table = md ? markdownTable : textTable;
  const w = r.what;
  const out: string[] = [];
  const h = (title: string) => out.push(md ? `\n### ${title}\n` : `\n${title}`);
  const para = (s: string) => out.push(md ? `\n${s}` : s);
  /** A list: Markdown bullets as one block, or indented lines. */
  const list = (items: readonly string[]) => {
    if (items.length === 0) return;
    out.push(md ? `\n${items.map((x) => `- ${x}`).join('\n')}` : items.map((x) => `  ${x}`).join('\n'));
  };
  const range = (s: Spread, f: (x: number) => string) => (s.values.length > 1 ? `${f(s.mean)} (${f(s.min)} … ${f(s.max)})` : f(s.mean));
  if (md) out.push(`## dystro compare: ${w.candidate} against ${w.baselines.join(', ')}\n`);
  else out.push(`dystro compare: ${w.candidate} (candidate) against ${w.baselines.join(', ')}`);
  const load = r.knee
    ? r.knee.found
      ? `×${r.knee.scale} — the lowest load found at which ${r.knee.reference}'s TTFT p90 misses the ${w.slo.ttftMs} ms SLO (${ms(r.knee.p90Ms)}${r.knee.below ? `; ${ms(r.knee.below.p90Ms)} at ×${r.knee.below.scale}` : ''})`
      : `×${r.knee.scale} — ${r.knee.reference} met the TTFT SLO at every load tried (up to ×${r.knee.scale}); compared there`
    : `×${w.rateScale}`;
  const lines = [
    `workload: ${w.workload}, ${w.requests} requests, offered ${num(w.offeredRps)} req/s (${num(w.baseRatePerS)} req/s at ×1) over ${num(w.spanS, 0)} s; load ${load}`,
    `fleet: ${w.fleet} (${w.fleetName}, ${w.replicas} replicas); seeds ${w.seeds.join(', ')}; SLO TTFT ${w.slo.ttftMs} ms and TPOT ${w.slo.tpotMs} ms`,
    `ran ${w.runs} simulations on ${w.runner}, ${w.backend} kernels, Node ${w.node}, ${w.machine}, in ${(w.wallMs / 1000).toFixed(1)} s`,
  ];
  if (w.command) lines.push(`command: ${w.command}`);
  if (md) list(lines);
  else out.push(...lines);

  h(`Policies (mean over seeds${w.seeds.length > 1 ? ', range in parentheses' : ''})`);
  const multiPool = Object.keys(r.policies[0]?.poolShare ?? {}).length > 1;
  const pr = r.policies.map((p) => [
    p.policy + (p.policy === w.candidate ? ' *' : ''),
    range(p.goodputRps, (x) => num(x)),
    pct(p.sloAttainment.mean),
    ms(p.ttftP50.mean),
    range(p.ttftP90, ms),
    ms(p.ttftP99.mean),
    ms(p.tpotP90.mean),
    pct(p.hitRate.mean),
    pct(p.hitOfLru.mean, 0),
    `${num(p.skewRequests.mean)} / ${num(p.skewBusy.mean)}`,
    ...(multiPool ? [Object.entries(p.poolShare).map(([k, x]) => `${k} ${pct(x, 0)}`).join(' · ')] : []),
  ]);
  out.push(table(['policy', 'goodput req/s', 'SLO met', 'TTFT p50', 'TTFT p90', 'TTFT p99', 'TPOT p90', 'hit rate', '÷ LRU ceiling', 'skew req / busy', ...(multiPool ? ['requests by pool'] : [])], pr));
  const c = r.charts.ceilings;
  if (c) para(`hit-rate ceilings (seed ${w.seeds[0]}): global LRU of the fleet's KV ${pct(c.globalLru)}, infinite cache ${pct(c.infinite)}; * = candidate`);

  h(`${w.candidate} against each baseline: gain and blast radius`);
  const vr = r.versus.map((v) => [
    v.baseline,
    spreadPct(v.gain.goodput),
    range(v.gain.ttftP90Ratio, (x) => times(x)),
    signedPct(v.gain.hitRateDelta.mean).replace('%', ' pt'),
    pct(v.blast.placementsMoved.mean, 0),
    `${v.blast.worstReplica.id} ${signedPct(v.blast.worstReplica.busyIncrease, 0)}`,
    `${num(v.blast.peakLoad.candidate, 1)} / ${num(v.blast.peakLoad.baseline, 1)}`,
    `${v.verdict.decision.toUpperCase()} (${v.verdict.gain}, risk ${v.verdict.risk})`,
  ]);
  out.push(table(['baseline', 'goodput gain', 'TTFT p90 ×', 'hit rate', 'placements moved', 'worst replica (busy)', 'peak queue cand / base', 'verdict'], vr));

  if (r.scenarios.length > 0) {
    h(`Failure scenarios (seed ${w.seeds[0]}): goodput req/s (× the same policy without the failure), failed requests`);
    const names = [...new Set(r.scenarios.map((s) => s.scenario))];
    const rows = names.map((n) => {
      const runs = r.scenarios.filter((s) => s.scenario === n);
      return [n, ...r.policies.map((p) => {
        const s = runs.find((x) => x.policy === p.policy)!;
        return `${num(s.goodputRps)} (${times(s.vsHealthy)}) ${s.failed} failed`;
      })];
    });
    out.push(table(['scenario', ...r.policies.map((p) => p.policy)], rows));
    list(names.map((n) => `${n}: ${r.scenarios.find((s) => s.scenario === n)!.description}`));
  }
  list(w.skippedScenarios.map((s) => `${s.name} skipped: ${s.reason}`));

  if (r.capacity) {
    const cap = r.capacity;
    h(`Capacity: highest load with ≥ ${pct(cap.target, 0)} of requests within both SLOs (seed ${w.seeds[0]}; loads ×${cap.loads.join(', ×')})`);
    const best = bestCapacity(cap.capacity.slice(1));
    const rows = cap.capacity.map((x, i) => [
      x.policy,
      x.bound === 'below' ? `< ×${x.load}` : x.bound === 'at-least' ? `≥ ×${x.load}` : `×${x.load.toFixed(2)}`,
      (x.bound === 'below' ? '< ' : x.bound === 'at-least' ? '≥ ' : '') + num(x.rps),
      capacityRatio(x, best),
      cap.curves[i].attainment.map((a) => pct(a, 0)).join(' '),
    ]);
    out.push(table(['policy', 'load', 'req/s', '÷ best baseline', 'SLO met at each load'], rows));
  }

  h('Verdict');
  para(`verdict: ${r.verdict.line}${r.versus.length > 1 ? ` — ${r.verdict.baseline} is the strongest baseline` : ''}`);
  return out.join('\n') + '\n';
}
