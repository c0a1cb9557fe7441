/**
 * The fleet simulator's entry point (DESIGN §6): `simulate(config)` runs a workload through the real
 * Router and simulated vLLM engines and returns what it measured. Deterministic for a seed: the whole
 * result except `perf` (wall-clock figures) is a pure function of the configuration.
 *
 *   const result = simulate({
 *     fleet: [{ accelerator: 'H100', model: 'llama-3-8b', replicas: 16 }],
 *     workload: loadMooncake(),
 *     policy: 'predicted-ttft',
 *     seed: 1,
 *   });
 */
import { Simulation, type SimConfig, type SimResult } from './sim.js';

export function simulate(config: SimConfig): SimResult {
  return new Simulation(config).run();
}

export { Simulation };
export type { SimConfig, SimResult, PoolConfig, FailureScenario, ReplicaResult, TimelineBucket, ReplicaTimeline, QuantileCurve } from './sim.js';
export { SimEngine, EngineRequest, rooflineStepModel, DEFAULT_MAX_BATCHED_TOKENS, DEFAULT_MAX_NUM_SEQS } from './engine.js';
export type { StepModel, EngineOptions, EngineListener, EngineStats } from './engine.js';
export {
  loadMooncake,
  loadAzure,
  sharedPrefix,
  llmdPrecisePrefix,
  multiTurn,
  zipfPrefixes,
  scaleRate,
  rampRate,
  sliceWorkload,
  describeWorkload,
  workloadFromSpec,
  WORKLOAD_KINDS,
  fillStream,
  VOCAB,
  MOONCAKE_BLOCK_TOKENS,
} from './workloads.js';
export type { Workload, WorkloadSpec, WorkloadRequest, MooncakeOptions, AzureOptions, SharedPrefixOptions, MultiTurnOptions, ZipfPrefixOptions } from './workloads.js';
export { LatencyHistogram, maxOverMean } from './metrics.js';
export type { Percentiles } from './metrics.js';
export { HitCeilings, ThreadedCeilings } from './ceilings.js';
export type { CeilingResult, CeilingSink } from './ceilings.js';
export { EventQueue } from './event-queue.js';
export { BlockHashTable, BlockHashSet, LruBlockSet } from './block-table.js';
export { compare, renderCompare, SCENARIO_NAMES } from './compare.js';
export type { CompareOptions, CompareResult, Verdict, Versus, PolicyStats, ScenarioName, ScenarioRun, KneeResult } from './compare.js';
export { sweep, renderSweep, SimRunner, runAll, capacityOf } from './sweep.js';
export type { SweepOptions, SweepResult, SimJob, SimExtras } from './sweep.js';
export { compareHtml, sweepHtml } from './report-html.js';
export { loadFleet, parseFleet, describeFleet, shippedFleets } from './fleet-config.js';
export type { FleetConfig } from './fleet-config.js';
export type { PolicyRef, RunSummary, Spread } from './summary.js';
