/**
 * The router's public types (DESIGN §1) and the policy interface (DESIGN §4, STYLE 2: a policy is a
 * picker over candidates; load, membership and cache knowledge are separate pieces it reads).
 */
import type { Rng } from '../rng.js';
import type { FleetSnapshot, PoolView, ReplicaView } from '../fleet/fleet.js';
import type { LoadTable } from '../fleet/load.js';
import type { InflightTracker } from './inflight.js';
import type { TtftPredictor } from './predict.js';

export interface RouteRequest {
  model: string;
  lora?: string;
  /** Authenticated tenant: salts the prefix hashes (no cache credit across tenants) and keys fairness. */
  tenant?: string;
  /** SLO class name (default: the first class configured). */
  priority?: string;
  /** Token ids (exact cache matching) or text (byte-mode hashing: approximate). */
  prompt: Uint32Array | readonly number[] | string;
  /** Expected output tokens (decode work); default 256. */
  expectedOutputTokens?: number;
  /** Session key for session-affinity policies (consistent-hash). */
  sessionKey?: string;
  /** Return the per-candidate score breakdown. */
  explain?: boolean;
}

export interface CandidateExplanation {
  replica: string;
  pool: string;
  cachedTokens: number;
  predictedTtftMs: number;
  /** Policy-specific score (lower or higher is better, per policy; see `scoreOrder`). */
  score: number;
  load: { inflight: number; running: number; waiting: number; kvUsage: number };
}

export interface Explanation {
  policy: string;
  scoreOrder: 'lower-is-better' | 'higher-is-better' | 'none';
  candidates: CandidateExplanation[];
  chosen: number;
}

interface DecisionBase {
  /** The policy that decided. */
  readonly policy: string;
  /** SLO class. */
  readonly sloClass: string;
  readonly explanation?: Explanation;
}

export interface RoutedDecision extends DecisionBase {
  readonly kind: 'route';
  readonly replica: ReplicaView;
  readonly pool: PoolView;
  /** Prompt tokens expected to hit the chosen replica's prefix cache. */
  readonly cachedTokens: number;
  readonly promptTokens: number;
  readonly predictedTtftMs: number;
  /** Lifecycle feedback handle (onStart, onFirstToken, onEnd, onError, onCancel). */
  readonly ticket: Ticket;
}

export interface QueuedDecision extends DecisionBase {
  readonly kind: 'queue';
  /** Resolves with a routed or shed decision when capacity frees up or the class timeout passes. */
  readonly ready: Promise<RoutedDecision | ShedDecision>;
  readonly position: number;
}

export interface ShedDecision extends DecisionBase {
  readonly kind: 'shed';
  readonly retryAfterMs: number;
  readonly reason: 'no-eligible-replica' | 'slo-unmeetable' | 'queue-full' | 'queue-timeout' | 'tenant-over-quota';
}

export type Decision = RoutedDecision | QueuedDecision | ShedDecision;

/** Feedback on a routed request; every method is idempotent and the in-flight counts return to zero exactly once. */
export interface Ticket {
  readonly replicaId: string;
  onStart(): void;
  onFirstToken(): void;
  onEnd(outputTokens?: number): void;
  onError(kind?: 'http' | 'timeout' | 'connect' | 'engine'): void;
  onCancel(): void;
  readonly done: boolean;
}

/**
 * What a policy sees for one decision. Arrays are scratch buffers owned by the router: valid during
 * `pick` only, entries 0 … n−1. Candidates are eligible replicas (model, LoRA, context, health, drain).
 */
export interface PickContext {
  readonly n: number;
  /** Replica slot of each candidate. */
  readonly slots: Int32Array;
  /** Leading prompt blocks held by each candidate (precise and speculative), and by tier. */
  readonly cachedBlocks: Int32Array;
  readonly gpuBlocks: Int32Array;
  readonly cpuBlocks: Int32Array;
  readonly diskBlocks: Int32Array;
  /** Predicted TTFT of the request on each candidate, ms (filled by the router before pick). */
  readonly predictedTtftMs: Float64Array;
  /** Scratch for a policy's scores (explanations read it). */
  readonly scores: Float64Array;
  readonly promptTokens: number;
  readonly promptBlocks: number;
  readonly blockSize: number;
  readonly outputTokens: number;
  readonly request: RouteRequest;
  /** The prompt's block hashes (the first promptBlocks entries). */
  readonly hashes: BigUint64Array;
  /** A 64-bit key for consistent hashing: the session key's hash, else the first block's hash. */
  readonly affinityKey: bigint;
  readonly fleet: FleetSnapshot;
  readonly load: LoadTable;
  readonly inflight: InflightTracker;
  readonly predictor: TtftPredictor;
  readonly rng: Rng;
  readonly nowMs: number;
  /**
   * Makes a replica slot a candidate (computing its cached blocks and predicted TTFT) and returns its
   * index, or −1 when it cannot serve this request (model, LoRA, context, health, drain). Policies that
   * choose outside the sampled candidates (round-robin, consistent hashing) use it.
   */
  candidate(slot: number): number;
  /** Every eligible slot for the request's model (healthy, not drained); read-only. */
  readonly eligible: Int32Array;
}

export interface Policy {
  /** The stable id used in the registry, metrics and errors. */
  readonly name: string;
  readonly scoreOrder: Explanation['scoreOrder'];
  /** Index of the chosen candidate in 0 … n−1, or −1 when none is acceptable. Must not throw. */
  pick(ctx: PickContext): number;
  /** Called after a routed decision (policies with memory of their own, e.g. SGLang's tree). */
  onRouted?(ctx: PickContext, chosen: number): void;
  /** The fleet changed (tables keyed by membership rebuild here, on the control path). */
  onFleet?(snapshot: FleetSnapshot): void;
  /** A request finished on a replica slot (in-flight feedback). */
  onDone?(slot: number): void;
}

export type PolicyParams = Record<string, unknown>;

export interface PolicyFactory {
  readonly name: string;
  readonly description: string;
  /** Parameter names with their defaults (documentation and typo checks). */
  readonly defaults: Readonly<PolicyParams>;
  /** Validates params (typed errors) and builds the policy. */
  create(params: PolicyParams, env: PolicyEnv): Policy;
}

/** What policies get at construction. */
export interface PolicyEnv {
  readonly fleet: FleetSnapshot;
  readonly blockSize: number;
  readonly kernels: import('../kernels/abi.js').KernelBackend;
}
