/**
 * Ring lookup (ketama style consistent hashing; Karger et al. 1997, as deployed in libketama): points
 * u32[n] sorted ascending, nodes i32[n] the node id owning each point. A key's ring position is the low
 * 32 bits of the key; it belongs to the first point at or after it, wrapping to point 0.
 *
 * The optional index is a bucketed accelerator: index[p] = first i with points[i] ≥ p · 2^(32−bits),
 * index[2^bits] = n. A position h with top bits p can only land in [index[p], index[p+1]] (the point
 * at index[p+1] is ≥ (p+1) · 2^(32−bits) > h), so the binary search runs over a few points instead of
 * all n (160,000 points with 2^16 buckets: ~2.4 points a bucket). With bits = 0 (no index, or one the
 * host found inconsistent) the search covers the whole ring; both give the plain lower bound.
 */
import { BAD_ARG, MAX_RING_INDEX_BITS, NO_NODE, OUT_TOO_SMALL } from './status';
import { inMemory } from './guard';

/** True when `bits` selects the index (1 … 24); 0 and anything else mean "no index". */
// @ts-ignore: decorator
@inline
export function indexUsable(bits: u32): bool {
  return bits - 1 < MAX_RING_INDEX_BITS; // unsigned: bits = 0 wraps to 2^32 − 1
}

/** True when the ring's regions (and its index, when used) lie inside memory. */
// @ts-ignore: decorator
@inline
export function ringInMemory(pointsPtr: usize, nodesPtr: usize, n: u32, indexPtr: usize, bits: u32): bool {
  return (
    inMemory(pointsPtr, u64(n) << 2) &&
    inMemory(nodesPtr, u64(n) << 2) &&
    (!indexUsable(bits) || inMemory(indexPtr, ((u64(1) << bits) + 1) << 2))
  );
}

/**
 * The point index a ring position falls on: the first i with points[i] ≥ h, or 0 (wrap-around) when
 * there is none. Requires n ≥ 1. Index entries are clamped to n so a corrupt index cannot send the
 * search outside the points.
 */
// @ts-ignore: decorator
@inline
export function ringSlot(pointsPtr: usize, n: u32, indexPtr: usize, bits: u32, h: u32): u32 {
  let lo: u32 = 0;
  let hi: u32 = n;
  if (indexUsable(bits)) {
    const at = indexPtr + (<usize>(h >> (32 - bits)) << 2);
    hi = min(load<u32>(at, 4), n);
    lo = min(load<u32>(at), hi);
  }
  // Lower bound over [lo, hi): the answer is in [lo, hi]; `len` shrinks by half each step.
  let len = hi - lo;
  while (len > 0) {
    const half = len >> 1;
    const mid = lo + half;
    if (load<u32>(pointsPtr + (<usize>mid << 2)) < h) {
      lo = mid + 1;
      len -= half + 1;
    } else {
      len = half;
    }
  }
  return lo == n ? 0 : lo;
}

/** The node owning `key` on the ring, NO_NODE when the ring is empty (BAD_ARG: regions outside memory). */
export function ringLookup(pointsPtr: usize, nodesPtr: usize, n: u32, indexPtr: usize, bits: u32, key: u64): i32 {
  if (n == 0) return NO_NODE;
  if (!ringInMemory(pointsPtr, nodesPtr, n, indexPtr, bits)) return BAD_ARG;
  const slot = ringSlot(pointsPtr, n, indexPtr, bits, <u32>key);
  return load<i32>(nodesPtr + (<usize>slot << 2));
}

/** ringLookup for `count` u64 keys, i32 results at `outPtr` (room for `outCap`). Returns count. */
export function ringLookupBatch(
  pointsPtr: usize,
  nodesPtr: usize,
  n: u32,
  indexPtr: usize,
  bits: u32,
  keysPtr: usize,
  count: u32,
  outPtr: usize,
  outCap: u32,
): i32 {
  if (outCap < count) return OUT_TOO_SMALL;
  if (count > <u32>i32.MAX_VALUE || !inMemory(keysPtr, u64(count) << 3) || !inMemory(outPtr, u64(count) << 2)) return BAD_ARG;
  if (n == 0) {
    for (let i: usize = 0; i < <usize>count; i++) store<i32>(outPtr + (i << 2), NO_NODE);
    return <i32>count;
  }
  if (!ringInMemory(pointsPtr, nodesPtr, n, indexPtr, bits)) return BAD_ARG;
  for (let i: usize = 0; i < <usize>count; i++) {
    const slot = ringSlot(pointsPtr, n, indexPtr, bits, <u32>load<u64>(keysPtr + (i << 3)));
    store<i32>(outPtr + (i << 2), load<i32>(nodesPtr + (<usize>slot << 2)));
  }
  return <i32>count;
}
