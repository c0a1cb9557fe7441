/**
 * Consistent hashing with bounded loads (Mirrokni, Thorup & Zadimoghaddam, "Consistent Hashing with
 * Bounded Loads", SODA 2018) over a ring or a Maglev table: a key goes to the first slot at or after
 * its home slot whose node is still below its capacity ceil(c · m · share), where m is the number of
 * keys placed so far plus this one. With c > 1 no node exceeds c times its share of the load, and
 * keys move only when their home node fills up.
 *
 * loads u32[nodeCount] (updated in place), shares f64[nodeCount]. The capacity is computed as
 * ceil((c · m) · share) and the test as loads[j] + 1 ≤ capacity, both in doubles, exactly as the
 * reference does, so every backend refuses at the same key. Slots whose node id is not in
 * 0 … nodeCount−1 (an empty Maglev entry, a corrupt ring) never qualify.
 */
import { BAD_ARG, NO_NODE, OUT_TOO_SMALL, OK } from './status';
import { inMemory } from './guard';
import { ringInMemory, ringSlot } from './ring';

/** Argument checks in the reference's order: loads/shares shape and c (BAD_ARG), then out (OUT_TOO_SMALL). */
// @ts-ignore: decorator
@inline
function checkArgs(
  nodeCount: u32,
  keysPtr: usize,
  count: u32,
  loadsPtr: usize,
  loadsCount: u32,
  sharesPtr: usize,
  sharesCount: u32,
  c: f64,
  outPtr: usize,
  outCap: u32,
): i32 {
  if (loadsCount != nodeCount || sharesCount != nodeCount) return BAD_ARG;
  if (!(c > 1.0) || c == Infinity) return BAD_ARG; // also rejects NaN
  if (outCap < count) return OUT_TOO_SMALL;
  if (
    count > <u32>i32.MAX_VALUE ||
    !inMemory(keysPtr, u64(count) << 3) ||
    !inMemory(outPtr, u64(count) << 2) ||
    !inMemory(loadsPtr, u64(nodeCount) << 2) ||
    !inMemory(sharesPtr, u64(nodeCount) << 3)
  ) {
    return BAD_ARG;
  }
  return OK;
}

/** Σ loads as a double (exact below 2^53), the starting total. */
// @ts-ignore: decorator
@inline
function sumLoads(loadsPtr: usize, nodeCount: u32): f64 {
  let total: f64 = 0;
  for (let j: usize = 0; j < <usize>nodeCount; j++) total += f64(load<u32>(loadsPtr + (j << 2)));
  return total;
}

/**
 * Walks at most one full turn of `slotCount` slots (node ids i32 at `slotsPtr`) from `home`, and
 * returns the first node under capacity for this key, or NO_NODE. `cm` = c · m for this key.
 */
// @ts-ignore: decorator
@inline
function walk(slotsPtr: usize, slotCount: u32, home: u32, nodeCount: u32, loadsPtr: usize, sharesPtr: usize, cm: f64): i32 {
  let s = home;
  for (let step: u32 = 0; step < slotCount; step++) {
    const j = load<i32>(slotsPtr + (<usize>s << 2));
    if (<u32>j < nodeCount) {
      const capacity = Math.ceil(cm * load<f64>(sharesPtr + (<usize>j << 3)));
      if (f64(load<u32>(loadsPtr + (<usize>j << 2))) + 1.0 <= capacity) return j;
    }
    if (++s == slotCount) s = 0;
  }
  return NO_NODE;
}

/**
 * Bounded-load assignment over a ring (see ring.ts for the ring arguments; the home slot is the
 * lookup's point index). Returns the number of keys that got NO_NODE, or BAD_ARG / OUT_TOO_SMALL.
 */
export function ringAssignBounded(
  pointsPtr: usize,
  nodesPtr: usize,
  n: u32,
  indexPtr: usize,
  bits: u32,
  nodeCount: u32,
  keysPtr: usize,
  count: u32,
  loadsPtr: usize,
  loadsCount: u32,
  sharesPtr: usize,
  sharesCount: u32,
  c: f64,
  outPtr: usize,
  outCap: u32,
): i32 {
  const bad = checkArgs(nodeCount, keysPtr, count, loadsPtr, loadsCount, sharesPtr, sharesCount, c, outPtr, outCap);
  if (bad != OK) return bad;
  if (n == 0) {
    for (let k: usize = 0; k < <usize>count; k++) store<i32>(outPtr + (k << 2), NO_NODE);
    return <i32>count;
  }
  if (!ringInMemory(pointsPtr, nodesPtr, n, indexPtr, bits)) return BAD_ARG;

  let total = sumLoads(loadsPtr, nodeCount);
  let refused: i32 = 0;
  for (let k: usize = 0; k < <usize>count; k++) {
    const home = ringSlot(pointsPtr, n, indexPtr, bits, <u32>load<u64>(keysPtr + (k << 3)));
    const j = walk(nodesPtr, n, home, nodeCount, loadsPtr, sharesPtr, c * (total + 1.0));
    store<i32>(outPtr + (k << 2), j);
    if (j == NO_NODE) {
      refused++;
    } else {
      const at = loadsPtr + (<usize>j << 2);
      store<u32>(at, load<u32>(at) + 1);
      total += 1.0;
    }
  }
  return refused;
}

/**
 * Bounded-load assignment over a built Maglev table of `size` entries (home slot: key mod M).
 * Returns the number of keys that got NO_NODE, or BAD_ARG / OUT_TOO_SMALL.
 */
export function maglevAssignBounded(
  tablePtr: usize,
  size: u32,
  nodeCount: u32,
  keysPtr: usize,
  count: u32,
  loadsPtr: usize,
  loadsCount: u32,
  sharesPtr: usize,
  sharesCount: u32,
  c: f64,
  outPtr: usize,
  outCap: u32,
): i32 {
  const bad = checkArgs(nodeCount, keysPtr, count, loadsPtr, loadsCount, sharesPtr, sharesCount, c, outPtr, outCap);
  if (bad != OK) return bad;
  if (!inMemory(tablePtr, u64(size) << 2)) return BAD_ARG;
  if (size == 0) {
    for (let k: usize = 0; k < <usize>count; k++) store<i32>(outPtr + (k << 2), NO_NODE);
    return <i32>count;
  }

  const m = u64(size);
  let total = sumLoads(loadsPtr, nodeCount);
  let refused: i32 = 0;
  for (let k: usize = 0; k < <usize>count; k++) {
    const home = <u32>(load<u64>(keysPtr + (k << 3)) % m);
    const j = walk(tablePtr, size, home, nodeCount, loadsPtr, sharesPtr, c * (total + 1.0));
    store<i32>(outPtr + (k << 2), j);
    if (j == NO_NODE) {
      refused++;
    } else {
      const at = loadsPtr + (<usize>j << 2);
      store<u32>(at, load<u32>(at) + 1);
      total += 1.0;
    }
  }
  return refused;
}
