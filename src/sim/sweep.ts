/**
 * Many simulations at once (DESIGN §2: "the worker pool takes … simulation sweeps"): a runner that
 * spreads jobs over a piscina pool of worker threads — each job is one `simulate` call described by
 * plain data (`SimJob`), run by sweep-worker.ts — or runs them in this thread (`threads: 0`), and the
 * sweep itself: policies × load levels (rate scales), with each policy's capacity at an SLO attainment
 * target (DistServe's goodput: the highest request rate at which ≥ 90% of requests meet both SLOs).
 *
 * A simulation is CPU-bound and single-threaded, so the pool has at most one thread per core
 * (os.availableParallelism()); on a 2-core machine two runs go side by side. Progress of the runs in
 * flight comes back from the workers through a MessagePort per job.
 */
import { availableParallelism } from 'node:os';
import { MessageChannel } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import { fail } from '../errors.js';
import { Simulation, type FailureScenario, type PoolConfig, type SimConfig, type SimResult } from './sim.js';
import { describeWorkload, workloadFromSpec, type Workload, type WorkloadSpec } from './workloads.js';
import { describeFleet } from './fleet-config.js';
import { markdownTable, num, pct, policyConfig, policyLabel, ms, summarize, textTable, type PolicyRef, type RunSummary } from './summary.js';

/**
 * One simulation as plain data (structured-clonable): the fleet without custom step models and the
 * workload as a spec, so it can run in a worker thread.
 */
export type SimJob = Omit<SimConfig, 'workload' | 'kernels' | 'onProgress' | 'fleet' | 'failures'> & {
  fleet: PoolConfig[];
  workload: WorkloadSpec;
  failures?: FailureScenario[];
};

/** Options a report passes to every run (everything of SimConfig that is not the experiment itself). */
export type SimExtras = Pick<SimConfig, 'events' | 'load' | 'router' | 'admission' | 'blockSize' | 'backend' | 'tickMs' | 'knownOutputLength' | 'maxRetries' | 'timelineBucketMs' | 'fastForward'>;

export type JobProgress = (done: number, total: number) => void;

export interface RunnerOptions {
  /** Worker threads; 0 runs every job in the calling thread, one after another (default: one per core). */
  threads?: number;
}

const WORKER_FILE = fileURLToPath(new URL(`./sweep-worker${import.meta.url.endsWith('.ts') ? '.ts' : '.js'}`, import.meta.url));

/** Runs SimJobs: in a piscina pool, or inline. */
export class SimRunner {
  readonly threads: number;
  private pool: Piscina | null = null;
  private chain: Promise<unknown> = Promise.resolve();

  constructor(options: RunnerOptions = {}) {
    const t = options.threads ?? availableParallelism();
    if (!Number.isInteger(t) || t < 0 || t > 256) fail('DYSTRO_ERR_INVALID_CONFIG', 'threads', 'an integer in 0 … 256', t);
    this.threads = t;
  }

  /** Where jobs run, for reports: "2 worker threads" or "inline". */
  describe(): string {
    return this.threads === 0 ? 'inline (this thread)' : `${this.threads} worker thread${this.threads === 1 ? '' : 's'} (piscina)`;
  }

  run(job: SimJob, onProgress?: JobProgress): Promise<SimResult> {
    if (this.threads === 0) {
      // One at a time, each after the event loop turns, so a progress bar can draw between runs.
      const p = this.chain.then(() => new Promise<SimResult>((resolve, reject) => setImmediate(() => {
        try {
          resolve(new Simulation({ ...job, onProgress }).run());
        } catch (e) {
          reject(e);
        }
      })));
      this.chain = p.catch(() => undefined);
      return p;
    }
    this.pool ??= new Piscina({ filename: WORKER_FILE, minThreads: 0, maxThreads: this.threads, idleTimeout: 2000, concurrentTasksPerWorker: 1 });
    if (!onProgress) return this.pool.run({ job }) as Promise<SimResult>;
    const { port1, port2 } = new MessageChannel();
    port1.on('message', (m: [number, number]) => onProgress(m[0], m[1]));
    return (this.pool.run({ job, port: port2 }, { transferList: [port2] }) as Promise<SimResult>).finally(() => port1.close());
  }

  async close(): Promise<void> {
    const pool = this.pool;
    this.pool = null;
    if (pool) await pool.destroy();
  }
}

/**
 * Checks a job in this thread before it is sent anywhere (a policy name typo fails at once, with the
 * registry's typed error, not as a worker's rejection minutes later): builds the router and engines for
 * an empty workload.
 */
export function checkJob(job: SimJob): void {
  const empty: Workload = { name: 'check', requests: [], prompt: () => new Uint32Array(0) };
  new Simulation({ ...job, workload: empty, ceilings: false });
}

/** Runs jobs through a runner with one progress figure over all of them (0 … 1: finished runs and the share done of runs in flight). */
export async function runAll(runner: SimRunner, jobs: readonly SimJob[], onProgress?: (fraction: number, runsDone: number, runsTotal: number) => void): Promise<SimResult[]> {
  const partial = new Float64Array(jobs.length);
  let done = 0;
  const report = () => {
    if (!onProgress) return;
    let sum = 0;
    for (const p of partial) sum += p;
    onProgress(jobs.length ? sum / jobs.length : 1, done, jobs.length);
  };
  report();
  return Promise.all(
    jobs.map((job, k) =>
      runner
        .run(job, (d, t) => {
          partial[k] = t > 0 ? Math.min(0.999, d / t) : 0;
          report();
        })
        .then((r) => {
          partial[k] = 1;
          done++;
          report();
          return r;
        }),
    ),
  );
}

/** A workload spec at a rate scale (composed with any scale the spec already has) and seed. */
export function specAt(spec: WorkloadSpec, rateScale: number, seed?: number): WorkloadSpec {
  const base = spec.rateScale ?? 1;
  const out = { ...spec, rateScale: base * rateScale } as WorkloadSpec;
  if (seed !== undefined) (out as { seed?: number }).seed = seed;
  return out;
}

/** The request rate a spec offers at rate scale 1 (loads the workload once in this thread). */
export function baseRate(spec: WorkloadSpec): { ratePerS: number; requests: number; spanS: number; name: string } {
  const w = workloadFromSpec(spec);
  const d = describeWorkload(w);
  return { ratePerS: d.ratePerS, requests: d.requests, spanS: d.spanS, name: w.name };
}

// ---------------------------------------------------------------- sweep

export interface SweepOptions {
  policies: readonly PolicyRef[];
  /** Load levels as rate scales of the workload (1 = its own arrivals; 2 = twice the rate). */
  loads: readonly number[];
  workload: WorkloadSpec;
  fleet: readonly PoolConfig[];
  fleetName?: string;
  /** Seeds; each point runs once per seed (default [1]). */
  seeds?: readonly number[];
  slo?: { ttftMs: number; tpotMs: number };
  sim?: SimExtras;
  /** SLO attainment a load level must reach to count toward a policy's capacity (default 0.9). */
  attainmentTarget?: number;
  runner?: SimRunner;
  threads?: number;
  onProgress?: (fraction: number, runsDone: number, runsTotal: number) => void;
}

export interface SweepPoint {
  policy: string;
  load: number;
  seed: number;
  summary: RunSummary;
}

export interface PolicyCapacity {
  policy: string;
  /** Highest rate scale meeting the attainment target (interpolated between the grid points around it). */
  load: number;
  /** The same as requests/s. */
  rps: number;
  /** 'interpolated', 'at-least' (met at every load swept: a lower bound), 'below' (missed at the lowest load: an upper bound). */
  bound: 'interpolated' | 'at-least' | 'below';
}

export interface SweepResult {
  what: {
    workload: string;
    requests: number;
    baseRatePerS: number;
    fleet: string;
    fleetName: string;
    replicas: number;
    policies: string[];
    loads: number[];
    seeds: number[];
    slo: { ttftMs: number; tpotMs: number };
    attainmentTarget: number;
    runs: number;
    runner: string;
    wallMs: number;
  };
  points: SweepPoint[];
  capacity: PolicyCapacity[];
}

/** Mean SLO attainment over seeds, per policy and load. */
function meanBy(points: readonly SweepPoint[], policy: string, load: number, f: (s: RunSummary) => number): number {
  const xs = points.filter((p) => p.policy === policy && p.load === load).map((p) => f(p.summary));
  return xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
}

/**
 * The highest load meeting `target`: scanning the sorted loads up to the first miss, interpolating
 * linearly in attainment between the last load that met it and the first that did not.
 */
export function capacityOf(loads: readonly number[], attainment: readonly number[], target: number): { load: number; bound: PolicyCapacity['bound'] } {
  const order = loads.map((l, i) => [l, attainment[i]] as const).sort((a, b) => a[0] - b[0]);
  if (order.length === 0) return { load: NaN, bound: 'below' };
  if (order[0][1] < target) return { load: order[0][0], bound: 'below' };
  for (let i = 1; i < order.length; i++) {
    const [l1, a1] = order[i];
    if (a1 < target) {
      const [l0, a0] = order[i - 1];
      const f = a0 === a1 ? 0 : (a0 - target) / (a0 - a1);
      return { load: l0 + f * (l1 - l0), bound: 'interpolated' };
    }
  }
  return { load: order[order.length - 1][0], bound: 'at-least' };
}

export async function sweep(o: SweepOptions): Promise<SweepResult> {
  const t0 = performance.now();
  if (!Array.isArray(o.policies) || o.policies.length === 0) fail('DYSTRO_ERR_INVALID_CONFIG', 'policies', 'a non-empty list', o.policies);
  if (!Array.isArray(o.loads) || o.loads.length === 0 || o.loads.some((l) => !(l > 0) || !Number.isFinite(l))) fail('DYSTRO_ERR_INVALID_CONFIG', 'loads', 'a non-empty list of rate scales > 0', o.loads);
  const seeds = o.seeds ?? [1];
  const slo = o.slo ?? { ttftMs: 2000, tpotMs: 100 };
  const target = o.attainmentTarget ?? 0.9;
  const base = baseRate(o.workload);
  const fleet = [...o.fleet];
  const jobs: SimJob[] = [];
  const keys: { policy: string; load: number; seed: number }[] = [];
  for (const p of o.policies) {
    checkJob({ ...o.sim, fleet, workload: o.workload, policy: policyConfig(p), slo });
    for (const load of o.loads) {
      for (const seed of seeds) {
        jobs.push({ ...o.sim, fleet, workload: specAt(o.workload, load, seed), policy: policyConfig(p), seed, slo, ceilings: 'inline' });
        keys.push({ policy: policyLabel(p), load, seed });
      }
    }
  }
  const runner = o.runner ?? new SimRunner({ threads: o.threads });
  let results: SimResult[];
  try {
    results = await runAll(runner, jobs, o.onProgress);
  } finally {
    if (!o.runner) await runner.close();
  }
  const points = results.map((r, k) => ({ ...keys[k], summary: summarize(r, keys[k].load, base.ratePerS * keys[k].load, keys[k].policy) }));
  const labels = o.policies.map(policyLabel);
  const loads = [...o.loads].sort((a, b) => a - b);
  const capacity = labels.map((policy) => {
    const c = capacityOf(loads, loads.map((l) => meanBy(points, policy, l, (s) => s.sloAttainment)), target);
    return { policy, load: c.load, rps: c.load * base.ratePerS, bound: c.bound };
  });
  return {
    what: {
      workload: base.name,
      requests: base.requests,
      baseRatePerS: base.ratePerS,
      fleet: describeFleet(fleet),
      fleetName: o.fleetName ?? 'fleet',
      replicas: fleet.reduce((a, p) => a + p.replicas, 0),
      policies: labels,
      loads,
      seeds: [...seeds],
      slo,
      attainmentTarget: target,
      runs: jobs.length,
      runner: runner.describe(),
      wallMs: Math.round(performance.now() - t0),
    },
    points,
    capacity,
  };
}

/** The sweep as text (format 'text') or Markdown: one row per policy and load, then capacities. */
export function renderSweep(r: SweepResult, format: 'text' | 'markdown' = 'text'): string {
  const w = r.what;
  const table = format === 'markdown' ? markdownTable : textTable;
  const headers = ['policy', 'load', 'offered req/s', 'goodput req/s', 'SLO met', 'TTFT p50', 'TTFT p90', 'TTFT p99', 'TPOT p90', 'hit rate', 'skew (busy)'];
  const rows: string[][] = [];
  for (const policy of w.policies) {
    for (const load of w.loads) {
      const m = (f: (s: RunSummary) => number) => meanBy(r.points, policy, load, f);
      rows.push([policy, `×${load}`, num(m((s) => s.offeredRps)), num(m((s) => s.goodputRps)), pct(m((s) => s.sloAttainment)), ms(m((s) => s.ttftMs.p50)), ms(m((s) => s.ttftMs.p90)), ms(m((s) => s.ttftMs.p99)), ms(m((s) => s.tpotMs.p90)), pct(m((s) => s.hitRate)), num(m((s) => s.skew.busy))]);
    }
  }
  const capRows = r.capacity.map((c) => [c.policy, c.bound === 'below' ? `< ×${c.load}` : c.bound === 'at-least' ? `≥ ×${c.load}` : `×${c.load.toFixed(2)}`, c.bound === 'below' ? `< ${num(c.rps)}` : c.bound === 'at-least' ? `≥ ${num(c.rps)}` : num(c.rps)]);
  const head = `sweep: ${w.workload}, ${w.requests} requests (${num(w.baseRatePerS)} req/s at ×1) on ${w.fleet} (${w.replicas} replicas, ${w.fleetName}); seeds ${w.seeds.join(', ')}; SLO TTFT ${w.slo.ttftMs} ms, TPOT ${w.slo.tpotMs} ms; ${w.runs} runs on ${w.runner} in ${(w.wallMs / 1000).toFixed(1)} s`;
  const capHead = `capacity at ≥ ${pct(w.attainmentTarget, 0)} SLO attainment (goodput as DistServe defines it):`;
  if (format === 'markdown') return `${head}\n\n${table(headers, rows)}\n\n${capHead}\n\n${table(['policy', 'load', 'req/s'], capRows)}\n`;
  return `${head}\n\n${table(headers, rows)}\n\n${capHead}\n${table(['policy', 'load', 'req/s'], capRows)}\n`;
}
