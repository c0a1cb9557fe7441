/**
 * Weighted rendezvous hashing (highest random weight; Thaler & Ravishankar 1998), with weights by the
 * logarithmic method of Schindelhauer & Schomaker (2005): node i scores weight[i] / −ln(u_i) where u_i
 * is a uniform (0, 1) draw derived from (key, node); the highest score wins, so node i wins with
 * probability weight[i] / Σ weight and a weight change only moves keys to or from that node.
 *
 * Every backend must pick the same node, so both the uniform draw and the logarithm are pinned down bit
 * for bit: u comes from the top 52 bits of the SplitMix64 finalizer (Steele, Lea & Flood 2014), and
 * `lnp` is the portable logarithm of abi.ts rather than the platform's (Math.log, libm and the
 * AssemblyScript std may differ in the last ulp, which would flip near-ties).
 */
import { BAD_ARG, NO_NODE, OUT_TOO_SMALL } from './status';
import { inMemory } from './guard';

/** The SplitMix64 finalizer, exactly as in abi.ts. */
// @ts-ignore: decorator
@inline
export function mix64(z: u64): u64 {
  z ^= z >> 30;
  z *= 0xbf58476d1ce4e5b9;
  z ^= z >> 27;
  z *= 0x94d049bb133111eb;
  z ^= z >> 31;
  return z;
}

const SQRT2: f64 = 1.4142135623730951;
const LN2: f64 = 0.6931471805599453;
const EXP_MASK: u64 = 0x7ff0000000000000;
const MANT_MASK: u64 = 0x000fffffffffffff;
const EXP_BIAS: i32 = 1023;

/**
 * Portable natural logarithm for a positive normal double (abi.ts): x = 2^e · m with m in [1, 2),
 * folded to [√2/2, √2]; ln m = 2 · atanh(s) with s = (m − 1)/(m + 1), the atanh series
 * s · Σ z^k / (2k + 1), z = s², to k = 11, evaluated by Horner's rule. Every step is one IEEE
 * operation in the specified order; WebAssembly has no implicit fused multiply-add, and the
 * coefficients C[k] = 1.0 / (2k + 1) are folded by the compiler with the same IEEE division.
 */
// @ts-ignore: decorator
@inline
export function lnp(x: f64): f64 {
  const bits = reinterpret<u64>(x);
  let e = <i32>((bits & EXP_MASK) >> 52) - EXP_BIAS;
  let m = reinterpret<f64>((bits & MANT_MASK) | (<u64>EXP_BIAS << 52));
  if (m > SQRT2) {
    m = m * 0.5;
    e = e + 1;
  }
  const s = (m - 1.0) / (m + 1.0);
  const z = s * s;
  let p: f64 = 1.0 / 23.0; // C[11]
  p = p * z + 1.0 / 21.0; // C[10]
  p = p * z + 1.0 / 19.0;
  p = p * z + 1.0 / 17.0;
  p = p * z + 1.0 / 15.0;
  p = p * z + 1.0 / 13.0;
  p = p * z + 1.0 / 11.0;
  p = p * z + 1.0 / 9.0;
  p = p * z + 1.0 / 7.0;
  p = p * z + 1.0 / 5.0;
  p = p * z + 1.0 / 3.0;
  p = p * z + 1.0; // C[0]
  return f64(e) * LN2 + 2.0 * s * p;
}

/** 2^−53: maps the odd integers 1 … 2^53 − 1 onto (0, 1) exactly. */
const TWO_POW_M53: f64 = 1.1102230246251565e-16;

/** Node `i`'s score for `key`: weight / −ln(u), u = (2k + 1) · 2^−53, k = top 52 bits of mix64. */
// @ts-ignore: decorator
@inline
function score(key: u64, nodeHash: u64, weight: f64): f64 {
  const k = mix64(key ^ nodeHash) >> 12;
  // 2k + 1 < 2^53: exact in a double, and converted as signed (one instruction; u64 → f64 is several).
  const u = f64(<i64>((k << 1) + 1)) * TWO_POW_M53;
  return weight / (0.0 - lnp(u));
}

/** Highest score over n nodes (hashes u64[n], weights f64[n]); ties keep the lowest index (strict >). */
// @ts-ignore: decorator
@inline
function pick(hashesPtr: usize, weightsPtr: usize, n: u32, key: u64): i32 {
  let best: i32 = NO_NODE;
  let bestScore: f64 = -Infinity;
  for (let i: usize = 0; i < <usize>n; i++) {
    const s = score(key, load<u64>(hashesPtr + (i << 3)), load<f64>(weightsPtr + (i << 3)));
    if (s > bestScore) {
      bestScore = s;
      best = <i32>i;
    }
  }
  return best; // NO_NODE when n = 0 (or every score is NaN)
}

// @ts-ignore: decorator
@inline
function tableInMemory(hashesPtr: usize, weightsPtr: usize, n: u32): bool {
  return inMemory(hashesPtr, u64(n) << 3) && inMemory(weightsPtr, u64(n) << 3);
}

/** The rendezvous winner for `key` among n nodes, NO_NODE when n = 0. */
export function rendezvousLookup(hashesPtr: usize, weightsPtr: usize, n: u32, key: u64): i32 {
  if (!tableInMemory(hashesPtr, weightsPtr, n)) return BAD_ARG;
  return pick(hashesPtr, weightsPtr, n, key);
}

/** rendezvousLookup for `count` u64 keys, i32 results at `outPtr` (room for `outCap`). Returns count. */
export function rendezvousLookupBatch(hashesPtr: usize, weightsPtr: usize, n: u32, keysPtr: usize, count: u32, outPtr: usize, outCap: u32): i32 {
  if (outCap < count) return OUT_TOO_SMALL;
  if (count > <u32>i32.MAX_VALUE || !inMemory(keysPtr, u64(count) << 3) || !inMemory(outPtr, u64(count) << 2)) return BAD_ARG;
  if (!tableInMemory(hashesPtr, weightsPtr, n)) return BAD_ARG;
  for (let i: usize = 0; i < <usize>count; i++) {
    store<i32>(outPtr + (i << 2), pick(hashesPtr, weightsPtr, n, load<u64>(keysPtr + (i << 3))));
  }
  return <i32>count;
}
