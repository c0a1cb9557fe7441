/**
 * Status codes returned by the kernels. They mirror `Status` in src/kernels/abi.ts exactly (the host
 * compares numbers, not names); expected failures return one of these, nothing traps.
 */

export const OK: i32 = 0;
/** Block size outside 1 … 1024. */
export const BLOCK_SIZE: i32 = -1;
/** The output region is shorter than the result. */
export const OUT_TOO_SMALL: i32 = -2;
/** Jump hash with fewer than one bucket. */
export const EMPTY: i32 = -3;
/** Any other argument out of range (lengths, offsets, Maglev parameters, c, memory ranges). */
export const BAD_ARG: i32 = -4;
/** The host could not grow memory (never produced inside the module, which allocates nothing). */
export const NO_MEMORY: i32 = -5;

/** Written to lookup outputs when no node qualifies. */
export const NO_NODE: i32 = -1;

/** Mirrors ABI_VERSION in abi.ts; bumped with any change of kernel semantics or signatures. */
export const ABI_VERSION: i32 = 2;

export const MIN_BLOCK_SIZE: u32 = 1;
export const MAX_BLOCK_SIZE: u32 = 1024;
export const MAX_MAGLEV_SIZE: u32 = 1 << 26;
export const MAX_RING_INDEX_BITS: u32 = 24;
