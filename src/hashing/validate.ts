/** Control-path argument checks shared by the hashing front-ends. Each throws a typed DystroError. */
import { fail, type ErrorCode } from '../errors.js';
import { MAX_BLOCK_SIZE, MIN_BLOCK_SIZE } from '../kernels/abi.js';

export const MAX_U64 = (1n << 64n) - 1n;

/** A 64-bit unsigned key or seed: a bigint in 0 … 2^64−1 (a wasm i64 would silently wrap anything else). */
export function checkU64(value: unknown, what: string, code: ErrorCode = 'DYSTRO_ERR_INVALID_SEED'): bigint {
  if (typeof value !== 'bigint' || value < 0n || value > MAX_U64) fail(code, what, 'a bigint in 0 … 2^64−1', value);
  return value;
}

export function checkBlockSize(value: unknown, what = 'blockSize'): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < MIN_BLOCK_SIZE || value > MAX_BLOCK_SIZE) {
    fail('DYSTRO_ERR_BLOCK_SIZE', what, `an integer in ${MIN_BLOCK_SIZE} … ${MAX_BLOCK_SIZE}`, value);
  }
  return value;
}

export function checkWeight(value: unknown, what: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) fail('DYSTRO_ERR_INVALID_WEIGHT', what, 'a finite number > 0', value);
  return value;
}

export function checkLoadFactor(value: unknown, what = 'c'): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 1) fail('DYSTRO_ERR_LOAD_FACTOR', what, 'a finite number > 1', value);
  return value;
}

export function checkInteger(value: unknown, what: string, min: number, max: number, code: ErrorCode = 'DYSTRO_ERR_INVALID_ARGUMENT'): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) fail(code, what, `an integer in ${min} … ${max}`, value);
  return value;
}

/**
 * Token ids as a Uint32Array. A Uint32Array passes through untouched (the hot path); anything else is
 * validated element by element and copied: every id must be an integer in 0 … 2^32−1.
 */
export function toTokenArray(tokens: unknown, what = 'tokens'): Uint32Array {
  if (tokens instanceof Uint32Array) return tokens;
  if (!Array.isArray(tokens) && !(ArrayBuffer.isView(tokens) && !(tokens instanceof DataView))) {
    fail('DYSTRO_ERR_INVALID_TOKENS', what, 'a Uint32Array or an array of integer token ids', tokens);
  }
  const src = tokens as ArrayLike<unknown>;
  const out = new Uint32Array(src.length);
  for (let i = 0; i < src.length; i++) {
    const t = src[i];
    if (typeof t !== 'number' || !Number.isInteger(t) || t < 0 || t > 0xffffffff) {
      fail('DYSTRO_ERR_INVALID_TOKENS', `${what}[${i}]`, 'an integer token id in 0 … 4294967295', t, { index: i });
    }
    out[i] = t;
  }
  return out;
}

/** Node names for a hash table: non-empty, unique strings. */
export function checkNodeNames(names: unknown, what = 'nodes'): string[] {
  if (!Array.isArray(names)) fail('DYSTRO_ERR_INVALID_ARGUMENT', what, 'an array of node names', names);
  if (names.length === 0) fail('DYSTRO_ERR_EMPTY_NODES', what, 'at least one node', names);
  const seen = new Set<string>();
  names.forEach((n, i) => {
    if (typeof n !== 'string' || n.length === 0) fail('DYSTRO_ERR_INVALID_ARGUMENT', `${what}[${i}]`, 'a non-empty string', n);
    if (seen.has(n)) fail('DYSTRO_ERR_DUPLICATE_NODE', `${what}[${i}]`, 'a name not used before in the same table', n);
    seen.add(n);
  });
  return names as string[];
}

export function isPrime(n: number): boolean {
  if (n < 2) return false;
  if (n % 2 === 0) return n === 2;
  for (let d = 3; d * d <= n; d += 2) if (n % d === 0) return false;
  return true;
}

/** The smallest prime ≥ n. */
export function nextPrime(n: number): number {
  let p = Math.max(2, Math.ceil(n));
  while (!isPrime(p)) p++;
  return p;
}
