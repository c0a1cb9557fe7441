/**
 * Memory-range guard shared by the kernels.
 *
 * The host passes raw pointers into this module's linear memory. A host bug (a stale pointer, a count
 * that does not match its region) must come back as BAD_ARG rather than an out-of-bounds trap, so every
 * kernel checks each region it touches once per call, before the loop. The sums are done in u64 so a
 * huge count cannot wrap around the 32-bit address space.
 */

/** Bytes in one WebAssembly page. */
const PAGE_BYTES_LOG2: u64 = 16;

/** True when the byte range [ptr, ptr + bytes) lies inside the current linear memory. */
// @ts-ignore: decorator
@inline
export function inMemory(ptr: usize, bytes: u64): bool {
  return u64(ptr) + bytes <= u64(memory.size()) << PAGE_BYTES_LOG2;
}

/**
 * True when the byte ranges [a, a + aBytes) and [b, b + bBytes) share a byte (empty ranges share
 * none). Kernels whose later reads depend on their own earlier writes (Maglev's walk state, the batch
 * hash's outOffsets) reject output regions that overlap anything else: an overlap would let a write
 * corrupt a length or position and turn into an out-of-bounds access or an endless walk.
 */
// @ts-ignore: decorator
@inline
export function overlaps(a: usize, aBytes: u64, b: usize, bBytes: u64): bool {
  return aBytes != 0 && bBytes != 0 && u64(a) < u64(b) + bBytes && u64(b) < u64(a) + aBytes;
}
