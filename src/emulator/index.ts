/**
 * The engine emulator (DESIGN §7): a vLLM-like engine behind an OpenAI-compatible HTTP API, paced by the
 * performance model, with a real prefix cache, vLLM's KV events over ZeroMQ, vLLM's /metrics and fault
 * knobs. `dystro engine` runs one from the command line (src/cli/engine.ts).
 */
export { EngineEmulator, startEngineEmulator } from './server.js';
export type { CrashMode, EmulatorState, EngineEmulatorOptions, FaultSettings } from './server.js';
export { EngineLoop } from './engine-loop.js';
export type { EngineLoopOptions, LoopRequest } from './engine-loop.js';
export { KvPublisher, encodeEventBatch } from './kv-publisher.js';
export type { EventEncoding, HashFormat, KvEventSpec, KvPublisherOptions, KvPublisherStats } from './kv-publisher.js';
export { EmulatorMetrics } from './metrics.js';
export { OutputSampler } from './output.js';
