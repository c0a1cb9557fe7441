/**
 * Dystro's public API. Kernels first (this release): prefix block hashing and consistent hashing over
 * a WebAssembly, native or TypeScript backend. The router, policies and simulator build on these.
 */
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
