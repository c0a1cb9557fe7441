/**
 * The WebAssembly kernel module: the flat ABI of src/kernels/abi.ts (ABI_EXPORTS and INDEX_EXPORTS)
 * plus `heapBase`.
 *
 * Nothing in this module allocates by itself (runtime "stub", no arrays, strings or classes): every
 * kernel reads and writes the regions the host passes as pointer + count, and the host
 * (src/kernels/wasm.ts) owns all memory above `heapBase()`. The prefix index, which must grow, asks
 * the host for regions through the imported `env.hostAlloc` / `env.hostFree` (prefix-index.ts). Arguments are validated inside each kernel and reported as negative
 * status codes (status.ts); no input the host can pass makes a kernel trap.
 */
import { ABI_VERSION } from './status';

/** The kernel ABI version; the host refuses a module whose version differs from ABI_VERSION. */
export function abiVersion(): i32 {
  return ABI_VERSION;
}

/** First byte of linear memory the host may use (everything below holds the module's static data). */
export function heapBase(): usize {
  return __heap_base;
}

export { xxh64 } from './xxh64';
export { hashTokens, hashBytes, hashTokensBatch } from './prefix-hash';
export { jump, jumpBatch } from './jump';
export { ringLookup, ringLookupBatch } from './ring';
export { maglevBuild, maglevLookup, maglevLookupBatch } from './maglev';
export { rendezvousLookup, rendezvousLookupBatch } from './rendezvous';
export { ringAssignBounded, maglevAssignBounded } from './bounded';
export { indexCreate, indexApply, indexMatch, indexStats, indexDump, indexFree } from './prefix-index';
