/**
 * Group 1: prefix block hashing (16-token blocks, chained XXH64) per backend, next to peer hash packages
 * run over the same bytes.
 *
 * The peers do a different, easier job on purpose: a one-shot hash of the whole prompt is the floor a
 * chained per-block hash can approach (it streams the same bytes once but keeps no per-block state);
 * xxhash-wasm called once per block with a BigInt seed is what a user would write without this library,
 * and gives the same hashes as our chain (checked below before timing).
 */
import type { KernelBackend } from '../src/kernels/abi.ts';
import { PrefixHasher } from '../src/hashing/prefix.ts';
import type { Peers } from './peers.ts';
import { compileLoop, randomTokens, runTimings, section, timingTable, type BenchConfig, type TaskSpec, type Timing } from './util.ts';

export const BLOCK_TOKENS = 16;
/** Token counts of the token-mode measurements (js, a BigInt reference, only at the smaller one). */
export const HASH_SIZES_TOKENS = [8192, 131072] as const;
export const BYTE_MODE_BYTES = 32 * 1024;
export const BATCH_PROMPTS = 64;
export const BATCH_PROMPT_TOKENS = 2048;

const SEED = 0x0123_4567_89ab_cdefn;

export const opHashTokens = (tokens: number) => `hashTokens ${tokens.toLocaleString('en-US')} tok`;
export const OP_HASH_BYTES = `hashBytes 32 KiB (16 B blocks)`;
export const OP_BATCH_KERNEL = `hashTokensBatch ${BATCH_PROMPTS}×${BATCH_PROMPT_TOKENS.toLocaleString('en-US')} tok`;
export const OP_BATCH_LOOP = `${BATCH_PROMPTS} × hashTokens ${BATCH_PROMPT_TOKENS.toLocaleString('en-US')} tok`;
export const OP_BATCH_FRONTEND = `PrefixHasher.hashBatch ${BATCH_PROMPTS}×${BATCH_PROMPT_TOKENS.toLocaleString('en-US')} (allocates)`;

export const PEER_XXH3_ADDON = 'xxhash-addon XXH3 one-shot';
export const PEER_XXH64_ADDON = 'xxhash-addon XXH64 one-shot';
export const PEER_XXHWASM_ONESHOT = 'xxhash-wasm h64Raw one-shot';
export const PEER_XXHWASM_CHAINED = 'xxhash-wasm h64Raw chained per block';
export const PEER_HASHWASM = 'hash-wasm xxh64 one-shot';

export interface HashingResult {
  readonly timings: Timing[];
  /** Problems found while checking that every implementation hashes the same bytes to the same chain. */
  readonly warnings: string[];
}

export function runHashing(backends: readonly KernelBackend[], peers: Peers, cfg: BenchConfig): { result: HashingResult; markdown: string } {
  const maxTokens = HASH_SIZES_TOKENS[HASH_SIZES_TOKENS.length - 1];
  const allTokens = randomTokens(maxTokens, 'hashing.tokens');
  const out = new BigUint64Array(maxTokens / BLOCK_TOKENS);
  const warnings: string[] = [];
  const tasks: TaskSpec[] = [];

  for (const size of HASH_SIZES_TOKENS) {
    const tokens = allTokens.subarray(0, size);
    // The prompt's bytes as the peers see them (token ids little-endian, as the kernels hash them; x86
    // and arm64 are little-endian so the Uint32Array's own bytes are those bytes).
    const bytes = Buffer.from(tokens.buffer, tokens.byteOffset, tokens.byteLength);
    const blockBytes = BLOCK_TOKENS * 4;
    const blockViews = Array.from({ length: size / BLOCK_TOKENS }, (_, b) => bytes.subarray(b * blockBytes, (b + 1) * blockBytes));
    const op = opHashTokens(size);

    let expectedLast: bigint | undefined;
    for (const k of backends) {
      if (k.name === 'js' && size > 8192) continue;
      const hasher = new PrefixHasher(k, { blockSize: BLOCK_TOKENS });
      const got = hasher.hashTokens(tokens, SEED, out)[size / BLOCK_TOKENS - 1];
      if (expectedLast === undefined) expectedLast = got;
      else if (got !== expectedLast) warnings.push(`${k.name} hashTokens(${size}) last block ${got} ≠ ${expectedLast}`);
      tasks.push({
        op,
        impl: k.name,
        kind: 'backend',
        unit: 'call',
        unitsPerCall: 1,
        bytesPerOp: bytes.byteLength,
        loop: compileLoop(`${op} ${k.name}`, 'sink[i & 63] = hasher.hashTokens(tokens, seed, out);', { hasher, tokens, seed: SEED, out }),
      });
    }

    const addon = peers.xxhashAddon;
    if (addon) {
      tasks.push(peerTask(op, PEER_XXH3_ADDON, bytes.byteLength, 'sink[i & 63] = p.xxh3(bytes);', { p: addon, bytes }));
      tasks.push(peerTask(op, PEER_XXH64_ADDON, bytes.byteLength, 'sink[i & 63] = p.xxh64(bytes);', { p: addon, bytes }));
    }
    const xw = peers.xxhashWasm;
    if (xw) {
      tasks.push(peerTask(op, PEER_XXHWASM_ONESHOT, bytes.byteLength, 'sink[i & 63] = p.h64Raw(bytes, seed);', { p: xw, bytes, seed: SEED }));
      // The same chain as ours, one call per 64-byte block with the previous hash as the seed.
      let h = SEED;
      for (const v of blockViews) h = xw.h64Raw(v, h);
      if (expectedLast !== undefined && h !== expectedLast) warnings.push(`xxhash-wasm chained(${size}) last block ${h} ≠ ours ${expectedLast}`);
      tasks.push(
        peerTask(
          op,
          PEER_XXHWASM_CHAINED,
          bytes.byteLength,
          'let h = seed; for (let b = 0; b < views.length; b++) { h = p.h64Raw(views[b], h); out[b] = h; } sink[i & 63] = h;',
          { p: xw, views: blockViews, seed: SEED, out },
        ),
      );
    }
    if (peers.hashWasm) tasks.push(peerTask(op, PEER_HASHWASM, bytes.byteLength, 'sink[i & 63] = p.xxh64(bytes);', { p: peers.hashWasm, bytes }));
  }

  // Byte mode: the same chain over raw bytes (a text prompt), default block size (16 bytes a block).
  const byteInput = new Uint8Array(allTokens.buffer, 0, BYTE_MODE_BYTES);
  for (const k of backends) {
    const hasher = new PrefixHasher(k, { blockSize: BLOCK_TOKENS });
    tasks.push({
      op: OP_HASH_BYTES,
      impl: k.name,
      kind: 'backend',
      unit: 'call',
      unitsPerCall: 1,
      bytesPerOp: BYTE_MODE_BYTES,
      loop: compileLoop(`${OP_HASH_BYTES} ${k.name}`, 'sink[i & 63] = hasher.hashBytes(bytes, seed, out);', { hasher, bytes: byteInput, seed: SEED, out }),
    });
  }

  // The batch entry point: 64 prompts of 2,048 tokens in one kernel call, everything preallocated,
  // against 64 single calls on the same prompts and against the allocating front-end.
  const batchTokens = allTokens.subarray(0, BATCH_PROMPTS * BATCH_PROMPT_TOKENS);
  const offsets = Uint32Array.from({ length: BATCH_PROMPTS + 1 }, (_, i) => i * BATCH_PROMPT_TOKENS);
  const seeds = BigUint64Array.from({ length: BATCH_PROMPTS }, (_, i) => SEED + BigInt(i));
  const outOffsets = new Uint32Array(BATCH_PROMPTS + 1);
  const prompts = Array.from({ length: BATCH_PROMPTS }, (_, i) => batchTokens.subarray(offsets[i], offsets[i + 1]));
  const seedList = Array.from(seeds);
  const blocksPerPrompt = BATCH_PROMPT_TOKENS / BLOCK_TOKENS;
  const outViews = prompts.map((_, i) => out.subarray(i * blocksPerPrompt, (i + 1) * blocksPerPrompt));
  const batchBytes = batchTokens.byteLength;
  for (const k of backends) {
    if (k.name === 'js') continue;
    const hasher = new PrefixHasher(k, { blockSize: BLOCK_TOKENS });
    const env = { k, tokens: batchTokens, offsets, seeds, seedList, out, outOffsets, prompts, outViews, hasher, bs: BLOCK_TOKENS };
    tasks.push({
      op: OP_BATCH_KERNEL,
      impl: k.name,
      kind: 'backend',
      unit: 'call',
      unitsPerCall: 1,
      bytesPerOp: batchBytes,
      loop: compileLoop(`${OP_BATCH_KERNEL} ${k.name}`, 'sink[i & 63] = k.hashTokensBatch(tokens, offsets, seeds, bs, out, outOffsets);', env),
    });
    tasks.push({
      op: OP_BATCH_LOOP,
      impl: k.name,
      kind: 'backend',
      unit: 'call',
      unitsPerCall: 1,
      bytesPerOp: batchBytes,
      loop: compileLoop(
        `${OP_BATCH_LOOP} ${k.name}`,
        'for (let p = 0; p < prompts.length; p++) sink[p & 63] = hasher.hashTokens(prompts[p], seedList[p], outViews[p]);',
        env,
      ),
    });
    tasks.push({
      op: OP_BATCH_FRONTEND,
      impl: k.name,
      kind: 'backend',
      unit: 'call',
      unitsPerCall: 1,
      bytesPerOp: batchBytes,
      loop: compileLoop(`${OP_BATCH_FRONTEND} ${k.name}`, 'sink[i & 63] = hasher.hashBatch(prompts, seedList);', env),
    });
  }

  const timings = runTimings('hashing', tasks, cfg);
  let md = section('1. Prefix block hashing (chained XXH64, 16-token blocks, output preallocated)');
  md += `\nPeers hash the same bytes; "one-shot" hashes the whole prompt once (no per-block chain), "chained per block" computes the same chain as ours. GB/s counts input bytes.\n\n`;
  md += timingTable(timings, undefined, true);
  if (warnings.length) md += `\n\n**Mismatches:**\n${warnings.map((w) => `- ${w}`).join('\n')}`;
  return { result: { timings, warnings }, markdown: md + '\n' };
}

function peerTask(op: string, impl: string, bytes: number, statement: string, env: Record<string, unknown>): TaskSpec {
  return { op, impl, kind: 'peer', unit: 'call', unitsPerCall: 1, bytesPerOp: bytes, loop: compileLoop(`${op} ${impl}`, statement, env) };
}
