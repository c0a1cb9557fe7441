/**
 * The discrete-event fleet simulator (DESIGN §6): simulated engines (engine.ts) behind the real Router,
 * on a FakeClock the router reads, so every decision runs the production code path — hashing, index
 * match, policy, admission, tickets — against engines whose caches and queues evolve as vLLM's do.
 *
 * Determinism: events run in (time, insertion) order from one heap; every random draw comes from a
 * seeded generator (the router's own, the workload's, and the simulator's for event loss). A queued
 * decision's `ready` promise is resolved inside router calls (a ticket's onEnd, tick()), but promise
 * reactions would only run after the synchronous loop yields, at a moment that depends on nothing
 * simulated; so the loop does not wait on them. It watches decisions through `router.onDecision`: a
 * routed decision for a request the simulator holds as queued is that request leaving the queue
 * (admission resolves a waiter exactly with the routed decision its retry returned). Queue timeouts are
 * mirrored: after `router.tick()` at time t, every request queued with a deadline ≤ t was shed
 * (admission sheds by the same rule on the same clock). Dispatches found inside router calls are
 * buffered and run after the event that caused them, never re-entrantly.
 *
 * Failures: a replica (or a whole pool) dies at a time — its requests without a first token are
 * retried through the router, those mid-stream fail — and the router learns of it after a detection
 * delay (remove, or mark unhealthy); a cache flush (CLEAR); a window in which KV events are delayed.
 */
import { FakeClock } from '../clock.js';
import { createRng, type Rng } from '../rng.js';
import { fail } from '../errors.js';
import { createRouter, type Router, type RouterOptions } from '../router/router.js';
import type { Decision, PolicyParams, RoutedDecision, RouteRequest, Ticket } from '../router/types.js';
import type { SloClassSpec } from '../router/admission.js';
import type { PoolSpec, ReplicaSpec } from '../fleet/fleet.js';
import { PrefixHasher } from '../hashing/prefix.js';
import { loadKernelsSync, type BackendChoice } from '../kernels/select.js';
import type { KernelBackend } from '../kernels/abi.js';
import { engineModel } from '../model/roofline.js';
import { RECORD_WORDS } from '../index/records.js';
import { EventQueue } from './event-queue.js';
import { EngineRequest, SimEngine, rooflineStepModel, type EngineListener, type StepModel } from './engine.js';
import { LatencyHistogram, NanosHistogram, maxOverMean, type Percentiles } from './metrics.js';
import { HitCeilings, ThreadedCeilings, type CeilingResult, type CeilingSink } from './ceilings.js';
import { workloadFromSpec, type Workload, type WorkloadSpec } from './workloads.js';

// ---------------------------------------------------------------- configuration

export interface PoolConfig {
  /** Pool id (default from the accelerator and TP, e.g. "h100-tp1"). */
  id?: string;
  /** Accelerator kind known to the roofline model (H100, H200, A100, B200, TPU v5e, …). */
  accelerator: string;
  /** Tensor-parallel degree (default 1). */
  tensorParallel?: number;
  /** Model name known to the roofline model (llama-3-8b, llama-3-70b). */
  model: string;
  replicas: number;
  /** KV capacity per replica in blocks (default: the roofline model's kvCapacityTokens / blockSize). */
  kvCapacityBlocks?: number;
  /** Chunked-prefill token budget per step (default 2,048). */
  maxBatchedTokens?: number;
  /** Most running requests per engine (default 256). */
  maxNumSeqs?: number;
  /** Replaces the roofline step model (tests use constant step times). */
  stepModel?: StepModel;
}

export type FailureScenario =
  /** One replica dies at atMs; the router learns after detectAfterMs (default 0) by remove or health. */
  | { kind: 'replica-loss'; atMs: number; replica: string | number; detectAfterMs?: number; action?: 'remove' | 'unhealthy' }
  /** Every replica of a pool dies at atMs. */
  | { kind: 'pool-loss'; atMs: number; pool: string; detectAfterMs?: number; action?: 'remove' | 'unhealthy' }
  /** The engines' prefix caches are reset (vLLM reset_prefix_cache → AllBlocksCleared); all replicas unless one is named. */
  | { kind: 'cache-flush'; atMs: number; replica?: string | number }
  /** KV events emitted in [atMs, atMs + durationMs) take delayMs longer to reach the router. */
  | { kind: 'event-delay'; atMs: number; durationMs: number; delayMs: number };

export interface SimConfig {
  /** Accelerator pools; every pool serves the model the workload asks for (default: the first pool's). */
  fleet: readonly PoolConfig[] | { pools: readonly PoolConfig[] };
  /** A workload, or its spec as plain data ({ kind: 'mooncake', rateScale: 2 }, …). */
  workload: Workload | WorkloadSpec;
  /** Policy name or { name, params } (default predicted-ttft). */
  policy?: string | { name: string; params?: PolicyParams };
  /** Seeds the router's draws and the simulator's (default 1). */
  seed?: number;
  /** Kernel backend (default auto), or loaded kernels. */
  backend?: BackendChoice;
  kernels?: KernelBackend;
  /** Tokens per prefix block for the router and the engines (default 16, as vLLM). */
  blockSize?: number;
  /** Targets for goodput and SLO attainment (default TTFT 2,000 ms, TPOT 100 ms). */
  slo?: { ttftMs: number; tpotMs: number };
  /** The router's SLO classes (admission: queueing and shedding). Default: the router's (never sheds). */
  admission?: readonly SloClassSpec[];
  /** KV event delivery to the router: delay ms (default 0), loss probability per batch (default 0), batching window ms (default 0: one batch per engine step). */
  events?: { delayMs?: number; lossProbability?: number; batchMs?: number };
  /** Load reports: every intervalMs (default 50, GIE's scrape interval), delivered stalenessMs later (default 0). */
  load?: { intervalMs?: number; stalenessMs?: number };
  /** router.tick() period while requests wait in the router's queue, ms (default 50). */
  tickMs?: number;
  failures?: readonly FailureScenario[];
  /** Retries of a request whose replica failed before its first token (default 2), as a proxy retries before the first byte. */
  maxRetries?: number;
  /** Pass each request's true output length to the router as expectedOutputTokens (default true). */
  knownOutputLength?: boolean;
  /** Extra router options (sampleCandidates, speculative, index, poolRates, …). */
  router?: Partial<Omit<RouterOptions, 'pools' | 'replicas' | 'clock' | 'kernels' | 'backend' | 'seed' | 'policy' | 'blockSize' | 'sloClasses'>>;
  /** Width of the timeline buckets, ms (default 10,000). */
  timelineBucketMs?: number;
  /** Time the simulator's parts with performance.now() (adds overhead; default false). */
  profile?: boolean;
  /** Keep each request's final replica in the result (`placements`; for compare's "placements moved"). */
  recordPlacements?: boolean;
  /**
   * Keep what a report draws (compare's HTML): per replica and timeline bucket the engine's busy share
   * and its mean outstanding requests, sampled with the load reports, and the TTFT quantile curve
   * (default false: a sweep of many runs does not need them).
   */
  detail?: boolean;
  /** Called with (requests ended, total) about every 1% of the workload and once at the end (progress bars). */
  onProgress?: (done: number, total: number) => void;
  /** Simulate runs of pure-decode steps as one event (default true; see EngineOptions.fastForward). */
  fastForward?: boolean;
  /**
   * The offline hit-rate ceilings: computed inline, in a worker thread, not at all (false; they do not
   * depend on the policy, so a sweep needs them once), or `auto` (default: a worker thread when the
   * workload holds more than 16 M prompt tokens, where they cost seconds).
   */
  ceilings?: boolean | 'auto' | 'inline' | 'thread';
}

// ---------------------------------------------------------------- results

export interface ReplicaResult {
  id: string;
  pool: string;
  requests: number;
  busyS: number;
  hitRate: number;
  preemptions: number;
  evictions: number;
  steps: number;
  alive: boolean;
}

/** Per timeline bucket (outer index) and replica (inner index, as perReplica), with `detail`. */
export interface ReplicaTimeline {
  /** Share of the load samples in the bucket at which the replica's engine was stepping (0 … 1). */
  busy: number[][];
  /** Mean requests running or waiting in the replica's engine over the bucket's load samples. */
  outstanding: number[][];
}

/** The TTFT distribution as a quantile curve (with `detail`): ms[k] is the percentiles[k]-th percentile. */
export interface QuantileCurve {
  percentiles: number[];
  ms: number[];
}

/** Percentiles of the TTFT curve: dense in the tail, where policies differ. */
const CURVE_PERCENTILES = [...Array.from({ length: 50 }, (_, k) => 2 * k), 98, 99, 99.5, 99.9, 100];

export interface TimelineBucket {
  startMs: number;
  arrivals: number;
  completed: number;
  shed: number;
  failed: number;
  /** Mean TTFT of the requests that got their first token in the bucket, ms. */
  ttftMeanMs: number;
  /** Token hit rate of the requests admitted in the bucket. */
  hitRate: number;
}

/** Everything a run measured. All of it except `perf` is a pure function of the configuration. */
export interface SimResult {
  policy: string;
  backend: string;
  seed: number;
  workload: string;
  replicas: number;
  requests: {
    total: number;
    completed: number;
    shed: number;
    failed: number;
    /** Requests that waited in the router's queue. */
    queued: number;
    retries: number;
    shedReasons: Record<string, number>;
  };
  /** First arrival to last completion, s of simulated time. */
  makespanS: number;
  slo: { ttftMs: number; tpotMs: number };
  /** Requests/s that met both the TTFT and TPOT SLO. */
  goodputRps: number;
  /** Share of all requests that completed within both SLOs. */
  sloAttainment: number;
  throughput: { requestsPerS: number; inputTokensPerS: number; outputTokensPerS: number };
  ttftMs: Percentiles;
  tpotMs: Percentiles;
  e2eMs: Percentiles;
  /** Time queued requests spent in the router's queue. */
  queueWaitMs: Percentiles;
  prefix: {
    /** Prompt tokens served from the engines' caches / prompt tokens, completed requests. */
    hitRate: number;
    hitTokens: number;
    promptTokens: number;
    /** Share of prompt tokens the router expected to hit (its index's view at decision time). */
    expectedHitRate: number;
    /** Offline ceilings (null when `ceilings: false`). */
    ceilings: CeilingResult | null;
  };
  skew: {
    /** max / mean of requests dispatched per replica. */
    requests: number;
    /** max / mean of engine busy time per replica. */
    busy: number;
  };
  perReplica: ReplicaResult[];
  engine: { steps: number; preemptions: number; evictions: number; storedBlocks: number };
  events: {
    kvBatches: number;
    kvBatchesLost: number;
    kvBatchesDropped: number;
    kvRecordsApplied: number;
    loadReports: number;
    simEvents: number;
  };
  timeline: { bucketMs: number; buckets: TimelineBucket[]; replicas?: ReplicaTimeline };
  /** TTFT quantile curve (with `detail`). */
  ttftCurve?: QuantileCurve;
  /** Per request (workload order): index into perReplica of the replica that served it, −1 if shed or failed. */
  placements?: number[];
  /** Wall-clock measurements: the only part that differs between identical runs. */
  perf: {
    wallMs: number;
    /** Process CPU time during the run (all threads: the ceilings worker too; steadier than wall time on a shared machine). */
    cpuMs: number;
    eventsPerS: number;
    /** The router's decision time (route() as called by the simulator), µs. */
    decisionUs: { count: number; p50: number; p99: number; mean: number };
    /** Wall ms per part when `profile` is on. */
    breakdownMs?: Record<string, number>;
  };
}

// ---------------------------------------------------------------- internals

const EV_ARRIVAL = 0;
const EV_STEP_END = 1;
const EV_KV_DELIVER = 2;
const EV_LOAD_SAMPLE = 3;
const EV_LOAD_DELIVER = 4;
const EV_TICK = 5;
const EV_FAILURE = 6;
const EV_DETECT = 7;
const EV_KV_FLUSH = 8;

type ReqState = 'pending' | 'queued' | 'routed' | 'done' | 'shed' | 'failed';

interface SimReq {
  readonly i: number;
  readonly arrivalMs: number;
  readonly inputTokens: number;
  readonly outputTokens: number;
  state: ReqState;
  retries: number;
  /** Chained block hashes as (lo, hi) pairs: the prompt's, then any known output's. */
  hashes: Uint32Array | null;
  hashBlocks: number;
  ticket: Ticket | null;
  engineIdx: number;
  engineReq: EngineRequest | null;
  routeReq: RouteRequest | null;
  queuedAtMs: number;
  deadlineMs: number;
  firstTokenMs: number;
  expectedCached: number;
}

interface KvBatch {
  engineIdx: number;
  slot: number;
  replicaId: string;
  records: Uint32Array;
}

interface TimelineAcc {
  arrivals: number;
  completed: number;
  shed: number;
  failed: number;
  ttftSum: number;
  ttftN: number;
  hit: number;
  prompt: number;
}

const now = () => performance.now();

export class Simulation {
  readonly clock = new FakeClock(0);
  readonly router: Router;
  readonly engines: SimEngine[] = [];
  readonly kernels: KernelBackend;
  private readonly engineIndex = new Map<string, number>();
  private readonly enginePool: string[] = [];
  private readonly q = new EventQueue();
  private readonly rng: Rng;
  private readonly hasher: PrefixHasher;
  private readonly nsSeeds = new Map<string, bigint>();
  private readonly reqs: SimReq[];
  private readonly workload: Workload;
  private readonly model: string;
  private readonly blockSize: number;
  private readonly slo: { ttftMs: number; tpotMs: number };
  private readonly knownOutput: boolean;
  private readonly maxRetries: number;
  private readonly tickMs: number;
  private readonly loadIntervalMs: number;
  private readonly loadStalenessMs: number;
  private readonly kvDelayMs: number;
  private readonly kvLoss: number;
  private readonly kvBatchMs: number;
  private readonly failures: readonly FailureScenario[];
  private readonly profile: boolean;
  private readonly bucketMs: number;
  private readonly seed: number;
  private readonly recordPlacements: boolean;
  private readonly detail: boolean;
  private readonly onProgress: ((done: number, total: number) => void) | null;
  /** With `detail`: per bucket, load samples taken, and per replica busy samples and outstanding sums. */
  private readonly detailSamples: number[] = [];
  private readonly detailBusy: Float64Array[] = [];
  private readonly detailOutstanding: Float64Array[] = [];

  // Driver state.
  private nextArrival = 0;
  private active = 0;
  private tickPending = false;
  private readonly queued = new Map<RouteRequest, SimReq>();
  private readonly pendingDispatch: { sr: SimReq; d: RoutedDecision }[] = [];
  private readonly pendingRetry: SimReq[] = [];
  private readonly kvPending: (Uint32Array[] | null)[] = [];
  private readonly kvFlushPending: boolean[] = [];
  private readonly kvLastDeliveryMs: number[] = [];
  /** The current STEP_END event of each engine (older ones were superseded). */
  private readonly stepEpoch: number[] = [];
  private readonly eventDelayWindows: { from: number; to: number; delayMs: number }[] = [];
  private readonly listener: EngineListener;

  // Measurements.
  private readonly ceilings: CeilingSink | null;
  private readonly ttft = new LatencyHistogram();
  private readonly tpot = new LatencyHistogram();
  private readonly e2e = new LatencyHistogram();
  private readonly queueWait = new LatencyHistogram();
  private readonly decisionNs = new NanosHistogram();
  private readonly perReplicaRequests: number[] = [];
  private readonly perReplicaHit: number[] = [];
  private readonly perReplicaPrompt: number[] = [];
  private readonly timeline: TimelineAcc[] = [];
  private completed = 0;
  private shed = 0;
  private failed = 0;
  private queuedCount = 0;
  private retries = 0;
  private good = 0;
  private readonly shedReasons: Record<string, number> = {};
  private hitTokens = 0;
  private promptTokens = 0;
  private expectedTokens = 0;
  private routedPromptTokens = 0;
  private inputTokensDone = 0;
  private outputTokensDone = 0;
  private firstArrivalMs = Infinity;
  private lastEndMs = 0;
  private kvBatches = 0;
  private kvLost = 0;
  private kvDropped = 0;
  private kvApplied = 0;
  private loadReports = 0;
  private readonly breakdown: Record<string, number> = {};

  constructor(config: SimConfig) {
    if (config === null || typeof config !== 'object') fail('DYSTRO_ERR_INVALID_CONFIG', 'config', 'an object { fleet, workload, … }', config);
    const pools = Array.isArray(config.fleet) ? config.fleet : (config.fleet as { pools: readonly PoolConfig[] } | undefined)?.pools;
    if (!Array.isArray(pools) || pools.length === 0) fail('DYSTRO_ERR_INVALID_CONFIG', 'config.fleet', 'a non-empty array of pools', config.fleet);
    const given = config.workload as Workload | WorkloadSpec | undefined;
    const w = given && typeof given === 'object' && 'kind' in given ? workloadFromSpec(given) : (given as Workload);
    if (!w || !Array.isArray(w.requests) || typeof w.prompt !== 'function') fail('DYSTRO_ERR_INVALID_CONFIG', 'config.workload', 'a Workload { requests, prompt(i) } or a WorkloadSpec { kind, … }', w);
    this.workload = w;
    this.seed = config.seed ?? 1;
    if (!Number.isInteger(this.seed)) fail('DYSTRO_ERR_INVALID_CONFIG', 'config.seed', 'an integer', config.seed);
    this.rng = createRng((this.seed ^ 0x5eed5eed) | 0);
    this.blockSize = config.blockSize ?? 16;
    this.slo = config.slo ?? { ttftMs: 2000, tpotMs: 100 };
    this.knownOutput = config.knownOutputLength ?? true;
    this.maxRetries = config.maxRetries ?? 2;
    this.tickMs = positive('config.tickMs', config.tickMs ?? 50);
    this.loadIntervalMs = positive('config.load.intervalMs', config.load?.intervalMs ?? 50);
    this.loadStalenessMs = nonNegative('config.load.stalenessMs', config.load?.stalenessMs ?? 0);
    this.kvDelayMs = nonNegative('config.events.delayMs', config.events?.delayMs ?? 0);
    this.kvLoss = config.events?.lossProbability ?? 0;
    if (!(this.kvLoss >= 0 && this.kvLoss <= 1)) fail('DYSTRO_ERR_INVALID_CONFIG', 'config.events.lossProbability', 'a probability in 0 … 1', this.kvLoss);
    this.kvBatchMs = nonNegative('config.events.batchMs', config.events?.batchMs ?? 0);
    this.failures = config.failures ?? [];
    this.profile = config.profile ?? false;
    this.recordPlacements = config.recordPlacements ?? false;
    this.detail = config.detail ?? false;
    this.onProgress = typeof config.onProgress === 'function' ? config.onProgress : null;
    this.bucketMs = positive('config.timelineBucketMs', config.timelineBucketMs ?? 10_000);
    this.kernels = config.kernels ?? loadKernelsSync({ backend: config.backend }).kernels;

    // Fleet: pools for the router, one engine per replica.
    const poolSpecs: PoolSpec[] = [];
    const replicaSpecs: ReplicaSpec[] = [];
    const engineSpecs: { id: string; pool: string; kvBlocks: number; step: StepModel; maxBatchedTokens?: number; maxNumSeqs?: number }[] = [];
    const usedIds = new Set<string>();
    pools.forEach((p, pi) => {
      if (p === null || typeof p !== 'object') fail('DYSTRO_ERR_INVALID_CONFIG', `fleet[${pi}]`, 'a pool { accelerator, model, replicas }', p);
      const tp = p.tensorParallel ?? 1;
      if (!Number.isInteger(p.replicas) || p.replicas < 0) fail('DYSTRO_ERR_INVALID_CONFIG', `fleet[${pi}].replicas`, 'an integer ≥ 0', p.replicas);
      let id = p.id ?? `${String(p.accelerator).toLowerCase().replace(/\s+/g, '')}-tp${tp}`;
      if (usedIds.has(id)) id = `${id}-${pi}`;
      usedIds.add(id);
      const needModel = p.stepModel === undefined || p.kvCapacityBlocks === undefined;
      const em = needModel ? engineModel(p.model, p.accelerator, tp) : null;
      const kvBlocks = p.kvCapacityBlocks ?? Math.floor(em!.kvCapacityTokens() / this.blockSize);
      poolSpecs.push({ id, accelerator: p.accelerator, tensorParallel: tp, model: p.model, kvCapacityBlocks: kvBlocks, maxContextTokens: kvBlocks * this.blockSize });
      const step = p.stepModel ?? rooflineStepModel(em!);
      for (let k = 0; k < p.replicas; k++) {
        const rid = `${id}/${k}`;
        replicaSpecs.push({ id: rid, pool: id, address: `sim://${rid}` });
        engineSpecs.push({ id: rid, pool: id, kvBlocks, step, maxBatchedTokens: p.maxBatchedTokens, maxNumSeqs: p.maxNumSeqs });
      }
    });
    if (engineSpecs.length === 0) fail('DYSTRO_ERR_INVALID_CONFIG', 'config.fleet', 'at least one replica', 0);
    this.model = poolSpecs[0].model;
    const policy = config.policy ?? 'predicted-ttft';
    this.router = createRouter({
      ...(config.router ?? {}),
      pools: poolSpecs,
      replicas: replicaSpecs,
      policy: typeof policy === 'string' ? policy : { name: policy.name, params: policy.params },
      kernels: this.kernels,
      blockSize: this.blockSize,
      sloClasses: config.admission,
      seed: this.seed,
      clock: this.clock,
      capacity: Math.max(config.router?.capacity ?? 0, replicaSpecs.length + 16),
    });
    this.hasher = new PrefixHasher(this.kernels, { blockSize: this.blockSize });
    let totalBlocks = 0;
    engineSpecs.forEach((s, idx) => {
      const slot = this.router.fleet.replica(s.id).slot;
      this.engines.push(new SimEngine({ id: s.id, slot, blockSize: this.blockSize, kvBlocks: s.kvBlocks, stepModel: s.step, maxBatchedTokens: s.maxBatchedTokens, maxNumSeqs: s.maxNumSeqs, fastForward: config.fastForward }));
      this.engineIndex.set(s.id, idx);
      this.enginePool.push(s.pool);
      this.perReplicaRequests.push(0);
      this.perReplicaHit.push(0);
      this.perReplicaPrompt.push(0);
      this.kvPending.push(null);
      this.kvFlushPending.push(false);
      this.kvLastDeliveryMs.push(0);
      this.stepEpoch.push(0);
      totalBlocks += s.kvBlocks;
    });
    const ceil = config.ceilings ?? 'auto';
    let promptTotal = 0;
    for (const r of w.requests) promptTotal += r.inputTokens;
    const threaded = ceil === 'thread' || (ceil === 'auto' && promptTotal > 16_000_000);
    this.ceilings = ceil === false ? null : threaded ? new ThreadedCeilings(this.blockSize, totalBlocks) : new HitCeilings(this.blockSize, totalBlocks);
    this.reqs = w.requests.map((r, i) => ({
      i,
      arrivalMs: r.arrivalMs,
      inputTokens: r.inputTokens,
      outputTokens: Math.max(1, r.outputTokens),
      state: 'pending' as ReqState,
      retries: 0,
      hashes: null,
      hashBlocks: 0,
      ticket: null,
      engineIdx: -1,
      engineReq: null,
      routeReq: null,
      queuedAtMs: NaN,
      deadlineMs: Infinity,
      firstTokenMs: NaN,
      expectedCached: 0,
    }));
    for (let i = 1; i < this.reqs.length; i++) {
      if (!(this.reqs[i].arrivalMs >= this.reqs[i - 1].arrivalMs)) fail('DYSTRO_ERR_INVALID_CONFIG', `workload.requests[${i}].arrivalMs`, 'sorted arrival times', this.reqs[i].arrivalMs);
    }
    this.listener = {
      firstToken: (r, t) => this.onFirstToken(r, t),
      finished: (r, t) => this.onFinished(r, t),
    };
    // A routed decision for a request we hold as queued is that request leaving the router's queue.
    this.router.onDecision((ctx, d) => {
      if (d.kind !== 'route' || this.queued.size === 0) return;
      const sr = this.queued.get(ctx.request);
      if (!sr) return;
      this.queued.delete(ctx.request);
      this.pendingDispatch.push({ sr, d });
    });
  }

  // ------------------------------------------------------------ run

  run(): SimResult {
    const wall0 = now();
    const cpu0 = process.cpuUsage();
    const q = this.q;
    if (this.reqs.length > 0) q.push(this.reqs[0].arrivalMs, EV_ARRIVAL, 0);
    this.failures.forEach((f, k) => {
      if (f.kind === 'event-delay') this.eventDelayWindows.push({ from: f.atMs, to: f.atMs + f.durationMs, delayMs: f.delayMs });
      else q.push(f.atMs, EV_FAILURE, k);
    });
    q.push(0, EV_LOAD_SAMPLE, 0);
    let events = 0;
    const total = this.reqs.length;
    const progressStep = Math.max(1, Math.ceil(total / 100));
    let nextProgress = progressStep;
    while (q.pop()) {
      events++;
      // Progress every 1,024 events at most (a callback per event would cost more than the check).
      if (this.onProgress && (events & 1023) === 0) {
        const ended = this.completed + this.shed + this.failed;
        if (ended >= nextProgress) {
          nextProgress = (Math.floor(ended / progressStep) + 1) * progressStep;
          this.onProgress(ended, total);
        }
      }
      const t = q.poppedTime;
      this.clock.set(t);
      switch (q.poppedKind) {
        case EV_ARRIVAL:
          this.onArrival(q.poppedArg, t);
          break;
        case EV_STEP_END:
          this.onStepEnd(q.poppedArg, t, q.poppedRef as number);
          break;
        case EV_KV_DELIVER:
          this.onKvDeliver(q.poppedRef as KvBatch);
          break;
        case EV_KV_FLUSH:
          this.kvFlushPending[q.poppedArg] = false;
          this.publish(q.poppedArg, t);
          break;
        case EV_LOAD_SAMPLE:
          this.onLoadSample(t);
          break;
        case EV_LOAD_DELIVER:
          this.onLoadDeliver(q.poppedRef as Float64Array);
          break;
        case EV_TICK:
          this.onTick(t);
          break;
        case EV_FAILURE:
          this.onFailure(q.poppedArg, t);
          break;
        case EV_DETECT:
          this.onDetect(q.poppedArg);
          break;
      }
      this.drain(t);
    }
    // Collect the ceilings now (a worker may still be finishing them), so the wall time is honest.
    this.ceilings?.result();
    this.onProgress?.(this.completed + this.shed + this.failed, total);
    const wallMs = now() - wall0;
    const cpu = process.cpuUsage(cpu0);
    return this.result(wallMs, (cpu.user + cpu.system) / 1000, events);
  }

  private get done(): boolean {
    return this.nextArrival >= this.reqs.length && this.active === 0;
  }

  private timed<T>(part: string, f: () => T): T {
    if (!this.profile) return f();
    const t0 = now();
    const r = f();
    this.breakdown[part] = (this.breakdown[part] ?? 0) + (now() - t0);
    return r;
  }

  private bucket(t: number): TimelineAcc {
    const b = Math.floor(t / this.bucketMs);
    while (this.timeline.length <= b) this.timeline.push({ arrivals: 0, completed: 0, shed: 0, failed: 0, ttftSum: 0, ttftN: 0, hit: 0, prompt: 0 });
    return this.timeline[b];
  }

  /** Runs what router calls inside the last event left behind: dispatches of dequeued requests, retries. */
  private drain(t: number): void {
    while (this.pendingDispatch.length > 0 || this.pendingRetry.length > 0) {
      if (this.pendingDispatch.length > 0) {
        const batch = this.pendingDispatch.splice(0);
        for (const { sr, d } of batch) {
          if (sr.state !== 'queued') continue;
          this.queueWait.record(t - sr.queuedAtMs);
          this.dispatch(sr, d, t);
        }
        continue;
      }
      const retry = this.pendingRetry.splice(0);
      for (const sr of retry) this.routeRequest(sr, t);
    }
  }

  // ------------------------------------------------------------ requests

  /** The router's namespace seed for (model, tenant): block 0 of the chain the engines cache under. */
  private seedOf(model: string, tenant: string): bigint {
    const k = `${model}\u0000${tenant}`;
    let s = this.nsSeeds.get(k);
    if (s === undefined) {
      s = this.hasher.namespaceSeed({ model, tenant });
      this.nsSeeds.set(k, s);
    }
    return s;
  }

  private onArrival(i: number, t: number): void {
    this.nextArrival = i + 1;
    if (this.nextArrival < this.reqs.length) this.q.push(this.reqs[this.nextArrival].arrivalMs, EV_ARRIVAL, this.nextArrival);
    const sr = this.reqs[i];
    const wr = this.workload.requests[i];
    this.active++;
    if (t < this.firstArrivalMs) this.firstArrivalMs = t;
    this.bucket(t).arrivals++;
    const prompt = this.timed('workload', () => this.workload.prompt(i));
    if (prompt.length !== sr.inputTokens) fail('DYSTRO_ERR_INVALID_CONFIG', `workload.prompt(${i}).length`, `inputTokens = ${sr.inputTokens}`, prompt.length);
    // The engines' block hashes: the router's chain over the prompt (and a known answer, which the
    // engine caches as it generates it). Hashed once here, for the engine and the ceilings.
    this.timed('hashing', () => {
      const out = this.workload.output?.(i);
      const seq = out && out.length > 0 ? concat(prompt, out) : prompt;
      const blocks = Math.floor(seq.length / this.blockSize);
      const big = new BigUint64Array(Math.max(1, blocks));
      this.hasher.hashTokens(seq, this.seedOf(wr.model ?? this.model, wr.tenant ?? ''), big);
      sr.hashes = new Uint32Array(big.buffer, 0, 2 * blocks);
      sr.hashBlocks = blocks;
    });
    if (this.ceilings) this.timed('ceilings', () => this.ceilings!.observe(sr.hashes!, sr.hashBlocks, sr.inputTokens));
    const routeReq: RouteRequest = {
      model: wr.model ?? this.model,
      prompt,
      expectedOutputTokens: this.knownOutput ? sr.outputTokens : undefined,
      sessionKey: wr.sessionKey,
      tenant: wr.tenant,
    };
    this.route(sr, routeReq, t);
  }

  /** Routes (again) a request that is not in the router's queue: retries regenerate the prompt. */
  private routeRequest(sr: SimReq, t: number): void {
    const wr = this.workload.requests[sr.i];
    const routeReq: RouteRequest = {
      model: wr.model ?? this.model,
      prompt: this.workload.prompt(sr.i),
      expectedOutputTokens: this.knownOutput ? sr.outputTokens : undefined,
      sessionKey: wr.sessionKey,
      tenant: wr.tenant,
    };
    this.route(sr, routeReq, t);
  }

  private route(sr: SimReq, routeReq: RouteRequest, t: number): void {
    const t0 = now();
    const d: Decision = this.router.route(routeReq);
    const t1 = now();
    this.decisionNs.record((t1 - t0) * 1e6);
    if (this.profile) this.breakdown.route = (this.breakdown.route ?? 0) + (t1 - t0);
    if (d.kind === 'route') this.dispatch(sr, d, t);
    else if (d.kind === 'queue') {
      sr.state = 'queued';
      sr.routeReq = routeReq;
      sr.queuedAtMs = t;
      const cls = this.router.admission.classes.find((c) => c.name === d.sloClass);
      sr.deadlineMs = t + (cls?.queueTimeoutMs ?? 10_000);
      this.queued.set(routeReq, sr);
      this.queuedCount++;
      this.scheduleTick(t);
    } else this.finishShed(sr, d.reason, t);
  }

  private finishShed(sr: SimReq, reason: string, t: number): void {
    sr.state = 'shed';
    sr.hashes = null;
    sr.routeReq = null;
    this.shed++;
    this.shedReasons[reason] = (this.shedReasons[reason] ?? 0) + 1;
    this.bucket(t).shed++;
    this.active--;
  }

  private finishFailed(sr: SimReq, t: number): void {
    sr.state = 'failed';
    sr.hashes = null;
    sr.engineReq = null;
    sr.ticket = null;
    this.failed++;
    this.bucket(t).failed++;
    this.active--;
  }

  private dispatch(sr: SimReq, d: RoutedDecision, t: number): void {
    sr.state = 'routed';
    sr.routeReq = null;
    sr.ticket = d.ticket;
    sr.expectedCached = d.cachedTokens;
    const idx = this.engineIndex.get(d.replica.id);
    const engine = idx === undefined ? undefined : this.engines[idx];
    d.ticket.onStart();
    if (!engine || !engine.alive) {
      // Connection refused: the proxy retries before the first byte.
      d.ticket.onError('connect');
      this.retryOrFail(sr, t);
      return;
    }
    if (!engine.fits(sr.inputTokens, sr.outputTokens)) {
      d.ticket.onError('http');
      this.finishFailed(sr, t);
      return;
    }
    sr.engineIdx = idx!;
    this.perReplicaRequests[idx!]++;
    const er = new EngineRequest(sr.inputTokens, sr.outputTokens, sr.hashes!, sr.hashBlocks, sr);
    sr.engineReq = er;
    engine.submit(er);
    if (engine.idle) this.startStep(idx!, t);
    else {
      // A fast-forwarded run of decodes ends after the step in progress: the new request joins the next.
      const end = engine.interrupt(t);
      if (end >= 0) this.q.push(end, EV_STEP_END, idx!, ++this.stepEpoch[idx!]);
    }
  }

  private retryOrFail(sr: SimReq, t: number): void {
    sr.ticket = null;
    sr.engineReq = null;
    if (sr.retries < this.maxRetries) {
      sr.retries++;
      this.retries++;
      sr.state = 'pending';
      this.pendingRetry.push(sr);
    } else this.finishFailed(sr, t);
  }

  // ------------------------------------------------------------ engines

  private startStep(idx: number, t: number): void {
    const e = this.engines[idx];
    const ms = this.profile ? this.timed('engine', () => e.beginStep(t)) : e.beginStep(t);
    if (ms > 0) this.q.push(t + ms, EV_STEP_END, idx, ++this.stepEpoch[idx]);
  }

  private onStepEnd(idx: number, t: number, epoch: number): void {
    if (epoch !== this.stepEpoch[idx]) return; // superseded by an interrupted run's new end
    const e = this.engines[idx];
    if (this.profile) this.timed('engine', () => e.endStep(t, this.listener));
    else e.endStep(t, this.listener);
    this.collectRecords(idx, t);
    if (e.alive && e.hasWork) this.startStep(idx, t);
  }

  private onFirstToken(er: EngineRequest, t: number): void {
    const sr = er.tag as SimReq;
    if (sr.engineReq !== er) return;
    sr.firstTokenMs = t;
    const ttft = t - sr.arrivalMs;
    this.ttft.record(ttft);
    const b = this.bucket(t);
    b.ttftSum += ttft;
    b.ttftN++;
    sr.ticket?.onFirstToken();
  }

  private onFinished(er: EngineRequest, t: number): void {
    const sr = er.tag as SimReq;
    if (sr.engineReq !== er) return;
    sr.state = 'done';
    const ttft = sr.firstTokenMs - sr.arrivalMs;
    const tpot = sr.outputTokens > 1 ? (t - sr.firstTokenMs) / (sr.outputTokens - 1) : 0;
    this.tpot.record(tpot);
    this.e2e.record(t - sr.arrivalMs);
    if (ttft <= this.slo.ttftMs && tpot <= this.slo.tpotMs) this.good++;
    this.completed++;
    const hit = Math.max(0, er.hitTokens);
    this.hitTokens += hit;
    this.promptTokens += sr.inputTokens;
    this.expectedTokens += sr.expectedCached;
    this.routedPromptTokens += sr.inputTokens;
    this.perReplicaHit[sr.engineIdx] += hit;
    this.perReplicaPrompt[sr.engineIdx] += sr.inputTokens;
    this.inputTokensDone += sr.inputTokens;
    this.outputTokensDone += er.generated;
    const b = this.bucket(t);
    b.completed++;
    const ab = this.bucket(Number.isNaN(er.admittedAtMs) ? t : er.admittedAtMs);
    ab.hit += hit;
    ab.prompt += sr.inputTokens;
    if (t > this.lastEndMs) this.lastEndMs = t;
    const ticket = sr.ticket;
    sr.hashes = null;
    sr.engineReq = null;
    sr.ticket = null;
    this.active--;
    ticket?.onEnd(er.generated);
  }

  // ------------------------------------------------------------ KV events

  private collectRecords(idx: number, t: number): void {
    const recs = this.engines[idx].takeRecords();
    if (!recs) return;
    if (this.kvBatchMs <= 0) {
      this.sendBatch(idx, recs, t);
      return;
    }
    (this.kvPending[idx] ??= []).push(recs);
    if (!this.kvFlushPending[idx]) {
      this.kvFlushPending[idx] = true;
      this.q.push(t + this.kvBatchMs, EV_KV_FLUSH, idx);
    }
  }

  private publish(idx: number, t: number): void {
    const parts = this.kvPending[idx];
    this.kvPending[idx] = null;
    if (!parts || parts.length === 0) return;
    this.sendBatch(idx, parts.length === 1 ? parts[0] : concat32(parts), t);
  }

  /** One published batch: lost with the loss probability, else delivered in order after the delay. */
  private sendBatch(idx: number, records: Uint32Array, t: number): void {
    this.kvBatches++;
    if (this.kvLoss > 0 && this.rng.float() < this.kvLoss) {
      this.kvLost++;
      return;
    }
    let delay = this.kvDelayMs;
    for (const w of this.eventDelayWindows) if (t >= w.from && t < w.to) delay += w.delayMs;
    // One subscription per engine delivers in order: a batch never overtakes an earlier one.
    const at = Math.max(t + delay, this.kvLastDeliveryMs[idx]);
    this.kvLastDeliveryMs[idx] = at;
    const e = this.engines[idx];
    const batch: KvBatch = { engineIdx: idx, slot: e.slot, replicaId: e.id, records };
    if (at <= t) this.onKvDeliver(batch);
    else this.q.push(at, EV_KV_DELIVER, idx, batch);
  }

  private onKvDeliver(b: KvBatch): void {
    // A removed replica's late events must not land on a slot that may now belong to another replica.
    const r = this.router.fleet.snapshot().byId.get(b.replicaId);
    if (!r || r.slot !== b.slot) {
      this.kvDropped++;
      return;
    }
    const count = b.records.length / RECORD_WORDS;
    if (this.profile) this.timed('indexApply', () => this.router.index.apply(b.records, count));
    else this.router.index.apply(b.records, count);
    this.kvApplied += count;
  }

  // ------------------------------------------------------------ load reports

  private onLoadSample(t: number): void {
    const n = this.engines.length;
    const snap = new Float64Array(n * 5);
    let busy: Float64Array | null = null;
    let outstanding: Float64Array | null = null;
    if (this.detail) {
      const b = Math.floor(t / this.bucketMs);
      while (this.detailSamples.length <= b) {
        this.detailSamples.push(0);
        this.detailBusy.push(new Float64Array(n));
        this.detailOutstanding.push(new Float64Array(n));
      }
      this.detailSamples[b]++;
      busy = this.detailBusy[b];
      outstanding = this.detailOutstanding[b];
    }
    for (let i = 0; i < n; i++) {
      const e = this.engines[i];
      if (!e.alive) {
        snap[i * 5] = -1;
        continue;
      }
      const r = e.loadReport();
      snap[i * 5] = 1;
      snap[i * 5 + 1] = r.running;
      snap[i * 5 + 2] = r.waiting;
      snap[i * 5 + 3] = r.prefillTokens;
      snap[i * 5 + 4] = r.kvUsage;
      if (busy && outstanding) {
        if (!e.idle) busy[i]++;
        outstanding[i] += r.running + r.waiting;
      }
    }
    if (this.loadStalenessMs > 0) this.q.push(t + this.loadStalenessMs, EV_LOAD_DELIVER, 0, snap);
    else this.onLoadDeliver(snap);
    if (!this.done) {
      this.q.push(t + this.loadIntervalMs, EV_LOAD_SAMPLE, 0);
    }
  }

  private readonly reportObj = { running: 0, waiting: 0, prefillTokens: 0, kvUsage: 0 };
  private onLoadDeliver(snap: Float64Array): void {
    const t0 = this.profile ? now() : 0;
    const byId = this.router.fleet.snapshot().byId;
    for (let i = 0; i < this.engines.length; i++) {
      if (snap[i * 5] < 0) continue;
      const id = this.engines[i].id;
      if (!byId.has(id)) continue;
      const r = this.reportObj;
      r.running = snap[i * 5 + 1];
      r.waiting = snap[i * 5 + 2];
      r.prefillTokens = snap[i * 5 + 3];
      r.kvUsage = snap[i * 5 + 4];
      this.router.updateLoad(id, r);
      this.loadReports++;
    }
    if (this.profile) this.breakdown.load = (this.breakdown.load ?? 0) + (now() - t0);
  }

  // ------------------------------------------------------------ router queue

  private scheduleTick(t: number): void {
    if (this.tickPending) return;
    this.tickPending = true;
    this.q.push(t + this.tickMs, EV_TICK, 0);
  }

  private onTick(t: number): void {
    this.tickPending = false;
    this.router.tick();
    // Mirror admission's timeout rule (same clock, same deadline): still queued and due → shed.
    for (const [routeReq, sr] of this.queued) {
      if (sr.deadlineMs <= t) {
        this.queued.delete(routeReq);
        this.finishShed(sr, 'queue-timeout', t);
      }
    }
    if (this.queued.size > 0) this.scheduleTick(t);
  }

  // ------------------------------------------------------------ failures

  private engineOf(ref: string | number): number {
    const idx = typeof ref === 'number' ? ref : this.engineIndex.get(ref);
    if (idx === undefined || !Number.isInteger(idx) || idx < 0 || idx >= this.engines.length) {
      fail('DYSTRO_ERR_INVALID_CONFIG', 'failure replica', `a replica id or index 0 … ${this.engines.length - 1}`, ref);
    }
    return idx;
  }

  private victimsOf(f: FailureScenario): number[] {
    if (f.kind === 'replica-loss') return [this.engineOf(f.replica)];
    if (f.kind === 'pool-loss') {
      const list = this.enginePool.flatMap((p, i) => (p === f.pool ? [i] : []));
      if (list.length === 0) fail('DYSTRO_ERR_INVALID_CONFIG', 'failure pool', `one of ${[...new Set(this.enginePool)].join(', ')}`, f.pool);
      return list;
    }
    if (f.kind === 'cache-flush') return f.replica === undefined ? this.engines.map((_, i) => i) : [this.engineOf(f.replica)];
    return [];
  }

  private onFailure(k: number, t: number): void {
    const f = this.failures[k];
    const victims = this.victimsOf(f);
    if (f.kind === 'cache-flush') {
      for (const idx of victims) {
        const e = this.engines[idx];
        if (!e.alive) continue;
        this.collectRecords(idx, t);
        e.flushCache();
        this.collectRecords(idx, t);
      }
      return;
    }
    if (f.kind !== 'replica-loss' && f.kind !== 'pool-loss') return;
    for (const idx of victims) {
      const e = this.engines[idx];
      if (!e.alive) continue;
      this.kvPending[idx] = null; // unpublished events die with the process
      for (const er of e.kill()) {
        const sr = er.tag as SimReq;
        if (sr.engineReq !== er) continue;
        const ticket = sr.ticket;
        if (!Number.isNaN(sr.firstTokenMs)) {
          // Mid-stream: the client sees a broken response; nothing to retry.
          ticket?.onError('engine');
          this.finishFailed(sr, t);
        } else {
          ticket?.onError('engine');
          this.retryOrFail(sr, t);
        }
      }
    }
    this.q.push(t + (f.detectAfterMs ?? 0), EV_DETECT, k);
  }

  private onDetect(k: number): void {
    const f = this.failures[k];
    if (f.kind !== 'replica-loss' && f.kind !== 'pool-loss') return;
    for (const idx of this.victimsOf(f)) {
      const id = this.engines[idx].id;
      if (!this.router.fleet.snapshot().byId.has(id)) continue;
      if ((f.action ?? 'remove') === 'remove') this.router.remove(id);
      else this.router.setHealth(id, 'unhealthy');
    }
  }

  // ------------------------------------------------------------ result

  /** Per bucket and replica: busy share and mean outstanding requests over the bucket's load samples. */
  private replicaTimeline(): ReplicaTimeline {
    const busy: number[][] = [];
    const outstanding: number[][] = [];
    const buckets = Math.max(this.timeline.length, this.detailSamples.length);
    const n = this.engines.length;
    for (let b = 0; b < buckets; b++) {
      const k = this.detailSamples[b] ?? 0;
      const bs = this.detailBusy[b];
      const os = this.detailOutstanding[b];
      busy.push(Array.from({ length: n }, (_, i) => (k && bs ? Math.round((bs[i] / k) * 1e4) / 1e4 : 0)));
      outstanding.push(Array.from({ length: n }, (_, i) => (k && os ? Math.round((os[i] / k) * 100) / 100 : 0)));
    }
    return { busy, outstanding };
  }

  private result(wallMs: number, cpuMs: number, events: number): SimResult {
    const makespanS = this.completed > 0 ? (this.lastEndMs - this.firstArrivalMs) / 1000 : 0;
    let steps = 0;
    let preemptions = 0;
    let evictions = 0;
    let stored = 0;
    const perReplica: ReplicaResult[] = this.engines.map((e, i) => {
      steps += e.stats.steps;
      preemptions += e.stats.preemptions;
      evictions += e.stats.evictions;
      stored += e.stats.stored;
      return {
        id: e.id,
        pool: this.enginePool[i],
        requests: this.perReplicaRequests[i],
        busyS: round6(e.stats.busyMs / 1000),
        hitRate: this.perReplicaPrompt[i] ? this.perReplicaHit[i] / this.perReplicaPrompt[i] : 0,
        preemptions: e.stats.preemptions,
        evictions: e.stats.evictions,
        steps: e.stats.steps,
        alive: e.alive,
      };
    });
    const total = this.reqs.length;
    const perS = (x: number) => (makespanS > 0 ? x / makespanS : 0);
    const breakdownMs = this.profile ? Object.fromEntries(Object.entries(this.breakdown).map(([k, v]) => [k, Math.round(v)])) : undefined;
    return {
      policy: this.router.policyId,
      backend: this.kernels.name,
      seed: this.seed,
      workload: this.workload.name,
      replicas: this.engines.length,
      requests: { total, completed: this.completed, shed: this.shed, failed: this.failed, queued: this.queuedCount, retries: this.retries, shedReasons: { ...this.shedReasons } },
      makespanS: round6(makespanS),
      slo: { ...this.slo },
      goodputRps: perS(this.good),
      sloAttainment: total ? this.good / total : 0,
      throughput: { requestsPerS: perS(this.completed), inputTokensPerS: perS(this.inputTokensDone), outputTokensPerS: perS(this.outputTokensDone) },
      ttftMs: this.ttft.summary(),
      tpotMs: this.tpot.summary(),
      e2eMs: this.e2e.summary(),
      queueWaitMs: this.queueWait.summary(),
      prefix: {
        hitRate: this.promptTokens ? this.hitTokens / this.promptTokens : 0,
        hitTokens: this.hitTokens,
        promptTokens: this.promptTokens,
        expectedHitRate: this.routedPromptTokens ? this.expectedTokens / this.routedPromptTokens : 0,
        ceilings: this.ceilings ? this.ceilings.result() : null,
      },
      skew: { requests: maxOverMean(this.perReplicaRequests), busy: maxOverMean(perReplica.map((r) => r.busyS)) },
      perReplica,
      engine: { steps, preemptions, evictions, storedBlocks: stored },
      events: { kvBatches: this.kvBatches, kvBatchesLost: this.kvLost, kvBatchesDropped: this.kvDropped, kvRecordsApplied: this.kvApplied, loadReports: this.loadReports, simEvents: events },
      timeline: {
        bucketMs: this.bucketMs,
        buckets: this.timeline.map((b, k) => ({
          startMs: k * this.bucketMs,
          arrivals: b.arrivals,
          completed: b.completed,
          shed: b.shed,
          failed: b.failed,
          ttftMeanMs: b.ttftN ? Math.round((b.ttftSum / b.ttftN) * 1000) / 1000 : 0,
          hitRate: b.prompt ? b.hit / b.prompt : 0,
        })),
        replicas: this.detail ? this.replicaTimeline() : undefined,
      },
      ttftCurve: this.detail ? { percentiles: [...CURVE_PERCENTILES], ms: CURVE_PERCENTILES.map((p) => Math.round(this.ttft.at(p) * 1000) / 1000) } : undefined,
      placements: this.recordPlacements ? this.reqs.map((r) => (r.state === 'done' ? r.engineIdx : -1)) : undefined,
      perf: {
        wallMs: Math.round(wallMs),
        cpuMs: Math.round(cpuMs),
        eventsPerS: wallMs > 0 ? Math.round(events / (wallMs / 1000)) : 0,
        decisionUs: this.decisionNs.summaryUs(),
        breakdownMs,
      },
    };
  }
}

function positive(what: string, v: number): number {
  if (typeof v !== 'number' || !(v > 0) || !Number.isFinite(v)) fail('DYSTRO_ERR_INVALID_CONFIG', what, 'a finite number > 0', v);
  return v;
}

function nonNegative(what: string, v: number): number {
  if (typeof v !== 'number' || !(v >= 0) || !Number.isFinite(v)) fail('DYSTRO_ERR_INVALID_CONFIG', what, 'a finite number ≥ 0', v);
  return v;
}

const round6 = (x: number) => Math.round(x * 1e6) / 1e6;

function concat(a: Uint32Array, b: Uint32Array): Uint32Array {
  const out = new Uint32Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

function concat32(parts: Uint32Array[]): Uint32Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint32Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
