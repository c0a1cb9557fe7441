/**
 * Prefix block hashing: h[0] = XXH64(block 0, seed), h[b] = XXH64(block b, h[b−1]) over the full blocks
 * of a token (u32) or byte array (abi.ts, "Prefix block hashing"). A block's hash therefore stands for
 * the whole prefix up to and including it.
 *
 * Tokens are u32 in little-endian byte order; WebAssembly memory is little-endian, so the token array
 * the host copied in already is the byte string to hash, with no conversion pass.
 */
import { BAD_ARG, BLOCK_SIZE, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE, OUT_TOO_SMALL } from './status';
import { inMemory, overlaps } from './guard';
import { xxh64Any, xxh64Stripes } from './xxh64';

// @ts-ignore: decorator
@inline
function validBlockSize(blockSize: u32): bool {
  return blockSize >= MIN_BLOCK_SIZE && blockSize <= MAX_BLOCK_SIZE;
}

/**
 * Hashes `n` consecutive blocks of `blockBytes` bytes starting at `ptr`, chaining from `seed`, and
 * stores the n hashes (u64) at `outPtr`. Blocks that are whole 32-byte stripes (token blocks with
 * B a multiple of 8, byte blocks with B a multiple of 32) take the tail-free path.
 */
function chain(ptr: usize, blockBytes: usize, n: u32, seed: u64, outPtr: usize): void {
  let h = seed;
  const outEnd = outPtr + (<usize>n << 3);
  if ((blockBytes & 31) == 0) {
    while (outPtr < outEnd) {
      h = xxh64Stripes(ptr, blockBytes, h);
      store<u64>(outPtr, h);
      ptr += blockBytes;
      outPtr += 8;
    }
  } else {
    while (outPtr < outEnd) {
      h = xxh64Any(ptr, blockBytes, h);
      store<u64>(outPtr, h);
      ptr += blockBytes;
      outPtr += 8;
    }
  }
}

/**
 * Token mode. `tokenCount` u32 tokens at `tokensPtr`, blocks of `blockSize` tokens; writes
 * n = floor(tokenCount / blockSize) hashes at `outPtr` (room for `outCap`). Returns n, BLOCK_SIZE,
 * OUT_TOO_SMALL, or BAD_ARG when a region lies outside memory.
 */
export function hashTokens(tokensPtr: usize, tokenCount: u32, blockSize: u32, seed: u64, outPtr: usize, outCap: u32): i32 {
  if (!validBlockSize(blockSize)) return BLOCK_SIZE;
  const n = tokenCount / blockSize;
  if (n > outCap) return OUT_TOO_SMALL;
  if (!inMemory(tokensPtr, u64(tokenCount) << 2) || !inMemory(outPtr, u64(n) << 3)) return BAD_ARG;
  chain(tokensPtr, <usize>blockSize << 2, n, seed, outPtr);
  return <i32>n;
}

/** Byte mode: the same chain over `byteCount` bytes, `blockSize` bytes a block. */
export function hashBytes(bytesPtr: usize, byteCount: u32, blockSize: u32, seed: u64, outPtr: usize, outCap: u32): i32 {
  if (!validBlockSize(blockSize)) return BLOCK_SIZE;
  const n = byteCount / blockSize;
  if (n > outCap) return OUT_TOO_SMALL;
  // The out range (8 bytes a block) bounds n below 2^29, so the i32 result cannot overflow.
  if (!inMemory(bytesPtr, u64(byteCount)) || !inMemory(outPtr, u64(n) << 3)) return BAD_ARG;
  chain(bytesPtr, blockSize, n, seed, outPtr);
  return <i32>n;
}

/**
 * Batch of prompts over one token array: prompt i is tokens[offsets[i], offsets[i+1]) (u32 offsets,
 * `offsetsCount` = seedCount + 1 of them, non-decreasing, the last ≤ tokenCount), seeded with seeds[i]
 * (u64), written at out[outOffsets[i] …]. The kernel fills outOffsets (seedCount + 1 entries, u32):
 * outOffsets[0] = 0, outOffsets[i+1] = outOffsets[i] + n_i. Returns the total number of blocks.
 *
 * Check order follows the reference (src/kernels/js): BLOCK_SIZE, then the shape of offsets and
 * outOffsets (BAD_ARG), then outOffsets is written, then OUT_TOO_SMALL; on OUT_TOO_SMALL nothing is
 * written to out.
 */
export function hashTokensBatch(
  tokensPtr: usize,
  tokenCount: u32,
  offsetsPtr: usize,
  offsetsCount: u32,
  seedsPtr: usize,
  seedCount: u32,
  blockSize: u32,
  outPtr: usize,
  outCap: u32,
  outOffsetsPtr: usize,
  outOffsetsCount: u32,
): i32 {
  if (!validBlockSize(blockSize)) return BLOCK_SIZE;
  if (u64(offsetsCount) != u64(seedCount) + 1 || u64(outOffsetsCount) != u64(seedCount) + 1) return BAD_ARG;
  if (
    !inMemory(tokensPtr, u64(tokenCount) << 2) ||
    !inMemory(offsetsPtr, u64(offsetsCount) << 2) ||
    !inMemory(seedsPtr, u64(seedCount) << 3) ||
    !inMemory(outOffsetsPtr, u64(outOffsetsCount) << 2)
  ) {
    return BAD_ARG;
  }
  // outOffsets is written, then read back to place each chain: it must not overlap an input.
  const outOffsetsBytes = u64(outOffsetsCount) << 2;
  if (
    overlaps(outOffsetsPtr, outOffsetsBytes, tokensPtr, u64(tokenCount) << 2) ||
    overlaps(outOffsetsPtr, outOffsetsBytes, offsetsPtr, u64(offsetsCount) << 2) ||
    overlaps(outOffsetsPtr, outOffsetsBytes, seedsPtr, u64(seedCount) << 3)
  ) {
    return BAD_ARG;
  }
  for (let i: u32 = 0; i < seedCount; i++) {
    const at = offsetsPtr + (<usize>i << 2);
    if (load<u32>(at) > load<u32>(at, 4)) return BAD_ARG;
  }
  if (load<u32>(offsetsPtr + (<usize>seedCount << 2)) > tokenCount) return BAD_ARG;

  // Prompts are disjoint, consecutive slices of tokens, so total ≤ tokenCount / blockSize < 2^30.
  let total: u32 = 0;
  store<u32>(outOffsetsPtr, 0);
  for (let i: u32 = 0; i < seedCount; i++) {
    const at = offsetsPtr + (<usize>i << 2);
    total += (load<u32>(at, 4) - load<u32>(at)) / blockSize;
    store<u32>(outOffsetsPtr + (<usize>(i + 1) << 2), total);
  }
  if (total > outCap) return OUT_TOO_SMALL;
  // The hashes must not land on offsets or outOffsets (still to be read) or on tokens and seeds.
  const outBytes = u64(total) << 3;
  if (
    !inMemory(outPtr, outBytes) ||
    overlaps(outPtr, outBytes, outOffsetsPtr, outOffsetsBytes) ||
    overlaps(outPtr, outBytes, tokensPtr, u64(tokenCount) << 2) ||
    overlaps(outPtr, outBytes, offsetsPtr, u64(offsetsCount) << 2) ||
    overlaps(outPtr, outBytes, seedsPtr, u64(seedCount) << 3)
  ) {
    return BAD_ARG;
  }

  const blockBytes = <usize>blockSize << 2;
  for (let i: u32 = 0; i < seedCount; i++) {
    const at = offsetsPtr + (<usize>i << 2);
    const start = load<u32>(at);
    const n = (load<u32>(at, 4) - start) / blockSize;
    const outAt = outPtr + (<usize>load<u32>(outOffsetsPtr + (<usize>i << 2)) << 3);
    chain(tokensPtr + (<usize>start << 2), blockBytes, n, load<u64>(seedsPtr + (<usize>i << 3)), outAt);
  }
  return <i32>total;
}
