/**
 * The Router (DESIGN §1–§2): one synchronous decision per request, in the caller's thread.
 *
 *   1 prompt → block hashes (kernel)          2 hashes → PrefixIndex.match (kernel)
 *   3 fleet snapshot → eligible candidates    4 Policy.pick over candidates
 *   5 admission: SLO check, class queue, shed → Decision with a lifecycle Ticket
 *
 * Control path (createRouter, setPolicy, fleet changes) validates and swaps references; the hot path
 * reads them. Scratch arrays are reused across decisions; a decision allocates only its Decision and
 * Ticket objects.
 */
import { DystroError, fail } from '../errors.js';
import { systemClock, type Clock } from '../clock.js';
import { createRng, type Rng } from '../rng.js';
import { loadKernelsSync, type BackendChoice } from '../kernels/select.js';
import type { KernelBackend } from '../kernels/abi.js';
import { PrefixHasher, DEFAULT_BLOCK_SIZE } from '../hashing/prefix.js';
import { keyOf } from '../hashing/consistent.js';
import { checkInteger, toTokenArray } from '../hashing/validate.js';
import { Fleet, type FleetChange, type FleetSnapshot, type PoolSpec, type ReplicaSpec, type ReplicaView } from '../fleet/fleet.js';
import type { LoadReport, SanitizeOutcome } from '../fleet/load.js';
import { MatchResult, PrefixIndex, type PrefixIndexOptions } from '../index/prefix-index.js';
import { OP_SPECULATE } from '../index/records.js';
import { InflightTracker } from './inflight.js';
import { TtftPredictor, type PoolRates } from './predict.js';
import { Admission, type SloClassSpec } from './admission.js';
import { PolicyRegistry } from '../policies/registry.js';
import { ARM_CANARY, ARM_LIVE, Rollout, checkCanaryArgs, type Arm, type CanaryEvent, type CanaryGuard, type CanaryOptions, type CanaryStatus, type ShadowReport } from './rollout.js';
import { defaultRegistry } from '../policies/index.js';
import type {
  CandidateExplanation,
  Decision,
  Explanation,
  PickContext,
  Policy,
  PolicyParams,
  RoutedDecision,
  RouteRequest,
  ShedDecision,
  Ticket,
} from './types.js';

/** Per-decision options of route(). */
export interface RouteOptions {
  /** Replica ids this request must not go to (a retry after failing there); none when empty. */
  readonly exclude?: readonly string[];
}

export interface RouterOptions {
  pools: readonly PoolSpec[];
  replicas?: readonly ReplicaSpec[];
  /** Policy name, or { name, params } (default predicted-ttft). */
  policy?: string | { name: string; params?: PolicyParams };
  backend?: BackendChoice;
  /** Or an already loaded backend (tests, simulator). */
  kernels?: KernelBackend;
  /** Tokens per prefix block (default 16, as vLLM). */
  blockSize?: number;
  sloClasses?: readonly SloClassSpec[];
  seed?: number;
  clock?: Clock;
  /** Replica slots (default 4,096). */
  capacity?: number;
  index?: Omit<PrefixIndexOptions, 'replicaCapacity' | 'clock'>;
  /** Random extra candidates beyond the replicas holding the prefix (default 8). */
  sampleCandidates?: number;
  /** At most this many prefix holders become candidates, the deepest first (default 16). */
  matchCandidates?: number;
  /** Longest prompt accepted, tokens (default 1,048,576); longer is DYSTRO_ERR_PROMPT_TOO_LARGE. */
  maxPromptTokens?: number;
  /** Expected output tokens when a request gives none (default 256). */
  defaultOutputTokens?: number;
  /** Insert the routed prompt's blocks as speculative index entries (default true). */
  speculative?: boolean;
  /** Per-pool overrides of the model's prefill rate / decode step. */
  poolRates?: Readonly<Record<string, Partial<Pick<PoolRates, 'prefillTokensPerS' | 'decodeStepS'>>>>;
  registry?: PolicyRegistry;
  metrics?: import('./metrics.js').RouterMetrics;
  /**
   * A routed request whose ticket has not ended after this long (ms) is ended as a timeout by tick(),
   * so a proxy that loses a ticket cannot leak in-flight counts forever (default 600,000: 10 min).
   */
  requestTimeoutMs?: number;
}

/** Scratch and state of one pick, reused for every decision. */
class PickScratch implements PickContext {
  n = 0;
  slots: Int32Array;
  cachedBlocks: Int32Array;
  gpuBlocks: Int32Array;
  cpuBlocks: Int32Array;
  diskBlocks: Int32Array;
  predictedTtftMs: Float64Array;
  scores: Float64Array;
  promptTokens = 0;
  promptBlocks = 0;
  blockSize: number;
  outputTokens = 0;
  request!: RouteRequest;
  hashes: BigUint64Array = new BigUint64Array(1024);
  affinityKey = 0n;
  fleet!: FleetSnapshot;
  load: import('../fleet/load.js').LoadTable;
  inflight: InflightTracker;
  predictor: TtftPredictor;
  rng: Rng;
  nowMs = 0;
  /** Candidate index per slot for this decision (valid when candGen[slot] === gen). */
  readonly candIndex: Int32Array;
  readonly candGen: Uint32Array;
  /** Match depth per slot for this decision (valid when matchGen[slot] === gen). */
  readonly matchDepth: Int32Array;
  readonly matchGpu: Int32Array;
  readonly matchCpu: Int32Array;
  readonly matchDisk: Int32Array;
  readonly matchGen: Uint32Array;
  gen = 0;
  eligible: Int32Array = new Int32Array(0);
  /** Set by the router: eligibility check + candidateOf. */
  tryAdd: (slot: number) => number = () => -1;

  candidate(slot: number): number {
    return this.tryAdd(slot);
  }

  constructor(capacity: number, blockSize: number, load: import('../fleet/load.js').LoadTable, inflight: InflightTracker, predictor: TtftPredictor, rng: Rng) {
    this.slots = new Int32Array(capacity);
    this.cachedBlocks = new Int32Array(capacity);
    this.gpuBlocks = new Int32Array(capacity);
    this.cpuBlocks = new Int32Array(capacity);
    this.diskBlocks = new Int32Array(capacity);
    this.predictedTtftMs = new Float64Array(capacity);
    this.scores = new Float64Array(capacity);
    this.candIndex = new Int32Array(capacity);
    this.candGen = new Uint32Array(capacity);
    this.matchDepth = new Int32Array(capacity);
    this.matchGpu = new Int32Array(capacity);
    this.matchCpu = new Int32Array(capacity);
    this.matchDisk = new Int32Array(capacity);
    this.matchGen = new Uint32Array(capacity);
    this.blockSize = blockSize;
    this.load = load;
    this.inflight = inflight;
    this.predictor = predictor;
    this.rng = rng;
  }

  /** Adds a replica slot as a candidate (if not already) and returns its index. */
  candidateOf(slot: number, pool: import('../fleet/fleet.js').PoolView): number {
    if (this.candGen[slot] === this.gen) return this.candIndex[slot];
    const i = this.n++;
    this.candGen[slot] = this.gen;
    this.candIndex[slot] = i;
    this.slots[i] = slot;
    const matched = this.matchGen[slot] === this.gen;
    const depth = matched ? this.matchDepth[slot] : 0;
    this.cachedBlocks[i] = depth;
    this.gpuBlocks[i] = matched ? this.matchGpu[slot] : 0;
    this.cpuBlocks[i] = matched ? this.matchCpu[slot] : 0;
    this.diskBlocks[i] = matched ? this.matchDisk[slot] : 0;
    const cached = Math.min(this.promptTokens, depth * this.blockSize);
    this.predictedTtftMs[i] = this.predictor.predictMs(slot, pool, this.promptTokens - cached, cached);
    this.scores[i] = NaN;
    return i;
  }
}

interface TicketState {
  slot: number;
  /** The slot's epoch when routed: a removal or restart bumps it and the ticket's counts are void. */
  epoch: number;
  /** The policy instance that routed it: it, and no later one, hears onDone. */
  policy: Policy;
  /** Canary arm and canary epoch, for the guard's TTFT samples. */
  arm: Arm;
  canaryEpoch: number;
  uncached: number;
  blocks: number;
  predictedMs: number;
  routedAtMs: number;
  firstTokenSeen: boolean;
  done: boolean;
}

const EMPTY_SLOTS = new Int32Array(0);
/** Byte order of typed arrays on this machine (x86 and ARM: little). */
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
/** A module-local copy: a re-exported binding can compile to a getter call per read in a hot loop. */
const SPECULATE = OP_SPECULATE;

/**
 * A KV event ingest the router drives (attachIngest): in-thread (KvEventIngest) or pooled (IngestPool,
 * src/host/ingest-pool.ts). Its `index` must be the router's.
 */
export interface AttachableIngest {
  readonly index: unknown;
  replicaState(replica: number): 'synced' | 'replaying' | 'unknown';
  onReplicaState(listener: (replica: number, state: 'synced' | 'replaying' | 'unknown') => void): () => void;
  restart(replica: number): void | Promise<void>;
  unsubscribe(replica: number): Promise<void>;
  /** Pooled mode: applies pending index records, at most a bounded number; never waits. */
  drain?(): number;
}

export class Router {
  readonly kernels: KernelBackend;
  readonly fleet: Fleet;
  readonly index: PrefixIndex;
  readonly hasher: PrefixHasher;
  readonly inflight: InflightTracker;
  readonly predictor: TtftPredictor;
  readonly admission: Admission;
  readonly blockSize: number;
  readonly registry: PolicyRegistry;
  private readonly clock: Clock;
  private readonly rng: Rng;
  private readonly scratch: PickScratch;
  private readonly match: MatchResult;
  private readonly sampleCandidates: number;
  private readonly matchCandidates: number;
  private readonly depthHist = new Int32Array(4097);
  private readonly maxPromptTokens: number;
  private readonly defaultOutputTokens: number;
  private readonly speculative: boolean;
  private policy: Policy;
  private policyName: string;
  private policyParams: PolicyParams;
  /** Eligible slots per model: healthy, not drained (rebuilt on fleet changes). */
  private eligibleByModel = new Map<string, Int32Array>();
  /** Namespace seeds: model → lora → tenant → seed (no string concatenation on the hot path). */
  private readonly seeds = new Map<string, Map<string, Map<string, bigint>>>();
  private readonly sessionKeys = new Map<string, bigint>();
  private readonly metrics?: import('./metrics.js').RouterMetrics;
  /** Unknown index state per slot: routed by load only (no prefix credit) until events arrive. */
  readonly indexUnknown: Uint8Array;
  private readonly decisionHooks = new Set<(ctx: PickContext, decision: Decision) => void>();
  /** Shadow and canary state (src/router/rollout.ts). */
  readonly rollout: Rollout;
  /** The policy deciding the current decision (the live one, or the canary for its drawn share) and its arm. */
  private acting!: Policy;
  private actingArm: Arm = ARM_LIVE;
  /** Per slot, bumped when its replica is removed or restarted (tickets from before become no-ops). */
  private readonly slotEpoch: Uint32Array;
  private readonly requestTimeoutMs: number;
  /** Open tickets in routing order (FIFO with a head index): tick() times the oldest out. */
  private openTickets: TicketState[] = [];
  private openHead = 0;
  /** The live scores saved while the shadow's pick borrows the scratch. */
  private asideScores = new Float64Array(64);
  /** The attached KV event ingest, and the one whose records route() drains (pooled mode only). */
  private ingest: AttachableIngest | null = null;
  private drainer: AttachableIngest | null = null;
  private detachIngest: (() => void) | null = null;
  private ingestErrors?: (slot: number, err: unknown) => void;
  /** The current decision's excluded replica ids (route()'s options), null for none. */
  private exclude: readonly string[] | null = null;
  /** Exclusions of queued requests, for their retry from the class queue. */
  private readonly queuedExclude = new WeakMap<RouteRequest, readonly string[]>();

  constructor(options: RouterOptions) {
    if (options === null || typeof options !== 'object') fail('DYSTRO_ERR_INVALID_CONFIG', 'options', 'an object', options);
    this.clock = options.clock ?? systemClock;
    this.kernels = options.kernels ?? loadKernelsSync({ backend: options.backend }).kernels;
    this.blockSize = checkInteger(options.blockSize ?? DEFAULT_BLOCK_SIZE, 'options.blockSize', 1, 1024, 'DYSTRO_ERR_BLOCK_SIZE');
    this.hasher = new PrefixHasher(this.kernels, { blockSize: this.blockSize });
    this.fleet = new Fleet({ pools: options.pools, replicas: options.replicas, capacity: options.capacity, clock: this.clock });
    const capacity = this.fleet.capacity;
    this.index = new PrefixIndex(this.kernels, { ...(options.index ?? {}), replicaCapacity: capacity, clock: this.clock });
    this.inflight = new InflightTracker(capacity);
    this.predictor = new TtftPredictor(capacity, this.fleet.load, this.inflight, options.poolRates ?? {});
    this.rng = createRng(checkInteger(options.seed ?? 1, 'options.seed', -(2 ** 31), 2 ** 32 - 1, 'DYSTRO_ERR_INVALID_CONFIG'));
    this.scratch = new PickScratch(capacity, this.blockSize, this.fleet.load, this.inflight, this.predictor, this.rng);
    this.match = this.index.newMatchResult();
    this.scratch.tryAdd = (slot: number) => this.tryCandidate(slot, this.scratch.request, this.scratch.fleet);
    this.sampleCandidates = checkInteger(options.sampleCandidates ?? 8, 'options.sampleCandidates', 0, 4096, 'DYSTRO_ERR_INVALID_CONFIG');
    this.matchCandidates = checkInteger(options.matchCandidates ?? 16, 'options.matchCandidates', 1, 1 << 20, 'DYSTRO_ERR_INVALID_CONFIG');
    this.maxPromptTokens = checkInteger(options.maxPromptTokens ?? 1 << 20, 'options.maxPromptTokens', 1, 2 ** 31 - 1, 'DYSTRO_ERR_INVALID_CONFIG');
    this.defaultOutputTokens = checkInteger(options.defaultOutputTokens ?? 256, 'options.defaultOutputTokens', 0, 2 ** 31 - 1, 'DYSTRO_ERR_INVALID_CONFIG');
    this.speculative = options.speculative ?? true;
    this.requestTimeoutMs = checkInteger(options.requestTimeoutMs ?? 600_000, 'options.requestTimeoutMs', 1, Number.MAX_SAFE_INTEGER, 'DYSTRO_ERR_INVALID_CONFIG');
    this.indexUnknown = new Uint8Array(capacity);
    this.slotEpoch = new Uint32Array(capacity);
    this.admission = new Admission(options.sloClasses ?? [], this.clock);
    this.registry = options.registry ?? defaultRegistry;
    this.metrics = options.metrics;
    this.rollout = new Rollout(this.clock, this.rng.seed, { rolledBack: (policy, metric) => this.metrics?.canaryRollbacks.inc({ policy, metric }) });
    this.metrics?.attachRollout(this.rollout);
    this.predictor.onFleet(this.fleet.snapshot());
    this.rebuildEligible(this.fleet.snapshot());
    this.fleet.onChange((change, snapshot) => this.onFleetChange(change, snapshot));
    const spec = typeof options.policy === 'string' || options.policy === undefined ? { name: options.policy ?? 'predicted-ttft', params: {} } : options.policy;
    this.policy = this.registry.create(spec.name, spec.params ?? {}, this.policyEnv());
    this.policyName = this.policy.name;
    this.policyParams = spec.params ?? {};
    this.acting = this.policy;
  }

  private policyEnv() {
    return { fleet: this.fleet.snapshot(), blockSize: this.blockSize, kernels: this.kernels };
  }

  private onFleetChange(change: FleetChange, snapshot: FleetSnapshot): void {
    if (change.kind === 'removed' || change.kind === 'restarted') {
      // A new process or a gone one: its cache is empty and its in-flight requests died with the old
      // process. Their tickets become no-ops (the epoch, not the id: a removed id may come back on the
      // same slot), so the counts start from zero and can never be returned twice.
      const slot = change.replica.slot;
      this.index.clear(slot);
      this.predictor.reset(slot);
      this.inflight.reset(slot);
      this.slotEpoch[slot]++;
      // The ingest forgets the slot too: a reused slot must not keep an old subscription or engine-hash map.
      if (this.ingest) this.tellIngest(this.ingest, slot, change.kind === 'removed');
    }
    this.predictor.onFleet(snapshot);
    this.rebuildEligible(snapshot);
    this.policy.onFleet?.(snapshot);
    this.rollout.onFleet(snapshot);
  }

  /** Per model, the eligible slots of each spillover rank, lowest rank first (only when ranks are used). */
  private eligibleByRank = new Map<string, { rank: number; slots: Int32Array }[]>();
  private hasRanks = false;
  /** During one decision: only candidates of this spillover rank (−1: any). */
  private rankOnly = -1;

  private rebuildEligible(snapshot: FleetSnapshot): void {
    this.hasRanks = snapshot.pools.some((p) => p.spilloverRank !== 0);
    const byRank = new Map<string, Map<number, number[]>>();
    if (this.hasRanks) {
      for (const r of snapshot.replicas) {
        if (r.drained || r.health !== 'healthy') continue;
        let m = byRank.get(r.pool.model);
        if (!m) byRank.set(r.pool.model, (m = new Map()));
        const l = m.get(r.pool.spilloverRank) ?? [];
        l.push(r.slot);
        m.set(r.pool.spilloverRank, l);
      }
    }
    this.eligibleByRank = new Map(
      [...byRank].map(([model, m]) => [model, [...m].sort((a, b) => a[0] - b[0]).map(([rank, l]) => ({ rank, slots: Int32Array.from(l) }))]),
    );
    const byModel = new Map<string, number[]>();
    for (const r of snapshot.replicas) {
      if (r.drained || r.health !== 'healthy') continue;
      const list = byModel.get(r.pool.model) ?? [];
      list.push(r.slot);
      byModel.set(r.pool.model, list);
    }
    this.eligibleByModel = new Map([...byModel].map(([m, l]) => [m, Int32Array.from(l)]));
  }

  // ---------------------------------------------------------------- control path

  get policyId(): string {
    return this.policyName;
  }

  /**
   * Swaps the live policy atomically between decisions. In-flight accounting is the router's and stays.
   * An unknown name or bad parameters throw a typed error and leave the current policy in place.
   */
  setPolicy(name: string, params: PolicyParams = {}): void {
    const next = this.registry.create(name, params, this.policyEnv());
    // A canary compares itself with the live policy; with another live policy its baseline is gone.
    this.rollout.end('aborted', `the live policy was replaced by "${next.name}" (setPolicy)`);
    this.swapLive(next, params);
  }

  private swapLive(next: Policy, params: PolicyParams): void {
    this.policy = next;
    this.policyName = next.name;
    this.policyParams = params;
    this.metrics?.policySwaps.inc({ policy: next.name });
  }

  // ---------------------------------------------------------------- shadow and canary (rollout.ts)

  /**
   * Runs another policy beside the live one on every decision, without acting: same candidates, after
   * the live pick, on its own instance and seeded draw; its onRouted/onDone are never called. Replaces
   * a running shadow. An unknown name or bad parameters throw and change nothing.
   */
  shadow(name: string, params: PolicyParams = {}, options: { seed?: number } = {}): void {
    const policy = this.registry.create(name, params, this.policyEnv());
    const seed = options.seed === undefined ? undefined : checkInteger(options.seed, 'shadow seed', -(2 ** 31), 2 ** 32 - 1, 'DYSTRO_ERR_INVALID_CONFIG');
    this.rollout.startShadow(policy, params, seed);
  }

  /** Stops the shadow and returns its final report. */
  stopShadow(): ShadowReport {
    return this.rollout.stopShadow();
  }

  /** Agreement and predicted-TTFT deltas of the running (or last) shadow. */
  shadowReport(): ShadowReport {
    return this.rollout.shadowReport();
  }

  /**
   * Routes a seeded `fraction` of decisions with the candidate policy and rolls back on its own when a
   * guard trips (an event on `router.rollout`, 'canary', says why). Replaces a running canary. Bad
   * arguments throw typed errors and leave the live policy and any running canary in place.
   */
  canary(name: string, params: PolicyParams, fraction: number, guard?: CanaryGuard | readonly CanaryGuard[], options: CanaryOptions = {}): CanaryStatus {
    const checked = checkCanaryArgs(fraction, guard);
    if (options.seed !== undefined) checkInteger(options.seed, 'canary seed', -(2 ** 31), 2 ** 32 - 1, 'DYSTRO_ERR_INVALID_CONFIG');
    const policy = this.registry.create(name, params ?? {}, this.policyEnv());
    this.rollout.startCanary(policy, params ?? {}, this.policyName, checked.fraction, checked.guards, options);
    return this.rollout.canaryStatus();
  }

  canaryStatus(): CanaryStatus {
    return this.rollout.canaryStatus();
  }

  /** Makes the running canary the live policy (its instance, with whatever it learned). */
  promoteCanary(reason = 'promoted by the operator'): CanaryStatus {
    const policy = this.rollout.canaryPolicy;
    if (policy === null) fail('DYSTRO_ERR_INVALID_ARGUMENT', 'canary', 'running to be promoted', this.rollout.canaryStatus().state);
    const params = this.rollout.canaryStatus().params;
    this.rollout.end('promoted', reason);
    this.swapLive(policy, params);
    return this.rollout.canaryStatus();
  }

  /** Stops the running canary; the live policy stays. Returns the final status (idle: a no-op). */
  abortCanary(reason = 'aborted by the operator'): CanaryStatus {
    this.rollout.end('aborted', reason);
    return this.rollout.canaryStatus();
  }

  /** Subscribes to canary events (started, rolled-back, promoted, aborted); returns an unsubscribe function. */
  onCanaryEvent(listener: (event: CanaryEvent) => void): () => void {
    this.rollout.on('canary', listener);
    return () => this.rollout.off('canary', listener);
  }

  /** The live policy's name and parameters. */
  currentPolicy(): { name: string; params: PolicyParams } {
    return { name: this.policyName, params: this.policyParams };
  }

  upsertReplica(spec: ReplicaSpec): ReplicaView {
    return this.fleet.upsertReplica(spec);
  }
  drain(id: string, drained = true): ReplicaView {
    return this.fleet.drain(id, drained);
  }
  remove(id: string): void {
    this.fleet.remove(id);
  }
  restart(id: string): ReplicaView {
    return this.fleet.restart(id);
  }
  setHealth(id: string, health: 'healthy' | 'unhealthy'): ReplicaView {
    return this.fleet.setHealth(id, health);
  }
  updateLoad(id: string, report: LoadReport): SanitizeOutcome {
    return this.fleet.updateLoad(id, report);
  }

  /**
   * Drives a KV event ingest (in-thread KvEventIngest or pooled IngestPool) built on this router's
   * index: route() first applies its pending records (bounded: the pool's drainMaxRecords); a fleet
   * `removed` change unsubscribes the slot and `restarted` restarts it; a replica whose ingest state is
   * 'unknown' (nothing heard yet, or a stream lost) gets no prefix credit and is routed by load only.
   * Replaces an ingest attached before. Returns a function that detaches it.
   */
  attachIngest(ingest: AttachableIngest, options: { onError?: (slot: number, err: unknown) => void } = {}): () => void {
    if (ingest === null || typeof ingest !== 'object' || typeof ingest.replicaState !== 'function' || typeof ingest.onReplicaState !== 'function') {
      fail('DYSTRO_ERR_INVALID_CONFIG', 'ingest', 'a KvEventIngest or an IngestPool', ingest);
    }
    if (ingest.index !== this.index) fail('DYSTRO_ERR_INVALID_CONFIG', 'ingest.index', "the router's own index (router.index)", ingest.index);
    this.detachIngest?.();
    for (let slot = 0; slot < this.indexUnknown.length; slot++) this.indexUnknown[slot] = ingest.replicaState(slot) === 'unknown' ? 1 : 0;
    const off = ingest.onReplicaState((slot, state) => {
      if (slot >= 0 && slot < this.indexUnknown.length) this.indexUnknown[slot] = state === 'unknown' ? 1 : 0;
    });
    this.ingest = ingest;
    this.drainer = typeof ingest.drain === 'function' ? ingest : null;
    this.ingestErrors = options.onError;
    const detach = () => {
      if (this.ingest !== ingest) return;
      off();
      this.ingest = null;
      this.drainer = null;
      this.detachIngest = null;
      this.indexUnknown.fill(0);
    };
    this.detachIngest = detach;
    return detach;
  }

  private tellIngest(ingest: AttachableIngest, slot: number, removed: boolean): void {
    const report = (err: unknown) => this.ingestErrors?.(slot, err);
    try {
      const done = removed ? ingest.unsubscribe(slot) : ingest.restart(slot);
      if (done) done.catch(report);
    } catch (err) {
      report(err); // a closed ingest: the index was cleared above all the same
    }
  }

  /** Observes every decision (shadow evaluation, metrics). Returns an unsubscribe function. */
  onDecision(hook: (ctx: PickContext, decision: Decision) => void): () => void {
    this.decisionHooks.add(hook);
    return () => this.decisionHooks.delete(hook);
  }

  // ---------------------------------------------------------------- hot path

  private seedOf(model: string, lora: string, tenant: string): bigint {
    let byLora = this.seeds.get(model);
    if (!byLora) this.seeds.set(model, (byLora = new Map()));
    let byTenant = byLora.get(lora);
    if (!byTenant) byLora.set(lora, (byTenant = new Map()));
    let seed = byTenant.get(tenant);
    if (seed === undefined) {
      seed = this.hasher.namespaceSeed({ model, lora, tenant });
      if (byTenant.size < 100_000) byTenant.set(tenant, seed);
    }
    return seed;
  }

  private checkRequest(req: RouteRequest): void {
    if (req === null || typeof req !== 'object') fail('DYSTRO_ERR_INVALID_REQUEST', 'request', 'an object { model, prompt, … }', req);
    if (typeof req.model !== 'string' || req.model.length === 0) fail('DYSTRO_ERR_INVALID_REQUEST', 'request.model', 'a non-empty string', req.model);
    if (req.lora !== undefined && typeof req.lora !== 'string') fail('DYSTRO_ERR_INVALID_REQUEST', 'request.lora', 'a string', req.lora);
    if (req.tenant !== undefined && typeof req.tenant !== 'string') fail('DYSTRO_ERR_INVALID_REQUEST', 'request.tenant', 'a string', req.tenant);
    if (req.expectedOutputTokens !== undefined && (!Number.isInteger(req.expectedOutputTokens) || req.expectedOutputTokens < 0)) {
      fail('DYSTRO_ERR_INVALID_REQUEST', 'request.expectedOutputTokens', 'an integer ≥ 0', req.expectedOutputTokens);
    }
    if (req.sessionKey !== undefined && typeof req.sessionKey !== 'string') fail('DYSTRO_ERR_INVALID_REQUEST', 'request.sessionKey', 'a string', req.sessionKey);
  }

  /** Hashes the prompt into scratch.hashes; returns the prompt length in tokens (bytes in text mode). */
  private hashPrompt(req: RouteRequest, seed: bigint): number {
    const s = this.scratch;
    const prompt = req.prompt;
    let length: number;
    if (typeof prompt === 'string') {
      // Text prompt: byte mode (UTF-8 bytes, blockSize bytes a block). Approximate: engines hash tokens,
      // so these entries only ever match the router's own speculative ones.
      length = Buffer.byteLength(prompt, 'utf8');
      if (length > this.maxPromptTokens) this.tooLarge(length);
      const blocks = Math.floor(length / this.blockSize);
      if (s.hashes.length < blocks) s.hashes = new BigUint64Array(Math.max(blocks, s.hashes.length * 2));
      this.hasher.hashText(prompt, seed, s.hashes);
      s.promptBlocks = blocks;
      return length;
    }
    const tokens = toTokenArray(prompt, 'request.prompt');
    length = tokens.length;
    if (length > this.maxPromptTokens) this.tooLarge(length);
    const blocks = Math.floor(length / this.blockSize);
    if (s.hashes.length < blocks) s.hashes = new BigUint64Array(Math.max(blocks, s.hashes.length * 2));
    this.hasher.hashTokens(tokens, seed, s.hashes);
    s.promptBlocks = blocks;
    return length;
  }

  private tooLarge(length: number): never {
    throw new DystroError('DYSTRO_ERR_PROMPT_TOO_LARGE', `Expected the prompt to have at most ${this.maxPromptTokens} tokens, got ${length}`, { length, max: this.maxPromptTokens });
  }

  /**
   * Decides where a request goes. Synchronous. Throws only for malformed requests (typed errors);
   * "nothing can serve this" is a shed decision, never an exception. `options.exclude`: replica ids
   * this request must not go to (a proxy's retry after failing there); a queued decision keeps them.
   */
  route(req: RouteRequest, options?: RouteOptions): Decision {
    const t0 = performance.now();
    const exclude = options?.exclude;
    this.exclude = exclude !== undefined && exclude.length > 0 ? exclude : null;
    // Pooled ingest: records the workers produced since the last decision, at most a bounded batch.
    if (this.drainer !== null) this.drainer.drain!();
    this.checkRequest(req);
    const s = this.scratch;
    const snapshot = this.fleet.snapshot();
    const lora = req.lora ?? '';
    const tenant = req.tenant ?? '';
    const seed = this.seedOf(req.model, lora, tenant);
    s.gen = (s.gen + 1) >>> 0 || 1;
    s.n = 0;
    s.request = req;
    s.fleet = snapshot;
    s.nowMs = this.clock.nowMs();
    s.promptTokens = this.hashPrompt(req, seed);
    s.outputTokens = req.expectedOutputTokens ?? this.defaultOutputTokens;
    s.affinityKey = req.sessionKey !== undefined ? this.sessionKeyOf(req.sessionKey) : s.promptBlocks > 0 ? s.hashes[0] : seed;
    const sloClass = this.admission.classOf(req.priority);

    // 2. What is cached where.
    if (s.promptBlocks > 0) {
      this.index.match(s.hashes, this.match, s.promptBlocks);
      const m = this.match;
      for (let i = 0; i < m.count; i++) {
        const slot = m.replica(i);
        if (this.indexUnknown[slot] !== 0) continue;
        s.matchGen[slot] = s.gen;
        s.matchDepth[slot] = m.depth(i);
        s.matchGpu[slot] = m.gpu(i);
        s.matchCpu[slot] = m.cpu(i);
        s.matchDisk[slot] = m.disk(i);
      }
    }

    // 3. Candidates: replicas holding the prefix, plus a sample of the others (sub-linear in fleet size).
    const eligible = this.eligibleByModel.get(req.model);
    s.eligible = eligible ?? EMPTY_SLOTS;
    this.rankOnly = -1;
    if (eligible && eligible.length > 0) {
      if (s.promptBlocks > 0) this.addMatchedCandidates(req, snapshot);
      const ranks = this.hasRanks ? this.eligibleByRank.get(req.model) : undefined;
      // With spillover ranks, every rank gets its own sample, so the preferred pool is always looked at.
      for (const group of ranks ?? [{ rank: 0, slots: eligible }]) {
        const list = group.slots;
        if (list.length <= this.sampleCandidates * 2) {
          for (let i = 0; i < list.length; i++) this.tryCandidate(list[i], req, snapshot);
        } else {
          for (let k = 0; k < this.sampleCandidates; k++) this.tryCandidate(list[this.rng.int(list.length)], req, snapshot);
        }
      }
      if (ranks && s.n > 0) this.keepPreferredRank(ranks, sloClass.ttftMs, snapshot);
    }

    // 4. Policy: the live one, or the canary for its seeded share; then the shadow beside it.
    const arm = this.rollout.drawArm();
    const acting = arm === ARM_CANARY ? this.rollout.canaryPolicy! : this.policy;
    this.acting = acting;
    this.actingArm = arm;
    let chosen = s.n > 0 ? acting.pick(s) : -1;
    if (!(chosen >= 0 && chosen < s.n)) chosen = -1;
    if (this.rollout.shadowPolicy !== null && s.n > 0) this.runShadow(s, chosen);

    // 5. Admission.
    const decision = this.admit(s, chosen, sloClass, eligible, snapshot);
    this.metrics?.observeDecision(decision, (performance.now() - t0) / 1000);
    for (const hook of this.decisionHooks) hook(s, decision);
    return decision;
  }

  /**
   * The shadow's pick over this decision's context, leaving the context as the live pick left it: its
   * own draw, the live scores restored (explanations show the live policy's), and any candidate it
   * added withdrawn (admission must see the live candidate set).
   */
  private runShadow(s: PickScratch, chosen: number): void {
    const shadow = this.rollout.shadowPolicy!;
    const n0 = s.n;
    if (this.asideScores.length < n0) this.asideScores = new Float64Array(Math.max(n0, this.asideScores.length * 2));
    this.asideScores.set(s.scores.subarray(0, n0));
    s.rng = this.rollout.shadowRng;
    let c = -1;
    try {
      c = shadow.pick(s);
    } catch {
      c = -1; // a shadow that throws refuses; it must never break the live decision
    } finally {
      s.rng = this.rng;
    }
    const valid = c >= 0 && c < s.n;
    const shadowSlot = valid ? s.slots[c] : -1;
    const shadowMs = valid ? s.predictedTtftMs[c] : NaN;
    for (let i = n0; i < s.n; i++) s.candGen[s.slots[i]] = 0; // 0 is never a live generation
    s.n = n0;
    s.scores.set(this.asideScores.subarray(0, n0));
    const agreed = this.rollout.recordShadow(chosen >= 0 ? s.slots[chosen] : -1, chosen >= 0 ? s.predictedTtftMs[chosen] : NaN, shadowSlot, shadowMs);
    this.metrics?.shadowDecisions.inc({ shadow: shadow.name, outcome: agreed ? 'agree' : 'disagree' });
  }

  private sessionKeyOf(key: string): bigint {
    let k = this.sessionKeys.get(key);
    if (k === undefined) {
      k = keyOf(this.kernels, key);
      if (this.sessionKeys.size < 100_000) this.sessionKeys.set(key, k);
    }
    return k;
  }

  /**
   * Candidates from the match: every replica holding the prefix when they are few; otherwise the
   * `matchCandidates` deepest (a system prompt held by the whole fleet would make every replica a
   * candidate and the decision linear in fleet size). The depth threshold is found by counting depths
   * into a small histogram over the prompt's block count: O(matched), no sort.
   */
  private addMatchedCandidates(req: RouteRequest, snapshot: FleetSnapshot): void {
    const s = this.scratch;
    const m = this.match;
    const k = this.matchCandidates;
    if (m.count <= k) {
      for (let i = 0; i < m.count; i++) {
        const slot = m.replica(i);
        if (s.matchGen[slot] === s.gen) this.tryCandidate(slot, req, snapshot);
      }
      return;
    }
    // Histogram of depths, bucketed so it stays small for long prompts.
    const blocks = s.promptBlocks;
    const shift = blocks > 4096 ? Math.ceil(Math.log2(blocks / 4096)) : 0;
    const hist = this.depthHist;
    const buckets = (blocks >>> shift) + 1;
    hist.fill(0, 0, buckets);
    for (let i = 0; i < m.count; i++) if (s.matchGen[m.replica(i)] === s.gen) hist[m.depth(i) >>> shift]++;
    let threshold = buckets - 1;
    let taken = 0;
    while (threshold > 0 && taken + hist[threshold] < k) taken += hist[threshold--];
    // Everything deeper than the threshold bucket, then threshold-bucket replicas until k (in match
    // order, which is arbitrary but deterministic).
    let budget = k - taken;
    for (let i = 0; i < m.count; i++) {
      const slot = m.replica(i);
      if (s.matchGen[slot] !== s.gen) continue;
      const b = m.depth(i) >>> shift;
      if (b > threshold) this.tryCandidate(slot, req, snapshot);
      else if (b === threshold && budget > 0 && this.tryCandidate(slot, req, snapshot) >= 0) budget--;
    }
  }

  /**
   * Spillover: keeps only the candidates of the lowest rank that has one predicted to meet the TTFT SLO
   * (a pool that is full or down has none), and holds the policy to that rank. When no rank can meet it,
   * nothing is removed and admission decides (queue, shed, or the best replica anywhere).
   */
  private keepPreferredRank(ranks: readonly { rank: number }[], ttftMs: number, snapshot: FleetSnapshot): void {
    const s = this.scratch;
    let chosen = -1;
    for (const { rank } of ranks) {
      for (let i = 0; i < s.n; i++) {
        if (snapshot.bySlot[s.slots[i]]!.pool.spilloverRank === rank && s.predictedTtftMs[i] <= ttftMs) {
          chosen = rank;
          break;
        }
      }
      if (chosen >= 0) break;
    }
    if (chosen < 0) return;
    let w = 0;
    for (let i = 0; i < s.n; i++) {
      const slot = s.slots[i];
      if (snapshot.bySlot[slot]!.pool.spilloverRank !== chosen) {
        s.candGen[slot] = 0;
        continue;
      }
      if (w !== i) {
        s.slots[w] = slot;
        s.cachedBlocks[w] = s.cachedBlocks[i];
        s.gpuBlocks[w] = s.gpuBlocks[i];
        s.cpuBlocks[w] = s.cpuBlocks[i];
        s.diskBlocks[w] = s.diskBlocks[i];
        s.predictedTtftMs[w] = s.predictedTtftMs[i];
        s.scores[w] = s.scores[i];
        s.candIndex[slot] = w;
      }
      w++;
    }
    s.n = w;
    this.rankOnly = chosen;
  }

  /** Adds a slot as a candidate when eligible for this request; returns its index or −1. */
  private tryCandidate(slot: number, req: RouteRequest, snapshot: FleetSnapshot): number {
    const s = this.scratch;
    if (s.candGen[slot] === s.gen) return s.candIndex[slot];
    const r = snapshot.bySlot[slot];
    if (!r || r.drained || r.health !== 'healthy' || r.pool.model !== req.model) return -1;
    if (this.exclude !== null && this.exclude.includes(r.id)) return -1;
    if (req.lora && !r.pool.loras.has(req.lora)) return -1;
    if (s.promptTokens + s.outputTokens > r.pool.maxContextTokens) return -1;
    if (this.rankOnly >= 0 && r.pool.spilloverRank !== this.rankOnly) return -1;
    return s.candidateOf(slot, r.pool);
  }

  /** Adds every eligible replica (the rare shedding path must not miss one that could serve in time). */
  private addAllEligible(eligible: Int32Array | undefined, req: RouteRequest, snapshot: FleetSnapshot): void {
    if (!eligible) return;
    for (let i = 0; i < eligible.length; i++) this.tryCandidate(eligible[i], req, snapshot);
  }

  private admit(s: PickScratch, chosen: number, sloClass: import('./admission.js').SloClass, eligible: Int32Array | undefined, snapshot: FleetSnapshot): Decision {
    const req = s.request;
    if (chosen < 0 && s.n === 0) return this.shed(s, sloClass, 'no-eligible-replica', 1000);
    const tenantShed = this.admission.tenantOverQuota(req.tenant ?? '', s.promptTokens, s.nowMs, this.anyOverSlo(s, sloClass));
    if (tenantShed > 0) return this.shed(s, sloClass, 'tenant-over-quota', tenantShed);
    if (chosen >= 0 && s.predictedTtftMs[chosen] <= sloClass.ttftMs) return this.commit(s, chosen, sloClass);
    // The policy's choice misses the SLO (or it refused all): is there any replica that can make it?
    this.rankOnly = -1;
    this.addAllEligible(eligible, req, snapshot);
    let best = -1;
    for (let i = 0; i < s.n; i++) if (best < 0 || s.predictedTtftMs[i] < s.predictedTtftMs[best]) best = i;
    if (best >= 0 && s.predictedTtftMs[best] <= sloClass.ttftMs) {
      // Someone can serve it in time: never shed, and never send it where it would miss the SLO (the
      // policy's choice did): the least predicted TTFT, found among every eligible replica.
      return this.commit(s, best, sloClass);
    }
    if (best < 0) return this.shed(s, sloClass, 'no-eligible-replica', 1000);
    // Nobody meets the SLO now: queue if the class queue has room, else shed.
    const waitMs = Math.max(1, s.predictedTtftMs[best] - sloClass.ttftMs);
    if (!this.admission.draining && sloClass.queueLimit > 0 && this.admission.queueLength(sloClass) < sloClass.queueLimit) {
      if (this.exclude !== null) this.queuedExclude.set(req, this.exclude);
      return this.admission.enqueue(sloClass, req, this.acting.name, (r) => this.route(r, { exclude: this.queuedExclude.get(r) }));
    }
    if (sloClass.routeOverSlo && !this.admission.draining) return this.commit(s, chosen >= 0 ? chosen : best, sloClass);
    return this.shed(s, sloClass, sloClass.queueLimit > 0 ? 'queue-full' : 'slo-unmeetable', Math.ceil(waitMs));
  }

  private anyOverSlo(s: PickScratch, sloClass: import('./admission.js').SloClass): boolean {
    for (let i = 0; i < s.n; i++) if (s.predictedTtftMs[i] > sloClass.ttftMs) return true;
    return false;
  }

  private shed(s: PickScratch, sloClass: import('./admission.js').SloClass, reason: ShedDecision['reason'], retryAfterMs: number): ShedDecision {
    return { kind: 'shed', policy: this.acting.name, sloClass: sloClass.name, reason, retryAfterMs: Math.max(1, Math.ceil(retryAfterMs)), explanation: s.request.explain ? this.explain(s, -1) : undefined };
  }

  private commit(s: PickScratch, chosen: number, sloClass: import('./admission.js').SloClass): RoutedDecision {
    const slot = s.slots[chosen];
    const replica = s.fleet.bySlot[slot]!;
    const cachedTokens = Math.min(s.promptTokens, s.cachedBlocks[chosen] * this.blockSize);
    const uncached = s.promptTokens - cachedTokens;
    const blocks = Math.ceil((s.promptTokens + s.outputTokens) / this.blockSize);
    const acting = this.acting;
    this.inflight.add(slot, uncached, blocks);
    if (this.speculative && s.promptBlocks > 0) this.speculateBlocks(slot, s.promptBlocks);
    acting.onRouted?.(s, chosen);
    this.rollout.routedOn(this.actingArm);
    this.admission.charge(s.request.tenant ?? '', s.promptTokens, s.nowMs);
    const state: TicketState = {
      slot,
      epoch: this.slotEpoch[slot],
      policy: acting,
      arm: this.actingArm,
      canaryEpoch: this.rollout.canaryEpoch,
      uncached,
      blocks,
      predictedMs: s.predictedTtftMs[chosen],
      routedAtMs: s.nowMs,
      firstTokenSeen: false,
      done: false,
    };
    this.trackOpen(state);
    return {
      kind: 'route',
      policy: acting.name,
      sloClass: sloClass.name,
      replica,
      pool: replica.pool,
      cachedTokens,
      promptTokens: s.promptTokens,
      predictedTtftMs: s.predictedTtftMs[chosen],
      ticket: this.ticket(replica.id, state),
      explanation: s.request.explain ? this.explain(s, chosen) : undefined,
    };
  }

  private readonly specRecords = new Uint32Array(4 * 4096);
  /** A u32 view of scratch.hashes (rebuilt when the hash buffer grows): no BigInt per block. */
  private hashWords: Uint32Array = new Uint32Array(0);
  private speculateBlocks(slot: number, blocks: number): void {
    const s = this.scratch;
    const recs = this.specRecords;
    if (this.hashWords.buffer !== s.hashes.buffer) this.hashWords = new Uint32Array(s.hashes.buffer, s.hashes.byteOffset, s.hashes.length * 2);
    const words = this.hashWords;
    let k = 0;
    for (let b = 0; b < blocks; b++) {
      recs[k * 4] = SPECULATE;
      recs[k * 4 + 1] = slot;
      if (LITTLE_ENDIAN) {
        // Reading the two halves of the u64 in place: converting each hash through BigInt cost about
        // a fifth of a decision at 8,192 tokens (512 blocks), most of it garbage.
        recs[k * 4 + 2] = words[2 * b];
        recs[k * 4 + 3] = words[2 * b + 1];
      } else {
        const h = s.hashes[b];
        recs[k * 4 + 2] = Number(h & 0xffffffffn);
        recs[k * 4 + 3] = Number(h >> 32n);
      }
      if (++k === 4096) {
        this.index.apply(recs, k);
        k = 0;
      }
    }
    if (k > 0) this.index.apply(recs, k);
  }

  private ticket(replicaId: string, st: TicketState): Ticket {
    const router = this;
    return {
      replicaId,
      onStart() {},
      onFirstToken() {
        if (st.done || st.firstTokenSeen) return;
        st.firstTokenSeen = true;
        if (router.slotEpoch[st.slot] !== st.epoch) return;
        router.inflight.prefilled(st.slot, st.uncached);
        const observed = router.clock.nowMs() - st.routedAtMs;
        router.predictor.observe(st.slot, st.predictedMs, observed);
        router.rollout.observeFirstToken(st.arm, st.canaryEpoch, observed);
        router.metrics?.ttft.observe(observed / 1000);
      },
      onEnd: () => router.finishTicket(st, 'end'),
      onError: () => router.finishTicket(st, 'error'),
      onCancel: () => router.finishTicket(st, 'cancel'),
      get done() {
        return st.done;
      },
    };
  }

  /** Returns a request's counts exactly once, whichever way it ends. */
  private finishTicket(st: TicketState, kind: 'end' | 'error' | 'cancel' | 'timeout'): void {
    if (st.done) return;
    st.done = true;
    if (kind === 'error' || kind === 'timeout') this.rollout.observeError(st.arm, st.canaryEpoch);
    // A removed or restarted replica's counters were reset: nothing to return.
    if (this.slotEpoch[st.slot] !== st.epoch) return;
    this.inflight.finish(st.slot, st.blocks, st.firstTokenSeen ? 0 : st.uncached);
    st.policy.onDone?.(st.slot);
    this.metrics?.finished.inc({ outcome: kind });
    this.admission.wake();
  }

  /** Remembers an open ticket for the timeout, dropping ended ones from the front (amortized O(1)). */
  private trackOpen(st: TicketState): void {
    const q = this.openTickets;
    while (this.openHead < q.length && q[this.openHead].done) this.openHead++;
    if (this.openHead > 1024 && this.openHead * 2 > q.length) {
      this.openTickets = q.slice(this.openHead);
      this.openHead = 0;
    }
    this.openTickets.push(st);
  }

  /** Tickets still open (tests and diagnostics). */
  openTicketCount(): number {
    let n = 0;
    for (let i = this.openHead; i < this.openTickets.length; i++) if (!this.openTickets[i].done) n++;
    return n;
  }

  private explain(s: PickScratch, chosen: number): Explanation {
    const candidates: CandidateExplanation[] = [];
    for (let i = 0; i < s.n; i++) {
      const slot = s.slots[i];
      const r = s.fleet.bySlot[slot]!;
      candidates.push({
        replica: r.id,
        pool: r.pool.id,
        cachedTokens: Math.min(s.promptTokens, s.cachedBlocks[i] * this.blockSize),
        predictedTtftMs: s.predictedTtftMs[i],
        score: s.scores[i],
        load: { inflight: this.inflight.requests[slot], running: this.fleet.load.running[slot], waiting: this.fleet.load.waiting[slot], kvUsage: this.fleet.load.kvUsage[slot] },
      });
    }
    return { policy: this.policyName, scoreOrder: this.policy.scoreOrder, candidates, chosen };
  }

  /** Processes class-queue timeouts (call periodically, or from the simulator's clock). */
  tick(): void {
    // Requests routed longer than requestTimeoutMs ago and never ended: their proxy lost the ticket.
    const deadline = this.clock.nowMs() - this.requestTimeoutMs;
    // Collected first: finishing one wakes the class queues, whose routing appends to openTickets.
    const q = this.openTickets;
    const expired: TicketState[] = [];
    while (this.openHead < q.length && (q[this.openHead].done || q[this.openHead].routedAtMs <= deadline)) {
      const st = q[this.openHead++];
      if (!st.done) expired.push(st);
    }
    for (const st of expired) this.finishTicket(st, 'timeout');
    this.admission.tick();
    this.rollout.evaluate();
  }
}

export function createRouter(options: RouterOptions): Router {
  return new Router(options);
}
