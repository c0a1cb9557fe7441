/**
 * Dystro's public API: the router a proxy embeds (createRouter → route → ticket callbacks), its fleet,
 * prefix index, KV event ingest and policy registry; underneath, the kernels (prefix block hashing and
 * consistent hashing over a WebAssembly, native or TypeScript backend).
 */

// The router (DESIGN §1–§2, §4).
export { createRouter, Router } from './router/router.js';
export type { AttachableIngest, RouteOptions, RouterOptions } from './router/router.js';
export type {
  CandidateExplanation,
  Decision,
  Explanation,
  PickContext,
  Policy,
  PolicyEnv,
  PolicyFactory,
  PolicyParams,
  QueuedDecision,
  RoutedDecision,
  RouteRequest,
  ShedDecision,
  Ticket,
} from './router/types.js';
export type { SloClassSpec, TenantQuota } from './router/admission.js';
export { RouterMetrics } from './router/metrics.js';
export { CANARY_METRICS } from './router/rollout.js';
export type { CanaryEvent, CanaryGuard, CanaryMetric, CanaryOptions, CanaryState, CanaryStatus, GuardReading, ShadowReport } from './router/rollout.js';

// Policies: the registry every built-in is registered in (by stable name), and the class for your own.
export { defaultRegistry as policies } from './policies/index.js';
export { PolicyRegistry } from './policies/registry.js';

// Fleet, prefix index and KV event ingest.
export { Fleet } from './fleet/fleet.js';
export type { FleetChange, FleetOptions, FleetSnapshot, Health, PoolSpec, PoolView, ReplicaSpec, ReplicaView } from './fleet/fleet.js';
export type { LoadReport, SanitizeOutcome } from './fleet/load.js';
export { MatchResult, PrefixIndex } from './index/prefix-index.js';
export type { IndexEntry, IndexStats, PrefixIndexOptions } from './index/prefix-index.js';
export { KvEventIngest } from './index/kv-events.js';
export type { IngestOptions, IngestResult, KvEventIngestOptions, RecordSink, ReplayOptions, ReplicaIndexState, SubscribeOptions } from './index/kv-events.js';
export { IngestPool } from './host/ingest-pool.js';
export type { IngestPoolOptions } from './host/ingest-pool.js';
export type { ReplicaNamespace } from './index/replica-state.js';
export type { ReplayFrame, ReplaySource, Timers } from './index/sequencer.js';
export { REJECT_REASONS, decodeKvEventBatch } from './index/vllm-events.js';
export type { DecodeLimits, DecodeResult, KvEvent, KvEventBatch, RejectReason } from './index/vllm-events.js';

// Injected time (tests and the simulator drive a FakeClock).
export { FakeClock, systemClock } from './clock.js';
export type { Clock } from './clock.js';

// Kernels.
export { ABI_VERSION, NO_NODE, Status, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE } from './kernels/abi.js';
export type { BackendName, KernelBackend, KernelTable } from './kernels/abi.js';
export { loadKernels, loadKernelsSync, loadBackend, availableBackends, describeSelection, BACKEND_NAMES } from './kernels/select.js';
export type { BackendChoice, BackendAttempt, LoadedKernels, LoadKernelsOptions } from './kernels/select.js';
export { PrefixHasher, namespaceBytes, DEFAULT_BLOCK_SIZE, NAMESPACE_VERSION } from './hashing/prefix.js';
export type { Namespace, PrefixHasherOptions } from './hashing/prefix.js';
export { HashRing, Maglev, Rendezvous, jumpHash, jumpHashBatch, keyOf, MAGLEV_OFFSET_SEED, MAGLEV_SKIP_SEED } from './hashing/consistent.js';
export type { NodeSpec, RingOptions, MaglevOptions } from './hashing/consistent.js';
export { DystroError, ERROR_CODES } from './errors.js';
export type { ErrorCode } from './errors.js';
export { createRng } from './rng.js';
export type { Rng } from './rng.js';
