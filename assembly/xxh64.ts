/**
 * XXH64, Yann Collet's 64-bit xxHash (the published algorithm: four 64-bit lanes over 32-byte stripes,
 * lane merge, 8/4/1-byte tail, avalanche), little-endian input, 64-bit seed.
 *
 * Written for the prefix chain, where block b is hashed with seed h[b−1]: the chain is latency bound
 * (each block waits for the previous hash), so what matters is the length of the dependent multiply
 * chain per block, not throughput. Everything here is inlined into the callers, loads are raw
 * `load<u64>` (no AssemblyScript bounds checks: the callers check each region once), and
 * `xxh64Stripes` drops the tail code entirely for inputs that are whole stripes (for example 16-token
 * blocks = 64 bytes = two stripes), which is the common case.
 */
import { inMemory } from './guard';

// The five 64-bit primes of the specification.
const P1: u64 = 0x9e3779b185ebca87;
const P2: u64 = 0xc2b2ae3d27d4eb4f;
const P3: u64 = 0x165667b19e3779f9;
const P4: u64 = 0x85ebca77c2b2ae63;
const P5: u64 = 0x27d4eb2f165667c5;

/** Bytes in one stripe (four 8-byte lanes). */
const STRIPE_BYTES: usize = 32;

// @ts-ignore: decorator
@inline
function round(acc: u64, lane: u64): u64 {
  acc += lane * P2;
  acc = rotl<u64>(acc, 31);
  return acc * P1;
}

// @ts-ignore: decorator
@inline
function mergeRound(acc: u64, v: u64): u64 {
  acc ^= round(0, v);
  return acc * P1 + P4;
}

// @ts-ignore: decorator
@inline
function avalanche(h: u64): u64 {
  h ^= h >> 33;
  h *= P2;
  h ^= h >> 29;
  h *= P3;
  h ^= h >> 32;
  return h;
}

/** Converges the four lanes after the last stripe. */
// @ts-ignore: decorator
@inline
function converge(v1: u64, v2: u64, v3: u64, v4: u64): u64 {
  let h = rotl<u64>(v1, 1) + rotl<u64>(v2, 7) + rotl<u64>(v3, 12) + rotl<u64>(v4, 18);
  h = mergeRound(h, v1);
  h = mergeRound(h, v2);
  h = mergeRound(h, v3);
  h = mergeRound(h, v4);
  return h;
}

/**
 * XXH64 of `len` bytes at `ptr` when `len` is a non-zero multiple of 32 bytes: the stripe loop,
 * unrolled over the four lanes, and no tail. The caller guarantees the length.
 */
// @ts-ignore: decorator
@inline
export function xxh64Stripes(ptr: usize, len: usize, seed: u64): u64 {
  let v1 = seed + P1 + P2;
  let v2 = seed + P2;
  let v3 = seed;
  let v4 = seed - P1;
  const end = ptr + len;
  do {
    v1 = round(v1, load<u64>(ptr));
    v2 = round(v2, load<u64>(ptr, 8));
    v3 = round(v3, load<u64>(ptr, 16));
    v4 = round(v4, load<u64>(ptr, 24));
    ptr += STRIPE_BYTES;
  } while (ptr < end);
  return avalanche(converge(v1, v2, v3, v4) + u64(len));
}

/** XXH64 of any `len` bytes at `ptr` (the caller has checked the range). */
// @ts-ignore: decorator
@inline
export function xxh64Any(ptr: usize, len: usize, seed: u64): u64 {
  const end = ptr + len;
  let h: u64;
  if (len >= STRIPE_BYTES) {
    let v1 = seed + P1 + P2;
    let v2 = seed + P2;
    let v3 = seed;
    let v4 = seed - P1;
    const last = end - STRIPE_BYTES; // the last address where a whole stripe still starts
    do {
      v1 = round(v1, load<u64>(ptr));
      v2 = round(v2, load<u64>(ptr, 8));
      v3 = round(v3, load<u64>(ptr, 16));
      v4 = round(v4, load<u64>(ptr, 24));
      ptr += STRIPE_BYTES;
    } while (ptr <= last);
    h = converge(v1, v2, v3, v4);
  } else {
    h = seed + P5;
  }
  h += u64(len);
  // Tail: whole 8-byte lanes, then one 4-byte word, then single bytes.
  while (ptr + 8 <= end) {
    h ^= round(0, load<u64>(ptr));
    h = rotl<u64>(h, 27) * P1 + P4;
    ptr += 8;
  }
  if (ptr + 4 <= end) {
    h ^= u64(load<u32>(ptr)) * P1;
    h = rotl<u64>(h, 23) * P2 + P3;
    ptr += 4;
  }
  while (ptr < end) {
    h ^= u64(load<u8>(ptr)) * P5;
    h = rotl<u64>(h, 11) * P1;
    ptr += 1;
  }
  return avalanche(h);
}

/**
 * One-shot XXH64 of `len` bytes at `ptr` (control path). Returns 0 when the range is not inside
 * linear memory: a u64 result has no room for a status, and trapping is not allowed; the host only
 * passes ranges it allocated.
 */
export function xxh64(ptr: usize, len: u32, seed: u64): u64 {
  if (!inMemory(ptr, u64(len))) return 0;
  if (len != 0 && (len & (<u32>STRIPE_BYTES - 1)) == 0) return xxh64Stripes(ptr, len, seed);
  return xxh64Any(ptr, len, seed);
}
