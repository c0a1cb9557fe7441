/**
 * Prefix block hashing (DESIGN §3): the identity of every full block of a prompt, chained so that a
 * block's hash stands for the whole prefix up to it. Two prompts share their first k block hashes
 * exactly when they share their first k·B tokens in the same namespace.
 *
 * Chain: h[0] = XXH64(block 0 bytes, namespaceSeed), h[i] = XXH64(block i bytes, h[i−1]) — the
 * standard seeded XXH64, so any xxHash implementation can recompute a block (the tests do, with
 * xxhash-wasm). XXH64 and not XXH3: the chain is bound by the serial 64-bit multiplies of one block
 * after another, and a 64-byte block costs ~15 ns in XXH64 (TOOLCHAIN.md); XXH3's advantage appears on
 * long inputs, not on 64-byte blocks seeded one by one, and XXH64 keeps three backends small and exact.
 *
 * The namespace seed frames (model, LoRA adapter, tenant salt) with a version byte and a u32
 * little-endian byte length before each UTF-8 field, so ("org_1", "2345") and ("org_12345", "") can
 * never collide by concatenation, and two tenants never share a chain (nor cache credit).
 */
import { DystroError, fail } from '../errors.js';
import { Status, type KernelBackend } from '../kernels/abi.js';
import { checkBlockSize, checkU64, toTokenArray } from './validate.js';

export const DEFAULT_BLOCK_SIZE = 16;
/** Framing version of the namespace seed; part of the hashed bytes. */
export const NAMESPACE_VERSION = 1;

export interface Namespace {
  model: string;
  /** LoRA adapter name; absent and "" are the same namespace. */
  lora?: string;
  /** Tenant salt; absent and "" are the same namespace. */
  tenant?: string;
}

const encoder = new TextEncoder();

/** The framed bytes of a namespace: [version u8] then for each field [len u32 LE][UTF-8 bytes]. */
export function namespaceBytes(ns: Namespace): Uint8Array {
  if (ns === null || typeof ns !== 'object') fail('DYSTRO_ERR_INVALID_ARGUMENT', 'namespace', 'an object { model, lora?, tenant? }', ns);
  const fields = [ns.model, ns.lora ?? '', ns.tenant ?? ''];
  const names = ['model', 'lora', 'tenant'];
  const parts = fields.map((f, i) => {
    if (typeof f !== 'string') fail('DYSTRO_ERR_INVALID_ARGUMENT', `namespace.${names[i]}`, 'a string', f);
    return encoder.encode(f);
  });
  if (parts[0].length === 0) fail('DYSTRO_ERR_INVALID_ARGUMENT', 'namespace.model', 'a non-empty string', ns.model);
  const out = new Uint8Array(1 + parts.reduce((s, p) => s + 4 + p.length, 0));
  const view = new DataView(out.buffer);
  out[0] = NAMESPACE_VERSION;
  let at = 1;
  for (const p of parts) {
    view.setUint32(at, p.length, true);
    out.set(p, at + 4);
    at += 4 + p.length;
  }
  return out;
}

export interface PrefixHasherOptions {
  blockSize?: number;
}

/**
 * Front-end over a kernel backend: validates on the way in (typed errors), then calls the kernel. With
 * a Uint32Array prompt and a caller-provided output the call allocates nothing.
 */
export class PrefixHasher {
  readonly blockSize: number;
  private textBuf = new Uint8Array(4096);

  constructor(readonly kernels: KernelBackend, options: PrefixHasherOptions = {}) {
    this.blockSize = checkBlockSize(options.blockSize ?? DEFAULT_BLOCK_SIZE, 'blockSize');
  }

  /** The 64-bit seed of block 0 for a namespace (control path: compute once per namespace and keep it). */
  namespaceSeed(ns: Namespace): bigint {
    return this.kernels.xxh64(namespaceBytes(ns), 0n);
  }

  /** Number of full blocks in a prompt of `length` tokens (or bytes). */
  blockCount(length: number): number {
    return Math.floor(length / this.blockSize);
  }

  /**
   * Hashes the full token blocks of a prompt. Returns the block hashes: `out` itself when given (it must
   * hold at least blockCount(tokens.length) entries; only that many are written) or a new array.
   */
  hashTokens(tokens: Uint32Array | readonly number[], seed: bigint, out?: BigUint64Array): BigUint64Array {
    const toks = toTokenArray(tokens);
    checkU64(seed, 'seed');
    const n = this.blockCount(toks.length);
    const dst = out ?? new BigUint64Array(n);
    this.check(this.kernels.hashTokens(toks, this.blockSize, seed, dst), n, dst.length);
    return dst;
  }

  /** Byte mode: the same chain over the UTF-8 bytes of a text prompt, blockSize bytes a block. */
  hashText(text: string, seed: bigint, out?: BigUint64Array): BigUint64Array {
    if (typeof text !== 'string') fail('DYSTRO_ERR_INVALID_ARGUMENT', 'text', 'a string', text);
    checkU64(seed, 'seed');
    // UTF-8 takes at most 3 bytes per UTF-16 code unit.
    if (this.textBuf.length < text.length * 3) this.textBuf = new Uint8Array(text.length * 3);
    const { written } = encoder.encodeInto(text, this.textBuf);
    return this.hashBytes(this.textBuf.subarray(0, written), seed, out);
  }

  hashBytes(bytes: Uint8Array, seed: bigint, out?: BigUint64Array): BigUint64Array {
    if (!(bytes instanceof Uint8Array)) fail('DYSTRO_ERR_INVALID_ARGUMENT', 'bytes', 'a Uint8Array', bytes);
    checkU64(seed, 'seed');
    const n = this.blockCount(bytes.length);
    const dst = out ?? new BigUint64Array(n);
    this.check(this.kernels.hashBytes(bytes, this.blockSize, seed, dst), n, dst.length);
    return dst;
  }

  /**
   * Many prompts in one kernel call. Returns the concatenated hashes and `offsets` (prompt i's blocks
   * are hashes[offsets[i], offsets[i+1])).
   */
  hashBatch(prompts: readonly (Uint32Array | readonly number[])[], seeds: readonly bigint[] | BigUint64Array): { hashes: BigUint64Array; offsets: Uint32Array } {
    if (!Array.isArray(prompts)) fail('DYSTRO_ERR_INVALID_ARGUMENT', 'prompts', 'an array of token arrays', prompts);
    if (seeds.length !== prompts.length) fail('DYSTRO_ERR_INVALID_ARGUMENT', 'seeds.length', `${prompts.length} (one seed per prompt)`, seeds.length);
    const arrays = prompts.map((p, i) => toTokenArray(p, `prompts[${i}]`));
    const offsets = new Uint32Array(arrays.length + 1);
    let total = 0;
    let blocks = 0;
    arrays.forEach((a, i) => {
      total += a.length;
      offsets[i + 1] = total;
      blocks += this.blockCount(a.length);
    });
    const tokens = new Uint32Array(total);
    arrays.forEach((a, i) => tokens.set(a, offsets[i]));
    const seedArr = new BigUint64Array(arrays.length);
    for (let i = 0; i < arrays.length; i++) seedArr[i] = checkU64(seeds[i], `seeds[${i}]`);
    const hashes = new BigUint64Array(blocks);
    const outOffsets = new Uint32Array(arrays.length + 1);
    this.check(this.kernels.hashTokensBatch(tokens, offsets, seedArr, this.blockSize, hashes, outOffsets), blocks, hashes.length);
    return { hashes, offsets: outOffsets };
  }

  private check(status: number, expected: number, capacity: number): void {
    if (status === expected) return;
    if (status === Status.OUT_TOO_SMALL) fail('DYSTRO_ERR_OUTPUT_TOO_SMALL', 'out.length', `at least ${expected}`, capacity);
    throw new DystroError('DYSTRO_ERR_KERNEL', `The ${this.kernels.name} hashing kernel returned ${status}; expected ${expected} blocks`, { status, expected });
  }
}
