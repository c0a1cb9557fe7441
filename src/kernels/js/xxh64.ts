/**
 * XXH64 (Yann Collet's 64-bit xxHash), written for readability with BigInt arithmetic. This is the
 * reference the compiled backends are compared with; it is slow on purpose (every step visible, every
 * value reduced mod 2^64) and is itself checked against an independent npm implementation.
 */

const M64 = (1n << 64n) - 1n;
const P1 = 0x9e3779b185ebca87n;
const P2 = 0xc2b2ae3d27d4eb4fn;
const P3 = 0x165667b19e3779f9n;
const P4 = 0x85ebca77c2b2ae63n;
const P5 = 0x27d4eb2f165667c5n;

function rotl(x: bigint, r: bigint): bigint {
  return ((x << r) | (x >> (64n - r))) & M64;
}

function round(acc: bigint, lane: bigint): bigint {
  acc = (acc + lane * P2) & M64;
  acc = rotl(acc, 31n);
  return (acc * P1) & M64;
}

function mergeRound(acc: bigint, v: bigint): bigint {
  acc ^= round(0n, v);
  return (acc * P1 + P4) & M64;
}

/** Reads a little-endian u64 at byte offset `at` of a DataView. */
function lane64(view: DataView, at: number): bigint {
  return view.getBigUint64(at, true);
}

/** XXH64 of `bytes[start, start + len)` with a 64-bit seed. */
export function xxh64Range(bytes: Uint8Array, start: number, len: number, seed: bigint): bigint {
  const view = new DataView(bytes.buffer, bytes.byteOffset + start, len);
  seed &= M64;
  let p = 0;
  let h: bigint;
  if (len >= 32) {
    let v1 = (seed + P1 + P2) & M64;
    let v2 = (seed + P2) & M64;
    let v3 = seed;
    let v4 = (seed - P1) & M64;
    while (p + 32 <= len) {
      v1 = round(v1, lane64(view, p));
      v2 = round(v2, lane64(view, p + 8));
      v3 = round(v3, lane64(view, p + 16));
      v4 = round(v4, lane64(view, p + 24));
      p += 32;
    }
    h = (rotl(v1, 1n) + rotl(v2, 7n) + rotl(v3, 12n) + rotl(v4, 18n)) & M64;
    h = mergeRound(h, v1);
    h = mergeRound(h, v2);
    h = mergeRound(h, v3);
    h = mergeRound(h, v4);
  } else {
    h = (seed + P5) & M64;
  }
  h = (h + BigInt(len)) & M64;
  while (p + 8 <= len) {
    h ^= round(0n, lane64(view, p));
    h = (rotl(h, 27n) * P1 + P4) & M64;
    p += 8;
  }
  if (p + 4 <= len) {
    h ^= (BigInt(view.getUint32(p, true)) * P1) & M64;
    h = (rotl(h, 23n) * P2 + P3) & M64;
    p += 4;
  }
  while (p < len) {
    h ^= (BigInt(view.getUint8(p)) * P5) & M64;
    h = (rotl(h, 11n) * P1) & M64;
    p += 1;
  }
  h ^= h >> 33n;
  h = (h * P2) & M64;
  h ^= h >> 29n;
  h = (h * P3) & M64;
  h ^= h >> 32n;
  return h;
}

export function xxh64(bytes: Uint8Array, seed: bigint): bigint {
  return xxh64Range(bytes, 0, bytes.length, seed);
}
