/**
 * Maglev table population and lookup (Eisenbud et al., "Maglev: A Fast and Reliable Software Network
 * Load Balancer", NSDI 2016, §3.4, Pseudocode 1), with weighted turns.
 *
 * Each node i walks its own permutation of the M slots, offset[i], offset[i] + skip[i], … (mod M);
 * with M prime and 1 ≤ skip < M the walk visits every slot. Nodes take turns claiming the next empty
 * slot of their walk until the table is full, so every node ends with ⌊M/n⌋ or ⌈M/n⌉ slots (unweighted)
 * and a node change moves few keys. Weights: a node earns weight[i] credit a round and takes a turn per
 * wmax credit, so node i takes about weight[i] / wmax turns a round (the heaviest node one every round).
 *
 * The walks use a conditional subtract instead of `%` (pos + skip < 2M ≤ 2^27), and each claim is
 * bounded to M probes: with a prime M that bound is never reached, but a non-prime M (primality is the
 * host's check) with skip sharing a factor with M would otherwise loop for ever; it returns BAD_ARG.
 */
import { BAD_ARG, MAX_MAGLEV_SIZE, NO_NODE, OUT_TOO_SMALL } from './status';
import { inMemory, overlaps } from './guard';

/** True when the written region [ptr, ptr + bytes) overlaps any of the three input arrays. */
// @ts-ignore: decorator
@inline
function overlapsInputs(ptr: usize, bytes: u64, offsetsPtr: usize, skipsPtr: usize, weightsPtr: usize, n4: u64): bool {
  return overlaps(ptr, bytes, offsetsPtr, n4) || overlaps(ptr, bytes, skipsPtr, n4) || overlaps(ptr, bytes, weightsPtr, n4);
}

/**
 * Builds the table: n nodes with offset u32[n], skip u32[n], weight u32[n]; `size` = M entries (i32)
 * at `tablePtr`. Scratch from the host: pos u32[n] at `posScratchPtr`, credit u64[n] at
 * `creditScratchPtr` (u64 because credit + weight can reach 2 · (2^32 − 1)). Returns M, or BAD_ARG
 * (n = 0, M < n, M > 2^26, offset ≥ M, skip outside 1 … M−1, weight 0, a walk that cannot find an
 * empty slot, a region outside memory, or a written region overlapping another).
 */
export function maglevBuild(
  offsetsPtr: usize,
  skipsPtr: usize,
  weightsPtr: usize,
  n: u32,
  size: u32,
  posScratchPtr: usize,
  creditScratchPtr: usize,
  tablePtr: usize,
): i32 {
  if (n == 0 || size < n || size > MAX_MAGLEV_SIZE) return BAD_ARG;
  const n4 = u64(n) << 2;
  if (
    !inMemory(offsetsPtr, n4) ||
    !inMemory(skipsPtr, n4) ||
    !inMemory(weightsPtr, n4) ||
    !inMemory(posScratchPtr, n4) ||
    !inMemory(creditScratchPtr, u64(n) << 3) ||
    !inMemory(tablePtr, u64(size) << 2)
  ) {
    return BAD_ARG;
  }
  // The three written regions (pos, credit, table) must not overlap each other or the inputs: the
  // walk re-reads skips, weights and pos while it writes, and a corrupted skip or pos would send it
  // out of bounds, a zeroed weight would stall it.
  const credit8 = u64(n) << 3;
  const table4 = u64(size) << 2;
  if (
    overlaps(posScratchPtr, n4, creditScratchPtr, credit8) ||
    overlaps(posScratchPtr, n4, tablePtr, table4) ||
    overlaps(creditScratchPtr, credit8, tablePtr, table4) ||
    overlapsInputs(posScratchPtr, n4, offsetsPtr, skipsPtr, weightsPtr, n4) ||
    overlapsInputs(creditScratchPtr, credit8, offsetsPtr, skipsPtr, weightsPtr, n4) ||
    overlapsInputs(tablePtr, table4, offsetsPtr, skipsPtr, weightsPtr, n4)
  ) {
    return BAD_ARG;
  }

  let wmax: u32 = 0;
  for (let i: usize = 0; i < <usize>n; i++) {
    const offset = load<u32>(offsetsPtr + (i << 2));
    const skip = load<u32>(skipsPtr + (i << 2));
    const weight = load<u32>(weightsPtr + (i << 2));
    if (offset >= size || skip < 1 || skip >= size || weight < 1) return BAD_ARG;
    if (weight > wmax) wmax = weight;
    store<u32>(posScratchPtr + (i << 2), offset);
    store<u64>(creditScratchPtr + (i << 3), 0);
  }
  memory.fill(tablePtr, 0xff, <usize>size << 2); // every entry −1 (empty)

  let filled: u32 = 0;
  while (true) {
    for (let i: usize = 0; i < <usize>n; i++) {
      const creditAt = creditScratchPtr + (i << 3);
      let credit = load<u64>(creditAt) + u64(load<u32>(weightsPtr + (i << 2)));
      if (credit < u64(wmax)) {
        store<u64>(creditAt, credit);
        continue;
      }
      store<u64>(creditAt, credit - u64(wmax));

      const skip = load<u32>(skipsPtr + (i << 2));
      const posAt = posScratchPtr + (i << 2);
      let pos = load<u32>(posAt);
      let probes: u32 = 0;
      while (load<i32>(tablePtr + (<usize>pos << 2)) >= 0) {
        pos += skip;
        if (pos >= size) pos -= size;
        if (++probes == size) return BAD_ARG; // a full cycle without an empty slot: skip shares a factor with M
      }
      store<i32>(tablePtr + (<usize>pos << 2), <i32>i);
      pos += skip;
      if (pos >= size) pos -= size;
      store<u32>(posAt, pos);
      if (++filled == size) return <i32>size;
    }
  }
  return <i32>size; // unreachable: the loop returns once filled = M
}

/** The node of `key` in a built table of `size` entries: table[key mod M] (u64 modulo). */
export function maglevLookup(tablePtr: usize, size: u32, key: u64): i32 {
  if (size == 0) return NO_NODE;
  if (!inMemory(tablePtr, u64(size) << 2)) return BAD_ARG;
  return load<i32>(tablePtr + (<usize>(key % u64(size)) << 2));
}

/** maglevLookup for `count` u64 keys, i32 results at `outPtr` (room for `outCap`). Returns count. */
export function maglevLookupBatch(tablePtr: usize, size: u32, keysPtr: usize, count: u32, outPtr: usize, outCap: u32): i32 {
  if (outCap < count) return OUT_TOO_SMALL;
  if (count > <u32>i32.MAX_VALUE || !inMemory(keysPtr, u64(count) << 3) || !inMemory(outPtr, u64(count) << 2)) return BAD_ARG;
  if (size == 0) {
    for (let i: usize = 0; i < <usize>count; i++) store<i32>(outPtr + (i << 2), NO_NODE);
    return <i32>count;
  }
  if (!inMemory(tablePtr, u64(size) << 2)) return BAD_ARG;
  const m = u64(size);
  for (let i: usize = 0; i < <usize>count; i++) {
    const slot = <usize>(load<u64>(keysPtr + (i << 3)) % m);
    store<i32>(outPtr + (i << 2), load<i32>(tablePtr + (slot << 2)));
  }
  return <i32>count;
}
